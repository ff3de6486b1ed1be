//! Phased rollouts, a duhub extension of deployments (`docs/rollouts.openapi.yaml`): the
//! `rollout` policy `deployment create` sends, `deployment pause|resume|promote|abort`, and how
//! `deployment status` shows a rollout (waves, gates, history).
//!
//! The policy is built as the server's own [`RolloutPolicy`] and checked with its rules before
//! anything is sent, so a bad policy is a usage error naming the flag and the rule; what only
//! the server can judge (e.g. `--on-failure rollback` without a rollback policy) comes back as
//! its error. Reading the answers stays with JSON values, like the other commands: a newer
//! server's extra members do not break an older CLI.

use anyhow::{Result, anyhow};
use duhub_server::du::rollout::RolloutPolicy;
use serde_json::Value;

use super::client::DuClient;
use super::{Table, block_on, fields, text};
use crate::cli::{DeploymentArgs, RolloutArgs};
use crate::output::{Outcome, ServerError, print_json};

/// An operator's action on a rollout: `POST .../deployments/{id}:ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::commands) enum Control {
    /// Start no more devices.
    Pause,
    /// Start devices again; the failures so far are accepted by the failure gate.
    Resume,
    /// Start the next wave now (approving it when it waits for approval).
    Promote,
    /// Cancel every device not finished; the rollout ends.
    Abort,
}

impl Control {
    fn action(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Pause => "paused",
            Self::Resume => "resumed",
            Self::Promote => "promoted",
            Self::Abort => "aborted",
        }
    }
}

/// The policy the rollout flags describe, `None` without `--waves`; a policy that breaks a
/// rule is an error naming the flag and the rule.
pub(super) fn policy(args: &RolloutArgs) -> Result<Option<RolloutPolicy>> {
    if args.waves.is_empty() {
        return Ok(None);
    }
    let policy = RolloutPolicy {
        waves: args.waves.clone(),
        bake_seconds: args.bake.unwrap_or(0),
        success_percent: args.success_percent.unwrap_or(100.0),
        max_failure_percent: args.max_failure_percent.unwrap_or(100.0),
        min_executed: args.min_executed.unwrap_or(0),
        device_timeout_seconds: args.device_timeout,
        on_failure: args.on_failure.unwrap_or_default(),
        rate: args.rate,
        window: args.window,
        approve_waves: args.approve_waves,
        seed: args.seed,
    };
    policy.validate().map_err(|error| {
        let flag = flag_of(&error.pointer);
        anyhow!("{flag}: {} (rollout{})", error.message, error.pointer)
    })?;
    Ok(Some(policy))
}

/// The flag that sets the policy member at `pointer`.
fn flag_of(pointer: &str) -> &'static str {
    let member = pointer.trim_start_matches('/').split('/').next().unwrap_or_default();
    match member {
        "waves" => "--waves",
        "bakeSeconds" => "--bake",
        "successPercent" => "--success-percent",
        "maxFailurePercent" => "--max-failure-percent",
        "minExecuted" => "--min-executed",
        "deviceTimeoutSeconds" => "--device-timeout",
        "onFailure" => "--on-failure",
        "rate" => "--rate",
        "window" => "--window",
        "approveWaves" => "--approve-waves",
        "seed" => "--seed",
        _ => "the rollout policy",
    }
}

/// `/management/groups/{group}/deployments/{deployment}/rollout`.
fn rollout_path(group: &str, deployment: &str) -> String {
    format!("{}/rollout", super::deployments::deployment_path(group, deployment))
}

