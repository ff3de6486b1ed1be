//! Tests of the downloader against a tiny HTTP/1.1 server on `127.0.0.1:0`, scripted per test.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// How the test server answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// Close the connection after this many body bytes (first request only).
    cut_after: Option<u64>,
    /// Answer 200 with the whole body even when a Range was asked.
    ignore_range: bool,
    /// Status to answer instead of serving the file.
    status: Option<u16>,
    /// Omit Content-Length (body delimited by closing the connection).
    no_content_length: bool,
    /// Announce this Content-Length instead of the real one.
    announce_length: Option<u64>,
    /// Append this many extra bytes after the file (generated on the fly).
    extra_bytes: u64,
}

#[derive(Default)]
struct Shared {
    behaviour: Behaviour,
    /// Request heads received, lower-cased.
    requests: Vec<String>,
}

struct TestServer {
    url: String,
    shared: Arc<Mutex<Shared>>,
    /// Body bytes written successfully, over all requests.
    body_bytes_sent: Arc<AtomicU64>,
}

impl TestServer {
    fn start(content: Vec<u8>, behaviour: Behaviour) -> Self {
        Self::start_with(content, behaviour, None)
    }

    fn start_with(content: Vec<u8>, behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = if tls.is_some() { "localhost" } else { "127.0.0.1" };
        let shared = Arc::new(Mutex::new(Shared { behaviour, requests: Vec::new() }));
        let body_bytes_sent = Arc::new(AtomicU64::new(0));
        let (thread_shared, thread_sent) = (shared.clone(), body_bytes_sent.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match &tls {
                    None => serve(stream, &content, &thread_shared, &thread_sent),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config.clone()) else { continue };
                        let tls_stream = rustls::StreamOwned::new(connection, stream);
                        serve(tls_stream, &content, &thread_shared, &thread_sent);
                    }
                }
            }
        });
        Self { url: format!("{scheme}://{host}:{port}/file.bin"), shared, body_bytes_sent }
    }

    fn requests(&self) -> Vec<String> {
        self.shared.lock().unwrap().requests.clone()
    }

    fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.lock().unwrap().behaviour);
    }

    fn sent(&self) -> u64 {
        self.body_bytes_sent.load(Ordering::SeqCst)
    }
}

/// Serves one request on one connection, then closes it.
fn serve<S: std::io::Read + Write>(stream: S, content: &[u8], shared: &Mutex<Shared>, sent: &AtomicU64) {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let behaviour = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(head.clone());
        let behaviour = shared.behaviour.clone();
        // A cut happens once; the next attempt is served fully.
        shared.behaviour.cut_after = None;
        behaviour
    };
    let mut stream = reader.into_inner();
    if let Some(status) = behaviour.status {
        let _ = write!(stream, "HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.flush();
        return;
    }
    let range_start = head
        .lines()
        .find_map(|line| line.strip_prefix("range: bytes="))
        .and_then(|range| range.trim().trim_end_matches('-').parse::<u64>().ok())
        .filter(|_| !behaviour.ignore_range);
    let start = range_start.unwrap_or(0).min(content.len() as u64) as usize;
    let body = &content[start..];
    let total_length = body.len() as u64 + behaviour.extra_bytes;
    let mut response = match range_start {
        Some(first) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{}/{}\r\n",
            content.len().saturating_sub(1),
            content.len()
        ),
        None => "HTTP/1.1 200 OK\r\n".to_owned(),
    };
    if !behaviour.no_content_length {
        response.push_str(&format!("Content-Length: {}\r\n", behaviour.announce_length.unwrap_or(total_length)));
    }
    response.push_str("Connection: close\r\n\r\n");
    if stream.write_all(response.as_bytes()).is_err() {
        return;
    }
    let limit = behaviour.cut_after.unwrap_or(u64::MAX).min(body.len() as u64) as usize;
    for chunk in body[..limit].chunks(8192) {
        if stream.write_all(chunk).is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    if behaviour.cut_after.is_some() {
        let _ = stream.flush();
        return;
    }
    let filler = [0x5Au8; 8192];
    let mut extra = behaviour.extra_bytes;
    while extra > 0 {
        let n = extra.min(filler.len() as u64) as usize;
        if stream.write_all(&filler[..n]).is_err() {
            return;
        }
        sent.fetch_add(n as u64, Ordering::SeqCst);
        extra -= n as u64;
    }
    let _ = stream.flush();
}

fn content(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 251) as u8).collect()
}

fn expected_for(content: &[u8]) -> ExpectedFile {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest::digest(&digest::SHA256, content).as_ref());
    ExpectedFile { size: content.len() as u64, sha256 }
}

fn downloader() -> Downloader {
    Downloader::new(None, Duration::from_secs(10)).unwrap()
}

