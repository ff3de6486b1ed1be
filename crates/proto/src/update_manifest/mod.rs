//! The update manifest: what the service derives from an import manifest, signs, and sends to
//! devices as the string `deviceUpdate.service.updateManifest`.
//!
//! Three shapes exist: the full manifest (v4, v5), the detached "mini" manifest that points to a
//! file holding the full one, and the legacy v1-v3 manifest that current agents refuse.
//! [`UpdateManifest::parse`] reads all three (tolerating the field spellings of the SchemaStore
//! samples and the embedded SDK's vectors); [`FullManifest::to_service_json`] writes the exact
//! bytes the Azure service writes, so parsing a service-signed manifest and writing it back
//! gives the signed string again.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::b64;
use crate::result::ExtendedResultCode;
use crate::update_id::UpdateId;
use crate::validation::{Pointer, Report, Violation};

/// Extended result codes of update manifest parsing (the update data parser's codes).
pub mod erc {
    use crate::result::ExtendedResultCode as Erc;

    /// The manifest string is not a JSON object.
    pub const BAD_MANIFEST: Erc = Erc::BAD_MANIFEST;
    /// `manifestVersion` missing or outside 4..=5.
    pub const UNSUPPORTED_MANIFEST_VERSION: Erc = Erc::UNSUPPORTED_MANIFEST_VERSION;
    /// No usable `updateId`.
    pub const NO_UPDATE_ID: Erc = Erc::NO_UPDATE_ID;
    /// `files` malformed.
    pub const BAD_FILES: Erc = Erc::BAD_FILES_OR_FILE_URLS;
    /// A detached manifest whose file entry is missing.
    pub const MISSING_DETACHED_ENTITY: Erc = Erc::MISSING_DETACHED_MANIFEST_ENTITY;
    /// A malformed detached manifest.
    pub const BAD_DETACHED_MANIFEST: Erc = Erc::BAD_DETACHED_MANIFEST;
    /// A detached manifest file that is not JSON.
    pub const BAD_DETACHED_JSON_FILE: Erc = Erc::BAD_DETACHED_MANIFEST_JSON_FILE;
    /// A detached manifest file without `updateManifest`.
    pub const DETACHED_WITHOUT_UPDATE_MANIFEST: Erc = Erc::DETACHED_MANIFEST_MISSING_UPDATE_MANIFEST;
}

/// Largest manifest string sent inline in a twin; larger ones are sent detached
/// (IoT Hub limits one property value to 4 KB).
pub const MAX_INLINE_MANIFEST_BYTES: usize = 4096;

/// A manifest that cannot be used, with the extended result code an agent reports for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {detail}")]
pub struct ManifestError {
    /// Extended result code (see [`erc`]).
    pub extended_result_code: ExtendedResultCode,
    /// JSON pointer of the offending value inside the manifest.
    pub pointer: String,
    /// What is wrong.
    pub detail: String,
}

impl ManifestError {
    fn new(extended_result_code: ExtendedResultCode, at: &Pointer, detail: impl Into<String>) -> Self {
        Self { extended_result_code, pointer: at.as_str().to_owned(), detail: detail.into() }
    }
}

/// An update manifest in any of its shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateManifest {
    /// Steps and files (v4, v5).
    Full(FullManifest),
    /// A pointer to a file that holds the full manifest.
    Detached(DetachedManifest),
    /// The v1-v3 shape (`updateType`, `installedCriteria` at the top).
    Legacy(LegacyManifest),
}

/// A full update manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct FullManifest {
    /// `"4"` or `"5"` as emitted; parsing keeps whatever was received.
    pub manifest_version: String,
    /// The update.
    pub update_id: UpdateId,
    /// Device property sets the update is compatible with.
    pub compatibility: Vec<IndexMap<String, String>>,
    /// Installation steps.
    pub steps: Vec<Step>,
    /// Files by file id.
    pub files: IndexMap<String, FileEntry>,
    /// Creation time as the service wrote it (7 fractional digits).
    pub created_date_time: String,
}

