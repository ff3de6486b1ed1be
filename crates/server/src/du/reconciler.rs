//! The deployment reconciler: level-triggered, it compares what every device of a deployment's
//! subgroups should be told (`deploy::assignment`) with its desired `deviceUpdate.service` and
//! writes only the differences (a `ServiceProperties` merge patch that nulls what the previous
//! assignment had); it extends deployments to new subgroups and fires rollback policies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use duhub_proto::twin::{DEVICE_UPDATE_COMPONENT, ServiceProperties, UpdateAction, Workflow, component_patch};
use serde_json::Value;
use tokio::sync::watch;

use super::deploy::{self, Assignment, Counts, DeviceState};
use super::fleet::DeviceView;
use super::model::{StoredDeployment, SubgroupState};
use super::{DeviceUpdate, ServiceError, Snapshot};
use crate::ids::{new_uuid, now_rfc3339};

impl DeviceUpdate {
    /// Runs the reconciler until `stopped`; it also runs at once when woken.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        self.recover_operations().await;
        let mut pruned_at = std::time::Instant::now();
        loop {
            let again = match self.reconcile(true).await {
                Ok(again) => again,
                Err(error) => {
                    tracing::warn!(%error, "reconciling deployments failed; trying again");
                    false
                }
            };
            if pruned_at.elapsed() > Duration::from_secs(3600) {
                pruned_at = std::time::Instant::now();
                self.prune_operations().await;
            }
            if again {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.reconcile_interval) => {}
                () = self.wake.notified() => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// One pass: extend deployments to new subgroups, fire rollback policies and (when
    /// `write`) write what devices should be told. Returns whether records changed (so another
    /// pass should follow).
    pub async fn reconcile(&self, write: bool) -> Result<bool, ServiceError> {
        let _pass = self.reconciling.lock().await;
        let snapshot = self.snapshot().await?;
        let mut changed = false;
        let pairs: BTreeSet<(String, String)> =
            snapshot.devices.iter().map(|d| (d.group_id.clone(), d.class.id.clone())).collect();
        let mut writes = Vec::new();
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
            let members: Vec<&DeviceView> =
                snapshot.devices.iter().filter(|d| d.group_id == group && d.class.id == class_id).collect();
            for device in members.iter().filter(|_| write) {
                if let Some(assignment) = deploy::assignment(governing, &snapshot.deployments, device)
                    && !assignment.is_written(device)
                {
                    match self.service_patch(&snapshot, &assignment, device) {
                        Ok(patch) => writes.push((device.device_id.clone(), patch)),
                        Err(error) => {
                            tracing::warn!(%error, device = device.device_id, "cannot build the desired property")
                        }
                    }
                }
            }
            if let Some(policy) = &governing.rollback_policy
                && subgroup.rollback_deployment.is_none()
                && !subgroup.canceled
            {
                let states: Vec<(String, DeviceState)> = members
                    .iter()
                    .map(|d| (d.device_id.clone(), deploy::device_state(governing, subgroup, d)))
                    .collect();
                let counts = Counts::of(states.iter().map(|(_, s)| *s));
                if deploy::rollback_due(counts, policy.devices_failed_count, policy.devices_failed_percentage) {
                    let failed: Vec<String> =
                        states.iter().filter(|(_, s)| *s == DeviceState::Failed).map(|(d, _)| d.clone()).collect();
                    self.start_rollback(governing, &class_id, failed).await?;
                    changed = true;
                }
            }
        }
        let count = writes.len();
        if count > 0 {
            tracing::info!(devices = count, "writing deployment workflows to desired properties");
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = writes.into_iter();
        let store = self.store.clone();
        loop {
            while tasks.len() < 256 {
                let Some((device, patch)) = pending.next() else { break };
                let store = store.clone();
                tasks.spawn(async move {
                    if let Err(error) = store.patch_desired(&device, &patch, None).await {
                        tracing::warn!(%error, device, "writing the desired deployment failed");
                    }
                });
            }
            if tasks.join_next().await.is_none() {
                break;
            }
        }
        Ok(changed)
    }

    async fn start_rollback(
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

    /// The desired patch that tells `device` its assignment, deleting what the previous one
    /// wrote that this one does not.
    fn service_patch(
        &self,
        snapshot: &Snapshot,
        assignment: &Assignment<'_>,
        device: &DeviceView,
    ) -> Result<Value, ServiceError> {
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
        let service = serde_json::to_value(&service).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        let service = replacement(&device.desired_service, service);
        Ok(component_patch(DEVICE_UPDATE_COMPONENT, [("service".to_owned(), service)]))
    }
}

/// `new` with every member `old` has and `new` lacks set to `null`, recursively into objects
/// both have: a merge patch that replaces `old` by `new`.
fn replacement(old: &Value, new: Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(mut new)) => {
            for (key, old_value) in old {
                match new.remove(key) {
                    Some(new_value) => {
                        new.insert(key.clone(), replacement(old_value, new_value));
                    }
                    None => {
                        new.insert(key.clone(), Value::Null);
                    }
                }
            }
            Value::Object(new)
        }
        (_, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replacement_nulls_what_the_new_value_lacks() {
        let old =
            json!({"workflow": {"action": 3, "id": "a", "retryTimestamp": "t"}, "fileUrls": {"f1": "u1", "f2": "u2"}});
        let new = json!({"workflow": {"action": 3, "id": "b"}, "fileUrls": {"f3": "u3"}});
        let patch = replacement(&old, new);
        assert_eq!(
            patch,
            json!({"workflow": {"action": 3, "id": "b", "retryTimestamp": null}, "fileUrls": {"f3": "u3", "f1": null, "f2": null}})
        );
        assert_eq!(replacement(&Value::Null, json!({"a": 1})), json!({"a": 1}));
    }
}
