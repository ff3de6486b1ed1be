//! `microsoft/script:1`: runs the step's script with the official argument protocol
//! (protocol reference §7.4).
//!
//! handlerProperties: `scriptFileName` (required, the `fileName` of one of the step's files),
//! `arguments` (a string split on whitespace), `installedCriteria` (optional), `apiVersion`
//! (`"1.1"` for the new form, anything else is 1.0).
//!
//! The script is run as `<sandbox>/<scriptFileName>` with, in order:
//!
//! 1. `--action-<verb>` (apiVersion 1.0) or `--action <verb>` (1.1), verb `is-installed`,
//!    `install` or `apply`;
//! 2. the `arguments` tokens; component placeholders (`--component-id-val`,
//!    `--component-name-val`, `--component-manufacturer-val`, `--component-model-val`,
//!    `--component-version-val`, `--component-group-val`, and `--component-prop-val <p>`, which
//!    takes its name token with it) become `n/a`, since duhub has no component enumerator;
//! 3. `--work-folder <sandbox> --result-file <sandbox>/action_<verb>_aduc_result.json`, then
//!    `--installed-criteria <value>` when there is one.
//!
//! Exit code `e != 0` -> failure with ERC `0x30501000 + e` (`128 + signal` when killed by a
//! signal). Exit 0 -> the result file `{"resultCode","extendedResultCode","resultDetails"}` is
//! the result; a missing or unparsable file -> failure [`PARSE_RESULT_FILE`] (the official
//! `ADUC_ERC_SCRIPT_HANDLER_INSTALL_FAILURE_PARSE_RESULT_FILE`); a failing `resultCode` with ERC 0
//! -> [`ExtendedResultCode::SCRIPT_FAILURE_WITHOUT_ERC`] (`0x30500206`).
//!
//! The protocol machinery (finding and preparing the script, running it, reading the result
//! file) is shared with `microsoft/swupdate:2` ([`super::swupdate`]), which differs only in its
//! codes and its argv.
//!
//! # Differences from the official agent
//!
//! - The script runs **directly, as the user the agent runs as** — there is no `adu-shell`
//!   (which the official agent uses to run scripts as root). Run the agent as root, or give its
//!   user the rights the scripts need. The script is made executable (`chmod 0755`) first.
//! - Its stdout and stderr are appended to `<sandbox>/action_<verb>.log`; stdin is
//!   `/dev/null`; it runs in the sandbox, in its own process group.
//! - `download` does not run the script (as in 1.1.0, which only downloads files and asks
//!   `is-installed`; the runtime does both). `backup` and `restore` answer 1001 and 1101 without
//!   running it, as 1.1.0.
//! - `cancel` is best effort: it kills the process group of the script running for that
//!   workflow, if any, and answers 800 either way (1.1.0 only flags the workflow). A step whose
//!   [`StepContext::cancel`] flag is set is also killed, and answers
//!   [`ResultCode::FAILURE_CANCELLED`].
//! - An optional timeout ([`super::BuiltinOptions::process_timeout`]) kills a script that runs
//!   too long: failure [`TIMED_OUT`]. The official agent has none.

use std::ffi::OsString;
use std::path::{Component, Path};
use std::time::Duration;

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use serde_json::{Map, Value};

use super::process::{self, Exit, Invocation, ResultFile, Running};
use super::{StepContext, StepHandler};