/// One installation step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Runs a handler on files.
    Inline(InlineStep),
    /// Installs a child update described by a detached manifest file.
    Reference(ReferenceStep),
}

/// A step that runs a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineStep {
    /// Handler id, e.g. `microsoft/swupdate:2`.
    pub handler: String,
    /// File ids passed to the handler.
    pub files: Vec<String>,
    /// Handler arguments, verbatim (key case preserved).
    pub handler_properties: Option<Map<String, Value>>,
    /// Description (not emitted by the service).
    pub description: Option<String>,
}

impl InlineStep {
    /// `handlerProperties.installedCriteria`, also under the key `InstalledCriteria`.
    pub fn installed_criteria(&self) -> Option<&str> {
        let properties = self.handler_properties.as_ref()?;
        properties.get("installedCriteria").or_else(|| properties.get("InstalledCriteria")).and_then(Value::as_str)
    }
}

/// A step that installs a child update.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceStep {
    /// File id of the child manifest file.
    pub detached_manifest_file_id: String,
    /// Description (not emitted by the service).
    pub description: Option<String>,
}

/// A file of the update.
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// File name (plain name, no directories).
    pub file_name: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Base64 hashes by algorithm; `sha256` is required.
    pub hashes: IndexMap<String, String>,
    /// Free properties passed to the device.
    pub properties: Option<Map<String, Value>>,
    /// Files a download handler may use to produce this one (v5).
    pub related_files: Vec<RelatedFile>,
    /// Download handler id, e.g. `microsoft/delta:1` (v5).
    pub download_handler: Option<String>,
}

impl FileEntry {
    /// The entry of a file with this name and content (size and SHA-256 computed).
    pub fn for_content(file_name: String, content: &[u8]) -> Self {
        let mut hashes = IndexMap::new();
        hashes.insert("sha256".to_owned(), b64::sha256_std(content));
        Self {
            file_name,
            size_in_bytes: content.len() as u64,
            hashes,
            properties: None,
            related_files: Vec::new(),
            download_handler: None,
        }
    }

    /// The standard-base64 SHA-256, if present.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
}

/// A related file (v5).
#[derive(Debug, Clone, PartialEq)]
pub struct RelatedFile {
    /// File id (absent in the SchemaStore array form).
    pub id: Option<String>,
    /// File name.
    pub file_name: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Base64 hashes by algorithm.
    pub hashes: IndexMap<String, String>,
    /// Properties, e.g. `microsoft.sourceFileHash`.
    pub properties: Option<Map<String, Value>>,
}

/// A detached ("mini") manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct DetachedManifest {
    /// Manifest version.
    pub manifest_version: String,
    /// The update.
    pub update_id: UpdateId,
    /// Id of the file holding the full manifest.
    pub detached_manifest_file_id: String,
    /// That file.
    pub file: FileEntry,
}

/// A legacy (v1-v3) manifest, kept only to be refused with the right code.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyManifest {
    /// Manifest version, e.g. `"1.0"`.
    pub manifest_version: String,
    /// The update id as written (legacy ones use `manufacturer`).
    pub update_id: Map<String, Value>,
    /// Top-level update type.
    pub update_type: Option<String>,
    /// Top-level installed criteria.
    pub installed_criteria: Option<String>,
    /// Files by id.
    pub files: IndexMap<String, FileEntry>,
}

