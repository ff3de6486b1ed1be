//! Import manifest: `parse` never panics, and on valid JSON it accepts exactly the
//! documents `validate` finds no violation in.
#![no_main]

use duhub_proto::import_manifest::{self, ImportManifestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = import_manifest::parse(text);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let violations = import_manifest::validate(&value);
        if violations.is_empty() != parsed.is_ok() {
            let why = match &parsed {
                Ok(_) => "parse accepted".to_owned(),
                Err(ImportManifestError::Model(e)) => format!("Model error: {e}"),
                Err(e) => format!("{e}"),
            };
            panic!(
                "validate() gave {} violation(s) but parse() {}: violations = {:?}",
                violations.len(),
                why,
                violations.iter().map(|v| v.to_string()).collect::<Vec<_>>()
            );
        }
    } else {
        assert!(
            matches!(parsed, Err(ImportManifestError::Syntax { .. })),
            "text that is not JSON was not refused with Syntax"
        );
    }
});
