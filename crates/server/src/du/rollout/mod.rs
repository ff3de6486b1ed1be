//! Phased rollouts (a duhub extension of deployments): the policy an operator gives (waves, bake
//! time, gates, rate, window, approvals), the state the reconciler keeps in the deployment
//! record (current wave, status, history), and the pure rules that decide what happens next.
//!
//! Nothing here reads a clock or a store: callers pass `now` and the counts, so every rule is
//! tested with any time (`tests` below) and the reconciler (`drive`) only performs decisions.
//!
//! A device of a rollout deployment is a **member** (one row per device, with a rank drawn from
//! the recorded seed). A wave assigns members per device class up to its cumulative size
//! (stratified: every class is represented), and a member is **admitted** (its desired property
//! written) only while the rollout runs, inside the window and within the rate. Outcomes:
//! succeeded once it reported the deployed update and stayed connected for the bake time;
//! failed when it reported failure, timed out, went offline after installing, or went back to
//! another update during the bake.

mod drive;

pub use drive::{RolloutControl, RolloutView, WaveView};

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The most waves a policy may have.
pub const MAX_WAVES: usize = 20;
/// The longest bake time or device timeout (30 days).
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;
/// How many history entries a rollout keeps (the oldest are dropped beyond).
pub const MAX_HISTORY: usize = 200;

/// A wave's cumulative size: a percentage of the group's compatible devices, or a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    /// Percent of the devices (0 < p ≤ 100).
    Percent(f64),
    /// A number of devices (> 0).
    Count(u64),
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Percent(p) => write!(f, "{p}%"),
            Self::Count(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for WaveSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent.trim().parse().map_err(|_| format!("{text:?} is not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("{text:?}: a wave's percentage must be above 0 and at most 100"));
            }
            Ok(Self::Percent(p))
        } else {
            let n: u64 = text.parse().map_err(|_| format!("{text:?} is neither a percentage (10%) nor a count"))?;
            if n == 0 {
                return Err("a wave's count must be at least 1".into());
            }
            Ok(Self::Count(n))
        }
    }
}

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => text.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a wave size"))),
        }
    }
}

/// What a tripped failure gate does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Stop starting devices until an operator resumes.
    #[default]
    Pause,
    /// Cancel every device not finished (the deployment's subgroups are cancelled).
    Abort,
    /// Deploy the deployment's rollback update to the failed devices, and pause.
    Rollback,
}

/// Devices started per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Devices per minute in the first wave.
    pub devices_per_minute: u64,
    /// The rate doubles with every wave.
    #[serde(default)]
    pub double_per_wave: bool,
}

impl Rate {
    /// The rate in wave `wave` (0-based).
    pub fn per_minute(&self, wave: usize) -> u64 {
        if self.double_per_wave {
            let shift = u32::try_from(wave).unwrap_or(u32::MAX).min(40);
            self.devices_per_minute.saturating_mul(1u64 << shift)
        } else {
            self.devices_per_minute
        }
    }
}

/// A daily UTC time window (`"02:00-05:00"`; it may wrap midnight: `"22:00-04:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC when it opens.
    pub start: u32,
    /// Minutes after midnight UTC when it closes.
    pub end: u32,
}

impl Window {
    /// Whether `now` is inside.
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        let minute = u32::from(now.hour()) * 60 + u32::from(now.minute());
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// How long from `now` until it next opens (zero when open).
    pub fn until_open(&self, now: OffsetDateTime) -> Duration {
        if self.contains(now) {
            return Duration::ZERO;
        }
        let second = i64::from(now.hour()) * 3600 + i64::from(now.minute()) * 60 + i64::from(now.second());
        let start = i64::from(self.start) * 60;
        let wait = (start - second).rem_euclid(24 * 3600);
        Duration::from_secs(u64::try_from(wait).unwrap_or(0))
    }
}

fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && h.to_string().len() <= 2 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a UTC window HH:MM-HH:MM");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (parse_clock(start).ok_or_else(bad)?, parse_clock(end).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{text:?}: the window opens and closes at the same time"));
        }
        Ok(Self { start, end })
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

fn hundred() -> f64 {
    100.0
}

