//! Update manifests: every vector parses, service-signed ones round-trip byte for byte, child
//! manifest files are reproduced exactly, SchemaStore samples get their verdicts.

use duhub_proto::b64;
use duhub_proto::update_manifest::{self, Step, UpdateManifest};

use crate::support::{json, list, read};

fn service_manifest(name: &str) -> String {
    let v = json(&format!("vectors/desired/{name}"));
    let service = v.get("service").cloned().unwrap_or(v);
    service["updateManifest"].as_str().unwrap().to_owned()
}

const SERVICE_SIGNED: [&str; 5] = [
    "01_v4_valid_startupworkflowdata.json",
    "04_v5_valid_delta-relatedFiles-downloadHandler.json",
    "05_v4_valid_simulator.json",
    "06_v4_valid_id-compare.json",
    "07_v4_valid_rootKeyPackageUrl_no-action.json",
];

#[test]
fn service_signed_manifests_round_trip_byte_for_byte() {
    for name in SERVICE_SIGNED.iter().copied().chain(["11_child-update-manifest-only_v4.json"]) {
        let text = service_manifest(name);
        let UpdateManifest::Full(manifest) = UpdateManifest::parse(&text).unwrap() else {
            panic!("{name} is not full")
        };
        assert_eq!(manifest.to_service_json(), text, "{name}");
        assert_eq!(manifest.check(), vec![], "{name}");
        assert!(manifest.files.keys().all(|id| update_manifest::is_service_file_id(id)), "{name}");
    }
}

#[test]
fn v4_manifest_with_reference_step() {
    let UpdateManifest::Full(m) = UpdateManifest::parse(&service_manifest(SERVICE_SIGNED[0])).unwrap() else {
        panic!()
    };
    assert_eq!(m.manifest_version, "4");
    assert_eq!(m.update_id.to_string(), "Contoso/Virtual-Vacuum/20.0");
    assert_eq!(m.steps.len(), 2);
    let Step::Inline(apt) = &m.steps[0] else { panic!() };
    assert_eq!(apt.handler, "microsoft/apt:1");
    assert_eq!(apt.installed_criteria(), Some("apt-update-tree-1.0"));
    let Step::Reference(child) = &m.steps[1] else { panic!() };
    assert_eq!(child.detached_manifest_file_id, "f222b9ffefaaac577");
    assert_eq!(m.file("f222b9ffefaaac577").unwrap().size_in_bytes, 1031);
}

