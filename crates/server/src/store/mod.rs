//! Durable state: the device registry and device twins, behind one [`Store`] over SQLite (the
//! embedded default) or PostgreSQL (for several nodes on one database).
//!
//! Both backends run the same SQL through `sqlx::Any` (numbered `$N` parameters work in both);
//! what differs — schema types, connection pragmas, cross-node notifications — is in
//! [`Backend`]. Every write that changes a twin happens in one transaction that also records
//! the desired patch (so other nodes can deliver it) and, on PostgreSQL, `NOTIFY`s the other
//! nodes; a write is acknowledged only after its transaction commits.

mod du;
mod schema;

pub use du::{ApiToken, FleetRow, Revisioned};

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use duhub_proto::twin_doc::{self, Section, TwinDocError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::ids::{generate_key, generation_id, now_rfc3339};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (WAL, synchronous=FULL).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such device.
    #[error("device {0} not found")]
    NotFound(String),
    /// The device already exists.
    #[error("device {0} already exists")]
    AlreadyExists(String),
    /// `If-Match` did not match.
    #[error("etag mismatch: the twin or device changed since it was read")]
    PreconditionFailed,
    /// A twin patch breaks IoT Hub's document rules.
    #[error("{0}")]
    InvalidDocument(#[from] TwinDocError),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database is temporarily unable to take the write.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// It may.
    Enabled,
    /// It may not.
    Disabled,
}

impl DeviceStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }

    fn parse(text: &str) -> Self {
        if text.eq_ignore_ascii_case("disabled") { Self::Disabled } else { Self::Enabled }
    }
}

/// A device identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id.
    pub device_id: String,
    /// Primary symmetric key (base64).
    pub primary_key: String,
    /// Secondary symmetric key (base64).
    pub secondary_key: String,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Why it is disabled, if given.
    pub status_reason: Option<String>,
    /// Changes with every update of the identity.
    pub etag: String,
    /// Distinguishes identities that reuse a deleted id.
    pub generation_id: String,
    /// `Connected` or `Disconnected`, as last seen by any node.
    pub connection_state: String,
    /// When `connection_state` last changed (RFC 3339).
    pub connection_state_updated: Option<String>,
    /// Last MQTT activity (RFC 3339).
    pub last_activity: Option<String>,
    /// PnP model id announced at the last connect.
    pub model_id: Option<String>,
    /// When the device was created (RFC 3339).
    pub created: String,
    /// The persistent MQTT session (`clean_session=0`), if one exists.
    pub mqtt_session: Option<MqttSession>,
}

/// What an MQTT session with `clean_session=0` keeps between connections: IoT Hub keeps the
/// subscriptions, and Microsoft's SDKs subscribe only once per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttSession {
    /// Subscribed to desired-property patches.
    pub desired: bool,
}

/// What a device identity is created or updated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Device id.
    pub device_id: String,
    /// Primary key (base64); generated when `None`.
    pub primary_key: Option<String>,
    /// Secondary key (base64); generated when `None`.
    pub secondary_key: Option<String>,
    /// Status.
    pub status: DeviceStatus,
    /// Status reason.
    pub status_reason: Option<String>,
}

/// A device twin.
#[derive(Debug, Clone, PartialEq)]
pub struct Twin {
    /// Device id.
    pub device_id: String,
    /// Tags (service-only).
    pub tags: Map<String, Value>,
    /// Desired properties, without `$version`.
    pub desired: Map<String, Value>,
    /// Version of the desired properties.
    pub desired_version: i64,
    /// Reported properties, without `$version`.
    pub reported: Map<String, Value>,
    /// Version of the reported properties.
    pub reported_version: i64,
    /// Version of the whole twin; bumps with every change.
    pub version: i64,
    /// PnP model id.
    pub model_id: Option<String>,
    /// Device status.
    pub status: DeviceStatus,
    /// Connection state.
    pub connection_state: String,
}

impl Twin {
    /// The twin's etag: base64 of the big-endian twin version, as IoT Hub writes it
    /// (`AAAAAAAAAAE=` for version 1).
    pub fn etag(&self) -> String {
        etag_of(self.version)
    }

