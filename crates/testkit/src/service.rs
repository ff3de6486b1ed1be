//! The service side of the IoT Hub REST API as a test sees it: a reqwest client that trusts the
//! server's CA and signs each request with a fresh SAS token of the owner policy.

use anyhow::{Context as _, Result, bail};
use duhub_proto::connection_string::ConnectionString;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::now_unix;

/// The IoT Hub service API version the SDKs send.
pub const API_VERSION: &str = "2021-04-12";

/// A REST client for one server (or one node of several).
#[derive(Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base_url: String,
    host: String,
    policy: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient").field("base_url", &self.base_url).field("policy", &self.policy).finish()
    }
}

impl ServiceClient {
    /// A client for `https_url` (`https://localhost:<port>`) authorised by the service connection
    /// string, trusting only the certificates of `ca_pem`.
    pub fn new(https_url: &str, service_connection_string: &str, ca_pem: &[u8]) -> Result<Self> {
        let http = crate::https_client(ca_pem)?;
        let connection =
            ConnectionString::parse(service_connection_string).context("parsing the service connection string")?;
        let key = connection.key_bytes().context("the service connection string's key")?;
        let policy =
            connection.shared_access_key_name.clone().context("the service connection string names no policy")?;
        Ok(Self { http, base_url: https_url.trim_end_matches('/').to_owned(), host: connection.host_name, policy, key })
    }

    /// The underlying HTTP client (no authorisation added).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The full URL of `path` with `?api-version=`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.base_url)
    }

    /// `HostName` of the connection string (`localhost:<port>`): what service tokens sign.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A service SAS token valid until `expiry`, signed with the policy key.
    pub fn token(&self, expiry: u64) -> String {
        self.token_with(&self.host, &self.key, expiry)
    }

    /// A service SAS token for any resource and key (to forge bad ones).
    pub fn token_with(&self, resource: &str, key: &[u8], expiry: u64) -> String {
        duhub_proto::sas::generate(resource, key, expiry, Some(&self.policy))
    }

    /// A request to `path` authorised with a token valid for an hour.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).header("Authorization", self.token(now_unix() + 3600))
    }

    /// Creates a device with generated keys; returns (primary, secondary).
    pub async fn create_device(&self, device_id: &str) -> Result<(String, String)> {
        let body = json!({"deviceId": device_id, "status": "enabled", "authentication": {"type": "sas"}});
        let device = self.expect_json(self.request(Method::PUT, &device_path(device_id)).json(&body)).await?;
        let key = |name: &str| {
            device
                .pointer(&format!("/authentication/symmetricKey/{name}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {name} in {device}"))
        };
        Ok((key("primaryKey")?, key("secondaryKey")?))
    }

    /// `GET /devices/{id}`.
    pub async fn device(&self, device_id: &str) -> Result<Value> {
        self.expect_json(self.request(Method::GET, &device_path(device_id))).await
    }

    /// Puts the device in Device Update group `group` (its twin's tag `ADUGroup`).
    pub async fn set_group(&self, device_id: &str, group: &str) -> Result<Value> {
        let tags = json!({"tags": {"ADUGroup": group}});
        self.expect_json(self.request(Method::PATCH, &twin_path(device_id)).json(&tags)).await
    }

    /// `GET /twins/{id}`.
    pub async fn twin(&self, device_id: &str) -> Result<Value> {
        self.expect_json(self.request(Method::GET, &twin_path(device_id))).await
    }

    /// `PATCH /twins/{id}` with `{"properties": {"desired": desired}}` and `If-Match: "<etag>"` when
    /// given; returns the response whatever its status.
    pub async fn patch_desired(&self, device_id: &str, desired: &Value, etag: Option<&str>) -> Result<Response> {
        let mut request =
            self.request(Method::PATCH, &twin_path(device_id)).json(&json!({"properties": {"desired": desired}}));
        if let Some(etag) = etag {
            request = request.header("If-Match", format!("\"{etag}\""));
        }
        request.send().await.context("PATCH /twins")
    }

    /// Reads the twin and patches its desired properties with the twin's etag; returns the new
    /// twin.
    pub async fn update_desired(&self, device_id: &str, desired: &Value) -> Result<Value> {
        let twin = self.twin(device_id).await?;
        let etag = twin.get("etag").and_then(Value::as_str).context("the twin has no etag")?;
        let response = self.patch_desired(device_id, desired, Some(etag)).await?;
        json_of(response, StatusCode::OK).await
    }

    /// Sends `request` and returns its JSON body, failing unless the status is 200.
    pub async fn expect_json(&self, request: RequestBuilder) -> Result<Value> {
        let response = request.send().await.context("sending the request")?;
        json_of(response, StatusCode::OK).await
    }
}

/// The JSON body of `response`, failing unless its status is `expected`.
pub(crate) async fn json_of(response: Response, expected: StatusCode) -> Result<Value> {
    let status = response.status();
    let url = response.url().path().to_owned();
    let text = response.text().await.context("reading the response body")?;
    if status != expected {
        bail!("{url}: expected {expected}, got {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url}: the body is not JSON: {text}"))
}

fn device_path(device_id: &str) -> String {
    format!("/devices/{}", duhub_proto::sas::percent_encode(device_id))
}

fn twin_path(device_id: &str) -> String {
    format!("/twins/{}", duhub_proto::sas::percent_encode(device_id))
}
