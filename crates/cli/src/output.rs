//! How commands print: JSON for `--json`, plain text otherwise, errors to stderr (and as
//! `{"error": "..."}` on stdout with `--json`, or as the server's own `{"error": {...}}` when the
//! server refused a request), and the exit codes.

use std::process::ExitCode;

use clap::ArgMatches;
use serde::Serialize;

/// What a command concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or the input is valid: exit 0.
    Success,
    /// The input was checked and is invalid: exit 1.
    Invalid,
    /// The server carried out the request and reported a failure (e.g. a failed import): exit 1.
    Failed,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Invalid | Self::Failed => ExitCode::from(FAILURE_EXIT),
        }
    }
}

/// Exit code of invalid input and of failures the server reported.
pub const FAILURE_EXIT: u8 = 1;

/// Exit code of usage and I/O errors.
pub const ERROR_EXIT: u8 = 2;

/// A request the server answered with an error status. It ends the command with exit code 1,
/// and `--json` prints the server's error object as `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerError {
    /// What went wrong, for people: the error code and message, status and request.
    pub message: String,
    /// The server's `error` object (`code`, `message`, `target`?, `details`?...), or one made up
    /// from the status when the answer held none.
    pub error: serde_json::Value,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// Whether the innermost subcommand was given `--json`.
pub fn wants_json(matches: &ArgMatches) -> bool {
    let mut current = matches;
    loop {
        if current.try_get_one::<bool>("json").ok().flatten().copied().unwrap_or(false) {
            return true;
        }
        match current.subcommand() {
            Some((_, sub)) => current = sub,
            None => return false,
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints an error and returns its exit code: 1 for a [`ServerError`], 2 for the others.
pub fn report_error(error: &anyhow::Error, json: bool) -> ExitCode {
    let message = format!("{error:#}");
    let server_error = error.chain().find_map(|cause| cause.downcast_ref::<ServerError>());
    if json {
        match server_error {
            Some(server_error) => println!("{}", serde_json::json!({ "error": server_error.error })),
            None => println!("{}", serde_json::json!({ "error": message })),
        }
    }
    eprintln!("error: {message}");
    ExitCode::from(if server_error.is_some() { FAILURE_EXIT } else { ERROR_EXIT })
}
