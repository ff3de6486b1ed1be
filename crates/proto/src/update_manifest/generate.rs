//! Generation of an update manifest from a validated import manifest, as the service does on
//! import: file ids, `fileName`, the service's member order, and one child manifest file per
//! reference step.

use indexmap::IndexMap;

use super::{FileEntry, FullManifest, InlineStep, ReferenceStep, RelatedFile, Step, UpdateManifest};
use super::{file_id, manifest_file_content, manifest_file_name};
use crate::import_manifest::{self, ImportManifest, ManifestVersion};
use crate::update_id::UpdateId;

/// An already imported update that a reference step of the new one points to.
#[derive(Debug, Clone, Copy)]
pub struct ChildUpdate<'a> {
    /// Its id.
    pub update_id: &'a UpdateId,
    /// Its update manifest string, as generated when it was imported.
    pub manifest_json: &'a str,
}

/// Where the bytes of a file of a generated manifest come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FileSource {
    /// A payload file of the import manifest, by name.
    Payload {
        /// The import manifest's file name.
        file_name: String,
    },
    /// A related file of a payload file, by name.
    Related {
        /// The import manifest's related file name.
        file_name: String,
    },
    /// The manifest file of a child update, generated here.
    ChildManifest {
        /// The child update.
        update_id: UpdateId,
        /// The file's bytes.
        content: Vec<u8>,
    },
}

/// One file id of a generated manifest and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedFile {
    /// The file id.
    pub id: String,
    /// Where the bytes come from.
    pub source: FileSource,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedUpdate {
    /// The manifest.
    pub manifest: FullManifest,
    /// Its service JSON: the string to sign and send.
    pub json: String,
    /// Every file id with its source (payloads, related files, child manifests).
    pub files: Vec<GeneratedFile>,
}

/// Why an update manifest could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// A reference step names an update that was not given.
    #[error("reference step {} needs update {update_id}, which is not imported", step + 1)]
    MissingChild {
        /// Zero-based step index (messages count from 1).
        step: usize,
        /// The update it names.
        update_id: UpdateId,
    },
    /// A child update itself has reference steps (only one level is allowed).
    #[error("update {update_id} has reference steps itself; references may only be one level deep")]
    NestedReference {
        /// The child update.
        update_id: UpdateId,
    },
    /// A child manifest could not be parsed.
    #[error("the manifest of update {update_id} cannot be read: {detail}")]
    BadChild {
        /// The child update.
        update_id: UpdateId,
        /// What is wrong.
        detail: String,
    },
    /// An inline step names a file that is not in `files`.
    #[error("step {} names file \"{file_name}\", which is not in files", step + 1)]
    UnknownFile {
        /// Zero-based step index (messages count from 1).
        step: usize,
        /// The file name.
        file_name: String,
    },
    /// Two files got the same id (two files with the same name).
    #[error("two files would share the id {id} (file \"{file_name}\")")]
    DuplicateFileId {
        /// The id.
        id: String,
        /// The second file's name.
        file_name: String,
    },
}

