//! `idle`: open many connections, keep them open, and measure the server's resident memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rumqttc::Packet;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

use crate::IdleArgs;
use crate::common::{
    Admin, Dialer, MqttConn, Percentiles, ProcSample, Progress, device_ids, percentiles, print_json, proc_sample,
    top_errors,
};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    server: String,
    transport: &'static str,
    sources: Vec<String>,
    requested: usize,
    connected: usize,
    failed: usize,
    connect_errors: Vec<(u64, String)>,
    connect_seconds: f64,
    connections_per_second: f64,
    connect_latency_ms: Percentiles,
    hold_seconds: u64,
    still_open_after_hold: usize,
    dropped_during_hold: usize,
    drop_reasons: Vec<(u64, String)>,
    server_before: ProcSample,
    server_after_connect: ProcSample,
    server_after_hold: ProcSample,
    server_after_close: Option<ProcSample>,
    rss_delta_kib: i64,
    rss_delta_after_hold_kib: i64,
    bytes_per_connection: f64,
    kib_per_connection: f64,
    kib_per_connection_after_hold: f64,
    server_cpu_seconds_connecting: f64,
    client_after_connect: ProcSample,
}

pub(crate) async fn run(args: IdleArgs) -> Result<bool> {
    let admin = Admin::read(&args.common.admin)?;
    let dialer = Arc::new(Dialer::new(&admin, &args.common, &args.connect)?);
    let pid = args.server_pid.to_string();
    let ids = device_ids(&args.common);
    let requested = ids.len();
    let server_before = proc_sample(&pid)?;
    eprintln!(
        "idle: server pid {pid} VmRSS {} KiB before; opening {requested} connections to {} from {} source address(es)",
        server_before.rss_kib,
        dialer.server(),
        args.connect.sources.len().max(1)
    );

    let gate = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (results, mut results_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let (stop, stopped) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for (n, id) in ids.into_iter().enumerate() {
        let (dialer, gate, results, stopped) = (dialer.clone(), gate.clone(), results.clone(), stopped.clone());
        let (open, drops) = (open.clone(), drops.clone());
        tasks.spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else { return };
            let t0 = Instant::now();
            let connection = dialer.connect(n, &id).await;
            drop(permit);
            match connection {
                Err(error) => {
                    let _ = results.send(Err(error.kind()));
                }
                Ok(conn) => {
                    open.fetch_add(1, Ordering::Relaxed);
                    let _ = results.send(Ok(t0.elapsed()));
                    if let Some(reason) = hold(conn, dialer.keep_alive(), stopped).await {
                        open.fetch_sub(1, Ordering::Relaxed);
                        *drops.lock().await.entry(reason).or_default() += 1;
                    }
                }
            }
        });
    }
    drop(results);

    let mut latencies = Vec::with_capacity(requested);
    let mut errors = HashMap::<String, u64>::new();
    let mut progress = Progress::new();
    let mut received = 0;
    while received < requested {
        let Some(result) = results_rx.recv().await else { break };
        received += 1;
        match result {
            Ok(latency) => latencies.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
        progress.tick(|| {
            format!(
                "idle: {} connected, {} failed, {:.0}/s",
                latencies.len(),
                received - latencies.len(),
                latencies.len() as f64 / started.elapsed().as_secs_f64()
            )
        });
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = latencies.len();
    let failed = requested - connected;
    eprintln!("idle: {connected} connected, {failed} failed in {connect_seconds:.1} s; settling {} s", args.settle);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let server_after_connect = proc_sample(&pid)?;
    let client_after_connect = proc_sample("self")?;
    eprintln!(
        "idle: server VmRSS {} KiB with {} open; holding {} s",
        server_after_connect.rss_kib,
        open.load(Ordering::Relaxed),
        args.hold
    );
    let hold_started = Instant::now();
    while hold_started.elapsed() < Duration::from_secs(args.hold) {
        tokio::time::sleep(Duration::from_secs(1).min(Duration::from_secs(args.hold))).await;
        progress.tick(|| {
            format!(
                "idle: holding, {} open, {:.0} s left",
                open.load(Ordering::Relaxed),
                (args.hold as f64 - hold_started.elapsed().as_secs_f64()).max(0.0)
            )
        });
    }
    let server_after_hold = proc_sample(&pid)?;
    let still_open = open.load(Ordering::Relaxed);

    eprintln!("idle: closing");
    let _ = stop.send(true);
    let closing = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("a connection task panicked")?;
        }
        anyhow::Ok(())
    })
    .await;
    match closing {
        Ok(result) => result?,
        Err(_) => {
            eprintln!("idle: connections did not close within 60 s; aborting them");
            tasks.abort_all();
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server_after_close = proc_sample(&pid).ok();

    let drops = drops.lock().await;
    let delta = server_after_connect.rss_kib as i64 - server_before.rss_kib as i64;
    let delta_hold = server_after_hold.rss_kib as i64 - server_before.rss_kib as i64;
    let per = |kib: i64| if connected == 0 { 0.0 } else { kib as f64 / connected as f64 };
    let report = Report {
        server: dialer.server().to_string(),
        transport: dialer.transport(),
        sources: args.connect.sources.iter().map(ToString::to_string).collect(),
        requested,
        connected,
        failed,
        connect_errors: top_errors(&errors, 10),
        connect_seconds,
        connections_per_second: connected as f64 / connect_seconds.max(1e-9),
        connect_latency_ms: percentiles(&mut latencies),
        hold_seconds: args.hold,
        still_open_after_hold: still_open,
        dropped_during_hold: drops.values().sum::<u64>() as usize,
        drop_reasons: top_errors(&drops, 10),
        server_before,
        server_after_connect,
        server_after_hold,
        server_after_close,
        rss_delta_kib: delta,
        rss_delta_after_hold_kib: delta_hold,
        bytes_per_connection: per(delta) * 1024.0,
        kib_per_connection: per(delta),
        kib_per_connection_after_hold: per(delta_hold),
        server_cpu_seconds_connecting: server_after_connect.cpu_seconds - server_before.cpu_seconds,
        client_after_connect,
    };
    if args.common.json {
        print_json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(report.failed == 0 && report.dropped_during_hold == 0)
}

/// Keeps a connection open (answering nothing, pinging every half keep-alive) until told to
/// stop; returns why it ended if the server closed it first.
async fn hold(mut conn: MqttConn, keep_alive: u16, mut stopped: watch::Receiver<bool>) -> Option<String> {
    let period = Duration::from_secs(u64::from(keep_alive / 2).max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            packet = conn.next() => match packet {
                // Idle connections expect nothing but PINGRESP; anything else is ignored.
                Ok(_) => {}
                Err(error) => return Some(format!("{error:#}")),
            },
            _ = ping.tick() => {
                if let Err(error) = conn.send(&Packet::PingReq).await {
                    return Some(format!("PINGREQ: {error:#}"));
                }
            }
            _ = stopped.changed() => {
                conn.close().await;
                return None;
            }
        }
    }
}

fn print_human(r: &Report) {
    println!("idle {} connections to {} from {} source address(es)", r.transport, r.server, r.sources.len().max(1));
    println!(
        "  connected:        {} of {} ({} failed) in {:.1} s = {:.0} connections/s",
        r.connected, r.requested, r.failed, r.connect_seconds, r.connections_per_second
    );
    println!(
        "  connect latency:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (TCP + TLS + CONNECT/CONNACK)",
        r.connect_latency_ms.p50, r.connect_latency_ms.p99, r.connect_latency_ms.max
    );
    for (count, message) in &r.connect_errors {
        println!("    {count} × {message}");
    }
    println!(
        "  server VmRSS:     {} KiB before, {} KiB after connecting, {} KiB after holding {} s{}",
        r.server_before.rss_kib,
        r.server_after_connect.rss_kib,
        r.server_after_hold.rss_kib,
        r.hold_seconds,
        r.server_after_close.map(|s| format!(", {} KiB after closing", s.rss_kib)).unwrap_or_default()
    );
    println!(
        "  per connection:   {:.1} KiB ({:.0} bytes) after connecting, {:.1} KiB after holding",
        r.kib_per_connection, r.bytes_per_connection, r.kib_per_connection_after_hold
    );
    println!(
        "  server:           peak VmRSS {} KiB, {} threads, {} fds, {:.1} CPU s while connecting",
        r.server_after_hold.peak_rss_kib,
        r.server_after_hold.threads,
        r.server_after_hold.open_fds.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        r.server_cpu_seconds_connecting
    );
    println!(
        "  still open:       {} after the hold ({} dropped by the server)",
        r.still_open_after_hold, r.dropped_during_hold
    );
    for (count, message) in &r.drop_reasons {
        println!("    {count} × {message}");
    }
    println!(
        "  load generator:   VmRSS {} KiB, {:.1} CPU s",
        r.client_after_connect.rss_kib, r.client_after_connect.cpu_seconds
    );
}
