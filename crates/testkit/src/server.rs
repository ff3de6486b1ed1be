//! [`TestServer`]: the real server, booted in-process on 127.0.0.1 with ephemeral ports in a
//! fresh temporary data directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use duhub_server::config::{Config, Settings};
use duhub_server::hub::Hub;
use duhub_server::server::{Admin, Running};
use tempfile::TempDir;

use crate::device::{DeviceOptions, Endpoint, TestDevice};
use crate::postgres::{TestDatabase, postgres_url};
use crate::service::ServiceClient;

/// Items per page of the Device Update REST API in test servers: small, so tests page.
pub const TEST_PAGE_SIZE: usize = 2;

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL of [`postgres_url`].
    Postgres,
}

/// A running in-process server. Stop it with [`TestServer::shutdown`]; dropping it aborts its
/// tasks and drops its database.
pub struct TestServer {
    running: Option<Running>,
    service: Option<ServiceClient>,
    endpoint: Endpoint,
    /// The database URL the server uses.
    pub database_url: String,
    /// The admin settings it wrote to `admin.json`.
    pub admin: Admin,
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// Where HTTPS listens.
    pub https: SocketAddr,
    /// Where MQTT/TLS listens.
    pub mqtt: SocketAddr,
    // Dropped after the server (fields drop in order).
    database: Option<TestDatabase>,
    data_dir: TempDir,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("https", &self.https).field("mqtt", &self.mqtt).finish()
    }
}

impl TestServer {
    /// A server on SQLite.
    ///
    /// # Panics
    ///
    /// If it cannot start.
    pub async fn start() -> Self {
        Self::boot(None, None, Settings::default()).await
    }

    /// A server on SQLite with `settings` over the test defaults (limits, timeouts).
    ///
    /// # Panics
    ///
    /// If it cannot start.
    pub async fn start_with_settings(settings: Settings) -> Self {
        Self::boot(None, None, settings).await
    }

    /// A server on the database of `database_url` (which is neither created nor dropped).
    ///
    /// # Panics
    ///
    /// If it cannot start.
    pub async fn start_with_database_url(database_url: &str) -> Self {
        Self::boot(Some(database_url.to_owned()), None, Settings::default()).await
    }

    /// A server on `backend`; for PostgreSQL on a fresh database dropped with the server.
    /// `None` (after printing `skipped: no PostgreSQL`) when PostgreSQL is wanted but there is
    /// none.
    ///
    /// # Panics
    ///
    /// If it cannot start, or PostgreSQL is required (see [`postgres_url`]) and missing.
    pub async fn start_on(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::start().await),
            Backend::Postgres => {
                let Some(url) = postgres_url().await else {
                    eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
                    return None;
                };
                let database =
                    TestDatabase::create(&url).await.unwrap_or_else(|e| panic!("creating a test database: {e:#}"));
                Some(Self::boot(Some(database.url.clone()), Some(database), Settings::default()).await)
            }
        }
    }

    async fn boot(database_url: Option<String>, database: Option<TestDatabase>, settings: Settings) -> Self {
        crate::install_crypto_provider();
        let data_dir = tempfile::Builder::new()
            .prefix("duhub-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary data directory: {e}"));
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}", data_dir.path().join("duhub.db").display()));
        let config = Config::resolve(
            Settings {
                data_dir: Some(data_dir.path().to_owned()),
                hostname: Some(crate::HOSTNAME.to_owned()),
                bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                https_port: Some(0),
                mqtt_port: Some(0),
                mqtt_plain_port: None,
                database_url: Some(database_url.clone()),
                // Small pages and a fast reconciler, so tests see paging and deployments quickly.
                page_size: Some(TEST_PAGE_SIZE),
                reconcile_interval_ms: Some(100),
                ..Settings::default()
            }
            .overridden_by(settings),
        );
        let running = duhub_server::server::start(&config).await.unwrap_or_else(|e| {
            panic!("starting the server on {}: {e:#}", duhub_server::server::redact(&database_url))
        });
        let ca_pem = std::fs::read(&running.admin.ca_certificate)
            .unwrap_or_else(|e| panic!("reading {}: {e}", running.admin.ca_certificate.display()));
        let service = ServiceClient::new(&running.admin.https_url, &running.admin.service_connection_string, &ca_pem)
            .unwrap_or_else(|e| panic!("the service client: {e:#}"));
        let endpoint = Endpoint {
            dial_host: crate::HOSTNAME.to_owned(),
            mqtt_port: running.mqtt.port(),
            hostname: crate::HOSTNAME.to_owned(),
            ca_pem: ca_pem.clone(),
        };
        Self {
            service: Some(service),
            endpoint,
            database_url,
            admin: running.admin.clone(),
            ca_pem,
            https: running.https,
            mqtt: running.mqtt,
            running: Some(running),
            database,
            data_dir,
        }
    }

    /// The service REST client.
    ///
    /// # Panics
    ///
    /// Never: it lives until [`TestServer::shutdown`] consumes the server.
    pub fn service(&self) -> &ServiceClient {
        self.service.as_ref().expect("the server is running")
    }

    /// Where devices connect.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A Device Update REST client with the admin API token.
    ///
    /// # Panics
    ///
    /// If the CA certificate does not parse.
    pub fn du(&self) -> crate::DuClient {
        crate::DuClient::new(&self.admin.https_url, &self.admin.instance_id, &self.admin.api_token, &self.ca_pem)
            .unwrap_or_else(|e| panic!("the Device Update client: {e:#}"))
    }

    /// The Device Update service.
    ///
    /// # Panics
    ///
    /// Never: the server runs until [`TestServer::shutdown`] consumes it.
    pub fn du_service(&self) -> &Arc<duhub_server::du::DeviceUpdate> {
        &self.running.as_ref().expect("the server is running").du
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// The hub (connected devices, the store).
    ///
    /// # Panics
    ///
    /// Never: the server runs until [`TestServer::shutdown`] consumes it.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.running.as_ref().expect("the server is running").hub
    }

    /// Creates a device with generated keys; returns (primary, secondary).
    ///
    /// # Panics
    ///
    /// If the server refuses.
    pub async fn create_device(&self, device_id: &str) -> (String, String) {
        self.service().create_device(device_id).await.unwrap_or_else(|e| panic!("creating device {device_id}: {e:#}"))
    }

    /// Connection options for `device_id` with `key_b64`.
    pub fn device_options(&self, device_id: &str, key_b64: &str) -> DeviceOptions {
        DeviceOptions::new(&self.endpoint, device_id, key_b64)
    }

    /// Connects `device_id` with `key_b64`.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn connect_device(&self, device_id: &str, key_b64: &str) -> TestDevice {
        self.device_options(device_id, key_b64)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting device {device_id}: {e}"))
    }

    /// Creates a device and connects it.
    pub async fn new_device(&self, device_id: &str) -> TestDevice {
        let (key, _) = self.create_device(device_id).await;
        self.connect_device(device_id, &key).await
    }

    /// Stops the server (waiting for its tasks) and drops its database.
    pub async fn shutdown(mut self) {
        // Close the REST client's idle keep-alive connections first: the server waits (up to 3 s)
        // for open HTTPS connections to end.
        self.service.take();
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        if let Some(database) = self.database.take()
            && let Err(error) = database.drop_database().await
        {
            eprintln!("{error:#}");
        }
    }
}
