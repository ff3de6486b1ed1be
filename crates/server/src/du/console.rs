//! The questions the operator dashboard (`ui`) asks, answered as typed values: the fleet
//! overview, groups with their subgroups, a deployment with its per-device rows, a device with
//! its timeline, the device list. The dashboard reads nothing else, so how these are computed
//! (today from a [`Snapshot`](super::Snapshot); later from indexed per-device records) can
//! change behind these signatures.

use std::collections::BTreeMap;

use duhub_proto::result::{ExtendedResultCode, ResultCode};
use duhub_proto::twin::AgentState;
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};

use super::deploy::{Counts, DeviceState};
use super::fleet::{DEFAULT_GROUP, DeviceClass, DeviceView, GROUP_TAG};
use super::model::{StoredDeployment, StoredUpdate};
use super::status::{Compliance, DeploymentStatus};
use super::{DeviceUpdate, ServiceError, Snapshot};
use crate::store::{DeviceListing, FleetRow, StoreError, TwinFilter};

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
        let compliance = snapshot.compliance(&snapshot.devices);
        let day_ago = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let mut failures: BTreeMap<ExtendedResultCode, u64> = BTreeMap::new();
        for device in &snapshot.devices {
            let Some((deployment, DeviceState::Failed)) = snapshot.device_deployment(device) else { continue };
            let started = deployment.subgroups.get(&device.class.id).map(|s| s.started.as_str());
            if started.and_then(parse_time).is_none_or(|at| at < day_ago) {
                continue;
            }
            let code = device.agent.last_install_result.as_ref().and_then(|r| r.extended_result_code());
            *failures.entry(code.unwrap_or_default()).or_default() += 1;
        }
        let mut recent_failures: Vec<_> = failures.into_iter().collect();
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
                    .map(|(class, members)| {
                        let best = snapshot
                            .best_update_for(&class, &members)
                            .map(|b| (b.update.update_id.clone(), b.outdated_devices));
                        SubgroupOverview {
                            device_count: members.len(),
                            compliance: snapshot.compliance(members.iter().copied()),
                            best_update: best,
                            class,
                        }
                    })
                    .collect();
                GroupOverview {
                    compliance: snapshot.compliance(snapshot.group_devices(&id)),
                    device_count: summary.device_count,
                    deployments: summary.deployments,
                    subgroups,
                    id,
                }
            })
            .collect())
    }

    /// Devices of a group with their device class ids, in id order after `after`, at most
    /// `limit`, and whether more follow. A tagged group is read one page at a time through the
    /// twin query (never the whole fleet); `$default` (no tag) needs the fleet.
    pub async fn group_members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, bool), ServiceError> {
        let filter = if group == DEFAULT_GROUP { None } else { TwinFilter::tag(GROUP_TAG, group) };
        let Some(filter) = filter else {
            let snapshot = self.snapshot().await?;
            let mut members = snapshot
                .group_devices(group)
                .into_iter()
                .filter(|d| d.device_id.as_str() > after)
                .map(|d| (d.device_id.clone(), d.class.id.clone()));
            let page: Vec<_> = members.by_ref().take(limit).collect();
            return Ok((page, members.next().is_some()));
        };
        let mut members = Vec::new();
        let mut cursor = after.to_owned();
        // Devices without an agent carry the tag too but are no members: read on until a page
        // is full or the twins end.
        loop {
            let wanted = i64::try_from(limit).unwrap_or(1000).saturating_add(1);
            let twins = self.store.query_twins(&filter, &cursor, wanted).await?;
            let exhausted = twins.len() < usize::try_from(wanted).unwrap_or(usize::MAX);
            for queried in &twins {
                let twin = &queried.twin;
                let row = FleetRow {
                    device_id: twin.device_id.clone(),
                    tags: Value::Object(twin.tags.clone()),
                    desired: Value::Null,
                    reported: Value::Object(twin.reported.clone()),
                    model_id: twin.model_id.clone(),
                };
                if let Some(view) = DeviceView::from_row(&row) {
                    if members.len() == limit {
                        return Ok((members, true));
                    }
                    members.push((view.device_id, view.class.id));
                }
            }
            match twins.last() {
                Some(last) if !exhausted => cursor.clone_from(&last.twin.device_id),
                _ => return Ok((members, false)),
            }
        }
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
        let snapshot = self.snapshot().await?;
        let Some(deployment) = snapshot.deployment(group, id) else { return Ok(None) };
        let rollbacks = deployment
            .subgroups
            .iter()
            .filter_map(|(class, s)| Some((class.clone(), s.rollback_deployment.clone()?)))
            .collect();
        let mut rows: Vec<DeploymentDevice> = Vec::new();
        for class in deployment.subgroups.keys() {
            for s in snapshot.device_states(deployment, class).unwrap_or_default() {
                if devices.state.is_some_and(|wanted| wanted != s.state)
                    || s.device.device_id.as_str() <= devices.after.as_str()
                {
                    continue;
                }
                let result = s.device.agent.last_install_result.as_ref();
                rows.push(DeploymentDevice {
                    device_id: s.device.device_id.clone(),
                    class_id: class.clone(),
                    state: s.state,
                    moved_on: s.moved_on,
                    retry_count: s.retry_count,
                    result_code: result.map(|r| r.result_code),
                    extended_result_code: result.and_then(|r| r.extended_result_code()),
                    result_details: result.and_then(|r| r.result_details.clone()),
                });
            }
        }
        rows.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        let more = rows.len() > devices.limit;
        rows.truncate(devices.limit);
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
        // A device's state in a deployment depends on it and the deployment records only, so a
        // snapshot holding just this device answers as the whole fleet's would, without
        // reading the fleet.
        let row = FleetRow {
            device_id: twin.device_id.clone(),
            tags: Value::Object(twin.tags.clone()),
            desired: Value::Object(twin.desired.clone()),
            reported,
            model_id: twin.model_id.clone(),
        };
        let (deployments, revisions) = self.deployments().await?.into_iter().unzip();
        let snapshot = Snapshot {
            now: crate::ids::now_rfc3339(),
            devices: DeviceView::from_row(&row).into_iter().collect(),
            deployments,
            revisions,
            updates: self.updates().await?,
        };
        let view = snapshot.devices.first();
        let mut timeline = Vec::new();
        if let Some(view) = view {
            for deployment in snapshot.deployments_of(&view.group_id, Some(&view.class.id)) {
                let Some(states) = snapshot.device_states(deployment, &view.class.id) else { continue };
                let Some(mine) = states.iter().find(|s| s.device.device_id == device_id) else { continue };
                let subgroup = deployment.subgroups.get(&view.class.id);
                timeline.push(TimelineEntry {
                    deployment_id: deployment.deployment_id.clone(),
                    group_id: deployment.group_id.clone(),
                    update: deployment.update.clone(),
                    started: subgroup.map(|s| s.started.clone()).unwrap_or_default(),
                    state: mine.state,
                    last_reported: subgroup.is_some_and(|s| view.reported_workflow() == Some(s.workflow_id.as_str())),
                });
            }
            timeline.sort_by(|a, b| a.started.cmp(&b.started));
        }
        Ok(Some(DeviceDetail {
            device_id: device.device_id,
            connection_state: device.connection_state,
            connection_state_updated: device.connection_state_updated,
            last_activity: device.last_activity,
            group: view.map(|v| v.group_id.clone()),
            class: view.map(|v| v.class.clone()),
            on_latest: view.map(|v| snapshot.on_latest(v)),
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