impl UpdateManifest {
    /// Parses a manifest string in any shape.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let root = Pointer::root();
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ManifestError::new(erc::BAD_MANIFEST, &root, format!("update manifest is not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| ManifestError::new(erc::BAD_MANIFEST, &root, "update manifest is not a JSON object"))?;
        let manifest_version = match object.get("manifestVersion") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ManifestError::new(
                    erc::UNSUPPORTED_MANIFEST_VERSION,
                    &root.key("manifestVersion"),
                    "missing string \"manifestVersion\"",
                ));
            }
        };
        if object.contains_key("detachedManifestFileId") {
            return parse_detached(object, manifest_version).map(Self::Detached);
        }
        if !object.contains_key("instructions") && object.contains_key("updateType") {
            return parse_legacy(object, manifest_version).map(Self::Legacy);
        }
        parse_full(object, manifest_version).map(Self::Full)
    }

    /// The manifest version as the official agent reads it (`atoi`): `"4"`, `"4.0"` → 4.
    pub fn version_number(&self) -> i64 {
        let text = match self {
            Self::Full(m) => &m.manifest_version,
            Self::Detached(m) => &m.manifest_version,
            Self::Legacy(m) => &m.manifest_version,
        };
        atoi(text)
    }

    /// Refuses what agents must not process: versions outside 4..=5 and legacy manifests.
    pub fn check_supported(&self) -> Result<(), ManifestError> {
        let version = self.version_number();
        if matches!(self, Self::Legacy(_)) || !(4..=5).contains(&version) {
            return Err(ManifestError::new(
                erc::UNSUPPORTED_MANIFEST_VERSION,
                &Pointer::root().key("manifestVersion"),
                format!("manifest version {version} is not supported (4 and 5 are)"),
            ));
        }
        Ok(())
    }
}

/// C's `atoi`: optional sign and leading digits, 0 when there are none.
fn atoi(text: &str) -> i64 {
    let trimmed = text.trim_start();
    let (sign, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let digits: String = digits.chars().take_while(char::is_ascii_digit).take(18).collect();
    sign * digits.parse::<i64>().unwrap_or(0)
}

fn parse_update_id(object: &Map<String, Value>, at: &Pointer) -> Result<UpdateId, ManifestError> {
    let at = at.key("updateId");
    let id = object
        .get("updateId")
        .and_then(Value::as_object)
        .ok_or_else(|| ManifestError::new(erc::NO_UPDATE_ID, &at, "missing object \"updateId\""))?;
    let part = |name: &str| {
        id.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ManifestError::new(erc::NO_UPDATE_ID, &at.key(name), format!("missing string \"{name}\"")))
    };
    Ok(UpdateId { provider: part("provider")?, name: part("name")?, version: part("version")? })
}

fn parse_full(object: &Map<String, Value>, manifest_version: String) -> Result<FullManifest, ManifestError> {
    let root = Pointer::root();
    let update_id = parse_update_id(object, &root)?;
    let compatibility = parse_compatibility(object.get("compatibility"), &root.key("compatibility"))?;
    let at = root.key("instructions");
    let steps = object
        .get("instructions")
        .and_then(|i| i.get("steps"))
        .and_then(Value::as_array)
        .ok_or_else(|| ManifestError::new(erc::BAD_MANIFEST, &at, "missing array \"instructions.steps\""))?;
    let at = at.key("steps");
    let steps = steps.iter().enumerate().map(|(i, step)| parse_step(step, &at.index(i))).collect::<Result<_, _>>()?;
    let files = parse_files(object.get("files"), &root.key("files"))?;
    let created_date_time = match object.get("createdDateTime") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ManifestError::new(erc::BAD_MANIFEST, &root.key("createdDateTime"), "missing string")),
    };
    Ok(FullManifest { manifest_version, update_id, compatibility, steps, files, created_date_time })
}

fn parse_compatibility(value: Option<&Value>, at: &Pointer) -> Result<Vec<IndexMap<String, String>>, ManifestError> {
    let items = value
        .and_then(Value::as_array)
        .ok_or_else(|| ManifestError::new(erc::BAD_MANIFEST, at, "missing array \"compatibility\""))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let object = item.as_object().ok_or_else(|| {
                ManifestError::new(erc::BAD_MANIFEST, &at.index(i), "compatibility entry is not an object")
            })?;
            object
                .iter()
                .map(|(k, v)| {
                    v.as_str().map(|s| (k.clone(), s.to_owned())).ok_or_else(|| {
                        ManifestError::new(
                            erc::BAD_MANIFEST,
                            &at.index(i).key(k),
                            "compatibility value is not a string",
                        )
                    })
                })
                .collect()
        })
        .collect()
}

