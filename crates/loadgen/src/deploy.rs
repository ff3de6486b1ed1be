//! `deploy`: N connected devices report a Device Update agent, one update is imported and
//! deployed to their group; measures the time from the deployment request until every device
//! has received its desired `deviceUpdate.service` (the patch on the desired topic).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use rumqttc::{Packet, Publish, QoS, Subscribe, SubscribeFilter};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::DeployArgs;
use crate::common::{Admin, Dialer, MqttConn, Percentiles, Progress, device_ids, percentiles, print_json, top_errors};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    devices: usize,
    connected: usize,
    connect_errors: Vec<(u64, String)>,
    group: String,
    update: String,
    import_seconds: f64,
    deployment_request_ms: f64,
    received: usize,
    all_received_seconds: Option<f64>,
    arrival_ms: Percentiles,
}

pub(crate) async fn run(args: DeployArgs) -> Result<bool> {
    if args.populated {
        return run_populated(args).await;
    }
    let admin = Admin::read(&args.common.admin)?;
    let api_token = read_token(&args.common.admin)?;
    let dialer = Arc::new(Dialer::new(&admin, &args.common, &args.connect)?);
    let ids = device_ids(&args.common);
    let devices = ids.len();
    let model = format!("loadgen-{}", crate::common::unix_now());
    eprintln!("deploy: connecting {devices} devices of model {model} to {}", dialer.server());

    let gate = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<Instant>();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in ids.into_iter().enumerate() {
        let (dialer, gate, ready_tx, arrived_tx, model, mut stopped) =
            (dialer.clone(), gate.clone(), ready_tx.clone(), arrived_tx.clone(), model.clone(), stopped.clone());
        tasks.spawn(async move {
            let mut conn = {
                let Ok(_permit) = gate.acquire_owned().await else { return };
                match prepare(&dialer, n, &id, &model).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                }
            };
            let _ = ready_tx.send(Ok(()));
            tokio::select! {
                arrived = wait_for_deployment(&mut conn) => if arrived.is_ok() { let _ = arrived_tx.send(Instant::now()); },
                _ = stopped.wait_for(|s| *s) => {}
            }
            let _ = stopped.wait_for(|s| *s).await;
            conn.close().await;
        });
    }
    drop(ready_tx);
    drop(arrived_tx);
    let mut connected = 0;
    let mut errors = HashMap::<String, u64>::new();
    let mut progress = Progress::new();
    for received in 1..=devices {
        let Some(result) = ready_rx.recv().await else { break };
        match result {
            Ok(()) => connected += 1,
            Err(error) => *errors.entry(error).or_default() += 1,
        }
        progress.tick(|| format!("deploy: {connected} ready, {} failed", received - connected));
    }
    eprintln!("deploy: {connected} devices connected and reported their agent");

    let http = http_client(&admin)?;
    let base = format!("{}/deviceUpdate/{}", admin.https_url, args.instance);
    let version = format!("1.{}", crate::common::unix_now());
    let import_started = Instant::now();
    import(&http, &base, &api_token, "loadgen", &model, &version).await?;
    let import_seconds = import_started.elapsed().as_secs_f64();
    eprintln!("deploy: imported loadgen/{model}/{version} in {import_seconds:.2} s; deploying to {}", args.group);

    let (started, deployment_request_ms, _) =
        create_deployment(&http, &base, &api_token, &args.group, &model, &version).await?;
    let mut arrivals = Vec::new();
    let deadline = started + Duration::from_secs(args.timeout);
    while arrivals.len() < connected {
        match tokio::time::timeout_at(deadline.into(), arrived_rx.recv()).await {
            Ok(Some(at)) => {
                arrivals.push(u64::try_from((at - started).as_micros()).unwrap_or(u64::MAX));
                progress.tick(|| format!("deploy: {} of {connected} devices have the deployment", arrivals.len()));
            }
            Ok(None) | Err(_) => break,
        }
    }
    let received = arrivals.len();
    let all_received_seconds =
        (received == connected).then(|| arrivals.iter().max().copied().unwrap_or(0) as f64 / 1e6);
    stop.send_replace(true);
    while tasks.join_next().await.is_some() {}
    let report = Report {
        devices,
        connected,
        connect_errors: top_errors(&errors, 10),
        group: args.group.clone(),
        update: format!("loadgen/{model}/{version}"),
        import_seconds,
        deployment_request_ms,
        received,
        all_received_seconds,
        arrival_ms: percentiles(&mut arrivals),
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        println!("deployment of one update to {} connected devices (group {})", report.connected, report.group);
        println!("  deployment request answered in {:.1} ms", report.deployment_request_ms);
        match report.all_received_seconds {
            Some(seconds) => println!("  every device had its desired property after {seconds:.3} s"),
            None => {
                println!("  only {} of {} devices got it within {} s", report.received, report.connected, args.timeout)
            }
        }
        let p = &report.arrival_ms;
        println!(
            "  arrival after the request: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            p.p50, p.p90, p.p99, p.max
        );
    }
    Ok(report.received == report.connected && report.connected == devices)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PopulatedReport {
    devices: usize,
    group: String,
    update: String,
    import_seconds: f64,
    deployment_request_ms: f64,
    sampled: usize,
    all_written_seconds: Option<f64>,
}