    /// Desired properties with `$version`, as devices receive them.
    pub fn desired_document(&self) -> Value {
        with_version(&self.desired, self.desired_version)
    }

    /// Reported properties with `$version`.
    pub fn reported_document(&self) -> Value {
        with_version(&self.reported, self.reported_version)
    }
}

fn with_version(section: &Map<String, Value>, version: i64) -> Value {
    let mut document = section.clone();
    document.insert("$version".into(), version.into());
    Value::Object(document)
}

/// The etag of a version number.
pub fn etag_of(version: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(version.to_be_bytes())
}

/// A change other parts of the system react to. Events cross nodes on PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The desired properties of a device changed.
    DesiredChanged {
        /// The device.
        device_id: String,
        /// The new desired `$version`.
        version: i64,
        /// The patch with `$version`, when known (events from other nodes carry none; read it
        /// with [`Store::desired_patch`]).
        patch: Option<Value>,
    },
    /// A device connected to some node: other connections of it must close.
    SessionOpened {
        /// The device.
        device_id: String,
        /// The node and connection that now own it.
        session: String,
    },
    /// A device was deleted or disabled: its connections must close.
    DeviceRevoked {
        /// The device.
        device_id: String,
    },
}

/// The store: a pool and the event bus.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    events: broadcast::Sender<Event>,
    node_id: Arc<str>,
    /// SQLite: the single writer of twins, connection states and sessions.
    writer: Option<mpsc::Sender<(Write, WriteReply)>>,
}

