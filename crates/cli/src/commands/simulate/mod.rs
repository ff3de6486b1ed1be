//! `duhub simulate`: a fleet of real agents (the `duhub-agent` library: MQTT/TLS session,
//! workflow core, journal and outbox) in one process, with simulated step handlers, and the
//! deployment rehearsal that times the whole loop from the deployment request to the service
//! reporting every device done.
//!
//! Everything read-only is shared: one TLS configuration, one trust store (root keys parsed
//! once, the root key package fetched once), one HTTPS client for downloads. Each device is one
//! tokio task (its agent) plus, while it works, one task for its job; file writes and hashing
//! run on a bounded number of blocking slots ([`download`]). Devices talk to the service only
//! through its public protocols and REST APIs.

mod device;
mod download;
mod fleet;
mod scenario;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use duhub_agent::runtime::{Agent, AgentOptions, StateStore, Stopped};
use duhub_agent::settings::{Settings, Transport};
use duhub_proto::root_key::{RootKeyPackage, parse_root_key_list};
use duhub_proto::trust::TrustStore;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use self::device::SimDevice;
use self::download::Downloader;
use self::fleet::{Fleet, Moment, Status};
use self::scenario::{DevicePlan, Fate, Scenario, SplitMix64, draw};
use super::device::Service;
use super::du::client::DuClient;
use super::du::deployments::{self, Progress};
use crate::cli::{AdminArgs, DeploymentCreateArgs, SimulateArgs};
use crate::output::{Outcome, print_json};

/// Blocking slots for file writes and hashing.
const WRITE_SLOTS: usize = 16;
/// Devices created (or looked up) at once.
const CREATE_CONCURRENCY: usize = 32;
/// How often the service's status is asked for while waiting for it to agree.
const STATUS_POLL: Duration = Duration::from_millis(250);

/// Runs `duhub simulate`.
pub(super) fn simulate(args: &SimulateArgs) -> Result<Outcome> {
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))?
        }
        None => Scenario::default(),
    };
    if args.prefix.is_empty() || !args.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c)) {
        bail!("--prefix {:?}: use letters, digits and - . _ :", args.prefix);
    }
    let devices = args.devices as usize;
    let seed = args.seed.or(scenario.seed).unwrap_or(1);
    let fail_count = args.fail_percent.map(|percent| devices * percent as usize / 100);
    let plan = scenario.plan(devices, seed, fail_count)?;
    warn_about_open_files(devices);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(args, scenario, plan, seed))
}

/// Device ids: the prefix and a zero-padded index.
fn device_id(prefix: &str, devices: usize, index: usize) -> String {
    let width = devices.saturating_sub(1).to_string().len().max(4);
    format!("{prefix}{index:0width$}")
}

