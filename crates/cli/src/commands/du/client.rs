//! The Device Update REST client. [`DuClient`] knows the server, the instance and the bearer
//! token from `admin.json`, and how the API answers: JSON bodies, `{"error": {...}}` errors
//! (which become [`ServerError`]s, exit code 1), paged lists with `nextLink`, long-running
//! operations behind `Operation-Location`, and duhub's upload extension for update files.
//!
//! Links the server sends (`nextLink`, `Operation-Location`) may be relative or absolute; they
//! are followed only to the server's own origin, so the token never goes elsewhere, and always
//! with this client's `api-version`, as the Azure SDK does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use duhub_server::server::Admin;
use indicatif::ProgressBar;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::cli::DuArgs;
use crate::output::ServerError;

/// The API version of every request.
pub(super) const API_VERSION: &str = "2022-10-01";
/// The instance when neither `--instance` nor `admin.json` names one.
const DEFAULT_INSTANCE: &str = "default";
/// How long one ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take (uploads have no overall limit).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between two polls of an operation, whatever `Retry-After` says.
const MAX_POLL_DELAY: Duration = Duration::from_secs(2);
/// Shortest wait between two polls, so that `Retry-After: 0` does not make a busy loop.
const MIN_POLL_DELAY: Duration = Duration::from_millis(250);
/// Wait between two polls when the server sends no usable `Retry-After`.
const DEFAULT_POLL_DELAY: Duration = Duration::from_secs(1);
/// Size of the pieces files are read and sent in.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Longest piece of a non-JSON error body quoted in a message.
const MAX_QUOTED_BODY: usize = 300;

/// A client for one Device Update instance of one server.
pub(in crate::commands) struct DuClient {
    http: reqwest::Client,
    /// `https://host:port` (with any path prefix), from `admin.json`'s `httpsUrl`.
    base: Url,
    instance: String,
    token: String,
}

/// A successful answer.
#[derive(Debug)]
pub(super) struct Reply {
    /// The body, when there was one.
    pub(super) body: Option<Value>,
    /// `Operation-Location`, resolved against the request URL.
    pub(super) operation_location: Option<Url>,
    /// `Retry-After`, as sent.
    retry_after: Option<String>,
}

/// What the server says it stored for an upload.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Uploaded {
    /// `upload:<sha256 hex>`: how the import request names the file.
    pub(super) url: String,
    /// Size the server received.
    pub(super) size_in_bytes: u64,
    /// `{"sha256": "<base64>"}`, as the server sent it.
    pub(super) hashes: Value,
}

