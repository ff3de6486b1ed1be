//! Management operations (#12–50 of the swagger): device classes, devices, groups, subgroups,
//! deployments and their status, device operations; and duhub's API token endpoints.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};

use super::filter::Filter;
use super::updates::{filter_operations, operation_response, pending_only};
use super::{ApiVersion, DuError, DuState, accepted, page, query_param};
use crate::du::deploy::{self, Counts};
use crate::du::fleet::{DEFAULT_GROUP, DeviceClass, DeviceView};
use crate::du::model::{RollbackPolicy, StoredDeployment, update_id_json};
use crate::du::status::Compliance;
use crate::du::{DEVICE_OPERATION, Snapshot};

type GroupPath = Path<(String, String)>;
type SubgroupPath = Path<(String, String, String)>;
type DeploymentPath = Path<(String, String, String)>;
type SubgroupDeploymentPath = Path<(String, String, String, String)>;

fn parse_filter(uri: &Uri, known: &[&str]) -> Result<Option<Filter>, DuError> {
    let Some(text) = query_param(uri, "filter") else { return Ok(None) };
    let filter = Filter::parse(&text).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    filter.only(known).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    Ok(Some(filter))
}

// ----- device classes ----------------------------------------------------------------------------

fn class_json(snapshot: &Snapshot, class: &DeviceClass, friendly_name: Option<&str>) -> Value {
    let mut value = json!({"deviceClassId": class.id, "deviceClassProperties": class.properties_json()});
    if let Some(name) = friendly_name {
        value["friendlyName"] = name.into();
    }
    if let Some(best) = snapshot.best_update(class) {
        value["bestCompatibleUpdate"] = best.info();
    }
    value
}

async fn class_names(state: &DuState) -> Result<BTreeMap<String, Option<String>>, DuError> {
    Ok(state.du.device_class_records().await?.into_iter().map(|(id, name, _)| (id, name)).collect())
}

/// #12.
pub(super) async fn list_device_classes(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["friendlyName"])?;
    let snapshot = state.du.snapshot().await?;
    let names = class_names(&state).await?;
    let items = snapshot
        .classes()
        .values()
        .filter(|(class, _)| names.contains_key(&class.id))
        .map(|(class, _)| (class, names.get(&class.id).cloned().flatten()))
        .filter(|(_, name)| filter.as_ref().is_none_or(|f| f.matches(|_| name.clone())))
        .map(|(class, name)| class_json(&snapshot, class, name.as_deref()))
        .collect();
    page(&state.du, &uri, items)
}

async fn find_class(state: &DuState, snapshot: &Snapshot, id: &str) -> Result<(DeviceClass, Option<String>), DuError> {
    let names = class_names(state).await?;
    let class = snapshot.classes().get(id).map(|(c, _)| c.clone()).filter(|c| names.contains_key(&c.id));
    class
        .map(|c| (c, names.get(id).cloned().flatten()))
        .ok_or_else(|| DuError::not_found(format!("device class {id} not found")))
}

/// #13.
pub(super) async fn get_device_class(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let (class, name) = find_class(&state, &snapshot, &id).await?;
    Ok(Json(class_json(&snapshot, &class, name.as_deref())))
}

/// #14 (`application/merge-patch+json` `{"friendlyName": ...}`).
pub(super) async fn update_device_class(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    body: axum::body::Bytes,
) -> Result<Json<Value>, DuError> {
    let patch: Value =
        serde_json::from_slice(&body).map_err(|e| DuError::bad_request(format!("the body is not JSON: {e}")))?;
    let name = patch
        .get("friendlyName")
        .and_then(Value::as_str)
        .filter(|n| (1..=512).contains(&n.chars().count()))
        .ok_or_else(|| {
            DuError::bad_request("friendlyName must be a string of 1 to 512 characters").with_target("friendlyName")
        })?;
    let snapshot = state.du.snapshot().await?;
    let (class, _) = find_class(&state, &snapshot, &id).await?;
    state.du.set_device_class_name(&id, name).await?;
    Ok(Json(class_json(&snapshot, &class, Some(name))))
}