/// A deployment's rollout policy, as given (JSON member `rollout` of a deployment, camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Cumulative wave sizes, increasing.
    pub waves: Vec<WaveSize>,
    /// Seconds a device must stay connected on the deployed update to count as a success.
    #[serde(default)]
    pub bake_seconds: u64,
    /// Percent of a wave's devices that must succeed (after bake) before the next starts.
    #[serde(default = "hundred")]
    pub success_percent: f64,
    /// The failure gate: trips when failed devices exceed this percent of finished ones.
    #[serde(default = "hundred")]
    pub max_failure_percent: f64,
    /// The failure gate is evaluated once at least this many devices finished.
    #[serde(default)]
    pub min_executed: u64,
    /// A device started this long ago and not finished counts as failed (timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout_seconds: Option<u64>,
    /// What a tripped failure gate does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Devices started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A daily UTC window outside which no device is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Every wave after the first waits for an operator's approval (promote).
    #[serde(default)]
    pub approve_waves: bool,
    /// The seed members are ranked with (drawn at creation when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A policy violation: the JSON pointer (under the policy) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// JSON pointer relative to the policy object (`/waves/2`).
    pub pointer: String,
    /// The rule broken.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

impl RolloutPolicy {
    /// Reads a policy from JSON, naming the pointer of what is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, PolicyError> {
        let policy: Self = serde_json::from_value(value.clone())
            .map_err(|e| PolicyError { pointer: String::new(), message: e.to_string() })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every rule (the first broken one is returned).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |pointer: &str, message: String| Err(PolicyError { pointer: pointer.into(), message });
        if self.waves.is_empty() {
            return err("/waves", "at least one wave is needed".into());
        }
        if self.waves.len() > MAX_WAVES {
            return err("/waves", format!("at most {MAX_WAVES} waves"));
        }
        for (i, pair) in self.waves.windows(2).enumerate() {
            let pointer = format!("/waves/{}", i + 1);
            match (pair[0], pair[1]) {
                (WaveSize::Percent(a), WaveSize::Percent(b)) if b <= a => {
                    return err(&pointer, format!("waves are cumulative: {b}% must be above {a}%"));
                }
                (WaveSize::Count(a), WaveSize::Count(b)) if b <= a => {
                    return err(&pointer, format!("waves are cumulative: {b} must be above {a}"));
                }
                (WaveSize::Percent(_), WaveSize::Count(_)) => {
                    return err(&pointer, "a count cannot follow a percentage".into());
                }
                _ => {}
            }
        }
        for (name, value) in
            [("/successPercent", self.success_percent), ("/maxFailurePercent", self.max_failure_percent)]
        {
            if !(0.0..=100.0).contains(&value) {
                return err(name, format!("{value} is not a percentage from 0 to 100"));
            }
        }
        if self.bake_seconds > MAX_SECONDS {
            return err("/bakeSeconds", format!("at most {MAX_SECONDS} seconds (30 days)"));
        }
        if let Some(timeout) = self.device_timeout_seconds
            && !(1..=MAX_SECONDS).contains(&timeout)
        {
            return err("/deviceTimeoutSeconds", format!("from 1 to {MAX_SECONDS} seconds"));
        }
        if let Some(rate) = self.rate
            && rate.devices_per_minute == 0
        {
            return err("/rate/devicesPerMinute", "at least 1 device per minute".into());
        }
        Ok(())
    }

    /// Cumulative per-class targets of wave `wave` (0-based): how many members of each class
    /// belong to waves `0..=wave`, given the members per class. Stratified: a percentage is taken
    /// of every class (rounded up), a count is spread over the classes in proportion (rounded
    /// up), so every class with devices has at least one in every wave.
    pub fn targets(&self, wave: usize, class_sizes: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let total: u64 = class_sizes.values().sum();
        let Some(size) = self.waves.get(wave) else { return BTreeMap::new() };
        let last = wave + 1 == self.waves.len();
        class_sizes
            .iter()
            .map(|(class, &n)| {
                let target = match *size {
                    _ if n == 0 => 0,
                    WaveSize::Percent(p) if p >= 100.0 => n,
                    WaveSize::Percent(p) => ((p / 100.0) * n as f64).ceil() as u64,
                    WaveSize::Count(c) if total == 0 => c.min(n),
                    WaveSize::Count(c) => (c.saturating_mul(n)).div_ceil(total),
                };
                let target = if last && matches!(size, WaveSize::Percent(p) if *p >= 100.0) { n } else { target };
                (class.clone(), target.clamp(u64::from(n > 0), n))
            })
            .collect()
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutStatus {
    /// Waiting for the deployment's start time.
    #[default]
    NotStarted,
    /// Starting devices of the started waves; gates evaluated.
    Running,
    /// The current wave passed its success gate; the next waits for an operator to promote.
    AwaitingApproval,
    /// No device is started (an operator paused, or the failure gate tripped).
    Paused,
    /// Every device not finished was cancelled; nothing more happens.
    Aborted,
    /// The last wave started and every member finished.
    Completed,
}

impl RolloutStatus {
    /// The name shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "NotStarted",
            Self::Running => "Running",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Paused => "Paused",
            Self::Aborted => "Aborted",
            Self::Completed => "Completed",
        }
    }

    /// Whether new devices may be started.
    pub fn admits(self) -> bool {
        matches!(self, Self::Running | Self::AwaitingApproval | Self::Completed)
    }
}