fn parse_step(value: &Value, at: &Pointer) -> Result<Step, ManifestError> {
    let object = value.as_object().ok_or_else(|| ManifestError::new(erc::BAD_MANIFEST, at, "step is not an object"))?;
    let description = object.get("description").and_then(Value::as_str).map(str::to_owned);
    match object.get("type").and_then(Value::as_str) {
        Some("reference") => {
            let id =
                object.get("detachedManifestFileId").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(
                    || {
                        ManifestError::new(
                            erc::BAD_MANIFEST,
                            &at.key("detachedManifestFileId"),
                            "reference step without detachedManifestFileId",
                        )
                    },
                )?;
            Ok(Step::Reference(ReferenceStep { detached_manifest_file_id: id.to_owned(), description }))
        }
        None | Some("inline") => {
            let handler = object.get("handler").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
                ManifestError::new(erc::BAD_MANIFEST, &at.key("handler"), "inline step without handler")
            })?;
            let files = object
                .get("files")
                .and_then(Value::as_array)
                .ok_or_else(|| ManifestError::new(erc::BAD_FILES, &at.key("files"), "inline step without files"))?
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.as_str().map(str::to_owned).ok_or_else(|| {
                        ManifestError::new(erc::BAD_FILES, &at.key("files").index(i), "file id is not a string")
                    })
                })
                .collect::<Result<_, _>>()?;
            let handler_properties = match object.get("handlerProperties") {
                None | Some(Value::Null) => None,
                Some(Value::Object(p)) => Some(p.clone()),
                Some(_) => {
                    return Err(ManifestError::new(
                        erc::BAD_MANIFEST,
                        &at.key("handlerProperties"),
                        "handlerProperties is not an object",
                    ));
                }
            };
            Ok(Step::Inline(InlineStep { handler: handler.to_owned(), files, handler_properties, description }))
        }
        Some(other) => {
            Err(ManifestError::new(erc::BAD_MANIFEST, &at.key("type"), format!("unknown step type \"{other}\"")))
        }
    }
}

fn parse_files(value: Option<&Value>, at: &Pointer) -> Result<IndexMap<String, FileEntry>, ManifestError> {
    let object = value
        .and_then(Value::as_object)
        .ok_or_else(|| ManifestError::new(erc::BAD_FILES, at, "missing object \"files\""))?;
    object.iter().map(|(id, entry)| Ok((id.clone(), parse_file(entry, &at.key(id))?))).collect()
}

struct BaseFile {
    file_name: String,
    size_in_bytes: u64,
    hashes: IndexMap<String, String>,
    properties: Option<Map<String, Value>>,
}

fn parse_base_file(object: &Map<String, Value>, at: &Pointer) -> Result<BaseFile, ManifestError> {
    let file_name = object
        .get("fileName")
        .or_else(|| object.get("filename"))
        .and_then(Value::as_str)
        .ok_or_else(|| ManifestError::new(erc::BAD_FILES, &at.key("fileName"), "missing string \"fileName\""))?;
    let size_in_bytes = object.get("sizeInBytes").and_then(size).ok_or_else(|| {
        ManifestError::new(erc::BAD_FILES, &at.key("sizeInBytes"), "sizeInBytes must be a non-negative integer")
    })?;
    let hashes_at = at.key("hashes");
    let hashes: IndexMap<String, String> = object
        .get("hashes")
        .and_then(Value::as_object)
        .ok_or_else(|| ManifestError::new(erc::BAD_FILES, &hashes_at, "missing object \"hashes\""))?
        .iter()
        .map(|(alg, h)| {
            h.as_str()
                .map(|h| (alg.clone(), h.to_owned()))
                .ok_or_else(|| ManifestError::new(erc::BAD_FILES, &hashes_at.key(alg), "hash is not a string"))
        })
        .collect::<Result<_, _>>()?;
    if !hashes.contains_key("sha256") {
        return Err(ManifestError::new(erc::BAD_FILES, &hashes_at.key("sha256"), "missing sha256 hash"));
    }
    let properties = match object.get("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p.clone()),
        Some(_) => {
            return Err(ManifestError::new(erc::BAD_FILES, &at.key("properties"), "properties is not an object"));
        }
    };
    Ok(BaseFile { file_name: file_name.to_owned(), size_in_bytes, hashes, properties })
}

