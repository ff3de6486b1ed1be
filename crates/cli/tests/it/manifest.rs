//! `duhub manifest sign|verify`.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::{
    assert_help, duhub, fixture, fixture_json, init_key_store, json_error, json_of, run_json, shared_keys, temp_dir,
    toaster_import_manifest, write_file,
};

const VECTOR_01: &str = "vectors/desired/01_v4_valid_startupworkflowdata.json";

/// The `updateManifest` string of a desired-twin vector.
fn vector_update_manifest(vector: &str) -> String {
    fixture_json(vector)["updateManifest"].as_str().unwrap().to_owned()
}

/// Signs `manifest` with the key store `keys`, checks the output's shape and returns it.
fn sign(manifest: &Path, keys: &Path) -> Value {
    let assert = duhub().args(["manifest", "sign", "--manifest"]).arg(manifest).arg("--keys").arg(keys).assert();
    let signed = json_of(&assert.success().stderr("").get_output().stdout);
    let object = signed.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["updateManifest", "updateManifestSignature"]);
    let signature = signed["updateManifestSignature"].as_str().unwrap();
    assert_eq!(signature.split('.').count(), 3, "a compact JWS: {signature}");
    signed
}

/// Writes the vector 01 update manifest (its exact service string) to `dir/um.json`.
fn write_vector_01_manifest(dir: &Path) -> PathBuf {
    write_file(dir, "um.json", vector_update_manifest(VECTOR_01).as_bytes())
}

/// Runs `manifest verify <file> --json` with `trust` options and checks the exit code matches
/// the verdict; returns (valid, extendedResultCode).
fn verify(file: &Path, trust: &[&std::ffi::OsStr]) -> (bool, Option<String>) {
    let mut command = duhub();
    command.args(["manifest", "verify", "--json"]).arg(file).args(trust);
    let output = command.output().unwrap();
    let verdict = json_of(&output.stdout);
    let object = verdict.as_object().unwrap_or_else(|| panic!("{verdict}"));
    assert_eq!(object.keys().collect::<Vec<_>>(), ["valid", "extendedResultCode", "detail"], "{verdict}");
    let valid = verdict["valid"].as_bool().unwrap();
    let code = verdict["extendedResultCode"].as_str().map(str::to_owned);
    assert_eq!(valid, code.is_none(), "a code exactly when invalid: {verdict}");
    assert!(!verdict["detail"].as_str().unwrap().is_empty());
    assert_eq!(output.status.code(), Some(if valid { 0 } else { 1 }), "{}: {verdict}", file.display());
    (valid, code)
}

fn keys_trust(dir: &Path) -> [&std::ffi::OsStr; 2] {
    ["--keys".as_ref(), dir.as_os_str()]
}

fn valid() -> (bool, Option<String>) {
    (true, None)
}

fn invalid(code: &str) -> (bool, Option<String>) {
    (false, Some(code.to_owned()))
}

#[test]
fn help_of_every_manifest_command_lists_its_options() {
    assert_help(&["manifest"], &["sign", "verify"]);
    assert_help(&["manifest", "sign"], &["--manifest <FILE>", "--keys <DIR>", "--json"]);
    assert_help(
        &["manifest", "verify"],
        &["<FILE>", "--root-keys <PACKAGE>", "--root-key <FILE>", "--keys <DIR>", "--test-roots", "--json"],
    );
}

// ---- sign ----

#[test]
fn sign_an_import_manifest_without_reference_steps() {
    let keys = shared_keys();
    let tmp = temp_dir();
    let import = toaster_import_manifest(tmp.path());
    let signed = sign(&import, &keys.dir());
    let manifest: Value = serde_json::from_str(signed["updateManifest"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["manifestVersion"], json!("5"));
    assert_eq!(manifest["updateId"], json!({ "provider": "Contoso", "name": "Toaster", "version": "1.0" }));
    assert_eq!(manifest["compatibility"], json!([{ "manufacturer": "Contoso", "model": "Toaster" }]));
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), 1);
    let (file_id, file) = files.iter().next().unwrap();
    assert_eq!(file["fileName"], json!("fw.swu"));
    assert_eq!(file["sizeInBytes"], json!(8));
    // sha256("firmware"), computed with sha256sum.
    assert_eq!(file["hashes"], json!({ "sha256": "w79H6h9KSmBUcDE8rLOkT0pGH2jG+uqwfnN2EMtayDU=" }));
    assert_eq!(
        manifest["instructions"],
        json!({ "steps": [{
            "handler": "microsoft/swupdate:1",
            "files": [file_id],
            "handlerProperties": { "installedCriteria": "1.0" }
        }] })
    );

    let out = write_file(tmp.path(), "signed.json", signed.to_string().as_bytes());
    let detail = format!(
        "update Contoso/Toaster/1.0 (manifest version 5) signed by signing key {} certified by root key {}",
        keys.init["currentSigningKey"].as_str().unwrap(),
        keys.init["rootKeys"][0]["kid"].as_str().unwrap()
    );
    assert_eq!(
        run_json(duhub().args(["manifest", "verify", "--json"]).arg(&out).arg("--keys").arg(keys.dir()), 0),
        json!({ "valid": true, "extendedResultCode": null, "detail": detail })
    );
    duhub()
        .args(["manifest", "verify"])
        .arg(&out)
        .arg("--keys")
        .arg(keys.dir())
        .assert()
        .success()
        .stderr("")
        .stdout(format!("valid: {detail}\n"));
}

