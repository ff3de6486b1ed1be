//! Formats and trust for duhub, shared by the server, the agent, the CLI and the fuzzers.
//!
//! Everything here is pure: no files, no sockets, no clocks, no async. Callers pass the time
//! when it matters. Parsing untrusted bytes returns `Result` and never panics.
//!
//! - [`validation`]: violations with JSON pointers, the shape of every validation result.
//! - [`update_id`]: provider / name / version.
//! - [`import_manifest`]: the operator's import manifest (v4.0 and v5.0) and its validation.
//! - [`update_manifest`]: the update manifest the service signs and sends to devices.
//! - [`json`]: the byte-exact JSON serialisations that signatures cover.
//! - [`b64`]: the base64 flavours the formats use.
//! - [`keys`], [`jws`], [`root_key`], [`trust`]: RSA keys, RS256 JWS with the `sjwk` chain,
//!   root key packages, and verification of update manifest signatures as the official agent does.
//! - [`result`]: result codes and extended result codes.
//! - [`twin`]: the `deviceUpdate` twin payloads and the PnP acknowledgement.
#![warn(missing_docs)]

pub mod b64;
pub mod json;
pub mod update_id;
pub mod validation;

pub use update_id::UpdateId;
pub use validation::{Pointer, Report, Violation};
pub mod connection_string;
pub mod import_manifest;
pub mod iothub;
pub mod jws;
pub mod keys;
pub mod result;
pub mod root_key;
pub mod sas;
pub mod trust;
pub mod twin;
pub mod twin_doc;
pub mod update_manifest;
