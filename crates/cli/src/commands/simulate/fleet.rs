//! What the simulator knows of its fleet: the shared, read-only parts every device uses (trust
//! store, downloader, scenario) and one small record per device (status, when it reached a
//! terminal state), kept current by each agent's [`Observer`] and job runner.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use duhub_agent::runtime::Observer;
use duhub_proto::trust::TrustStore;
use duhub_proto::twin::{AgentProperties, AgentState};
use serde_json::Value;

use super::download::Downloader;
use super::scenario::Scenario;

/// Where a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Status {
    Idle = 0,
    Downloading = 1,
    Installing = 2,
    Succeeded = 3,
    Failed = 4,
    Canceled = 5,
    Restarting = 6,
}

impl Status {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Downloading,
            2 => Self::Installing,
            3 => Self::Succeeded,
            4 => Self::Failed,
            5 => Self::Canceled,
            6 => Self::Restarting,
            _ => Self::Idle,
        }
    }

    pub(super) fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// "Not yet" in the millisecond fields.
const NEVER: u64 = u64::MAX;

/// The moments of one device's deployment, in the order they happen; the rehearsal report
/// gives their percentiles and the gaps between them, which tell where the devices wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moment {
    /// The desired property with the deployment arrived (the service's reconciler, writer and
    /// MQTT push).
    Desired = 0,
    /// The job started (the manifest was accepted by the workflow core).
    Started = 1,
    /// The hub acknowledged the in-progress report.
    InProgressAcknowledged = 2,
    /// The files were downloaded and verified.
    Downloaded = 3,
    /// The job ended (after the simulated install and apply).
    Finished = 4,
    /// The hub acknowledged the terminal report.
    Terminal = 5,
}

impl Moment {
    /// Every moment, in order.
    pub(super) const ALL: [Moment; 6] =
        [Self::Desired, Self::Started, Self::InProgressAcknowledged, Self::Downloaded, Self::Finished, Self::Terminal];

    /// Its name in the report.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Desired => "desired",
            Self::Started => "started",
            Self::InProgressAcknowledged => "inProgressAcknowledged",
            Self::Downloaded => "downloaded",
            Self::Finished => "finished",
            Self::Terminal => "terminal",
        }
    }
}

#[derive(Debug)]
struct Record {
    status: AtomicU8,
    ready: AtomicBool,
    online: AtomicBool,
    /// Milliseconds after the simulator started when each [`Moment`] first happened in this
    /// deployment ([`NEVER`] before).
    moments: [AtomicU64; Moment::ALL.len()],
    /// `resultCode` and `extendedResultCodes` of its last failure report.
    failure: Mutex<Option<(i32, String)>>,
}

/// The shared state of a simulation.
pub(super) struct Fleet {
    pub(super) scenario: Scenario,
    pub(super) trust: TrustStore,
    pub(super) downloader: Downloader,
    pub(super) started: Instant,
    /// Milliseconds after `started` when the deployment was requested ([`NEVER`] before);
    /// terminal reports before it belong to earlier deployments and are not counted.
    deployed_ms: AtomicU64,
    records: Vec<Record>,
}

/// Counts of the fleet's statuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) ready: usize,
    pub(super) online: usize,
    pub(super) downloading: usize,
    pub(super) installing: usize,
    pub(super) restarting: usize,
    pub(super) succeeded: usize,
    pub(super) failed: usize,
    pub(super) canceled: usize,
}

impl Counts {
    pub(super) fn terminal(&self) -> usize {
        self.succeeded + self.failed + self.canceled
    }
}

