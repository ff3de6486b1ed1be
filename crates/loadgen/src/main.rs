//! `duhub-loadgen`: a load generator for a duhub server (or anything speaking the IoT Hub device
//! protocol over MQTT 3.1.1/TLS).
//!
//! One tokio task per simulated device and a minimal MQTT client on rumqttc's packet codec (no
//! rumqttc event loop), so that ten thousand connections stay cheap on the client side.

mod common;
mod deploy;
mod idle;
mod populate;
mod provision;
mod reported;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Load generator for duhub: create devices, hold many idle MQTT/TLS connections and measure \
the server's memory, or drive twin reported-property patches and measure throughput and latency.";

const AFTER_HELP: &str = "\
Devices are named <prefix><index> with a six-digit zero-padded index (load-000000, load-000001, ...). \
Their keys are derived from the id and --key-seed (base64 of SHA-256(\"<seed>:<id>\")), so `provision` \
and the other subcommands agree without storing anything; run `provision` first with the same \
--prefix, --count and --key-seed.

Typical session:
  duhub serve --data-dir /tmp/hub --https-port 0 --mqtt-port 0 --bind 0.0.0.0 --json &
  duhub-loadgen provision --admin /tmp/hub/admin.json --count 10000
  duhub-loadgen idle --admin /tmp/hub/admin.json --count 10000 \\
      --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 --server-pid $SERVER_PID --hold 30
  duhub-loadgen reported --admin /tmp/hub/admin.json --count 1000 --duration 20 \\
      --server-pid $SERVER_PID
  duhub-loadgen deploy --admin /tmp/hub/admin.json --count 1000
  duhub-loadgen populate --admin /tmp/hub/admin.json --count 100000 --model toaster
  duhub-loadgen deploy --admin /tmp/hub/admin.json --count 100000 --populated --model toaster

Results go to stdout (human-readable, or one JSON document with --json); progress goes to stderr.";

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "duhub-loadgen", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create N devices over the service REST API (idempotent: existing devices with the
    /// expected key are counted as such).
    Provision(ProvisionArgs),
    /// Open N MQTT/TLS connections, hold them idle, and measure the server's resident memory
    /// (VmRSS) before and after.
    Idle(IdleArgs),
    /// Connect N devices, each sending reported-property patches back to back (QoS 1, waiting
    /// for the 204 twin response before the next); measure patches/s and request→204 latency.
    Reported(ReportedArgs),
    /// Connect N devices that report a Device Update agent (a class of their own), import an
    /// update, deploy it to their group, and measure the time until every device has received
    /// its desired `deviceUpdate.service`.
    Deploy(DeployArgs),
    /// Provisioned devices connect in waves, report a Device Update agent (deviceUpdate.agent
    /// and deviceInformation) and disconnect: a fleet of N devices with agents, with at most
    /// --open sockets at once. Run `provision` first.
    Populate(PopulateArgs),
}

/// Options every subcommand shares.
#[derive(Debug, Args)]
struct CommonArgs {
    /// The server's admin.json (written into its data directory by `duhub serve`).
    #[arg(long, value_name = "FILE")]
    admin: PathBuf,
    /// Number of devices.
    #[arg(long, short = 'n', value_name = "N")]
    count: usize,
    /// Device id prefix.
    #[arg(long, default_value = "load-")]
    prefix: String,
    /// Index of the first device.
    #[arg(long, default_value_t = 0, value_name = "INDEX")]
    first: usize,
    /// Seed the device keys are derived from.
    #[arg(long, default_value = "duhub-loadgen", value_name = "SEED")]
    key_seed: String,
    /// Print the results as one JSON document.
    #[arg(long)]
    json: bool,
    /// Tokio worker threads of the load generator (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Requests in flight.
    #[arg(long, default_value_t = 32, value_name = "N")]
    concurrency: usize,
}

