//! Import manifests: the SchemaStore cases, every schema keyword and service rule, parsing and
//! `init v5`.

use std::path::{Path, PathBuf};

use duhub_proto::UpdateId;
use duhub_proto::import_manifest::{
    ImportManifestError, InitError, InitFile, InitInlineStep, InitReferenceStep, InitRelatedFile, InitRequest,
    InitStep, ManifestVersion, Step, init_v5, parse, validate,
};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const AZ_EXAMPLE: &str = "example-import-manifest-v5.generated-by-az-cli.json";

/// A valid SHA-256 (base64 of 32 bytes).
const SHA: &str = "mcB5SexMU4JOOzqmlJqKbue9qMskWY3EI/iVjJxCtAs=";

// Helpers.

/// A small valid v5 manifest: one inline step on `install.sh`, one reference step.
fn v5() -> Value {
    json!({
        "updateId": { "provider": "Contoso", "name": "Toaster", "version": "1.0" },
        "compatibility": [{ "manufacturer": "Contoso", "model": "Toaster" }],
        "instructions": {
            "steps": [
                { "handler": "microsoft/script:1", "files": ["install.sh"] },
                {
                    "type": "reference",
                    "updateId": { "provider": "Contoso", "name": "Leaf", "version": "2.0" }
                }
            ]
        },
        "files": [{ "filename": "install.sh", "sizeInBytes": 718, "hashes": { "sha256": SHA } }],
        "manifestVersion": "5.0",
        "createdDateTime": "2020-10-02T22:18:04.9446744Z"
    })
}

/// The same manifest as version 4.0.
fn v4() -> Value {
    set(v5(), "/manifestVersion", json!("4.0"))
}

/// A valid file that no step uses, to hang file-level cases on (`/files/1`).
fn extra_file() -> Value {
    json!({ "filename": "extra.bin", "sizeInBytes": 10, "hashes": { "sha256": SHA } })
}

/// `manifest` with the member or item at `pointer` replaced (or appended) by `value`.
fn set(mut manifest: Value, pointer: &str, value: Value) -> Value {
    let (parent, last) = split_pointer(pointer);
    match manifest.pointer_mut(parent).expect("parent exists") {
        Value::Object(object) => {
            object.insert(last, value);
        }
        Value::Array(items) => {
            let index: usize = last.parse().expect("array index");
            if index == items.len() {
                items.push(value);
            } else {
                items[index] = value;
            }
        }
        other => panic!("cannot set {pointer} in {other}"),
    }
    manifest
}

/// `manifest` without the member or item at `pointer`.
fn remove(mut manifest: Value, pointer: &str) -> Value {
    let (parent, last) = split_pointer(pointer);
    match manifest.pointer_mut(parent).expect("parent exists") {
        Value::Object(object) => {
            object.shift_remove(&last).expect("member exists");
        }
        Value::Array(items) => {
            items.remove(last.parse().expect("array index"));
        }
        other => panic!("cannot remove {pointer} from {other}"),
    }
    manifest
}

fn split_pointer(pointer: &str) -> (&str, String) {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

/// Asserts that `manifest` has exactly the `expected` violations, as (pointer, rule), in order.
#[track_caller]
fn check(manifest: &Value, expected: &[(&str, &str)]) {
    let violations = validate(manifest);
    let actual: Vec<(&str, &str)> =
        violations.iter().map(|violation| (violation.pointer.as_str(), violation.rule)).collect();
    assert_eq!(actual, expected, "all violations: {violations:#?}");
}

fn read_fixture(path: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let value = serde_json::from_str(&text).expect("fixture is JSON");
    (text, value)
}

fn fixture_files(directory: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(format!("{FIXTURES}/schemastore/{directory}"))
        .expect("fixture directory exists")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    paths.sort();
    paths
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|name| name.to_str()).expect("utf-8 file name")
}

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

// SchemaStore cases and the az example.

#[test]
fn schemastore_valid_manifests_have_no_violations() {
    let cases = [
        ("test/azure-deviceupdate-import-manifest-4.0", ManifestVersion::V4, 3),
        ("test/azure-deviceupdate-import-manifest-5.0", ManifestVersion::V5, 1),
    ];
    for (directory, version, count) in cases {
        let paths = fixture_files(directory);
        assert_eq!(paths.len(), count, "{directory}");
        for path in paths {
            let (text, value) = read_fixture(&path);
            check(&value, &[]);
            let manifest = parse(&text).expect("valid fixture parses");
            assert_eq!(manifest.manifest_version, version, "{}", path.display());
        }
    }
}

#[test]
fn schemastore_invalid_manifests_are_refused_for_the_right_reason() {
    let expected: &[(&str, &[(&str, &str)])] = &[
        ("invalidstep-importmanifest.json", &[("/instructions/steps/0", "required")]),
        ("nosteps-importmanifest.json", &[("/instructions/steps", "minItems")]),
        ("toomanycompatinfo-importmanifest.json", &[("/compatibility/0", "maxProperties")]),
    ];
    let paths = fixture_files("negative_test/azure-deviceupdate-import-manifest-4.0");
    let names: Vec<&str> = paths.iter().map(|path| file_name(path)).collect();
    let expected_names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected_names, "every negative case has an expectation");
    for (path, (_, violations)) in paths.iter().zip(expected) {
        let (text, value) = read_fixture(path);
        check(&value, violations);
        assert!(matches!(parse(&text), Err(ImportManifestError::Invalid(_))));
    }
}

#[test]
fn missing_update_id_in_reference_step_is_one_clear_violation() {
    let path = Path::new(FIXTURES)
        .join("schemastore/negative_test/azure-deviceupdate-import-manifest-4.0")
        .join("invalidstep-importmanifest.json");
    let violations = validate(&read_fixture(&path).1);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].message, "reference step is missing \"updateId\"");
}