#[test]
fn child_manifest_file_is_the_compact_wrapper_the_parent_hashes() {
    let UpdateManifest::Full(parent) = UpdateManifest::parse(&service_manifest(SERVICE_SIGNED[0])).unwrap() else {
        panic!()
    };
    let child_file = parent.file("f222b9ffefaaac577").unwrap();
    let content = update_manifest::manifest_file_content(&service_manifest("11_child-update-manifest-only_v4.json"));
    assert_eq!(content.len() as u64, child_file.size_in_bytes);
    assert_eq!(b64::sha256_std(&content), child_file.sha256().unwrap());
    assert_eq!(
        update_manifest::read_manifest_file(&content).unwrap(),
        service_manifest("11_child-update-manifest-only_v4.json")
    );
    let UpdateManifest::Full(child) =
        UpdateManifest::parse(&service_manifest("11_child-update-manifest-only_v4.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(update_manifest::manifest_file_name(&child.update_id), child_file.file_name);
}

#[test]
fn v5_related_files_and_download_handler() {
    let UpdateManifest::Full(m) = UpdateManifest::parse(&service_manifest(SERVICE_SIGNED[1])).unwrap() else {
        panic!()
    };
    let file = m.file("f54d16eca3561a1e0").unwrap();
    assert_eq!(file.download_handler.as_deref(), Some("microsoft/delta:1"));
    assert_eq!(file.related_files.len(), 1);
    assert_eq!(file.related_files[0].id.as_deref(), Some("f512477968fd69644"));
    assert_eq!(file.related_files[0].properties.as_ref().unwrap()["microsoft.sourceFileHashAlgorithm"], "sha256");
    let Step::Inline(step) = &m.steps[0] else { panic!() };
    assert_eq!(step.installed_criteria(), Some("0.2.0"), "InstalledCriteria with a capital I");
}

#[test]
fn every_manifest_vector_parses() {
    let mut parsed = 0;
    for name in list("vectors/update-manifests") {
        let text = read(&format!("vectors/update-manifests/{name}"));
        let manifest = UpdateManifest::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let supported = manifest.check_supported().is_ok();
        assert_eq!(supported, name != "v1.0_legacy.json", "{name}");
        parsed += 1;
    }
    assert_eq!(parsed, 11);
    for name in list("vectors/desired") {
        let v = json(&format!("vectors/desired/{name}"));
        let service = v.get("service").cloned().unwrap_or(v);
        let Some(text) = service["updateManifest"].as_str() else { continue };
        if text == "UPDATE_MANIFEST" {
            continue; // templates
        }
        if name.ends_with("manifest_missing_version.json") {
            assert_eq!(UpdateManifest::parse(text).unwrap_err().extended_result_code.0, 0x8030_000A);
            continue;
        }
        let manifest = UpdateManifest::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_version = match name.as_str() {
            n if n.starts_with("09_") || n.ends_with("manifest_1_0.json") => 1,
            n if n.ends_with("manifest_2_0.json") || n.ends_with("manifest_2.json") => 2,
            n if n.ends_with("manifest_3.json") => 3,
            n if n.ends_with("manifest_x.json") || n.ends_with("manifest_empty.json") => 0,
            _ => manifest.version_number(),
        };
        assert_eq!(manifest.version_number(), expected_version, "{name}");
    }
}

#[test]
fn missing_manifest_version_is_unsupported() {
    let text = service_manifest("12_manifest-version-parsing_manifest_missing_version.json");
    assert_eq!(UpdateManifest::parse(&text).unwrap_err().extended_result_code.0, 0x8030_000A);
    let legacy = UpdateManifest::parse(&service_manifest("09_v1.0_valid_test-root-key_old-manifest.json")).unwrap();
    assert!(matches!(legacy, UpdateManifest::Legacy(_)));
    assert_eq!(legacy.check_supported().unwrap_err().extended_result_code.0, 0x8030_000A);
}

#[test]
fn embedded_sdk_vector_with_unknown_file_ids_parses_but_does_not_check() {
    let text = read("vectors/update-manifests/azsdkc_adu_request_manifest_too_many_file_ids.json");
    let UpdateManifest::Full(m) = UpdateManifest::parse(&text).unwrap() else { panic!() };
    let rules: Vec<(String, &str)> = m.check().into_iter().map(|v| (v.pointer, v.rule)).collect();
    assert_eq!(
        rules,
        vec![
            ("/instructions/steps/0/files/1".to_owned(), "fileExists"),
            ("/instructions/steps/0/files/2".to_owned(), "fileExists"),
            ("/instructions/steps/0/files/3".to_owned(), "fileExists"),
        ]
    );
}

#[test]
fn schemastore_update_manifest_samples() {
    for dir in ["azure-deviceupdate-update-manifest-4", "azure-deviceupdate-update-manifest-5"] {
        for name in list(&format!("schemastore/test/{dir}")) {
            let text = read(&format!("schemastore/test/{dir}/{name}"));
            let manifest = UpdateManifest::parse(&text).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
            match manifest {
                UpdateManifest::Full(m) => assert_eq!(m.check(), vec![], "{dir}/{name}"),
                UpdateManifest::Detached(d) => assert_eq!(d.detached_manifest_file_id, "fileId1"),
                UpdateManifest::Legacy(_) => panic!("{dir}/{name} is not legacy"),
            }
        }
    }
    let refused = |name: &str| {
        UpdateManifest::parse(&read(&format!("schemastore/negative_test/azure-deviceupdate-update-manifest-4/{name}")))
            .unwrap_err()
    };
    let e = refused("invalidreferencestep-full-updatemanifest.json");
    assert_eq!(e.pointer, "/instructions/steps/1/detachedManifestFileId");
    let e = refused("toomanyfiles-mini-updatemanifest.json");
    assert_eq!((e.pointer.as_str(), e.extended_result_code.0), ("/files", 0x8030_000C));
}

#[test]
fn detaching_keeps_the_full_manifest_in_a_hashed_file() {
    let UpdateManifest::Full(full) = UpdateManifest::parse(&service_manifest(SERVICE_SIGNED[0])).unwrap() else {
        panic!()
    };
    let detached = update_manifest::detach(&full);
    assert_eq!(detached.manifest.file.file_name, "contoso.virtual-vacuum.20.0.updatemanifest.json");
    let UpdateManifest::Detached(mini) = UpdateManifest::parse(&detached.json).unwrap() else { panic!() };
    assert_eq!(mini, detached.manifest);
    assert_eq!(mini.file.sha256().unwrap(), b64::sha256_std(&detached.file_content));
    assert_eq!(update_manifest::read_manifest_file(&detached.file_content).unwrap(), full.to_service_json());
    assert!(detached.json.starts_with(r#"{"manifestVersion":"4","updateId":{"provider":"Contoso","name":"Virtual-Vacuum","version":"20.0"},"detachedManifestFileId":"f"#));
}

#[test]
fn malformed_manifests_are_errors_not_panics() {
    for text in [
        "",
        "[]",
        "{}",
        r#"{"manifestVersion":4}"#,
        r#"{"manifestVersion":"4","updateId":{}}"#,
        r#"{"manifestVersion":"4","updateId":{"provider":"a","name":"b","version":"1.0"},"compatibility":[],"instructions":{"steps":[{"type":"weird"}]},"files":{},"createdDateTime":"x"}"#,
        r#"{"manifestVersion":"4","updateId":{"provider":"a","name":"b","version":"1.0"},"compatibility":[],"instructions":{"steps":[]},"files":{"f":{"fileName":"a","sizeInBytes":-1,"hashes":{"sha256":"x"}}},"createdDateTime":"x"}"#,
        r#"{"manifestVersion":"4","updateId":{"provider":"a","name":"b","version":"1.0"},"detachedManifestFileId":"x","files":{"y":{"fileName":"a","sizeInBytes":1,"hashes":{"sha256":"x"}}}}"#,
    ] {
        assert!(UpdateManifest::parse(text).is_err(), "{text}");
    }
}

#[test]
fn manifests_too_large_for_a_twin_are_detached() {
    let UpdateManifest::Full(mut full) = UpdateManifest::parse(&service_manifest(SERVICE_SIGNED[0])).unwrap() else {
        panic!()
    };
    let update_manifest::TwinManifest::Inline(inline) = update_manifest::for_twin(&full) else { panic!("small") };
    assert_eq!(inline, service_manifest(SERVICE_SIGNED[0]));
    let Step::Inline(step) = &mut full.steps[0] else { panic!() };
    step.handler_properties.as_mut().unwrap().insert("arguments".into(), "x".repeat(5000).into());
    let twin = update_manifest::for_twin(&full);
    let update_manifest::TwinManifest::Detached(detached) = &twin else { panic!("large") };
    assert!(twin.json().len() <= update_manifest::MAX_INLINE_MANIFEST_BYTES);
    assert_eq!(update_manifest::read_manifest_file(&detached.file_content).unwrap(), full.to_service_json());
}
