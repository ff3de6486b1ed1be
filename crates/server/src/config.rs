//! Server settings: built-in defaults, then a TOML file, then `DUHUB_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Default of [`Settings::https_idle_timeout_ms`]: two minutes.
pub const DEFAULT_HTTPS_IDLE_TIMEOUT_MS: u64 = 120_000;
/// Default of [`Settings::https_header_timeout_ms`]: 15 s.
pub const DEFAULT_HTTPS_HEADER_TIMEOUT_MS: u64 = 15_000;
/// Default of [`Settings::https_body_timeout_ms`]: 30 s.
pub const DEFAULT_HTTPS_BODY_TIMEOUT_MS: u64 = 30_000;
/// Default of [`Settings::https_max_connections`].
pub const DEFAULT_HTTPS_MAX_CONNECTIONS: usize = 2048;
/// Default of [`Settings::upload_expiry_ms`]: one day.
pub const DEFAULT_UPLOAD_EXPIRY_MS: u64 = 24 * 60 * 60 * 1000;
/// Default of [`Settings::max_pending_upload_bytes`]: 10 GiB.
pub const DEFAULT_MAX_PENDING_UPLOAD_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Default of [`Settings::node_lease_ms`]: 30 s.
pub const DEFAULT_NODE_LEASE_MS: u64 = 30_000;

/// Every setting, each optional so that sources can be layered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Settings {
    /// Where the database, certificates and keys live.
    pub data_dir: Option<PathBuf>,
    /// The host name devices and services use (`HostName=` of connection strings, the
    /// certificate's name).
    pub hostname: Option<String>,
    /// Address to listen on.
    pub bind: Option<IpAddr>,
    /// HTTPS port: REST APIs and MQTT over WebSocket.
    pub https_port: Option<u16>,
    /// MQTT over TLS port.
    pub mqtt_port: Option<u16>,
    /// Plain-TCP MQTT port, only when set (for tests and trusted networks).
    pub mqtt_plain_port: Option<u16>,
    /// `sqlite://...` or `postgres://...`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// The Device Update instance id of REST paths (`/deviceUpdate/{instance}/...`).
    pub instance_id: Option<String>,
    /// Base URL devices download files and the root key package from; default
    /// `https://<hostname>:<https_port>`.
    pub public_url: Option<String>,
    /// The signing key store; default `<data_dir>/keys` (created on first start).
    pub keys_dir: Option<PathBuf>,
    /// Where update files are stored; default `<data_dir>/content`.
    pub content_dir: Option<PathBuf>,
    /// Keep update files in an object store instead of `content_dir`: `s3://bucket/prefix` or
    /// `az://container/prefix` (needs the `object-store` cargo feature; `content_dir` still holds
    /// uploads in progress).
    pub content_url: Option<String>,
    /// Items per page of Device Update REST lists.
    pub page_size: Option<usize>,
    /// How often deployments are reconciled with the fleet, in milliseconds.
    pub reconcile_interval_ms: Option<u64>,
    /// An HTTPS connection with no request in flight that moves no byte for this long (ms) is
    /// closed.
    pub https_idle_timeout_ms: Option<u64>,
    /// The most time (ms) from the first byte of an HTTPS request to the end of its headers.
    pub https_header_timeout_ms: Option<u64>,
    /// The most time (ms) the server waits for the next part of a request body.
    pub https_body_timeout_ms: Option<u64>,
    /// The most HTTPS connections open at once; more are closed at accept.
    pub https_max_connections: Option<usize>,
    /// Uploaded update files that no import claims are deleted after this long (ms).
    pub upload_expiry_ms: Option<u64>,
    /// The most bytes of uploads not yet claimed by an import; an upload beyond gets 507.
    pub max_pending_upload_bytes: Option<u64>,
    /// How long (ms) a node's lease on its device sessions lasts without renewal: a node that
    /// stops renewing (killed, cut off) has its devices recorded as disconnected after it.
    pub node_lease_ms: Option<u64>,
}