fn run(
    downloader: &Downloader,
    url: &str,
    dest: &Path,
    expected: &ExpectedFile,
) -> (Result<(), DownloadError>, Vec<(u64, u64)>) {
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let result = downloader.download(url, dest, expected, &cancel, &mut |done, total| seen.push((done, total)));
    (result, seen)
}

#[test]
fn full_download_lands_verified() {
    let data = content(300_000);
    let server = TestServer::start(data.clone(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let (result, progress) = run(&downloader(), &server.url, &dest, &expected_for(&data));
    result.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert!(!part_path(&dest).exists());
    assert_eq!(progress.last(), Some(&(300_000, 300_000)));
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(!server.requests()[0].contains("range:"));

    // Already there with the right bytes: no request at all.
    let (result, _) = run(&downloader(), &server.url, &dest, &expected_for(&data));
    result.unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn resumes_after_a_cut_connection() {
    let data = content(500_000);
    let server = TestServer::start(data.clone(), Behaviour { cut_after: Some(200_000), ..Behaviour::default() });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let expected = expected_for(&data);
    let downloader = downloader();

    let (first, _) = run(&downloader, &server.url, &dest, &expected);
    assert!(matches!(first, Err(DownloadError::Network(_))), "{first:?}");
    assert_eq!(first.as_ref().unwrap_err().extended_result_code(), erc::NETWORK);
    assert!(!dest.exists());
    assert_eq!(fs::metadata(part_path(&dest)).unwrap().len(), 200_000);

    let (second, progress) = run(&downloader, &server.url, &dest, &expected);
    second.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].contains("range: bytes=200000-\r\n"), "{}", requests[1]);
    assert_eq!(server.sent(), 500_000, "each byte is sent once");
    assert!(progress.first().is_some_and(|(done, _)| *done > 200_000));
}

#[test]
fn server_ignoring_the_range_gets_a_full_download() {
    let data = content(100_000);
    let server = TestServer::start(data.clone(), Behaviour { cut_after: Some(40_000), ..Behaviour::default() });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let expected = expected_for(&data);
    let downloader = downloader();
    assert!(run(&downloader, &server.url, &dest, &expected).0.is_err());
    server.set(|b| b.ignore_range = true);
    run(&downloader, &server.url, &dest, &expected).0.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert!(server.requests()[1].contains("range: bytes=40000-"));
}

#[test]
fn a_corrupt_part_file_fails_the_hash_and_is_removed() {
    let data = content(50_000);
    let server = TestServer::start(data.clone(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    fs::write(part_path(&dest), vec![0xFFu8; 10_000]).unwrap();
    let (result, _) = run(&downloader(), &server.url, &dest, &expected_for(&data));
    assert!(matches!(result, Err(DownloadError::HashMismatch { .. })), "{result:?}");
    assert!(!dest.exists() && !part_path(&dest).exists());
    // The next attempt starts from zero and succeeds.
    run(&downloader(), &server.url, &dest, &expected_for(&data)).0.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
}

#[test]
fn wrong_hash_leaves_nothing_behind() {
    let data = content(70_000);
    let server = TestServer::start(data.clone(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let mut expected = expected_for(&data);
    expected.sha256[0] ^= 1;
    let (result, _) = run(&downloader(), &server.url, &dest, &expected);
    let error = result.unwrap_err();
    assert!(matches!(error, DownloadError::HashMismatch { .. }), "{error:?}");
    assert_eq!(error.extended_result_code(), ExtendedResultCode(0x4020_0004));
    assert!(!dest.exists());
    assert!(!part_path(&dest).exists());
}

#[test]
fn a_wrong_existing_destination_is_replaced() {
    let data = content(10_000);
    let server = TestServer::start(data.clone(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    fs::write(&dest, vec![0u8; 10_000]).unwrap();
    run(&downloader(), &server.url, &dest, &expected_for(&data)).0.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
}

#[test]
fn too_long_body_is_refused_without_reading_it() {
    let data = content(1_000);
    let expected = expected_for(&data);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");

    // Announced by Content-Length: refused before the body.
    let server = TestServer::start(data.clone(), Behaviour { extra_bytes: 50_000_000, ..Behaviour::default() });
    let (result, _) = run(&downloader(), &server.url, &dest, &expected);
    assert!(matches!(result, Err(DownloadError::SizeMismatch { expected: 1_000, actual: 50_001_000 })), "{result:?}");
    assert!(server.sent() < 50_000_000, "sent {}", server.sent());
    assert!(!dest.exists() && !part_path(&dest).exists());

    // Not announced: the expected bytes plus one probe byte are read, no more.
    let server = TestServer::start(
        data.clone(),
        Behaviour { extra_bytes: 50_000_000, no_content_length: true, ..Behaviour::default() },
    );
    let (result, _) = run(&downloader(), &server.url, &dest, &expected);
    let error = result.unwrap_err();
    assert!(matches!(error, DownloadError::SizeMismatch { .. }), "{error:?}");
    assert_eq!(error.extended_result_code(), erc::SIZE_MISMATCH);
    assert!(server.sent() < 50_000_000, "sent {}", server.sent());
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn too_short_announced_body_is_a_size_mismatch() {
    let data = content(1_000);
    let server = TestServer::start(data[..600].to_vec(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let (result, _) = run(&downloader(), &server.url, &dest, &expected_for(&data));
    assert!(matches!(result, Err(DownloadError::SizeMismatch { expected: 1_000, actual: 600 })), "{result:?}");
    assert!(!part_path(&dest).exists());
}

#[test]
fn http_errors_carry_the_status() {
    let server = TestServer::start(Vec::new(), Behaviour { status: Some(404), ..Behaviour::default() });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let (result, _) = run(&downloader(), &server.url, &dest, &expected_for(b"x"));
    let error = result.unwrap_err();
    assert!(matches!(error, DownloadError::Http { status: 404 }), "{error:?}");
    assert_eq!(error.extended_result_code(), ExtendedResultCode(0x4020_0404));
    assert_eq!(DownloadError::Http { status: 503 }.extended_result_code(), ExtendedResultCode(0x4020_0503));
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn cancel_stops_between_chunks_and_keeps_the_part() {
    let data = content(1_000_000);
    let server = TestServer::start(data.clone(), Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");
    let cancel = AtomicBool::new(false);
    let result = downloader().download(&server.url, &dest, &expected_for(&data), &cancel, &mut |done, _| {
        if done >= 100_000 {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    assert!(matches!(result, Err(DownloadError::Cancelled)), "{result:?}");
    assert!(!dest.exists());
    let kept = fs::metadata(part_path(&dest)).unwrap().len();
    assert!((100_000..1_000_000).contains(&kept), "{kept}");

    // Set before the call: nothing happens at all.
    let result = downloader().download(&server.url, &dest, &expected_for(&data), &cancel, &mut |_, _| {});
    assert!(matches!(result, Err(DownloadError::Cancelled)));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn connection_refused_is_a_network_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let (result, _) =
        run(&downloader(), &format!("http://127.0.0.1:{port}/x"), &dir.path().join("x"), &expected_for(b"x"));
    assert!(matches!(result, Err(DownloadError::Network(_))), "{result:?}");
}

#[test]
fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // Accept and say nothing until the client gave up.
        let connection: Option<TcpStream> = listener.accept().ok().map(|(stream, _)| stream);
        let _ = wait_done.recv();
        drop(connection);
    });
    let dir = tempfile::tempdir().unwrap();
    let downloader = Downloader::new(None, Duration::from_millis(300)).unwrap();
    let (result, _) =
        run(&downloader, &format!("http://127.0.0.1:{port}/x"), &dir.path().join("x"), &expected_for(b"x"));
    let error = result.unwrap_err();
    assert!(matches!(error, DownloadError::Timeout), "{error:?}");
    assert_eq!(error.extended_result_code(), erc::TIMEOUT);
    done.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn expected_file_from_manifest_hash() {
    let expected = expected_for(b"hello");
    let b64 = base64::engine::general_purpose::STANDARD.encode(expected.sha256);
    assert_eq!(ExpectedFile::from_base64_sha256(5, &b64), Some(expected));
    assert_eq!(ExpectedFile::from_base64_sha256(5, "AAAA"), None);
    assert_eq!(ExpectedFile::from_base64_sha256(5, "not base64!"), None);
}

#[test]
fn content_range_parsing() {
    assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
    assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
    assert_eq!(parse_content_range("items 1-2/3"), None);
    assert_eq!(parse_content_range("bytes x-1/2"), None);
}

#[test]
fn bad_extra_ca_is_refused() {
    assert!(matches!(Downloader::new(Some(b"nothing here"), Duration::from_secs(1)), Err(DownloadError::Tls(_))));
}

/// A CA made with rcgen, a server certificate for `localhost` it signed, and the rustls server
/// configuration presenting it.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "duhub test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain = vec![CertificateDer::from(server_cert.der().to_vec())];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

#[test]
fn https_with_an_extra_ca() {
    let (ca_pem, config) = test_pki();
    let data = content(200_000);
    let server = TestServer::start_with(data.clone(), Behaviour::default(), Some(config));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file.bin");

    // Without the CA the certificate is not trusted.
    let (result, _) = run(&downloader(), &server.url, &dest, &expected_for(&data));
    let error = result.unwrap_err();
    assert!(matches!(error, DownloadError::Tls(_) | DownloadError::Network(_)), "{error:?}");
    assert!(!dest.exists());

    let trusting = Downloader::new(Some(ca_pem.as_bytes()), Duration::from_secs(10)).unwrap();
    run(&trusting, &server.url, &dest, &expected_for(&data)).0.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
}
