//! Building a v5 import manifest from command-line style options, as
//! `az iot du update init v5` does; `duhub update init v5` is a thin shell around [`init_v5`].
//!
//! The builder is pure: the caller reads the files (name, size, SHA-256) and the clock, and
//! passes them in. The output has the member order `az` writes, so manifests made by either tool
//! look the same.

use serde_json::{Map, Value, json};

use super::validate;
use crate::update_id::UpdateId;
use crate::validation::Violation;
use crate::validation::json_type_name as kind;

/// The Microsoft handler ids `az` accepts; another handler starting with `microsoft` is refused
/// unless validation is off.
pub const MICROSOFT_HANDLERS: &[&str] =
    &["microsoft/apt:1", "microsoft/script:1", "microsoft/simulator:1", "microsoft/swupdate:1", "microsoft/swupdate:2"];

/// Handlers that need `handlerProperties.installedCriteria`; it defaults to `"1.0"`.
const HANDLERS_REQUIRING_INSTALLED_CRITERIA: &[&str] =
    &["microsoft/apt:1", "microsoft/swupdate:1", "microsoft/swupdate:2"];

/// The value `installedCriteria` gets when a handler needs it and none was given.
const DEFAULT_INSTALLED_CRITERIA: &str = "1.0";

/// Everything `init v5` needs: one field per command-line option.
#[derive(Debug, Clone, PartialEq)]
pub struct InitRequest {
    /// `--update-provider`, `--update-name`, `--update-version`.
    pub update_id: UpdateId,
    /// `--description`; omitted when empty.
    pub description: Option<String>,
    /// `--is-deployable`; only `Some(false)` is written.
    pub is_deployable: Option<bool>,
    /// One entry per `--compat`, each a list of `name=value` pairs; empty entries are skipped and
    /// a repeated name keeps its first position with the last value.
    pub compatibility: Vec<Vec<(String, String)>>,
    /// One entry per `--step`, in order.
    pub steps: Vec<InitStep>,
    /// One entry per `--file`, in order; files are de-duplicated by name, the first one wins.
    pub files: Vec<InitFile>,
    /// `--no-validation`: no handler check, no `installedCriteria` default, no validation of
    /// the result.
    pub no_validation: bool,
    /// `createdDateTime`, conventionally UTC now as `%Y-%m-%dT%H:%M:%SZ`.
    pub created_date_time: String,
}

impl InitRequest {
    /// A request for `update_id` with no description, compatibility, steps or files.
    pub fn new(update_id: UpdateId, created_date_time: impl Into<String>) -> Self {
        Self {
            update_id,
            description: None,
            is_deployable: None,
            compatibility: Vec::new(),
            steps: Vec::new(),
            files: Vec::new(),
            no_validation: false,
            created_date_time: created_date_time.into(),
        }
    }
}

/// One `--step`.
#[derive(Debug, Clone, PartialEq)]
pub enum InitStep {
    /// `handler=<id> [properties=<json>] [description=<text>] [files=a,b]`.
    Inline(InitInlineStep),
    /// `updateId.provider=<p> updateId.name=<n> updateId.version=<v> [description=<text>]`.
    Reference(InitReferenceStep),
}

/// An inline `--step` and the `--file` options that follow it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitInlineStep {
    /// Handler id, e.g. `microsoft/swupdate:1`.
    pub handler: String,
    /// `properties=`: JSON object text for `handlerProperties`; omitted when empty.
    pub properties: Option<String>,
    /// `description=`; omitted when empty.
    pub description: Option<String>,
    /// `files=`: explicit file names; when absent or empty the step gets the names of its own
    /// files (`file_indices`).
    pub files: Option<Vec<String>>,
    /// Indices into [`InitRequest::files`] of the `--file` options that follow this step.
    pub file_indices: Vec<usize>,
}

/// A reference `--step`.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReferenceStep {
    /// The update the step installs.
    pub update_id: UpdateId,
    /// `description=`; omitted when empty.
    pub description: Option<String>,
}

/// One `--file`, with its `--related-file` options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitFile {
    /// File name as written in the manifest (the CLI passes the base name of `path=`).
    pub name: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Base64 SHA-256 of the content.
    pub sha256: String,
    /// `properties=`: JSON object text; omitted when empty.
    pub properties: Option<String>,
    /// `downloadHandler=`: download handler id; omitted when empty.
    pub download_handler: Option<String>,
    /// The `--related-file` options that follow; de-duplicated by name, the first one wins.
    pub related_files: Vec<InitRelatedFile>,
}

