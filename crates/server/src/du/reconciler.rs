//! The deployment reconciler: level-triggered, it compares what every device of a deployment's
//! subgroups should be told (`deploy::assignment`) with its desired `deviceUpdate.service` and
//! writes only the differences (a `ServiceProperties` merge patch that nulls what the previous
//! assignment had); it extends deployments to new subgroups and fires rollback policies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use duhub_proto::twin::{DEVICE_UPDATE_COMPONENT, ServiceProperties, UpdateAction, Workflow};
use serde_json::Value;
use tokio::sync::watch;

use super::deploy::{self, Assignment};
use super::model::{StoredDeployment, SubgroupState};
use super::{DeviceUpdate, ServiceError, Snapshot};
use crate::ids::{new_uuid, now_rfc3339};
use crate::store::RecordFilter;

/// The longest wait between retries of a failing pass.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often finished operations are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long record changes gather before the pass they trigger.
const COALESCE: Duration = Duration::from_millis(200);

/// What a pass did.
struct Pass {
    /// Deployment records changed: another pass should follow at once.
    changed: bool,
    /// Time until the next deployment starts, if one is still to start.
    next_start: Option<Duration>,
    /// Desired writes that failed (retried with backoff).
    failed_writes: usize,
}

impl DeviceUpdate {
    /// Runs the reconciler until `stopped`. It is event-driven: a pass runs at start, when woken
    /// (a deployment created, replaced, cancelled, retried or deleted), when a device's record
    /// changed on this node (it reported, joined a group or class), and at the timers it owns
    /// (the next deployment start time; a retry with backoff after a failed pass or failed
    /// writes). It never rescans the fleet on a period.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        self.recover_operations().await;
        let records_changed = self.store.records_changed();
        let mut pruned_at = std::time::Instant::now();
        let base = self.settings.reconcile_interval;
        let mut backoff = base;
        loop {
            let timer = match self.pass(true).await {
                Ok(pass) if pass.changed => continue,
                Ok(pass) => {
                    let retry = (pass.failed_writes > 0).then_some(backoff);
                    backoff = if retry.is_some() { (backoff * 2).min(MAX_BACKOFF) } else { base };
                    [pass.next_start, retry].into_iter().flatten().min()
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "reconciling deployments failed; trying again");
                    let retry = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(retry)
                }
            };
            if pruned_at.elapsed() > PRUNE_EVERY {
                pruned_at = std::time::Instant::now();
                self.prune_operations().await;
            }
            tokio::select! {
                () = tokio::time::sleep(timer.unwrap_or(PRUNE_EVERY)) => {}
                () = self.wake.notified() => {}
                () = records_changed.notified() => {
                    // Reports come in bursts during a rollout: let them gather into one pass.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = stopped.changed() => return,
            }
        }
    }

    /// One pass (see [`Self::pass`]); returns whether deployment records changed.
    pub async fn reconcile(&self, write: bool) -> Result<bool, ServiceError> {
        Ok(self.pass(write).await?.changed)
    }

    /// One pass: extend deployments to new subgroups, fire rollback policies and (when
    /// `write`) write what devices should be told. Reads device counts (`GROUP BY` on the
    /// records) and, per subgroup, only the records whose desired workflow differs from their
    /// assignment.
    async fn pass(&self, write: bool) -> Result<Pass, ServiceError> {
        let _pass = self.reconciling.lock().await;
        let snapshot = self.snapshot().await?;
        let (mut changed, rollout_timer) = if write { self.drive_rollouts(&snapshot).await? } else { (false, None) };
        let pairs: BTreeSet<(String, String)> =
            snapshot.buckets.iter().map(|b| (b.group_id.clone(), b.class.id.clone())).collect();
        let mut writes: Vec<(String, Arc<Value>)> = Vec::new();
        let mut services: BTreeMap<(String, String, Option<String>), Arc<Value>> = BTreeMap::new();
        for (group, class_id) in pairs {
            let Some(governing) = snapshot.governing(&group, &class_id) else { continue };
            let Some(subgroup) = governing.subgroups.get(&class_id) else {
                self.change_deployment(&group, &governing.deployment_id.clone(), |d| {
                    d.subgroups.entry(class_id.clone()).or_insert_with(|| SubgroupState {
                        workflow_id: new_uuid(),
                        started: now_rfc3339(),
                        canceled: false,
                        retry_timestamp: None,
                        retry_count: 0,
                        retry_devices: Vec::new(),
                        rollback_deployment: None,
                    });
                    Ok(())
                })
                .await?;
                changed = true;
                continue;
            };
            if write {
                // Only devices whose desired workflow differs from the subgroup's (or carries a
                // retry timestamp) can need a write; the index narrows the read to them.
                let action = if subgroup.canceled { UpdateAction::Cancel } else { UpdateAction::ProcessDeployment };
                let filter = RecordFilter {
                    group_id: Some(group.clone()),
                    class_id: Some(class_id.clone()),
                    workflow_id: None,
                    not_desired: Some((subgroup.workflow_id.clone(), action.code())),
                    // A rollout tells only the members it started.
                    started_in: governing.rollout.as_ref().map(|_| governing.deployment_id.clone()),
                };
                // Retried devices and rollback targets are told something else than the
                // subgroup's workflow: their records are read by id (they are few).
                let mut special: Vec<String> = subgroup.retry_devices.clone();
                if let Some(rollback) = deploy::rollback_of(governing, subgroup, &snapshot.deployments) {
                    special.extend(rollback.target_devices.iter().flatten().cloned());
                }
                let mut rows = self.all_records(&filter).await?;
                if !special.is_empty() {
                    special.sort();
                    special.dedup();
                    if governing.rollout.is_some() {
                        special =
                            self.store.started_rollout_members(&group, &governing.deployment_id, &special).await?;
                    }
                    let known: BTreeSet<String> = rows.iter().map(|r| r.device_id.clone()).collect();
                    rows.extend(
                        self.store
                            .records_of(&special)
                            .await?
                            .into_iter()
                            .filter(|r| r.group_id == group && r.class_id == class_id && !known.contains(&r.device_id)),
                    );
                }
                for row in rows {
                    let Some(assignment) =
                        deploy::assignment(governing, &snapshot.deployments, &class_id, Some(&row.device_id))
                    else {
                        continue;
                    };
                    if assignment.is_written(&row.desired) {
                        continue;
                    }
                    let key = (
                        assignment.subgroup.workflow_id.clone(),
                        format!("{:?}", assignment.action),
                        assignment.retry_timestamp.map(str::to_owned),
                    );
                    let service = match services.get(&key) {
                        Some(service) => service.clone(),
                        None => match self.service_value(&snapshot, &assignment) {
                            Ok(service) => {
                                let service = Arc::new(service);
                                services.insert(key, service.clone());
                                service
                            }
                            Err(error) => {
                                tracing::warn!(%error, device = row.device_id, "cannot build the desired property");
                                continue;
                            }
                        },
                    };
                    writes.push((row.device_id, service));
                }
            }
            if let Some(policy) = &governing.rollback_policy
                && subgroup.rollback_deployment.is_none()
                && !subgroup.canceled
                && let Some(status) = snapshot.subgroup_status(governing, &class_id)
                && deploy::rollback_due(status.counts, policy.devices_failed_count, policy.devices_failed_percentage)
            {
                let failed = self.failed_devices(governing, &class_id).await?;
                self.start_rollback(governing, &class_id, failed).await?;
                changed = true;
            }
        }
        let count = writes.len();
        if count > 0 {
            tracing::info!(devices = count, "writing deployment workflows to desired properties");
        }
        // One writer job per device, handed to the writer ahead of the commits: batches fill,
        // and the change is computed against the twin in the batch (no read per device here).
        let devices: Vec<String> = writes.iter().map(|(device, _)| device.clone()).collect();
        let outcomes = self.store.replace_desired_members(DEVICE_UPDATE_COMPONENT, "service", writes).await;
        let mut failed_writes = 0;
        for (device, outcome) in devices.iter().zip(outcomes) {
            if let Err(error) = outcome {
                tracing::warn!(%error, device, "writing the desired deployment failed");
                failed_writes += 1;
            }
        }
        let next_start = snapshot
            .deployments
            .iter()
            .filter_map(|d| deploy::time_until(&d.start_date_time, &snapshot.now))
            .chain(rollout_timer)
            .min();
        Ok(Pass { changed, next_start, failed_writes })
    }

    pub(in crate::du) async fn start_rollback(
        &self,
        governing: &StoredDeployment,
        class: &str,
        failed: Vec<String>,
    ) -> Result<(), ServiceError> {
        let Some(policy) = &governing.rollback_policy else { return Ok(()) };
        let short: String = class.chars().take(8).collect();
        let rollback_id = format!("{}-rollback-{short}", governing.deployment_id).chars().take(73).collect::<String>();
        let now = now_rfc3339();
        let rollback = StoredDeployment {
            deployment_id: rollback_id.clone(),
            group_id: governing.group_id.clone(),
            start_date_time: now.clone(),
            update: policy.update.clone(),
            rollback_policy: None,
            is_cloud_initiated_rollback: true,
            download_security: governing.download_security.clone(),
            created_date_time: now.clone(),
            subgroups: BTreeMap::from([(
                class.to_owned(),
                SubgroupState {
                    workflow_id: new_uuid(),
                    started: now,
                    canceled: false,
                    retry_timestamp: None,
                    retry_count: 0,
                    retry_devices: Vec::new(),
                    rollback_deployment: None,
                },
            )]),
            excluded_subgroups: BTreeSet::new(),
            target_devices: Some(failed.clone()),
            target_device_class: Some(class.to_owned()),
            rollout: None,
        };
        let body = serde_json::to_string(&rollback).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        self.store.put_deployment(&governing.group_id, &rollback_id, &body, None).await?;
        tracing::warn!(
            deployment = governing.deployment_id,
            group = governing.group_id,
            class,
            failed = failed.len(),
            rollback = rollback_id,
            "rollback policy fired: deploying the rollback update to the failed devices"
        );
        self.change_deployment(&governing.group_id, &governing.deployment_id, |d| {
            if let Some(subgroup) = d.subgroups.get_mut(class) {
                subgroup.rollback_deployment = Some(rollback_id.clone());
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The desired `deviceUpdate.service` that tells a device its assignment.
    fn service_value(&self, snapshot: &Snapshot, assignment: &Assignment<'_>) -> Result<Value, ServiceError> {
        let mut workflow = Workflow::new(assignment.action, assignment.subgroup.workflow_id.clone());
        if let Some(timestamp) = assignment.retry_timestamp {
            workflow = workflow.with_retry_timestamp(timestamp);
        }
        let service = if assignment.action == UpdateAction::Cancel {
            ServiceProperties {
                workflow: Some(workflow),
                root_key_package_url: Some(self.root_key_package_url()),
                ..ServiceProperties::default()
            }
        } else {
            let update = snapshot.update(&assignment.deployment.update).ok_or_else(|| {
                ServiceError::NotFound(format!("update {} is not imported", assignment.deployment.update))
            })?;
            let children = update.references.iter().filter_map(|r| snapshot.update(r));
            let file_urls = update
                .files
                .iter()
                .chain(children.flat_map(|c| c.files.iter()))
                .map(|file| (file.file_id.clone(), self.file_url(&file.blob, &file.file_name)));
            ServiceProperties::deployment(
                workflow,
                Some(self.root_key_package_url()),
                update.update_manifest.clone(),
                update.update_manifest_signature.clone(),
                file_urls,
            )
        };
        serde_json::to_value(&service).map_err(|e| ServiceError::Corrupt(e.to_string()))
    }
}