const NOTIFY_CHANNEL: &str = "duhub_events";

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creates or upgrades the schema,
    /// and (on PostgreSQL) starts listening for other nodes' events.
    pub async fn open(url: &str, node_id: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!("unsupported database url {url:?} (sqlite:// or postgres://)")));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let pool = match backend {
            Backend::Sqlite => {
                options
                    .max_connections(6)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            use sqlx::Executor as _;
                            connection
                                .execute(
                                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; \
                                     PRAGMA foreign_keys=ON;",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url_with_create(&create_private_sqlite_file(url)?))
                    .await?
            }
            Backend::Postgres => options.max_connections(16).connect(url).await?,
        };
        let (events, _) = broadcast::channel(4096);
        schema::migrate(&pool, backend).await?;
        let writer = match backend {
            Backend::Sqlite => {
                let (sender, receiver) = mpsc::channel(4096);
                tokio::spawn(run_writer(pool.acquire().await?, receiver));
                Some(sender)
            }
            Backend::Postgres => None,
        };
        let store = Self { pool, backend, events, node_id: node_id.into(), writer };
        if backend == Backend::Postgres {
            store.listen(url).await?;
        }
        Ok(store)
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The id of this node (distinguishes nodes on one database).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Subscribes to events from this node and, on PostgreSQL, from the others.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Publishes an event to this node's subscribers and the other nodes.
    pub async fn publish(&self, event: Event) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(wire_event(&self.node_id, &event).to_string())
                .execute(&self.pool)
                .await?;
        }
        let _ = self.events.send(event);
        Ok(())
    }

    async fn listen(&self, url: &str) -> Result<(), StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let events = self.events.clone();
        let node_id = self.node_id.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => {
                        if let Some(event) = parse_wire_event(notification.payload(), &node_id) {
                            let _ = events.send(event);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the database event listener; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }

    // ----- devices -----------------------------------------------------------------------------

    /// Creates a device identity (and its empty twin).
    pub async fn create_device(&self, spec: &DeviceSpec) -> Result<Device, StoreError> {
        validate_device_id(&spec.device_id)?;
        let now = now_rfc3339();
        let primary = spec.primary_key.clone().unwrap_or_else(generate_key);
        let secondary = spec.secondary_key.clone().unwrap_or_else(generate_key);
        check_key(&primary)?;
        check_key(&secondary)?;
        let result = sqlx::query(
            "INSERT INTO devices (device_id, primary_key, secondary_key, status, status_reason, etag, generation_id, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&spec.device_id)
        .bind(&primary)
        .bind(&secondary)
        .bind(spec.status.as_str())
        .bind(spec.status_reason.as_deref())
        .bind(etag_of(1))
        .bind(generation_id())
        .bind(&now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => self.device(&spec.device_id).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists(spec.device_id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Updates a device's keys and status; `if_match` is the device etag (`*` or `None`: any).
    pub async fn update_device(&self, spec: &DeviceSpec, if_match: Option<&str>) -> Result<Device, StoreError> {
        let current = self.device(&spec.device_id).await?;
        if let Some(etag) = if_match.filter(|e| *e != "*")
            && etag != current.etag
        {
            return Err(StoreError::PreconditionFailed);
        }
        let primary = spec.primary_key.clone().unwrap_or(current.primary_key.clone());
        let secondary = spec.secondary_key.clone().unwrap_or(current.secondary_key.clone());
        check_key(&primary)?;
        check_key(&secondary)?;
        let next_etag = etag_of(etag_version(&current.etag) + 1);
        let updated = sqlx::query(
            "UPDATE devices SET primary_key = $1, secondary_key = $2, status = $3, status_reason = $4, etag = $5 \
             WHERE device_id = $6 AND etag = $7",
        )
        .bind(&primary)
        .bind(&secondary)
        .bind(spec.status.as_str())
        .bind(spec.status_reason.as_deref())
        .bind(&next_etag)
        .bind(&spec.device_id)
        .bind(&current.etag)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::PreconditionFailed);
        }
        let keys_changed = primary != current.primary_key || secondary != current.secondary_key;
        if spec.status == DeviceStatus::Disabled || keys_changed {
            self.publish(Event::DeviceRevoked { device_id: spec.device_id.clone() }).await?;
        }
        self.device(&spec.device_id).await
    }

    /// A device identity.
    pub async fn device(&self, device_id: &str) -> Result<Device, StoreError> {
        let row = sqlx::query(DEVICE_SELECT_BY_ID).bind(device_id).fetch_optional(&self.pool).await?;
        row.map(|r| device_from_row(&r)).transpose()?.ok_or_else(|| StoreError::NotFound(device_id.to_owned()))
    }

    /// Up to `limit` devices ordered by id, starting after `after`.
    pub async fn devices(&self, after: Option<&str>, limit: i64) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(DEVICE_SELECT_PAGE)
            .bind(after.unwrap_or(""))
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Deletes a device and its twin; `if_match` as for updates.
    pub async fn delete_device(&self, device_id: &str, if_match: Option<&str>) -> Result<(), StoreError> {
        let current = self.device(device_id).await?;
        if let Some(etag) = if_match.filter(|e| *e != "*")
            && etag != current.etag
        {
            return Err(StoreError::PreconditionFailed);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM desired_patches WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM devices WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.publish(Event::DeviceRevoked { device_id: device_id.to_owned() }).await
    }

    /// Records a connection or disconnection (and the model id announced at connect), and
    /// optionally stores (`Some(Some(_))`) or ends (`Some(None)`) the device's persistent MQTT
    /// session in the same write.
    pub async fn set_connection(
        &self,
        device_id: &str,
        connected: bool,
        model_id: Option<&str>,
        session: Option<Option<MqttSession>>,
    ) -> Result<(), StoreError> {
        let job = Write::Connection {
            device_id: device_id.to_owned(),
            connected,
            model_id: model_id.map(str::to_owned),
            session,
        };
        self.write(job).await.map(|_| ())
    }

    /// Stores (or with `None` ends) a device's persistent MQTT session.
    pub async fn set_mqtt_session(&self, device_id: &str, session: Option<MqttSession>) -> Result<(), StoreError> {
        self.write(Write::Session { device_id: device_id.to_owned(), session }).await.map(|_| ())
    }

    // ----- twins -------------------------------------------------------------------------------

    /// A device's twin.
    pub async fn twin(&self, device_id: &str) -> Result<Twin, StoreError> {
        let row = sqlx::query(TWIN_SELECT).bind(device_id).fetch_optional(&self.pool).await?;
        row.map(|r| twin_from_row(&r)).transpose()?.ok_or_else(|| StoreError::NotFound(device_id.to_owned()))
    }

    /// Applies a desired-properties merge patch; returns the new twin. Devices that subscribed
    /// get the patch with its `$version`.
    pub async fn patch_desired(
        &self,
        device_id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Twin, StoreError> {
        self.change_twin(device_id, if_match, TwinEdit::Desired(patch.clone())).await
    }

    /// Applies a reported-properties merge patch (from the device); returns the new twin.
    pub async fn patch_reported(&self, device_id: &str, patch: &Value) -> Result<Twin, StoreError> {
        self.change_twin(device_id, None, TwinEdit::Reported(patch.clone())).await
    }

    /// Applies a tags merge patch.
    pub async fn patch_tags(&self, device_id: &str, patch: &Value, if_match: Option<&str>) -> Result<Twin, StoreError> {
        self.change_twin(device_id, if_match, TwinEdit::Tags(patch.clone())).await
    }

    /// Replaces tags and desired properties (IoT Hub's twin PUT); reported properties stay.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        tags: Option<&Value>,
        desired: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Twin, StoreError> {
        let edit = TwinEdit::Replace { tags: tags.cloned(), desired: desired.cloned() };
        self.change_twin(device_id, if_match, edit).await
    }

    /// The desired patch that produced `version`, with `$version`, if still recorded.
    pub async fn desired_patch(&self, device_id: &str, version: i64) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query("SELECT patch FROM desired_patches WHERE device_id = $1 AND version = $2")
            .bind(device_id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let text: String = r.try_get("patch")?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    async fn change_twin(&self, device_id: &str, if_match: Option<&str>, edit: TwinEdit) -> Result<Twin, StoreError> {
        let request = TwinChange { device_id: device_id.to_owned(), if_match: if_match.map(str::to_owned), edit };
        match self.write(Write::Twin(request)).await? {
            Written::Twin(twin) => Ok(*twin),
            Written::Done => Err(StoreError::Corrupt("a twin change wrote no twin".into())),
        }
    }

    /// Performs a write durably. On SQLite the single writer task batches concurrent writes into
    /// one transaction (one fsync for many devices); on PostgreSQL each write is its own
    /// transaction, retried when a twin changed concurrently.
    async fn write(&self, job: Write) -> Result<Written, StoreError> {
        if let Some(writer) = &self.writer {
            let (reply, answer) = oneshot::channel();
            let closed = || StoreError::Invalid("the store is shutting down".into());
            writer.send((job, reply)).await.map_err(|_| closed())?;
            let (written, event) = answer.await.map_err(|_| closed())??;
            if let Some(event) = event {
                let _ = self.events.send(event);
            }
            return Ok(written);
        }
        for _attempt in 0..20 {
            let mut tx = self.pool.begin().await?;
            match apply_write(&mut tx, &job, self.notify_payload()).await {
                Ok((written, event)) => {
                    tx.commit().await?;
                    if let Some(event) = event {
                        let _ = self.events.send(event);
                    }
                    return Ok(written);
                }
                Err(ChangeError::Conflict) => tx.rollback().await?,
                Err(ChangeError::Store(error)) => return Err(error),
            }
        }
        Err(StoreError::Invalid("the twin is changing too fast; try again".into()))
    }

    /// How `NOTIFY` payloads are stamped with this node (PostgreSQL only).
    fn notify_payload(&self) -> Option<Arc<str>> {
        (self.backend == Backend::Postgres).then(|| self.node_id.clone())
    }

    // ----- service access policies ---------------------------------------------------------------

    /// The key of a shared access policy, creating the policy with a fresh key if it is missing.
    pub async fn ensure_policy(&self, name: &str) -> Result<String, StoreError> {
        if let Some(key) = self.policy_key(name).await? {
            return Ok(key);
        }
        let key = generate_key();
        sqlx::query("INSERT INTO access_policies (name, primary_key, secondary_key) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&key)
            .bind(generate_key())
            .execute(&self.pool)
            .await?;
        Ok(self.policy_key(name).await?.unwrap_or(key))
    }

    /// Primary and secondary keys of a policy.
    pub async fn policy_keys(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT primary_key, secondary_key FROM access_policies WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("primary_key")?, r.try_get("secondary_key")?))).transpose()
    }

    /// Records an API token (only its SHA-256 is stored).
    pub async fn add_api_token(&self, name: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_tokens (token_sha256, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (token_sha256) DO NOTHING")
            .bind(token_hash(token))
            .bind(name)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether `token` is a recorded, unrevoked API token.
    pub async fn api_token_valid(&self, token: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT name FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn policy_key(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.policy_keys(name).await?.map(|(primary, _)| primary))
    }
}

/// How many desired patches are kept per device for delivery by other nodes.
const DESIRED_PATCHES_KEPT: i64 = 64;

/// A change to a twin, owned so it can be sent to the writer task.
#[derive(Debug, Clone)]
enum TwinEdit {
    Desired(Value),
    Reported(Value),
    Tags(Value),
    Replace { tags: Option<Value>, desired: Option<Value> },
}

/// What applying a [`TwinEdit`] changed.
struct Change {
    desired_patch: Option<Map<String, Value>>,
    reported: bool,
}

impl TwinEdit {
    fn apply(&self, twin: &mut Twin) -> Result<Change, StoreError> {
        match self {
            Self::Desired(patch) => {
                twin.desired = twin_doc::apply_patch(&twin.desired, patch, Section::Desired)?;
                Ok(Change { desired_patch: Some(strip_version(patch)), reported: false })
            }
            Self::Reported(patch) => {
                twin.reported = twin_doc::apply_patch(&twin.reported, patch, Section::Reported)?;
                Ok(Change { desired_patch: None, reported: true })
            }
            Self::Tags(patch) => {
                twin.tags = twin_doc::apply_patch(&twin.tags, patch, Section::Tags)?;
                Ok(Change { desired_patch: None, reported: false })
            }
            Self::Replace { tags, desired } => {
                if let Some(tags) = tags {
                    twin.tags = twin_doc::apply_patch(&Map::new(), tags, Section::Tags)?;
                }
                let mut desired_patch = None;
                if let Some(desired) = desired {
                    let replacement = twin_doc::apply_patch(&Map::new(), desired, Section::Desired)?;
                    // Devices receive the new document plus nulls for the removed members.
                    let mut patch = replacement.clone();
                    for key in twin.desired.keys() {
                        if !replacement.contains_key(key) {
                            patch.insert(key.clone(), Value::Null);
                        }
                    }
                    twin.desired = replacement;
                    desired_patch = Some(patch);
                }
                Ok(Change { desired_patch, reported: false })
            }
        }
    }
}

/// One requested twin change.
#[derive(Debug)]
struct TwinChange {
    device_id: String,
    if_match: Option<String>,
    edit: TwinEdit,
}

/// One durable write.
#[derive(Debug)]
enum Write {
    Twin(TwinChange),
    Connection { device_id: String, connected: bool, model_id: Option<String>, session: Option<Option<MqttSession>> },
    Session { device_id: String, session: Option<MqttSession> },
}

/// What a write produced.
#[derive(Debug)]
enum Written {
    Twin(Box<Twin>),
    Done,
}

type WriteReply = oneshot::Sender<Result<(Written, Option<Event>), StoreError>>;

enum ChangeError {
    /// Another writer changed the twin since it was read (PostgreSQL); retry.
    Conflict,
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for ChangeError {
    fn from(error: E) -> Self {
        Self::Store(error.into())
    }
}

const TWIN_SELECT: &str = "SELECT device_id, tags, desired, desired_version, reported, reported_version, \
     twin_version, model_id, status, connection_state FROM devices WHERE device_id = $1";

/// Performs one write inside `tx`; the caller commits.
async fn apply_write(
    tx: &mut sqlx::AnyConnection,
    job: &Write,
    notify_node: Option<Arc<str>>,
) -> Result<(Written, Option<Event>), ChangeError> {
    match job {
        Write::Twin(request) => {
            let (twin, event) = apply_change(tx, request, notify_node).await?;
            Ok((Written::Twin(Box::new(twin)), event))
        }
        Write::Connection { device_id, connected, model_id, session } => {
            let now = now_rfc3339();
            let state = if *connected { "Connected" } else { "Disconnected" };
            sqlx::query(
                "UPDATE devices SET connection_state = $1, connection_state_updated = $2, last_activity = $2, \
                 model_id = CASE WHEN $3 THEN $4 ELSE model_id END WHERE device_id = $5",
            )
            .bind(state)
            .bind(&now)
            .bind(*connected)
            .bind(model_id.as_deref())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
            if let Some(session) = session {
                store_session(tx, device_id, *session).await?;
            }
            Ok((Written::Done, None))
        }
        Write::Session { device_id, session } => {
            store_session(tx, device_id, *session).await?;
            Ok((Written::Done, None))
        }
    }
}

async fn store_session(
    tx: &mut sqlx::AnyConnection,
    device_id: &str,
    session: Option<MqttSession>,
) -> Result<(), ChangeError> {
    let text =
        session.map(|s| serde_json::to_string(&s)).transpose().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("UPDATE devices SET mqtt_session = $1 WHERE device_id = $2")
        .bind(text)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Reads, changes and writes one twin inside `tx`; the caller commits. With `notify_node` set
/// (PostgreSQL), other nodes are notified in the same transaction.
async fn apply_change(
    tx: &mut sqlx::AnyConnection,
    request: &TwinChange,
    notify_node: Option<Arc<str>>,
) -> Result<(Twin, Option<Event>), ChangeError> {
    let device_id = request.device_id.as_str();
    let row = sqlx::query(TWIN_SELECT).bind(device_id).fetch_optional(&mut *tx).await?;
    let mut twin =
        row.map(|r| twin_from_row(&r)).transpose()?.ok_or_else(|| StoreError::NotFound(device_id.to_owned()))?;
    if let Some(etag) = request.if_match.as_deref().filter(|e| *e != "*")
        && etag != twin.etag()
    {
        return Err(ChangeError::Store(StoreError::PreconditionFailed));
    }
    let read_version = twin.version;
    let Change { desired_patch, reported } = request.edit.apply(&mut twin)?;
    twin.version += 1;
    if desired_patch.is_some() {
        twin.desired_version += 1;
    }
    if reported {
        twin.reported_version += 1;
    }
    let updated = sqlx::query(
        "UPDATE devices SET tags = $1, desired = $2, desired_version = $3, reported = $4, \
         reported_version = $5, twin_version = $6 WHERE device_id = $7 AND twin_version = $8",
    )
    .bind(Value::Object(twin.tags.clone()).to_string())
    .bind(Value::Object(twin.desired.clone()).to_string())
    .bind(twin.desired_version)
    .bind(Value::Object(twin.reported.clone()).to_string())
    .bind(twin.reported_version)
    .bind(twin.version)
    .bind(device_id)
    .bind(read_version)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ChangeError::Conflict);
    }
    let Some(mut patch) = desired_patch else { return Ok((twin, None)) };
    patch.insert("$version".into(), twin.desired_version.into());
    let patch = Value::Object(patch);
    sqlx::query("INSERT INTO desired_patches (device_id, version, patch, created_at) VALUES ($1, $2, $3, $4)")
        .bind(device_id)
        .bind(twin.desired_version)
        .bind(patch.to_string())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM desired_patches WHERE device_id = $1 AND version <= $2")
        .bind(device_id)
        .bind(twin.desired_version - DESIRED_PATCHES_KEPT)
        .execute(&mut *tx)
        .await?;
    if let Some(node) = notify_node {
        let payload = serde_json::json!({"node": &*node, "kind": "desired", "device": device_id, "version": twin.desired_version});
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
    }
    let event =
        Event::DesiredChanged { device_id: device_id.to_owned(), version: twin.desired_version, patch: Some(patch) };
    Ok((twin, Some(event)))
}

/// The SQLite writer: takes every pending change (up to a batch), applies them in one
/// transaction and answers each after the commit.
async fn run_writer(
    mut connection: sqlx::pool::PoolConnection<sqlx::Any>,
    mut requests: mpsc::Receiver<(Write, WriteReply)>,
) {
    const BATCH: usize = 256;
    let mut batch = Vec::with_capacity(BATCH);
    while requests.recv_many(&mut batch, BATCH).await > 0 {
        let mut outcome = write_batch(&mut connection, &batch).await;
        for retry in 1..=3 {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 * retry)).await;
            outcome = write_batch(&mut connection, &batch).await;
        }
        match outcome {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, "writing a batch failed");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Unavailable(format!("the database write failed: {error}"))));
                }
            }
        }
    }
}

