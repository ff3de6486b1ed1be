//! [`ServeProcess`]: `duhub serve --json` as a child process, for tests that need several nodes
//! or must kill a server the hard way.
//!
//! The child listens on 127.0.0.1 with ephemeral ports; it prints one JSON object with the
//! bound addresses on stdout when it is ready, which is what [`ServeProcess::start`] waits for.
//! Its stderr (the log) goes to `<data_dir>.log`, appended across restarts.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, anyhow};
use duhub_server::server::Admin;
use serde_json::Value;

use crate::device::{DeviceOptions, Endpoint, TestDevice};
use crate::service::ServiceClient;

/// How long a node may take to print its addresses: a first start makes two RSA-3072 keys,
/// seconds each in a debug build, and other tests run beside it on the same cores.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A running `duhub serve`. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// What it printed when it was ready.
    pub info: Value,
    /// Its `admin.json`.
    pub admin: Admin,
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// Where MQTT/TLS listens.
    pub mqtt: SocketAddr,
    /// Where HTTPS listens.
    pub https: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    log_path: PathBuf,
}

impl ServeProcess {
    /// Starts `binary serve` on `data_dir` (SQLite in it unless `database_url` is given) and
    /// waits until it prints its addresses.
    pub async fn start(binary: &Path, data_dir: &Path, database_url: Option<&str>) -> Result<Self> {
        Self::start_with_args(binary, data_dir, database_url, &[]).await
    }

    /// [`ServeProcess::start`] with more `duhub serve` flags (e.g. `--public-url URL`, or
    /// `--https-port N` and `--mqtt-port N` instead of ephemeral ports).
    pub async fn start_with_args(
        binary: &Path,
        data_dir: &Path,
        database_url: Option<&str>,
        extra_args: &[&str],
    ) -> Result<Self> {
        crate::install_crypto_provider();
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--hostname", crate::HOSTNAME, "--bind", "127.0.0.1"])
            .arg("--json");
        // Ephemeral ports unless the caller names them (a restart on the same addresses).
        for flag in ["--https-port", "--mqtt-port"] {
            if !extra_args.contains(&flag) {
                command.args([flag, "0"]);
            }
        }
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        command.args(extra_args);
        // The child's environment only: no settings leak in from the caller's.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DUHUB_") {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "info,duhub_server=debug");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;

        // A thread reads the first JSON object, hands it over, then drains stdout.
        let (ready, printed) = tokio::sync::oneshot::channel::<Result<Value, String>>();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            let mut text = String::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if ready.is_none() {
                    continue;
                }
                text.push_str(&line);
                text.push('\n');
                if let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(&text)
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Ok(value));
                }
            }
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(text));
            }
        });
        let info = match tokio::time::timeout(START_TIMEOUT, printed).await {
            Ok(Ok(Ok(info))) => info,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                let why = match outcome {
                    Ok(Ok(Err(stdout))) => format!("it exited or closed stdout; stdout:\n{stdout}"),
                    _ => "it printed no JSON in time".to_owned(),
                };
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(anyhow!("duhub serve did not start: {why}\nlog:\n{log}"));
            }
        };
        let address = |name: &str| -> Result<SocketAddr> {
            info.get(name)
                .and_then(Value::as_str)
                .with_context(|| format!("no {name} in {info}"))?
                .parse()
                .with_context(|| format!("{name} in {info}"))
        };
        let (mqtt, https) = (address("mqtt")?, address("https")?);
        let admin_path = info.get("admin").and_then(Value::as_str).with_context(|| format!("no admin in {info}"))?;
        let admin =
            duhub_server::server::read_admin(Path::new(admin_path)).with_context(|| format!("reading {admin_path}"))?;
        let ca_pem = std::fs::read(&admin.ca_certificate)
            .with_context(|| format!("reading {}", admin.ca_certificate.display()))?;
        Ok(Self { child, info, admin, ca_pem, mqtt, https, data_dir: data_dir.to_owned(), log_path })
    }

    /// Where devices connect.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            dial_host: crate::HOSTNAME.to_owned(),
            mqtt_port: self.mqtt.port(),
            hostname: crate::HOSTNAME.to_owned(),
            ca_pem: self.ca_pem.clone(),
        }
    }

    /// A service REST client for this node.
    pub fn service(&self) -> Result<ServiceClient> {
        ServiceClient::new(&self.admin.https_url, &self.admin.service_connection_string, &self.ca_pem)
    }

    /// Connection options for `device_id` with `key_b64` on this node.
    pub fn device_options(&self, device_id: &str, key_b64: &str) -> DeviceOptions {
        DeviceOptions::new(&self.endpoint(), device_id, key_b64)
    }

    /// Connects `device_id` to this node.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn connect_device(&self, device_id: &str, key_b64: &str) -> TestDevice {
        self.device_options(device_id, key_b64)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting device {device_id}: {e}\nlog:\n{}", self.log()))
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
