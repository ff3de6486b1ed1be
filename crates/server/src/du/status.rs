//! Status as typed results, computed from a [`Snapshot`] (device counts from the records): update compliance of any set of
//! devices, group summaries, the best update of a subgroup, the status of a deployment and of
//! each of its subgroups, and the per-device states of a subgroup. The REST layer only maps
//! these to JSON.

use std::collections::BTreeMap;

use super::Snapshot;
use super::deploy::{self, Counts, DeviceState};
use super::fleet::DeviceClass;
use super::model::{StoredDeployment, StoredUpdate};
use crate::store::{Facts, RecordRow};

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
    /// The device's record.
    pub device: &'a RecordRow,
    /// Its state in the deployment.
    pub state: DeviceState,
    /// Whether a later deployment governs it now.
    pub moved_on: bool,
    /// Retries of the subgroup that included it.
    pub retry_count: u32,
}

/// Where a device stands in update compliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    OnLatest,
    InProgress,
    NewAvailable,
}

impl Compliance {
    fn add(&mut self, standing: Standing, devices: u64) {
        self.total += devices;
        match standing {
            Standing::OnLatest => self.on_latest += devices,
            Standing::InProgress => self.updates_in_progress += devices,
            Standing::NewAvailable => self.new_updates_available += devices,
        }
    }

    fn remove(&mut self, standing: Standing) {
        self.total = self.total.saturating_sub(1);
        let counter = match standing {
            Standing::OnLatest => &mut self.on_latest,
            Standing::InProgress => &mut self.updates_in_progress,
            Standing::NewAvailable => &mut self.new_updates_available,
        };
        *counter = counter.saturating_sub(1);
    }
}

impl Snapshot {
    fn standing(&self, group: &str, class: &DeviceClass, device_id: Option<&str>, facts: &Facts) -> Standing {
        if self.on_latest(class, facts.installed().as_ref()) {
            Standing::OnLatest
        } else if matches!(
            self.device_deployment(group, &class.id, device_id, facts),
            Some((_, DeviceState::InProgress))
        ) {
            Standing::InProgress
        } else {
            Standing::NewAvailable
        }
    }

    /// Update compliance of every device, of a group, or of one subgroup: the buckets counted
    /// as a whole, then each rollback target moved to where its own assignment puts it.
    pub fn compliance(&self, group: Option<&str>, class: Option<&str>) -> Compliance {
        let mut compliance = Compliance::default();
        let matches = |g: &str, c: &str| group.is_none_or(|x| x == g) && class.is_none_or(|x| x == c);
        for bucket in self.buckets.iter().filter(|b| matches(&b.group_id, &b.class.id)) {
            compliance.add(self.standing(&bucket.group_id, &bucket.class, None, &bucket.facts), bucket.count);
        }
        for target in self.targets.iter().filter(|t| matches(&t.group_id, &t.class_id)) {
            let Some(class) = self.class(&target.class_id) else { continue };
            let as_counted = self.standing(&target.group_id, class, None, &target.facts);
            let own = self.standing(&target.group_id, class, Some(&target.device_id), &target.facts);
            if own != as_counted {
                compliance.remove(as_counted);
                compliance.add(own, 1);
            }
        }
        compliance
    }

    /// The classes of a group that have devices, with their device counts.
    pub fn subgroups_of(&self, group: &str) -> BTreeMap<String, (DeviceClass, u64)> {
        let mut classes: BTreeMap<String, (DeviceClass, u64)> = BTreeMap::new();
        for bucket in self.buckets_of(group, None) {
            classes.entry(bucket.class.id.clone()).or_insert_with(|| (bucket.class.clone(), 0)).1 += bucket.count;
        }
        classes
    }

    /// Devices of one subgroup.
    pub fn subgroup_device_count(&self, group: &str, class: &str) -> u64 {
        self.buckets_of(group, Some(class)).map(|b| b.count).sum()
    }

    /// A group's summary.
    pub fn group_summary(&self, group: &str) -> GroupSummary {
        let (mut new_available, mut in_progress, mut on_latest) = (0, 0, 0);
        for class in self.subgroups_of(group).keys() {
            let compliance = self.compliance(Some(group), Some(class));
            if compliance.updates_in_progress > 0 {
                in_progress += 1;
            } else if compliance.new_updates_available > 0 {
                new_available += 1;
            } else {
                on_latest += 1;
            }
        }
        GroupSummary {
            device_count: usize::try_from(self.group_device_count(group)).unwrap_or(usize::MAX),
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

    /// The best update for the devices of `class` in `group`, if any update fits the class.
    pub fn best_update_for(&self, group: &str, class: &DeviceClass) -> Option<BestUpdate<'_>> {
        let update = self.best_update(class)?;
        let outdated: u64 = self
            .buckets_of(group, Some(&class.id))
            .filter(|b| !self.on_latest(class, b.facts.installed().as_ref()))
            .map(|b| b.count)
            .sum();
        Some(BestUpdate { update, outdated_devices: usize::try_from(outdated).unwrap_or(usize::MAX) })
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

    /// The status of `deployment` in its subgroup of `class`; `None` if it has not reached it.
    pub fn subgroup_status(&self, deployment: &StoredDeployment, class: &str) -> Option<SubgroupStatus> {
        let subgroup = deployment.subgroups.get(class)?;
        let mut counts = Counts::default();
        match &deployment.target_devices {
            Some(targets) => {
                for target in self.targets_of(&deployment.group_id, Some(class)) {
                    if targets.contains(&target.device_id) {
                        counts.add(deploy::device_state(deployment, subgroup, &target.facts), 1);
                    }
                }
            }
            None => {
                for bucket in self.buckets_of(&deployment.group_id, Some(class)) {
                    counts.add(deploy::device_state(deployment, subgroup, &bucket.facts), bucket.count);
                }
            }
        }
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

    /// The state of each of `members` (records of the deployment's group and class `class`) in
    /// `deployment`; `None` if it has not reached the class. Devices a rollback deployment does
    /// not target are left out.
    pub fn device_states<'a>(
        &self,
        deployment: &StoredDeployment,
        class: &str,
        members: &'a [RecordRow],
    ) -> Option<Vec<DeviceDeploymentState<'a>>> {
        let subgroup = deployment.subgroups.get(class)?;
        let known = self.class(class).cloned();
        let device_class = known
            .or_else(|| members.iter().find(|m| m.class_id == class).map(|m| DeviceClass::from_body(&m.class_body)));
        // One governing deployment for the whole page: every member is of the same subgroup.
        let governing = self.governing_class(&deployment.group_id, class, device_class.as_ref());
        let states = members
            .iter()
            .filter(|d| d.group_id == deployment.group_id && d.class_id == class)
            .filter(|d| deployment.target_devices.as_ref().is_none_or(|t| t.contains(&d.device_id)))
            .map(|device| {
                let state = deploy::device_state(deployment, subgroup, &device.facts);
                let moved_on = governing
                    .and_then(|g| deploy::assignment(g, &self.deployments, class, Some(&device.device_id)))
                    .is_some_and(|current| current.deployment.deployment_id != deployment.deployment_id);
                let retry_count =
                    if subgroup.retry_devices.contains(&device.device_id) { subgroup.retry_count } else { 0 };
                DeviceDeploymentState { device, state, moved_on, retry_count }
            })
            .collect();
        Some(states)
    }
}
