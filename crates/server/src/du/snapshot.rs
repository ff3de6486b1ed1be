//! The fleet read at one moment: devices with an agent (from twins), deployments and updates,
//! and the questions every status answer asks of them (which deployment governs a subgroup,
//! a device's state in it, the best update of a class).

use std::collections::{BTreeMap, BTreeSet};

use duhub_proto::update_id::UpdateId;

use super::deploy::{self, DeviceState};
use super::fleet::{self, DeviceClass, DeviceView};
use super::model::{StoredDeployment, StoredUpdate, update_key};
use super::{DEVICE_CLASS, DeviceUpdate, GROUP, SUBGROUP, ServiceError, subgroup_key};
use crate::ids::now_rfc3339;

/// Everything status and compliance are computed from, read at one moment.
pub struct Snapshot {
    /// RFC 3339 time of the snapshot.
    pub now: String,
    /// Devices with an agent.
    pub devices: Vec<DeviceView>,
    /// Deployments with their revisions.
    pub deployments: Vec<StoredDeployment>,
    /// Revisions, parallel to `deployments`.
    pub revisions: Vec<i64>,
    /// Updates.
    pub updates: Vec<StoredUpdate>,
}

impl DeviceUpdate {
    /// Reads the fleet, deployments and updates, and records groups, classes and subgroups
    /// seen for the first time.
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        let devices = fleet::devices(&self.store.fleet().await?);
        let (deployments, revisions) = self.deployments().await?.into_iter().unzip();
        let updates = self.updates().await?;
        let snapshot = Snapshot { now: now_rfc3339(), devices, deployments, revisions, updates };
        let groups: BTreeSet<String> = snapshot.devices.iter().map(|d| d.group_id.clone()).collect();
        let classes: BTreeSet<String> = snapshot.devices.iter().map(|d| d.class.id.clone()).collect();
        let subgroups: BTreeSet<String> =
            snapshot.devices.iter().map(|d| subgroup_key(&d.group_id, &d.class.id)).collect();
        self.store.ensure_entities(GROUP, &groups.into_iter().collect::<Vec<_>>()).await?;
        self.store.ensure_entities(DEVICE_CLASS, &classes.into_iter().collect::<Vec<_>>()).await?;
        self.store.ensure_entities(SUBGROUP, &subgroups.into_iter().collect::<Vec<_>>()).await?;
        Ok(snapshot)
    }
}

impl Snapshot {
    /// An update by id.
    pub fn update(&self, id: &UpdateId) -> Option<&StoredUpdate> {
        let key = update_key(id);
        self.updates.iter().find(|u| update_key(&u.update_id) == key)
    }

    /// Device classes with their devices.
    pub fn classes(&self) -> BTreeMap<String, (DeviceClass, Vec<&DeviceView>)> {
        let mut classes: BTreeMap<String, (DeviceClass, Vec<&DeviceView>)> = BTreeMap::new();
        for device in &self.devices {
            classes.entry(device.class.id.clone()).or_insert_with(|| (device.class.clone(), Vec::new())).1.push(device);
        }
        classes
    }

    /// Devices of a group (all classes).
    pub fn group_devices(&self, group: &str) -> Vec<&DeviceView> {
        self.devices.iter().filter(|d| d.group_id == group).collect()
    }

    /// Updates that fit a class and may be deployed, newest version last.
    pub fn installable(&self, class: &DeviceClass) -> Vec<&StoredUpdate> {
        self.updates.iter().filter(|u| u.is_deployable && class.accepts(&u.compatibility)).collect()
    }

    /// The highest-versioned installable update of a class.
    pub fn best_update(&self, class: &DeviceClass) -> Option<&StoredUpdate> {
        self.installable(class)
            .into_iter()
            .max_by(|a, b| fleet::compare_versions(&a.update_id.version, &b.update_id.version))
    }

    /// The deployment governing a subgroup now.
    pub fn governing(&self, group: &str, class_id: &str) -> Option<&StoredDeployment> {
        let class = self.devices.iter().find(|d| d.class.id == class_id).map(|d| &d.class);
        deploy::governing(&self.deployments, group, class_id, &self.now, |d| {
            class.is_some_and(|c| self.update(&d.update).is_some_and(|u| c.accepts(&u.compatibility)))
        })
    }

    /// A device's state in the deployment governing its subgroup, if any.
    pub fn device_deployment(&self, device: &DeviceView) -> Option<(&StoredDeployment, DeviceState)> {
        let governing = self.governing(&device.group_id, &device.class.id)?;
        let assignment = deploy::assignment(governing, &self.deployments, device)?;
        Some((assignment.deployment, deploy::device_state(assignment.deployment, assignment.subgroup, device)))
    }

    /// Whether a device has the best update of its class (or there is none).
    pub fn on_latest(&self, device: &DeviceView) -> bool {
        match self.best_update(&device.class) {
            None => true,
            Some(best) => device.installed.as_ref().is_some_and(|i| update_key(i) == update_key(&best.update_id)),
        }
    }
}
