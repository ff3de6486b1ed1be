//! How commands print: JSON for `--json`, plain text otherwise, errors to stderr (and as
//! `{"error": "..."}` on stdout with `--json`), and the exit codes.

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
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::Invalid => ExitCode::from(1),
        }
    }
}

/// Exit code of usage and I/O errors.
pub const ERROR_EXIT: u8 = 2;

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

/// Prints an error and returns the error exit code.
pub fn report_error(error: &anyhow::Error, json: bool) -> ExitCode {
    let message = format!("{error:#}");
    if json {
        println!("{}", serde_json::json!({ "error": message }));
    }
    eprintln!("error: {message}");
    ExitCode::from(ERROR_EXIT)
}
