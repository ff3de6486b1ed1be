//! Resumable, verified downloads of update files over HTTP(S): the agent's content downloader.
//!
//! [`Downloader::download`] fetches one file of a step into the workflow sandbox and guarantees
//! that **a file under the destination name always has the expected size and SHA-256**:
//!
//! - bytes are streamed into `<dest>.part`, hashed on the way, and never read past
//!   [`ExpectedFile::size`] (one extra byte is probed to detect a body that is too long; a
//!   `Content-Length` that disagrees fails before the body is read);
//! - when everything arrived and the hash matches, the part file is fsynced and renamed to
//!   `dest` (and the folder fsynced, best effort); on a size or hash mismatch the part file is
//!   deleted and the call fails;
//! - a network error, a timeout or a cancellation keeps the part file: the next call re-hashes
//!   the bytes already there and asks for the rest with `Range: bytes=<n>-`. A server that
//!   answers `200` instead of `206` is read from the start (the part file is truncated); a
//!   `416`, or a `206` for another range, discards the part file and downloads it all again;
//! - if `dest` already holds the right bytes, nothing is downloaded.
//!
//! The downloader does **not** retry by itself: the caller (the runtime) decides when to try
//! again and with which backoff; resuming makes a retry cost only the missing bytes. Redirects
//! are followed (up to 10), proxies come from the usual environment variables.
//!
//! # Trust
//!
//! TLS is rustls with the ring provider. The server certificate must chain to the system's
//! bundle, read from the usual files ([`SYSTEM_CA_BUNDLES`], first one found), or to the extra
//! CA when one is configured (a PEM bundle, e.g. the duhub server's own CA), which is trusted
//! **in addition** to the system's bundle. No root set is compiled into the binary: devices
//! keep their trust store up to date with their OS, and the binary stays small. With neither a
//! system bundle nor an extra CA, only plain-HTTP downloads can succeed.
//!
//! # Timeouts
//!
//! The `timeout` given to [`Downloader::new`] bounds every wait on the network: resolving and
//! connecting (including the TLS handshake), sending the request, waiting for the response
//! headers, and **each** read of the body. There is deliberately no limit on the total time, so
//! a large file over a slow but live link completes; an overall budget (the official agent's
//! `downloadTimeoutInMinutes`) is the caller's, enforced through the `cancel` flag.
//!
//! # Extended result codes
//!
//! Every [`DownloadError`] maps to a distinct code of facility 4 (content downloader),
//! component 2 ("simple HTTP"; duhub is not the official curl downloader, component 3, whose
//! codes mean something else): see [`erc`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use duhub_proto::result::ExtendedResultCode;
use ring::digest;

/// PEM bundles tried, in order, for the system's roots.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The first of [`SYSTEM_CA_BUNDLES`] that can be read, if any.
pub fn system_ca_bundle() -> Option<Vec<u8>> {
    SYSTEM_CA_BUNDLES.iter().find_map(|path| fs::read(path).ok())
}

/// Size of the buffer the body is read with (and the granularity of cancellation checks).
const CHUNK: usize = 64 * 1024;

/// The extended result codes of the downloader: facility 4 (content downloader), component 2
/// (simple HTTP), `0x402xxxxx`.
///
/// HTTP statuses are spelt in hexadecimal digits so that the code reads as the status:
/// HTTP 404 is `0x40200404`.
pub mod erc {
    use duhub_proto::result::ExtendedResultCode;

    /// A network failure: DNS, connection refused or reset, TLS-unrelated protocol errors, a body
    /// that ended early.
    pub const NETWORK: ExtendedResultCode = ExtendedResultCode(0x4020_0001);
    /// A network wait took longer than the configured timeout.
    pub const TIMEOUT: ExtendedResultCode = ExtendedResultCode(0x4020_0002);
    /// The server announced or sent a body of another size than the manifest's.
    pub const SIZE_MISMATCH: ExtendedResultCode = ExtendedResultCode(0x4020_0003);
    /// The SHA-256 of the downloaded bytes is not the manifest's.
    pub const HASH_MISMATCH: ExtendedResultCode = ExtendedResultCode(0x4020_0004);
    /// The download was cancelled through the cancel flag.
    pub const CANCELLED: ExtendedResultCode = ExtendedResultCode(0x4020_0005);
    /// A local file operation (part file, destination, rename) failed.
    pub const IO: ExtendedResultCode = ExtendedResultCode(0x4020_0006);
    /// The URL could not be used.
    pub const INVALID_URL: ExtendedResultCode = ExtendedResultCode(0x4020_0007);
    /// TLS failed: bad extra CA, handshake or certificate verification failure.
    pub const TLS: ExtendedResultCode = ExtendedResultCode(0x4020_0008);
    /// Base of the HTTP status codes: `HTTP_STATUS_BASE | 0xSSS` where `SSS` are the decimal
    /// digits of the status read as hexadecimal (404 -> `0x40200404`).
    pub const HTTP_STATUS_BASE: ExtendedResultCode = ExtendedResultCode(0x4020_0000);
}