/// Official: `scriptFileName` is missing from handlerProperties
/// (`ADUC_ERC_SCRIPT_HANDLER_MISSING_SCRIPTFILENAME_PROPERTY`).
pub const MISSING_SCRIPT_FILE_NAME_PROPERTY: ExtendedResultCode = ExtendedResultCode(0x3050_0005);
/// Official: the script file is not in the sandbox (`ADUC_ERC_SCRIPT_HANDLER_MISSING_PRIMARY_SCRIPT_FILE`);
/// also for a `scriptFileName` that is not a plain file name.
pub const MISSING_PRIMARY_SCRIPT_FILE: ExtendedResultCode = ExtendedResultCode(0x3050_0004);
/// Official: the script exited 0 but its result file is missing or unparsable
/// (`ADUC_ERC_SCRIPT_HANDLER_INSTALL_FAILURE_PARSE_RESULT_FILE`).
pub const PARSE_RESULT_FILE: ExtendedResultCode = ExtendedResultCode(0x3050_0205);
/// duhub: the script ran longer than the process timeout and was killed.
pub const TIMED_OUT: ExtendedResultCode = ExtendedResultCode(0x3050_0F01);
/// duhub: the script could not be started (not executable, bad interpreter line, ...).
pub const SPAWN_FAILED: ExtendedResultCode = ExtendedResultCode(0x3050_0F02);
/// duhub: the script could not be made executable, or a stale result file not removed.
pub const PREPARE_FAILED: ExtendedResultCode = ExtendedResultCode(0x3050_0F03);

/// Argument placeholders replaced by the selected component's value (`n/a` here).
const COMPONENT_PLACEHOLDERS: &[&str] = &[
    "--component-id-val",
    "--component-name-val",
    "--component-manufacturer-val",
    "--component-model-val",
    "--component-version-val",
    "--component-group-val",
];

/// The codes a handler speaking the script protocol reports for the failures the protocol itself
/// has (script:1 and swupdate:2 differ in these, and in their argv).
#[derive(Debug)]
pub(crate) struct Codes {
    /// `scriptFileName` is missing.
    pub(crate) missing_script_file_name: ExtendedResultCode,
    /// The script is not in the sandbox, or `scriptFileName` is not a plain file name.
    pub(crate) missing_script_file: ExtendedResultCode,
    /// Exit 0 but the result file is missing or unparsable.
    pub(crate) parse_result_file: ExtendedResultCode,
    /// The script reported a failing `resultCode` with extended result 0.
    pub(crate) failure_without_erc: ExtendedResultCode,
    /// The script ran longer than the process timeout.
    pub(crate) timed_out: ExtendedResultCode,
    /// The script could not be started.
    pub(crate) spawn_failed: ExtendedResultCode,
    /// The script could not be made executable, or a stale result file not removed.
    pub(crate) prepare_failed: ExtendedResultCode,
    /// Exit code `e != 0` gives `exit_code_base + e`.
    pub(crate) exit_code_base: ExtendedResultCode,
}

impl Codes {
    fn exit_code(&self, code: i32) -> ExtendedResultCode {
        ExtendedResultCode(self.exit_code_base.0.wrapping_add(code.cast_unsigned()))
    }
}

/// The codes of `microsoft/script:1`.
const SCRIPT_CODES: Codes = Codes {
    missing_script_file_name: MISSING_SCRIPT_FILE_NAME_PROPERTY,
    missing_script_file: MISSING_PRIMARY_SCRIPT_FILE,
    parse_result_file: PARSE_RESULT_FILE,
    failure_without_erc: ExtendedResultCode::SCRIPT_FAILURE_WITHOUT_ERC,
    timed_out: TIMED_OUT,
    spawn_failed: SPAWN_FAILED,
    prepare_failed: PREPARE_FAILED,
    exit_code_base: ExtendedResultCode::from_script_exit_code(0),
};

/// The files of one action of the script protocol.
pub(crate) struct ActionFiles<'a> {
    /// The verb (`is-installed`, `install`, `apply`).
    pub(crate) verb: &'a str,
    /// `<sandbox>/action_<verb>_aduc_result.json`.
    pub(crate) result_file: &'a Path,
}

/// Runs the step's script with the script protocol: what script:1 and swupdate:2 share — finding
/// and preparing the script, running it (cancel, timeout), and reading its result file.
#[derive(Debug)]
pub(crate) struct ScriptRunner {
    timeout: Option<Duration>,
    running: Running,
    codes: &'static Codes,
}

impl ScriptRunner {
    /// A runner reporting `codes`, killing scripts that run longer than `timeout` (if any).
    pub(crate) fn new(timeout: Option<Duration>, codes: &'static Codes) -> Self {
        Self { timeout, running: Running::default(), codes }
    }

