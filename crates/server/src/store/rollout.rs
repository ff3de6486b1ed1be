//! Members of phased rollouts (`du_rollout_member`): one row per device of a rollout deployment
//! with its rank, wave, when it was started and when it was first seen on the deployed update.
//! Rows are always read joined with the device's record (`du_device`) on the deployment's
//! group, so a device that left the group or was deleted no longer counts.

use sqlx::Row;

use super::record::Facts;
use super::{Store, StoreError};

/// A started member that has not settled, with what its record says.
#[derive(Debug, Clone)]
pub struct OpenMember {
    /// Device id.
    pub device_id: String,
    /// Its device class now.
    pub class_id: String,
    /// Its wave (0-based).
    pub wave: i64,
    /// When it was started (Unix ms).
    pub started_ms: i64,
    /// When it was first seen on the deployed update (Unix ms).
    pub installed_ms: Option<i64>,
    /// What it reports.
    pub facts: Facts,
    /// `Connected` or `Disconnected`.
    pub connection_state: String,
    /// When the connection state last changed (RFC 3339).
    pub connection_time: Option<String>,
}

/// Member counts by wave (`None`: not yet in a wave) and device class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCount {
    /// Wave, 0-based.
    pub wave: Option<i64>,
    /// Device class now.
    pub class_id: String,
    /// Members.
    pub members: u64,
    /// Of those, started.
    pub started: u64,
    /// Of those, settled as succeeded.
    pub succeeded: u64,
}

/// A change to a rollout's members, applied in the transaction that changes its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// The `count` lowest-ranked members of `class_id` not yet in a wave join wave `wave`.
    AssignWave {
        /// Device class.
        class_id: String,
        /// Wave, 0-based.
        wave: i64,
        /// How many.
        count: i64,
    },
    /// The `count` members of waves up to `max_wave` not yet started (by wave, then rank) are
    /// started at `now_ms`.
    Start {
        /// Highest wave.
        max_wave: i64,
        /// How many.
        count: i64,
        /// Now (Unix ms).
        now_ms: i64,
    },
}

/// A settled or observed fact about one member, written without changing the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberMark {
    /// First seen on the deployed update at this time (`None`: no longer on it).
    Installed(String, Option<i64>),
    /// Succeeded (baked); settled.
    Succeeded(String),
}

const MEMBER_JOIN: &str =
    "du_rollout_member m JOIN du_device d ON d.device_id = m.device_id AND d.group_id = m.group_id";

impl Store {
    /// Adds the devices of `group` in `classes` that are not yet members of the rollout, ranked
    /// by `rank`, in wave `wave` (`None`: to be assigned). Returns how many were added.
    pub async fn add_rollout_members(
        &self,
        group: &str,
        deployment: &str,
        classes: &[String],
        wave: Option<i64>,
        rank: impl Fn(&str) -> i64,
    ) -> Result<u64, StoreError> {
        let mut added = 0;
        for class in classes {
            let mut after = String::new();
            loop {
                let rows = sqlx::query(
                    "SELECT d.device_id FROM du_device d WHERE d.group_id = $1 AND d.class_id = $2 \
                     AND d.device_id > $4 AND NOT EXISTS (SELECT 1 FROM du_rollout_member m \
                     WHERE m.group_id = $1 AND m.deployment_id = $3 AND m.device_id = d.device_id) \
                     ORDER BY d.device_id LIMIT 500",
                )
                .bind(group)
                .bind(class)
                .bind(deployment)
                .bind(&after)
                .fetch_all(&self.pool)
                .await?;
                let ids: Vec<String> = rows.iter().map(|r| r.try_get("device_id")).collect::<Result<_, _>>()?;
                let Some(last) = ids.last() else { break };
                after = last.clone();
                let values: Vec<String> =
                    (0..ids.len()).map(|i| format!("($1, $2, ${}, $3, ${}, $4)", 5 + 2 * i, 6 + 2 * i)).collect();
                let sql = format!(
                    "INSERT INTO du_rollout_member (group_id, deployment_id, device_id, class_id, rank, wave) \
                     VALUES {} ON CONFLICT (group_id, deployment_id, device_id) DO NOTHING",
                    values.join(", ")
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group).bind(deployment).bind(class).bind(wave);
                for id in &ids {
                    query = query.bind(id.clone()).bind(rank(id));
                }
                added += query.execute(&self.pool).await?.rows_affected();
            }
        }
        Ok(added)
    }