/// The rollout of a deployment (`GET .../rollout`), `None` when it has none. The deployment
/// must exist: a "not found" answer then means it has no rollout (or the server predates
/// rollouts).
pub(super) async fn get(client: &DuClient, group: &str, deployment: &str) -> Result<Option<Value>> {
    match client.get(&rollout_path(group, deployment)).await {
        Ok(rollout) => Ok(Some(rollout)),
        Err(error)
            if error
                .chain()
                .filter_map(|cause| cause.downcast_ref::<ServerError>())
                .any(|e| e.error.get("code").and_then(Value::as_str) == Some("NotFound")) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// `duhub deployment pause|resume|promote|abort`.
pub(in crate::commands) fn control(args: &DeploymentArgs, control: Control) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let path = format!("{}:{}", super::deployments::deployment_path(&args.group, &args.deployment), control.action());
    let rollout = block_on(async {
        let reply = client.post(&path, None).await?;
        reply.body.ok_or_else(|| anyhow!("the server answered POST {path} without a body"))
    })?;
    if args.du.json {
        print_json(&rollout)?;
    } else {
        println!("{} the rollout of deployment {} of group {}", control.done(), args.deployment, args.group);
        print!("{}", describe(&rollout));
    }
    Ok(Outcome::Success)
}

/// A number member (0 when missing).
fn count(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// A percentage member, when present.
fn percent(value: &Value, pointer: &str) -> Option<f64> {
    value.pointer(pointer).and_then(Value::as_f64)
}

/// `seconds` as `1d2h`, `30m`, `1m30s`, `0s`.
pub(super) fn duration_text(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// A policy in words, one clause per setting.
fn policy_text(policy: &Value, window_open: Option<bool>) -> Vec<(&'static str, String)> {
    let waves: Vec<String> = policy
        .get("waves")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_owned))
        .collect();
    let mut rows = vec![("waves", waves.join(", "))];
    rows.push(("bake", duration_text(count(policy, "/bakeSeconds"))));
    if let Some(timeout) = policy.get("deviceTimeoutSeconds").and_then(Value::as_u64) {
        rows.push(("device timeout", duration_text(timeout)));
    }
    if let Some(rate) = policy.get("rate").filter(|r| r.is_object()) {
        let doubling = if rate.get("doublePerWave").and_then(Value::as_bool) == Some(true) {
            ", doubling with every wave"
        } else {
            ""
        };
        rows.push(("rate", format!("{} devices/min{doubling}", count(rate, "/devicesPerMinute"))));
    }
    if let Some(window) = policy.get("window").and_then(Value::as_str) {
        let now = match window_open {
            Some(true) => " (open now)",
            Some(false) => " (closed now)",
            None => "",
        };
        rows.push(("window", format!("{window} UTC{now}")));
    }
    if policy.get("approveWaves").and_then(Value::as_bool) == Some(true) {
        rows.push(("approval", "every wave after the first waits for `deployment promote`".into()));
    }
    rows.push(("seed", text(policy, "/seed")));
    rows
}

/// The gates in words: the current wave's success gate and the failure gate over the started
/// waves (counting what came after the last acceptance by an operator).
fn gates_text(rollout: &Value) -> Vec<(&'static str, String)> {
    let policy = rollout.get("policy").cloned().unwrap_or(Value::Null);
    let Some(current) = rollout.get("currentWave").and_then(Value::as_u64) else {
        let rule = format!(
            "{}% of a wave succeed before the next starts; more than {}% of the finished fail: {}",
            percent(&policy, "/successPercent").unwrap_or(100.0),
            percent(&policy, "/maxFailurePercent").unwrap_or(100.0),
            text(&policy, "/onFailure")
        );
        return vec![("gates", rule)];
    };
    let waves = policy.get("waves").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    let wave = rollout
        .get("waves")
        .and_then(Value::as_array)
        .and_then(|waves| waves.iter().find(|w| w.get("index").and_then(Value::as_u64) == Some(current)))
        .cloned()
        .unwrap_or(Value::Null);
    let mut rows = Vec::new();
    if current + 1 >= waves {
        rows.push((
            "success gate",
            format!("wave {} is the last: it completes when every device finished", current + 1),
        ));
    } else {
        let devices = count(&wave, "/counts/devices");
        let success = percent(&policy, "/successPercent").unwrap_or(100.0);
        let needed = ((success / 100.0) * devices as f64).ceil() as u64;
        let succeeded = count(&wave, "/counts/succeeded");
        let verdict = if succeeded >= needed { "passed" } else { "not yet" };
        rows.push((
            "success gate",
            format!(
                "wave {}: {succeeded} succeeded of {needed} needed ({success}% of {devices} devices): {verdict}",
                current + 1
            ),
        ));
    }
    let executed = (count(rollout, "/totals/succeeded") + count(rollout, "/totals/failed"))
        .saturating_sub(count(rollout, "/acceptedFailures/executed"));
    let failed = count(rollout, "/totals/failed").saturating_sub(count(rollout, "/acceptedFailures/failed"));
    let max = percent(&policy, "/maxFailurePercent").unwrap_or(100.0);
    let min = count(&policy, "/minExecuted");
    let share = if executed == 0 { 0.0 } else { failed as f64 * 100.0 / executed as f64 };
    let verdict = if executed == 0 || executed < min {
        format!("not evaluated until {} finished", min.max(1))
    } else if failed as f64 * 100.0 > max * executed as f64 {
        "tripped".to_owned()
    } else {
        "holding".to_owned()
    };
    let accepted = match count(rollout, "/acceptedFailures/executed") {
        0 => String::new(),
        n => format!(
            " (after {} failed of {n} finished accepted by an operator)",
            count(rollout, "/acceptedFailures/failed")
        ),
    };
    rows.push((
        "failure gate",
        format!(
            "{failed} failed of {executed} finished ({share:.1}%){accepted}; more than {max}% once {min} finished \
             trips it ({}): {verdict}",
            text(&policy, "/onFailure")
        ),
    ));
    rows
}

/// Who caused an event: `schedule`, `successGate`, ..., or `operator TOKEN`.
fn cause_text(cause: Option<&Value>) -> String {
    let Some(cause) = cause else { return String::new() };
    let kind = text(cause, "/kind");
    match cause.get("token").and_then(Value::as_str) {
        Some(token) => format!("{kind} {token}"),
        None => kind,
    }
}

/// `Running, wave 2 of 4`.
pub(super) fn headline(rollout: &Value) -> String {
    let waves = rollout.get("waves").and_then(Value::as_array).map_or(0, Vec::len);
    let status = text(rollout, "/status");
    match rollout.get("currentWave").and_then(Value::as_u64) {
        Some(current) => format!("{status}, wave {} of {waves}", current + 1),
        None => format!("{status}, {waves} waves"),
    }
}

/// Whether a rollout stopped moving by itself: completed, aborted, paused or waiting for
/// approval (`deployment status --wait` stops there).
pub(super) fn settled(rollout: &Value) -> bool {
    matches!(text(rollout, "/status").as_str(), "Completed" | "Aborted" | "Paused" | "AwaitingApproval")
}

/// A rollout as `deployment status` and the control commands show it.
pub(super) fn describe(rollout: &Value) -> String {
    let status = text(rollout, "/status");
    let title = format!("rollout: {}", headline(rollout));
    let window_open = rollout.get("windowOpen").and_then(Value::as_bool);
    let mut rows = policy_text(rollout.get("policy").unwrap_or(&Value::Null), window_open);
    rows.extend(gates_text(rollout));
    rows.push((
        "devices",
        format!(
            "{} in started waves, {} not yet in a wave",
            count(rollout, "/totals/devices"),
            count(rollout, "/unassignedDevices")
        ),
    ));
    let next = match status.as_str() {
        "AwaitingApproval" => "the next wave waits for `duhub deployment promote`",
        "Paused" => "no device is started until `duhub deployment resume` (or promote)",
        _ => "",
    };
    rows.push(("next", next.to_owned()));
    let mut out = fields(&title, &rows);
    let mut table = Table::new(&[
        "WAVE",
        "SIZE",
        "STARTED AT",
        "DEVICES",
        "STARTED",
        "SUCCEEDED",
        "BAKING",
        "FAILED",
        "IN PROGRESS",
        "CANCELED",
    ]);
    for wave in rollout.get("waves").and_then(Value::as_array).into_iter().flatten() {
        let index = count(wave, "/index");
        let started_at = text(wave, "/startedDateTime");
        let counts = |name: &str| {
            if started_at.is_empty() { String::new() } else { count(wave, &format!("/counts/{name}")).to_string() }
        };
        table.row(vec![
            (index + 1).to_string(),
            text(wave, "/size"),
            if started_at.is_empty() { "not started".to_owned() } else { started_at.clone() },
            counts("devices"),
            counts("started"),
            counts("succeeded"),
            counts("baking"),
            counts("failed"),
            counts("inProgress"),
            counts("canceled"),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    let mut history = Table::new(&["TIME", "EVENT", "WAVE", "CAUSE", "STARTED", "SUCCEEDED", "FAILED", "DETAIL"]);
    for event in rollout.get("history").and_then(Value::as_array).into_iter().flatten() {
        history.row(vec![
            text(event, "/time"),
            text(event, "/event"),
            event.get("wave").and_then(Value::as_u64).map(|w| (w + 1).to_string()).unwrap_or_default(),
            cause_text(event.get("cause")),
            count(event, "/counts/started").to_string(),
            count(event, "/counts/succeeded").to_string(),
            count(event, "/counts/failed").to_string(),
            text(event, "/detail"),
        ]);
    }
    out.push('\n');
    if history.rows.is_empty() {
        out.push_str("no rollout events yet\n");
    } else {
        out.push_str(&history.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use duhub_server::du::rollout::Rate;
    use serde_json::json;

    use super::*;
    use crate::cli::{parse_duration, parse_rate};

    #[test]
    fn durations_take_units_and_combinations() {
        for (text, seconds) in [("30s", 30), ("30m", 1800), ("2h", 7200), ("1d", 86_400), ("1h30m", 5400), ("0s", 0)] {
            assert_eq!(parse_duration(text), Ok(seconds), "{text}");
            assert_eq!(parse_duration(&duration_text(seconds)), Ok(seconds), "{text}");
        }
        for bad in ["", "30", "m", "1h30", "-1s", "1.5h", "2w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_text(5400), "1h30m");
        assert_eq!(duration_text(90_061), "1d1h1m1s");
    }

    #[test]
    fn rates_are_per_minute_and_may_double() {
        assert_eq!(parse_rate("100/min"), Ok(Rate { devices_per_minute: 100, double_per_wave: false }));
        assert_eq!(parse_rate("5/min,double"), Ok(Rate { devices_per_minute: 5, double_per_wave: true }));
        for bad in ["100", "100/s", "x/min", "100/min,triple", "/min"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_gates_are_described_with_their_numbers() {
        let rollout = json!({
            "status": "Running",
            "currentWave": 1,
            "policy": {"waves": ["10%", "50%", "100%"], "successPercent": 90.0, "maxFailurePercent": 10.0,
                       "minExecuted": 5, "onFailure": "pause", "bakeSeconds": 60, "seed": 7},
            "waves": [
                {"index": 0, "size": "10%", "startedDateTime": "2026-12-07T01:00:00Z",
                 "counts": {"devices": 2, "started": 2, "succeeded": 2, "baking": 0, "failed": 0, "canceled": 0, "inProgress": 0}},
                {"index": 1, "size": "50%", "startedDateTime": "2026-12-07T01:10:00Z",
                 "counts": {"devices": 8, "started": 8, "succeeded": 5, "baking": 1, "failed": 1, "canceled": 0, "inProgress": 1}},
                {"index": 2, "size": "100%", "startedDateTime": null, "counts": {}},
            ],
            "totals": {"devices": 10, "started": 10, "succeeded": 7, "baking": 1, "failed": 1, "canceled": 0, "inProgress": 1},
            "unassignedDevices": 10,
            "acceptedFailures": {"executed": 0, "failed": 0},
            "history": [
                {"time": "2026-12-07T01:00:00Z", "event": "waveStarted", "wave": 0, "cause": {"kind": "schedule"},
                 "counts": {"started": 0, "succeeded": 0, "failed": 0}, "detail": "the first wave started"},
                {"time": "2026-12-07T01:10:00Z", "event": "promoted", "wave": 1,
                 "cause": {"kind": "operator", "token": "ci"}, "counts": {"started": 2, "succeeded": 2, "failed": 0},
                 "detail": "wave 2 started by an operator"},
            ],
        });
        let out = describe(&rollout);
        assert!(out.starts_with("rollout: Running, wave 2 of 3\n"), "{out}");
        assert!(out.contains("wave 2: 5 succeeded of 8 needed (90% of 8 devices): not yet"), "{out}");
        assert!(
            out.contains("1 failed of 8 finished (12.5%); more than 10% once 5 finished trips it (pause): tripped"),
            "{out}"
        );
        assert!(out.lines().any(|l| l.trim_start().starts_with("bake:") && l.ends_with(" 1m")), "{out}");
        assert!(out.contains("3     100%  not started"), "{out}");
        assert!(out.contains("promoted     2     operator ci"), "{out}");
    }

    #[test]
    fn policy_errors_name_the_flag() {
        assert_eq!(flag_of("/waves/1"), "--waves");
        assert_eq!(flag_of("/rate/devicesPerMinute"), "--rate");
        assert_eq!(flag_of("/deviceTimeoutSeconds"), "--device-timeout");
        assert_eq!(flag_of(""), "the rollout policy");
    }
}
