//! Validation findings shared by every format: a JSON pointer, the rule broken and a message.
//!
//! Validators in this crate never stop at the first problem: they return every [`Violation`]
//! they find, in document order, so an operator can fix a manifest in one pass.

use serde::Serialize;
use serde_json::Value;

/// One broken rule at one place of a JSON document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// RFC 6901 JSON pointer of the offending value (`""` is the whole document).
    pub pointer: String,
    /// Short name of the rule: a JSON Schema keyword (`required`, `maxLength`, `pattern`, ...)
    /// or one of the semantic rules (`uniqueFileNames`, `plainFileName`, `totalSize`, ...).
    pub rule: &'static str,
    /// Human-readable explanation that quotes the offending value.
    pub message: String,
    /// The offending value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pointer = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "{pointer}: {} [{}]", self.message, self.rule)
    }
}

/// The JSON type name of a value, for messages (`"a string"`, `"an object"`, ...).
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON pointer under construction; cheap to extend while walking a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    /// The pointer to the whole document.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// This pointer extended by an object member name (escaped per RFC 6901).
    pub fn key(&self, name: &str) -> Self {
        let mut s = String::with_capacity(self.0.len() + name.len() + 1);
        s.push_str(&self.0);
        s.push('/');
        for c in name.chars() {
            match c {
                '~' => s.push_str("~0"),
                '/' => s.push_str("~1"),
                c => s.push(c),
            }
        }
        Self(s)
    }

    /// This pointer extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}/{index}", self.0))
    }

    /// The pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Collects violations while a validator walks a document.
#[derive(Debug, Default)]
pub struct Report {
    violations: Vec<Violation>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation at `pointer`.
    pub fn push(&mut self, pointer: &Pointer, rule: &'static str, message: impl Into<String>, value: Option<&Value>) {
        self.violations.push(Violation {
            pointer: pointer.as_str().to_owned(),
            rule,
            message: message.into(),
            value: value.cloned(),
        });
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations in the order they were found.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tilde_and_slash() {
        let p = Pointer::root().key("files").index(2).key("a/b~c");
        assert_eq!(p.as_str(), "/files/2/a~1b~0c");
    }

    #[test]
    fn violation_display_names_pointer_and_rule() {
        let mut r = Report::new();
        r.push(&Pointer::root(), "required", "missing member \"updateId\"", None);
        let v = r.into_violations();
        assert_eq!(v[0].to_string(), "/: missing member \"updateId\" [required]");
    }
}
