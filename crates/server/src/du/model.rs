//! The Device Update records the service stores (updates, deployments, operations), and their
//! REST shapes as the 2022-10-01 swagger defines them.

use std::collections::BTreeMap;

use duhub_proto::update_id::UpdateId;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The key an update is stored and looked up under: provider, name and version, lower-cased
/// (the service treats them without case).
pub fn update_key(id: &UpdateId) -> String {
    format!("{}/{}/{}", id.provider, id.name, id.version).to_ascii_lowercase()
}

/// `{"provider","name","version"}` in that order.
pub fn update_id_json(id: &UpdateId) -> Value {
    json!({"provider": id.provider, "name": id.name, "version": id.version})
}

/// What a stored file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    /// A payload file of the import manifest.
    Payload,
    /// A related file of a payload file.
    Related,
    /// The manifest file of a referenced (child) update.
    ChildManifest,
    /// The file holding the full manifest of a detached top-level manifest.
    DetachedManifest,
}

/// A file of an update, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    /// File id of the update manifest (`f` + 16 hex).
    pub file_id: String,
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Base64 SHA-256.
    pub sha256: String,
    /// Content store blob id.
    pub blob: String,
    /// What it is for.
    pub kind: FileKind,
    /// Properties from the import manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    /// Download handler id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_handler: Option<String>,
    /// File ids of its related files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_files: Vec<String>,
    /// Media type, if the import manifest gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// An imported update, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUpdate {
    /// Its id.
    pub update_id: UpdateId,
    /// Description from the import manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Friendly name given at import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Whether it may be deployed on its own.
    pub is_deployable: bool,
    /// Compatibility sets.
    pub compatibility: Vec<IndexMap<String, String>>,
    /// Steps in the REST shape.
    pub steps: Vec<Value>,
    /// Updates its reference steps install.
    #[serde(default)]
    pub references: Vec<UpdateId>,
    /// Import manifest version (`"4.0"`, `"5.0"`).
    pub manifest_version: String,
    /// `createdDateTime` of the import manifest.
    pub created_date_time: String,
    /// When it was imported.
    pub imported_date_time: String,
    /// Changes when the record changes.
    pub etag: String,
    /// The update manifest string devices get (inline or detached mini manifest).
    pub update_manifest: String,
    /// Its compact JWS.
    pub update_manifest_signature: String,
    /// The full update manifest (what a detached manifest file or a parent's child file holds).
    pub full_manifest: String,
    /// Every downloadable file: payloads, related files, child and detached manifest files.
    pub files: Vec<StoredFile>,
    /// The import operation that created it.
    pub operation_id: String,
}

impl StoredUpdate {
    /// The REST `Update`.
    pub fn to_rest(&self, referenced_by: &[UpdateId]) -> Value {
        let mut value = json!({"updateId": update_id_json(&self.update_id)});
        let object = value.as_object_mut();
        if let Some(object) = object {
            if let Some(description) = &self.description {
                object.insert("description".into(), description.clone().into());
            }
            if let Some(name) = &self.friendly_name {
                object.insert("friendlyName".into(), name.clone().into());
            }
            object.insert("isDeployable".into(), self.is_deployable.into());
            object.insert("compatibility".into(), json!(self.compatibility));
            object.insert("instructions".into(), json!({"steps": self.steps}));
            if !referenced_by.is_empty() {
                object.insert("referencedBy".into(), referenced_by.iter().map(update_id_json).collect());
            }
            object.insert("scanResult".into(), "Success".into());
            object.insert("manifestVersion".into(), self.manifest_version.clone().into());
            object.insert("importedDateTime".into(), self.imported_date_time.clone().into());
            object.insert("createdDateTime".into(), self.created_date_time.clone().into());
            object.insert("etag".into(), format!("\"{}\"", self.etag).into());
        }
        value
    }

    /// The REST `UpdateInfo`.
    pub fn info(&self) -> Value {
        let mut value = json!({"updateId": update_id_json(&self.update_id)});
        if let Some(description) = &self.description {
            value["description"] = description.clone().into();
        }
        if let Some(name) = &self.friendly_name {
            value["friendlyName"] = name.clone().into();
        }
        value
    }

    /// The full update manifest string.
    pub fn full_manifest_json(&self) -> &str {
        &self.full_manifest
    }

    /// Payload files (what `ListFiles` lists).
    pub fn payload_files(&self) -> impl Iterator<Item = &StoredFile> {
        self.files.iter().filter(|f| f.kind == FileKind::Payload)
    }

