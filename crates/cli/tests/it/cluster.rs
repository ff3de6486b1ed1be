//! `duhub serve` as real processes: two nodes on one PostgreSQL database, and a node killed with
//! SIGKILL in the middle of a stream of reported patches.

use std::path::{Path, PathBuf};

use duhub_testkit::{ConnectReturnCode, DeviceError, ServeProcess, TIMEOUT, TestDatabase, postgres_url};
use serde_json::json;

use crate::support::temp_dir;

/// The built `duhub` binary.
fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duhub"))
}

/// Copies the files of `from` into a new directory `to` (keeping their modes).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_database_act_as_one_hub() {
    let Some(url) = postgres_url().await else {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    };
    let database = TestDatabase::create(&url).await.unwrap();
    let root = temp_dir();
    let (dir_a, dir_b) = (root.path().join("node-a"), root.path().join("node-b"));
    let node_a = ServeProcess::start(&binary(), &dir_a, Some(&database.url)).await.unwrap();
    // Both nodes present certificates from the same CA.
    copy_dir(&dir_a.join("tls"), &dir_b.join("tls"));
    let node_b = ServeProcess::start(&binary(), &dir_b, Some(&database.url)).await.unwrap();
    assert_eq!(node_a.ca_pem, node_b.ca_pem);
    assert_ne!(node_a.mqtt, node_b.mqtt);
    let (service_a, service_b) = (node_a.service().unwrap(), node_b.service().unwrap());
    let logs = || format!("node A log:\n{}\nnode B log:\n{}", node_a.log(), node_b.log());

    // A device created through node A connects to node B.
    let (key, _) = service_a.create_device("dev1").await.unwrap();
    assert_eq!(service_b.device("dev1").await.unwrap()["deviceId"], "dev1");
    let mut on_b = node_b.connect_device("dev1", &key).await;
    on_b.subscribe_desired().await.unwrap();
    assert_eq!(on_b.get_twin().await.unwrap()["desired"], json!({"$version": 1}));

    // A desired patch written through node A reaches it on node B.
    service_a.update_desired("dev1", &json!({"fw": "2.0"})).await.unwrap();
    let patch =
        on_b.next_desired(TIMEOUT).await.unwrap_or_else(|e| panic!("no desired patch on node B: {e}\n{}", logs()));
    assert_eq!(patch.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(patch.body, json!({"fw": "2.0", "$version": 2}));

    // What it reports on node B, node A's REST API shows.
    assert_eq!(on_b.patch_reported(&json!({"fw": "2.0"})).await.unwrap(), (204, Some(2)));
    assert_eq!(service_a.twin("dev1").await.unwrap()["properties"]["reported"], json!({"fw": "2.0", "$version": 2}));

    // Same-id takeover across nodes, both ways: the older connection is closed.
    let mut on_a = node_a.connect_device("dev1", &key).await;
    on_b.wait_closed(TIMEOUT).await.unwrap_or_else(|e| panic!("node B kept the replaced connection: {e}\n{}", logs()));
    on_a.get_twin().await.unwrap();
    let mut on_b = node_b.connect_device("dev1", &key).await;
    on_a.wait_closed(TIMEOUT).await.unwrap_or_else(|e| panic!("node A kept the replaced connection: {e}\n{}", logs()));
    on_b.subscribe_desired().await.unwrap();
    service_a.update_desired("dev1", &json!({"fw": "2.1"})).await.unwrap();
    assert_eq!(on_b.next_desired(TIMEOUT).await.unwrap().body, json!({"fw": "2.1", "$version": 3}));
    for service in [&service_a, &service_b] {
        assert_eq!(service.device("dev1").await.unwrap()["connectionState"], "Connected");
    }

    // Deleting the device through node A disconnects it from node B.
    let response = service_a.request(reqwest::Method::DELETE, "/devices/dev1").send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    on_b.wait_closed(TIMEOUT).await.unwrap_or_else(|e| panic!("node B kept a deleted device: {e}\n{}", logs()));
    match node_b.device_options("dev1", &key).connect().await {
        Err(DeviceError::Refused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("a deleted device reconnecting to node B: {other:?}"),
    }

    drop((node_a, node_b));
    database.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_reported_patches_survive_a_kill_9() {
    /// How many patches (of all devices) are acknowledged before the kill; the streams go on
    /// meanwhile, so the kill lands in the middle of writes.
    const KILL_AFTER: usize = 200;
    /// Devices streaming at once (so that the server has concurrent writes to commit).
    const DEVICES: usize = 4;
    let root = temp_dir();
    let dir = root.path().join("node");
    let mut node = ServeProcess::start(&binary(), &dir, None).await.unwrap();
    let service = node.service().unwrap();

    // Each device sends {"seq": n}, one patch at a time, each awaiting its 204, until the
    // connection dies; it returns the last acknowledged n.
    let mut keys = Vec::new();
    let mut devices = Vec::new();
    for index in 0..DEVICES {
        let device_id = format!("dev{index}");
        let (key, _) = service.create_device(&device_id).await.unwrap();
        devices.push((device_id.clone(), node.connect_device(&device_id, &key).await));
        keys.push((device_id, key));
    }
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut streams = Vec::new();
    for (device_id, mut device) in devices {
        let acks = acks.clone();
        streams.push(tokio::spawn(async move {
            let mut acknowledged = 0;
            for seq in 1u64.. {
                match device.patch_reported_raw(json!({ "seq": seq }).to_string().into_bytes()).await {
                    Ok(duhub_testkit::TwinResponse { status: 204, version: Some(version), .. }) => {
                        assert_eq!(version, seq + 1, "{device_id}: the reported $version after patch {seq}");
                        acknowledged = seq;
                        let _ = acks.send(());
                    }
                    Ok(other) => panic!("{device_id}: patch {seq} was answered {other:?}"),
                    Err(DeviceError::Closed(_)) => break,
                    Err(error) => panic!("{device_id}: patch {seq}: {error}"),
                }
            }
            acknowledged
        }));
    }
    drop(acks);
    let counted = tokio::time::timeout(TIMEOUT * 3, async {
        for _ in 0..KILL_AFTER {
            acked.recv().await.expect("a stream ended before the kill");
        }
    })
    .await;
    assert!(counted.is_ok(), "{KILL_AFTER} patches were not acknowledged in time\nlog:\n{}", node.log());
    node.kill();
    let mut acknowledged = Vec::new();
    for stream in streams {
        acknowledged
            .push(tokio::time::timeout(TIMEOUT, stream).await.expect("a stream did not notice the kill").unwrap());
    }
    assert!(acknowledged.iter().sum::<u64>() >= KILL_AFTER as u64);

    // Restarted on the same data directory, it has every acknowledged patch.
    let node = ServeProcess::start(&binary(), &dir, None).await.unwrap();
    let service = node.service().unwrap();
    for ((device_id, key), acknowledged) in keys.iter().zip(acknowledged) {
        let twin = service.twin(device_id).await.unwrap();
        let reported = &twin["properties"]["reported"];
        let seq = reported["seq"].as_u64().unwrap_or_else(|| panic!("{device_id}: no seq in {twin}"));
        let version = reported["$version"].as_u64().unwrap();
        assert!(seq >= acknowledged, "{device_id}: patch {acknowledged} was acknowledged, the twin has {seq}");
        assert!(
            seq <= acknowledged + 1,
            "{device_id}: one patch was in flight; the twin has {seq} after {acknowledged}"
        );
        assert!(version > acknowledged, "{device_id}: $version {version} after {acknowledged} acknowledged patches");
        assert_eq!(version, seq + 1, "{device_id}: every stored patch bumped the version exactly once: {reported}");

        // And the device reconnecting sees the same.
        let mut device = node.connect_device(device_id, key).await;
        assert_eq!(&device.get_twin().await.unwrap()["reported"], reported);
    }
}

/// Killed with SIGKILL while devices stream Device Update agent reports, the node never leaves
/// a device's Device Update record (`du_device`) disagreeing with its twin: the record is
/// written in the reported patch's own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_never_leaves_the_device_update_record_and_the_twin_disagreeing() {
    const KILL_AFTER: usize = 200;
    const DEVICES: usize = 4;
    let root = temp_dir();
    let dir = root.path().join("node");
    let mut node = ServeProcess::start(&binary(), &dir, None).await.unwrap();
    let service = node.service().unwrap();
    let mut devices = Vec::new();
    for index in 0..DEVICES {
        let device_id = format!("du{index}");
        let (key, _) = service.create_device(&device_id).await.unwrap();
        devices.push((device_id.clone(), node.connect_device(&device_id, &key).await));
    }
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut streams = Vec::new();
    for (device_id, mut device) in devices {
        let acks = acks.clone();
        streams.push(tokio::spawn(async move {
            for seq in 1u64.. {
                // Each patch moves the agent to another workflow and state, and (every third)
                // to another device class.
                let report = json!({"deviceUpdate": {"__t": "c", "agent": {
                    "deviceProperties": {"manufacturer": "contoso", "model": format!("m{}", seq % 3)},
                    "state": if seq % 2 == 0 { 6 } else { 0 },
                    "workflow": {"action": 3, "id": format!("w{seq}")},
                    "lastInstallResult": {"resultCode": seq, "extendedResultCodes": "00000000", "resultDetails": ""}}}});
                match device.patch_reported_raw(report.to_string().into_bytes()).await {
                    Ok(duhub_testkit::TwinResponse { status: 204, .. }) => {
                        let _ = acks.send(());
                    }
                    Ok(other) => panic!("{device_id}: patch {seq} was answered {other:?}"),
                    Err(DeviceError::Closed(_)) => break,
                    Err(error) => panic!("{device_id}: patch {seq}: {error}"),
                }
            }
        }));
    }
    drop(acks);
    let counted = tokio::time::timeout(TIMEOUT * 3, async {
        for _ in 0..KILL_AFTER {
            acked.recv().await.expect("a stream ended before the kill");
        }
    })
    .await;
    assert!(counted.is_ok(), "{KILL_AFTER} patches were not acknowledged in time\nlog:\n{}", node.log());
    node.kill();
    for stream in streams {
        tokio::time::timeout(TIMEOUT, stream).await.expect("a stream did not notice the kill").unwrap();
    }

    // The database as the killed node left it: every record says what its twin says.
    let url = format!("sqlite://{}", dir.join("duhub.db").display());
    let store = duhub_server::store::Store::open(&url, "check").await.unwrap();
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("du{i}")).collect();
    let twins = store.fleet_of(&ids).await.unwrap();
    let records = store.records(&duhub_server::store::RecordFilter::default(), None, 100).await.unwrap();
    assert_eq!(records.len(), DEVICES, "every device reported an agent before the kill");
    for (twin, record) in twins.iter().zip(&records) {
        let view = duhub_server::du::fleet::DeviceView::from_row(twin).unwrap_or_else(|| panic!("{twin:?}"));
        assert_eq!(view.device_id, record.device_id);
        let seq = view.reported_workflow().unwrap().trim_start_matches('w').parse::<u64>().unwrap();
        assert!(seq > 0);
        assert_eq!(record.facts.workflow_id.as_deref(), view.reported_workflow(), "{}", record.device_id);
        assert_eq!(record.facts.agent_state, view.agent.state.map(|s| s.code()), "{}", record.device_id);
        assert_eq!(record.facts.result_code, view.reported_result().map(|r| i64::from(r.0)), "{}", record.device_id);
        assert_eq!(record.class_id, view.class.id, "{}", record.device_id);
    }
}
