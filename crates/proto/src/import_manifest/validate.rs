//! Validation of an import manifest: every rule of the SchemaStore schemas for its version, plus
//! the rules the Azure service applies on import.
//!
//! [`validate`] walks the JSON once, object members in the order they appear, and reports a
//! violation as soon as it meets it, so violations come out in document order. The few facts that
//! need the whole document (the manifest's own update id, its file names, whether a step is
//! inline, the total size) are gathered first by `Facts`.
//!
//! The walk never descends into free-form objects (`handlerProperties`, `properties`), so its
//! depth is bounded whatever the input.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::model::{MAX_TOTAL_SIZE, ManifestVersion, decode_sha256};
use crate::update_id::validate_update_id;
use crate::validation::json_type_name as kind;
use crate::validation::{Pointer, Report, Violation};

/// Checks an import manifest and returns every violation, in document order; empty when valid.
///
/// Rules are named after the JSON Schema keyword they come from (`type`, `required`,
/// `additionalProperties`, `const`, `minLength`, `maxLength`, `pattern`, `minItems`, `maxItems`,
/// `minProperties`, `maxProperties`, `propertyNames`, `minimum`, `maximum`) or after the service
/// rule: `totalSize`, `uniqueFileNames`, `fileExists`, `plainFileName`, `sha256Format`,
/// `filesRequired`, `selfReference`, `uniqueCompatibility`, `dateTime`, and from the update id
/// checks `versionParts` and `versionRange`.
///
/// An unknown `manifestVersion` gives one violation and nothing else; a missing one is reported
/// and the rest is checked as version 5.0.
pub fn validate(manifest: &Value) -> Vec<Violation> {
    let mut report = Report::new();
    let Some(object) = manifest.as_object() else {
        let message = format!("an import manifest must be a JSON object, found {}", kind(manifest));
        report.push(&Pointer::root(), "type", message, Some(manifest));
        return report.into_violations();
    };
    let Some(version) = manifest_version(object, &mut report) else {
        return report.into_violations();
    };
    let mut checker =
        Checker { version, facts: Facts::gather(object, version), seen_file_names: HashMap::new(), report };
    checker.manifest(object);
    checker.report.into_violations()
}

const DESCRIPTION_LENGTH: RangeInclusive<usize> = 1..=512;
const STEP_DESCRIPTION_LENGTH: RangeInclusive<usize> = 1..=64;
const COMPATIBILITY_ENTRIES: RangeInclusive<usize> = 1..=10;
const COMPATIBILITY_PROPERTIES: RangeInclusive<usize> = 1..=5;
const COMPATIBILITY_NAME_LENGTH: RangeInclusive<usize> = 1..=32;
const COMPATIBILITY_VALUE_LENGTH: RangeInclusive<usize> = 1..=64;
const STEPS: RangeInclusive<usize> = 1..=10;
const STEP_FILES: RangeInclusive<usize> = 1..=10;
const FILES: RangeInclusive<usize> = 0..=10;
const RELATED_FILES: RangeInclusive<usize> = 0..=4;
const FILE_NAME_LENGTH: RangeInclusive<usize> = 1..=255;
const HANDLER_LENGTH: RangeInclusive<usize> = 5..=32;
const ANY_LENGTH: RangeInclusive<usize> = 0..=usize::MAX;
const MAX_HASHES: usize = 2;
const MAX_HASH_NAME_LENGTH: usize = 10;

const TOP_LEVEL_REQUIRED: &[&str] =
    &["updateId", "compatibility", "instructions", "manifestVersion", "createdDateTime"];
const INLINE_STEP_MEMBERS: &[&str] = &["type", "description", "handler", "files", "handlerProperties"];
const REFERENCE_STEP_MEMBERS: &[&str] = &["type", "description", "updateId"];
const FILE_REQUIRED: &[&str] = &["filename", "sizeInBytes", "hashes"];
const V4_FILE_MEMBERS: &[&str] = &["filename", "sizeInBytes", "hashes"];

