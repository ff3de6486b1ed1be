//! Phased rollouts against a real server with MQTT devices that report by hand: bake time
//! (a device that goes back to its old update is no success), the rate and the window on the
//! rollouts' injectable clock, controls, validation, and that a rollout deployment still reads
//! as a plain deployment.

use std::time::Duration;

use duhub_testkit::{Backend, DuClient, TestDevice};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::du::{Service, agent_device, imported, next_service, report, toaster};

const WAIT: Duration = Duration::from_secs(30);

async fn put_rollout(du: &DuClient, group: &str, id: &str, rollout: Value) -> Value {
    put_rollout_answering(du, group, id, rollout, StatusCode::OK).await
}

/// Deploys toaster 2.0 to `group` with `rollout`; the answer must be `status`.
async fn put_rollout_answering(du: &DuClient, group: &str, id: &str, rollout: Value, status: StatusCode) -> Value {
    du.expect(
        Method::PUT,
        &format!("/management/groups/{group}/deployments/{id}"),
        Some(&json!({"deploymentId": id, "groupId": group, "startDateTime": "2026-01-01T00:00:00Z",
            "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}},
            "rollout": rollout})),
        status,
    )
    .await
    .unwrap()
}

async fn rollout(du: &DuClient, group: &str, id: &str) -> Value {
    du.get(&format!("/management/groups/{group}/deployments/{id}/rollout")).await.unwrap()
}