/// Devices of one wave (or of all started waves) by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveCounts {
    /// Members assigned to the wave.
    pub devices: u64,
    /// Started (desired property written).
    pub started: u64,
    /// Succeeded: on the deployed update and connected for the bake time.
    pub succeeded: u64,
    /// On the deployed update, baking.
    pub baking: u64,
    /// Failed, timed out, offline after installing or back on another update.
    pub failed: u64,
    /// Cancelled.
    pub canceled: u64,
    /// Started and not finished.
    pub in_progress: u64,
}

impl WaveCounts {
    /// Finished (succeeded or failed): what the failure gate's percentage is taken of.
    pub fn executed(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// The sum of two counts.
    pub fn plus(mut self, other: &Self) -> Self {
        self.devices += other.devices;
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.baking += other.baking;
        self.failed += other.failed;
        self.canceled += other.canceled;
        self.in_progress += other.in_progress;
        self
    }
}

/// What caused a change of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Cause {
    /// The start time came.
    Schedule,
    /// The success gate of the previous wave passed.
    SuccessGate,
    /// The failure gate tripped.
    FailureGate,
    /// Every member finished.
    Finished,
    /// An operator, by the name of the API token used.
    Operator {
        /// The token's name.
        token: String,
    },
}

/// One change of a rollout, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutEvent {
    /// When (RFC 3339).
    pub time: String,
    /// What happened: `started`, `waveStarted`, `awaitingApproval`, `paused`, `resumed`,
    /// `promoted`, `tripped`, `aborted`, `completed`, `rollbackStarted`.
    pub event: String,
    /// The wave it concerns (0-based), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// Why.
    pub cause: Cause,
    /// The counts over the started waves when it happened.
    pub counts: WaveCounts,
    /// Words for the operator.
    pub detail: String,
}

/// A rollout's state, kept in the deployment record (changed by compare-and-swap with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Where it stands.
    pub status: RolloutStatus,
    /// Start times of the started waves (RFC 3339), in order; `len() - 1` is the current wave.
    #[serde(default)]
    pub wave_started: Vec<String>,
    /// Devices started so far (every admission changes the record, so two nodes cannot start
    /// the same budget twice).
    #[serde(default)]
    pub started: u64,
    /// Finished and failed counts an operator accepted when resuming or promoting: the failure
    /// gate only counts what came after.
    #[serde(default)]
    pub accepted_executed: u64,
    /// See `accepted_executed`.
    #[serde(default)]
    pub accepted_failed: u64,
    /// Every change, oldest first (at most [`MAX_HISTORY`]).
    #[serde(default)]
    pub history: Vec<RolloutEvent>,
}

impl RolloutState {
    /// The current wave (0-based), once started.
    pub fn wave(&self) -> Option<usize> {
        self.wave_started.len().checked_sub(1)
    }

    /// Records an event.
    pub fn record(&mut self, event: RolloutEvent) {
        self.history.push(event);
        if self.history.len() > MAX_HISTORY {
            let drop = self.history.len() - MAX_HISTORY;
            self.history.drain(..drop);
        }
    }
}

/// A deployment's rollout: the policy and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// As given.
    pub policy: RolloutPolicy,
    /// As driven.
    #[serde(default)]
    pub state: RolloutState,
}

/// What the gates decide, given the counts per started wave.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing changes.
    Stay,
    /// Start wave `usize` (the success gate of the previous one passed).
    StartWave(usize),
    /// The success gate passed; the next wave waits for approval.
    AwaitApproval,
    /// The failure gate tripped.
    Trip,
    /// The last wave started and everything finished.
    Complete,
}

