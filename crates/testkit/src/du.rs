//! The Device Update REST API as a test sees it ([`DuClient`]: Bearer token, the server's CA),
//! a plain-HTTP file server that imports fetch from ([`FileServer`]), and builders for import
//! manifests of real files ([`ImportFixture`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// The api-version tests use.
pub const DU_API_VERSION: &str = "2022-10-01";

/// A client of `/deviceUpdate/{instance}/...`.
#[derive(Clone, Debug)]
pub struct DuClient {
    http: reqwest::Client,
    base_url: String,
    instance: String,
    token: String,
}

impl DuClient {
    /// A client for `https_url` with `token`, trusting `ca_pem`.
    pub fn new(https_url: &str, instance: &str, token: &str, ca_pem: &[u8]) -> Result<Self> {
        let http = crate::https_client(ca_pem)?;
        Ok(Self {
            http,
            base_url: https_url.trim_end_matches('/').to_owned(),
            instance: instance.to_owned(),
            token: token.to_owned(),
        })
    }

    /// The same client with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self { token: token.to_owned(), ..self.clone() }
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `https://host:port/deviceUpdate/{instance}{path}` with `api-version` (`path` may carry a
    /// query of its own).
    pub fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}/deviceUpdate/{}{path}{separator}api-version={DU_API_VERSION}", self.base_url, self.instance)
    }

    /// Sends a request; `body` as JSON.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Response> {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.with_context(|| format!("sending {path}"))
    }

    /// A request that must answer `expected`; returns the JSON body (`null` when empty).
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Result<Value> {
        let response = self.send(method.clone(), path, body).await?;
        let status = response.status();
        let text = response.text().await?;
        if status != expected {
            bail!("{method} {path}: expected {expected}, got {status}: {text}");
        }
        if text.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))
        }
    }

    /// GET that must answer 200.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.expect(Method::GET, path, None, StatusCode::OK).await
    }

    /// Every item of a paged list, following `nextLink`; also returns the number of pages.
    pub async fn list(&self, path: &str) -> Result<(Vec<Value>, usize)> {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut url = self.url(path);
        loop {
            let response = self.http.get(&url).bearer_auth(&self.token).send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if status != StatusCode::OK {
                bail!("GET {url}: {status}: {body}");
            }
            pages += 1;
            items.extend(body["value"].as_array().cloned().context("a page without value")?);
            match body.get("nextLink").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    url = if next.starts_with("http") { next.to_owned() } else { format!("{}{next}", self.base_url) };
                }
                _ => return Ok((items, pages)),
            }
            if pages > 1000 {
                bail!("more than 1000 pages");
            }
        }
    }

    /// Starts an import; returns the operation's path (from `Operation-Location`).
    pub async fn start_import(&self, items: &Value) -> Result<String> {
        let response = self.send(Method::POST, "/updates:import", Some(items)).await?;
        let status = response.status();
        let location = response.headers().get("operation-location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status != StatusCode::ACCEPTED {
            bail!("import: expected 202, got {status}: {}", response.text().await?);
        }
        location.context("no Operation-Location")
    }

    /// Polls an operation (by its `Operation-Location`) until it finishes; returns it.
    pub async fn wait_operation(&self, location: &str) -> Result<Value> {
        let url =
            if location.starts_with("http") { location.to_owned() } else { format!("{}{location}", self.base_url) };
        for _ in 0..600 {
            let operation: Value = self.http.get(&url).bearer_auth(&self.token).send().await?.json().await?;
            match operation["status"].as_str() {
                Some("Succeeded" | "Failed") => return Ok(operation),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                None => bail!("not an operation: {operation}"),
            }
        }
        bail!("operation {location} did not finish in 30 s")
    }

    /// Imports and waits.
    pub async fn import(&self, items: &Value) -> Result<Value> {
        let location = self.start_import(items).await?;
        self.wait_operation(&location).await
    }
}

/// A plain-HTTP server of the files in a directory (what import requests fetch from). Every
/// request is counted.
pub struct FileServer {
    address: SocketAddr,
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Serves `dir` on `127.0.0.1:<any port>`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let root = Arc::new(dir.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let root = root.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
                    let file = (!path.contains("..")).then(|| root.join(&path));
                    let response = match file.map(std::fs::read) {
                        Some(Ok(bytes)) => {
                            let mut response = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                bytes.len()
                            )
                            .into_bytes();
                            response.extend_from_slice(&bytes);
                            response
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    };
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self { address, dir: dir.to_owned(), task })
    }

    /// The URL of a file.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.address)
    }

    /// The directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Base64 SHA-256 of bytes.
pub fn sha256_b64(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// An update's files written to a directory with an import manifest that lists them.
#[derive(Debug, Clone)]
pub struct ImportFixture {
    /// `provider`, `name`, `version`.
    pub update_id: (String, String, String),
    /// The import manifest.
    pub manifest: Value,
    /// File name -> content.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl ImportFixture {
    /// A v5 update with one script step over `files`, compatible with `manufacturer`/`model`.
    pub fn new(provider: &str, name: &str, version: &str, compat: &[(&str, &str)], files: &[(&str, &[u8])]) -> Self {
        let compat: serde_json::Map<String, Value> =
            compat.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        let file_entries: Vec<Value> = files
            .iter()
            .map(|(n, c)| json!({"filename": n, "sizeInBytes": c.len(), "hashes": {"sha256": sha256_b64(c)}}))
            .collect();
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let manifest = json!({
            "updateId": {"provider": provider, "name": name, "version": version},
            "compatibility": [compat],
            "instructions": {"steps": [{"type": "inline", "handler": "microsoft/script:1", "files": names,
                "handlerProperties": {"scriptFileName": names.first().copied().unwrap_or("install.sh"), "installedCriteria": version}}]},
            "files": file_entries,
            "createdDateTime": "2026-11-29T10:00:00Z",
            "manifestVersion": "5.0",
        });
        Self {
            update_id: (provider.to_owned(), name.to_owned(), version.to_owned()),
            manifest,
            files: files.iter().map(|(n, c)| ((*n).to_owned(), c.to_vec())).collect(),
        }
    }

    /// The manifest's file name.
    pub fn manifest_name(&self) -> String {
        format!("{}.{}.{}.importmanifest.json", self.update_id.0, self.update_id.1, self.update_id.2)
    }

    /// Writes the manifest and files into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(self.manifest_name()), self.manifest_bytes())?;
        for (name, content) in &self.files {
            std::fs::write(dir.join(name), content)?;
        }
        Ok(())
    }

    /// The manifest as written.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.manifest).unwrap_or_default()
    }

    /// The import request item for files served by `server`.
    pub fn item(&self, server: &FileServer) -> Value {
        let manifest = self.manifest_bytes();
        json!({
            "importManifest": {"url": server.url(&self.manifest_name()), "sizeInBytes": manifest.len(), "hashes": {"sha256": sha256_b64(&manifest)}},
            "files": self.files.keys().map(|n| json!({"filename": n, "url": server.url(n)})).collect::<Vec<_>>(),
        })
    }
}
