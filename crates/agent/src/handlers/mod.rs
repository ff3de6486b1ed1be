//! Step handlers: what installs the content of one step of an update, behind one trait.
//!
//! The contract follows the official content-handler contract (protocol reference §7.1): a
//! handler answers `IsInstalled`, `Install`, `Apply` and `Cancel` (plus `Download`, `Backup`
//! and `Restore`, which have defaults) with an [`InstallResult`]: success iff the result code
//! is positive, otherwise an extended result code says why. The expected codes are:
//!
//! | call | success codes |
//! |---|---|
//! | [`StepHandler::is_installed`] | 900 installed, 901 not installed |
//! | [`StepHandler::download`] | 500, 503 (already installed) |
//! | [`StepHandler::backup`] | 1000, 1001 unsupported |
//! | [`StepHandler::install`] | 600, 603, 605–608 (reboot / agent restart) |
//! | [`StepHandler::apply`] | 700, 705–708 |
//! | [`StepHandler::cancel`] | 800, 801 unable to cancel |
//! | [`StepHandler::restore`] | 1100, 1101 unsupported, 1105–1108 |
//!
//! **The runtime downloads** the step's files into the workflow sandbox (size and SHA-256
//! verified, see [`crate::download`]) before it calls anything but `is_installed`; handlers never
//! touch the network. Every call is **blocking**; the runtime runs it on a worker thread and
//! cancels through [`StepContext::cancel`] (checked by the handlers while they wait for a
//! process) and/or [`StepHandler::cancel`] from another thread.
//!
//! Built in ([`Registry::with_builtins`]):
//!
//! - [`SCRIPT_HANDLER_ID`] (`microsoft/script:1`, [`script`]): the official script protocol;
//! - [`APT_HANDLER_ID`] (`microsoft/apt:1`, [`apt`]): Debian packages from an APT manifest, with
//!   `apt-get` ([`BuiltinOptions::apt_command`]);
//! - [`SWUPDATE_HANDLER_ID`] (`microsoft/swupdate:2`, [`swupdate`]): the script protocol plus a
//!   `.swu` image, the script running `swupdate`;
//! - [`SIMULATOR_HANDLER_ID`] (`microsoft/simulator:1`, [`simulator`]): canned results from a
//!   `du-simulator-data.json`, registered only when [`BuiltinOptions::simulator_data_file`] is set;
//! - any number of **external handlers** ([`Registry::register_external`], [`external`]): an
//!   executable per handler id, called with a small command-line protocol described in
//!   `crates/agent/HANDLERS.md`.
//!
//! The steps handler (`microsoft/steps:1`) is not a step handler here: the executor runs a
//! manifest's steps itself. Other handlers can be added with [`Registry::register`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use duhub_proto::result::{InstallResult, ResultCode};
use serde_json::Value;

pub mod apt;
pub mod external;
mod process;
pub mod script;
pub mod simulator;
pub mod swupdate;

pub use apt::AptHandler;
pub use external::ExternalHandler;
pub use script::ScriptHandler;
pub use simulator::SimulatorHandler;
pub use swupdate::SwUpdateHandler;

/// Handler id of the built-in script handler.
pub const SCRIPT_HANDLER_ID: &str = "microsoft/script:1";
/// Handler id of the built-in APT handler.
pub const APT_HANDLER_ID: &str = "microsoft/apt:1";
/// Handler id of the built-in swupdate (v2) handler.
pub const SWUPDATE_HANDLER_ID: &str = "microsoft/swupdate:2";
/// Handler id of the built-in simulator handler.
pub const SIMULATOR_HANDLER_ID: &str = "microsoft/simulator:1";

/// Everything a handler knows about the step it works on.
#[derive(Debug, Clone)]
pub struct StepContext<'a> {
    /// The workflow id (`workflow.id` of the deployment); also keys running processes for
    /// [`StepHandler::cancel`].
    pub workflow_id: &'a str,
    /// The workflow sandbox (work folder). The step's files are already downloaded and verified
    /// here under their `fileName` when any call but `is_installed` is made; handlers may write
    /// their own files (result files, logs) here.
    pub sandbox: &'a Path,
    /// The step's `handlerProperties` from the update manifest.
    pub handler_properties: &'a serde_json::Map<String, Value>,
    /// Full paths of the step's files (in the sandbox), in the step's order.
    pub files: Vec<PathBuf>,
    /// The step's installed criteria (`handlerProperties.installedCriteria` for v4/v5
    /// manifests). Handlers fall back to `handler_properties["installedCriteria"]` when `None`.
    pub installed_criteria: Option<&'a str>,
    /// The agent's state folder (e.g. `/var/lib/adu`), for handlers that keep records such as
    /// installed criteria.
    pub data_dir: &'a Path,
    /// Cooperative cancellation: when set, a handler stops as soon as it can (a running process
    /// is killed) and answers [`ResultCode::FAILURE_CANCELLED`].
    pub cancel: &'a AtomicBool,
}