#[test]
fn az_example_is_valid_and_parses() {
    let (text, value) = read_fixture(&Path::new(FIXTURES).join(AZ_EXAMPLE));
    check(&value, &[]);
    let manifest = parse(&text).expect("az example parses");
    assert_eq!(manifest.manifest_version, ManifestVersion::V5);
    assert_eq!(manifest.update_id, UpdateId::new("Contoso", "Toaster", "1.0"));
    assert_eq!(manifest.created_date_time, "2026-11-23T17:50:19Z");
    assert!(manifest.deployable());
    assert_eq!(manifest.total_size(), 4096 + 46);
    let references: Vec<&UpdateId> = manifest.reference_update_ids().collect();
    assert_eq!(references, [&UpdateId::new("Contoso", "Leaf", "2.0")]);
    let file = manifest.file("fw.swu").expect("fw.swu is listed");
    assert_eq!(file.sha256(), Some("j3Ajne/cqdIwVqT+BPVtIEaBIm9bZCy5fKRepyg4fUQ="));
    assert_eq!(file.sha256_digest().map(|digest| digest[..2].to_vec()), Some(vec![0x8f, 0x70]));
    assert_eq!(file.download_handler.as_ref().map(|handler| handler.id.as_str()), Some("microsoft/delta:1"));
    assert_eq!(file.related_files[0].filename, "delta.json");
    assert_eq!(file.related_files[0].sha256(), Some("xkF0UTNGWrjtxehOc87p9VUehnv8pCEMe4oavNXfpFA="));
    match &manifest.instructions.steps[0] {
        Step::Inline { handler, files, handler_properties, description } => {
            assert_eq!(handler, "microsoft/swupdate:1");
            assert_eq!(files, &["fw.swu"]);
            assert_eq!(handler_properties.as_ref().map(|p| p["installedCriteria"].clone()), Some(json!("1.0")));
            assert_eq!(description.as_deref(), Some("Install image"));
        }
        other => panic!("expected an inline step, found {other:?}"),
    }
    assert!(manifest.instructions.steps[1].is_reference());
    assert_eq!(manifest.instructions.steps[0].description(), Some("Install image"));
}

#[test]
fn typed_manifests_serialise_back_to_the_same_json() {
    let paths = [
        Path::new(FIXTURES).join(AZ_EXAMPLE),
        Path::new(FIXTURES)
            .join("schemastore/test/azure-deviceupdate-import-manifest-5.0/relatedFiles-importManifest.json"),
    ];
    for path in paths {
        let (text, value) = read_fixture(&path);
        let manifest = parse(&text).expect("fixture parses");
        assert_eq!(serde_json::to_value(&manifest).expect("serialises"), value, "{}", path.display());
    }
}

#[test]
fn inline_steps_are_written_with_their_type_in_az_order() {
    let manifest = parse(&v5().to_string()).expect("valid");
    let steps = serde_json::to_value(&manifest.instructions).expect("serialises");
    assert_eq!(
        steps.to_string(),
        r#"{"steps":[{"type":"inline","handler":"microsoft/script:1","files":["install.sh"]},{"type":"reference","updateId":{"provider":"Contoso","name":"Leaf","version":"2.0"}}]}"#
    );
}

// Schema keywords, one area at a time.

#[test]
fn top_level() {
    check(&v5(), &[]);
    check(&v4(), &[]);
    check(&json!([]), &[("", "type")]);
    check(&json!(null), &[("", "type")]);
    check(&json!("manifest"), &[("", "type")]);
    let required = ("", "required");
    check(&json!({}), &[required; 5]);
    check(&remove(v5(), "/updateId"), &[required]);
    check(&remove(v5(), "/createdDateTime"), &[required]);
    check(&set(v5(), "/$schema", json!("https://json.schemastore.org/x.json")), &[]);
    check(&set(v5(), "/$schema", json!(1)), &[("/$schema", "type")]);
    check(&set(v5(), "/vendorNote", json!({ "any": ["thing"] })), &[]);
    check(&set(v5(), "/isDeployable", json!(false)), &[]);
    check(&set(v5(), "/isDeployable", json!("no")), &[("/isDeployable", "type")]);
}

#[test]
fn manifest_version() {
    check(&set(v5(), "/manifestVersion", json!("3.0")), &[("/manifestVersion", "const")]);
    check(&set(v5(), "/manifestVersion", json!(5)), &[("/manifestVersion", "type")]);
    // An unknown version stops validation: nothing else is reported.
    let broken = set(set(v5(), "/manifestVersion", json!("6.0")), "/description", json!(""));
    check(&broken, &[("/manifestVersion", "const")]);
    // A missing version is reported and the rest is still checked.
    let missing = set(remove(v5(), "/manifestVersion"), "/description", json!(""));
    check(&missing, &[("", "required"), ("/description", "minLength")]);
}

#[test]
fn description() {
    check(&set(v5(), "/description", json!("")), &[("/description", "minLength")]);
    check(&set(v5(), "/description", json!("d".repeat(513))), &[("/description", "maxLength")]);
    // Lengths are counted in characters, not bytes.
    check(&set(v5(), "/description", json!("é".repeat(512))), &[]);
    check(&set(v5(), "/description", json!(7)), &[("/description", "type")]);
}

#[test]
fn created_date_time() {
    for good in ["2026-11-23T17:50:19Z", "2020-10-02T22:18:04.9446744Z"] {
        check(&set(v5(), "/createdDateTime", json!(good)), &[]);
    }
    for bad in ["yesterday", "2020-10-02T22:18:04+01:00", "2020-10-02", "2020-02-30T00:00:00Z"] {
        check(&set(v5(), "/createdDateTime", json!(bad)), &[("/createdDateTime", "dateTime")]);
    }
    check(&set(v5(), "/createdDateTime", json!(20201002)), &[("/createdDateTime", "type")]);
}

#[test]
fn update_id() {
    check(&set(v5(), "/updateId", json!("Contoso/Toaster/1.0")), &[("/updateId", "type")]);
    check(&set(v5(), "/updateId/provider", json!("Con toso")), &[("/updateId/provider", "pattern")]);
    check(&set(v5(), "/updateId/name", json!("")), &[("/updateId/name", "minLength")]);
    check(&set(v5(), "/updateId/name", json!("n".repeat(65))), &[("/updateId/name", "maxLength")]);
    check(&set(v5(), "/updateId/version", json!("1")), &[("/updateId/version", "pattern")]);
    check(&set(v5(), "/updateId/version", json!("1.2.3.4.5")), &[("/updateId/version", "versionParts")]);
    check(&set(v5(), "/updateId/extra", json!(1)), &[("/updateId/extra", "additionalProperties")]);
    check(&remove(v5(), "/updateId/version"), &[("/updateId", "required")]);
}

#[test]
fn compatibility() {
    let at = "/compatibility";
    check(&remove(v5(), at), &[("", "required")]);
    check(&set(v5(), at, json!({ "model": "Toaster" })), &[(at, "type")]);
    check(&set(v5(), at, json!([])), &[(at, "minItems")]);
    let eleven: Vec<Value> = (0..11).map(|n| json!({ "model": n.to_string() })).collect();
    check(&set(v5(), at, json!(eleven)), &[(at, "maxItems")]);
    check(&set(v5(), "/compatibility/0", json!("Toaster")), &[("/compatibility/0", "type")]);
    check(&set(v5(), "/compatibility/0", json!({})), &[("/compatibility/0", "minProperties")]);
    let six = json!({ "a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6" });
    check(&set(v5(), "/compatibility/0", six), &[("/compatibility/0", "maxProperties")]);
    check(&set(v5(), "/compatibility/0", json!({ "": "x" })), &[("/compatibility/0/", "propertyNames")]);
    let long_name = "n".repeat(33);
    let pointer = format!("/compatibility/0/{long_name}");
    check(&set(v5(), "/compatibility/0", json!({ long_name: "x" })), &[(&pointer, "propertyNames")]);
    check(&set(v5(), "/compatibility/0", json!({ "n".repeat(32): "x" })), &[]);
    check(&set(v5(), "/compatibility/0/model", json!("")), &[("/compatibility/0/model", "minLength")]);
    let long_value = json!("v".repeat(65));
    check(&set(v5(), "/compatibility/0/model", long_value), &[("/compatibility/0/model", "maxLength")]);
    check(&set(v5(), "/compatibility/0/model", json!(3)), &[("/compatibility/0/model", "type")]);
    check(&set(v5(), "/compatibility/0/a~1b", json!("x")), &[]);
}