/// Waits until the rollout passes `wanted`; returns it.
async fn rollout_until(du: &DuClient, group: &str, id: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let current = rollout(du, group, id).await;
        if wanted(&current) {
            return current;
        }
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}: {current:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of `devices` have been told a deployment workflow in their desired properties.
async fn told(service: &duhub_testkit::ServiceClient, devices: &[String]) -> usize {
    let mut count = 0;
    for id in devices {
        let twin = service.twin(id).await.unwrap();
        if twin.pointer("/properties/desired/deviceUpdate/service/workflow/id").is_some() {
            count += 1;
        }
    }
    count
}

/// Waits until at least `count` of `devices` have been told a deployment workflow.
async fn wait_told(service: &duhub_testkit::ServiceClient, devices: &[String], count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while told(service, devices).await < count {
        assert!(tokio::time::Instant::now() < deadline, "fewer than {count} devices told");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` agent devices `PREFIX-i` of model toaster in `group`, and their ids.
async fn fleet(
    server: &duhub_testkit::TestServer,
    prefix: &str,
    count: usize,
    group: &str,
) -> (Vec<String>, Vec<TestDevice>) {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let mut devices = Vec::new();
    for id in &ids {
        devices.push(agent_device(server, id, Some(group), "toaster").await);
    }
    (ids, devices)
}

pub(crate) async fn a_device_that_goes_back_during_the_bake_is_no_success(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\necho 1\n")).await;
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    let mut devices: Vec<TestDevice> = Vec::new();
    for id in ["bake-a", "bake-b", "bake-c"] {
        devices.push(agent_device(&server, id, Some("bake"), "toaster").await);
    }
    let created = put_rollout(&du, "bake", "r1", json!({"waves": ["100%"], "bakeSeconds": 600})).await;
    // Through the swagger's API it is a plain deployment.
    assert!(created.get("rollout").is_none(), "{created:#}");
    assert_eq!(created["deploymentId"], "r1");
    let mut workflow = String::new();
    for device in &mut devices {
        workflow = next_service(device).await["workflow"]["id"].as_str().unwrap().to_owned();
    }
    let [a, b, c] = &mut devices[..] else { unreachable!() };
    a.patch_reported(&report(0, &workflow, 700, Some("2.0"))).await.unwrap();
    b.patch_reported(&report(0, &workflow, 700, Some("2.0"))).await.unwrap();
    rollout_until(&du, "bake", "r1", "two devices baking", |r| r["totals"]["baking"] == 2).await;
    // A pass has seen both on the new update (one runs now, after the one the reports woke).
    server.du_service().reconcile(true).await.unwrap();
    // b comes back on its old image within the bake time, idle with no failure to report: only
    // the bake tells that it did not keep the update.
    b.patch_reported(&report(0, &workflow, 200, Some("1.0"))).await.unwrap();
    c.patch_reported(&report(255, &workflow, 0, None)).await.unwrap();
    let seen = rollout_until(&du, "bake", "r1", "b and c failed", |r| r["totals"]["failed"] == 2).await;
    assert_eq!(seen["totals"]["baking"], 1, "{seen:#}");
    assert_eq!(seen["totals"]["succeeded"], 0, "nobody baked yet: {seen:#}");
    // The bake time passes on the rollouts' clock.
    server.du_service().advance_rollout_clock(Duration::from_secs(601));
    let done = rollout_until(&du, "bake", "r1", "completed", |r| r["status"] == "Completed").await;
    assert_eq!(done["totals"]["succeeded"], 1, "{done:#}");
    assert_eq!(done["totals"]["failed"], 2, "{done:#}");
    let events: Vec<&str> = done["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["waveStarted", "completed"], "{done:#}");
}

pub(crate) async fn the_rate_and_the_window_hold_devices_back_on_the_rollout_clock(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    let (ids, mut devices) = fleet(&server, "rate", 5, "rate").await;
    put_rollout(&du, "rate", "r1", json!({"waves": ["100%"], "rate": {"devicesPerMinute": 2}})).await;
    let first = rollout_until(&du, "rate", "r1", "two started", |r| r["totals"]["started"] == 2).await;
    assert_eq!(first["status"], "Running");
    // Every device a pass started is told; the others are not.
    let service = server.service();
    wait_told(service, &ids, 2).await;
    // Another pass in the same minute of the rollouts' clock starts nobody.
    server.du_service().reconcile(true).await.unwrap();
    assert_eq!(rollout(&du, "rate", "r1").await["totals"]["started"], 2);
    assert_eq!(told(service, &ids).await, 2);
    server.du_service().advance_rollout_clock(Duration::from_secs(61));
    rollout_until(&du, "rate", "r1", "four started", |r| r["totals"]["started"] == 4).await;
    server.du_service().advance_rollout_clock(Duration::from_secs(61));
    rollout_until(&du, "rate", "r1", "five started", |r| r["totals"]["started"] == 5).await;
    wait_told(service, &ids, 5).await;

    // A window that opens in two hours (UTC, on the rollouts' clock).
    let window_ids: Vec<String> = (0..3).map(|i| format!("window-{i}")).collect();
    for id in &window_ids {
        devices.push(agent_device(&server, id, Some("window"), "toaster").await);
    }
    let now = server.du_service().rollout_now();
    let open = now + time::Duration::hours(2);
    let close = now + time::Duration::hours(3);
    let window = format!("{:02}:{:02}-{:02}:{:02}", open.hour(), open.minute(), close.hour(), close.minute());
    put_rollout(&du, "window", "w1", json!({"waves": ["100%"], "window": window})).await;
    let waiting = rollout_until(&du, "window", "w1", "the wave started", |r| r["currentWave"] == 0).await;
    assert_eq!(waiting["windowOpen"], false, "{waiting:#}");
    assert_eq!(waiting["totals"]["started"], 0, "{waiting:#}");
    assert_eq!(told(service, &window_ids).await, 0);
    server.du_service().advance_rollout_clock(Duration::from_secs(2 * 3600 + 60));
    let started = rollout_until(&du, "window", "w1", "all started", |r| r["totals"]["started"] == 3).await;
    assert_eq!(started["windowOpen"], true);
}

pub(crate) async fn operators_pause_resume_promote_and_abort_with_their_names_recorded(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\necho 1\n")).await;
    let (ids, mut devices) = fleet(&server, "ops", 10, "ops").await;
    // Policy errors name the rule and the pointer; nothing is stored.
    let bad = put_rollout_answering(&du, "ops", "r1", json!({"waves": ["50%", "10%"]}), StatusCode::BAD_REQUEST).await;
    assert_eq!(bad["error"]["target"], "rollout/waves/1", "{bad:#}");
    let bad = put_rollout_answering(
        &du,
        "ops",
        "r1",
        json!({"waves": ["100%"], "onFailure": "rollback"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(bad["error"]["message"].as_str().unwrap().contains("rollbackPolicy"), "{bad:#}");
    du.expect(Method::GET, "/management/groups/ops/deployments/r1", None, StatusCode::NOT_FOUND).await.unwrap();

    // A named token drives the controls.
    let token = du
        .expect(Method::POST, "/duhub/tokens", Some(&json!({"name": "night-operator"})), StatusCode::CREATED)
        .await
        .unwrap();
    let operator = du.with_token(token["token"].as_str().unwrap());
    put_rollout(&du, "ops", "r1", json!({"waves": ["20%", "60%", "100%"], "approveWaves": true})).await;
    let first = rollout_until(&du, "ops", "r1", "wave 1 started", |r| r["totals"]["started"] == 2).await;
    assert_eq!(first["currentWave"], 0);
    assert_eq!(first["waves"][0]["counts"]["devices"], 2, "{first:#}");
    let action = |name: &str| format!("/management/groups/ops/deployments/r1:{name}");
    let paused = operator.expect(Method::POST, &action("pause"), None, StatusCode::OK).await.unwrap();
    assert_eq!(paused["status"], "Paused");
    let last = paused["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["event"].as_str(), last["cause"]["kind"].as_str()), (Some("paused"), Some("operator")));
    assert_eq!(last["cause"]["token"], "night-operator");
    operator.expect(Method::POST, &action("pause"), None, StatusCode::CONFLICT).await.unwrap();
    let resumed = operator.expect(Method::POST, &action("resume"), None, StatusCode::OK).await.unwrap();
    assert_eq!(resumed["status"], "Running");
    operator.expect(Method::POST, &action("sideways"), None, StatusCode::NOT_FOUND).await.unwrap();

    // The first wave's devices succeed: the next waits for approval; promote starts it.
    let service = server.service();
    wait_told(service, &ids, 2).await;
    for (i, id) in ids.iter().enumerate() {
        let twin = service.twin(id).await.unwrap();
        if let Some(workflow) = twin.pointer("/properties/desired/deviceUpdate/service/workflow/id") {
            let workflow = workflow.as_str().unwrap().to_owned();
            devices[i].patch_reported(&report(0, &workflow, 700, Some("2.0"))).await.unwrap();
        }
    }
    let waiting = rollout_until(&du, "ops", "r1", "awaiting approval", |r| r["status"] == "AwaitingApproval").await;
    assert_eq!(waiting["waves"][0]["counts"]["succeeded"], 2, "{waiting:#}");
    assert_eq!(told(service, &ids).await, 2, "the second wave waits");
    let promoted = operator.expect(Method::POST, &action("promote"), None, StatusCode::OK).await.unwrap();
    assert_eq!((promoted["status"].as_str(), promoted["currentWave"].as_u64()), (Some("Running"), Some(1)));
    rollout_until(&du, "ops", "r1", "wave 2 started", |r| r["totals"]["started"] == 6).await;

    // Abort: the devices not finished are cancelled, nobody else is told anything.
    let aborted = operator.expect(Method::POST, &action("abort"), None, StatusCode::OK).await.unwrap();
    assert_eq!(aborted["status"], "Aborted");
    operator.expect(Method::POST, &action("resume"), None, StatusCode::CONFLICT).await.unwrap();
    let status = du.get("/management/groups/ops/deployments/r1/status").await.unwrap();
    let subgroup = &status["subgroupStatus"][0];
    assert_eq!(subgroup["devicesCompletedSucceededCount"], 2, "{status:#}");
    assert_eq!(subgroup["devicesCanceledCount"], 8, "{status:#}");
    assert_eq!(told(service, &ids).await, 6, "devices never started are not told to cancel");
}

pub(crate) async fn two_nodes_on_one_database_start_each_wave_and_each_budget_once(backend: Backend) {
    if backend == Backend::Sqlite {
        return; // one node per SQLite file
    }
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    let other = duhub_testkit::TestServer::start_with_database_url(&server.database_url).await;
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    let ids: Vec<String> = (0..12).map(|i| format!("pair-{i:02}")).collect();
    let mut devices = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let node = if i % 2 == 0 { &server } else { &other };
        devices.push(agent_device(node, id, Some("pair"), "toaster").await);
    }
    put_rollout(
        &du,
        "pair",
        "r1",
        json!({"waves": ["50%", "100%"], "successPercent": 0,
        "rate": {"devicesPerMinute": 4}}),
    )
    .await;
    let nodes = [server.du_service().clone(), other.du_service().clone()];
    let service = server.service();
    for expected in [4usize, 8, 12] {
        let seen =
            rollout_until(&du, "pair", "r1", "starts", |r| r["totals"]["started"].as_u64() >= Some(expected as u64))
                .await;
        assert_eq!(seen["totals"]["started"], expected, "{seen:#}");
        wait_told(service, &ids, expected).await;
        // Both nodes pass again within the same minute: nobody else starts.
        for node in &nodes {
            node.reconcile(true).await.unwrap();
        }
        assert_eq!(rollout(&du, "pair", "r1").await["totals"]["started"], expected);
        assert_eq!(told(service, &ids).await, expected);
        for node in &nodes {
            node.advance_rollout_clock(Duration::from_secs(61));
        }
    }
    let done = rollout(&du, "pair", "r1").await;
    let waves: Vec<&Value> =
        done["history"].as_array().unwrap().iter().filter(|e| e["event"] == "waveStarted").collect();
    assert_eq!(waves.len(), 2, "each wave started once: {done:#}");
    other.shutdown().await;
}

pub(crate) async fn a_tripped_gate_rolls_back_the_failed_and_a_late_device_joins_the_current_wave(backend: Backend) {
    let Some(Service { server, du, files, _dir }) = Service::start(backend).await else { return };
    imported(&du, &files, &toaster("1.0", b"#!/bin/sh\necho 1\n")).await;
    imported(&du, &files, &toaster("2.0", b"#!/bin/sh\necho 2\n")).await;
    let (ids, mut devices) = fleet(&server, "trip", 4, "trip").await;
    du.expect(
        Method::PUT,
        "/management/groups/trip/deployments/r1",
        Some(&json!({"deploymentId": "r1", "groupId": "trip", "startDateTime": "2026-01-01T00:00:00Z",
            "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}},
            "rollbackPolicy": {"update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "1.0"}},
                "failure": {"devicesFailedPercentage": 100, "devicesFailedCount": 1000}},
            "rollout": {"waves": ["50%", "100%"], "maxFailurePercent": 10, "minExecuted": 1, "onFailure": "rollback"}})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    rollout_until(&du, "trip", "r1", "wave 1 started", |r| r["totals"]["started"] == 2).await;
    let service = server.service();
    wait_told(service, &ids, 2).await;
    // One started device fails: 1 of 1 finished is above 10 %.
    let mut failed = None;
    for (i, id) in ids.iter().enumerate() {
        let twin = service.twin(id).await.unwrap();
        if let Some(workflow) = twin.pointer("/properties/desired/deviceUpdate/service/workflow/id") {
            let workflow = workflow.as_str().unwrap().to_owned();
            devices[i].patch_reported(&report(255, &workflow, 0, None)).await.unwrap();
            failed = Some((i, workflow));
            break;
        }
    }
    let (index, workflow) = failed.unwrap();
    let tripped = rollout_until(&du, "trip", "r1", "the gate tripped", |r| r["status"] == "Paused").await;
    let events: Vec<&str> =
        tripped["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["waveStarted", "tripped", "rollbackStarted"], "{tripped:#}");
    // The failed device is told the rollback update.
    let rollback =
        crate::du::next_service_where(&mut devices[index], |s| s["workflow"]["id"] != workflow.as_str()).await;
    let manifest: Value = serde_json::from_str(rollback["updateManifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["updateId"]["version"], "1.0");

    // A device joining the group now goes into the current wave, and starts once resumed.
    let mut late = agent_device(&server, "trip-late", Some("trip"), "toaster").await;
    let joined =
        rollout_until(&du, "trip", "r1", "the late device joined", |r| r["waves"][0]["counts"]["devices"] == 3).await;
    assert_eq!(joined["totals"]["started"], 2, "paused: {joined:#}");
    assert_eq!(told(service, &["trip-late".to_owned()]).await, 0);
    du.expect(Method::POST, "/management/groups/trip/deployments/r1:resume", None, StatusCode::OK).await.unwrap();
    let service = next_service(&mut late).await;
    assert_eq!(service["workflow"]["id"], workflow.as_str());
    let resumed = rollout(&du, "trip", "r1").await;
    assert_eq!(resumed["waves"][0]["counts"]["started"], 3, "{resumed:#}");
}
