//! Device classes (#12–16): list, read, rename, forget, installable updates.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GroupPath, json_body, lenient, parse_filter};
use crate::du::Snapshot;
use crate::du::fleet::DeviceClass;
use crate::rest::du::{DuError, DuState, page};

/// The body of #14 (`application/merge-patch+json`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceClassPatch {
    #[serde(default, deserialize_with = "lenient")]
    friendly_name: Option<String>,
}

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
pub(in crate::rest::du) async fn list_device_classes(
    State(state): State<DuState>,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
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
pub(in crate::rest::du) async fn get_device_class(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let (class, name) = find_class(&state, &snapshot, &id).await?;
    Ok(Json(class_json(&snapshot, &class, name.as_deref())))
}

/// #14 (`application/merge-patch+json` `{"friendlyName": ...}`).
pub(in crate::rest::du) async fn update_device_class(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    body: axum::body::Bytes,
) -> Result<Json<Value>, DuError> {
    let patch: DeviceClassPatch = json_body(&body)?;
    let name = patch.friendly_name.filter(|n| (1..=512).contains(&n.chars().count())).ok_or_else(|| {
        DuError::bad_request("friendlyName must be a string of 1 to 512 characters").with_target("friendlyName")
    })?;
    let snapshot = state.du.snapshot().await?;
    let (class, _) = find_class(&state, &snapshot, &id).await?;
    state.du.set_device_class_name(&id, &name).await?;
    Ok(Json(class_json(&snapshot, &class, Some(&name))))
}

/// #15.
pub(in crate::rest::du) async fn delete_device_class(
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
pub(in crate::rest::du) async fn installable_updates(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    let (class, _) = find_class(&state, &snapshot, &id).await?;
    page(&state.du, &uri, snapshot.installable(&class).iter().map(|u| u.info()).collect())
}
