//! The official agent's configuration file, `du-config.json`, read with the rules of agent 1.1.0
//! (`ADUC_ConfigInfo_Init`): required members are checked, every problem is reported with the
//! JSON pointer it is at, and defaults are applied as the official agent applies them.
//!
//! Only `agents[0]` is used (as the official agent does for its startup message); the others are
//! checked and kept.

use serde_json::{Map, Value};

/// Download timeout when the file gives none, or zero, or an invalid one (minutes).
pub const DEFAULT_DOWNLOAD_TIMEOUT_MINUTES: u64 = 480;
/// `compatPropertyNames` when the file gives none.
pub const DEFAULT_COMPAT_PROPERTY_NAMES: &str = "manufacturer,model";
/// Most compatibility property names the agent reports.
pub const MAX_COMPAT_PROPERTY_NAMES: usize = 5;

/// How an agent reaches its hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionSource {
    /// A connection string in the file (`connectionType` `"string"`).
    ConnectionString(String),
    /// Azure IoT Identity Service (`"AIS"`), with its principal name; duhub cannot use it.
    IdentityService(String),
}

/// The MQTT transport (`iotHubProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT over TLS (`"mqtt"` or absent).
    #[default]
    Mqtt,
    /// MQTT over WebSocket on 443 (`"mqtt/ws"`).
    MqttWebSocket,
}

/// One entry of `agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEntry {
    /// `name`.
    pub name: String,
    /// `runas`: the user the official agent runs as.
    pub run_as: String,
    /// `connectionSource`.
    pub connection: ConnectionSource,
    /// `manufacturer` reported in `deviceProperties`.
    pub manufacturer: String,
    /// `model` reported in `deviceProperties`.
    pub model: String,
    /// `additionalDeviceProperties`: more `deviceProperties` (string values), in file order.
    pub additional_device_properties: Vec<(String, String)>,
}

/// A valid `du-config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct OfficialConfig {
    /// `schemaVersion`.
    pub schema_version: String,
    /// `aduShellTrustedUsers`.
    pub adu_shell_trusted_users: Vec<String>,
    /// Top-level `manufacturer` (the `deviceInformation` component).
    pub manufacturer: String,
    /// Top-level `model`.
    pub model: String,
    /// `compatPropertyNames` (default `manufacturer,model`).
    pub compat_property_names: String,
    /// `iotHubProtocol`.
    pub protocol: Protocol,
    /// `downloadTimeoutInMinutes` with the official defaulting.
    pub download_timeout_minutes: u64,
    /// `agents`, at least one.
    pub agents: Vec<AgentEntry>,
    /// `aduShellFolder` (default `/usr/bin`).
    pub adu_shell_folder: String,
    /// `dataFolder` (default `/var/lib/adu`).
    pub data_folder: String,
    /// `downloadsFolder` (default `<dataFolder>/downloads`).
    pub downloads_folder: String,
    /// `extensionsFolder` (default `<dataFolder>/extensions`).
    pub extensions_folder: String,
    /// `edgegatewayCertPath`, if any.
    pub edge_gateway_cert_path: Option<String>,
}

impl OfficialConfig {
    /// The agent whose identity the device uses (`agents[0]`).
    pub fn main_agent(&self) -> &AgentEntry {
        // Invariant: parsing refuses an empty `agents`.
        &self.agents[0]
    }
}

/// One thing wrong with a `du-config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// JSON pointer of the member (`""` for the document).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Why a `du-config.json` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON.
    #[error("du-config.json is not valid JSON (line {line}, column {column})")]
    Syntax {
        /// Line.
        line: usize,
        /// Column.
        column: usize,
    },
    /// JSON that breaks the rules; every problem is listed.
    #[error("du-config.json is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
}

