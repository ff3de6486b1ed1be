//! Tests of the handlers with real `/bin/sh` scripts in a temporary sandbox.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
use serde_json::{Map, Value, json};

use super::*;

/// A sandbox with a data folder, handler properties and files.
struct Fixture {
    _dir: tempfile::TempDir,
    sandbox: PathBuf,
    data_dir: PathBuf,
    properties: Map<String, Value>,
    files: Vec<PathBuf>,
    installed_criteria: Option<String>,
    cancel: AtomicBool,
}

impl Fixture {
    fn new(properties: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let data_dir = dir.path().join("data");
        fs::create_dir_all(&sandbox).unwrap();
        fs::create_dir_all(&data_dir).unwrap();
        let Value::Object(properties) = properties else { panic!("properties must be an object") };
        Self {
            _dir: dir,
            sandbox,
            data_dir,
            properties,
            files: Vec::new(),
            installed_criteria: None,
            cancel: AtomicBool::new(false),
        }
    }

    fn ctx(&self) -> StepContext<'_> {
        StepContext {
            workflow_id: "wf-1",
            sandbox: &self.sandbox,
            handler_properties: &self.properties,
            files: self.files.clone(),
            installed_criteria: self.installed_criteria.as_deref(),
            data_dir: &self.data_dir,
            cancel: &self.cancel,
        }
    }

    /// Writes a `/bin/sh` script into the sandbox (not executable: the handler must chmod it).
    /// The prelude records argv one per line in `args.txt` and sets `$action`, `$result_file`
    /// and `$installed_criteria` from either argument form.
    fn script(&mut self, name: &str, body: &str) -> PathBuf {
        let path = self.sandbox.join(name);
        fs::write(&path, format!("#!/bin/sh\n{PRELUDE}\n{body}\n")).unwrap();
        self.files.push(path.clone());
        path
    }

    fn args(&self) -> Vec<String> {
        fs::read_to_string(self.sandbox.join("args.txt")).unwrap().lines().map(str::to_owned).collect()
    }

    fn sandbox_str(&self) -> String {
        self.sandbox.display().to_string()
    }
}

const PRELUDE: &str = r#"dir=$(dirname "$0")
printf '%s\n' "$@" > "$dir/args.txt"
action=""; result_file=""; installed_criteria=""
while [ $# -gt 0 ]; do
  case "$1" in
    --action) action="$2"; shift ;;
    --action-*) action="${1#--action-}" ;;
    --result-file) result_file="$2"; shift ;;
    --installed-criteria) installed_criteria="$2"; shift ;;
    --) break ;;
  esac
  shift
done
result() { printf '{"resultCode":%s,"extendedResultCode":%s,"resultDetails":"%s"}' "$1" "$2" "$3" > "$result_file"; }"#;

fn codes(result: &InstallResult) -> (i32, u32) {
    (result.result_code.0, result.extended_result_codes.root().0)
}

// --- microsoft/script:1 -----------------------------------------------------------------------

#[test]
fn script_argv_follows_the_official_protocol_v1_0() {
    let mut fixture = Fixture::new(json!({
        "scriptFileName": "install.sh",
        "arguments": "--foo bar  --component-name-val --component-prop-val color --swu-file a.swu",
        "installedCriteria": "1.2.3",
    }));
    fixture.script("install.sh", r#"result 600 0 "installed $action""#);
    let result = ScriptHandler::new(None).install(&fixture.ctx());
    assert_eq!(result, InstallResult::success(ResultCode::INSTALL_SUCCESS).with_details("installed install"));
    let sandbox = fixture.sandbox_str();
    assert_eq!(
        fixture.args(),
        [
            "--action-install",
            "--foo",
            "bar",
            "n/a",
            "n/a",
            "--swu-file",
            "a.swu",
            "--work-folder",
            &sandbox,
            "--result-file",
            &format!("{sandbox}/action_install_aduc_result.json"),
            "--installed-criteria",
            "1.2.3",
        ]
    );
    // Made executable for the user, group and others to read and run.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(fixture.sandbox.join("install.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn script_argv_v1_1_and_no_installed_criteria() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh", "apiVersion": "1.1"}));
    fixture.script("s.sh", r#"result 700 0 """#);
    let result = ScriptHandler::new(None).apply(&fixture.ctx());
    assert_eq!(codes(&result), (700, 0));
    assert_eq!(result.result_details, None);
    let sandbox = fixture.sandbox_str();
    assert_eq!(
        fixture.args(),
        [
            "--action",
            "apply",
            "--work-folder",
            &sandbox,
            "--result-file",
            &format!("{sandbox}/action_apply_aduc_result.json"),
        ]
    );
}

#[test]
fn script_context_criteria_wins_over_the_property() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh", "installedCriteria": "from-properties"}));
    fixture.installed_criteria = Some("from-context".into());
    fixture.script("s.sh", r#"result 901 0 "$installed_criteria""#);
    let result = ScriptHandler::new(None).is_installed(&fixture.ctx());
    assert_eq!(result.result_details.as_deref(), Some("from-context"));
}

#[test]
fn script_exit_code_becomes_the_extended_result() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", r#"result 600 0 "written but ignored"; exit 3"#);
    let result = ScriptHandler::new(None).install(&fixture.ctx());
    assert_eq!(codes(&result), (0, 0x3050_1003));
    assert!(result.result_details.unwrap().contains("exited with code 3"));
}

#[test]
fn script_killed_by_a_signal_reports_128_plus_signal() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", "kill -TERM $$");
    let result = ScriptHandler::new(None).install(&fixture.ctx());
    assert_eq!(codes(&result), (0, 0x3050_1000 + 128 + 15));
}

