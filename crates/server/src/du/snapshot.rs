//! What status is computed from, read at one moment: device counts by group, class and what
//! they report (from the per-device records, `GROUP BY`, never every twin), the records of
//! rollback targets, deployments and updates; and the questions every status answer asks of
//! them (which deployment governs a subgroup, a device's state in it, the best update of a
//! class).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use duhub_proto::update_id::UpdateId;

use super::deploy::{self, DeviceState};
use super::fleet::{self, DeviceClass};
use super::model::{StoredDeployment, StoredUpdate, update_key};
use super::{DEVICE_CLASS, DeviceUpdate, GROUP, SUBGROUP, ServiceError, subgroup_key};
use crate::ids::now_rfc3339;
#[cfg(doc)]
use crate::store::Store;
use crate::store::{Facts, RecordRow};

/// Devices of one group and class that report the same [`Facts`].
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Group id.
    pub group_id: String,
    /// Device class.
    pub class: DeviceClass,
    /// What they report.
    pub facts: Facts,
    /// How many devices.
    pub count: u64,
}

/// Everything status and compliance are computed from, read at one moment.
pub struct Snapshot {
    /// RFC 3339 time of the snapshot.
    pub now: String,
    /// Device counts by group, class and facts.
    pub buckets: Vec<Bucket>,
    /// The records of rollback deployments' target devices (their state differs from their
    /// bucket's: they follow the rollback).
    pub targets: Vec<RecordRow>,
    /// Deployments with their revisions.
    pub deployments: Vec<StoredDeployment>,
    /// Revisions, parallel to `deployments`.
    pub revisions: Vec<i64>,
    /// Updates.
    pub updates: Vec<StoredUpdate>,
}

/// Snapshots of the database's current data version ([`Store::data_version`]), so that
/// repeated questions about a fleet that did not change cost no `GROUP BY` and no parsing of
/// deployments and updates. Every write (on any node) changes the version, so an answer from
/// the cache is the answer the database would give now; only the snapshot's `now` is fresh.
#[derive(Default)]
pub(super) struct SnapshotCache {
    state: std::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// The data version everything below was read at (or after).
    version: String,
    /// Deployments, revisions and updates.
    base: Option<Arc<Base>>,
    /// Device counts and rollback targets, by the group asked for (`None`: every group).
    counted: HashMap<Option<String>, Arc<Counted>>,
}

struct Base {
    deployments: Vec<StoredDeployment>,
    revisions: Vec<i64>,
    updates: Vec<StoredUpdate>,
}

struct Counted {
    buckets: Vec<Bucket>,
    targets: Vec<RecordRow>,
}

/// Groups whose counts the cache keeps at most (an operator browsing many groups does not grow
/// it without bound).
const CACHED_GROUPS: usize = 64;

impl SnapshotCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn base(&self, version: &str) -> Option<Arc<Base>> {
        let state = self.lock();
        if state.version != version {
            return None;
        }
        state.base.clone()
    }

    fn counted(&self, version: &str, group: Option<&str>) -> Option<Arc<Counted>> {
        let state = self.lock();
        if state.version != version {
            return None;
        }
        state.counted.get(&group.map(str::to_owned)).cloned()
    }

    /// The state for `version`, emptied when it was of another version.
    fn at<'a>(state: &'a mut CacheState, version: &str) -> &'a mut CacheState {
        if state.version != version {
            *state = CacheState { version: version.to_owned(), ..CacheState::default() };
        }
        state
    }

    fn keep_base(&self, version: &str, base: Arc<Base>) {
        let mut state = self.lock();
        Self::at(&mut state, version).base = Some(base);
    }

    fn keep_counted(&self, version: &str, group: Option<&str>, counted: Arc<Counted>) {
        let mut state = self.lock();
        let state = Self::at(&mut state, version);
        if state.counted.len() >= CACHED_GROUPS {
            state.counted.clear();
        }
        state.counted.insert(group.map(str::to_owned), counted);
    }
}

