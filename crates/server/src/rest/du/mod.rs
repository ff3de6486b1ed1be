//! The Device Update data-plane REST API (`/deviceUpdate/{instanceId}/...`, api-versions
//! 2022-10-01 and 2026-06-01) as the swagger defines it, plus duhub's own endpoints: uploads
//! for the CLI (`.../duhub/uploads`), API tokens (`.../duhub/tokens`), and the unauthenticated
//! downloads devices use (`/duhub/files/...`, `/duhub/rootkeypackage.json`).
//!
//! Every `/deviceUpdate` request passes [`guard`] first: a valid Bearer token (401), the
//! configured instance id (404), a supported `api-version` (400).

mod blob;
mod filter;
mod management;
mod updates;

pub use blob::serve_blob;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::du::{API_VERSION_2022, API_VERSION_2026, DeviceUpdate, ServiceError};
use crate::store::StoreError;

/// What Device Update handlers need.
#[derive(Clone)]
pub struct DuState {
    /// The service.
    pub du: Arc<DeviceUpdate>,
}

/// The name of the API token a request was authorised with (recorded in rollout histories).
#[derive(Debug, Clone)]
pub(crate) struct TokenName(pub(crate) String);

/// The api-version of a request.
#[derive(Debug, Clone)]
pub(crate) struct ApiVersion(pub(crate) &'static str);

/// A Device Update REST error: status, code, message, optional target.
#[derive(Debug)]
pub struct DuError {
    status: StatusCode,
    code: &'static str,
    message: String,
    target: Option<String>,
}

impl DuError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), target: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadArgument", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
}

