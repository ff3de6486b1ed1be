//! Running a handler process (script or external executable) and reading its result file:
//! what `script` and `external` share.
//!
//! The process runs in its own process group with stdin from `/dev/null` and stdout and stderr
//! appended to a log file in the sandbox. While it runs, the caller's cancel flag, the
//! per-workflow flag set by [`Running::cancel`] and the optional timeout are polled every
//! [`POLL`]; on any of them the whole process group is killed (`kill -KILL -<pgid>`, then the
//! child itself), so a script's own children go too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use serde::Deserialize;

/// How often a running process is checked for exit, cancellation and timeout.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// The cancel flags of the processes running now, by workflow id.
#[derive(Debug, Default)]
pub(crate) struct Running {
    flags: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Running {
    /// Kills the process running for `workflow_id`, if any; whether there was one.
    pub(crate) fn cancel(&self, workflow_id: &str) -> bool {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        flags.get(workflow_id).inspect(|flag| flag.store(true, Ordering::SeqCst)).is_some()
    }

    fn register(&self, workflow_id: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        flags.insert(workflow_id.to_owned(), flag.clone());
        flag
    }

    fn unregister(&self, workflow_id: &str, flag: &Arc<AtomicBool>) {
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        if flags.get(workflow_id).is_some_and(|current| Arc::ptr_eq(current, flag)) {
            flags.remove(workflow_id);
        }
    }
}

/// One process to run.
pub(crate) struct Invocation<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: Vec<OsString>,
    /// Extra environment variables (on top of the agent's environment).
    pub(crate) env: &'a [(&'a str, &'a str)],
    /// Working directory (the sandbox).
    pub(crate) work_folder: &'a Path,
    /// Where stdout and stderr are appended.
    pub(crate) log_file: PathBuf,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cancel: &'a AtomicBool,
    /// Registers the process under this workflow id in `running` (for [`Running::cancel`]).
    pub(crate) workflow_id: Option<(&'a str, &'a Running)>,
}

/// How a process ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// It exited with this code (`128 + signal` when killed by a signal, as shells report).
    Code(i32),
    /// It was killed because of a cancellation.
    Cancelled,
    /// It was killed because it ran longer than the timeout.
    TimedOut,
    /// It could not be started (or waited for).
    SpawnFailed(io::Error),
}

impl Invocation<'_> {
    /// Runs the process to its end (blocking).
    pub(crate) fn run(self) -> Exit {
        if self.cancel.load(Ordering::SeqCst) {
            return Exit::Cancelled;
        }
        let log = match OpenOptions::new().create(true).append(true).open(&self.log_file) {
            Ok(log) => log,
            Err(error) => return Exit::SpawnFailed(error),
        };
        let log_copy = match log.try_clone() {
            Ok(copy) => copy,
            Err(error) => return Exit::SpawnFailed(error),
        };
        let mut command = Command::new(self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().copied())
            .current_dir(self.work_folder)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_copy))
            .process_group(0);
        let registered = self.workflow_id.map(|(id, running)| (id, running, running.register(id)));
        let exit = match spawn(&mut command) {
            Ok(child) => self.wait(child, registered.as_ref().map(|(_, _, flag)| flag.as_ref())),
            Err(error) => Exit::SpawnFailed(error),
        };
        if let Some((id, running, flag)) = &registered {
            running.unregister(id, flag);
        }
        exit
    }

    fn wait(&self, mut child: Child, own_flag: Option<&AtomicBool>) -> Exit {
        let deadline = self.timeout.map(|timeout| Instant::now() + timeout);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(-1);
                    return Exit::Code(code);
                }
                Ok(None) => {}
                Err(error) => {
                    kill_group(&mut child);
                    return Exit::SpawnFailed(error);
                }
            }
            if self.cancel.load(Ordering::SeqCst) || own_flag.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
                kill_group(&mut child);
                return Exit::Cancelled;
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                kill_group(&mut child);
                return Exit::TimedOut;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Spawns, retrying for a while on `ETXTBSY`: a file just written (e.g. a script downloaded a
/// moment ago) can be briefly "busy" when another thread forked while it was open for writing.
fn spawn(command: &mut Command) -> io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(error) if error.raw_os_error() == Some(ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(POLL);
            }
            result => return result,
        }
    }
}

/// Kills the child's process group (it leads its own group), then the child, and reaps it.
fn kill_group(child: &mut Child) {
    // Without `unsafe` there is no killpg in std; kill(1) does it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The result file a script or external handler writes:
/// `{"resultCode": <int>, "extendedResultCode": <int>, "resultDetails": "<string>"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ResultFile {
    #[serde(rename = "resultCode")]
    result_code: ResultCode,
    #[serde(rename = "extendedResultCode", default)]
    extended_result_code: ExtendedResultCode,
    #[serde(rename = "resultDetails", default)]
    result_details: Option<String>,
}

impl ResultFile {
    /// Reads and parses `path`; `None` when missing or not of the expected form.
    pub(crate) fn read(path: &Path) -> Option<Self> {
        let text = fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The result, with `failure_without_erc` as the extended result when the code is a failure
    /// and the extended result code is 0 (so the failure can be told apart).
    pub(crate) fn into_result(self, failure_without_erc: ExtendedResultCode) -> InstallResult {
        let extended = if !self.result_code.is_success() && self.extended_result_code.is_none() {
            failure_without_erc
        } else {
            self.extended_result_code
        };
        let result = InstallResult::new(self.result_code, extended);
        match self.result_details.filter(|details| !details.is_empty()) {
            Some(details) => result.with_details(details),
            None => result,
        }
    }
}

/// Removes a stale result file before a run; a missing file is fine.
pub(crate) fn remove_stale(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` (created or truncated).
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = File::create(path)?;
    file.write_all(contents)
}

/// The result of a call cancelled before or while its process ran.
pub(crate) fn cancelled() -> InstallResult {
    InstallResult::new(ResultCode::FAILURE_CANCELLED, ExtendedResultCode::NONE).with_details("cancelled")
}
