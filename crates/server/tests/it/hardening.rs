//! Issue 11 (hardening): one bad request or connection never takes the node down, slow HTTPS
//! clients are dropped, and limits hold. Each test failed on the code before its fix.

use std::time::Duration;

use duhub_testkit::{TIMEOUT, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{connection_state, eventually};

/// Issue 11 item 1: a filter naming `compatPropertiesé…` sliced a byte inside the `é` and the
/// panic aborted the whole process. Now a 400, and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_with_a_multibyte_field_is_a_400_not_a_crash() {
    let server = TestServer::start().await;
    let du = server.du();
    let mut device = server.new_device("alive").await;
    let path = "/management/groups/anygroup/deviceClassSubgroups?filter=compatProperties%C3%A9x%20eq%20%27a%27";
    let response = du.send(Method::GET, path, None).await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("compatProperties"), "the error names the field: {body}");
    // Same for orderby.
    let response = du.send(Method::GET, "/management/groups?orderby=%C3%A9%C3%A9%C3%A9%20desc", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Everything else still works.
    device.get_twin().await.unwrap();
    du.get("/management/groups").await.unwrap();
    server.shutdown().await;
}

/// A handler that panics (a bug) answers 500 with a JSON body; other requests and device
/// sessions carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_answers_500_and_the_node_goes_on() {
    let server = TestServer::start().await;
    let mut device = server.new_device("bystander").await;
    let http = server.service().http();
    let url = format!("{}{}", server.admin.https_url, duhub_server::hub::TEST_PANIC_PATH);
    for _ in 0..3 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "internal error", "{body}");
    }
    device.get_twin().await.unwrap();
    assert_eq!(device.patch_reported(&json!({"after": "panic"})).await.unwrap().0, 204);
    let twin = server.service().twin("bystander").await.unwrap();
    assert_eq!(twin["properties"]["reported"]["after"], "panic");
    server.shutdown().await;
}

/// A device connection that panics (a bug) ends alone: its session is removed and recorded as
/// disconnected, other devices keep theirs, and the device can connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connection_ends_alone_and_is_recorded_disconnected() {
    let server = TestServer::start().await;
    let mut bystander = server.new_device("bystander").await;
    let (key, _) = server.create_device("culprit").await;
    let mut culprit = server.connect_device("culprit", &key).await;
    assert_eq!(server.hub().connected(), 2);
    culprit.publish(duhub_server::hub::TEST_PANIC_TOPIC, b"boom".to_vec()).await.unwrap();
    culprit.wait_closed(TIMEOUT).await.unwrap();
    let service = server.service();
    eventually("the culprit recorded as disconnected", TIMEOUT, || async {
        let state = connection_state(service, "culprit").await;
        if state == "Disconnected" && server.hub().connected() == 1 { Ok(()) } else { Err(state) }
    })
    .await;
    assert_eq!(connection_state(service, "bystander").await, "Connected");
    bystander.get_twin().await.unwrap();
    let mut again = server.connect_device("culprit", &key).await;
    again.get_twin().await.unwrap();
    assert_eq!(server.hub().connected(), 2);
    tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await.unwrap();
}

/// Issue 11 item 7: `GET /devices?top=` returned as many devices as asked; IoT Hub takes any
/// `top` outside 1..=1000 as 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_returns_at_most_a_thousand() {
    use duhub_server::store::{DeviceSpec, DeviceStatus};
    let server = TestServer::start().await;
    let store = server.hub().store();
    for i in 0..1005 {
        let spec = DeviceSpec {
            device_id: format!("d{i:04}"),
            primary_key: None,
            secondary_key: None,
            status: DeviceStatus::Enabled,
            status_reason: None,
        };
        store.create_device(&spec).await.unwrap();
    }
    let service = server.service();
    for (top, expected) in [("5000", 1000), ("0", 1000), ("-3", 1000), ("1000", 1000), ("7", 7)] {
        let url = format!("{}&top={top}", service.url("/devices"));
        let token = service.token(duhub_testkit::now_unix() + 3600);
        let response = service.http().get(url).header("Authorization", token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "top={top}");
        let devices: Vec<Value> = response.json().await.unwrap();
        assert_eq!(devices.len(), expected, "top={top}");
    }
    let devices: Vec<Value> = service.request(Method::GET, "/devices").send().await.unwrap().json().await.unwrap();
    assert_eq!(devices.len(), 1000);
    server.shutdown().await;
}

