//! What the operator dashboard (`ui`) alone needs from storage: its sign-in sessions, the
//! device list searched by id prefix (one keyset page at a time), device counts, and failures
//! counted by extended result code from the per-device records.
//!
//! A session is stored as the SHA-256 of its id (the cookie value never reaches the database)
//! next to the SHA-256 of the API token it was opened with: a session is valid only while that
//! token is unrevoked and the session has not expired, so revoking a token ends its sessions.

use sqlx::Row;

use super::access::token_hash;
use super::{Store, StoreError};
use crate::ids::now_rfc3339;

/// A valid dashboard session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// The token every state-changing request of the session must carry.
    pub csrf_token: String,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
    /// The name of the API token it was opened with (recorded with a rollout's controls).
    pub token_name: String,
}

/// One device of the dashboard's device list.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceListing {
    /// Device id.
    pub device_id: String,
    /// `Connected` or `Disconnected`.
    pub connection_state: String,
    /// Last MQTT activity (RFC 3339).
    pub last_activity: Option<String>,
    /// Tags document.
    pub tags: serde_json::Value,
    /// Reported properties (without `$version`).
    pub reported: serde_json::Value,
}

impl Store {
    /// Opens a session `session_id` for the API token `token`, valid until `expires_at` (Unix
    /// seconds); `Ok(false)` (and no session) when the token is unknown or revoked.
    pub async fn open_ui_session(
        &self,
        session_id: &str,
        token: &str,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        if !self.api_token_valid(token).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO ui_sessions (session_sha256, token_sha256, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(session_id))
        .bind(token_hash(token))
        .bind(csrf_token)
        .bind(now_rfc3339())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// The session `session_id` if it exists, has not expired at `now` (Unix seconds) and its
    /// API token is not revoked.
    pub async fn ui_session(&self, session_id: &str, now: i64) -> Result<Option<UiSession>, StoreError> {
        let row = sqlx::query(
            "SELECT s.csrf_token, s.expires_at, t.name FROM ui_sessions s \
             JOIN api_tokens t ON t.token_sha256 = s.token_sha256 \
             WHERE s.session_sha256 = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
        )
        .bind(token_hash(session_id))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UiSession {
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
                token_name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    /// Ends a session (signing out); also removes sessions that expired before `now`.
    pub async fn close_ui_session(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM ui_sessions WHERE session_sha256 = $1 OR expires_at <= $2")
            .bind(token_hash(session_id))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Devices whose id starts with `prefix`, in id order after `after` (`""` for the first
    /// page), at most `limit`.
    pub async fn devices_by_prefix(
        &self,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<DeviceListing>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, connection_state, last_activity, tags, reported FROM devices \
             WHERE device_id > $1 AND device_id >= $2 AND substr(device_id, 1, CAST($3 AS INTEGER)) = $2 \
             ORDER BY device_id LIMIT $4",
        )
        .bind(after)
        .bind(prefix)
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(limit.clamp(1, 1_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceListing {
                    device_id: row.try_get("device_id")?,
                    connection_state: row.try_get("connection_state")?,
                    last_activity: row.try_get("last_activity")?,
                    tags: json(&row.try_get::<String, _>("tags")?)?,
                    reported: json(&row.try_get::<String, _>("reported")?)?,
                })
            })
            .collect()
    }

    /// Devices whose last report is a failure (agent state 255) of one of `workflow_ids`, counted
    /// by extended result code (the record's integer form).
    pub async fn failures_by_code(&self, workflow_ids: &[String]) -> Result<Vec<(i64, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
        for chunk in workflow_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT COALESCE(extended_result_code, 0) AS code, COUNT(*) AS devices FROM du_device \
                 WHERE agent_state = 255 AND workflow_id IN ({}) GROUP BY COALESCE(extended_result_code, 0)",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let devices = u64::try_from(row.try_get::<i64, _>("devices")?).unwrap_or(0);
                *counts.entry(row.try_get("code")?).or_default() += devices;
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// The reported `deviceUpdate.agent.lastInstallResult` of each of `device_ids` that has one,
    /// in one query per 500 ids.
    pub async fn last_install_results(
        &self,
        device_ids: &[String],
    ) -> Result<std::collections::HashMap<String, serde_json::Value>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for chunk in device_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql =
                format!("SELECT device_id, reported FROM devices WHERE device_id IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let reported = json(&row.try_get::<String, _>("reported")?)?;
                if let Some(result) = reported.pointer("/deviceUpdate/agent/lastInstallResult") {
                    out.insert(row.try_get("device_id")?, result.clone());
                }
            }
        }
        Ok(out)
    }

    /// Registered devices and how many of them are connected now.
    pub async fn device_counts(&self) -> Result<(u64, u64), StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices").fetch_one(&self.pool).await?;
        let connected: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE connection_state = 'Connected'")
            .fetch_one(&self.pool)
            .await?;
        Ok((u64::try_from(total).unwrap_or(0), u64::try_from(connected).unwrap_or(0)))
    }
}

fn json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}