/// The version to check against: `None` (after reporting it) for a version this crate does not
/// know; version 5.0 when the member is missing (the `required` check reports that).
fn manifest_version(object: &Map<String, Value>, report: &mut Report) -> Option<ManifestVersion> {
    let at = Pointer::root().key("manifestVersion");
    match object.get("manifestVersion") {
        None => Some(ManifestVersion::V5),
        Some(value @ Value::String(text)) => {
            let version = ManifestVersion::parse(text);
            if version.is_none() {
                let message = format!("manifestVersion {} is not supported (\"4.0\" or \"5.0\")", quote(text));
                report.push(&at, "const", message, Some(value));
            }
            version
        }
        Some(other) => {
            let message = format!("manifestVersion must be the string \"4.0\" or \"5.0\", found {}", kind(other));
            report.push(&at, "type", message, Some(other));
            None
        }
    }
}

/// How a step will be read: `type` decides, and a step without `type` is inline unless it has an
/// `updateId` and nothing of an inline step, in which case it is a reference step that forgot
/// its type (reported as a missing `type`, which is clearer than the two failed `anyOf` branches).
enum StepKind<'v> {
    Inline,
    Reference,
    Unknown(&'v Value),
}

impl<'v> StepKind<'v> {
    fn of(step: &'v Map<String, Value>) -> Self {
        match step.get("type") {
            Some(Value::String(kind)) if kind == "inline" => Self::Inline,
            Some(Value::String(kind)) if kind == "reference" => Self::Reference,
            Some(other) => Self::Unknown(other),
            None if step.contains_key("updateId") && !step.contains_key("handler") && !step.contains_key("files") => {
                Self::Reference
            }
            None => Self::Inline,
        }
    }
}

/// What the rules about the whole document need to know before the walk starts.
struct Facts<'v> {
    /// The manifest's own `updateId`, when it is an object.
    update_id: Option<&'v Value>,
    /// Names of the top-level files; `None` when `files` is missing, empty or not an array
    /// (then `filesRequired` or `type` explains the problem and `fileExists` stays quiet).
    file_names: Option<HashSet<&'v str>>,
    /// Index of the first inline step, if any.
    first_inline_step: Option<usize>,
    /// Sum of the sizes of files and related files, counting only sizes that are valid on their
    /// own (a single oversized file is a `maximum` violation, not a `totalSize` one).
    total_size: u64,
}