/// #15.
pub(super) async fn delete_device_class(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_device_class(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("device class {id} not found")))
    }
}

/// #16.
pub(super) async fn installable_updates(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let (class, _) = find_class(&state, &snapshot, &id).await?;
    page(&state.du, &uri, snapshot.installable(&class).iter().map(|u| u.info()).collect())
}

// ----- devices -----------------------------------------------------------------------------------

fn device_json(snapshot: &Snapshot, device: &DeviceView) -> Value {
    let mut value = json!({
        "deviceId": device.device_id,
        "deviceClassId": device.class.id,
        "groupId": device.group_id,
    });
    if let Some(workflow) = device.reported_workflow()
        && let Some(deployment) =
            snapshot.deployments.iter().find(|d| d.subgroups.values().any(|s| s.workflow_id == workflow))
    {
        value["lastAttemptedUpdate"] = snapshot
            .update(&deployment.update)
            .map_or_else(|| json!({"updateId": update_id_json(&deployment.update)}), |u| u.info());
    }
    if let Some((deployment, state)) = snapshot.device_deployment(device) {
        value["deploymentStatus"] = state.as_str().into();
        value["lastDeploymentId"] = deployment.deployment_id.clone().into();
    }
    if let Some(installed) = &device.installed {
        value["installedUpdate"] =
            snapshot.update(installed).map_or_else(|| json!({"updateId": update_id_json(installed)}), |u| u.info());
    }
    value["onLatestUpdate"] = snapshot.on_latest(device).into();
    if let Some(result) = &device.agent.last_install_result {
        // `resultDetails` is a string in the swagger (not nullable): the agent's `null` is left out.
        let mut last = json!({
            "resultCode": result.result_code.0,
            "extendedResultCode": erc(result.extended_result_code()),
        });
        if let Some(details) = &result.result_details {
            last["resultDetails"] = details.clone().into();
        }
        let steps: Vec<Value> = result
            .steps()
            .into_iter()
            .map(|(name, step)| {
                let mut value = json!({
                    "description": name,
                    "resultCode": step.result_code.0,
                    "extendedResultCode": erc(step.extended_result_code()),
                });
                if let Some(details) = &step.result_details {
                    value["resultDetails"] = details.clone().into();
                }
                value
            })
            .collect();
        if !steps.is_empty() {
            last["stepResults"] = steps.into();
        }
        value["lastInstallResult"] = last;
    }
    value
}

/// The REST integer form of an extended result code (two's complement, as the service sends).
fn erc(code: Option<duhub_proto::result::ExtendedResultCode>) -> i64 {
    code.map_or(0, |c| i64::from(c.0 as i32))
}

/// #17 `[filter: GroupId, DeviceClassId, DeploymentStatus]`.
pub(super) async fn list_devices(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["groupId", "deviceClassId", "deploymentStatus", "deviceId"])?;
    let snapshot = state.du.snapshot().await?;
    let items = snapshot
        .devices
        .iter()
        .map(|d| device_json(&snapshot, d))
        .filter(|json| {
            filter.as_ref().is_none_or(|f| {
                f.matches(|field| {
                    let key = ["groupId", "deviceClassId", "deploymentStatus", "deviceId"]
                        .into_iter()
                        .find(|k| k.eq_ignore_ascii_case(field))
                        .unwrap_or(field);
                    json.get(key).and_then(Value::as_str).map(str::to_owned)
                })
            })
        })
        .collect();
    page(&state.du, &uri, items)
}

/// #18: devices come from the hub's registry, so the import has nothing to copy.
pub(super) async fn import_devices(State(state): State<DuState>, body: axum::body::Bytes) -> Result<Response, DuError> {
    let kind: Value =
        serde_json::from_slice(&body).map_err(|e| DuError::bad_request(format!("the body is not JSON: {e}")))?;
    if !matches!(kind.as_str(), Some("Devices" | "Modules" | "All")) {
        return Err(DuError::bad_request("the body must be \"Devices\", \"Modules\" or \"All\""));
    }
    let id = state.du.import_devices().await?;
    Ok(accepted(format!(
        "/deviceUpdate/{}/management/operations/{id}?api-version={}",
        state.du.settings().instance_id,
        crate::du::API_VERSION_2022
    )))
}

