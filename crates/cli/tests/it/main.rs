//! Integration tests of the `duhub` binary: every test runs the built executable as a process and
//! checks its exit code, stdout, stderr and the files it writes.
//!
//! Exit codes under test: 0 success or valid, 1 invalid (validate/verify) or a failure the server
//! reported, 2 usage or I/O error.
#![allow(clippy::unwrap_used)]

mod cli;
mod cluster;
mod device;
mod disk_full;
mod du;
mod hardening;
mod keys;
mod manifest;
mod readme;
mod rollout;
mod rollout_cli;
mod simulate;
mod support;
mod update;
