//! The identity of an update: provider, name and version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validation::{Pointer, Report, json_type_name as kind};

/// Unique update identifier. Serialises with members in the order the Azure service uses
/// (`provider`, `name`, `version`), which is also the `installedUpdateId` string format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateId {
    /// Entity responsible for the update, e.g. a company name.
    pub provider: String,
    /// Class of update, e.g. a device model.
    pub name: String,
    /// Two to four dot-separated numbers.
    pub version: String,
}

impl UpdateId {
    /// Builds an update id from its parts (no validation; see [`validate_update_id`]).
    pub fn new(provider: impl Into<String>, name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { provider: provider.into(), name: name.into(), version: version.into() }
    }

    /// The compact JSON string agents report as `installedUpdateId`:
    /// `{"provider":"…","name":"…","version":"…"}`.
    pub fn to_installed_update_id(&self) -> String {
        // Invariant: serialising a struct of three strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an `installedUpdateId` string as reported by agents.
    pub fn from_installed_update_id(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

impl std::fmt::Display for UpdateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.provider, self.name, self.version)
    }
}

/// Largest value of one version part.
pub const MAX_VERSION_PART: u64 = 2_147_483_647;

/// Whether `s` matches `^[a-zA-Z0-9.-]+$` (provider and name).
pub fn is_provider_or_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Whether `s` matches the schema pattern `^\d+(?:\.\d+)+$`.
pub fn is_version_pattern(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Validates a JSON value as an `updateId` object: the schema rules (exactly `provider`,
/// `name`, `version`; lengths and patterns) and the service rules on versions (two to four
/// parts, each at most 2147483647).
pub fn validate_update_id(value: &Value, at: &Pointer, report: &mut Report) {
    let Some(object) = value.as_object() else {
        report.push(at, "type", format!("updateId must be an object, found {}", kind(value)), Some(value));
        return;
    };
    for (key, member) in object {
        if !matches!(key.as_str(), "provider" | "name" | "version") {
            report.push(
                &at.key(key),
                "additionalProperties",
                format!("unknown member \"{key}\" (allowed: provider, name, version)"),
                Some(member),
            );
        }
    }
    for field in ["provider", "name"] {
        let ptr = at.key(field);
        match object.get(field) {
            None => report.push(at, "required", format!("missing member \"{field}\""), None),
            Some(Value::String(s)) => {
                let len = s.chars().count();
                if len == 0 {
                    report.push(&ptr, "minLength", format!("{field} must not be empty"), Some(&object[field]));
                } else if len > 64 {
                    report.push(
                        &ptr,
                        "maxLength",
                        format!("{field} \"{s}\" is {len} characters long (at most 64)"),
                        Some(&object[field]),
                    );
                }
                if len > 0 && !is_provider_or_name(s) {
                    report.push(
                        &ptr,
                        "pattern",
                        format!("{field} \"{s}\" may only contain letters, digits, '.' and '-'"),
                        Some(&object[field]),
                    );
                }
            }
            Some(other) => {
                report.push(&ptr, "type", format!("{field} must be a string, found {}", kind(other)), Some(other))
            }
        }
    }
    let ptr = at.key("version");
    match object.get("version") {
        None => report.push(at, "required", "missing member \"version\"", None),
        Some(v @ Value::String(s)) => {
            if !is_version_pattern(s) {
                report.push(
                    &ptr,
                    "pattern",
                    format!("version \"{s}\" must be dot-separated numbers such as \"1.0\" or \"2021.11.8\""),
                    Some(v),
                );
            } else {
                let parts: Vec<&str> = s.split('.').collect();
                if parts.len() > 4 {
                    report.push(
                        &ptr,
                        "versionParts",
                        format!("version \"{s}\" has {} parts (two to four allowed)", parts.len()),
                        Some(v),
                    );
                }
                if parts.iter().any(|p| {
                    p.trim_start_matches('0').len() > 10 || p.parse::<u64>().map_or(true, |n| n > MAX_VERSION_PART)
                }) {
                    report.push(
                        &ptr,
                        "versionRange",
                        format!("version \"{s}\" has a part above {MAX_VERSION_PART}"),
                        Some(v),
                    );
                }
            }
        }
        Some(other) => {
            report.push(&ptr, "type", format!("version must be a string, found {}", kind(other)), Some(other))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<&'static str> {
        let mut r = Report::new();
        validate_update_id(&v, &Pointer::root().key("updateId"), &mut r);
        r.into_violations().into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn installed_update_id_has_service_member_order() {
        let id = UpdateId::new("Contoso", "Toaster", "1.0");
        assert_eq!(id.to_installed_update_id(), r#"{"provider":"Contoso","name":"Toaster","version":"1.0"}"#);
        assert_eq!(UpdateId::from_installed_update_id(&id.to_installed_update_id()), Some(id));
    }

    #[test]
    fn valid_and_invalid_ids() {
        assert!(rules(json!({"provider":"Contoso","name":"Toaster","version":"1.0"})).is_empty());
        assert_eq!(rules(json!({"provider":"Con toso","name":"T","version":"1"})), vec!["pattern", "pattern"]);
        assert_eq!(rules(json!({"provider":"a","name":"b","version":"1.2.3.4.5"})), vec!["versionParts"]);
        assert_eq!(rules(json!({"provider":"a","name":"b","version":"1.2147483648"})), vec!["versionRange"]);
        assert_eq!(rules(json!({"provider":"a","name":"b"})), vec!["required"]);
        assert_eq!(rules(json!({"provider":"a","name":"b","version":"1.0","x":1})), vec!["additionalProperties"]);
        assert_eq!(rules(json!({"provider":"a".repeat(65),"name":"b","version":"1.0"})), vec!["maxLength"]);
    }
}
