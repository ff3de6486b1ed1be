//! Helpers shared by the integration tests: fixture paths and loading.

use std::path::PathBuf;

/// Path of a file under `tests/fixtures/`.
pub(crate) fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// Text of a file under `tests/fixtures/`.
pub(crate) fn read(relative: &str) -> String {
    std::fs::read_to_string(fixture(relative)).unwrap_or_else(|e| panic!("reading fixture {relative}: {e}"))
}

/// JSON of a file under `tests/fixtures/`.
pub(crate) fn json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative)).unwrap_or_else(|e| panic!("parsing fixture {relative}: {e}"))
}

/// Names of the files in a fixture directory, sorted.
pub(crate) fn list(relative_dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture(relative_dir))
        .unwrap_or_else(|e| panic!("listing {relative_dir}: {e}"))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