/// #19.
pub(super) async fn get_device(State(state): State<DuState>, Path((_, id)): GroupPath) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let device = snapshot
        .devices
        .iter()
        .find(|d| d.device_id == id)
        .ok_or_else(|| DuError::not_found(format!("device {id} not found or has no Device Update agent")))?;
    Ok(Json(device_json(&snapshot, device)))
}

/// #20: module identities are not supported by the hub yet.
pub(super) async fn get_device_module(Path((_, device, module)): SubgroupPath) -> DuError {
    DuError::not_found(format!("module {module} of device {device} not found: module identities are not supported yet"))
}

/// The REST `UpdateCompliance`.
fn compliance_json(compliance: Compliance) -> Value {
    json!({
        "totalDeviceCount": compliance.total, "onLatestUpdateDeviceCount": compliance.on_latest,
        "newUpdatesAvailableDeviceCount": compliance.new_updates_available,
        "updatesInProgressDeviceCount": compliance.updates_in_progress,
    })
}

/// #21.
pub(super) async fn compliance(State(state): State<DuState>) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    Ok(Json(compliance_json(snapshot.compliance(&snapshot.devices))))
}

// ----- groups ------------------------------------------------------------------------------------

fn group_json(snapshot: &Snapshot, id: &str, created: &str) -> Value {
    let devices = snapshot.group_devices(id);
    let mut classes: BTreeMap<&str, Vec<&DeviceView>> = BTreeMap::new();
    for device in &devices {
        classes.entry(device.class.id.as_str()).or_default().push(device);
    }
    let (mut new_available, mut in_progress, mut on_latest) = (0, 0, 0);
    for members in classes.values() {
        let compliance = snapshot.compliance(members.iter().copied());
        if compliance.updates_in_progress > 0 {
            in_progress += 1;
        } else if compliance.new_updates_available > 0 {
            new_available += 1;
        } else {
            on_latest += 1;
        }
    }
    let deployments: Vec<&str> =
        snapshot.deployments.iter().filter(|d| d.group_id == id).map(|d| d.deployment_id.as_str()).collect();
    json!({
        "groupId": id,
        "groupType": if id == DEFAULT_GROUP { "DefaultNoTag" } else { "IoTHubTag" },
        "createdDateTime": created,
        "deviceCount": devices.len(),
        "subgroupsWithNewUpdatesAvailableCount": new_available,
        "subgroupsWithUpdatesInProgressCount": in_progress,
        "subgroupsWithOnLatestUpdateCount": on_latest,
        "deployments": deployments,
    })
}

fn order(uri: &Uri, items: &mut [Value], fields: &[(&str, &str)]) -> Result<(), DuError> {
    let Some(text) = query_param(uri, "orderby") else { return Ok(()) };
    let mut parts = text.split_whitespace();
    let field = parts.next().unwrap_or_default();
    let descending = match parts.next() {
        None => false,
        Some(direction) if direction.eq_ignore_ascii_case("asc") => false,
        Some(direction) if direction.eq_ignore_ascii_case("desc") => true,
        Some(other) => {
            return Err(
                DuError::bad_request(format!("orderby direction {other:?} is not asc or desc")).with_target("orderby")
            );
        }
    };
    let Some((_, key)) = fields.iter().find(|(name, _)| name.eq_ignore_ascii_case(field)) else {
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        return Err(DuError::bad_request(format!("cannot order by {field:?}; use one of {}", names.join(", ")))
            .with_target("orderby"));
    };
    items.sort_by(|a, b| {
        let ordering = match (&a[*key], &b[*key]) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(std::cmp::Ordering::Equal)
            }
            (x, y) => x.as_str().unwrap_or_default().cmp(y.as_str().unwrap_or_default()),
        };
        if descending { ordering.reverse() } else { ordering }
    });
    Ok(())
}

