//! The whole HTTPS side of a node as one axum [`Router`]: the IoT Hub service REST subset
//! (`rest`), the Device Update REST API and downloads (`rest::du`), MQTT over WebSocket (`ws`)
//! and the operator dashboard at `/ui/` (`ui`). Built in one place so that `server` and tests
//! serve exactly the same routes, and so that `rest`, `ws` and `ui` need not know each other.

use std::sync::Arc;

use axum::Router;

use crate::du::DeviceUpdate;
use crate::hub::Hub;
use crate::rest::{self, AppState};
use crate::{ui, ws};

/// The router of every HTTPS route of a node. `hostname` is the host name service SAS tokens
/// must name.
pub fn app(hub: Arc<Hub>, du: Arc<DeviceUpdate>, hostname: String) -> Router {
    rest::router(AppState { hub: hub.clone(), hostname })
        .merge(rest::du::router(rest::du::DuState { du: du.clone() }))
        .merge(ui::router(ui::UiState { du }))
        .merge(ws::router(hub))
}