    /// Runs the `verb` action: `args` builds the script's argv (after the program name) or
    /// refuses with a failure.
    pub(crate) fn run_action(
        &self,
        ctx: &StepContext<'_>,
        verb: &str,
        args: impl FnOnce(&ActionFiles<'_>) -> Result<Vec<OsString>, InstallResult>,
    ) -> InstallResult {
        let codes = self.codes;
        let properties = ctx.handler_properties;
        let Some(script_name) = properties.get("scriptFileName").and_then(Value::as_str).filter(|n| !n.is_empty())
        else {
            return InstallResult::failure(codes.missing_script_file_name)
                .with_details("handlerProperties.scriptFileName is missing");
        };
        if !is_plain_file_name(script_name) {
            return InstallResult::failure(codes.missing_script_file)
                .with_details(format!("scriptFileName {script_name:?} is not a plain file name"));
        }
        let script = ctx.sandbox.join(script_name);
        if !script.is_file() {
            return InstallResult::failure(codes.missing_script_file)
                .with_details(format!("script {} is not in the sandbox", script.display()));
        }
        let result_file = ctx.sandbox.join(format!("action_{verb}_aduc_result.json"));
        let args = match args(&ActionFiles { verb, result_file: &result_file }) {
            Ok(args) => args,
            Err(refused) => return refused,
        };
        if let Err(error) = make_executable(&script) {
            return InstallResult::failure(codes.prepare_failed)
                .with_details(format!("chmod {}: {error}", script.display()));
        }
        if let Err(error) = process::remove_stale(&result_file) {
            return InstallResult::failure(codes.prepare_failed)
                .with_details(format!("removing {}: {error}", result_file.display()));
        }
        let exit = Invocation {
            program: &script,
            args,
            env: &[],
            work_folder: ctx.sandbox,
            log_file: ctx.sandbox.join(format!("action_{verb}.log")),
            timeout: self.timeout,
            cancel: ctx.cancel,
            workflow_id: Some((ctx.workflow_id, &self.running)),
        }
        .run();
        match exit {
            Exit::Code(0) => match ResultFile::read(&result_file) {
                Some(result) => result.into_result(codes.failure_without_erc),
                None => InstallResult::failure(codes.parse_result_file)
                    .with_details(format!("{} is missing or not a result", result_file.display())),
            },
            Exit::Code(code) => InstallResult::failure(codes.exit_code(code))
                .with_details(format!("{script_name} --action {verb} exited with code {code}")),
            Exit::Cancelled => process::cancelled(),
            Exit::TimedOut => InstallResult::failure(codes.timed_out)
                .with_details(format!("{script_name} --action {verb} timed out and was killed")),
            Exit::SpawnFailed(error) => InstallResult::failure(codes.spawn_failed)
                .with_details(format!("cannot run {}: {error}", script.display())),
        }
    }

    /// Kills the script running for `ctx.workflow_id`, if any; answers 800 either way.
    pub(crate) fn cancel(&self, ctx: &StepContext<'_>) -> InstallResult {
        let killed = self.running.cancel(ctx.workflow_id);
        let details = if killed { "the running script was killed" } else { "no script was running" };
        InstallResult::success(ResultCode::CANCEL_SUCCESS).with_details(details)
    }
}

/// Options of swupdate:2 whose value is a file name in the sandbox.
const SWU_FILE_OPTIONS: &[&str] = &["--swu-file", "--image-file"];

/// The `microsoft/script:1` handler.
#[derive(Debug)]
pub struct ScriptHandler {
    runner: ScriptRunner,
}

impl Default for ScriptHandler {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ScriptHandler {
    /// A script handler killing scripts that run longer than `timeout` (if any).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self { runner: ScriptRunner::new(timeout, &SCRIPT_CODES) }
    }
}

impl ScriptProtocol for ScriptHandler {
    fn run_action(&self, ctx: &StepContext<'_>, verb: &str) -> InstallResult {
        self.runner.run_action(ctx, verb, |files| {
            Ok(script_arguments(
                ctx.handler_properties,
                files.verb,
                ctx.sandbox,
                files.result_file,
                ctx.effective_installed_criteria(),
            ))
        })
    }