impl StepContext<'_> {
    /// The installed criteria: [`StepContext::installed_criteria`], else the
    /// `installedCriteria` handler property, if it is a non-empty string.
    pub fn effective_installed_criteria(&self) -> Option<&str> {
        self.installed_criteria
            .or_else(|| self.handler_properties.get("installedCriteria").and_then(Value::as_str))
            .filter(|criteria| !criteria.is_empty())
    }
}

/// A step handler: installs the content of one step. See the module docs for the codes.
///
/// Implementations must be safe to call from several threads at once (a `cancel` arrives while
/// an `install` runs).
pub trait StepHandler: Send + Sync {
    /// Whether the step's update is already installed: 900 yes, 901 no, or a failure.
    fn is_installed(&self, ctx: &StepContext<'_>) -> InstallResult;

    /// Called after the runtime downloaded and verified every file of the step. The default
    /// answers 500 (download succeeded); the simulator answers its canned result.
    fn download(&self, ctx: &StepContext<'_>) -> InstallResult {
        let _ = ctx;
        InstallResult::success(ResultCode::DOWNLOAD_SUCCESS)
    }

    /// Backs up what `install` will change. The default answers 1001 (unsupported, a success).
    fn backup(&self, ctx: &StepContext<'_>) -> InstallResult {
        let _ = ctx;
        InstallResult::success(ResultCode::BACKUP_UNSUPPORTED)
    }

    /// Installs the step: 600 (or 603, 605–608) or a failure.
    fn install(&self, ctx: &StepContext<'_>) -> InstallResult;

    /// Applies (activates) the installed step: 700 (or 705–708) or a failure.
    fn apply(&self, ctx: &StepContext<'_>) -> InstallResult;

    /// Cancels whatever the handler runs for `ctx.workflow_id`: 800 or 801. Called from another
    /// thread than the one running the step.
    fn cancel(&self, ctx: &StepContext<'_>) -> InstallResult;

    /// Restores the backup after a failed install or apply. The default answers 1101
    /// (unsupported, a success).
    fn restore(&self, ctx: &StepContext<'_>) -> InstallResult {
        let _ = ctx;
        InstallResult::success(ResultCode::RESTORE_UNSUPPORTED)
    }
}

/// Options of the built-in handlers.
#[derive(Debug, Clone, Default)]
pub struct BuiltinOptions {
    /// The simulator's `du-simulator-data.json`; the simulator is registered only when set.
    pub simulator_data_file: Option<PathBuf>,
    /// Longest a script, `apt-get` or external handler process may run before it is killed (and
    /// the call fails); `None`: no limit, as the official agent.
    pub process_timeout: Option<Duration>,
    /// The `apt-get` the APT handler runs; `None`: `apt-get`, looked up on `PATH`.
    pub apt_command: Option<PathBuf>,
    /// Options for every swupdate:2 script (the official `swupdate-handler-config.json`).
    pub swupdate_config_file: Option<PathBuf>,
}

/// The step handlers the agent knows, by handler id (the step's `handler`, e.g.
/// `microsoft/script:1`; matched exactly).
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn StepHandler>>,
    process_timeout: Option<Duration>,
}

impl Registry {
    /// A registry with `microsoft/script:1`, `microsoft/apt:1`, `microsoft/swupdate:2` and, if
    /// configured, `microsoft/simulator:1`.
    pub fn with_builtins(options: BuiltinOptions) -> Self {
        let timeout = options.process_timeout;
        let mut registry = Self { handlers: BTreeMap::new(), process_timeout: timeout };
        registry.register(SCRIPT_HANDLER_ID, Arc::new(ScriptHandler::new(timeout)));
        let apt_get = options.apt_command.unwrap_or_else(|| PathBuf::from("apt-get"));
        registry.register(APT_HANDLER_ID, Arc::new(AptHandler::new(apt_get, timeout)));
        let swupdate = SwUpdateHandler::new(timeout).with_config_file(options.swupdate_config_file);
        registry.register(SWUPDATE_HANDLER_ID, Arc::new(swupdate));
        if let Some(data_file) = options.simulator_data_file {
            registry.register(SIMULATOR_HANDLER_ID, Arc::new(SimulatorHandler::new(data_file)));
        }
        registry
    }

    /// Registers (or replaces) the handler for `handler_id`.
    pub fn register(&mut self, handler_id: &str, handler: Arc<dyn StepHandler>) {
        self.handlers.insert(handler_id.to_owned(), handler);
    }

    /// Registers (or replaces) an external handler: `executable` is run with the protocol of
    /// [`external`] for every call on `handler_id`, with the registry's process timeout.
    pub fn register_external(&mut self, handler_id: &str, executable: PathBuf) {
        self.register(handler_id, Arc::new(ExternalHandler::new(executable, self.process_timeout)));
    }

    /// The handler for `handler_id`, if any.
    pub fn get(&self, handler_id: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.get(handler_id).cloned()
    }

    /// The registered handler ids, sorted.
    pub fn handler_ids(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
