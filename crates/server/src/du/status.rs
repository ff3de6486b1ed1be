//! Status as typed results, computed from a [`Snapshot`]: update compliance of any set of
//! devices, group summaries, the best update of a subgroup, the status of a deployment and of
//! each of its subgroups, and the per-device states of a subgroup. The REST layer only maps
//! these to JSON.

use std::collections::BTreeMap;

use super::Snapshot;
use super::deploy::{self, Counts, DeviceState};
use super::fleet::{DeviceClass, DeviceView};
use super::model::{StoredDeployment, StoredUpdate};

/// Update compliance of some devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compliance {
    /// Devices counted.
    pub total: u64,
    /// Devices with the best update of their class (or with no update for their class).
    pub on_latest: u64,
    /// Devices with a better update that are not being updated.
    pub new_updates_available: u64,
    /// Devices with a better update in an in-progress deployment.
    pub updates_in_progress: u64,
}

/// A group's device count, its subgroups by compliance, and its deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Devices in the group.
    pub device_count: usize,
    /// Subgroups with a device that has a better update available.
    pub subgroups_with_new_updates_available: u64,
    /// Subgroups with a device being updated.
    pub subgroups_with_updates_in_progress: u64,
    /// Subgroups whose devices are all on the latest update.
    pub subgroups_on_latest_update: u64,
    /// The group's deployment ids.
    pub deployments: Vec<String>,
}

/// The best update of a subgroup and how many of its devices lack it.
#[derive(Debug, Clone, Copy)]
pub struct BestUpdate<'a> {
    /// The update.
    pub update: &'a StoredUpdate,
    /// Devices of the subgroup not on it.
    pub outdated_devices: usize,
}

/// The status of a deployment in one subgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubgroupStatus {
    /// `Active`, `Failed`, `Inactive` or `Canceled`.
    pub state: &'static str,
    /// Device counts by state.
    pub counts: Counts,
}

/// The status of a whole deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    /// `Active`, `ActiveWithSubgroupFailures`, `Failed`, `Inactive` or `Canceled`.
    pub state: &'static str,
    /// Each subgroup the deployment reached, by device class id.
    pub subgroups: Vec<(String, SubgroupStatus)>,
}

/// One device's state in a deployment's subgroup.
#[derive(Debug, Clone)]
pub struct DeviceDeploymentState<'a> {
    /// The device.
    pub device: &'a DeviceView,
    /// Its state in the deployment.
    pub state: DeviceState,
    /// Whether a later deployment governs it now.
    pub moved_on: bool,
    /// Retries of the subgroup that included it.
    pub retry_count: u32,
}