impl From<ServiceError> for DuError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(m) => Self::not_found(m),
            ServiceError::Conflict(m) => Self::new(StatusCode::CONFLICT, "Conflict", m),
            ServiceError::Invalid(m) => Self::bad_request(m),
            ServiceError::Store(StoreError::NotFound(id)) => Self::not_found(format!("device {id} not found")),
            ServiceError::Store(error) if error.is_unavailable() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the service is unavailable; try again later",
            ),
            other => {
                tracing::error!(error = %other, "Device Update request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<StoreError> for DuError {
    fn from(error: StoreError) -> Self {
        ServiceError::Store(error).into()
    }
}

impl IntoResponse for DuError {
    fn into_response(self) -> Response {
        let mut error =
            json!({"code": self.code, "message": self.message, "occurredDateTime": crate::ids::now_rfc3339()});
        if let Some(target) = self.target {
            error["target"] = target.into();
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// The Device Update routes.
pub fn router(state: DuState) -> Router {
    let du = "/deviceUpdate/{instance}";
    let u = format!("{du}/updates");
    let v = format!("{u}/providers/{{provider}}/names/{{name}}/versions/{{version}}");
    let m = format!("{du}/management");
    let g = format!("{m}/groups/{{group}}");
    let s = format!("{g}/deviceClassSubgroups/{{class}}");
    let d = format!("{m}/deviceDiagnostics");
    let api = Router::new()
        .route(&u, get(updates::list_updates))
        .route(&format!("{du}/updates:import"), post(updates::import))
        .route(&v, get(updates::get_update).delete(updates::delete_update))
        .route(&format!("{u}/providers"), get(updates::list_providers))
        .route(&format!("{u}/providers/{{provider}}/names"), get(updates::list_names))
        .route(&format!("{u}/providers/{{provider}}/names/{{name}}/versions"), get(updates::list_versions))
        .route(&format!("{v}/files"), get(updates::list_files))
        .route(&format!("{v}/files/{{file}}"), get(updates::get_file))
        .route(&format!("{u}/operations"), get(updates::list_operations))
        .route(&format!("{u}/operations/{{operation}}"), get(updates::get_operation))
        .route(&format!("{m}/deviceClasses"), get(management::classes::list_device_classes))
        .route(
            &format!("{m}/deviceClasses/{{class}}"),
            get(management::classes::get_device_class)
                .patch(management::classes::update_device_class)
                .delete(management::classes::delete_device_class),
        )
        .route(
            &format!("{m}/deviceClasses/{{class}}/installableUpdates"),
            get(management::classes::installable_updates),
        )
        .route(&format!("{m}/devices"), get(management::devices::list_devices))
        .route(&format!("{m}/devices:import"), post(management::devices::import_devices))
        .route(&format!("{m}/devices/{{device}}"), get(management::devices::get_device))
        .route(&format!("{m}/devices/{{device}}/modules/{{module}}"), get(management::devices::get_device_module))
        .route(&format!("{m}/updateCompliance"), get(management::compliance::compliance))
        .route(&format!("{m}/groups"), get(management::groups::list_groups))
        .route(&g, get(management::groups::get_group).delete(management::groups::delete_group))
        .route(&format!("{g}/updateCompliance"), get(management::compliance::group_compliance))
        .route(&format!("{g}/bestUpdates"), get(management::groups::group_best_updates))
        .route(&format!("{g}/deployments"), get(management::deployments::list_group_deployments))
        .route(
            &format!("{g}/deployments/{{deployment}}"),
            get(management::deployments::get_deployment)
                .put(management::deployments::put_deployment)
                .delete(management::deployments::delete_deployment)
                .post(management::rollouts::rollout_action),
        )
        .route(&format!("{g}/deployments/{{deployment}}/status"), get(management::deployments::deployment_status))
        .route(&format!("{g}/deployments/{{deployment}}/rollout"), get(management::rollouts::get_rollout))
        .route(&format!("{g}/deviceClassSubgroups"), get(management::subgroups::list_subgroups))
        .route(&s, get(management::subgroups::get_subgroup).delete(management::subgroups::delete_subgroup))
        .route(&format!("{s}/updateCompliance"), get(management::compliance::subgroup_compliance))
        .route(&format!("{s}/bestUpdates"), get(management::subgroups::subgroup_best_update))
        .route(&format!("{s}/deployments"), get(management::deployments::list_subgroup_deployments))
        .route(
            &format!("{s}/deployments/{{deployment}}"),
            get(management::deployments::get_subgroup_deployment)
                .delete(management::deployments::delete_subgroup_deployment)
                .post(management::deployments::subgroup_deployment_action),
        )
        .route(
            &format!("{s}/deployments/{{deployment}}/status"),
            get(management::deployments::subgroup_deployment_status),
        )
        .route(
            &format!("{s}/deployments/{{deployment}}/devicestates"),
            get(management::deployments::subgroup_device_states),
        )
        .route(&format!("{m}/operations"), get(management::operations::list_operations))
        .route(&format!("{m}/operations/{{operation}}"), get(management::operations::get_operation))
        .route(&format!("{d}/logCollections"), get(management::operations::not_supported))
        .route(
            &format!("{d}/logCollections/{{operation}}"),
            get(management::operations::not_supported).put(management::operations::not_supported),
        )
        .route(&format!("{d}/logCollections/{{operation}}/detailedStatus"), get(management::operations::not_supported))
        .route(&format!("{d}/deviceHealth"), get(management::operations::not_supported))
        .route(&format!("{du}/duhub/uploads"), post(updates::upload))
        .route(
            &format!("{du}/duhub/tokens"),
            get(management::tokens::list_tokens).post(management::tokens::create_token),
        )
        .route(&format!("{du}/duhub/tokens/{{token}}"), axum::routing::delete(management::tokens::revoke_token))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    Router::new()
        .route("/duhub/rootkeypackage.json", get(updates::root_key_package))
        .route("/duhub/files/{blob}/{name}", get(updates::download).head(updates::download))
        .with_state(state)
        .merge(api)
}

async fn fallback(uri: Uri) -> DuError {
    DuError::not_found(format!("no such resource: {}", uri.path()))
}

/// Authentication, instance id and api-version of every `/deviceUpdate` request.
async fn guard(State(state): State<DuState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .map(str::to_owned);
    let Some(token) = token else {
        return unauthorized("send an API token as `Authorization: Bearer <token>`");
    };
    match state.du.store().api_token_name(&token).await {
        Ok(Some(name)) => {
            request.extensions_mut().insert(TokenName(name));
        }
        Ok(None) => return unauthorized("the API token is unknown or revoked"),
        Err(error) => return DuError::from(error).into_response(),
    }
    let instance = request.uri().path().split('/').nth(2).unwrap_or_default();
    if instance != state.du.settings().instance_id {
        return DuError::new(
            StatusCode::NOT_FOUND,
            "InstanceNotFound",
            format!("no Device Update instance {instance:?}"),
        )
        .into_response();
    }
    let version = query_param(request.uri(), "api-version");
    let version = match version.as_deref() {
        Some(API_VERSION_2022) => API_VERSION_2022,
        Some(API_VERSION_2026) => API_VERSION_2026,
        Some(other) => {
            return DuError::new(
                StatusCode::BAD_REQUEST,
                "UnsupportedApiVersion",
                format!("api-version {other:?} is not supported; use {API_VERSION_2022} or {API_VERSION_2026}"),
            )
            .with_target("api-version")
            .into_response();
        }
        None => {
            return DuError::new(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "the api-version query parameter is required",
            )
            .with_target("api-version")
            .into_response();
        }
    };
    request.extensions_mut().insert(ApiVersion(version));
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response = DuError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A query parameter, percent-decoded.
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One page of `items` as `{"value": [...], "nextLink": "..."}`: pages are `page_size` long
/// and continue with `skipToken=<offset>` on the request's own path and query.
pub(crate) fn page(du: &DeviceUpdate, uri: &Uri, items: Vec<Value>) -> Result<Json<Value>, DuError> {
    let window = Window::of(du, uri, items.len())?;
    let value = items.into_iter().skip(window.offset).take(window.end - window.offset).collect();
    Ok(window.body(value))
}

/// A page of a device list read by key (device id order): `skipToken` carries how many items
/// earlier pages gave (for `top`) and the last device id given, hex-encoded
/// (`<count>.<hex>`), so each page reads from where the previous one stopped instead of
/// re-reading the list.
pub(crate) struct Keyset {
    /// The last device id of the previous page.
    pub(crate) after: Option<String>,
    /// Items of this page at most.
    pub(crate) limit: usize,
    delivered: usize,
}

impl Keyset {
    /// The keyset page `uri` asks for.
    pub(crate) fn of(du: &DeviceUpdate, uri: &Uri) -> Result<Self, DuError> {
        let invalid = || DuError::bad_request("skipToken is not valid").with_target("skipToken");
        let (delivered, after) = match query_param(uri, "skipToken") {
            None => (0, None),
            Some(token) => {
                let (count, hex) = token.split_once('.').ok_or_else(invalid)?;
                let count = count.parse::<usize>().map_err(|_| invalid())?;
                if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid());
                }
                let bytes: Vec<u8> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or_default(), 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| invalid())?;
                (count, Some(String::from_utf8(bytes).map_err(|_| invalid())?))
            }
        };
        let top = match query_param(uri, "top") {
            Some(top) => Some(
                top.parse::<usize>()
                    .map_err(|_| DuError::bad_request("top must be a positive number").with_target("top"))?,
            ),
            None => None,
        };
        let size = du.settings().page_size;
        let limit = top.map_or(size, |top| size.min(top.saturating_sub(delivered)));
        Ok(Self { after, limit, delivered })
    }

    /// The response body of a page whose last item has key `last`; `more` when items follow.
    pub(crate) fn body(self, uri: &Uri, value: Vec<Value>, last: Option<&str>, more: bool) -> Json<Value> {
        let delivered = self.delivered + value.len();
        let mut body = json!({ "value": value });
        if more && let Some(last) = last {
            let hex: String = last.bytes().map(|b| format!("{b:02x}")).collect();
            body["nextLink"] = next_link_of(uri, &format!("{delivered}.{hex}")).into();
        }
        Json(body)
    }
}

/// The request's own path and query with `skipToken` set to `token`.
fn next_link_of(uri: &Uri, token: &str) -> String {
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("skipToken="))
        .collect();
    let mut query = kept.join("&");
    if !query.is_empty() {
        query.push('&');
    }
    format!("{}?{query}skipToken={token}", uri.path())
}

/// The page of a list of `total` items a request asks for (`skipToken`, `top`), and the
/// `nextLink` to the next one; for lists whose items are expensive to build, so that only the
/// page's are.
pub(crate) struct Window {
    /// First item of the page.
    pub(crate) offset: usize,
    /// One past its last item.
    pub(crate) end: usize,
    next_link: Option<String>,
}

impl Window {
    /// The window of `uri` over `total` items.
    pub(crate) fn of(du: &DeviceUpdate, uri: &Uri, total: usize) -> Result<Self, DuError> {
        let size = du.settings().page_size;
        let offset = match query_param(uri, "skipToken") {
            Some(token) => token
                .parse::<usize>()
                .map_err(|_| DuError::bad_request("skipToken is not valid").with_target("skipToken"))?,
            None => 0,
        };
        let top = match query_param(uri, "top") {
            Some(top) => Some(
                top.parse::<usize>()
                    .map_err(|_| DuError::bad_request("top must be a positive number").with_target("top"))?,
            ),
            None => None,
        };
        let total = top.map_or(total, |top| total.min(top));
        let end = total.min(offset.saturating_add(size));
        let mut next_link = None;
        if offset.saturating_add(size) < total {
            next_link = Some(next_link_of(uri, &(offset + size).to_string()));
        }
        Ok(Self { offset: offset.min(end), end, next_link })
    }

    /// The response body of the page's items.
    pub(crate) fn body(self, value: Vec<Value>) -> Json<Value> {
        let mut body = json!({ "value": value });
        if let Some(link) = self.next_link {
            body["nextLink"] = link.into();
        }
        Json(body)
    }
}

/// `If-None-Match` matches `etag` (quoted or not).
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim().trim_start_matches("W/").trim_matches('"') == bare))
}

/// A 202 with `Operation-Location`.
pub(crate) fn accepted(location: String) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("Operation-Location", value);
    }
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let uri: Uri = "/x?api-version=2022-10-01&filter=groupId%20eq%20%27a%27&search=a+b".parse().unwrap();
        assert_eq!(query_param(&uri, "api-version").as_deref(), Some("2022-10-01"));
        assert_eq!(query_param(&uri, "filter").as_deref(), Some("groupId eq 'a'"));
        assert_eq!(query_param(&uri, "search").as_deref(), Some("a b"));
        assert_eq!(query_param(&uri, "missing"), None);
        let odd: Uri = "/x?a=%2".parse().unwrap();
        assert_eq!(query_param(&odd, "a").as_deref(), Some("%2"));
    }
}
