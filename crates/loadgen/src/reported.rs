//! `reported`: devices sending reported-property patches back to back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rumqttc::{Packet, Publish, QoS, Subscribe, SubscribeReasonCode};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::ReportedArgs;
use crate::common::{
    Admin, Dialer, MqttConn, Percentiles, ProcSample, Progress, device_ids, percentiles, print_json, proc_sample,
    top_errors,
};

/// When patches start counting and when they stop.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

/// What one device saw.
#[derive(Debug, Default)]
struct DeviceStats {
    /// Request→204 latencies (µs) of patches answered inside the window.
    latencies: Vec<u64>,
    /// Patches answered during the warm-up.
    warmup: u64,
    /// Non-204 answers inside the window, by status.
    statuses: BTreeMap<u16, u64>,
    /// Why the device stopped early, if it did.
    ended: Option<String>,
    timed_out: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    server: String,
    transport: &'static str,
    devices: usize,
    connected: usize,
    connect_failed: usize,
    connect_errors: Vec<(u64, String)>,
    connect_seconds: f64,
    warmup_seconds: u64,
    duration_seconds: f64,
    payload_bytes: usize,
    acknowledged: u64,
    patches_per_second: f64,
    latency_ms: Percentiles,
    warmup_acknowledged: u64,
    other_statuses: BTreeMap<u16, u64>,
    timed_out_devices: usize,
    devices_ended_early: usize,
    end_reasons: Vec<(u64, String)>,
    server_at_start: Option<ProcSample>,
    server_at_end: Option<ProcSample>,
    server_cpu_cores_used: Option<f64>,
    client_cpu_cores_used: f64,
}

