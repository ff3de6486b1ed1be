//! `microsoft/apt:1`: installs and removes Debian packages with `apt-get` (protocol reference
//! §7.3).
//!
//! The step has exactly one file, the **APT manifest** (a UTF-8 BOM is accepted):
//!
//! ```json
//! {"name": "contoso-agent-update", "version": "1.0.2",
//!  "packages": [{"name": "contoso-agent", "version": "1.0.2-1"}, {"name": "old-tool-"}],
//!  "agentRestartRequired": false}
//! ```
//!
//! `name` and `version` are required strings, `packages` a non-empty array; a package `name`
//! ending in `-` is **removed**. Package names must look like Debian package names (ASCII
//! letters, digits, `+ . - :`, starting with a letter or digit) and versions like Debian
//! versions (ASCII letters, digits, `. + ~ : - _`), so nothing from the manifest can pass for an
//! `apt-get` option. `installedCriteria` is **required** (convention `<name>-<version>`).
//!
//! - `is_installed`: 900 iff `<data_dir>/installedcriteria` (a JSON array of
//!   `{"installedCriteria": "...", "state": "installed"}`) holds the criteria with state
//!   `installed`, else 901 (also when the file is missing or not such an array, as the official
//!   agent).
//! - `install`: `apt-get update`, then
//!   `apt-get install -y --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold <name>[=<version>] ...`
//!   for the packages to install, then `apt-get remove -y <name> ...` for those to remove
//!   (version ignored), each with `DEBIAN_FRONTEND=noninteractive`, in the sandbox, output
//!   appended to `<sandbox>/action_install.log`. 600.
//! - `apply`: appends the criteria to `<data_dir>/installedcriteria` (unless already there;
//!   written atomically; a file that is not such an array is started afresh, as the official
//!   agent does); 707 (agent restart) when the manifest says `agentRestartRequired: true`,
//!   else 700.
//! - `cancel`: kills the running `apt-get` of the workflow (its process group), if any; 800.
//!
//! The agent must be allowed to run `apt-get` (root): there is no `adu-shell`. The command is
//! [`super::BuiltinOptions::apt_command`] (default `apt-get` on `PATH`).
//!
//! # Extended result codes (facility 3, component 2 "apt": `0x302xxxxx`)
//!
//! | code | meaning |
//! |---|---|
//! | [`INITIALIZATION_FAILURE`] `0x30200001` | the manifest is not JSON (official code) |
//! | [`INVALID_PACKAGE_DATA`] `0x30200002` | the manifest is JSON but not a valid APT manifest (official) |
//! | [`WRONG_FILE_COUNT`] `0x30200004` | the step does not have exactly one file (official) |
//! | [`GET_FILE_ENTITY_FAILURE`] `0x30200005` | the manifest file cannot be read (official code) |
//! | [`INSTALLED_CRITERIA_PERSIST_FAILURE`] `0x30200006` | `installedcriteria` cannot be read or written (official) |
//! | [`MISSING_INSTALLED_CRITERIA`] `0x30200007` | no `installedCriteria` (official) |
//! | [`TIMED_OUT`] `0x30200F01` | duhub: `apt-get` killed after the process timeout |
//! | [`SPAWN_FAILED`] `0x30200F02` | duhub: `apt-get` could not be started |
//! | [`INSTALLED_CRITERIA_UNREADABLE`] `0x30200F04` | duhub: `is_installed` cannot read `installedcriteria` (other than "missing") |
//! | [`UPDATE_EXIT_BASE`] `0x30201000 + e` | duhub: `apt-get update` exited with `e != 0` |
//! | [`INSTALL_EXIT_BASE`] `0x30202000 + e` | duhub: `apt-get install` exited with `e != 0` |
//! | [`REMOVE_EXIT_BASE`] `0x30203000 + e` | duhub: `apt-get remove` exited with `e != 0` |
//!
//! (`e` is `128 + signal` when `apt-get` was killed by a signal.) The official handler reports
//! every `apt-get` failure as `0x30200100` (download) or `0x30200200` (install), without the
//! exit code.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::process::{self, Exit, Invocation, Running};
use super::{StepContext, StepHandler};
use crate::runtime::write_atomic;

