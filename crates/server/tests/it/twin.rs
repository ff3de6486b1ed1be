//! Device twins over MQTT and REST: GET, reported patches, desired patches and their delivery,
//! the document limits.

use std::sync::Arc;

use duhub_server::store::StoreError;
use duhub_testkit::{Backend, DeviceError, TIMEOUT, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ABSENCE, nested};

pub(crate) async fn get_returns_desired_and_reported_with_versions(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut device = server.new_device("dev1").await;
    assert_eq!(device.get_twin().await.unwrap(), json!({"desired": {"$version": 1}, "reported": {"$version": 1}}));

    server.service().update_desired("dev1", &json!({"fw": "2.0", "cfg": {"a": 1}})).await.unwrap();
    device.patch_reported(&json!({"state": 0})).await.unwrap();
    assert_eq!(
        device.get_twin().await.unwrap(),
        json!({
            "desired": {"fw": "2.0", "cfg": {"a": 1}, "$version": 2},
            "reported": {"state": 0, "$version": 2},
        })
    );
    server.shutdown().await;
}

pub(crate) async fn reported_patch_answers_204_with_the_new_version_and_rest_sees_it(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut device = server.new_device("dev1").await;
    let before = server.service().twin("dev1").await.unwrap();

    let (status, version) = device.patch_reported(&json!({"fw": "1.0", "agent": {"state": 0}})).await.unwrap();
    assert_eq!((status, version), (204, Some(2)));
    let (status, version) = device.patch_reported(&json!({"agent": {"result": 700}})).await.unwrap();
    assert_eq!((status, version), (204, Some(3)), "each patch bumps the reported $version");

    let twin = server.service().twin("dev1").await.unwrap();
    assert_eq!(
        twin["properties"]["reported"],
        json!({"fw": "1.0", "agent": {"state": 0, "result": 700}, "$version": 3}),
        "patches merge: {twin}"
    );
    assert_eq!(twin["properties"]["desired"], json!({"$version": 1}));
    assert_ne!(twin["etag"], before["etag"], "the etag changes with the twin");
    assert!(twin["version"].as_i64().unwrap() > before["version"].as_i64().unwrap(), "{before} -> {twin}");

    // A `$version` in the patch is the caller's business and is not stored.
    let (status, version) = device.patch_reported(&json!({"$version": 42, "x": 1})).await.unwrap();
    assert_eq!((status, version), (204, Some(4)));
    assert_eq!(device.get_twin().await.unwrap()["reported"]["$version"], 4);
    server.shutdown().await;
}

pub(crate) async fn null_in_a_reported_patch_deletes_the_member(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut device = server.new_device("dev1").await;
    device.patch_reported(&json!({"a": 1, "b": {"c": 2, "d": 3}, "steps": {"s1": {"r": 0}}})).await.unwrap();
    let (status, version) =
        device.patch_reported(&json!({"a": null, "b": {"c": null}, "steps": null, "absent": null})).await.unwrap();
    assert_eq!((status, version), (204, Some(3)));
    let expected = json!({"b": {"d": 3}, "$version": 3});
    assert_eq!(device.get_twin().await.unwrap()["reported"], expected);
    assert_eq!(server.service().twin("dev1").await.unwrap()["properties"]["reported"], expected);
    server.shutdown().await;
}

