//! Devices (#17–20): the Device Update view of devices (class, group, deployment state, last
//! install result), and the device import operation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};

use super::{GroupPath, SubgroupPath, json_body, keyset_records, parse_filter, update_info};
use crate::du::Snapshot;
use crate::du::fleet::DeviceView;
use crate::rest::du::{DuError, DuState, Keyset, accepted};
use crate::store::{RecordFilter, RecordRow};

fn device_json(snapshot: &Snapshot, device: &DeviceView) -> Value {
    let mut value = json!({
        "deviceId": device.device_id,
        "deviceClassId": device.class.id,
        "groupId": device.group_id,
    });
    if let Some(deployment) = device.reported_workflow().and_then(|w| snapshot.deployment_of_workflow(w)) {
        value["lastAttemptedUpdate"] = update_info(snapshot, &deployment.update);
    }
    if let Some((deployment, state)) =
        snapshot.device_deployment(&device.group_id, &device.class.id, Some(&device.device_id), device)
    {
        value["deploymentStatus"] = state.as_str().into();
        value["lastDeploymentId"] = deployment.deployment_id.clone().into();
    }
    if let Some(installed) = &device.installed {
        value["installedUpdate"] = update_info(snapshot, installed);
    }
    value["onLatestUpdate"] = snapshot.on_latest(&device.class, device.installed.as_ref()).into();
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
pub(in crate::rest::du) async fn list_devices(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["groupId", "deviceClassId", "deploymentStatus", "deviceId"])?;
    let snapshot = state.du.snapshot().await?;
    // The filter is decided on the records, page by page in device id order; only the page's
    // twins are read.
    let keyset = Keyset::of(&state.du, &uri)?;
    let keep = |r: &RecordRow| {
        filter.as_ref().is_none_or(|f| {
            f.matches(|field| match field.to_ascii_lowercase().as_str() {
                "groupid" => Some(r.group_id.clone()),
                "deviceclassid" => Some(r.class_id.clone()),
                "deviceid" => Some(r.device_id.clone()),
                "deploymentstatus" => snapshot
                    .device_deployment(&r.group_id, &r.class_id, Some(&r.device_id), &r.facts)
                    .map(|(_, s)| s.as_str().to_owned()),
                _ => None,
            })
        })
    };
    let (page, more) = keyset_records(&state, &keyset, &RecordFilter::default(), None, keep).await?;
    let ids: Vec<String> = page.iter().map(|r| r.device_id.clone()).collect();
    let rows = state.du.store().fleet_of(&ids).await?;
    let items = rows.iter().filter_map(DeviceView::from_row).map(|d| device_json(&snapshot, &d)).collect();
    Ok(keyset.body(&uri, items, ids.last().map(String::as_str), more))
}

/// #18: devices come from the hub's registry, so the import has nothing to copy. The body is
/// the import type, a JSON string.
pub(in crate::rest::du) async fn import_devices(
    State(state): State<DuState>,
    body: axum::body::Bytes,
) -> Result<Response, DuError> {
    let kind: Option<String> = json_body(&body)?;
    if !matches!(kind.as_deref(), Some("Devices" | "Modules" | "All")) {
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
pub(in crate::rest::du) async fn get_device(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let rows = state.du.store().fleet_of(std::slice::from_ref(&id)).await?;
    let device = rows
        .iter()
        .find_map(DeviceView::from_row)
        .ok_or_else(|| DuError::not_found(format!("device {id} not found or has no Device Update agent")))?;
    let snapshot = state.du.snapshot_of(Some(&device.group_id)).await?;
    Ok(Json(device_json(&snapshot, &device)))
}

/// #20: module identities are not supported by the hub yet.
pub(in crate::rest::du) async fn get_device_module(Path((_, device, module)): SubgroupPath) -> DuError {
    DuError::not_found(format!("module {module} of device {device} not found: module identities are not supported yet"))
}