/// What the manifest says a file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

impl ExpectedFile {
    /// Builds the expectation from a manifest's `sizeInBytes` and base64 `hashes.sha256`;
    /// `None` when the hash is not base64 of 32 bytes.
    pub fn from_base64_sha256(size: u64, sha256_base64: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sha256_base64.trim()).ok()?;
        let sha256 = <[u8; 32]>::try_from(bytes.as_slice()).ok()?;
        Some(Self { size, sha256 })
    }
}

/// Why a download failed. [`DownloadError::extended_result_code`] gives the code to report.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with a status other than 200/206 (after redirects).
    #[error("server answered http status {status}")]
    Http {
        /// The HTTP status.
        status: u16,
    },
    /// The connection failed or broke; the part file is kept for a resume.
    #[error("network error: {0}")]
    Network(String),
    /// The server announced or sent another size than expected; the part file was deleted.
    #[error("size mismatch: expected {expected} bytes, the server announced or sent {actual}")]
    SizeMismatch {
        /// The manifest's size.
        expected: u64,
        /// What the server announced (`Content-Length`, `Content-Range`) or sent (at least).
        actual: u64,
    },
    /// The content does not have the expected SHA-256; the part file was deleted.
    #[error("sha-256 mismatch: expected {}, got {}", hex(expected), hex(actual))]
    HashMismatch {
        /// The manifest's hash.
        expected: [u8; 32],
        /// The hash of what was downloaded.
        actual: [u8; 32],
    },
    /// The cancel flag was set; the part file is kept.
    #[error("download cancelled")]
    Cancelled,
    /// A network wait exceeded the timeout; the part file is kept.
    #[error("download timed out")]
    Timeout,
    /// The URL is not usable.
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    /// TLS failed (bad extra CA PEM, handshake, certificate verification).
    #[error("tls error: {0}")]
    Tls(String),
    /// A local file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`"write"`, `"rename"`, ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl DownloadError {
    /// The extended result code to report for this error (facility 4, component 2; see [`erc`]).
    pub fn extended_result_code(&self) -> ExtendedResultCode {
        match self {
            Self::Http { status } => {
                // Decimal digits read as hex, so that 404 shows as ...404; statuses are 3 digits.
                let digits = u32::from_str_radix(&status.to_string(), 16).unwrap_or(0xFFF) & 0xFFF;
                ExtendedResultCode(erc::HTTP_STATUS_BASE.0 | digits)
            }
            Self::Network(_) => erc::NETWORK,
            Self::Timeout => erc::TIMEOUT,
            Self::SizeMismatch { .. } => erc::SIZE_MISMATCH,
            Self::HashMismatch { .. } => erc::HASH_MISMATCH,
            Self::Cancelled => erc::CANCELLED,
            Self::Io { .. } => erc::IO,
            Self::InvalidUrl(_) => erc::INVALID_URL,
            Self::Tls(_) => erc::TLS,
        }
    }
}

/// A blocking HTTP(S) client for update files. Cheap to share by reference between threads;
/// keeps idle connections for reuse.
#[derive(Debug)]
pub struct Downloader {
    agent: ureq::Agent,
}