pub(crate) async fn desired_patch_reaches_subscribed_devices_only_and_honours_the_etag(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();
    let mut subscribed = server.new_device("subscribed").await;
    subscribed.subscribe_desired().await.unwrap();
    let mut lazy = server.new_device("lazy").await;
    lazy.get_twin().await.unwrap(); // subscribes to twin responses only, as the SDKs do

    // A stale etag is refused and changes nothing.
    let twin = service.twin("subscribed").await.unwrap();
    let etag = twin["etag"].as_str().unwrap().to_owned();
    let stale = duhub_server::store::etag_of(twin["version"].as_i64().unwrap() + 7);
    let response = service.patch_desired("subscribed", &json!({"fw": "stale"}), Some(&stale)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(service.twin("subscribed").await.unwrap(), twin, "a refused patch changes nothing");

    // The current etag is accepted; the device gets the patch with its $version.
    let response = service.patch_desired("subscribed", &json!({"fw": "2.0", "mode": "a"}), Some(&etag)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["properties"]["desired"], json!({"fw": "2.0", "mode": "a", "$version": 2}));
    assert_ne!(updated["etag"].as_str().unwrap(), etag);
    let patch = subscribed.next_desired(TIMEOUT).await.unwrap();
    assert_eq!(patch.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(patch.topic_version, Some(2));
    assert_eq!(patch.body, json!({"fw": "2.0", "mode": "a", "$version": 2}));

    // The old etag is now stale.
    let response = service.patch_desired("subscribed", &json!({"fw": "again"}), Some(&etag)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);

    // The device that did not subscribe is not sent its patch...
    let response = service.patch_desired("lazy", &json!({"fw": "lazy"}), None).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // ...(and a later patch of the other device, through the same event path, arrives first)...
    service.update_desired("subscribed", &json!({"fw": null, "mode": "b"})).await.unwrap();
    let patch = subscribed.next_desired(TIMEOUT).await.unwrap();
    assert_eq!(patch.body, json!({"fw": null, "mode": "b", "$version": 3}), "a null deletion is delivered as null");
    match lazy.next_desired(ABSENCE).await {
        Err(DeviceError::Timeout(_)) => {}
        other => panic!("a device that did not subscribe got {other:?}"),
    }
    // ...but sees it with a GET.
    assert_eq!(lazy.get_twin().await.unwrap()["desired"], json!({"fw": "lazy", "$version": 2}));
    assert_eq!(subscribed.get_twin().await.unwrap()["desired"], json!({"mode": "b", "$version": 3}));
    server.shutdown().await;
}

pub(crate) async fn a_reconnecting_device_sees_the_latest_desired_properties(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key, _) = server.create_device("dev1").await;
    let mut device = server.connect_device("dev1", &key).await;
    device.subscribe_desired().await.unwrap();
    assert_eq!(device.get_twin().await.unwrap()["desired"], json!({"$version": 1}));
    device.disconnect().await.unwrap();

    // Two patches while it is away.
    server.service().update_desired("dev1", &json!({"fw": "1.1", "keep": true})).await.unwrap();
    server.service().update_desired("dev1", &json!({"fw": "1.2"})).await.unwrap();

    let mut device = server.connect_device("dev1", &key).await;
    assert_eq!(device.get_twin().await.unwrap()["desired"], json!({"fw": "1.2", "keep": true, "$version": 3}));
    // And live patches resume once it subscribes again.
    device.subscribe_desired().await.unwrap();
    server.service().update_desired("dev1", &json!({"fw": "1.3"})).await.unwrap();
    let patch = device.next_desired(TIMEOUT).await.unwrap();
    assert_eq!(patch.body, json!({"fw": "1.3", "$version": 4}));
    server.shutdown().await;
}

pub(crate) async fn patches_breaking_the_twin_limits_are_refused_and_change_nothing(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut device = server.new_device("dev1").await;
    assert_eq!(device.patch_reported(&json!({"ok": 1})).await.unwrap(), (204, Some(2)));
    let before_rest = server.service().twin("dev1").await.unwrap();
    let before_mqtt = device.get_twin().await.unwrap();

    let mut too_big = serde_json::Map::new();
    for index in 0..9 {
        too_big.insert(format!("blob{index}"), Value::String("x".repeat(4000)));
    }
    let too_big = Value::Object(too_big);
    assert!(too_big.to_string().len() > 32 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a patch over 32 KB", too_big.to_string().into_bytes()),
        ("a key with '.'", br#"{"a.b": 1}"#.to_vec()),
        ("a key with '$'", br#"{"$a": 1}"#.to_vec()),
        ("a nested key with '$'", br#"{"x": {"$y": 1}}"#.to_vec()),
        ("a key with a space", br#"{"a b": 1}"#.to_vec()),
        ("11 nested objects (depth > 10)", nested(11).to_string().into_bytes()),
        ("a string value over 4 KB", json!({"s": "y".repeat(4097)}).to_string().into_bytes()),
        ("a JSON array", b"[1, 2]".to_vec()),
        ("not JSON", b"{not json".to_vec()),
    ];
    let mut wrong = Vec::new();
    for (case, payload) in cases {
        let response = device.patch_reported_raw(payload).await.unwrap();
        if response.status != 400 || response.version.is_some() {
            wrong.push(format!("{case}: expected status 400 without $version, got {response:?}"));
        } else if response.body.get("errorCode") != Some(&json!(400)) {
            wrong.push(format!("{case}: the error body has no errorCode 400: {}", response.body));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    assert_eq!(device.get_twin().await.unwrap(), before_mqtt, "refused patches change nothing");
    assert_eq!(server.service().twin("dev1").await.unwrap(), before_rest, "refused patches change nothing");

    // The limits are limits, not off by one: 10 levels and 4 KB strings are fine.
    assert_eq!(device.patch_reported(&nested(10)).await.unwrap(), (204, Some(3)));
    assert_eq!(device.patch_reported(&json!({"s": "y".repeat(4096)})).await.unwrap(), (204, Some(4)));

    // The size limit applies to the merged section: patches that are small on their own but
    // would take it over 32 KB are refused.
    let mut version = 4;
    let mut refused = None;
    for index in 0..10 {
        let response = device
            .patch_reported_raw(json!({ format!("part{index}"): "z".repeat(4000) }).to_string().into_bytes())
            .await
            .unwrap();
        if response.status == 204 {
            version += 1;
            assert_eq!(response.version, Some(version));
        } else {
            assert_eq!(response.status, 400, "{response:?}");
            refused = Some(index);
            break;
        }
    }
    let refused = refused.expect("growing the reported section past 32 KB must be refused");
    let reported = device.get_twin().await.unwrap()["reported"].clone();
    assert_eq!(reported["$version"], version);
    assert!(reported.get(format!("part{refused}")).is_none());
    assert!(reported.to_string().len() <= 32 * 1024 + 64, "{} bytes", reported.to_string().len());
    server.shutdown().await;
}

pub(crate) async fn concurrent_twin_and_registry_writes_all_succeed(backend: Backend) {
    const DEVICES: usize = 4;
    const PATCHES: u64 = 25;
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut devices = Vec::new();
    for index in 0..DEVICES {
        devices.push(server.new_device(&format!("streamer{index}")).await);
    }
    let streams = devices.into_iter().map(|mut device| async move {
        let mut wrong = Vec::new();
        for seq in 1..=PATCHES {
            let response = device.patch_reported_raw(json!({ "seq": seq }).to_string().into_bytes()).await.unwrap();
            if (response.status, response.version) != (204, Some(seq + 1)) {
                wrong.push(format!("{}: patch {seq} answered {response:?}", device.client_id));
            }
        }
        wrong
    });
    // Meanwhile the registry changes: devices are created, updated and deleted.
    let registry = async {
        for index in 0..PATCHES {
            let device_id = format!("extra{index}");
            server.create_device(&device_id).await;
            if index % 2 == 0 {
                let response =
                    server.service().request(reqwest::Method::DELETE, &format!("/devices/{device_id}")).send().await;
                assert_eq!(response.unwrap().status(), StatusCode::NO_CONTENT);
            }
        }
    };
    let (wrong, ()) = tokio::join!(futures_util::future::join_all(streams), registry);
    let wrong: Vec<String> = wrong.into_iter().flatten().collect();
    assert!(wrong.is_empty(), "{} patches failed:\n{}", wrong.len(), wrong.join("\n"));
    for index in 0..DEVICES {
        let twin = server.service().twin(&format!("streamer{index}")).await.unwrap();
        assert_eq!(twin["properties"]["reported"], json!({"seq": PATCHES, "$version": PATCHES + 1}));
    }
    server.shutdown().await;
}

pub(crate) async fn concurrent_writes_of_many_devices_all_land_and_each_device_keeps_its_order(backend: Backend) {
    const DEVICES: usize = 24;
    const REPORTED: i64 = 20;
    const DESIRED: i64 = 8;
    let Some(server) = TestServer::start_on(backend).await else { return };
    let store = server.hub().store().clone();
    // On PostgreSQL the desired patches come through a second node on the same database, so the
    // two nodes' batches write the same twins at once.
    let other = match backend {
        Backend::Postgres => duhub_server::store::Store::open(&server.database_url, "other-node").await.unwrap(),
        Backend::Sqlite => store.clone(),
    };
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("dev{i:02}")).collect();
    for id in &ids {
        server.create_device(id).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        let (store, device) = (store.clone(), id.clone());
        tasks.spawn(async move {
            let id = device;
            for n in 0..REPORTED {
                let twin = store.patch_reported(&id, &json!({"n": n, format!("k{n}"): n})).await.unwrap();
                // Only this task reports for the device: its versions follow one another.
                assert_eq!(twin.reported_version, 2 + n, "{id}");
                assert_eq!(twin.reported["n"], n, "{id}");
            }
        });
        let (other, id) = (other.clone(), id.clone());
        tasks.spawn(async move {
            for n in 0..DESIRED {
                let twin = other.patch_desired(&id, &json!({"d": n}), None).await.unwrap();
                assert_eq!(twin.desired_version, 2 + n, "{id}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for id in &ids {
        let twin = store.twin(id).await.unwrap();
        assert_eq!(twin.reported_version, 1 + REPORTED, "{id}");
        assert_eq!(twin.desired_version, 1 + DESIRED, "{id}");
        assert_eq!(twin.version, 1 + REPORTED + DESIRED, "every write bumped the twin once: {id}");
        assert_eq!(twin.reported.len(), 1 + REPORTED as usize, "no patch lost: {:?}", twin.reported);
        assert_eq!(twin.desired["d"], DESIRED - 1, "{id}");
    }
    server.shutdown().await;
}

/// The reconciler's write path (`Store::replace_desired_members`): one value set on many devices
/// in the writer's batches, each as a merge patch against the device's own twin that nulls
/// what the old value had and the new one lacks; the patch is recorded for other nodes and
/// delivered to a subscribed device; a missing device fails alone; writing it again is a no-op
/// for the document.
pub(crate) async fn a_desired_member_replaced_on_many_devices_is_a_patch_against_each_twin(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();
    let mut subscribed = server.new_device("many-0").await;
    subscribed.subscribe_desired().await.unwrap();
    server.create_device("many-1").await;
    let old = json!({"comp": {"__t": "c", "svc": {"old": 1, "keep": {"a": 1, "b": 2}}}, "other": true});
    service.update_desired("many-1", &old).await.unwrap();

    let store = server.hub().store();
    let value = Arc::new(json!({"keep": {"a": 5}, "new": "x"}));
    let writes = ["many-0", "many-1", "absent"].map(|id| (id.to_owned(), value.clone())).to_vec();
    let outcomes = store.replace_desired_members("comp", "svc", writes).await;
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(matches!(outcomes[2], Err(StoreError::NotFound(_))), "{outcomes:?}");

    let twin = store.twin("many-1").await.unwrap();
    assert_eq!(
        Value::Object(twin.desired),
        json!({"comp": {"__t": "c", "svc": {"keep": {"a": 5}, "new": "x"}}, "other": true})
    );
    assert_eq!(twin.desired_version, 3);
    assert_eq!(
        store.desired_patch("many-1", 3).await.unwrap(),
        Some(
            json!({"comp": {"__t": "c", "svc": {"keep": {"a": 5, "b": null}, "new": "x", "old": null}}, "$version": 3})
        ),
        "the recorded patch nulls what the old value had"
    );
    let patch = subscribed.next_desired(TIMEOUT).await.unwrap();
    assert_eq!(patch.body, json!({"comp": {"__t": "c", "svc": {"keep": {"a": 5}, "new": "x"}}, "$version": 2}));

    let again = store.replace_desired_members("comp", "svc", vec![("many-1".to_owned(), value.clone())]).await;
    assert!(again[0].is_ok(), "{again:?}");
    let twin = store.twin("many-1").await.unwrap();
    assert_eq!(twin.desired_version, 4);
    assert_eq!(twin.desired["comp"]["svc"], *value, "the same value again leaves the document as it was");
    server.shutdown().await;
}
