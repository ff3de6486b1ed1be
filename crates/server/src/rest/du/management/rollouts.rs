//! Phased rollouts, a duhub extension of the Device Update API (documented in
//! `docs/rollouts.openapi.yaml`): a deployment created with a `rollout` member reads as a plain
//! deployment everywhere the swagger defines one; its waves, gates and history are read at
//! `GET .../groups/{group}/deployments/{id}/rollout` and controlled with
//! `POST .../groups/{group}/deployments/{id}:pause|:resume|:promote|:abort`.

use axum::Json;
use axum::extract::{Extension, Path, State};
use serde_json::{Value, json};

use super::DeploymentPath;
use crate::du::rollout::{RolloutControl, RolloutView};
use crate::rest::du::{DuError, DuState, TokenName};

/// The JSON of a rollout.
pub(in crate::rest::du) fn rollout_json(view: &RolloutView) -> Value {
    let rollout = &view.rollout;
    json!({
        "groupId": view.group_id,
        "deploymentId": view.deployment_id,
        "policy": rollout.policy,
        "status": rollout.state.status.as_str(),
        "currentWave": rollout.state.wave(),
        "waves": view.waves.iter().map(|w| json!({
            "index": w.index,
            "size": w.size.to_string(),
            "startedDateTime": w.started_at,
            "counts": w.counts,
        })).collect::<Vec<_>>(),
        "totals": view.totals,
        "unassignedDevices": view.unassigned,
        "windowOpen": view.window_open,
        "acceptedFailures": {
            "executed": rollout.state.accepted_executed,
            "failed": rollout.state.accepted_failed,
        },
        "history": rollout.state.history,
    })
}

/// `GET .../groups/{group}/deployments/{id}/rollout`.
pub(in crate::rest::du) async fn get_rollout(
    State(state): State<DuState>,
    Path((_, group, id)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let view = state
        .du
        .rollout_view(&group, &id)
        .await?
        .ok_or_else(|| DuError::not_found(format!("deployment {id} has no rollout policy")))?;
    Ok(Json(rollout_json(&view)))
}

/// `POST .../groups/{group}/deployments/{id}:pause` (`:resume`, `:promote`, `:abort`).
pub(in crate::rest::du) async fn rollout_action(
    State(state): State<DuState>,
    Extension(token): Extension<TokenName>,
    Path((_, group, target)): DeploymentPath,
) -> Result<Json<Value>, DuError> {
    let (id, action) = target.rsplit_once(':').ok_or_else(|| {
        DuError::not_found(format!("no action on deployment {target}; POST ...:pause, :resume, :promote or :abort"))
    })?;
    let control: RolloutControl = action.parse().map_err(DuError::not_found)?;
    let view = state.du.control_rollout(&group, id, control, &token.0).await?;
    Ok(Json(rollout_json(&view)))
}
