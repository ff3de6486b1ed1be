//! `/devices`: device identities.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Service, if_match};
use super::{ApiError, AppState};
use crate::store::{Device, DeviceSpec, DeviceStatus};

/// The device JSON of the IoT Hub REST API.
pub(crate) fn device_json(device: &Device) -> Value {
    json!({
        "deviceId": device.device_id,
        "generationId": device.generation_id,
        "etag": device.etag,
        "connectionState": device.connection_state,
        "status": device.status,
        "statusReason": device.status_reason,
        "connectionStateUpdatedTime": device.connection_state_updated.as_deref().unwrap_or("0001-01-01T00:00:00Z"),
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": device.last_activity.as_deref().unwrap_or("0001-01-01T00:00:00Z"),
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {"primaryKey": device.primary_key, "secondaryKey": device.secondary_key},
            "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
            "type": "sas",
        },
        "capabilities": {"iotEdge": false},
        "modelId": device.model_id,
        "createdTime": device.created,
    })
}

/// The most devices `GET /devices` returns, as IoT Hub: "any value [of `top`] outside the range
/// of 1-1000 is considered to be 1000".
pub(crate) const MAX_DEVICES_LISTED: i64 = 1000;

/// `?top=` of the device list.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    top: Option<i64>,
}

pub(super) async fn list(
    _: Service,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let top = query.top.filter(|top| (1..=MAX_DEVICES_LISTED).contains(top)).unwrap_or(MAX_DEVICES_LISTED);
    let devices = state.hub.store().devices(None, top).await?;
    Ok(Json(Value::Array(devices.iter().map(device_json).collect())))
}

pub(super) async fn get(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(device_json(&state.hub.store().device(&id).await?)))
}

pub(super) async fn put(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_else(|| json!({}));
    if let Some(body_id) = body.get("deviceId").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ApiError::BadRequest(format!("the body names device {body_id:?}, the URL {id:?}")));
    }
    let keys = body.pointer("/authentication/symmetricKey");
    let key = |name: &str| {
        keys.and_then(|k| k.get(name)).and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_owned)
    };
    let status = match body.get("status").and_then(Value::as_str) {
        None | Some("enabled") => DeviceStatus::Enabled,
        Some("disabled") => DeviceStatus::Disabled,
        Some(other) => return Err(ApiError::BadRequest(format!("unknown status {other:?} (enabled or disabled)"))),
    };
    let spec = DeviceSpec {
        device_id: id.clone(),
        primary_key: key("primaryKey"),
        secondary_key: key("secondaryKey"),
        status,
        status_reason: body.get("statusReason").and_then(Value::as_str).map(str::to_owned),
    };
    let store = state.hub.store();
    let device = match if_match(&headers) {
        Some(etag) => store.update_device(&spec, Some(&etag)).await?,
        None => store.create_device(&spec).await?,
    };
    Ok(Json(device_json(&device)))
}

pub(super) async fn delete(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.hub.store().delete_device(&id, if_match(&headers).as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
