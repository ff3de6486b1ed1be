//! `/twins/{id}`: read, patch and replace device twins.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::auth::{Service, if_match};
use super::{ApiError, AppState};
use crate::store::Twin;

/// The twin JSON of the IoT Hub REST API.
pub(crate) fn twin_json(twin: &Twin) -> Value {
    let mut value = json!({
        "deviceId": twin.device_id,
        "etag": twin.etag(),
        "deviceEtag": twin.etag(),
        "version": twin.version,
        "status": twin.status,
        "connectionState": twin.connection_state,
        "properties": {"desired": twin.desired_document(), "reported": twin.reported_document()},
        "tags": Value::Object(twin.tags.clone()),
    });
    if let Some(model_id) = &twin.model_id {
        value["modelId"] = model_id.clone().into();
    }
    value
}

pub(super) async fn get(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(twin_json(&state.hub.store().twin(&id).await?)))
}

/// `PATCH`: merges `tags` and `properties.desired`.
pub(super) async fn patch(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let store = state.hub.store();
    let etag = if_match(&headers);
    let mut twin = None;
    if let Some(tags) = body.get("tags").filter(|t| !t.is_null()) {
        twin = Some(store.patch_tags(&id, tags, etag.as_deref()).await?);
    }
    if let Some(desired) = body.pointer("/properties/desired").filter(|d| !d.is_null()) {
        // The etag was checked by the first change of this request.
        let etag = if twin.is_some() { None } else { etag.as_deref() };
        twin = Some(store.patch_desired(&id, desired, etag).await?);
    }
    if body.pointer("/properties/reported").is_some_and(|r| !r.is_null()) {
        return Err(ApiError::BadRequest("reported properties are written by the device".into()));
    }
    let twin = match twin {
        Some(twin) => twin,
        None => store.twin(&id).await?,
    };
    Ok(Json(twin_json(&twin)))
}

/// `PUT`: replaces `tags` and `properties.desired`.
pub(super) async fn replace(
    _: Service,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let tags = body.get("tags").filter(|t| !t.is_null());
    let desired = body.pointer("/properties/desired").filter(|d| !d.is_null());
    let twin = state.hub.store().replace_twin(&id, tags, desired, if_match(&headers).as_deref()).await?;
    Ok(Json(twin_json(&twin)))
}
