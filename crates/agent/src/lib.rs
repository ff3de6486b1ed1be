//! The duhub device agent (work in progress): what runs on every device of a fleet, verifying,
//! downloading, installing and reporting Device Update deployments.
//!
//! The pure workflow core ([`workflow`]) decides; the runtime ([`runtime`]: hub connection
//! [`hub`], journal, outbox) performs, and runs deployment jobs with the [`executor`]: signature
//! verification, resumable verified downloads ([`download`]) and step handlers ([`handlers`]:
//! `microsoft/script:1`, `microsoft/simulator:1` and external executables). Settings: our TOML
//! or the official `du-config.json` ([`settings`], [`config`]). Every format the agent shares
//! with the service (manifests, signatures, twin payloads) lives in `duhub-proto`.

pub mod config;
pub mod download;
pub mod executor;
pub mod handlers;
pub mod hub;
pub mod runtime;
pub mod settings;
pub mod workflow;
