//! Twin documents under IoT Hub's rules: JSON merge patches (RFC 7396), the checks IoT Hub applies to desired,
//! reported and tags patches, and the section size limits.
//!
//! The rules (IoT Hub device twin documentation and quotas, protocol-reference §11):
//!
//! | rule | limit |
//! |---|---|
//! | `type` | a patch is a JSON object |
//! | `emptyName`, `maxNameLength` | member names are 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 |
//! | `nameChars` | member names hold no `.`, space, `$` or control character |
//! | `maxDepth` | objects and arrays nest at most [`MAX_DEPTH`] levels below the section root |
//! | `maxStringLength` | string values are at most [`MAX_STRING_BYTES`] bytes of UTF-8 |
//! | `maxSize` | a section serialises to at most [`MAX_SECTION_BYTES`] (desired, reported) or [`MAX_TAGS_BYTES`] (tags) |
//!
//! Depth counts like IoT Hub's documented example: the section root's members are at depth 1, and an object or
//! array may sit at depth 10 at most, so ten nested objects holding primitives are fine and an eleventh is not.
//! Arrays count as a level, and their elements follow the same rules (IoT Hub has accepted arrays since 2021).
//! A top-level `$version` member of a desired or reported patch is ignored, whatever its value: it is neither
//! checked nor merged, because versions belong to the caller. Everywhere else, and in tags, `$` is refused.

use std::{fmt, io};

use serde_json::{Map, Value};

/// The most bytes the compact JSON of a desired or reported section may take.
pub const MAX_SECTION_BYTES: usize = 32 * 1024;
/// The most bytes the compact JSON of the tags may take.
pub const MAX_TAGS_BYTES: usize = 8 * 1024;
/// The deepest level (section root members = 1) at which an object or array may appear.
pub const MAX_DEPTH: usize = 10;
/// The longest member name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest string value, in bytes of UTF-8.
pub const MAX_STRING_BYTES: usize = 4096;

/// The twin section a patch applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// `properties.desired`, written by the service.
    Desired,
    /// `properties.reported`, written by the device.
    Reported,
    /// `tags`, written by the service.
    Tags,
}

impl Section {
    /// The size limit of the section: [`MAX_SECTION_BYTES`] or [`MAX_TAGS_BYTES`].
    pub fn max_bytes(self) -> usize {
        match self {
            Self::Desired | Self::Reported => MAX_SECTION_BYTES,
            Self::Tags => MAX_TAGS_BYTES,
        }
    }

    /// `desired`, `reported` or `tags`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Desired => "desired",
            Self::Reported => "reported",
            Self::Tags => "tags",
        }
    }

    fn ignores_version(self) -> bool {
        matches!(self, Self::Desired | Self::Reported)
    }
}

/// A broken twin rule at one place of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinDocError {
    /// RFC 6901 JSON pointer of the offending member or value, relative to the section root (`""` = the patch).
    pub pointer: String,
    /// The rule broken: `type`, `emptyName`, `maxNameLength`, `nameChars`, `maxDepth`, `maxStringLength`, `maxSize`.
    pub rule: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for TwinDocError {
    /// `<pointer>: <message>`, with `/` standing for the patch itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "{pointer}: {}", self.message)
    }
}

impl std::error::Error for TwinDocError {}

/// Applies `patch` to `target` as an RFC 7396 JSON merge patch: `null` deletes a member, an object merges
/// recursively (into `{}` if the member was absent or not an object), anything else replaces. Existing members
/// keep their position; new ones are appended in patch order.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (name, value) in patch {
        merge_member(target, name, value);
    }
}

/// The general RFC 7396 `MergePatch(target, patch)`: a non-object patch replaces the target outright.
pub fn merge_patch_value(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                merge_patch(target, patch);
            }
        }
        other => *target = other.clone(),
    }
}