/// A size: a non-negative integer, or (as in an embedded SDK vector) a decimal string.
fn size(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

fn parse_file(value: &Value, at: &Pointer) -> Result<FileEntry, ManifestError> {
    let object =
        value.as_object().ok_or_else(|| ManifestError::new(erc::BAD_FILES, at, "file entry is not an object"))?;
    let base = parse_base_file(object, at)?;
    let related_at = at.key("relatedFiles");
    let related_files = match object.get("relatedFiles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(id, related)| parse_related(Some(id), related, &related_at.key(id)))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, related)| parse_related(None, related, &related_at.index(i)))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ManifestError::new(erc::BAD_FILES, &related_at, "relatedFiles is neither a map nor an array"));
        }
    };
    let download_handler = match object.get("downloadHandler") {
        None | Some(Value::Null) => None,
        Some(handler) => Some(handler.get("id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            ManifestError::new(erc::BAD_FILES, &at.key("downloadHandler").key("id"), "downloadHandler without id")
        })?),
    };
    Ok(FileEntry {
        file_name: base.file_name,
        size_in_bytes: base.size_in_bytes,
        hashes: base.hashes,
        properties: base.properties,
        related_files,
        download_handler,
    })
}

fn parse_related(id: Option<&String>, value: &Value, at: &Pointer) -> Result<RelatedFile, ManifestError> {
    let object =
        value.as_object().ok_or_else(|| ManifestError::new(erc::BAD_FILES, at, "related file is not an object"))?;
    let base = parse_base_file(object, at)?;
    Ok(RelatedFile {
        id: id.cloned(),
        file_name: base.file_name,
        size_in_bytes: base.size_in_bytes,
        hashes: base.hashes,
        properties: base.properties,
    })
}

fn parse_detached(object: &Map<String, Value>, manifest_version: String) -> Result<DetachedManifest, ManifestError> {
    let root = Pointer::root();
    let update_id = parse_update_id(object, &root)?;
    let id =
        object.get("detachedManifestFileId").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
            ManifestError::new(erc::BAD_DETACHED_MANIFEST, &root.key("detachedManifestFileId"), "not a file id")
        })?;
    let mut files = parse_files(object.get("files"), &root.key("files"))?;
    if files.len() != 1 {
        return Err(ManifestError::new(
            erc::BAD_DETACHED_MANIFEST,
            &root.key("files"),
            format!("a detached manifest lists exactly one file, found {}", files.len()),
        ));
    }
    let file = files.shift_remove(id).ok_or_else(|| {
        ManifestError::new(
            erc::MISSING_DETACHED_ENTITY,
            &root.key("files").key(id),
            "the detached manifest file is not listed",
        )
    })?;
    Ok(DetachedManifest { manifest_version, update_id, detached_manifest_file_id: id.to_owned(), file })
}

fn parse_legacy(object: &Map<String, Value>, manifest_version: String) -> Result<LegacyManifest, ManifestError> {
    let root = Pointer::root();
    let update_id =
        object.get("updateId").and_then(Value::as_object).cloned().ok_or_else(|| {
            ManifestError::new(erc::NO_UPDATE_ID, &root.key("updateId"), "missing object \"updateId\"")
        })?;
    Ok(LegacyManifest {
        manifest_version,
        update_id,
        update_type: object.get("updateType").and_then(Value::as_str).map(str::to_owned),
        installed_criteria: object.get("installedCriteria").and_then(Value::as_str).map(str::to_owned),
        files: parse_files(object.get("files"), &root.key("files"))?,
    })
}