#[test]
fn script_without_a_usable_result_file_fails() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", "exit 0");
    // A result file from an earlier run must not be taken for this one.
    fs::write(fixture.sandbox.join("action_install_aduc_result.json"), r#"{"resultCode":600}"#).unwrap();
    let handler = ScriptHandler::new(None);
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0205));

    fixture.script("s.sh", r#"echo 'not json' > "$result_file""#);
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0205));
    fixture.script("s.sh", r#"echo '{"extendedResultCode": 5}' > "$result_file""#);
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0205));
}

#[test]
fn script_failure_with_erc_zero_gets_0x30500206() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", r#"result 0 0 "broken""#);
    let handler = ScriptHandler::new(None);
    let result = handler.install(&fixture.ctx());
    assert_eq!(codes(&result), (0, 0x3050_0206));
    assert_eq!(result.result_details.as_deref(), Some("broken"));
    // A failure with its own code keeps it; negative ERCs are two's complement.
    fixture.script("s.sh", "result 0 -1608515580 x");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0xA020_0004));
}

#[test]
fn script_is_installed_runs_the_is_installed_action() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "check.sh"}));
    fixture.installed_criteria = Some("v2".into());
    fixture.script(
        "check.sh",
        r#"[ "$action" = is-installed ] || exit 9
if [ "$installed_criteria" = "$(cat "$dir/version")" ]; then result 900 0 ""; else result 901 0 ""; fi"#,
    );
    let handler = ScriptHandler::new(None);
    fs::write(fixture.sandbox.join("version"), "v1").unwrap();
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (901, 0));
    fs::write(fixture.sandbox.join("version"), "v2").unwrap();
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (900, 0));
    assert_eq!(fixture.args()[0], "--action-is-installed");
}

#[test]
fn script_property_and_file_errors() {
    let handler = ScriptHandler::new(None);
    let fixture = Fixture::new(json!({}));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0005));
    let fixture = Fixture::new(json!({"scriptFileName": "absent.sh"}));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0004));
    let mut fixture = Fixture::new(json!({"scriptFileName": "../s.sh"}));
    fixture.script("s.sh", "result 600 0 x");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3050_0004));
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fs::write(fixture.sandbox.join("s.sh"), "#!/nonexistent/interpreter\n").unwrap();
    fixture.files.push(fixture.sandbox.join("s.sh"));
    let result = handler.install(&fixture.ctx());
    assert_eq!(codes(&result), (0, script::SPAWN_FAILED.0));
    // Backup and restore are not forwarded; download succeeds (the runtime downloaded).
    assert_eq!(codes(&handler.backup(&fixture.ctx())), (1001, 0));
    assert_eq!(codes(&handler.restore(&fixture.ctx())), (1101, 0));
    assert_eq!(codes(&handler.download(&fixture.ctx())), (500, 0));
}

/// Waits (polling, bounded) until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn script_cancel_kills_the_running_script() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "slow.sh"}));
    fixture.script("slow.sh", r#"touch "$dir/started"; sleep 30; result 600 0 """#);
    let handler = ScriptHandler::new(None);
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let running = scope.spawn(|| handler.install(&fixture.ctx()));
        wait_for(&fixture.sandbox.join("started"));
        let cancelled = handler.cancel(&fixture.ctx());
        assert_eq!(codes(&cancelled), (800, 0));
        running.join().unwrap()
    });
    assert_eq!(result.result_code, ResultCode::FAILURE_CANCELLED);
    assert!(started.elapsed() < Duration::from_secs(20));
    // Nothing running: still 800.
    assert_eq!(codes(&handler.cancel(&fixture.ctx())), (800, 0));
}

#[test]
fn script_cancel_flag_kills_and_prevents_starting() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "slow.sh"}));
    fixture.script("slow.sh", r#"touch "$dir/started"; sleep 30"#);
    let handler = ScriptHandler::new(None);
    let result = std::thread::scope(|scope| {
        let running = scope.spawn(|| handler.apply(&fixture.ctx()));
        wait_for(&fixture.sandbox.join("started"));
        fixture.cancel.store(true, Ordering::SeqCst);
        running.join().unwrap()
    });
    assert_eq!(result.result_code, ResultCode::FAILURE_CANCELLED);
    fs::remove_file(fixture.sandbox.join("started")).unwrap();
    assert_eq!(handler.install(&fixture.ctx()).result_code, ResultCode::FAILURE_CANCELLED);
    assert!(!fixture.sandbox.join("started").exists());
}

