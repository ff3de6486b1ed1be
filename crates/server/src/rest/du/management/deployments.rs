//! Deployments (#27–31, #37–43): of a group (list, read, create or replace, delete, status)
//! and of one of its subgroups (list, read, stop, cancel, retry, status, device states).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    DeploymentPath, GroupPath, SubgroupDeploymentPath, SubgroupPath, find_group, json_body, keyset_records, lenient,
    order, parse_filter, present, update_id_of, update_info,
};
use crate::du::Snapshot;
use crate::du::deploy;
use crate::du::model::{RollbackPolicy, StoredDeployment, valid_deployment_id};
use crate::du::status::SubgroupStatus;
use crate::rest::du::{ApiVersion, DuError, DuState, Keyset, page};
use crate::store::{RecordFilter, RecordRow};

/// The body of #29 (`Deployment`). Members of the wrong type read as absent, so that the
/// checks below name them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentBody {
    #[serde(default, deserialize_with = "lenient")]
    deployment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    group_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    start_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    update: Option<UpdateRef>,
    #[serde(default)]
    rollback_policy: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    download_security: Option<String>,
    /// duhub extension: a phased rollout policy (`du::rollout::RolloutPolicy`).
    #[serde(default)]
    rollout: Option<Value>,
}

/// `{"updateId": {...}}`; the id is kept as JSON so that its errors name the pointer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRef {
    #[serde(default, deserialize_with = "present")]
    update_id: Option<Value>,
}

/// `rollbackPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RollbackPolicyBody {
    #[serde(default, deserialize_with = "lenient")]
    update: Option<UpdateRef>,
    #[serde(default, deserialize_with = "lenient")]
    failure: Option<FailureBody>,
}

/// `rollbackPolicy.failure`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureBody {
    #[serde(default, deserialize_with = "lenient")]
    devices_failed_percentage: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    devices_failed_count: Option<u64>,
}

fn deployment_json(snapshot: &Snapshot, deployment: &StoredDeployment, version: &ApiVersion) -> Value {
    deployment.to_rest(update_info(snapshot, &deployment.update), version.0)
}

fn order_deployments(uri: &Uri, items: &mut [Value]) -> Result<(), DuError> {
    order(uri, items, &[("startDateTime", "startDateTime"), ("startDate", "startDateTime")])
}

/// #27 `[orderby]`.
pub(in crate::rest::du) async fn list_group_deployments(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &group).await?;
    let mut items: Vec<Value> =
        snapshot.deployments_of(&group, None).into_iter().map(|d| deployment_json(&snapshot, d, &version)).collect();
    order_deployments(&uri, &mut items)?;
    page(&state.du, &uri, items)
}

async fn find_deployment(state: &DuState, group: &str, id: &str) -> Result<(Snapshot, StoredDeployment), DuError> {
    let snapshot = state.du.snapshot_of(Some(group)).await?;
    let deployment = snapshot
        .deployment(group, id)
        .cloned()
        .ok_or_else(|| DuError::not_found(format!("deployment {id} of group {group} not found")))?;
    Ok((snapshot, deployment))
}

