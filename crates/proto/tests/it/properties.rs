//! Property tests: any valid import manifest becomes an update manifest that signs and
//! verifies, and changing any single byte of the manifest or of the signature makes
//! verification fail.

use std::sync::OnceLock;

use duhub_proto::import_manifest;
use duhub_proto::jws;
use duhub_proto::keys::{self, SigningKeyPair};
use duhub_proto::root_key::{PackageContent, RootKey};
use duhub_proto::trust::TrustStore;
use duhub_proto::update_manifest::{self, UpdateManifest};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::read;

struct Signer {
    sjwk: String,
    key: SigningKeyPair,
    trust: TrustStore,
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let root = keys::signing_key_from_pem(&read("vectors/rootkeys/test-private-keys/testroot1.pem")).unwrap();
        let key = keys::signing_key_from_pem(&read("vectors/rootkeys/test-private-keys/testroot2.pem")).unwrap();
        let anchors = vec![RootKey { kid: "rootkey1".into(), key: root.public_key().clone() }];
        let package = PackageContent {
            is_test: false,
            version: 1,
            published: 1_700_000_000,
            disabled_root_keys: vec![],
            disabled_signing_keys: vec![],
            root_keys: anchors.clone(),
        }
        .sign(&[("rootkey1", &root)])
        .unwrap();
        let sjwk = jws::create_sjwk(key.public_key(), "signing", "rootkey1", &root);
        Signer { sjwk, key, trust: TrustStore::with_package(anchors, package).unwrap() }
    })
}

fn identifier() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.-]{0,19}"
}

fn version() -> impl Strategy<Value = String> {
    prop::collection::vec(0u32..100_000, 2..=4)
        .prop_map(|parts| parts.iter().map(u32::to_string).collect::<Vec<_>>().join("."))
}

fn compatibility() -> impl Strategy<Value = Value> {
    prop::collection::vec(prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,15}", "[ -~]{1,30}", 1..=5), 1..=3)
        .prop_map(|sets| {
            let mut unique = Vec::new();
            for set in sets {
                if !unique.contains(&set) {
                    unique.push(set);
                }
            }
            Value::Array(unique.into_iter().map(|set| json!(set)).collect())
        })
}

fn handler_properties() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop::collection::btree_map("[a-zA-Z]{1,12}", "[ -~]{0,40}", 0..4).prop_map(|m| json!(m)))
}

prop_compose! {
    fn file()(name in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,39}", size in 1u64..200_000_000, digest in prop::array::uniform32(any::<u8>())) -> Value {
        json!({"filename": name, "sizeInBytes": size, "hashes": {"sha256": duhub_proto::b64::encode_std(&digest)}})
    }
}

prop_compose! {
    /// A valid v4 or v5 import manifest with inline steps over its files.
    fn import_manifest()(
        v5 in any::<bool>(),
        provider in identifier(),
        name in identifier(),
        version in version(),
        compatibility in compatibility(),
        files in prop::collection::vec(file(), 1..=10),
        steps in prop::collection::vec((("[a-z]{1,10}", "[a-z0-9]{1,10}", 1u32..99), handler_properties(), prop::collection::vec(any::<prop::sample::Index>(), 1..=3)), 1..=10),
    ) -> Value {
        let mut files = files;
        let mut seen = std::collections::HashSet::new();
        files.retain(|f| seen.insert(f["filename"].as_str().unwrap_or_default().to_owned()));
        let names: Vec<String> = files.iter().map(|f| f["filename"].as_str().unwrap_or_default().to_owned()).collect();
        let steps: Vec<Value> = steps.into_iter().map(|((vendor, handler, major), properties, picks)| {
            let mut chosen: Vec<String> = Vec::new();
            for pick in picks {
                let name = &names[pick.index(names.len())];
                if !chosen.contains(name) {
                    chosen.push(name.clone());
                }
            }
            let mut step = json!({"handler": format!("{vendor}/{handler}:{major}"), "files": chosen});
            if let Some(p) = properties { step["handlerProperties"] = p; }
            step
        }).collect();
        json!({
            "updateId": {"provider": provider, "name": name, "version": version},
            "compatibility": compatibility,
            "instructions": {"steps": steps},
            "files": files,
            "manifestVersion": if v5 { "5.0" } else { "4.0" },
            "createdDateTime": "2026-11-23T12:00:00Z",
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn valid_import_manifest_generates_signs_and_verifies(manifest in import_manifest(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 8)) {
        prop_assert_eq!(import_manifest::validate(&manifest), vec![]);
        let import = import_manifest::parse(&manifest.to_string()).unwrap();
        let generated = update_manifest::generate(&import, &[], "2026-11-23T12:00:00.0000000Z").unwrap();
        prop_assert_eq!(&generated.manifest.check(), &vec![]);
        // The generated string parses back to the same manifest.
        let UpdateManifest::Full(parsed) = UpdateManifest::parse(&generated.json).unwrap() else { panic!("not full") };
        prop_assert_eq!(&parsed.to_service_json(), &generated.json);

        let s = signer();
        let signature = jws::sign_update_manifest(&generated.json, &s.sjwk, &s.key);
        prop_assert!(s.trust.verify_update_manifest(Some(&generated.json), Some(&signature)).is_ok());

        for (position, replacement) in flips {
            // Change one byte of the manifest (it is ASCII) to another printable character.
            let mut bytes = generated.json.clone().into_bytes();
            let i = position.index(bytes.len());
            let printable: Vec<u8> = (0x20u8..0x7f).filter(|b| *b != bytes[i]).collect();
            bytes[i] = printable[replacement.index(printable.len())];
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(s.trust.verify_update_manifest(Some(&tampered), Some(&signature)).is_err(), "manifest byte {}", i);

            // Change one character of the signature to another base64url character or a dot.
            let mut bytes = signature.clone().into_bytes();
            let i = position.index(bytes.len());
            let alphabet: Vec<u8> = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
                .iter().copied().filter(|b| *b != bytes[i]).collect();
            bytes[i] = alphabet[replacement.index(alphabet.len())];
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(s.trust.verify_update_manifest(Some(&generated.json), Some(&tampered)).is_err(), "signature byte {}", i);
        }
    }
}
