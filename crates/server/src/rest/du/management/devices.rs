//! Devices (#17–20): the Device Update view of devices (class, group, deployment state, last
//! install result), and the device import operation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};

use super::{GroupPath, SubgroupPath, json_body, parse_filter, update_info};
use crate::du::Snapshot;
use crate::du::fleet::DeviceView;
use crate::rest::du::{DuError, DuState, accepted, page};

fn device_json(snapshot: &Snapshot, device: &DeviceView) -> Value {
    let mut value = json!({
        "deviceId": device.device_id,
        "deviceClassId": device.class.id,
        "groupId": device.group_id,
    });
    if let Some(deployment) = snapshot.last_attempted_deployment(device) {
        value["lastAttemptedUpdate"] = update_info(snapshot, &deployment.update);
    }
    if let Some((deployment, state)) = snapshot.device_deployment(device) {
        value["deploymentStatus"] = state.as_str().into();
        value["lastDeploymentId"] = deployment.deployment_id.clone().into();
    }
    if let Some(installed) = &device.installed {
        value["installedUpdate"] = update_info(snapshot, installed);
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
pub(in crate::rest::du) async fn list_devices(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
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
    let snapshot = state.du.snapshot().await?;
    let device = snapshot
        .devices
        .iter()
        .find(|d| d.device_id == id)
        .ok_or_else(|| DuError::not_found(format!("device {id} not found or has no Device Update agent")))?;
    Ok(Json(device_json(&snapshot, device)))
}

/// #20: module identities are not supported by the hub yet.
pub(in crate::rest::du) async fn get_device_module(Path((_, device, module)): SubgroupPath) -> DuError {
    DuError::not_found(format!("module {module} of device {device} not found: module identities are not supported yet"))
}