/// #22 `[orderby]`.
pub(super) async fn list_groups(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let mut items: Vec<Value> =
        state.du.groups().await?.iter().map(|(id, created)| group_json(&snapshot, id, created)).collect();
    order(
        &uri,
        &mut items,
        &[
            ("groupId", "groupId"),
            ("deviceCount", "deviceCount"),
            ("createdDate", "createdDateTime"),
            ("createdDateTime", "createdDateTime"),
            ("subgroupsWithNewUpdatesAvailableCount", "subgroupsWithNewUpdatesAvailableCount"),
            ("subgroupsWithUpdatesInProgressCount", "subgroupsWithUpdatesInProgressCount"),
            ("subgroupsOnLatestUpdateCount", "subgroupsWithOnLatestUpdateCount"),
            ("subgroupsWithOnLatestUpdateCount", "subgroupsWithOnLatestUpdateCount"),
        ],
    )?;
    page(&state.du, &uri, items)
}

async fn find_group(state: &DuState, id: &str) -> Result<(Snapshot, String), DuError> {
    let snapshot = state.du.snapshot().await?;
    let created = state
        .du
        .groups()
        .await?
        .into_iter()
        .find(|(g, _)| g == id)
        .map(|(_, created)| created)
        .ok_or_else(|| DuError::not_found(format!("group {id} not found")))?;
    Ok((snapshot, created))
}

/// #23.
pub(super) async fn get_group(State(state): State<DuState>, Path((_, id)): GroupPath) -> Result<Json<Value>, DuError> {
    let (snapshot, created) = find_group(&state, &id).await?;
    Ok(Json(group_json(&snapshot, &id, &created)))
}

/// #24.
pub(super) async fn delete_group(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_group(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("group {id} not found")))
    }
}

/// #25.
pub(super) async fn group_compliance(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &id).await?;
    Ok(Json(compliance_json(snapshot.compliance(snapshot.group_devices(&id)))))
}

fn best_updates_json(snapshot: &Snapshot, group: &str, class: &DeviceClass, members: &[&DeviceView]) -> Option<Value> {
    let best = snapshot.best_update(class)?;
    let outdated = members.iter().filter(|d| !snapshot.on_latest(d)).count();
    Some(json!({"groupId": group, "deviceClassId": class.id, "update": best.info(), "deviceCount": outdated}))
}

fn subgroups_of<'a>(snapshot: &'a Snapshot, group: &str) -> BTreeMap<String, (DeviceClass, Vec<&'a DeviceView>)> {
    let mut classes: BTreeMap<String, (DeviceClass, Vec<&DeviceView>)> = BTreeMap::new();
    for device in snapshot.group_devices(group) {
        classes.entry(device.class.id.clone()).or_insert_with(|| (device.class.clone(), Vec::new())).1.push(device);
    }
    classes
}

/// #26.
pub(super) async fn group_best_updates(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &id).await?;
    let items = subgroups_of(&snapshot, &id)
        .values()
        .filter_map(|(class, members)| best_updates_json(&snapshot, &id, class, members))
        .collect();
    page(&state.du, &uri, items)
}

// ----- deployments -------------------------------------------------------------------------------

fn deployment_json(snapshot: &Snapshot, deployment: &StoredDeployment, version: &ApiVersion) -> Value {
    let info = snapshot
        .update(&deployment.update)
        .map_or_else(|| json!({"updateId": update_id_json(&deployment.update)}), |u| u.info());
    deployment.to_rest(info, version.0)
}

fn deployments_of<'a>(snapshot: &'a Snapshot, group: &str, class: Option<&str>) -> Vec<&'a StoredDeployment> {
    snapshot
        .deployments
        .iter()
        .filter(|d| d.group_id == group && class.is_none_or(|c| d.subgroups.contains_key(c)))
        .collect()
}

fn order_deployments(uri: &Uri, items: &mut [Value]) -> Result<(), DuError> {
    order(uri, items, &[("startDateTime", "startDateTime"), ("startDate", "startDateTime")])
}

/// #27 `[orderby]`.
pub(super) async fn list_group_deployments(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &group).await?;
    let mut items: Vec<Value> =
        deployments_of(&snapshot, &group, None).into_iter().map(|d| deployment_json(&snapshot, d, &version)).collect();
    order_deployments(&uri, &mut items)?;
    page(&state.du, &uri, items)
}

