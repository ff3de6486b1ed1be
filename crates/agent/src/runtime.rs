//! The runtime around the workflow core: the hub connection (reconnecting with exponential
//! backoff and jitter), the startup reports, the journal and the outbox on disk, and the
//! deployment jobs (on blocking threads, or as futures of a [`JobRunner`] that has its own).
//!
//! [`AgentOptions`] lets a program that runs many agents in one process (the fleet simulator)
//! share what is read-only (TLS configuration, device information), spread agents over several
//! servers and source addresses, observe them ([`Observer`]), take reboots as a stop, and keep
//! the journal and outbox in memory ([`StateStore`]).
//!
//! Durability: every journal change is written atomically before the actions that follow it;
//! every report goes through the outbox (`outbox.json`, written atomically) and leaves it only
//! after the hub answered 204. So after a crash or power cut the agent re-sends what it had not
//! delivered, and rebuilds the core from the journal; the twin it reads on connect tells it what
//! to resume.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duhub_proto::result::{ExtendedResultCode, InstallResult};
use duhub_proto::twin::{AgentProperties, DesiredService, DeviceInformation, DeviceProperties, LastInstallResult};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::hub::{Endpoint, HubError, HubLink};
use crate::settings::Settings;
use crate::workflow::{Action, Core, Event, Job, Journal, Outcome};

