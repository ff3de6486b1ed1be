//! Server settings: built-in defaults, then a TOML file, then `DUHUB_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

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
        }
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Reads `DUHUB_DATA_DIR`, `DUHUB_HOSTNAME`, `DUHUB_BIND`, `DUHUB_HTTPS_PORT`,
    /// `DUHUB_MQTT_PORT`, `DUHUB_MQTT_PLAIN_PORT` and `DUHUB_DATABASE_URL` from `vars`.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Settings> {
        let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
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
             # database_url = \"postgres://postgres@127.0.0.1:5432/duhub\"\n{body}"
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
            data_dir,
        }
    }
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
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Settings::from_env(&HashMap::from([("DUHUB_MQTT_PORT".into(), "x".into())])).is_err());
        assert!(toml::from_str::<Settings>("unknown = 1").is_err());
        let defaults: Settings = toml::from_str(&Settings::default_toml()).unwrap();
        assert_eq!(defaults, Settings::defaults());
    }
}
