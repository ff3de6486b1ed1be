//! Test harness for duhub: real parts, no mocks.
//!
//! - [`TestServer`] boots the server in-process (`duhub_server::server::start`) on 127.0.0.1 with
//!   ephemeral ports in a fresh temporary data directory, on SQLite or on a throwaway PostgreSQL
//!   database ([`TestDatabase`]).
//! - [`ServeProcess`] runs the built `duhub serve` binary as a child process, for tests that need
//!   several nodes or a `kill -9`.
//! - [`TestDevice`] is an IoT Hub device over MQTT 3.1.1/TLS (rumqttc) that trusts the server's
//!   private CA and authenticates with a SAS token, with twin helpers.
//! - [`RawConnection`] is a bare TLS socket speaking hand-encoded MQTT, for what a well-behaved
//!   client library will not do (MQTT 5, staying silent past the keep-alive).
//! - [`ServiceClient`] calls the service REST API with a SAS token of the owner policy.
//!
//! Conventions: nothing here sleeps to wait for something; every wait has a timeout
//! ([`TIMEOUT`] unless given). Fixture steps a test cannot go on without (booting a server,
//! creating a device) panic with a message; operations whose failure a test may want to examine
//! return a `Result`.

mod device;
mod du;
mod postgres;
mod process;
mod raw;
mod server;
mod service;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use device::{DesiredPatch, DeviceError, DeviceOptions, Endpoint, MODEL_ID, TestDevice, TwinResponse};
pub use du::{DU_API_VERSION, DuClient, FileServer, ImportFixture, sha256_b64};
pub use postgres::{DEFAULT_POSTGRES_URL, TestDatabase, postgres_url};
pub use process::ServeProcess;
pub use raw::{RawConnection, mqtt5_connect_packet};
/// rumqttc's MQTT codes, re-exported for crates that do not depend on it.
pub use rumqttc::{ConnectReturnCode, SubscribeReasonCode};
pub use server::{Backend, TEST_PAGE_SIZE, TestServer};
pub use service::{API_VERSION, ServiceClient};

/// How long a helper waits for the server by default.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The host name test servers use (devices' usernames and SAS resources name it).
pub const HOSTNAME: &str = "localhost";

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Installs the ring crypto provider as rustls' process default (reqwest and rumqttc are built
/// without one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTPS client that trusts only the certificates of `ca_pem`, with the helpers' timeouts.
pub fn https_client(ca_pem: &[u8]) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    install_crypto_provider();
    let certificates = reqwest::Certificate::from_pem_bundle(ca_pem).context("parsing the CA certificate")?;
    reqwest::Client::builder()
        .tls_certs_only(certificates)
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTPS client")
}

/// A rustls client configuration that trusts only the certificates of `ca_pem`.
pub fn tls_client_config(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate.context("parsing the CA certificate")?).context("adding the CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in the CA PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Random hex digits (`bytes` random bytes), for unique names.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    duhub_server::ids::fill_random(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}