/// Issue 11 item 6: a session outlived its SAS token (a 5 s token with keep-alive 0 stayed
/// 70 s). IoT Hub closes the connection when the token expires; the device reconnects with a
/// fresh one. A session whose token is still valid stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closes_when_its_sas_token_expires() {
    use duhub_testkit::{DeviceOptions, RawConnection, now_unix};
    use rumqttc::{ConnectReturnCode, Packet};
    let server = TestServer::start().await;
    let (key, _) = server.create_device("short").await;
    let mut options = server.device_options("short", &key);
    let expiry = now_unix() + 3;
    options.password = DeviceOptions::sas_token(duhub_testkit::HOSTNAME, "short", &key, expiry);
    let mut raw = RawConnection::open(server.endpoint()).await.unwrap();
    // Keep-alive 0: nothing else would ever end this session.
    raw.send(&RawConnection::connect_packet(&options, 0)).await.unwrap();
    match raw.read_packet(TIMEOUT).await.unwrap() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
    let mut bystander = server.new_device("long").await;
    let bytes = raw.read_to_close(Duration::from_secs(15)).await.unwrap();
    assert!(bytes.is_empty(), "the server sent {bytes:?} instead of closing");
    let closed_at = now_unix();
    assert!(closed_at >= expiry, "closed at {closed_at}, before the token's expiry {expiry}");
    assert!(closed_at <= expiry + 2, "closed at {closed_at}, well after the token's expiry {expiry}");
    eventually("the expired session recorded as disconnected", TIMEOUT, || async {
        let state = connection_state(server.service(), "short").await;
        if state == "Disconnected" { Ok(()) } else { Err(state) }
    })
    .await;
    // A device with an hour-long token is still connected and served.
    bystander.get_twin().await.unwrap();
    // Reconnecting with a fresh token works.
    let mut again = server.connect_device("short", &key).await;
    again.get_twin().await.unwrap();
    server.shutdown().await;
}

/// A TLS connection to the HTTPS port that sends only what a test writes.
async fn https_socket(server: &TestServer) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = duhub_testkit::tls_client_config(&server.ca_pem).map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(server.https).await?;
    let name = rustls_pki_types::ServerName::try_from(duhub_testkit::HOSTNAME).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// Reads until the server closes the connection (EOF, reset or a TLS error); returns what it
/// sent and when it closed. Panics if it is still open after `timeout`.
async fn read_until_closed(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    timeout: Duration,
) -> (Vec<u8>, Duration) {
    use tokio::io::AsyncReadExt as _;
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + timeout, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!(
                "the server kept the connection open for {timeout:?}; it sent {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Settings with HTTPS timeouts of `idle`, `header` and `body` milliseconds.
fn https_limits(idle: u64, header: u64, body: u64) -> duhub_server::config::Settings {
    duhub_server::config::Settings {
        https_idle_timeout_ms: Some(idle),
        https_header_timeout_ms: Some(header),
        https_body_timeout_ms: Some(body),
        ..Default::default()
    }
}

/// Issue 11 item 2: after the TLS handshake, a client that sends nothing stayed connected
/// forever (150 s+). Now the idle timeout closes it; the other timeouts are far away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_https_connection_is_closed() {
    let server = TestServer::start_with_settings(https_limits(1000, 60_000, 60_000)).await;
    let mut socket = https_socket(&server).await.unwrap();
    let (sent, after) = read_until_closed(&mut socket, Duration::from_secs(15)).await;
    assert!(sent.is_empty(), "{sent:?}");
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the idle timeout");
    server.shutdown().await;
}

/// Issue 11 item 2: a partial request line, or partial headers, kept the connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_request_lines_and_headers_time_out() {
    use tokio::io::AsyncWriteExt as _;
    let server = TestServer::start_with_settings(https_limits(60_000, 1000, 60_000)).await;
    for partial in ["GET /devi", "GET /devices HTTP/1.1\r\nHost: localhost\r\nAuthoriz"] {
        let mut socket = https_socket(&server).await.unwrap();
        socket.write_all(partial.as_bytes()).await.unwrap();
        socket.flush().await.unwrap();
        let (_, after) = read_until_closed(&mut socket, Duration::from_secs(15)).await;
        assert!(after >= Duration::from_millis(900), "{partial:?}: closed after {after:?}, before the header timeout");
    }
    server.shutdown().await;
}

/// Issue 11 item 2: a request whose `Content-Length` body never arrives held its connection
/// (and the handler) forever. Now the body timeout ends the request and the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_times_out() {
    use tokio::io::AsyncWriteExt as _;
    let server = TestServer::start_with_settings(https_limits(60_000, 60_000, 1000)).await;
    let mut socket = https_socket(&server).await.unwrap();
    let request = format!(
        "POST /deviceUpdate/{}/duhub/uploads?api-version=2022-10-01 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Length: 100000\r\n\r\nonly the start",
        server.admin.instance_id, server.admin.api_token
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.flush().await.unwrap();
    let (answer, after) = read_until_closed(&mut socket, Duration::from_secs(15)).await;
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the body timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    server.shutdown().await;
}

