//! Durable state: the device registry and device twins, behind one [`Store`] over SQLite (the
//! embedded default) or PostgreSQL (for several nodes on one database).
//!
//! Both backends run the same SQL through `sqlx::Any` (numbered `$N` parameters work in both);
//! what differs — schema types, connection pragmas, cross-node notifications — is in
//! [`Backend`]. Every write that changes a twin happens in one transaction that also records
//! the desired patch (so other nodes can deliver it) and, on PostgreSQL, `NOTIFY`s the other
//! nodes; a write is acknowledged only after its transaction commits.
//!
//! `store` is the only module that knows SQL: `devices` (identities, connection state),
//! `twins` (documents and their changes), `writer` (the durable write path), `events` (the
//! event bus across nodes), `access` (shared access policies and API tokens), `du` (Device
//! Update records), `sessions` (the dashboard's sign-in sessions and device search) and `schema`
//! (the tables and their upgrades).

mod access;
mod devices;
mod du;
mod events;
mod nodes;
mod query;
mod record;
mod rollout;
mod schema;
mod sessions;
mod twins;
mod uploads;
mod version;
mod writer;

pub use access::ApiToken;
pub use devices::{Device, DeviceSpec, DeviceStatus, MqttSession, validate_device_id};
pub use du::{FleetRow, Revisioned};
pub use events::Event;
pub use query::{QueriedTwin, TwinFilter};
pub use record::{
    DEFAULT_GROUP, DuRecord, Facts, GROUP_TAG, RecordBucket, RecordFilter, RecordRow, class_body, class_id,
};
pub use rollout::{MemberChange, MemberCount, MemberMark, OpenMember};
pub use sessions::{DeviceListing, UiSession};
pub use twins::{Twin, etag_of};

use std::sync::Arc;
use std::time::Duration;

use duhub_proto::twin_doc::TwinDocError;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::sync::{broadcast, mpsc};

use self::writer::{Job, start_lanes};

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

impl StoreError {
    /// Whether the failure is the database's condition rather than the request's (a full disk,
    /// an I/O error, a database that cannot be reached): clients are told to try again later
    /// (503), and the cause is in the server's log.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Database(sqlx::Error::Database(error)) => {
                let code = error.code();
                let code = code.as_deref().unwrap_or_default();
                match code.parse::<i64>() {
                    // SQLite primary result codes: SQLITE_IOERR, SQLITE_FULL (extended codes keep
                    // the primary one in their low byte).
                    Ok(sqlite) => matches!(sqlite & 0xff, 10 | 13),
                    // PostgreSQL classes: insufficient resources (disk full, out of memory),
                    // connection exceptions, and the server shutting down.
                    Err(_) => code.starts_with("53") || code.starts_with("08") || code.starts_with("57P"),
                }
            }
            Self::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

/// The store: a pool and the event bus.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    events: broadcast::Sender<Event>,
    node_id: Arc<str>,
    /// The writer lanes of twins, connection states and sessions (see [`writer`]).
    writer: Arc<[mpsc::Sender<Job>]>,
    /// Notified when a committed write changed a Device Update record.
    records_changed: Arc<tokio::sync::Notify>,
    /// SQLite: the connection that reads `PRAGMA data_version` (see [`version`]).
    version_probe: Arc<tokio::sync::Mutex<Option<sqlx::AnyConnection>>>,
}

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
                let url = sqlite_url_with_create(&create_private_sqlite_file(url)?);
                probe(&url, SQLITE_PRAGMAS).await?;
                options
                    .max_connections(6)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            use sqlx::Executor as _;
                            connection.execute(SQLITE_PRAGMAS).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                probe(url, "SELECT 1").await?;
                options.max_connections(16 + writer::POSTGRES_LANES as u32).connect(url).await?
            }
        };
        let (events, _) = broadcast::channel(4096);
        schema::migrate(&pool, backend).await?;
        let node_id: Arc<str> = node_id.into();
        let writer = start_lanes(&pool, backend, &node_id);
        let store = Self {
            pool,
            backend,
            events,
            node_id,
            writer,
            records_changed: Arc::new(tokio::sync::Notify::new()),
            version_probe: Arc::new(tokio::sync::Mutex::new(None)),
        };
        store.backfill_records().await?;
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
}

/// What every SQLite connection runs first (WAL also needs a writable directory).
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;";

/// Opens one connection and runs `setup` on it, so that a database that cannot be used (a
/// read-only file or directory, a refused login, a server that is not there) fails at once with
/// its own error, instead of the pool retrying until its acquire timeout says "pool timed out".
async fn probe(url: &str, setup: &'static str) -> Result<(), StoreError> {
    use sqlx::{Connection as _, Executor as _};
    let mut connection = sqlx::AnyConnection::connect(url).await?;
    connection.execute(setup).await?;
    connection.close().await?;
    Ok(())
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