/// One merge patch with the effect of applying `first` and then `second` to any document, when the
/// union of the two has that effect: where both name a member, both values are objects (combined
/// the same way) or equal. `None` when they conflict (a member set twice to different values, or
/// deleted and then set), so that no state the first one reports is skipped. An agent sends the
/// patches it has queued as one when they combine: one twin update instead of several.
pub fn combine_patches(first: &Value, second: &Value) -> Option<Value> {
    let (Value::Object(first), Value::Object(second)) = (first, second) else { return None };
    let mut combined = first.clone();
    for (name, value) in second {
        match combined.get_mut(name) {
            None => {
                combined.insert(name.clone(), value.clone());
            }
            Some(existing) if existing == value => {}
            Some(existing @ Value::Object(_)) if value.is_object() => *existing = combine_patches(existing, value)?,
            Some(_) => return None,
        }
    }
    Some(Value::Object(combined))
}

/// Checks `patch` against the rules of `section` and reports the first broken one in document order.
pub fn validate_patch(patch: &Value, section: Section) -> Result<(), TwinDocError> {
    let Value::Object(members) = patch else {
        return Err(TwinDocError {
            pointer: String::new(),
            rule: "type",
            message: format!("a {} patch must be a JSON object", section.name()),
        });
    };
    for (name, value) in members {
        if section.ignores_version() && name == "$version" {
            continue;
        }
        let pointer = child_pointer("", name);
        check_name(name, &pointer)?;
        check_value(value, 1, &pointer)?;
    }
    Ok(())
}

/// The length of the compact JSON serialisation of `section` without its top-level `$version` and `$metadata`.
pub fn section_size(section: &Map<String, Value>) -> usize {
    let mut size = 2; // the braces
    let mut first = true;
    for (name, value) in section.iter().filter(|(name, _)| !is_metadata(name)) {
        if !first {
            size += 1; // the comma
        }
        first = false;
        size += json_len(name) + 1 + json_len(value); // name, colon, value
    }
    size
}

/// Validates `patch`, merges it into a copy of `current` and checks the result against the section's size limit
/// (rule `maxSize`). `current` is never modified; a top-level `$version` of a desired or reported patch is not
/// merged. The caller bumps versions.
pub fn apply_patch(
    current: &Map<String, Value>,
    patch: &Value,
    section: Section,
) -> Result<Map<String, Value>, TwinDocError> {
    validate_patch(patch, section)?;
    let mut next = current.clone();
    if let Value::Object(members) = patch {
        for (name, value) in members {
            if !(section.ignores_version() && name == "$version") {
                merge_member(&mut next, name, value);
            }
        }
    }
    let size = section_size(&next);
    let limit = section.max_bytes();
    if size > limit {
        return Err(TwinDocError {
            pointer: String::new(),
            rule: "maxSize",
            message: format!("the {} section would take {size} bytes, more than the {limit} allowed", section.name()),
        });
    }
    Ok(next)
}

/// Removes the top-level `$version` and `$metadata` members.
pub fn strip_metadata(section: &mut Map<String, Value>) {
    section.shift_remove("$version");
    section.shift_remove("$metadata");
}

fn merge_member(target: &mut Map<String, Value>, name: &str, value: &Value) {
    match value {
        Value::Null => {
            target.shift_remove(name);
        }
        Value::Object(_) => merge_patch_value(target.entry(name).or_insert(Value::Null), value),
        other => {
            target.insert(name.to_owned(), other.clone());
        }
    }
}

fn is_metadata(name: &str) -> bool {
    name == "$version" || name == "$metadata"
}

