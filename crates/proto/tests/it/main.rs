//! Integration tests of `duhub-proto`: conformance with Microsoft's vectors and schemas.
#![allow(clippy::unwrap_used)]

mod import_manifest;
mod iothub;
#[cfg(feature = "signer")]
mod properties;
#[cfg(feature = "signer")]
mod signing;
mod support;
mod twin;
mod update_manifest;
mod vectors;
