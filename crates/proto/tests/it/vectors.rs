//! Every signature and root key vector in `fixtures/vectors` gets the verdict and extended
//! result code that `fixtures/vectors/INDEX.md` gives.

use duhub_proto::jws::{self, JwsError};
use duhub_proto::keys::{RsaPublicKey, SignatureAlgorithm};
use duhub_proto::root_key::{self, RootKey, RootKeyPackage};
use duhub_proto::trust::{ManifestSignatureError, TrustStore};
use serde_json::Value;

use crate::support::{json, list, read};

/// The service object inside a desired vector (bare, or under `"service"`).
fn service(name: &str) -> Value {
    let v = json(&format!("vectors/desired/{name}"));
    v.get("service").cloned().unwrap_or(v)
}

fn verify(store: &TrustStore, name: &str) -> Result<String, u32> {
    let s = service(name);
    store
        .verify_update_manifest(s["updateManifest"].as_str(), s["updateManifestSignature"].as_str())
        .map(|signer| format!("{}>{}", signer.root_kid, signer.signing_kid.unwrap_or_default()))
        .map_err(|e| e.extended_result_code().0)
}

#[test]
fn service_signed_manifests_verify_with_production_roots() {
    let store = TrustStore::production();
    for name in [
        "01_v4_valid_startupworkflowdata.json",
        "04_v5_valid_delta-relatedFiles-downloadHandler.json",
        "05_v4_valid_simulator.json",
        "06_v4_valid_id-compare.json",
        "07_v4_valid_rootKeyPackageUrl_no-action.json",
    ] {
        assert_eq!(verify(&store, name), Ok("ADU.200702.R>ADU.210609.R.S".to_owned()), "{name}");
    }
}

#[test]
fn tampered_manifests_fail_with_manifest_validation_failed() {
    let store = TrustStore::production();
    for name in [
        "02_v5_hash-mismatch_adu_core_export_helpers.json",
        "03_v5_hash-mismatch_workflow_reboot_actionbundle.json",
        "08_v5_hash-mismatch_rootKeyPackageUrl_parent.json",
        "13_v4_hash-mismatch_script-filecopy.json",
        "20_azsdkc_v5_service.json",
        "21_azsdkc_v5_service_retryTimestamp.json",
        "22_azsdkc_v5_fileUrls-null-value.json",
        "23_azsdkc_v5_reverse-key-order.json",
    ] {
        assert_eq!(verify(&store, name), Err(0x8030_0001), "{name}");
        let s = service(name);
        let error = store
            .verify_update_manifest(s["updateManifest"].as_str(), s["updateManifestSignature"].as_str())
            .unwrap_err();
        assert!(matches!(error, ManifestSignatureError::HashMismatch { .. }), "{name}: {error:?}");
    }
}

