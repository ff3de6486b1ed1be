//! The `duhub` command line as a library: argument definitions ([`cli`]), the commands
//! ([`commands`]); the signing key store lives in `duhub_server::keystore`. `main.rs` only wires
//! them up.

pub mod cli;
pub mod commands;
pub mod output;

use std::process::ExitCode;

use clap::ArgMatches;

/// Runs the command `matches` describes and returns the process exit code.
pub fn run(matches: &ArgMatches) -> ExitCode {
    let json = output::wants_json(matches);
    match commands::dispatch(matches) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => output::report_error(&error, json),
    }
}
