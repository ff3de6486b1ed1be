//! Update operations (#1–11 of the swagger), uploads for the CLI, and device downloads.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::filter::Filter;
use super::{DuError, DuState, accepted, not_modified, page, query_param};
use crate::du::import::{ImportItem, UPLOAD_SCHEME};
use crate::du::model::{StoredUpdate, update_key};
use crate::du::{DELETE_OPERATION, UPDATE_OPERATION, content};
use duhub_proto::update_id::UpdateId;

type VersionPath = Path<(String, String, String, String)>;

async fn find(state: &DuState, id: &UpdateId) -> Result<StoredUpdate, DuError> {
    state.du.stored_update(id).await?.ok_or_else(|| DuError::not_found(format!("update {id} not found")))
}

fn referenced_by(all: &[StoredUpdate], update: &StoredUpdate) -> Vec<UpdateId> {
    let key = update_key(&update.update_id);
    all.iter().filter(|u| u.references.iter().any(|r| update_key(r) == key)).map(|u| u.update_id.clone()).collect()
}

fn deployable_filter(uri: &Uri) -> Result<Option<Filter>, DuError> {
    let Some(text) = query_param(uri, "filter") else { return Ok(None) };
    let filter = Filter::parse(&text).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    filter.only(&["isDeployable"]).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    Ok(Some(filter))
}

/// #1 `GET /updates [search, filter]`.
pub(super) async fn list_updates(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let all = state.du.updates().await?;
    let filter = deployable_filter(&uri)?;
    let search = query_param(&uri, "search").map(|s| s.to_ascii_lowercase());
    let items = all
        .iter()
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(|_| Some(u.is_deployable.to_string()))))
        .filter(|u| {
            search.as_ref().is_none_or(|s| {
                [
                    Some(&u.update_id.provider),
                    Some(&u.update_id.name),
                    Some(&u.update_id.version),
                    u.description.as_ref(),
                    u.friendly_name.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|field| field.to_ascii_lowercase().contains(s.as_str()))
            })
        })
        .map(|u| u.to_rest(&referenced_by(&all, u)))
        .collect();
    page(&state.du, &uri, items)
}

/// #2 `POST /updates:import`.
pub(super) async fn import(State(state): State<DuState>, body: axum::body::Bytes) -> Result<Response, DuError> {
    let items: Vec<ImportItem> = serde_json::from_slice(&body)
        .map_err(|e| DuError::bad_request(format!("the body is not an array of import items: {e}")))?;
    let id = state.du.start_import(items).await?;
    Ok(accepted(format!(
        "/deviceUpdate/{}/updates/operations/{id}?api-version={}",
        state.du.settings().instance_id,
        crate::du::API_VERSION_2022
    )))
}