impl<'v> Facts<'v> {
    fn gather(manifest: &'v Map<String, Value>, version: ManifestVersion) -> Self {
        let files = manifest.get("files").and_then(Value::as_array).map(Vec::as_slice);
        let file_names = files
            .filter(|files| !files.is_empty())
            .map(|files| files.iter().filter_map(|file| file.get("filename").and_then(Value::as_str)).collect());
        let steps = manifest
            .get("instructions")
            .and_then(|instructions| instructions.get("steps"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first_inline_step = steps
            .iter()
            .position(|step| step.as_object().is_some_and(|step| matches!(StepKind::of(step), StepKind::Inline)));
        Self {
            update_id: manifest.get("updateId").filter(|id| id.is_object()),
            file_names,
            first_inline_step,
            total_size: total_size(files.unwrap_or_default(), version),
        }
    }
}

fn total_size(files: &[Value], version: ManifestVersion) -> u64 {
    let valid_size = |file: &Value| {
        file.get("sizeInBytes").and_then(Value::as_u64).filter(|size| (1..=MAX_TOTAL_SIZE).contains(size)).unwrap_or(0)
    };
    let related = |file: &Value| -> u64 {
        if version == ManifestVersion::V4 {
            return 0;
        }
        let related_files = file.get("relatedFiles").and_then(Value::as_array);
        related_files.into_iter().flatten().map(valid_size).fold(0, u64::saturating_add)
    };
    files.iter().map(|file| valid_size(file).saturating_add(related(file))).fold(0, u64::saturating_add)
}

/// The walk: one method per kind of JSON object of the schema.
struct Checker<'v> {
    version: ManifestVersion,
    facts: Facts<'v>,
    /// Every file and related file name met so far, with where it was first met.
    seen_file_names: HashMap<&'v str, Pointer>,
    report: Report,
}

impl<'v> Checker<'v> {
    fn manifest(&mut self, manifest: &'v Map<String, Value>) {
        let root = Pointer::root();
        self.required(manifest, &root, "import manifest", TOP_LEVEL_REQUIRED);
        if !manifest.contains_key("files")
            && let Some(step) = self.facts.first_inline_step
        {
            let message = format!("\"files\" is missing, but step {step} is an inline step and needs files");
            self.report.push(&root, "filesRequired", message, None);
        }
        for (name, value) in manifest {
            let at = root.key(name);
            match name.as_str() {
                "$schema" => {
                    self.string(value, &at, "$schema", ANY_LENGTH);
                }
                "updateId" => validate_update_id(value, &at, &mut self.report),
                "description" => {
                    self.string(value, &at, "description", DESCRIPTION_LENGTH);
                }
                "compatibility" => self.compatibility(value, &at),
                "instructions" => self.instructions(value, &at),
                "files" => self.files(value, &at),
                "createdDateTime" => self.created_date_time(value, &at),
                "isDeployable" => self.boolean(value, &at, "isDeployable"),
                // `manifestVersion` was checked first; the top level admits other members.
                _ => {}
            }
        }
    }

    fn compatibility(&mut self, value: &'v Value, at: &Pointer) {
        let Some(entries) = self.array(value, at, "compatibility", COMPATIBILITY_ENTRIES) else {
            return;
        };
        let mut first_index_of = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let at = at.index(index);
            let Some(properties) = self.object(entry, &at, "compatibility entry") else {
                continue;
            };
            self.property_count(properties, &at, "compatibility entry", COMPATIBILITY_PROPERTIES);
            if let Some(key) = compatibility_key(properties)
                && let first = *first_index_of.entry(key).or_insert(index)
                && first != index
            {
                let message = format!("compatibility entry {} repeats entry {first}", render(entry));
                self.report.push(&at, "uniqueCompatibility", message, Some(entry));
            }
            for (name, value) in properties {
                let at = at.key(name);
                let what = "compatibility property name";
                self.property_name(name, &at, what, COMPATIBILITY_NAME_LENGTH);
                self.string(value, &at, "compatibility value", COMPATIBILITY_VALUE_LENGTH);
            }
        }
    }

    fn instructions(&mut self, value: &'v Value, at: &Pointer) {
        let Some(instructions) = self.object(value, at, "instructions") else {
            return;
        };
        self.required(instructions, at, "instructions", &["steps"]);
        for (name, member) in instructions {
            let member_at = at.key(name);
            if name == "steps" {
                self.steps(member, &member_at);
            } else {
                self.unknown_member(name, member, &member_at, "instructions", &["steps"]);
            }
        }
    }

    fn steps(&mut self, value: &'v Value, at: &Pointer) {
        let Some(steps) = self.array(value, at, "steps", STEPS) else {
            return;
        };
        for (index, step) in steps.iter().enumerate() {
            self.step(step, &at.index(index));
        }
    }

    fn step(&mut self, value: &'v Value, at: &Pointer) {
        let Some(step) = self.object(value, at, "step") else {
            return;
        };
        match StepKind::of(step) {
            StepKind::Inline => self.inline_step(step, at),
            StepKind::Reference => self.reference_step(step, at),
            StepKind::Unknown(type_value) => self.unknown_step_type(type_value, &at.key("type")),
        }
    }

