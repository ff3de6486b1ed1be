//! `provision`: create the devices over the service REST API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use duhub_proto::connection_string::ConnectionString;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::ProvisionArgs;
use crate::common::{API_VERSION, Admin, Progress, device_ids, device_key, print_json, top_errors, unix_now};

pub(crate) struct Service {
    client: reqwest::Client,
    base: String,
    service: ConnectionString,
}

impl Service {
    pub(crate) fn new(admin: &Admin, concurrency: usize) -> Result<Self> {
        let certificate = reqwest::Certificate::from_pem(&admin.ca_pem()?).context("parsing the CA certificate")?;
        let client = reqwest::Client::builder()
            .tls_certs_only([certificate])
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTPS client")?;
        let service = ConnectionString::parse(&admin.service_connection_string)
            .context("admin.json has an invalid serviceConnectionString")?;
        service.key_bytes().context("admin.json has an invalid service key")?;
        Ok(Self { client, base: admin.https_url.clone(), service })
    }

    fn authorization(&self) -> String {
        // Invariant: the key was checked in `new`.
        self.service.sas_token(unix_now() + 3600).unwrap_or_default()
    }

    /// A device's twin (`GET /twins/{id}`).
    pub(crate) async fn twin(&self, id: &str) -> Result<Value> {
        let url = format!("{}/twins/{}?api-version={API_VERSION}", self.base, duhub_proto::sas::percent_encode(id));
        let response = self.client.get(url).header("Authorization", self.authorization()).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("GET twin {id}: {status}");
        }
        Ok(response.json().await?)
    }

    fn url(&self, id: &str) -> String {
        format!("{}/devices/{}?api-version={API_VERSION}", self.base, duhub_proto::sas::percent_encode(id))
    }

    /// Creates `id` with `key`; on 409 checks that the existing device has that key.
    async fn create(&self, id: &str, key: &str) -> Result<Outcome, String> {
        let body = json!({
            "deviceId": id,
            "status": "enabled",
            "authentication": {"symmetricKey": {"primaryKey": key, "secondaryKey": key}, "type": "sas"},
            "capabilities": {"iotEdge": false},
        });
        let response = self
            .client
            .put(self.url(id))
            .header("Authorization", self.authorization())
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("PUT: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Created);
        }
        if status != reqwest::StatusCode::CONFLICT {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("PUT: {status}: {}", text.chars().take(200).collect::<String>()));
        }
        let response = self
            .client
            .get(self.url(id))
            .header("Authorization", self.authorization())
            .send()
            .await
            .map_err(|e| format!("GET: {e}"))?;
        let status = response.status();
        let device: Value = response.json().await.map_err(|e| format!("GET: {status}: {e}"))?;
        match device.pointer("/authentication/symmetricKey/primaryKey").and_then(Value::as_str) {
            Some(existing) if existing == key => Ok(Outcome::Existed),
            _ => Err("exists with another key (other --key-seed?)".into()),
        }
    }
}

enum Outcome {
    Created,
    Existed,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    requested: usize,
    created: usize,
    already_existed: usize,
    failed: usize,
    seconds: f64,
    devices_per_second: f64,
    errors: Vec<(u64, String)>,
}

pub(crate) async fn run(args: ProvisionArgs) -> Result<bool> {
    let admin = Admin::read(&args.common.admin)?;
    let concurrency = args.concurrency.max(1);
    let service = Arc::new(Service::new(&admin, concurrency)?);
    let ids = Arc::new(device_ids(&args.common));
    let seed = Arc::new(args.common.key_seed.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let existed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (service, ids, seed, next) = (service.clone(), ids.clone(), seed.clone(), next.clone());
        let (created, existed, errors) = (created.clone(), existed.clone(), errors.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return };
                match service.create(id, &device_key(&seed, id)).await {
                    Ok(Outcome::Created) => created.fetch_add(1, Ordering::Relaxed),
                    Ok(Outcome::Existed) => existed.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        *errors.lock().await.entry(error).or_default() += 1;
                        0
                    }
                };
            }
        });
    }
    let mut progress = Progress::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    while !workers.is_empty() {
        tokio::select! {
            joined = workers.join_next() => {
                if let Some(Err(error)) = joined {
                    return Err(error).context("a provisioning worker panicked");
                }
            }
            _ = ticker.tick() => progress.tick(|| format!(
                "provision: {} created, {} existed of {}",
                created.load(Ordering::Relaxed), existed.load(Ordering::Relaxed), ids.len()
            )),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.lock().await;
    let failed: u64 = errors.values().sum();
    let report = Report {
        requested: ids.len(),
        created: created.load(Ordering::Relaxed),
        already_existed: existed.load(Ordering::Relaxed),
        failed: failed as usize,
        seconds,
        devices_per_second: ids.len() as f64 / seconds.max(1e-9),
        errors: top_errors(&errors, 10),
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        println!(
            "provisioned {} devices ({}…): {} created, {} already existed, {} failed in {:.1} s ({:.0} devices/s)",
            report.requested,
            ids.first().map(String::as_str).unwrap_or(""),
            report.created,
            report.already_existed,
            report.failed,
            report.seconds,
            report.devices_per_second
        );
        for (count, message) in &report.errors {
            println!("  {count} × {message}");
        }
    }
    Ok(failed == 0)
}
