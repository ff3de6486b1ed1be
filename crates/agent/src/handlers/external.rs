//! External step handlers: an executable registered for a handler id, called once per
//! operation with a small, language-agnostic command line. `crates/agent/HANDLERS.md` is the
//! guide for handler authors; this is the reference.
//!
//! ```text
//! <exe> <verb> --work-folder <sandbox> --result-file <sandbox>/action_<verb>_result.json
//!       [--installed-criteria <value>]
//!       --handler-properties <sandbox>/action_<verb>_handler_properties.json
//!       -- [<file path> ...]
//! ```
//!
//! - `<verb>` is `is-installed`, `install`, `apply` or `cancel`;
//! - `--installed-criteria` is present when the step has installed criteria;
//! - the handler properties file holds the step's `handlerProperties` object as JSON;
//! - after `--` come the full paths of the step's files in the sandbox, in the step's order
//!   (already downloaded and verified; none are guaranteed for `is-installed` and `cancel`).
//!
//! The process runs in the sandbox, as the agent's user, in its own process group, stdin from
//! `/dev/null`, stdout and stderr appended to `<sandbox>/action_<verb>.log`. It reports by
//! writing the result file, then exiting 0:
//!
//! ```json
//! {"resultCode": 600, "extendedResultCode": 0, "resultDetails": "optional text"}
//! ```
//!
//! Exit code `e != 0` -> failure with ERC [`EXIT_CODE_BASE`]` + e` (`0x32001000 + e`; `128 +
//! signal` when killed by a signal); exit 0 with a missing or unparsable result file ->
//! [`BAD_RESULT_FILE`]; a failing `resultCode` with ERC 0 -> [`FAILURE_WITHOUT_ERC`]. These
//! mirror `microsoft/script:1`'s codes in facility 3, component 32 ("external").
//!
//! [`StepHandler::cancel`] first kills the process running for the same workflow (its process
//! group), then runs the `cancel` verb so the handler can clean up, and answers its result
//! (800, or 801 when it cannot cancel). Backup, restore and download are not forwarded
//! (1001, 1101, 500).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use duhub_proto::result::{ExtendedResultCode, InstallResult};

use super::process::{self, Exit, Invocation, ResultFile, Running};
use super::{StepContext, StepHandler};

/// Base of the exit-code failures: `0x32001000 + exit code`.
pub const EXIT_CODE_BASE: ExtendedResultCode = ExtendedResultCode(0x3200_1000);
/// Exit 0 but the result file is missing or not of the expected form.
pub const BAD_RESULT_FILE: ExtendedResultCode = ExtendedResultCode(0x3200_0205);
/// The handler reported a failing `resultCode` with `extendedResultCode` 0.
pub const FAILURE_WITHOUT_ERC: ExtendedResultCode = ExtendedResultCode(0x3200_0206);
/// The handler ran longer than the process timeout and was killed.
pub const TIMED_OUT: ExtendedResultCode = ExtendedResultCode(0x3200_0F01);
/// The executable could not be started.
pub const SPAWN_FAILED: ExtendedResultCode = ExtendedResultCode(0x3200_0F02);
/// The handler properties file could not be written, or a stale result file removed.
pub const PREPARE_FAILED: ExtendedResultCode = ExtendedResultCode(0x3200_0F03);

/// The failure code for an external handler's exit code.
pub const fn exit_code_erc(exit_code: i32) -> ExtendedResultCode {
    ExtendedResultCode(EXIT_CODE_BASE.0.wrapping_add(exit_code.cast_unsigned()))
}

/// A handler implemented by an external executable.
#[derive(Debug)]
pub struct ExternalHandler {
    executable: PathBuf,
    timeout: Option<Duration>,
    running: Running,
}

impl ExternalHandler {
    /// A handler running `executable`, killed after `timeout` (if any).
    pub fn new(executable: PathBuf, timeout: Option<Duration>) -> Self {
        Self { executable, timeout, running: Running::default() }
    }

    fn run_verb(&self, ctx: &StepContext<'_>, verb: &str, cancel: &AtomicBool, register: bool) -> InstallResult {
        let result_file = ctx.sandbox.join(format!("action_{verb}_result.json"));
        let properties_file = ctx.sandbox.join(format!("action_{verb}_handler_properties.json"));
        let properties = serde_json::to_vec(ctx.handler_properties).unwrap_or_else(|_| b"{}".to_vec());
        if let Err(error) = process::remove_stale(&result_file) {
            return InstallResult::failure(PREPARE_FAILED)
                .with_details(format!("removing {}: {error}", result_file.display()));
        }
        if let Err(error) = process::write_file(&properties_file, &properties) {
            return InstallResult::failure(PREPARE_FAILED)
                .with_details(format!("writing {}: {error}", properties_file.display()));
        }
        let mut args: Vec<OsString> = vec![
            verb.into(),
            "--work-folder".into(),
            ctx.sandbox.into(),
            "--result-file".into(),
            result_file.clone().into(),
        ];
        if let Some(criteria) = ctx.effective_installed_criteria() {
            args.push("--installed-criteria".into());
            args.push(criteria.into());
        }
        args.push("--handler-properties".into());
        args.push(properties_file.into());
        args.push("--".into());
        args.extend(ctx.files.iter().map(|file| file.clone().into_os_string()));
        let exit = Invocation {
            program: &self.executable,
            args,
            env: &[],
            work_folder: ctx.sandbox,
            log_file: ctx.sandbox.join(format!("action_{verb}.log")),
            timeout: self.timeout,
            cancel,
            workflow_id: register.then_some((ctx.workflow_id, &self.running)),
        }
        .run();
        let program = self.executable.display();
        match exit {
            Exit::Code(0) => match ResultFile::read(&result_file) {
                Some(result) => result.into_result(FAILURE_WITHOUT_ERC),
                None => InstallResult::failure(BAD_RESULT_FILE)
                    .with_details(format!("{} is missing or not a result", result_file.display())),
            },
            Exit::Code(code) => InstallResult::failure(exit_code_erc(code))
                .with_details(format!("{program} {verb} exited with code {code}")),
            Exit::Cancelled => process::cancelled(),
            Exit::TimedOut => {
                InstallResult::failure(TIMED_OUT).with_details(format!("{program} {verb} timed out and was killed"))
            }
            Exit::SpawnFailed(error) => {
                InstallResult::failure(SPAWN_FAILED).with_details(format!("cannot run {program}: {error}"))
            }
        }
    }
}

impl StepHandler for ExternalHandler {
    fn is_installed(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_verb(ctx, "is-installed", ctx.cancel, true)
    }

    fn install(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_verb(ctx, "install", ctx.cancel, true)
    }

    fn apply(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.run_verb(ctx, "apply", ctx.cancel, true)
    }

    fn cancel(&self, ctx: &StepContext<'_>) -> InstallResult {
        self.running.cancel(ctx.workflow_id);
        // The cancel verb itself must run even though the workflow's cancel flag is set.
        let not_cancelled = AtomicBool::new(false);
        self.run_verb(ctx, "cancel", &not_cancelled, false)
    }
}
