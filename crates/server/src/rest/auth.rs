//! Service authorisation: `Authorization: SharedAccessSignature sr=<host>&sig=..&se=..&skn=<policy>`
//! signed with a shared access policy's key, as the `azure-iot-hub` SDK sends it.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use duhub_proto::sas::SasToken;

use super::{ApiError, AppState};

/// A request authorised by a shared access policy.
#[derive(Debug)]
pub(super) struct Service {
    /// The policy's name.
    #[allow(dead_code)]
    pub(super) policy: String,
}

impl FromRequestParts<AppState> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization header".into()))?;
        let token = SasToken::parse(header).map_err(|e| ApiError::Unauthorized(format!("malformed token: {e}")))?;
        let host = token.resource.split(['/', ':']).next().unwrap_or_default();
        if !host.eq_ignore_ascii_case(&state.hostname) {
            return Err(ApiError::Unauthorized(format!("the token names {:?}, not this hub", token.resource)));
        }
        let policy =
            token.key_name.clone().ok_or_else(|| ApiError::Unauthorized("the token names no policy (skn)".into()))?;
        let keys = state
            .hub
            .store()
            .policy_keys(&policy)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown policy".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let verified = [&keys.0, &keys.1].iter().any(|key| {
            base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| token.verify(&k, now).is_ok())
        });
        if !verified {
            let why = if token.is_expired(now) { "the token expired" } else { "the token's signature does not match" };
            return Err(ApiError::Unauthorized(why.into()));
        }
        Ok(Service { policy })
    }
}

/// The etag of an `If-Match` header, without quotes; `None` when absent.
pub(super) fn if_match(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}