async fn run(args: &SimulateArgs, scenario: Scenario, plan: Vec<DevicePlan>, seed: u64) -> Result<Outcome> {
    let devices = plan.len();
    let interrupted = interrupted()?;
    let service = Service::connect(&AdminArgs { admin: args.du.admin.clone(), json: args.du.json })?;
    let admin = service.admin().clone();
    let du = match &args.deploy {
        Some(_) => Some(DuClient::connect(&args.du)?),
        None => None,
    };
    let ca_pem = std::fs::read(&admin.ca_certificate)
        .with_context(|| format!("reading the CA certificate {}", admin.ca_certificate.display()))?;
    let root_keys_path = admin.keys_dir.join("rootkeys.json");
    let root_keys = std::fs::read_to_string(&root_keys_path).with_context(|| {
        format!("reading the server's root keys {} (run this beside the server)", root_keys_path.display())
    })?;
    let mut trust = TrustStore::new(
        parse_root_key_list(&root_keys).with_context(|| format!("parsing {}", root_keys_path.display()))?,
    );
    let shared_dir = scenario.shared_downloads.then(|| args.data_dir.join("shared"));
    if let Some(dir) = &shared_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let downloader = Downloader::new(&ca_pem, WRITE_SLOTS, shared_dir)?;
    fetch_root_key_package(&mut trust, &ca_pem, &admin.https_url).await;
    let tls = duhub_agent::hub::tls_config(Some(&ca_pem)).map_err(|e| anyhow::anyhow!("the CA: {e}"))?;
    let servers = servers(args, &admin)?;
    let classes: Vec<(String, String)> = if scenario.population.is_empty() {
        vec![(args.manufacturer.clone(), args.model.clone())]
    } else {
        scenario.population.iter().map(|c| (c.manufacturer.clone(), c.model.clone())).collect()
    };

    // The devices, in the group.
    let progress_tty = std::io::stderr().is_terminal();
    let created = std::sync::atomic::AtomicUsize::new(0);
    let ids: Vec<String> = (0..devices).map(|i| device_id(&args.prefix, devices, i)).collect();
    let group_patch = json!({"tags": {duhub_server::du::fleet::GROUP_TAG: args.group}});
    let connection_strings: Vec<Result<String>> = futures_util::stream::iter(ids.iter().map(|id| {
        let (service, patch, created) = (&service, &group_patch, &created);
        async move {
            let connection_string = service.ensure_device(id).await?;
            let path = format!("/twins/{}", duhub_proto::sas::percent_encode(id));
            service.call(reqwest::Method::PATCH, &path, Some(patch.clone())).await?;
            let done = created.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if done % 1000 == 0 || done == devices {
                eprintln!("simulate: {done}/{devices} devices created or found, in group {}", args.group);
            }
            Ok(connection_string)
        }
    }))
    .buffered(CREATE_CONCURRENCY)
    .collect()
    .await;
    let connection_strings: Vec<String> = connection_strings.into_iter().collect::<Result<_>>()?;

    // The agents.
    let fleet = Arc::new(Fleet::new(scenario, trust, downloader, devices));
    let (stop_tx, stop) = watch::channel(false);
    let mut information = None;
    let mut tasks = Vec::new();
    for (index, device_plan) in plan.iter().enumerate() {
        if device_plan.fate == Fate::NeverConnect {
            continue;
        }
        let (manufacturer, model) = classes.get(device_plan.class).cloned().unwrap_or_default();
        let settings = Settings {
            connection_string: connection_strings.get(index).cloned().unwrap_or_default(),
            data_dir: args.data_dir.join(&ids[index]),
            manufacturer: manufacturer.clone(),
            model: model.clone(),
            additional_device_properties: Default::default(),
            compat_property_names: duhub_agent::config::DEFAULT_COMPAT_PROPERTY_NAMES.to_owned(),
            transport: if args.websocket { Transport::Websocket } else { Transport::Mqtt },
            mqtt_port: None,
            https_port: None,
            ca_pem: None,
            ca_file: None,
            root_keys: None,
            root_keys_file: None,
            use_production_roots: false,
            root_key_package_url: None,
            download_timeout_minutes: duhub_agent::config::DEFAULT_DOWNLOAD_TIMEOUT_MINUTES,
            handlers: Default::default(),
            simulator_data_file: None,
            apt_command: None,
            swupdate_config_file: None,
            reboot_command: Vec::new(),
        };
        let base = information.get_or_insert_with(|| duhub_agent::runtime::device_information(&settings));
        let mut device_information = base.clone();
        device_information.manufacturer = Some(manufacturer.clone());
        device_information.model = Some(model.clone());
        let mut device_servers = servers.clone();
        device_servers.rotate_left(index % servers.len().max(1));
        let options = AgentOptions {
            tls: Some(tls.clone()),
            servers: device_servers,
            source: (!args.sources.is_empty()).then(|| args.sources[index % args.sources.len()]),
            device_information: Some(device_information),
            state: StateStore::Memory(Arc::default()),
            reboot_stops: true,
            observer: Some(fleet.observer(index)),
        };
        let (outages_tx, outages) = mpsc::unbounded_channel();
        let runner = Arc::new(SimDevice::new(
            fleet.clone(),
            index,
            device_plan.fate,
            device_plan.seed,
            settings.data_dir.clone(),
            &manufacturer,
            &model,
            outages_tx,
        ));
        tasks.push(tokio::spawn(run_device(fleet.clone(), index, settings, options, runner, outages, stop.clone())));
    }
    let connectable = tasks.len();
    eprintln!("simulate: {connectable} agents started ({} never connect)", devices - connectable);
    let progress = tokio::spawn(print_progress(fleet.clone(), connectable, progress_tty));

    let outcome = match (&args.deploy, du) {
        (Some(update), Some(du)) => {
            let rehearsal = Rehearsal { args, fleet: &fleet, du: &du, update, plan: &plan, ids: &ids, connectable };
            tokio::select! {
                report = rehearsal.run(args.until_done) => Some(report),
                () = interrupted => None,
            }
        }
        _ => {
            interrupted.await;
            None
        }
    };
    eprintln!("simulate: stopping the agents");
    let _ = stop_tx.send(true);
    let stopped = tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(tasks)).await;
    progress.abort();
    if stopped.is_err() {
        eprintln!("simulate: some agents did not stop within 30 s");
    }
    match outcome {
        Some(report) => {
            let mut report = report?;
            report["seed"] = json!(seed);
            report["peakRssBytes"] = json!(peak_rss_bytes());
            if args.du.json {
                print_json(&report)?;
            } else {
                print_report(&report);
            }
            let good = report["agreed"] == json!(true) && report["unexpected"] == json!(0);
            Ok(if good { Outcome::Success } else { Outcome::Failed })
        }
        None if args.deploy.is_some() => {
            eprintln!("simulate: interrupted before the rehearsal ended");
            Ok(Outcome::Failed)
        }
        None => {
            let counts = fleet.counts();
            let summary = json!({
                "devices": devices,
                "connected": counts.ready,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "bytesDownloaded": fleet.downloader.bytes.load(std::sync::atomic::Ordering::Relaxed),
                "peakRssBytes": peak_rss_bytes(),
            });
            if args.du.json {
                print_json(&summary)?;
            }
            Ok(Outcome::Success)
        }
    }
}

