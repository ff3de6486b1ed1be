//! `microsoft/simulator:1`: canned results from a `du-simulator-data.json` (protocol reference
//! §7.5; format in `spec/vectors/handlers/du-simulator-data-template.jsonc`), for testing fleets
//! and the service without touching devices.
//!
//! The file (comments allowed, `//` and `/* */`) has one member per operation, each
//! `{"resultCode", "extendedResultCode", "resultDetails"}`:
//!
//! - `install`, `apply`, `cancel`, `backup`, `restore`: the result of that operation;
//! - `isInstalled`: keyed by installed criteria, `"*"` for any other (or none);
//! - `download`: keyed by file name, `"*"` for any other; the first failing file's result is
//!   the answer, else the last file's (500 when the step has no file).
//!
//! The file is read at every call, so it can be changed while the agent runs. A missing file,
//! operation or key simulates success (600, 700, 800, 1000, 1100, 500) and "not installed"
//! (901); an unreadable or malformed file fails with [`BAD_DATA`].

use std::path::PathBuf;

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use serde_json::Value;

use super::{StepContext, StepHandler};

/// duhub: the simulator data file cannot be read or is not valid (commented) JSON.
pub const BAD_DATA: ExtendedResultCode = ExtendedResultCode(0x3030_0F01);

/// The `microsoft/simulator:1` handler.
#[derive(Debug, Clone)]
pub struct SimulatorHandler {
    data_file: PathBuf,
}

impl SimulatorHandler {
    /// A simulator answering from `data_file`.
    pub fn new(data_file: PathBuf) -> Self {
        Self { data_file }
    }

    /// The parsed data file; `Ok(None)` when there is none.
    fn data(&self) -> Result<Option<Value>, InstallResult> {
        let text = match std::fs::read_to_string(&self.data_file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(InstallResult::failure(BAD_DATA)
                    .with_details(format!("reading {}: {error}", self.data_file.display())));
            }
        };
        serde_json::from_str(&strip_comments(&text)).map(Some).map_err(|error| {
            InstallResult::failure(BAD_DATA).with_details(format!("parsing {}: {error}", self.data_file.display()))
        })
    }

    /// The result for a single-result operation, or `default` when it is not simulated.
    fn phase(&self, name: &str, default: ResultCode) -> InstallResult {
        match self.data() {
            Ok(data) => data
                .as_ref()
                .and_then(|data| data.get(name))
                .and_then(canned)
                .unwrap_or_else(|| InstallResult::success(default)),
            Err(failure) => failure,
        }
    }

    /// The result keyed by `key` (or `"*"`) in a keyed operation.
    fn keyed(data: Option<&Value>, name: &str, key: Option<&str>) -> Option<InstallResult> {
        let table = data?.get(name)?;
        key.and_then(|key| table.get(key)).or_else(|| table.get("*")).and_then(canned)
    }
}

impl StepHandler for SimulatorHandler {
    fn is_installed(&self, ctx: &StepContext<'_>) -> InstallResult {
        match self.data() {
            Ok(data) => Self::keyed(data.as_ref(), "isInstalled", ctx.effective_installed_criteria())
                .unwrap_or_else(|| InstallResult::success(ResultCode::IS_INSTALLED_NOT_INSTALLED)),
            Err(failure) => failure,
        }
    }

    fn download(&self, ctx: &StepContext<'_>) -> InstallResult {
        let data = match self.data() {
            Ok(data) => data,
            Err(failure) => return failure,
        };
        let mut last = InstallResult::success(ResultCode::DOWNLOAD_SUCCESS);
        for file in &ctx.files {
            let name = file.file_name().and_then(|name| name.to_str());
            let result = Self::keyed(data.as_ref(), "download", name)
                .unwrap_or_else(|| InstallResult::success(ResultCode::DOWNLOAD_SUCCESS));
            if !result.is_success() {
                return result;
            }
            last = result;
        }
        last
    }

    fn backup(&self, _ctx: &StepContext<'_>) -> InstallResult {
        self.phase("backup", ResultCode::BACKUP_SUCCESS)
    }

    fn install(&self, _ctx: &StepContext<'_>) -> InstallResult {
        self.phase("install", ResultCode::INSTALL_SUCCESS)
    }

    fn apply(&self, _ctx: &StepContext<'_>) -> InstallResult {
        self.phase("apply", ResultCode::APPLY_SUCCESS)
    }

    fn cancel(&self, _ctx: &StepContext<'_>) -> InstallResult {
        self.phase("cancel", ResultCode::CANCEL_SUCCESS)
    }

    fn restore(&self, _ctx: &StepContext<'_>) -> InstallResult {
        self.phase("restore", ResultCode::RESTORE_SUCCESS)
    }
}

/// One canned result; `None` when `value` is not an object with an integer `resultCode`.
fn canned(value: &Value) -> Option<InstallResult> {
    let code = i32::try_from(value.get("resultCode")?.as_i64()?).ok()?;
    let extended = value
        .get("extendedResultCode")
        .and_then(Value::as_i64)
        .and_then(|erc| ExtendedResultCode::try_from(erc).ok())
        .unwrap_or_default();
    let result = InstallResult::new(ResultCode(code), extended);
    Some(match value.get("resultDetails").and_then(Value::as_str).filter(|details| !details.is_empty()) {
        Some(details) => result.with_details(details),
        None => result,
    })
}

/// Removes `//` and `/* */` comments outside JSON strings (replaced by spaces, so positions in
/// error messages stay close).
pub(crate) fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut previous = ' ';
                for skipped in chars.by_ref() {
                    if previous == '*' && skipped == '/' {
                        break;
                    }
                    out.push(if skipped == '\n' { '\n' } else { ' ' });
                    previous = skipped;
                }
            }
            _ => out.push(c),
        }
    }
    out
}
