//! This node's lease on its device sessions (see `store::nodes`): renewed every third of its
//! length; each renewal also releases the devices of nodes whose lease ran out. If this node's
//! own lease had lapsed (another node released its devices while it could not reach the
//! database), its live sessions are recorded as connected again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Hub;

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Hub {
    /// Takes this node's lease for `lease`, after releasing the devices of `previous_node` (this
    /// data directory's node before a crash or restart: the data directory lock makes it sure it
    /// is gone) and of every node whose lease ran out.
    pub async fn take_lease(&self, lease: Duration, previous_node: Option<&str>) -> anyhow::Result<()> {
        if let Some(previous) = previous_node.filter(|p| *p != self.store.node_id()) {
            let released = self.store.release_node(previous, None).await?;
            if released > 0 {
                tracing::info!(
                    released,
                    node = previous,
                    "recorded the devices of this node's previous run as disconnected"
                );
            }
        }
        self.store.renew_lease(now_ms().saturating_add(millis(lease))).await?;
        self.release_expired_nodes().await;
        Ok(())
    }

    /// Renews the lease every third of `lease` until stopped, releasing expired nodes each time.
    pub async fn hold_lease(self: Arc<Self>, lease: Duration, mut stopped: watch::Receiver<bool>) {
        let every = (lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
            match self.store.renew_lease(now_ms().saturating_add(millis(lease))).await {
                Ok(true) => {}
                Ok(false) => self.reassert_sessions().await,
                Err(error) => tracing::warn!(%error, "could not renew this node's lease on its device sessions"),
            }
            self.release_expired_nodes().await;
        }
    }

    /// Drops this node's lease and records its remaining devices as disconnected (at shutdown,
    /// after the sessions closed).
    pub async fn release_lease(&self) {
        if let Err(error) = self.store.release_node(self.store.node_id(), None).await {
            tracing::warn!(%error, "could not release this node's lease");
        }
    }

    async fn release_expired_nodes(&self) {
        let now = now_ms();
        let expired = match self.store.expired_nodes(now).await {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "could not look for nodes whose lease expired");
                return;
            }
        };
        for node in expired {
            match self.store.release_node(&node, Some(now)).await {
                Ok(released) => {
                    tracing::info!(node = %node, released, "a node's lease expired: recorded its devices as disconnected")
                }
                Err(error) => tracing::warn!(%error, node = %node, "could not release an expired node's devices"),
            }
        }
    }

    /// Records every session on this node as connected again (after its lease had lapsed).
    async fn reassert_sessions(&self) {
        let devices: Vec<String> = self.sessions().keys().cloned().collect();
        if devices.is_empty() {
            return;
        }
        tracing::warn!(sessions = devices.len(), "this node's lease had lapsed; recording its sessions again");
        for device_id in devices {
            if let Err(error) = self.store.set_connection(&device_id, true, None, None).await {
                tracing::warn!(%error, device = %device_id, "could not record the connection again");
            }
        }
    }
}
