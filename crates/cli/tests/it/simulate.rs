//! `duhub simulate`: rehearsals on real `duhub serve` processes with hundreds of simulated
//! agents, checked against what the service itself reports.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use duhub_testkit::{DuClient, ServeProcess, TestDatabase, postgres_url};
use serde_json::Value;

use crate::support::{assert_help, duhub, json_of, temp_dir, write_file};

/// The built `duhub` binary.
pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duhub"))
}

/// The `admin.json` of a node.
pub(crate) fn admin_path(node: &ServeProcess) -> PathBuf {
    PathBuf::from(node.info["admin"].as_str().unwrap())
}

/// Imports `contoso/sim/VERSION`, compatible with models `a` and `b` of contoso, with one 64 KiB
/// file, through the CLI.
pub(crate) fn import_update(dir: &Path, admin: &Path, version: &str) {
    let payload: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    write_file(dir, "payload.bin", &payload);
    let init = duhub()
        .current_dir(dir)
        .args(["update", "init", "v5", "--update-provider", "contoso", "--update-name", "sim"])
        .args(["--update-version", version])
        .args(["--compat", "manufacturer=contoso", "model=a", "--compat", "manufacturer=contoso", "model=b"])
        .args(["--step", "handler=microsoft/script:1", &format!("properties={{\"installedCriteria\":\"{version}\"}}")])
        .args(["--file", "path=./payload.bin"])
        .assert()
        .success();
    let manifest = dir.join(format!("sim-{version}.importmanifest.json"));
    std::fs::write(&manifest, &init.get_output().stdout).unwrap();
    duhub()
        .current_dir(dir)
        .args(["update", "import", "--json", "--admin"])
        .arg(admin)
        .arg(&manifest)
        .assert()
        .success();
}

