//! `POST /devices/query`: IoT Hub's query API (`query_iot_hub` of the `azure-iot-hub` SDK,
//! `RegistryManager.CreateQuery` of the .NET one), for the queries a fleet tool needs:
//! `SELECT * FROM devices`, optionally `WHERE tags.NAME = 'VALUE'`. Other queries are refused
//! with IoT Hub's error body.
//!
//! Pages: the request header `x-ms-max-item-count` sets the page size (default
//! [`DEFAULT_PAGE`], at most [`MAX_PAGE`]); a response that has more after it carries
//! `x-ms-continuation`, which the next request sends back. The token is the last device id of
//! the page (base64url), so each page is one range scan of the primary key: paging through
//! 100,000 devices costs the same per page as through ten. Every response says
//! `x-ms-item-type: twin`.
//!
//! `/devices/query` also answers GET, PUT and DELETE as the device named `query` (a valid
//! device id), which the static route would otherwise hide.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::auth::Service;
use super::{ApiError, AppState, devices};
use crate::store::{QueriedTwin, TwinFilter};

/// Twins per page when the request names no `x-ms-max-item-count`.
pub(super) const DEFAULT_PAGE: i64 = 100;
/// The largest page.
pub(super) const MAX_PAGE: i64 = 1000;

const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
const CONTINUATION: &str = "x-ms-continuation";
const ITEM_TYPE: &str = "x-ms-item-type";

pub(super) async fn query(
    _: Service,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("the body must be {\"query\": \"SELECT ...\"}".into()))?;
    let filter = parse(text).map_err(|why| {
        ApiError::BadRequest(format!(
            "query {text:?} is not supported ({why}): duhub answers SELECT * FROM devices, optionally with \
             WHERE tags.NAME = 'VALUE'"
        ))
    })?;
    let page = match header(&headers, MAX_ITEM_COUNT)? {
        None => DEFAULT_PAGE,
        Some(count) => match count.trim().parse::<i64>() {
            Ok(count) if count > 0 => count.min(MAX_PAGE),
            _ => return Err(ApiError::BadRequest(format!("{MAX_ITEM_COUNT} must be a positive number"))),
        },
    };
    let after = match header(&headers, CONTINUATION)?.filter(|token| !token.is_empty()) {
        None => String::new(),
        Some(token) => URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| ApiError::BadRequest(format!("{CONTINUATION} is not a token this hub issued")))?,
    };
    // One more than the page tells whether another page follows.
    let mut twins = state.hub.store().query_twins(&filter, &after, page + 1).await?;
    let more = twins.len() > usize::try_from(page).unwrap_or(usize::MAX);
    twins.truncate(usize::try_from(page).unwrap_or(usize::MAX));
    let mut response = Json(Value::Array(twins.iter().map(queried_twin_json).collect())).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(ITEM_TYPE, HeaderValue::from_static("twin"));
    if more && let Some(last) = twins.last() {
        let token = URL_SAFE_NO_PAD.encode(last.twin.device_id.as_bytes());
        // Invariant: base64url is a valid header value.
        if let Ok(value) = HeaderValue::from_str(&token) {
            response_headers.insert(CONTINUATION, value);
        }
    }
    Ok(response)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| ApiError::BadRequest(format!("{name} is not text"))))
        .transpose()
}

/// A twin as the query API lists it: the twin and the device facts IoT Hub shows with it.
fn queried_twin_json(queried: &QueriedTwin) -> Value {
    let mut value = super::twins::twin_json(&queried.twin);
    let never = "0001-01-01T00:00:00Z";
    value["statusUpdateTime"] = never.into();
    value["lastActivityTime"] = queried.last_activity.as_deref().unwrap_or(never).into();
    value["connectionStateUpdatedTime"] = queried.connection_state_updated.as_deref().unwrap_or(never).into();
    value["authenticationType"] = "sas".into();
    value["x509Thumbprint"] = serde_json::json!({"primaryThumbprint": null, "secondaryThumbprint": null});
    value["cloudToDeviceMessageCount"] = 0.into();
    value["capabilities"] = serde_json::json!({"iotEdge": false});
    value
}

