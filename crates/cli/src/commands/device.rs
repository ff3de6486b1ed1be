//! `duhub device ...`: device identities through the server's REST API, authorised with the
//! service policy from `admin.json`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use duhub_proto::connection_string::ConnectionString;
use duhub_server::server::Admin;
use serde_json::{Value, json};

use crate::cli::{AdminArgs, AgentConfigArgs, DeviceCreateArgs, DeviceIdArgs};
use crate::output::{Outcome, print_json};

/// The IoT Hub service API version the SDKs send.
const API_VERSION: &str = "2021-04-12";

/// Twins per page of the query API.
const QUERY_PAGE: &str = "1000";

/// A REST client for the server named by `admin.json`.
pub(super) struct Service {
    admin: Admin,
    client: reqwest::Client,
    service: ConnectionString,
}

impl Service {
    pub(super) fn connect(args: &AdminArgs) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = args.admin.clone().unwrap_or_else(|| PathBuf::from("duhub-data/admin.json"));
        let admin = duhub_server::server::read_admin(&path).with_context(|| {
            format!("cannot read {} (start the server with `duhub serve`, or give --admin FILE)", path.display())
        })?;
        let ca = std::fs::read(&admin.ca_certificate)
            .with_context(|| format!("reading the CA certificate {}", admin.ca_certificate.display()))?;
        let certificate = reqwest::Certificate::from_pem(&ca).context("parsing the CA certificate")?;
        let client = reqwest::Client::builder()
            .tls_certs_only([certificate])
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTPS client")?;
        let service = ConnectionString::parse(&admin.service_connection_string)
            .context("admin.json has an invalid serviceConnectionString")?;
        service.key_bytes().context("admin.json has an invalid service key")?;
        Ok(Self { admin, client, service })
    }

    /// What `admin.json` says.
    pub(super) fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The device `id` (created when missing, with generated keys): its connection string.
    pub(super) async fn ensure_device(&self, id: &str) -> Result<String> {
        let path = format!("/devices/{}", duhub_proto::sas::percent_encode(id));
        let body = json!({
            "deviceId": id,
            "status": "enabled",
            "authentication": {"symmetricKey": {}, "type": "sas"},
            "capabilities": {"iotEdge": false},
        });
        let device = match self.call(reqwest::Method::PUT, &path, Some(body)).await {
            Ok(device) => device,
            Err(error) if error.to_string().contains(reqwest::StatusCode::CONFLICT.as_str()) => {
                self.call(reqwest::Method::GET, &path, None).await?
            }
            Err(error) => return Err(error),
        };
        self.device_connection_string(&device.unwrap_or_default())
            .with_context(|| format!("device {id} has no symmetric key"))
    }

    fn authorization(&self) -> String {
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 3600;
        // Invariant: the key was checked in `connect`.
        self.service.sas_token(expiry).unwrap_or_default()
    }

    pub(super) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Option<Value>> {
        Ok(self.exchange(method, path, body, &[]).await?.0)
    }

    /// Runs a query of IoT Hub's query API, handing each twin it selects to `each`, page by page
    /// (so a large fleet is never held in memory as whole twins).
    pub(super) async fn query(&self, query: &str, mut each: impl FnMut(&Value)) -> Result<()> {
        let mut continuation: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-max-item-count", QUERY_PAGE.to_owned())];
            if let Some(token) = continuation.take() {
                headers.push(("x-ms-continuation", token));
            }
            let body = json!({ "query": query });
            let (page, next) = self.exchange(reqwest::Method::POST, "/devices/query", Some(body), &headers).await?;
            match page {
                Some(Value::Array(page)) => page.iter().for_each(&mut each),
                other => bail!("the query API answered {other:?}, not a list of twins"),
            }
            match next {
                Some(token) => continuation = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// One request: the answer's JSON and its `x-ms-continuation` header.
    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<(Option<Value>, Option<String>)> {
        let url = format!("{}{path}?api-version={API_VERSION}", self.admin.https_url);
        let mut request = self.client.request(method.clone(), &url).header("Authorization", self.authorization());
        if method == reqwest::Method::DELETE {
            request = request.header("If-Match", "\"*\"");
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let continuation = response.headers().get("x-ms-continuation").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("ExceptionMessage").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("{method} {path}: {status}: {message}");
        }
        let value = if text.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).context("the server's answer is not JSON")?)
        };
        Ok((value, continuation))
    }

    fn device_connection_string(&self, device: &Value) -> Option<String> {
        let id = device.get("deviceId")?.as_str()?;
        let key = device.pointer("/authentication/symmetricKey/primaryKey")?.as_str()?;
        Some(ConnectionString::device(&self.admin.mqtt_host, id, key).to_string())
    }
}

pub(super) fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(future)
}

