//! Measures how fast the content store takes in a file: streams FILE through
//! `ContentStore::put_reader` (read, SHA-256, write, fsync, rename) into a temporary store and
//! prints `{"bytes", "seconds", "mib_per_s"}` as JSON.
//!
//! `cargo run --release -p duhub-server --example hash_throughput -- FILE`

use std::time::Instant;

use anyhow::Context as _;
use duhub_server::du::content::ContentStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args_os().nth(1).context("usage: hash_throughput FILE")?;
    let dir = tempfile::tempdir().context("creating a temporary store")?;
    let store = ContentStore::open(dir.path())?;
    let file = tokio::fs::File::open(&path).await.with_context(|| format!("opening {}", path.to_string_lossy()))?;

    let started = Instant::now();
    let blob = store.put_reader(file, None, u64::MAX).await?;
    let seconds = started.elapsed().as_secs_f64();

    let mib_per_s = blob.size as f64 / (1024.0 * 1024.0) / seconds;
    let report = serde_json::json!({ "bytes": blob.size, "seconds": seconds, "mib_per_s": mib_per_s });
    println!("{report}");
    eprintln!("sha256 {}", blob.id());
    Ok(())
}
