//! The typed import manifest, read once [`super::validate`] has accepted the JSON.
//!
//! Field order is the order `az iot du update init v5` writes, so serialising a manifest gives
//! the layout operators are used to. Members the model does not know (the top level and v5 files
//! are open objects) are dropped on reading.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::update_id::UpdateId;

/// Largest size of one file, and of all files of an update together, in bytes (2 GiB).
pub const MAX_TOTAL_SIZE: u64 = 2_147_483_648;

/// Version of the import manifest format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ManifestVersion {
    /// `"4.0"`: files carry only a name, a size and hashes.
    #[serde(rename = "4.0")]
    V4,
    /// `"5.0"`: files may also carry properties, related files and a download handler.
    #[serde(rename = "5.0")]
    V5,
}

impl ManifestVersion {
    /// The version as written in `manifestVersion`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "4.0",
            Self::V5 => "5.0",
        }
    }

    /// The version written as `text`, if it is one this crate knows.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "4.0" => Some(Self::V4),
            "5.0" => Some(Self::V5),
            _ => None,
        }
    }
}

impl std::fmt::Display for ManifestVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An import manifest: what an operator hands the service to import one update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportManifest {
    /// `$schema`: the JSON schema reference, if the author gave one.
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Format version.
    pub manifest_version: ManifestVersion,
    /// When the manifest was written, as ISO 8601 UTC text (kept verbatim).
    pub created_date_time: String,
    /// Identity of the update.
    pub update_id: UpdateId,
    /// `false` for updates that may only be installed as a step of another update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_deployable: Option<bool>,
    /// Free text shown to operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Device property sets the update is compatible with.
    pub compatibility: Vec<IndexMap<String, String>>,
    /// How to install the update.
    pub instructions: Instructions,
    /// Payload files; empty when every step is a reference step (`files` missing, `[]` or
    /// `null` in the JSON).
    #[serde(default, deserialize_with = "null_as_empty", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ImportFile>,
}

/// `null` reads as an empty list.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl ImportManifest {
    /// Whether the update may be deployed on its own (`isDeployable` defaults to `true`).
    pub fn deployable(&self) -> bool {
        self.is_deployable.unwrap_or(true)
    }

    /// Sum of the sizes of all files and related files, in bytes (saturating).
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|file| {
                std::iter::once(file.size_in_bytes)
                    .chain(file.related_files.iter().map(|related| related.size_in_bytes))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The updates that reference steps install, in step order.
    pub fn reference_update_ids(&self) -> impl Iterator<Item = &UpdateId> {
        self.instructions.steps.iter().filter_map(|step| match step {
            Step::Reference { update_id, .. } => Some(update_id),
            Step::Inline { .. } => None,
        })
    }

    /// The payload file called `filename`, if there is one.
    pub fn file(&self, filename: &str) -> Option<&ImportFile> {
        self.files.iter().find(|file| file.filename == filename)
    }
}

/// Installation instructions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instructions {
    /// Steps, run in order.
    pub steps: Vec<Step>,
}

/// One installation step: run a handler on files, or install another update.
///
/// In JSON a step whose `type` is `"reference"` is a reference step; a step without `type` or
/// with `"type": "inline"` is an inline step. Inline steps are always written with their type.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Runs `handler` on the device with `files`.
    Inline {
        /// Handler id such as `microsoft/swupdate:1`.
        handler: String,
        /// Names of files of the manifest passed to the handler.
        files: Vec<String>,
        /// Arguments for the handler.
        handler_properties: Option<Map<String, Value>>,
        /// Free text.
        description: Option<String>,
    },
    /// Installs another update, imported separately.
    Reference {
        /// The update to install.
        update_id: UpdateId,
        /// Free text.
        description: Option<String>,
    },
}

impl Step {
    /// Whether this step installs another update.
    pub fn is_reference(&self) -> bool {
        matches!(self, Self::Reference { .. })
    }

    /// The step description, if any.
    pub fn description(&self) -> Option<&str> {
        match self {
            Self::Inline { description, .. } | Self::Reference { description, .. } => description.as_deref(),
        }
    }
}

/// The JSON members of a step of either kind, as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    handler: Option<String>,
    files: Option<Vec<String>>,
    handler_properties: Option<Map<String, Value>>,
    update_id: Option<UpdateId>,
    description: Option<String>,
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        let description = match self {
            Self::Inline { handler, files, handler_properties, description } => {
                map.serialize_entry("type", "inline")?;
                map.serialize_entry("handler", handler)?;
                map.serialize_entry("files", files)?;
                if let Some(properties) = handler_properties {
                    map.serialize_entry("handlerProperties", properties)?;
                }
                description
            }
            Self::Reference { update_id, description } => {
                map.serialize_entry("type", "reference")?;
                map.serialize_entry("updateId", update_id)?;
                description
            }
        };
        if let Some(description) = description {
            map.serialize_entry("description", description)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let json = StepJson::deserialize(deserializer)?;
        match json.kind.as_deref() {
            Some("reference") => Ok(Self::Reference {
                update_id: json.update_id.ok_or_else(|| D::Error::missing_field("updateId"))?,
                description: json.description,
            }),
            None | Some("inline") => Ok(Self::Inline {
                handler: json.handler.ok_or_else(|| D::Error::missing_field("handler"))?,
                files: json.files.ok_or_else(|| D::Error::missing_field("files"))?,
                handler_properties: json.handler_properties,
                description: json.description,
            }),
            Some(other) => Err(D::Error::unknown_variant(other, &["inline", "reference"])),
        }
    }
}

/// A payload file of the update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportFile {
    /// Base64 digests by algorithm name; `sha256` is always present.
    pub hashes: IndexMap<String, String>,
    /// Plain file name (no directories).
    pub filename: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// v5: properties passed through to the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    /// v5: handler that builds this file on the device from its related files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_handler: Option<DownloadHandler>,
    /// v5: files the download handler may use instead of downloading this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_files: Vec<RelatedFile>,
    /// Media type; not part of the schema, but the service writes it and tolerates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl ImportFile {
    /// The base64 SHA-256 digest as written in the manifest.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }

    /// The SHA-256 digest as bytes, if it is standard base64 of 32 bytes.
    pub fn sha256_digest(&self) -> Option<[u8; 32]> {
        self.sha256().and_then(decode_sha256)
    }
}

/// A file related to a payload file (v5), e.g. a delta the download handler applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelatedFile {
    /// Base64 digests by algorithm name; `sha256` is always present.
    pub hashes: IndexMap<String, String>,
    /// Plain file name (no directories).
    pub filename: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Properties passed through to the download handler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

impl RelatedFile {
    /// The base64 SHA-256 digest as written in the manifest.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
}

/// The download handler of a v5 file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadHandler {
    /// Handler id such as `microsoft/delta:1`.
    pub id: String,
}

/// Decodes a SHA-256 digest written as standard base64 with padding; `None` unless that gives
/// exactly 32 bytes.
pub fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = STANDARD.decode(text).ok()?;
    bytes.try_into().ok()
}