impl Downloader {
    /// A downloader trusting the system's roots plus `extra_ca_pem` (one or more PEM
    /// certificates), see the module docs, with `timeout` bounding every network wait.
    ///
    /// Fails with [`DownloadError::Tls`] when `extra_ca_pem` holds no certificate or bad PEM.
    pub fn new(extra_ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, DownloadError> {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};

        let mut certs = Vec::new();
        if let Some(pem) = extra_ca_pem {
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(PemItem::Certificate(cert)) => certs.push(cert),
                    Ok(_) => {}
                    Err(error) => return Err(DownloadError::Tls(format!("extra ca: {error}"))),
                }
            }
            if certs.is_empty() {
                return Err(DownloadError::Tls("extra ca: no certificate in the pem".into()));
            }
        }
        match system_ca_bundle() {
            // A damaged system bundle must not prevent using the explicitly given CA.
            Some(bundle) => certs.extend(ureq::tls::parse_pem(&bundle).filter_map(|item| match item {
                Ok(PemItem::Certificate(cert)) => Some(cert.to_owned()),
                _ => None,
            })),
            None if extra_ca_pem.is_none() => {
                tracing::warn!("no CA given and no system CA bundle found: only plain-HTTP downloads can succeed");
            }
            None => {}
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let root_certs = RootCerts::from(certs);
        let tls = TlsConfig::builder().root_certs(root_certs).unversioned_rustls_crypto_provider(provider).build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_resolve(Some(timeout))
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .build();
        Ok(Self { agent: config.new_agent() })
    }

    /// Downloads `url` to `dest` (a file in the workflow sandbox), verifying size and SHA-256,
    /// resuming from `<dest>.part` when there is one; see the module docs for the guarantees.
    ///
    /// Returns at once when `dest` already has the expected size and hash (a `dest` that does
    /// not is deleted first). `cancel` is checked before the request and between chunks of at
    /// most 64 KiB ([`DownloadError::Cancelled`]); `progress(bytes_done, total)` is called
    /// after each chunk (and once when the file was already complete). Blocking.
    pub fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: &ExpectedFile,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), DownloadError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled);
        }
        match fs::metadata(dest) {
            Ok(meta) => {
                if meta.is_file() && meta.len() == expected.size {
                    let mut context = digest::Context::new(&digest::SHA256);
                    hash_file_into(dest, &mut context, cancel)?;
                    if sha256_of(context) == expected.sha256 {
                        progress(expected.size, expected.size);
                        return Ok(());
                    }
                }
                remove(dest)?;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(DownloadError::Io { action: "inspect", path: dest.to_path_buf(), source }),
        }

        let part = part_path(dest);
        let mut state = PartState::resume(&part, expected, cancel)?;
        let mut restarted = false;
        loop {
            if state.offset == expected.size {
                // A complete part file from an earlier run: no request needed.
                progress(expected.size, expected.size);
                return finish(&part, dest, state, expected);
            }
            match self.fetch(url, &part, &mut state, expected, cancel, progress)? {
                Fetched::Complete => return finish(&part, dest, state, expected),
                Fetched::Restart(_) if !restarted && state.offset > 0 => {
                    restarted = true;
                    remove(&part)?;
                    state = PartState::empty();
                }
                Fetched::Restart(status) => return Err(DownloadError::Http { status }),
            }
        }
    }

    /// GETs a small document (a root key package) into memory; more than `limit` bytes is an
    /// error. Blocking.
    pub fn get_small(&self, url: &str, limit: u64, cancel: &AtomicBool) -> Result<Vec<u8>, DownloadError> {
        use std::io::Read as _;
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled);
        }
        let response = self.agent.get(url).call().map_err(|e| DownloadError::Network(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(DownloadError::Http { status });
        }
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| DownloadError::Network(e.to_string()))?;
        if body.len() as u64 > limit {
            return Err(DownloadError::SizeMismatch { expected: limit, actual: body.len() as u64 });
        }
        Ok(body)
    }

    /// One request: from `state.offset` (with a `Range`) to the end, appended to the part file.
    fn fetch(
        &self,
        url: &str,
        part: &Path,
        state: &mut PartState,
        expected: &ExpectedFile,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Fetched, DownloadError> {
        let mut request = self.agent.get(url);
        if state.offset > 0 {
            request = request.header("Range", format!("bytes={}-", state.offset));
        }
        let response = request.call().map_err(map_ureq_error)?;
        let status = response.status().as_u16();
        let append = match status {
            200 => false,
            206 => {
                let range = response.headers().get("content-range").and_then(|v| v.to_str().ok());
                match range.and_then(parse_content_range) {
                    Some((start, total)) if start == state.offset => {
                        if let Some(total) = total.filter(|total| *total != expected.size) {
                            remove(part)?;
                            return Err(DownloadError::SizeMismatch { expected: expected.size, actual: total });
                        }
                        true
                    }
                    _ => return Ok(Fetched::Restart(status)),
                }
            }
            416 => return Ok(Fetched::Restart(status)),
            status => return Err(DownloadError::Http { status }),
        };
        if !append {
            *state = PartState::empty();
        }
        let remaining = expected.size - state.offset;
        let announced = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = announced.filter(|length| *length != remaining) {
            remove(part)?;
            return Err(DownloadError::SizeMismatch { expected: expected.size, actual: state.offset + length });
        }

        let mut file = if append { OpenOptions::new().append(true).open(part) } else { File::create(part) }
            .map_err(|source| DownloadError::Io { action: "open", path: part.to_path_buf(), source })?;
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; CHUNK];
        while state.offset < expected.size {
            if cancel.load(Ordering::Relaxed) {
                return Err(DownloadError::Cancelled);
            }
            let want = usize::try_from(expected.size - state.offset).unwrap_or(CHUNK).min(CHUNK);
            let read = match reader.read(&mut buffer[..want]) {
                Ok(0) => {
                    // The body ended early without an error (no Content-Length): it may have
                    // been cut, so the part file is kept for a resume.
                    return Err(DownloadError::Network(format!(
                        "the body ended after {} of {} bytes",
                        state.offset, expected.size
                    )));
                }
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(map_ureq_error(ureq::Error::from(error))),
            };
            let chunk = &buffer[..read];
            file.write_all(chunk).map_err(|source| DownloadError::Io {
                action: "write",
                path: part.to_path_buf(),
                source,
            })?;
            state.context.update(chunk);
            state.offset += read as u64;
            progress(state.offset, expected.size);
        }
        // Everything expected arrived; one more byte means the server's file is longer.
        let mut probe = [0u8; 1];
        if matches!(reader.read(&mut probe), Ok(n) if n > 0) {
            drop(file);
            remove(part)?;
            return Err(DownloadError::SizeMismatch { expected: expected.size, actual: expected.size + 1 });
        }
        file.sync_all().map_err(|source| DownloadError::Io { action: "sync", path: part.to_path_buf(), source })?;
        Ok(Fetched::Complete)
    }
}