/// The gates: what happens to a rollout in `state` given the counts of its started waves
/// (`waves[i]` for wave `i`). The failure gate first (over all started waves, counting only what
/// came after the operator's last acceptance), then the current wave's success gate.
pub fn decide(policy: &RolloutPolicy, state: &RolloutState, waves: &[WaveCounts]) -> Decision {
    let Some(current) = state.wave() else { return Decision::Stay };
    if !matches!(state.status, RolloutStatus::Running | RolloutStatus::AwaitingApproval | RolloutStatus::Completed) {
        return Decision::Stay;
    }
    let total = waves.iter().fold(WaveCounts::default(), |sum, w| sum.plus(w));
    let executed = total.executed().saturating_sub(state.accepted_executed);
    let failed = total.failed.saturating_sub(state.accepted_failed);
    if executed > 0
        && executed >= policy.min_executed
        && (failed as f64) * 100.0 > policy.max_failure_percent * executed as f64
    {
        return Decision::Trip;
    }
    let wave = waves.get(current).copied().unwrap_or_default();
    let last = current + 1 >= policy.waves.len();
    if last {
        let done = total.started == total.devices && total.in_progress == 0 && total.baking == 0;
        return if done && state.status != RolloutStatus::Completed { Decision::Complete } else { Decision::Stay };
    }
    let needed = ((policy.success_percent / 100.0) * wave.devices as f64).ceil() as u64;
    if state.status == RolloutStatus::Running && wave.succeeded >= needed {
        return if policy.approve_waves { Decision::AwaitApproval } else { Decision::StartWave(current + 1) };
    }
    Decision::Stay
}

/// How many more devices may start at `now`, given how many started in the last minute (with
/// a rate) and the window. `None` means no limit.
pub fn budget(
    policy: &RolloutPolicy,
    state: &RolloutState,
    now: OffsetDateTime,
    started_last_minute: u64,
) -> Option<u64> {
    if !state.status.admits() {
        return Some(0);
    }
    if let Some(window) = policy.window
        && !window.contains(now)
    {
        return Some(0);
    }
    let rate = policy.rate?;
    Some(rate.per_minute(state.wave().unwrap_or(0)).saturating_sub(started_last_minute))
}

/// A member's rank in its rollout: the first 63 bits of SHA-256(seed ‖ device id). The same
/// seed ranks the same devices the same way on every node and after every restart.
pub fn rank(seed: u64, device_id: &str) -> i64 {
    let mut input = seed.to_be_bytes().to_vec();
    input.extend_from_slice(device_id.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    i64::try_from(u64::from_be_bytes(first) >> 1).unwrap_or(i64::MAX)
}

/// A member's outcome derived from what its record says (pure; the driver reads the inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// On the deployed update and connected for the bake time.
    Succeeded,
    /// On the deployed update, not yet baked; `Duration` until it is.
    Baking(Duration),
    /// Reported failure.
    Failed,
    /// Installed, then went offline before the bake time passed.
    OfflineAfterInstall,
    /// Installed, then reported another update during the bake.
    Reverted,
    /// Started and not finished within the device timeout.
    TimedOut,
    /// Cancelled.
    Canceled,
    /// Started, not finished; `Option<Duration>` until it times out.
    InProgress(Option<Duration>),
}

impl Outcome {
    /// Whether it counts as a failure for the gate.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::OfflineAfterInstall | Self::Reverted | Self::TimedOut)
    }
}

/// What the driver knows of a started member.
#[derive(Debug, Clone, Copy)]
pub struct MemberFacts {
    /// Its state in the deployment (`deploy::device_state`).
    pub state: super::deploy::DeviceState,
    /// Connected now.
    pub connected: bool,
    /// When its connection state last changed (Unix ms).
    pub connection_ms: Option<i64>,
    /// When it was started (Unix ms).
    pub started_ms: i64,
    /// When it was first seen on the deployed update (Unix ms), if it is or was.
    pub installed_ms: Option<i64>,
}

/// A started member's outcome at `now_ms`.
pub fn outcome(policy: &RolloutPolicy, facts: &MemberFacts, now_ms: i64) -> Outcome {
    use super::deploy::DeviceState;
    let ms = |d: i64| Duration::from_millis(u64::try_from(d).unwrap_or(0));
    match facts.state {
        DeviceState::Succeeded => {
            let installed = facts.installed_ms.unwrap_or(now_ms);
            let since = installed.max(facts.connection_ms.unwrap_or(i64::MIN));
            let bake = i64::try_from(policy.bake_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            if !facts.connected {
                Outcome::OfflineAfterInstall
            } else if now_ms.saturating_sub(since) >= bake {
                Outcome::Succeeded
            } else {
                Outcome::Baking(ms(since.saturating_add(bake) - now_ms))
            }
        }
        DeviceState::Failed => Outcome::Failed,
        DeviceState::Canceled => Outcome::Canceled,
        DeviceState::InProgress if facts.installed_ms.is_some() => Outcome::Reverted,
        DeviceState::InProgress => match policy.device_timeout_seconds {
            Some(timeout) => {
                let deadline = facts.started_ms.saturating_add(i64::try_from(timeout * 1000).unwrap_or(i64::MAX));
                if now_ms >= deadline { Outcome::TimedOut } else { Outcome::InProgress(Some(ms(deadline - now_ms))) }
            }
            None => Outcome::InProgress(None),
        },
    }
}

#[cfg(test)]
mod tests;