async fn write_batch(
    connection: &mut sqlx::AnyConnection,
    batch: &[(Write, WriteReply)],
) -> Result<Vec<Result<(Written, Option<Event>), StoreError>>, StoreError> {
    use sqlx::Connection as _;
    // IMMEDIATE: take the write lock now, so a concurrent writer cannot make a later read-to-write
    // upgrade fail with SQLITE_BUSY (which busy_timeout does not retry).
    let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        results.push(match apply_write(&mut tx, job, None).await {
            Ok(done) => Ok(done),
            // One writer: a conflict means someone wrote around it (e.g. by hand); report it.
            Err(ChangeError::Conflict) => Err(StoreError::Invalid("the twin changed concurrently; try again".into())),
            Err(ChangeError::Store(StoreError::Database(error))) => return Err(StoreError::Database(error)),
            Err(ChangeError::Store(error)) => Err(error),
        });
    }
    tx.commit().await?;
    Ok(results)
}

fn strip_version(patch: &Value) -> Map<String, Value> {
    let mut map = patch.as_object().cloned().unwrap_or_default();
    twin_doc::strip_metadata(&mut map);
    map
}

/// The device columns, in the order [`device_from_row`] reads them.
macro_rules! device_columns {
    () => {
        "device_id, primary_key, secondary_key, status, status_reason, etag, generation_id, connection_state, \
         connection_state_updated, last_activity, model_id, created_at, mqtt_session"
    };
}

