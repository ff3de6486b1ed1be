//! Device Update records: updates, long-running operations, deployments, groups and device
//! classes.
//!
//! Records are JSON documents in a `body` column keyed by their ids, so that both backends run
//! the same SQL and the record types live with the service ([`crate::du`]), not here.
//! Deployments carry a `revision`: a change is a compare-and-swap on it, so that several nodes
//! reconciling the same deployment never overwrite each other's workflow ids.

use sqlx::Row;

use super::{Store, StoreError};
use crate::ids::now_rfc3339;

/// A twin as the Device Update service reads it.
#[derive(Debug, Clone)]
pub struct FleetRow {
    /// Device id.
    pub device_id: String,
    /// Tags document.
    pub tags: serde_json::Value,
    /// Desired properties (without `$version`).
    pub desired: serde_json::Value,
    /// Reported properties (without `$version`).
    pub reported: serde_json::Value,
    /// Model id announced at connect.
    pub model_id: Option<String>,
}

/// A stored record and its revision.
#[derive(Debug, Clone)]
pub struct Revisioned {
    /// The JSON body.
    pub body: String,
    /// Compare-and-swap revision.
    pub revision: i64,
}

fn parse_json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    // ----- fleet -------------------------------------------------------------------------------

    /// The twins of these devices (those that exist), ordered by device id: for the one page
    /// of a device list whose details (last install result) only the twin holds.
    pub async fn fleet_of(&self, device_ids: &[String]) -> Result<Vec<FleetRow>, StoreError> {
        let mut out = Vec::with_capacity(device_ids.len());
        for chunk in device_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT device_id, tags, desired, reported, model_id FROM devices WHERE device_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(FleetRow {
                    device_id: row.try_get("device_id")?,
                    tags: parse_json(&row.try_get::<String, _>("tags")?)?,
                    desired: parse_json(&row.try_get::<String, _>("desired")?)?,
                    reported: parse_json(&row.try_get::<String, _>("reported")?)?,
                    model_id: row.try_get("model_id")?,
                });
            }
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    // ----- updates -----------------------------------------------------------------------------

    /// Stores an update; `Ok(false)` when one with the same key exists.
    pub async fn insert_update(&self, key: &str, body: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO du_updates (update_key, body, imported_at) VALUES ($1, $2, $3) ON CONFLICT (update_key) DO NOTHING",
        )
        .bind(key)
        .bind(body)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// An update's body.
    pub async fn update_body(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT body FROM du_updates WHERE update_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("body")).transpose()?)
    }

    /// Every update body, ordered by key.
    pub async fn update_bodies(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT body FROM du_updates ORDER BY update_key").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("body")?)).collect()
    }

    /// Deletes an update; whether it existed.
    pub async fn delete_update(&self, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM du_updates WHERE update_key = $1").bind(key).execute(&self.pool).await?;
        Ok(result.rows_affected() > 0)
    }

    // ----- operations --------------------------------------------------------------------------

    /// Creates or replaces an operation record.
    pub async fn put_operation(&self, id: &str, kind: &str, status: &str, body: &str) -> Result<(), StoreError> {
        let now = now_rfc3339();
        sqlx::query(
            "INSERT INTO du_operations (operation_id, kind, status, body, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (operation_id) DO UPDATE SET status = $3, body = $4, updated_at = $5",
        )
        .bind(id)
        .bind(kind)
        .bind(status)
        .bind(body)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An operation's body, if it is of `kind`.
    pub async fn operation(&self, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT body FROM du_operations WHERE operation_id = $1 AND kind = $2")
            .bind(id)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("body")).transpose()?)
    }

    /// Operations of `kind`, newest first; only unfinished ones when `pending_only`.
    pub async fn operations(&self, kind: &str, pending_only: bool) -> Result<Vec<String>, StoreError> {
        let sql = if pending_only {
            "SELECT body FROM du_operations WHERE kind = $1 AND status IN ('NotStarted', 'Running') ORDER BY created_at DESC, operation_id"
        } else {
            "SELECT body FROM du_operations WHERE kind = $1 ORDER BY created_at DESC, operation_id"
        };
        let rows = sqlx::query(sql).bind(kind).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("body")?)).collect()
    }

    /// Unfinished operations not touched since `before` (RFC 3339): work a stopped node left.
    pub async fn stale_operations(&self, before: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, body FROM du_operations WHERE status IN ('NotStarted', 'Running') AND updated_at < $1",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("body")?))).collect()
    }

    /// Forgets finished operations created before `before` (RFC 3339).
    pub async fn prune_operations(&self, before: &str) -> Result<u64, StoreError> {
        let result =
            sqlx::query("DELETE FROM du_operations WHERE status NOT IN ('NotStarted', 'Running') AND created_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected())
    }

    // ----- deployments -------------------------------------------------------------------------

    /// Every deployment, ordered by group and id.
    pub async fn deployments(&self) -> Result<Vec<Revisioned>, StoreError> {
        let rows = sqlx::query("SELECT body, revision FROM du_deployments ORDER BY group_id, deployment_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(Revisioned { body: r.try_get("body")?, revision: r.try_get("revision")? })).collect()
    }

    /// One deployment.
    pub async fn deployment(&self, group_id: &str, deployment_id: &str) -> Result<Option<Revisioned>, StoreError> {
        let row = sqlx::query("SELECT body, revision FROM du_deployments WHERE group_id = $1 AND deployment_id = $2")
            .bind(group_id)
            .bind(deployment_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(Revisioned { body: r.try_get("body")?, revision: r.try_get("revision")? })).transpose()
    }

    /// Creates a deployment (`expected` = `None`) or replaces the one at revision `expected`;
    /// `Ok(false)` when another writer got there first.
    pub async fn put_deployment(
        &self,
        group_id: &str,
        deployment_id: &str,
        body: &str,
        expected: Option<i64>,
    ) -> Result<bool, StoreError> {
        let result = match expected {
            None => {
                sqlx::query(
                    "INSERT INTO du_deployments (group_id, deployment_id, body, revision, created_at)
                     VALUES ($1, $2, $3, 1, $4) ON CONFLICT (group_id, deployment_id) DO NOTHING",
                )
                .bind(group_id)
                .bind(deployment_id)
                .bind(body)
                .bind(now_rfc3339())
                .execute(&self.pool)
                .await?
            }
            Some(revision) => {
                sqlx::query(
                    "UPDATE du_deployments SET body = $3, revision = revision + 1
                     WHERE group_id = $1 AND deployment_id = $2 AND revision = $4",
                )
                .bind(group_id)
                .bind(deployment_id)
                .bind(body)
                .bind(revision)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(result.rows_affected() == 1)
    }

    /// Deletes a deployment; whether it existed.
    pub async fn delete_deployment(&self, group_id: &str, deployment_id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM du_deployments WHERE group_id = $1 AND deployment_id = $2")
            .bind(group_id)
            .bind(deployment_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    // ----- groups, subgroups and device classes --------------------------------------------------

    /// Records that a group, device class or subgroup (`kind`, `key`) exists, keeping the first
    /// time it was seen; returns the records of `kind` as (key, body, created).
    pub async fn ensure_entities(
        &self,
        kind: &str,
        keys: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let existing = self.entities(kind).await?;
        let now = now_rfc3339();
        let mut added = false;
        for key in keys {
            if existing.iter().any(|(k, _, _)| k == key) {
                continue;
            }
            sqlx::query(
                "INSERT INTO du_entities (kind, entity_key, body, created_at) VALUES ($1, $2, '{}', $3)
                 ON CONFLICT (kind, entity_key) DO NOTHING",
            )
            .bind(kind)
            .bind(key)
            .bind(&now)
            .execute(&self.pool)
            .await?;
            added = true;
        }
        if added { self.entities(kind).await } else { Ok(existing) }
    }

    /// The records of `kind` as (key, body, created).
    pub async fn entities(&self, kind: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT entity_key, body, created_at FROM du_entities WHERE kind = $1 ORDER BY entity_key")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("entity_key")?, r.try_get("body")?, r.try_get("created_at")?))).collect()
    }

    /// Replaces the body of an entity; whether it exists.
    pub async fn set_entity_body(&self, kind: &str, key: &str, body: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE du_entities SET body = $3 WHERE kind = $1 AND entity_key = $2")
            .bind(kind)
            .bind(key)
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Forgets an entity; whether it existed.
    pub async fn delete_entity(&self, kind: &str, key: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM du_entities WHERE kind = $1 AND entity_key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}
