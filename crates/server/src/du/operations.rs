//! Long-running operation records (imports, update deletions, device imports): saved as JSON
//! documents, listed newest first, failed when a node stopped while they ran, pruned after a
//! week.

use serde_json::{Value, json};

use super::{DEVICE_OPERATION, DeviceUpdate, ServiceError, parse};
use crate::ids::{new_uuid, now_rfc3339, rfc3339};

impl DeviceUpdate {
    /// Records a finished device import (devices come from the hub's registry, so there is
    /// nothing to copy); returns its id.
    pub async fn import_devices(&self) -> Result<String, ServiceError> {
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let operation = json!({
            "operationId": operation_id, "status": "Succeeded",
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(DEVICE_OPERATION, &operation).await?;
        self.wake();
        Ok(operation_id)
    }

    pub(super) async fn save_operation(&self, kind: &str, operation: &Value) -> Result<(), ServiceError> {
        let id = operation["operationId"].as_str().unwrap_or_default();
        let status = operation["status"].as_str().unwrap_or_default();
        self.store.put_operation(id, kind, status, &operation.to_string()).await?;
        Ok(())
    }

    /// An operation.
    pub async fn operation(&self, kind: &str, id: &str) -> Result<Option<Value>, ServiceError> {
        self.store.operation(kind, id).await?.map(|b| parse(&b)).transpose()
    }

    /// Operations, newest first.
    pub async fn operations(&self, kind: &str, pending_only: bool) -> Result<Vec<Value>, ServiceError> {
        self.store.operations(kind, pending_only).await?.iter().map(|b| parse(b)).collect()
    }

    /// Fails operations left running by a node that stopped.
    pub(super) async fn recover_operations(&self) {
        let before = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::minutes(10));
        let Ok(stale) = self.store.stale_operations(&before).await else { return };
        for (kind, body) in stale {
            let Ok(mut operation) = serde_json::from_str::<Value>(&body) else { continue };
            operation["status"] = "Failed".into();
            operation["error"] = json!({"code": "OperationInterrupted", "message": "the server stopped while the operation ran; start it again"});
            operation["lastActionDateTime"] = now_rfc3339().into();
            let _ = self.save_operation(&kind, &operation).await;
        }
    }

    /// Forgets finished operations older than a week.
    pub(super) async fn prune_operations(&self) {
        let week_ago = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::days(7));
        if let Err(error) = self.store.prune_operations(&week_ago).await {
            tracing::warn!(%error, "pruning old operations failed");
        }
    }
}