    /// Member counts of a rollout by wave and current class.
    pub async fn rollout_member_counts(&self, group: &str, deployment: &str) -> Result<Vec<MemberCount>, StoreError> {
        let sql = format!(
            "SELECT m.wave, d.class_id, COUNT(*) AS members, COUNT(m.started_ms) AS started, \
             SUM(CASE WHEN m.outcome = 'Succeeded' THEN 1 ELSE 0 END) AS succeeded \
             FROM {MEMBER_JOIN} WHERE m.group_id = $1 AND m.deployment_id = $2 GROUP BY m.wave, d.class_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group).bind(deployment).fetch_all(&self.pool).await?;
        let count = |row: &sqlx::any::AnyRow, column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<Option<i64>, _>(column)?.unwrap_or(0)).unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                Ok(MemberCount {
                    wave: row.try_get("wave")?,
                    class_id: row.try_get("class_id")?,
                    members: count(row, "members")?,
                    started: count(row, "started")?,
                    succeeded: count(row, "succeeded")?,
                })
            })
            .collect()
    }

    /// Started members not settled, in device id order after `after` (keyset), at most `limit`.
    pub async fn open_rollout_members(
        &self,
        group: &str,
        deployment: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<OpenMember>, StoreError> {
        let sql = format!(
            "SELECT m.device_id, d.class_id, m.wave, m.started_ms, m.installed_ms, d.workflow_id, d.agent_state, \
             d.result_code, d.installed_update, d.connection_state, d.connection_time FROM {MEMBER_JOIN} \
             WHERE m.group_id = $1 AND m.deployment_id = $2 AND m.started_ms IS NOT NULL AND m.outcome IS NULL \
             AND m.device_id > $3 ORDER BY m.device_id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(group)
            .bind(deployment)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OpenMember {
                    device_id: row.try_get("device_id")?,
                    class_id: row.try_get("class_id")?,
                    wave: row.try_get::<Option<i64>, _>("wave")?.unwrap_or(0),
                    started_ms: row.try_get::<Option<i64>, _>("started_ms")?.unwrap_or(0),
                    installed_ms: row.try_get("installed_ms")?,
                    facts: Facts::from_row(row)?,
                    connection_state: row.try_get("connection_state")?,
                    connection_time: row.try_get("connection_time")?,
                })
            })
            .collect()
    }

    /// How many members of a rollout were started at or after `since_ms`.
    pub async fn rollout_started_since(
        &self,
        group: &str,
        deployment: &str,
        since_ms: i64,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS started, MIN(started_ms) AS oldest FROM du_rollout_member \
             WHERE group_id = $1 AND deployment_id = $2 AND started_ms >= $3",
        )
        .bind(group)
        .bind(deployment)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((u64::try_from(row.try_get::<i64, _>("started")?).unwrap_or(0), row.try_get("oldest")?))
    }

    /// Whether these devices are started members of the rollout: the subset that is.
    pub async fn started_rollout_members(
        &self,
        group: &str,
        deployment: &str,
        device_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for chunk in device_ids.chunks(500) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT device_id FROM du_rollout_member WHERE group_id = $1 AND deployment_id = $2 \
                 AND started_ms IS NOT NULL AND device_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group).bind(deployment);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(row.try_get("device_id")?);
            }
        }
        Ok(out)
    }

    /// Writes observed facts about members (no compare-and-swap: each is idempotent).
    pub async fn mark_rollout_members(
        &self,
        group: &str,
        deployment: &str,
        marks: &[MemberMark],
    ) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for mark in marks {
            let query = match mark {
                MemberMark::Installed(device, at) => sqlx::query(
                    "UPDATE du_rollout_member SET installed_ms = $4 WHERE group_id = $1 AND deployment_id = $2 \
                     AND device_id = $3 AND outcome IS NULL",
                )
                .bind(group)
                .bind(deployment)
                .bind(device)
                .bind(*at),
                MemberMark::Succeeded(device) => sqlx::query(
                    "UPDATE du_rollout_member SET outcome = 'Succeeded' WHERE group_id = $1 AND deployment_id = $2 \
                     AND device_id = $3",
                )
                .bind(group)
                .bind(deployment)
                .bind(device),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a deployment's body at revision `expected` and applies `changes` to its rollout
    /// members, in one transaction: `Ok(false)` (nothing changed) when another writer changed
    /// the deployment first. Two nodes therefore never start the same wave or the same rate
    /// budget twice.
    pub async fn change_rollout(
        &self,
        group: &str,
        deployment: &str,
        body: &str,
        expected: i64,
        changes: &[MemberChange],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let swapped = sqlx::query(
            "UPDATE du_deployments SET body = $3, revision = revision + 1 \
             WHERE group_id = $1 AND deployment_id = $2 AND revision = $4",
        )
        .bind(group)
        .bind(deployment)
        .bind(body)
        .bind(expected)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !swapped {
            tx.rollback().await?;
            return Ok(false);
        }
        for change in changes {
            match change {
                MemberChange::AssignWave { class_id, wave, count } => {
                    let sql = format!(
                        "UPDATE du_rollout_member SET wave = $4 WHERE group_id = $1 AND deployment_id = $2 \
                         AND device_id IN (SELECT m.device_id FROM {MEMBER_JOIN} WHERE m.group_id = $1 \
                         AND m.deployment_id = $2 AND d.class_id = $3 AND m.wave IS NULL ORDER BY m.rank LIMIT $5)"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(group)
                        .bind(deployment)
                        .bind(class_id)
                        .bind(wave)
                        .bind(count)
                        .execute(&mut *tx)
                        .await?;
                }
                MemberChange::Start { max_wave, count, now_ms } => {
                    let sql = format!(
                        "UPDATE du_rollout_member SET started_ms = $4 WHERE group_id = $1 AND deployment_id = $2 \
                         AND device_id IN (SELECT m.device_id FROM {MEMBER_JOIN} WHERE m.group_id = $1 \
                         AND m.deployment_id = $2 AND m.wave IS NOT NULL AND m.wave <= $3 AND m.started_ms IS NULL \
                         ORDER BY m.wave, m.rank LIMIT $5)"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(group)
                        .bind(deployment)
                        .bind(max_wave)
                        .bind(now_ms)
                        .bind(count)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Members of a rollout waiting to start (in a started wave, not started).
    pub async fn rollout_waiting(&self, group: &str, deployment: &str, max_wave: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM {MEMBER_JOIN} WHERE m.group_id = $1 AND m.deployment_id = $2 \
             AND m.wave IS NOT NULL AND m.wave <= $3 AND m.started_ms IS NULL"
        );
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(group)
            .bind(deployment)
            .bind(max_wave)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Deletes the members of a deployment (with the deployment).
    pub async fn delete_rollout_members(&self, group: &str, deployment: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM du_rollout_member WHERE group_id = $1 AND deployment_id = $2")
            .bind(group)
            .bind(deployment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