async fn find_deployment(state: &DuState, group: &str, id: &str) -> Result<(Snapshot, StoredDeployment), DuError> {
    let snapshot = state.du.snapshot().await?;
    let deployment = snapshot
        .deployments
        .iter()
        .find(|d| d.group_id == group && d.deployment_id == id)
        .cloned()
        .ok_or_else(|| DuError::not_found(format!("deployment {id} of group {group} not found")))?;
    Ok((snapshot, deployment))
}

/// #28.
pub(super) async fn get_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, id)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_deployment(&state, &group, &id).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

fn update_id_of(value: &Value, pointer: &str) -> Result<UpdateId, DuError> {
    let id = value
        .pointer(pointer)
        .ok_or_else(|| DuError::bad_request(format!("{pointer} is required")).with_target(pointer))?;
    serde_json::from_value(id.clone()).map_err(|e| {
        DuError::bad_request(format!("{pointer} must be {{provider, name, version}}: {e}")).with_target(pointer)
    })
}

/// Whether a deployment id follows the service's rules.
fn valid_deployment_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 73 && !id.chars().any(|c| c.is_uppercase() || "&^[]{}|<>/\\\"".contains(c))
}

/// #29.
pub(super) async fn put_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, id)): DeploymentPath,
    body: axum::body::Bytes,
) -> Result<Json<Value>, DuError> {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| DuError::bad_request(format!("the body is not JSON: {e}")))?;
    if !valid_deployment_id(&id) {
        return Err(DuError::bad_request(
            "a deployment id has 1 to 73 characters, no upper-case letters and none of & ^ [ ] { } | < > / \\ \"",
        )
        .with_target("deploymentId"));
    }
    if body.get("deploymentId").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(
            DuError::bad_request("deploymentId must equal the deployment id of the path").with_target("deploymentId")
        );
    }
    if body.get("groupId").and_then(Value::as_str) != Some(group.as_str()) {
        return Err(DuError::bad_request("groupId must equal the group id of the path").with_target("groupId"));
    }
    let start = body
        .get("startDateTime")
        .and_then(Value::as_str)
        .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .ok_or_else(|| {
            DuError::bad_request("startDateTime must be an RFC 3339 date and time").with_target("startDateTime")
        })?;
    let start = start
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| DuError::bad_request(e.to_string()))?;
    let update = update_id_of(&body, "/update/updateId")?;
    let rollback_policy = match body.get("rollbackPolicy").filter(|p| !p.is_null()) {
        None => None,
        Some(policy) => {
            let failure = policy.get("failure");
            let percentage = failure
                .and_then(|f| f.get("devicesFailedPercentage"))
                .and_then(Value::as_f64)
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    DuError::bad_request("rollbackPolicy.failure.devicesFailedPercentage must be 0 to 100")
                        .with_target("rollbackPolicy")
                })?;
            let count = failure.and_then(|f| f.get("devicesFailedCount")).and_then(Value::as_u64).ok_or_else(|| {
                DuError::bad_request("rollbackPolicy.failure.devicesFailedCount must be a count")
                    .with_target("rollbackPolicy")
            })?;
            Some(RollbackPolicy {
                update: update_id_of(policy, "/update/updateId")?,
                devices_failed_percentage: percentage,
                devices_failed_count: count,
            })
        }
    };
    let download_security = match body.get("downloadSecurity").and_then(Value::as_str) {
        None => None,
        Some(s @ ("https" | "http")) if version.0 == crate::du::API_VERSION_2026 => Some(s.to_owned()),
        Some(_) if version.0 != crate::du::API_VERSION_2026 => {
            return Err(DuError::bad_request(format!(
                "downloadSecurity needs api-version {}",
                crate::du::API_VERSION_2026
            ))
            .with_target("downloadSecurity"));
        }
        Some(other) => {
            return Err(DuError::bad_request(format!("downloadSecurity {other:?} is not \"https\" or \"http\""))
                .with_target("downloadSecurity"));
        }
    };
    find_group(&state, &group).await?;
    let deployment = StoredDeployment {
        deployment_id: id,
        group_id: group,
        start_date_time: start,
        update,
        rollback_policy,
        is_cloud_initiated_rollback: false,
        download_security,
        created_date_time: crate::ids::now_rfc3339(),
        subgroups: BTreeMap::new(),
        excluded_subgroups: Default::default(),
        target_devices: None,
        target_device_class: None,
    };
    let stored = state.du.put_deployment(deployment).await?;
    state.du.wake();
    // Extend it to the group's subgroups now, so the answer lists them; the reconciler task
    // writes the devices' desired properties.
    if let Err(error) = state.du.reconcile(false).await {
        tracing::warn!(%error, "reconciling after a deployment change failed");
    }
    let (snapshot, deployment) = find_deployment(&state, &stored.group_id, &stored.deployment_id).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #30.