/// Official: the manifest is not JSON (`ADUC_ERC_APT_HANDLER_INITIALIZATION_FAILURE`).
pub const INITIALIZATION_FAILURE: ExtendedResultCode = ExtendedResultCode(0x3020_0001);
/// Official: the manifest is not a valid APT manifest (`ADUC_ERC_APT_HANDLER_INVALID_PACKAGE_DATA`).
pub const INVALID_PACKAGE_DATA: ExtendedResultCode = ExtendedResultCode(0x3020_0002);
/// Official: the step does not have exactly one file
/// (`ADUC_ERC_APT_HANDLER_PACKAGE_PREPARE_FAILURE_WRONG_FILECOUNT`).
pub const WRONG_FILE_COUNT: ExtendedResultCode = ExtendedResultCode(0x3020_0004);
/// Official code (`ADUC_ERC_APT_HANDLER_GET_FILEENTITY_FAILURE`): the manifest file cannot be read.
pub const GET_FILE_ENTITY_FAILURE: ExtendedResultCode = ExtendedResultCode(0x3020_0005);
/// Official: the installed criteria could not be recorded
/// (`ADUC_ERC_APT_HANDLER_INSTALLCRITERIA_PERSIST_FAILURE`).
pub const INSTALLED_CRITERIA_PERSIST_FAILURE: ExtendedResultCode = ExtendedResultCode(0x3020_0006);
/// Official: the step has no installed criteria (`ADUC_ERC_APT_HANDLER_MISSING_INSTALLED_CRITERIA`).
pub const MISSING_INSTALLED_CRITERIA: ExtendedResultCode = ExtendedResultCode(0x3020_0007);
/// duhub: `apt-get` ran longer than the process timeout and was killed.
pub const TIMED_OUT: ExtendedResultCode = ExtendedResultCode(0x3020_0F01);
/// duhub: `apt-get` could not be started (not found, not executable).
pub const SPAWN_FAILED: ExtendedResultCode = ExtendedResultCode(0x3020_0F02);
/// duhub: `is_installed` could not read `installedcriteria` (it exists but reading failed).
pub const INSTALLED_CRITERIA_UNREADABLE: ExtendedResultCode = ExtendedResultCode(0x3020_0F04);
/// duhub: base of `apt-get update` exit codes: `0x30201000 + exit code`.
pub const UPDATE_EXIT_BASE: ExtendedResultCode = ExtendedResultCode(0x3020_1000);
/// duhub: base of `apt-get install` exit codes: `0x30202000 + exit code`.
pub const INSTALL_EXIT_BASE: ExtendedResultCode = ExtendedResultCode(0x3020_2000);
/// duhub: base of `apt-get remove` exit codes: `0x30203000 + exit code`.
pub const REMOVE_EXIT_BASE: ExtendedResultCode = ExtendedResultCode(0x3020_3000);

/// The name of the installed-criteria record file in the agent's data folder.
pub const INSTALLED_CRITERIA_FILE: &str = "installedcriteria";

/// The environment every `apt-get` runs with (on top of the agent's).
const APT_ENV: &[(&str, &str)] = &[("DEBIAN_FRONTEND", "noninteractive")];

/// The `microsoft/apt:1` handler.
#[derive(Debug)]
pub struct AptHandler {
    apt_get: PathBuf,
    timeout: Option<Duration>,
    running: Running,
}

/// An APT manifest (the step's file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptManifest {
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: String,
    /// Packages to install, as `apt-get install` arguments (`<name>` or `<name>=<version>`).
    pub install: Vec<String>,
    /// Packages to remove (names without the trailing `-`).
    pub remove: Vec<String>,
    /// `agentRestartRequired`.
    pub agent_restart_required: bool,
}

#[derive(Deserialize)]
struct RawManifest {
    name: Option<String>,
    version: Option<String>,
    packages: Option<Vec<RawPackage>>,
    #[serde(rename = "agentRestartRequired", default)]
    agent_restart_required: bool,
}

#[derive(Deserialize)]
struct RawPackage {
    name: Option<String>,
    version: Option<String>,
}

