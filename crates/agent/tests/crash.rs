//! Crash convergence: `kill -9` of the agent at many points of deployments (during the
//! download, between steps, during install), a restart, and each time the deployment ends
//! Succeeded, the server's view matches what is installed on the device, and an interrupted
//! download resumes instead of starting over.
#![allow(clippy::unwrap_used)]

mod support;

use support::AgentProcess;

use std::path::Path;
use std::time::Duration;

use duhub_testkit::{DuClient, FileServer, ImportFixture, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const KILL_POINTS: usize = 20;

/// The step's script: install stages, apply moves the staged marker in place (each taking a
/// moment, so kills land inside them); is-installed answers by the marker.
fn staging_script(marker: &Path) -> String {
    let staged = format!("{}.staged", marker.display());
    support::script(marker, &format!("sleep 0.3; echo staged > \"{staged}\""), &format!("sleep 0.2; rm \"{staged}\""))
}

async fn wait_succeeded(du: &DuClient, deployment: &str, version: &str, agent: &AgentProcess) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let device = du.get("/management/devices/crash-1").await.ok();
        if let Some(device) = &device
            && device["lastDeploymentId"] == deployment
        {
            match device["deploymentStatus"].as_str() {
                Some("Succeeded") => {
                    assert_eq!(device["installedUpdate"]["updateId"]["version"], version, "{device}");
                    return;
                }
                Some("Failed") => panic!("{deployment} failed: {device}\n{}", agent.log()),
                _ => {}
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{deployment} did not finish: {device:?}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_many_points_always_converges() {
    let server = TestServer::start().await;
    let du = server.du();
    let files_dir = tempfile::tempdir().unwrap();
    let files = FileServer::start(files_dir.path()).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, _) = server.create_device("crash-1").await;
    server.service().set_group("crash-1", "crash").await.unwrap();
    let settings = support::agent_settings(&server, "crash-1", &key, "crasher", &work.path().join("agent"), None);
    let config = work.path().join("agent.toml");
    std::fs::write(&config, settings.to_toml()).unwrap();
    let mut agent = AgentProcess::start(&config, &work.path().join("agent.log"), "info");
    let deadline = tokio::time::Instant::now() + WAIT;
    while du.get("/management/devices/crash-1").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the agent never reported\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A payload large enough that a download is under way for a while.
    let mut payload = vec![0u8; 48 * 1024 * 1024];
    duhub_server::ids::fill_random(&mut payload[..4096]);
    for (i, chunk) in payload.chunks_mut(4096).enumerate() {
        chunk[0] = (i % 251) as u8;
    }
    let sandbox = work.path().join("agent/downloads");
    let mut resumed_checked = false;
    for point in 0..KILL_POINTS {
        let version = format!("1.{point}");
        let marker = work.path().join(format!("installed-{version}"));
        // Each version's payload differs, so every deployment downloads it.
        let mut version_payload = payload.clone();
        version_payload[8] = point as u8;
        let fixture = ImportFixture::new(
            "contoso",
            "crasher",
            &version,
            &[("manufacturer", "contoso"), ("model", "crasher")],
            &[("install.sh", staging_script(&marker).as_bytes()), ("payload.bin", &version_payload)],
        );
        fixture.write(files.dir()).unwrap();
        let operation = du.import(&json!([fixture.item(&files)])).await.unwrap();
        assert_eq!(operation["status"], "Succeeded", "{operation}");
        let deployment = format!("crash-{point}");
        du.expect(
            Method::PUT,
            &format!("/management/groups/crash/deployments/{deployment}"),
            Some(&json!({"deploymentId": deployment, "groupId": "crash", "startDateTime": "2026-01-01T00:00:00Z",
                "update": {"updateId": {"provider": "contoso", "name": "crasher", "version": version}}})),
            StatusCode::OK,
        )
        .await
        .unwrap();
        if point == 0 {
            // A kill in the middle of the download: wait for a partial file.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let partial = part_size(&sandbox);
                if partial > 1024 * 1024 {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "no partial download seen\n{}", agent.log());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } else {
            // Spread the other kills over the download, the steps and the reports.
            tokio::time::sleep(Duration::from_millis((point as u64 * 61) % 1300)).await;
        }
        agent.restart();
        wait_succeeded(&du, &deployment, &version, &agent).await;
        assert!(marker.exists(), "point {point}: the server says {version} is installed, so the device has it");
        if point == 0 {
            assert!(agent.log().contains("resuming a download"), "the interrupted download resumed\n{}", agent.log());
            resumed_checked = true;
        }
    }
    assert!(resumed_checked);
    // Every version reported installed is installed; nothing is left half-done.
    for point in 0..KILL_POINTS {
        assert!(work.path().join(format!("installed-1.{point}")).exists());
        assert!(!work.path().join(format!("installed-1.{point}.staged")).exists(), "point {point} left a staged file");
    }
}

fn part_size(sandbox: &Path) -> u64 {
    let Ok(workflows) = std::fs::read_dir(sandbox) else { return 0 };
    workflows
        .flatten()
        .filter_map(|w| std::fs::read_dir(w.path()).ok())
        .flatten()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().ends_with(".part"))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}
