//! The questions the operator dashboard (`ui`) asks, answered as typed values: the fleet
//! overview, groups with their subgroups, a deployment with its per-device rows, a device with
//! its timeline, the device list. The dashboard reads nothing else, so how these are computed
//! (from the per-device records `du_device`, counted by `GROUP BY` or read a keyset page at a
//! time) can change behind these signatures.

use duhub_proto::result::{ExtendedResultCode, ResultCode};
use duhub_proto::twin::AgentState;
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};

use super::deploy::{self, Counts, DeviceState};
use super::fleet::{DeviceClass, DeviceView, GROUP_TAG};
use super::model::{StoredDeployment, StoredUpdate};
use super::status::{Compliance, DeploymentStatus};
use super::{DeviceUpdate, ServiceError};
use crate::store::{DeviceListing, FleetRow, RecordFilter, RecordRow, StoreError};

/// What the overview page shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Registered devices.
    pub registered: u64,
    /// Devices connected now.
    pub online: u64,
    /// Update compliance of the devices with an agent.
    pub compliance: Compliance,
    /// Devices that failed in a deployment started in the last day, by the extended result
    /// code of their last install result, most frequent first.
    pub recent_failures: Vec<(ExtendedResultCode, u64)>,
    /// Deployments that are not finished everywhere, newest first.
    pub active: Vec<DeploymentSummary>,
}

/// A deployment with its status and its device counts over all subgroups.
#[derive(Debug, Clone)]
pub struct DeploymentSummary {
    /// The deployment.
    pub deployment: StoredDeployment,
    /// Its status.
    pub status: DeploymentStatus,
    /// Device counts summed over its subgroups.
    pub counts: Counts,
}

/// A group with its compliance and subgroups.
#[derive(Debug, Clone)]
pub struct GroupOverview {
    /// Group id.
    pub id: String,
    /// Devices in it.
    pub device_count: usize,
    /// Its compliance.
    pub compliance: Compliance,
    /// Its subgroups by device class.
    pub subgroups: Vec<SubgroupOverview>,
    /// Its deployment ids.
    pub deployments: Vec<String>,
}

/// A subgroup (the devices of one class in a group).
#[derive(Debug, Clone)]
pub struct SubgroupOverview {
    /// The class.
    pub class: DeviceClass,
    /// Devices.
    pub device_count: usize,
    /// Compliance.
    pub compliance: Compliance,
    /// The best update for the class and how many devices lack it.
    pub best_update: Option<(UpdateId, usize)>,
}

/// One device's row in a deployment.
#[derive(Debug, Clone)]
pub struct DeploymentDevice {
    /// Device id.
    pub device_id: String,
    /// Device class id.
    pub class_id: String,
    /// State in the deployment.
    pub state: DeviceState,
    /// Whether a later deployment governs it now.
    pub moved_on: bool,
    /// Retries that included it.
    pub retry_count: u32,
    /// Result code of its last install result.
    pub result_code: Option<ResultCode>,
    /// Extended result code of its last install result.
    pub extended_result_code: Option<ExtendedResultCode>,
    /// `resultDetails` of its last install result.
    pub result_details: Option<String>,
}

/// A deployment with the rollback deployments it triggered and a page of its devices.
#[derive(Debug, Clone)]
pub struct DeploymentDetail {
    /// The deployment, status and counts.
    pub summary: DeploymentSummary,
    /// Rollback deployments fired by its policy, by device class.
    pub rollbacks: Vec<(String, String)>,
    /// The page of devices asked for.
    pub devices: Vec<DeploymentDevice>,
    /// Whether more devices follow the page.
    pub more: bool,
}

/// Which devices of a deployment to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePage {
    /// Only devices in this state.
    pub state: Option<DeviceState>,
    /// Devices after this id (`""`: from the first).
    pub after: String,
    /// At most this many.
    pub limit: usize,
}

/// A device as its page shows it.
#[derive(Debug, Clone)]
pub struct DeviceDetail {
    /// Device id.
    pub device_id: String,
    /// `Connected` or `Disconnected`, and when that last changed.
    pub connection_state: String,
    /// When the connection state last changed.
    pub connection_state_updated: Option<String>,
    /// Last MQTT activity.
    pub last_activity: Option<String>,
    /// Group (`$default` without a tag), when it runs a Device Update agent.
    pub group: Option<String>,
    /// Device class, when it runs a Device Update agent.
    pub class: Option<DeviceClass>,
    /// Reported `deviceUpdate.agent`.
    pub agent: Value,
    /// Reported `deviceInformation`.
    pub device_information: Value,
    /// Whether it has the best update of its class.
    pub on_latest: Option<bool>,
    /// Deployments of its group that reached its class, oldest first, with its state in each.
    pub timeline: Vec<TimelineEntry>,
}

