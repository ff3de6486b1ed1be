//! IoT Hub's query API (`POST /devices/query`): paging with `x-ms-max-item-count` and
//! `x-ms-continuation`, the tag filter, and the queries it refuses.

use duhub_testkit::{Backend, ServiceClient, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One page: (twins, continuation token).
async fn page(
    service: &ServiceClient,
    query: &str,
    max: Option<&str>,
    token: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let mut request = service.request(Method::POST, "/devices/query").json(&json!({ "query": query }));
    if let Some(max) = max {
        request = request.header("x-ms-max-item-count", max);
    }
    if let Some(token) = token {
        request = request.header("x-ms-continuation", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    assert_eq!(headers.get("x-ms-item-type").and_then(|v| v.to_str().ok()), Some("twin"), "{query}");
    let continuation = headers.get("x-ms-continuation").map(|v| v.to_str().unwrap().to_owned());
    (serde_json::from_str::<Vec<Value>>(&body).unwrap(), continuation)
}

/// Every twin of `query`, following continuation tokens with pages of `max`; also the number of
/// requests made.
async fn all(service: &ServiceClient, query: &str, max: &str) -> (Vec<Value>, usize) {
    let (mut twins, mut token) = page(service, query, Some(max), None).await;
    let mut requests = 1;
    while let Some(next) = token {
        let (more, after) = page(service, query, Some(max), Some(&next)).await;
        assert!(!more.is_empty(), "a continuation token led to an empty page");
        twins.extend(more);
        token = after;
        requests += 1;
    }
    (twins, requests)
}

fn ids(twins: &[Value]) -> Vec<&str> {
    twins.iter().map(|twin| twin["deviceId"].as_str().unwrap()).collect()
}

async fn refused(service: &ServiceClient, body: Value, headers: &[(&str, &str)]) -> String {
    let mut request = service.request(Method::POST, "/devices/query").json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    let error: Value = response.json().await.unwrap();
    let message = error["Message"].as_str().unwrap_or_default();
    assert!(message.starts_with("ErrorCode:ArgumentInvalid;"), "IoT Hub's error body: {error}");
    error["ExceptionMessage"].as_str().unwrap().to_owned()
}

pub(crate) async fn the_query_api_pages_twins_and_filters_by_tag(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let service = server.service();
    for id in ["d4", "d2", "d1", "d3"] {
        server.create_device(id).await;
    }
    service.set_group("d1", "lab").await.unwrap();
    service.set_group("d3", "lab").await.unwrap();
    service.set_group("d4", "lab2").await.unwrap();
    // A tag that is a number never equals a string.
    let response =
        service.request(Method::PATCH, "/twins/d2").json(&json!({"tags": {"ADUGroup": 5}})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut device = server.new_device("d0").await;
    device.patch_reported(&json!({"fw": "1.0"})).await.unwrap();

    // Every twin, in device id order, over pages of two: three requests, no empty last page.
    let (twins, requests) = all(service, "SELECT * FROM devices", "2").await;
    assert_eq!(ids(&twins), ["d0", "d1", "d2", "d3", "d4"]);
    assert_eq!(requests, 3);
    let d0 = &twins[0];
    assert_eq!(d0["properties"]["reported"]["fw"], "1.0");
    assert_eq!(d0["connectionState"], "Connected");
    assert_eq!(d0["status"], "enabled");
    assert!(d0["lastActivityTime"].as_str().is_some_and(|t| t.starts_with("20")), "{d0}");
    assert_eq!(twins[1]["tags"], json!({"ADUGroup": "lab"}));
    // Without a page size, one page holds them all.
    let (twins, token) = page(service, "select * from devices", None, None).await;
    assert_eq!((twins.len(), token), (5, None));

    // The tag filter, paged too.
    let (twins, requests) = all(service, "SELECT * FROM devices WHERE tags.ADUGroup = 'lab'", "1").await;
    assert_eq!((ids(&twins), requests), (vec!["d1", "d3"], 2));
    let (twins, _) = page(service, "SELECT * FROM devices WHERE tags.ADUGroup = \"lab2\"", None, None).await;
    assert_eq!(ids(&twins), ["d4"]);
    let (twins, _) = page(service, "SELECT * FROM devices WHERE tags.ADUGroup = '5'", None, None).await;
    assert_eq!(ids(&twins), Vec::<&str>::new());
    let (twins, _) = page(service, "SELECT * FROM devices WHERE tags.nothing = 'lab'", None, None).await;
    assert!(twins.is_empty());

    // What it does not answer is refused with IoT Hub's error body, saying what it answers.
    let message = refused(service, json!({"query": "SELECT deviceId FROM devices"}), &[]).await;
    assert!(message.contains("SELECT * FROM devices"), "{message}");
    let message = refused(service, json!({"query": "SELECT * FROM devices WHERE tags.a = 'x' OR 1 = 1"}), &[]).await;
    assert!(message.contains("tags.NAME = 'VALUE'"), "{message}");
    refused(service, json!({"sql": "SELECT * FROM devices"}), &[]).await;
    refused(service, json!({"query": "SELECT * FROM devices"}), &[("x-ms-max-item-count", "0")]).await;
    refused(service, json!({"query": "SELECT * FROM devices"}), &[("x-ms-max-item-count", "many")]).await;
    refused(service, json!({"query": "SELECT * FROM devices"}), &[("x-ms-continuation", "not base64!")]).await;

    // Without the service's token, nothing.
    let response = service
        .http()
        .post(service.url("/devices/query"))
        .json(&json!({"query": "SELECT * FROM devices"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // `query` is a valid device id: the route of the query API does not hide that device.
    let response = service
        .request(Method::PUT, "/devices/query")
        .json(&json!({"deviceId": "query", "authentication": {"type": "sas"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(service.device("query").await.unwrap()["deviceId"], "query");
    let (twins, _) = page(service, "SELECT * FROM devices", None, None).await;
    assert_eq!(ids(&twins), ["d0", "d1", "d2", "d3", "d4", "query"]);
    let response = service.request(Method::DELETE, "/devices/query").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(service.request(Method::GET, "/devices/query").send().await.unwrap().status(), StatusCode::NOT_FOUND);
}