impl DeviceUpdate {
    /// Reads device counts (of every group, or of `group`), deployments and updates, and records
    /// groups, classes and subgroups seen for the first time. Answered from the cache while the
    /// database's data version is unchanged.
    pub async fn snapshot_of(&self, group: Option<&str>) -> Result<Snapshot, ServiceError> {
        let version = self.store.data_version().await?;
        let base = self.base_at(&version).await?;
        let counted = match self.snapshots.counted(&version, group) {
            Some(counted) => counted,
            None => {
                let counted = Arc::new(self.count(group, &base).await?);
                self.snapshots.keep_counted(&version, group, counted.clone());
                counted
            }
        };
        Ok(Snapshot {
            now: now_rfc3339(),
            buckets: counted.buckets.clone(),
            targets: counted.targets.clone(),
            deployments: base.deployments.clone(),
            revisions: base.revisions.clone(),
            updates: base.updates.clone(),
        })
    }

    /// Deployments and updates only, without device counts (no `GROUP BY`; `buckets` and
    /// `targets` are empty): for answers about a page of device records, which bring their own
    /// facts and class ([`Snapshot::device_states`]), so that a page costs a page.
    pub async fn deployments_snapshot(&self) -> Result<Snapshot, ServiceError> {
        let version = self.store.data_version().await?;
        let base = self.base_at(&version).await?;
        Ok(Snapshot {
            now: now_rfc3339(),
            buckets: Vec::new(),
            targets: Vec::new(),
            deployments: base.deployments.clone(),
            revisions: base.revisions.clone(),
            updates: base.updates.clone(),
        })
    }

    /// [`Self::snapshot_of`] every group.
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        self.snapshot_of(None).await
    }

    /// Deployments and updates as of `version` (read after it), from the cache or the store.
    async fn base_at(&self, version: &str) -> Result<Arc<Base>, ServiceError> {
        if let Some(base) = self.snapshots.base(version) {
            return Ok(base);
        }
        let (deployments, revisions): (Vec<StoredDeployment>, Vec<i64>) = self.deployments().await?.into_iter().unzip();
        let updates = self.updates().await?;
        let base = Arc::new(Base { deployments, revisions, updates });
        self.snapshots.keep_base(version, base.clone());
        Ok(base)
    }

    /// Device counts (of every group, or of `group`) by `GROUP BY` on the records, the records
    /// of rollback targets, and the group, class and subgroup records of what they name.
    async fn count(&self, group: Option<&str>, base: &Base) -> Result<Counted, ServiceError> {
        let mut classes: BTreeMap<String, DeviceClass> = BTreeMap::new();
        let buckets = self
            .store
            .record_buckets(group, None)
            .await?
            .into_iter()
            .map(|b| {
                let class = classes.entry(b.class_id.clone()).or_insert_with(|| DeviceClass::from_body(&b.class_body));
                Bucket { group_id: b.group_id, class: class.clone(), facts: b.facts, count: b.count }
            })
            .collect::<Vec<_>>();
        let target_ids: BTreeSet<String> = base
            .deployments
            .iter()
            .filter(|d| group.is_none_or(|g| d.group_id == g))
            .filter_map(|d| d.target_devices.as_ref())
            .flatten()
            .cloned()
            .collect();
        let targets = if target_ids.is_empty() {
            Vec::new()
        } else {
            self.store.records_of(&target_ids.into_iter().collect::<Vec<_>>()).await?
        };
        let groups: BTreeSet<String> = buckets.iter().map(|b| b.group_id.clone()).collect();
        let classes: BTreeSet<String> = buckets.iter().map(|b| b.class.id.clone()).collect();
        let subgroups: BTreeSet<String> = buckets.iter().map(|b| subgroup_key(&b.group_id, &b.class.id)).collect();
        self.store.ensure_entities(GROUP, &groups.into_iter().collect::<Vec<_>>()).await?;
        self.store.ensure_entities(DEVICE_CLASS, &classes.into_iter().collect::<Vec<_>>()).await?;
        self.store.ensure_entities(SUBGROUP, &subgroups.into_iter().collect::<Vec<_>>()).await?;
        Ok(Counted { buckets, targets })
    }
}

