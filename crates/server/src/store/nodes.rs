//! Which node holds each device's session, under a lease: every node renews its row in `nodes`
//! on a timer, and a device's `connected_node` names the node its session is on. A node whose
//! lease ran out (killed, frozen, cut off from the database) has its devices recorded as
//! disconnected by the first node that notices (each node's timer, or its start), with one
//! indexed update per dead node, never a scan of the fleet.

use sqlx::Row as _;

use super::{Store, StoreError};
use crate::ids::now_rfc3339;

impl Store {
    /// Renews this node's lease until `until_ms` (milliseconds since the Unix epoch); `false`
    /// when it had no lease (a first start, or another node found it expired and released its
    /// devices).
    pub async fn renew_lease(&self, until_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE nodes SET lease_until_ms = $1 WHERE node_id = $2")
            .bind(until_ms)
            .bind(self.node_id())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() > 0 {
            return Ok(true);
        }
        sqlx::query(
            "INSERT INTO nodes (node_id, lease_until_ms) VALUES ($1, $2) \
             ON CONFLICT (node_id) DO UPDATE SET lease_until_ms = excluded.lease_until_ms",
        )
        .bind(self.node_id())
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(false)
    }

    /// Nodes (other than this one) whose lease ended before `now_ms`.
    pub async fn expired_nodes(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT node_id FROM nodes WHERE lease_until_ms < $1 AND node_id <> $2")
            .bind(now_ms)
            .bind(self.node_id())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("node_id").map_err(StoreError::from)).collect()
    }

    /// Records every device whose session was on `node_id` as disconnected and drops the node's
    /// lease; returns how many devices it released. With `only_if_expired_before`, does nothing
    /// unless the lease still ends before that time (another node may have renewed meanwhile).
    pub async fn release_node(&self, node_id: &str, only_if_expired_before: Option<i64>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(now_ms) = only_if_expired_before {
            let deleted = sqlx::query("DELETE FROM nodes WHERE node_id = $1 AND lease_until_ms < $2")
                .bind(node_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Ok(0);
            }
        } else {
            sqlx::query("DELETE FROM nodes WHERE node_id = $1").bind(node_id).execute(&mut *tx).await?;
        }
        let now = now_rfc3339();
        // The Device Update records of those devices first (they are found by connected_node,
        // which the next statement clears), in the same transaction.
        sqlx::query(
            "UPDATE du_device SET connection_state = 'Disconnected', connection_time = $1 \
             WHERE device_id IN (SELECT device_id FROM devices WHERE connected_node = $2)",
        )
        .bind(&now)
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
        let released = sqlx::query(
            "UPDATE devices SET connection_state = 'Disconnected', connection_state_updated = $1, \
             connected_node = NULL WHERE connected_node = $2",
        )
        .bind(&now)
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(released.rows_affected())
    }
}
