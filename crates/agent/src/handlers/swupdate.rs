//! `microsoft/swupdate:2`: runs the step's script with the script protocol of
//! `microsoft/script:1` ([`super::script`]), plus the swupdate image (protocol reference §7.5).
//! The script does the work — typically `swupdate -i <image>` for `install`, a reboot into the
//! other slot for `apply`, and a version check for `is-installed`; the handler only runs it.
//!
//! handlerProperties: `scriptFileName` (required, the `fileName` of one of the step's files),
//! `arguments` (a string split on whitespace), `swuFileName` (optional, the `fileName` of the
//! `.swu` image), `installedCriteria` (optional; the script's `is-installed` decides what it
//! means), `apiVersion` (`"1.1"` for `--action <verb>`, anything else is 1.0).
//!
//! The script is run as `<sandbox>/<scriptFileName>` with, in order:
//!
//! 1. `--action-<verb>` (apiVersion 1.0) or `--action <verb>` (1.1), verb `is-installed`,
//!    `install` or `apply`;
//! 2. `--swu-file <sandbox>/<swuFileName>` when `swuFileName` is set;
//! 3. the options of the swupdate configuration file, when one is configured
//!    (`swupdate_config_file`, the official `swupdate-handler-config.json`): a JSON object whose
//!    members, in file order, are passed as `<name> <value>`, e.g.
//!    `{"--public-key-file": "/etc/swupdate/public.pem"}`; a missing file adds nothing;
//! 4. the `arguments` tokens, component placeholders replaced by `n/a` as for script:1; the token
//!    after `--swu-file` or `--image-file` is a file name in the sandbox and is passed as its full
//!    path (`--swu-file image.swu` -> `--swu-file <sandbox>/image.swu`);
//! 5. `--work-folder <sandbox>`, `--output-file <sandbox>/action_<verb>_output.txt`,
//!    `--log-file <sandbox>/action_<verb>_script.log`,
//!    `--result-file <sandbox>/action_<verb>_aduc_result.json`, then
//!    `--installed-criteria <value>` when there is one.
//!
//! The script reports as for script:1: exit 0 and the result file
//! `{"resultCode","extendedResultCode","resultDetails"}`. Its stdout and stderr are appended to
//! `<sandbox>/action_<verb>.log`; the output and log files are the script's to write.
//!
//! # Extended result codes (facility 3, component 1 "swupdate": `0x301xxxxx`)
//!
//! | code | meaning |
//! |---|---|
//! | [`MISSING_SCRIPT_FILE_NAME`] `0x30100007` | `scriptFileName` missing (official) |
//! | [`MISSING_SWU_FILE_NAME`] `0x30100008` | `--swu-file`/`--image-file` without a file name, or a `swuFileName` or such name that is not a plain file name (official code) |
//! | [`BAD_CONFIG_FILE`] `0x30100020` | the swupdate configuration file cannot be read, is not JSON, or is not an object of strings (official code) |
//! | [`MISSING_SCRIPT_FILE`] `0x30100107` | the script is not in the sandbox, or `scriptFileName` is not a plain file name (official `..._GET_SCRIPT_FILE_ENTITY`) |
//! | [`IMAGE_FILE_NOT_FOUND`] `0x30100202` | `install`: the `.swu` named by `swuFileName` is not in the sandbox (official) |
//! | [`PARSE_RESULT_FILE`] `0x30100205` | exit 0, but the result file is missing or unparsable (official) |
//! | [`TIMED_OUT`] `0x30100F01` | duhub: killed after the process timeout |
//! | [`SPAWN_FAILED`] `0x30100F02` | duhub: the script could not be started |
//! | [`PREPARE_FAILED`] `0x30100F03` | duhub: chmod of the script or removal of a stale result file failed |
//! | [`FAILURE_WITHOUT_ERC`] `0x30100F04` | duhub: the script reported a failing `resultCode` with ERC 0 |
//! | [`EXIT_CODE_BASE`] `0x30101000 + e` | the script exited with `e != 0` (`128 + signal` when killed), the official child-process convention |
//!
//! Differences from the official agent are those of script:1 (the script runs directly as the
//! agent's user, not through `adu-shell`; cancel kills it; optional timeout). The official
//! handler ignores a configuration file it cannot parse; duhub fails the step with
//! [`BAD_CONFIG_FILE`], so a broken file is noticed instead of silently dropping options.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use duhub_proto::result::{ExtendedResultCode, InstallResult};
use serde_json::Value;