impl DuClient {
    /// A client for the server `admin.json` describes (see [`DuArgs`]).
    pub(in crate::commands) fn connect(args: &DuArgs) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = args.admin.clone().unwrap_or_else(|| PathBuf::from("duhub-data/admin.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {} (start the server with `duhub serve`, or give --admin FILE)", path.display())
        })?;
        let raw: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let admin: Admin = serde_json::from_value(raw.clone())
            .with_context(|| format!("{} is not a duhub admin.json", path.display()))?;
        let instance = instance_of(args.instance.as_deref(), &raw);
        let ca = std::fs::read(&admin.ca_certificate)
            .with_context(|| format!("reading the CA certificate {}", admin.ca_certificate.display()))?;
        let certificate = reqwest::Certificate::from_pem(&ca).context("parsing the CA certificate")?;
        let http = reqwest::Client::builder()
            .tls_certs_only([certificate])
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTPS client")?;
        let base = Url::parse(&admin.https_url)
            .with_context(|| format!("admin.json has an invalid httpsUrl {:?}", admin.https_url))?;
        Ok(Self { http, base, instance, token: admin.api_token })
    }

    /// The URL of `path` (below `/deviceUpdate/{instance}`, its segments already encoded) with
    /// the API version and `query`.
    pub(super) fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/deviceUpdate/{}{path}", self.instance));
        url.set_fragment(None);
        url.set_query(None);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", API_VERSION);
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    /// `GET path`: the body.
    pub(super) async fn get(&self, path: &str) -> Result<Value> {
        let url = self.url(path, &[]);
        self.send(Method::GET, url.clone(), None).await?.body.with_context(|| empty_answer(&Method::GET, &url))
    }

    /// `PUT path` with a JSON body: the body of the answer.
    pub(super) async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path, &[]);
        self.send(Method::PUT, url.clone(), Some(body)).await?.body.with_context(|| empty_answer(&Method::PUT, &url))
    }

    /// `POST path`, with a JSON body or none.
    pub(super) async fn post(&self, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.send(Method::POST, self.url(path, &[]), body).await
    }

    /// `DELETE path`.
    pub(super) async fn delete(&self, path: &str) -> Result<Reply> {
        self.send(Method::DELETE, self.url(path, &[]), None).await
    }

    /// The items of every page of a paged list, following `nextLink` until there is none.
    pub(super) async fn pages(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>> {
        let mut url = self.url(path, query);
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        loop {
            if !seen.insert(url.to_string()) {
                bail!("the server's nextLink leads back to a page already read ({})", url.path());
            }
            let page = self.send(Method::GET, url.clone(), None).await?.body;
            let page = page.with_context(|| empty_answer(&Method::GET, &url))?;
            let value = page
                .get("value")
                .and_then(Value::as_array)
                .with_context(|| format!("the answer to GET {} is not a list (no \"value\" array)", url.path()))?;
            items.extend(value.iter().cloned());
            match page.get("nextLink").and_then(Value::as_str).filter(|link| !link.is_empty()) {
                Some(link) => url = self.resolve(&url, link)?,
                None => return Ok(items),
            }
        }
    }

    /// Uploads a file as the raw, streamed body of `POST /duhub/uploads`, advancing `bar`, and
    /// checks that the server stored as many bytes with the same SHA-256 as were sent.
    pub(super) async fn upload(&self, path: &Path, bar: &ProgressBar) -> Result<Uploaded> {
        let file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let length = file.metadata().await.with_context(|| format!("reading {}", path.display()))?.len();
        bar.set_length(length);
        bar.set_position(0);
        let reading = Reading {
            file,
            digest: Arc::new(Mutex::new(ring::digest::Context::new(&ring::digest::SHA256))),
            sent: Arc::new(AtomicU64::new(0)),
            bar: bar.clone(),
        };
        let (digest, sent) = (reading.digest.clone(), reading.sent.clone());
        let url = self.url("/duhub/uploads", &[]);
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(&self.token)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(reading.into_stream()))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let reply = reply(&Method::POST, &url, response).await?;
        let body = reply.body.with_context(|| empty_answer(&Method::POST, &url))?;
        let uploaded = parse_uploaded(&body)?;
        let digest = digest.lock().unwrap_or_else(PoisonError::into_inner).clone().finish();
        check_upload(&uploaded, sent.load(Ordering::Relaxed), &duhub_proto::b64::encode_std(digest.as_ref()))?;
        Ok(uploaded)
    }

    /// Polls the operation at `location` until its status is final (Succeeded, Failed or
    /// Canceled), calling `on_status` with each status, and returns the last operation object.
    pub(super) async fn poll(&self, location: &Url, mut on_status: impl FnMut(&str)) -> Result<Value> {
        loop {
            let reply = self.send(Method::GET, location.clone(), None).await?;
            let operation = reply.body.with_context(|| empty_answer(&Method::GET, location))?;
            let status = operation.get("status").and_then(Value::as_str).unwrap_or_default();
            on_status(status);
            if is_final(status) {
                return Ok(operation);
            }
            tokio::time::sleep(poll_delay(reply.retry_after.as_deref())).await;
        }
    }

    async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Reply> {
        let mut request =
            self.http.request(method.clone(), url.clone()).bearer_auth(&self.token).timeout(REQUEST_TIMEOUT);
        match body {
            Some(body) => request = request.json(body),
            // Some proxies refuse a POST without a length (411).
            None if method == Method::POST => request = request.header(CONTENT_LENGTH, 0),
            None => {}
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let mut reply = reply(&method, &url, response).await?;
        if let Some(location) = reply.operation_location.take() {
            reply.operation_location = Some(self.check_origin(location)?);
        }
        Ok(reply)
    }

    /// A link the server sent, resolved against `current` and checked to stay on this server.
    fn resolve(&self, current: &Url, link: &str) -> Result<Url> {
        self.check_origin(resolve_link(current, link)?)
    }

    fn check_origin(&self, url: Url) -> Result<Url> {
        if url.origin() != self.base.origin() {
            bail!(
                "the server sent a link to another origin ({}); not following it with the API token",
                url.origin().ascii_serialization()
            );
        }
        Ok(url)
    }
}

