//! Root key packages and root key lists: nothing panics; a parsed package written with
//! `to_json` parses again with the same signed bytes; any JSON value serialises the parson way.
#![no_main]

use std::sync::OnceLock;

use duhub_proto::root_key::{self, RootKey, RootKeyPackage};
use libfuzzer_sys::fuzz_target;

fn anchors() -> &'static [RootKey] {
    static ANCHORS: OnceLock<Vec<RootKey>> = OnceLock::new();
    ANCHORS.get_or_init(root_key::production_root_keys)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(pkg) = RootKeyPackage::parse(text) {
        let _ = pkg.validate(anchors());
        let json = pkg.to_json();
        match RootKeyPackage::parse(&json) {
            Ok(again) => assert_eq!(
                again.signed_bytes(),
                pkg.signed_bytes(),
                "signed bytes changed through to_json/parse"
            ),
            Err(e) => panic!("to_json output did not parse: {e}\njson: {json}"),
        }
    }
    let _ = root_key::parse_root_key_list(text);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = duhub_proto::json::to_parson_string(&value);
    }
});