#[test]
fn script_timeout_kills_the_script() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "slow.sh"}));
    fixture.script("slow.sh", "sleep 30");
    let started = Instant::now();
    let result = ScriptHandler::new(Some(Duration::from_millis(200))).install(&fixture.ctx());
    assert_eq!(codes(&result), (0, script::TIMED_OUT.0));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn script_output_goes_to_a_log_in_the_sandbox() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", r#"echo to-stdout; echo to-stderr >&2; result 600 0 """#);
    ScriptHandler::new(None).install(&fixture.ctx());
    let log = fs::read_to_string(fixture.sandbox.join("action_install.log")).unwrap();
    assert!(log.contains("to-stdout") && log.contains("to-stderr"), "{log}");
}

#[test]
fn plain_file_names() {
    for good in ["a.sh", "install-1.0.sh", ".hidden"] {
        assert!(script::is_plain_file_name(good), "{good}");
    }
    for bad in ["", ".", "..", "../a", "a/b", "/abs", "a/"] {
        assert!(!script::is_plain_file_name(bad), "{bad}");
    }
}

// --- microsoft/simulator:1 --------------------------------------------------------------------

fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/handlers/du-simulator-data-template.jsonc")
}

#[test]
fn simulator_answers_from_the_official_template() {
    let simulator = SimulatorHandler::new(template());
    let mut fixture = Fixture::new(json!({}));
    assert_eq!(codes(&simulator.install(&fixture.ctx())), (600, 0));
    assert_eq!(codes(&simulator.apply(&fixture.ctx())), (700, 0));
    assert_eq!(codes(&simulator.cancel(&fixture.ctx())), (800, 0));
    assert_eq!(codes(&simulator.backup(&fixture.ctx())), (1000, 0));
    assert_eq!(codes(&simulator.restore(&fixture.ctx())), (1100, 0));

    assert_eq!(codes(&simulator.is_installed(&fixture.ctx())), (901, 0));
    fixture.installed_criteria = Some("install-criteria-0".into());
    assert_eq!(codes(&simulator.is_installed(&fixture.ctx())), (900, 0));
    fixture.installed_criteria = Some("other".into());
    assert_eq!(codes(&simulator.is_installed(&fixture.ctx())), (901, 0));

    assert_eq!(codes(&simulator.download(&fixture.ctx())), (500, 0), "no file");
    fixture.files = vec![fixture.sandbox.join("datafile.data")];
    assert_eq!(codes(&simulator.download(&fixture.ctx())), (500, 0));
    fixture.files.push(fixture.sandbox.join("other.bin"));
    let failed = simulator.download(&fixture.ctx());
    assert_eq!(codes(&failed), (0, 0x4000_0007));
    assert_eq!(failed.result_details.as_deref(), Some("Simulating invalid file entity error."));
}

#[test]
fn simulator_defaults_and_bad_data() {
    let fixture = Fixture::new(json!({}));
    let missing = SimulatorHandler::new(fixture.sandbox.join("absent.json"));
    assert_eq!(codes(&missing.install(&fixture.ctx())), (600, 0));
    assert_eq!(codes(&missing.is_installed(&fixture.ctx())), (901, 0));

    let file = fixture.sandbox.join("sim.json");
    fs::write(&file, r#"{"install": {"resultCode": 0, "extendedResultCode": 808464385, "resultDetails": "boom"}}"#)
        .unwrap();
    let simulator = SimulatorHandler::new(file.clone());
    assert_eq!(codes(&simulator.install(&fixture.ctx())), (0, 808_464_385));
    assert_eq!(codes(&simulator.apply(&fixture.ctx())), (700, 0), "absent operation");

    fs::write(&file, "{ not json").unwrap();
    assert_eq!(codes(&simulator.install(&fixture.ctx())), (0, simulator::BAD_DATA.0));
}

#[test]
fn comments_are_stripped_outside_strings() {
    let text = "{ // line\n \"a\": \"x//y\", /* block\n */ \"b\": \"/*z*/\", \"c\": \"q\\\"//\" }";
    let value: Value = serde_json::from_str(&simulator::strip_comments(text)).unwrap();
    assert_eq!(value, json!({"a": "x//y", "b": "/*z*/", "c": "q\"//"}));
}

// --- external handlers ------------------------------------------------------------------------

/// An external handler in shell: records argv and the handler properties, answers per verb.
const EXTERNAL: &str = r#"#!/bin/sh
verb="$1"; shift
work=""; result_file=""; criteria=""; props=""
while [ $# -gt 0 ]; do
  case "$1" in
    --work-folder) work="$2"; shift ;;
    --result-file) result_file="$2"; shift ;;
    --installed-criteria) criteria="$2"; shift ;;
    --handler-properties) props="$2"; shift ;;
    --) shift; break ;;
  esac
  shift
done
printf '%s\n' "$@" > "$work/files-$verb.txt"
cp "$props" "$work/props-$verb.json"
case "$verb" in
  is-installed) [ -f "$work/installed-$criteria" ] && code=900 || code=901 ;;
  install) for f in "$@"; do cp "$f" "$work/installed-copy"; done; touch "$work/installed-$criteria"; code=600 ;;
  apply) exit 7 ;;
  cancel) code=801 ;;
  *) exit 2 ;;
esac
printf '{"resultCode": %s, "extendedResultCode": 0, "resultDetails": "%s"}' "$code" "$verb" > "$result_file"
"#;

#[test]
fn external_handler_protocol() {
    let mut fixture = Fixture::new(json!({"installedCriteria": "pkg-1", "mode": "fast"}));
    let exe_dir = tempfile::tempdir().unwrap();
    let exe = exe_dir.path().join("handler");
    fs::write(&exe, EXTERNAL).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let payload = fixture.sandbox.join("payload.bin");
    fs::write(&payload, "payload").unwrap();
    fixture.files = vec![payload.clone(), fixture.sandbox.join("second file.txt")];
    fs::write(&fixture.files[1], "2").unwrap();

    let mut registry = Registry::with_builtins(BuiltinOptions::default());
    registry.register_external("contoso/custom:1", exe.clone());
    let handler = registry.get("contoso/custom:1").unwrap();
    let ctx = fixture.ctx();

    assert_eq!(codes(&handler.is_installed(&ctx)), (901, 0));
    let installed = handler.install(&ctx);
    assert_eq!(installed, InstallResult::success(ResultCode::INSTALL_SUCCESS).with_details("install"));
    assert_eq!(codes(&handler.is_installed(&ctx)), (900, 0));
    let files = fs::read_to_string(fixture.sandbox.join("files-install.txt")).unwrap();
    assert_eq!(files, format!("{}\n{}\n", payload.display(), fixture.files[1].display()));
    let props: Value =
        serde_json::from_str(&fs::read_to_string(fixture.sandbox.join("props-install.json")).unwrap()).unwrap();
    assert_eq!(props, json!({"installedCriteria": "pkg-1", "mode": "fast"}));

    let applied = handler.apply(&ctx);
    assert_eq!(codes(&applied), (0, 0x3200_1007));
    assert_eq!(applied.extended_result_codes.root(), external::exit_code_erc(7));

    // Cancel runs the cancel verb even with the workflow's cancel flag set.
    fixture.cancel.store(true, Ordering::SeqCst);
    assert_eq!(codes(&handler.cancel(&fixture.ctx())), (801, 0));
}

#[test]
fn external_handler_failures() {
    let fixture = Fixture::new(json!({}));
    let exe_dir = tempfile::tempdir().unwrap();
    let exe = exe_dir.path().join("handler");
    use std::os::unix::fs::PermissionsExt as _;
    let write = |body: &str| {
        fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    };
    let handler = ExternalHandler::new(exe.clone(), Some(Duration::from_millis(300)));
    write("exit 0");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, external::BAD_RESULT_FILE.0));
    write(r#"while [ "$1" != --result-file ]; do shift; done; echo '{"resultCode": -3}' > "$2""#);
    assert_eq!(codes(&handler.install(&fixture.ctx())), (-3, external::FAILURE_WITHOUT_ERC.0));
    write("sleep 30");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, external::TIMED_OUT.0));
    let missing = ExternalHandler::new(exe_dir.path().join("absent"), None);
    assert_eq!(codes(&missing.install(&fixture.ctx())), (0, external::SPAWN_FAILED.0));
}

// --- registry ---------------------------------------------------------------------------------

#[test]
fn registry_builtins() {
    let registry = Registry::with_builtins(BuiltinOptions::default());
    assert_eq!(registry.handler_ids().collect::<Vec<_>>(), [APT_HANDLER_ID, SCRIPT_HANDLER_ID, SWUPDATE_HANDLER_ID]);
    assert!(registry.get("microsoft/steps:1").is_none());
    let registry =
        Registry::with_builtins(BuiltinOptions { simulator_data_file: Some(template()), ..BuiltinOptions::default() });
    assert_eq!(
        registry.handler_ids().collect::<Vec<_>>(),
        [APT_HANDLER_ID, SCRIPT_HANDLER_ID, SIMULATOR_HANDLER_ID, SWUPDATE_HANDLER_ID]
    );
    let fixture = Fixture::new(json!({}));
    let simulator = registry.get(SIMULATOR_HANDLER_ID).unwrap();
    assert_eq!(codes(&simulator.apply(&fixture.ctx())), (700, 0));
}

#[test]
fn failure_constants_are_the_official_ones() {
    assert_eq!(script::MISSING_SCRIPT_FILE_NAME_PROPERTY, ExtendedResultCode(0x3050_0005));
    assert_eq!(script::PARSE_RESULT_FILE, ExtendedResultCode(0x3050_0205));
    assert_eq!(external::EXIT_CODE_BASE.facility(), 3);
    assert_eq!(external::EXIT_CODE_BASE.component(), 32);
    for (code, value) in [
        (apt::INITIALIZATION_FAILURE, 0x3020_0001),
        (apt::INVALID_PACKAGE_DATA, 0x3020_0002),
        (apt::WRONG_FILE_COUNT, 0x3020_0004),
        (apt::GET_FILE_ENTITY_FAILURE, 0x3020_0005),
        (apt::INSTALLED_CRITERIA_PERSIST_FAILURE, 0x3020_0006),
        (apt::MISSING_INSTALLED_CRITERIA, 0x3020_0007),
        (swupdate::MISSING_SCRIPT_FILE_NAME, 0x3010_0007),
        (swupdate::MISSING_SWU_FILE_NAME, 0x3010_0008),
        (swupdate::BAD_CONFIG_FILE, 0x3010_0020),
        (swupdate::MISSING_SCRIPT_FILE, 0x3010_0107),
        (swupdate::IMAGE_FILE_NOT_FOUND, 0x3010_0202),
        (swupdate::PARSE_RESULT_FILE, 0x3010_0205),
    ] {
        assert_eq!(code, ExtendedResultCode(value));
    }
    for code in [apt::UPDATE_EXIT_BASE, apt::INSTALL_EXIT_BASE, apt::REMOVE_EXIT_BASE, apt::TIMED_OUT] {
        assert_eq!((code.facility(), code.component()), (3, 2), "{code}");
    }
    for code in [swupdate::EXIT_CODE_BASE, swupdate::FAILURE_WITHOUT_ERC, swupdate::TIMED_OUT] {
        assert_eq!((code.facility(), code.component()), (3, 1), "{code}");
    }
}

// --- microsoft/apt:1 --------------------------------------------------------------------------

fn apt_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/handlers").join(name)
}

/// A fake `apt-get` in its own folder: appends `DEBIAN_FRONTEND=<value> <argv...>` as one line
/// to `calls.txt` there, and exits with the code in `fail-<subcommand>` when that file exists.
struct FakeAptGet {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl FakeAptGet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("apt-get");
        let d = dir.path().display();
        fs::write(
            &exe,
            format!(
                r#"#!/bin/sh
echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "{d}/calls.txt"
[ -f "{d}/sleep-$1" ] && sleep 30
[ -f "{d}/fail-$1" ] && exit "$(cat "{d}/fail-$1")"
echo "fake apt-get $1 done"
exit 0
"#
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, exe }
    }

    fn handler(&self) -> AptHandler {
        AptHandler::new(self.exe.clone(), Some(Duration::from_secs(60)))
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("calls.txt")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn set(&self, file: &str, contents: &str) {
        fs::write(self.dir.path().join(file), contents).unwrap();
    }
}

/// A fixture whose one file is the APT manifest `manifest` (copied into the sandbox).
fn apt_step(manifest: &str, criteria: Option<&str>) -> Fixture {
    let mut fixture = Fixture::new(json!({}));
    let path = fixture.sandbox.join("apt-manifest.json");
    fs::copy(apt_fixture(manifest), &path).unwrap();
    fixture.files = vec![path];
    fixture.installed_criteria = criteria.map(str::to_owned);
    fixture
}

#[test]
fn apt_installs_records_and_reports_installed() {
    let fake = FakeAptGet::new();
    let handler = fake.handler();
    let fixture = apt_step("libcurl4-doc-7.58-apt-manifest.json", Some("sample-2.0.1"));
    let ctx = fixture.ctx();
    assert_eq!(codes(&handler.is_installed(&ctx)), (901, 0));
    assert!(fake.calls().is_empty(), "is-installed runs no apt-get");

    let installed = handler.install(&ctx);
    assert_eq!(codes(&installed), (600, 0), "{installed:?}");
    assert_eq!(
        fake.calls(),
        [
            "DEBIAN_FRONTEND=noninteractive update",
            "DEBIAN_FRONTEND=noninteractive install -y --allow-downgrades -o Dpkg::Options::=--force-confdef \
             -o Dpkg::Options::=--force-confold libcurl4-doc=7.58.0-2ubuntu3.12",
        ]
    );
    let log = fs::read_to_string(fixture.sandbox.join("action_install.log")).unwrap();
    assert!(log.contains("fake apt-get install done"), "{log}");
    // Installing alone records nothing.
    assert_eq!(codes(&handler.is_installed(&ctx)), (901, 0));

    assert_eq!(codes(&handler.apply(&ctx)), (700, 0));
    assert_eq!(codes(&handler.is_installed(&ctx)), (900, 0));
    let records: Value =
        serde_json::from_str(&fs::read_to_string(fixture.data_dir.join("installedcriteria")).unwrap()).unwrap();
    assert_eq!(records, json!([{"installedCriteria": "sample-2.0.1", "state": "installed"}]));

    // A second apply does not duplicate; another criteria is appended; others stay not installed.
    assert_eq!(codes(&handler.apply(&ctx)), (700, 0));
    let mut other = apt_step("libcurl4-doc-apt-manifest.json", Some("sample-1.0.1"));
    other.data_dir = fixture.data_dir.clone();
    assert_eq!(codes(&handler.is_installed(&other.ctx())), (901, 0));
    assert_eq!(codes(&handler.apply(&other.ctx())), (700, 0));
    let records: Value =
        serde_json::from_str(&fs::read_to_string(fixture.data_dir.join("installedcriteria")).unwrap()).unwrap();
    assert_eq!(
        records,
        json!([
            {"installedCriteria": "sample-2.0.1", "state": "installed"},
            {"installedCriteria": "sample-1.0.1", "state": "installed"},
        ])
    );
    assert_eq!(codes(&handler.is_installed(&ctx)), (900, 0));
}

#[test]
fn apt_unversioned_removal_and_restart() {
    let fake = FakeAptGet::new();
    let handler = fake.handler();
    let fixture = apt_step("libcurl4-doc-apt-manifest.json", Some("c"));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (600, 0));
    let removal = apt_step("libcurl4-doc-remove-apt-manifest.json", Some("c-remove"));
    assert_eq!(codes(&handler.install(&removal.ctx())), (600, 0));
    let calls = fake.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[1].ends_with("--force-confold libcurl4-doc"), "{calls:?}");
    assert_eq!(calls[3], "DEBIAN_FRONTEND=noninteractive remove -y libcurl4-doc");

    // agentRestartRequired: true -> 707 (and recorded).
    let restart = apt_step("sample_apt_manifest.json", Some("du-agent-update-0.7.0"));
    assert_eq!(codes(&handler.install(&restart.ctx())), (600, 0));
    assert!(fake.calls()[5].ends_with(" deviceupdate-agent=0.7.0~public~preview"), "{:?}", fake.calls());
    assert_eq!(codes(&handler.apply(&restart.ctx())), (707, 0));
    assert_eq!(codes(&handler.is_installed(&restart.ctx())), (900, 0));
}

#[test]
fn apt_exit_codes_map_per_command() {
    let fake = FakeAptGet::new();
    let handler = fake.handler();
    let fixture = apt_step("libcurl4-doc-apt-manifest.json", Some("c"));
    fake.set("fail-update", "100");
    let failed = handler.install(&fixture.ctx());
    assert_eq!(codes(&failed), (0, 0x3020_1064));
    assert!(failed.result_details.unwrap().contains("apt-get update exited with code 100"));
    assert_eq!(fake.calls().len(), 1, "nothing runs after a failing update");

    fs::remove_file(fake.dir.path().join("fail-update")).unwrap();
    fake.set("fail-install", "100");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3020_2064));

    let removal = apt_step("libcurl4-doc-remove-apt-manifest.json", Some("c"));
    fake.set("fail-remove", "3");
    assert_eq!(codes(&handler.install(&removal.ctx())), (0, 0x3020_3003));
    // A failed install records nothing.
    assert!(!fixture.data_dir.join("installedcriteria").exists());

    let missing = AptHandler::new(fake.dir.path().join("absent"), None);
    assert_eq!(codes(&missing.install(&fixture.ctx())), (0, apt::SPAWN_FAILED.0));

    fake.set("sleep-update", "");
    let slow = AptHandler::new(fake.exe.clone(), Some(Duration::from_millis(200)));
    assert_eq!(codes(&slow.install(&fixture.ctx())), (0, apt::TIMED_OUT.0));
}

#[test]
fn apt_cancel_kills_apt_get() {
    let fake = FakeAptGet::new();
    fake.set("sleep-update", "");
    let handler = fake.handler();
    let fixture = apt_step("libcurl4-doc-apt-manifest.json", Some("c"));
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let running = scope.spawn(|| handler.install(&fixture.ctx()));
        let calls = fake.dir.path().join("calls.txt");
        wait_for(&calls);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(codes(&handler.cancel(&fixture.ctx())), (800, 0));
        running.join().unwrap()
    });
    assert_eq!(result.result_code, ResultCode::FAILURE_CANCELLED);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn apt_step_errors() {
    let fake = FakeAptGet::new();
    let handler = fake.handler();

    // No installed criteria: every call fails, nothing runs.
    let fixture = apt_step("libcurl4-doc-apt-manifest.json", None);
    for result in [handler.is_installed(&fixture.ctx()), handler.install(&fixture.ctx()), handler.apply(&fixture.ctx())]
    {
        assert_eq!(codes(&result), (0, 0x3020_0007));
    }
    // From handlerProperties, it counts.
    let mut fixture = apt_step("libcurl4-doc-apt-manifest.json", None);
    fixture.properties.insert("installedCriteria".into(), json!("from-properties"));
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (901, 0));

    // File count.
    let mut fixture = apt_step("libcurl4-doc-apt-manifest.json", Some("c"));
    fixture.files.push(fixture.sandbox.join("second.json"));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3020_0004));
    fixture.files.clear();
    assert_eq!(codes(&handler.apply(&fixture.ctx())), (0, 0x3020_0004));
    // Unreadable manifest.
    fixture.files = vec![fixture.sandbox.join("absent.json")];
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3020_0005));
    // Not JSON; JSON but not a manifest.
    let path = fixture.sandbox.join("bad.json");
    fixture.files = vec![path.clone()];
    fs::write(&path, "{ nope").unwrap();
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3020_0001));
    for bad in [
        json!([]),
        json!({"version": "1", "packages": [{"name": "a"}]}),
        json!({"name": "n", "packages": [{"name": "a"}]}),
        json!({"name": "n", "version": "1", "packages": []}),
        json!({"name": "n", "version": "1"}),
        json!({"name": "n", "version": "1", "packages": [{"name": "-o"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "--allow-unauthenticated"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "a b"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "a=1"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "-"}]}),
        json!({"name": "n", "version": "1", "packages": [{"version": "1"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "a", "version": "1 -o x"}]}),
        json!({"name": "n", "version": "1", "packages": [{"name": "a"}], "agentRestartRequired": "yes"}),
    ] {
        fs::write(&path, bad.to_string()).unwrap();
        assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3020_0002), "{bad}");
        assert_eq!(codes(&handler.apply(&fixture.ctx())), (0, 0x3020_0002), "{bad}");
    }
    assert!(fake.calls().is_empty(), "no apt-get for a bad step: {:?}", fake.calls());
    assert!(!fixture.data_dir.join("installedcriteria").exists());
}

#[test]
fn apt_installed_criteria_file_edge_cases() {
    let fake = FakeAptGet::new();
    let handler = fake.handler();
    let fixture = apt_step("libcurl4-doc-apt-manifest.json", Some("c"));
    let file = fixture.data_dir.join("installedcriteria");
    // Another state, or a corrupt file: not installed; apply starts the corrupt file afresh.
    fs::write(&file, r#"[{"installedCriteria": "c", "state": "removed"}, "junk"]"#).unwrap();
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (901, 0));
    fs::write(&file, "not json").unwrap();
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (901, 0));
    assert_eq!(codes(&handler.apply(&fixture.ctx())), (700, 0));
    let records: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(records, json!([{"installedCriteria": "c", "state": "installed"}]));
    // Unreadable (a folder): is-installed and apply fail with their own codes.
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    assert_eq!(codes(&handler.is_installed(&fixture.ctx())), (0, apt::INSTALLED_CRITERIA_UNREADABLE.0));
    assert_eq!(codes(&handler.apply(&fixture.ctx())), (0, 0x3020_0006));
}

#[test]
fn apt_manifest_parsing() {
    let manifest =
        apt::AptManifest::parse(&fs::read(apt_fixture("libcurl4-doc-7.58-apt-manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest,
        apt::AptManifest {
            name: "Sample package update 2".into(),
            version: "2.0.1".into(),
            install: vec!["libcurl4-doc=7.58.0-2ubuntu3.12".into()],
            remove: vec![],
            agent_restart_required: false,
        }
    );
    let mixed = br#"{"name":"n","version":"1","packages":[{"name":"a:amd64","version":"1:2.0~rc1+b1"},{"name":"old-"},{"name":"b","version":""}]}"#;
    let manifest = apt::AptManifest::parse(mixed).unwrap();
    assert_eq!(manifest.install, ["a:amd64=1:2.0~rc1+b1", "b"]);
    assert_eq!(manifest.remove, ["old"]);
}

// --- microsoft/swupdate:2 ---------------------------------------------------------------------

#[test]
fn swupdate_argv_resolves_swu_files_and_adds_runtime_options() {
    let mut fixture = Fixture::new(json!({
        "scriptFileName": "update.sh",
        "arguments": "--restart-agent --swu-file image.swu --component-name-val",
        "swuFileName": "image.swu",
        "installedCriteria": "1.0.2",
    }));
    fixture.script("update.sh", r#"result 600 0 "ok""#);
    fs::write(fixture.sandbox.join("image.swu"), "swu").unwrap();
    let result = SwUpdateHandler::new(None).install(&fixture.ctx());
    assert_eq!(codes(&result), (600, 0));
    let s = fixture.sandbox_str();
    assert_eq!(
        fixture.args(),
        [
            "--action-install",
            "--swu-file",
            &format!("{s}/image.swu"),
            "--restart-agent",
            "--swu-file",
            &format!("{s}/image.swu"),
            "n/a",
            "--work-folder",
            &s,
            "--output-file",
            &format!("{s}/action_install_output.txt"),
            "--log-file",
            &format!("{s}/action_install_script.log"),
            "--result-file",
            &format!("{s}/action_install_aduc_result.json"),
            "--installed-criteria",
            "1.0.2",
        ]
    );

    // apiVersion 1.1, --image-file, no swuFileName, no criteria.
    let mut fixture = Fixture::new(json!({
        "scriptFileName": "update.sh", "apiVersion": "1.1", "arguments": "--image-file a.swu",
    }));
    fixture.script("update.sh", r#"result 901 0 """#);
    assert_eq!(codes(&SwUpdateHandler::new(None).is_installed(&fixture.ctx())), (901, 0));
    let s = fixture.sandbox_str();
    assert_eq!(
        fixture.args(),
        [
            "--action",
            "is-installed",
            "--image-file",
            &format!("{s}/a.swu"),
            "--work-folder",
            &s,
            "--output-file",
            &format!("{s}/action_is-installed_output.txt"),
            "--log-file",
            &format!("{s}/action_is-installed_script.log"),
            "--result-file",
            &format!("{s}/action_is-installed_aduc_result.json"),
        ]
    );
}