impl Settings {
    /// `other`'s values where it has them, this one's elsewhere.
    pub fn overridden_by(self, other: Settings) -> Settings {
        Settings {
            data_dir: other.data_dir.or(self.data_dir),
            hostname: other.hostname.or(self.hostname),
            bind: other.bind.or(self.bind),
            https_port: other.https_port.or(self.https_port),
            mqtt_port: other.mqtt_port.or(self.mqtt_port),
            mqtt_plain_port: other.mqtt_plain_port.or(self.mqtt_plain_port),
            database_url: other.database_url.or(self.database_url),
            instance_id: other.instance_id.or(self.instance_id),
            public_url: other.public_url.or(self.public_url),
            keys_dir: other.keys_dir.or(self.keys_dir),
            content_dir: other.content_dir.or(self.content_dir),
            content_url: other.content_url.or(self.content_url),
            page_size: other.page_size.or(self.page_size),
            reconcile_interval_ms: other.reconcile_interval_ms.or(self.reconcile_interval_ms),
            https_idle_timeout_ms: other.https_idle_timeout_ms.or(self.https_idle_timeout_ms),
            https_header_timeout_ms: other.https_header_timeout_ms.or(self.https_header_timeout_ms),
            https_body_timeout_ms: other.https_body_timeout_ms.or(self.https_body_timeout_ms),
            https_max_connections: other.https_max_connections.or(self.https_max_connections),
            upload_expiry_ms: other.upload_expiry_ms.or(self.upload_expiry_ms),
            max_pending_upload_bytes: other.max_pending_upload_bytes.or(self.max_pending_upload_bytes),
            node_lease_ms: other.node_lease_ms.or(self.node_lease_ms),
        }
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Reads `DUHUB_DATA_DIR`, `DUHUB_HOSTNAME`, `DUHUB_BIND`, `DUHUB_HTTPS_PORT`,
    /// `DUHUB_MQTT_PORT`, `DUHUB_MQTT_PLAIN_PORT`, `DUHUB_DATABASE_URL`, `DUHUB_INSTANCE_ID`,
    /// `DUHUB_PUBLIC_URL`, `DUHUB_KEYS_DIR`, `DUHUB_CONTENT_DIR`, `DUHUB_CONTENT_URL`,
    /// `DUHUB_PAGE_SIZE`, `DUHUB_RECONCILE_INTERVAL_MS`, `DUHUB_HTTPS_IDLE_TIMEOUT_MS`,
    /// `DUHUB_HTTPS_HEADER_TIMEOUT_MS`, `DUHUB_HTTPS_BODY_TIMEOUT_MS`, `DUHUB_HTTPS_MAX_CONNECTIONS`,
    /// `DUHUB_UPLOAD_EXPIRY_MS`, `DUHUB_MAX_PENDING_UPLOAD_BYTES` and `DUHUB_NODE_LEASE_MS` from
    /// `vars`.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Settings> {
        let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let number = |name: &str| -> Result<Option<u64>> {
            get(name).map(|v| v.parse().with_context(|| format!("{name}={v} is not a number"))).transpose()
        };
        let port = |name: &str| -> Result<Option<u16>> {
            get(name).map(|v| v.parse().with_context(|| format!("{name}={v} is not a port number"))).transpose()
        };
        Ok(Settings {
            data_dir: get("DUHUB_DATA_DIR").map(PathBuf::from),
            hostname: get("DUHUB_HOSTNAME"),
            bind: get("DUHUB_BIND")
                .map(|v| v.parse().with_context(|| format!("DUHUB_BIND={v} is not an IP address")))
                .transpose()?,
            https_port: port("DUHUB_HTTPS_PORT")?,
            mqtt_port: port("DUHUB_MQTT_PORT")?,
            mqtt_plain_port: port("DUHUB_MQTT_PLAIN_PORT")?,
            database_url: get("DUHUB_DATABASE_URL"),
            instance_id: get("DUHUB_INSTANCE_ID"),
            public_url: get("DUHUB_PUBLIC_URL"),
            keys_dir: get("DUHUB_KEYS_DIR").map(PathBuf::from),
            content_dir: get("DUHUB_CONTENT_DIR").map(PathBuf::from),
            content_url: get("DUHUB_CONTENT_URL"),
            page_size: get("DUHUB_PAGE_SIZE")
                .map(|v| v.parse().with_context(|| format!("DUHUB_PAGE_SIZE={v} is not a number")))
                .transpose()?,
            reconcile_interval_ms: number("DUHUB_RECONCILE_INTERVAL_MS")?,
            https_idle_timeout_ms: number("DUHUB_HTTPS_IDLE_TIMEOUT_MS")?,
            https_header_timeout_ms: number("DUHUB_HTTPS_HEADER_TIMEOUT_MS")?,
            https_body_timeout_ms: number("DUHUB_HTTPS_BODY_TIMEOUT_MS")?,
            https_max_connections: number("DUHUB_HTTPS_MAX_CONNECTIONS")?
                .map(|n| usize::try_from(n).context("DUHUB_HTTPS_MAX_CONNECTIONS is too large"))
                .transpose()?,
            upload_expiry_ms: number("DUHUB_UPLOAD_EXPIRY_MS")?,
            max_pending_upload_bytes: number("DUHUB_MAX_PENDING_UPLOAD_BYTES")?,
            node_lease_ms: number("DUHUB_NODE_LEASE_MS")?,
        })
    }