pub(crate) async fn run(args: ReportedArgs) -> Result<bool> {
    let admin = Admin::read(&args.common.admin)?;
    let dialer = Arc::new(Dialer::new(&admin, &args.common, &args.connect)?);
    let ids = device_ids(&args.common);
    let devices = ids.len();
    let pid = args.server_pid.map(|p| p.to_string());
    if let Some(pid) = &pid {
        proc_sample(pid)?;
    }
    eprintln!("reported: connecting {devices} devices to {}", dialer.server());

    let gate = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (start, window_rx) = watch::channel(None::<Window>);
    let timeout = Duration::from_secs(args.request_timeout.max(1));
    let payload_bytes = args.payload_bytes;
    let mut tasks = tokio::task::JoinSet::new();
    let connect_started = Instant::now();
    for (n, id) in ids.into_iter().enumerate() {
        let (dialer, gate, connected_tx, mut window_rx) =
            (dialer.clone(), gate.clone(), connected_tx.clone(), window_rx.clone());
        tasks.spawn(async move {
            let conn = {
                let Ok(_permit) = gate.acquire_owned().await else { return None };
                match connect_and_subscribe(&dialer, n, &id).await {
                    Ok(conn) => conn,
                    Err(error) => {
                        let _ = connected_tx.send(Err(error));
                        return None;
                    }
                }
            };
            let _ = connected_tx.send(Ok(()));
            let window = match window_rx.wait_for(Option::is_some).await {
                Ok(window) => (*window)?,
                Err(_) => return None,
            };
            Some(patch_loop(conn, window, timeout, payload_bytes).await)
        });
    }
    drop(connected_tx);

    let mut connected = 0;
    let mut errors = HashMap::<String, u64>::new();
    let mut progress = Progress::new();
    for received in 1..=devices {
        let Some(result) = connected_rx.recv().await else { break };
        match result {
            Ok(()) => connected += 1,
            Err(error) => *errors.entry(error).or_default() += 1,
        }
        progress.tick(|| format!("reported: {connected} connected, {} failed", received - connected));
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let measure_from = Instant::now() + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    eprintln!(
        "reported: {connected} connected in {connect_seconds:.1} s; {} s warm-up, then measuring {} s",
        args.warmup, args.duration
    );
    start.send_replace(Some(Window { measure_from, until }));

    tokio::time::sleep_until(measure_from.into()).await;
    let server_at_start = pid.as_deref().map(proc_sample).transpose()?;
    let client_at_start = proc_sample("self")?;
    let at_start = Instant::now();
    tokio::time::sleep_until(until.into()).await;
    let server_at_end = pid.as_deref().map(proc_sample).transpose()?;
    let client_at_end = proc_sample("self")?;
    let measured = at_start.elapsed().as_secs_f64();
    eprintln!("reported: measurement over; waiting for devices to finish their last patch");

    let mut latencies = Vec::new();
    let mut statuses = BTreeMap::<u16, u64>::new();
    let mut ends = HashMap::<String, u64>::new();
    let mut warmup = 0;
    let mut timed_out = 0;
    while let Some(joined) = tasks.join_next().await {
        let Some(stats) = joined.context("a device task panicked")? else { continue };
        latencies.extend_from_slice(&stats.latencies);
        warmup += stats.warmup;
        for (status, count) in stats.statuses {
            *statuses.entry(status).or_default() += count;
        }
        if let Some(reason) = stats.ended {
            *ends.entry(reason).or_default() += 1;
        }
        timed_out += usize::from(stats.timed_out);
    }
    let duration_seconds = args.duration as f64;
    let acknowledged = latencies.len() as u64;
    let cores = |a: &ProcSample, b: &ProcSample| (b.cpu_seconds - a.cpu_seconds) / measured.max(1e-9);
    let report = Report {
        server: dialer.server().to_string(),
        transport: dialer.transport(),
        devices,
        connected,
        connect_failed: devices - connected,
        connect_errors: top_errors(&errors, 10),
        connect_seconds,
        warmup_seconds: args.warmup,
        duration_seconds,
        payload_bytes: args.payload_bytes,
        acknowledged,
        patches_per_second: acknowledged as f64 / duration_seconds.max(1e-9),
        latency_ms: percentiles(&mut latencies),
        warmup_acknowledged: warmup,
        other_statuses: statuses,
        timed_out_devices: timed_out,
        devices_ended_early: ends.values().sum::<u64>() as usize,
        end_reasons: top_errors(&ends, 10),
        server_cpu_cores_used: server_at_start.as_ref().zip(server_at_end.as_ref()).map(|(a, b)| cores(a, b)),
        server_at_start,
        server_at_end,
        client_cpu_cores_used: cores(&client_at_start, &client_at_end),
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(report.connect_failed == 0 && report.other_statuses.is_empty() && report.devices_ended_early == 0)
}

/// Connects and subscribes to the twin responses.
async fn connect_and_subscribe(dialer: &Dialer, n: usize, id: &str) -> Result<MqttConn, String> {
    let mut conn = dialer.connect(n, id).await.map_err(|e| e.kind())?;
    let mut subscribe = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    subscribe.pkid = 1;
    conn.send(&Packet::Subscribe(subscribe)).await.map_err(|e| format!("SUBSCRIBE: {e:#}"))?;
    let suback = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match conn.next().await {
                Ok(Packet::SubAck(ack)) => return Ok(ack),
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for SUBACK: {e:#}")),
            }
        }
    })
    .await
    .map_err(|_| "no SUBACK within 30 s".to_owned())??;
    if suback.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
        return Err("the subscription to $iothub/twin/res/# was refused".into());
    }
    Ok(conn)
}

/// Sends patches back to back until the window closes.
async fn patch_loop(mut conn: MqttConn, window: Window, timeout: Duration, payload_bytes: usize) -> DeviceStats {
    let mut stats = DeviceStats::default();
    let mut rid: u64 = 0;
    let mut pkid: u16 = 1;
    while Instant::now() < window.until {
        rid += 1;
        pkid = pkid.checked_add(1).unwrap_or(1);
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload(rid, payload_bytes));
        publish.pkid = pkid;
        let sent = Instant::now();
        if let Err(error) = conn.send(&Packet::Publish(publish)).await {
            stats.ended = Some(format!("sending a patch: {error:#}"));
            return stats;
        }
        let status = match tokio::time::timeout(timeout, response(&mut conn, rid)).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => {
                stats.ended = Some(format!("{error:#}"));
                return stats;
            }
            Err(_) => {
                stats.ended = Some(format!("no twin response within {} s", timeout.as_secs()));
                stats.timed_out = true;
                return stats;
            }
        };
        let answered = Instant::now();
        if answered < window.measure_from {
            stats.warmup += 1;
        } else if answered <= window.until {
            if status == 204 {
                stats.latencies.push(u64::try_from((answered - sent).as_micros()).unwrap_or(u64::MAX));
            } else {
                *stats.statuses.entry(status).or_default() += 1;
            }
        }
    }
    conn.close().await;
    stats
}

