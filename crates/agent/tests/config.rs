//! `du-config.json`: every sample of the official agent's tests gets the verdict the official
//! agent gives it (`shared/spec/vectors/INDEX.md`, copied with the samples into
//! `tests/fixtures/config`).
#![allow(clippy::unwrap_used)]

use duhub_agent::config::{ConfigError, ConnectionSource, DEFAULT_DOWNLOAD_TIMEOUT_MINUTES, Protocol, parse_official};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const VALID: &[&str] = &[
    "du-config_validConfigContentStr.json",
    "du-config_validConfigContentNoCompatPropertyNames.json",
    "du-config_validConfigContentMqttIotHubProtocol.json",
    "du-config_validConfigContentMqttWebSocketsIotHubProtocol.json",
    "du-config_validConfigContentMissingIotHubProtocol.json",
    "du-config_validConfigContentAdditionalPropertyNames.json",
    "du-config_validConfigContentDownloadTimeout.json",
    "du-config_validConfigWithOverrideFolder.json",
    // INDEX.md: accepted, the negative timeout falls back to the default.
    "du-config_invalidConfigContentDownloadTimeout.json",
    "scripts__docker__templates__du-config.template.json",
    "src__extensions__step_handlers__script_handler__tests__testdata__script_handler_test_config__du-config.json",
    "src__extensions__step_handlers__swupdate_handler_v2__tests__testdata__swupdate_handler_v2_test_config__du-config.json",
];

const INVALID: &[(&str, &[&str])] = &[
    ("du-config_invalidConfigContentNoDeviceInfoStr.json", &["/manufacturer", "/model"]),
    (
        "du-config_invalidConfigContentNoDevicePropertiesStr.json",
        &["/agents/0/manufacturer", "/agents/0/model", "/agents/1/manufacturer"],
    ),
    ("du-config_invalidConfigContentStrEmpty.json", &["/schemaVersion", "/aduShellTrustedUsers", "/agents"]),
    ("du-config_invalidConfigContentStr.json", &["/manufacturer", "/agents"]),
];

#[test]
fn the_official_valid_samples_are_accepted() {
    for name in VALID {
        let config = parse_official(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!config.agents.is_empty(), "{name}");
    }
}

#[test]
fn the_official_invalid_samples_are_refused_naming_each_problem() {
    for (name, pointers) in INVALID {
        match parse_official(&fixture(name)) {
            Err(ConfigError::Invalid(problems)) => {
                for pointer in *pointers {
                    assert!(
                        problems.iter().any(|p| p.pointer == *pointer),
                        "{name}: no problem at {pointer}: {problems:?}"
                    );
                }
            }
            other => panic!("{name}: expected invalid, got {other:?}"),
        }
    }
    assert!(matches!(parse_official("{"), Err(ConfigError::Syntax { .. })));
    assert!(matches!(parse_official("[]"), Err(ConfigError::Invalid(_))));
}

#[test]
fn values_and_defaults_are_read_as_the_official_agent_reads_them() {
    let config = parse_official(&fixture("du-config_validConfigContentStr.json")).unwrap();
    assert_eq!(config.manufacturer, "device_info_manufacturer");
    assert_eq!(config.main_agent().manufacturer, "Contoso");
    assert_eq!(config.main_agent().model, "Smart-Box");
    assert_eq!(config.main_agent().connection, ConnectionSource::IdentityService("iotHubDeviceUpdate".into()));
    assert_eq!(config.agents[1].connection, ConnectionSource::ConnectionString("HOSTNAME=...".into()));
    assert_eq!(config.compat_property_names, "manufacturer,model");
    assert_eq!(config.protocol, Protocol::Mqtt);
    assert_eq!(config.download_timeout_minutes, DEFAULT_DOWNLOAD_TIMEOUT_MINUTES);
    assert_eq!(config.data_folder, "/var/lib/adu");
    assert_eq!(config.downloads_folder, "/var/lib/adu/downloads");

    let ws = parse_official(&fixture("du-config_validConfigContentMqttWebSocketsIotHubProtocol.json")).unwrap();
    assert_eq!(ws.protocol, Protocol::MqttWebSocket);
    let extra = parse_official(&fixture("du-config_validConfigContentAdditionalPropertyNames.json")).unwrap();
    assert_eq!(
        extra.main_agent().additional_device_properties,
        vec![("location".to_owned(), "US".to_owned()), ("language".to_owned(), "English".to_owned())]
    );
    let folders = parse_official(&fixture("du-config_validConfigWithOverrideFolder.json")).unwrap();
    assert_eq!(folders.download_timeout_minutes, 1440);
    assert_eq!(folders.data_folder, "/var/lib/adu/mydata");
    assert_eq!(folders.downloads_folder, "/var/lib/adu/mydata/downloads");
    assert_eq!(folders.extensions_folder, "/var/lib/adu/myextensions");
    assert_eq!(folders.adu_shell_folder, "/usr/mybin");
    let negative = parse_official(&fixture("du-config_invalidConfigContentDownloadTimeout.json")).unwrap();
    assert_eq!(negative.download_timeout_minutes, DEFAULT_DOWNLOAD_TIMEOUT_MINUTES);
}

#[test]
fn bad_values_are_named() {
    let text = fixture("du-config_validConfigContentStr.json")
        .replace("\"manufacturer,model\"", "\"a,b,c,d,e,f\"")
        .replace("\"AIS\"", "\"x509\"");
    let Err(ConfigError::Invalid(problems)) = parse_official(&text) else { panic!("accepted") };
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert!(pointers.contains(&"/compatPropertyNames"), "{pointers:?}");
    assert!(pointers.contains(&"/agents/0/connectionSource/connectionType"), "{pointers:?}");
    assert!(problems.iter().any(|p| p.to_string().contains("\"x509\"")), "{problems:?}");
}