#[test]
fn swupdate_passes_the_configuration_file_options_after_the_image() {
    let config_dir = tempfile::tempdir().unwrap();
    // The official sample (spec/vectors/config/...sample_swupdate_config.json), in file order.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/config/src__extensions__step_handlers__swupdate_handler_v2__tests__testdata__adu-yocto-ab-rootfs-update__sample_swupdate_config.json",
    );
    let properties = json!({"scriptFileName": "update.sh", "swuFileName": "image.swu", "arguments": "--extra x"});
    let mut fixture = Fixture::new(properties.clone());
    fixture.script("update.sh", r#"result 600 0 "ok""#);
    fs::write(fixture.sandbox.join("image.swu"), "swu").unwrap();
    let handler = SwUpdateHandler::new(None).with_config_file(Some(sample));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (600, 0));
    let s = fixture.sandbox_str();
    assert_eq!(
        fixture.args()[..10],
        [
            "--action-install",
            "--swu-file",
            &format!("{s}/image.swu"),
            "--log-file",
            "/adu/logs/swupdate.log",
            "--public-key-file",
            "/adukey/pubic.pem",
            "--software-version-file",
            "/etc/adu/adu-version",
            "--extra",
        ]
    );

    // A configured file that does not exist adds nothing.
    let missing = SwUpdateHandler::new(None).with_config_file(Some(config_dir.path().join("none.json")));
    assert_eq!(codes(&missing.install(&fixture.ctx())), (600, 0));
    assert_eq!(fixture.args()[..4], ["--action-install", "--swu-file", &format!("{s}/image.swu"), "--extra"]);

    // A broken one fails the step, naming the file and the problem, and runs nothing.
    for (content, why) in [
        ("{not json", "not JSON"),
        ("[\"--a\", \"b\"]", "not a JSON object"),
        ("{\"--level\": 3}", "\"--level\" is not a string"),
    ] {
        let file = config_dir.path().join("swupdate-handler-config.json");
        fs::write(&file, content).unwrap();
        let mut fixture = Fixture::new(properties.clone());
        fixture.script("update.sh", r#"result 600 0 "ok""#);
        fs::write(fixture.sandbox.join("image.swu"), "swu").unwrap();
        let result = SwUpdateHandler::new(None).with_config_file(Some(file)).install(&fixture.ctx());
        assert_eq!(codes(&result), (0, swupdate::BAD_CONFIG_FILE.0), "{content}");
        let details = result.result_details.unwrap_or_default();
        assert!(details.contains("swupdate-handler-config.json") && details.contains(why), "{details}");
        assert!(!fixture.sandbox.join("args.txt").exists(), "the script did not run for {content}");
    }
}

