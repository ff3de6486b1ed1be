//! One device cannot read or write another's data: subscriptions outside its own topics are
//! refused, publishing for another device or to an unknown topic ends the connection, and twins
//! stay apart.

use duhub_testkit::{Backend, DeviceError, TIMEOUT, TestServer};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;

pub(crate) async fn a_device_cannot_reach_another_devices_topics_or_twin(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key_a, _) = server.create_device("dev-a").await;
    let mut a = server.connect_device("dev-a", &key_a).await;
    let mut b = server.new_device("dev-b").await;

    // Subscriptions: its own trees only.
    let mut wrong = Vec::new();
    for (filter, allowed) in [
        ("devices/dev-b/messages/devicebound/#", false),
        ("devices/+/messages/devicebound/#", false),
        ("#", false),
        ("$iothub/#", false),
        ("devices/dev-a/messages/devicebound/#", true),
        ("$iothub/twin/PATCH/properties/desired/#", true),
        ("$iothub/methods/POST/#", true),
    ] {
        let code = a.subscribe(filter).await.unwrap();
        let granted = matches!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
        if granted != allowed || (!allowed && code != SubscribeReasonCode::Failure) {
            wrong
                .push(format!("{filter}: got {code:?}, expected {}", if allowed { "QoS 1" } else { "failure (0x80)" }));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Twins: A's patch is in A's twin only.
    assert_eq!(a.patch_reported(&json!({"secret": "of a"})).await.unwrap(), (204, Some(2)));
    assert_eq!(b.get_twin().await.unwrap(), json!({"desired": {"$version": 1}, "reported": {"$version": 1}}));
    assert_eq!(server.service().twin("dev-b").await.unwrap()["properties"]["reported"], json!({"$version": 1}));
    assert_eq!(server.service().twin("dev-a").await.unwrap()["properties"]["reported"]["secret"], "of a");

    // Telemetry in another device's name ends the connection; the other device is unaffected.
    a.publish("devices/dev-b/messages/events/", "forged").await.unwrap();
    a.wait_closed(TIMEOUT).await.expect("publishing as another device must close the connection");
    assert_eq!(b.get_twin().await.unwrap()["reported"], json!({"$version": 1}));

    // Its own telemetry is fine.
    let mut a = server.connect_device("dev-a", &key_a).await;
    a.publish("devices/dev-a/messages/events/%24.ct=application%2Fjson", r#"{"t": 1}"#).await.unwrap();
    a.get_twin().await.expect("own telemetry keeps the connection open");

    // Unknown topics end the connection, including the service's own twin topics.
    for topic in
        ["some/unknown/topic", "$iothub/twin/PATCH/properties/desired/?$rid=1", "devices/dev-a/messages/devicebound/x"]
    {
        let mut a = server.connect_device("dev-a", &key_a).await;
        a.publish(topic, r#"{"fw": "evil"}"#).await.unwrap();
        match a.wait_closed(TIMEOUT).await {
            Ok(_) => {}
            Err(error) => panic!("publishing to {topic:?} left the connection open: {error}"),
        }
    }
    let twin_a = server.service().twin("dev-a").await.unwrap();
    assert_eq!(twin_a["properties"]["desired"], json!({"$version": 1}), "a device cannot write desired properties");
    assert!(
        matches!(a.get_twin().await, Err(DeviceError::Closed(_))),
        "the connection replaced by later ones is closed"
    );
    assert_eq!(b.get_twin().await.unwrap()["desired"], json!({"$version": 1}));
    server.shutdown().await;
}