/// A job's outcome, to come.
pub type JobFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs a deployment job.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job` until it ends or `cancel` is set (then [`Outcome::Cancelled`]). Blocking.
    fn run(&self, job: &Job, cancel: &AtomicBool) -> Outcome;

    /// Starts `job`: the default runs [`JobRunner::run`] on a blocking thread; a runner that
    /// waits on the network or timers (the fleet simulator's) returns its own future instead.
    fn start(self: Arc<Self>, job: Job, cancel: Arc<AtomicBool>) -> JobFuture {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.run(&job, &cancel)).await.unwrap_or_else(|error| {
                Outcome::Failed(LastInstallResult::new(
                    InstallResult::failure(JOB_FAILED).with_details(format!("the job's thread failed: {error}")),
                ))
            })
        })
    }
}

/// Hears what an agent does (for a program running many: progress, measurements).
pub trait Observer: Send + Sync {
    /// Connected, startup reports acknowledged and the twin read: ready for deployments.
    fn ready(&self) {}
    /// The connection ended (the agent reconnects unless it stops).
    fn disconnected(&self) {}
    /// A desired patch arrived (before the workflow core sees it).
    fn desired(&self, patch: &Value) {
        let _ = patch;
    }
    /// The hub acknowledged this reported patch (204).
    fn reported(&self, patch: &Value) {
        let _ = patch;
    }
}

/// How an agent runs, beyond its [`Settings`]. The default is what `duhub-agent` does.
#[derive(Clone)]
pub struct AgentOptions {
    /// TLS configuration to use instead of one made from the settings' CA (share one across
    /// agents).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Servers to dial instead of the connection string's host and the settings' port; an agent
    /// whose connection fails or ends connects to the next.
    pub servers: Vec<(String, u16)>,
    /// Local address to connect from.
    pub source: Option<IpAddr>,
    /// `deviceInformation` to report instead of reading it from the system.
    pub device_information: Option<DeviceInformation>,
    /// Where the journal and outbox are kept (files, fsynced, by default).
    pub state: StateStore,
    /// A reboot asked for by an update stops the agent with [`Stopped::RebootRequested`]
    /// instead of running `reboot_command` (for a simulator, which "reboots" by starting the
    /// agent again).
    pub reboot_stops: bool,
    /// Told what the agent does.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            tls: None,
            servers: Vec::new(),
            source: None,
            device_information: None,
            state: StateStore::Files { durable: true },
            reboot_stops: false,
            observer: None,
        }
    }
}

/// Where an agent keeps what it must remember across a restart: its journal and its outbox.
#[derive(Clone)]
pub enum StateStore {
    /// `journal.json` and `outbox.json` in the data directory, each change written atomically
    /// (a temporary file renamed over the old one) and, when `durable`, fsynced with its
    /// directory. What `duhub-agent` does.
    Files {
        /// fsync every change (a process crash loses nothing either way; a power cut does
        /// without it).
        durable: bool,
    },
    /// In memory, handed from one [`Agent`] to the next started on the same [`MemoryState`]:
    /// a simulated device's "disk" that survives its simulated reboots and agent restarts but
    /// not the process. The fleet simulator uses it: 10,000 agents writing two files on every
    /// report spent a quarter of the simulator's CPU in `rename` on the runtime's threads.
    Memory(Arc<MemoryState>),
}

/// The journal and outbox of a [`StateStore::Memory`].
#[derive(Debug, Default)]
pub struct MemoryState {
    journal: std::sync::Mutex<Journal>,
    outbox: std::sync::Mutex<Vec<Value>>,
}

impl StateStore {
    fn load(&self, journal_path: &Path, outbox_path: &Path) -> Result<(Journal, Vec<Value>), RuntimeError> {
        match self {
            Self::Files { .. } => {
                Ok((read_json(journal_path)?.unwrap_or_default(), read_json(outbox_path)?.unwrap_or_default()))
            }
            Self::Memory(memory) => {
                let journal = memory.journal.lock().map(|j| j.clone()).unwrap_or_default();
                let outbox = memory.outbox.lock().map(|o| o.clone()).unwrap_or_default();
                Ok((journal, outbox))
            }
        }
    }

    fn save_journal(&self, path: &Path, journal: Journal) -> Result<(), RuntimeError> {
        match self {
            Self::Files { durable } => write_json_with(path, &journal, *durable),
            Self::Memory(memory) => {
                if let Ok(mut kept) = memory.journal.lock() {
                    *kept = journal;
                }
                Ok(())
            }
        }
    }

    fn save_outbox(&self, path: &Path, outbox: &[Value]) -> Result<(), RuntimeError> {
        match self {
            Self::Files { durable } => write_json_with(path, &outbox, *durable),
            Self::Memory(memory) => {
                if let Ok(mut kept) = memory.outbox.lock() {
                    kept.clear();
                    kept.extend_from_slice(outbox);
                }
                Ok(())
            }
        }
    }
}

/// duhub: a deployment job's thread failed (panicked) (facility 8 utility, component 4
/// workflow util, duhub's value range `0xF00`).
pub const JOB_FAILED: ExtendedResultCode = ExtendedResultCode(0x8040_0F02);

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Local state could not be read or written.
    #[error("{0}")]
    State(String),
    /// The settings cannot work.
    #[error("{0}")]
    Config(String),
}

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The stop signal turned true.
    Requested,
    /// An update asked for an agent restart (result codes 607/608, 707/708, 1107/1108). The
    /// workflow stays in the journal; an agent started again on the same data directory finds
    /// it in the twin, runs it again from the start (`IsInstalled` first) and reports the result.
    /// The `duhub-agent` binary restarts itself in place (`exec`); an embedding program starts
    /// a new [`Agent`].
    RestartRequested,
    /// An update asked for a reboot and [`AgentOptions::reboot_stops`] is set: the outbox was
    /// delivered; start a new [`Agent`] on the same data directory to "boot" again.
    RebootRequested,
}

/// How one hub session ended.
enum SessionEnd {
    /// The connection was lost: reconnect.
    Lost,
    /// Stop (asked for, or an agent restart).
    Stop(Stopped),
    /// A simulated outage: stay offline this long, then reconnect.
    Offline(Duration),
}

/// One agent.
pub struct Agent {
    settings: Settings,
    /// Read from the system once per process (it changes only across a reboot or an update
    /// that restarts the agent), reported on every connect.
    device_information: DeviceInformation,
    endpoint: Endpoint,
    runner: Arc<dyn JobRunner>,
    state_dir: PathBuf,
    state: StateStore,
    reboot_stops: bool,
    observer: Option<Arc<dyn Observer>>,
    /// Simulated network outages: the session drops its connection and stays offline this long.
    outages: Option<mpsc::UnboundedReceiver<Duration>>,
}

impl Agent {
    /// An agent for `settings`, running jobs with `runner`.
    pub fn new(settings: Settings, runner: Arc<dyn JobRunner>) -> Result<Self, RuntimeError> {
        Self::with_options(settings, runner, AgentOptions::default())
    }

    /// An agent for `settings` with `options`.
    pub fn with_options(
        settings: Settings,
        runner: Arc<dyn JobRunner>,
        options: AgentOptions,
    ) -> Result<Self, RuntimeError> {
        let connection = duhub_proto::connection_string::ConnectionString::parse(&settings.connection_string)
            .map_err(|e| RuntimeError::Config(format!("connection_string: {e}")))?;
        let tls = match options.tls {
            Some(tls) => tls,
            None => {
                let ca = settings.ca_pem_bytes().map_err(|e| RuntimeError::Config(e.to_string()))?;
                crate::hub::tls_config(ca.as_deref()).map_err(|e| RuntimeError::Config(e.to_string()))?
            }
        };
        let websocket = settings.transport == crate::settings::Transport::Websocket;
        let servers = if options.servers.is_empty() {
            let (host, port) = match connection.host_name.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => (host.to_owned(), port.parse().unwrap_or(8883)),
                _ => (connection.host_name.clone(), 8883),
            };
            let port = if websocket { settings.https_port.unwrap_or(443) } else { settings.mqtt_port.unwrap_or(port) };
            vec![(host, port)]
        } else {
            options.servers
        };
        let endpoint = Endpoint { connection, servers, websocket, tls, source: options.source };
        let state_dir = settings.data_dir.clone();
        create_private_dir(&state_dir)?;
        let device_information = options.device_information.unwrap_or_else(|| device_information(&settings));
        Ok(Self {
            settings,
            device_information,
            endpoint,
            runner,
            state_dir,
            state: options.state,
            reboot_stops: options.reboot_stops,
            observer: options.observer,
            outages: None,
        })
    }

    /// Simulated network outages: every duration received drops the connection (no DISCONNECT)
    /// and keeps the agent offline that long before it reconnects.
    pub fn with_outages(mut self, outages: mpsc::UnboundedReceiver<Duration>) -> Self {
        self.outages = Some(outages);
        self
    }

    /// Runs until `stop` turns true or an update asks for an agent restart.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Stopped, RuntimeError> {
        let journal_path = self.state_dir.join("journal.json");
        let outbox_path = self.state_dir.join("outbox.json");
        let (journal, mut outbox) = self.state.load(&journal_path, &outbox_path)?;
        let mut core = Core::new(&journal);
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<(String, Outcome)>();
        let mut cancels: HashMap<String, Arc<AtomicBool>> = HashMap::new();
        let mut backoff = Duration::from_secs(1);
        let mut outages = self.outages.take();
        let mut attempt = 0usize;
        loop {
            if *stop.borrow() {
                return Ok(Stopped::Requested);
            }
            let mut link = match HubLink::connect(&self.endpoint, attempt).await {
                Ok(link) => link,
                Err(error) => {
                    attempt += 1;
                    let wait = jittered(backoff);
                    tracing::warn!(%error, retry_in = ?wait, "connecting to the hub failed");
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        _ = stop.changed() => return Ok(Stopped::Requested),
                    }
                }
            };
            if let Some((host, port)) = self.endpoint.server(attempt) {
                tracing::info!(%host, port, "connected to the hub");
            }
            let session = self
                .session(
                    &mut link,
                    &mut core,
                    &mut outbox,
                    &outbox_path,
                    &journal_path,
                    &finished_tx,
                    &mut cancels,
                    &mut finished_rx,
                    &mut stop,
                    &mut outages,
                )
                .await;
            if let Some(observer) = &self.observer {
                observer.disconnected();
            }
            match session {
                Ok(SessionEnd::Stop(stopped)) => {
                    link.disconnect().await;
                    return Ok(stopped);
                }
                Ok(SessionEnd::Lost) => backoff = Duration::from_secs(1),
                Ok(SessionEnd::Offline(outage)) => {
                    drop(link);
                    tokio::select! {
                        () = tokio::time::sleep(outage) => continue,
                        _ = stop.changed() => return Ok(Stopped::Requested),
                    }
                }
                Err(SessionError::Hub(error)) => {
                    // The server may be gone: the next attempt dials the next one.
                    attempt += 1;
                    tracing::warn!(%error, "lost the hub connection");
                }
                Err(SessionError::State(error)) => return Err(error),
            }
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(Stopped::Requested),
            }
        }
    }

    /// One connection: startup reports, outbox, twin, then events until the connection ends
    /// or the agent stops.
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        link: &mut HubLink,
        core: &mut Core,
        outbox: &mut Vec<Value>,
        outbox_path: &Path,
        journal_path: &Path,
        finished_tx: &mpsc::UnboundedSender<(String, Outcome)>,
        cancels: &mut HashMap<String, Arc<AtomicBool>>,
        finished_rx: &mut mpsc::UnboundedReceiver<(String, Outcome)>,
        stop: &mut watch::Receiver<bool>,
        outages: &mut Option<mpsc::UnboundedReceiver<Duration>>,
    ) -> Result<SessionEnd, SessionError> {
        for patch in [self.startup_report().to_patch(), self.device_information.to_patch()] {
            link.report(&patch).await?;
            if let Some(observer) = &self.observer {
                observer.reported(&patch);
            }
        }
        tracing::info!("reported the agent's properties; ready for deployments");
        self.flush(link, outbox, outbox_path).await?;
        let twin = link.get_twin().await?;
        if let Some(observer) = &self.observer {
            observer.ready();
        }
        if let Ok(Some(desired)) = DesiredService::locate(&twin) {
            let actions = core.handle(Event::Desired(desired));
            if let Some(end) =
                self.perform(actions, link, outbox, outbox_path, journal_path, finished_tx, cancels).await?
            {
                return Ok(end);
            }
        }
        loop {
            tokio::select! {
                patch = link.desired.recv() => {
                    let Some(patch) = patch else { return Ok(SessionEnd::Lost) };
                    if let Some(observer) = &self.observer {
                        observer.desired(&patch);
                    }
                    match DesiredService::locate(&patch) {
                        Ok(Some(desired)) => {
                            let actions = core.handle(Event::Desired(desired));
                            if let Some(end) = self.perform(actions, link, outbox, outbox_path, journal_path, finished_tx, cancels).await? {
                                return Ok(end);
                            }
                        }
                        Ok(None) => {}
                        Err(error) => tracing::warn!(%error, "a desired patch has an unreadable deviceUpdate.service"),
                    }
                }
                finished = finished_rx.recv() => {
                    let Some((workflow_id, outcome)) = finished else { return Ok(SessionEnd::Lost) };
                    cancels.remove(&workflow_id);
                    let actions = core.handle(Event::Finished { workflow_id, outcome });
                    if let Some(end) = self.perform(actions, link, outbox, outbox_path, journal_path, finished_tx, cancels).await? {
                        return Ok(end);
                    }
                }
                reason = &mut link.closed => {
                    return Err(SessionError::Hub(HubError::Connection(reason.unwrap_or_else(|_| "closed".into()))));
                }
                _ = stop.changed() => {
                    cancel_all(cancels);
                    return Ok(SessionEnd::Stop(Stopped::Requested));
                }
                Some(outage) = next_outage(outages) => {
                    tracing::info!(?outage, "simulated network outage");
                    return Ok(SessionEnd::Offline(outage));
                }
            }
        }
    }

    /// Performs the core's actions in order; `Some` when the agent must stop for a restart.
    #[allow(clippy::too_many_arguments)]
    async fn perform(
        &self,
        actions: Vec<Action>,
        link: &mut HubLink,
        outbox: &mut Vec<Value>,
        outbox_path: &Path,
        journal_path: &Path,
        finished_tx: &mpsc::UnboundedSender<(String, Outcome)>,
        cancels: &mut HashMap<String, Arc<AtomicBool>>,
    ) -> Result<Option<SessionEnd>, SessionError> {
        for action in actions {
            match action {
                Action::Report(report) => {
                    outbox.push(report.to_patch());
                    self.state.save_outbox(outbox_path, outbox)?;
                }
                Action::Ack(ack) => {
                    outbox.push(ack.to_patch());
                    self.state.save_outbox(outbox_path, outbox)?;
                }
                Action::Journal(journal) => self.state.save_journal(journal_path, journal)?,
                Action::Start(job) => {
                    let workflow_id = job.workflow.id.clone().unwrap_or_default();
                    let cancel = Arc::new(AtomicBool::new(false));
                    cancels.insert(workflow_id.clone(), cancel.clone());
                    let runner = self.runner.clone();
                    let finished = finished_tx.clone();
                    tracing::info!(workflow = workflow_id, "starting the deployment");
                    let job = runner.start(*job, cancel);
                    tokio::spawn(async move {
                        let outcome = job.await;
                        let _ = finished.send((workflow_id, outcome));
                    });
                }
                Action::Cancel { workflow_id } => {
                    if let Some(flag) = cancels.get(&workflow_id) {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
                Action::Restart { workflow_id, reboot: true } if self.reboot_stops => {
                    self.flush(link, outbox, outbox_path).await?;
                    tracing::warn!(workflow = workflow_id, "the update asks for a reboot; stopping the agent");
                    cancel_all(cancels);
                    return Ok(Some(SessionEnd::Stop(Stopped::RebootRequested)));
                }
                Action::Restart { workflow_id, reboot: true } => {
                    self.flush(link, outbox, outbox_path).await?;
                    let command = self.settings.reboot_command.clone();
                    tracing::warn!(?command, workflow = workflow_id, "the update asks for a reboot");
                    let rebooting = tokio::task::spawn_blocking(move || run_reboot_command(&command))
                        .await
                        .unwrap_or_else(|error| Err(format!("the reboot command's thread failed: {error}")));
                    if let Err(why) = rebooting {
                        // Not rebooted, so what was installed is not in effect: the deployment
                        // fails (a retry runs it again) instead of staying in progress forever.
                        tracing::error!(why, workflow = workflow_id, "the reboot failed; the deployment fails");
                        let result = LastInstallResult::new(InstallResult::failure(REBOOT_FAILED).with_details(why));
                        let _ = finished_tx.send((workflow_id, Outcome::Failed(result)));
                    }
                }
                Action::Restart { workflow_id, reboot: false } => {
                    self.flush(link, outbox, outbox_path).await?;
                    tracing::warn!(workflow = workflow_id, "the update asks for an agent restart");
                    cancel_all(cancels);
                    return Ok(Some(SessionEnd::Stop(Stopped::RestartRequested)));
                }
                Action::Ignore(why) => tracing::info!(why, "desired deviceUpdate.service not acted on"),
            }
        }
        self.flush(link, outbox, outbox_path).await?;
        Ok(None)
    }

    /// Sends the outbox in order, removing each patch once the hub acknowledged it. Patches that
    /// combine (`twin_doc::combine_patches`: the in-progress report and the acknowledgement of
    /// the deployment that started it, say) go as one: one twin update instead of several.
    async fn flush(&self, link: &mut HubLink, outbox: &mut Vec<Value>, path: &Path) -> Result<(), SessionError> {
        let mut combine = true;
        while let Some((first, rest)) = outbox.split_first() {
            let (patch, count) = next_report(first, rest, combine);
            match link.report(&patch).await {
                Ok(()) => {
                    if let Some(observer) = &self.observer {
                        outbox.iter().take(count).for_each(|sent| observer.reported(sent));
                    }
                }
                // Refused combined: each is sent alone, so that only the one at fault is dropped.
                Err(HubError::Status { status, .. }) if count > 1 && (400..500).contains(&status) && status != 429 => {
                    combine = false;
                    continue;
                }
                // The hub refused the patch itself (too large, invalid): sending it again cannot
                // succeed, and it must not block the reports behind it.
                Err(HubError::Status { status, .. }) if (400..500).contains(&status) && status != 429 => {
                    tracing::error!(status, patch = %patch, "the hub refused a reported patch; dropping it");
                }
                Err(error) => return Err(error.into()),
            }
            outbox.drain(..count);
            combine = true;
            self.state.save_outbox(path, outbox)?;
        }
        Ok(())
    }

    fn startup_report(&self) -> AgentProperties {
        let mut properties = DeviceProperties::new(&self.settings.manufacturer, &self.settings.model);
        for (name, value) in &self.settings.additional_device_properties {
            properties = properties.with_property(name, value);
        }
        properties.interface_id = Some(None);
        properties.contract_model_id = Some(duhub_proto::twin::CONTRACT_MODEL_V3.to_owned());
        properties.adu_ver = Some(format!("DU;agent/{}", env!("CARGO_PKG_VERSION")));
        AgentProperties::startup(properties, &self.settings.compat_property_names)
    }
}

/// Largest combined report (compact JSON): far below IoT Hub's message and section limits.
const MAX_COMBINED_REPORT: usize = 8 * 1024;

/// The next patch to send from the outbox (`first`, then `rest`) and how many queued patches it
/// carries: the first, combined with those after it while they combine and stay small.
fn next_report(first: &Value, rest: &[Value], combine: bool) -> (Value, usize) {
    let mut patch = first.clone();
    let mut count = 1;
    for next in rest.iter().take_while(|_| combine) {
        match duhub_proto::twin_doc::combine_patches(&patch, next) {
            Some(combined) if serde_json::to_string(&combined).map_or(0, |t| t.len()) <= MAX_COMBINED_REPORT => {
                patch = combined;
                count += 1;
            }
            _ => break,
        }
    }
    (patch, count)
}

enum SessionError {
    Hub(HubError),
    State(RuntimeError),
}

impl From<HubError> for SessionError {
    fn from(error: HubError) -> Self {
        Self::Hub(error)
    }
}

impl From<RuntimeError> for SessionError {
    fn from(error: RuntimeError) -> Self {
        Self::State(error)
    }
}

/// The next simulated outage, or never when there is no outage channel (or it closed).
async fn next_outage(outages: &mut Option<mpsc::UnboundedReceiver<Duration>>) -> Option<Duration> {
    match outages {
        Some(receiver) => match receiver.recv().await {
            Some(outage) => Some(outage),
            None => {
                *outages = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// The `deviceInformation` component, read from the system.
pub fn device_information(settings: &Settings) -> DeviceInformation {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os_name = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .or_else(|| Some(std::env::consts::OS.to_owned()));
    let sw_version = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|v| v.trim().to_owned());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let processor_manufacturer = cpuinfo
        .lines()
        .find(|l| l.starts_with("vendor_id") || l.starts_with("CPU implementer"))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    DeviceInformation {
        manufacturer: Some(settings.manufacturer.clone()),
        model: Some(settings.model.clone()),
        os_name,
        sw_version,
        processor_architecture: Some(std::env::consts::ARCH.to_owned()),
        processor_manufacturer,
        total_memory,
        total_storage: total_storage_kb(Path::new("/sys/block")),
    }
}

/// The device's built-in storage in kilobytes: the sizes of the block devices under `sys_block`
/// (`/sys/block`) that are backed by hardware (they have a `device` link, which loop, RAM, zram,
/// device-mapper and RAID devices lack, so nothing is counted twice) and are not removable.
/// `None` when there is none (containers, other systems).
fn total_storage_kb(sys_block: &Path) -> Option<u64> {
    let read = |path: PathBuf| std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let mut total = None;
    for entry in std::fs::read_dir(sys_block).ok()?.flatten() {
        let dir = entry.path();
        if !dir.join("device").exists() || read(dir.join("removable")) == Some(1) {
            continue;
        }
        // `size` counts 512-byte sectors whatever the device's block size.
        if let Some(sectors) = read(dir.join("size")) {
            total = Some(total.unwrap_or(0) + sectors / 2);
        }
    }
    total
}

/// Asks every running job to stop.
fn cancel_all(cancels: &HashMap<String, Arc<AtomicBool>>) {
    for flag in cancels.values() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// duhub: the reboot command could not be run or exited with a failure status (facility 8
/// utility, component 4 workflow util, duhub's value range `0xF00`).
pub const REBOOT_FAILED: ExtendedResultCode = ExtendedResultCode(0x8040_0F01);

/// Runs the reboot command and waits for it: `Err` with why when it cannot be started or exits
/// with a failure status.
fn run_reboot_command(command: &[String]) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no reboot command is configured")?;
    match std::process::Command::new(program).args(args).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the reboot command {command:?} failed ({status})")),
        Err(error) => Err(format!("the reboot command {command:?} could not be run: {error}")),
    }
}

fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    // ±20 %.
    let factor = 0.8 + f64::from(byte[0]) / 255.0 * 0.4;
    base.mul_f64(factor)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::State(format!("{} is corrupt: {e}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(RuntimeError::State(format!("reading {}: {error}", path.display()))),
    }
}

/// Writes JSON atomically: a temporary file, fsync, rename, fsync of the directory.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    write_json_with(path, value, true)
}

/// [`write_json`], with the fsyncs only when `durable`.
fn write_json_with<T: serde::Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(value).map_err(|e| RuntimeError::State(e.to_string()))?;
    write_file(path, &bytes, durable).map_err(|e| RuntimeError::State(format!("writing {}: {e}", path.display())))
}

/// Writes bytes atomically (mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file(path, bytes, true)
}

/// A temporary file renamed over `path`; with `durable`, the file and the directory are
/// fsynced (else a power cut may lose the write, a process crash does not).
fn write_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), RuntimeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|e| RuntimeError::State(format!("creating {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_reports_that_combine_go_as_one_and_a_change_of_state_never_does() {
        use serde_json::json;
        let in_progress =
            json!({"deviceUpdate": {"__t": "c", "agent": {"state": 6, "workflow": {"action": 3, "id": "w"}}}});
        let ack = json!({"deviceUpdate": {"__t": "c", "service": {"ac": 200, "av": 7, "value": {}}}});
        let finished =
            json!({"deviceUpdate": {"__t": "c", "agent": {"state": 0, "workflow": {"action": 3, "id": "w"}}}});
        let outbox = [in_progress.clone(), ack.clone(), finished.clone()];
        let (first, count) = next_report(&outbox[0], &outbox[1..], true);
        assert_eq!(count, 2, "the in-progress report and the acknowledgement go together");
        assert_eq!(
            first,
            json!({"deviceUpdate": {"__t": "c", "agent": {"state": 6, "workflow": {"action": 3, "id": "w"}},
                "service": {"ac": 200, "av": 7, "value": {}}}})
        );
        assert_eq!(next_report(&finished, &[], true), (finished.clone(), 1));
        assert_eq!(next_report(&outbox[0], &outbox[1..], false), (in_progress, 1), "without combining, one at a time");
        // Too large together: one at a time.
        let big = json!({"deviceUpdate": {"agent": {"lastInstallResult": {"resultDetails": "x".repeat(MAX_COMBINED_REPORT)}}}});
        assert_eq!(next_report(&ack, &[big], true), (ack, 1));
    }

    #[test]
    fn state_stores_hand_the_journal_and_outbox_to_the_next_agent() {
        let dir = tempfile::tempdir().unwrap();
        let (journal_path, outbox_path) = (dir.path().join("journal.json"), dir.path().join("outbox.json"));
        let journal = Journal {
            running: Some(crate::workflow::JournalWorkflow { id: "w1".into(), retry_timestamp: None }),
            completed: None,
        };
        let outbox = vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})];
        for store in [StateStore::Files { durable: false }, StateStore::Memory(Arc::default())] {
            assert_eq!(store.load(&journal_path, &outbox_path).unwrap(), (Journal::default(), Vec::new()));
            store.save_journal(&journal_path, journal.clone()).unwrap();
            store.save_outbox(&outbox_path, &outbox).unwrap();
            // The next agent on the same store (a clone: the simulator hands its options on).
            assert_eq!(store.clone().load(&journal_path, &outbox_path).unwrap(), (journal.clone(), outbox.clone()));
            store.save_outbox(&outbox_path, &outbox[1..]).unwrap();
            assert_eq!(store.load(&journal_path, &outbox_path).unwrap().1, outbox[1..].to_vec());
            let on_disk = journal_path.exists() && outbox_path.exists();
            assert_eq!(on_disk, matches!(store, StateStore::Files { .. }), "only files are written to disk");
            let _ = std::fs::remove_file(&journal_path);
            let _ = std::fs::remove_file(&outbox_path);
        }
    }

    #[test]
    fn total_storage_counts_fixed_hardware_disks_only() {
        let sys = tempfile::tempdir().unwrap();
        let disk = |name: &str, sectors: u64, removable: u8, hardware: bool| {
            let dir = sys.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            std::fs::write(dir.join("removable"), format!("{removable}\n")).unwrap();
            if hardware {
                std::fs::create_dir(dir.join("device")).unwrap();
            }
        };
        assert_eq!(total_storage_kb(sys.path()), None, "no disk");
        disk("mmcblk0", 30_535_680, 0, true); // 14.6 GiB eMMC
        disk("nvme0n1", 1_000_215_216, 0, true);
        disk("sda", 60_555_264, 1, true); // a USB stick
        disk("loop0", 409_600, 0, false);
        disk("dm-0", 30_000_000, 0, false);
        assert_eq!(total_storage_kb(sys.path()), Some(15_267_840 + 500_107_608));
        assert_eq!(total_storage_kb(&sys.path().join("missing")), None);
    }
}
