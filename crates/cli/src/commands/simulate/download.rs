//! The simulator's downloader: one HTTPS client for every device (connections are pooled and
//! multiplexed over HTTP/2 when the server offers it), downloads as async tasks, and the file
//! writes and SHA-256 on a bounded number of blocking slots, so 10,000 devices downloading at
//! once do not need 10,000 threads. Same guarantees as the agent's downloader: bytes go to
//! `<file>.part`, a resume asks for the rest with `Range`, and a file only gets its name once
//! its size and SHA-256 match the signed manifest. No fsync (a simulator does not survive power
//! cuts).
//!
//! The client holds at most [`CONNECTIONS`] requests (so connections) at once: without a bound,
//! every device whose download starts while the pooled connections are busy opens one more, and
//! a 10,000-device rehearsal spent more of both processes' CPU on TLS handshakes than on the
//! downloads. Devices queue for a connection the way they would queue behind a download proxy.
//!
//! With shared downloads, devices needing a file with the same SHA-256 wait for one download of
//! it (into `<root>/shared`) instead of each downloading it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duhub_agent::download::{DownloadError, ExpectedFile};
use ring::digest;
use tokio::sync::{OnceCell, Semaphore, mpsc};

/// Bytes gathered before they are handed to a blocking slot.
const FLUSH_AT: usize = 256 * 1024;
/// Requests in flight at once (each on its own pooled connection).
const CONNECTIONS: usize = 64;
/// Tries of one file when the network fails (the agent's runtime would report the failure;
/// a simulated fleet behind a load balancer retries).
const ATTEMPTS: u32 = 5;

/// One file to fetch.
pub(super) struct Fetch<'a> {
    pub(super) url: &'a str,
    pub(super) destination: &'a Path,
    pub(super) expected: ExpectedFile,
    pub(super) cancel: &'a AtomicBool,
    /// Go offline this long (telling the agent through the sender) when half the file is in.
    pub(super) outage: Option<(Duration, mpsc::UnboundedSender<Duration>)>,
}

/// One download per SHA-256, awaited by every device that needs the file.
type SharedCells = Mutex<HashMap<[u8; 32], Arc<OnceCell<PathBuf>>>>;

/// The shared downloader.
pub(super) struct Downloader {
    http: reqwest::Client,
    /// One permit per request in flight ([`CONNECTIONS`]).
    connections: Semaphore,
    slots: Semaphore,
    /// Bytes received over the network.
    pub(super) bytes: AtomicU64,
    /// `<root>/shared` and one cell per SHA-256, with shared downloads.
    shared: Option<(PathBuf, SharedCells)>,
}

/// A part file being written and hashed.
struct Part {
    file: Option<std::fs::File>,
    hash: digest::Context,
    written: u64,
}

