//! Device operations (#44–45) and device diagnostics (#46–50, not supported yet).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use super::GroupPath;
use crate::du::DEVICE_OPERATION;
use crate::rest::du::updates::{filter_operations, operation_response, pending_only};
use crate::rest::du::{DuError, DuState, page};

/// #44.
pub(in crate::rest::du) async fn get_operation(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
    headers: HeaderMap,
) -> Result<Response, DuError> {
    operation_response(&state, DEVICE_OPERATION, &id, &headers).await
}

/// #45 `[filter, top]`.
pub(in crate::rest::du) async fn list_operations(
    State(state): State<DuState>,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let pending = pending_only(&uri)?;
    let operations = state.du.operations(DEVICE_OPERATION, pending).await?;
    page(&state.du, &uri, filter_operations(&uri, operations)?)
}

/// #46–50: log collection and device health need agent support that duhub does not have yet.
pub(in crate::rest::du) async fn not_supported(uri: Uri) -> DuError {
    let what = if uri.path().contains("deviceHealth") { "device health" } else { "log collection" };
    DuError::new(StatusCode::NOT_FOUND, "NotSupported", format!("{what} is not supported by this server yet"))
}