/// Whether an operation status is final (matched case-insensitively, as the Azure SDK does).
pub(super) fn is_final(status: &str) -> bool {
    ["succeeded", "failed", "canceled"].iter().any(|s| status.eq_ignore_ascii_case(s))
}

/// Whether an operation object reports success.
pub(super) fn succeeded(operation: &Value) -> bool {
    operation.get("status").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case("succeeded"))
}

/// `code: message (target: ...)` of an API error object.
pub(super) fn describe_error(error: &Value) -> String {
    let code = error.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
    let mut out = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => "unspecified error".to_owned(),
    };
    if let Some(target) = error.get("target").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        out.push_str(&format!(" (target: {target})"));
    }
    out
}

/// The `details` of an API error object, each described like [`describe_error`], nested
/// details indented under theirs.
pub(super) fn error_details(error: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for detail in error.get("details").and_then(Value::as_array).into_iter().flatten() {
        lines.push(describe_error(detail));
        lines.extend(error_details(detail).into_iter().map(|line| format!("  {line}")));
    }
    lines
}

/// The error of a non-2xx answer: the server's `error` object (or one made from the status
/// when the body holds none) and a message naming the request.
fn server_error(method: &Method, path: &str, status: StatusCode, body: &str) -> ServerError {
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value.get("error").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| {
            let reason = status.canonical_reason().unwrap_or("Error");
            let quoted: String = body.trim().chars().take(MAX_QUOTED_BODY).collect();
            json!({
                "code": reason.replace(' ', ""),
                "message": if quoted.is_empty() { reason.to_owned() } else { quoted },
            })
        });
    let mut summary = describe_error(&error);
    for detail in error_details(&error) {
        summary.push_str(&format!("; {}", detail.trim_start()));
    }
    ServerError { message: format!("{summary} ({status} from {method} {path})"), error }
}

/// `link` resolved against `current` (it may be absolute, root-relative or relative), keeping
/// its query but with this client's `api-version`.
fn resolve_link(current: &Url, link: &str) -> Result<Url> {
    let mut url = current.join(link).with_context(|| format!("the server sent an invalid link {link:?}"))?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "api-version")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    url.query_pairs_mut().extend_pairs(pairs).append_pair("api-version", API_VERSION);
    Ok(url)
}

/// How long to wait before polling again: `Retry-After` seconds, between [`MIN_POLL_DELAY`]
/// and [`MAX_POLL_DELAY`]; [`DEFAULT_POLL_DELAY`] without one (or with an HTTP date).
fn poll_delay(retry_after: Option<&str>) -> Duration {
    match retry_after.and_then(|value| value.trim().parse::<u64>().ok()) {
        Some(seconds) => Duration::from_secs(seconds).clamp(MIN_POLL_DELAY, MAX_POLL_DELAY),
        None => DEFAULT_POLL_DELAY,
    }
}

/// The instance: `--instance`, else `admin.json`'s `instanceId`, else `default`.
fn instance_of(flag: Option<&str>, admin: &Value) -> String {
    flag.filter(|i| !i.is_empty())
        .or_else(|| admin.get("instanceId").and_then(Value::as_str).filter(|i| !i.is_empty()))
        .unwrap_or(DEFAULT_INSTANCE)
        .to_owned()
}

fn empty_answer(method: &Method, url: &Url) -> String {
    format!("the server answered {method} {} without a body", url.path())
}