/// A deployment in a device's timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    /// Deployment id.
    pub deployment_id: String,
    /// Group.
    pub group_id: String,
    /// The update.
    pub update: UpdateId,
    /// When the subgroup joined it.
    pub started: String,
    /// The device's state in it.
    pub state: DeviceState,
    /// Whether the device reported this deployment's workflow last (so the result below is
    /// from it).
    pub last_reported: bool,
}

/// One device of the device list.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// `Connected` or `Disconnected`.
    pub connection_state: String,
    /// Last MQTT activity.
    pub last_activity: Option<String>,
    /// The `ADUGroup` tag.
    pub group: Option<String>,
    /// The installed update id the agent reports.
    pub installed: Option<UpdateId>,
    /// The agent's state (`Idle`, `DeploymentInProgress`, `Failed`).
    pub agent_state: Option<String>,
}

impl DeviceUpdate {
    /// The fleet overview.
    pub async fn overview(&self) -> Result<Overview, ServiceError> {
        let (registered, online) = self.store.device_counts().await?;
        let snapshot = self.snapshot().await?;
        let compliance = snapshot.compliance(None, None);
        let day_ago = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let recent: Vec<String> = snapshot
            .deployments
            .iter()
            .flat_map(|d| d.subgroups.values())
            .filter(|s| parse_time(&s.started).is_some_and(|at| at >= day_ago))
            .map(|s| s.workflow_id.clone())
            .collect();
        let mut recent_failures: Vec<(ExtendedResultCode, u64)> = self
            .store
            .failures_by_code(&recent)
            .await?
            .into_iter()
            .map(|(code, n)| (ExtendedResultCode(u32::try_from(code & 0xFFFF_FFFF).unwrap_or(0)), n))
            .collect();
        recent_failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut active: Vec<DeploymentSummary> = snapshot
            .deployments
            .iter()
            .map(|d| summary(&snapshot, d))
            .filter(|s| s.counts.in_progress > 0 || (s.status.state == "Inactive" && !s.deployment.is_canceled()))
            .collect();
        active.sort_by(|a, b| b.deployment.created_date_time.cmp(&a.deployment.created_date_time));
        Ok(Overview { registered, online, compliance, recent_failures, active })
    }

    /// Every group with its subgroups.
    pub async fn group_overviews(&self) -> Result<Vec<GroupOverview>, ServiceError> {
        let snapshot = self.snapshot().await?;
        let groups = self.groups().await?;
        Ok(groups
            .into_iter()
            .map(|(id, _)| {
                let summary = snapshot.group_summary(&id);
                let subgroups = snapshot
                    .subgroups_of(&id)
                    .into_values()
                    .map(|(class, count)| {
                        let best = snapshot
                            .best_update_for(&id, &class)
                            .map(|b| (b.update.update_id.clone(), b.outdated_devices));
                        SubgroupOverview {
                            device_count: usize::try_from(count).unwrap_or(usize::MAX),
                            compliance: snapshot.compliance(Some(&id), Some(&class.id)),
                            best_update: best,
                            class,
                        }
                    })
                    .collect();
                GroupOverview {
                    compliance: snapshot.compliance(Some(&id), None),
                    device_count: summary.device_count,
                    deployments: summary.deployments,
                    subgroups,
                    id,
                }
            })
            .collect())
    }