impl FullManifest {
    /// The manifest exactly as the Azure service writes it: compact, members in the service's
    /// order, `/` not escaped, step descriptions omitted.
    pub fn to_service_json(&self) -> String {
        let mut object = Map::new();
        object.insert("manifestVersion".into(), self.manifest_version.clone().into());
        object.insert("updateId".into(), update_id_value(&self.update_id));
        object.insert(
            "compatibility".into(),
            Value::Array(
                self.compatibility
                    .iter()
                    .map(|c| Value::Object(c.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()))
                    .collect(),
            ),
        );
        let steps: Vec<Value> = self.steps.iter().map(step_value).collect();
        let mut instructions = Map::new();
        instructions.insert("steps".into(), Value::Array(steps));
        object.insert("instructions".into(), Value::Object(instructions));
        object.insert("files".into(), files_value(&self.files));
        object.insert("createdDateTime".into(), self.created_date_time.clone().into());
        Value::Object(object).to_string()
    }

    /// The file entry of `file_id`.
    pub fn file(&self, file_id: &str) -> Option<&FileEntry> {
        self.files.get(file_id)
    }

    /// Whether a device with these properties matches one of the compatibility sets (every
    /// name of the set present with an equal value; names compared without case, as IoT Hub
    /// property names are).
    pub fn is_compatible_with(&self, device_properties: &IndexMap<String, String>) -> bool {
        self.compatibility.iter().any(|set| {
            set.iter().all(|(name, value)| {
                device_properties
                    .iter()
                    .any(|(device_name, device_value)| device_name.eq_ignore_ascii_case(name) && device_value == value)
            })
        })
    }

    /// Consistency of references inside the manifest: every step file id and reference step
    /// points into `files`, hashes are well-formed, file names are plain names.
    pub fn check(&self) -> Vec<Violation> {
        let mut report = Report::new();
        let root = Pointer::root();
        if self.steps.is_empty() {
            report.push(&root.key("instructions").key("steps"), "minItems", "a manifest needs at least one step", None);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let at = root.key("instructions").key("steps").index(i);
            match step {
                Step::Inline(inline) => {
                    for (j, id) in inline.files.iter().enumerate() {
                        if !self.files.contains_key(id) {
                            report.push(
                                &at.key("files").index(j),
                                "fileExists",
                                format!("step file id \"{id}\" is not in files"),
                                None,
                            );
                        }
                    }
                }
                Step::Reference(reference) => {
                    if !self.files.contains_key(&reference.detached_manifest_file_id) {
                        report.push(
                            &at.key("detachedManifestFileId"),
                            "fileExists",
                            format!(
                                "child manifest file id \"{}\" is not in files",
                                reference.detached_manifest_file_id
                            ),
                            None,
                        );
                    }
                }
            }
        }
        for (id, file) in &self.files {
            check_file(&root.key("files").key(id), &file.file_name, file.sha256(), &mut report);
            for related in &file.related_files {
                let at = root.key("files").key(id).key("relatedFiles").key(related.id.as_deref().unwrap_or(""));
                check_file(&at, &related.file_name, related.hashes.get("sha256").map(String::as_str), &mut report);
            }
        }
        report.into_violations()
    }
}

fn check_file(at: &Pointer, file_name: &str, sha256: Option<&str>, report: &mut Report) {
    if !is_plain_file_name(file_name) {
        report.push(&at.key("fileName"), "plainFileName", format!("\"{file_name}\" is not a plain file name"), None);
    }
    let valid_hash = sha256.and_then(|h| b64::decode_std_strict(h).ok()).is_some_and(|h| h.len() == 32);
    if !valid_hash {
        report.push(&at.key("hashes").key("sha256"), "sha256Format", "sha256 is not base64 of 32 bytes", None);
    }
}

/// Whether `name` can be used as a file name inside a download folder: not empty, not `.` or
/// `..`, no `/`, `\`, NUL or other control characters.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