/// Where and how device connections are opened.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// MQTT/TLS address to connect to (default: 127.0.0.1 and the mqttPort of admin.json).
    /// TLS verifies the server certificate against admin.json's CA for its mqttHost name.
    #[arg(long, value_name = "ADDR:PORT")]
    server: Option<std::net::SocketAddr>,
    /// Local source addresses, comma-separated; connections are spread round-robin over them
    /// (each socket is bound to <source>:0 before connecting, so each source address gives its
    /// own range of ephemeral ports, about 28,000 with the Linux defaults).
    #[arg(long, value_delimiter = ',', value_name = "IP,IP,...")]
    sources: Vec<IpAddr>,
    /// Connection attempts (TCP + TLS + CONNECT/CONNACK) in flight at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    connect_concurrency: usize,
    /// MQTT keep-alive in seconds (a PINGREQ is sent every half of it).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    keep_alive: u16,
    /// Give up on one connection attempt after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    connect_timeout: u64,
    /// Speak MQTT without TLS, to the server's plain port (`duhub serve --mqtt-plain-port`; give
    /// it with --server). Separates the cost of TLS from the rest in the measurements.
    #[arg(long, requires = "server")]
    plain: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Process id of the server, whose VmRSS is read from /proc/<pid>/status.
    #[arg(long, value_name = "PID")]
    server_pid: u32,
    /// Seconds to hold the connections after all are open (RSS is measured again at the end).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    hold: u64,
    /// Seconds to wait after the last CONNACK before the first "after" measurement.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    settle: u64,
}

#[derive(Debug, Args)]
struct ReportedArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Seconds of measurement (after all devices are connected and the warm-up).
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    duration: u64,
    /// Seconds of patches before the measurement starts (not counted).
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    warmup: u64,
    /// Approximate size of each reported patch (JSON) in bytes.
    #[arg(long, default_value_t = 100, value_name = "B")]
    payload_bytes: usize,
    /// Give up on a patch (and its device) when no twin response arrives within this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    request_timeout: u64,
    /// Process id of the server: its CPU time and RSS during the run are reported.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct DeployArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Group to deploy to (the devices' `ADUGroup` tag; `$default` for untagged devices).
    #[arg(long, default_value = "$default", value_name = "GROUP")]
    group: String,
    /// Device Update instance id.
    #[arg(long, default_value = "default", value_name = "ID")]
    instance: String,
    /// Give up waiting for devices after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    timeout: u64,
    /// Deploy to devices `populate` created (not connected): measure the time until every
    /// device's desired `deviceUpdate.service` is written, by reading the twins of a sample of
    /// 100 devices spread over the range (and the last one) until all have the workflow.
    #[arg(long)]
    populated: bool,
    /// With --populated: the agents' `manufacturer` given to `populate`.
    #[arg(long, default_value = "loadgen", value_name = "M")]
    manufacturer: String,
    /// With --populated: the agents' `model` given to `populate`.
    #[arg(long, default_value = "populated", value_name = "X")]
    model: String,
}

#[derive(Debug, Args)]
struct PopulateArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    /// The agents' `manufacturer` device property (with --model, their device class).
    #[arg(long, default_value = "loadgen", value_name = "M")]
    manufacturer: String,
    /// The agents' `model` device property.
    #[arg(long, default_value = "populated", value_name = "X")]
    model: String,
    /// Connections open at once at most (at most 15,000: keep below the open-file limit).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    open: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("duhub-loadgen: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs a subcommand; `Ok(false)` when it ran but some operations failed.
fn run(cli: Cli) -> Result<bool> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let threads = match &cli.command {
        Command::Provision(a) => a.common.threads,
        Command::Idle(a) => a.common.threads,
        Command::Reported(a) => a.common.threads,
        Command::Deploy(a) => a.common.threads,
        Command::Populate(a) => a.common.threads,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Provision(args) => provision::run(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Reported(args) => reported::run(args).await,
            Command::Deploy(args) => deploy::run(args).await,
            Command::Populate(args) => populate::run(args).await,
        }
    })
}
