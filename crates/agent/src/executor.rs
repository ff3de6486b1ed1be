//! Runs one deployment job on its thread: refresh the root key package, verify the signature
//! chain, read the manifest (detached and child manifests too), check compatibility, then per
//! step: download its files into the workflow's sandbox (resumable, hash-checked) and run its
//! handler (is-installed, install, apply).
//!
//! Nothing runs before the signature verifies and the device is found compatible; no handler
//! sees a file before its size and SHA-256 matched the signed manifest.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use duhub_proto::root_key::{RootKeyPackage, parse_root_key_list};
use duhub_proto::trust::TrustStore;
use duhub_proto::twin::{LastInstallResult, StepResult};
use duhub_proto::update_manifest::{self, FullManifest, Step, UpdateManifest};
use indexmap::IndexMap;

use crate::download::{Downloader, ExpectedFile};
use crate::handlers::{BuiltinOptions, Registry, StepContext, StepHandler};
use crate::runtime::{JobRunner, write_atomic};
use crate::settings::Settings;
use crate::workflow::{Job, Outcome};

/// duhub's own extended result codes of the agent's workflow (facility 8 "utility",
/// component 4 "workflow util").
pub mod erc {
    use duhub_proto::result::ExtendedResultCode;

    /// The manifest's compatibility does not match this device.
    pub const INCOMPATIBLE: ExtendedResultCode = ExtendedResultCode(0x8040_0101);
    /// No handler is registered for a step's handler id.
    pub const UNKNOWN_HANDLER: ExtendedResultCode = ExtendedResultCode(0x8040_0102);
    /// The sandbox could not be prepared.
    pub const SANDBOX: ExtendedResultCode = ExtendedResultCode(0x8040_0103);
    /// The trust store is unusable (a poisoned lock after a panic).
    pub const ROOT_KEY_PACKAGE: ExtendedResultCode = ExtendedResultCode(0x8040_0104);
    /// A file a step needs has no URL or no valid hash.
    pub const FILE_ENTRY: ExtendedResultCode = ExtendedResultCode(0x8040_0105);
}

/// The job runner of an agent.
pub struct Executor {
    trust: Mutex<TrustStore>,
    downloader: Downloader,
    handlers: Registry,
    device_properties: IndexMap<String, String>,
    data_dir: PathBuf,
}

