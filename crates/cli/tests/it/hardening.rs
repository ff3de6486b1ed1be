//! Issue 11 (hardening), on the real `duhub serve` process: one node per data directory, a
//! data directory that cannot be written fails at once with the cause, and the owner's
//! connection string stays off a stdout that is not a terminal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use duhub_testkit::ServeProcess;
use predicates::prelude::*;

use crate::support::{duhub, temp_dir};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duhub"))
}

/// `serve` arguments for `data_dir` on loopback with free ports.
fn serve_args(data_dir: &std::path::Path) -> Vec<String> {
    ["serve", "--data-dir", &data_dir.display().to_string()]
        .into_iter()
        .chain(["--hostname", "localhost", "--bind", "127.0.0.1", "--https-port", "0", "--mqtt-port", "0", "--json"])
        .map(str::to_owned)
        .collect()
}

/// Issue 11 item 4: a second `duhub serve` on the same data directory started silently,
/// rewrote admin.json and split the devices' sessions. Now it refuses, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_data_directory_is_refused() {
    let root = temp_dir();
    let data_dir = root.path().join("data");
    let first = ServeProcess::start(&binary(), &data_dir, None).await.unwrap();
    let admin_before = std::fs::read(data_dir.join("admin.json")).unwrap();
    let started = Instant::now();
    duhub()
        .args(serve_args(&data_dir))
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("process {}", first.id())))
        .stderr(predicate::str::contains("in use by another duhub node"));
    assert!(started.elapsed() < Duration::from_secs(30), "refusing took {:?}", started.elapsed());
    assert_eq!(std::fs::read(data_dir.join("admin.json")).unwrap(), admin_before, "admin.json was rewritten");
    // The first node still serves.
    let service = first.service().unwrap();
    service.create_device("still-here").await.unwrap();
    // Once it is gone (even by SIGKILL: the kernel drops the lock), a node starts there again.
    drop(first);
    let again = ServeProcess::start(&binary(), &data_dir, None).await.unwrap();
    assert_eq!(again.service().unwrap().device("still-here").await.unwrap()["deviceId"], "still-here");
}

/// Issue 11 item 7: a read-only data directory made `serve` wait 30 s and say "pool timed out".
/// Now it fails at once with the file system's error. Root ignores file modes, so the test
/// mounts the directory read-only in a mount namespace of its own (skipped where that is not
/// allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_directory_fails_at_once_with_the_cause() {
    let root = temp_dir();
    let data_dir = root.path().join("data");
    drop(ServeProcess::start(&binary(), &data_dir, None).await.unwrap());
    let can_mount = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$0\"",
            &root.path().display().to_string(),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !can_mount {
        eprintln!("skipped: cannot make a read-only mount here (unshare --mount and mount --bind need privileges)");
        return;
    }
    let script = "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && exec \"$@\"";
    let started = Instant::now();
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, &data_dir.display().to_string()])
        .arg(binary())
        .args(serve_args(&data_dir))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started on a read-only data directory: {stderr}");
    assert!(elapsed < Duration::from_secs(10), "failing took {elapsed:?} (a pool timeout?): {stderr}");
    assert!(stderr.contains("Read-only file system"), "the error names the cause: {stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");
}

/// Issue 11 item 7: `serve` printed the owner's connection string on stdout, which under
/// systemd lands in the journal. Off a terminal it now says where it is instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_string_is_not_printed_off_a_terminal() {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("json"), None).await.unwrap();
    assert_eq!(node.info["serviceConnectionString"], serde_json::Value::Null, "{}", node.info);
    let key = node.admin.service_connection_string.split("SharedAccessKey=").nth(1).unwrap().to_owned();
    assert!(!node.info.to_string().contains(&key));
    drop(node);

    // Without --json: the banner, read until its last line, then the node is stopped.
    let data_dir = root.path().join("banner");
    let mut args = serve_args(&data_dir);
    args.pop();
    let mut child = std::process::Command::new(binary())
        .args(&args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("Import an update") {
                break;
            }
        }
        text
    });
    let banner = tokio::time::timeout(Duration::from_secs(60), banner).await.unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let admin = duhub_server::server::read_admin(&data_dir.join("admin.json")).unwrap();
    let key = admin.service_connection_string.split("SharedAccessKey=").nth(1).unwrap().to_owned();
    assert!(!banner.contains(&key), "the owner key was printed:\n{banner}");
    assert!(banner.contains("serviceConnectionString in"), "{banner}");
    assert!(banner.contains(&data_dir.join("admin.json").display().to_string()), "{banner}");
}