/// `duhub simulate ARGS --json --admin ADMIN` in `dir`, without the caller's RUST_LOG.
fn simulate_command(dir: &Path, admin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .current_dir(dir)
        .arg("simulate")
        .args(args)
        .args(["--json", "--admin"])
        .arg(admin)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// [`simulate_command`] started with stdout and stderr piped.
pub(crate) fn spawn_simulate(dir: &Path, admin: &Path, args: &[&str]) -> std::process::Child {
    simulate_command(dir, admin, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Runs `duhub simulate` with `args` to its end: exit code and report.
fn simulate(dir: &Path, admin: &Path, args: &[&str]) -> (i32, Value) {
    let output = simulate_command(dir, admin, args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.stdout.is_empty(), "no report; stderr:\n{stderr}");
    (output.status.code().unwrap_or(-1), json_of(&output.stdout))
}

/// The device numbers (without prefix) of the failed devices of a report.
fn failed_numbers(report: &Value, prefix: &str) -> BTreeSet<String> {
    report["failedDevices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().strip_prefix(prefix).unwrap().to_owned())
        .collect()
}

pub(crate) const TWO_CLASSES: &str = r#"
[[population]]
manufacturer = "contoso"
model = "a"
fraction = 0.5

[[population]]
manufacturer = "contoso"
model = "b"
fraction = 0.5

[install]
latency_ms = [0, 50]
result_code = 0
extended_result_code = 0x30300F42
"#;

#[test]
fn simulate_has_help_with_its_options() {
    assert_help(
        &["simulate"],
        &[
            "--devices <N>",
            "--scenario <FILE>",
            "--fail-percent <P>",
            "--seed <S>",
            "--sources",
            "--server",
            "--deploy",
            "--until-done",
            "--json",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_with_ten_percent_failing_end_exactly_as_the_service_reports() {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("node"), None).await.unwrap();
    let admin = admin_path(&node);
    import_update(root.path(), &admin, "1.0");
    write_file(root.path(), "two-classes.toml", TWO_CLASSES.as_bytes());
    let run = |prefix: &'static str, group: &'static str| {
        let (dir, admin) = (root.path().to_owned(), admin.clone());
        move || {
            simulate(
                &dir,
                &admin,
                &[
                    "--devices",
                    "200",
                    "--prefix",
                    prefix,
                    "--group",
                    group,
                    "--scenario",
                    "two-classes.toml",
                    "--fail-percent",
                    "10",
                    "--seed",
                    "42",
                    "--deploy",
                    "contoso/sim/1.0",
                    "--until-done",
                    "--data-dir",
                    &format!("sim-{group}"),
                ],
            )
        }
    };
    let (code, report) = tokio::task::spawn_blocking(run("first-", "first")).await.unwrap();
    assert_eq!(code, 0, "{report:#}\nserver log:\n{}", node.log());
    assert_eq!((report["succeeded"].as_u64(), report["failed"].as_u64()), (Some(180), Some(20)), "{report:#}");
    let counts = &report["serviceCounts"];
    assert_eq!(
        (
            counts["total"].as_u64(),
            counts["succeeded"].as_u64(),
            counts["failed"].as_u64(),
            counts["inProgress"].as_u64()
        ),
        (Some(200), Some(180), Some(20), Some(0)),
        "{report:#}"
    );
    assert_eq!(report["agreed"], true);
    assert_eq!(report["unexpected"], 0);
    assert!(report["serviceAgreedSeconds"].as_f64().unwrap() >= report["allTerminalSeconds"].as_f64().unwrap());
    assert!(report["bytesDownloaded"].as_u64().unwrap() >= 200 * 65_536, "{report:#}");
    assert!(report["peakRssBytes"].as_u64().unwrap() > 0);

    // What the service holds for each failed device is the scenario's failure.
    let du = DuClient::new(&node.admin.https_url, "default", &node.admin.api_token, &node.ca_pem).unwrap();
    let first_failed = failed_numbers(&report, "first-");
    assert_eq!(first_failed.len(), 20);
    for number in &first_failed {
        let device = du.get(&format!("/management/devices/first-{number}?api-version=2022-10-01")).await.unwrap();
        assert_eq!(device["deploymentStatus"], "Failed", "{device:#}");
        assert_eq!(device["lastInstallResult"]["extendedResultCode"], 0x3030_0F42, "{device:#}");
        assert_eq!(device["lastInstallResult"]["resultCode"], 0, "{device:#}");
    }
    // Both classes took part.
    let classes = du.get("/management/groups/first/deviceClassSubgroups?api-version=2022-10-01").await.unwrap();
    assert_eq!(classes["value"].as_array().map(Vec::len), Some(2), "{classes:#}");

    // The same seed fails the same devices (fresh ones, another group).
    let (code, again) = tokio::task::spawn_blocking(run("second-", "second")).await.unwrap();
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(failed_numbers(&again, "second-"), first_failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboots_restarts_outages_and_absent_devices_end_correct() {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("node"), None).await.unwrap();
    let admin = admin_path(&node);
    import_update(root.path(), &admin, "1.0");
    let scenario = r#"
        seed = 5
        reboot = 0.1
        restart = 0.1
        reboot_ms = [200, 600]
        offline_during_download = 0.1
        offline_ms = [300, 800]
        never_connect = 0.05
        [[population]]
        manufacturer = "contoso"
        model = "a"
        fraction = 1
        [download]
        latency_ms = [0, 100]
        [install]
        fail = 0.1
        extended_result_code = 0x30300F43
        [apply]
        latency_ms = [0, 100]
    "#;
    write_file(root.path(), "scenario.toml", scenario.as_bytes());
    let dir = root.path().to_owned();
    let (code, report) = tokio::task::spawn_blocking(move || {
        simulate(
            &dir,
            &admin,
            &["--devices", "60", "--scenario", "scenario.toml", "--deploy", "contoso/sim/1.0", "--until-done"],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report:#}\nserver log:\n{}", node.log());
    assert_eq!(report["neverConnected"], 3, "{report:#}");
    assert_eq!(report["connected"], 57);
    assert_eq!((report["succeeded"].as_u64(), report["failed"].as_u64()), (Some(51), Some(6)), "{report:#}");
    let counts = &report["serviceCounts"];
    assert_eq!((counts["total"].as_u64(), counts["succeeded"].as_u64()), (Some(57), Some(51)), "{report:#}");
    assert_eq!(report["unexpected"], 0, "{report:#}");
    // The offline devices resumed their downloads: no file was fetched twice in full.
    assert!(report["bytesDownloaded"].as_u64().unwrap() < 58 * 65_536, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_deployment_leaves_exact_counts() {
    let Some(url) = postgres_url().await else {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    };
    let database = TestDatabase::create(&url).await.unwrap();
    let root = temp_dir();
    let (dir_a, dir_b) = (root.path().join("node-a"), root.path().join("node-b"));
    let node_a = ServeProcess::start(&binary(), &dir_a, Some(&database.url)).await.unwrap();
    crate::cluster::copy_dir(&dir_a.join("tls"), &dir_b.join("tls"));
    // Node B sends devices to node A for files, as a load balancer in front of both would.
    let mut node_b = ServeProcess::start_with_args(
        &binary(),
        &dir_b,
        Some(&database.url),
        &["--public-url", &node_a.admin.https_url],
    )
    .await
    .unwrap();
    let admin = admin_path(&node_a);
    import_update(root.path(), &admin, "1.0");
    let scenario = "[[population]]\nmanufacturer = \"contoso\"\nmodel = \"b\"\nfraction = 1\n\
                    [install]\nlatency_ms = [1500, 4000]\n";
    write_file(root.path(), "scenario.toml", scenario.as_bytes());
    let servers = format!("127.0.0.1:{},127.0.0.1:{}", node_a.mqtt.port(), node_b.mqtt.port());
    let mut child = spawn_simulate(
        root.path(),
        &admin,
        &[
            "--devices",
            "300",
            "--scenario",
            "scenario.toml",
            "--server",
            &servers,
            "--deploy",
            "contoso/sim/1.0",
            "--until-done",
        ],
    );
    // Kill node B once the deployment was requested (every install then takes 1.5 s or more).
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (deployed_tx, deployed) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut deployed_tx = Some(deployed_tx);
        let mut lines = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("deploying")
                && let Some(tx) = deployed_tx.take()
            {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    tokio::time::timeout(std::time::Duration::from_secs(300), deployed).await.unwrap().unwrap();
    node_b.kill();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let log = reader.join().unwrap().join("\n");
    let report = json_of(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{report:#}\nsimulator:\n{log}\nnode A:\n{}", node_a.log());
    assert_eq!(report["succeeded"], 300, "{report:#}");
    let counts = &report["serviceCounts"];
    assert_eq!((counts["total"].as_u64(), counts["succeeded"].as_u64()), (Some(300), Some(300)), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_deployment_it_runs_until_interrupted_and_stops_every_agent() {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("node"), None).await.unwrap();
    let admin = admin_path(&node);
    let mut child = spawn_simulate(root.path(), &admin, &["--devices", "20"]);
    // Every device connected: the service says so.
    let service = node.service().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let mut connected = 0;
        for i in 0..20 {
            if let Ok(device) = service.device(&format!("sim-{i:04}")).await
                && device["connectionState"] == "Connected"
            {
                connected += 1;
            }
        }
        if connected == 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{connected} of 20 devices connected\n{}", node.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Ctrl-C.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.stdin.take();
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping the agents"), "{stderr}");
    assert!(!stderr.contains("did not stop"), "{stderr}");
    let summary = json_of(&output.stdout);
    assert_eq!(summary["connected"], 20, "{summary:#}");
    // Each agent disconnected politely: the service shows them all disconnected.
    loop {
        let mut disconnected = 0;
        for i in 0..20 {
            if service.device(&format!("sim-{i:04}")).await.unwrap()["connectionState"] == "Disconnected" {
                disconnected += 1;
            }
        }
        if disconnected == 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{disconnected} of 20 devices disconnected");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