/// One `--related-file`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitRelatedFile {
    /// File name as written in the manifest.
    pub name: String,
    /// Size in bytes.
    pub size_in_bytes: u64,
    /// Base64 SHA-256 of the content.
    pub sha256: String,
    /// `properties=`: JSON object text; omitted when empty.
    pub properties: Option<String>,
}

/// What `init v5` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct InitOutput {
    /// The import manifest, members in `az` order.
    pub manifest: Value,
    /// Things the operator should know, e.g. a defaulted `installedCriteria`.
    pub warnings: Vec<String>,
}

/// Why `init v5` refused a request.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A handler whose name starts with `microsoft` is not one of [`MICROSOFT_HANDLERS`].
    #[error("unknown microsoft handler {handler:?} (valid microsoft handlers: {})", MICROSOFT_HANDLERS.join(", "))]
    UnknownMicrosoftHandler {
        /// The handler as given.
        handler: String,
    },
    /// A `properties=` value is not JSON.
    #[error("properties of {owner} are not valid json")]
    PropertiesSyntax {
        /// Whose properties: `step 1`, `file "fw.swu"`, `related file "delta.json"`.
        owner: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A `properties=` value is JSON but not an object.
    #[error("properties of {owner} must be a json object, found {found}")]
    PropertiesNotObject {
        /// Whose properties: `step 1`, `file "fw.swu"`, `related file "delta.json"`.
        owner: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// An inline step lists a file index that is not in [`InitRequest::files`].
    #[error("step {step} refers to file index {index}, but the request has {count} files")]
    UnknownFileIndex {
        /// One-based position of the step.
        step: usize,
        /// The index it gave.
        index: usize,
        /// How many files there are.
        count: usize,
    },
    /// The manifest built breaks validation rules.
    #[error("the manifest would be invalid: {}", super::list_violations(.0))]
    Invalid(Vec<Violation>),
}

/// Builds a v5 import manifest from `request`, as `az iot du update init v5` does.
///
/// Files and related files are de-duplicated by name (the first wins); an inline step without
/// explicit file names gets the names of its own files. Unless `no_validation` is set, Microsoft
/// handler ids are checked, `installedCriteria` defaults to `"1.0"` where the handler needs it
/// (with a warning), and the result must pass [`validate`].
pub fn init_v5(request: &InitRequest) -> Result<InitOutput, InitError> {
    let mut warnings = Vec::new();
    let mut manifest = Map::new();
    manifest.insert("manifestVersion".into(), "5.0".into());
    manifest.insert("createdDateTime".into(), request.created_date_time.clone().into());
    let id = &request.update_id;
    manifest.insert("updateId".into(), json!({ "name": id.name, "provider": id.provider, "version": id.version }));
    if request.is_deployable == Some(false) {
        manifest.insert("isDeployable".into(), false.into());
    }
    if let Some(description) = non_empty(&request.description) {
        manifest.insert("description".into(), description.into());
    }
    manifest.insert("compatibility".into(), compatibility(&request.compatibility));
    let steps = request
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| build_step(step, index + 1, request, &mut warnings))
        .collect::<Result<Vec<_>, _>>()?;
    manifest.insert("instructions".into(), json!({ "steps": steps }));
    let files = unique_by_name(&request.files, |file| &file.name).map(build_file).collect::<Result<Vec<_>, _>>()?;
    if !files.is_empty() {
        manifest.insert("files".into(), files.into());
    }
    let manifest = Value::Object(manifest);
    if !request.no_validation {
        let violations = validate(&manifest);
        if !violations.is_empty() {
            return Err(InitError::Invalid(violations));
        }
    }
    Ok(InitOutput { manifest, warnings })
}

fn compatibility(entries: &[Vec<(String, String)>]) -> Value {
    let objects = entries
        .iter()
        .filter(|pairs| !pairs.is_empty())
        .map(|pairs| {
            let object: Map<String, Value> =
                pairs.iter().map(|(name, value)| (name.clone(), Value::from(value.as_str()))).collect();
            Value::Object(object)
        })
        .collect();
    Value::Array(objects)
}

fn build_step(
    step: &InitStep,
    position: usize,
    request: &InitRequest,
    warnings: &mut Vec<String>,
) -> Result<Value, InitError> {
    let mut built = match step {
        InitStep::Inline(inline) => inline_step(inline, position, request, warnings)?,
        InitStep::Reference(reference) => {
            let id = &reference.update_id;
            let mut built = Map::new();
            built.insert("type".into(), "reference".into());
            built.insert("updateId".into(), json!({ "provider": id.provider, "name": id.name, "version": id.version }));
            built
        }
    };
    let description = match step {
        InitStep::Inline(inline) => &inline.description,
        InitStep::Reference(reference) => &reference.description,
    };
    if let Some(description) = non_empty(description) {
        built.insert("description".into(), description.into());
    }
    Ok(Value::Object(built))
}