impl Executor {
    /// An executor for `settings`.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let anchors = match (&settings.root_keys, &settings.root_keys_file) {
            (Some(text), _) => Some(parse_root_key_list(text).map_err(|e| format!("root_keys: {e}"))?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                Some(parse_root_key_list(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            (None, None) => None,
        };
        let mut trust = match anchors {
            Some(mut anchors) => {
                if settings.use_production_roots {
                    anchors.extend(TrustStore::production().anchors().iter().cloned());
                }
                TrustStore::new(anchors)
            }
            None => TrustStore::production(),
        };
        let stored = settings.data_dir.join("rootkeypackage.json");
        if let Ok(text) = std::fs::read_to_string(&stored)
            && let Ok(package) = RootKeyPackage::parse(&text)
            && let Err(error) = trust.accept_package(package)
        {
            tracing::warn!(%error, "the stored root key package is not valid for these roots; ignored");
        }
        let ca = settings.ca_pem_bytes().map_err(|e| e.to_string())?;
        let timeout = std::time::Duration::from_secs(settings.download_timeout_minutes.max(1) * 60);
        let downloader = Downloader::new(ca.as_deref(), timeout).map_err(|e| e.to_string())?;
        let mut handlers = Registry::with_builtins(BuiltinOptions {
            simulator_data_file: settings.simulator_data_file.clone(),
            apt_command: settings.apt_command.clone(),
            swupdate_config_file: settings.swupdate_config_file.clone(),
            ..BuiltinOptions::default()
        });
        for (id, executable) in &settings.handlers {
            handlers.register_external(id, executable.clone());
        }
        let mut device_properties = IndexMap::new();
        device_properties.insert("manufacturer".to_owned(), settings.manufacturer.clone());
        device_properties.insert("model".to_owned(), settings.model.clone());
        for (name, value) in &settings.additional_device_properties {
            device_properties.insert(name.clone(), value.clone());
        }
        let names: Vec<&str> = settings.compat_property_names.split(',').map(str::trim).collect();
        device_properties.retain(|name, _| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
        Ok(Self {
            trust: Mutex::new(trust),
            downloader,
            handlers,
            device_properties,
            // Handlers run in their own work folder: the paths they are given must not be relative.
            data_dir: std::path::absolute(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone()),
        })
    }

    fn downloads_dir(&self) -> PathBuf {
        self.data_dir.join("downloads")
    }

    /// Fetches the root key package from `url` and, when it validates against the trusted
    /// roots, keeps it (stored atomically). A package that cannot be fetched or does not validate
    /// is not trusted and changes nothing: the signature check that follows decides with the
    /// roots and the package already held.
    fn refresh_root_key_package(&self, url: Option<&str>, cancel: &AtomicBool) {
        let Some(url) = url.filter(|u| !u.is_empty()) else { return };
        let bytes = match self.downloader.get_small(url, 1024 * 1024, cancel) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, url, "fetching the root key package failed; verifying with what is held");
                return;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let package = match RootKeyPackage::parse(&text) {
            Ok(package) => package,
            Err(error) => {
                tracing::warn!(%error, url, "the root key package does not parse; ignored");
                return;
            }
        };
        let Ok(mut trust) = self.trust.lock() else { return };
        match trust.accept_package(package) {
            Ok(_) => {
                if let Err(error) = write_atomic(&self.data_dir.join("rootkeypackage.json"), text.as_bytes()) {
                    tracing::warn!(%error, "storing the root key package failed");
                }
            }
            Err(error) => tracing::warn!(%error, url, "the root key package is not signed by a trusted root; ignored"),
        }
    }

    fn run_job(&self, job: &Job, cancel: &AtomicBool) -> Result<Outcome, InstallResult> {
        let service = &job.service;
        let workflow_id = job.workflow.id.clone().unwrap_or_default();
        let manifest_text = service
            .update_manifest_text()
            .ok_or_else(|| InstallResult::failure(ExtendedResultCode::NO_MANIFEST))?
            .to_owned();
        self.refresh_root_key_package(service.root_key_package_url.as_deref(), cancel);
        {
            let trust = self.trust.lock().map_err(|_| InstallResult::failure(erc::ROOT_KEY_PACKAGE))?;
            trust
                .verify_update_manifest(Some(&manifest_text), service.update_manifest_signature.as_deref())
                .map_err(|e| InstallResult::failure(e.extended_result_code()).with_details(e.to_string()))?;
        }
        let sandbox = self.prepare_sandbox(&workflow_id)?;
        let file_url = |id: &str| service.file_url(id).map(str::to_owned);
        let manifest = match UpdateManifest::parse(&manifest_text).map_err(manifest_failure)? {
            UpdateManifest::Full(full) => full,
            UpdateManifest::Detached(detached) => {
                let path =
                    self.fetch(&sandbox, &detached.detached_manifest_file_id, &detached.file, &file_url, cancel)?;
                read_full_manifest(&path)?
            }
            UpdateManifest::Legacy(_) => {
                return Err(InstallResult::failure(ExtendedResultCode::UNSUPPORTED_MANIFEST_VERSION));
            }
        };
        require_compatible(&manifest, &self.device_properties)?;
        let mut result = LastInstallResult::new(InstallResult::success(ResultCode::APPLY_SUCCESS));
        for (index, step) in manifest.steps.iter().enumerate() {
            if cancel.load(Ordering::SeqCst) {
                return Ok(Outcome::Cancelled);
            }
            let step_result = match step {
                Step::Inline(inline) => {
                    self.run_inline(&workflow_id, &sandbox, &manifest, inline, &file_url, cancel)?
                }
                Step::Reference(reference) => {
                    let entry = manifest
                        .files
                        .get(&reference.detached_manifest_file_id)
                        .ok_or_else(|| InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS))?;
                    let path = self.fetch(&sandbox, &reference.detached_manifest_file_id, entry, &file_url, cancel)?;
                    let child = read_full_manifest(&path)?;
                    let mut last = InstallResult::success(ResultCode::APPLY_SUCCESS);
                    for child_step in &child.steps {
                        match child_step {
                            Step::Inline(inline) => {
                                last = self.run_inline(&workflow_id, &sandbox, &child, inline, &file_url, cancel)?;
                            }
                            Step::Reference(_) => return Err(InstallResult::failure(ExtendedResultCode::BAD_MANIFEST)),
                        }
                    }
                    last
                }
            };
            if let Some(reboot) = restart_kind(step_result.result_code) {
                return Ok(Outcome::RestartRequired { reboot });
            }
            if step_result.result_code == ResultCode::FAILURE_CANCELLED {
                return Ok(Outcome::Cancelled);
            }
            result = result.with_step(index, StepResult::from(step_result));
        }
        let _ = std::fs::remove_dir_all(&sandbox);
        Ok(Outcome::Succeeded { result, installed: manifest.update_id.clone() })
    }

