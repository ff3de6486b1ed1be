//! The service REST API: SAS authorisation and the device registry.

use duhub_testkit::{Backend, DeviceError, DeviceOptions, TIMEOUT, TestServer, now_unix};
use reqwest::{Method, StatusCode};
use rumqttc::ConnectReturnCode;
use serde_json::{Value, json};

use crate::support::{connection_state, random_key};

pub(crate) async fn rest_requests_need_a_valid_service_token(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();
    let (device_key, _) = server.create_device("dev1").await;
    let url = service.url("/devices");
    let in_an_hour = now_unix() + 3600;
    let policy_key = duhub_proto::connection_string::ConnectionString::parse(&server.admin.service_connection_string)
        .unwrap()
        .key_bytes()
        .unwrap();

    let device_token = DeviceOptions::sas_token(duhub_testkit::HOSTNAME, "dev1", &device_key, in_an_hour);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("a token signed with a wrong key", Some(service.token_with(service.host(), &[7u8; 32], in_an_hour))),
        ("an expired token", Some(service.token(now_unix() - 60))),
        ("a token for another host", Some(service.token_with("other.example:8443", &policy_key, in_an_hour))),
        (
            "a token of an unknown policy",
            Some(duhub_proto::sas::generate(service.host(), &policy_key, in_an_hour, Some("nobody"))),
        ),
        ("a device's token", Some(device_token)),
        ("not a SAS token", Some("Bearer abc".to_owned())),
    ];
    let mut wrong = Vec::new();
    for (case, token) in cases {
        let mut request = service.http().get(&url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let response = request.send().await.unwrap();
        if response.status() != StatusCode::UNAUTHORIZED {
            wrong.push(format!("{case}: expected 401, got {}", response.status()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Writes are refused too, and change nothing.
    let response = service
        .http()
        .patch(service.url("/twins/dev1"))
        .json(&json!({"properties": {"desired": {"fw": "evil"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = service.http().delete(service.url("/devices/dev1")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = service.http().get(&url).header("Authorization", service.token(in_an_hour)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(service.twin("dev1").await.unwrap()["properties"]["desired"], json!({"$version": 1}));
    server.shutdown().await;
}

pub(crate) async fn devices_are_created_listed_read_and_deleted(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();
    let (primary, secondary) = (random_key(), random_key());
    let body = json!({
        "deviceId": "dev1",
        "status": "enabled",
        "authentication": {"symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}, "type": "sas"},
        "capabilities": {"iotEdge": false},
    });
    let response = service.request(Method::PUT, "/devices/dev1").json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["deviceId"], "dev1");
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["authentication"]["symmetricKey"], json!({"primaryKey": primary, "secondaryKey": secondary}));

    // Keys are generated when not given.
    let (generated_primary, generated_secondary) = server.create_device("dev2").await;
    assert_ne!(generated_primary, generated_secondary);
    for key in [&generated_primary, &generated_secondary] {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(key).unwrap();
        assert!(bytes.len() >= 16, "a generated key of {} bytes", bytes.len());
    }

    // A second create of the same id is a conflict and changes nothing.
    let response = service
        .request(Method::PUT, "/devices/dev1")
        .json(&json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": random_key()}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let read = service.device("dev1").await.unwrap();
    assert_eq!(read["authentication"]["symmetricKey"]["primaryKey"], primary.as_str());
    assert_eq!(read["etag"], created["etag"]);

    // Invalid ids and mismatched bodies are refused.
    let response = service.request(Method::PUT, "/devices/bad%20id").json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response =
        service.request(Method::PUT, "/devices/dev3").json(&json!({"deviceId": "other"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let list = service.expect_json(service.request(Method::GET, "/devices")).await.unwrap();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["dev1", "dev2"]);

    let response = service.request(Method::DELETE, "/devices/dev2").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for path in ["/devices/dev2", "/twins/dev2"] {
        let response = service.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path} after the delete");
    }
    let response = service.request(Method::DELETE, "/devices/dev2").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "deleting twice");
    let list = service.expect_json(service.request(Method::GET, "/devices")).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // A device made again with a deleted id starts afresh.
    let (key, _) = server.create_device("dev2").await;
    assert_ne!(key, generated_primary);
    let mut device = server.connect_device("dev2", &key).await;
    assert_eq!(device.get_twin().await.unwrap(), json!({"desired": {"$version": 1}, "reported": {"$version": 1}}));
    drop(device);
    server.shutdown().await;
}

pub(crate) async fn deleting_or_disabling_a_connected_device_disconnects_it(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();

    let (key, _) = server.create_device("doomed").await;
    let mut device = server.connect_device("doomed", &key).await;
    device.get_twin().await.unwrap();
    let response = service.request(Method::DELETE, "/devices/doomed").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    device.wait_closed(TIMEOUT).await.expect("deleting a connected device must disconnect it");
    match server.device_options("doomed", &key).connect().await {
        Err(DeviceError::Refused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("a deleted device reconnecting: expected NotAuthorized, got {other:?}"),
    }

    let (key, _) = server.create_device("paused").await;
    let mut device = server.connect_device("paused", &key).await;
    device.get_twin().await.unwrap();
    let disable = service
        .request(Method::PUT, "/devices/paused")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId": "paused", "status": "disabled", "statusReason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::OK);
    device.wait_closed(TIMEOUT).await.expect("disabling a connected device must disconnect it");
    match server.device_options("paused", &key).connect().await {
        Err(DeviceError::Refused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("a disabled device reconnecting: expected NotAuthorized, got {other:?}"),
    }

    // Enabled again (keys kept), it connects.
    let enable = service
        .request(Method::PUT, "/devices/paused")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId": "paused", "status": "enabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(enable.status(), StatusCode::OK);
    server.connect_device("paused", &key).await.get_twin().await.unwrap();
    server.shutdown().await;
}

pub(crate) async fn a_device_disconnected_by_disabling_it_is_recorded_as_disconnected(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let (key, _) = server.create_device("paused").await;
    let mut device = server.connect_device("paused", &key).await;
    assert_eq!(connection_state(server.service(), "paused").await, "Connected");
    let disable = server
        .service()
        .request(Method::PUT, "/devices/paused")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId": "paused", "status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::OK);
    device.wait_closed(TIMEOUT).await.expect("disabling a connected device must disconnect it");
    // The server records the end of a connection before it closes the socket (as it does when the
    // device leaves by itself), so the state must already be Disconnected.
    assert_eq!(server.hub().connected(), 0);
    assert_eq!(connection_state(server.service(), "paused").await, "Disconnected");
    server.shutdown().await;
}