use super::StepContext;
use super::script::{self, Codes, ScriptProtocol, ScriptRunner};

/// Official: `scriptFileName` is missing (`ADUC_ERC_SWUPDATE_HANDLER_MISSING_SCRIPT_FILE_NAME`).
pub const MISSING_SCRIPT_FILE_NAME: ExtendedResultCode = ExtendedResultCode(0x3010_0007);
/// Official code (`ADUC_ERC_SWUPDATE_HANDLER_MISSING_SWU_FILE_NAME`): `--swu-file` or
/// `--image-file` in `arguments` has no file name after it, or a `.swu` file name is not a plain
/// file name.
pub const MISSING_SWU_FILE_NAME: ExtendedResultCode = ExtendedResultCode(0x3010_0008);
/// Official (`ADUC_ERC_SWUPDATE_HANDLER_BAD_SWUPDATE_CONFIG_FILE`): the swupdate configuration
/// file cannot be read, is not JSON, or is not an object whose values are strings.
pub const BAD_CONFIG_FILE: ExtendedResultCode = ExtendedResultCode(0x3010_0020);
/// Official code (`ADUC_ERC_SWUPDATE_HANDLER_DOWNLOAD_FAILURE_GET_SCRIPT_FILE_ENTITY`): the
/// script is not in the sandbox, or `scriptFileName` is not a plain file name.
pub const MISSING_SCRIPT_FILE: ExtendedResultCode = ExtendedResultCode(0x3010_0107);
/// Official (`ADUC_ERC_SWUPDATE_HANDLER_INSTALL_FAILURE_IMAGE_FILE_NOT_FOUND`): on `install`,
/// the image named by `swuFileName` is not in the sandbox.
pub const IMAGE_FILE_NOT_FOUND: ExtendedResultCode = ExtendedResultCode(0x3010_0202);
/// Official (`ADUC_ERC_SWUPDATE_HANDLER_INSTALL_FAILURE_PARSE_RESULT_FILE`): the script exited 0
/// but its result file is missing or unparsable.
pub const PARSE_RESULT_FILE: ExtendedResultCode = ExtendedResultCode(0x3010_0205);
/// duhub: the script ran longer than the process timeout and was killed.
pub const TIMED_OUT: ExtendedResultCode = ExtendedResultCode(0x3010_0F01);
/// duhub: the script could not be started (not executable, bad interpreter line, ...).
pub const SPAWN_FAILED: ExtendedResultCode = ExtendedResultCode(0x3010_0F02);
/// duhub: the script could not be made executable, or a stale result file not removed.
pub const PREPARE_FAILED: ExtendedResultCode = ExtendedResultCode(0x3010_0F03);
/// duhub: the script reported a failing `resultCode` with `extendedResultCode` 0.
pub const FAILURE_WITHOUT_ERC: ExtendedResultCode = ExtendedResultCode(0x3010_0F04);
/// Base of the exit-code failures: `0x30101000 + exit code`.
pub const EXIT_CODE_BASE: ExtendedResultCode = ExtendedResultCode(0x3010_1000);

/// The failure code for a script exit code: [`EXIT_CODE_BASE`]` + exit_code`.
pub const fn exit_code_erc(exit_code: i32) -> ExtendedResultCode {
    ExtendedResultCode(EXIT_CODE_BASE.0.wrapping_add(exit_code.cast_unsigned()))
}

