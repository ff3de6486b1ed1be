//! The durable write path of twins, connection states and sessions.
//!
//! Writes go to **lanes**: writer tasks that each own one database connection. A device's writes
//! always take the same lane (chosen by a hash of its id), so they are applied in the order they
//! were made. A lane takes every pending write (up to a batch), applies them in **one
//! transaction** and answers each after the commit: one fsync (SQLite) or one commit round trip
//! (PostgreSQL) for many devices, and the twins of a batch are read in one query and written back
//! in multi-row statements. SQLite has one lane (one writer at a time is all it allows);
//! PostgreSQL has [`POSTGRES_LANES`].
//!
//! A batch that fails is rolled back and retried on a fresh connection; while the database keeps
//! refusing (a full disk, a lost server) every write is answered with
//! [`StoreError::Unavailable`], the cause is logged once per episode, and the lane recovers by
//! itself as soon as a batch commits again.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::devices::MqttSession;
use super::record::PendingRecords;
use super::twins::{TWIN_COLUMNS, Twin, TwinChange, apply_change, twin_from_row};
use super::{Backend, Event, Store, StoreError};
use crate::ids::now_rfc3339;

/// Writer lanes on PostgreSQL: batches in flight at once, each on its own connection.
pub(super) const POSTGRES_LANES: usize = 4;

/// Most writes one transaction takes.
pub(super) const BATCH: usize = 512;

/// Rows per multi-row statement (the twins read and written back, records, desired patches).
pub(super) const ROWS_PER_STATEMENT: usize = 64;

/// Attempts at one batch before its writes are answered with an error.
const ATTEMPTS: u32 = 4;

impl Store {
    /// Performs a write durably: hands it to its device's lane and waits for the commit.
    pub(super) async fn write(&self, job: Write) -> Result<Written, StoreError> {
        let answer = self.submit(job).await?;
        self.finish(answer).await
    }

    /// Hands a write to its device's lane without waiting for its commit: callers with many
    /// writes submit ahead, so a lane's batch fills with them (see [`Self::finish`]).
    pub(super) async fn submit(&self, job: Write) -> Result<oneshot::Receiver<Outcome>, StoreError> {
        let lane = &self.writer[lane_of(job.device_id(), self.writer.len())];
        let (reply, answer) = oneshot::channel();
        lane.send((job, reply)).await.map_err(|_| shutting_down())?;
        Ok(answer)
    }

    /// Waits for the commit of a submitted write; publishes its event.
    pub(super) async fn finish(&self, answer: oneshot::Receiver<Outcome>) -> Result<Written, StoreError> {
        let (written, event) = answer.await.map_err(|_| shutting_down())??;
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
        Ok(written)
    }
}

fn shutting_down() -> StoreError {
    StoreError::Invalid("the store is shutting down".into())
}

/// Starts the lanes of a store; returns their inboxes.
///
/// The lanes run on a thread of their own (a single-threaded runtime): every durable write waits
/// for its lane, and a lane awaits the database a few dozen times per batch. On the node's shared
/// runtime each of those wake-ups queued behind every ready connection task (thousands while a
/// fleet reports), so a busy node's writes waited on scheduling rather than on the database.
pub(super) fn start_lanes(pool: &AnyPool, backend: Backend, node_id: &Arc<str>) -> Arc<[mpsc::Sender<Job>]> {
    let lanes = match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => POSTGRES_LANES,
    };
    let notify = (backend == Backend::Postgres).then(|| node_id.clone());
    let mut senders = Vec::with_capacity(lanes);
    let mut runs = Vec::with_capacity(lanes);
    for index in 0..lanes {
        let (sender, receiver) = mpsc::channel(4096);
        let lane = Lane { index, pool: pool.clone(), backend, notify: notify.clone(), connection: None, failing: 0 };
        senders.push(sender);
        runs.push(lane.run(receiver));
    }
    // Handed over through a slot, so that it is still here if the thread cannot be started.
    let all = Arc::new(std::sync::Mutex::new(Some(futures_util::future::join_all(runs))));
    let handed = all.clone();
    let thread = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
        std::thread::Builder::new().name("duhub-writer".into()).spawn(move || {
            let lanes = handed.lock().ok().and_then(|mut slot| slot.take());
            if let Some(lanes) = lanes {
                runtime.block_on(lanes);
            }
        })
    });
    if let Err(error) = thread {
        // Without a thread of their own the lanes still work, on the node's runtime.
        tracing::warn!(%error, "the writer lanes could not get a thread of their own");
        if let Some(lanes) = all.lock().ok().and_then(|mut slot| slot.take()) {
            tokio::spawn(lanes);
        }
    }
    senders.into()
}

