//! Phased rollouts on simulated fleets (`duhub simulate` against real `duhub serve` processes):
//! the failure gate pauses the first wave and no later device is ever told, promote and abort,
//! and a server killed with SIGKILL mid-rollout continues where it was.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use duhub_testkit::{DuClient, ServeProcess};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::simulate::{TWO_CLASSES, admin_path, binary, import_update, spawn_simulate};
use crate::support::{temp_dir, write_file};

const WAIT: Duration = Duration::from_secs(240);

fn du_of(node: &ServeProcess) -> DuClient {
    DuClient::new(&node.admin.https_url, "default", &node.admin.api_token, &node.ca_pem).unwrap()
}

/// Waits until `GET path` passes `wanted`.
async fn until(
    du: &DuClient,
    path: &str,
    what: &str,
    log: impl Fn() -> String,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(current) = du.get(path).await {
            if wanted(&current) {
                return current;
            }
            assert!(tokio::time::Instant::now() < deadline, "waiting for {what}: {current:#}\n{}", log());
        }
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}: no answer\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn devices_told(node: &ServeProcess, prefix: &str, count: usize) -> usize {
    let service = node.service().unwrap();
    let mut told = 0;
    for i in 0..count {
        let twin = service.twin(&format!("{prefix}{i:04}")).await.unwrap();
        if twin.pointer("/properties/desired/deviceUpdate/service/workflow/id").is_some() {
            told += 1;
        }
    }
    told
}

async fn deploy_with_rollout(du: &DuClient, group: &str, id: &str, rollout: Value) {
    du.expect(
        Method::PUT,
        &format!("/management/groups/{group}/deployments/{id}"),
        Some(&json!({"deploymentId": id, "groupId": group, "startDateTime": "2026-01-01T00:00:00Z",
            "update": {"updateId": {"provider": "contoso", "name": "sim", "version": "1.0"}},
            "rollout": rollout})),
        StatusCode::OK,
    )
    .await
    .unwrap();
}

fn interrupt(mut child: Child) {
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
}

