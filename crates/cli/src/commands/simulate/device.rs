//! One simulated device: the job runner its agent runs deployments with. It does what the real
//! executor does (signature chain against the shared trust store, manifest, compatibility,
//! verified downloads) and then, for every handler type, what `microsoft/simulator:1` does:
//! answers is-installed, install and apply itself, with the scenario's latencies and outcomes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duhub_agent::executor::{erc, manifest_failure, read_full_manifest, require_compatible, restart_kind};
use duhub_agent::runtime::{JobFuture, JobRunner};
use duhub_agent::workflow::{Job, Outcome};
use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use duhub_proto::twin::{LastInstallResult, StepResult};
use duhub_proto::update_manifest::{self, FullManifest, InlineStep, Step, UpdateManifest};
use indexmap::IndexMap;
use tokio::sync::mpsc;

use super::download::Fetch;
use super::fleet::{Fleet, Moment, Status};
use super::scenario::{Fate, PhaseName, SplitMix64, draw};

/// A simulated device's job runner.
pub(super) struct SimDevice {
    fleet: Arc<Fleet>,
    index: usize,
    fate: Fate,
    random: Mutex<SplitMix64>,
    data_dir: PathBuf,
    device_properties: IndexMap<String, String>,
    /// Installed criteria of what this device installed (its "firmware").
    installed: Mutex<HashSet<String>>,
    /// The one reboot or restart its fate asks for was asked for.
    restarted: AtomicBool,
    /// It went offline during a download already.
    went_offline: AtomicBool,
    /// Tells its agent to drop the connection for a while.
    outages: mpsc::UnboundedSender<Duration>,
}

