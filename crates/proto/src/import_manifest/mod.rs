//! The import manifest (v4.0 and v5.0): what an operator writes to import an update.
//!
//! - [`validate`] checks a JSON value against every rule of the SchemaStore schemas for its
//!   `manifestVersion` and the rules the Azure service adds (total size, unique and plain file
//!   names, steps naming existing files, SHA-256 format, ...), and returns all violations.
//! - [`parse`] turns text into the typed [`ImportManifest`], refusing it with every violation.
//! - [`init_v5`] builds a new v5 manifest the way `az iot du update init v5` does.

mod init;
mod model;
mod validate;

pub use init::{
    InitError, InitFile, InitInlineStep, InitOutput, InitReferenceStep, InitRelatedFile, InitRequest, InitStep,
    MICROSOFT_HANDLERS, init_v5,
};
pub use model::{
    DownloadHandler, ImportFile, ImportManifest, Instructions, MAX_TOTAL_SIZE, ManifestVersion, RelatedFile, Step,
    decode_sha256,
};
pub use validate::validate;

use serde::Deserialize;
use serde_json::Value;

use crate::validation::Violation;

/// Why an import manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportManifestError {
    /// The text is not JSON.
    #[error("import manifest is not valid json (line {line}, column {column})")]
    Syntax {
        /// One-based line of the error.
        line: usize,
        /// One-based column of the error.
        column: usize,
        /// What the JSON parser found.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON breaks rules; every violation is listed, in document order.
    #[error("import manifest is invalid: {}", list_violations(.0))]
    Invalid(Vec<Violation>),
    /// The JSON passed validation but does not fit the typed model; a validator defect.
    #[error("import manifest does not fit the model")]
    Model(#[source] serde_json::Error),
}

/// Parses and validates an import manifest.
pub fn parse(text: &str) -> Result<ImportManifest, ImportManifestError> {
    let value: Value = serde_json::from_str(text).map_err(|source| ImportManifestError::Syntax {
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let violations = validate(&value);
    if !violations.is_empty() {
        return Err(ImportManifestError::Invalid(violations));
    }
    ImportManifest::deserialize(&value).map_err(ImportManifestError::Model)
}

impl std::str::FromStr for ImportManifest {
    type Err = ImportManifestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Violations on one line, separated by `; `.
fn list_violations(violations: &[Violation]) -> String {
    let texts: Vec<String> = violations.iter().map(Violation::to_string).collect();
    texts.join("; ")
}
