//! Uploads (`POST .../duhub/uploads`) that no import has claimed yet: their size (for the cap
//! on pending bytes) and when they came (for expiry). A row is removed when an import claims the
//! upload or when it expires.

use sqlx::Row as _;

use super::{Store, StoreError};

impl Store {
    /// The bytes of all pending uploads.
    pub async fn pending_upload_bytes(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS total FROM du_uploads")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("total")?).unwrap_or(0))
    }

    /// Records an upload of blob `blob_id` at `now_ms` (milliseconds since the Unix epoch); the
    /// same content uploaded again starts its expiry anew.
    pub async fn record_upload(&self, blob_id: &str, size: u64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO du_uploads (blob_id, size_bytes, uploaded_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (blob_id) DO UPDATE SET uploaded_at_ms = excluded.uploaded_at_ms",
        )
        .bind(blob_id)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a pending upload (an import claimed it, or it expired and was removed).
    pub async fn forget_upload(&self, blob_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM du_uploads WHERE blob_id = $1").bind(blob_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Up to `limit` pending uploads that came before `before_ms`, oldest first (an index scan).
    pub async fn expired_uploads(&self, before_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT blob_id FROM du_uploads WHERE uploaded_at_ms < $1 ORDER BY uploaded_at_ms LIMIT $2")
                .bind(before_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| row.try_get("blob_id").map_err(StoreError::from)).collect()
    }
}
