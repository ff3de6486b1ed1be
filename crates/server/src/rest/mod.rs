//! The IoT Hub service REST subset that Microsoft's `azure-iot-hub` SDK calls: device identities
//! and twins, authorised by a shared access policy's SAS token.

mod auth;
mod devices;
pub mod du;
mod error;
mod query;
mod twins;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::hub::Hub;

/// What REST handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The hub (and through it the store).
    pub hub: Arc<Hub>,
    /// The host name service tokens must name.
    pub hostname: String,
}

/// The router of the IoT Hub service REST subset (see [`crate::app::app`] for the whole
/// HTTPS side).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/devices", get(devices::list))
        .route(
            "/devices/query",
            post(query::query).get(query::get_device).put(query::put_device).delete(query::delete_device),
        )
        .route("/devices/{id}", get(devices::get).put(devices::put).delete(devices::delete))
        .route("/twins/{id}", get(twins::get).patch(twins::patch).put(twins::replace))
        .with_state(state)
}