fn inline_step(
    step: &InitInlineStep,
    position: usize,
    request: &InitRequest,
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, InitError> {
    let handler = step.handler.as_str();
    let validating = !request.no_validation;
    if validating && handler.to_lowercase().starts_with("microsoft") && !MICROSOFT_HANDLERS.contains(&handler) {
        return Err(InitError::UnknownMicrosoftHandler { handler: handler.to_owned() });
    }
    let files = match &step.files {
        Some(explicit) if !explicit.is_empty() => explicit.clone(),
        _ => own_file_names(step, position, &request.files)?,
    };
    let mut properties = parse_properties(step.properties.as_deref(), || format!("step {position}"))?;
    let needs_criteria = HANDLERS_REQUIRING_INSTALLED_CRITERIA.contains(&handler);
    let has_criteria = properties.as_ref().is_some_and(|p| p.contains_key("installedCriteria"));
    if validating && needs_criteria && !has_criteria {
        properties.get_or_insert_with(Map::new).insert("installedCriteria".into(), DEFAULT_INSTALLED_CRITERIA.into());
        warnings.push(format!(
            "handler {handler:?} of step {position} requires handlerProperties.installedCriteria, \
             it was set to {DEFAULT_INSTALLED_CRITERIA:?}"
        ));
    }
    let mut built = Map::new();
    built.insert("type".into(), "inline".into());
    built.insert("handler".into(), handler.into());
    built.insert("files".into(), files.into());
    if let Some(properties) = properties {
        built.insert("handlerProperties".into(), properties.into());
    }
    Ok(built)
}

/// Names of the files that follow a step, each once.
fn own_file_names(step: &InitInlineStep, position: usize, files: &[InitFile]) -> Result<Vec<String>, InitError> {
    let own = step
        .file_indices
        .iter()
        .map(|&index| files.get(index).ok_or(InitError::UnknownFileIndex { step: position, index, count: files.len() }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(unique_by_name(own, |file| &file.name).map(|file| file.name.clone()).collect())
}

fn build_file(file: &InitFile) -> Result<Value, InitError> {
    let mut built = base_file(&file.sha256, &file.name, file.size_in_bytes);
    let owner = || format!("file {:?}", file.name);
    if let Some(properties) = parse_properties(file.properties.as_deref(), owner)? {
        built.insert("properties".into(), properties.into());
    }
    if let Some(id) = non_empty(&file.download_handler) {
        built.insert("downloadHandler".into(), json!({ "id": id }));
    }
    let related = unique_by_name(&file.related_files, |related| &related.name)
        .map(build_related_file)
        .collect::<Result<Vec<_>, _>>()?;
    if !related.is_empty() {
        built.insert("relatedFiles".into(), related.into());
    }
    Ok(Value::Object(built))
}

fn build_related_file(related: &InitRelatedFile) -> Result<Value, InitError> {
    let mut built = base_file(&related.sha256, &related.name, related.size_in_bytes);
    let owner = || format!("related file {:?}", related.name);
    if let Some(properties) = parse_properties(related.properties.as_deref(), owner)? {
        built.insert("properties".into(), properties.into());
    }
    Ok(Value::Object(built))
}

fn base_file(sha256: &str, name: &str, size_in_bytes: u64) -> Map<String, Value> {
    let mut built = Map::new();
    built.insert("hashes".into(), json!({ "sha256": sha256 }));
    built.insert("filename".into(), name.into());
    built.insert("sizeInBytes".into(), size_in_bytes.into());
    built
}

/// Parses a `properties=` value; `None` when it is absent or empty.
fn parse_properties(text: Option<&str>, owner: impl Fn() -> String) -> Result<Option<Map<String, Value>>, InitError> {
    let Some(text) = text.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let value: Value =
        serde_json::from_str(text).map_err(|source| InitError::PropertiesSyntax { owner: owner(), source })?;
    match value {
        Value::Object(properties) => Ok(Some(properties)),
        other => Err(InitError::PropertiesNotObject { owner: owner(), found: kind(&other) }),
    }
}

/// The items whose name was not seen before, in order.
fn unique_by_name<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    name: impl Fn(&T) -> &String,
) -> impl Iterator<Item = &'a T> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(move |item| seen.insert(name(item).clone()))
}

fn non_empty(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|text| !text.is_empty())
}
