//! Helpers shared by the integration tests: the binary, temporary directories, fixture paths and
//! one key store shared by the tests that only read it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// The fixtures of `duhub-proto`, which this crate's tests share.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/tests/fixtures");

/// The `duhub` binary, with `RUST_LOG` removed so that stderr only holds what the command prints.
pub(crate) fn duhub() -> Command {
    let mut command = Command::cargo_bin("duhub").unwrap();
    command.env_remove("RUST_LOG");
    command
}

/// A fresh temporary directory, removed when dropped.
pub(crate) fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("duhub-it-").tempdir().unwrap()
}

/// Path of a file under the fixtures directory.
pub(crate) fn fixture(relative: &str) -> PathBuf {
    Path::new(FIXTURES).join(relative)
}

/// Text of a file under the fixtures directory.
pub(crate) fn fixture_text(relative: &str) -> String {
    std::fs::read_to_string(fixture(relative)).unwrap_or_else(|e| panic!("reading fixture {relative}: {e}"))
}

/// JSON of a file under the fixtures directory.
pub(crate) fn fixture_json(relative: &str) -> Value {
    serde_json::from_str(&fixture_text(relative)).unwrap_or_else(|e| panic!("parsing fixture {relative}: {e}"))
}

/// Paths of the files of a fixture directory, sorted.
pub(crate) fn fixture_files(relative_dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(relative_dir))
        .unwrap_or_else(|e| panic!("listing fixture directory {relative_dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Writes `bytes` to `dir/name` (creating parent directories) and returns the path.
pub(crate) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Parses a command's stdout as JSON.
pub(crate) fn json_of(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(stdout)))
}

/// Runs `command`, asserts its exit code, and returns its stdout parsed as JSON.
pub(crate) fn run_json(command: &mut Command, code: i32) -> Value {
    let assert = command.assert().code(code);
    json_of(&assert.get_output().stdout)
}

/// Asserts that the stdout of a `--json` command that failed is exactly `{"error": "..."}` and
/// returns the message.
pub(crate) fn json_error(command: &mut Command) -> String {
    let output = command.assert().code(2);
    let output = output.get_output();
    let value = json_of(&output.stdout);
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
    assert_eq!(object.keys().collect::<Vec<_>>(), ["error"], "{value}");
    let message = object["error"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, format!("error: {message}\n"), "stderr repeats the error");
    message
}

/// Runs `duhub <args> --help` and checks that it succeeds and mentions every item of `mentions`.
pub(crate) fn assert_help(args: &[&str], mentions: &[&str]) {
    let assert = duhub().args(args).arg("--help").assert().success().stderr("");
    let help = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let usage = format!("Usage: {}", ["duhub"].iter().chain(args).copied().collect::<Vec<_>>().join(" "));
    assert!(help.contains(&usage), "`{} --help` lacks {usage:?}:\n{help}", args.join(" "));
    for mention in mentions {
        assert!(help.contains(mention), "`{} --help` does not mention {mention:?}:\n{help}", args.join(" "));
    }
}

/// Runs `duhub keys init --dir <dir> --json`, checks that it succeeds, and returns its output.
pub(crate) fn init_key_store(dir: &Path) -> Value {
    run_json(duhub().args(["keys", "init", "--json", "--dir"]).arg(dir), 0)
}

/// A key store created once per test process, for the tests that only read it.
pub(crate) struct SharedKeys {
    /// The temporary directory; the store is its `keys` subdirectory.
    root: TempDir,
    /// What `keys init --json` printed.
    pub(crate) init: Value,
}

impl SharedKeys {
    /// The key store directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.path().join("keys")
    }
}

/// The shared key store. Creating one takes a second or two (two RSA-3072 keys), so the tests
/// that do not change it share this one; tests that rotate or disable keys make their own.
/// (A static is never dropped: the directory is left under Cargo's per-target temporary
/// directory.)
pub(crate) fn shared_keys() -> &'static SharedKeys {
    static SHARED: OnceLock<SharedKeys> = OnceLock::new();
    SHARED.get_or_init(|| {
        let root = tempfile::Builder::new().prefix("duhub-it-keys-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let init = init_key_store(&root.path().join("keys"));
        SharedKeys { root, init }
    })
}

