//! What the agent's process-level tests share: settings for a device of a test server.

use std::path::Path;

use duhub_agent::settings::{Settings, Transport};
use duhub_testkit::TestServer;

/// Settings of an agent for `device` (with `key`) of `server`, reporting `model`, keeping its
/// state in `data_dir`, trusting the server's CA and root keys (or `root_keys`).
pub(crate) fn agent_settings(
    server: &TestServer,
    device: &str,
    key: &str,
    model: &str,
    data_dir: &Path,
    root_keys: Option<String>,
) -> Settings {
    let server_roots = || std::fs::read_to_string(server.admin.keys_dir.join("rootkeys.json")).unwrap();
    Settings {
        connection_string: format!("HostName={};DeviceId={device};SharedAccessKey={key}", server.admin.mqtt_host),
        data_dir: data_dir.to_owned(),
        manufacturer: "contoso".into(),
        model: model.into(),
        additional_device_properties: Default::default(),
        compat_property_names: "manufacturer,model".into(),
        transport: Transport::Mqtt,
        mqtt_port: Some(server.admin.mqtt_port),
        https_port: None,
        ca_pem: Some(String::from_utf8(std::fs::read(&server.admin.ca_certificate).unwrap()).unwrap()),
        ca_file: None,
        root_keys: Some(root_keys.unwrap_or_else(server_roots)),
        root_keys_file: None,
        use_production_roots: false,
        root_key_package_url: None,
        download_timeout_minutes: 5,
        handlers: Default::default(),
        simulator_data_file: None,
        apt_command: None,
        reboot_command: vec!["/bin/true".into()],
    }
}