/// One device: its agent, started again after a simulated reboot or agent restart, until the
/// simulator stops.
async fn run_device(
    fleet: Arc<Fleet>,
    index: usize,
    settings: Settings,
    options: AgentOptions,
    runner: Arc<SimDevice>,
    outages: mpsc::UnboundedReceiver<Duration>,
    stop: watch::Receiver<bool>,
) {
    let mut outages = Some(outages);
    let mut random = SplitMix64::new(index as u64);
    loop {
        let agent = match Agent::with_options(settings.clone(), runner.clone(), options.clone()) {
            Ok(agent) => agent,
            Err(error) => {
                tracing::error!(%error, device = index, "the agent cannot start");
                return;
            }
        };
        let agent = match outages.take() {
            Some(outages) => agent.with_outages(outages),
            None => agent,
        };
        match agent.run(stop.clone()).await {
            Ok(Stopped::Requested) => return,
            Ok(Stopped::RestartRequested | Stopped::RebootRequested) => {
                fleet.set_status(index, Status::Restarting);
                let down = draw(&mut random, fleet.scenario.reboot_ms);
                let mut stop = stop.clone();
                tokio::select! {
                    () = tokio::time::sleep(down) => {}
                    _ = stop.changed() => return,
                }
                fleet.set_status(index, Status::Installing);
            }
            Err(error) => {
                tracing::error!(%error, device = index, "the agent stopped");
                return;
            }
        }
    }
}

/// A deployment rehearsal.
struct Rehearsal<'a> {
    args: &'a SimulateArgs,
    fleet: &'a Arc<Fleet>,
    du: &'a DuClient,
    update: &'a duhub_proto::UpdateId,
    plan: &'a [DevicePlan],
    ids: &'a [String],
    connectable: usize,
}

