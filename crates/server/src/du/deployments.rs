//! Deployments: create or replace (validated against the stored updates), change by
//! compare-and-swap on the record's revision, cancel and retry in one subgroup, delete. Every
//! change wakes the reconciler, which does the writing to devices.

use super::deploy::{self, DeviceState};
use super::model::{StoredDeployment, update_key};
use super::{DeviceUpdate, ServiceError, parse};
use crate::ids::now_service_timestamp;
use crate::store::{RecordFilter, RecordRow};

/// Records read per query when a list is walked whole.
const RECORD_CHUNK: i64 = 5000;

impl DeviceUpdate {
    /// Deployments with their revisions.
    pub async fn deployments(&self) -> Result<Vec<(StoredDeployment, i64)>, ServiceError> {
        self.store.deployments().await?.into_iter().map(|r| Ok((parse(&r.body)?, r.revision))).collect()
    }

    /// Creates or replaces a deployment. Replacing keeps the subgroup workflows when the update
    /// is unchanged.
    pub async fn put_deployment(&self, mut deployment: StoredDeployment) -> Result<StoredDeployment, ServiceError> {
        let update = self
            .stored_update(&deployment.update)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("update {} is not imported", deployment.update)))?;
        if !update.is_deployable {
            return Err(ServiceError::Invalid(format!("update {} is not deployable on its own", deployment.update)));
        }
        deployment.update = update.update_id.clone();
        if let Some(policy) = &mut deployment.rollback_policy {
            let rollback = self
                .stored_update(&policy.update)
                .await?
                .ok_or_else(|| ServiceError::Invalid(format!("rollback update {} is not imported", policy.update)))?;
            policy.update = rollback.update_id;
        }
        if deployment.download_security.as_deref() == Some("http") && !self.settings.public_url.starts_with("http://") {
            return Err(ServiceError::Invalid(
                "downloadSecurity \"http\" needs a public_url with http://; this server serves downloads over https"
                    .into(),
            ));
        }
        for _ in 0..10 {
            let existing = self.store.deployment(&deployment.group_id, &deployment.deployment_id).await?;
            let expected = match &existing {
                Some(record) => {
                    let old: StoredDeployment = parse(&record.body)?;
                    if old.is_cloud_initiated_rollback {
                        return Err(ServiceError::Conflict(
                            "a cloud-initiated rollback deployment cannot be changed".into(),
                        ));
                    }
                    deployment.created_date_time = old.created_date_time.clone();
                    if update_key(&old.update) == update_key(&deployment.update) {
                        deployment.subgroups = old.subgroups.clone();
                    }
                    self.prepare_rollout(&mut deployment, Some(&old)).await?;
                    Some(record.revision)
                }
                None => {
                    self.prepare_rollout(&mut deployment, None).await?;
                    None
                }
            };
            let body = serde_json::to_string(&deployment).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            if self.store.put_deployment(&deployment.group_id, &deployment.deployment_id, &body, expected).await? {
                self.wake();
                return Ok(deployment);
            }
        }
        Err(ServiceError::Conflict("the deployment is changing concurrently; try again".into()))
    }

    /// A deployment.
    pub async fn deployment(&self, group: &str, id: &str) -> Result<Option<(StoredDeployment, i64)>, ServiceError> {
        self.store.deployment(group, id).await?.map(|r| Ok((parse(&r.body)?, r.revision))).transpose()
    }

    /// Deletes a deployment (devices keep what they were told).
    pub async fn delete_deployment(&self, group: &str, id: &str) -> Result<bool, ServiceError> {
        let deleted = self.store.delete_deployment(group, id).await?;
        self.store.delete_rollout_members(group, id).await?;
        self.wake();
        Ok(deleted)
    }

    /// Applies `change` to a deployment with compare-and-swap retries.
    pub async fn change_deployment(
        &self,
        group: &str,
        id: &str,
        change: impl Fn(&mut StoredDeployment) -> Result<(), ServiceError>,
    ) -> Result<StoredDeployment, ServiceError> {
        for _ in 0..10 {
            let (mut deployment, revision) = self
                .deployment(group, id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("deployment {id} of group {group} not found")))?;
            change(&mut deployment)?;
            let body = serde_json::to_string(&deployment).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            if self.store.put_deployment(group, id, &body, Some(revision)).await? {
                self.wake();
                return Ok(deployment);
            }
        }
        Err(ServiceError::Conflict("the deployment is changing concurrently; try again".into()))
    }

    /// Cancels a deployment in one subgroup: its devices are told action 255.
    pub async fn cancel(&self, group: &str, class: &str, id: &str) -> Result<StoredDeployment, ServiceError> {
        self.change_deployment(group, id, |d| {
            let subgroup = d.subgroups.get_mut(class).ok_or_else(|| {
                ServiceError::NotFound(format!("deployment {id} has not reached device class {class}"))
            })?;
            subgroup.canceled = true;
            Ok(())
        })
        .await
    }

    /// Retries a deployment in one subgroup: its failed devices get the same workflow id with a
    /// new `retryTimestamp`.
    pub async fn retry(&self, group: &str, class: &str, id: &str) -> Result<StoredDeployment, ServiceError> {
        let (current, _) = self
            .deployment(group, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("deployment {id} of group {group} not found")))?;
        let subgroup = current
            .subgroups
            .get(class)
            .ok_or_else(|| ServiceError::NotFound(format!("deployment {id} has not reached device class {class}")))?;
        if subgroup.canceled {
            return Err(ServiceError::Conflict(format!("deployment {id} is cancelled in device class {class}")));
        }
        let failed = self.failed_devices(&current, class).await?;
        let timestamp = now_service_timestamp();
        self.change_deployment(group, id, |d| {
            let subgroup = d.subgroups.get_mut(class).ok_or_else(|| {
                ServiceError::NotFound(format!("deployment {id} has not reached device class {class}"))
            })?;
            subgroup.retry_timestamp = Some(timestamp.clone());
            subgroup.retry_count += 1;
            let mut devices = subgroup.retry_devices.clone();
            devices.extend(failed.iter().cloned());
            devices.sort();
            devices.dedup();
            subgroup.retry_devices = devices;
            Ok(())
        })
        .await
    }

    /// Every record matching `filter`, in device id order (read in keyset chunks).
    pub async fn all_records(&self, filter: &RecordFilter) -> Result<Vec<RecordRow>, ServiceError> {
        let mut out: Vec<RecordRow> = Vec::new();
        loop {
            let after = out.last().map(|r| r.device_id.clone());
            let chunk = self.store.records(filter, after.as_deref(), RECORD_CHUNK).await?;
            let done = i64::try_from(chunk.len()).unwrap_or(i64::MAX) < RECORD_CHUNK;
            out.extend(chunk);
            if done {
                return Ok(out);
            }
        }
    }

    /// The devices that failed `deployment` in its subgroup of `class`: only devices that
    /// reported its workflow can have failed, so only their records are read.
    pub async fn failed_devices(
        &self,
        deployment: &StoredDeployment,
        class: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let Some(subgroup) = deployment.subgroups.get(class) else { return Ok(Vec::new()) };
        let filter = RecordFilter {
            group_id: Some(deployment.group_id.clone()),
            class_id: Some(class.to_owned()),
            workflow_id: Some(subgroup.workflow_id.clone()),
            ..RecordFilter::default()
        };
        Ok(self
            .all_records(&filter)
            .await?
            .into_iter()
            .filter(|d| deployment.target_devices.as_ref().is_none_or(|t| t.contains(&d.device_id)))
            .filter(|d| deploy::device_state(deployment, subgroup, &d.facts) == DeviceState::Failed)
            .map(|d| d.device_id)
            .collect())
    }
}