    /// One inline step: files, then is-installed, install, apply. A failing result is `Err`.
    fn run_inline(
        &self,
        workflow_id: &str,
        sandbox: &Path,
        manifest: &FullManifest,
        step: &update_manifest::InlineStep,
        file_url: &dyn Fn(&str) -> Option<String>,
        cancel: &AtomicBool,
    ) -> Result<InstallResult, InstallResult> {
        let handler = self.handlers.get(&step.handler).ok_or_else(|| {
            InstallResult::failure(erc::UNKNOWN_HANDLER).with_details(format!("no handler for {:?}", step.handler))
        })?;
        let properties = step.handler_properties.clone().unwrap_or_default();
        let context = |files: Vec<PathBuf>| StepContext {
            workflow_id,
            sandbox,
            handler_properties: &properties,
            files,
            installed_criteria: step.installed_criteria(),
            data_dir: &self.data_dir,
            cancel,
        };
        // Handlers whose is-installed needs no payload answer before anything is downloaded.
        let mut files = Vec::new();
        for id in &step.files {
            let entry = manifest.files.get(id).ok_or_else(|| {
                InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS).with_details(format!("no file {id}"))
            })?;
            files.push(self.fetch(sandbox, id, entry, file_url, cancel)?);
        }
        let context = context(files);
        run_handler(handler.as_ref(), &context)
    }

    /// Downloads a manifest file into the sandbox (or finds it there, complete and verified).
    fn fetch(
        &self,
        sandbox: &Path,
        id: &str,
        entry: &update_manifest::FileEntry,
        file_url: &dyn Fn(&str) -> Option<String>,
        cancel: &AtomicBool,
    ) -> Result<PathBuf, InstallResult> {
        if !update_manifest::is_plain_file_name(&entry.file_name) {
            return Err(InstallResult::failure(ExtendedResultCode::BAD_FILES_OR_FILE_URLS)
                .with_details(format!("file name {:?} is not a plain name", entry.file_name)));
        }
        let url = file_url(id).ok_or_else(|| {
            InstallResult::failure(erc::FILE_ENTRY).with_details(format!("no URL for file {id} ({})", entry.file_name))
        })?;
        let expected =
            entry.sha256().and_then(|sha| ExpectedFile::from_base64_sha256(entry.size_in_bytes, sha)).ok_or_else(
                || InstallResult::failure(erc::FILE_ENTRY).with_details(format!("file {id} has no valid sha256")),
            )?;
        let destination = sandbox.join(&entry.file_name);
        let mut progress = |_done: u64, _total: u64| {};
        self.downloader
            .download(&url, &destination, &expected, cancel, &mut progress)
            .map_err(|e| InstallResult::failure(e.extended_result_code()).with_details(e.to_string()))?;
        Ok(destination)
    }

    /// The workflow's sandbox; other workflows' sandboxes are removed (replaced deployments).
    fn prepare_sandbox(&self, workflow_id: &str) -> Result<PathBuf, InstallResult> {
        let name: String =
            workflow_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let downloads = self.downloads_dir();
        if let Ok(entries) = std::fs::read_dir(&downloads) {
            for entry in entries.flatten() {
                if entry.file_name().to_str() != Some(name.as_str()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let sandbox = downloads.join(name);
        std::fs::create_dir_all(&sandbox)
            .map_err(|e| InstallResult::failure(erc::SANDBOX).with_details(format!("{}: {e}", sandbox.display())))?;
        Ok(sandbox)
    }
}

impl JobRunner for Executor {
    fn run(&self, job: &Job, cancel: &AtomicBool) -> Outcome {
        match self.run_job(job, cancel) {
            Ok(outcome) => {
                if let Outcome::Succeeded { installed, .. } = &outcome {
                    tracing::info!(update = %installed, "the deployment succeeded");
                }
                outcome
            }
            Err(_) if cancel.load(Ordering::SeqCst) => Outcome::Cancelled,
            Err(failure) => {
                tracing::warn!(
                    code = failure.result_code.0,
                    erc = %failure.extended_result_codes,
                    details = failure.result_details.as_deref().unwrap_or(""),
                    "the deployment failed"
                );
                Outcome::Failed(LastInstallResult::new(failure))
            }
        }
    }
}

/// is-installed, install, apply.
fn run_handler(handler: &dyn StepHandler, context: &StepContext<'_>) -> Result<InstallResult, InstallResult> {
    let installed = handler.is_installed(context);
    if installed.result_code == ResultCode::IS_INSTALLED_INSTALLED {
        return Ok(InstallResult::success(ResultCode::INSTALL_SKIPPED_UPDATE_ALREADY_INSTALLED));
    }
    if !installed.result_code.is_success() {
        return Err(installed);
    }
    let install = handler.install(context);
    if !install.result_code.is_success() {
        return Err(install);
    }
    if restart_kind(install.result_code).is_some() {
        return Ok(install);
    }
    let apply = handler.apply(context);
    if !apply.result_code.is_success() {
        return Err(apply);
    }
    Ok(apply)
}

/// `Some(true)` for reboot codes, `Some(false)` for agent-restart codes.
pub fn restart_kind(code: ResultCode) -> Option<bool> {
    if code.requires_reboot() {
        Some(true)
    } else if code.requires_agent_restart() {
        Some(false)
    } else {
        None
    }
}

/// Refuses a manifest whose compatibility sets do not match `device_properties`.
pub fn require_compatible(
    manifest: &FullManifest,
    device_properties: &IndexMap<String, String>,
) -> Result<(), InstallResult> {
    if manifest.is_compatible_with(device_properties) {
        return Ok(());
    }
    Err(InstallResult::failure(erc::INCOMPATIBLE).with_details(format!(
        "the update's compatibility {:?} does not match this device's {:?}",
        manifest.compatibility, device_properties
    )))
}

/// The failure to report for a manifest that cannot be used.
pub fn manifest_failure(error: update_manifest::ManifestError) -> InstallResult {
    InstallResult::failure(error.extended_result_code).with_details(error.to_string())
}

/// Reads a detached or child manifest file (verified by its hash in the signed manifest).
pub fn read_full_manifest(path: &Path) -> Result<FullManifest, InstallResult> {
    let bytes = std::fs::read(path).map_err(|e| {
        InstallResult::failure(ExtendedResultCode::BAD_DETACHED_MANIFEST_JSON_FILE).with_details(e.to_string())
    })?;
    let text = update_manifest::read_manifest_file(&bytes).map_err(manifest_failure)?;
    match UpdateManifest::parse(&text).map_err(manifest_failure)? {
        UpdateManifest::Full(full) => Ok(full),
        _ => Err(InstallResult::failure(ExtendedResultCode::BAD_DETACHED_MANIFEST)),
    }
}
