//! What the agent's process-level tests share: settings for a device of a test server, and the
//! agent as a child process. Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
        swupdate_config_file: None,
        reboot_command: vec!["/bin/true".into()],
    }
}

/// A `duhub-agent` child process logging (at `rust_log`) to a file, killed when dropped.
pub(crate) struct AgentProcess {
    config: PathBuf,
    log: PathBuf,
    rust_log: &'static str,
    child: Option<Child>,
}

impl AgentProcess {
    /// Starts `duhub-agent --config <config>`, appending its stderr to `log`.
    pub(crate) fn start(config: &Path, log: &Path, rust_log: &'static str) -> Self {
        let mut agent = Self { config: config.to_owned(), log: log.to_owned(), rust_log, child: None };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_duhub-agent"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", self.rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Kills the agent with SIGKILL, as a power cut would, and waits for it.
    pub(crate) fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the agent (as a reboot would) and starts it again.
    pub(crate) fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    /// Whether the agent process has exited (and with which status).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// What the agent logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A `microsoft/script:1` script (apiVersion 1.0 arguments): is-installed answers by `marker`;
/// install runs `install`; apply runs `apply` (shell) and, if it succeeds, writes the marker.
pub(crate) fn script(marker: &Path, install: &str, apply: &str) -> String {
    format!(
        r#"#!/bin/sh
action=""; result=""
while [ $# -gt 0 ]; do
  case "$1" in
    --action-*) action="${{1#--action-}}" ;;
    --result-file) result="$2"; shift ;;
  esac
  shift
done
ok() {{ printf '{{"resultCode":%s,"extendedResultCode":0,"resultDetails":""}}' "$1" > "$result"; }}
case "$action" in
  is-installed) if [ -f "{marker}" ]; then ok 900; else ok 901; fi ;;
  download) ok 500 ;;
  install)
    {install}
    ok 600 ;;
  apply)
    {apply}
    echo installed > "{marker}"; ok 700 ;;
  cancel) ok 800 ;;
  *) ok 0 ;;
esac
"#,
        marker = marker.display()
    )
}