    fn unknown_step_type(&mut self, value: &Value, at: &Pointer) {
        match value {
            Value::String(text) => {
                let message = format!("step type {} is neither \"inline\" nor \"reference\"", quote(text));
                self.report.push(at, "const", message, Some(value));
            }
            other => {
                let message =
                    format!("step type must be the string \"inline\" or \"reference\", found {}", kind(other));
                self.report.push(at, "type", message, Some(other));
            }
        }
    }

    fn inline_step(&mut self, step: &'v Map<String, Value>, at: &Pointer) {
        self.required(step, at, "inline step", &["handler", "files"]);
        for (name, member) in step {
            let member_at = at.key(name);
            match name.as_str() {
                "type" => {}
                "description" => {
                    self.string(member, &member_at, "step description", STEP_DESCRIPTION_LENGTH);
                }
                "handler" => self.handler_id(member, &member_at, "handler"),
                "files" => self.step_files(member, &member_at),
                "handlerProperties" => {
                    self.object(member, &member_at, "handlerProperties");
                }
                "updateId" => {
                    let message = "an inline step has no \"updateId\" (a reference step needs \"type\": \"reference\")";
                    self.report.push(&member_at, "additionalProperties", message, Some(member));
                }
                _ => self.unknown_member(name, member, &member_at, "inline step", INLINE_STEP_MEMBERS),
            }
        }
    }

    fn step_files(&mut self, value: &'v Value, at: &Pointer) {
        let Some(names) = self.array(value, at, "step files", STEP_FILES) else {
            return;
        };
        for (index, name) in names.iter().enumerate() {
            let at = at.index(index);
            let Some(text) = self.string(name, &at, "step file name", FILE_NAME_LENGTH) else {
                continue;
            };
            let known = self.facts.file_names.as_ref();
            if !text.is_empty() && known.is_some_and(|known| !known.contains(text)) {
                let message = format!("step file {} is not one of the manifest's files", quote(text));
                self.report.push(&at, "fileExists", message, Some(name));
            }
        }
    }

    fn reference_step(&mut self, step: &'v Map<String, Value>, at: &Pointer) {
        self.required(step, at, "reference step", &["type", "updateId"]);
        for (name, member) in step {
            let member_at = at.key(name);
            match name.as_str() {
                "type" => {}
                "description" => {
                    self.string(member, &member_at, "step description", STEP_DESCRIPTION_LENGTH);
                }
                "updateId" => {
                    validate_update_id(member, &member_at, &mut self.report);
                    if self.facts.update_id == Some(member) {
                        let message = format!("reference step installs the manifest's own update {}", render(member));
                        self.report.push(&member_at, "selfReference", message, Some(member));
                    }
                }
                _ => self.unknown_member(name, member, &member_at, "reference step", REFERENCE_STEP_MEMBERS),
            }
        }
    }

    fn files(&mut self, value: &'v Value, at: &Pointer) {
        // The schemas' own description of `files`: "May be empty or null if all instruction
        // steps are reference steps" (their `type` says array; the description is what the
        // service accepts).
        if value.is_null() {
            if let Some(step) = self.facts.first_inline_step {
                let message = format!("\"files\" is null, but step {step} is an inline step and needs files");
                self.report.push(at, "filesRequired", message, Some(value));
            }
            return;
        }
        let Some(files) = self.array(value, at, "files", FILES) else {
            return;
        };
        if self.facts.total_size > MAX_TOTAL_SIZE {
            let message = format!("files add up to {} bytes (at most {MAX_TOTAL_SIZE})", self.facts.total_size);
            self.report.push(at, "totalSize", message, None);
        }
        if files.is_empty()
            && let Some(step) = self.facts.first_inline_step
        {
            let message = format!("\"files\" is empty, but step {step} is an inline step and needs files");
            self.report.push(at, "filesRequired", message, Some(value));
        }
        for (index, file) in files.iter().enumerate() {
            self.file(file, &at.index(index));
        }
    }

