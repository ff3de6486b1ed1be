//! Updates: the catalog, import by uploading an import manifest and its files (the page's
//! script uploads each file with a progress bar, then asks for the import and shows the
//! validation errors with their JSON pointers), and deletion.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use duhub_proto::update_id::UpdateId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Session;
use super::html::{Section, csrf_field, esc};
use super::{UiError, UiState, html_page};
use crate::du::import::{FileLocation, ImportItem, MAX_UPDATE_BYTES, ManifestLocation, UPLOAD_SCHEME};
use crate::du::{UPDATE_OPERATION, content};

/// How long the import request waits for the import to finish.
const IMPORT_WAIT: Duration = Duration::from_secs(30 * 60);
/// How often it looks.
const IMPORT_CHECK: Duration = Duration::from_millis(200);

/// An update id as one form value: JSON `[provider, name, version]`.
pub(super) fn id_value(id: &UpdateId) -> String {
    json!([id.provider, id.name, id.version]).to_string()
}

/// The update id of a form value made by [`id_value`].
pub(super) fn parse_id_value(value: &str) -> Option<UpdateId> {
    let [provider, name, version]: [String; 3] = serde_json::from_str(value).ok()?;
    Some(UpdateId::new(provider, name, version))
}

/// `GET /ui/updates`.
pub(super) async fn updates(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
) -> Result<Response, UiError> {
    let updates = state.du.updates().await?;
    let mut body = format!(
        "<section class=\"card\"><h2>Import an update</h2>\
         <form id=\"import-form\" class=\"stack\" data-csrf=\"{}\">\
         <label for=\"import-manifest\">Import manifest (<code>*.importmanifest.json</code>)</label>\
         <input id=\"import-manifest\" name=\"manifest\" type=\"file\" accept=\".json,application/json\" required>\
         <label for=\"import-files\">Update files</label>\
         <input id=\"import-files\" name=\"files\" type=\"file\" multiple>\
         <button type=\"submit\">Import</button>\
         <label for=\"import-progress\">Progress</label>\
         <progress id=\"import-progress\" max=\"100\" value=\"0\"></progress>\
         <p id=\"import-status\" role=\"status\" aria-live=\"polite\"></p>\
         <ul id=\"import-errors\" class=\"errors\" aria-live=\"assertive\"></ul></form></section>",
        esc(&session.csrf)
    );
    body.push_str(
        "<section class=\"card\"><h2>Catalog</h2><table><caption>Imported updates</caption><thead><tr>\
         <th scope=\"col\">Update</th><th scope=\"col\">Friendly name</th><th scope=\"col\">Deployable</th>\
         <th scope=\"col\">Compatibility</th><th scope=\"col\">Files</th><th scope=\"col\">Imported</th>\
         <th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead><tbody id=\"catalog\">",
    );
    for u in &updates {
        let compat: Vec<String> = u
            .compatibility
            .iter()
            .map(|c| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
            .collect();
        let files: Vec<String> =
            u.files.iter().map(|f| format!("{} ({} bytes)", f.file_name, f.size_in_bytes)).collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/ui/updates/delete\" class=\"confirm\" \
             data-confirm=\"Delete update {}?\">{}<input type=\"hidden\" name=\"update\" value=\"{}\">\
             <button type=\"submit\" class=\"danger\">Delete <span class=\"sr\">{}</span></button></form></td></tr>",
            esc(&u.update_id.to_string()),
            esc(u.friendly_name.as_deref().unwrap_or("")),
            if u.is_deployable { "yes" } else { "no (referenced by others)" },
            esc(&compat.join("; ")),
            esc(&files.join(", ")),
            esc(&u.imported_date_time),
            esc(&u.update_id.to_string()),
            csrf_field(&session.csrf),
            esc(&id_value(&u.update_id)),
            esc(&u.update_id.to_string()),
        );
    }
    if updates.is_empty() {
        body.push_str("<tr><td colspan=\"7\">No updates imported yet.</td></tr>");
    }
    body.push_str("</tbody></table></section>");
    Ok(html_page("Updates", Section::Updates, &session.csrf, &body))
}

