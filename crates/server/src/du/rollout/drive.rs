//! The reconciler's side of phased rollouts: observe the members of a rollout (outcomes per
//! wave, bake and timeout timers), apply the gates' decision and start devices within the
//! rate and window. Every change of a rollout's state goes through
//! `Store::change_rollout` (compare-and-swap on the deployment's revision together with the
//! member changes), so several nodes driving the same rollout never start a wave or a budget
//! twice; a node that loses the race reads again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;

use super::{
    Cause, Decision, MemberFacts, Outcome, Rollout, RolloutEvent, RolloutPolicy, RolloutStatus, WaveCounts, budget,
    decide, outcome, rank,
};
use crate::du::deploy::{self, DeviceState};
use crate::du::model::{StoredDeployment, update_key};
use crate::du::{DeviceUpdate, ServiceError, Snapshot};
use crate::ids::rfc3339;
use crate::store::{MemberChange, MemberMark};

/// Open members read per query.
const CHUNK: i64 = 2000;
/// How many times a control retries a compare-and-swap before answering a conflict.
const ATTEMPTS: usize = 10;

/// An operator's control of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutControl {
    /// Start no more devices.
    Pause,
    /// Start devices again (failures so far are accepted by the failure gate).
    Resume,
    /// Start the next wave now (approving it when it waits for approval).
    Promote,
    /// Cancel every device not finished; the rollout ends.
    Abort,
}

impl RolloutControl {
    /// Its name in paths and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

impl std::str::FromStr for RolloutControl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            "promote" => Ok(Self::Promote),
            "abort" => Ok(Self::Abort),
            other => Err(format!("{other:?} is not a rollout control (pause, resume, promote, abort)")),
        }
    }
}

/// One wave as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveView {
    /// 0-based.
    pub index: usize,
    /// Its cumulative size as given.
    pub size: super::WaveSize,
    /// When it started.
    pub started_at: Option<String>,
    /// Its devices by outcome.
    pub counts: WaveCounts,
}

/// A rollout as shown: policy, state, waves with their counts, and the gates' numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutView {
    /// The deployment's group.
    pub group_id: String,
    /// The deployment.
    pub deployment_id: String,
    /// Policy and state.
    pub rollout: Rollout,
    /// Every wave of the policy.
    pub waves: Vec<WaveView>,
    /// Over the started waves.
    pub totals: WaveCounts,
    /// Members not yet in a wave.
    pub unassigned: u64,
    /// Whether the window is open now (`None`: no window).
    pub window_open: Option<bool>,
}

/// What observing a rollout found.
struct Observation {
    /// Counts of waves `0..=current`.
    waves: Vec<WaveCounts>,
    /// Members not in a wave.
    unassigned: u64,
    /// Members per (wave, class): for wave targets.
    assigned: BTreeMap<String, u64>,
    /// Members per class (any wave).
    class_sizes: BTreeMap<String, u64>,
    /// Failed device ids per class (for a rollback).
    failed: BTreeMap<String, Vec<String>>,
    /// The soonest bake end or device timeout.
    next: Option<Duration>,
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn parse_ms(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok().map(millis)
}

fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    [a, b].into_iter().flatten().min()
}

impl DeviceUpdate {
    /// The rollouts' clock: the real time plus an offset tests set (`test-hooks`).
    pub fn rollout_now(&self) -> OffsetDateTime {
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        OffsetDateTime::now_utc() + time::Duration::milliseconds(offset)
    }