/// The `connectionState` a node's REST API shows for a device.
async fn connection_state(node: &ServeProcess, device_id: &str) -> String {
    let device = node.service().unwrap().device(device_id).await.unwrap();
    device["connectionState"].as_str().unwrap_or_default().to_owned()
}

/// Polls until `device_id` shows `wanted` on `node`, at most `timeout`.
async fn wait_for_state(node: &ServeProcess, device_id: &str, wanted: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let state = connection_state(node, device_id).await;
        if state == wanted {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{device_id} is still {state} after {timeout:?}\nlog:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 11 item 5: after kill -9 and a restart, devices that were connected still showed
/// `Connected`. A restarted node releases its previous run's sessions before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_kill_9_records_the_old_sessions_as_disconnected() {
    let root = temp_dir();
    let data_dir = root.path().join("data");
    let mut node = ServeProcess::start(&binary(), &data_dir, None).await.unwrap();
    let (key, _) = node.service().unwrap().create_device("crashed").await.unwrap();
    let device = node.connect_device("crashed", &key).await;
    wait_for_state(&node, "crashed", "Connected", Duration::from_secs(10)).await;
    node.kill();
    drop(device);
    let node = ServeProcess::start(&binary(), &data_dir, None).await.unwrap();
    assert_eq!(connection_state(&node, "crashed").await, "Disconnected", "log:\n{}", node.log());
    // And it connects again as usual.
    let _device = node.connect_device("crashed", &key).await;
    wait_for_state(&node, "crashed", "Connected", Duration::from_secs(10)).await;
}

/// Issue 11 item 5 with several nodes: when a PostgreSQL node is killed, another node records
/// its devices as disconnected once its lease runs out; its own devices stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_devices_are_released_by_another_node_after_its_lease() {
    let Some(url) = duhub_testkit::postgres_url().await else {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    };
    let database = duhub_testkit::TestDatabase::create(&url).await.unwrap();
    let root = temp_dir();
    let config = root.path().join("node.toml");
    std::fs::write(&config, "node_lease_ms = 1500\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let (dir_a, dir_b) = (root.path().join("node-a"), root.path().join("node-b"));
    let mut node_a = ServeProcess::start_with_args(&binary(), &dir_a, Some(&database.url), &args).await.unwrap();
    std::fs::create_dir_all(dir_b.join("tls")).unwrap();
    for name in std::fs::read_dir(dir_a.join("tls")).unwrap() {
        let path = name.unwrap().path();
        std::fs::copy(&path, dir_b.join("tls").join(path.file_name().unwrap())).unwrap();
    }
    let node_b = ServeProcess::start_with_args(&binary(), &dir_b, Some(&database.url), &args).await.unwrap();
    let service = node_b.service().unwrap();
    let (key_a, _) = service.create_device("on-a").await.unwrap();
    let (key_b, _) = service.create_device("on-b").await.unwrap();
    let device_a = node_a.connect_device("on-a", &key_a).await;
    let mut device_b = node_b.connect_device("on-b", &key_b).await;
    wait_for_state(&node_b, "on-a", "Connected", Duration::from_secs(10)).await;
    node_a.kill();
    drop(device_a);
    let released = wait_for_state(&node_b, "on-a", "Disconnected", Duration::from_secs(20)).await;
    assert!(released >= Duration::from_millis(500), "released after {released:?}, before the lease could run out");
    assert_eq!(connection_state(&node_b, "on-b").await, "Connected");
    device_b.get_twin().await.unwrap();
    drop(node_b);
    database.drop_database().await.unwrap();
}