/// #3 `GET V`.
pub(super) async fn get_update(
    State(state): State<DuState>,
    Path((_, provider, name, version)): VersionPath,
    headers: HeaderMap,
) -> Result<Response, DuError> {
    let update = find(&state, &UpdateId::new(provider, name, version)).await?;
    if not_modified(&headers, &update.etag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let all = state.du.updates().await?;
    Ok(Json(update.to_rest(&referenced_by(&all, &update))).into_response())
}

/// #4 `DELETE V`.
pub(super) async fn delete_update(
    State(state): State<DuState>,
    Path((_, provider, name, version)): VersionPath,
) -> Result<Response, DuError> {
    let id = state.du.start_delete(&UpdateId::new(provider, name, version)).await?;
    Ok(accepted(format!(
        "/deviceUpdate/{}/updates/operations/{id}?api-version={}",
        state.du.settings().instance_id,
        crate::du::API_VERSION_2022
    )))
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<Value> {
    let mut seen = std::collections::BTreeMap::new();
    for value in values {
        seen.entry(value.to_ascii_lowercase()).or_insert(value);
    }
    seen.into_values().map(Value::from).collect()
}

/// #5 `GET /updates/providers`.
pub(super) async fn list_providers(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let all = state.du.updates().await?;
    page(&state.du, &uri, distinct(all.into_iter().map(|u| u.update_id.provider)))
}

/// #6 `GET /updates/providers/{provider}/names`.
pub(super) async fn list_names(
    State(state): State<DuState>,
    Path((_, provider)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let all = state.du.updates().await?;
    let names: Vec<String> = all
        .into_iter()
        .filter(|u| u.update_id.provider.eq_ignore_ascii_case(&provider))
        .map(|u| u.update_id.name)
        .collect();
    if names.is_empty() {
        return Err(DuError::not_found(format!("no updates of provider {provider}")));
    }
    page(&state.du, &uri, distinct(names.into_iter()))
}

/// #7 `GET .../versions [filter]`.
pub(super) async fn list_versions(
    State(state): State<DuState>,
    Path((_, provider, name)): Path<(String, String, String)>,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let filter = deployable_filter(&uri)?;
    let all = state.du.updates().await?;
    let matching: Vec<&StoredUpdate> = all
        .iter()
        .filter(|u| {
            u.update_id.provider.eq_ignore_ascii_case(&provider) && u.update_id.name.eq_ignore_ascii_case(&name)
        })
        .collect();
    if matching.is_empty() {
        return Err(DuError::not_found(format!("no updates {provider}/{name}")));
    }
    let versions = matching
        .into_iter()
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(|_| Some(u.is_deployable.to_string()))))
        .map(|u| Value::from(u.update_id.version.clone()))
        .collect();
    page(&state.du, &uri, versions)
}

/// #8 `GET V/files`.
pub(super) async fn list_files(
    State(state): State<DuState>,
    Path((_, provider, name, version)): VersionPath,
    uri: Uri,
) -> Result<Json<Value>, DuError> {
    let update = find(&state, &UpdateId::new(provider, name, version)).await?;
    page(&state.du, &uri, update.payload_files().map(|f| Value::from(f.file_id.clone())).collect())
}

/// #9 `GET V/files/{fileId}`.
pub(super) async fn get_file(
    State(state): State<DuState>,
    Path((_, provider, name, version, file_id)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, DuError> {
    let update = find(&state, &UpdateId::new(provider, name, version)).await?;
    let file = update
        .payload_files()
        .find(|f| f.file_id == file_id)
        .ok_or_else(|| DuError::not_found(format!("update {} has no file {file_id}", update.update_id)))?;
    if not_modified(&headers, &file.sha256) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(Json(update.file_to_rest(file)).into_response())
}

/// The operation filter: only `status eq 'NotStarted' or status eq 'Running'` means anything.
pub(super) fn pending_only(uri: &Uri) -> Result<bool, DuError> {
    let Some(text) = query_param(uri, "filter") else { return Ok(false) };
    let filter = Filter::parse(&text).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    filter.only(&["status"]).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    Ok(true)
}

pub(super) fn filter_operations(uri: &Uri, operations: Vec<Value>) -> Result<Vec<Value>, DuError> {
    let Some(text) = query_param(uri, "filter") else { return Ok(operations) };
    let filter = Filter::parse(&text).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    Ok(operations
        .into_iter()
        .filter(|op| {
            filter
                .matches(|field| op.get(field).or_else(|| op.get("status")).and_then(Value::as_str).map(str::to_owned))
        })
        .collect())
}

/// #10 `GET /updates/operations [filter, top]`.
pub(super) async fn list_operations(State(state): State<DuState>, uri: Uri) -> Result<Json<Value>, DuError> {
    let pending = pending_only(&uri)?;
    let operations = state.du.operations(UPDATE_OPERATION, pending).await?;
    page(&state.du, &uri, filter_operations(&uri, operations)?)
}

/// #11 `GET /updates/operations/{id}`.
pub(super) async fn get_operation(
    State(state): State<DuState>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, DuError> {
    if state.du.operation(UPDATE_OPERATION, &id).await?.is_some() {
        operation_response(&state, UPDATE_OPERATION, &id, &headers).await
    } else {
        operation_response(&state, DELETE_OPERATION, &id, &headers).await
    }
}

pub(super) async fn operation_response(
    state: &DuState,
    kind: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, DuError> {
    let operation =
        state.du.operation(kind, id).await?.ok_or_else(|| DuError::not_found(format!("operation {id} not found")))?;
    if let Some(etag) = operation.get("etag").and_then(Value::as_str)
        && not_modified(headers, etag)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let running = matches!(operation.get("status").and_then(Value::as_str), Some("NotStarted" | "Running"));
    let mut response = Json(operation).into_response();
    if running {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// `POST /deviceUpdate/{instance}/duhub/uploads`: stores the body as a blob (size and SHA-256
/// computed while it streams in) and answers where import requests find it.
pub(super) async fn upload(State(state): State<DuState>, body: Body) -> Result<Response, DuError> {
    let allowance = state.du.upload_allowance().await?;
    let max_pending = state.du.settings().max_pending_upload_bytes;
    let storage_full = || {
        DuError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            format!(
                "uploads not yet imported may take at most {max_pending} bytes (max_pending_upload_bytes); \
                 import or let expire what was uploaded"
            ),
        )
    };
    if allowance == 0 {
        return Err(storage_full());
    }
    let limit = allowance.min(crate::du::import::MAX_UPDATE_BYTES);
    let stream = body.into_data_stream();
    let blob = state.du.content().put_stream(stream, None, limit).await.map_err(|e| match e {
        content::ContentError::TooLarge { .. } if limit < crate::du::import::MAX_UPDATE_BYTES => storage_full(),
        content::ContentError::TooLarge { limit } => DuError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FileTooLarge",
            format!("uploads may have at most {limit} bytes"),
        ),
        content::ContentError::Source(m) => DuError::bad_request(format!("reading the upload failed: {m}")),
        other => crate::du::ServiceError::from(other).into(),
    })?;
    state.du.record_upload(&blob.id(), blob.size).await?;
    let body = json!({
        "url": format!("{UPLOAD_SCHEME}{}", blob.id()),
        "sizeInBytes": blob.size,
        "hashes": {"sha256": blob.sha256_base64()},
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /duhub/rootkeypackage.json`.
pub(super) async fn root_key_package(State(state): State<DuState>) -> Result<Response, DuError> {
    let package = state.du.root_key_package()?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], package).into_response())
}

/// `GET|HEAD /duhub/files/{blob}/{name}`: devices' downloads (Range, ETag).
pub(super) async fn download(
    State(state): State<DuState>,
    Path((blob, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    super::blob::serve_blob(state.du.content(), &blob, &name, &method, &headers).await
}