    /// Moves the rollouts' clock forward (tests of bake times, rates and windows).
    #[cfg(feature = "test-hooks")]
    pub fn advance_rollout_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.wake();
    }

    /// Drives every started rollout one step. Returns whether a rollout changed (another pass
    /// should follow) and when the next timer of a rollout is due.
    pub(crate) async fn drive_rollouts(&self, snapshot: &Snapshot) -> Result<(bool, Option<Duration>), ServiceError> {
        let mut changed = false;
        let mut next = None;
        for (deployment, revision) in snapshot.deployments.iter().zip(&snapshot.revisions) {
            let Some(rollout) = &deployment.rollout else { continue };
            // An aborted rollout never changes again: no pass reads its members.
            if rollout.state.status == RolloutStatus::Aborted
                || deployment.subgroups.is_empty()
                || !deploy::has_started(&deployment.start_date_time, &snapshot.now)
            {
                continue;
            }
            // Devices of the group in the deployment's classes: more than members means some
            // joined since (counted from the snapshot's buckets, no extra read).
            let devices: u64 = snapshot
                .buckets
                .iter()
                .filter(|b| b.group_id == deployment.group_id && deployment.subgroups.contains_key(&b.class.id))
                .map(|b| b.count)
                .sum();
            match self.drive(deployment, rollout, *revision, devices).await {
                Ok((c, n)) => {
                    changed |= c;
                    next = sooner(next, n);
                }
                Err(error) => {
                    tracing::warn!(%error, deployment = deployment.deployment_id, "driving the rollout failed");
                    next = sooner(next, Some(Duration::from_secs(5)));
                }
            }
        }
        Ok((changed, next))
    }

    async fn drive(
        &self,
        deployment: &StoredDeployment,
        rollout: &Rollout,
        revision: i64,
        group_devices: u64,
    ) -> Result<(bool, Option<Duration>), ServiceError> {
        let (group, id) = (&deployment.group_id, &deployment.deployment_id);
        let policy = &rollout.policy;
        let now = self.rollout_now();
        let seed = policy.seed.unwrap_or(0);
        let classes: Vec<String> = deployment.subgroups.keys().cloned().collect();
        let Some(current) = rollout.state.wave() else {
            // The start: every device of the group becomes a member, the first wave is drawn.
            self.store.add_rollout_members(group, id, &classes, None, |d| rank(seed, d)).await?;
            let observed = self.observe(deployment, rollout, now, false).await?;
            let mut next = deployment.clone();
            let Some(state) = next.rollout.as_mut().map(|r| &mut r.state) else { return Ok((false, None)) };
            if state.status == RolloutStatus::NotStarted {
                state.status = RolloutStatus::Running;
            }
            state.wave_started.push(rfc3339(now));
            state.record(event(
                now,
                "waveStarted",
                Some(0),
                Cause::Schedule,
                WaveCounts::default(),
                "the first wave started",
            ));
            let changes = wave_changes(policy, 0, &observed);
            return self.commit(&next, revision, &changes).await.map(|_| (true, None));
        };
        let observed = self.observe(deployment, rollout, now, true).await?;
        let mut timer = observed.next;
        if group_devices > observed.class_sizes.values().sum::<u64>() {
            // Devices that joined the group later go into the current wave.
            let wave = i64::try_from(current).ok();
            if self.store.add_rollout_members(group, id, &classes, wave, |d| rank(seed, d)).await? > 0 {
                return Ok((true, timer));
            }
        }
        let totals = observed.waves.iter().fold(WaveCounts::default(), |sum, w| sum.plus(w));
        let mut next = deployment.clone();
        let Some(state) = next.rollout.as_mut().map(|r| &mut r.state) else { return Ok((false, None)) };
        match decide(policy, &rollout.state, &observed.waves) {
            Decision::Stay => {}
            Decision::StartWave(wave) => {
                state.wave_started.push(rfc3339(now));
                state.record(event(
                    now,
                    "waveStarted",
                    Some(wave),
                    Cause::SuccessGate,
                    totals,
                    &format!(
                        "wave {} reached its success gate ({} of {} succeeded)",
                        wave,
                        observed.waves.get(current).map_or(0, |w| w.succeeded),
                        observed.waves.get(current).map_or(0, |w| w.devices)
                    ),
                ));
                let changes = wave_changes(policy, wave, &observed);
                return self.commit(&next, revision, &changes).await.map(|_| (true, None));
            }
            Decision::AwaitApproval => {
                state.status = RolloutStatus::AwaitingApproval;
                state.record(event(
                    now,
                    "awaitingApproval",
                    Some(current + 1),
                    Cause::SuccessGate,
                    totals,
                    &format!("wave {} passed its success gate; wave {} waits for approval", current + 1, current + 2),
                ));
                return self.commit(&next, revision, &[]).await.map(|_| (true, None));
            }
            Decision::Complete => {
                state.status = RolloutStatus::Completed;
                state.record(event(now, "completed", Some(current), Cause::Finished, totals, "every device finished"));
                return self.commit(&next, revision, &[]).await.map(|_| (true, None));
            }
            Decision::Trip => {
                let detail = format!(
                    "{} of {} finished devices failed (more than {}% once {} finished)",
                    totals.failed.saturating_sub(state.accepted_failed),
                    totals.executed().saturating_sub(state.accepted_executed),
                    policy.max_failure_percent,
                    policy.min_executed
                );
                state.record(event(now, "tripped", Some(current), Cause::FailureGate, totals, &detail));
                match policy.on_failure {
                    super::OnFailure::Pause => state.status = RolloutStatus::Paused,
                    super::OnFailure::Rollback => {
                        state.status = RolloutStatus::Paused;
                        state.record(event(
                            now,
                            "rollbackStarted",
                            Some(current),
                            Cause::FailureGate,
                            totals,
                            "the rollback update goes to the failed devices",
                        ));
                    }
                    super::OnFailure::Abort => {
                        state.status = RolloutStatus::Aborted;
                        state.record(event(
                            now,
                            "aborted",
                            Some(current),
                            Cause::FailureGate,
                            totals,
                            "every device not finished is cancelled",
                        ));
                        for subgroup in next.subgroups.values_mut() {
                            subgroup.canceled = true;
                        }
                    }
                }
                tracing::warn!(deployment = id, group, %detail, action = ?policy.on_failure, "rollout failure gate tripped");
                if !self.commit(&next, revision, &[]).await? {
                    return Ok((true, None));
                }
                if policy.on_failure == super::OnFailure::Rollback {
                    for (class, failed) in &observed.failed {
                        if deployment.subgroups.get(class).is_some_and(|s| s.rollback_deployment.is_none()) {
                            self.start_rollback(deployment, class, failed.clone()).await?;
                        }
                    }
                }
                return Ok((true, None));
            }
        }
        // Start members of the started waves, within the window and the rate.
        let max_wave = i64::try_from(current).unwrap_or(i64::MAX);
        if !rollout.state.status.admits() {
            return Ok((false, timer));
        }
        let waiting = self.store.rollout_waiting(group, id, max_wave).await?;
        if waiting == 0 {
            return Ok((false, timer));
        }
        let now_ms = millis(now);
        let (recent, oldest) = self.store.rollout_started_since(group, id, now_ms - 60_000).await?;
        let allowed = budget(policy, &rollout.state, now, recent);
        let count = allowed.map_or(waiting, |b| b.min(waiting));
        if count < waiting {
            if let Some(window) = policy.window.filter(|w| !w.contains(now)) {
                timer = sooner(timer, Some(window.until_open(now).max(Duration::from_secs(1))));
            } else if let Some(oldest) = oldest {
                let wait = (oldest + 60_000 - now_ms).max(100);
                timer = sooner(timer, Some(Duration::from_millis(u64::try_from(wait).unwrap_or(100))));
            }
        }
        if count == 0 {
            return Ok((false, timer));
        }
        state.started += count;
        let change = MemberChange::Start { max_wave, count: i64::try_from(count).unwrap_or(i64::MAX), now_ms };
        self.commit(&next, revision, &[change]).await?;
        Ok((true, timer))
    }

    /// Writes a changed deployment (and member changes) if its revision is still `revision`.
    async fn commit(
        &self,
        deployment: &StoredDeployment,
        revision: i64,
        changes: &[MemberChange],
    ) -> Result<bool, ServiceError> {
        let body = serde_json::to_string(deployment).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        let done = self
            .store
            .change_rollout(&deployment.group_id, &deployment.deployment_id, &body, revision, changes)
            .await?;
        if done {
            self.wake();
        }
        Ok(done)
    }

    /// Reads a rollout's members: counts per wave and class, and (for started members not yet
    /// settled) their outcomes from their records; with `mark`, records first sightings on the
    /// deployed update and settles members that succeeded.
    async fn observe(
        &self,
        deployment: &StoredDeployment,
        rollout: &Rollout,
        now: OffsetDateTime,
        mark: bool,
    ) -> Result<Observation, ServiceError> {
        let (group, id) = (&deployment.group_id, &deployment.deployment_id);
        let policy = &rollout.policy;
        let current = rollout.state.wave();
        let now_ms = millis(now);
        let waves_len = current.map_or(0, |c| c + 1);
        let mut observed = Observation {
            waves: vec![WaveCounts::default(); waves_len],
            unassigned: 0,
            assigned: BTreeMap::new(),
            class_sizes: BTreeMap::new(),
            failed: BTreeMap::new(),
            next: None,
        };
        for count in self.store.rollout_member_counts(group, id).await? {
            *observed.class_sizes.entry(count.class_id.clone()).or_default() += count.members;
            let Some(wave) = count.wave.and_then(|w| usize::try_from(w).ok()) else {
                observed.unassigned += count.members;
                continue;
            };
            *observed.assigned.entry(count.class_id.clone()).or_default() += count.members;
            if let Some(counts) = observed.waves.get_mut(wave) {
                counts.devices += count.members;
                counts.started += count.started;
                // Settled before this pass; open members are counted below.
                counts.succeeded += count.succeeded;
            }
        }
        let mut marks = Vec::new();
        let mut after = String::new();
        loop {
            let open = self.store.open_rollout_members(group, id, &after, CHUNK).await?;
            let Some(last) = open.last() else { break };
            after = last.device_id.clone();
            for member in &open {
                let Some(subgroup) = deployment.subgroups.get(&member.class_id) else { continue };
                let state = deploy::device_state(deployment, subgroup, &member.facts);
                let mut installed_ms = member.installed_ms;
                if state == DeviceState::Succeeded && installed_ms.is_none() {
                    installed_ms = Some(now_ms);
                    marks.push(MemberMark::Installed(member.device_id.clone(), Some(now_ms)));
                }
                let facts = MemberFacts {
                    state,
                    connected: member.connection_state == "Connected",
                    connection_ms: member.connection_time.as_deref().and_then(parse_ms),
                    started_ms: member.started_ms,
                    installed_ms,
                };
                let wave = usize::try_from(member.wave).unwrap_or(0);
                let Some(counts) = observed.waves.get_mut(wave) else { continue };
                match outcome(policy, &facts, now_ms) {
                    Outcome::Succeeded => {
                        counts.succeeded += 1;
                        marks.push(MemberMark::Succeeded(member.device_id.clone()));
                    }
                    Outcome::Baking(left) => {
                        counts.baking += 1;
                        observed.next = sooner(observed.next, Some(left));
                    }
                    Outcome::Canceled => counts.canceled += 1,
                    Outcome::InProgress(left) => {
                        counts.in_progress += 1;
                        observed.next = sooner(observed.next, left);
                    }
                    failure => {
                        debug_assert!(failure.is_failure());
                        counts.failed += 1;
                        if state == DeviceState::Failed {
                            observed.failed.entry(member.class_id.clone()).or_default().push(member.device_id.clone());
                        }
                        if failure == Outcome::OfflineAfterInstall {
                            // It may come back and bake: look again at the bake time.
                            observed.next =
                                sooner(observed.next, Some(Duration::from_secs(policy.bake_seconds.max(1))));
                        }
                    }
                }
            }
            if i64::try_from(open.len()).unwrap_or(0) < CHUNK {
                break;
            }
        }
        if mark {
            self.store.mark_rollout_members(group, id, &marks).await?;
        }
        Ok(observed)
    }

    /// A rollout as shown (the deployment's group and id), `None` if the deployment has none.
    pub async fn rollout_view(&self, group: &str, id: &str) -> Result<Option<RolloutView>, ServiceError> {
        let Some((deployment, _)) = self.deployment(group, id).await? else {
            return Err(ServiceError::NotFound(format!("deployment {id} of group {group} not found")));
        };
        let Some(rollout) = deployment.rollout.clone() else { return Ok(None) };
        let now = self.rollout_now();
        let observed = self.observe(&deployment, &rollout, now, false).await?;
        let totals = observed.waves.iter().fold(WaveCounts::default(), |sum, w| sum.plus(w));
        let waves = rollout
            .policy
            .waves
            .iter()
            .enumerate()
            .map(|(index, size)| WaveView {
                index,
                size: *size,
                started_at: rollout.state.wave_started.get(index).cloned(),
                counts: observed.waves.get(index).copied().unwrap_or_default(),
            })
            .collect();
        Ok(Some(RolloutView {
            group_id: deployment.group_id.clone(),
            deployment_id: deployment.deployment_id.clone(),
            window_open: rollout.policy.window.map(|w| w.contains(now)),
            rollout,
            waves,
            totals,
            unassigned: observed.unassigned,
        }))
    }

    /// An operator's control of a rollout, recorded with the API token's name.
    pub async fn control_rollout(
        &self,
        group: &str,
        id: &str,
        control: RolloutControl,
        token: &str,
    ) -> Result<RolloutView, ServiceError> {
        for _ in 0..ATTEMPTS {
            let (deployment, revision) = self
                .deployment(group, id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("deployment {id} of group {group} not found")))?;
            let Some(rollout) = deployment.rollout.clone() else {
                return Err(ServiceError::Conflict(format!("deployment {id} has no rollout policy")));
            };
            let now = self.rollout_now();
            let observed = self.observe(&deployment, &rollout, now, false).await?;
            let totals = observed.waves.iter().fold(WaveCounts::default(), |sum, w| sum.plus(w));
            let cause = Cause::Operator { token: token.to_owned() };
            let mut next = deployment.clone();
            let Some(state) = next.rollout.as_mut().map(|r| &mut r.state) else { continue };
            if state.status == RolloutStatus::Aborted {
                return Err(ServiceError::Conflict(format!("the rollout of deployment {id} was aborted")));
            }
            let mut changes = Vec::new();
            match control {
                RolloutControl::Pause => {
                    if state.status == RolloutStatus::Paused {
                        return Err(ServiceError::Conflict("the rollout is already paused".into()));
                    }
                    state.status = RolloutStatus::Paused;
                    state.record(event(now, "paused", state.wave(), cause, totals, "paused by an operator"));
                }
                RolloutControl::Resume => {
                    if state.status != RolloutStatus::Paused {
                        return Err(ServiceError::Conflict(format!(
                            "the rollout is {}, not paused",
                            state.status.as_str()
                        )));
                    }
                    state.status =
                        if state.wave().is_some() { RolloutStatus::Running } else { RolloutStatus::NotStarted };
                    state.accepted_executed = totals.executed();
                    state.accepted_failed = totals.failed;
                    state.record(event(
                        now,
                        "resumed",
                        state.wave(),
                        cause,
                        totals,
                        "resumed by an operator; the failure gate counts from here",
                    ));
                }
                RolloutControl::Promote => {
                    let Some(current) = state.wave() else {
                        return Err(ServiceError::Conflict("the rollout has not started yet".into()));
                    };
                    let wave = current + 1;
                    if wave >= rollout.policy.waves.len() {
                        return Err(ServiceError::Conflict("the rollout is already in its last wave".into()));
                    }
                    state.status = RolloutStatus::Running;
                    state.accepted_executed = totals.executed();
                    state.accepted_failed = totals.failed;
                    state.wave_started.push(rfc3339(now));
                    state.record(event(
                        now,
                        "promoted",
                        Some(wave),
                        cause,
                        totals,
                        &format!("wave {} started by an operator", wave + 1),
                    ));
                    changes = wave_changes(&rollout.policy, wave, &observed);
                }
                RolloutControl::Abort => {
                    state.status = RolloutStatus::Aborted;
                    state.record(event(
                        now,
                        "aborted",
                        state.wave(),
                        cause,
                        totals,
                        "aborted by an operator: every device not finished is cancelled",
                    ));
                    for subgroup in next.subgroups.values_mut() {
                        subgroup.canceled = true;
                    }
                }
            }
            if self.commit(&next, revision, &changes).await? {
                tracing::info!(deployment = id, group, control = control.as_str(), token, "rollout control");
                return self
                    .rollout_view(group, id)
                    .await?
                    .ok_or_else(|| ServiceError::Conflict(format!("deployment {id} has no rollout policy")));
            }
        }
        Err(ServiceError::Conflict("the deployment is changing concurrently; try again".into()))
    }

    /// Prepares a deployment's rollout when it is created or replaced: a seed is drawn when
    /// none was given; a replaced deployment keeps its state (and seed) while its update is
    /// the same, and starts over (members dropped) when the update changed.
    pub(crate) async fn prepare_rollout(
        &self,
        deployment: &mut StoredDeployment,
        old: Option<&StoredDeployment>,
    ) -> Result<(), ServiceError> {
        let same_update = old.is_some_and(|o| update_key(&o.update) == update_key(&deployment.update));
        if let Some(rollout) = &mut deployment.rollout {
            rollout.policy.validate().map_err(|e| ServiceError::Invalid(format!("rollout{e}")))?;
            if rollout.policy.on_failure == super::OnFailure::Rollback && deployment.rollback_policy.is_none() {
                return Err(ServiceError::Invalid(
                    "rollout/onFailure: rollback needs the deployment's rollbackPolicy (the update to roll back to)"
                        .into(),
                ));
            }
            let old_rollout = old.and_then(|o| o.rollout.as_ref()).filter(|_| same_update);
            if rollout.policy.seed.is_none() {
                rollout.policy.seed =
                    Some(old_rollout.and_then(|o| o.policy.seed).unwrap_or_else(crate::ids::random_u64));
            }
            if let Some(old_rollout) = old_rollout {
                rollout.state = old_rollout.state.clone();
            }
        }
        if let Some(old) = old
            && old.rollout.is_some()
            && !same_update
        {
            self.store.delete_rollout_members(&old.group_id, &old.deployment_id).await?;
        }
        Ok(())
    }
}

/// The member changes that start wave `wave`: per class, the lowest-ranked unassigned members
/// up to the wave's cumulative target.
fn wave_changes(policy: &RolloutPolicy, wave: usize, observed: &Observation) -> Vec<MemberChange> {
    let wave_number = i64::try_from(wave).unwrap_or(i64::MAX);
    policy
        .targets(wave, &observed.class_sizes)
        .into_iter()
        .filter_map(|(class, target)| {
            let assigned = observed.assigned.get(&class).copied().unwrap_or(0);
            let count = i64::try_from(target.saturating_sub(assigned)).ok().filter(|c| *c > 0)?;
            Some(MemberChange::AssignWave { class_id: class, wave: wave_number, count })
        })
        .collect()
}

fn event(
    now: OffsetDateTime,
    name: &str,
    wave: Option<usize>,
    cause: Cause,
    counts: WaveCounts,
    detail: &str,
) -> RolloutEvent {
    RolloutEvent { time: rfc3339(now), event: name.into(), wave, cause, counts, detail: detail.into() }
}