/// Turns a response into a [`Reply`], or a [`ServerError`] when its status is not 2xx.
async fn reply(method: &Method, url: &Url, response: reqwest::Response) -> Result<Reply> {
    let status = response.status();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let operation_location = header("operation-location");
    let retry_after = header(RETRY_AFTER.as_str());
    let text = response.text().await.with_context(|| format!("reading the answer to {method} {url}"))?;
    if !status.is_success() {
        return Err(server_error(method, url.path(), status, &text).into());
    }
    let body = if text.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("the answer to {method} {} is not JSON", url.path()))?,
        )
    };
    let operation_location = operation_location.map(|link| resolve_link(url, &link)).transpose()?;
    Ok(Reply { body, operation_location, retry_after })
}

/// Parses the answer to an upload.
fn parse_uploaded(body: &Value) -> Result<Uploaded> {
    let url = body.get("url").and_then(Value::as_str).filter(|u| !u.is_empty());
    let size_in_bytes = body.get("sizeInBytes").and_then(Value::as_u64);
    let hashes = body.get("hashes").filter(|h| h.get("sha256").and_then(Value::as_str).is_some());
    match (url, size_in_bytes, hashes) {
        (Some(url), Some(size_in_bytes), Some(hashes)) => {
            Ok(Uploaded { url: url.to_owned(), size_in_bytes, hashes: hashes.clone() })
        }
        _ => bail!("the server's answer to an upload lacks url, sizeInBytes or hashes.sha256: {body}"),
    }
}

/// Checks that the server stored what was sent.
fn check_upload(uploaded: &Uploaded, sent: u64, sha256: &str) -> Result<()> {
    let stored = uploaded.hashes.get("sha256").and_then(Value::as_str).unwrap_or_default();
    if uploaded.size_in_bytes != sent || stored != sha256 {
        bail!(
            "the server stored {} bytes with SHA-256 {stored}, but {sent} bytes with SHA-256 {sha256} were sent",
            uploaded.size_in_bytes
        );
    }
    Ok(())
}

/// A file being uploaded: read in pieces, hashed and counted on the way.
struct Reading {
    file: tokio::fs::File,
    digest: Arc<Mutex<ring::digest::Context>>,
    sent: Arc<AtomicU64>,
    bar: ProgressBar,
}

