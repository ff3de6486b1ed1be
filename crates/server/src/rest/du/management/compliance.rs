//! Update compliance (#21, #25, #35): of the whole fleet, of a group, of a subgroup.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::subgroups::subgroup_created;
use super::{GroupPath, SubgroupPath, find_group};
use crate::du::status::Compliance;
use crate::rest::du::{DuError, DuState};

/// The REST `UpdateCompliance`.
fn compliance_json(compliance: Compliance) -> Value {
    json!({
        "totalDeviceCount": compliance.total, "onLatestUpdateDeviceCount": compliance.on_latest,
        "newUpdatesAvailableDeviceCount": compliance.new_updates_available,
        "updatesInProgressDeviceCount": compliance.updates_in_progress,
    })
}

/// #21.
pub(in crate::rest::du) async fn compliance(State(state): State<DuState>) -> Result<Json<Value>, DuError> {
    let snapshot = state.du.snapshot().await?;
    Ok(Json(compliance_json(snapshot.compliance(None, None))))
}

/// #25.
pub(in crate::rest::du) async fn group_compliance(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<Json<Value>, DuError> {
    let (snapshot, _) = find_group(&state, &id).await?;
    Ok(Json(compliance_json(snapshot.compliance(Some(&id), None))))
}

/// #35.
pub(in crate::rest::du) async fn subgroup_compliance(
    State(state): State<DuState>,
    Path((_, group, class)): SubgroupPath,
) -> Result<Json<Value>, DuError> {
    subgroup_created(&state, &group, &class).await?;
    let snapshot = state.du.snapshot_of(Some(&group)).await?;
    Ok(Json(compliance_json(snapshot.compliance(Some(&group), Some(&class)))))
}