/// `deploy --populated`: deploys to the populated (disconnected) devices and waits until the
/// desired property of every sampled device carries the deployment's workflow.
async fn run_populated(args: DeployArgs) -> Result<bool> {
    let admin = Admin::read(&args.common.admin)?;
    let api_token = read_token(&args.common.admin)?;
    let service = crate::provision::Service::new(&admin, 32)?;
    let ids = device_ids(&args.common);
    let devices = ids.len();
    let step = (devices / 100).max(1);
    let mut sample: Vec<String> = ids.iter().step_by(step).cloned().collect();
    if let Some(last) = ids.last()
        && sample.last() != Some(last)
    {
        sample.push(last.clone());
    }
    let http = http_client(&admin)?;
    let base = format!("{}/deviceUpdate/{}", admin.https_url, args.instance);
    let version = format!("1.{}", crate::common::unix_now());
    let import_started = Instant::now();
    import(&http, &base, &api_token, &args.manufacturer, &args.model, &version).await?;
    let import_seconds = import_started.elapsed().as_secs_f64();
    eprintln!(
        "deploy: imported loadgen/{}/{version} in {import_seconds:.2} s; deploying to {}",
        args.model, args.group
    );
    let (started, deployment_request_ms, response) =
        create_deployment(&http, &base, &api_token, &args.group, &args.model, &version).await?;
    let deployment: Value = response.json().await?;
    let workflows: Vec<String> = deployment
        .get("subgroups")
        .and_then(Value::as_object)
        .map(|s| s.values().filter_map(|v| v["workflowId"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut waiting = sample.clone();
    let mut progress = Progress::new();
    let mut all_written_seconds = None;
    while Instant::now() < deadline {
        let mut still = Vec::new();
        for id in &waiting {
            let twin = service.twin(id).await?;
            let written = twin
                .pointer("/properties/desired/deviceUpdate/service/workflow/id")
                .and_then(Value::as_str)
                .is_some_and(|w| workflows.is_empty() || workflows.iter().any(|x| x == w));
            let updated = twin
                .pointer("/properties/desired/deviceUpdate/service/updateManifest")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains(&version));
            if !(written && updated) {
                still.push(id.clone());
            }
        }
        waiting = still;
        progress
            .tick(|| format!("deploy: {} of {} sampled devices have it", sample.len() - waiting.len(), sample.len()));
        if waiting.is_empty() {
            all_written_seconds = Some(started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = PopulatedReport {
        devices,
        group: args.group.clone(),
        update: format!("loadgen/{}/{version}", args.model),
        import_seconds,
        deployment_request_ms,
        sampled: sample.len(),
        all_written_seconds,
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        println!("deployment of one update to {devices} populated devices (group {})", report.group);
        println!("  deployment request answered in {:.1} ms", report.deployment_request_ms);
        match report.all_written_seconds {
            Some(s) => println!("  all {} sampled devices had the desired property after {s:.3} s", report.sampled),
            None => println!(
                "  {} of {} sampled devices still lacked it after {} s",
                waiting.len(),
                report.sampled,
                args.timeout
            ),
        }
    }
    Ok(report.all_written_seconds.is_some())
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let admin: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    admin["apiToken"].as_str().map(str::to_owned).context("admin.json has no apiToken")
}

fn http_client(admin: &Admin) -> Result<reqwest::Client> {
    let certificates = reqwest::Certificate::from_pem_bundle(&admin.ca_pem()?)?;
    Ok(reqwest::Client::builder().tls_certs_only(certificates).timeout(Duration::from_secs(120)).build()?)
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Uploads a one-file update and imports it.
async fn import(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    manufacturer: &str,
    model: &str,
    version: &str,
) -> Result<()> {
    let payload = b"#!/bin/sh\necho loadgen\n".to_vec();
    let sha = |bytes: &[u8]| {
        base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
    };
    let manifest = json!({
        "updateId": {"provider": "loadgen", "name": model, "version": version},
        "compatibility": [{"manufacturer": manufacturer, "model": model}],
        "instructions": {"steps": [{"type": "inline", "handler": "microsoft/script:1", "files": ["install.sh"],
            "handlerProperties": {"scriptFileName": "install.sh", "installedCriteria": version}}]},
        "files": [{"filename": "install.sh", "sizeInBytes": payload.len(), "hashes": {"sha256": sha(&payload)}}],
        "createdDateTime": "2026-11-29T00:00:00Z", "manifestVersion": "5.0",
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let upload = |bytes: Vec<u8>| async move {
        let response = http
            .post(format!("{base}/duhub/uploads?api-version=2022-10-01"))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("upload: {}", response.status());
        }
        Ok::<Value, anyhow::Error>(response.json().await?)
    };
    let manifest_upload = upload(manifest).await?;
    let file_upload = upload(payload).await?;
    let body = json!([{"importManifest": {"url": manifest_upload["url"], "sizeInBytes": manifest_upload["sizeInBytes"], "hashes": manifest_upload["hashes"]},
        "files": [{"filename": "install.sh", "url": file_upload["url"]}]}]);
    let response = http
        .post(format!("{base}/updates:import?api-version=2022-10-01"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let location = response
        .headers()
        .get("operation-location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .with_context(|| format!("import: {} without Operation-Location", response.status()))?;
    let origin = base.split("/deviceUpdate/").next().unwrap_or(base);
    loop {
        let operation: Value = http.get(format!("{origin}{location}")).bearer_auth(token).send().await?.json().await?;
        match operation["status"].as_str() {
            Some("Succeeded") => return Ok(()),
            Some("Failed") => bail!("import failed: {}", operation["error"]),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Connects, subscribes to desired patches and twin responses, reports the agent's startup
/// message and waits for its 204.
async fn prepare(dialer: &Dialer, n: usize, id: &str, model: &str) -> Result<MqttConn, String> {
    let mut conn = dialer.connect(n, id).await.map_err(|e| e.kind())?;
    let subscribe = Subscribe::new_many([
        SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtMostOnce),
        SubscribeFilter::new("$iothub/twin/PATCH/properties/desired/#".into(), QoS::AtLeastOnce),
    ]);
    let mut subscribe = subscribe;
    subscribe.pkid = 1;
    conn.send(&Packet::Subscribe(subscribe)).await.map_err(|e| format!("SUBSCRIBE: {e:#}"))?;
    let startup = json!({"deviceUpdate": {"__t": "c", "agent": {
        "deviceProperties": {"manufacturer": "loadgen", "model": model, "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3", "aduVer": "DU;agent/1.1.0"},
        "compatPropertyNames": "manufacturer,model"}}});
    let mut publish = Publish::new(
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
        QoS::AtLeastOnce,
        startup.to_string().into_bytes(),
    );
    publish.pkid = 2;
    conn.send(&Packet::Publish(publish)).await.map_err(|e| format!("PUBLISH: {e:#}"))?;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match conn.next().await {
                Ok(Packet::Publish(p)) if p.topic.starts_with("$iothub/twin/res/204/") => return Ok(()),
                Ok(Packet::Publish(p)) if p.topic.starts_with("$iothub/twin/res/") => {
                    return Err(format!("startup report answered {}", p.topic));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for the startup report's answer: {e:#}")),
            }
        }
    })
    .await
    .map_err(|_| "no answer to the startup report within 60 s".to_owned())??;
    Ok(conn)
}

/// Waits for a desired patch carrying `deviceUpdate.service.workflow` (acknowledging QoS 1).
async fn wait_for_deployment(conn: &mut MqttConn) -> Result<()> {
    loop {
        let Packet::Publish(publish) = conn.next().await? else { continue };
        if publish.qos == QoS::AtLeastOnce {
            conn.send(&Packet::PubAck(rumqttc::PubAck::new(publish.pkid))).await?;
        }
        if !publish.topic.starts_with("$iothub/twin/PATCH/properties/desired/") {
            continue;
        }
        let body: Value = serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
        if body.pointer("/deviceUpdate/service/workflow/id").is_some() {
            return Ok(());
        }
    }
}

/// Creates deployment `loadgen-<unix time>` of `loadgen/MODEL/VERSION` to `group`, starting at
/// once; returns when the request was sent, how long it took (ms) and the response.
async fn create_deployment(
    http: &reqwest::Client,
    base: &str,
    api_token: &str,
    group: &str,
    model: &str,
    version: &str,
) -> Result<(Instant, f64, reqwest::Response)> {
    let deployment_id = format!("loadgen-{}", crate::common::unix_now());
    let body = json!({"deploymentId": deployment_id, "groupId": group, "startDateTime": "2020-01-01T00:00:00Z",
        "update": {"updateId": {"provider": "loadgen", "name": model, "version": version}}});
    let started = Instant::now();
    let url =
        format!("{base}/management/groups/{}/deployments/{deployment_id}?api-version=2022-10-01", urlencode(group));
    let response = http.put(url).bearer_auth(api_token).json(&body).send().await?;
    let deployment_request_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !response.status().is_success() {
        bail!("creating the deployment: {}: {}", response.status(), response.text().await?);
    }
    Ok((started, deployment_request_ms, response))
}