    fn file(&mut self, value: &'v Value, at: &Pointer) {
        let Some(file) = self.object(value, at, "file") else {
            return;
        };
        self.required(file, at, "file", FILE_REQUIRED);
        for (name, member) in file {
            let member_at = at.key(name);
            if self.base_file_member(name, member, &member_at) {
                continue;
            }
            match (self.version, name.as_str()) {
                (ManifestVersion::V4, _) => {
                    self.unknown_member(name, member, &member_at, "version 4.0 file", V4_FILE_MEMBERS);
                }
                (ManifestVersion::V5, "relatedFiles") => self.related_files(member, &member_at),
                (ManifestVersion::V5, "downloadHandler") => self.download_handler(member, &member_at),
                (ManifestVersion::V5, "mimeType") => {
                    self.string(member, &member_at, "mimeType", ANY_LENGTH);
                }
                // A version 5.0 file admits other members.
                (ManifestVersion::V5, _) => {}
            }
        }
    }

    fn related_files(&mut self, value: &'v Value, at: &Pointer) {
        let Some(related_files) = self.array(value, at, "relatedFiles", RELATED_FILES) else {
            return;
        };
        for (index, related) in related_files.iter().enumerate() {
            let at = at.index(index);
            let Some(related) = self.object(related, &at, "related file") else {
                continue;
            };
            self.required(related, &at, "related file", FILE_REQUIRED);
            for (name, member) in related {
                // A related file admits other members.
                self.base_file_member(name, member, &at.key(name));
            }
        }
    }

    /// Checks a member that files and related files share; `false` when `name` is not one.
    fn base_file_member(&mut self, name: &str, member: &'v Value, at: &Pointer) -> bool {
        match name {
            "filename" => self.file_name(member, at),
            "sizeInBytes" => self.size(member, at),
            "hashes" => self.hashes(member, at),
            "properties" if self.version == ManifestVersion::V5 => {
                self.object(member, at, "properties");
            }
            _ => return false,
        }
        true
    }

    fn file_name(&mut self, value: &'v Value, at: &Pointer) {
        let Some(name) = self.string(value, at, "filename", FILE_NAME_LENGTH) else {
            return;
        };
        if let Some(problem) = file_name_problem(name) {
            let message = format!("filename {} {problem}: a file name may not name a directory", quote(name));
            self.report.push(at, "plainFileName", message, Some(value));
        }
        if name.is_empty() {
            return;
        }
        match self.seen_file_names.entry(name) {
            Entry::Occupied(first) => {
                let message = format!("filename {} is already used at {}", quote(name), first.get());
                self.report.push(at, "uniqueFileNames", message, Some(value));
            }
            Entry::Vacant(vacant) => {
                vacant.insert(at.clone());
            }
        }
    }

    fn size(&mut self, value: &Value, at: &Pointer) {
        let Value::Number(number) = value else {
            let message = format!("sizeInBytes must be a number, found {}", kind(value));
            self.report.push(at, "type", message, Some(value));
            return;
        };
        let (below, above) = match (number.as_u64(), number.as_f64()) {
            (Some(size), _) => (size < 1, size > MAX_TOTAL_SIZE),
            (None, Some(size)) => (size < 1.0, size > MAX_TOTAL_SIZE as f64),
            (None, None) => (false, false),
        };
        if below {
            let message = format!("sizeInBytes {number} is below the minimum of 1");
            self.report.push(at, "minimum", message, Some(value));
        } else if above {
            let message = format!("sizeInBytes {number} is above the maximum of {MAX_TOTAL_SIZE}");
            self.report.push(at, "maximum", message, Some(value));
        } else if number.as_u64().is_none() {
            let message = format!("sizeInBytes {number} must be a whole number of bytes");
            self.report.push(at, "type", message, Some(value));
        }
    }

