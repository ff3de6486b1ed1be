//! Updates: reading the stored ones, starting an import (a long-running operation run on a
//! task) and deleting one with its unused files.

use std::collections::HashSet;
use std::sync::Arc;

use duhub_proto::update_id::UpdateId;
use serde_json::json;

use super::import::{self, ImportItem};
use super::model::{StoredUpdate, update_key};
use super::{API_VERSION_2022, DELETE_OPERATION, DeviceUpdate, ServiceError, UPDATE_OPERATION, fleet, parse};
use crate::ids::{new_uuid, now_rfc3339};

impl DeviceUpdate {
    /// An update by id (provider and name without case).
    pub async fn stored_update(&self, id: &UpdateId) -> Result<Option<StoredUpdate>, ServiceError> {
        self.store.update_body(&update_key(id)).await?.map(|body| parse(&body)).transpose()
    }

    /// Every update, ordered by provider, name, version.
    pub async fn updates(&self) -> Result<Vec<StoredUpdate>, ServiceError> {
        let mut updates: Vec<StoredUpdate> =
            self.store.update_bodies().await?.iter().map(|b| parse(b)).collect::<Result<_, _>>()?;
        updates.sort_by(|a, b| {
            (a.update_id.provider.to_ascii_lowercase(), a.update_id.name.to_ascii_lowercase())
                .cmp(&(b.update_id.provider.to_ascii_lowercase(), b.update_id.name.to_ascii_lowercase()))
                .then_with(|| fleet::compare_versions(&a.update_id.version, &b.update_id.version))
        });
        Ok(updates)
    }

    /// Blob ids any stored update uses.
    pub(crate) async fn used_blobs(&self) -> Result<HashSet<String>, ServiceError> {
        Ok(self.updates().await?.iter().flat_map(|u| u.files.iter().map(|f| f.blob.clone())).collect())
    }

    /// Starts importing `items` as a long-running operation; returns its id.
    pub async fn start_import(self: &Arc<Self>, items: Vec<ImportItem>) -> Result<String, ServiceError> {
        import::check_request(&items).map_err(ServiceError::Invalid)?;
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let mut operation = json!({
            "operationId": operation_id, "status": "NotStarted",
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(UPDATE_OPERATION, &operation).await?;
        let service = self.clone();
        let id = operation_id.clone();
        tokio::spawn(async move {
            operation["status"] = "Running".into();
            operation["lastActionDateTime"] = now_rfc3339().into();
            if let Err(error) = service.save_operation(UPDATE_OPERATION, &operation).await {
                tracing::error!(%error, "recording an import operation failed");
            }
            let result = service.import(&id, &items).await;
            let finished = match result {
                Ok(updates) => {
                    let first = updates.first();
                    let mut value = operation.clone();
                    value["status"] = "Succeeded".into();
                    if let Some(update) = first {
                        value["update"] = update.info();
                        value["resourceLocation"] = format!(
                            "/deviceUpdate/{}/updates/providers/{}/names/{}/versions/{}?api-version={API_VERSION_2022}",
                            service.settings.instance_id,
                            update.update_id.provider,
                            update.update_id.name,
                            update.update_id.version
                        )
                        .into();
                    }
                    tracing::info!(operation = id, updates = updates.len(), "import succeeded");
                    value
                }
                Err(error) => {
                    tracing::info!(operation = id, code = error.code, message = %error.message, "import failed");
                    let mut value = operation.clone();
                    value["status"] = "Failed".into();
                    value["error"] = error.to_json();
                    value
                }
            };
            let mut finished = finished;
            finished["lastActionDateTime"] = now_rfc3339().into();
            finished["etag"] = format!("\"{}\"", new_uuid()).into();
            if let Err(error) = service.save_operation(UPDATE_OPERATION, &finished).await {
                tracing::error!(%error, "recording an import operation failed");
            }
        });
        Ok(operation_id)
    }

    /// Starts deleting an update as a long-running operation; returns its id. Refused while a
    /// deployment uses it or another update references it.
    pub async fn start_delete(self: &Arc<Self>, id: &UpdateId) -> Result<String, ServiceError> {
        let update =
            self.stored_update(id).await?.ok_or_else(|| ServiceError::NotFound(format!("update {id} not found")))?;
        let updates = self.updates().await?;
        if let Some(parent) = updates.iter().find(|u| u.references.iter().any(|r| update_key(r) == update_key(id))) {
            return Err(ServiceError::Conflict(format!(
                "update {} references {id}; delete it first",
                parent.update_id
            )));
        }
        let deployments = self.deployments().await?;
        if let Some(deployment) = deployments.iter().find(|(d, _)| {
            update_key(&d.update) == update_key(id)
                || d.rollback_policy.as_ref().is_some_and(|p| update_key(&p.update) == update_key(id))
        }) {
            return Err(ServiceError::Conflict(format!(
                "deployment {} of group {} uses update {id}; delete it first",
                deployment.0.deployment_id, deployment.0.group_id
            )));
        }
        let operation_id = new_uuid();
        let now = now_rfc3339();
        let mut operation = json!({
            "operationId": operation_id, "status": "Running", "update": update.info(),
            "createdDateTime": now, "lastActionDateTime": now, "etag": format!("\"{}\"", new_uuid()),
        });
        self.save_operation(DELETE_OPERATION, &operation).await?;
        let outcome = async {
            self.store.delete_update(&update_key(id)).await?;
            let used = self.used_blobs().await?;
            for file in &update.files {
                if !used.contains(&file.blob) {
                    self.content.delete(&file.blob).await?;
                }
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        match outcome {
            Ok(()) => operation["status"] = "Succeeded".into(),
            Err(error) => {
                tracing::error!(%error, "deleting an update failed");
                operation["status"] = "Failed".into();
                operation["error"] =
                    json!({"code": "InternalError", "message": "deleting the update failed; see the server log"});
            }
        }
        operation["lastActionDateTime"] = now_rfc3339().into();
        self.save_operation(DELETE_OPERATION, &operation).await?;
        Ok(operation_id)
    }
}