impl Downloader {
    pub(super) fn new(ca_pem: &[u8], slots: usize, shared_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let certificate = reqwest::Certificate::from_pem(ca_pem)?;
        let http = reqwest::Client::builder()
            .tls_certs_only([certificate])
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            connections: Semaphore::new(CONNECTIONS),
            slots: Semaphore::new(slots.max(1)),
            bytes: AtomicU64::new(0),
            shared: shared_dir.map(|dir| (dir, Mutex::new(HashMap::new()))),
        })
    }

    /// Fetches a file; the path where it is (the destination, or the shared copy).
    pub(super) async fn fetch(&self, fetch: Fetch<'_>) -> Result<PathBuf, DownloadError> {
        let Some((dir, cells)) = &self.shared else {
            self.download(&fetch).await?;
            return Ok(fetch.destination.to_owned());
        };
        let cell = match cells.lock() {
            Ok(mut cells) => cells.entry(fetch.expected.sha256).or_default().clone(),
            Err(_) => Arc::new(OnceCell::new()),
        };
        let path = dir.join(hex(&fetch.expected.sha256));
        let found = cell
            .get_or_try_init(|| async {
                let shared = Fetch { destination: &path, outage: None, ..fetch };
                self.download(&shared).await.map(|()| path.clone())
            })
            .await?;
        Ok(found.clone())
    }

    /// Runs `work` on a blocking slot.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DownloadError> {
        let _slot = self.slots.acquire().await.map_err(|e| DownloadError::Network(e.to_string()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| DownloadError::Network(format!("a write failed: {e}")))
    }

    async fn download(&self, fetch: &Fetch<'_>) -> Result<(), DownloadError> {
        let destination = fetch.destination.to_owned();
        let expected = fetch.expected;
        // Already there, complete and right?
        let existing = destination.clone();
        let found = self.blocking(move || hash_prefix(&existing)).await?;
        if let Ok((size, hash)) = found
            && size == expected.size
            && hash.finish().as_ref() == expected.sha256
        {
            return Ok(());
        }
        let part_path = part_path(&destination);
        // A part file from an earlier run: hash what is there and resume after it.
        let resumed = part_path.clone();
        let mut part = self
            .blocking(move || -> std::io::Result<Part> {
                let (written, hash) = match hash_prefix(&resumed) {
                    Ok((written, hash)) if written <= expected.size => (written, hash),
                    _ => (0, digest::Context::new(&digest::SHA256)),
                };
                let file = std::fs::OpenOptions::new().create(true).append(true).open(&resumed)?;
                file.set_len(written)?;
                Ok(Part { file: Some(file), hash, written })
            })
            .await?
            .map_err(|source| DownloadError::Io { action: "open", path: part_path.clone(), source })?;
        let mut outage = fetch.outage.clone();
        let mut failures = 0;
        loop {
            let stop_at = outage.as_ref().map(|_| expected.size / 2).filter(|&half| half > part.written);
            match self.attempt(fetch, &part_path, &mut part, stop_at).await {
                Ok(()) if part.written == expected.size => break,
                Ok(()) => {
                    if let Some((wait, agent)) = outage.take() {
                        let _ = agent.send(wait);
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(error @ (DownloadError::Network(_) | DownloadError::Timeout)) if failures + 1 < ATTEMPTS => {
                    failures += 1;
                    tracing::debug!(%error, url = fetch.url, "download interrupted; resuming");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                }
                Err(DownloadError::Http { status }) if status >= 500 && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                }
                Err(error) => return Err(error),
            }
        }
        let actual: [u8; 32] = part.hash.clone().finish().as_ref().try_into().unwrap_or([0; 32]);
        if actual != expected.sha256 {
            let _ = tokio::fs::remove_file(&part_path).await;
            return Err(DownloadError::HashMismatch { expected: expected.sha256, actual });
        }
        drop(part.file.take());
        tokio::fs::rename(&part_path, &destination).await.map_err(|source| DownloadError::Io {
            action: "rename",
            path: part_path.clone(),
            source,
        })
    }

    /// One request for the rest of the file (up to `stop_at` bytes when set), appended to the
    /// part file.
    async fn attempt(
        &self,
        fetch: &Fetch<'_>,
        part_path: &Path,
        part: &mut Part,
        stop_at: Option<u64>,
    ) -> Result<(), DownloadError> {
        let size = fetch.expected.size;
        let connection = self.connections.acquire().await.map_err(|e| DownloadError::Network(e.to_string()))?;
        let mut request = self.http.get(fetch.url);
        match stop_at {
            Some(end) => {
                request = request.header(reqwest::header::RANGE, format!("bytes={}-{}", part.written, end - 1))
            }
            None if part.written > 0 => {
                request = request.header(reqwest::header::RANGE, format!("bytes={}-", part.written));
            }
            None => {}
        }
        let mut response = request.send().await.map_err(network)?;
        match response.status().as_u16() {
            200 => {
                if part.written > 0 {
                    // The whole file again: start over.
                    self.write(part_path, part, Vec::new(), true).await?;
                }
            }
            206 => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !range.starts_with(&format!("bytes {}-", part.written)) {
                    return Err(DownloadError::Network(format!("the server sent another range: {range:?}")));
                }
            }
            status => return Err(DownloadError::Http { status }),
        }
        let mut buffer = Vec::with_capacity(FLUSH_AT.min(usize::try_from(size).unwrap_or(FLUSH_AT)));
        while let Some(chunk) = response.chunk().await.map_err(network)? {
            if fetch.cancel.load(Ordering::SeqCst) {
                self.write(part_path, part, buffer, false).await?;
                return Err(DownloadError::Cancelled);
            }
            self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if part.written + (buffer.len() + chunk.len()) as u64 > size {
                let actual = part.written + (buffer.len() + chunk.len()) as u64;
                let _ = tokio::fs::remove_file(part_path).await;
                part.written = 0;
                part.hash = digest::Context::new(&digest::SHA256);
                return Err(DownloadError::SizeMismatch { expected: size, actual });
            }
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= FLUSH_AT {
                self.write(part_path, part, std::mem::take(&mut buffer), false).await?;
            }
        }
        // The response is read: the connection is free for the next device while this one writes.
        drop(connection);
        self.write(part_path, part, buffer, false).await?;
        if stop_at.is_none() && part.written != size {
            return Err(DownloadError::Network(format!("the body ended after {} of {size} bytes", part.written)));
        }
        Ok(())
    }

    /// Appends `bytes` to the part file and the hash on a blocking slot (`truncate` first empties
    /// both).
    async fn write(&self, path: &Path, part: &mut Part, bytes: Vec<u8>, truncate: bool) -> Result<(), DownloadError> {
        if bytes.is_empty() && !truncate {
            return Ok(());
        }
        let (Some(mut file), mut hash) = (part.file.take(), part.hash.clone()) else {
            return Err(DownloadError::Network("the part file is closed".into()));
        };
        let written = if truncate { 0 } else { part.written };
        let (file, hash, result) = self
            .blocking(move || {
                let result = (|| {
                    if truncate {
                        file.set_len(0)?;
                        hash = digest::Context::new(&digest::SHA256);
                    }
                    file.write_all(&bytes)?;
                    hash.update(&bytes);
                    Ok::<u64, std::io::Error>(bytes.len() as u64)
                })();
                (file, hash, result)
            })
            .await?;
        part.file = Some(file);
        part.hash = hash;
        let appended = result.map_err(|source| DownloadError::Io { action: "write", path: path.to_owned(), source })?;
        part.written = written + appended;
        Ok(())
    }
}

fn network(error: reqwest::Error) -> DownloadError {
    if error.is_timeout() { DownloadError::Timeout } else { DownloadError::Network(error.to_string()) }
}

fn part_path(destination: &Path) -> PathBuf {
    let mut name = destination.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    destination.with_file_name(name)
}

/// Size of a file and the SHA-256 context over it, read in pieces.
fn hash_prefix(path: &Path) -> std::io::Result<(u64, digest::Context)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((size, hash));
        }
        hash.update(buffer.get(..n).unwrap_or_default());
        size += n as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