/// The lane of a device: the same for every write of it, spread evenly over the lanes.
fn lane_of(device_id: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    device_id.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes as u64).unwrap_or(0)
}

/// One durable write.
#[derive(Debug)]
pub(super) enum Write {
    Twin(TwinChange),
    Connection {
        device_id: String,
        connected: bool,
        model_id: Option<String>,
        session: Option<Option<MqttSession>>,
        node: Arc<str>,
    },
    Session {
        device_id: String,
        session: Option<MqttSession>,
    },
}

impl Write {
    fn device_id(&self) -> &str {
        match self {
            Self::Twin(change) => &change.device_id,
            Self::Connection { device_id, .. } | Self::Session { device_id, .. } => device_id,
        }
    }
}

/// What a write produced.
#[derive(Debug)]
pub(super) enum Written {
    /// The new twin (if asked for), and whether its Device Update record changed.
    Twin(Option<Box<Twin>>, bool),
    Done,
}

/// The answer to one write: what it wrote and the event to publish, sent after the commit.
pub(super) type Outcome = Result<(Written, Option<Event>), StoreError>;
pub(super) type WriteReply = oneshot::Sender<Outcome>;
pub(super) type Job = (Write, WriteReply);

pub(super) enum ChangeError {
    /// Another writer changed the twin since it was read (another node on PostgreSQL); the
    /// batch is retried.
    Conflict,
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for ChangeError {
    fn from(error: E) -> Self {
        Self::Store(error.into())
    }
}

/// The twins a batch works on: read once at the start, changed in memory by each write in
/// order, written back once at the end with what goes with them (the Device Update records,
/// the desired patches), in multi-row statements.
#[derive(Default)]
pub(super) struct Twins {
    loaded: HashMap<String, Loaded>,
    /// The Device Update records the batch's twin changes altered.
    pub(super) records: PendingRecords,
    /// The desired patches the batch made, in order: device, version, patch (with `$version`).
    pub(super) desired_patches: Vec<(String, i64, String)>,
}

struct Loaded {
    twin: Twin,
    /// The twin version in the database when the batch read it.
    read_version: i64,
    /// The section versions and tags when the batch read them: only the sections that changed
    /// are serialised and written back.
    read_desired_version: i64,
    read_reported_version: i64,
    read_tags: serde_json::Map<String, serde_json::Value>,
}

/// The twin sections a batch changed in one twin, and so the columns written back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Changed {
    Reported,
    Desired,
    All,
}

impl Loaded {
    /// A twin as the database holds it at the start of a batch.
    fn read(twin: Twin) -> Self {
        Self {
            read_version: twin.version,
            read_desired_version: twin.desired_version,
            read_reported_version: twin.reported_version,
            read_tags: twin.tags.clone(),
            twin,
        }
    }

    fn changed(&self) -> Changed {
        let desired = self.twin.desired_version != self.read_desired_version;
        let reported = self.twin.reported_version != self.read_reported_version;
        match (desired, reported) {
            (false, true) if self.twin.tags == self.read_tags => Changed::Reported,
            (true, false) if self.twin.tags == self.read_tags => Changed::Desired,
            _ => Changed::All,
        }
    }
}

impl Twins {
    /// The current state of a device's twin in this batch, `None` if the device does not exist.
    pub(super) fn get_mut(&mut self, device_id: &str) -> Option<&mut Twin> {
        self.loaded.get_mut(device_id).map(|l| &mut l.twin)
    }

    /// A device's twin in this batch (`None` if the device does not exist), beside the batch's
    /// pending records.
    pub(super) fn twin_and_records(&mut self, device_id: &str) -> Option<(&mut Twin, &mut PendingRecords)> {
        let records = &mut self.records;
        self.loaded.get_mut(device_id).map(|l| (&mut l.twin, records))
    }

    fn changed(&self) -> impl Iterator<Item = &Loaded> {
        self.loaded.values().filter(|l| l.twin.version != l.read_version)
    }
}

/// A writer task and its connection.
struct Lane {
    index: usize,
    pool: AnyPool,
    backend: Backend,
    notify: Option<Arc<str>>,
    connection: Option<PoolConnection<sqlx::Any>>,
    /// Batches that failed in a row: the cause is logged at the first, the recovery at the end.
    failing: u64,
}

