//! JWS and manifest signature verification: nothing panics on any input.
//!
//! Input: `<manifest>\n<signature>`; without a newline the whole input is the signature and
//! there is no manifest.
#![no_main]

use std::sync::OnceLock;

use duhub_proto::jws::{self, Sections};
use duhub_proto::trust::TrustStore;
use libfuzzer_sys::fuzz_target;

fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(TrustStore::production)
}

fn exercise_compact(text: &str) {
    let _ = Sections::header_of(text);
    if let Ok(sections) = Sections::split(text) {
        let _ = sections.signing_input();
        for section in [sections.header, sections.payload, sections.signature] {
            let _ = jws::decode_json_object(section);
        }
    }
    let _ = jws::inspect_sjwk(text);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (manifest, signature) = match text.split_once('\n') {
        Some((manifest, signature)) => (Some(manifest), signature),
        None => (None, text),
    };
    exercise_compact(signature);
    if let Some(manifest) = manifest {
        exercise_compact(manifest);
    }
    let store = store();
    let _ = store.verify_sjwk(signature);
    let _ = store.verify_update_manifest(manifest, Some(signature));
    let _ = store.verify_update_manifest(manifest, None);
});