    /// A file by id.
    pub fn file(&self, file_id: &str) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.file_id == file_id)
    }

    /// The REST `UpdateFile` of a payload file.
    pub fn file_to_rest(&self, file: &StoredFile) -> Value {
        let mut value = file_base(file);
        value["fileId"] = file.file_id.clone().into();
        let related: Vec<Value> = file.related_files.iter().filter_map(|id| self.file(id)).map(file_base).collect();
        if !related.is_empty() {
            value["relatedFiles"] = related.into();
        }
        if let Some(handler) = &file.download_handler {
            value["downloadHandler"] = json!({"id": handler});
        }
        value["etag"] = format!("\"{}\"", file.sha256).into();
        value
    }
}

fn file_base(file: &StoredFile) -> Value {
    let mut value = json!({
        "fileName": file.file_name,
        "sizeInBytes": file.size_in_bytes,
        "hashes": {"sha256": file.sha256},
    });
    if let Some(mime) = &file.mime_type {
        value["mimeType"] = mime.clone().into();
    }
    value["scanResult"] = "Success".into();
    if let Some(properties) = &file.properties {
        // The REST model types property values as strings.
        let strings: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned).into()))
            .collect();
        value["properties"] = Value::Object(strings);
    }
    value
}

/// Cloud-initiated rollback: when failures pass both thresholds, `update` is deployed to the
/// failed devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// The update to roll back to.
    pub update: UpdateId,
    /// Minimum percentage of failed devices (of the subgroup).
    pub devices_failed_percentage: f64,
    /// Minimum number of failed devices.
    pub devices_failed_count: u64,
}

/// What a deployment has done in one device class subgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubgroupState {
    /// Workflow id written to the devices.
    pub workflow_id: String,
    /// When the subgroup joined the deployment.
    pub started: String,
    /// Cancelled (action 255 written).
    #[serde(default)]
    pub canceled: bool,
    /// `retryTimestamp` of the latest retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timestamp: Option<String>,
    /// How many times it was retried.
    #[serde(default)]
    pub retry_count: u32,
    /// The devices the latest retry applies to (those failed when it was asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_devices: Vec<String>,
    /// The cloud-initiated rollback deployment this subgroup triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_deployment: Option<String>,
}

/// Whether a deployment id follows the service's rules: 1 to 73 characters, no upper-case
/// letters and none of `& ^ [ ] { } | < > / \ "`.
pub fn valid_deployment_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 73 && !id.chars().any(|c| c.is_uppercase() || "&^[]{}|<>/\\\"".contains(c))
}

/// A deployment, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDeployment {
    /// Its id.
    pub deployment_id: String,
    /// The group it targets.
    pub group_id: String,
    /// When devices may start (RFC 3339).
    pub start_date_time: String,
    /// The update.
    pub update: UpdateId,
    /// Rollback policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_policy: Option<RollbackPolicy>,
    /// Created by a rollback policy.
    #[serde(default)]
    pub is_cloud_initiated_rollback: bool,
    /// `"https"` or `"http"` (api-version 2026-06-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_security: Option<String>,
    /// Creation time.
    pub created_date_time: String,
    /// Per device class subgroup.
    #[serde(default)]
    pub subgroups: BTreeMap<String, SubgroupState>,
    /// Rollback deployments: the only devices targeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_devices: Option<Vec<String>>,
    /// Device classes whose subgroup deployment was deleted: never extended to again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub excluded_subgroups: std::collections::BTreeSet<String>,
    /// Rollback deployments: the device class of their devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_device_class: Option<String>,
    /// A phased rollout (duhub extension): only its started members are told the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::du::rollout::Rollout>,
}

impl StoredDeployment {
    /// Whether every subgroup it reached is cancelled.
    pub fn is_canceled(&self) -> bool {
        !self.subgroups.is_empty() && self.subgroups.values().all(|s| s.canceled)
    }

    /// The REST `Deployment`.
    pub fn to_rest(&self, update_info: Value, api_version: &str) -> Value {
        let mut value = json!({
            "deploymentId": self.deployment_id,
            "startDateTime": self.start_date_time,
            "update": update_info,
            "groupId": self.group_id,
            "deviceClassSubgroups": self.subgroups.keys().collect::<Vec<_>>(),
            "isCanceled": self.is_canceled(),
            "isRetried": self.subgroups.values().any(|s| s.retry_count > 0),
            "isCloudInitiatedRollback": self.is_cloud_initiated_rollback,
        });
        if let Some(policy) = &self.rollback_policy {
            value["rollbackPolicy"] = json!({
                "update": {"updateId": update_id_json(&policy.update)},
                "failure": {
                    "devicesFailedPercentage": policy.devices_failed_percentage,
                    "devicesFailedCount": policy.devices_failed_count,
                },
            });
        }
        if api_version >= crate::du::API_VERSION_2026 {
            value["downloadSecurity"] = self.download_security.clone().unwrap_or_else(|| "https".into()).into();
        }
        value
    }
}
