//! Integration tests of `duhub-proto`: conformance with Microsoft's vectors and schemas.
#![allow(clippy::unwrap_used)]

mod import_manifest;
mod support;
mod twin;
mod update_manifest;
mod vectors;
