//! What one agent runs with: its own TOML file (`duhub device agent-config` writes one), or the
//! official agent's `du-config.json` plus what that format cannot say (the CA to trust and the
//! root keys), given on the command line.
//!
//! ```toml
//! connection_string = "HostName=hub.example;DeviceId=toaster-1;SharedAccessKey=..."
//! data_dir = "/var/lib/duhub-agent"
//! manufacturer = "contoso"
//! model = "toaster"
//! ca_pem = """-----BEGIN CERTIFICATE-----..."""       # or ca_file = "ca.pem"
//! root_keys = """[{"kid": "...", ...}]"""              # or root_keys_file, or use_production_roots
//! root_key_package_url = "https://hub.example:8443/duhub/rootkeypackage.json"
//! [handlers]
//! "contoso/firmware:1" = "/usr/lib/duhub/handlers/firmware"
//! ```
//!
//! Relative paths in a settings file are relative to the file's directory; relative paths on
//! the command line to the working directory. [`Settings::load`] makes them all absolute once,
//! at start, so nothing later (a handler running in its own work folder, a restart from another
//! directory) depends on the working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConnectionSource, OfficialConfig, Protocol};

/// How the agent reaches the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over TLS (port 8883 unless the connection string's host names a port for HTTPS).
    #[default]
    Mqtt,
    /// MQTT over WebSocket on the HTTPS port.
    Websocket,
}

/// The agent's settings. `Debug` shows the connection string without its key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `HostName=...;DeviceId=...;SharedAccessKey=...`.
    pub connection_string: String,
    /// Where the journal, downloads and records live.
    pub data_dir: PathBuf,
    /// `deviceProperties.manufacturer`.
    pub manufacturer: String,
    /// `deviceProperties.model`.
    pub model: String,
    /// More `deviceProperties`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_device_properties: BTreeMap<String, String>,
    /// The properties forming the device class.
    #[serde(default = "default_compat_property_names")]
    pub compat_property_names: String,
    /// MQTT over TLS or over WebSocket.
    #[serde(default)]
    pub transport: Transport,
    /// MQTT port (default 8883; 443 for WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_port: Option<u16>,
    /// HTTPS port for WebSocket connections (default 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// CA certificates (PEM) to trust for the hub and downloads, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// CA certificates (PEM) to trust, from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Trusted root keys (a `rootkeys.json` list), inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_keys: Option<String>,
    /// Trusted root keys, from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_keys_file: Option<PathBuf>,
    /// Trust Microsoft's production root keys (for updates signed by the Azure service).
    #[serde(default)]
    pub use_production_roots: bool,
    /// The root key package to start with (it is refreshed from `rootKeyPackageUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key_package_url: Option<String>,
    /// Minutes a download may take.
    #[serde(default = "default_download_timeout")]
    pub download_timeout_minutes: u64,
    /// Custom step handlers: handler id -> executable (see HANDLERS.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handlers: BTreeMap<String, PathBuf>,
    /// Results for `microsoft/simulator:1` (`du-simulator-data.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator_data_file: Option<PathBuf>,
    /// The `apt-get` that `microsoft/apt:1` runs (default: `apt-get` on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt_command: Option<PathBuf>,
    /// Options for every `microsoft/swupdate:2` script, as the official
    /// `swupdate-handler-config.json`: a JSON object of option -> value (strings), e.g.
    /// `{"--public-key-file": "/etc/swupdate/public.pem"}`. With `du-config.json`, the
    /// `swupdate-handler-config.json` beside it is used when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swupdate_config_file: Option<PathBuf>,
    /// Command that reboots the device when a handler asks for it. If it cannot be run or exits
    /// with a failure status, the deployment fails with
    /// [`REBOOT_FAILED`](crate::runtime::REBOOT_FAILED).
    #[serde(default = "default_reboot_command")]
    pub reboot_command: Vec<String>,
}

fn default_compat_property_names() -> String {
    crate::config::DEFAULT_COMPAT_PROPERTY_NAMES.to_owned()
}

