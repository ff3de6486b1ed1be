use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::du::deploy::DeviceState;

fn policy(waves: &[&str]) -> RolloutPolicy {
    RolloutPolicy::from_json(&json!({ "waves": waves })).expect("valid policy")
}

fn running(wave: usize) -> RolloutState {
    RolloutState {
        status: RolloutStatus::Running,
        wave_started: vec!["2026-12-07T00:00:00Z".into(); wave + 1],
        ..RolloutState::default()
    }
}

fn counts(devices: u64, succeeded: u64, failed: u64) -> WaveCounts {
    WaveCounts {
        devices,
        started: devices,
        succeeded,
        failed,
        in_progress: devices - succeeded - failed,
        ..WaveCounts::default()
    }
}

#[test]
fn a_policy_reads_its_json_and_names_what_is_wrong() {
    let p = RolloutPolicy::from_json(&json!({
        "waves": ["1%", "10%", "50%", "100%"], "bakeSeconds": 1800, "successPercent": 95,
        "maxFailurePercent": 5, "minExecuted": 20, "deviceTimeoutSeconds": 7200, "onFailure": "rollback",
        "rate": {"devicesPerMinute": 100, "doublePerWave": true}, "window": "02:00-05:00", "approveWaves": true
    }))
    .expect("valid");
    assert_eq!(p.waves[0], WaveSize::Percent(1.0));
    assert_eq!(p.on_failure, OnFailure::Rollback);
    assert_eq!(p.window, Some(Window { start: 120, end: 300 }));
    assert_eq!(serde_json::to_value(&p).expect("json")["window"], "02:00-05:00");
    assert_eq!(serde_json::to_value(&p).expect("json")["waves"], json!(["1%", "10%", "50%", "100%"]));

    let err = |v: serde_json::Value| RolloutPolicy::from_json(&v).expect_err("invalid");
    assert_eq!(err(json!({"waves": ["10%", "5%"]})).pointer, "/waves/1");
    assert_eq!(err(json!({"waves": []})).pointer, "/waves");
    assert_eq!(err(json!({"waves": ["10%", 20]})).pointer, "/waves/1");
    assert_eq!(err(json!({"waves": ["100%"], "successPercent": 101})).pointer, "/successPercent");
    assert_eq!(err(json!({"waves": ["100%"], "rate": {"devicesPerMinute": 0}})).pointer, "/rate/devicesPerMinute");
    assert_eq!(err(json!({"waves": ["100%"], "deviceTimeoutSeconds": 0})).pointer, "/deviceTimeoutSeconds");
    assert!(err(json!({"waves": ["0%"]})).message.contains("above 0"));
    assert!(err(json!({"waves": ["100%"], "window": "25:00-01:00"})).message.contains("HH:MM"));
    assert!(err(json!({"waves": ["100%"], "bogus": 1})).message.contains("bogus"));
}

#[test]
fn waves_are_stratified_so_every_class_is_in_the_first_wave() {
    let p = policy(&["1%", "10%", "100%"]);
    let sizes = BTreeMap::from([("a".to_owned(), 990u64), ("b".to_owned(), 10u64), ("c".to_owned(), 0u64)]);
    let first = p.targets(0, &sizes);
    assert_eq!(first["a"], 10);
    assert_eq!(first["b"], 1, "a small class still gets a device in the first wave");
    assert_eq!(first["c"], 0);
    assert_eq!(p.targets(1, &sizes)["a"], 99);
    assert_eq!(p.targets(2, &sizes)["a"], 990);
    assert_eq!(p.targets(2, &sizes)["b"], 10);
    assert!(p.targets(3, &sizes).is_empty());

    let counts = RolloutPolicy::from_json(&json!({"waves": [10, 100]})).expect("valid");
    let t = counts.targets(0, &sizes);
    assert_eq!((t["a"], t["b"]), (10, 1));
    assert_eq!(counts.targets(1, &sizes)["a"], 99);
}

#[test]
fn the_failure_gate_trips_only_after_min_executed_and_above_the_percentage() {
    let mut p = policy(&["10%", "50%", "100%"]);
    p.max_failure_percent = 20.0;
    p.min_executed = 10;
    let state = running(0);
    // 9 finished, all failed: not yet min-executed.
    assert_eq!(decide(&p, &state, &[counts(20, 0, 9)]), Decision::Stay);
    // 10 finished, 3 failed = 30 % > 20 %.
    assert_eq!(decide(&p, &state, &[counts(20, 7, 3)]), Decision::Trip);
    // 10 finished, 2 failed = 20 %: not above.
    assert_eq!(decide(&p, &state, &[counts(20, 8, 2)]), Decision::Stay);
    // Accepted failures are not counted again after a resume.
    let accepted = RolloutState { accepted_executed: 10, accepted_failed: 3, ..running(0) };
    assert_eq!(decide(&p, &accepted, &[counts(20, 7, 3)]), Decision::Stay);
    assert_eq!(decide(&p, &accepted, &[counts(20, 15, 5)]), Decision::Stay, "2 of 10 new = 20 %");
    assert_eq!(decide(&p, &accepted, &[counts(20, 14, 6)]), Decision::Trip, "3 of 10 new");
    // Paused rollouts are not re-tripped.
    let paused = RolloutState { status: RolloutStatus::Paused, ..running(0) };
    assert_eq!(decide(&p, &paused, &[counts(20, 0, 20)]), Decision::Stay);
}