    /// Devices of a group with their device class ids, in id order after `after`, at most
    /// `limit`, and whether more follow (one indexed page of the per-device records).
    pub async fn group_members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, bool), ServiceError> {
        let filter = RecordFilter { group_id: Some(group.to_owned()), ..Default::default() };
        let wanted = i64::try_from(limit).unwrap_or(1000).saturating_add(1);
        let after = (!after.is_empty()).then_some(after);
        let mut rows = self.store.records(&filter, after, wanted).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows.into_iter().map(|r| (r.device_id, r.class_id)).collect(), more))
    }

    /// Every deployment with its status, newest first.
    pub async fn deployment_summaries(&self) -> Result<Vec<DeploymentSummary>, ServiceError> {
        let snapshot = self.snapshot().await?;
        let mut all: Vec<_> = snapshot.deployments.iter().map(|d| summary(&snapshot, d)).collect();
        all.sort_by(|a, b| b.deployment.created_date_time.cmp(&a.deployment.created_date_time));
        Ok(all)
    }

    /// A deployment with its status, rollbacks and one page of its devices (every subgroup, in
    /// id order after `devices.after`, optionally only those in `devices.state`), read at one
    /// moment; `None` for an unknown deployment.
    pub async fn deployment_detail(
        &self,
        group: &str,
        id: &str,
        devices: &DevicePage,
    ) -> Result<Option<DeploymentDetail>, ServiceError> {
        let snapshot = self.snapshot_of(Some(group)).await?;
        let Some(deployment) = snapshot.deployment(group, id) else { return Ok(None) };
        let rollbacks = deployment
            .subgroups
            .iter()
            .filter_map(|(class, s)| Some((class.clone(), s.rollback_deployment.clone()?)))
            .collect();
        // Pages of the group's records until the page is full. A device's state is computed
        // from its class and facts, not stored: with a state filter only the records of the
        // (class, facts) buckets in that state are read, and the state is checked here. The
        // first read is the page and one more (all an unfiltered page needs); each further read
        // is twice the last, up to 500 records.
        let filter = RecordFilter { group_id: Some(group.to_owned()), ..Default::default() };
        let in_state: Option<Vec<(String, crate::store::Facts)>> = devices.state.map(|state| {
            snapshot
                .buckets_of(group, None)
                .filter(|b| {
                    deployment
                        .subgroups
                        .get(&b.class.id)
                        .is_some_and(|subgroup| deploy::device_state(deployment, subgroup, &b.facts) == state)
                })
                .map(|b| (b.class.id.clone(), b.facts.clone()))
                .collect()
        });
        let mut members: Vec<RecordRow> = Vec::new();
        let mut cursor = devices.after.clone();
        let mut more = false;
        let mut size = devices.limit.saturating_add(1).min(500);
        'pages: loop {
            let wanted = i64::try_from(size).unwrap_or(500);
            let after = (!cursor.is_empty()).then_some(cursor.as_str());
            let batch = self.store.records_reporting(&filter, in_state.as_deref(), after, wanted).await?;
            let exhausted = batch.len() < size;
            size = size.saturating_mul(2).min(500);
            for record in batch {
                cursor.clone_from(&record.device_id);
                let Some(subgroup) = deployment.subgroups.get(&record.class_id) else { continue };
                if deployment.target_devices.as_ref().is_some_and(|t| !t.contains(&record.device_id)) {
                    continue;
                }
                if devices.state.is_some_and(|s| s != deploy::device_state(deployment, subgroup, &record.facts)) {
                    continue;
                }
                if members.len() == devices.limit {
                    more = true;
                    break 'pages;
                }
                members.push(record);
            }
            if exhausted {
                break;
            }
        }
        let ids: Vec<String> = members.iter().map(|m| m.device_id.clone()).collect();
        let results = self.store.last_install_results(&ids).await?;
        let mut rows = Vec::new();
        for class in deployment.subgroups.keys() {
            for s in snapshot.device_states(deployment, class, &members).unwrap_or_default() {
                let result: Option<duhub_proto::twin::LastInstallResult> =
                    results.get(&s.device.device_id).and_then(|r| serde_json::from_value(r.clone()).ok());
                rows.push(DeploymentDevice {
                    device_id: s.device.device_id.clone(),
                    class_id: class.clone(),
                    state: s.state,
                    moved_on: s.moved_on,
                    retry_count: s.retry_count,
                    result_code: s.device.facts.result(),
                    extended_result_code: result.as_ref().and_then(|r| r.extended_result_code()),
                    result_details: result.and_then(|r| r.result_details),
                });
            }
        }
        rows.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(Some(DeploymentDetail { summary: summary(&snapshot, deployment), rollbacks, devices: rows, more }))
    }

    /// A device's page; `None` when no such device is registered.
    pub async fn device_detail(&self, device_id: &str) -> Result<Option<DeviceDetail>, ServiceError> {
        let device = match self.store.device(device_id).await {
            Ok(device) => device,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(other) => return Err(other.into()),
        };
        let twin = self.store.twin(device_id).await?;
        let reported = Value::Object(twin.reported.clone());
        let agent = reported.pointer("/deviceUpdate/agent").cloned().unwrap_or(Value::Null);
        let device_information = reported.get("deviceInformation").cloned().unwrap_or(Value::Null);
        let row = FleetRow {
            device_id: twin.device_id.clone(),
            tags: Value::Object(twin.tags.clone()),
            desired: Value::Object(twin.desired.clone()),
            reported,
            model_id: twin.model_id.clone(),
        };
        let view = DeviceView::from_row(&row);
        let mut timeline = Vec::new();
        let mut on_latest = None;
        if let Some(view) = &view {
            let snapshot = self.snapshot_of(Some(&view.group_id)).await?;
            on_latest = Some(snapshot.on_latest(&view.class, view.installed.as_ref()));
            for deployment in snapshot.deployments_of(&view.group_id, Some(&view.class.id)) {
                let Some(subgroup) = deployment.subgroups.get(&view.class.id) else { continue };
                if deployment.target_devices.as_ref().is_some_and(|t| !t.contains(&view.device_id)) {
                    continue;
                }
                timeline.push(TimelineEntry {
                    deployment_id: deployment.deployment_id.clone(),
                    group_id: deployment.group_id.clone(),
                    update: deployment.update.clone(),
                    started: subgroup.started.clone(),
                    state: deploy::device_state(deployment, subgroup, view),
                    last_reported: view.reported_workflow() == Some(subgroup.workflow_id.as_str()),
                });
            }
            timeline.sort_by(|a, b| a.started.cmp(&b.started));
        }
        Ok(Some(DeviceDetail {
            device_id: device.device_id,
            connection_state: device.connection_state,
            connection_state_updated: device.connection_state_updated,
            last_activity: device.last_activity,
            group: view.as_ref().map(|v| v.group_id.clone()),
            class: view.as_ref().map(|v| v.class.clone()),
            on_latest,
            agent,
            device_information,
            timeline,
        }))
    }

    /// Devices whose id starts with `prefix`, after `after`, at most `limit`; and whether more
    /// follow.
    pub async fn device_rows(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<DeviceRow>, bool), ServiceError> {
        let wanted = i64::try_from(limit).unwrap_or(1000).saturating_add(1);
        let mut listed = self.store.devices_by_prefix(prefix, after, wanted).await?;
        let more = listed.len() > limit;
        listed.truncate(limit);
        Ok((listed.into_iter().map(device_row).collect(), more))
    }

    /// Puts a device into a group (its `ADUGroup` tag); an empty group removes the tag (the
    /// device joins `$default`).
    pub async fn set_device_group(&self, device_id: &str, group: &str) -> Result<(), ServiceError> {
        let value = if group.is_empty() { Value::Null } else { Value::from(group) };
        self.store.patch_tags(device_id, &json!({ GROUP_TAG: value }), None).await?;
        self.wake();
        Ok(())
    }

    /// Updates that may be deployed, for the deployment form.
    pub async fn deployable_updates(&self) -> Result<Vec<StoredUpdate>, ServiceError> {
        Ok(self.updates().await?.into_iter().filter(|u| u.is_deployable).collect())
    }
}

fn summary(snapshot: &super::Snapshot, deployment: &StoredDeployment) -> DeploymentSummary {
    let status = snapshot.deployment_status(deployment);
    let mut counts = Counts::default();
    for (_, s) in &status.subgroups {
        counts.total += s.counts.total;
        counts.in_progress += s.counts.in_progress;
        counts.failed += s.counts.failed;
        counts.succeeded += s.counts.succeeded;
        counts.canceled += s.counts.canceled;
    }
    DeploymentSummary { deployment: deployment.clone(), status, counts }
}

fn device_row(listing: DeviceListing) -> DeviceRow {
    let agent = listing.reported.pointer("/deviceUpdate/agent");
    DeviceRow {
        group: listing.tags.get(GROUP_TAG).and_then(Value::as_str).map(str::to_owned),
        installed: agent
            .and_then(|a| a.get("installedUpdateId"))
            .and_then(Value::as_str)
            .and_then(UpdateId::from_installed_update_id),
        agent_state: agent
            .and_then(|a| a.get("state"))
            .and_then(Value::as_i64)
            .map(|code| format!("{:?}", AgentState::from_code(code))),
        device_id: listing.device_id,
        connection_state: listing.connection_state,
        last_activity: listing.last_activity,
    }
}

fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}