impl Reading {
    fn into_stream(self) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
        futures_util::stream::try_unfold(self, |mut reading| async move {
            let mut buffer = vec![0u8; UPLOAD_CHUNK];
            let read = reading.file.read(&mut buffer).await?;
            if read == 0 {
                return Ok(None);
            }
            buffer.truncate(read);
            reading.digest.lock().unwrap_or_else(PoisonError::into_inner).update(&buffer);
            reading.sent.fetch_add(read as u64, Ordering::Relaxed);
            reading.bar.inc(read as u64);
            Ok(Some((bytes::Bytes::from(buffer), reading)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn links_resolve_relative_or_absolute_with_our_api_version() {
        let current = url("https://hub.example:8443/deviceUpdate/blue/updates?api-version=2022-10-01");
        let check = |link: &str, expect: &str| assert_eq!(resolve_link(&current, link).unwrap().as_str(), expect);
        check(
            "/deviceUpdate/blue/updates?skip=10",
            "https://hub.example:8443/deviceUpdate/blue/updates?skip=10&api-version=2022-10-01",
        );
        check(
            "https://hub.example:8443/deviceUpdate/blue/updates?skip=20&api-version=2026-06-01",
            "https://hub.example:8443/deviceUpdate/blue/updates?skip=20&api-version=2022-10-01",
        );
        check("updates?page=3", "https://hub.example:8443/deviceUpdate/blue/updates?page=3&api-version=2022-10-01");
        check("operations/abc", "https://hub.example:8443/deviceUpdate/blue/operations/abc?api-version=2022-10-01");
        check("https://elsewhere/x", "https://elsewhere/x?api-version=2022-10-01");
    }

    #[test]
    fn retry_after_is_honoured_up_to_two_seconds() {
        assert_eq!(poll_delay(Some("1")), Duration::from_secs(1));
        assert_eq!(poll_delay(Some(" 2 ")), Duration::from_secs(2));
        assert_eq!(poll_delay(Some("30")), Duration::from_secs(2));
        assert_eq!(poll_delay(Some("0")), MIN_POLL_DELAY);
        assert_eq!(poll_delay(Some("Wed, 21 Oct 2026 07:28:00 GMT")), DEFAULT_POLL_DELAY);
        assert_eq!(poll_delay(None), DEFAULT_POLL_DELAY);
    }

    #[test]
    fn error_bodies_become_code_and_message() {
        let body = r#"{"error":{"code":"UpdateNotFound","message":"no such update","target":"version"}}"#;
        let error = server_error(&Method::GET, "/deviceUpdate/default/updates/x", StatusCode::NOT_FOUND, body);
        assert_eq!(
            error.message,
            "UpdateNotFound: no such update (target: version) (404 Not Found from GET /deviceUpdate/default/updates/x)"
        );
        assert_eq!(error.error, json!({"code": "UpdateNotFound", "message": "no such update", "target": "version"}));

        let body = r#"{"error":{"code":"ImportFailed","message":"bad import","details":[{"code":"MissingFile","message":"fw.swu","details":[{"code":"Inner","message":"deeper"}]}]}}"#;
        let error = server_error(&Method::POST, "/x", StatusCode::BAD_REQUEST, body);
        assert_eq!(
            error.message,
            "ImportFailed: bad import; MissingFile: fw.swu; Inner: deeper (400 Bad Request from POST /x)"
        );
        assert_eq!(error_details(&error.error), ["MissingFile: fw.swu", "  Inner: deeper"]);
    }

    #[test]
    fn error_bodies_that_are_not_api_errors_keep_the_status() {
        let error = server_error(&Method::GET, "/x", StatusCode::BAD_GATEWAY, "<html>proxy down</html>");
        assert_eq!(error.error, json!({"code": "BadGateway", "message": "<html>proxy down</html>"}));
        assert_eq!(error.message, "BadGateway: <html>proxy down</html> (502 Bad Gateway from GET /x)");
        let error = server_error(&Method::DELETE, "/x", StatusCode::UNAUTHORIZED, "");
        assert_eq!(error.error, json!({"code": "Unauthorized", "message": "Unauthorized"}));
        let error = server_error(&Method::GET, "/x", StatusCode::NOT_FOUND, r#"{"error":"flat"}"#);
        assert_eq!(error.error["code"], "NotFound");
    }

    #[test]
    fn operation_statuses() {
        assert!(is_final("Succeeded") && is_final("failed") && is_final("Canceled"));
        assert!(!is_final("Running") && !is_final("NotStarted") && !is_final(""));
        assert!(succeeded(&json!({"status": "Succeeded"})));
        assert!(!succeeded(&json!({"status": "Failed"})));
    }

    #[test]
    fn the_instance_comes_from_the_flag_then_admin_json() {
        assert_eq!(instance_of(Some("blue"), &json!({"instanceId": "red"})), "blue");
        assert_eq!(instance_of(None, &json!({"instanceId": "red"})), "red");
        assert_eq!(instance_of(None, &json!({})), "default");
        assert_eq!(instance_of(Some(""), &json!({"instanceId": ""})), "default");
    }

    #[test]
    fn uploads_are_checked_against_what_was_sent() {
        let body = json!({"url": "upload:ab12", "sizeInBytes": 8, "hashes": {"sha256": "abc="}});
        let uploaded = parse_uploaded(&body).unwrap();
        assert_eq!(uploaded.url, "upload:ab12");
        assert!(check_upload(&uploaded, 8, "abc=").is_ok());
        assert!(check_upload(&uploaded, 7, "abc=").is_err());
        assert!(check_upload(&uploaded, 8, "xyz=").is_err());
        assert!(parse_uploaded(&json!({"url": "upload:ab12", "sizeInBytes": 8})).is_err());
    }
}