    fn hashes(&mut self, value: &'v Value, at: &Pointer) {
        let Some(hashes) = self.object(value, at, "hashes") else {
            return;
        };
        self.required(hashes, at, "hashes", &["sha256"]);
        if hashes.len() > MAX_HASHES {
            let message = format!("hashes has {} members (at most {MAX_HASHES}: sha256 and one more)", hashes.len());
            self.report.push(at, "maxProperties", message, Some(value));
        }
        for (algorithm, hash) in hashes {
            let at = at.key(algorithm);
            let length = algorithm.chars().count();
            if algorithm != "sha256" && length > MAX_HASH_NAME_LENGTH {
                let message = format!(
                    "hash algorithm name {} is {length} characters long (at most {MAX_HASH_NAME_LENGTH})",
                    quote(algorithm)
                );
                self.report.push(&at, "propertyNames", message, Some(hash));
            }
            let Value::String(text) = hash else {
                let message = format!("{algorithm} hash must be a string, found {}", kind(hash));
                self.report.push(&at, "type", message, Some(hash));
                continue;
            };
            if algorithm == "sha256" && decode_sha256(text).is_none() {
                let message = format!(
                    "sha256 {} is not the standard base64 encoding (with '=' padding) of 32 bytes",
                    quote(text)
                );
                self.report.push(&at, "sha256Format", message, Some(hash));
            }
        }
    }

    fn download_handler(&mut self, value: &'v Value, at: &Pointer) {
        let Some(handler) = self.object(value, at, "downloadHandler") else {
            return;
        };
        self.required(handler, at, "downloadHandler", &["id"]);
        if let Some(id) = handler.get("id") {
            self.handler_id(id, &at.key("id"), "downloadHandler id");
        }
    }

    fn created_date_time(&mut self, value: &'v Value, at: &Pointer) {
        let Some(text) = self.string(value, at, "createdDateTime", ANY_LENGTH) else {
            return;
        };
        if !is_utc_date_time(text) {
            let message = format!(
                "createdDateTime {} is not an ISO 8601 UTC date and time such as \"2020-10-02T22:18:04.9446744Z\"",
                quote(text)
            );
            self.report.push(at, "dateTime", message, Some(value));
        }
    }

    fn handler_id(&mut self, value: &'v Value, at: &Pointer, what: &str) {
        let Some(id) = self.string(value, at, what, HANDLER_LENGTH) else {
            return;
        };
        if !id.is_empty() && !is_handler_id(id) {
            let message =
                format!("{what} {} must look like \"provider/name:version\", e.g. \"microsoft/swupdate:1\"", quote(id));
            self.report.push(at, "pattern", message, Some(value));
        }
    }

    // Keyword checks shared by the methods above.

    /// `type: string` plus `minLength` / `maxLength` (in characters); the text when it is one.
    fn string(&mut self, value: &'v Value, at: &Pointer, what: &str, length: RangeInclusive<usize>) -> Option<&'v str> {
        let Value::String(text) = value else {
            let message = format!("{what} must be a string, found {}", kind(value));
            self.report.push(at, "type", message, Some(value));
            return None;
        };
        let count = text.chars().count();
        if count < *length.start() {
            let message = if count == 0 {
                format!("{what} must not be empty, found \"\"")
            } else {
                format!("{what} {} is {count} characters long (at least {})", quote(text), length.start())
            };
            self.report.push(at, "minLength", message, Some(value));
        } else if count > *length.end() {
            let message = format!("{what} {} is {count} characters long (at most {})", quote(text), length.end());
            self.report.push(at, "maxLength", message, Some(value));
        }
        Some(text)
    }

    /// `type: boolean`.
    fn boolean(&mut self, value: &Value, at: &Pointer, what: &str) {
        if !value.is_boolean() {
            let message = format!("{what} must be true or false, found {}", kind(value));
            self.report.push(at, "type", message, Some(value));
        }
    }

    /// `type: array` plus `minItems` / `maxItems`; the items when it is an array.
    fn array(
        &mut self,
        value: &'v Value,
        at: &Pointer,
        what: &str,
        items: RangeInclusive<usize>,
    ) -> Option<&'v [Value]> {
        let Value::Array(array) = value else {
            let message = format!("{what} must be an array, found {}", kind(value));
            self.report.push(at, "type", message, Some(value));
            return None;
        };
        if array.len() < *items.start() {
            let message = format!("{what} has {} items (at least {})", array.len(), items.start());
            self.report.push(at, "minItems", message, Some(value));
        } else if array.len() > *items.end() {
            let message = format!("{what} has {} items (at most {})", array.len(), items.end());
            self.report.push(at, "maxItems", message, Some(value));
        }
        Some(array)
    }

