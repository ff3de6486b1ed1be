//! Importing updates: fetch the import manifest and its files (from http(s) URLs or from
//! uploads), check every size and SHA-256 in the single pass that stores them, validate the
//! manifest, resolve reference steps, generate and sign the update manifest, store the update.
//!
//! An import is all or nothing: when any item of a request fails, no update of the request is
//! kept and the blobs it added that nothing else uses are removed.

use std::sync::Arc;

use duhub_proto::import_manifest::{self, ImportManifest, ImportManifestError};
use duhub_proto::update_id::UpdateId;
use duhub_proto::update_manifest::{self, ChildUpdate, FileSource, TwinManifest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::content::{Blob, ContentError, Expected};
use super::model::{FileKind, StoredFile, StoredUpdate, update_key};
use super::{DeviceUpdate, ServiceError};
use crate::ids::now_rfc3339;

/// Most items of one import request (the swagger's limit).
pub const MAX_ITEMS: usize = 11;
/// Largest import manifest fetched.
const MAX_MANIFEST_BYTES: u64 = 2 * 1024 * 1024;
/// Largest total size of an update's files.
pub const MAX_UPDATE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Most payload files of an update.
pub const MAX_FILES: usize = 10;
/// Scheme of URLs that name a blob uploaded to this server.
pub const UPLOAD_SCHEME: &str = "upload:";

/// One item of `POST /updates:import`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportItem {
    /// Where the import manifest is, and its size and hashes.
    pub import_manifest: ManifestLocation,
    /// Friendly name of the update.
    #[serde(default)]
    pub friendly_name: Option<String>,
    /// Where each file is.
    #[serde(default)]
    pub files: Vec<FileLocation>,
}

/// `importManifest` of an import item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLocation {
    /// URL.
    pub url: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Hashes by algorithm (base64); `sha256` required.
    pub hashes: std::collections::BTreeMap<String, String>,
}

/// A file of an import item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileLocation {
    /// File name as in the import manifest.
    pub filename: String,
    /// URL.
    pub url: String,
}

/// Why an import failed: the operation's `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    /// Error code.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Per-violation details: (code, message, target).
    pub details: Vec<(String, String, Option<String>)>,
}

impl ImportError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new() }
    }

    /// The REST error object.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty() {
            error["details"] = self
                .details
                .iter()
                .map(|(code, message, target)| {
                    let mut detail = json!({"code": code, "message": message});
                    if let Some(target) = target {
                        detail["target"] = target.clone().into();
                    }
                    detail
                })
                .collect();
        }
        error
    }
}

impl From<ServiceError> for ImportError {
    fn from(error: ServiceError) -> Self {
        tracing::error!(%error, "import failed on an internal error");
        Self::new("InternalError", "the server failed to store the update; see its log")
    }
}

/// Checks the shape of an import request before an operation is created for it.
pub fn check_request(items: &[ImportItem]) -> Result<(), String> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(format!("an import request holds 1 to {MAX_ITEMS} items, not {}", items.len()));
    }
    for (index, item) in items.iter().enumerate() {
        let sha = item.import_manifest.hashes.get("sha256");
        if sha.is_none_or(|h| import_manifest::decode_sha256(h).is_none()) {
            return Err(format!(
                "item {index}: importManifest.hashes.sha256 must be the base64 SHA-256 of the manifest"
            ));
        }
        if !is_fetchable(&item.import_manifest.url) {
            return Err(format!("item {index}: importManifest.url must be an http(s) URL or an upload"));
        }
        for file in &item.files {
            if !is_fetchable(&file.url) {
                return Err(format!(
                    "item {index}: the URL of file {:?} must be an http(s) URL or an upload",
                    file.filename
                ));
            }
        }
    }
    Ok(())
}

fn is_fetchable(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || url.starts_with(UPLOAD_SCHEME)
}

/// Blobs an import added, to remove if it fails.
#[derive(Default)]
struct Added {
    blobs: Vec<String>,
    updates: Vec<String>,
    /// Uploads the import used: claimed (no longer expire) once it succeeds.
    uploads: Vec<String>,
}

impl DeviceUpdate {
    /// Imports `items`; returns the stored updates (in request order).
    pub(super) async fn import(
        self: &Arc<Self>,
        operation_id: &str,
        items: &[ImportItem],
    ) -> Result<Vec<StoredUpdate>, ImportError> {
        let mut added = Added::default();
        let result = self.import_all(operation_id, items, &mut added).await;
        if result.is_err() {
            self.undo(&added).await;
        } else {
            self.claim_uploads(&added.uploads).await;
        }
        result
    }