#[test]
fn the_success_gate_starts_the_next_wave_or_waits_for_approval() {
    let mut p = policy(&["10%", "50%", "100%"]);
    p.success_percent = 95.0;
    assert_eq!(decide(&p, &running(0), &[counts(20, 18, 0)]), Decision::Stay, "18 of 20 < 95 %");
    assert_eq!(decide(&p, &running(0), &[counts(20, 19, 0)]), Decision::StartWave(1));
    assert_eq!(decide(&p, &running(1), &[counts(20, 20, 0), counts(80, 76, 0)]), Decision::StartWave(2));
    p.approve_waves = true;
    assert_eq!(decide(&p, &running(0), &[counts(20, 19, 0)]), Decision::AwaitApproval);
    let waiting = RolloutState { status: RolloutStatus::AwaitingApproval, ..running(0) };
    assert_eq!(decide(&p, &waiting, &[counts(20, 20, 0)]), Decision::Stay);
    // The last wave completes when everything finished.
    let last = running(2);
    let done = [counts(20, 20, 0), counts(80, 80, 0), counts(100, 99, 1)];
    assert_eq!(decide(&p, &last, &done), Decision::Complete);
    let mut baking = done;
    baking[2].succeeded = 98;
    baking[2].baking = 1;
    assert_eq!(decide(&p, &last, &baking), Decision::Stay);
    // Not started: nothing.
    assert_eq!(decide(&p, &RolloutState::default(), &[]), Decision::Stay);
}

#[test]
fn the_rate_and_the_window_bound_the_budget_at_any_clock() {
    let mut p = policy(&["10%", "100%"]);
    let night = datetime!(2026-12-07 03:00 UTC);
    let day = datetime!(2026-12-07 12:00 UTC);
    assert_eq!(budget(&p, &running(0), day, 0), None, "no rate, no window: unlimited");
    p.rate = Some(Rate { devices_per_minute: 100, double_per_wave: true });
    assert_eq!(budget(&p, &running(0), day, 30), Some(70));
    assert_eq!(budget(&p, &running(0), day, 130), Some(0));
    assert_eq!(budget(&p, &running(1), day, 30), Some(170), "doubled in wave 2");
    p.window = Some("02:00-05:00".parse().expect("window"));
    assert_eq!(budget(&p, &running(0), day, 0), Some(0));
    assert_eq!(budget(&p, &running(0), night, 0), Some(100));
    let paused = RolloutState { status: RolloutStatus::Paused, ..running(0) };
    assert_eq!(budget(&p, &paused, night, 0), Some(0));

    let window: Window = "22:00-04:00".parse().expect("window");
    assert!(window.contains(datetime!(2026-12-07 23:30 UTC)));
    assert!(window.contains(datetime!(2026-12-07 03:59 UTC)));
    assert!(!window.contains(datetime!(2026-12-07 04:00 UTC)));
    assert_eq!(window.until_open(datetime!(2026-12-07 21:00 UTC)), Duration::from_secs(3600));
    assert_eq!(window.until_open(datetime!(2026-12-07 23:00 UTC)), Duration::ZERO);
    let day_window: Window = "02:00-05:00".parse().expect("window");
    assert_eq!(day_window.until_open(datetime!(2026-12-07 05:00 UTC)), Duration::from_secs(21 * 3600));
}

#[test]
fn ranks_are_stable_and_spread() {
    assert_eq!(rank(42, "dev-1"), rank(42, "dev-1"));
    assert_ne!(rank(42, "dev-1"), rank(43, "dev-1"));
    assert!(rank(7, "x") >= 0);
    let below_half = (0..1000).filter(|i| rank(1, &format!("d{i}")) < i64::MAX / 2).count();
    assert!((400..600).contains(&below_half), "{below_half}");
}

#[test]
fn outcomes_need_the_bake_time_connected_and_the_update_kept() {
    let mut p = policy(&["100%"]);
    p.bake_seconds = 60;
    p.device_timeout_seconds = Some(600);
    let facts = MemberFacts {
        state: DeviceState::Succeeded,
        connected: true,
        connection_ms: Some(0),
        started_ms: 0,
        installed_ms: Some(10_000),
    };
    assert_eq!(outcome(&p, &facts, 30_000), Outcome::Baking(Duration::from_secs(40)));
    assert_eq!(outcome(&p, &facts, 70_000), Outcome::Succeeded);
    // Reconnected after installing: the bake counts from the reconnection.
    let reconnected = MemberFacts { connection_ms: Some(50_000), ..facts };
    assert_eq!(outcome(&p, &reconnected, 70_000), Outcome::Baking(Duration::from_secs(40)));
    assert_eq!(outcome(&p, &MemberFacts { connected: false, ..facts }, 70_000), Outcome::OfflineAfterInstall);
    // Went back to another update during the bake.
    let reverted = MemberFacts { state: DeviceState::InProgress, ..facts };
    assert_eq!(outcome(&p, &reverted, 30_000), Outcome::Reverted);
    let running = MemberFacts { state: DeviceState::InProgress, installed_ms: None, ..facts };
    assert_eq!(outcome(&p, &running, 100_000), Outcome::InProgress(Some(Duration::from_secs(500))));
    assert_eq!(outcome(&p, &running, 600_000), Outcome::TimedOut);
    assert!(Outcome::TimedOut.is_failure() && !Outcome::Canceled.is_failure());
}