/// `POST /ui/updates/upload`: stores the body as a blob and answers where the import finds it
/// (its SHA-256 and size checked while it streamed in).
pub(super) async fn upload(State(state): State<UiState>, body: Body) -> Response {
    match state.du.content().put_stream(body.into_data_stream(), None, MAX_UPDATE_BYTES).await {
        Ok(blob) => (
            StatusCode::CREATED,
            Json(json!({
                "url": format!("{UPLOAD_SCHEME}{}", blob.id()),
                "sizeInBytes": blob.size,
                "hashes": {"sha256": blob.sha256_base64()},
            })),
        )
            .into_response(),
        Err(content::ContentError::TooLarge { limit }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"message": format!("files may have at most {limit} bytes")})))
                .into_response()
        }
        Err(content::ContentError::Source(m)) => {
            (StatusCode::BAD_REQUEST, Json(json!({"message": format!("reading the upload failed: {m}")})))
                .into_response()
        }
        Err(other) => UiError::from(crate::du::ServiceError::from(other)).into_response(),
    }
}

/// The body of `POST /ui/updates/import`: uploads made by [`upload`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImportRequest {
    manifest: Uploaded,
    #[serde(default)]
    files: Vec<UploadedFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Uploaded {
    url: String,
    size_in_bytes: u64,
    hashes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct UploadedFile {
    filename: String,
    url: String,
}

/// `POST /ui/updates/import`: imports and waits for the outcome, `200` with `{"status":
/// "Succeeded", "update": "..."}` or `{"status": "Failed", "error": {code, message, details:
/// [{code, message, target}]}}` (targets are JSON pointers into the import manifest).
pub(super) async fn import(State(state): State<UiState>, body: axum::body::Bytes) -> Response {
    let request: ImportRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({"status": "Failed", "error": {"message": e.to_string()}})))
                .into_response();
        }
    };
    let item = ImportItem {
        import_manifest: ManifestLocation {
            url: request.manifest.url,
            size_in_bytes: request.manifest.size_in_bytes,
            hashes: request.manifest.hashes,
        },
        friendly_name: None,
        files: request.files.into_iter().map(|f| FileLocation { filename: f.filename, url: f.url }).collect(),
    };
    let operation_id = match state.du.start_import(vec![item]).await {
        Ok(id) => id,
        Err(error) => return failed(UiError::from(error)),
    };
    let deadline = tokio::time::Instant::now() + IMPORT_WAIT;
    loop {
        let operation = match state.du.operation(UPDATE_OPERATION, &operation_id).await {
            Ok(operation) => operation.unwrap_or(Value::Null),
            Err(error) => return failed(UiError::from(error)),
        };
        match operation.get("status").and_then(Value::as_str) {
            Some("Succeeded") => {
                let id = operation.pointer("/update/updateId");
                let words = id
                    .map(|i| format!("{}/{}/{}", text(i, "provider"), text(i, "name"), text(i, "version")))
                    .unwrap_or_default();
                return Json(json!({"status": "Succeeded", "update": words})).into_response();
            }
            Some("Failed") => {
                let error = operation.get("error").cloned().unwrap_or(Value::Null);
                return Json(json!({"status": "Failed", "error": error})).into_response();
            }
            _ if tokio::time::Instant::now() >= deadline => {
                return (StatusCode::ACCEPTED, Json(json!({"status": "Running", "operationId": operation_id})))
                    .into_response();
            }
            _ => tokio::time::sleep(IMPORT_CHECK).await,
        }
    }
}

fn text<'a>(value: &'a Value, member: &str) -> &'a str {
    value.get(member).and_then(Value::as_str).unwrap_or_default()
}

/// The outcome of an import that could not start: a bad request is an outcome like a failed
/// import (200, so the page's script shows it and the browser logs no error); a server failure
/// keeps its status.
fn failed(error: UiError) -> Response {
    let status = if error.status.is_server_error() { error.status } else { StatusCode::OK };
    (status, Json(json!({"status": "Failed", "error": {"message": error.message}}))).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteForm {
    #[serde(default)]
    update: String,
}

/// `POST /ui/updates/delete`.
pub(super) async fn delete(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, UiError> {
    let id = parse_id_value(&form.update).ok_or_else(|| UiError::bad_request("no such update"))?;
    let operation_id = state.du.start_delete(&id).await?;
    let operation = state.du.operation(crate::du::DELETE_OPERATION, &operation_id).await?;
    if operation.as_ref().and_then(|o| o.get("status")).and_then(Value::as_str) == Some("Succeeded") {
        Ok(Redirect::to("/ui/updates").into_response())
    } else {
        let body = super::html::notice("error", &format!("deleting update {id} failed; see the server log"));
        Ok(html_page("Updates", Section::Updates, &session.csrf, &body))
    }
}
