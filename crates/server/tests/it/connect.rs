//! Connecting: MQTT 3.1.1 over TLS with SAS tokens, the refusals, same-id takeover, keep-alive.

use std::time::Duration;

use duhub_testkit::{
    Backend, DeviceError, DeviceOptions, MODEL_ID, RawConnection, TIMEOUT, TestServer, mqtt5_connect_packet, now_unix,
};
use rumqttc::{ConnectReturnCode, Packet};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{connection_state, eventually, random_key};

pub(crate) async fn a_device_connects_over_tls_and_is_recorded_as_connected(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (primary, secondary) = server.create_device("dev1").await;
    assert_eq!(connection_state(server.service(), "dev1").await, "Disconnected");

    let mut device = server.connect_device("dev1", &primary).await;
    assert_eq!(server.hub().connected(), 1);
    let record = server.service().device("dev1").await.unwrap();
    assert_eq!(record["connectionState"], "Connected", "{record}");
    assert_eq!(record["modelId"], MODEL_ID, "the model id of the username is recorded: {record}");
    assert_eq!(server.service().twin("dev1").await.unwrap()["modelId"], MODEL_ID);
    device.get_twin().await.unwrap();

    // A clean DISCONNECT is recorded too.
    device.disconnect().await.unwrap();
    eventually("the device to be recorded as disconnected", TIMEOUT, || async {
        match connection_state(server.service(), "dev1").await.as_str() {
            "Disconnected" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
    assert_eq!(server.hub().connected(), 0);

    // The secondary key works as well.
    let mut device = server.connect_device("dev1", &secondary).await;
    device.get_twin().await.unwrap();
    drop(device);
    server.shutdown().await;
}

pub(crate) async fn bad_credentials_are_refused_with_a_connack_error(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key_a, _) = server.create_device("dev-a").await;
    let (key_b, _) = server.create_device("dev-b").await;
    let disabled = server
        .service()
        .expect_json(
            server.service().request(reqwest::Method::PUT, "/devices/dev-off").json(&json!({"status": "disabled"})),
        )
        .await
        .unwrap();
    assert_eq!(disabled["status"], "disabled", "{disabled}");
    let key_off = disabled["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();

    let host = duhub_testkit::HOSTNAME;
    let in_an_hour = now_unix() + 3600;
    let with_password =
        |device_id: &str, password: String| DeviceOptions { password, ..server.device_options(device_id, &key_a) };
    let cases: Vec<(&str, DeviceOptions)> = vec![
        (
            "a token signed with a wrong key",
            with_password("dev-a", DeviceOptions::sas_token(host, "dev-a", &random_key(), in_an_hour)),
        ),
        (
            "an expired token (se in the past)",
            with_password("dev-a", DeviceOptions::sas_token(host, "dev-a", &key_a, now_unix() - 60)),
        ),
        (
            "another device's valid token",
            with_password("dev-a", DeviceOptions::sas_token(host, "dev-b", &key_b, in_an_hour)),
        ),
        (
            "a token for another host",
            with_password("dev-a", DeviceOptions::sas_token("other.example", "dev-a", &key_a, in_an_hour)),
        ),
        ("a disabled device with its valid token", server.device_options("dev-off", &key_off)),
        ("an unknown device", server.device_options("ghost", &random_key())),
    ];
    let mut wrong = Vec::new();
    for (case, options) in &cases {
        match options.connect().await {
            Err(DeviceError::Refused(ConnectReturnCode::NotAuthorized)) => {}
            Err(error) => wrong.push(format!("{case}: expected CONNACK NotAuthorized (5), got {error}")),
            Ok(_) => wrong.push(format!("{case}: the connection was accepted")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A refusal is a CONNACK followed by the server closing the socket.
    let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
    raw.send(&RawConnection::connect_packet(&cases[0].1, 60)).await.unwrap();
    let bytes = raw.read_to_close(TIMEOUT).await.unwrap();
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x05], "CONNACK 'not authorized', then close");

    assert_eq!(server.hub().connected(), 0);
    for device_id in ["dev-a", "dev-b", "dev-off"] {
        assert_eq!(connection_state(server.service(), device_id).await, "Disconnected", "{device_id}");
    }
    // The right credentials still work after all that.
    server.connect_device("dev-a", &key_a).await.get_twin().await.unwrap();
    server.shutdown().await;
}

pub(crate) async fn an_mqtt_5_client_is_not_let_in(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key, _) = server.create_device("dev1").await;
    let options = server.device_options("dev1", &key);

    let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
    raw.send_bytes(&mqtt5_connect_packet(&options, 60)).await.unwrap();
    let bytes = raw.read_to_close(TIMEOUT).await.unwrap();
    assert!(!bytes.starts_with(&[0x20, 0x02, 0x00, 0x00]), "an MQTT 5 CONNECT was accepted: {bytes:02x?}");
    assert_eq!(connection_state(server.service(), "dev1").await, "Disconnected");
    assert_eq!(server.hub().connected(), 0);

    // The same credentials over MQTT 3.1.1 are accepted.
    let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
    raw.send(&RawConnection::connect_packet(&options, 60)).await.unwrap();
    match raw.read_packet(TIMEOUT).await.unwrap() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
    server.shutdown().await;
}

/// MQTT 3.1.1 §3.1.2.2: "The Server MUST respond to the CONNECT Packet with a CONNACK return
/// code 0x01 (unacceptable protocol level) and then disconnect the Client if the Protocol Level
/// is not supported by the Server."
pub(crate) async fn mqtt_5_is_refused_with_connack_unacceptable_protocol_version(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key, _) = server.create_device("dev1").await;
    let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
    raw.send_bytes(&mqtt5_connect_packet(&server.device_options("dev1", &key), 60)).await.unwrap();
    let bytes = raw.read_to_close(TIMEOUT).await.unwrap();
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x01], "an MQTT 5 CONNECT must get CONNACK 0x01, then a close");
    server.shutdown().await;
}