async fn start_fleet(
    dir: &Path,
    admin: &Path,
    du: &DuClient,
    group: &str,
    args: &[&str],
    devices: u64,
    log: impl Fn() -> String,
) -> Child {
    let mut all = vec!["--group", group];
    all.extend_from_slice(args);
    let child = spawn_simulate(dir, admin, &all);
    until(du, &format!("/management/groups/{group}"), "every device reported", log, |g| g["deviceCount"] == devices)
        .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_gate_pauses_the_first_wave_and_no_later_device_is_ever_told() {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("node"), None).await.unwrap();
    let admin = admin_path(&node);
    import_update(root.path(), &admin, "1.0");
    write_file(root.path(), "two-classes.toml", TWO_CLASSES.as_bytes());
    let du = du_of(&node);
    let log = || node.log();
    let args = ["--devices", "200", "--scenario", "two-classes.toml", "--fail-percent", "50", "--seed", "7"];
    let fleet = start_fleet(root.path(), &admin, &du, "canary", &args, 200, log).await;
    deploy_with_rollout(
        &du,
        "canary",
        "r1",
        json!({"waves": ["10%", "50%", "100%"], "maxFailurePercent": 20, "minExecuted": 10, "onFailure": "pause"}),
    )
    .await;
    let path = "/management/groups/canary/deployments/r1/rollout";
    let paused = until(&du, path, "the gate to trip", log, |r| r["status"] == "Paused").await;
    assert_eq!(paused["currentWave"], 0, "{paused:#}");
    assert_eq!(paused["waves"][0]["counts"]["devices"], 20, "10 % of each of the two classes: {paused:#}");
    assert_eq!(paused["totals"]["started"], 20, "{paused:#}");
    let tripped = paused["history"].as_array().unwrap().iter().find(|e| e["event"] == "tripped").unwrap();
    assert_eq!(tripped["cause"]["kind"], "failureGate");
    let executed = tripped["counts"]["succeeded"].as_u64().unwrap() + tripped["counts"]["failed"].as_u64().unwrap();
    assert!(executed >= 10, "{tripped:#}");
    assert!(tripped["counts"]["failed"].as_u64().unwrap() * 100 > 20 * executed, "{tripped:#}");
    // Only the first wave was told, and it stays so once its devices finished.
    let settled =
        until(&du, path, "wave 1 to finish", log, |r| r["totals"]["inProgress"] == 0 && r["totals"]["baking"] == 0)
            .await;
    assert_eq!(settled["status"], "Paused");
    assert_eq!(devices_told(&node, "sim-", 200).await, 20);

    // Promote: wave 2 starts (its failures trip the gate again), then abort cancels the rest.
    let promoted = du
        .expect(Method::POST, "/management/groups/canary/deployments/r1:promote", None, StatusCode::OK)
        .await
        .unwrap();
    assert_eq!((promoted["status"].as_str(), promoted["currentWave"].as_u64()), (Some("Running"), Some(1)));
    until(&du, path, "wave 2 started", log, |r| r["totals"]["started"] == 100).await;
    let aborted =
        du.expect(Method::POST, "/management/groups/canary/deployments/r1:abort", None, StatusCode::OK).await.unwrap();
    assert_eq!(aborted["status"], "Aborted");
    let status = until(&du, "/management/groups/canary/deployments/r1/status", "nothing in progress", log, |s| {
        s["subgroupStatus"]
            .as_array()
            .is_some_and(|subgroups| subgroups.iter().all(|g| g["devicesInProgressCount"] == 0))
    })
    .await;
    let sum = |name: &str| -> u64 {
        status["subgroupStatus"].as_array().unwrap().iter().map(|g| g[name].as_u64().unwrap()).sum()
    };
    let (succeeded, failed, canceled) =
        (sum("devicesCompletedSucceededCount"), sum("devicesCompletedFailedCount"), sum("devicesCanceledCount"));
    assert_eq!(succeeded + failed + canceled, 200, "{status:#}");
    assert!(canceled >= 100, "the third wave's devices are cancelled: {status:#}");
    assert_eq!(devices_told(&node, "sim-", 200).await, 100, "the third wave was never told anything");
    interrupt(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_continues_where_it_was_after_the_server_is_killed() {
    let root = temp_dir();
    let node_dir = root.path().join("node");
    let mut node = ServeProcess::start(&binary(), &node_dir, None).await.unwrap();
    let admin = admin_path(&node);
    import_update(root.path(), &admin, "1.0");
    let scenario = "[[population]]\nmanufacturer = \"contoso\"\nmodel = \"a\"\nfraction = 1\n\
                    [install]\nlatency_ms = [300, 2500]\n";
    write_file(root.path(), "slow.toml", scenario.as_bytes());
    let args = ["--devices", "100", "--scenario", "slow.toml", "--data-dir", "fleet"];
    let du = du_of(&node);
    let fleet = start_fleet(root.path(), &admin, &du, "plant", &args, 100, || node.log()).await;
    deploy_with_rollout(&du, "plant", "r1", json!({"waves": ["10%", "100%"], "approveWaves": true})).await;
    let path = "/management/groups/plant/deployments/r1/rollout";
    until(&du, path, "wave 1 to pass", || node.log(), |r| r["status"] == "AwaitingApproval").await;
    du.expect(Method::POST, "/management/groups/plant/deployments/r1:promote", None, StatusCode::OK).await.unwrap();
    let before = until(
        &du,
        path,
        "wave 2 under way",
        || node.log(),
        |r| r["totals"]["started"] == 100 && r["totals"]["succeeded"].as_u64().is_some_and(|s| s > 10),
    )
    .await;
    assert!(before["totals"]["succeeded"].as_u64().unwrap() < 100, "killed mid-wave: {before:#}");
    // SIGKILL the server and the fleet; restart both on the same data.
    node.kill();
    interrupt(fleet);
    // The same addresses: the file URLs devices were told stay valid.
    let (https, mqtt) = (node.https.port().to_string(), node.mqtt.port().to_string());
    let node =
        ServeProcess::start_with_args(&binary(), &node_dir, None, &["--https-port", &https, "--mqtt-port", &mqtt])
            .await
            .unwrap();
    let du = du_of(&node);
    let after = du.get(path).await.unwrap();
    assert_eq!(after["currentWave"], 1, "{after:#}");
    assert_eq!(after["waves"][0]["startedDateTime"], before["waves"][0]["startedDateTime"]);
    assert_eq!(after["waves"][1]["startedDateTime"], before["waves"][1]["startedDateTime"]);
    let fleet = start_fleet(root.path(), &admin, &du, "plant", &args, 100, || node.log()).await;
    let done = until(&du, path, "completed", || node.log(), |r| r["status"] == "Completed").await;
    assert_eq!(done["totals"]["succeeded"], 100, "{done:#}");
    let events: Vec<&str> = done["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["waveStarted", "awaitingApproval", "promoted", "completed"], "no wave restarted: {done:#}");
    interrupt(fleet);
}