fn default_download_timeout() -> u64 {
    crate::config::DEFAULT_DOWNLOAD_TIMEOUT_MINUTES
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured without `..`: a new field must be decided on here.
        let Self {
            connection_string,
            data_dir,
            manufacturer,
            model,
            additional_device_properties,
            compat_property_names,
            transport,
            mqtt_port,
            https_port,
            ca_pem,
            ca_file,
            root_keys,
            root_keys_file,
            use_production_roots,
            root_key_package_url,
            download_timeout_minutes,
            handlers,
            simulator_data_file,
            apt_command,
            swupdate_config_file,
            reboot_command,
        } = self;
        let connection = duhub_proto::connection_string::ConnectionString::parse(connection_string)
            .map_or_else(|_| "<unparsable>".to_owned(), |parsed| format!("{parsed:?}"));
        f.debug_struct("Settings")
            .field("connection_string", &format_args!("{connection}"))
            .field("data_dir", data_dir)
            .field("manufacturer", manufacturer)
            .field("model", model)
            .field("additional_device_properties", additional_device_properties)
            .field("compat_property_names", compat_property_names)
            .field("transport", transport)
            .field("mqtt_port", mqtt_port)
            .field("https_port", https_port)
            .field("ca_pem", ca_pem)
            .field("ca_file", ca_file)
            .field("root_keys", root_keys)
            .field("root_keys_file", root_keys_file)
            .field("use_production_roots", use_production_roots)
            .field("root_key_package_url", root_key_package_url)
            .field("download_timeout_minutes", download_timeout_minutes)
            .field("handlers", handlers)
            .field("simulator_data_file", simulator_data_file)
            .field("apt_command", apt_command)
            .field("swupdate_config_file", swupdate_config_file)
            .field("reboot_command", reboot_command)
            .finish()
    }
}

/// The official swupdate:2 options file, looked for beside `du-config.json`.
pub const SWUPDATE_CONFIG_FILE_NAME: &str = "swupdate-handler-config.json";

