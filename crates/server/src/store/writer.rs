//! The durable write path of twins, connection states and sessions. On SQLite one writer task
//! batches concurrent writes into one `BEGIN IMMEDIATE` transaction (one fsync for many
//! devices) and answers each after the commit; on PostgreSQL each write is its own
//! transaction, retried when a twin changed concurrently.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::devices::MqttSession;
use super::twins::{Twin, TwinChange, apply_change};
use super::{Backend, Event, Store, StoreError};
use crate::ids::now_rfc3339;

impl Store {
    /// Performs a write durably. On SQLite the single writer task batches concurrent writes into
    /// one transaction (one fsync for many devices); on PostgreSQL each write is its own
    /// transaction, retried when a twin changed concurrently.
    pub(super) async fn write(&self, job: Write) -> Result<Written, StoreError> {
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
    pub(super) fn notify_payload(&self) -> Option<Arc<str>> {
        (self.backend == Backend::Postgres).then(|| self.node_id.clone())
    }
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

/// What a write produced.
#[derive(Debug)]
pub(super) enum Written {
    Twin(Box<Twin>),
    Done,
}

pub(super) type WriteReply = oneshot::Sender<Result<(Written, Option<Event>), StoreError>>;

pub(super) enum ChangeError {
    /// Another writer changed the twin since it was read (PostgreSQL); retry.
    Conflict,
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for ChangeError {
    fn from(error: E) -> Self {
        Self::Store(error.into())
    }
}

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

/// The SQLite writer: takes every pending change (up to a batch), applies them in one
/// transaction and answers each after the commit.
pub(super) async fn run_writer(
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