impl SimDevice {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        fleet: Arc<Fleet>,
        index: usize,
        fate: Fate,
        seed: u64,
        data_dir: PathBuf,
        manufacturer: &str,
        model: &str,
        outages: mpsc::UnboundedSender<Duration>,
    ) -> Self {
        let mut device_properties = IndexMap::new();
        device_properties.insert("manufacturer".to_owned(), manufacturer.to_owned());
        device_properties.insert("model".to_owned(), model.to_owned());
        Self {
            fleet,
            index,
            fate,
            random: Mutex::new(SplitMix64::new(seed)),
            data_dir,
            device_properties,
            installed: Mutex::new(HashSet::new()),
            restarted: AtomicBool::new(false),
            went_offline: AtomicBool::new(false),
            outages,
        }
    }

    fn latency(&self, range: [u64; 2]) -> Duration {
        match self.random.lock() {
            Ok(mut random) => draw(&mut random, range),
            Err(_) => Duration::from_millis(range[0]),
        }
    }

    async fn phase_latency(&self, phase: PhaseName, cancel: &AtomicBool) -> Result<(), InstallResult> {
        let wait = self.latency(self.fleet.scenario.phase(phase).latency_ms);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(InstallResult::new(ResultCode::FAILURE_CANCELLED, ExtendedResultCode::NONE));
        }
        Ok(())
    }

    fn failure_of(&self, phase: PhaseName) -> Result<(), InstallResult> {
        if self.fate != Fate::Fail(phase) {
            return Ok(());
        }
        let (code, erc) = self.fleet.scenario.failure_codes(phase);
        let erc = ExtendedResultCode::try_from(erc).unwrap_or_default();
        Err(InstallResult::new(ResultCode(code), erc).with_details(format!("simulated {phase:?} failure")))
    }

    async fn execute(&self, job: &Job, cancel: &AtomicBool) -> Outcome {
        self.fleet.reached(self.index, Moment::Started);
        let outcome = match self.run_job(job, cancel).await {
            Ok(outcome) => outcome,
            Err(_) if cancel.load(Ordering::SeqCst) => Outcome::Cancelled,
            Err(failure) => Outcome::Failed(LastInstallResult::new(failure)),
        };
        self.fleet.reached(self.index, Moment::Finished);
        outcome
    }

    async fn run_job(&self, job: &Job, cancel: &AtomicBool) -> Result<Outcome, InstallResult> {
        let service = &job.service;
        let workflow_id = job.workflow.id.clone().unwrap_or_default();
        let manifest_text = service
            .update_manifest_text()
            .ok_or_else(|| InstallResult::failure(ExtendedResultCode::NO_MANIFEST))?
            .to_owned();
        self.fleet
            .trust
            .verify_update_manifest(Some(&manifest_text), service.update_manifest_signature.as_deref())
            .map_err(|e| InstallResult::failure(e.extended_result_code()).with_details(e.to_string()))?;
        let name: String =
            workflow_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let sandbox = self.data_dir.join("downloads").join(name);
        tokio::fs::create_dir_all(&sandbox)
            .await
            .map_err(|e| InstallResult::failure(erc::SANDBOX).with_details(format!("{}: {e}", sandbox.display())))?;
        let file_url = |id: &str| service.file_url(id).map(str::to_owned);
        let manifest = match UpdateManifest::parse(&manifest_text).map_err(manifest_failure)? {
            UpdateManifest::Full(full) => full,
            UpdateManifest::Detached(detached) => {
                let path = self
                    .fetch(&sandbox, &detached.detached_manifest_file_id, &detached.file, &file_url, cancel)
                    .await?;
                read_full_manifest(&path)?
            }
            UpdateManifest::Legacy(_) => {
                return Err(InstallResult::failure(ExtendedResultCode::UNSUPPORTED_MANIFEST_VERSION));
            }
        };
        require_compatible(&manifest, &self.device_properties)?;
        let mut result = LastInstallResult::new(InstallResult::success(ResultCode::APPLY_SUCCESS));
        for (index, step) in manifest.steps.iter().enumerate() {
            let step_result = match step {
                Step::Inline(inline) => self.step(&sandbox, &manifest, inline, &file_url, cancel).await?,
                Step::Reference(reference) => {
                    let entry = manifest
                        .files
                        .get(&reference.detached_manifest_file_id)
                        .ok_or_else(|| InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS))?;
                    let path =
                        self.fetch(&sandbox, &reference.detached_manifest_file_id, entry, &file_url, cancel).await?;
                    let child = read_full_manifest(&path)?;
                    let mut last = InstallResult::success(ResultCode::APPLY_SUCCESS);
                    for child_step in &child.steps {
                        match child_step {
                            Step::Inline(inline) => {
                                last = self.step(&sandbox, &child, inline, &file_url, cancel).await?;
                            }
                            Step::Reference(_) => return Err(InstallResult::failure(ExtendedResultCode::BAD_MANIFEST)),
                        }
                        if restart_kind(last.result_code).is_some() {
                            break;
                        }
                    }
                    last
                }
            };
            if let Some(reboot) = restart_kind(step_result.result_code) {
                return Ok(Outcome::RestartRequired { reboot });
            }
            result = result.with_step(index, StepResult::from(step_result));
        }
        let _ = tokio::fs::remove_dir_all(&sandbox).await;
        Ok(Outcome::Succeeded { result, installed: manifest.update_id.clone() })
    }

    /// One step as `microsoft/simulator:1` would run it, whatever its handler: is-installed
    /// (from what this device installed), the files, install, apply.
    async fn step(
        &self,
        sandbox: &Path,
        manifest: &FullManifest,
        step: &InlineStep,
        file_url: &(dyn Fn(&str) -> Option<String> + Sync),
        cancel: &AtomicBool,
    ) -> Result<InstallResult, InstallResult> {
        let criteria = step
            .installed_criteria()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}:{}", manifest.update_id, step.handler));
        if self.installed.lock().is_ok_and(|installed| installed.contains(&criteria)) {
            return Ok(InstallResult::success(ResultCode::INSTALL_SKIPPED_UPDATE_ALREADY_INSTALLED));
        }
        self.fleet.set_status(self.index, Status::Downloading);
        self.phase_latency(PhaseName::Download, cancel).await?;
        for id in &step.files {
            let entry = manifest.files.get(id).ok_or_else(|| {
                InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS).with_details(format!("no file {id}"))
            })?;
            self.fetch(sandbox, id, entry, file_url, cancel).await?;
        }
        self.fleet.reached(self.index, Moment::Downloaded);
        self.failure_of(PhaseName::Download)?;
        self.fleet.set_status(self.index, Status::Installing);
        self.phase_latency(PhaseName::Install, cancel).await?;
        self.failure_of(PhaseName::Install)?;
        self.phase_latency(PhaseName::Apply, cancel).await?;
        self.failure_of(PhaseName::Apply)?;
        if let Ok(mut installed) = self.installed.lock() {
            installed.insert(criteria);
        }
        let restart = match self.fate {
            Fate::Reboot => Some(ResultCode::APPLY_REQUIRED_REBOOT),
            Fate::Restart => Some(ResultCode::APPLY_REQUIRED_IMMEDIATE_AGENT_RESTART),
            _ => None,
        };
        if let Some(code) = restart
            && !self.restarted.swap(true, Ordering::SeqCst)
        {
            return Ok(InstallResult::success(code));
        }
        Ok(InstallResult::success(ResultCode::APPLY_SUCCESS))
    }

    /// Downloads one manifest file (see [`super::download`]); a device fated to go offline does
    /// so halfway through its first file.
    async fn fetch(
        &self,
        sandbox: &Path,
        id: &str,
        entry: &update_manifest::FileEntry,
        file_url: &(dyn Fn(&str) -> Option<String> + Sync),
        cancel: &AtomicBool,
    ) -> Result<PathBuf, InstallResult> {
        if !update_manifest::is_plain_file_name(&entry.file_name) {
            return Err(InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS)
                .with_details(format!("file name {:?} is not a plain name", entry.file_name)));
        }
        let url = file_url(id).ok_or_else(|| {
            InstallResult::failure(erc::FILE_ENTRY).with_details(format!("no URL for file {id} ({})", entry.file_name))
        })?;
        let expected = entry
            .sha256()
            .and_then(|sha| duhub_agent::download::ExpectedFile::from_base64_sha256(entry.size_in_bytes, sha))
            .ok_or_else(|| {
                InstallResult::failure(erc::FILE_ENTRY).with_details(format!("file {id} has no valid sha256"))
            })?;
        let outage = (self.fate == Fate::Offline && !self.went_offline.swap(true, Ordering::SeqCst))
            .then(|| (self.latency(self.fleet.scenario.offline_ms), self.outages.clone()));
        let fetch = Fetch { url: &url, destination: &sandbox.join(&entry.file_name), expected, cancel, outage };
        self.fleet.downloader.fetch(fetch).await.map_err(|e| {
            InstallResult::failure(e.extended_result_code()).with_details(format!("downloading {url}: {e}"))
        })
    }
}

impl JobRunner for SimDevice {
    fn run(&self, job: &Job, cancel: &AtomicBool) -> Outcome {
        // Only reached when called outside `start` (on a blocking thread of the runtime).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(self.execute(job, cancel)),
            Err(error) => Outcome::Failed(LastInstallResult::new(
                InstallResult::failure(duhub_agent::runtime::JOB_FAILED)
                    .with_details(format!("a simulated device needs a tokio runtime: {error}")),
            )),
        }
    }

    fn start(self: Arc<Self>, job: Job, cancel: Arc<AtomicBool>) -> JobFuture {
        Box::pin(async move { self.execute(&job, &cancel).await })
    }
}
