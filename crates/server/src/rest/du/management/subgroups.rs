//! Device class subgroups of a group (#32–34, #36): list, read, forget, best update.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};

use super::groups::best_updates_json;
use super::{GroupPath, SubgroupPath, find_group, parse_filter};
use crate::du::Snapshot;
use crate::rest::du::{DuError, DuState, page};

/// A subgroup's creation time; 404 for an unknown subgroup.
pub(super) async fn subgroup_created(state: &DuState, group: &str, class: &str) -> Result<String, DuError> {
    state
        .du
        .subgroup_records()
        .await?
        .into_iter()
        .find(|(g, c, _)| g == group && c == class)
        .map(|(_, _, created)| created)
        .ok_or_else(|| DuError::not_found(format!("group {group} has no device class subgroup {class}")))
}

fn subgroup_json(snapshot: &Snapshot, group: &str, class: &str, created: &str, count: u64) -> Value {
    let mut value = json!({"deviceClassId": class, "groupId": group, "createdDateTime": created, "deviceCount": count});
    if let Some(deployment) = snapshot.governing(group, class) {
        value["deploymentId"] = deployment.deployment_id.clone().into();
    }
    value
}

/// #32 `[filter: compatProperties/<name> eq '<value>']`.
pub(in crate::rest::du) async fn list_subgroups(
    State(state): State<DuState>,
    Path((_, group)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let filter = parse_filter(&uri, &["compatProperties/"])?;
    let (snapshot, _) = find_group(&state, &group).await?;
    let records = state.du.subgroup_records().await?;
    let items = snapshot
        .subgroups_of(&group)
        .iter()
        .filter(|(_, (class, _))| {
            filter.as_ref().is_none_or(|f| {
                f.matches(|field| {
                    let name = field.split_once('/').map(|(_, n)| n).unwrap_or_default();
                    class.compat.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
                })
            })
        })
        .filter_map(|(id, (_, count))| {
            let created = records.iter().find(|(g, c, _)| g == &group && c == id)?.2.clone();
            Some(subgroup_json(&snapshot, &group, id, &created, *count))
        })
        .collect();
    page(&state.du, &uri, items)
}

/// #33.
pub(in crate::rest::du) async fn get_subgroup(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    let created = subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot_of(Some(&group)).await?;
    let count = snapshot.subgroup_device_count(&group, &class);
    Ok(Json(subgroup_json(&snapshot, &group, &class, &created, count)))
}

/// #34.
pub(in crate::rest::du) async fn delete_subgroup(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_subgroup(&group, &class).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("group {group} has no device class subgroup {class}")))
    }
}

/// #36.
pub(in crate::rest::du) async fn subgroup_best_update(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot_of(Some(&group)).await?;
    let subgroups = snapshot.subgroups_of(&group);
    let (device_class, _) = subgroups
        .get(&class)
        .ok_or_else(|| DuError::not_found(format!("group {group} has no devices of class {class}")))?;
    best_updates_json(&snapshot, &group, device_class)
        .map(Json)
        .ok_or_else(|| DuError::not_found(format!("no update fits device class {class}")))
}
