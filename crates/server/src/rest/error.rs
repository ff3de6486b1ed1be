//! The one error type of REST handlers: a closed set of IoT Hub error codes mapped to HTTP
//! statuses, with internal details logged and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// A REST error.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no valid credentials.
    Unauthorized(String),
    /// 400: the request is malformed.
    BadRequest(String),
    /// 404.
    NotFound(String),
    /// 409: the device exists.
    Conflict(String),
    /// 412: `If-Match` did not match.
    PreconditionFailed,
    /// 503: the database refuses writes for now (a full disk); the store logged the cause.
    Unavailable,
    /// 500: logged, not detailed to the client.
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => Self::NotFound(format!("device {id} not found")),
            StoreError::AlreadyExists(id) => Self::Conflict(format!("device {id} already exists")),
            StoreError::PreconditionFailed => Self::PreconditionFailed,
            StoreError::InvalidDocument(e) => Self::BadRequest(e.to_string()),
            StoreError::Invalid(why) => Self::BadRequest(why),
            other if other.is_unavailable() => Self::Unavailable,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess", m),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "ArgumentInvalid", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "DeviceNotFound", m),
            Self::Conflict(m) => (StatusCode::CONFLICT, "DeviceAlreadyExists", m),
            Self::PreconditionFailed => {
                (StatusCode::PRECONDITION_FAILED, "PreconditionFailed", "the etag does not match".to_owned())
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the service is unavailable; try again later".to_owned(),
            ),
            Self::Internal(m) => {
                tracing::error!(error = %m, "REST request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "ServerError", "internal error".to_owned())
            }
        };
        let body = json!({"Message": format!("ErrorCode:{code};{message}"), "ExceptionMessage": message});
        (status, Json(body)).into_response()
    }
}
