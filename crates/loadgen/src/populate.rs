//! `populate`: provisioned devices connect, report what a Device Update agent reports at
//! startup (`deviceUpdate.agent` with its device properties, and `deviceInformation`), and
//! disconnect; never more than `--open` connections at once. So a fleet of 100,000 devices with
//! agents exists for the status and deployment benchmarks without 100,000 open sockets (this
//! machine allows 20,000 open files per process).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rumqttc::{Packet, Publish, QoS, Subscribe, SubscribeFilter};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::PopulateArgs;
use crate::common::{Admin, Dialer, Progress, device_ids, print_json, top_errors};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    devices: usize,
    populated: usize,
    errors: Vec<(u64, String)>,
    manufacturer: String,
    model: String,
    seconds: f64,
    devices_per_second: f64,
}

pub(crate) async fn run(args: PopulateArgs) -> Result<bool> {
    let admin = Admin::read(&args.common.admin)?;
    let dialer = Arc::new(Dialer::new(&admin, &args.common, &args.connect)?);
    let ids = device_ids(&args.common);
    let devices = ids.len();
    let open = args.open.clamp(1, 15_000);
    eprintln!(
        "populate: {devices} devices of {}/{} report their agent to {} ({open} connections at most)",
        args.manufacturer,
        args.model,
        dialer.server()
    );
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(open));
    let connecting = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let manufacturer: Arc<str> = args.manufacturer.clone().into();
    let model: Arc<str> = args.model.clone().into();
    let spawner = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, id) in ids.into_iter().enumerate() {
            // The permit is taken before the task exists: at most `open` tasks (and sockets).
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let (dialer, connecting, done_tx, manufacturer, model) =
                (dialer.clone(), connecting.clone(), done_tx.clone(), manufacturer.clone(), model.clone());
            tasks.spawn(async move {
                let outcome = report(&dialer, &connecting, n, &id, &manufacturer, &model).await;
                drop(permit);
                let _ = done_tx.send(outcome);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    });
    let mut populated = 0;
    let mut errors = HashMap::<String, u64>::new();
    let mut progress = Progress::new();
    for finished in 1..=devices {
        let Some(outcome) = done_rx.recv().await else { break };
        match outcome {
            Ok(()) => populated += 1,
            Err(error) => *errors.entry(error).or_default() += 1,
        }
        progress.tick(|| format!("populate: {populated} of {devices} reported, {} failed", finished - populated));
    }
    let _ = spawner.await;
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // device counts are far below 2^52
    let rate = populated as f64 / seconds.max(1e-9);
    let report = Report {
        devices,
        populated,
        errors: top_errors(&errors, 10),
        manufacturer: args.manufacturer.clone(),
        model: args.model.clone(),
        seconds,
        devices_per_second: rate,
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        println!(
            "{populated} of {devices} devices reported a Device Update agent ({}/{}) in {seconds:.1} s ({rate:.0}/s)",
            report.manufacturer, report.model
        );
        for (count, error) in &report.errors {
            println!("  {count} × {error}");
        }
    }
    Ok(populated == devices)
}

/// One device: connect, report the agent's startup properties and `deviceInformation`, wait
/// for both 204s, disconnect.
async fn report(
    dialer: &Dialer,
    connecting: &Semaphore,
    n: usize,
    id: &str,
    manufacturer: &str,
    model: &str,
) -> Result<(), String> {
    let mut conn = {
        let _permit = connecting.acquire().await.map_err(|_| "stopped".to_owned())?;
        dialer.connect(n, id).await.map_err(|e| e.kind())?
    };
    let mut subscribe = Subscribe::new_many([SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtMostOnce)]);
    subscribe.pkid = 1;
    conn.send(&Packet::Subscribe(subscribe)).await.map_err(|e| format!("SUBSCRIBE: {e:#}"))?;
    let agent = json!({"deviceUpdate": {"__t": "c", "agent": {
        "deviceProperties": {"manufacturer": manufacturer, "model": model,
            "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3", "aduVer": "DU;agent/1.1.0"},
        "compatPropertyNames": "manufacturer,model", "state": 0}}});
    let information = json!({"deviceInformation": {"__t": "c", "manufacturer": manufacturer, "model": model,
        "swVersion": "1.0", "osName": "Linux", "processorArchitecture": "x86_64", "totalStorage": 1024, "totalMemory": 512}});
    for (rid, body) in [(1u16, agent), (2u16, information)] {
        let mut publish = Publish::new(
            format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            QoS::AtLeastOnce,
            body.to_string().into_bytes(),
        );
        publish.pkid = rid + 1;
        conn.send(&Packet::Publish(publish)).await.map_err(|e| format!("PUBLISH: {e:#}"))?;
    }
    let mut answered = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while answered < 2 {
            match conn.next().await {
                Ok(Packet::Publish(p)) if p.topic.starts_with("$iothub/twin/res/204/") => answered += 1,
                Ok(Packet::Publish(p)) if p.topic.starts_with("$iothub/twin/res/") => {
                    return Err(format!("a report was answered {}", p.topic.split('/').nth(3).unwrap_or("?")));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for the reports' answers: {e:#}")),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "no answer to the reports within 60 s".to_owned())??;
    conn.close().await;
    Ok(())
}
