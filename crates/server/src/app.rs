//! The whole HTTPS side of a node as one axum [`Router`]: the IoT Hub service REST subset
//! (`rest`), the Device Update REST API and downloads (`rest::du`), MQTT over WebSocket (`ws`)
//! and the operator dashboard at `/ui/` (`ui`). Built in one place so that `server` and tests
//! serve exactly the same routes, and so that `rest`, `ws` and `ui` need not know each other.
//!
//! A panic in a handler is a bug, not an outage: [`CatchPanicLayer`] turns it into a logged 500
//! with a JSON body, and the node goes on serving every other request and device.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::du::DeviceUpdate;
use crate::hub::Hub;
use crate::rest::{self, AppState};
use crate::{ui, ws};

/// The router of every HTTPS route of a node. `hostname` is the host name service SAS tokens
/// must name.
pub fn app(hub: Arc<Hub>, du: Arc<DeviceUpdate>, hostname: String) -> Router {
    let router = rest::router(AppState { hub: hub.clone(), hostname })
        .merge(rest::du::router(rest::du::DuState { du: du.clone() }))
        .merge(ui::router(ui::UiState { du }))
        .merge(ws::router(hub));
    #[cfg(feature = "test-hooks")]
    let router = router.route(
        crate::hub::TEST_PANIC_PATH,
        axum::routing::get(|| async {
            #[allow(clippy::panic)]
            if true {
                panic!("test hook: a panicking request handler");
            }
        }),
    );
    router.layer(CatchPanicLayer::custom(panic_response))
}

/// The answer to a request whose handler panicked: 500, logged with the panic's message.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    tracing::error!(panic = %message, "a request handler panicked (a bug); answered 500");
    let body = serde_json::json!({
        "error": {"code": "InternalServerError", "message": "internal error"},
        "Message": "ErrorCode:ServerError;internal error",
    });
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
