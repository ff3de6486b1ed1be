//! Update manifest: parsing any shape never panics; a full manifest's service JSON parses back
//! to a full manifest whose service JSON is identical (serialisation is idempotent).
#![no_main]

use duhub_proto::update_manifest::{self, UpdateManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The detached/child manifest file reader takes raw bytes.
    let _ = update_manifest::read_manifest_file(data);

    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(manifest) = UpdateManifest::parse(text) else { return };
    let _ = manifest.version_number();
    let _ = manifest.check_supported();
    match &manifest {
        UpdateManifest::Full(m) => {
            let _ = m.check();
            let json = m.to_service_json();
            match UpdateManifest::parse(&json) {
                Ok(UpdateManifest::Full(m2)) => {
                    let json2 = m2.to_service_json();
                    assert_eq!(json2, json, "to_service_json is not idempotent");
                }
                other => panic!("to_service_json output did not parse back as Full: {other:?}\njson: {json}"),
            }
        }
        UpdateManifest::Detached(m) => {
            let _ = m.to_service_json();
        }
        UpdateManifest::Legacy(_) => {}
    }
});
