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
//!
//! `du` knows no HTTP and no SQL: it reads and writes through [`Store`] and answers with typed
//! values; `rest::du` maps them to the REST API. Modules: `updates` (import and delete),
//! `operations` (long-running operation records), `groups` (group, device class and subgroup
//! records), `deployments` (create, change, cancel, retry), `snapshot` (the fleet read at one
//! moment), `status` (compliance, group, subgroup and deployment status as typed results),
//! `reconciler` (the loop that writes desired properties and fires rollback policies),
//! `console` (the operator dashboard's questions, answered as typed values), and the pure rules
//! in `fleet`, `deploy` and `model`.

pub mod console;
pub mod content;
pub mod deploy;
mod deployments;
pub mod fleet;
mod groups;
pub mod import;
pub mod model;
mod operations;
mod reconciler;
pub mod rollout;
mod snapshot;
pub mod status;
mod updates;
mod uploads;

pub use self::snapshot::Snapshot;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use self::content::ContentStore;
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
    /// Uploads no import claims are deleted after this long.
    pub upload_expiry: Duration,
    /// The most bytes of uploads not yet claimed.
    pub max_pending_upload_bytes: u64,
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
    /// Added to the real time by the rollouts' clock (`rollout_now`; only tests move it).
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Snapshots of the database's current data version.
    snapshots: snapshot::SnapshotCache,
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
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
            snapshots: snapshot::SnapshotCache::default(),
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
}

fn subgroup_key(group: &str, class: &str) -> String {
    format!("{group}\n{class}")
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ServiceError> {
    serde_json::from_str(body).map_err(|e| ServiceError::Corrupt(e.to_string()))
}