impl Lane {
    async fn run(mut self, mut requests: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(BATCH);
        while requests.recv_many(&mut batch, BATCH).await > 0 {
            let outcomes = match self.commit_with_retries(&batch, ATTEMPTS).await {
                Ok(outcomes) => outcomes,
                // Not the database's condition but maybe one write it refuses: the others of the
                // batch must not fail with it, so each is tried alone.
                Err(error) if batch.len() > 1 && !error.is_unavailable() => {
                    tracing::debug!(lane = self.index, %error, "a batch failed; writing its writes one by one");
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for single in batch.chunks(1) {
                        match self.commit_with_retries(single, 2).await {
                            Ok(outcome) => outcomes.extend(outcome),
                            Err(error) => outcomes.push(Err(self.failed(&error))),
                        }
                    }
                    outcomes
                }
                Err(error) => {
                    let refused = self.failed(&error);
                    batch.iter().map(|_| Err(StoreError::Unavailable(refused.to_string()))).collect()
                }
            };
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Counts a batch that could not be committed (logging the cause at the first of an episode);
    /// returns what its writes are answered.
    fn failed(&mut self, error: &StoreError) -> StoreError {
        if self.failing == 0 {
            tracing::error!(
                lane = self.index,
                %error,
                "database writes fail; devices and the API are told 503 until they work again"
            );
        } else {
            tracing::debug!(lane = self.index, %error, "database writes still fail");
        }
        self.failing += 1;
        StoreError::Unavailable(format!("the database refuses writes: {}", cause(error)))
    }

    /// Commits `batch` in one transaction, retrying on a fresh connection after a failure.
    async fn commit_with_retries(&mut self, batch: &[Job], attempts: u32) -> Result<Vec<Outcome>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.commit(batch).await {
                Ok(outcomes) => {
                    if self.failing > 0 {
                        tracing::warn!(lane = self.index, failed_batches = self.failing, "database writes work again");
                        self.failing = 0;
                    }
                    return Ok(outcomes);
                }
                Err(error) => error,
            };
            // Whatever state the failed transaction left the connection in (a commit that failed
            // half-way leaves sqlx's transaction depth behind), it is not used again.
            if let Some(connection) = self.connection.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), connection.close()).await;
            }
            if attempt >= attempts {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        }
    }

    async fn commit(&mut self, batch: &[Job]) -> Result<Vec<Outcome>, StoreError> {
        use sqlx::Connection as _;
        let connection = match &mut self.connection {
            Some(connection) => connection,
            none => none.insert(self.pool.acquire().await?),
        };
        // SQLite: IMMEDIATE takes the write lock now, so a concurrent writer cannot make a later
        // read-to-write upgrade fail with SQLITE_BUSY (which busy_timeout does not retry).
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let mut tx = connection.begin_with(begin).await?;
        match apply_batch(&mut tx, self.backend, self.notify.as_ref(), batch).await {
            Ok(outcomes) => {
                tx.commit().await?;
                Ok(outcomes)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(match error {
                    ChangeError::Conflict => StoreError::Invalid("a twin changed concurrently".into()),
                    ChangeError::Store(error) => error,
                })
            }
        }
    }
}

/// The database's own words for a failure ("database or disk is full"), without sqlx's prefix.
fn cause(error: &StoreError) -> String {
    match error {
        StoreError::Database(sqlx::Error::Database(error)) => error.message().to_owned(),
        other => other.to_string(),
    }
}