/// Generates the update manifest of `import`. `children` must hold every update its reference
/// steps name; `created_date_time` is written as is (see
/// [`super::format_created_date_time`]).
pub fn generate(
    import: &ImportManifest,
    children: &[ChildUpdate<'_>],
    created_date_time: &str,
) -> Result<GeneratedUpdate, GenerateError> {
    let update_id = &import.update_id;
    let mut table = FileTable::default();
    let mut ids_by_name: IndexMap<&str, String> = IndexMap::new();

    for file in &import.files {
        let id = file_id(update_id, &file.filename);
        ids_by_name.insert(&file.filename, id.clone());
        let related_files = file
            .related_files
            .iter()
            .map(|related| RelatedFile {
                id: Some(file_id(update_id, &related.filename)),
                file_name: related.filename.clone(),
                size_in_bytes: related.size_in_bytes,
                hashes: related.hashes.clone(),
                properties: related.properties.clone(),
            })
            .collect::<Vec<_>>();
        for related in &related_files {
            table.sources.push(GeneratedFile {
                id: related.id.clone().unwrap_or_default(),
                source: FileSource::Related { file_name: related.file_name.clone() },
            });
        }
        let entry = FileEntry {
            file_name: file.filename.clone(),
            size_in_bytes: file.size_in_bytes,
            hashes: file.hashes.clone(),
            properties: file.properties.clone(),
            related_files,
            download_handler: file.download_handler.as_ref().map(|h| h.id.clone()),
        };
        table.insert(id, entry, FileSource::Payload { file_name: file.filename.clone() })?;
    }

    let mut steps = Vec::with_capacity(import.instructions.steps.len());
    for (index, step) in import.instructions.steps.iter().enumerate() {
        match step {
            import_manifest::Step::Inline { handler, files: names, handler_properties, description } => {
                let ids = names
                    .iter()
                    .map(|name| {
                        ids_by_name
                            .get(name.as_str())
                            .cloned()
                            .ok_or_else(|| GenerateError::UnknownFile { step: index, file_name: name.clone() })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                steps.push(Step::Inline(InlineStep {
                    handler: handler.clone(),
                    files: ids,
                    handler_properties: handler_properties.clone(),
                    description: description.clone(),
                }));
            }
            import_manifest::Step::Reference { update_id: child_id, description } => {
                let child = children
                    .iter()
                    .find(|c| c.update_id == child_id)
                    .ok_or_else(|| GenerateError::MissingChild { step: index, update_id: child_id.clone() })?;
                check_child(child)?;
                let content = manifest_file_content(child.manifest_json);
                let file_name = manifest_file_name(child_id);
                let id = file_id(update_id, &file_name);
                let entry = FileEntry::for_content(file_name, &content);
                if !table.files.contains_key(&id) {
                    table.insert(
                        id.clone(),
                        entry,
                        FileSource::ChildManifest { update_id: child_id.clone(), content },
                    )?;
                }
                steps.push(Step::Reference(ReferenceStep {
                    detached_manifest_file_id: id,
                    description: description.clone(),
                }));
            }
        }
    }

    let manifest = FullManifest {
        manifest_version: match import.manifest_version {
            ManifestVersion::V4 => "4".to_owned(),
            ManifestVersion::V5 => "5".to_owned(),
        },
        update_id: update_id.clone(),
        compatibility: import.compatibility.clone(),
        steps,
        files: table.files,
        created_date_time: created_date_time.to_owned(),
    };
    let json = manifest.to_service_json();
    Ok(GeneratedUpdate { manifest, json, files: table.sources })
}

/// The files of the manifest being generated, with their sources.
#[derive(Default)]
struct FileTable {
    files: IndexMap<String, FileEntry>,
    sources: Vec<GeneratedFile>,
}

impl FileTable {
    fn insert(&mut self, id: String, entry: FileEntry, source: FileSource) -> Result<(), GenerateError> {
        if self.files.contains_key(&id) {
            return Err(GenerateError::DuplicateFileId { id, file_name: entry.file_name });
        }
        self.sources.push(GeneratedFile { id: id.clone(), source });
        self.files.insert(id, entry);
        Ok(())
    }
}

fn check_child(child: &ChildUpdate<'_>) -> Result<(), GenerateError> {
    let bad = |detail: String| GenerateError::BadChild { update_id: child.update_id.clone(), detail };
    match UpdateManifest::parse(child.manifest_json).map_err(|e| bad(e.to_string()))? {
        UpdateManifest::Full(full) => {
            if full.steps.iter().any(|s| matches!(s, Step::Reference(_))) {
                return Err(GenerateError::NestedReference { update_id: child.update_id.clone() });
            }
            Ok(())
        }
        _ => Err(bad("not a full update manifest".to_owned())),
    }
}