    /// `type: object`; the members when it is an object.
    fn object(&mut self, value: &'v Value, at: &Pointer, what: &str) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            let message = format!("{what} must be an object, found {}", kind(value));
            self.report.push(at, "type", message, Some(value));
        }
        object
    }

    /// `minProperties` / `maxProperties`.
    fn property_count(&mut self, object: &Map<String, Value>, at: &Pointer, what: &str, count: RangeInclusive<usize>) {
        if object.len() < *count.start() {
            let message = format!("{what} has {} properties (at least {})", object.len(), count.start());
            self.report.push(at, "minProperties", message, None);
        } else if object.len() > *count.end() {
            let message = format!("{what} has {} properties (at most {})", object.len(), count.end());
            self.report.push(at, "maxProperties", message, None);
        }
    }

    /// `propertyNames` with `minLength` / `maxLength`.
    fn property_name(&mut self, name: &str, at: &Pointer, what: &str, length: RangeInclusive<usize>) {
        let count = name.chars().count();
        if !length.contains(&count) {
            let message =
                format!("{what} {} is {count} characters long ({} to {})", quote(name), length.start(), length.end());
            self.report.push(at, "propertyNames", message, None);
        }
    }

    /// `required`, reported at the object that lacks the members.
    fn required(&mut self, object: &Map<String, Value>, at: &Pointer, what: &str, names: &[&str]) {
        for name in names.iter().filter(|name| !object.contains_key(**name)) {
            self.report.push(at, "required", format!("{what} is missing \"{name}\""), None);
        }
    }

    /// `additionalProperties: false`, reported at the unknown member.
    fn unknown_member(&mut self, name: &str, value: &Value, at: &Pointer, what: &str, allowed: &[&str]) {
        let message = format!("unknown member {} in {what} (allowed: {})", quote(name), allowed.join(", "));
        self.report.push(at, "additionalProperties", message, Some(value));
    }
}

/// A compatibility entry as a set of name/value pairs, so that member order does not matter;
/// `None` when a value is not a string (that entry is already reported).
fn compatibility_key(properties: &Map<String, Value>) -> Option<Vec<(&str, &str)>> {
    let mut pairs =
        properties.iter().map(|(name, value)| Some((name.as_str(), value.as_str()?))).collect::<Option<Vec<_>>>()?;
    pairs.sort_unstable();
    Some(pairs)
}