/// Applies every write of a batch inside `tx`, in order; the caller commits. A write that is
/// refused (no such device, a precondition, an invalid patch) gets its own error and changes
/// nothing; a database failure fails the batch.
async fn apply_batch(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    notify: Option<&Arc<str>>,
    batch: &[Job],
) -> Result<Vec<Outcome>, ChangeError> {
    let mut ids: Vec<&str> = batch
        .iter()
        .filter_map(|(job, _)| match job {
            Write::Twin(change) => Some(change.device_id.as_str()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut twins = load_twins(tx, backend, &ids).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        outcomes.push(match job {
            Write::Twin(change) => match apply_change(tx, &mut twins, change, notify.cloned()).await {
                Ok((twin, event, record_changed)) => Ok((Written::Twin(twin.map(Box::new), record_changed), event)),
                Err(ChangeError::Store(StoreError::Database(error))) => return Err(StoreError::Database(error).into()),
                Err(ChangeError::Store(error)) => Err(error),
                Err(ChangeError::Conflict) => return Err(ChangeError::Conflict),
            },
            Write::Connection { device_id, connected, model_id, session, node } => {
                let now = now_rfc3339();
                let state = if *connected { "Connected" } else { "Disconnected" };
                // `connected_node`: the node holding the session, under its lease (store::nodes).
                sqlx::query(
                    "UPDATE devices SET connection_state = $1, connection_state_updated = $2, last_activity = $2, \
                     model_id = CASE WHEN $3 THEN $4 ELSE model_id END, connected_node = $6 WHERE device_id = $5",
                )
                .bind(state)
                .bind(&now)
                .bind(*connected)
                .bind(model_id.as_deref())
                .bind(device_id)
                .bind(connected.then_some(&**node))
                .execute(&mut *tx)
                .await?;
                super::record::apply_connection(tx, device_id, state, &now).await?;
                if let Some(twin) = twins.get_mut(device_id) {
                    twin.connection_state = state.to_owned();
                    if *connected {
                        twin.model_id.clone_from(model_id);
                    }
                }
                if let Some(session) = session {
                    store_session(tx, device_id, *session).await?;
                }
                Ok((Written::Done, None))
            }
            Write::Session { device_id, session } => {
                store_session(tx, device_id, *session).await?;
                Ok((Written::Done, None))
            }
        });
    }
    store_twins(tx, backend, &twins).await?;
    let Twins { loaded, records, desired_patches } = twins;
    let connection_state =
        |device_id: &str| loaded.get(device_id).map(|l| l.twin.connection_state.clone()).unwrap_or_default();
    records.write(tx, connection_state).await?;
    super::twins::store_desired_patches(tx, &desired_patches).await?;
    Ok(outcomes)
}

/// Reads the twins of `ids` (sorted) in multi-row queries. On PostgreSQL the rows are locked
/// in device id order until the commit, so nodes writing the same twins queue instead of
/// conflicting (and cannot deadlock over them).
async fn load_twins(tx: &mut sqlx::AnyConnection, backend: Backend, ids: &[&str]) -> Result<Twins, StoreError> {
    let mut twins = Twins::default();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let ids = placeholders(backend, 0, chunk.len());
        let lock = match backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let sql = format!("SELECT {TWIN_COLUMNS} FROM devices WHERE device_id IN ({ids}) ORDER BY device_id{lock}");
        // Only placeholders are formatted into the text; the ids are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *tx).await? {
            let loaded = Loaded::read(twin_from_row(&row)?);
            twins.loaded.insert(loaded.twin.device_id.clone(), loaded);
        }
    }
    Ok(twins)
}

/// Writes the changed twins back in multi-row statements, each row only if the twin is still
/// at the version the batch read; only the sections that changed are serialised and written
/// (a reported patch does not rewrite the desired section, which holds the deployment's manifest).
async fn store_twins(tx: &mut sqlx::AnyConnection, backend: Backend, twins: &Twins) -> Result<(), ChangeError> {
    for shape in [Changed::Reported, Changed::Desired, Changed::All] {
        let changed: Vec<&Loaded> = twins.changed().filter(|l| l.changed() == shape).collect();
        let (columns, set) = match shape {
            Changed::Reported => (
                "id, reported, reported_version, twin_version, read_version",
                "reported = v.reported, reported_version = v.reported_version",
            ),
            Changed::Desired => (
                "id, desired, desired_version, twin_version, read_version",
                "desired = v.desired, desired_version = v.desired_version",
            ),
            Changed::All => (
                "id, tags, desired, desired_version, reported, reported_version, twin_version, read_version",
                "tags = v.tags, desired = v.desired, desired_version = v.desired_version, \
                 reported = v.reported, reported_version = v.reported_version",
            ),
        };
        let width = columns.split(',').count();
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            let rows = (0..chunk.len())
                .map(|row| format!("({})", placeholders(backend, row * width, width)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH v ({columns}) AS (VALUES {rows}) UPDATE devices SET {set}, twin_version = v.twin_version \
                 FROM v WHERE devices.device_id = v.id AND devices.twin_version = v.read_version RETURNING device_id"
            );
            // Only placeholders and column names are formatted into the text; the values are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for loaded in chunk {
                let twin = &loaded.twin;
                query = query.bind(twin.device_id.as_str());
                if shape == Changed::All {
                    query = query.bind(json_text(&twin.tags)?);
                }
                if shape != Changed::Reported {
                    query = query.bind(json_text(&twin.desired)?).bind(twin.desired_version);
                }
                if shape != Changed::Desired {
                    query = query.bind(json_text(&twin.reported)?).bind(twin.reported_version);
                }
                query = query.bind(twin.version).bind(loaded.read_version);
            }
            if query.fetch_all(&mut *tx).await?.len() != chunk.len() {
                return Err(ChangeError::Conflict);
            }
        }
    }
    Ok(())
}

