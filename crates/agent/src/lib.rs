//! The duhub device agent (work in progress): what runs on every device of a fleet, verifying,
//! downloading, installing and reporting Device Update deployments.
//!
//! So far: reading the official agent's configuration file ([`config`]). Every format the agent
//! shares with the service (manifests, signatures, twin payloads) lives in `duhub-proto`.

pub mod config;
pub mod workflow;
