//! The Device Update service: updates (import, signed update manifests, files), the fleet's
//! groups and device classes (computed from twins), deployments and their status.
//!
//! ```text
//! REST (rest::du) ──► DeviceUpdate ──► Store (du_* tables, twins)
//!                        │  import ──► ContentStore (blobs by SHA-256), KeyStore (signing)
//!                        └─ reconciler task: deployments × fleet ──► desired deviceUpdate.service
//! ```
//!
//! Deployments are not pushed device by device from request handlers: a request records the
//! deployment and wakes the reconciler, which compares what every device of the deployment's
//! subgroups should be told with what its desired property says, and writes the difference. The
//! same loop serves devices that join a group later, cancels, retries and rollback policies,
//! and is safe to run on several nodes at once (writes are idempotent; deployment changes are
//! compare-and-swap).

pub mod content;
pub mod deploy;
pub mod fleet;
pub mod import;
pub mod model;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use duhub_proto::twin::{DEVICE_UPDATE_COMPONENT, ServiceProperties, UpdateAction, Workflow, component_patch};
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use self::content::ContentStore;
use self::deploy::{Assignment, Counts, DeviceState};
use self::fleet::{DeviceClass, DeviceView};
use self::import::ImportItem;
use self::model::{StoredDeployment, StoredUpdate, SubgroupState, update_key};
use crate::ids::{new_uuid, now_rfc3339, now_service_timestamp, rfc3339};
use crate::keystore::{KeyStore, Signer};
use crate::store::{Store, StoreError};

/// The api-version of the 2022-10-01 swagger.
pub const API_VERSION_2022: &str = "2022-10-01";
/// The api-version that adds `downloadSecurity`.
pub const API_VERSION_2026: &str = "2026-06-01";

/// Entity kinds in the store.
const GROUP: &str = "group";
const DEVICE_CLASS: &str = "deviceClass";
const SUBGROUP: &str = "subgroup";
/// Operation kinds.
pub const UPDATE_OPERATION: &str = "update";
/// Operation kind of update deletions: readable by id, not listed (as the 2022-10-01 API has it).
pub const DELETE_OPERATION: &str = "updateDelete";
/// Operation kind of device imports.
pub const DEVICE_OPERATION: &str = "device";