#[test]
fn sign_an_update_manifest_keeps_the_service_serialisation() {
    let keys = shared_keys();
    let tmp = temp_dir();
    let signed = sign(&write_vector_01_manifest(tmp.path()), &keys.dir());
    assert_eq!(signed["updateManifest"].as_str().unwrap(), vector_update_manifest(VECTOR_01), "byte for byte");
    let out = write_file(tmp.path(), "signed.json", serde_json::to_string_pretty(&signed).unwrap().as_bytes());

    assert_eq!(verify(&out, &keys_trust(&keys.dir())), valid());
    // The same, as a desired twin's deviceUpdate component.
    let twin = json!({ "deviceUpdate": { "__t": "c", "service": signed } });
    let twin_path = write_file(tmp.path(), "twin.json", twin.to_string().as_bytes());
    assert_eq!(verify(&twin_path, &keys_trust(&keys.dir())), valid());

    // Microsoft's production roots (the default) and test roots do not know this root.
    assert_eq!(verify(&out, &[]), invalid("0xA0200006"));
    assert_eq!(verify(&out, &["--test-roots".as_ref()]), invalid("0xA0200006"));

    // --root-keys PACKAGE --root-key ROOTS is what --keys DIR stands for.
    let package = keys.dir().join("rootkeypackage.json");
    let roots = keys.dir().join("rootkeys.json");
    let explicit = ["--root-keys".as_ref(), package.as_os_str(), "--root-key".as_ref(), roots.as_os_str()];
    assert_eq!(verify(&out, &explicit), valid());

    // A package without trust anchors is a usage error.
    let message = json_error(duhub().args(["manifest", "verify", "--json"]).arg(&out).arg("--root-keys").arg(&package));
    assert_eq!(message, "--root-keys needs the trusted root public keys: give --root-key FILE or --keys DIR");
    // A package the anchors did not sign is refused.
    let other = fixture("vectors/rootkeys/prod-rootkeys_compact.json");
    duhub()
        .args(["manifest", "verify"])
        .arg(&out)
        .arg("--root-keys")
        .arg(&other)
        .arg("--root-key")
        .arg(&roots)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("is not signed by the given root keys"));
}

#[test]
fn sign_normalises_pretty_update_manifests_to_the_service_string() {
    let keys = shared_keys();
    for (pretty, vector) in [
        ("vectors/update-manifests/v4_apt-plus-reference-step.json", VECTOR_01),
        (
            "vectors/update-manifests/v5_delta-relatedFiles.json",
            "vectors/desired/04_v5_valid_delta-relatedFiles-downloadHandler.json",
        ),
        (
            "vectors/update-manifests/v4_child_contoso-virtual-motors.json",
            "vectors/desired/11_child-update-manifest-only_v4.json",
        ),
    ] {
        let signed = sign(&fixture(pretty), &keys.dir());
        assert_eq!(signed["updateManifest"].as_str().unwrap(), vector_update_manifest(vector), "{pretty}");
    }
}

#[test]
fn sign_refuses_what_it_cannot_sign() {
    let keys = shared_keys();
    let tmp = temp_dir();
    // An import manifest with a reference step (the az example).
    duhub()
        .args(["manifest", "sign", "--manifest"])
        .arg(fixture("example-import-manifest-v5.generated-by-az-cli.json"))
        .arg("--keys")
        .arg(keys.dir())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("an import manifest with reference steps must be imported into a server"));
    // A legacy v1.0 update manifest.
    let legacy = write_file(
        tmp.path(),
        "legacy.json",
        vector_update_manifest("vectors/desired/09_v1.0_valid_test-root-key_old-manifest.json").as_bytes(),
    );
    duhub()
        .args(["manifest", "sign", "--manifest"])
        .arg(&legacy)
        .arg("--keys")
        .arg(keys.dir())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("manifest version 1.0 is a legacy format that current agents refuse"));
    // Not JSON; a missing file; a missing key store.
    let broken = write_file(tmp.path(), "broken.json", b"{");
    duhub()
        .args(["manifest", "sign", "--manifest"])
        .arg(&broken)
        .arg("--keys")
        .arg(keys.dir())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("the manifest is not JSON"));
    let message = json_error(
        duhub()
            .args(["manifest", "sign", "--json", "--manifest"])
            .arg(tmp.path().join("missing.json"))
            .arg("--keys")
            .arg(keys.dir()),
    );
    assert!(message.starts_with(&format!("reading {}: ", tmp.path().join("missing.json").display())), "{message}");
    let manifest = write_vector_01_manifest(tmp.path());
    duhub()
        .args(["manifest", "sign", "--manifest"])
        .arg(&manifest)
        .arg("--keys")
        .arg(tmp.path().join("no-keys"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("create a key store with `duhub keys init --dir`"));
}

