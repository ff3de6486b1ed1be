//! Integration tests of `duhub-proto`: conformance with Microsoft's vectors and schemas.

mod support;
mod update_manifest;
mod vectors;