/// Waits for the twin response to request `rid`; returns its status.
async fn response(conn: &mut MqttConn, rid: u64) -> Result<u16> {
    loop {
        let Packet::Publish(publish) = conn.next().await? else { continue };
        let Some((status, answered_rid)) = parse_response_topic(&publish.topic) else { continue };
        if answered_rid == rid {
            return Ok(status);
        }
    }
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]` → (status, rid).
fn parse_response_topic(topic: &str) -> Option<(u16, u64)> {
    let rest = topic.strip_prefix("$iothub/twin/res/")?;
    let (status, query) = rest.split_once("/?")?;
    let rid = query.split('&').find_map(|pair| pair.strip_prefix("$rid="))?;
    Some((status.parse().ok()?, rid.parse().ok()?))
}

/// A reported patch of about `bytes` bytes.
fn payload(seq: u64, bytes: usize) -> Vec<u8> {
    let base = format!(r#"{{"loadgen":{{"seq":{seq},"pad":""}}}}"#);
    let pad = "x".repeat(bytes.saturating_sub(base.len()));
    format!(r#"{{"loadgen":{{"seq":{seq},"pad":"{pad}"}}}}"#).into_bytes()
}

fn print_human(r: &Report) {
    println!("reported-property patches to {} over {} ({} B each)", r.server, r.transport, r.payload_bytes);
    println!(
        "  devices:          {} of {} connected in {:.1} s ({} failed)",
        r.connected, r.devices, r.connect_seconds, r.connect_failed
    );
    for (count, message) in &r.connect_errors {
        println!("    {count} × {message}");
    }
    println!(
        "  acknowledged:     {} patches (204) in {:.0} s = {:.0} patches/s (after {} s warm-up: {} more)",
        r.acknowledged, r.duration_seconds, r.patches_per_second, r.warmup_seconds, r.warmup_acknowledged
    );
    let l = &r.latency_ms;
    println!(
        "  latency (ms):     p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}, mean {:.1}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if !r.other_statuses.is_empty() {
        println!("  other statuses:   {:?}", r.other_statuses);
    }
    println!("  ended early:      {} devices ({} timed out)", r.devices_ended_early, r.timed_out_devices);
    for (count, message) in &r.end_reasons {
        println!("    {count} × {message}");
    }
    if let (Some(cores), Some(end)) = (r.server_cpu_cores_used, r.server_at_end) {
        println!("  server:           {cores:.2} cores busy, VmRSS {} KiB at the end", end.rss_kib);
    }
    println!("  load generator:   {:.2} cores busy", r.client_cpu_cores_used);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_topics() {
        assert_eq!(parse_response_topic("$iothub/twin/res/204/?$rid=7&$version=3"), Some((204, 7)));
        assert_eq!(parse_response_topic("$iothub/twin/res/200/?$rid=12"), Some((200, 12)));
        assert_eq!(parse_response_topic("$iothub/twin/PATCH/properties/desired/?$version=2"), None);
    }

    #[test]
    fn payload_size() {
        assert_eq!(payload(1, 100).len(), 100);
        assert_eq!(payload(123_456, 100).len(), 100);
        assert!(payload(1, 0).starts_with(b"{\"loadgen\""));
    }

    #[test]
    fn percentile_ranks() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let p = percentiles(&mut samples);
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.max, 100.0);
    }
}