const DEVICE_SELECT_BY_ID: &str = concat!("SELECT ", device_columns!(), " FROM devices WHERE device_id = $1");

const DEVICE_SELECT_PAGE: &str =
    concat!("SELECT ", device_columns!(), " FROM devices WHERE device_id > $1 ORDER BY device_id LIMIT $2");

fn device_from_row(row: &AnyRow) -> Result<Device, StoreError> {
    Ok(Device {
        device_id: row.try_get("device_id")?,
        primary_key: row.try_get("primary_key")?,
        secondary_key: row.try_get("secondary_key")?,
        status: DeviceStatus::parse(&row.try_get::<String, _>("status")?),
        status_reason: row.try_get("status_reason")?,
        etag: row.try_get("etag")?,
        generation_id: row.try_get("generation_id")?,
        connection_state: row.try_get("connection_state")?,
        connection_state_updated: row.try_get("connection_state_updated")?,
        last_activity: row.try_get("last_activity")?,
        model_id: row.try_get("model_id")?,
        created: row.try_get("created_at")?,
        mqtt_session: row
            .try_get::<Option<String>, _>("mqtt_session")?
            .map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("mqtt_session: {e}"))))
            .transpose()?,
    })
}

fn json_object(row: &AnyRow, column: &str) -> Result<Map<String, Value>, StoreError> {
    let text: String = row.try_get(column)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!("{column} is not a JSON object"))),
    }
}