impl Snapshot {
    /// An update by id.
    pub fn update(&self, id: &UpdateId) -> Option<&StoredUpdate> {
        let key = update_key(id);
        self.updates.iter().find(|u| update_key(&u.update_id) == key)
    }

    /// Device classes with their device counts.
    pub fn classes(&self) -> BTreeMap<String, (DeviceClass, u64)> {
        let mut classes: BTreeMap<String, (DeviceClass, u64)> = BTreeMap::new();
        for bucket in &self.buckets {
            classes.entry(bucket.class.id.clone()).or_insert_with(|| (bucket.class.clone(), 0)).1 += bucket.count;
        }
        classes
    }

    /// A device class by id, if devices report it.
    pub fn class(&self, id: &str) -> Option<&DeviceClass> {
        self.buckets.iter().find(|b| b.class.id == id).map(|b| &b.class)
    }

    /// Buckets of a group (and class).
    pub fn buckets_of<'a>(&'a self, group: &'a str, class: Option<&'a str>) -> impl Iterator<Item = &'a Bucket> + 'a {
        self.buckets.iter().filter(move |b| b.group_id == group && class.is_none_or(|c| b.class.id == c))
    }

    /// Rollback targets of a group (and class).
    pub fn targets_of<'a>(
        &'a self,
        group: &'a str,
        class: Option<&'a str>,
    ) -> impl Iterator<Item = &'a RecordRow> + 'a {
        self.targets.iter().filter(move |t| t.group_id == group && class.is_none_or(|c| t.class_id == c))
    }

    /// Devices of a group (all classes).
    pub fn group_device_count(&self, group: &str) -> u64 {
        self.buckets_of(group, None).map(|b| b.count).sum()
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
        self.governing_class(group, class_id, self.class(class_id))
    }

    /// [`Self::governing`] for a class given by the caller (a snapshot without device counts
    /// knows no classes: a page of records brings its own).
    pub fn governing_class(
        &self,
        group: &str,
        class_id: &str,
        class: Option<&DeviceClass>,
    ) -> Option<&StoredDeployment> {
        deploy::governing(&self.deployments, group, class_id, &self.now, |d| {
            class.is_some_and(|c| self.update(&d.update).is_some_and(|u| c.accepts(&u.compatibility)))
        })
    }

    /// The state of a device (of `group` and `class`, reporting `facts`) in the deployment
    /// governing its subgroup, if any. `device_id` `None` counts it as a device that is no
    /// rollback target.
    pub fn device_deployment(
        &self,
        group: &str,
        class: &str,
        device_id: Option<&str>,
        facts: &impl deploy::Reports,
    ) -> Option<(&StoredDeployment, DeviceState)> {
        let governing = self.governing(group, class)?;
        let assignment = deploy::assignment(governing, &self.deployments, class, device_id)?;
        Some((assignment.deployment, deploy::device_state(assignment.deployment, assignment.subgroup, facts)))
    }

    /// Whether a device of `class` with `installed` has the best update of its class (or there
    /// is none).
    pub fn on_latest(&self, class: &DeviceClass, installed: Option<&UpdateId>) -> bool {
        match self.best_update(class) {
            None => true,
            Some(best) => installed.is_some_and(|i| update_key(i) == update_key(&best.update_id)),
        }
    }

    /// The deployment whose workflow `workflow` is, if the service knows it.
    pub fn deployment_of_workflow(&self, workflow: &str) -> Option<&StoredDeployment> {
        self.deployments.iter().find(|d| d.subgroups.values().any(|s| s.workflow_id == workflow))
    }
}