#[test]
fn a_disabled_signing_key_invalidates_what_it_signed() {
    let tmp = temp_dir();
    let dir = tmp.path().join("keys");
    let init = init_key_store(&dir);
    let old = init["currentSigningKey"].as_str().unwrap().to_owned();
    let signed = sign(&write_vector_01_manifest(tmp.path()), &dir);
    let old_signed = write_file(tmp.path(), "old-signed.json", signed.to_string().as_bytes());
    assert_eq!(verify(&old_signed, &keys_trust(&dir)), valid());

    // After a rotation the previous key stays valid...
    let rotated = run_json(duhub().args(["keys", "rotate-signing", "--json", "--dir"]).arg(&dir), 0);
    assert_eq!(verify(&old_signed, &keys_trust(&dir)), valid());
    // ...until it is disabled.
    duhub().args(["keys", "disable-signing", "--dir"]).arg(&dir).arg(&old).assert().success();
    assert_eq!(verify(&old_signed, &keys_trust(&dir)), invalid("0xA0000005"));
    let package = dir.join("rootkeypackage.json");
    let roots = dir.join("rootkeys.json");
    let explicit = ["--root-keys".as_ref(), package.as_os_str(), "--root-key".as_ref(), roots.as_os_str()];
    assert_eq!(verify(&old_signed, &explicit), invalid("0xA0000005"));

    // What the new current key signs verifies.
    let new_signed = sign(&write_vector_01_manifest(tmp.path()), &dir);
    let new_out = write_file(tmp.path(), "new-signed.json", new_signed.to_string().as_bytes());
    assert_eq!(verify(&new_out, &keys_trust(&dir)), valid());
    let detail = run_json(duhub().args(["manifest", "verify", "--json"]).arg(&new_out).arg("--keys").arg(&dir), 0);
    assert!(
        detail["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("signed by signing key {} ", rotated["currentSigningKey"].as_str().unwrap())),
        "{detail}"
    );
}

// ---- verify: Microsoft's vectors ----

/// The vectors under `vectors/desired/` whose name starts with `prefix`.
fn vectors(prefix: &str) -> Vec<PathBuf> {
    let files = crate::support::fixture_files("vectors/desired");
    let found: Vec<PathBuf> =
        files.into_iter().filter(|path| path.file_name().unwrap().to_string_lossy().starts_with(prefix)).collect();
    assert!(!found.is_empty(), "no vector {prefix}*");
    found
}

#[test]
fn verify_microsoft_vectors_with_the_production_roots() {
    for prefix in ["01_", "04_", "05_", "06_", "07_"] {
        for path in vectors(prefix) {
            assert_eq!(verify(&path, &[]), valid(), "{}", path.display());
        }
    }
    for prefix in ["02_", "03_", "08_", "13_", "20_", "21_", "22_", "23_"] {
        for path in vectors(prefix) {
            assert_eq!(verify(&path, &[]), invalid("0x80300001"), "{} (hash mismatch)", path.display());
        }
    }
    let mut bad_structure = vectors("10_");
    bad_structure.extend(vectors("12_"));
    assert_eq!(bad_structure.len(), 8);
    for path in bad_structure {
        assert_eq!(verify(&path, &[]), invalid("0xA0200002"), "{} (bad structure)", path.display());
    }
}

#[test]
fn verify_a_valid_vector_reports_who_signed_it() {
    duhub().args(["manifest", "verify"]).arg(fixture(VECTOR_01)).assert().success().stderr("").stdout(
        "valid: update Contoso/Virtual-Vacuum/20.0 (manifest version 4) signed by signing key ADU.210609.R.S \
             certified by root key ADU.200702.R\n",
    );
    duhub()
        .args(["manifest", "verify"])
        .arg(fixture("vectors/desired/02_v5_hash-mismatch_adu_core_export_helpers.json"))
        .assert()
        .code(1)
        .stderr("")
        .stdout(predicate::str::starts_with("invalid (0x80300001): "));
}

#[test]
fn verify_the_test_root_vector_needs_test_roots() {
    let path = vectors("09_").remove(0);
    assert_eq!(verify(&path, &[]), invalid("0xA0200006"));
    assert_eq!(verify(&path, &["--test-roots".as_ref()]), valid());
    // And production-signed manifests are not valid under the test roots.
    assert_eq!(verify(&fixture(VECTOR_01), &["--test-roots".as_ref()]), invalid("0xA0200006"));
    // --test-roots cannot be combined with another trust source.
    let keys = shared_keys();
    duhub()
        .args(["manifest", "verify", "--test-roots"])
        .arg(&path)
        .arg("--keys")
        .arg(keys.dir())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("cannot be used with"));
    duhub()
        .args(["manifest", "verify", "--test-roots"])
        .arg(&path)
        .arg("--root-key")
        .arg(keys.dir().join("rootkeys.json"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn verify_a_tampered_signature_is_invalid() {
    let tmp = temp_dir();
    let mut twin = fixture_json(VECTOR_01);
    let signature = twin["updateManifestSignature"].as_str().unwrap().to_owned();
    let flip = |text: &str, at: usize| {
        let mut chars: Vec<char> = text.chars().collect();
        assert!(chars[at].is_ascii_alphanumeric(), "{at} is inside a base64url section");
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    // The middle of the whole JWS (inside the header, which carries the signing key).
    let middle = flip(&signature, signature.len() / 2);
    // The middle of the signature section.
    let last_dot = signature.rfind('.').unwrap();
    let in_signature = flip(&signature, last_dot + (signature.len() - last_dot) / 2);
    for (name, tampered) in [("header", middle), ("signature", in_signature)] {
        assert_ne!(tampered, signature);
        twin["updateManifestSignature"] = json!(tampered);
        let path = write_file(tmp.path(), &format!("{name}.json"), twin.to_string().as_bytes());
        assert_eq!(verify(&path, &[]), invalid("0xA0200004"), "tampered {name}");
    }
    // The untouched copy, rewritten the same way, is still valid.
    twin["updateManifestSignature"] = json!(signature);
    let path = write_file(tmp.path(), "untouched.json", twin.to_string().as_bytes());
    assert_eq!(verify(&path, &[]), valid());
}

#[test]
fn verify_a_file_without_a_manifest() {
    let tmp = temp_dir();
    // Nothing that looks like a manifest at all: an error (exit 2).
    for (name, text) in [("empty.json", "{}"), ("other.json", r#"{"foo": 1}"#)] {
        let path = write_file(tmp.path(), name, text.as_bytes());
        let message = json_error(duhub().args(["manifest", "verify", "--json"]).arg(&path));
        assert_eq!(message, format!("{} holds no update manifest or signature", path.display()));
    }
    let array = write_file(tmp.path(), "array.json", b"[]");
    duhub().args(["manifest", "verify"]).arg(&array).assert().code(2).stdout("");
    let not_json = write_file(tmp.path(), "not.json", b"not json");
    let message = json_error(duhub().args(["manifest", "verify", "--json"]).arg(&not_json));
    assert!(message.starts_with(&format!("{} is not JSON", not_json.display())), "{message}");

    // A `service` object without manifest and signature (cancel, unknown action): nothing to
    // verify, an error (exit 2).
    for prefix in ["24_", "25_", "26_"] {
        let path = vectors(prefix).remove(0);
        let message = json_error(duhub().args(["manifest", "verify", "--json"]).arg(&path));
        assert!(message.contains("holds no update manifest to verify"), "{}: {message}", path.display());
    }
    let unsigned = write_file(tmp.path(), "unsigned.json", br#"{"updateManifest": "{}"}"#);
    assert_eq!(verify(&unsigned, &[]), invalid("0x80300001"));
}

#[test]
fn verify_io_errors_are_json_errors_with_json() {
    let tmp = temp_dir();
    let missing = tmp.path().join("missing.json");
    let message = json_error(duhub().args(["manifest", "verify", "--json"]).arg(&missing));
    assert!(message.starts_with(&format!("reading {}: ", missing.display())), "{message}");
    // Without --json: nothing on stdout, the error on stderr.
    duhub()
        .args(["manifest", "verify"])
        .arg(&missing)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with(format!("error: reading {}: ", missing.display())));
    // A missing trust file is an I/O error too.
    let message = json_error(
        duhub().args(["manifest", "verify", "--json"]).arg(fixture(VECTOR_01)).arg("--root-key").arg(&missing),
    );
    assert!(message.starts_with(&format!("reading {}: ", missing.display())), "{message}");
}