fn default_reboot_command() -> Vec<String> {
    vec!["/sbin/reboot".to_owned()]
}

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// The official configuration is invalid.
    #[error("{path}: {source}")]
    Official {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::config::ConfigError,
    },
    /// A value is unusable.
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads a settings file: `du-config.json` (the official format; `extra` supplies the CA and
    /// root keys) when it ends in `.json`, else our TOML.
    ///
    /// Every path of the result is absolute: relative paths written in the file are taken from
    /// the file's directory, relative paths of `extra` (the command line) from the working
    /// directory (see [`Settings::resolve_paths`]). So the agent finds the same files whatever
    /// directory it is started from, and handlers, which run in their own working directory,
    /// are given paths that still point where the settings meant.
    pub fn load(path: &Path, extra: &Extra) -> Result<Self, SettingsError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.to_owned(), source })?;
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|e| {
                SettingsError::Invalid(format!(
                    "cannot make {} absolute (is the working directory gone?): {e}",
                    path.display()
                ))
            })
        };
        let config_dir = absolute(path)?.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let mut settings = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            let official = crate::config::parse_official(&text)
                .map_err(|source| SettingsError::Official { path: path.to_owned(), source })?;
            let mut settings = Self::from_official(&official)?;
            let swupdate_config = path.with_file_name(SWUPDATE_CONFIG_FILE_NAME);
            if swupdate_config.is_file() {
                settings.swupdate_config_file = Some(swupdate_config);
            }
            settings
        } else {
            toml::from_str::<Settings>(&text)
                .map_err(|e| SettingsError::Toml { path: path.to_owned(), message: e.to_string() })?
        };
        settings.resolve_paths(&config_dir);
        if let Some(ca) = &extra.ca_file {
            settings.ca_file = Some(absolute(ca)?);
        }
        if let Some(keys) = &extra.root_keys_file {
            settings.root_keys_file = Some(absolute(keys)?);
        }
        settings.check()?;
        Ok(settings)
    }

    /// Makes every relative path of the settings absolute by taking it from `base` (which
    /// should be absolute: [`Settings::load`] gives the settings file's directory): `data_dir`,
    /// `ca_file`, `root_keys_file`, `simulator_data_file`, `swupdate_config_file`, and the
    /// programs (`[handlers]` executables, `apt_command`, the first word of `reboot_command`)
    /// when they are paths. A program given by a bare name (`apt-get`, `reboot`: no `/`) is
    /// left to be looked up in `PATH`, as a shell would.
    pub fn resolve_paths(&mut self, base: &Path) {
        // Destructured without `..`: a new field must be decided on here.
        let Self {
            connection_string: _,
            data_dir,
            manufacturer: _,
            model: _,
            additional_device_properties: _,
            compat_property_names: _,
            transport: _,
            mqtt_port: _,
            https_port: _,
            ca_pem: _,
            ca_file,
            root_keys: _,
            root_keys_file,
            use_production_roots: _,
            root_key_package_url: _,
            download_timeout_minutes: _,
            handlers,
            simulator_data_file,
            apt_command,
            swupdate_config_file,
            reboot_command,
        } = self;
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                let joined = base.join(&*path);
                *path = std::path::absolute(&joined).unwrap_or(joined);
            }
        };
        resolve(data_dir);
        for path in [ca_file, root_keys_file, simulator_data_file, swupdate_config_file].into_iter().flatten() {
            resolve(path);
        }
        let is_path = |program: &Path| program.components().count() > 1;
        for program in handlers.values_mut().chain(apt_command.as_mut()).filter(|program| is_path(program)) {
            resolve(program);
        }
        if let Some(program) = reboot_command.first_mut().filter(|program| is_path(Path::new(program.as_str()))) {
            let mut path = PathBuf::from(program.as_str());
            resolve(&mut path);
            *program = path.to_string_lossy().into_owned();
        }
    }

    /// Settings from the official configuration (its first agent, its data folder).
    pub fn from_official(official: &OfficialConfig) -> Result<Self, SettingsError> {
        let agent = official.main_agent();
        let connection_string = match &agent.connection {
            ConnectionSource::ConnectionString(text) => text.clone(),
            ConnectionSource::IdentityService(_) => {
                return Err(SettingsError::Invalid(format!(
                    "agent {:?} connects through the Azure IoT Identity Service (connectionType \"AIS\"), which duhub-agent \
                     does not support; give a connection string (connectionType \"string\")",
                    agent.name
                )));
            }
        };
        Ok(Self {
            connection_string,
            data_dir: PathBuf::from(&official.data_folder),
            manufacturer: agent.manufacturer.clone(),
            model: agent.model.clone(),
            additional_device_properties: agent.additional_device_properties.iter().cloned().collect(),
            compat_property_names: official.compat_property_names.clone(),
            transport: match official.protocol {
                Protocol::Mqtt => Transport::Mqtt,
                Protocol::MqttWebSocket => Transport::Websocket,
            },
            mqtt_port: None,
            https_port: None,
            ca_pem: None,
            ca_file: official.edge_gateway_cert_path.as_ref().map(PathBuf::from),
            root_keys: None,
            root_keys_file: None,
            use_production_roots: true,
            root_key_package_url: None,
            download_timeout_minutes: official.download_timeout_minutes,
            handlers: BTreeMap::new(),
            simulator_data_file: None,
            apt_command: None,
            swupdate_config_file: None,
            reboot_command: default_reboot_command(),
        })
    }

    /// The extra CA certificates to trust (PEM): `ca_pem`, else the contents of `ca_file`.
    pub fn ca_pem_bytes(&self) -> Result<Option<Vec<u8>>, SettingsError> {
        match (&self.ca_pem, &self.ca_file) {
            (Some(pem), _) => Ok(Some(pem.clone().into_bytes())),
            (None, Some(path)) => {
                std::fs::read(path).map(Some).map_err(|source| SettingsError::Read { path: path.clone(), source })
            }
            (None, None) => Ok(None),
        }
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), SettingsError> {
        let connection = duhub_proto::connection_string::ConnectionString::parse(&self.connection_string)
            .map_err(|e| SettingsError::Invalid(format!("connection_string: {e}")))?;
        if connection.device_id.is_none() || connection.shared_access_key.is_none() {
            return Err(SettingsError::Invalid(
                "connection_string: a device connection string needs DeviceId and SharedAccessKey".into(),
            ));
        }
        if self.root_keys.is_none() && self.root_keys_file.is_none() && !self.use_production_roots {
            return Err(SettingsError::Invalid(
                "no trusted root keys: set root_keys, root_keys_file (or --root-keys), or use_production_roots".into(),
            ));
        }
        let names = self.compat_property_names.split(',').filter(|n| !n.trim().is_empty()).count();
        if names == 0 || names > crate::config::MAX_COMPAT_PROPERTY_NAMES {
            return Err(SettingsError::Invalid("compat_property_names must name 1 to 5 properties".into()));
        }
        if self.reboot_command.is_empty() {
            return Err(SettingsError::Invalid("reboot_command must not be empty".into()));
        }
        Ok(())
    }

    /// The settings as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// What the command line adds to a settings file.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// `--ca FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--root-keys FILE`.
    pub root_keys_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> String {
        "connection_string = \"HostName=hub;DeviceId=d1;SharedAccessKey=a2V5\"\ndata_dir = \"/tmp/a\"\n\
         manufacturer = \"contoso\"\nmodel = \"toaster\"\nroot_keys = \"[]\"\n"
            .to_owned()
    }

    #[test]
    fn debug_does_not_show_the_device_key() {
        let settings: Settings = toml::from_str(&minimal()).unwrap();
        let shown = format!("{settings:?}");
        assert!(shown.contains("device_id: Some(\"d1\")"), "{shown}");
        assert!(shown.contains("manufacturer: \"contoso\""), "{shown}");
        assert!(!shown.contains("a2V5"), "{shown}");
    }

    #[test]
    fn toml_round_trips_with_defaults() {
        let settings: Settings = toml::from_str(&minimal()).unwrap();
        settings.check().unwrap();
        assert_eq!(settings.compat_property_names, "manufacturer,model");
        assert_eq!(settings.download_timeout_minutes, 480);
        assert_eq!(toml::from_str::<Settings>(&settings.to_toml()).unwrap(), settings);
    }

    #[test]
    fn the_official_config_runs_with_the_command_line_extras() {
        let dir = std::env::temp_dir().join(format!("duhub-agent-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("du-config.json");
        let official = r#"{"schemaVersion":"1.1","aduShellTrustedUsers":["adu"],"manufacturer":"contoso","model":"toaster",
            "dataFolder":"/tmp/adu-data","iotHubProtocol":"mqtt","agents":[{"name":"main","runas":"adu",
            "connectionSource":{"connectionType":"string","connectionData":"HostName=hub;DeviceId=d1;SharedAccessKey=a2V5"},
            "manufacturer":"Contoso","model":"Toaster","additionalDeviceProperties":{"location":"US"}}]}"#;
        std::fs::write(&path, official).unwrap();
        let extra = Extra { ca_file: Some(dir.join("ca.pem")), root_keys_file: Some(dir.join("rootkeys.json")) };
        let settings = Settings::load(&path, &extra).unwrap();
        assert_eq!(settings.connection_string, "HostName=hub;DeviceId=d1;SharedAccessKey=a2V5");
        assert_eq!((settings.manufacturer.as_str(), settings.model.as_str()), ("Contoso", "Toaster"));
        assert_eq!(settings.additional_device_properties.get("location").map(String::as_str), Some("US"));
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/adu-data"));
        assert_eq!(settings.ca_file, extra.ca_file);
        assert_eq!(settings.root_keys_file, extra.root_keys_file);
        assert_eq!(settings.swupdate_config_file, None);
        // The official swupdate:2 options file beside du-config.json is used.
        std::fs::write(dir.join(SWUPDATE_CONFIG_FILE_NAME), "{}").unwrap();
        let settings = Settings::load(&path, &extra).unwrap();
        assert_eq!(settings.swupdate_config_file, Some(dir.join(SWUPDATE_CONFIG_FILE_NAME)));
        // The Azure IoT Identity Service is not something duhub-agent can use: said so.
        std::fs::write(&path, official.replace("\"string\"", "\"AIS\"")).unwrap();
        let error = Settings::load(&path, &Extra::default()).unwrap_err().to_string();
        assert!(error.contains("Identity Service"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression test for issue 10: `agent-config` writes a relative `data_dir`, and a script
    /// handler runs in its work folder, so a relative path reached it and named nothing.
    #[test]
    fn relative_paths_in_a_file_are_taken_from_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        let path = site.join("agent.toml");
        let text = format!(
            "{}ca_file = \"tls/ca.pem\"\nroot_keys_file = \"../keys/rootkeys.json\"\n\
             simulator_data_file = \"sim.json\"\nswupdate_config_file = \"./swupdate.json\"\n\
             apt_command = \"apt-get\"\nreboot_command = [\"bin/reboot\", \"now\"]\n\
             [handlers]\n\"contoso/fw:1\" = \"handlers/fw\"\n\"contoso/on-path:1\" = \"fw-handler\"\n\
             \"contoso/absolute:1\" = \"/usr/lib/fw\"\n",
            minimal().replace("/tmp/a", "data")
        );
        std::fs::write(&path, text).unwrap();
        let settings = Settings::load(&path, &Extra::default()).unwrap();
        assert_eq!(settings.data_dir, site.join("data"));
        assert_eq!(settings.ca_file, Some(site.join("tls/ca.pem")));
        assert_eq!(settings.root_keys_file, Some(site.join("../keys/rootkeys.json")));
        assert_eq!(settings.simulator_data_file, Some(site.join("sim.json")));
        assert_eq!(settings.swupdate_config_file, Some(site.join("swupdate.json")));
        assert_eq!(settings.handlers["contoso/fw:1"], site.join("handlers/fw"));
        // Programs named without a directory are looked up in PATH, as a shell does.
        assert_eq!(settings.handlers["contoso/on-path:1"], PathBuf::from("fw-handler"));
        assert_eq!(settings.apt_command, Some(PathBuf::from("apt-get")));
        assert_eq!(settings.handlers["contoso/absolute:1"], PathBuf::from("/usr/lib/fw"));
        assert_eq!(settings.reboot_command, [site.join("bin/reboot").to_string_lossy().as_ref(), "now"]);

        // Paths of the command line are taken from the working directory, and override the file's.
        let extra = Extra { ca_file: Some("cli/ca.pem".into()), root_keys_file: Some("/etc/rootkeys.json".into()) };
        let settings = Settings::load(&path, &extra).unwrap();
        assert_eq!(settings.ca_file, Some(std::env::current_dir().unwrap().join("cli/ca.pem")));
        assert_eq!(settings.root_keys_file, Some(PathBuf::from("/etc/rootkeys.json")));

        // Absolute paths stay as they are, and resolving twice changes nothing.
        let mut again = settings.clone();
        again.resolve_paths(Path::new("/elsewhere"));
        assert_eq!(again, settings);
    }

    #[test]
    fn relative_paths_of_du_config_json_are_taken_from_its_directory() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("du-config.json");
        let official = r#"{"schemaVersion":"1.1","aduShellTrustedUsers":["adu"],"manufacturer":"contoso","model":"toaster",
            "dataFolder":"adu-data","edgegatewayCertPath":"certs/gateway.pem","agents":[{"name":"main","runas":"adu",
            "connectionSource":{"connectionType":"string","connectionData":"HostName=hub;DeviceId=d1;SharedAccessKey=a2V5"},
            "manufacturer":"Contoso","model":"Toaster"}]}"#;
        std::fs::write(&path, official).unwrap();
        let settings = Settings::load(&path, &Extra::default()).unwrap();
        assert_eq!(settings.data_dir, root.path().join("adu-data"));
        assert_eq!(settings.ca_file, Some(root.path().join("certs/gateway.pem")));
    }

    #[test]
    fn bad_settings_are_explained() {
        assert!(toml::from_str::<Settings>(&format!("{}unknown = 1\n", minimal())).is_err());
        let mut settings: Settings = toml::from_str(&minimal()).unwrap();
        settings.connection_string = "HostName=hub;SharedAccessKeyName=owner;SharedAccessKey=a2V5".into();
        assert!(settings.check().unwrap_err().to_string().contains("DeviceId"));
        let mut settings: Settings = toml::from_str(&minimal()).unwrap();
        settings.root_keys = None;
        assert!(settings.check().unwrap_err().to_string().contains("root keys"));
    }
}