/// Reads `SELECT * FROM devices [WHERE tags.NAME = 'VALUE']` (keywords in any case, strings in
/// single or double quotes).
fn parse(text: &str) -> Result<TwinFilter, String> {
    let tokens = tokens(text)?;
    let word = |index: usize, expected: &str| match tokens.get(index) {
        Some(Token::Word(word)) if word.eq_ignore_ascii_case(expected) => Ok(()),
        Some(Token::Star) if expected == "*" => Ok(()),
        Some(other) => Err(format!("expected {expected}, found {other}")),
        None => Err(format!("expected {expected} after the end")),
    };
    word(0, "SELECT")?;
    word(1, "*").map_err(|e| format!("{e}; only SELECT * is supported"))?;
    word(2, "FROM")?;
    word(3, "devices").map_err(|e| format!("{e}; only the devices collection is supported"))?;
    if tokens.len() == 4 {
        return Ok(TwinFilter::All);
    }
    word(4, "WHERE")?;
    let [Token::Word(path), Token::Equals, Token::Text(value)] = tokens.get(5..).unwrap_or_default() else {
        return Err("the only condition supported is tags.NAME = 'VALUE'".into());
    };
    let Some(name) = path.split_once('.').filter(|(root, _)| root.eq_ignore_ascii_case("tags")).map(|(_, name)| name)
    else {
        return Err(format!("{path} is not a tag (tags.NAME)"));
    };
    TwinFilter::tag(name, value)
        .ok_or_else(|| format!("tag name {name:?} must be letters, digits, '_' and '-' (one level, no nesting)"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Star,
    Equals,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Word(word) => write!(f, "{word}"),
            Self::Text(text) => write!(f, "'{text}'"),
            Self::Star => f.write_str("*"),
            Self::Equals => f.write_str("="),
        }
    }
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '*' => tokens.push(Token::Star),
            '=' => tokens.push(Token::Equals),
            '\'' | '"' => {
                let mut literal = String::new();
                loop {
                    match chars.next() {
                        Some((_, end)) if end == c => break,
                        Some((_, other)) => literal.push(other),
                        None => return Err("a string is not closed".into()),
                    }
                }
                tokens.push(Token::Text(literal));
            }
            c if c.is_ascii_alphanumeric() || "_.-$".contains(c) => {
                let mut word = String::from(c);
                while let Some(&(_, next)) = chars.peek() {
                    if !(next.is_ascii_alphanumeric() || "_.-$".contains(next)) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(tokens)
}

// The device named `query`, whose id the static route `/devices/query` shadows.

pub(super) async fn get_device(service: Service, state: State<AppState>) -> Result<Json<Value>, ApiError> {
    devices::get(service, state, Path(NAME.to_owned())).await
}

pub(super) async fn put_device(
    service: Service,
    state: State<AppState>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    devices::put(service, state, Path(NAME.to_owned()), headers, body).await
}

pub(super) async fn delete_device(
    service: Service,
    state: State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    devices::delete(service, state, Path(NAME.to_owned()), headers).await
}

const NAME: &str = "query";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_queries_parse() {
        assert_eq!(parse("SELECT * FROM devices"), Ok(TwinFilter::All));
        assert_eq!(parse("  select *\n from DEVICES "), Ok(TwinFilter::All));
        assert_eq!(
            parse("SELECT * FROM devices WHERE tags.ADUGroup = 'lab'"),
            TwinFilter::tag("ADUGroup", "lab").ok_or(String::new())
        );
        assert_eq!(
            parse("select * from devices where tags.ring=\"canary 1\""),
            TwinFilter::tag("ring", "canary 1").ok_or(String::new())
        );
        assert_eq!(parse("SELECT * FROM devices WHERE tags.g = ''"), TwinFilter::tag("g", "").ok_or(String::new()));
    }

    #[test]
    fn other_queries_are_refused_with_the_reason() {
        for (query, reason) in [
            ("", "expected SELECT after the end"),
            ("SELECT deviceId FROM devices", "only SELECT * is supported"),
            ("SELECT * FROM devices.modules", "only the devices collection"),
            ("SELECT * FROM devices.jobs", "only the devices collection"),
            ("SELECT * FROM devices WHERE", "the only condition supported"),
            ("SELECT * FROM devices WHERE properties.reported.fw = '1'", "is not a tag"),
            ("SELECT * FROM devices WHERE tags.a.b = '1'", "one level"),
            ("SELECT * FROM devices WHERE tags.a = 1", "the only condition supported"),
            ("SELECT * FROM devices WHERE tags.a = 'x' AND tags.b = 'y'", "the only condition supported"),
            ("SELECT * FROM devices WHERE tags.a = 'x", "not closed"),
            ("SELECT * FROM devices; DROP TABLE devices", "unexpected ';'"),
            ("SELECT COUNT() FROM devices", "unexpected '('"),
        ] {
            let error = parse(query).expect_err(query);
            assert!(error.contains(reason), "{query}: {error}");
        }
    }
}