#[test]
fn swupdate_codes() {
    let handler = SwUpdateHandler::new(None);
    let fixture = Fixture::new(json!({}));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_0007));
    let fixture = Fixture::new(json!({"scriptFileName": "absent.sh"}));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_0107));

    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh", "swuFileName": "image.swu"}));
    fixture.script("s.sh", r#"[ "$action" = install ] && exit 4; result 0 0 "no code""#);
    // The image must be there for install (not for is-installed or apply).
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_0202));
    assert!(!fixture.sandbox.join("args.txt").exists(), "the script did not run");
    assert_eq!(codes(&handler.apply(&fixture.ctx())), (0, swupdate::FAILURE_WITHOUT_ERC.0));
    fs::write(fixture.sandbox.join("image.swu"), "swu").unwrap();
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_1004));
    assert_eq!(swupdate::exit_code_erc(4), ExtendedResultCode(0x3010_1004));

    for properties in [
        json!({"scriptFileName": "s.sh", "swuFileName": "../image.swu"}),
        json!({"scriptFileName": "s.sh", "arguments": "--swu-file"}),
        json!({"scriptFileName": "s.sh", "arguments": "--swu-file /etc/passwd"}),
    ] {
        let mut fixture = Fixture::new(properties.clone());
        fixture.script("s.sh", r#"result 600 0 """#);
        assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_0008), "{properties}");
    }

    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fixture.script("s.sh", "exit 0");
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, 0x3010_0205));
    fixture.script("s.sh", "sleep 30");
    let slow = SwUpdateHandler::new(Some(Duration::from_millis(200)));
    assert_eq!(codes(&slow.install(&fixture.ctx())), (0, swupdate::TIMED_OUT.0));
    let mut fixture = Fixture::new(json!({"scriptFileName": "s.sh"}));
    fs::write(fixture.sandbox.join("s.sh"), "#!/nonexistent/interpreter\n").unwrap();
    fixture.files.push(fixture.sandbox.join("s.sh"));
    assert_eq!(codes(&handler.install(&fixture.ctx())), (0, swupdate::SPAWN_FAILED.0));
}

#[test]
fn swupdate_cancel_kills_the_script() {
    let mut fixture = Fixture::new(json!({"scriptFileName": "slow.sh"}));
    fixture.script("slow.sh", r#"touch "$dir/started"; sleep 30; result 600 0 """#);
    let handler = SwUpdateHandler::new(None);
    let result = std::thread::scope(|scope| {
        let running = scope.spawn(|| handler.install(&fixture.ctx()));
        wait_for(&fixture.sandbox.join("started"));
        assert_eq!(codes(&handler.cancel(&fixture.ctx())), (800, 0));
        running.join().unwrap()
    });
    assert_eq!(result.result_code, ResultCode::FAILURE_CANCELLED);
}