fn print_device(service: &Service, mut device: Value, json_output: bool) -> Result<Outcome> {
    let connection_string = service.device_connection_string(&device);
    if json_output {
        device["connectionString"] = connection_string.map(Value::String).unwrap_or(Value::Null);
        print_json(&device)?;
    } else {
        let field = |p: &str| device.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        println!("device {}", field("/deviceId"));
        println!("  status:            {}", field("/status"));
        println!("  connection state:  {}", field("/connectionState"));
        println!("  model id:          {}", field("/modelId"));
        println!("  connection string: {}", connection_string.unwrap_or_default());
    }
    Ok(Outcome::Success)
}

pub(super) fn create(args: &DeviceCreateArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let mut keys = serde_json::Map::new();
    if let Some(key) = &args.primary_key {
        keys.insert("primaryKey".into(), key.clone().into());
    }
    if let Some(key) = &args.secondary_key {
        keys.insert("secondaryKey".into(), key.clone().into());
    }
    let body = json!({
        "deviceId": args.id,
        "status": if args.disabled { "disabled" } else { "enabled" },
        "authentication": {"symmetricKey": keys, "type": "sas"},
        "capabilities": {"iotEdge": false},
    });
    let path = format!("/devices/{}", duhub_proto::sas::percent_encode(&args.id));
    let device = block_on(service.call(reqwest::Method::PUT, &path, Some(body)))?.unwrap_or_default();
    print_device(&service, device, args.admin.json)
}

pub(super) fn show(args: &DeviceIdArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let path = format!("/devices/{}", duhub_proto::sas::percent_encode(&args.id));
    let device = block_on(service.call(reqwest::Method::GET, &path, None))?.unwrap_or_default();
    print_device(&service, device, args.admin.json)
}

pub(super) fn delete(args: &DeviceIdArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let path = format!("/devices/{}", duhub_proto::sas::percent_encode(&args.id));
    block_on(service.call(reqwest::Method::DELETE, &path, None))?;
    if args.admin.json {
        print_json(&json!({"deleted": args.id}))?;
    } else {
        println!("deleted device {}", args.id);
    }
    Ok(Outcome::Success)
}

pub(super) fn connection_string(args: &DeviceIdArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let path = format!("/devices/{}", duhub_proto::sas::percent_encode(&args.id));
    let device = block_on(service.call(reqwest::Method::GET, &path, None))?.unwrap_or_default();
    let connection_string = service.device_connection_string(&device).context("the device has no symmetric key")?;
    if args.admin.json {
        print_json(&json!({"deviceId": args.id, "connectionString": connection_string}))?;
    } else {
        println!("{connection_string}");
    }
    Ok(Outcome::Success)
}

pub(super) fn agent_config(args: &AgentConfigArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let path = format!("/devices/{}", duhub_proto::sas::percent_encode(&args.id));
    let device = block_on(service.call(reqwest::Method::GET, &path, None))?.unwrap_or_default();
    let connection_string = service.device_connection_string(&device).context("the device has no symmetric key")?;
    let admin = &service.admin;
    let ca_pem = std::fs::read_to_string(&admin.ca_certificate)
        .with_context(|| format!("reading the CA certificate {}", admin.ca_certificate.display()))?;
    let root_keys_path = admin.keys_dir.join("rootkeys.json");
    let root_keys = std::fs::read_to_string(&root_keys_path).with_context(|| {
        format!("reading the server's root keys {} (run this on the server's machine)", root_keys_path.display())
    })?;
    let settings = duhub_agent::settings::Settings {
        connection_string,
        data_dir: args.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("duhub-agent-{}", args.id))),
        manufacturer: args.manufacturer.clone(),
        model: args.model.clone(),
        additional_device_properties: Default::default(),
        compat_property_names: duhub_agent::config::DEFAULT_COMPAT_PROPERTY_NAMES.to_owned(),
        transport: duhub_agent::settings::Transport::Mqtt,
        mqtt_port: Some(admin.mqtt_port),
        https_port: None,
        ca_pem: Some(ca_pem),
        ca_file: None,
        root_keys: Some(root_keys),
        root_keys_file: None,
        use_production_roots: false,
        root_key_package_url: Some(format!("{}/duhub/rootkeypackage.json", admin.https_url)),
        download_timeout_minutes: duhub_agent::config::DEFAULT_DOWNLOAD_TIMEOUT_MINUTES,
        handlers: Default::default(),
        simulator_data_file: None,
        apt_command: None,
        swupdate_config_file: None,
        reboot_command: vec!["/sbin/reboot".to_owned()],
    };
    settings.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.admin.json {
        print_json(&serde_json::to_value(&settings)?)?;
    } else {
        print!(
            "# duhub-agent settings for device {} (run: duhub-agent --config FILE)\n{}",
            args.id,
            settings.to_toml()
        );
    }
    Ok(Outcome::Success)
}