fn check_name(name: &str, pointer: &str) -> Result<(), TwinDocError> {
    let error = |rule, message| Err(TwinDocError { pointer: pointer.to_owned(), rule, message });
    if name.is_empty() {
        return error("emptyName", "member names must not be empty".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return error("maxNameLength", format!("member name is {} bytes long, more than {MAX_NAME_BYTES}", name.len()));
    }
    if let Some(c) = name.chars().find(|&c| matches!(c, '.' | ' ' | '$') || c.is_control()) {
        return error("nameChars", format!("member names must not contain {c:?}"));
    }
    Ok(())
}

/// Checks a value found at member depth `depth` (section root members = 1).
fn check_value(value: &Value, depth: usize, pointer: &str) -> Result<(), TwinDocError> {
    let too_deep = || TwinDocError {
        pointer: pointer.to_owned(),
        rule: "maxDepth",
        message: format!("objects and arrays may nest at most {MAX_DEPTH} levels deep"),
    };
    match value {
        Value::String(text) if text.len() > MAX_STRING_BYTES => Err(TwinDocError {
            pointer: pointer.to_owned(),
            rule: "maxStringLength",
            message: format!("string value is {} bytes long, more than {MAX_STRING_BYTES}", text.len()),
        }),
        Value::Object(_) | Value::Array(_) if depth > MAX_DEPTH => Err(too_deep()),
        Value::Object(members) => {
            for (name, child) in members {
                let child_pointer = child_pointer(pointer, name);
                check_name(name, &child_pointer)?;
                check_value(child, depth + 1, &child_pointer)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                check_value(item, depth + 1, &format!("{pointer}/{index}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `parent` extended by member `name`, escaped per RFC 6901.
fn child_pointer(parent: &str, name: &str) -> String {
    let mut pointer = String::with_capacity(parent.len() + name.len() + 1);
    pointer.push_str(parent);
    pointer.push('/');
    for c in name.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
    pointer
}

/// The length of the compact JSON of `value`, counted without building the text.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising a `Value` or a `str` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn section_size_is_the_compact_serialisation_without_metadata() {
        let section = json!({"a": 1, "$version": 4, "b": {"c": "d\u{e9}\n"}, "$metadata": {"x": 1}});
        let Value::Object(map) = section else { unreachable!() };
        let mut stripped = map.clone();
        strip_metadata(&mut stripped);
        let expected = serde_json::to_string(&stripped).unwrap();
        assert_eq!(expected, "{\"a\":1,\"b\":{\"c\":\"d\u{e9}\\n\"}}");
        assert_eq!(section_size(&map), expected.len());
        assert_eq!(section_size(&Map::new()), 2);
    }

    #[test]
    fn combined_patches_have_the_effect_of_both_in_order_or_are_refused() {
        let documents = [json!({}), json!({"a": {"z": 3}, "k": 5}), json!({"a": 1, "b": {"c": [1]}})];
        let pairs = [
            (json!({"a": {"x": 1}, "t": "c"}), json!({"a": {"y": 2}, "t": "c", "b": null})),
            (json!({"k": null}), json!({"k": null, "n": [1, 2]})),
            (json!({"a": {"x": {"deep": 1}}}), json!({"a": {"x": {"deeper": 2}}, "b": {"c": 1}})),
        ];
        for (first, second) in &pairs {
            let combined = combine_patches(first, second).expect("these combine");
            for document in &documents {
                let mut sequential = document.clone();
                merge_patch_value(&mut sequential, first);
                merge_patch_value(&mut sequential, second);
                let mut at_once = document.clone();
                merge_patch_value(&mut at_once, &combined);
                assert_eq!(at_once, sequential, "{first} then {second} on {document}");
            }
        }
        // Set twice to different values, deleted then set, an object then a value: refused.
        for (first, second) in [
            (json!({"state": 6}), json!({"state": 0})),
            (json!({"a": null}), json!({"a": {"x": 1}})),
            (json!({"a": {"x": 1}}), json!({"a": 2})),
            (json!({"a": {"s": {"v": 1}}}), json!({"a": {"s": {"v": 2}}})),
            (json!([1]), json!({"a": 1})),
        ] {
            assert_eq!(combine_patches(&first, &second), None, "{first} and {second}");
        }
    }

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(child_pointer("/a", "b~c/d"), "/a/b~0c~1d");
    }
}