impl AptManifest {
    /// Parses a manifest (a leading UTF-8 BOM is skipped). Errors are failures with
    /// [`INITIALIZATION_FAILURE`] (not JSON) or [`INVALID_PACKAGE_DATA`].
    pub fn parse(bytes: &[u8]) -> Result<Self, InstallResult> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let invalid = |why: String| InstallResult::failure(INVALID_PACKAGE_DATA).with_details(why);
        let value: Value = serde_json::from_slice(bytes).map_err(|error| {
            InstallResult::failure(INITIALIZATION_FAILURE)
                .with_details(format!("the APT manifest is not JSON: {error}"))
        })?;
        let raw: RawManifest =
            serde_json::from_value(value).map_err(|error| invalid(format!("not an APT manifest: {error}")))?;
        let name = raw.name.filter(|n| !n.is_empty()).ok_or_else(|| invalid("the manifest has no name".into()))?;
        let version =
            raw.version.filter(|v| !v.is_empty()).ok_or_else(|| invalid("the manifest has no version".into()))?;
        let packages = raw.packages.filter(|p| !p.is_empty()).ok_or_else(|| invalid("no packages".into()))?;
        let mut install = Vec::new();
        let mut remove = Vec::new();
        for package in packages {
            let name = package.name.unwrap_or_default();
            let version = package.version.filter(|v| !v.is_empty());
            if let Some(removed) = name.strip_suffix('-') {
                if !is_package_name(removed) {
                    return Err(invalid(format!("bad package name {name:?}")));
                }
                remove.push(removed.to_owned());
                continue;
            }
            if !is_package_name(&name) {
                return Err(invalid(format!("bad package name {name:?}")));
            }
            match version {
                Some(version) if is_package_version(&version) => install.push(format!("{name}={version}")),
                Some(version) => return Err(invalid(format!("bad version {version:?} of {name}"))),
                None => install.push(name),
            }
        }
        Ok(Self { name, version, install, remove, agent_restart_required: raw.agent_restart_required })
    }
}

/// A Debian package name, optionally with `:arch`.
fn is_package_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | ':'))
}

/// A Debian version.
fn is_package_version(version: &str) -> bool {
    version.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-' | '_'))
}

/// One `apt-get` run: its arguments and the base of its exit-code failures.
struct AptRun {
    args: Vec<OsString>,
    exit_base: ExtendedResultCode,
}

impl AptHandler {
    /// A handler running `apt_get` (e.g. `apt-get`, looked up on `PATH`), killed after `timeout`
    /// (if any).
    pub fn new(apt_get: PathBuf, timeout: Option<Duration>) -> Self {
        Self { apt_get, timeout, running: Running::default() }
    }

    fn criteria<'c>(ctx: &'c StepContext<'_>) -> Result<&'c str, InstallResult> {
        ctx.effective_installed_criteria().ok_or_else(|| {
            InstallResult::failure(MISSING_INSTALLED_CRITERIA).with_details("the step has no installedCriteria")
        })
    }

    fn manifest(ctx: &StepContext<'_>) -> Result<AptManifest, InstallResult> {
        let [file] = ctx.files.as_slice() else {
            return Err(InstallResult::failure(WRONG_FILE_COUNT)
                .with_details(format!("an apt step has one file (the APT manifest), not {}", ctx.files.len())));
        };
        let bytes = std::fs::read(file).map_err(|error| {
            InstallResult::failure(GET_FILE_ENTITY_FAILURE).with_details(format!("reading {}: {error}", file.display()))
        })?;
        AptManifest::parse(&bytes)
    }

    fn apt_get(&self, ctx: &StepContext<'_>, run: AptRun) -> Result<(), InstallResult> {
        let command = format!("apt-get {}", run.args.first().and_then(|a| a.to_str()).unwrap_or_default());
        let exit = Invocation {
            program: &self.apt_get,
            args: run.args,
            env: APT_ENV,
            work_folder: ctx.sandbox,
            log_file: ctx.sandbox.join("action_install.log"),
            timeout: self.timeout,
            cancel: ctx.cancel,
            workflow_id: Some((ctx.workflow_id, &self.running)),
        }
        .run();
        match exit {
            Exit::Code(0) => Ok(()),
            Exit::Code(code) => {
                Err(InstallResult::failure(ExtendedResultCode(run.exit_base.0.wrapping_add(code.cast_unsigned())))
                    .with_details(format!("{command} exited with code {code}")))
            }
            Exit::Cancelled => Err(process::cancelled()),
            Exit::TimedOut => {
                Err(InstallResult::failure(TIMED_OUT).with_details(format!("{command} timed out and was killed")))
            }
            Exit::SpawnFailed(error) => Err(InstallResult::failure(SPAWN_FAILED)
                .with_details(format!("cannot run {}: {error}", self.apt_get.display()))),
        }
    }

