//! `duhub serve` on a data directory whose filesystem fills up: writes are refused with 503
//! (devices and the API), the cause is logged once, and writes work again by themselves once
//! space is freed. The filesystem is a small tmpfs mounted for the test (needs root, as CI runs;
//! skipped with a message otherwise).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use duhub_testkit::{ServeProcess, TestDevice};
use serde_json::{Value, json};

use crate::support::temp_dir;

/// A tmpfs mounted at a directory for the life of the value.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "24m") at `dir`; `None` (with the reason) if refused.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Self { dir: dir.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes `path` until the filesystem refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

/// A reported patch that makes the database grow (a fresh value in a new member each time).
fn growing_patch(round: usize) -> Value {
    json!({ format!("blob{}", round % 6): "x".repeat(3000 + round) })
}

/// Sends growing reported patches until one is answered with `wanted` (at most `rounds`).
async fn patch_until(device: &mut TestDevice, wanted: u16, start: usize, rounds: usize) -> Option<usize> {
    for round in start..start + rounds {
        let (status, _) = device.patch_reported(&growing_patch(round)).await.unwrap();
        if status == wanted {
            return Some(round);
        }
    }
    None
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_logs_the_cause_once_and_recovers_when_space_is_freed() {
    let root = temp_dir();
    // The data directory is the mount point; the test's log file sits beside it, off the tmpfs.
    let data_dir = root.path().join("data");
    let _tmpfs = match Tmpfs::mount(&data_dir, "24m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs for the full-disk test (needs root): {why}");
            return;
        }
    };
    let node = ServeProcess::start(Path::new(env!("CARGO_BIN_EXE_duhub")), &data_dir, None).await.unwrap();
    let service = node.service().unwrap();
    let (key, _) = service.create_device("dev1").await.unwrap();
    let mut device = node.connect_device("dev1", &key).await;
    assert_eq!(device.patch_reported(&json!({"before": 1})).await.unwrap().0, 204);

    // The disk fills up: device writes get 503, not 500, and not a hang.
    let filler = data_dir.join("filler");
    assert!(fill(&filler) > 0);
    let failed_at = patch_until(&mut device, 503, 0, 400)
        .await
        .unwrap_or_else(|| panic!("no 503 with a full disk\nlog:\n{}", node.log()));
    // More writes while it is full: still 503 (devices and the API), and still one log line.
    for round in failed_at + 1..failed_at + 4 {
        assert_eq!(device.patch_reported(&growing_patch(round)).await.unwrap().0, 503, "{}", node.log());
    }
    let response = service.patch_desired("dev1", &json!({"big": "y".repeat(4000)}), None).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "{}", node.log());
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("ServiceUnavailable"), "{body}");
    let log = node.log();
    assert_eq!(count(&log, "database writes fail"), 1, "the cause is logged once per episode:\n{log}");
    assert!(count(&log, "database or disk is full") >= 1, "the real cause is logged:\n{log}");
    assert_eq!(count(&log, "transaction depth"), 0, "{log}");

    // Space comes back: writes work again without a restart, and nothing written before is lost.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = device.patch_reported(&json!({"after": 1})).await.unwrap();
        if status == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not recover (last status {status})\nlog:\n{}", node.log());
    }
    let twin = service.twin("dev1").await.unwrap();
    assert_eq!(twin["properties"]["reported"]["before"], 1);
    assert_eq!(twin["properties"]["reported"]["after"], 1);
    assert_eq!(service.update_desired("dev1", &json!({"fw": "2"})).await.unwrap()["properties"]["desired"]["fw"], "2");
    let log = node.log();
    assert_eq!(count(&log, "database writes work again"), 1, "{log}");
    assert_eq!(count(&log, "database writes fail"), 1, "{log}");
}