fn twin_from_row(row: &AnyRow) -> Result<Twin, StoreError> {
    Ok(Twin {
        device_id: row.try_get("device_id")?,
        tags: json_object(row, "tags")?,
        desired: json_object(row, "desired")?,
        desired_version: row.try_get("desired_version")?,
        reported: json_object(row, "reported")?,
        reported_version: row.try_get("reported_version")?,
        version: row.try_get("twin_version")?,
        model_id: row.try_get("model_id")?,
        status: DeviceStatus::parse(&row.try_get::<String, _>("status")?),
        connection_state: row.try_get("connection_state")?,
    })
}

/// An event as other nodes receive it through `NOTIFY` (patches are read from the table: a
/// notification carries at most 8000 bytes).
fn wire_event(node: &str, event: &Event) -> Value {
    match event {
        Event::DesiredChanged { device_id, version, .. } => {
            serde_json::json!({"node": node, "kind": "desired", "device": device_id, "version": version})
        }
        Event::SessionOpened { device_id, session } => {
            serde_json::json!({"node": node, "kind": "session", "device": device_id, "session": session})
        }
        Event::DeviceRevoked { device_id } => serde_json::json!({"node": node, "kind": "revoked", "device": device_id}),
    }
}

fn parse_wire_event(payload: &str, own_node: &str) -> Option<Event> {
    let value: Value = serde_json::from_str(payload).ok()?;
    if value.get("node").and_then(Value::as_str) == Some(own_node) {
        return None;
    }
    let device_id = value.get("device")?.as_str()?.to_owned();
    match value.get("kind")?.as_str()? {
        "desired" => Some(Event::DesiredChanged { device_id, version: value.get("version")?.as_i64()?, patch: None }),
        "session" => Some(Event::SessionOpened { device_id, session: value.get("session")?.as_str()?.to_owned() }),
        "revoked" => Some(Event::DeviceRevoked { device_id }),
        _ => None,
    }
}