/// Reads `du-config.json` text.
pub fn parse_official(text: &str) -> Result<OfficialConfig, ConfigError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax { line: e.line(), column: e.column() })?;
    let mut problems = Vec::new();
    let Some(root) = value.as_object() else {
        return Err(ConfigError::Invalid(vec![problem("", "must be a JSON object")]));
    };
    let schema_version = required_string(root, "", "schemaVersion", &mut problems);
    let adu_shell_trusted_users = match root.get("aduShellTrustedUsers") {
        Some(Value::Array(users)) => users
            .iter()
            .enumerate()
            .filter_map(|(i, user)| match user.as_str() {
                Some(user) => Some(user.to_owned()),
                None => {
                    problems.push(problem(&format!("/aduShellTrustedUsers/{i}"), "must be a string"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(problem("/aduShellTrustedUsers", "must be an array of user names"));
            Vec::new()
        }
        None => {
            problems.push(problem("/aduShellTrustedUsers", "is required"));
            Vec::new()
        }
    };
    let manufacturer = required_string(root, "", "manufacturer", &mut problems);
    let model = required_string(root, "", "model", &mut problems);
    let compat_property_names = match root.get("compatPropertyNames") {
        None | Some(Value::Null) => DEFAULT_COMPAT_PROPERTY_NAMES.to_owned(),
        Some(Value::String(names)) => {
            let count = names.split(',').filter(|n| !n.trim().is_empty()).count();
            if count == 0 || count > MAX_COMPAT_PROPERTY_NAMES {
                problems.push(problem(
                    "/compatPropertyNames",
                    &format!("must name 1 to {MAX_COMPAT_PROPERTY_NAMES} properties, comma-separated"),
                ));
            }
            names.clone()
        }
        Some(_) => {
            problems.push(problem("/compatPropertyNames", "must be a string such as \"manufacturer,model\""));
            String::new()
        }
    };
    let protocol = match root.get("iotHubProtocol").and_then(Value::as_str) {
        None | Some("mqtt") => Protocol::Mqtt,
        Some("mqtt/ws") => Protocol::MqttWebSocket,
        Some(other) => {
            problems.push(problem("/iotHubProtocol", &format!("{other:?} is neither \"mqtt\" nor \"mqtt/ws\"")));
            Protocol::Mqtt
        }
    };
    // The official agent reads the number as an unsigned integer; anything else (negative, a
    // string, 0) means the default.
    let download_timeout_minutes = root
        .get("downloadTimeoutInMinutes")
        .and_then(Value::as_u64)
        .filter(|minutes| *minutes > 0)
        .unwrap_or(DEFAULT_DOWNLOAD_TIMEOUT_MINUTES);
    let agents = match root.get("agents") {
        Some(Value::Array(agents)) if !agents.is_empty() => agents
            .iter()
            .enumerate()
            .filter_map(|(i, agent)| parse_agent(agent, &format!("/agents/{i}"), &mut problems))
            .collect(),
        Some(Value::Array(_)) => {
            problems.push(problem("/agents", "must list at least one agent"));
            Vec::new()
        }
        Some(_) => {
            problems.push(problem("/agents", "must be an array of agents"));
            Vec::new()
        }
        None => {
            problems.push(problem("/agents", "is required"));
            Vec::new()
        }
    };
    let folder = |name: &str, default: String, problems: &mut Vec<ConfigProblem>| match root.get(name) {
        None | Some(Value::Null) => default,
        Some(Value::String(path)) if !path.is_empty() => path.clone(),
        Some(_) => {
            problems.push(problem(&format!("/{name}"), "must be a non-empty path"));
            default
        }
    };
    let adu_shell_folder = folder("aduShellFolder", "/usr/bin".into(), &mut problems);
    let data_folder = folder("dataFolder", "/var/lib/adu".into(), &mut problems);
    let downloads_folder = folder("downloadsFolder", format!("{data_folder}/downloads"), &mut problems);
    let extensions_folder = folder("extensionsFolder", format!("{data_folder}/extensions"), &mut problems);
    let edge_gateway_cert_path = root.get("edgegatewayCertPath").and_then(Value::as_str).map(str::to_owned);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(OfficialConfig {
        schema_version,
        adu_shell_trusted_users,
        manufacturer,
        model,
        compat_property_names,
        protocol,
        download_timeout_minutes,
        agents,
        adu_shell_folder,
        data_folder,
        downloads_folder,
        extensions_folder,
        edge_gateway_cert_path,
    })
}

fn parse_agent(value: &Value, at: &str, problems: &mut Vec<ConfigProblem>) -> Option<AgentEntry> {
    let Some(agent) = value.as_object() else {
        problems.push(problem(at, "must be an object"));
        return None;
    };
    let before = problems.len();
    let name = required_string(agent, at, "name", problems);
    let run_as = required_string(agent, at, "runas", problems);
    let manufacturer = required_string(agent, at, "manufacturer", problems);
    let model = required_string(agent, at, "model", problems);
    let source_at = format!("{at}/connectionSource");
    let connection = match agent.get("connectionSource").and_then(Value::as_object) {
        Some(source) => {
            let kind = required_string(source, &source_at, "connectionType", problems);
            let data = required_string(source, &source_at, "connectionData", problems);
            match kind.as_str() {
                "string" => Some(ConnectionSource::ConnectionString(data)),
                "AIS" => Some(ConnectionSource::IdentityService(data)),
                "" => None,
                other => {
                    problems.push(problem(
                        &format!("{source_at}/connectionType"),
                        &format!("{other:?} is neither \"string\" nor \"AIS\""),
                    ));
                    None
                }
            }
        }
        None => {
            problems.push(problem(&source_at, "is required: {\"connectionType\", \"connectionData\"}"));
            None
        }
    };
    let mut additional_device_properties = Vec::new();
    match agent.get("additionalDeviceProperties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(properties)) => {
            for (name, value) in properties {
                match value.as_str() {
                    Some(value) => additional_device_properties.push((name.clone(), value.to_owned())),
                    None => problems.push(problem(
                        &format!("{at}/additionalDeviceProperties/{}", escape(name)),
                        "must be a string",
                    )),
                }
            }
        }
        Some(_) => problems.push(problem(&format!("{at}/additionalDeviceProperties"), "must be an object")),
    }
    if problems.len() > before {
        return None;
    }
    Some(AgentEntry { name, run_as, connection: connection?, manufacturer, model, additional_device_properties })
}

fn required_string(object: &Map<String, Value>, at: &str, name: &str, problems: &mut Vec<ConfigProblem>) -> String {
    match object.get(name) {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::String(_)) => {
            problems.push(problem(&format!("{at}/{name}"), "must not be empty"));
            String::new()
        }
        Some(_) => {
            problems.push(problem(&format!("{at}/{name}"), "must be a string"));
            String::new()
        }
        None => {
            problems.push(problem(&format!("{at}/{name}"), "is required"));
            String::new()
        }
    }
}

fn problem(pointer: &str, message: &str) -> ConfigProblem {
    ConfigProblem { pointer: pointer.to_owned(), message: message.to_owned() }
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