#[test]
fn malformed_signatures_fail_with_bad_structure() {
    let store = TrustStore::production();
    let mut checked = 0;
    for name in list("vectors/desired") {
        if name.starts_with("10_") || name.starts_with("12_") || name.starts_with("14_") || name.starts_with("15_") {
            assert_eq!(verify(&store, &name), Err(0xA020_0002), "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn test_root_manifest_verifies_only_with_test_roots() {
    let name = "09_v1.0_valid_test-root-key_old-manifest.json";
    assert_eq!(verify(&TrustStore::production(), name), Err(0xA020_0006));
    let test_store = TrustStore::new(root_key::test_root_keys());
    assert_eq!(verify(&test_store, name), Ok("ADU.200702.R.T>ADU.210609.R.ST".to_owned()));
}

#[test]
fn without_a_package_the_official_agent_fails_with_invalid_root_kid() {
    let name = "01_v4_valid_startupworkflowdata.json";
    let strict = TrustStore::new(root_key::production_root_keys()).require_package(true);
    assert_eq!(verify(&strict, name), Err(0xA020_0007));
    let lenient = TrustStore::new(root_key::production_root_keys());
    assert!(verify(&lenient, name).is_ok());
}

#[test]
fn cancel_vectors_carry_no_signature() {
    let store = TrustStore::production();
    for name in [
        "24_azsdkc_cancel_nodeployment.json",
        "25_azsdkc_unknown-action.json",
        "26_azsdkc_cancel_fileUrls-null-values.json",
    ] {
        let s = service(name);
        assert_eq!(
            store.verify_update_manifest(s["updateManifest"].as_str(), s["updateManifestSignature"].as_str()),
            Err(ManifestSignatureError::MissingSignature),
            "{name}"
        );
    }
}

#[test]
fn signing_key_of_service_manifests_has_the_documented_spki_hash() {
    let signature =
        service("01_v4_valid_startupworkflowdata.json")["updateManifestSignature"].as_str().unwrap().to_owned();
    let header = jws::decode_json_object(jws::Sections::header_of(&signature).unwrap()).unwrap();
    let info = jws::inspect_sjwk(header["sjwk"].as_str().unwrap()).unwrap();
    assert_eq!(info.root_kid, "ADU.200702.R");
    assert_eq!(info.signing_kid.as_deref(), Some("ADU.210609.R.S"));
    assert_eq!(
        duhub_proto::b64::encode_url(&info.signing_key.spki_sha256()),
        "Y0jA4rDItwp5NIZYPUP8jAQoXIRPSKCDo4xtiWjyvig"
    );
}

#[test]
fn sjwk_vectors() {
    let store = TrustStore::production();
    let valid = store.verify_sjwk(read("vectors/jws/sjwk_valid.jws").trim()).unwrap();
    assert_eq!(valid.root_kid, "ADU.200702.R");
    assert_eq!(valid.signing_kid.as_deref(), Some("ADU.200702.R.S"));
    assert_eq!(store.verify_sjwk(read("vectors/jws/sjwk_bad-structure.jws").trim()), Err(JwsError::BadStructure));
    assert_eq!(
        store.verify_sjwk(read("vectors/jws/sjwk_invalid-signature.jws").trim()),
        Err(JwsError::InvalidSignature)
    );
}

#[test]
fn jws_with_key_vectors() {
    let key = json("vectors/jws/sjwk_signing-key.json");
    let key = RsaPublicKey::from_b64_components(key["n_standard_base64"].as_str().unwrap(), "AQAB").unwrap();
    assert_eq!(key.bits(), 3072);
    assert_eq!(jws::verify_with_key(read("vectors/jws/jws-with-sjwk_valid.jws").trim(), &key), Ok(()));
    assert_eq!(
        jws::verify_with_key(read("vectors/jws/jws-with-sjwk_invalid.jws").trim(), &key),
        Err(JwsError::InvalidSignature)
    );
}

#[test]
fn raw_rs256_vectors() {
    let root = &root_key::production_root_keys()[0];
    assert_eq!(root.kid, "ADU.200702.R");
    let vectors = json("vectors/jws/rs256-raw-vectors.json");
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let signature = duhub_proto::b64::decode_lenient(case["signature_base64url"].as_str().unwrap()).unwrap();
        let valid =
            root.key.verify(SignatureAlgorithm::Rs256, case["signing_input"].as_str().unwrap().as_bytes(), &signature);
        assert_eq!(valid, case["expected"] == "valid");
    }
}

fn test_anchors(file: &str) -> Vec<RootKey> {
    root_key::parse_root_key_list(&read(file)).unwrap()
}

#[test]
fn root_key_package_vectors() {
    let production = root_key::production_root_keys();
    for name in ["prod-rootkeys_compact.json", "prod-rootkeys_pretty.json"] {
        let package = RootKeyPackage::parse(&read(&format!("vectors/rootkeys/{name}"))).unwrap();
        assert_eq!(package.validate(&production), Ok(()), "{name}");
        assert_eq!(package.content.version, 1);
        assert_eq!(package.content.published, 1_675_972_876);
        assert!(!package.content.is_test);
    }
    for name in ["disabledRootKeyProd.json", "disabledSigningKeyProd.json"] {
        let package = RootKeyPackage::parse(&read(&format!("vectors/rootkeys/{name}"))).unwrap();
        assert_eq!(package.validate(&production).unwrap_err().extended_result_code.0, 0x8060_0004, "{name}");
        // Without the first key, the second still finds no signature at its index.
        assert_eq!(package.validate(&production[1..]).unwrap_err().extended_result_code.0, 0x8060_0003, "{name}");
    }
    let disabled_root = RootKeyPackage::parse(&read("vectors/rootkeys/disabledRootKeyProd.json")).unwrap();
    assert_eq!(disabled_root.content.disabled_root_keys, vec!["ADU.200702.R".to_owned()]);
    let disabled_signing = RootKeyPackage::parse(&read("vectors/rootkeys/disabledSigningKeyProd.json")).unwrap();
    assert_eq!(
        duhub_proto::b64::encode_url(&disabled_signing.content.disabled_signing_keys[0].hash),
        "q5xF2ARjhdtH-kaLNTwZAMoXdy0iJQjziQ_AyZWDPRA"
    );

    let unit_test_roots = test_anchors("vectors/rootkeys/ut-test-root-keys.json");
    assert_eq!(unit_test_roots.len(), 2);
    let valid = RootKeyPackage::parse(&read("vectors/rootkeys/ut-validrootkeypackage.json")).unwrap();
    assert_eq!(valid.validate(&unit_test_roots), Ok(()));
    let invalid = RootKeyPackage::parse(&read("vectors/rootkeys/ut-invalidrootkeypackage.json")).unwrap();
    assert_eq!(invalid.validate(&unit_test_roots).unwrap_err().extended_result_code.0, 0x8060_0004);

    // rootkey1 / rootkey2: their own listed keys are the anchors; neither signature verifies.
    for name in ["rootkeypackage_utils-rootkeypackage.json", "rootkeyfiles-rootkey.json"] {
        let package = RootKeyPackage::parse(&read(&format!("vectors/rootkeys/{name}"))).unwrap();
        let own = package.content.root_keys.clone();
        assert_eq!(package.validate(&own).unwrap_err().extended_result_code.0, 0x8060_0004, "{name}");
        assert_eq!(package.validate(&own[1..]).unwrap_err().extended_result_code.0, 0x8060_0004, "{name}");
    }
    // The template is not JSON until filled in.
    assert_eq!(
        RootKeyPackage::parse(&read("vectors/rootkeys/rootkeypackage_template.json"))
            .unwrap_err()
            .extended_result_code
            .0,
        0xA000_0001
    );
}

#[test]
fn hard_coded_root_key_list_matches_the_vector() {
    let listed = test_anchors("vectors/rootkeys/hardcoded-root-keys.json");
    let compiled: Vec<RootKey> =
        root_key::production_root_keys().into_iter().chain(root_key::test_root_keys()).collect();
    assert_eq!(listed, compiled);
    assert!(compiled.iter().all(|k| k.key.bits() == 3072 && k.key.e_u64() == Some(65537)));
}