pub(super) async fn delete_deployment(
    State(state): State<DuState>,
    Path((_, group, id)): DeploymentPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_deployment(&group, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("deployment {id} of group {group} not found")))
    }
}

struct SubgroupStatus {
    state: &'static str,
    counts: Counts,
}

fn subgroup_status(snapshot: &Snapshot, deployment: &StoredDeployment, class: &str) -> Option<SubgroupStatus> {
    let subgroup = deployment.subgroups.get(class)?;
    let states = deploy::subgroup_devices(deployment, class, &snapshot.devices)
        .into_iter()
        .map(|d| deploy::device_state(deployment, subgroup, d));
    let counts = Counts::of(states);
    let governs = if deployment.is_cloud_initiated_rollback {
        true
    } else {
        snapshot.governing(&deployment.group_id, class).is_some_and(|g| g.deployment_id == deployment.deployment_id)
    };
    Some(SubgroupStatus { state: deploy::subgroup_state(subgroup, governs), counts })
}

fn subgroup_status_json(deployment: &StoredDeployment, class: &str, status: &SubgroupStatus) -> Value {
    json!({
        "groupId": deployment.group_id,
        "deviceClassId": class,
        "deploymentState": status.state,
        "totalDevices": status.counts.total,
        "devicesInProgressCount": status.counts.in_progress,
        "devicesCompletedFailedCount": status.counts.failed,
        "devicesCompletedSucceededCount": status.counts.succeeded,
        "devicesCanceledCount": status.counts.canceled,
    })
}

/// #31.
pub(super) async fn deployment_status(
    State(state): State<DuState>,
    Path((_, group, id)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_deployment(&state, &group, &id).await?;
    let mut statuses = BTreeMap::new();
    let mut subgroup_json = Vec::new();
    for class in deployment.subgroups.keys() {
        if let Some(status) = subgroup_status(&snapshot, &deployment, class) {
            subgroup_json.push(subgroup_status_json(&deployment, class, &status));
            statuses.insert(class.clone(), (status.state, status.counts));
        }
    }
    let started = deployment.start_date_time <= snapshot.now;
    Ok(Json(json!({
        "groupId": group,
        "deploymentState": deploy::deployment_state(&statuses, started),
        "subgroupStatus": subgroup_json,
    })))
}

// ----- subgroups ---------------------------------------------------------------------------------

async fn subgroup_created(state: &DuState, group: &str, class: &str) -> Result<String, DuError> {
    state
        .du
        .subgroup_records()
        .await?
        .into_iter()
        .find(|(g, c, _)| g == group && c == class)
        .map(|(_, _, created)| created)
        .ok_or_else(|| DuError::not_found(format!("group {group} has no device class subgroup {class}")))
}

fn subgroup_json(snapshot: &Snapshot, group: &str, class: &str, created: &str, count: usize) -> Value {
    let mut value = json!({"deviceClassId": class, "groupId": group, "createdDateTime": created, "deviceCount": count});
    if let Some(deployment) = snapshot.governing(group, class) {
        value["deploymentId"] = deployment.deployment_id.clone().into();
    }
    value
}

/// #32 `[filter: compatProperties/<name> eq '<value>']`.
pub(super) async fn list_subgroups(
    State(state): State<DuState>,
    Path((_, group)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["compatProperties/"])?;
    let (snapshot, _) = find_group(&state, &group).await?;
    let records = state.du.subgroup_records().await?;
    let items = subgroups_of(&snapshot, &group)
        .iter()
        .filter(|(_, (class, _))| {
            filter.as_ref().is_none_or(|f| {
                f.matches(|field| {
                    let name = field.split_once('/').map(|(_, n)| n).unwrap_or_default();
                    class.compat.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
                })
            })
        })
        .filter_map(|(id, (_, members))| {
            let created = records.iter().find(|(g, c, _)| g == &group && c == id)?.2.clone();
            Some(subgroup_json(&snapshot, &group, id, &created, members.len()))
        })
        .collect();
    page(&state.du, &uri, items)
}

/// #33.
pub(super) async fn get_subgroup(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    let created = subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot().await?;
    let count = snapshot.devices.iter().filter(|d| d.group_id == group && d.class.id == class).count();
    Ok(Json(subgroup_json(&snapshot, &group, &class, &created, count)))
}

/// #34.
pub(super) async fn delete_subgroup(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_subgroup(&group, &class).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("group {group} has no device class subgroup {class}")))
    }
}