/// `count` placeholders, comma-separated, for the values bound from the `first`th (from 0) on,
/// in a statement that binds each value once, in order: `$N` on PostgreSQL, anonymous `?` on
/// SQLite (sqlx asks SQLite for the name of every parameter it binds, and SQLite finds a named
/// one by a walk over the statement's names: with the 512 of a multi-row statement,
/// `sqlite3_bind_parameter_name` took a tenth of the writer thread's time in a 10,000-device
/// rehearsal).
fn placeholders(backend: Backend, first: usize, count: usize) -> String {
    let each: Vec<String> = (first..first + count)
        .map(|index| match backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${}", index + 1),
        })
        .collect();
    each.join(", ")
}

fn json_text(section: &serde_json::Map<String, serde_json::Value>) -> Result<String, StoreError> {
    serde_json::to_string(section).map_err(|e| StoreError::Corrupt(e.to_string()))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::super::{DeviceSpec, DeviceStatus, Store, StoreError};

    async fn store_with_device(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("duhub.db").display());
        let store = Store::open(&url, "node").await.unwrap();
        let spec = DeviceSpec {
            device_id: "dev".into(),
            primary_key: None,
            secondary_key: None,
            status: DeviceStatus::Enabled,
            status_reason: None,
        };
        store.create_device(&spec).await.unwrap();
        store
    }

    /// A transaction the database ends on its own (SQLite rolls back by itself on a full disk or
    /// an I/O error; a trigger raising ROLLBACK does the same here) or whose COMMIT fails (a
    /// deferred foreign key a trigger breaks) is answered 503-style with the database's cause and
    /// changes nothing; writes work again, without a restart, once the cause is gone. (Before, the
    /// writer's connection was left "at non-zero transaction depth" and every later write failed.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_is_answered_unavailable_and_the_writer_recovers() {
        let traps = [
            (
                "CREATE TRIGGER trap BEFORE UPDATE ON devices WHEN NEW.reported LIKE '%trap%' \
                 BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full (injected)'); END;",
                "database or disk is full (injected)",
            ),
            (
                "CREATE TABLE trap_parent (id TEXT PRIMARY KEY);
                 CREATE TABLE trap_child (id TEXT REFERENCES trap_parent (id) DEFERRABLE INITIALLY DEFERRED);
                 CREATE TRIGGER trap AFTER UPDATE ON devices WHEN NEW.reported LIKE '%trap%'
                 BEGIN INSERT INTO trap_child VALUES (NEW.device_id); END;",
                "FOREIGN KEY constraint failed",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_device(dir.path()).await;
        let mut version = 1;
        for (trap, cause) in traps {
            version += 1;
            let twin = store.patch_reported("dev", &json!({"before": version})).await.unwrap();
            assert_eq!(twin.reported_version, version);

            sqlx::raw_sql(sqlx::AssertSqlSafe(trap)).execute(&store.pool).await.unwrap();
            for _ in 0..3 {
                match store.patch_reported("dev", &json!({"trap": 1})).await {
                    Err(error @ StoreError::Unavailable(_)) => {
                        assert!(error.is_unavailable());
                        assert!(error.to_string().contains(cause), "the cause is told: {error}");
                    }
                    other => panic!("a failing transaction answered {other:?}"),
                }
            }

            sqlx::raw_sql("DROP TRIGGER trap").execute(&store.pool).await.unwrap();
            version += 1;
            let twin = store.patch_reported("dev", &json!({"after": version})).await.unwrap();
            assert_eq!(twin.reported_version, version, "the failed writes changed nothing");
            assert!(!twin.reported.contains_key("trap"), "{:?}", twin.reported);
            assert_eq!(store.twin("dev").await.unwrap(), twin);
        }
    }

    #[test]
    fn a_device_always_takes_the_same_lane_and_the_lanes_share_the_devices() {
        let lanes: Vec<usize> = (0..1000).map(|i| super::lane_of(&format!("device-{i}"), 4)).collect();
        assert_eq!(super::lane_of("device-7", 4), lanes[7]);
        for lane in 0..4 {
            let taken = lanes.iter().filter(|l| **l == lane).count();
            assert!((150..350).contains(&taken), "lane {lane} takes {taken} of 1000 devices");
        }
        assert_eq!(super::lane_of("anything", 1), 0);
    }
}