const CODES: Codes = Codes {
    missing_script_file_name: MISSING_SCRIPT_FILE_NAME,
    missing_script_file: MISSING_SCRIPT_FILE,
    parse_result_file: PARSE_RESULT_FILE,
    failure_without_erc: FAILURE_WITHOUT_ERC,
    timed_out: TIMED_OUT,
    spawn_failed: SPAWN_FAILED,
    prepare_failed: PREPARE_FAILED,
    exit_code_base: EXIT_CODE_BASE,
};

/// The `microsoft/swupdate:2` handler.
#[derive(Debug)]
pub struct SwUpdateHandler {
    runner: ScriptRunner,
    config_file: Option<PathBuf>,
}

impl Default for SwUpdateHandler {
    fn default() -> Self {
        Self::new(None)
    }
}

impl SwUpdateHandler {
    /// A swupdate:2 handler killing scripts that run longer than `timeout` (if any).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self { runner: ScriptRunner::new(timeout, &CODES), config_file: None }
    }

    /// The same handler passing the options of `config_file` (if any) to every script.
    #[must_use]
    pub fn with_config_file(mut self, config_file: Option<PathBuf>) -> Self {
        self.config_file = config_file;
        self
    }

    /// The configuration file's options as arguments, in file order; none without a file.
    fn config_arguments(&self) -> Result<Vec<OsString>, InstallResult> {
        let Some(path) = &self.config_file else { return Ok(Vec::new()) };
        let bad =
            |why: String| InstallResult::failure(BAD_CONFIG_FILE).with_details(format!("{}: {why}", path.display()));
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(bad(error.to_string())),
        };
        let value: Value = serde_json::from_str(&text).map_err(|error| bad(format!("not JSON: {error}")))?;
        let Value::Object(options) = value else { return Err(bad("not a JSON object".into())) };
        let mut args = Vec::with_capacity(options.len() * 2);
        for (name, value) in options {
            let Value::String(value) = value else {
                return Err(bad(format!("the value of {name:?} is not a string")));
            };
            args.push(name.into());
            args.push(value.into());
        }
        Ok(args)
    }
}

impl ScriptProtocol for SwUpdateHandler {
    fn runner(&self) -> &ScriptRunner {
        &self.runner
    }

    fn run_action(&self, ctx: &StepContext<'_>, verb: &str) -> InstallResult {
        self.runner.run_action(ctx, verb, |files| {
            let properties = ctx.handler_properties;
            let sandbox = ctx.sandbox;
            let mut args = script::action_arguments(properties, files.verb);
            let swu_name = properties.get("swuFileName").and_then(Value::as_str).filter(|name| !name.is_empty());
            if let Some(name) = swu_name {
                if !script::is_plain_file_name(name) {
                    return Err(InstallResult::failure(MISSING_SWU_FILE_NAME)
                        .with_details(format!("swuFileName {name:?} is not a plain file name")));
                }
                let image = sandbox.join(name);
                if files.verb == "install" && !image.is_file() {
                    return Err(InstallResult::failure(IMAGE_FILE_NOT_FOUND)
                        .with_details(format!("image {} is not in the sandbox", image.display())));
                }
                args.push("--swu-file".into());
                args.push(image.into());
            }
            args.extend(self.config_arguments()?);
            let tokens = script::argument_tokens(properties, Some(sandbox))
                .map_err(|why| InstallResult::failure(MISSING_SWU_FILE_NAME).with_details(why))?;
            args.extend(tokens);
            let verb = files.verb;
            let options: [(&str, OsString); 4] = [
                ("--work-folder", sandbox.into()),
                ("--output-file", sandbox.join(format!("action_{verb}_output.txt")).into()),
                ("--log-file", sandbox.join(format!("action_{verb}_script.log")).into()),
                ("--result-file", files.result_file.into()),
            ];
            for (option, value) in options {
                args.push(option.into());
                args.push(value);
            }
            script::push_installed_criteria(&mut args, ctx.effective_installed_criteria());
            Ok(args)
        })
    }
}
