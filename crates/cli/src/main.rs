//! `duhub`: the operator command line. Parses arguments, sets up logging, runs the command and
//! maps the outcome to an exit code: 0 success, 1 "invalid" verdicts and failures the server
//! reported, 2 usage or I/O errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = duhub::cli::command().get_matches();
    init_tracing();
    duhub::run(&matches)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