impl Rehearsal<'_> {
    async fn run(&self, until_done: bool) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        // Every device that connects has connected and reported.
        while self.fleet.counts().ready < self.connectable {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} devices connected within {} s",
                    self.fleet.counts().ready,
                    self.connectable,
                    self.args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deployment_id = self.args.deployment_id.clone().unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
            format!("rehearsal-{}", now.unwrap_or(0))
        });
        let create = DeploymentCreateArgs {
            group: self.args.group.clone(),
            deployment: deployment_id.clone(),
            update: self.update.clone(),
            start: None,
            rollback_update: None,
            rollback_failed_count: None,
            rollback_failed_percent: None,
            rollout: crate::cli::RolloutArgs::default(),
            du: crate::cli::DuArgs {
                admin: self.args.du.admin.clone(),
                instance: self.args.du.instance.clone(),
                json: self.args.du.json,
            },
        };
        eprintln!("simulate: every device reported; deploying {} as {deployment_id}", self.update);
        self.fleet.deployment_requested();
        let requested = Instant::now();
        deployments::put(self.du, &create).await.context("creating the deployment")?;
        let request_ms = requested.elapsed().as_secs_f64() * 1000.0;
        if !until_done {
            // Watch until stopped (Ctrl-C).
            std::future::pending::<()>().await;
        }
        // Every connected device terminal.
        loop {
            let counts = self.fleet.counts();
            if counts.terminal() >= self.connectable {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "after {} s, {} of {} devices are done ({} succeeded, {} failed)",
                    self.args.timeout,
                    counts.terminal(),
                    self.connectable,
                    counts.succeeded,
                    counts.failed
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = self.fleet.counts();
        let completions: Vec<f64> = {
            let mut all: Vec<f64> = (0..self.plan.len()).filter_map(|i| self.fleet.completion_seconds(i)).collect();
            all.sort_by(f64::total_cmp);
            all
        };
        let all_terminal = completions.last().copied().unwrap_or(0.0);
        // The service agrees.
        let devices_said = Progress {
            total: counts.terminal() as u64,
            in_progress: 0,
            succeeded: counts.succeeded as u64,
            failed: counts.failed as u64,
            canceled: counts.canceled as u64,
        };
        let mut service_said;
        let agreed_at = loop {
            let status = deployments::get_status(self.du, &self.args.group, &deployment_id).await?;
            service_said = Progress::of(&status);
            if service_said == devices_said {
                break Some(requested.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(STATUS_POLL).await;
        };
        let mut unexpected = Vec::new();
        let mut failed_devices = Vec::new();
        for (index, device_plan) in self.plan.iter().enumerate() {
            let status = self.fleet.status(index);
            let expected = device_plan.fate.expected_success();
            let right = match expected {
                Some(true) => status == Status::Succeeded,
                Some(false) => status == Status::Failed,
                None => !status.is_terminal(),
            };
            if !right {
                unexpected.push(json!({"deviceId": self.ids[index], "fate": format!("{:?}", device_plan.fate), "status": format!("{status:?}")}));
            }
            if status == Status::Failed {
                let (code, extended) = self.fleet.failure(index).unwrap_or_default();
                failed_devices
                    .push(json!({"deviceId": self.ids[index], "resultCode": code, "extendedResultCodes": extended}));
            }
        }
        let percentile = |p: f64| -> f64 {
            if completions.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * completions.len() as f64).ceil() as usize;
            completions[rank.clamp(1, completions.len()) - 1]
        };
        Ok(json!({
            "deploymentId": deployment_id,
            "update": self.update.to_string(),
            "group": self.args.group,
            "devices": self.plan.len(),
            "connected": self.connectable,
            "neverConnected": self.plan.len() - self.connectable,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "canceled": counts.canceled,
            "deploymentRequestMs": (request_ms * 10.0).round() / 10.0,
            "allTerminalSeconds": round3(all_terminal),
            "serviceAgreedSeconds": agreed_at.map(round3),
            "completionSeconds": {"p50": round3(percentile(50.0)), "p90": round3(percentile(90.0)), "p99": round3(percentile(99.0))},
            "moments": self.moments(),
            "bytesDownloaded": self.fleet.downloader.bytes.load(std::sync::atomic::Ordering::Relaxed),
            "sharedDownloads": self.fleet.scenario.shared_downloads,
            "serviceCounts": service_said,
            "agreed": agreed_at.is_some(),
            "unexpected": unexpected.len(),
            "unexpectedDevices": unexpected,
            "failedDevices": failed_devices,
        }))
    }
}

impl Rehearsal<'_> {
    /// Where the devices spent the time: for each [`Moment`], the percentiles of when the
    /// devices reached it (seconds after the request), and of the gap from the moment before.
    fn moments(&self) -> Value {
        let devices = 0..self.plan.len();
        let mut report = serde_json::Map::new();
        let mut previous: Option<Moment> = None;
        for moment in Moment::ALL {
            let at: Vec<f64> = devices.clone().filter_map(|i| self.fleet.moment_seconds(i, moment)).collect();
            let mut entry = json!({"devices": at.len(), "atSeconds": percentiles(at)});
            if let Some(before) = previous {
                let gaps: Vec<f64> = devices
                    .clone()
                    .filter_map(|i| Some(self.fleet.moment_seconds(i, moment)? - self.fleet.moment_seconds(i, before)?))
                    .collect();
                entry["afterPreviousSeconds"] = percentiles(gaps);
            }
            report.insert(moment.name().to_owned(), entry);
            previous = Some(moment);
        }
        Value::Object(report)
    }
}

