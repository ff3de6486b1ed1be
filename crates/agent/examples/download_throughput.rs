//! Times the agent's download + verification of one file:
//! `cargo run --release -p duhub-agent --example download_throughput -- URL SIZE SHA256_HEX [CA_PEM_FILE]`
//! prints JSON `{"bytes", "seconds", "mib_per_s"}`. Compare with `curl -o f URL` and `sha256sum f`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use duhub_agent::download::{Downloader, ExpectedFile};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() >= 4, "usage: download_throughput URL SIZE SHA256_HEX [CA_PEM_FILE]");
    let size: u64 = args[2].parse().unwrap();
    let mut sha256 = [0u8; 32];
    for (i, byte) in sha256.iter_mut().enumerate() {
        let digits = args[3].get(2 * i..2 * i + 2).expect("SHA256_HEX: 64 hex digits");
        *byte = u8::from_str_radix(digits, 16).unwrap();
    }
    let ca = args.get(4).map(|path| std::fs::read(path).unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let downloader = Downloader::new(ca.as_deref(), Duration::from_secs(600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("file");
    let started = Instant::now();
    downloader
        .download(&args[1], &dest, &ExpectedFile { size, sha256 }, &AtomicBool::new(false), &mut |_, _| {})
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{size},\"seconds\":{seconds:.3},\"mib_per_s\":{:.1}}}",
        size as f64 / seconds / (1024.0 * 1024.0)
    );
}