/// IoT Hub device ids: up to 128 characters of `A-Za-z0-9-.%_*?!(),:=@$'` (case-sensitive).
pub fn validate_device_id(id: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-.%_*?!(),:=@$'".contains(c);
    if id.is_empty() || id.len() > 128 || !id.chars().all(allowed) {
        return Err(StoreError::Invalid(format!(
            "invalid device id {id:?}: 1 to 128 characters of letters, digits and -.%_*?!(),:=@$'"
        )));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if (16..=64).contains(&bytes.len()) => Ok(()),
        _ => Err(StoreError::Invalid("symmetric keys must be base64 of 16 to 64 bytes".into())),
    }
}

fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn etag_version(etag: &str) -> i64 {
    base64::engine::general_purpose::STANDARD
        .decode(etag)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

/// Creates the SQLite file with mode 0600 if it does not exist (it holds device keys); returns
/// the URL unchanged.
fn create_private_sqlite_file(url: &str) -> Result<String, StoreError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if !path.is_empty() && path != ":memory:" && !std::path::Path::new(path).exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        options.open(path).map_err(|e| StoreError::Invalid(format!("cannot create the database file {path}: {e}")))?;
    }
    Ok(url.to_owned())
}

/// `sqlite://path` with `mode=rwc` so a new database file is created.
fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_nodes_without_their_patch() {
        let events = [
            Event::DesiredChanged { device_id: "d1".into(), version: 7, patch: Some(serde_json::json!({"a": 1})) },
            Event::SessionOpened { device_id: "d1".into(), session: "n1/3".into() },
            Event::DeviceRevoked { device_id: "d1".into() },
        ];
        for event in events {
            let payload = wire_event("n1", &event).to_string();
            assert_eq!(parse_wire_event(&payload, "n1"), None, "a node ignores its own events");
            let received = parse_wire_event(&payload, "n2").unwrap();
            match (&event, received) {
                (Event::DesiredChanged { version, .. }, Event::DesiredChanged { version: v, patch, .. }) => {
                    assert_eq!((*version, patch), (v, None));
                }
                (expected, received) => assert_eq!(expected, &received),
            }
        }
        assert_eq!(parse_wire_event("{}", "n2"), None);
        assert_eq!(parse_wire_event("not json", "n2"), None);
    }

    #[test]
    fn etags_are_big_endian_versions() {
        assert_eq!(etag_of(1), "AAAAAAAAAAE=");
        assert_eq!(etag_version(&etag_of(12345)), 12345);
        assert_eq!(etag_version("garbage"), 0);
    }

    #[test]
    fn device_ids_follow_iot_hub_rules() {
        assert!(validate_device_id("dev-1.a_b:c@d").is_ok());
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id("a/b").is_err());
        assert!(validate_device_id(&"x".repeat(129)).is_err());
    }
}