impl Snapshot {
    /// Update compliance of `devices`.
    pub fn compliance<'a>(&self, devices: impl IntoIterator<Item = &'a DeviceView>) -> Compliance {
        let mut compliance = Compliance::default();
        for device in devices {
            compliance.total += 1;
            if self.on_latest(device) {
                compliance.on_latest += 1;
            } else if matches!(self.device_deployment(device), Some((_, DeviceState::InProgress))) {
                compliance.updates_in_progress += 1;
            } else {
                compliance.new_updates_available += 1;
            }
        }
        compliance
    }

    /// The devices of a group by device class (its subgroups that have devices).
    pub fn subgroups_of(&self, group: &str) -> BTreeMap<String, (DeviceClass, Vec<&DeviceView>)> {
        let mut classes: BTreeMap<String, (DeviceClass, Vec<&DeviceView>)> = BTreeMap::new();
        for device in self.group_devices(group) {
            classes.entry(device.class.id.clone()).or_insert_with(|| (device.class.clone(), Vec::new())).1.push(device);
        }
        classes
    }

    /// Devices of one subgroup.
    pub fn subgroup_device_count(&self, group: &str, class: &str) -> usize {
        self.devices.iter().filter(|d| d.group_id == group && d.class.id == class).count()
    }

    /// Update compliance of one subgroup.
    pub fn subgroup_compliance(&self, group: &str, class: &str) -> Compliance {
        self.compliance(self.devices.iter().filter(|d| d.group_id == group && d.class.id == class))
    }

    /// A group's summary.
    pub fn group_summary(&self, group: &str) -> GroupSummary {
        let devices = self.group_devices(group);
        let mut classes: BTreeMap<&str, Vec<&DeviceView>> = BTreeMap::new();
        for device in &devices {
            classes.entry(device.class.id.as_str()).or_default().push(device);
        }
        let (mut new_available, mut in_progress, mut on_latest) = (0, 0, 0);
        for members in classes.values() {
            let compliance = self.compliance(members.iter().copied());
            if compliance.updates_in_progress > 0 {
                in_progress += 1;
            } else if compliance.new_updates_available > 0 {
                new_available += 1;
            } else {
                on_latest += 1;
            }
        }
        GroupSummary {
            device_count: devices.len(),
            subgroups_with_new_updates_available: new_available,
            subgroups_with_updates_in_progress: in_progress,
            subgroups_on_latest_update: on_latest,
            deployments: self
                .deployments
                .iter()
                .filter(|d| d.group_id == group)
                .map(|d| d.deployment_id.clone())
                .collect(),
        }
    }

    /// The best update for `members` (devices of one class), if any update fits the class.
    pub fn best_update_for(&self, class: &DeviceClass, members: &[&DeviceView]) -> Option<BestUpdate<'_>> {
        let update = self.best_update(class)?;
        let outdated_devices = members.iter().filter(|d| !self.on_latest(d)).count();
        Some(BestUpdate { update, outdated_devices })
    }

    /// Deployments of a group, or of its subgroup of `class`.
    pub fn deployments_of(&self, group: &str, class: Option<&str>) -> Vec<&StoredDeployment> {
        self.deployments
            .iter()
            .filter(|d| d.group_id == group && class.is_none_or(|c| d.subgroups.contains_key(c)))
            .collect()
    }

    /// A deployment by group and id.
    pub fn deployment(&self, group: &str, id: &str) -> Option<&StoredDeployment> {
        self.deployments.iter().find(|d| d.group_id == group && d.deployment_id == id)
    }

    /// The deployment whose workflow a device last reported, if the service knows it.
    pub fn last_attempted_deployment(&self, device: &DeviceView) -> Option<&StoredDeployment> {
        let workflow = device.reported_workflow()?;
        self.deployments.iter().find(|d| d.subgroups.values().any(|s| s.workflow_id == workflow))
    }

    /// The status of `deployment` in its subgroup of `class`; `None` if it has not reached it.
    pub fn subgroup_status(&self, deployment: &StoredDeployment, class: &str) -> Option<SubgroupStatus> {
        let subgroup = deployment.subgroups.get(class)?;
        let states = deploy::subgroup_devices(deployment, class, &self.devices)
            .into_iter()
            .map(|d| deploy::device_state(deployment, subgroup, d));
        let counts = Counts::of(states);
        let governs = if deployment.is_cloud_initiated_rollback {
            true
        } else {
            self.governing(&deployment.group_id, class).is_some_and(|g| g.deployment_id == deployment.deployment_id)
        };
        Some(SubgroupStatus { state: deploy::subgroup_state(subgroup, governs), counts })
    }

    /// The status of a whole deployment.
    pub fn deployment_status(&self, deployment: &StoredDeployment) -> DeploymentStatus {
        let mut states = BTreeMap::new();
        let mut subgroups = Vec::new();
        for class in deployment.subgroups.keys() {
            if let Some(status) = self.subgroup_status(deployment, class) {
                states.insert(class.clone(), (status.state, status.counts));
                subgroups.push((class.clone(), status));
            }
        }
        let started = deploy::has_started(&deployment.start_date_time, &self.now);
        DeploymentStatus { state: deploy::deployment_state(&states, started), subgroups }
    }

    /// Each device's state in `deployment`'s subgroup of `class`; `None` if it has not reached it.
    pub fn device_states(&self, deployment: &StoredDeployment, class: &str) -> Option<Vec<DeviceDeploymentState<'_>>> {
        let subgroup = deployment.subgroups.get(class)?;
        let states = deploy::subgroup_devices(deployment, class, &self.devices)
            .into_iter()
            .map(|device| {
                let state = deploy::device_state(deployment, subgroup, device);
                let moved_on = match self.device_deployment(device) {
                    Some((current, _)) => current.deployment_id != deployment.deployment_id,
                    None => false,
                };
                let retry_count =
                    if subgroup.retry_devices.contains(&device.device_id) { subgroup.retry_count } else { 0 };
                DeviceDeploymentState { device, state, moved_on, retry_count }
            })
            .collect();
        Some(states)
    }
}
