//! Groups (#22–24, #26): list with their subgroup counts, read, forget, best updates.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};

use super::{GroupPath, find_group, order};
use crate::du::Snapshot;
use crate::du::fleet::{DEFAULT_GROUP, DeviceClass};
use crate::rest::du::{DuError, DuState, page};

fn group_json(snapshot: &Snapshot, id: &str, created: &str) -> Value {
    let summary = snapshot.group_summary(id);
    json!({
        "groupId": id,
        "groupType": if id == DEFAULT_GROUP { "DefaultNoTag" } else { "IoTHubTag" },
        "createdDateTime": created,
        "deviceCount": summary.device_count,
        "subgroupsWithNewUpdatesAvailableCount": summary.subgroups_with_new_updates_available,
        "subgroupsWithUpdatesInProgressCount": summary.subgroups_with_updates_in_progress,
        "subgroupsWithOnLatestUpdateCount": summary.subgroups_on_latest_update,
        "deployments": summary.deployments,
    })
}

/// The REST `DeviceClassSubgroupUpdatableDevices` of a subgroup, if an update fits its class.
pub(super) fn best_updates_json(snapshot: &Snapshot, group: &str, class: &DeviceClass) -> Option<Value> {
    let best = snapshot.best_update_for(group, class)?;
    Some(
        json!({"groupId": group, "deviceClassId": class.id, "update": best.update.info(), "deviceCount": best.outdated_devices}),
    )
}

/// #22 `[orderby]`.
pub(in crate::rest::du) async fn list_groups(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
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

/// #23.
pub(in crate::rest::du) async fn get_group(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, created) = find_group(&state, &id).await?;
    Ok(Json(group_json(&snapshot, &id, &created)))
}

/// #24.
pub(in crate::rest::du) async fn delete_group(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.delete_group(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("group {id} not found")))
    }
}

/// #26.
pub(in crate::rest::du) async fn group_best_updates(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &id).await?;
    let items =
        snapshot.subgroups_of(&id).values().filter_map(|(class, _)| best_updates_json(&snapshot, &id, class)).collect();
    page(&state.du, &uri, items)
}
