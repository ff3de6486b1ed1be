//! Many agents in one process, as the fleet simulator will run them: each [`Agent`] has its own
//! data directory and settings, all share one tokio runtime, and nothing global couples them.
//! A deployment of a `microsoft/simulator:1` update reaches every one; the devices told (by
//! their own simulator data file) to fail do, the others succeed, and the server's deployment
//! status counts exactly that.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use duhub_agent::executor::Executor;
use duhub_agent::runtime::{Agent, Stopped};
use duhub_testkit::{FileServer, ImportFixture, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEVICES: usize = 40;
const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_share_one_process_and_each_reports_its_own_result() {
    let server = TestServer::start().await;
    let du = server.du();
    let files_dir = tempfile::tempdir().unwrap();
    let files = FileServer::start(files_dir.path()).await.unwrap();
    let work = tempfile::tempdir().unwrap();

    let mut update = ImportFixture::new(
        "contoso",
        "sim",
        "1.0",
        &[("manufacturer", "contoso"), ("model", "sim")],
        &[("payload.bin", b"simulated firmware")],
    );
    update.manifest["instructions"]["steps"][0]["handler"] = "microsoft/simulator:1".into();
    update.manifest["instructions"]["steps"][0]["handlerProperties"] = json!({"installedCriteria": "1.0"});
    update.write(files.dir()).unwrap();
    let operation = du.import(&json!([update.item(&files)])).await.unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");

    // Every third device's simulator fails apply; the others have no data file: success.
    let failing = json!({"apply": {"resultCode": 0, "extendedResultCode": 0x3030_0042, "resultDetails": "simulated"}});
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    for i in 0..DEVICES {
        let id = format!("sim-{i:02}");
        let (key, _) = server.create_device(&id).await;
        server.service().set_group(&id, "fleet").await.unwrap();
        let data_dir = work.path().join(&id);
        let mut settings = support::agent_settings(&server, &id, &key, "sim", &data_dir, None);
        let simulator_data = work.path().join(format!("{id}-simulator.json"));
        if i % 3 == 0 {
            std::fs::write(&simulator_data, failing.to_string()).unwrap();
        }
        settings.simulator_data_file = Some(simulator_data);
        let executor = Executor::new(&settings).unwrap();
        let agent = Agent::new(settings, Arc::new(executor)).unwrap();
        agents.push(tokio::spawn(agent.run(stopped.clone())));
    }
    let expected_failed = (0..DEVICES).filter(|i| i % 3 == 0).count();

    // Every agent reported its device properties: the group holds them all.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let group = du.get("/management/groups/fleet").await;
        if group.as_ref().is_ok_and(|g| g["deviceCount"] == DEVICES) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every agent reported: {group:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    du.expect(
        Method::PUT,
        "/management/groups/fleet/deployments/wave-1",
        Some(&json!({"deploymentId": "wave-1", "groupId": "fleet", "startDateTime": "2026-01-01T00:00:00Z",
            "update": {"updateId": {"provider": "contoso", "name": "sim", "version": "1.0"}}})),
        StatusCode::OK,
    )
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    let subgroup = loop {
        let status = du.get("/management/groups/fleet/deployments/wave-1/status").await.unwrap();
        let subgroup = status["subgroupStatus"][0].clone();
        let done = |field: &str| subgroup[field].as_u64().unwrap_or(0);
        if done("devicesCompletedSucceededCount") + done("devicesCompletedFailedCount") == DEVICES as u64 {
            break subgroup;
        }
        assert!(tokio::time::Instant::now() < deadline, "the deployment did not complete: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(subgroup["totalDevices"], DEVICES, "{subgroup}");
    assert_eq!(subgroup["devicesCompletedFailedCount"], expected_failed, "{subgroup}");
    assert_eq!(subgroup["devicesCompletedSucceededCount"], DEVICES - expected_failed, "{subgroup}");

    // Each device's report is its own: the failing ones carry their simulator's code.
    for i in [0, 1, 3, DEVICES - 1] {
        let device: Value = du.get(&format!("/management/devices/sim-{i:02}")).await.unwrap();
        if i % 3 == 0 {
            assert_eq!(device["deploymentStatus"], "Failed", "{device}");
            assert_eq!(device["lastInstallResult"]["extendedResultCode"], 0x3030_0042, "{device}");
        } else {
            assert_eq!(device["deploymentStatus"], "Succeeded", "{device}");
            assert_eq!(device["installedUpdate"]["updateId"]["version"], "1.0", "{device}");
        }
        // And each keeps its state in its own directory.
        let journal = std::fs::read_to_string(work.path().join(format!("sim-{i:02}")).join("journal.json")).unwrap();
        assert!(journal.contains("completed"), "{journal}");
    }

    // One stop signal ends them all, cleanly.
    stop.send(true).unwrap();
    for agent in agents {
        let stopped = tokio::time::timeout(Duration::from_secs(10), agent).await.unwrap().unwrap().unwrap();
        assert_eq!(stopped, Stopped::Requested);
    }
}