/// The arguments of `duhub update init v5` up to the steps: update id and one compatible device.
pub(crate) const INIT_TOASTER: &[&str] = &[
    "update",
    "init",
    "v5",
    "--update-provider",
    "Contoso",
    "--update-name",
    "Toaster",
    "--update-version",
    "1.0",
    "--compat",
    "manufacturer=Contoso",
    "model=Toaster",
];

/// Writes `dir/fw.swu` and an import manifest `dir/toaster.importmanifest.json` for it with one
/// inline step and no reference step (so it can be signed), and returns the manifest's path.
pub(crate) fn toaster_import_manifest(dir: &Path) -> PathBuf {
    write_file(dir, "fw.swu", b"firmware");
    let assert = duhub()
        .current_dir(dir)
        .args(INIT_TOASTER)
        .args(["--step", "handler=microsoft/swupdate:1", r#"properties={"installedCriteria":"1.0"}"#])
        .args(["--file", "path=fw.swu"])
        .assert()
        .success();
    write_file(dir, "toaster.importmanifest.json", &assert.get_output().stdout)
}

/// The built `duhub-agent`, beside `duhub`: `cargo test --workspace` builds every binary of the
/// workspace before it runs a test, but `cargo test -p duhub` alone does not build it.
pub(crate) fn agent_binary() -> PathBuf {
    let duhub = Path::new(env!("CARGO_BIN_EXE_duhub"));
    let agent = duhub.with_file_name(format!("duhub-agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        agent.is_file(),
        "{} is missing: build it with `cargo build -p duhub-agent` (`cargo test --workspace` does)",
        agent.display()
    );
    agent
}

/// Sets the environment of a process of a test: none of the caller's `DUHUB_*` settings or
/// `RUST_LOG`, the built binaries first in `PATH`, and `vars`.
pub(crate) fn test_environment(command: &mut std::process::Command, vars: &[(&str, &std::ffi::OsStr)]) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DUHUB_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_duhub")).parent().expect("the binary's directory");
    let mut path = vec![bin_dir.to_path_buf()];
    path.extend(std::env::var_os("PATH").iter().flat_map(std::env::split_paths));
    command.env("PATH", std::env::join_paths(path).expect("PATH"));
    for (name, value) in vars {
        command.env(name, value);
    }
}

/// A child process in a process group of its own (with what it starts), its stdout and stderr
/// in a log file. Dropping it stops the group: SIGTERM, then SIGKILL after a few seconds.
pub(crate) struct Process {
    child: std::process::Child,
    log: PathBuf,
    what: String,
}

impl Process {
    /// Starts `command`, logging to `log`.
    pub(crate) fn start(command: &mut std::process::Command, log: &Path, what: &str) -> Self {
        use std::os::unix::process::CommandExt as _;
        let file = std::fs::File::create(log).unwrap();
        command.stdin(std::process::Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Self { child, log: log.to_owned(), what: what.to_owned() }
    }

    /// What it printed so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its output shows `text`; panics if it exits first or `timeout` passes.
    pub(crate) fn wait_for_output(&mut self, text: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log().contains(text) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}) before it printed {text:?}; its output:\n{}", self.what, self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not print {text:?} within {timeout:?}; its output:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits for it to exit; `None` (after stopping it) when `timeout` passes first.
    pub(crate) fn wait(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.stop();
        None
    }

    /// Stops the process group: SIGTERM (what Ctrl-C or a service manager sends), then SIGKILL
    /// to whatever is left after five seconds.
    pub(crate) fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            let _ = std::process::Command::new("kill")
                .args([name, "--", &group])
                .stderr(std::process::Stdio::null())
                .status();
        };
        if self.child.try_wait().ok().flatten().is_none() {
            signal("-TERM");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
