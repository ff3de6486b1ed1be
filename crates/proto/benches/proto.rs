//! Micro-benchmarks of the hot paths: validating an import manifest, generating and signing an
//! update manifest, and verifying a service-signed manifest as an agent does.
//!
//! Run with `cargo bench -p duhub-proto --features signer`.

use criterion::{Criterion, criterion_group, criterion_main};
use duhub_proto::import_manifest;
use duhub_proto::jws;
use duhub_proto::keys;
use duhub_proto::root_key::RootKeyPackage;
use duhub_proto::trust::TrustStore;
use duhub_proto::update_manifest::{self, UpdateManifest};
use std::hint::black_box;

fn fixture(relative: &str) -> String {
    let path = format!("{}/tests/fixtures/{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A typical import manifest: two inline steps over three files, v5.
const TYPICAL_IMPORT_MANIFEST: &str = r#"{
  "updateId": {"provider": "Contoso", "name": "Toaster", "version": "1.2.3"},
  "description": "Toaster firmware with a pre-install script",
  "compatibility": [{"manufacturer": "Contoso", "model": "Toaster"}, {"manufacturer": "Contoso", "model": "Toaster-XL"}],
  "instructions": {"steps": [
    {"handler": "microsoft/script:1", "files": ["pre-install.sh"], "handlerProperties": {"scriptFileName": "pre-install.sh", "arguments": "--check-space 200M", "installedCriteria": "1.2.3"}},
    {"type": "inline", "handler": "microsoft/swupdate:2", "files": ["install.sh", "toaster-1.2.3.swu"], "handlerProperties": {"scriptFileName": "install.sh", "arguments": "--swu-file toaster-1.2.3.swu", "installedCriteria": "1.2.3"}}
  ]},
  "files": [
    {"filename": "pre-install.sh", "sizeInBytes": 1834, "hashes": {"sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}},
    {"filename": "install.sh", "sizeInBytes": 7558, "hashes": {"sha256": "mcB5SexMU4JOOzqmlJqKbue9qMskWY3EI/iVjJxCtAs="}},
    {"filename": "toaster-1.2.3.swu", "sizeInBytes": 104857600, "hashes": {"sha256": "/CD7Sn6fiknWa3NgcFjGlJ+ccA81s1QAXX4oo5GHiFA="}}
  ],
  "manifestVersion": "5.0",
  "createdDateTime": "2026-11-23T12:00:00Z"
}"#;

fn benches(c: &mut Criterion) {
    let value: serde_json::Value = serde_json::from_str(TYPICAL_IMPORT_MANIFEST).expect("benchmark manifest is JSON");
    assert!(import_manifest::validate(&value).is_empty(), "benchmark manifest must be valid");
    c.bench_function("import_manifest/validate_typical", |b| {
        b.iter(|| import_manifest::validate(black_box(&value)));
    });
    c.bench_function("import_manifest/parse_and_validate_typical", |b| {
        b.iter(|| import_manifest::parse(black_box(TYPICAL_IMPORT_MANIFEST)));
    });

    let import = import_manifest::parse(TYPICAL_IMPORT_MANIFEST).expect("valid");
    let root = keys::generate_rsa(3072).expect("root key");
    let signing = keys::generate_rsa(3072).expect("signing key");
    let sjwk = jws::create_sjwk(signing.pair.public_key(), "signing", "root", &root.pair);
    c.bench_function("update_manifest/generate_and_sign_rsa3072", |b| {
        b.iter(|| {
            let generated =
                update_manifest::generate(black_box(&import), &[], "2026-11-23T12:00:00.0000000Z").expect("generates");
            jws::sign_update_manifest(&generated.json, &sjwk, &signing.pair)
        });
    });

    let desired: serde_json::Value =
        serde_json::from_str(&fixture("vectors/desired/01_v4_valid_startupworkflowdata.json")).expect("fixture");
    let manifest = desired["updateManifest"].as_str().expect("manifest").to_owned();
    let signature = desired["updateManifestSignature"].as_str().expect("signature").to_owned();
    let store = TrustStore::production();
    assert!(store.verify_update_manifest(Some(&manifest), Some(&signature)).is_ok());
    c.bench_function("trust/verify_service_signed_desired_01", |b| {
        b.iter(|| store.verify_update_manifest(Some(black_box(&manifest)), Some(black_box(&signature))));
    });
    c.bench_function("update_manifest/parse_desired_01", |b| {
        b.iter(|| UpdateManifest::parse(black_box(&manifest)));
    });
    let package_text = fixture("vectors/rootkeys/prod-rootkeys_pretty.json");
    let anchors = duhub_proto::root_key::production_root_keys();
    c.bench_function("root_key/parse_and_validate_production_package", |b| {
        b.iter(|| RootKeyPackage::parse(black_box(&package_text)).map(|p| p.validate(&anchors)));
    });
}

criterion_group!(proto, benches);
criterion_main!(proto);