#[test]
fn unique_compatibility() {
    let same_in_other_order = json!([
        { "manufacturer": "Contoso", "model": "Toaster" },
        { "model": "Oven" },
        { "model": "Toaster", "manufacturer": "Contoso" }
    ]);
    check(&set(v5(), "/compatibility", same_in_other_order), &[("/compatibility/2", "uniqueCompatibility")]);
    let different = json!([{ "model": "Toaster" }, { "model": "Toaster", "rev": "2" }]);
    check(&set(v5(), "/compatibility", different), &[]);
    let three = json!([{ "model": "T" }, { "model": "T" }, { "model": "T" }]);
    let violations = validate(&set(v5(), "/compatibility", three));
    let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(messages, [r#"compatibility entry {"model":"T"} repeats entry 0"#; 2]);
}

#[test]
fn instructions() {
    check(&remove(v5(), "/instructions"), &[("", "required")]);
    check(&set(v5(), "/instructions", json!([])), &[("/instructions", "type")]);
    check(&set(v5(), "/instructions", json!({})), &[("/instructions", "required")]);
    check(&set(v5(), "/instructions/order", json!("strict")), &[("/instructions/order", "additionalProperties")]);
    check(&set(v5(), "/instructions/steps", json!({})), &[("/instructions/steps", "type")]);
    check(&set(v5(), "/instructions/steps", json!([])), &[("/instructions/steps", "minItems")]);
    let step = json!({ "handler": "microsoft/script:1", "files": ["install.sh"] });
    let eleven = vec![step; 11];
    check(&set(v5(), "/instructions/steps", json!(eleven)), &[("/instructions/steps", "maxItems")]);
    check(&set(v5(), "/instructions/steps/0", json!("run")), &[("/instructions/steps/0", "type")]);
}

#[test]
fn step_type() {
    let at = "/instructions/steps/0/type";
    check(&set(v5(), at, json!("inline")), &[]);
    check(&set(v5(), at, json!("script")), &[(at, "const")]);
    check(&set(v5(), at, json!(true)), &[(at, "type")]);
    check(&set(v5(), "/instructions/steps/1/type", json!(null)), &[("/instructions/steps/1/type", "type")]);
}

#[test]
fn inline_step() {
    let step = "/instructions/steps/0";
    check(&remove(v5(), "/instructions/steps/0/handler"), &[(step, "required")]);
    check(&remove(v5(), "/instructions/steps/0/files"), &[(step, "required")]);
    check(
        &set(v5(), "/instructions/steps/0/when", json!("now")),
        &[("/instructions/steps/0/when", "additionalProperties")],
    );
    // An updateId on an inline step gets one violation that hints at the missing type.
    let with_update_id =
        set(v5(), "/instructions/steps/0/updateId", json!({ "provider": "a", "name": "b", "version": "1.0" }));
    check(&with_update_id, &[("/instructions/steps/0/updateId", "additionalProperties")]);
    let message = &validate(&with_update_id)[0].message;
    assert!(message.contains("\"type\": \"reference\""), "{message}");

    let description = "/instructions/steps/0/description";
    check(&set(v5(), description, json!("Run the installer")), &[]);
    check(&set(v5(), description, json!("")), &[(description, "minLength")]);
    check(&set(v5(), description, json!("d".repeat(65))), &[(description, "maxLength")]);
    check(&set(v5(), description, json!(["d"])), &[(description, "type")]);

    let properties = "/instructions/steps/0/handlerProperties";
    check(&set(v5(), properties, json!({ "installedCriteria": "1.0", "deep": { "a": [1, { "b": null }] } })), &[]);
    check(&set(v5(), properties, json!("--pre-install")), &[(properties, "type")]);
}

#[test]
fn handler() {
    let at = "/instructions/steps/0/handler";
    for good in ["a/b:1", "contoso/my-handler:12345", "microsoft/swupdate:2"] {
        check(&set(v5(), at, json!(good)), &[]);
    }
    check(&set(v5(), at, json!("a/b")), &[(at, "minLength"), (at, "pattern")]);
    check(&set(v5(), at, json!("")), &[(at, "minLength")]);
    check(&set(v5(), at, json!(format!("{}/b:1", "a".repeat(29)))), &[(at, "maxLength")]);
    check(&set(v5(), at, json!("microsoft-script-1")), &[(at, "pattern")]);
    check(&set(v5(), at, json!("microsoft/script:123456")), &[(at, "pattern")]);
    check(&set(v5(), at, json!("microsoft /script:1")), &[(at, "pattern")]);
    check(&set(v5(), at, json!(1)), &[(at, "type")]);
}

#[test]
fn step_files() {
    let at = "/instructions/steps/0/files";
    check(&set(v5(), at, json!("install.sh")), &[(at, "type")]);
    check(&set(v5(), at, json!([])), &[(at, "minItems")]);
    check(&set(v5(), at, json!(vec!["install.sh"; 11])), &[(at, "maxItems")]);
    check(&set(v5(), at, json!([""])), &[("/instructions/steps/0/files/0", "minLength")]);
    check(&set(v5(), at, json!([7])), &[("/instructions/steps/0/files/0", "type")]);
    let long = "f".repeat(256);
    check(
        &set(v5(), at, json!([long])),
        &[("/instructions/steps/0/files/0", "maxLength"), ("/instructions/steps/0/files/0", "fileExists")],
    );
}

#[test]
fn reference_step() {
    let step = "/instructions/steps/1";
    check(&remove(v5(), "/instructions/steps/1/updateId"), &[(step, "required")]);
    // A step with an updateId and nothing of an inline step is a reference step without type.
    let untyped = remove(v5(), "/instructions/steps/1/type");
    check(&untyped, &[(step, "required")]);
    assert_eq!(validate(&untyped)[0].message, "reference step is missing \"type\"");
    check(
        &set(v5(), "/instructions/steps/1/handler", json!("a/b:1")),
        &[("/instructions/steps/1/handler", "additionalProperties")],
    );
    check(&set(v5(), "/instructions/steps/1/description", json!("Leaf firmware")), &[]);
    check(
        &set(v5(), "/instructions/steps/1/description", json!("d".repeat(65))),
        &[("/instructions/steps/1/description", "maxLength")],
    );
    check(&set(v5(), "/instructions/steps/1/updateId", json!([])), &[("/instructions/steps/1/updateId", "type")]);
    check(
        &set(v5(), "/instructions/steps/1/updateId/version", json!("two")),
        &[("/instructions/steps/1/updateId/version", "pattern")],
    );
}

#[test]
fn files_array() {
    check(&set(v5(), "/files", json!({})), &[("/files", "type")]);
    let mut eleven = vec![json!({ "filename": "install.sh", "sizeInBytes": 1, "hashes": { "sha256": SHA } })];
    eleven
        .extend((1..11).map(|n| json!({ "filename": format!("f{n}"), "sizeInBytes": 1, "hashes": { "sha256": SHA } })));
    check(&set(v5(), "/files", json!(eleven)), &[("/files", "maxItems")]);
    // A file that is not an object leaves the step's file unknown too, in document order.
    check(
        &set(v5(), "/files/0", json!("install.sh")),
        &[("/instructions/steps/0/files/0", "fileExists"), ("/files/0", "type")],
    );
}

/// Regression test for issue 10: the schemas describe `files` as "empty or null if all
/// instruction steps are reference steps".
#[test]
fn files_may_be_null_only_when_every_step_is_a_reference_step() {
    // With an inline step, null is one clear violation.
    let with_inline_step = set(v5(), "/files", Value::Null);
    check(&with_inline_step, &[("/files", "filesRequired")]);
    assert_eq!(
        validate(&with_inline_step)[0].message,
        "\"files\" is null, but step 0 is an inline step and needs files"
    );
    check(&set(v4(), "/files", Value::Null), &[("/files", "filesRequired")]);
    // With reference steps only, null is accepted like an empty or missing list.
    let references_only = |version: Value| {
        let reference = v5()["instructions"]["steps"][1].clone();
        let manifest = set(v5(), "/instructions/steps", json!([reference]));
        set(set(manifest, "/files", Value::Null), "/manifestVersion", version)
    };
    for version in ["5.0", "4.0"] {
        let manifest = references_only(json!(version));
        check(&manifest, &[]);
        let parsed = parse(&manifest.to_string()).unwrap();
        assert!(parsed.files.is_empty(), "{version}");
        assert!(matches!(parsed.instructions.steps.as_slice(), [Step::Reference { .. }]), "{version}");
        check(&set(manifest.clone(), "/files", json!([])), &[]);
        check(&remove(manifest, "/files"), &[]);
    }
    // Any other non-array is still refused.
    check(&set(references_only(json!("5.0")), "/files", json!("none")), &[("/files", "type")]);
}

#[test]
fn file_members() {
    let file = "/files/1";
    let with_extra = set(v5(), file, extra_file());
    check(&with_extra, &[]);
    for member in ["filename", "sizeInBytes", "hashes"] {
        check(&remove(with_extra.clone(), &format!("{file}/{member}")), &[(file, "required")]);
    }
    check(&set(v5(), file, json!({})), &[(file, "required"), (file, "required"), (file, "required")]);
    check(&set(v5(), file, json!(null)), &[(file, "type")]);

    let name = "/files/1/filename";
    check(&set(with_extra.clone(), name, json!("")), &[(name, "minLength")]);
    check(&set(with_extra.clone(), name, json!("f".repeat(256))), &[(name, "maxLength")]);
    check(&set(with_extra.clone(), name, json!(["extra.bin"])), &[(name, "type")]);
}

#[test]
fn size_in_bytes() {
    let at = "/files/1/sizeInBytes";
    let with_size = |size: Value| set(set(v5(), "/files/1", extra_file()), at, size);
    check(&with_size(json!(1)), &[]);
    check(&with_size(json!(2_147_483_648u64 - 718)), &[]);
    check(&with_size(json!(0)), &[(at, "minimum")]);
    check(&with_size(json!(-5)), &[(at, "minimum")]);
    check(&with_size(json!(i64::MIN)), &[(at, "minimum")]);
    check(&with_size(json!(0.5)), &[(at, "minimum")]);
    check(&with_size(json!(2_147_483_649u64)), &[(at, "maximum")]);
    check(&with_size(json!(u64::MAX)), &[(at, "maximum")]);
    check(&with_size(json!(1e300)), &[(at, "maximum")]);
    check(&with_size(json!(1.5)), &[(at, "type")]);
    check(&with_size(json!("10")), &[(at, "type")]);
    check(&with_size(json!(null)), &[(at, "type")]);
}

#[test]
fn hashes() {
    let at = "/files/1/hashes";
    let with_hashes = |hashes: Value| set(set(v5(), "/files/1", extra_file()), at, hashes);
    check(&with_hashes(json!({ "sha256": SHA, "md5": "1B2M2Y8AsgTpgAmY7PhCfg==" })), &[]);
    check(&with_hashes(json!(SHA)), &[(at, "type")]);
    check(&with_hashes(json!({})), &[(at, "required")]);
    check(&with_hashes(json!({ "md5": "x" })), &[(at, "required")]);
    check(&with_hashes(json!({ "sha256": SHA, "md5": "x", "sha1": "y" })), &[(at, "maxProperties")]);
    let long_name = "/files/1/hashes/sha3-256-long";
    check(&with_hashes(json!({ "sha256": SHA, "sha3-256-long": "x" })), &[(long_name, "propertyNames")]);
    check(&with_hashes(json!({ "sha256": SHA, "md5": 5 })), &[("/files/1/hashes/md5", "type")]);
    check(&with_hashes(json!({ "sha256": [SHA] })), &[("/files/1/hashes/sha256", "type")]);
}

#[test]
fn sha256_format() {
    let at = "/files/1/hashes/sha256";
    let with_sha = |sha: &str| set(set(v5(), "/files/1", extra_file()), at, json!(sha));
    check(&with_sha("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="), &[]);
    for bad in [
        "",
        "abc",
        // Hex instead of base64.
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        // Missing padding.
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        // URL-safe alphabet.
        "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
        // 31 bytes.
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==",
        // 33 bytes.
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFUA",
    ] {
        check(&with_sha(bad), &[(at, "sha256Format")]);
    }
}

#[test]
fn plain_file_names() {
    let at = "/files/1/filename";
    let with_name = |name: &str| set(set(v5(), "/files/1", extra_file()), at, json!(name));
    check(&with_name("fw-1.0..swu"), &[]);
    for bad in ["../etc/passwd", "dir/fw.swu", "dir\\fw.swu", ".", "..", "fw\u{0}.swu", "fw\n.swu", "fw\u{1b}.swu"] {
        check(&with_name(bad), &[(at, "plainFileName")]);
    }
    let message = &validate(&with_name("a/b"))[0].message;
    assert!(message.contains("\"a/b\""), "the message quotes the name: {message}");
}

#[test]
fn unique_file_names() {
    let duplicate = set(v5(), "/files/1", set(extra_file(), "/filename", json!("install.sh")));
    check(&duplicate, &[("/files/1/filename", "uniqueFileNames")]);
    assert_eq!(validate(&duplicate)[0].message, "filename \"install.sh\" is already used at /files/0/filename");
    let related = set(v5(), "/files/0/relatedFiles", json!([set(extra_file(), "/filename", json!("install.sh"))]));
    check(&related, &[("/files/0/relatedFiles/0/filename", "uniqueFileNames")]);
    let twice_related = set(v5(), "/files/0/relatedFiles", json!([extra_file(), extra_file()]));
    check(&twice_related, &[("/files/0/relatedFiles/1/filename", "uniqueFileNames")]);
}

#[test]
fn file_exists() {
    let at = "/instructions/steps/0/files/1";
    check(&set(v5(), at, json!("missing.bin")), &[(at, "fileExists")]);
    // Related files are not payload files a handler can be given.
    let related = set(v5(), "/files/0/relatedFiles", json!([extra_file()]));
    check(&set(related, at, json!("extra.bin")), &[(at, "fileExists")]);
}

#[test]
fn files_required() {
    check(&remove(v5(), "/files"), &[("", "filesRequired")]);
    check(&set(v5(), "/files", json!([])), &[("/files", "filesRequired")]);
    // Without inline steps, files may be missing or empty.
    let references_only = remove(v5(), "/instructions/steps/0");
    check(&remove(references_only.clone(), "/files"), &[]);
    check(&set(references_only, "/files", json!([])), &[]);
}

#[test]
fn self_reference() {
    let own = json!({ "provider": "Contoso", "name": "Toaster", "version": "1.0" });
    let at = "/instructions/steps/1/updateId";
    check(&set(v5(), at, own), &[(at, "selfReference")]);
    let member_order = json!({ "version": "1.0", "name": "Toaster", "provider": "Contoso" });
    check(&set(v5(), at, member_order), &[(at, "selfReference")]);
    check(&set(v5(), at, json!({ "provider": "Contoso", "name": "Toaster", "version": "1.1" })), &[]);
}

#[test]
fn total_size() {
    let half = 1_073_741_824u64;
    let big = |name: &str, size: u64| json!({ "filename": name, "sizeInBytes": size, "hashes": { "sha256": SHA } });
    check(&set(v5(), "/files/1", big("a", 2_147_483_648 - 718)), &[]);
    check(&set(v5(), "/files/1", big("a", 2_147_483_648 - 717)), &[("/files", "totalSize")]);
    let two = set(set(v5(), "/files/1", big("a", half)), "/files/2", big("b", half));
    check(&two, &[("/files", "totalSize")]);
    assert_eq!(validate(&two)[0].message, "files add up to 2147484366 bytes (at most 2147483648)");
    // Related files count too.
    let related = set(set(v5(), "/files/1", big("a", half)), "/files/1/relatedFiles", json!([big("b", half)]));
    check(&related, &[("/files", "totalSize")]);
    // One oversized file is a maximum violation, not a total size one.
    check(&set(v5(), "/files/1", big("a", 3 * half)), &[("/files/1/sizeInBytes", "maximum")]);
}

#[test]
fn version_4_files_are_closed_and_version_5_files_are_open() {
    let v4_extra = |member: &str, value: Value| set(v4(), &format!("/files/0/{member}"), value);
    for (member, value) in [
        ("mimeType", json!("application/octet-stream")),
        ("properties", json!({})),
        ("relatedFiles", json!([extra_file()])),
        ("downloadHandler", json!({ "id": "microsoft/delta:1" })),
        ("fileName", json!("x")),
    ] {
        let pointer = format!("/files/0/{member}");
        check(&v4_extra(member, value.clone()), &[(&pointer, "additionalProperties")]);
        check(&set(v5(), &pointer, value), &[]);
    }
}

#[test]
fn version_5_file_members() {
    check(&set(v5(), "/files/0/properties", json!([])), &[("/files/0/properties", "type")]);
    check(&set(v5(), "/files/0/mimeType", json!(1)), &[("/files/0/mimeType", "type")]);

    let related = "/files/0/relatedFiles";
    check(&set(v5(), related, json!({})), &[(related, "type")]);
    check(&set(v5(), related, json!([])), &[]);
    let five: Vec<Value> = (0..5).map(|n| set(extra_file(), "/filename", json!(format!("r{n}")))).collect();
    check(&set(v5(), related, json!(five)), &[(related, "maxItems")]);
    check(&set(v5(), related, json!([1])), &[("/files/0/relatedFiles/0", "type")]);
    let first = "/files/0/relatedFiles/0";
    check(&set(v5(), related, json!([{}])), &[(first, "required"), (first, "required"), (first, "required")]);
    check(&set(v5(), related, json!([set(extra_file(), "/note", json!("open"))])), &[]);
    check(
        &set(v5(), related, json!([set(extra_file(), "/properties", json!("x"))])),
        &[("/files/0/relatedFiles/0/properties", "type")],
    );
    check(
        &set(v5(), related, json!([set(extra_file(), "/sizeInBytes", json!(0))])),
        &[("/files/0/relatedFiles/0/sizeInBytes", "minimum")],
    );
    check(
        &set(v5(), related, json!([set(extra_file(), "/hashes/sha256", json!("x"))])),
        &[("/files/0/relatedFiles/0/hashes/sha256", "sha256Format")],
    );

    let handler = "/files/0/downloadHandler";
    check(&set(v5(), handler, json!({ "id": "microsoft/delta:1", "note": "open" })), &[]);
    check(&set(v5(), handler, json!("microsoft/delta:1")), &[(handler, "type")]);
    check(&set(v5(), handler, json!({})), &[(handler, "required")]);
    let id = "/files/0/downloadHandler/id";
    check(&set(v5(), handler, json!({ "id": "delta" })), &[(id, "pattern")]);
    check(&set(v5(), handler, json!({ "id": "d:1" })), &[(id, "minLength"), (id, "pattern")]);
    check(&set(v5(), handler, json!({ "id": format!("{}/d:1", "m".repeat(30)) })), &[(id, "maxLength")]);
    check(&set(v5(), handler, json!({ "id": 1 })), &[(id, "type")]);
}

#[test]
fn every_violation_is_reported_in_document_order() {
    let manifest = json!({
        "updateId": { "provider": "Contoso", "name": "Toaster", "version": "1" },
        "description": "",
        "compatibility": [{ "model": "Toaster" }, { "model": "Toaster" }],
        "instructions": {
            "steps": [
                { "handler": "microsoft/script", "files": ["missing.sh"] },
                { "type": "reference" },
                { "type": "reference", "updateId": { "provider": "Contoso", "name": "Toaster", "version": "1" } }
            ]
        },
        "files": [
            { "filename": "../install.sh", "sizeInBytes": 0, "hashes": { "sha256": "abc" } },
            { "filename": "../install.sh", "sizeInBytes": 1, "hashes": { "sha256": SHA }, "relatedFiles": [{}] }
        ],
        "manifestVersion": "5.0",
        "createdDateTime": "2020-10-02 22:18"
    });
    check(
        &manifest,
        &[
            ("/updateId/version", "pattern"),
            ("/description", "minLength"),
            ("/compatibility/1", "uniqueCompatibility"),
            ("/instructions/steps/0/handler", "pattern"),
            ("/instructions/steps/0/files/0", "fileExists"),
            ("/instructions/steps/1", "required"),
            ("/instructions/steps/2/updateId/version", "pattern"),
            ("/instructions/steps/2/updateId", "selfReference"),
            ("/files/0/filename", "plainFileName"),
            ("/files/0/sizeInBytes", "minimum"),
            ("/files/0/hashes/sha256", "sha256Format"),
            ("/files/1/filename", "plainFileName"),
            ("/files/1/filename", "uniqueFileNames"),
            ("/files/1/relatedFiles/0", "required"),
            ("/files/1/relatedFiles/0", "required"),
            ("/files/1/relatedFiles/0", "required"),
            ("/createdDateTime", "dateTime"),
        ],
    );
}

#[test]
fn messages_quote_the_offending_value() {
    let cases = [
        (set(v5(), "/description", json!("d".repeat(513))), "is 513 characters long (at most 512)"),
        (set(v5(), "/instructions/steps/0/handler", json!("run-it")), "\"run-it\""),
        (set(v5(), "/instructions/steps/0/type", json!("script")), "\"script\""),
        (set(v5(), "/files/0/sizeInBytes", json!(-3)), "-3"),
        (set(v5(), "/files/0/hashes/sha256", json!("abc")), "\"abc\""),
        (set(v5(), "/instructions/steps/0/files/0", json!("nope.sh")), "\"nope.sh\""),
        (set(v5(), "/createdDateTime", json!("today")), "\"today\""),
        (set(v5(), "/manifestVersion", json!("3.0")), "\"3.0\""),
    ];
    for (manifest, quoted) in &cases {
        let violations = validate(manifest);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(violations[0].message.contains(quoted), "{:?} should contain {quoted}", violations[0].message);
        assert!(violations[0].value.is_some(), "{:?} carries the value", violations[0]);
    }
}

// Parsing.

#[test]
fn parse_reports_json_syntax_errors_with_line_and_column() {
    match parse("{\n  \"updateId\": ,\n}") {
        Err(ImportManifestError::Syntax { line, column, .. }) => {
            assert_eq!((line, column), (2, 15))
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match parse("") {
        Err(ImportManifestError::Syntax { line, column, .. }) => assert_eq!((line, column), (1, 0)),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let error = parse("{\"a\": tru}").expect_err("not json");
    assert_eq!(error.to_string(), "import manifest is not valid json (line 1, column 10)");
}

#[test]
fn parse_refuses_invalid_manifests_with_every_violation() {
    let text = set(set(v5(), "/description", json!("")), "/files/0/sizeInBytes", json!(0)).to_string();
    match parse(&text) {
        Err(ImportManifestError::Invalid(violations)) => {
            let rules: Vec<&str> = violations.iter().map(|violation| violation.rule).collect();
            // `description` was appended, so it comes after `files` in the document.
            assert_eq!(rules, ["minimum", "minLength"]);
        }
        other => panic!("expected violations, got {other:?}"),
    }
    let error = parse(&set(v5(), "/description", json!("")).to_string()).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "import manifest is invalid: /description: description must not be empty, found \"\" [minLength]"
    );
}

#[test]
fn parse_and_from_str_agree() {
    let text = v4().to_string();
    let parsed = parse(&text).expect("valid");
    let from_str: duhub_proto::import_manifest::ImportManifest = text.parse().expect("valid");
    assert_eq!(parsed, from_str);
    assert_eq!(parsed.manifest_version, ManifestVersion::V4);
    assert_eq!(parsed.files[0].size_in_bytes, 718);
}

#[test]
fn nesting_and_odd_values_never_panic_and_validation_matches_the_model() {
    // Deep nesting is a syntax error, not a stack overflow.
    assert!(matches!(parse(&"[".repeat(100_000)), Err(ImportManifestError::Syntax { .. })));
    assert!(matches!(parse(&"{\"a\":".repeat(100_000)), Err(ImportManifestError::Syntax { .. })));

    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let odd_values = [
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(300)),
        json!("../x"),
        json!([]),
        json!([null]),
        json!({}),
        json!({ "a": "b" }),
        deep,
    ];
    let (_, example) = read_fixture(&Path::new(FIXTURES).join(AZ_EXAMPLE));
    let mut pointers = Vec::new();
    collect_pointers(&example, String::new(), &mut pointers);
    assert!(pointers.len() > 40, "walked the whole example: {}", pointers.len());
    for pointer in &pointers {
        let mut variants: Vec<Value> =
            odd_values.iter().map(|odd| set(example.clone(), pointer, odd.clone())).collect();
        variants.push(remove(example.clone(), pointer));
        for variant in variants {
            let violations = validate(&variant);
            match parse(&variant.to_string()) {
                Ok(_) => assert!(violations.is_empty(), "{pointer}: {violations:#?}"),
                Err(ImportManifestError::Invalid(reported)) => {
                    assert!(!reported.is_empty());
                    assert_eq!(reported, violations, "{pointer}");
                }
                Err(other) => {
                    panic!("{pointer}: validation accepted what the model refuses: {other}")
                }
            }
        }
    }
}

fn collect_pointers(value: &Value, at: String, pointers: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(object) => object
            .iter()
            .map(|(name, child)| (format!("{at}/{}", name.replace('~', "~0").replace('/', "~1")), child))
            .collect(),
        Value::Array(items) => {
            items.iter().enumerate().map(|(index, child)| (format!("{at}/{index}"), child)).collect()
        }
        _ => Vec::new(),
    };
    for (pointer, child) in children {
        pointers.push(pointer.clone());
        collect_pointers(child, pointer, pointers);
    }
}

// init v5.

/// The request the az example was made with (sizes and hashes taken from the fixture).
fn az_example_request() -> InitRequest {
    let mut request = InitRequest::new(UpdateId::new("Contoso", "Toaster", "1.0"), "2026-11-23T17:50:19Z");
    request.description = Some("Toaster firmware".into());
    request.compatibility = vec![vec![("manufacturer".into(), "Contoso".into()), ("model".into(), "Toaster".into())]];
    request.steps = vec![
        InitStep::Inline(InitInlineStep {
            handler: "microsoft/swupdate:1".into(),
            properties: Some(r#"{"installedCriteria":"1.0"}"#.into()),
            description: Some("Install image".into()),
            files: None,
            file_indices: vec![0],
        }),
        InitStep::Reference(InitReferenceStep {
            update_id: UpdateId::new("Contoso", "Leaf", "2.0"),
            description: None,
        }),
    ];
    request.files = vec![InitFile {
        name: "fw.swu".into(),
        size_in_bytes: 4096,
        sha256: "j3Ajne/cqdIwVqT+BPVtIEaBIm9bZCy5fKRepyg4fUQ=".into(),
        properties: None,
        download_handler: Some("microsoft/delta:1".into()),
        related_files: vec![InitRelatedFile {
            name: "delta.json".into(),
            size_in_bytes: 46,
            sha256: "xkF0UTNGWrjtxehOc87p9VUehnv8pCEMe4oavNXfpFA=".into(),
            properties: Some(r#"{"microsoft.sourceFileHashAlgorithm":"sha256"}"#.into()),
        }],
    }];
    request
}

/// A minimal request: one inline step on one file.
fn one_file_request(handler: &str) -> InitRequest {
    let mut request = InitRequest::new(UpdateId::new("Contoso", "Toaster", "1.0"), "2026-01-02T03:04:05Z");
    request.compatibility = vec![vec![("model".into(), "Toaster".into())]];
    request.steps =
        vec![InitStep::Inline(InitInlineStep { handler: handler.into(), file_indices: vec![0], ..Default::default() })];
    request.files =
        vec![InitFile { name: "fw.bin".into(), size_in_bytes: 10, sha256: SHA.into(), ..Default::default() }];
    request
}

fn first_inline_step(request: &mut InitRequest) -> &mut InitInlineStep {
    match &mut request.steps[0] {
        InitStep::Inline(step) => step,
        InitStep::Reference(_) => panic!("the first step is inline"),
    }
}

#[test]
fn init_reproduces_the_az_example_byte_for_byte() {
    let (text, fixture) = read_fixture(&Path::new(FIXTURES).join(AZ_EXAMPLE));
    let output = init_v5(&az_example_request()).expect("valid request");
    assert_eq!(output.manifest.to_string(), fixture.to_string(), "same members in the same order");
    let pretty = serde_json::to_string_pretty(&output.manifest).expect("serialises");
    assert_eq!(pretty, text.trim_end());
    assert!(output.warnings.is_empty(), "{:?}", output.warnings);
}

#[test]
fn init_writes_members_in_az_order() {
    let mut request = az_example_request();
    request.is_deployable = Some(false);
    let manifest = init_v5(&request).expect("valid").manifest;
    assert_eq!(
        keys(&manifest),
        [
            "manifestVersion",
            "createdDateTime",
            "updateId",
            "isDeployable",
            "description",
            "compatibility",
            "instructions",
            "files"
        ]
    );
    assert_eq!(keys(&manifest["updateId"]), ["name", "provider", "version"]);
    assert_eq!(
        keys(&manifest["instructions"]["steps"][0]),
        ["type", "handler", "files", "handlerProperties", "description"]
    );
    assert_eq!(keys(&manifest["instructions"]["steps"][1]["updateId"]), ["provider", "name", "version"]);
    assert_eq!(keys(&manifest["files"][0]), ["hashes", "filename", "sizeInBytes", "downloadHandler", "relatedFiles"]);
    assert_eq!(keys(&manifest["files"][0]["relatedFiles"][0]), ["hashes", "filename", "sizeInBytes", "properties"]);
}

#[test]
fn init_writes_only_a_false_is_deployable_and_non_empty_descriptions() {
    for (deployable, written) in [(None, None), (Some(true), None), (Some(false), Some(json!(false)))] {
        let mut request = az_example_request();
        request.is_deployable = deployable;
        let manifest = init_v5(&request).expect("valid").manifest;
        assert_eq!(manifest.get("isDeployable"), written.as_ref(), "{deployable:?}");
    }
    let mut request = az_example_request();
    request.description = Some(String::new());
    first_inline_step(&mut request).description = Some(String::new());
    let manifest = init_v5(&request).expect("valid").manifest;
    assert_eq!(manifest.get("description"), None);
    assert_eq!(manifest["instructions"]["steps"][0].get("description"), None);
}

#[test]
fn init_defaults_installed_criteria_with_a_warning() {
    for handler in ["microsoft/apt:1", "microsoft/swupdate:1", "microsoft/swupdate:2"] {
        let output = init_v5(&one_file_request(handler)).expect("valid");
        assert_eq!(
            output.manifest["instructions"]["steps"][0]["handlerProperties"],
            json!({ "installedCriteria": "1.0" })
        );
        assert_eq!(output.warnings.len(), 1, "{handler}");
        assert!(output.warnings[0].contains(handler), "{:?}", output.warnings);
    }
    // Other properties are kept, and the default goes after them.
    let mut request = one_file_request("microsoft/apt:1");
    first_inline_step(&mut request).properties = Some(r#"{"b":1,"a":2}"#.into());
    let properties =
        init_v5(&request).expect("valid").manifest["instructions"]["steps"][0]["handlerProperties"].clone();
    assert_eq!(keys(&properties), ["b", "a", "installedCriteria"]);
    // Handlers that do not need it get nothing.
    for handler in ["microsoft/script:1", "microsoft/simulator:1", "contoso/custom:1"] {
        let output = init_v5(&one_file_request(handler)).expect("valid");
        assert_eq!(output.manifest["instructions"]["steps"][0].get("handlerProperties"), None, "{handler}");
        assert!(output.warnings.is_empty());
    }
    // An explicit value is kept.
    let mut request = one_file_request("microsoft/swupdate:2");
    first_inline_step(&mut request).properties = Some(r#"{"installedCriteria":"2.1"}"#.into());
    let output = init_v5(&request).expect("valid");
    assert_eq!(output.manifest["instructions"]["steps"][0]["handlerProperties"]["installedCriteria"], "2.1");
    assert!(output.warnings.is_empty());
}

#[test]
fn init_refuses_unknown_microsoft_handlers() {
    for handler in ["microsoft/foo:1", "Microsoft/apt:1", "MICROSOFTX/apt:1", "microsoft/swupdate:3"] {
        match init_v5(&one_file_request(handler)) {
            Err(InitError::UnknownMicrosoftHandler { handler: refused }) => {
                assert_eq!(refused, handler)
            }
            other => panic!("{handler}: expected a refusal, got {other:?}"),
        }
    }
    let error = init_v5(&one_file_request("microsoft/foo:1")).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "unknown microsoft handler \"microsoft/foo:1\" (valid microsoft handlers: microsoft/apt:1, \
         microsoft/script:1, microsoft/simulator:1, microsoft/swupdate:1, microsoft/swupdate:2)"
    );
}

#[test]
fn init_without_validation_checks_nothing_and_adds_nothing() {
    let mut request = one_file_request("microsoft/foo:1");
    request.no_validation = true;
    request.files[0].sha256 = "not base64".into();
    let output = init_v5(&request).expect("no validation");
    assert_eq!(output.manifest["instructions"]["steps"][0]["handler"], "microsoft/foo:1");
    assert_eq!(output.manifest["files"][0]["hashes"]["sha256"], "not base64");
    let mut request = one_file_request("microsoft/swupdate:1");
    request.no_validation = true;
    let output = init_v5(&request).expect("no validation");
    assert_eq!(output.manifest["instructions"]["steps"][0].get("handlerProperties"), None);
    assert!(output.warnings.is_empty());
}

#[test]
fn init_validates_the_result() {
    let mut request = one_file_request("microsoft/script:1");
    request.files[0].sha256 = "abc".into();
    request.files[0].name = "../fw.bin".into();
    first_inline_step(&mut request).files = Some(vec!["../fw.bin".into()]);
    match init_v5(&request) {
        Err(InitError::Invalid(violations)) => {
            let found: Vec<(&str, &str)> = violations.iter().map(|v| (v.pointer.as_str(), v.rule)).collect();
            assert_eq!(found, [("/files/0/hashes/sha256", "sha256Format"), ("/files/0/filename", "plainFileName")]);
        }
        other => panic!("expected violations, got {other:?}"),
    }
    let mut no_compatibility = one_file_request("microsoft/script:1");
    no_compatibility.compatibility = vec![vec![]];
    match init_v5(&no_compatibility) {
        Err(InitError::Invalid(violations)) => assert_eq!(violations[0].pointer, "/compatibility"),
        other => panic!("expected violations, got {other:?}"),
    }
}

#[test]
fn init_requires_properties_to_be_json_objects() {
    let mut request = one_file_request("microsoft/script:1");
    first_inline_step(&mut request).properties = Some("[1]".into());
    match init_v5(&request) {
        Err(InitError::PropertiesNotObject { owner, found }) => {
            assert_eq!((owner.as_str(), found), ("step 1", "an array"))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut request = one_file_request("microsoft/script:1");
    first_inline_step(&mut request).properties = Some("{".into());
    let error = init_v5(&request).expect_err("not json");
    assert!(matches!(&error, InitError::PropertiesSyntax { owner, .. } if owner == "step 1"));
    assert_eq!(error.to_string(), "properties of step 1 are not valid json");

    let mut request = one_file_request("microsoft/script:1");
    request.files[0].properties = Some("\"text\"".into());
    let error = init_v5(&request).expect_err("not an object");
    assert_eq!(error.to_string(), "properties of file \"fw.bin\" must be a json object, found a string");

    let mut request = one_file_request("microsoft/script:1");
    request.files[0].related_files = vec![InitRelatedFile {
        name: "d.json".into(),
        size_in_bytes: 1,
        sha256: SHA.into(),
        properties: Some("1".into()),
    }];
    let error = init_v5(&request).expect_err("not an object");
    assert_eq!(error.to_string(), "properties of related file \"d.json\" must be a json object, found a number");
}

#[test]
fn init_derives_step_files_and_deduplicates_files_by_name() {
    let file = |name: &str, size: u64| InitFile {
        name: name.into(),
        size_in_bytes: size,
        sha256: SHA.into(),
        ..Default::default()
    };
    let related = |name: &str, size: u64| InitRelatedFile {
        name: name.into(),
        size_in_bytes: size,
        sha256: SHA.into(),
        properties: None,
    };
    let mut request = one_file_request("contoso/custom:1");
    request.files = vec![file("a.bin", 1), file("b.bin", 2), file("a.bin", 3), file("c.bin", 4)];
    request.files[1].related_files = vec![related("r1", 5), related("r1", 6), related("r2", 7)];
    first_inline_step(&mut request).file_indices = vec![0, 1, 2];
    request.steps.push(InitStep::Inline(InitInlineStep {
        handler: "contoso/custom:1".into(),
        files: Some(vec!["c.bin".into()]),
        file_indices: vec![3],
        ..Default::default()
    }));
    request.steps.push(InitStep::Inline(InitInlineStep {
        handler: "contoso/custom:1".into(),
        files: Some(vec![]),
        file_indices: vec![3],
        ..Default::default()
    }));
    let manifest = init_v5(&request).expect("valid").manifest;
    let steps = &manifest["instructions"]["steps"];
    assert_eq!(steps[0]["files"], json!(["a.bin", "b.bin"]));
    assert_eq!(steps[1]["files"], json!(["c.bin"]));
    assert_eq!(steps[2]["files"], json!(["c.bin"]));
    let files: Vec<(&Value, &Value)> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| (&file["filename"], &file["sizeInBytes"]))
        .collect();
    assert_eq!(files, [(&json!("a.bin"), &json!(1)), (&json!("b.bin"), &json!(2)), (&json!("c.bin"), &json!(4))]);
    assert_eq!(
        manifest["files"][1]["relatedFiles"],
        json!([
            { "hashes": { "sha256": SHA }, "filename": "r1", "sizeInBytes": 5 },
            { "hashes": { "sha256": SHA }, "filename": "r2", "sizeInBytes": 7 }
        ])
    );
}

#[test]
fn init_refuses_a_step_pointing_past_the_files() {
    let mut request = one_file_request("contoso/custom:1");
    first_inline_step(&mut request).file_indices = vec![0, 4];
    match init_v5(&request) {
        Err(InitError::UnknownFileIndex { step, index, count }) => {
            assert_eq!((step, index, count), (1, 4, 1))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn init_with_reference_steps_only_writes_no_files() {
    let mut request = InitRequest::new(UpdateId::new("Contoso", "Bundle", "1.0"), "2026-01-02T03:04:05Z");
    request.compatibility = vec![vec![("model".into(), "Toaster".into())]];
    request.steps = vec![InitStep::Reference(InitReferenceStep {
        update_id: UpdateId::new("Contoso", "Leaf", "2.0"),
        description: Some("Leaf firmware".into()),
    })];
    let manifest = init_v5(&request).expect("valid").manifest;
    assert_eq!(keys(&manifest), ["manifestVersion", "createdDateTime", "updateId", "compatibility", "instructions"]);
    assert_eq!(
        manifest["instructions"]["steps"][0].to_string(),
        r#"{"type":"reference","updateId":{"provider":"Contoso","name":"Leaf","version":"2.0"},"description":"Leaf firmware"}"#
    );
}

#[test]
fn init_builds_one_compatibility_object_per_option() {
    let mut request = az_example_request();
    request.compatibility = vec![
        vec![("model".into(), "A".into()), ("rev".into(), "1".into()), ("model".into(), "B".into())],
        vec![],
        vec![("model".into(), "C".into())],
    ];
    let manifest = init_v5(&request).expect("valid").manifest;
    assert_eq!(manifest["compatibility"].to_string(), r#"[{"model":"B","rev":"1"},{"model":"C"}]"#);
}