/// Issue 11 item 2: HTTPS connections were not capped (2,000 idle ones took 98 MB and, at the
/// file limit, starved everything). Beyond `https_max_connections` new ones are closed at
/// once; when one ends, a new one is let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_are_capped() {
    use tokio::io::AsyncWriteExt as _;
    let settings =
        duhub_server::config::Settings { https_max_connections: Some(2), ..https_limits(60_000, 60_000, 60_000) };
    let server = TestServer::start_with_settings(settings).await;
    // Through the store: the service client would hold a pooled HTTPS connection.
    let spec = duhub_server::store::DeviceSpec {
        device_id: "beside-the-cap".into(),
        primary_key: None,
        secondary_key: None,
        status: duhub_server::store::DeviceStatus::Enabled,
        status_reason: None,
    };
    let key = server.hub().store().create_device(&spec).await.unwrap().primary_key;
    let first = https_socket(&server).await.unwrap();
    let mut second = https_socket(&server).await.unwrap();
    // The third is closed during the handshake (or right after it).
    match https_socket(&server).await {
        Err(_) => {}
        Ok(mut third) => {
            let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
            let (answer, _) = read_until_closed(&mut third, Duration::from_secs(10)).await;
            assert!(answer.is_empty(), "a connection past the cap was served: {}", String::from_utf8_lossy(&answer));
        }
    }
    // MQTT is not affected.
    let mut device = server.connect_device("beside-the-cap", &key).await;
    device.get_twin().await.unwrap();
    // The held connections still work.
    second.write_all(b"GET /devices HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut second, Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 401"), "{}", String::from_utf8_lossy(&answer));
    drop(first);
    // Both ended: a new connection is served again.
    eventually("a connection under the cap again", TIMEOUT, || async {
        let mut socket = https_socket(&server).await.map_err(|e| e.to_string())?;
        socket
            .write_all(b"GET /devices HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let (answer, _) = read_until_closed(&mut socket, Duration::from_secs(10)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if answer.starts_with("HTTP/1.1 401") { Ok(()) } else { Err(answer) }
    })
    .await;
    server.shutdown().await;
}

/// Uploads `bytes` (`POST .../duhub/uploads`); returns the status and the JSON answer.
async fn upload(server: &TestServer, bytes: Vec<u8>) -> (StatusCode, Value) {
    let du = server.du();
    let response =
        du.http().post(du.url("/duhub/uploads")).bearer_auth(&server.admin.api_token).body(bytes).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Issue 11 item 3 (uploads): uploaded files no import claimed were never removed, so a token
/// holder could fill the disk. Unclaimed uploads now expire; ones an import used stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_uploads_expire_and_imported_ones_stay() {
    let settings = duhub_server::config::Settings { upload_expiry_ms: Some(1500), ..Default::default() };
    let server = TestServer::start_with_settings(settings).await;
    let (status, stray) = upload(&server, b"nobody imports me".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{stray}");
    let stray_id = stray["url"].as_str().unwrap().trim_start_matches("upload:").to_owned();

    // An import that uses two uploads claims them.
    let fixture = duhub_testkit::ImportFixture::new(
        "contoso",
        "kept",
        "1.0",
        &[("model", "m")],
        &[("install.sh", b"#!/bin/sh\n")],
    );
    let (_, manifest) = upload(&server, fixture.manifest_bytes()).await;
    let (_, file) = upload(&server, b"#!/bin/sh\n".to_vec()).await;
    let item = json!({
        "importManifest": {"url": manifest["url"], "sizeInBytes": manifest["sizeInBytes"], "hashes": manifest["hashes"]},
        "files": [{"filename": "install.sh", "url": file["url"]}],
    });
    server.du().import(&json!([item])).await.unwrap();
    let file_id = file["url"].as_str().unwrap().trim_start_matches("upload:").to_owned();

    let content = server.du_service().content();
    let store = server.hub().store();
    // Deleted, and its bytes no longer pending (so the cap has room again).
    eventually("the unclaimed upload deleted", Duration::from_secs(20), || async {
        let kept = content.contains(&stray_id).await.unwrap();
        let pending = store.pending_upload_bytes().await.unwrap();
        if !kept && pending == 0 { Ok(()) } else { Err(format!("kept: {kept}, pending bytes: {pending}")) }
    })
    .await;
    assert!(content.contains(&file_id).await.unwrap(), "an imported file was deleted");
    server.shutdown().await;
}

/// Issue 11 item 3 (uploads): the bytes of uploads not yet imported are capped; beyond, 507
/// and nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_uploads_are_capped_with_507() {
    let settings = duhub_server::config::Settings { max_pending_upload_bytes: Some(1000), ..Default::default() };
    let server = TestServer::start_with_settings(settings).await;
    let (status, _) = upload(&server, vec![b'a'; 600]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = upload(&server, vec![b'b'; 600]).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(body.to_string().contains("max_pending_upload_bytes"), "{body}");
    let refused = duhub_server::ids::hex(ring::digest::digest(&ring::digest::SHA256, &[b'b'; 600]).as_ref());
    assert!(!server.du_service().content().contains(&refused).await.unwrap(), "the refused upload was kept");
    // What fits under the cap still goes in.
    let (status, _) = upload(&server, vec![b'c'; 300]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = upload(&server, vec![b'd'; 300]).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    server.shutdown().await;
}