pub(crate) async fn a_second_connection_with_the_same_id_takes_over(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key, _) = server.create_device("dev1").await;
    let mut first = server.connect_device("dev1", &key).await;
    first.subscribe_desired().await.unwrap();

    let mut second = server.connect_device("dev1", &key).await;
    let why = first.wait_closed(TIMEOUT).await.expect("the first connection must be closed by the takeover");
    assert!(!why.is_empty());

    // The second connection works, and gets desired patches once it subscribes.
    second.subscribe_desired().await.unwrap();
    let (status, version) = second.patch_reported(&json!({"owner": "second"})).await.unwrap();
    assert_eq!((status, version), (204, Some(2)));
    server.service().update_desired("dev1", &json!({"fw": "2.0"})).await.unwrap();
    let patch = second.next_desired(TIMEOUT).await.unwrap();
    assert_eq!(patch.body, json!({"fw": "2.0", "$version": 2}));

    // The replaced connection closing does not mark the device disconnected: it still is
    // connected, through the second one. (The server records its end before closing the socket.)
    assert_eq!(connection_state(server.service(), "dev1").await, "Connected");
    assert_eq!(server.hub().connected(), 1);
    assert!(matches!(first.get_twin().await, Err(DeviceError::Closed(_))));
    server.shutdown().await;
}

pub(crate) async fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key_silent, _) = server.create_device("silent").await;
    let (key_pinging, _) = server.create_device("pinging").await;

    let silent = async {
        let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
        raw.send(&RawConnection::connect_packet(&server.device_options("silent", &key_silent), 2)).await.unwrap();
        match raw.read_packet(TIMEOUT).await.unwrap() {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
        let connected = Instant::now();
        // The client now stops sending: the server must close within 1.5 × 2 s.
        let bytes = raw.read_to_close(Duration::from_secs(10)).await.unwrap();
        let elapsed = connected.elapsed();
        assert!(bytes.is_empty(), "the server sent {bytes:?} instead of closing");
        assert!(
            (Duration::from_millis(2500)..=Duration::from_millis(4500)).contains(&elapsed),
            "a client silent past its keep-alive of 2 s was closed after {elapsed:?}, expected about 3 s"
        );
    };

    // A client that pings every second stays connected past the same deadline.
    let pinging = async {
        let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
        raw.send(&RawConnection::connect_packet(&server.device_options("pinging", &key_pinging), 2)).await.unwrap();
        match raw.read_packet(TIMEOUT).await.unwrap() {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
        for ping in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await; // the client's own pace, not a wait
            raw.send(&Packet::PingReq).await.unwrap();
            match raw.read_packet(TIMEOUT).await.unwrap() {
                Some(Packet::PingResp) => {}
                other => panic!("ping {ping}: expected a PINGRESP, got {other:?}"),
            }
        }
        raw
    };
    let ((), pinging) = tokio::join!(silent, pinging);
    assert_eq!(connection_state(server.service(), "silent").await, "Disconnected");
    assert_eq!(connection_state(server.service(), "pinging").await, "Connected");
    drop(pinging);
    server.shutdown().await;
}
