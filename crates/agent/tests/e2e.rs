//! End to end with real processes and sockets: a duhub server (in-process, TLS on loopback) and
//! the `duhub-agent` binary as a child process. Updates carry `microsoft/script:1` scripts that
//! write marker files; deployments go through the Device Update REST API; the agent verifies,
//! downloads, runs the script and reports, and the server's deployment status follows.
#![allow(clippy::unwrap_used)]

mod support;

use support::{AgentProcess, script};

use std::path::Path;
use std::time::Duration;

use duhub_testkit::{DuClient, FileServer, ImportFixture, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

struct Fixture {
    server: TestServer,
    du: DuClient,
    files: FileServer,
    _files_dir: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let du = server.du();
        let files_dir = tempfile::tempdir().unwrap();
        let files = FileServer::start(files_dir.path()).await.unwrap();
        Self { server, du, files, _files_dir: files_dir, work: tempfile::tempdir().unwrap() }
    }

    /// A device in `group` with an agent of `model`; `root_keys` overrides the server's.
    async fn agent(&self, id: &str, group: &str, model: &str, root_keys: Option<String>) -> AgentProcess {
        self.agent_with(id, group, model, root_keys, |_| {}).await
    }

    /// [`Fixture::agent`] with settings changed by `change`.
    async fn agent_with(
        &self,
        id: &str,
        group: &str,
        model: &str,
        root_keys: Option<String>,
        change: impl FnOnce(&mut duhub_agent::settings::Settings),
    ) -> AgentProcess {
        let (key, _) = self.server.create_device(id).await;
        self.server.service().set_group(id, group).await.unwrap();
        let data_dir = self.work.path().join(format!("agent-{id}"));
        let mut settings = support::agent_settings(&self.server, id, &key, model, &data_dir, root_keys);
        change(&mut settings);
        let config = self.work.path().join(format!("{id}.toml"));
        std::fs::write(&config, settings.to_toml()).unwrap();
        let log = self.work.path().join(format!("{id}.log"));
        AgentProcess::start(&config, &log, "debug")
    }

    /// Imports an update of `model` whose script runs `body` for install/apply and reports
    /// is-installed by `marker`.
    async fn import_script(&self, version: &str, model: &str, marker: &Path, apply: &str) {
        self.import_script_with(version, model, marker, "true", apply).await;
    }

    /// Like [`Fixture::import_script`], with shell for install too.
    async fn import_script_with(&self, version: &str, model: &str, marker: &Path, install: &str, apply: &str) {
        self.import_install_script(version, model, &script(marker, install, apply)).await;
    }

    /// Imports an update of `model` whose one file is `script`, run as `install.sh`.
    async fn import_install_script(&self, version: &str, model: &str, script: &str) {
        let fixture = ImportFixture::new(
            "contoso",
            model,
            version,
            &[("manufacturer", "contoso"), ("model", model)],
            &[("install.sh", script.as_bytes())],
        );
        fixture.write(self.files.dir()).unwrap();
        let operation = self.du.import(&json!([fixture.item(&self.files)])).await.unwrap();
        assert_eq!(operation["status"], "Succeeded", "{operation}");
    }

    async fn deploy(&self, group: &str, id: &str, model: &str, version: &str) {
        self.du
            .expect(
                Method::PUT,
                &format!("/management/groups/{group}/deployments/{id}"),
                Some(&json!({"deploymentId": id, "groupId": group, "startDateTime": "2026-01-01T00:00:00Z",
                    "update": {"updateId": {"provider": "contoso", "name": model, "version": version}}})),
                StatusCode::OK,
            )
            .await
            .unwrap();
    }

    /// Waits until the device's state in the deployment is `state`; returns the device record.
    async fn wait_device(&self, device: &str, deployment: &str, state: &str, agent: &AgentProcess) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let record = self.du.get(&format!("/management/devices/{device}")).await.ok();
            if let Some(record) = &record
                && record["deploymentStatus"] == state
                && record["lastDeploymentId"] == deployment
            {
                return record.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device} never reached {state} in {deployment}; last: {record:?}\nagent log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_update_installs_and_the_deployment_succeeds() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-ok");
    fixture.import_script("1.0", "toaster", &marker, "true").await;
    let agent = fixture.agent("toaster-1", "lab", "toaster", None).await;
    // The device reports its agent before it can be deployed to.
    let deadline = tokio::time::Instant::now() + WAIT;
    while fixture.du.get("/management/devices/toaster-1").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the agent never reported\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.deploy("lab", "dep-ok", "toaster", "1.0").await;
    let device = fixture.wait_device("toaster-1", "dep-ok", "Succeeded", &agent).await;
    assert_eq!(device["installedUpdate"]["updateId"]["version"], "1.0");
    assert_eq!(device["lastInstallResult"]["resultCode"], 700, "{device}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "installed");
    let twin = fixture.server.service().twin("toaster-1").await.unwrap();
    let reported = &twin["properties"]["reported"]["deviceUpdate"];
    assert_eq!(reported["service"]["ac"], 200, "the desired property was acknowledged: {twin}");
    assert_eq!(reported["agent"]["deviceProperties"]["contractModelId"], "dtmi:azure:iot:deviceUpdateContractModel;3");
    assert!(twin["properties"]["reported"]["deviceInformation"]["osName"].is_string(), "{twin}");
    let sandbox = fixture.work.path().join("agent-toaster-1/downloads");
    let left: Vec<_> = std::fs::read_dir(&sandbox).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "the sandbox is cleaned up after success: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_fails_the_deployment_with_its_exit_code() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-fail");
    fixture.import_script("1.0", "kettle", &marker, "exit 7").await;
    let agent = fixture.agent("kettle-1", "lab", "kettle", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-fail", "kettle", "1.0").await;
    let device = fixture.wait_device("kettle-1", "dep-fail", "Failed", &agent).await;
    assert_eq!(device["lastInstallResult"]["extendedResultCode"], 0x3050_1007, "{device}");
    assert!(!marker.exists(), "a failed apply writes no marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_hash_does_not_match_is_never_executed() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-tampered");
    fixture.import_script("1.0", "blender", &marker, "true").await;
    // Corrupt the stored script (same size) after the import signed its hash.
    let stored = fixture
        .server
        .du_service()
        .stored_update(&duhub_proto::UpdateId::new("contoso", "blender", "1.0"))
        .await
        .unwrap()
        .unwrap();
    let blob = stored.files.iter().find(|f| f.file_name == "install.sh").unwrap();
    let path = fixture.server.du_service().content().path(&blob.blob).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let agent = fixture.agent("blender-1", "lab", "blender", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-tampered", "blender", "1.0").await;
    let device = fixture.wait_device("blender-1", "dep-tampered", "Failed", &agent).await;
    let code = device["lastInstallResult"]["extendedResultCode"].as_i64().unwrap();
    assert_eq!(code >> 28 & 0xF, 4, "a content-downloader error (facility 4): {device}");
    assert!(!marker.exists(), "the tampered script did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_signed_by_an_untrusted_key_is_refused() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-untrusted");
    fixture.import_script("1.0", "mixer", &marker, "true").await;
    // The agent trusts another key store's roots, not this server's.
    let other = tempfile::tempdir().unwrap();
    duhub_server::keystore::KeyStore::at(other.path()).init(&duhub_server::keystore::Clock::now()).unwrap();
    let roots = std::fs::read_to_string(other.path().join("rootkeys.json")).unwrap();
    let agent = fixture.agent("mixer-1", "lab", "mixer", Some(roots)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-untrusted", "mixer", "1.0").await;
    let device = fixture.wait_device("mixer-1", "dep-untrusted", "Failed", &agent).await;
    let code = device["lastInstallResult"]["extendedResultCode"].as_i64().unwrap() as u32;
    assert_eq!(code & 0xFFF0_0000, 0xA020_0000, "a JWS root key error 0xA020....: {code:#x}");
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_for_another_device_class_is_refused() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-other-class");
    fixture.import_script("1.0", "toaster", &marker, "true").await;
    let mut reference = fixture.server.new_device("reference").await;
    reference.subscribe_desired().await.unwrap();
    reference
        .patch_reported(&json!({"deviceUpdate": {"__t": "c", "agent": {
            "deviceProperties": {"manufacturer": "contoso", "model": "toaster"}, "compatPropertyNames": "manufacturer,model"}}}))
        .await
        .unwrap();
    fixture.server.service().set_group("reference", "ref").await.unwrap();
    fixture.deploy("ref", "dep-ref", "toaster", "1.0").await;
    // Take the service object written for a toaster and give it to a kettle's agent directly.
    let service = loop {
        let patch = reference.next_desired(WAIT).await.unwrap();
        if let Some(service) = patch.body.pointer("/deviceUpdate/service").filter(|s| s.get("workflow").is_some()) {
            break service.clone();
        }
    };
    let agent = fixture.agent("kettle-2", "lab", "kettle", None).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fixture
        .server
        .service()
        .patch_desired("kettle-2", &json!({"deviceUpdate": {"__t": "c", "service": service}}), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let twin = fixture.server.service().twin("kettle-2").await.unwrap();
        let agent_state = &twin["properties"]["reported"]["deviceUpdate"]["agent"];
        if agent_state["state"] == 255 {
            assert_eq!(agent_state["lastInstallResult"]["extendedResultCodes"], "80400101", "{agent_state}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failure reported: {twin}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!marker.exists(), "nothing was installed on the wrong class");
}

/// Waits until the agent reports state 6 for some workflow; returns its id.
async fn wait_in_progress(fixture: &Fixture, device: &str, agent: &AgentProcess) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let twin = fixture.server.service().twin(device).await.unwrap();
        let reported = &twin["properties"]["reported"]["deviceUpdate"]["agent"];
        if reported["state"] == 6 {
            return reported["workflow"]["id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{device} never started\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn subgroup_action(fixture: &Fixture, group: &str, deployment: &str, device: &str, action: &str) {
    let record = fixture.du.get(&format!("/management/devices/{device}")).await.unwrap();
    let class = record["deviceClassId"].as_str().unwrap();
    fixture
        .du
        .expect(
            Method::POST,
            &format!("/management/groups/{group}/deviceClassSubgroups/{class}/deployments/{deployment}:{action}"),
            None,
            StatusCode::OK,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_install() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-cancel");
    let started = fixture.work.path().join("install-started");
    let install = format!("touch '{}'; sleep 30", started.display());
    fixture.import_script_with("1.0", "heater", &marker, &install, "true").await;
    let agent = fixture.agent("heater-1", "lab", "heater", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-cancel", "heater", "1.0").await;
    wait_in_progress(&fixture, "heater-1", &agent).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !started.exists() {
        assert!(tokio::time::Instant::now() < deadline, "install never started\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subgroup_action(&fixture, "lab", "dep-cancel", "heater-1", "cancel").await;
    let device = fixture.wait_device("heater-1", "dep-cancel", "Canceled", &agent).await;
    assert_eq!(device["lastInstallResult"]["resultCode"], -1, "{device}");
    assert!(!marker.exists(), "the cancelled install never applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failure_installs() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-retry");
    let flag = fixture.work.path().join("failed-once");
    let apply = format!("if [ ! -f '{flag}' ]; then touch '{flag}'; exit 3; fi", flag = flag.display());
    fixture.import_script("1.0", "fridge", &marker, &apply).await;
    let agent = fixture.agent("fridge-1", "lab", "fridge", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-retry", "fridge", "1.0").await;
    let failed = fixture.wait_device("fridge-1", "dep-retry", "Failed", &agent).await;
    assert_eq!(failed["lastInstallResult"]["extendedResultCode"], 0x3050_1003);
    subgroup_action(&fixture, "lab", "dep-retry", "fridge-1", "retry").await;
    fixture.wait_device("fridge-1", "dep-retry", "Succeeded", &agent).await;
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_deployment_replaces_the_running_one() {
    let fixture = Fixture::new().await;
    let slow_marker = fixture.work.path().join("marker-slow");
    let fast_marker = fixture.work.path().join("marker-fast");
    fixture.import_script_with("1.0", "oven", &slow_marker, "sleep 30", "true").await;
    fixture.import_script("2.0", "oven", &fast_marker, "true").await;
    let agent = fixture.agent("oven-1", "lab", "oven", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-slow", "oven", "1.0").await;
    let first = wait_in_progress(&fixture, "oven-1", &agent).await;
    fixture.deploy("lab", "dep-fast", "oven", "2.0").await;
    let device = fixture.wait_device("oven-1", "dep-fast", "Succeeded", &agent).await;
    assert_eq!(device["installedUpdate"]["updateId"]["version"], "2.0");
    assert!(fast_marker.exists() && !slow_marker.exists(), "only the replacement was applied");
    let twin = fixture.server.service().twin("oven-1").await.unwrap();
    assert_ne!(twin["properties"]["reported"]["deviceUpdate"]["agent"]["workflow"]["id"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_download_stops_it() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-cancel-download");
    let script = script(&marker, "sleep 30", "true");
    let mut payload = vec![7u8; 96 * 1024 * 1024];
    payload[0] = 1;
    let update = ImportFixture::new(
        "contoso",
        "freezer",
        "1.0",
        &[("manufacturer", "contoso"), ("model", "freezer")],
        &[("install.sh", script.as_bytes()), ("payload.bin", &payload)],
    );
    update.write(fixture.files.dir()).unwrap();
    drop(payload);
    let operation = fixture.du.import(&json!([update.item(&fixture.files)])).await.unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    let agent = fixture.agent("freezer-1", "lab", "freezer", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-cancel-download", "freezer", "1.0").await;
    // The payload is partly downloaded (then: the agent reported it started).
    let downloads = fixture.work.path().join("agent-freezer-1/downloads");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let partial = std::fs::read_dir(&downloads)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|w| std::fs::read_dir(w.path()).ok())
            .flatten()
            .flatten()
            .any(|f| f.file_name().to_string_lossy().ends_with(".part") && f.metadata().is_ok_and(|m| m.len() > 0));
        if partial {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no download started\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_in_progress(&fixture, "freezer-1", &agent).await;
    subgroup_action(&fixture, "lab", "dep-cancel-download", "freezer-1", "cancel").await;
    fixture.wait_device("freezer-1", "dep-cancel-download", "Canceled", &agent).await;
    // The agent's own report of the cancel (state 0, result -1) follows.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let device = fixture.du.get("/management/devices/freezer-1").await.unwrap();
        if device["lastInstallResult"]["resultCode"] == -1 {
            assert_eq!(device["deploymentStatus"], "Canceled", "{device}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no cancel report: {device}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!marker.exists(), "nothing was installed");
    assert!(!agent.log().contains("the deployment failed"), "cancelled, not failed\n{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_request_runs_the_reboot_command_and_the_deployment_completes_after_it() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-reboot");
    let rebooted = fixture.work.path().join("rebooted");
    // Apply installs (writes the marker) and asks for a reboot (706) instead of reporting 700.
    let script = script(&marker, "true", "true").replacen("ok 700 ;;", "ok 706 ;;", 1);
    fixture.import_install_script("1.0", "clock", &script).await;
    let reboot = vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("touch '{}'", rebooted.display())];
    let mut agent = fixture.agent_with("clock-1", "lab", "clock", None, |s| s.reboot_command = reboot).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-reboot", "clock", "1.0").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !rebooted.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the reboot command never ran\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let device = fixture.du.get("/management/devices/clock-1").await.unwrap();
    assert_eq!(device["deploymentStatus"], "InProgress", "no result before the reboot: {device}");
    // The device "reboots": the agent starts again, finds the update installed and reports it.
    agent.restart();
    let device = fixture.wait_device("clock-1", "dep-reboot", "Succeeded", &agent).await;
    assert_eq!(device["installedUpdate"]["updateId"]["version"], "1.0");
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_that_fails_fails_the_deployment_instead_of_leaving_it_in_progress() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-no-reboot");
    let script = script(&marker, "true", "true").replacen("ok 700 ;;", "ok 706 ;;", 1);
    fixture.import_install_script("1.0", "fridge", &script).await;
    let reboot = vec!["/bin/sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
    let agent = fixture.agent_with("fridge-1", "lab", "fridge", None, |s| s.reboot_command = reboot).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-no-reboot", "fridge", "1.0").await;
    let device = fixture.wait_device("fridge-1", "dep-no-reboot", "Failed", &agent).await;
    assert_eq!(device["lastInstallResult"]["extendedResultCode"], 0x8040_0F01_u32.cast_signed(), "{device}");
    assert!(
        device["lastInstallResult"]["resultDetails"].as_str().unwrap_or_default().contains("exit status: 3"),
        "{device}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_request_restarts_the_agent_in_place_and_the_deployment_completes() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-restart");
    // Apply installs (writes the marker) and asks for an agent restart (707) instead of 700.
    let script = script(&marker, "true", "true").replacen("ok 700 ;;", "ok 707 ;;", 1);
    fixture.import_install_script("1.0", "kettle", &script).await;
    // A reboot would be wrong here: the reboot command fails the test if it ever runs.
    let rebooted = fixture.work.path().join("rebooted");
    let reboot = vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("touch '{}'", rebooted.display())];
    let mut agent = fixture.agent_with("kettle-1", "lab", "kettle", None, |s| s.reboot_command = reboot).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.deploy("lab", "dep-restart", "kettle", "1.0").await;
    let device = fixture.wait_device("kettle-1", "dep-restart", "Succeeded", &agent).await;
    assert_eq!(device["installedUpdate"]["updateId"]["version"], "1.0");
    assert!(marker.exists());
    let log = agent.log();
    assert!(log.contains("restarting the agent"), "{log}");
    // The same child process (exec, not exit) is still running, and it connected again.
    assert_eq!(agent.exited(), None, "{log}");
    assert!(log.matches("connected to the hub").count() >= 2, "{log}");
    assert!(!rebooted.exists(), "an agent restart is not a reboot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_websocket_installs_too() {
    let fixture = Fixture::new().await;
    let marker = fixture.work.path().join("marker-websocket");
    fixture.import_script("1.0", "lamp", &marker, "true").await;
    let https = fixture.server.https.port();
    let agent = fixture
        .agent_with("lamp-1", "lab", "lamp", None, |s| {
            s.transport = duhub_agent::settings::Transport::Websocket;
            s.https_port = Some(https);
            s.mqtt_port = None;
        })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fixture.du.get("/management/devices/lamp-1").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the agent never reported\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.deploy("lab", "dep-websocket", "lamp", "1.0").await;
    fixture.wait_device("lamp-1", "dep-websocket", "Succeeded", &agent).await;
    assert!(marker.exists());
    assert!(agent.log().contains("connected to the hub"), "{}", agent.log());
}
