//! duhub's API token endpoints (`.../duhub/tokens`): list, create (the token is in that answer
//! only), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GroupPath, json_body, lenient};
use crate::rest::du::{DuError, DuState};

/// The body of `POST .../duhub/tokens`.
#[derive(Debug, Default, Deserialize)]
struct CreateToken {
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
}

/// `GET .../duhub/tokens`.
pub(in crate::rest::du) async fn list_tokens(State(state): State<DuState>) -> Result<Json<Value>, DuError> {
    let tokens = state.du.store().api_tokens().await?;
    let value: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            let mut v = json!({"id": t.id, "name": t.name, "createdDateTime": t.created});
            if let Some(revoked) = t.revoked {
                v["revokedDateTime"] = revoked.into();
            }
            v
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}

/// `POST .../duhub/tokens` `{"name": ...}`: the token is in this answer only.
pub(in crate::rest::du) async fn create_token(
    State(state): State<DuState>,
    body: axum::body::Bytes,
) -> Result<Response, DuError> {
    let body: CreateToken = json_body(&body)?;
    let name = body
        .name
        .filter(|n| (1..=128).contains(&n.chars().count()))
        .ok_or_else(|| DuError::bad_request("name must be a string of 1 to 128 characters").with_target("name"))?;
    let token = crate::ids::generate_api_token();
    state.du.store().add_api_token(&name, &token).await?;
    let id = crate::store::Store::api_token_id(&token);
    let created = crate::ids::now_rfc3339();
    Ok((StatusCode::CREATED, Json(json!({"id": id, "name": name, "token": token, "createdDateTime": created})))
        .into_response())
}

/// `DELETE .../duhub/tokens/{id}`.
pub(in crate::rest::du) async fn revoke_token(
    State(state): State<DuState>,
    Path((_, id)): GroupPath,
) -> Result<StatusCode, DuError> {
    if state.du.store().revoke_api_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(DuError::not_found(format!("no active token {id}")))
    }
}