impl DetachedManifest {
    /// The mini manifest as the service writes it.
    pub fn to_service_json(&self) -> String {
        let mut object = Map::new();
        object.insert("manifestVersion".into(), self.manifest_version.clone().into());
        object.insert("updateId".into(), update_id_value(&self.update_id));
        object.insert("detachedManifestFileId".into(), self.detached_manifest_file_id.clone().into());
        let mut files = IndexMap::new();
        files.insert(self.detached_manifest_file_id.clone(), self.file.clone());
        object.insert("files".into(), files_value(&files));
        Value::Object(object).to_string()
    }
}

fn update_id_value(id: &UpdateId) -> Value {
    serde_json::json!({"provider": id.provider, "name": id.name, "version": id.version})
}

fn step_value(step: &Step) -> Value {
    let mut object = Map::new();
    match step {
        Step::Inline(inline) => {
            object.insert("handler".into(), inline.handler.clone().into());
            object.insert("files".into(), inline.files.clone().into());
            if let Some(properties) = &inline.handler_properties {
                object.insert("handlerProperties".into(), Value::Object(properties.clone()));
            }
        }
        Step::Reference(reference) => {
            object.insert("type".into(), "reference".into());
            object.insert("detachedManifestFileId".into(), reference.detached_manifest_file_id.clone().into());
        }
    }
    Value::Object(object)
}

fn base_file_value(
    name: &str,
    size: u64,
    hashes: &IndexMap<String, String>,
    properties: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("fileName".into(), name.into());
    object.insert("sizeInBytes".into(), size.into());
    object.insert(
        "hashes".into(),
        Value::Object(hashes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()),
    );
    if let Some(properties) = properties {
        object.insert("properties".into(), Value::Object(properties.clone()));
    }
    object
}

fn files_value(files: &IndexMap<String, FileEntry>) -> Value {
    let mut object = Map::new();
    for (id, file) in files {
        let mut entry = base_file_value(&file.file_name, file.size_in_bytes, &file.hashes, file.properties.as_ref());
        if !file.related_files.is_empty() {
            let mut related = Map::new();
            for (i, r) in file.related_files.iter().enumerate() {
                let id = r.id.clone().unwrap_or_else(|| i.to_string());
                related.insert(
                    id,
                    Value::Object(base_file_value(&r.file_name, r.size_in_bytes, &r.hashes, r.properties.as_ref())),
                );
            }
            entry.insert("relatedFiles".into(), Value::Object(related));
        }
        if let Some(handler) = &file.download_handler {
            entry.insert("downloadHandler".into(), serde_json::json!({"id": handler}));
        }
        object.insert(id.clone(), Value::Object(entry));
    }
    Value::Object(object)
}

/// The bytes of a detached or child manifest file: `{"updateManifest":"<manifest>"}`, compact.
pub fn manifest_file_content(manifest_json: &str) -> Vec<u8> {
    serde_json::json!({"updateManifest": manifest_json}).to_string().into_bytes()
}

/// Reads a detached or child manifest file, returning the manifest string inside.
pub fn read_manifest_file(bytes: &[u8]) -> Result<String, ManifestError> {
    let root = Pointer::root();
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ManifestError::new(erc::BAD_DETACHED_JSON_FILE, &root, format!("manifest file is not JSON: {e}"))
    })?;
    value.get("updateManifest").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
        ManifestError::new(erc::DETACHED_WITHOUT_UPDATE_MANIFEST, &root.key("updateManifest"), "missing string")
    })
}

/// The file name the service gives a child or detached manifest file:
/// `<provider>.<name>.<version>.updatemanifest.json`, lower case.
pub fn manifest_file_name(id: &UpdateId) -> String {
    format!("{}.{}.{}.updatemanifest.json", id.provider, id.name, id.version).to_lowercase()
}

