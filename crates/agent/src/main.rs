//! `duhub-agent`: the device agent binary. Reads its settings, connects to the hub and runs
//! deployments until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use duhub_agent::executor::Executor;
use duhub_agent::runtime::{Agent, Stopped};
use duhub_agent::settings::{Extra, Settings};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;

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

Logs go to stderr; RUST_LOG=debug (or e.g. RUST_LOG=info,duhub_agent=debug) shows more.
When an update asks for an agent restart (result 607/608, 707/708), the agent replaces itself
with a fresh start of the same command line (exec; same process id, so a service manager sees no
exit), which also picks up a newly installed duhub-agent binary.
Exit status: 0 stopped, 1 runtime failure, 2 bad settings or usage, 75 an agent restart was
asked for but starting again failed (a service manager's restart completes it).";

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
        Ok(Stopped::Requested) => ExitCode::SUCCESS,
        // (`RebootRequested` needs `AgentOptions::reboot_stops`, which the binary does not set.)
        Ok(Stopped::RestartRequested | Stopped::RebootRequested) => restart_in_place(),
        Err(error) => {
            eprintln!("duhub-agent: {error}");
            ExitCode::from(1)
        }
    }
}

/// Replaces this process with a fresh start of the same command line. The program is found as
/// it was the first time (argv[0]: a path, or a name looked up in `PATH`), not through
/// `/proc/self/exe`, so an update that replaced the binary starts the new one.
fn restart_in_place() -> ExitCode {
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        eprintln!("duhub-agent: an agent restart was asked for, but argv[0] is missing");
        return ExitCode::from(75);
    };
    tracing::warn!(program = %program.to_string_lossy(), "restarting the agent");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let error = std::process::Command::new(&program).args(args).exec();
        eprintln!("duhub-agent: restarting {}: {error}", program.to_string_lossy());
    }
    ExitCode::from(75)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): a level (`debug`) or
/// `target=level` directives separated by commas (`info,duhub_agent=debug,rumqttc=warn`).
/// An unparsable value is reported and `info` used.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let (filter, bad) = match spec.trim() {
        "" => (Targets::new().with_default(tracing::Level::INFO), None),
        spec => match spec.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (Targets::new().with_default(tracing::Level::INFO), Some(error)),
        },
    };
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter),
    );
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(error) = bad {
        tracing::warn!("RUST_LOG={spec:?} is not understood ({error}); logging at info");
    }
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