/// p50, p90, p99 and the maximum of `values`, rounded to milliseconds.
fn percentiles(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values.get(rank.clamp(1, values.len()) - 1).copied().map(round3)
    };
    json!({"p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "max": at(100.0)})
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn print_report(report: &Value) {
    let field = |name: &str| report.get(name).map(ToString::to_string).unwrap_or_default();
    println!("rehearsal {} of {} on group {}", field("deploymentId"), field("update"), field("group"));
    println!(
        "  devices:               {} ({} connected, {} never connected)",
        field("devices"),
        field("connected"),
        field("neverConnected")
    );
    println!(
        "  devices reported:      {} succeeded, {} failed, {} canceled",
        field("succeeded"),
        field("failed"),
        field("canceled")
    );
    println!("  service counts:        {}", field("serviceCounts"));
    println!("  deployment request:    {} ms", field("deploymentRequestMs"));
    println!("  all terminal after:    {} s", field("allTerminalSeconds"));
    println!("  service agreed after:  {} s", field("serviceAgreedSeconds"));
    println!("  completion (s):        {}", field("completionSeconds"));
    println!("  bytes downloaded:      {} (shared downloads: {})", field("bytesDownloaded"), field("sharedDownloads"));
    println!("  peak RSS:              {} bytes", field("peakRssBytes"));
    if report["unexpected"] != json!(0) {
        println!("  NOT AS THE SCENARIO SAYS: {}", field("unexpectedDevices"));
    }
    println!("  {}", if report["agreed"] == json!(true) { "the service agrees" } else { "THE SERVICE DOES NOT AGREE" });
}

/// Live progress on stderr: one line every second on a terminal (rewritten), every five
/// seconds otherwise.
async fn print_progress(fleet: Arc<Fleet>, connectable: usize, tty: bool) {
    let every = if tty { Duration::from_secs(1) } else { Duration::from_secs(5) };
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let c = fleet.counts();
        let offline = c.ready.saturating_sub(c.online);
        let line = format!(
            "simulate: {}/{connectable} connected, {offline} offline, {} downloading, {} installing, {} restarting, {} succeeded, {} failed, {} canceled",
            c.online, c.downloading, c.installing, c.restarting, c.succeeded, c.failed, c.canceled
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

/// The MQTT (or, with --websocket, HTTPS) servers to spread devices over.
fn servers(args: &SimulateArgs, admin: &duhub_server::server::Admin) -> Result<Vec<(String, u16)>> {
    if args.server.is_empty() {
        let port = if args.websocket {
            reqwest::Url::parse(&admin.https_url)
                .ok()
                .and_then(|url| url.port_or_known_default())
                .context("admin.json's httpsUrl has no port")?
        } else {
            admin.mqtt_port
        };
        return Ok(vec![(admin.mqtt_host.clone(), port)]);
    }
    args.server
        .iter()
        .map(|server| {
            let (host, port) =
                server.rsplit_once(':').with_context(|| format!("--server {server:?} is not HOST:PORT"))?;
            let port = port.parse().with_context(|| format!("--server {server:?}: bad port"))?;
            Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
        })
        .collect()
}

/// Fetches the server's root key package once for every device; without it the devices verify
/// with the root keys alone (what an agent without a package does).
async fn fetch_root_key_package(trust: &mut TrustStore, ca_pem: &[u8], https_url: &str) {
    let url = format!("{https_url}/duhub/rootkeypackage.json");
    let fetched = async {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem)?])
            .timeout(Duration::from_secs(30))
            .build()?;
        let text = client.get(&url).send().await?.error_for_status()?.text().await?;
        let package = RootKeyPackage::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
        trust.accept_package(package).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok(())
    };
    if let Err(error) = fetched.await {
        eprintln!("simulate: the root key package from {url} is not used ({error:#}); verifying with the root keys");
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; listening starts when this is called, so a signal
/// during the set-up is not lost.
fn interrupted() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Peak resident set size of this process (`VmHWM`), where the system tells.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Each agent holds one socket and opens files now and then: warn when the open-file limit is
/// too low for the fleet.
fn warn_about_open_files(devices: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < devices + 256
    {
        eprintln!(
            "simulate: warning: the open-file limit is {soft}, {devices} devices need about {}: run `ulimit -n {}` first",
            devices + 256,
            (devices + 256).max(1024)
        );
    }
}