/// #35.
pub(super) async fn subgroup_compliance(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot().await?;
    Ok(Json(compliance_json(snapshot.subgroup_compliance(&group, &class))))
}

/// #36.
pub(super) async fn subgroup_best_update(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot().await?;
    let subgroups = subgroups_of(&snapshot, &group);
    let (device_class, members) = subgroups
        .get(&class)
        .ok_or_else(|| DuError::not_found(format!("group {group} has no devices of class {class}")))?;
    best_updates_json(&snapshot, &group, device_class, members)
        .map(Json)
        .ok_or_else(|| DuError::not_found(format!("no update fits device class {class}")))
}

/// #37 `[orderby]`.
pub(super) async fn list_subgroup_deployments(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, class)): SubgroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot().await?;
    let mut items: Vec<Value> = deployments_of(&snapshot, &group, Some(&class))
        .into_iter()
        .map(|d| deployment_json(&snapshot, d, &version))
        .collect();
    order_deployments(&uri, &mut items)?;
    page(&state.du, &uri, items)
}

async fn find_subgroup_deployment(
    state: &DuState,
    group: &str,
    class: &str,
    id: &str,
) -> Result<(Snapshot, StoredDeployment), DuError> {
    let (snapshot, deployment) = find_deployment(state, group, id).await?;
    if !deployment.subgroups.contains_key(class) {
        return Err(DuError::not_found(format!("deployment {id} has not reached device class {class}")));
    }
    Ok((snapshot, deployment))
}