/// #28.
pub(in crate::rest::du) async fn get_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, id)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_deployment(&state, &group, &id).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #29.
pub(in crate::rest::du) async fn put_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, id)): DeploymentPath,
    body: axum::body::Bytes,
) -> Result<Json<Value>, DuError> {
    let body: DeploymentBody = json_body(&body)?;
    if !valid_deployment_id(&id) {
        return Err(DuError::bad_request(
            "a deployment id has 1 to 73 characters, no upper-case letters and none of & ^ [ ] { } | < > / \\ \"",
        )
        .with_target("deploymentId"));
    }
    if body.deployment_id.as_deref() != Some(id.as_str()) {
        return Err(
            DuError::bad_request("deploymentId must equal the deployment id of the path").with_target("deploymentId")
        );
    }
    if body.group_id.as_deref() != Some(group.as_str()) {
        return Err(DuError::bad_request("groupId must equal the group id of the path").with_target("groupId"));
    }
    let start = body
        .start_date_time
        .as_deref()
        .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .ok_or_else(|| {
            DuError::bad_request("startDateTime must be an RFC 3339 date and time").with_target("startDateTime")
        })?;
    let start = start
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| DuError::bad_request(e.to_string()))?;
    let update = update_id_of(body.update.as_ref().and_then(|u| u.update_id.as_ref()), "/update/updateId")?;
    let rollback_policy = match body.rollback_policy {
        None => None,
        Some(policy) => {
            let policy: RollbackPolicyBody = serde_json::from_value(policy).unwrap_or_default();
            let failure = policy.failure.as_ref();
            let percentage = failure
                .and_then(|f| f.devices_failed_percentage)
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    DuError::bad_request("rollbackPolicy.failure.devicesFailedPercentage must be 0 to 100")
                        .with_target("rollbackPolicy")
                })?;
            let count = failure.and_then(|f| f.devices_failed_count).ok_or_else(|| {
                DuError::bad_request("rollbackPolicy.failure.devicesFailedCount must be a count")
                    .with_target("rollbackPolicy")
            })?;
            Some(RollbackPolicy {
                update: update_id_of(policy.update.as_ref().and_then(|u| u.update_id.as_ref()), "/update/updateId")?,
                devices_failed_percentage: percentage,
                devices_failed_count: count,
            })
        }
    };
    let download_security = match body.download_security.as_deref() {
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
    let rollout = match &body.rollout {
        None | Some(Value::Null) => None,
        Some(policy) => Some(crate::du::rollout::Rollout {
            policy: crate::du::rollout::RolloutPolicy::from_json(policy).map_err(|e| {
                DuError::bad_request(format!("rollout{}: {}", e.pointer, e.message))
                    .with_target(format!("rollout{}", e.pointer))
            })?,
            state: Default::default(),
        }),
    };
    let (snapshot, _) = find_group(&state, &group).await?;
    for (id, target) in
        std::iter::once((&update, "update")).chain(rollback_policy.iter().map(|p| (&p.update, "rollbackPolicy")))
    {
        if snapshot.update(id).is_none() {
            return Err(DuError::not_found(format!("update {id} not found: import it first")).with_target(target));
        }
    }
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
        rollout,
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
pub(in crate::rest::du) async fn delete_deployment(
    State(state): State<DuState>,
    Path((_, group, id)): DeploymentPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_deployment(&group, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("deployment {id} of group {group} not found")))
    }
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
pub(in crate::rest::du) async fn deployment_status(
    State(state): State<DuState>,
    Path((_, group, id)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_deployment(&state, &group, &id).await?;
    let status = snapshot.deployment_status(&deployment);
    let subgroups: Vec<Value> =
        status.subgroups.iter().map(|(class, s)| subgroup_status_json(&deployment, class, s)).collect();
    Ok(Json(json!({
        "groupId": group,
        "deploymentState": status.state,
        "subgroupStatus": subgroups,
    })))
}

/// #37 `[orderby]`.
pub(in crate::rest::du) async fn list_subgroup_deployments(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, class)): SubgroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    super::subgroups::subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot_of(Some(&group)).await?;
    let mut items: Vec<Value> = snapshot
        .deployments_of(&group, Some(&class))
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
pub(in crate::rest::du) async fn get_subgroup_deployment(
    State(state): State<DuState>,
    Extension(version): Extension<ApiVersion>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_subgroup_deployment(&state, &group, &class, &id).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #39: the deployment stops covering the subgroup (and is never extended to it again).
pub(in crate::rest::du) async fn delete_subgroup_deployment(
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
pub(in crate::rest::du) async fn subgroup_deployment_action(
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
    let snapshot = state.du.snapshot_of(Some(&group)).await?;
    Ok(Json(deployment_json(&snapshot, &deployment, &version)))
}

/// #42.
pub(in crate::rest::du) async fn subgroup_deployment_status(
    State(state): State<DuState>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, deployment) = find_subgroup_deployment(&state, &group, &class, &id).await?;
    let status = snapshot
        .subgroup_status(&deployment, &class)
        .ok_or_else(|| DuError::not_found(format!("deployment {id} has not reached device class {class}")))?;
    Ok(Json(subgroup_status_json(&deployment, &class, &status)))
}

/// #43 `[filter: deviceId, moduleId, deviceState]`.
pub(in crate::rest::du) async fn subgroup_device_states(
    State(state): State<DuState>,
    Path((_, group, class, id)): SubgroupDeploymentPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["deviceId", "moduleId", "deviceState"])?;
    // The deployment record and the page of device records only: no device counts per page.
    let snapshot = state.du.deployments_snapshot().await?;
    let deployment = snapshot
        .deployment(&group, &id)
        .cloned()
        .ok_or_else(|| DuError::not_found(format!("deployment {id} of group {group} not found")))?;
    let Some(subgroup) = deployment.subgroups.get(&class) else {
        return Err(DuError::not_found(format!("deployment {id} has not reached device class {class}")));
    };
    let keyset = Keyset::of(&state.du, &uri)?;
    let records = RecordFilter { group_id: Some(group.clone()), class_id: Some(class.clone()), ..Default::default() };
    let keep = |r: &RecordRow| {
        filter.as_ref().is_none_or(|f| {
            f.matches(|field| match field.to_ascii_lowercase().as_str() {
                "deviceid" => Some(r.device_id.clone()),
                "devicestate" => Some(deploy::device_state(&deployment, subgroup, &r.facts).as_str().to_owned()),
                _ => None,
            })
        })
    };
    let (members, more) = keyset_records(&state, &keyset, &records, deployment.target_devices.as_deref(), keep).await?;
    let states = snapshot.device_states(&deployment, &class, &members).unwrap_or_default();
    let last = members.last().map(|r| r.device_id.clone());
    let items = states
        .into_iter()
        .map(|s| {
            json!({"deviceId": s.device.device_id, "retryCount": s.retry_count, "movedOnToNewDeployment": s.moved_on, "deviceState": s.state.as_str()})
        })
        .collect();
    Ok(keyset.body(&uri, items, last.as_deref(), more))
}
