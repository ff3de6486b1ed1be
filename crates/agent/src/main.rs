//! `duhub-agent`: the device agent binary. Reads its settings, connects to the hub and runs
//! deployments until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use duhub_agent::executor::Executor;
use duhub_agent::runtime::Agent;
use duhub_agent::settings::{Extra, Settings};

const USAGE: &str = "\
duhub-agent: the duhub device agent

Usage: duhub-agent --config FILE [--ca FILE] [--root-keys FILE]

  --config FILE     settings: duhub-agent TOML (`duhub device agent-config ID` writes one), or the
                    official agent's du-config.json (a file ending in .json)
  --ca FILE         CA certificates (PEM) to trust for the hub and downloads (for du-config.json,
                    which cannot name one)
  --root-keys FILE  trusted root keys (the server's rootkeys.json) for du-config.json
  -h, --help        this text
  -V, --version     the version

Logs go to stderr; RUST_LOG=debug shows more. Exit status: 0 stopped, 1 runtime failure,
2 bad settings or usage.";

fn main() -> ExitCode {
    let mut config = None;
    let mut extra = Extra::default();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| match args.next() {
            Some(value) => Ok(PathBuf::from(value)),
            None => Err(format!("{name} needs a value")),
        };
        let parsed = match arg.as_str() {
            "--config" => value("--config").map(|v| config = Some(v)),
            "--ca" => value("--ca").map(|v| extra.ca_file = Some(v)),
            "--root-keys" => value("--root-keys").map(|v| extra.root_keys_file = Some(v)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("duhub-agent {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(error) = parsed {
            eprintln!("duhub-agent: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Some(config) = config else {
        eprintln!("duhub-agent: --config FILE is required\n\n{USAGE}");
        return ExitCode::from(2);
    };
    init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = match Settings::load(&config, &extra) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("duhub-agent: {error}");
            return ExitCode::from(2);
        }
    };
    let executor = match Executor::new(&settings) {
        Ok(executor) => executor,
        Err(error) => {
            eprintln!("duhub-agent: {error}");
            return ExitCode::from(2);
        }
    };
    let agent = match Agent::new(settings, Arc::new(executor)) {
        Ok(agent) => agent,
        Err(error) => {
            eprintln!("duhub-agent: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duhub-agent: starting the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        agent.run(stopped).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("duhub-agent: {error}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let level = match filter.to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .finish(),
    );
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