/// #38.
pub(super) async fn get_subgroup_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_subgroup_deployment(&state, &group, &class, &id).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #39: the deployment stops covering the subgroup (and is never extended to it again).
pub(super) async fn delete_subgroup_deployment(
    State(state): State<DuState>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
) -> Result<StatusCode, DuError> {
    find_subgroup_deployment(&state, &group, &class, &id).await?;
    state
        .du
        .change_deployment(&group, &id, |d| {
            d.subgroups.remove(&class);
            d.excluded_subgroups.insert(class.clone());
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// #40 `POST S/deployments/{id}:cancel` and #41 `...:retry`.
pub(super) async fn subgroup_deployment_action(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, class, target)): SubgroupDeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (id, action) = target
        .rsplit_once(':')
        .ok_or_else(|| DuError::not_found(format!("no action on deployment {target}; POST ...:cancel or ...:retry")))?;
    let deployment = match action {
        "cancel" => state.du.cancel(&group, &class, id).await?,
        "retry" => state.du.retry(&group, &class, id).await?,
        other => return Err(DuError::not_found(format!("deployments have no action {other:?}; use cancel or retry"))),
    };
    let snapshot = state.du.snapshot().await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #42.
pub(super) async fn subgroup_deployment_status(
    State(state): State<DuState>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_subgroup_deployment(&state, &group, &class, &id).await?;
    let status = subgroup_status(&snapshot, &deployment, &class)
        .ok_or_else(|| DuError::not_found(format!("deployment {id} has not reached device class {class}")))?;
    Ok(Json(subgroup_status_json(&deployment, &class, &status)))
}

/// #43 `[filter: deviceId, moduleId, deviceState]`.
pub(super) async fn subgroup_device_states(
    State(state): State<DuState>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["deviceId", "moduleId", "deviceState"])?;
    let (snapshot, deployment) = find_subgroup_deployment(&state, &group, &class, &id).await?;
    let Some(subgroup) = deployment.subgroups.get(&class) else {
        return Err(DuError::not_found(format!("deployment {id} has not reached device class {class}")));
    };
    let items = deploy::subgroup_devices(&deployment, &class, &snapshot.devices)
        .into_iter()
        .map(|device| {
            let state = deploy::device_state(&deployment, subgroup, device);
            let moved_on = match snapshot.device_deployment(device) {
                Some((current, _)) => current.deployment_id != deployment.deployment_id,
                None => false,
            };
            let retries = if subgroup.retry_devices.contains(&device.device_id) { subgroup.retry_count } else { 0 };
            (device, state, moved_on, retries)
        })
        .filter(|(device, state, _, _)| {
            filter.as_ref().is_none_or(|f| {
                f.matches(|field| match field.to_ascii_lowercase().as_str() {
                    "deviceid" => Some(device.device_id.clone()),
                    "devicestate" => Some(state.as_str().to_owned()),
                    _ => None,
                })
            })
        })
        .map(|(device, state, moved_on, retries)| {
            json!({"deviceId": device.device_id, "retryCount": retries, "movedOnToNewDeployment": moved_on, "deviceState": state.as_str()})
        })
        .collect();
    page(&state.du, &uri, items)
}

// ----- device operations, diagnostics, tokens ------------------------------------------------------

/// #44.
pub(super) async fn get_operation(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    headers: HeaderMap,
) -> Result<Response, DuError> {
    operation_response(&state, DEVICE_OPERATION, &id, &headers).await
}

/// #45 `[filter, top]`.
pub(super) async fn list_operations(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let pending = pending_only(&uri)?;
    let operations = state.du.operations(DEVICE_OPERATION, pending).await?;
    page(&state.du, &uri, filter_operations(&uri, operations)?)
}

/// #46–50: log collection and device health need agent support that duhub does not have yet.
pub(super) async fn not_supported(uri: Uri) -> DuError {
    let what = if uri.path().contains("deviceHealth") { "device health" } else { "log collection" };
    DuError::new(StatusCode::NOT_FOUND, "NotSupported", format!("{what} is not supported by this server yet"))
}

/// `GET .../duhub/tokens`.
pub(super) async fn list_tokens(State(state): State<DuState>) -> Result<Json<Value>, DuError> {
    let tokens = state.du.store().api_tokens().await?;
    let value: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            let mut v = json!({"id": t.id, "name": t.name, "createdDateTime": t.created});
            if let Some(revoked) = t.revoked {
                v["revokedDateTime"] = revoked.into();
            }
            v
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}

/// `POST .../duhub/tokens` `{"name": ...}`: the token is in this answer only.
pub(super) async fn create_token(State(state): State<DuState>, body: axum::body::Bytes) -> Result<Response, DuError> {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| DuError::bad_request(format!("the body is not JSON: {e}")))?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| (1..=128).contains(&n.chars().count()))
        .ok_or_else(|| DuError::bad_request("name must be a string of 1 to 128 characters").with_target("name"))?;
    let token = crate::ids::generate_api_token();
    state.du.store().add_api_token(name, &token).await?;
    let id = crate::store::Store::api_token_id(&token);
    let created = crate::ids::now_rfc3339();
    Ok((StatusCode::CREATED, Json(json!({"id": id, "name": name, "token": token, "createdDateTime": created})))
        .into_response())
}

/// `DELETE .../duhub/tokens/{id}`.
pub(super) async fn revoke_token(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.store().revoke_api_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("no active token {id}")))
    }
}