/// How one request ended, when it did not fail.
enum Fetched {
    /// All expected bytes are in the part file.
    Complete,
    /// The server cannot serve the asked range (with this status): start again from zero.
    Restart(u16),
}

/// The bytes already in the part file: how many, and their running hash.
struct PartState {
    offset: u64,
    context: digest::Context,
}

impl PartState {
    fn empty() -> Self {
        Self { offset: 0, context: digest::Context::new(&digest::SHA256) }
    }

    /// Re-hashes an existing part file; a part larger than expected is deleted.
    fn resume(part: &Path, expected: &ExpectedFile, cancel: &AtomicBool) -> Result<Self, DownloadError> {
        let length = match fs::metadata(part) {
            Ok(meta) => meta.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => return Err(DownloadError::Io { action: "inspect", path: part.to_path_buf(), source }),
        };
        if length > expected.size {
            remove(part)?;
            return Ok(Self::empty());
        }
        let mut state = Self::empty();
        state.offset = hash_file_into(part, &mut state.context, cancel)?;
        if state.offset > 0 {
            tracing::info!(part = %part.display(), offset = state.offset, "resuming a download");
        }
        Ok(state)
    }
}

/// Checks the hash of a complete part file, then renames it to `dest`.
fn finish(part: &Path, dest: &Path, state: PartState, expected: &ExpectedFile) -> Result<(), DownloadError> {
    let actual = sha256_of(state.context);
    if actual != expected.sha256 {
        remove(part)?;
        return Err(DownloadError::HashMismatch { expected: expected.sha256, actual });
    }
    // The part may come from an earlier run: make sure its bytes are on disk before the rename.
    File::open(part).and_then(|file| file.sync_all()).map_err(|source| DownloadError::Io {
        action: "sync",
        path: part.to_path_buf(),
        source,
    })?;
    fs::rename(part, dest).map_err(|source| DownloadError::Io {
        action: "rename",
        path: part.to_path_buf(),
        source,
    })?;
    if let Some(folder) = dest.parent() {
        // Best effort: some file systems refuse to sync a directory.
        let _ = File::open(folder).and_then(|folder| folder.sync_all());
    }
    Ok(())
}

/// `<dest>.part`.
fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Feeds the whole file into `context`; returns its length.
fn hash_file_into(path: &Path, context: &mut digest::Context, cancel: &AtomicBool) -> Result<u64, DownloadError> {
    let io_error = |source| DownloadError::Io { action: "read", path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io_error)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled);
        }
        let read = match file.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error(error)),
        };
        context.update(&buffer[..read]);
        total += read as u64;
    }
}

fn sha256_of(context: digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Removes a file; a missing file is fine.
fn remove(path: &Path) -> Result<(), DownloadError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(DownloadError::Io { action: "remove", path: path.to_path_buf(), source: error })
        }
        _ => Ok(()),
    }
}

/// `bytes <start>-<end>/<total or *>` -> (start, total).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.trim().split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((start, total))
}

fn map_ureq_error(error: ureq::Error) -> DownloadError {
    match error {
        ureq::Error::StatusCode(status) => DownloadError::Http { status },
        ureq::Error::Timeout(_) => DownloadError::Timeout,
        ureq::Error::Io(error) if matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            DownloadError::Timeout
        }
        ureq::Error::BadUri(uri) => DownloadError::InvalidUrl(uri),
        ureq::Error::Http(error) => DownloadError::InvalidUrl(error.to_string()),
        ureq::Error::Tls(message) => DownloadError::Tls(message.to_string()),
        ureq::Error::Pem(error) => DownloadError::Tls(error.to_string()),
        ureq::Error::Rustls(error) => DownloadError::Tls(error.to_string()),
        other => DownloadError::Network(other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
