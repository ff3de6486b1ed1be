//! Signing in to the dashboard: an API token is exchanged for a session cookie (`HttpOnly`,
//! `Secure`, `SameSite=Strict`, path `/ui`), stored as its SHA-256 beside the token's
//! (`store::sessions`), so a revoked token ends its sessions; sessions expire after
//! [`SESSION_LIFETIME`]. Every state-changing request carries the session's CSRF token (a form
//! field `csrf`, or the `x-csrf-token` header for the upload and import requests of the page's
//! script), and a browser's `Origin`, when sent, must be this server.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{UiError, UiState};
use crate::ids::generate_api_token;

/// How long a session lasts.
pub const SESSION_LIFETIME: time::Duration = time::Duration::hours(12);
/// The session cookie's name.
pub(crate) const COOKIE: &str = "duhub_session";
/// The CSRF header of script requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form body the CSRF check reads.
const FORM_LIMIT: usize = 256 * 1024;

/// The signed-in session of a request (a request extension set by [`require_session`]).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The session's CSRF token, for the forms of the page.
    pub(crate) csrf: String,
    /// The cookie value (to sign out).
    pub(crate) id: String,
    /// The name of the API token the session was opened with.
    pub(crate) token_name: String,
}

/// Unix seconds now.
pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The session cookie's value in `headers`.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// The host a request was sent to: `Host` (HTTP/1.1) or the URI's authority (HTTP/2).
pub(crate) fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Whether `headers` carry no `Origin`, or one naming `host`, the host the request was sent to.
pub(crate) fn origin_allowed(headers: &HeaderMap, host: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://").is_some_and(|o| o.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// Equal without an early exit on the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens a session for `token`: the `Set-Cookie` value, or `None` for an unknown or revoked
/// token.
pub(crate) async fn sign_in(state: &UiState, token: &str) -> Result<Option<String>, UiError> {
    let id = generate_api_token();
    let csrf = generate_api_token();
    let expires = time::OffsetDateTime::now_utc() + SESSION_LIFETIME;
    if !state.du.store().open_ui_session(&id, token.trim(), &csrf, expires.unix_timestamp()).await? {
        return Ok(None);
    }
    Ok(Some(format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.whole_seconds()
    )))
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("duhub_session=; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Middleware of every dashboard route but sign-in and assets: a valid session (pages
/// redirect to the sign-in page, everything else answers 401), and on state-changing requests
/// an allowed `Origin` and the session's CSRF token (403).
pub(crate) async fn require_session(State(state): State<UiState>, request: Request, next: Next) -> Response {
    let session = match session_cookie(request.headers()) {
        Some(id) => match state.du.store().ui_session(&id, now_unix()).await {
            Ok(found) => found.map(|s| Session { csrf: s.csrf_token, id, token_name: s.token_name }),
            Err(error) => return UiError::from(error).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        let wants_page = request.method() == Method::GET
            && request
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_none_or(|a| a.contains("text/html") || (a.contains("*/*") && !a.contains("text/event-stream")));
        return if wants_page {
            Redirect::to("/ui/signin").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "sign in first: /ui/signin").into_response()
        };
    };
    let mut request = request;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if !origin_allowed(request.headers(), request_host(&request).as_deref()) {
            return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
        }
        let header_token = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match header_token {
            Some(token) if same(&token, &session.csrf) => {}
            Some(_) => return (StatusCode::FORBIDDEN, "the CSRF token does not match").into_response(),
            None => {
                let (parts, body) = request.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response();
                };
                let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
                let token = fields.iter().find(|(name, _)| name == "csrf").map(|(_, v)| v.as_str());
                if !token.is_some_and(|t| same(t, &session.csrf)) {
                    return (StatusCode::FORBIDDEN, "the form's CSRF token is missing or does not match")
                        .into_response();
                }
                request = Request::from_parts(parts, Body::from(bytes));
            }
        }
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1; duhub_session=xyz; b=2")])).as_deref(), Some("xyz"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1"), ("cookie", "duhub_session=q")])).as_deref(), Some("q"));
        assert_eq!(session_cookie(&headers(&[("cookie", "duhub_session=")])), None);
        assert_eq!(session_cookie(&headers(&[("cookie", "xduhub_session=1")])), None);
    }

    #[test]
    fn origins_must_name_this_server_over_https() {
        let host = Some("hub.example:8443");
        assert!(origin_allowed(&headers(&[]), host));
        assert!(origin_allowed(&headers(&[("origin", "https://hub.example:8443")]), host));
        assert!(origin_allowed(&headers(&[("origin", "https://HUB.example:8443")]), host));
        assert!(!origin_allowed(&headers(&[("origin", "https://evil.example")]), host));
        assert!(!origin_allowed(&headers(&[("origin", "http://hub.example:8443")]), host));
        assert!(!origin_allowed(&headers(&[("origin", "https://hub.example")]), host));
        assert!(!origin_allowed(&headers(&[("origin", "null")]), host));
        assert!(!origin_allowed(&headers(&[("origin", "https://hub.example")]), None));
    }

    #[test]
    fn the_host_comes_from_the_header_or_the_authority() {
        let request = Request::builder().uri("https://a.example:1/ui/").body(Body::empty()).expect("request");
        assert_eq!(request_host(&request).as_deref(), Some("a.example:1"));
        let request =
            Request::builder().uri("/ui/").header("host", "b.example:2").body(Body::empty()).expect("request");
        assert_eq!(request_host(&request).as_deref(), Some("b.example:2"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
