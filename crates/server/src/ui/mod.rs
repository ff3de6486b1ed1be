//! The operator dashboard at `/ui/`: server-rendered HTML pages, live updates by server-sent
//! events (the browser's own `EventSource`), charts as inline SVG, one small stylesheet and
//! script embedded in the binary. No JavaScript framework, no CDN, nothing to build with
//! Node.js; every page works offline from the binary alone.
//!
//! ```text
//! browser ──HTTPS──► app ─► ui (auth::require_session ─► page handlers) ─► du::console, du ─► store
//!            ◄── HTML pages, SSE fragments (deployment progress), JSON (upload, import)
//! ```
//!
//! Modules: `auth` (sign-in sessions, CSRF, Origin), `html` (escaping, layout, components),
//! `codes` (result codes in words), and one module per page group: `overview`, `groups`,
//! `updates`, `deployments`, `devices`, `tokens`. Handlers read only through `du` (the
//! `du::console` questions and `DeviceUpdate` methods), never SQL or twins.

mod auth;
mod codes;
mod deployments;
mod devices;
mod groups;
mod html;
mod overview;
mod tokens;
mod updates;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use self::html::{Section, page};
use crate::du::{DeviceUpdate, ServiceError};
use crate::store::StoreError;

pub use auth::SESSION_LIFETIME;

/// What dashboard handlers need.
#[derive(Clone)]
pub struct UiState {
    /// The update service (and through it the store).
    pub du: Arc<DeviceUpdate>,
}

/// A failure of a dashboard request, shown as a page.
#[derive(Debug)]
pub(crate) struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<ServiceError> for UiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(m) => Self::not_found(m),
            ServiceError::Conflict(m) => Self { status: StatusCode::CONFLICT, message: m },
            ServiceError::Invalid(m) => Self::bad_request(m),
            ServiceError::Store(StoreError::NotFound(id)) => Self::not_found(format!("device {id} not found")),
            ServiceError::Store(e @ (StoreError::InvalidDocument(_) | StoreError::Invalid(_))) => {
                Self::bad_request(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "dashboard request failed");
                Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "internal error; see the server log".into() }
            }
        }
    }
}

impl From<StoreError> for UiError {
    fn from(error: StoreError) -> Self {
        ServiceError::Store(error).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = format!("{}<p><a href=\"/ui/\">Back to the overview</a></p>", html::notice("error", &self.message));
        let title = self.status.canonical_reason().unwrap_or("Error");
        with_headers((self.status, Html(page(title, Section::None, None, &body))).into_response())
    }
}

/// An HTML page answer.
pub(crate) fn html_page(title: &str, section: Section, csrf: &str, body: &str) -> Response {
    with_headers(Html(page(title, section, Some(csrf), body)).into_response())
}

/// Security headers of every dashboard answer: a content security policy that allows only
/// this server's own script, styles, images and connections; no framing; no caching of pages.
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The dashboard's routes, all under `/ui`.
pub fn router(state: UiState) -> Router {
    let pages = Router::new()
        .route("/ui/", get(overview::overview))
        .route("/ui/signout", post(sign_out))
        .route("/ui/groups", get(groups::groups))
        .route("/ui/groups/assign", post(groups::assign))
        .route("/ui/groups/{group}", get(groups::group))
        .route("/ui/updates", get(updates::updates))
        .route("/ui/updates/upload", post(updates::upload))
        .route("/ui/updates/import", post(updates::import))
        .route("/ui/updates/delete", post(updates::delete))
        .route("/ui/deployments", get(deployments::deployments).post(deployments::create))
        .route("/ui/deployments/{group}/{id}", get(deployments::deployment))
        .route("/ui/deployments/{group}/{id}/events", get(deployments::events))
        .route("/ui/deployments/{group}/{id}/cancel", post(deployments::cancel))
        .route("/ui/deployments/{group}/{id}/retry", post(deployments::retry))
        .route("/ui/deployments/{group}/{id}/rollout", post(deployments::rollout_control))
        .route("/ui/devices", get(devices::devices))
        .route("/ui/devices/{id}", get(devices::device))
        .route("/ui/tokens", get(tokens::tokens).post(tokens::create))
        .route("/ui/tokens/revoke", post(tokens::revoke))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_session));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/signin", get(sign_in_page).post(sign_in))
        .route("/ui/assets/app.css", get(stylesheet))
        .route("/ui/assets/app.js", get(script))
        .merge(pages)
        .with_state(state)
}

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn sign_in_form(error: Option<&str>) -> String {
    format!(
        "{}<form method=\"post\" action=\"/ui/signin\" class=\"card narrow\">\
         <label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <p class=\"hint\">An API token of this server: <code>duhub token create</code> or the one in \
         <code>admin.json</code>.</p><button type=\"submit\">Sign in</button></form>",
        error.map(|e| html::notice("error", e)).unwrap_or_default()
    )
}

async fn sign_in_page() -> Response {
    with_headers(Html(page("Sign in", Section::None, None, &sign_in_form(None))).into_response())
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

async fn sign_in(State(state): State<UiState>, request: axum::extract::Request) -> Result<Response, UiError> {
    if !auth::origin_allowed(request.headers(), auth::request_host(&request).as_deref()) {
        return Ok((StatusCode::FORBIDDEN, "cross-origin request refused").into_response());
    }
    let Form(form) = <Form<SignInForm> as axum::extract::FromRequest<UiState>>::from_request(request, &state)
        .await
        .map_err(|e| UiError::bad_request(e.body_text()))?;
    match auth::sign_in(&state, &form.token).await? {
        Some(cookie) => {
            let mut response = Redirect::to("/ui/").into_response();
            let value = HeaderValue::from_str(&cookie).map_err(|e| UiError::bad_request(e.to_string()))?;
            response.headers_mut().insert(header::SET_COOKIE, value);
            Ok(response)
        }
        // The form again with the error; 200 like any page a browser shows (a 401 document is a
        // console error), and no cookie.
        None => Ok(with_headers(
            Html(page("Sign in", Section::None, None, &sign_in_form(Some("That API token is unknown or revoked."))))
                .into_response(),
        )),
    }
}

async fn sign_out(
    State(state): State<UiState>,
    axum::Extension(session): axum::Extension<auth::Session>,
) -> Result<Response, UiError> {
    state.du.store().close_ui_session(&session.id, auth::now_unix()).await?;
    let mut response = Redirect::to("/ui/signin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, auth::clear_cookie());
    Ok(response)
}

/// The query string's `name`, decoded.
pub(crate) fn query(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}