    /// The defaults, complete.
    pub fn defaults() -> Settings {
        Settings {
            data_dir: Some(PathBuf::from("duhub-data")),
            hostname: Some("localhost".into()),
            bind: Some(IpAddr::from([0, 0, 0, 0])),
            https_port: Some(8443),
            mqtt_port: Some(8883),
            mqtt_plain_port: None,
            database_url: None,
            instance_id: Some("default".into()),
            public_url: None,
            keys_dir: None,
            content_dir: None,
            content_url: None,
            page_size: Some(100),
            reconcile_interval_ms: Some(5000),
            https_idle_timeout_ms: Some(DEFAULT_HTTPS_IDLE_TIMEOUT_MS),
            https_header_timeout_ms: Some(DEFAULT_HTTPS_HEADER_TIMEOUT_MS),
            https_body_timeout_ms: Some(DEFAULT_HTTPS_BODY_TIMEOUT_MS),
            https_max_connections: Some(DEFAULT_HTTPS_MAX_CONNECTIONS),
            upload_expiry_ms: Some(DEFAULT_UPLOAD_EXPIRY_MS),
            max_pending_upload_bytes: Some(DEFAULT_MAX_PENDING_UPLOAD_BYTES),
            node_lease_ms: Some(DEFAULT_NODE_LEASE_MS),
        }
    }

    /// The defaults as a commented TOML file.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::defaults()).unwrap_or_default();
        format!(
            "# duhub server settings. Environment variables DUHUB_<NAME> and command-line flags\n\
             # override these. database_url defaults to SQLite in data_dir; set it to\n\
             # postgres://user@host/db to share state between several nodes.\n\
             # mqtt_plain_port = 1883   # plain-TCP MQTT, only for trusted networks\n\
             # database_url = \"postgres://postgres@127.0.0.1:5432/duhub\"\n\
             # public_url = \"https://updates.example.com\"   # what devices download from\n\
             # keys_dir = \"duhub-data/keys\"   # signing keys (`duhub keys init --dir`)\n\
             # content_url = \"s3://bucket/prefix\"   # update files in S3 or az://container/prefix\n{body}"
        )
    }
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Host name.
    pub hostname: String,
    /// Listen address.
    pub bind: IpAddr,
    /// HTTPS port (0: any free port).
    pub https_port: u16,
    /// MQTT/TLS port (0: any free port).
    pub mqtt_port: u16,
    /// Plain MQTT port, if enabled.
    pub mqtt_plain_port: Option<u16>,
    /// Database URL.
    pub database_url: String,
    /// Device Update instance id.
    pub instance_id: String,
    /// Public base URL override for downloads.
    pub public_url: Option<String>,
    /// Signing key store directory.
    pub keys_dir: PathBuf,
    /// Content store directory (only staging when `content_url` is set).
    pub content_dir: PathBuf,
    /// Object store for update files (`s3://...`, `az://...`), if not the local directory.
    pub content_url: Option<String>,
    /// Items per REST page (at least 1).
    pub page_size: usize,
    /// Reconcile interval.
    pub reconcile_interval: std::time::Duration,
    /// Timeouts and the connection cap of HTTPS.
    pub https: crate::https::HttpsLimits,
    /// How long an unclaimed upload is kept.
    pub upload_expiry: std::time::Duration,
    /// The most bytes of unclaimed uploads.
    pub max_pending_upload_bytes: u64,
    /// How long a node's lease on its sessions lasts without renewal.
    pub node_lease: std::time::Duration,
}

