//! The duhub server: device registry, device twins, the IoT Hub compatible MQTT endpoint for
//! devices and the REST APIs for operators and services.

pub mod app;
pub mod config;
pub mod du;
pub mod fs;
pub mod https;
pub mod hub;
pub mod ids;
pub mod keystore;
mod memory;
pub mod rest;
pub mod server;
pub mod store;
pub mod tls;
pub mod ui;
pub mod ws;