/// Why `name` is not a plain file name, if it is not one.
fn file_name_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("is a directory")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// Whether `text` matches the handler pattern `^\S+/\S+:\d{1,5}$`.
fn is_handler_id(text: &str) -> bool {
    let Some((head, version)) = text.rsplit_once(':') else {
        return false;
    };
    let is_space = |c: char| c.is_whitespace() || c == '\u{feff}';
    (1..=5).contains(&version.len())
        && version.bytes().all(|b| b.is_ascii_digit())
        && !head.chars().any(is_space)
        && head.char_indices().any(|(i, c)| c == '/' && i > 0 && i + 1 < head.len())
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, a real calendar date and time in UTC.
fn is_utc_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let number = |position: usize, width: usize| -> Option<u32> {
        let digits = bytes.get(position..position + width)?;
        digits.iter().try_fold(0u32, |n, &digit| digit.is_ascii_digit().then(|| n * 10 + u32::from(digit - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|&(position, byte)| bytes.get(position) == Some(&byte)) {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (number(0, 4), number(5, 2), number(8, 2), number(11, 2), number(14, 2), number(17, 2))
    else {
        return false;
    };
    let suffix_is_utc = match bytes.get(19..).unwrap_or_default() {
        [b'Z'] => true,
        [b'.', fraction @ .., b'Z'] => !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60
        && suffix_is_utc
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `text` as a JSON string literal for messages, cut after 64 characters.
fn quote(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = text.chars().take(SHOWN).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    // Invariant: serialising a string cannot fail.
    serde_json::to_string(&shown).unwrap_or_default()
}

/// `value` as compact JSON for messages, cut after 128 characters.
fn render(value: &Value) -> String {
    const SHOWN: usize = 128;
    let text = value.to_string();
    match text.char_indices().nth(SHOWN).and_then(|(cut, _)| text.get(..cut)) {
        Some(shown) => format!("{shown}…"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times() {
        for good in
            ["2020-10-02T22:18:04.9446744Z", "2026-11-23T17:50:19Z", "2024-02-29T00:00:00Z", "2000-02-29T23:59:59.1Z"]
        {
            assert!(is_utc_date_time(good), "{good}");
        }
        for bad in [
            "",
            "2020-10-02",
            "2020-10-02T22:18:04",
            "2020-10-02T22:18:04+00:00",
            "2020-10-02 22:18:04Z",
            "2020-10-02t22:18:04z",
            "2020-10-02T22:18:04.Z",
            "2020-10-02T22:18:04.1x2Z",
            "2020-13-02T22:18:04Z",
            "2020-00-02T22:18:04Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2020-04-31T00:00:00Z",
            "2020-10-02T24:00:00Z",
            "2020-10-02T23:60:00Z",
            "2020-10-02T23:59:60Z",
            "+020-10-02T22:18:04Z",
            "2020-10-02T22:18:04ZZ",
            "２020-10-02T22:18:04Z",
        ] {
            assert!(!is_utc_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn handler_ids() {
        for good in ["microsoft/swupdate:1", "a/b:12345", "a/b/c:1", "a:b/c:1", "contoso/x:0"] {
            assert!(is_handler_id(good), "{good}");
        }
        for bad in [
            "microsoft/swupdate",
            "microsoft:1",
            "/swupdate:1",
            "microsoft/:1",
            "a/b:123456",
            "a/b:",
            "a/b:1a",
            "a /b:1",
            "a/b\t:1",
            "a/b:1 ",
            "a/b:１",
        ] {
            assert!(!is_handler_id(bad), "{bad}");
        }
    }

    #[test]
    fn plain_file_names() {
        assert_eq!(file_name_problem("fw.swu"), None);
        assert_eq!(file_name_problem("..fw"), None);
        assert_eq!(file_name_problem("."), Some("is a directory"));
        assert_eq!(file_name_problem(".."), Some("is a directory"));
        assert_eq!(file_name_problem("a/b"), Some("contains a path separator"));
        assert_eq!(file_name_problem("..\\b"), Some("contains a path separator"));
        assert_eq!(file_name_problem("a\u{0}b"), Some("contains a control character"));
        assert_eq!(file_name_problem("a\nb"), Some("contains a control character"));
        assert_eq!(file_name_problem("a\u{7f}"), Some("contains a control character"));
    }

    #[test]
    fn quotes_are_json_and_cut() {
        assert_eq!(quote("a\"b\u{0}"), r#""a\"b\u0000""#);
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("\"{}…\"", "x".repeat(64)));
        assert_eq!(render(&Value::from(vec![1, 2])), "[1,2]");
    }

    #[test]
    fn days_per_month() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2023, 11), 30);
        assert_eq!(days_in_month(2023, 12), 31);
    }
}