impl Config {
    /// Fills in defaults.
    pub fn resolve(settings: Settings) -> Config {
        let s = Settings::defaults().overridden_by(settings);
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("duhub-data"));
        let database_url =
            s.database_url.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("duhub.db").display()));
        Config {
            hostname: s.hostname.unwrap_or_else(|| "localhost".into()),
            bind: s.bind.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            https_port: s.https_port.unwrap_or(8443),
            mqtt_port: s.mqtt_port.unwrap_or(8883),
            mqtt_plain_port: s.mqtt_plain_port,
            database_url,
            instance_id: s.instance_id.unwrap_or_else(|| "default".into()),
            public_url: s.public_url.map(|url| url.trim_end_matches('/').to_owned()),
            keys_dir: s.keys_dir.unwrap_or_else(|| data_dir.join("keys")),
            content_dir: s.content_dir.unwrap_or_else(|| data_dir.join("content")),
            content_url: s.content_url,
            page_size: s.page_size.unwrap_or(100).max(1),
            reconcile_interval: std::time::Duration::from_millis(s.reconcile_interval_ms.unwrap_or(5000).max(10)),
            https: crate::https::HttpsLimits {
                idle_timeout: ms(s.https_idle_timeout_ms, DEFAULT_HTTPS_IDLE_TIMEOUT_MS),
                header_timeout: ms(s.https_header_timeout_ms, DEFAULT_HTTPS_HEADER_TIMEOUT_MS),
                body_timeout: ms(s.https_body_timeout_ms, DEFAULT_HTTPS_BODY_TIMEOUT_MS),
                max_connections: s.https_max_connections.unwrap_or(DEFAULT_HTTPS_MAX_CONNECTIONS).max(1),
            },
            upload_expiry: ms(s.upload_expiry_ms, DEFAULT_UPLOAD_EXPIRY_MS),
            max_pending_upload_bytes: s.max_pending_upload_bytes.unwrap_or(DEFAULT_MAX_PENDING_UPLOAD_BYTES),
            node_lease: ms(s.node_lease_ms, DEFAULT_NODE_LEASE_MS),
            data_dir,
        }
    }
}

/// `value` (or `default`) milliseconds, at least 10.
fn ms(value: Option<u64>, default: u64) -> std::time::Duration {
    std::time::Duration::from_millis(value.unwrap_or(default).max(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let file: Settings = toml::from_str("https_port = 9443\nhostname = \"hub.example\"").unwrap();
        let env = Settings::from_env(&HashMap::from([("DUHUB_HTTPS_PORT".to_owned(), "10443".to_owned())])).unwrap();
        let flags = Settings { mqtt_port: Some(1), ..Settings::default() };
        let config = Config::resolve(file.overridden_by(env).overridden_by(flags));
        assert_eq!(config.https_port, 10443);
        assert_eq!(config.hostname, "hub.example");
        assert_eq!(config.mqtt_port, 1);
        assert_eq!(config.database_url, "sqlite://duhub-data/duhub.db");
        assert_eq!(config.content_url, None);
    }

    #[test]
    fn content_url_from_each_layer() {
        let file: Settings = toml::from_str("content_url = \"s3://file/x\"").unwrap();
        assert_eq!(Config::resolve(file.clone()).content_url.as_deref(), Some("s3://file/x"));
        let env = Settings::from_env(&HashMap::from([("DUHUB_CONTENT_URL".to_owned(), "az://env/y".to_owned())]));
        let config = Config::resolve(file.overridden_by(env.unwrap()));
        assert_eq!(config.content_url.as_deref(), Some("az://env/y"));
        assert_eq!(config.content_dir, PathBuf::from("duhub-data/content"));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Settings::from_env(&HashMap::from([("DUHUB_MQTT_PORT".into(), "x".into())])).is_err());
        assert!(toml::from_str::<Settings>("unknown = 1").is_err());
        let defaults: Settings = toml::from_str(&Settings::default_toml()).unwrap();
        assert_eq!(defaults, Settings::defaults());
        assert!(Settings::from_env(&HashMap::from([("DUHUB_HTTPS_IDLE_TIMEOUT_MS".into(), "1s".into())])).is_err());
    }

    #[test]
    fn hardening_limits_have_defaults_and_layers() {
        let text = Settings::default_toml();
        for name in [
            "https_idle_timeout_ms",
            "https_header_timeout_ms",
            "https_body_timeout_ms",
            "https_max_connections",
            "upload_expiry_ms",
            "max_pending_upload_bytes",
            "node_lease_ms",
        ] {
            assert!(text.contains(name), "print-default-config names {name}");
        }
        let config = Config::resolve(Settings::default());
        assert_eq!(config.https.max_connections, 2048);
        assert_eq!(config.upload_expiry, std::time::Duration::from_secs(86_400));
        assert_eq!(config.max_pending_upload_bytes, 10 << 30);
        let env = Settings::from_env(&HashMap::from([("DUHUB_HTTPS_MAX_CONNECTIONS".into(), "5".into())])).unwrap();
        assert_eq!(Config::resolve(env).https.max_connections, 5);
    }
}