    async fn import_all(
        self: &Arc<Self>,
        operation_id: &str,
        items: &[ImportItem],
        added: &mut Added,
    ) -> Result<Vec<StoredUpdate>, ImportError> {
        // Manifests first: children of the same request are imported before their parents.
        let mut manifests = Vec::new();
        for item in items {
            let (manifest, _) = self.fetch_manifest(item, added).await?;
            manifests.push((item, manifest));
        }
        let mut order: Vec<usize> = (0..manifests.len()).collect();
        order.sort_by_key(|&i| manifests[i].1.reference_update_ids().count() > 0);
        let mut stored = vec![None; manifests.len()];
        for index in order {
            let (item, manifest) = &manifests[index];
            let update = self.import_one(operation_id, item, manifest, added).await?;
            stored[index] = Some(update);
        }
        Ok(stored.into_iter().flatten().collect())
    }

    async fn fetch_manifest(
        &self,
        item: &ImportItem,
        added: &mut Added,
    ) -> Result<(ImportManifest, Blob), ImportError> {
        let location = &item.import_manifest;
        let sha256 =
            location.hashes.get("sha256").and_then(|h| import_manifest::decode_sha256(h)).ok_or_else(|| {
                ImportError::new("InvalidImportManifestHash", "importManifest.hashes.sha256 is not a base64 SHA-256")
            })?;
        if location.size_in_bytes > MAX_MANIFEST_BYTES {
            return Err(ImportError::new(
                "ImportManifestTooLarge",
                format!("the import manifest may have at most {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let expected = Expected { size: location.size_in_bytes, sha256 };
        let blob = self.fetch(&location.url, "the import manifest", expected, added).await?;
        let bytes = self.content.read(&blob.id(), MAX_MANIFEST_BYTES).await.map_err(internal)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ImportError::new("InvalidImportManifest", "the import manifest is not UTF-8 text"))?;
        let manifest = import_manifest::parse(&text).map_err(|error| match error {
            ImportManifestError::Invalid(violations) => ImportError {
                code: "InvalidImportManifest",
                message: format!("the import manifest breaks {} rule(s)", violations.len()),
                details: violations
                    .iter()
                    .map(|v| (v.rule.to_owned(), v.to_string(), Some(format!("importManifest#{}", v.pointer))))
                    .collect(),
            },
            other => ImportError::new("InvalidImportManifest", other.to_string()),
        })?;
        Ok((manifest, blob))
    }

    async fn import_one(
        self: &Arc<Self>,
        operation_id: &str,
        item: &ImportItem,
        manifest: &ImportManifest,
        added: &mut Added,
    ) -> Result<StoredUpdate, ImportError> {
        let id = &manifest.update_id;
        let key = update_key(id);
        if self.store.update_body(&key).await.map_err(internal)?.is_some() {
            return Err(ImportError::new("UpdateAlreadyExists", format!("update {id} is already imported")));
        }
        if manifest.files.len() > MAX_FILES {
            return Err(ImportError::new("TooManyFiles", format!("an update may have at most {MAX_FILES} files")));
        }
        if manifest.total_size() > MAX_UPDATE_BYTES {
            return Err(ImportError::new(
                "UpdateTooLarge",
                format!("the files of an update may total at most {MAX_UPDATE_BYTES} bytes"),
            ));
        }
        // Reference steps: the children must be imported and may not have references.
        let mut children = Vec::new();
        for child_id in manifest.reference_update_ids() {
            if update_key(child_id) == key {
                return Err(ImportError::new("InvalidReference", format!("update {id} references itself")));
            }
            let child = self.stored_update(child_id).await.map_err(internal)?.ok_or_else(|| {
                ImportError::new(
                    "ReferencedUpdateNotFound",
                    format!("reference step names update {child_id}, which is not imported; import it first or in the same request"),
                )
            })?;
            if !child.references.is_empty() {
                return Err(ImportError::new(
                    "InvalidReference",
                    format!("update {child_id} has reference steps itself; references may only be one level deep"),
                ));
            }
            children.push(child);
        }
        // Payload and related files, each checked while stored.
        let mut blobs = std::collections::HashMap::new();
        for file in &manifest.files {
            let entries = std::iter::once((&file.filename, file.size_in_bytes, file.sha256_digest())).chain(
                file.related_files
                    .iter()
                    .map(|r| (&r.filename, r.size_in_bytes, r.sha256().and_then(import_manifest::decode_sha256))),
            );
            for (name, size, sha256) in entries {
                let sha256 = sha256.ok_or_else(|| {
                    ImportError::new("InvalidImportManifest", format!("file {name:?} has no valid sha256 hash"))
                })?;
                let url = item.files.iter().find(|f| &f.filename == name).map(|f| f.url.as_str()).ok_or_else(|| {
                    ImportError::new(
                        "MissingFile",
                        format!("the import manifest lists file {name:?}, but the request gives no URL for it"),
                    )
                })?;
                let blob = self.fetch(url, &format!("file {name:?}"), Expected { size, sha256 }, added).await?;
                blobs.insert(name.clone(), blob);
            }
        }
        // The update manifest, its child manifest files, and the signature.
        let child_refs: Vec<ChildUpdate<'_>> = children
            .iter()
            .map(|c| ChildUpdate { update_id: &c.update_id, manifest_json: c.full_manifest_json() })
            .collect();
        let now = time::OffsetDateTime::now_utc();
        let created = update_manifest::format_created_date_time(now.unix_timestamp(), now.nanosecond());
        let generated = update_manifest::generate(manifest, &child_refs, &created)
            .map_err(|e| ImportError::new("InvalidImportManifest", e.to_string()))?;
        let mut files = Vec::new();
        for generated_file in &generated.files {
            let (kind, name, blob, source) = match &generated_file.source {
                FileSource::Payload { file_name } => {
                    (FileKind::Payload, file_name.clone(), blobs.get(file_name).cloned(), manifest.file(file_name))
                }
                FileSource::Related { file_name } => {
                    (FileKind::Related, file_name.clone(), blobs.get(file_name).cloned(), None)
                }
                FileSource::ChildManifest { update_id, content } => {
                    let blob = self.put_bytes(content, added).await?;
                    (FileKind::ChildManifest, update_manifest::manifest_file_name(update_id), Some(blob), None)
                }
            };
            let blob =
                blob.ok_or_else(|| ImportError::new("InternalError", format!("file {name:?} was not fetched")))?;
            let related_files = source
                .map(|file| file.related_files.iter().map(|r| update_manifest::file_id(id, &r.filename)).collect())
                .unwrap_or_default();
            files.push(StoredFile {
                file_id: generated_file.id.clone(),
                file_name: name.clone(),
                size_in_bytes: blob.size,
                sha256: blob.sha256_base64(),
                blob: blob.id(),
                kind,
                properties: source.and_then(|f| f.properties.clone()).or_else(|| {
                    manifest
                        .files
                        .iter()
                        .flat_map(|f| &f.related_files)
                        .find(|r| r.filename == name)
                        .and_then(|r| r.properties.clone())
                }),
                download_handler: source.and_then(|f| f.download_handler.as_ref()).map(|h| h.id.clone()),
                related_files,
                mime_type: source.and_then(|f| f.mime_type.clone()),
            });
        }
        let twin_manifest = update_manifest::for_twin(&generated.manifest);
        if let TwinManifest::Detached(detached) = &twin_manifest {
            let blob = self.put_bytes(&detached.file_content, added).await?;
            files.push(StoredFile {
                file_id: detached.manifest.detached_manifest_file_id.clone(),
                file_name: detached.manifest.file.file_name.clone(),
                size_in_bytes: blob.size,
                sha256: blob.sha256_base64(),
                blob: blob.id(),
                kind: FileKind::DetachedManifest,
                properties: None,
                download_handler: None,
                related_files: Vec::new(),
                mime_type: None,
            });
        }
        let signer = self.signer().map_err(|e| {
            tracing::error!(error = %e, "the signing key cannot be loaded");
            ImportError::new("SigningKeyUnavailable", "the server cannot load its signing key; see its log")
        })?;
        let signature = duhub_proto::jws::sign_update_manifest(twin_manifest.json(), &signer.sjwk, &signer.key);
        let update = StoredUpdate {
            update_id: id.clone(),
            description: manifest.description.clone(),
            friendly_name: item.friendly_name.clone(),
            is_deployable: manifest.deployable(),
            compatibility: manifest.compatibility.clone(),
            steps: manifest.instructions.steps.iter().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)).collect(),
            references: manifest.reference_update_ids().cloned().collect(),
            manifest_version: manifest.manifest_version.as_str().to_owned(),
            created_date_time: manifest.created_date_time.clone(),
            imported_date_time: now_rfc3339(),
            etag: crate::ids::new_uuid(),
            update_manifest: twin_manifest.json().to_owned(),
            update_manifest_signature: signature,
            full_manifest: generated.json.clone(),
            files,
            operation_id: operation_id.to_owned(),
        };
        let body = serde_json::to_string(&update).map_err(internal)?;
        if !self.store.insert_update(&key, &body).await.map_err(internal)? {
            return Err(ImportError::new("UpdateAlreadyExists", format!("update {id} is already imported")));
        }
        added.updates.push(key);
        Ok(update)
    }

    /// Fetches `url` into the content store, checking size and hash.
    async fn fetch(&self, url: &str, what: &str, expected: Expected, added: &mut Added) -> Result<Blob, ImportError> {
        if let Some(id) = url.strip_prefix(UPLOAD_SCHEME) {
            let size = self.content.size(id).await.map_err(|_| {
                ImportError::new(
                    "UploadNotFound",
                    format!("{what}: upload {id} is not on this server (upload it again)"),
                )
            })?;
            let blob_hex: String = expected.sha256.iter().map(|b| format!("{b:02x}")).collect();
            if size != expected.size {
                return Err(ImportError::new(
                    "FileSizeMismatch",
                    format!("{what}: the manifest says {} bytes, the upload has {size}", expected.size),
                ));
            }
            if blob_hex != id {
                return Err(ImportError::new(
                    "FileHashMismatch",
                    format!("{what}: the upload's SHA-256 is not the one the manifest gives"),
                ));
            }
            added.uploads.push(id.to_owned());
            return Ok(Blob { sha256: expected.sha256, size });
        }
        let existed = self
            .content
            .contains(&expected.sha256.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .await
            .map_err(internal)?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ImportError::new("FileDownloadFailed", format!("{what}: fetching {url} failed: {e}")))?;
        if !response.status().is_success() {
            return Err(ImportError::new(
                "FileDownloadFailed",
                format!("{what}: fetching {url} answered HTTP {}", response.status().as_u16()),
            ));
        }
        let stream = response.bytes_stream();
        let blob = self.content.put_stream(stream, Some(expected), expected.size).await.map_err(|e| match e {
            ContentError::SizeMismatch { expected, actual } => ImportError::new(
                "FileSizeMismatch",
                format!("{what}: the manifest says {expected} bytes, {url} gave {actual}"),
            ),
            ContentError::TooLarge { limit } => ImportError::new(
                "FileSizeMismatch",
                format!("{what}: {url} gave more than the {limit} bytes the manifest says"),
            ),
            ContentError::HashMismatch { expected, actual } => ImportError::new(
                "FileHashMismatch",
                format!("{what}: the manifest gives SHA-256 {expected}, {url} has {actual}"),
            ),
            ContentError::Source(message) => {
                ImportError::new("FileDownloadFailed", format!("{what}: reading {url} failed: {message}"))
            }
            other => internal(other),
        })?;
        if !existed {
            added.blobs.push(blob.id());
        }
        Ok(blob)
    }

    async fn put_bytes(&self, bytes: &[u8], added: &mut Added) -> Result<Blob, ImportError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let existed = self.content.contains(&hex).await.map_err(internal)?;
        let blob = self.content.put_reader(bytes, None, u64::MAX).await.map_err(internal)?;
        if !existed {
            added.blobs.push(blob.id());
        }
        Ok(blob)
    }

    async fn undo(&self, added: &Added) {
        for key in &added.updates {
            if let Err(error) = self.store.delete_update(key).await {
                tracing::error!(%error, key, "removing a partly imported update failed");
            }
        }
        let Ok(used) = self.used_blobs().await else { return };
        for blob in &added.blobs {
            if !used.contains(blob)
                && let Err(error) = self.content.delete(blob).await
            {
                tracing::warn!(%error, blob, "removing the blob of a failed import failed");
            }
        }
    }
}

fn internal(error: impl std::fmt::Display) -> ImportError {
    tracing::error!(%error, "import failed on an internal error");
    ImportError::new("InternalError", "the server failed to store the update; see its log")
}

/// The update id of a path, as given.
pub fn update_id(provider: &str, name: &str, version: &str) -> UpdateId {
    UpdateId::new(provider, name, version)
}