impl Fleet {
    pub(super) fn new(scenario: Scenario, trust: TrustStore, downloader: Downloader, devices: usize) -> Self {
        let records = (0..devices)
            .map(|_| Record {
                status: AtomicU8::new(Status::Idle as u8),
                ready: AtomicBool::new(false),
                online: AtomicBool::new(false),
                moments: std::array::from_fn(|_| AtomicU64::new(NEVER)),
                failure: Mutex::new(None),
            })
            .collect();
        Self { scenario, trust, downloader, started: Instant::now(), deployed_ms: AtomicU64::new(NEVER), records }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    pub(super) fn set_status(&self, index: usize, status: Status) {
        if let Some(record) = self.records.get(index) {
            record.status.store(status as u8, Ordering::SeqCst);
        }
    }

    pub(super) fn status(&self, index: usize) -> Status {
        self.records.get(index).map_or(Status::Idle, |r| Status::from_u8(r.status.load(Ordering::SeqCst)))
    }

    /// Marks the deployment request: from now on terminal reports count, and every device is
    /// back to idle.
    pub(super) fn deployment_requested(&self) {
        for record in &self.records {
            record.status.store(Status::Idle as u8, Ordering::SeqCst);
            for moment in &record.moments {
                moment.store(NEVER, Ordering::SeqCst);
            }
        }
        self.deployed_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    /// Seconds from the deployment request to device `index`'s terminal report.
    pub(super) fn completion_seconds(&self, index: usize) -> Option<f64> {
        self.moment_seconds(index, Moment::Terminal)
    }

    /// Seconds from the deployment request to device `index`'s `moment`, if it happened.
    pub(super) fn moment_seconds(&self, index: usize, moment: Moment) -> Option<f64> {
        let deployed = self.deployed_ms.load(Ordering::SeqCst);
        let at = self.records.get(index)?.moments.get(moment as usize)?.load(Ordering::SeqCst);
        (deployed != NEVER && at != NEVER).then(|| at.saturating_sub(deployed) as f64 / 1000.0)
    }

    /// Records that device `index` reached `moment` now, unless it did already in this
    /// deployment (or no deployment was requested yet).
    pub(super) fn reached(&self, index: usize, moment: Moment) {
        if self.deployed_ms.load(Ordering::SeqCst) == NEVER {
            return;
        }
        if let Some(at) = self.records.get(index).and_then(|r| r.moments.get(moment as usize)) {
            let _ = at.compare_exchange(NEVER, self.now_ms(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// The failure device `index` reported last.
    pub(super) fn failure(&self, index: usize) -> Option<(i32, String)> {
        self.records.get(index)?.failure.lock().ok()?.clone()
    }

    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for record in &self.records {
            counts.ready += usize::from(record.ready.load(Ordering::Relaxed));
            counts.online += usize::from(record.online.load(Ordering::Relaxed));
            match Status::from_u8(record.status.load(Ordering::Relaxed)) {
                Status::Idle => {}
                Status::Downloading => counts.downloading += 1,
                Status::Installing => counts.installing += 1,
                Status::Restarting => counts.restarting += 1,
                Status::Succeeded => counts.succeeded += 1,
                Status::Failed => counts.failed += 1,
                Status::Canceled => counts.canceled += 1,
            }
        }
        counts
    }

    pub(super) fn observer(self: &Arc<Self>, index: usize) -> Arc<dyn Observer> {
        Arc::new(DeviceObserver { fleet: self.clone(), index })
    }
}

/// Keeps one device's record current.
struct DeviceObserver {
    fleet: Arc<Fleet>,
    index: usize,
}

impl DeviceObserver {
    fn record(&self) -> Option<&Record> {
        self.fleet.records.get(self.index)
    }
}

impl Observer for DeviceObserver {
    fn ready(&self) {
        if let Some(record) = self.record() {
            record.ready.store(true, Ordering::SeqCst);
            record.online.store(true, Ordering::SeqCst);
        }
    }

    fn disconnected(&self) {
        if let Some(record) = self.record() {
            record.online.store(false, Ordering::SeqCst);
        }
    }

    fn desired(&self, _patch: &Value) {
        self.fleet.reached(self.index, Moment::Desired);
    }

    fn reported(&self, patch: &Value) {
        let Ok(Some(agent)) = AgentProperties::locate(patch) else { return };
        let Some(record) = self.record() else { return };
        if agent.workflow.is_none() || self.fleet.deployed_ms.load(Ordering::SeqCst) == NEVER {
            return;
        }
        let result = agent.last_install_result.as_ref();
        let status = match agent.state {
            Some(AgentState::DeploymentInProgress) => {
                self.fleet.reached(self.index, Moment::InProgressAcknowledged);
                return;
            }
            Some(AgentState::Failed) => Status::Failed,
            Some(AgentState::Idle) if result.is_some_and(|r| r.result_code.is_success()) => Status::Succeeded,
            Some(AgentState::Idle) => Status::Canceled,
            _ => return,
        };
        if status == Status::Failed
            && let (Some(result), Ok(mut failure)) = (result, record.failure.lock())
        {
            let codes = result
                .extended_result_codes
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| result.legacy_extended_result_code.map(|c| c.to_string()))
                .unwrap_or_default();
            *failure = Some((result.result_code.0, codes));
        }
        record.status.store(status as u8, Ordering::SeqCst);
        self.fleet.reached(self.index, Moment::Terminal);
    }
}
