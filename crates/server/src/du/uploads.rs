//! Uploads that no import claims: a token holder could otherwise fill the disk. Each upload is
//! recorded as pending ([`crate::store`]'s `du_uploads`); an import that uses it claims it; what
//! is still pending after `upload_expiry` is deleted (unless an imported update uses the same
//! content) by a sweep on a timer. The bytes of pending uploads are capped
//! (`max_pending_upload_bytes`): the upload that would pass the cap is refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{DeviceUpdate, ServiceError};

/// How many expired uploads one sweep removes at most (the next sweep takes the rest).
const SWEEP_BATCH: i64 = 1000;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl DeviceUpdate {
    /// How many more bytes may be uploaded now (the cap less what is pending).
    pub async fn upload_allowance(&self) -> Result<u64, ServiceError> {
        let pending = self.store.pending_upload_bytes().await?;
        Ok(self.settings.max_pending_upload_bytes.saturating_sub(pending))
    }

    /// Records a finished upload as pending.
    pub async fn record_upload(&self, blob_id: &str, size: u64) -> Result<(), ServiceError> {
        Ok(self.store.record_upload(blob_id, size, now_ms()).await?)
    }

    /// Marks uploads an import used as claimed: they no longer expire.
    pub(super) async fn claim_uploads(&self, uploads: &[String]) {
        for id in uploads {
            if let Err(error) = self.store.forget_upload(id).await {
                tracing::warn!(%error, upload = %id, "could not mark an upload as claimed");
            }
        }
    }

    /// Deletes uploads pending for longer than `upload_expiry` (keeping content an imported
    /// update uses); returns how many it removed from the pending list.
    pub async fn sweep_uploads(&self) -> Result<usize, ServiceError> {
        let expiry = i64::try_from(self.settings.upload_expiry.as_millis()).unwrap_or(i64::MAX);
        let expired = self.store.expired_uploads(now_ms().saturating_sub(expiry), SWEEP_BATCH).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let used = self.used_blobs().await?;
        for id in &expired {
            if !used.contains(id) {
                match self.content.delete(id).await {
                    Ok(()) | Err(super::content::ContentError::NotFound(_)) => {}
                    Err(error) => {
                        tracing::warn!(%error, upload = %id, "could not delete an expired upload");
                        continue;
                    }
                }
                tracing::info!(upload = %id, "deleted an upload no import claimed in time");
            }
            self.store.forget_upload(id).await?;
        }
        Ok(expired.len())
    }

    /// Sweeps expired uploads every quarter of `upload_expiry` (at most every minute, at least
    /// every second) until stopped.
    pub async fn expire_uploads(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let every = (self.settings.upload_expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match self.sweep_uploads().await {
                Ok(n) if n as i64 == SWEEP_BATCH => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweeping expired uploads failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}