    fn try_install(&self, ctx: &StepContext<'_>) -> Result<InstallResult, InstallResult> {
        Self::criteria(ctx)?;
        let manifest = Self::manifest(ctx)?;
        let mut runs = vec![AptRun { args: vec!["update".into()], exit_base: UPDATE_EXIT_BASE }];
        if !manifest.install.is_empty() {
            let mut args: Vec<OsString> = ["install", "-y", "--allow-downgrades"].map(OsString::from).into();
            for option in ["Dpkg::Options::=--force-confdef", "Dpkg::Options::=--force-confold"] {
                args.push("-o".into());
                args.push(option.into());
            }
            args.extend(manifest.install.iter().map(OsString::from));
            runs.push(AptRun { args, exit_base: INSTALL_EXIT_BASE });
        }
        if !manifest.remove.is_empty() {
            let mut args: Vec<OsString> = ["remove", "-y"].map(OsString::from).into();
            args.extend(manifest.remove.iter().map(OsString::from));
            runs.push(AptRun { args, exit_base: REMOVE_EXIT_BASE });
        }
        for run in runs {
            self.apt_get(ctx, run)?;
        }
        Ok(InstallResult::success(ResultCode::INSTALL_SUCCESS)
            .with_details(format!("{} {} installed", manifest.name, manifest.version)))
    }

    fn try_apply(ctx: &StepContext<'_>) -> Result<InstallResult, InstallResult> {
        let criteria = Self::criteria(ctx)?;
        let manifest = Self::manifest(ctx)?;
        let file = ctx.data_dir.join(INSTALLED_CRITERIA_FILE);
        record_installed(&file, criteria).map_err(|error| {
            InstallResult::failure(INSTALLED_CRITERIA_PERSIST_FAILURE)
                .with_details(format!("recording {criteria:?} in {}: {error}", file.display()))
        })?;
        Ok(if manifest.agent_restart_required {
            InstallResult::success(ResultCode::APPLY_REQUIRED_IMMEDIATE_AGENT_RESTART)
                .with_details("the update requires an agent restart")
        } else {
            InstallResult::success(ResultCode::APPLY_SUCCESS)
        })
    }

    fn try_is_installed(ctx: &StepContext<'_>) -> Result<InstallResult, InstallResult> {
        let criteria = Self::criteria(ctx)?;
        let file = ctx.data_dir.join(INSTALLED_CRITERIA_FILE);
        let records = read_records(&file).map_err(|error| {
            InstallResult::failure(INSTALLED_CRITERIA_UNREADABLE).with_details(format!("{}: {error}", file.display()))
        })?;
        Ok(if records.iter().any(|record| is_installed_record(record, criteria)) {
            InstallResult::success(ResultCode::IS_INSTALLED_INSTALLED)
        } else {
            InstallResult::success(ResultCode::IS_INSTALLED_NOT_INSTALLED)
        })
    }
}

/// The records of an `installedcriteria` file: empty when it is missing or not a JSON array.
fn read_records(file: &Path) -> io::Result<Vec<Value>> {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Array(records)) => Ok(records),
            _ => {
                tracing::warn!(file = %file.display(), "installedcriteria is not a JSON array; taken as empty");
                Ok(Vec::new())
            }
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

fn is_installed_record(record: &Value, criteria: &str) -> bool {
    record.get("installedCriteria").and_then(Value::as_str) == Some(criteria)
        && record.get("state").and_then(Value::as_str) == Some("installed")
}

/// Appends `{"installedCriteria": criteria, "state": "installed"}` to `file` (atomically),
/// unless it is there already.
fn record_installed(file: &Path, criteria: &str) -> io::Result<()> {
    let mut records = read_records(file)?;
    if records.iter().any(|record| is_installed_record(record, criteria)) {
        return Ok(());
    }
    records.push(json!({"installedCriteria": criteria, "state": "installed"}));
    let bytes = serde_json::to_vec_pretty(&records).map_err(io::Error::other)?;
    write_atomic(file, &bytes)
}

impl StepHandler for AptHandler {
    fn is_installed(&self, ctx: &StepContext<'_>) -> InstallResult {
        Self::try_is_installed(ctx).unwrap_or_else(|failure| failure)
    }

    fn install(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.try_install(ctx).unwrap_or_else(|failure| failure)
    }

    fn apply(&self, ctx: &StepContext<'_>) -> InstallResult {
        Self::try_apply(ctx).unwrap_or_else(|failure| failure)
    }

    fn cancel(&self, ctx: &StepContext<'_>) -> InstallResult {
        let killed = self.running.cancel(ctx.workflow_id);
        let details = if killed { "the running apt-get was killed" } else { "no apt-get was running" };
        InstallResult::success(ResultCode::CANCEL_SUCCESS).with_details(details)
    }
}