/// A failure of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not parse.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Content storage failed.
    #[error(transparent)]
    Content(#[from] content::ContentError),
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct DuSettings {
    /// Instance id of REST paths.
    pub instance_id: String,
    /// Base URL devices download from.
    pub public_url: String,
    /// Signing key store.
    pub keys_dir: std::path::PathBuf,
    /// Items per REST page.
    pub page_size: usize,
    /// Reconcile interval.
    pub reconcile_interval: Duration,
}

/// The Device Update service of one node.
pub struct DeviceUpdate {
    store: Store,
    content: ContentStore,
    keys: KeyStore,
    settings: DuSettings,
    http: reqwest::Client,
    wake: Notify,
    /// Passes of the reconciler never overlap (on this node).
    reconciling: tokio::sync::Mutex<()>,
}

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
    /// The service over `store`, with files in `content` and keys in `settings.keys_dir`
    /// (created when missing).
    pub fn new(
        store: Store,
        content: ContentStore,
        settings: DuSettings,
        extra_ca: Option<&[u8]>,
    ) -> anyhow::Result<Arc<Self>> {
        let keys = KeyStore::at(&settings.keys_dir);
        if !keys.exists() {
            keys.init(&crate::keystore::Clock::now())?;
            tracing::info!(dir = %settings.keys_dir.display(), "created the update signing keys");
        }
        keys.signer()?;
        let mut http =
            reqwest::Client::builder().timeout(Duration::from_secs(3600)).connect_timeout(Duration::from_secs(30));
        if let Some(ca) = extra_ca {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(ca)?);
        }
        Ok(Arc::new(Self {
            store,
            content,
            keys,
            settings,
            http: http.build()?,
            wake: Notify::new(),
            reconciling: tokio::sync::Mutex::new(()),
        }))
    }

    /// Settings.
    pub fn settings(&self) -> &DuSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The root key package devices download, as JSON text.
    pub fn root_key_package(&self) -> Result<String, ServiceError> {
        std::fs::read_to_string(self.keys.package_path()).map_err(|e| ServiceError::Corrupt(e.to_string()))
    }

    /// Where devices download the root key package.
    pub fn root_key_package_url(&self) -> String {
        format!("{}/duhub/rootkeypackage.json", self.settings.public_url)
    }

    /// Where devices download a file.
    pub fn file_url(&self, blob: &str, file_name: &str) -> String {
        let name: String = file_name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        format!("{}/duhub/files/{blob}/{name}", self.settings.public_url)
    }

    fn signer(&self) -> anyhow::Result<Signer> {
        self.keys.signer()
    }

    /// Wakes the reconciler.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    // ----- updates -----------------------------------------------------------------------------

    /// An update by id (provider and name without case).
    pub async fn stored_update(&self, id: &UpdateId) -> Result<Option<StoredUpdate>, ServiceError> {
        self.store.update_body(&update_key(id)).await?.map(|body| parse(&body)).transpose()
    }

    /// Every update, ordered by provider, name, version.
    pub async fn updates(&self) -> Result<Vec<StoredUpdate>, ServiceError> {
        let mut updates: Vec<StoredUpdate> =
            self.store.update_bodies().await?.iter().map(|b| parse(b)).collect::<Result<_, _>>()?;
        updates.sort_by(|a, b| {
            (a.update_id.provider.to_ascii_lowercase(), a.update_id.name.to_ascii_lowercase())
                .cmp(&(b.update_id.provider.to_ascii_lowercase(), b.update_id.name.to_ascii_lowercase()))
                .then_with(|| fleet::compare_versions(&a.update_id.version, &b.update_id.version))
        });
        Ok(updates)
    }

    /// Blob ids any stored update uses.
    pub(crate) async fn used_blobs(&self) -> Result<HashSet<String>, ServiceError> {
        Ok(self.updates().await?.iter().flat_map(|u| u.files.iter().map(|f| f.blob.clone())).collect())
    }

    /// Starts importing `items` as a long-running operation; returns its id.
    pub async fn start_import(self: &Arc<Self>, items: Vec<ImportItem>) -> Result<String, ServiceError> {
        import::check_request(&items).map_err(ServiceError::Invalid)?;
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let mut operation = json!({
            "operationId": operation_id, "status": "NotStarted",
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(UPDATE_OPERATION, &operation).await?;
        let service = self.clone();
        let id = operation_id.clone();
        tokio::spawn(async move {
            operation["status"] = "Running".into();
            operation["lastActionDateTime"] = now_rfc3339().into();
            if let Err(error) = service.save_operation(UPDATE_OPERATION, &operation).await {
                tracing::error!(%error, "recording an import operation failed");
            }
            let result = service.import(&id, &items).await;
            let finished = match result {
                Ok(updates) => {
                    let first = updates.first();
                    let mut value = operation.clone();
                    value["status"] = "Succeeded".into();
                    if let Some(update) = first {
                        value["update"] = update.info();
                        value["resourceLocation"] = format!(
                            "/deviceUpdate/{}/updates/providers/{}/names/{}/versions/{}?api-version={API_VERSION_2022}",
                            service.settings.instance_id,
                            update.update_id.provider,
                            update.update_id.name,
                            update.update_id.version
                        )
                        .into();
                    }
                    tracing::info!(operation = id, updates = updates.len(), "import succeeded");
                    value
                }
                Err(error) => {
                    tracing::info!(operation = id, code = error.code, message = %error.message, "import failed");
                    let mut value = operation.clone();
                    value["status"] = "Failed".into();
                    value["error"] = error.to_json();
                    value
                }
            };
            let mut finished = finished;
            finished["lastActionDateTime"] = now_rfc3339().into();
            finished["etag"] = format!("\"{}\"", new_uuid()).into();
            if let Err(error) = service.save_operation(UPDATE_OPERATION, &finished).await {
                tracing::error!(%error, "recording an import operation failed");
            }
        });
        Ok(operation_id)
    }

    /// Starts deleting an update as a long-running operation; returns its id. Refused while a
    /// deployment uses it or another update references it.
    pub async fn start_delete(self: &Arc<Self>, id: &UpdateId) -> Result<String, ServiceError> {
        let update =
            self.stored_update(id).await?.ok_or_else(|| ServiceError::NotFound(format!("update {id} not found")))?;
        let updates = self.updates().await?;
        if let Some(parent) = updates.iter().find(|u| u.references.iter().any(|r| update_key(r) == update_key(id))) {
            return Err(ServiceError::Conflict(format!(
                "update {} references {id}; delete it first",
                parent.update_id
            )));
        }
        let deployments = self.deployments().await?;
        if let Some(deployment) = deployments.iter().find(|(d, _)| {
            update_key(&d.update) == update_key(id)
                || d.rollback_policy.as_ref().is_some_and(|p| update_key(&p.update) == update_key(id))
        }) {
            return Err(ServiceError::Conflict(format!(
                "deployment {} of group {} uses update {id}; delete it first",
                deployment.0.deployment_id, deployment.0.group_id
            )));
        }
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let mut operation = json!({
            "operationId": operation_id, "status": "Running", "update": update.info(),
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(DELETE_OPERATION, &operation).await?;
        let outcome = async {
            self.store.delete_update(&update_key(id)).await?;
            let used = self.used_blobs().await?;
            for file in &update.files {
                if !used.contains(&file.blob) {
                    self.content.delete(&file.blob).await?;
                }
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        match outcome {
            Ok(()) => operation["status"] = "Succeeded".into(),
            Err(error) => {
                tracing::error!(%error, "deleting an update failed");
                operation["status"] = "Failed".into();
                operation["error"] =
                    json!({"code": "InternalError", "message": "deleting the update failed; see the server log"});
            }
        }
        operation["lastActionDateTime"] = now_rfc3339().into();
        self.save_operation(DELETE_OPERATION, &operation).await?;
        Ok(operation_id)
    }

    /// Records a finished device import (devices come from the hub's registry, so there is
    /// nothing to copy); returns its id.
    pub async fn import_devices(&self) -> Result<String, ServiceError> {
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let operation = json!({
            "operationId": operation_id, "status": "Succeeded",
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(DEVICE_OPERATION, &operation).await?;
        self.wake();
        Ok(operation_id)
    }

    async fn save_operation(&self, kind: &str, operation: &Value) -> Result<(), ServiceError> {
        let id = operation["operationId"].as_str().unwrap_or_default();
        let status = operation["status"].as_str().unwrap_or_default();
        self.store.put_operation(id, kind, status, &operation.to_string()).await?;
        Ok(())
    }

    /// An operation.
    pub async fn operation(&self, kind: &str, id: &str) -> Result<Option<Value>, ServiceError> {
        self.store.operation(kind, id).await?.map(|b| parse(&b)).transpose()
    }

    /// Operations, newest first.
    pub async fn operations(&self, kind: &str, pending_only: bool) -> Result<Vec<Value>, ServiceError> {
        self.store.operations(kind, pending_only).await?.iter().map(|b| parse(b)).collect()
    }

    // ----- fleet -------------------------------------------------------------------------------

    /// Deployments with their revisions.
    pub async fn deployments(&self) -> Result<Vec<(StoredDeployment, i64)>, ServiceError> {
        self.store.deployments().await?.into_iter().map(|r| Ok((parse(&r.body)?, r.revision))).collect()
    }

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

    /// Groups as (id, created).
    pub async fn groups(&self) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(self.store.entities(GROUP).await?.into_iter().map(|(k, _, c)| (k, c)).collect())
    }

    /// Device class records as (id, friendly name, created).
    pub async fn device_class_records(&self) -> Result<Vec<(String, Option<String>, String)>, ServiceError> {
        Ok(self
            .store
            .entities(DEVICE_CLASS)
            .await?
            .into_iter()
            .map(|(k, body, c)| {
                let name = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("friendlyName").and_then(Value::as_str).map(str::to_owned));
                (k, name, c)
            })
            .collect())
    }

    /// Subgroup records as (group, class, created).
    pub async fn subgroup_records(&self) -> Result<Vec<(String, String, String)>, ServiceError> {
        Ok(self
            .store
            .entities(SUBGROUP)
            .await?
            .into_iter()
            .filter_map(|(k, _, c)| {
                let (group, class) = k.split_once('\n')?;
                Some((group.to_owned(), class.to_owned(), c))
            })
            .collect())
    }

    /// Sets a device class's friendly name.
    pub async fn set_device_class_name(&self, id: &str, name: &str) -> Result<bool, ServiceError> {
        Ok(self.store.set_entity_body(DEVICE_CLASS, id, &json!({"friendlyName": name}).to_string()).await?)
    }

    /// Forgets a device class (it comes back while devices report it).
    pub async fn delete_device_class(&self, id: &str) -> Result<bool, ServiceError> {
        Ok(self.store.delete_entity(DEVICE_CLASS, id).await?)
    }

    /// Forgets a group and its deployments (it comes back while devices carry its tag).
    pub async fn delete_group(&self, id: &str) -> Result<bool, ServiceError> {
        for (deployment, _) in self.deployments().await? {
            if deployment.group_id == id {
                self.store.delete_deployment(id, &deployment.deployment_id).await?;
            }
        }
        for (group, class, _) in self.subgroup_records().await? {
            if group == id {
                self.store.delete_entity(SUBGROUP, &subgroup_key(&group, &class)).await?;
            }
        }
        Ok(self.store.delete_entity(GROUP, id).await?)
    }

    /// Forgets a subgroup (it comes back while devices are in it).
    pub async fn delete_subgroup(&self, group: &str, class: &str) -> Result<bool, ServiceError> {
        Ok(self.store.delete_entity(SUBGROUP, &subgroup_key(group, class)).await?)
    }

    // ----- deployments -------------------------------------------------------------------------

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
                    Some(record.revision)
                }
                None => None,
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
        let snapshot = self.snapshot().await?;
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
        let failed: Vec<String> = deploy::subgroup_devices(&current, class, &snapshot.devices)
            .into_iter()
            .filter(|d| deploy::device_state(&current, subgroup, d) == DeviceState::Failed)
            .map(|d| d.device_id.clone())
            .collect();
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

    // ----- the reconciler ----------------------------------------------------------------------

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
                let week_ago = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::days(7));
                if let Err(error) = self.store.prune_operations(&week_ago).await {
                    tracing::warn!(%error, "pruning old operations failed");
                }
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

    /// Fails operations left running by a node that stopped.
    async fn recover_operations(&self) {
        let before = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(10));
        let Ok(stale) = self.store.stale_operations(&before).await else { return };
        for (kind, body) in stale {
            let Ok(mut operation) = serde_json::from_str::<Value>(&body) else { continue };
            operation["status"] = "Failed".into();
            operation["error"] = json!({"code": "OperationInterrupted", "message": "the server stopped while the operation ran; start it again"});
            operation["lastActionDateTime"] = now_rfc3339().into();
            let _ = self.save_operation(&kind, &operation).await;
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

    /// The REST `UpdateCompliance` of some devices.
    pub fn compliance<'a>(&self, devices: impl IntoIterator<Item = &'a DeviceView>) -> Value {
        let (mut total, mut latest, mut available, mut progress) = (0u64, 0u64, 0u64, 0u64);
        for device in devices {
            total += 1;
            if self.on_latest(device) {
                latest += 1;
            } else if matches!(self.device_deployment(device), Some((_, DeviceState::InProgress))) {
                progress += 1;
            } else {
                available += 1;
            }
        }
        json!({
            "totalDeviceCount": total, "onLatestUpdateDeviceCount": latest,
            "newUpdatesAvailableDeviceCount": available, "updatesInProgressDeviceCount": progress,
        })
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

fn subgroup_key(group: &str, class: &str) -> String {
    format!("{group}\n{class}")
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ServiceError> {
    serde_json::from_str(body).map_err(|e| ServiceError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
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