/// A file id: `f` and 16 lower-case hex digits, derived from the update id and the file name,
/// so ids are stable across regenerations and unique within an update.
pub fn file_id(update: &UpdateId, file_name: &str) -> String {
    let input = format!("{}\u{0}{}\u{0}{}\u{0}{}", update.provider, update.name, update.version, file_name);
    let digest = b64::sha256(input.as_bytes());
    let mut id = String::with_capacity(17);
    id.push('f');
    for byte in &digest[..8] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Whether `id` has the service's file id form.
pub fn is_service_file_id(id: &str) -> bool {
    id.len() == 17
        && id.strip_prefix('f').is_some_and(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A manifest too large for a twin, split into the mini manifest and the file holding the full one.
#[derive(Debug, Clone, PartialEq)]
pub struct Detached {
    /// The mini manifest to sign and send.
    pub manifest: DetachedManifest,
    /// Its service JSON.
    pub json: String,
    /// Content of the file holding the full manifest.
    pub file_content: Vec<u8>,
}

/// Detaches a full manifest: the file holding it is named after the update and listed in a
/// mini manifest.
pub fn detach(full: &FullManifest) -> Detached {
    let content = manifest_file_content(&full.to_service_json());
    let file_name = manifest_file_name(&full.update_id);
    let id = file_id(&full.update_id, &file_name);
    let manifest = DetachedManifest {
        manifest_version: full.manifest_version.clone(),
        update_id: full.update_id.clone(),
        detached_manifest_file_id: id,
        file: FileEntry::for_content(file_name, &content),
    };
    let json = manifest.to_service_json();
    Detached { manifest, json, file_content: content }
}

/// How a manifest goes into a twin: inline, or detached when its string is longer than
/// [`MAX_INLINE_MANIFEST_BYTES`].
#[derive(Debug, Clone, PartialEq)]
pub enum TwinManifest {
    /// The full manifest string, to sign and send as is.
    Inline(String),
    /// The mini manifest to sign and send, and the file holding the full one.
    Detached(Box<Detached>),
}

impl TwinManifest {
    /// The string to sign and put into `updateManifest`.
    pub fn json(&self) -> &str {
        match self {
            Self::Inline(json) => json,
            Self::Detached(detached) => &detached.json,
        }
    }
}

/// Chooses between sending `full` inline and detached, by size.
pub fn for_twin(full: &FullManifest) -> TwinManifest {
    let json = full.to_service_json();
    if json.len() <= MAX_INLINE_MANIFEST_BYTES {
        TwinManifest::Inline(json)
    } else {
        TwinManifest::Detached(Box::new(detach(full)))
    }
}

/// Formats a creation time the way the service does: UTC, 7 fractional digits,
/// e.g. `2022-01-27T13:45:05.8993329Z`.
pub fn format_created_date_time(unix_seconds: i64, nanoseconds: u32) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60,
        nanoseconds.min(999_999_999) / 100
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_the_official_agent() {
        assert_eq!(atoi("4"), 4);
        assert_eq!(atoi("4.0"), 4);
        assert_eq!(atoi("5"), 5);
        assert_eq!(atoi("1.0"), 1);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("99999999999999999999999"), 999_999_999_999_999_999);
    }

    #[test]
    fn created_date_time_format() {
        assert_eq!(format_created_date_time(0, 0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(format_created_date_time(1_643_291_105, 899_332_900), "2022-01-27T13:45:05.8993329Z");
        assert_eq!(format_created_date_time(951_782_400, 0), "2000-02-29T00:00:00.0000000Z");
    }

    #[test]
    fn file_ids_have_the_service_form() {
        let id = file_id(&UpdateId::new("Contoso", "Toaster", "1.0"), "fw.swu");
        assert!(is_service_file_id(&id), "{id}");
        assert_ne!(id, file_id(&UpdateId::new("Contoso", "Toaster", "1.1"), "fw.swu"));
        assert!(is_service_file_id("f483750ebb885d32c"));
        assert!(!is_service_file_id("fileId0"));
    }

    #[test]
    fn plain_file_names() {
        for good in ["fw.swu", "a..b", ".hidden", "in2.FIT_RECOMPRESSED_and_RE-SIGNED.swu"] {
            assert!(is_plain_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "../x", "a\nb"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}

mod generate;
pub use generate::{ChildUpdate, FileSource, GenerateError, GeneratedFile, GeneratedUpdate, generate};
