//! Helpers of the suite: polling with a deadline, keys, JSON builders.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// Polls `check` (every 20 ms) until it returns `Some`, at most `timeout`; panics naming `what`
/// with the last value seen.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh random key, base64 of 32 bytes (what the server generates).
pub(crate) fn random_key() -> String {
    duhub_server::ids::generate_key()
}

/// A patch with `n` objects nested below its root: `{"k": {"k": ... {"k": 1}}}` with `n` + 1
/// pairs of braces (the twin rules count the root's members as depth 1).
pub(crate) fn nested(n: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..=n {
        value = json!({ "k": value });
    }
    value
}

/// The `connectionState` the REST API shows for a device.
pub(crate) async fn connection_state(service: &duhub_testkit::ServiceClient, device_id: &str) -> String {
    let device = service.device(device_id).await.unwrap();
    device["connectionState"].as_str().unwrap_or_default().to_owned()
}

/// A short wait for something that must NOT happen. There is no event to await for an absence,
/// so this is the one bounded wait of the suite; tests first await a later event that went
/// through the same path, so the thing would already have happened if it were going to.
pub(crate) const ABSENCE: Duration = Duration::from_millis(500);