    fn runner(&self) -> &ScriptRunner {
        &self.runner
    }
}

/// The step handlers that speak the script protocol (script:1 and swupdate:2): each builds
/// a verb's arguments and runs the script through its [`ScriptRunner`]; cancel kills it.
pub(crate) trait ScriptProtocol: Send + Sync {
    /// Runs the step's script for `verb` (`is-installed`, `install` or `apply`).
    fn run_action(&self, ctx: &StepContext<'_>, verb: &str) -> InstallResult;
    /// The runner, which knows the script running for a workflow.
    fn runner(&self) -> &ScriptRunner;
}

impl<T: ScriptProtocol> StepHandler for T {
    fn is_installed(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_action(ctx, "is-installed")
    }

    fn install(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_action(ctx, "install")
    }

    fn apply(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_action(ctx, "apply")
    }

    fn cancel(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.runner().cancel(ctx)
    }
}

/// The script:1 argv (after the program name), per the official protocol.
pub(crate) fn script_arguments(
    properties: &Map<String, Value>,
    verb: &str,
    sandbox: &Path,
    result_file: &Path,
    installed_criteria: Option<&str>,
) -> Vec<OsString> {
    let mut args = action_arguments(properties, verb);
    args.extend(argument_tokens(properties, None).unwrap_or_default());
    args.push("--work-folder".into());
    args.push(sandbox.into());
    args.push("--result-file".into());
    args.push(result_file.into());
    push_installed_criteria(&mut args, installed_criteria);
    args
}

/// `--action-<verb>` (apiVersion 1.0, the default) or `--action <verb>` (apiVersion `"1.1"`).
pub(crate) fn action_arguments(properties: &Map<String, Value>, verb: &str) -> Vec<OsString> {
    if properties.get("apiVersion").and_then(Value::as_str).map(str::trim) == Some("1.1") {
        vec!["--action".into(), verb.into()]
    } else {
        vec![format!("--action-{verb}").into()]
    }
}

/// The `arguments` property split on whitespace, component placeholders replaced by `n/a`.
///
/// With `swu_folder` (swupdate:2), `--swu-file <name>` and `--image-file <name>` take the next
/// token as a file name in that folder and pass its full path; a missing or not plain name is an
/// error (the message says why).
pub(crate) fn argument_tokens(
    properties: &Map<String, Value>,
    swu_folder: Option<&Path>,
) -> Result<Vec<OsString>, String> {
    let mut args: Vec<OsString> = Vec::new();
    let arguments = properties.get("arguments").and_then(Value::as_str).unwrap_or_default();
    let mut tokens = arguments.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == "--component-prop-val" {
            // The property name goes too; there is no component to read it from.
            let _name = tokens.next();
            args.push("n/a".into());
        } else if COMPONENT_PLACEHOLDERS.contains(&token) {
            args.push("n/a".into());
        } else if let Some(folder) = swu_folder.filter(|_| SWU_FILE_OPTIONS.contains(&token)) {
            let name = tokens.next().ok_or_else(|| format!("{token} in arguments has no file name"))?;
            if !is_plain_file_name(name) {
                return Err(format!("{token} {name:?}: not a plain file name"));
            }
            args.push(token.into());
            args.push(folder.join(name).into());
        } else {
            args.push(token.into());
        }
    }
    Ok(args)
}

/// Appends `--installed-criteria <value>` when there is one.
pub(crate) fn push_installed_criteria(args: &mut Vec<OsString>, installed_criteria: Option<&str>) {
    if let Some(criteria) = installed_criteria {
        args.push("--installed-criteria".into());
        args.push(criteria.into());
    }
}

/// Whether `name` names a file directly in a folder (no separators, not `.` or `..`).
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None)) && !name.contains('/')
}

fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}
