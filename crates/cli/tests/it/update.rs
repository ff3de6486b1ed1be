//! `duhub update init v5`, `duhub update hash`, `duhub update validate`.

use std::path::Path;

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::{
    INIT_TOASTER, assert_help, duhub, fixture, fixture_files, fixture_text, json_error, json_of, run_json, temp_dir,
    write_file,
};

// Base64 SHA-256 of known contents, computed independently (`sha256sum | xxd -r -p | base64`).
const SHA256_EMPTY: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
const SHA256_ABC: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
const SHA256_HELLO: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
const SHA256_XYZ: &str = "Ngi8oeROpsTSaOttsCJgJpiSwLQrhrvx53pvoWw8koI=";
const SHA256_4096_ZEROS: &str = "rX+sslhvxulmwATX0dFrAk9YBf98tHx6hdq9i0iJLKc=";
/// A 46-byte related file: the size of the one in the az example, so only its hash differs.
const DELTA_JSON: &str = r#"{"sourceFileHashAlgorithm":"sha256","v":"0.9"}"#;
const SHA256_DELTA_JSON: &str = "2bw2YCyT3nGBgPnK1TTnRkRGSzHJWiwRiZZvNl+1L4o=";

/// The az example's fixture and what in it depends on the clock and the file contents.
const AZ_EXAMPLE: &str = "example-import-manifest-v5.generated-by-az-cli.json";
const AZ_CREATED: &str = "2026-11-23T17:50:19Z";
const AZ_FW_SHA256: &str = "j3Ajne/cqdIwVqT+BPVtIEaBIm9bZCy5fKRepyg4fUQ=";
const AZ_DELTA_SHA256: &str = "xkF0UTNGWrjtxehOc87p9VUehnv8pCEMe4oavNXfpFA=";

/// The arguments the az example was generated with.
const AZ_EXAMPLE_ARGS: &[&str] = &[
    "update",
    "init",
    "v5",
    "--update-provider",
    "Contoso",
    "--update-name",
    "Toaster",
    "--update-version",
    "1.0",
    "--description",
    "Toaster firmware",
    "--compat",
    "manufacturer=Contoso",
    "model=Toaster",
    "--step",
    "handler=microsoft/swupdate:1",
    r#"properties={"installedCriteria":"1.0"}"#,
    "description=Install image",
    "--file",
    "path=fw.swu",
    "downloadHandler=microsoft/delta:1",
    "--related-file",
    "path=delta.json",
    r#"properties={"microsoft.sourceFileHashAlgorithm":"sha256"}"#,
    "--step",
    "updateId.provider=Contoso",
    "updateId.name=Leaf",
    "updateId.version=2.0",
];

/// Runs `update init v5` in `dir` with `INIT_TOASTER` and `more`, expects success with exactly
/// `stderr`, and returns the manifest.
fn init_toaster(dir: &Path, more: &[&str], stderr: &str) -> Value {
    let assert = duhub().current_dir(dir).args(INIT_TOASTER).args(more).assert().success().stderr(stderr.to_owned());
    json_of(&assert.get_output().stdout)
}

/// Runs `update init v5` in `dir` with `INIT_TOASTER` and `more` and expects exit code 2, an
/// empty stdout and an error on stderr that contains `message`.
fn init_toaster_fails(dir: &Path, more: &[&str], message: &str) {
    duhub()
        .current_dir(dir)
        .args(INIT_TOASTER)
        .args(more)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with("error: "))
        .stderr(predicate::str::contains(message));
}

/// Asserts `created` is `YYYY-MM-DDTHH:MM:SSZ` and within ten minutes of now.
fn assert_recent_timestamp(created: &str) {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let parsed = time::PrimitiveDateTime::parse(created, &format)
        .unwrap_or_else(|e| panic!("createdDateTime {created:?} is not %Y-%m-%dT%H:%M:%SZ: {e}"))
        .assume_utc();
    let skew = (time::OffsetDateTime::now_utc() - parsed).abs();
    assert!(skew < time::Duration::minutes(10), "createdDateTime {created} is not now");
}

#[test]
fn help_of_every_update_command_lists_its_options() {
    assert_help(&["update"], &["init", "hash", "validate", "import", "list", "show", "delete"]);
    assert_help(&["update", "init"], &["v5"]);
    assert_help(
        &["update", "init", "v5"],
        &[
            "--update-provider <PROVIDER>",
            "--update-name <NAME>",
            "--update-version <VERSION>",
            "--compat <KEY=VALUE>",
            "--step <KEY=VALUE>",
            "--file <KEY=VALUE>",
            "--related-file <KEY=VALUE>",
            "--description <DESCRIPTION>",
            "--is-deployable <BOOL>",
            "--no-validation",
            "--json",
            "Example:",
        ],
    );
    assert_help(&["update", "hash"], &["<FILE>...", "--hash-algo <HASH_ALGO>", "--json"]);
    assert_help(&["update", "validate"], &["<FILE>", "--json"]);
}

// ---- update init v5 ----

#[test]
fn init_v5_reproduces_the_az_cli_example() {
    let dir = temp_dir();
    write_file(dir.path(), "fw.swu", &[0u8; 4096]);
    write_file(dir.path(), "delta.json", DELTA_JSON.as_bytes());
    let assert = duhub().current_dir(dir.path()).args(AZ_EXAMPLE_ARGS).assert().success().stderr("");
    let text = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let created = json_of(text.as_bytes())["createdDateTime"].as_str().unwrap().to_owned();
    assert_recent_timestamp(&created);

    let fixture = fixture_text(AZ_EXAMPLE);
    for original in [AZ_CREATED, AZ_FW_SHA256, AZ_DELTA_SHA256, r#""sizeInBytes": 4096"#, r#""sizeInBytes": 46"#] {
        assert_eq!(fixture.matches(original).count(), 1, "the fixture holds {original} once");
    }
    let expected = fixture
        .replace(AZ_CREATED, &created)
        .replace(AZ_FW_SHA256, SHA256_4096_ZEROS)
        .replace(AZ_DELTA_SHA256, SHA256_DELTA_JSON);
    // Text comparison: member order and formatting must be az's too.
    assert_eq!(text, format!("{}\n", expected.trim_end()));
}

#[test]
fn init_v5_gives_each_file_to_the_step_before_it_and_each_related_file_to_the_file_before_it() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "b.bin", b"hello");
    write_file(dir.path(), "sub/c.bin", b"xyz");
    write_file(dir.path(), "r1.json", b"hello");
    write_file(dir.path(), "r2.json", b"abc");
    write_file(dir.path(), "r3.json", b"xyz");
    let manifest = init_toaster(
        dir.path(),
        &[
            "--compat",
            "manufacturer=Contoso",
            "model=Oven",
            "--step",
            "handler=microsoft/script:1",
            "description=first",
            "--file",
            "path=a.bin",
            "--related-file",
            "path=r1.json",
            "--file",
            "path=b.bin",
            "--related-file",
            "path=r2.json",
            "--related-file",
            "path=r3.json",
            r#"properties={"k":"v"}"#,
            "--step",
            "handler=microsoft/apt:1",
            r#"properties={"installedCriteria":"2.0"}"#,
            "--file",
            "path=sub/c.bin",
            "downloadHandler=contoso/dl:1",
            r#"properties={"p":1}"#,
        ],
        "",
    );
    assert_eq!(
        manifest["compatibility"],
        json!([{ "manufacturer": "Contoso", "model": "Toaster" }, { "manufacturer": "Contoso", "model": "Oven" }])
    );
    assert_eq!(
        manifest["instructions"],
        json!({ "steps": [
            { "type": "inline", "handler": "microsoft/script:1", "files": ["a.bin", "b.bin"], "description": "first" },
            {
                "type": "inline",
                "handler": "microsoft/apt:1",
                "files": ["c.bin"],
                "handlerProperties": { "installedCriteria": "2.0" }
            },
        ] })
    );
    assert_eq!(
        manifest["files"],
        json!([
            {
                "hashes": { "sha256": SHA256_ABC },
                "filename": "a.bin",
                "sizeInBytes": 3,
                "relatedFiles": [{ "hashes": { "sha256": SHA256_HELLO }, "filename": "r1.json", "sizeInBytes": 5 }]
            },
            {
                "hashes": { "sha256": SHA256_HELLO },
                "filename": "b.bin",
                "sizeInBytes": 5,
                "relatedFiles": [
                    { "hashes": { "sha256": SHA256_ABC }, "filename": "r2.json", "sizeInBytes": 3 },
                    {
                        "hashes": { "sha256": SHA256_XYZ },
                        "filename": "r3.json",
                        "sizeInBytes": 3,
                        "properties": { "k": "v" }
                    }
                ]
            },
            {
                "hashes": { "sha256": SHA256_XYZ },
                "filename": "c.bin",
                "sizeInBytes": 3,
                "properties": { "p": 1 },
                "downloadHandler": { "id": "contoso/dl:1" }
            }
        ])
    );
}

#[test]
fn init_v5_files_option_overrides_the_files_that_follow_a_step() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "b.bin", b"hello");
    let manifest = init_toaster(
        dir.path(),
        &[
            "--step",
            "handler=microsoft/script:1",
            "files=b.bin",
            "--file",
            "path=a.bin",
            "--file",
            "path=b.bin",
            "--step",
            "handler=contoso/x:1",
            "files=a.bin, b.bin",
        ],
        "",
    );
    assert_eq!(
        manifest["instructions"]["steps"],
        json!([
            { "type": "inline", "handler": "microsoft/script:1", "files": ["b.bin"] },
            { "type": "inline", "handler": "contoso/x:1", "files": ["a.bin", "b.bin"] },
        ])
    );
    let names: Vec<&str> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.bin", "b.bin"]);
}

#[test]
fn init_v5_defaults_installed_criteria_with_a_warning() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "b.bin", b"hello");
    let manifest = init_toaster(
        dir.path(),
        &[
            "--step",
            "handler=microsoft/swupdate:2",
            "--file",
            "path=a.bin",
            "--step",
            "handler=microsoft/apt:1",
            r#"properties={"x":1}"#,
            "--file",
            "path=b.bin",
        ],
        "warning: handler \"microsoft/swupdate:2\" of step 1 requires handlerProperties.installedCriteria, \
         it was set to \"1.0\"\n\
         warning: handler \"microsoft/apt:1\" of step 2 requires handlerProperties.installedCriteria, \
         it was set to \"1.0\"\n",
    );
    let steps = &manifest["instructions"]["steps"];
    assert_eq!(steps[0]["handlerProperties"], json!({ "installedCriteria": "1.0" }));
    assert_eq!(steps[1]["handlerProperties"], json!({ "x": 1, "installedCriteria": "1.0" }));
}

#[test]
fn init_v5_refuses_an_unknown_microsoft_handler() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    for handler in ["microsoft/foo:1", "microsoft/swupdate:3", "Microsoft/swupdate:1"] {
        init_toaster_fails(
            dir.path(),
            &["--step", &format!("handler={handler}"), "--file", "path=a.bin"],
            &format!("unknown microsoft handler \"{handler}\""),
        );
    }
}

#[test]
fn init_v5_no_validation_skips_the_handler_check_the_default_and_the_schema() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "empty.bin", b"");
    let manifest = init_toaster(
        dir.path(),
        &[
            "--no-validation",
            "--step",
            "handler=microsoft/foo:1",
            "--file",
            "path=a.bin",
            "--step",
            "handler=microsoft/swupdate:1",
            "--file",
            "path=empty.bin",
        ],
        "",
    );
    assert_eq!(
        manifest["instructions"]["steps"],
        json!([
            { "type": "inline", "handler": "microsoft/foo:1", "files": ["a.bin"] },
            { "type": "inline", "handler": "microsoft/swupdate:1", "files": ["empty.bin"] },
        ])
    );
    assert_eq!(
        manifest["files"][1],
        json!({ "hashes": { "sha256": SHA256_EMPTY }, "filename": "empty.bin", "sizeInBytes": 0 })
    );
    // Without --no-validation the empty file is refused (sizeInBytes must be at least 1).
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "--file", "path=empty.bin"],
        "/files/0/sizeInBytes: sizeInBytes 0 is below the minimum of 1 [minimum]",
    );
}

#[test]
fn init_v5_writes_is_deployable_only_when_false() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    let step = ["--step", "handler=microsoft/script:1", "--file", "path=a.bin"];
    let not_deployable = init_toaster(dir.path(), &[&["--is-deployable", "false"], &step[..]].concat(), "");
    let keys: Vec<&String> = not_deployable.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["manifestVersion", "createdDateTime", "updateId", "isDeployable", "compatibility", "instructions", "files"]
    );
    assert_eq!(not_deployable["isDeployable"], json!(false));

    let deployable = init_toaster(dir.path(), &[&["--is-deployable", "true"], &step[..]].concat(), "");
    assert_eq!(deployable.get("isDeployable"), None);
    let default = init_toaster(dir.path(), &step, "");
    assert_eq!(default.get("isDeployable"), None);
    assert_eq!(default.get("description"), None);

    init_toaster_fails(dir.path(), &[&["--is-deployable", "maybe"], &step[..]].concat(), "invalid value 'maybe'");
}

#[test]
fn init_v5_refuses_a_related_file_before_any_file() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "r.json", b"{}");
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "--related-file", "path=r.json", "--file", "path=a.bin"],
        "--related-file must follow the --file it belongs to",
    );
}

#[test]
fn init_v5_refuses_missing_files_and_malformed_steps() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "--file", "path=missing.bin"],
        "opening missing.bin",
    );
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "--file", "path=a.bin", "--related-file", "path=gone.json"],
        "opening gone.json",
    );
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "--file", "downloadHandler=x/y:1"],
        "--file needs path=<file>",
    );
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "properties={not json", "--file", "path=a.bin"],
        "properties of step 1 are not valid json",
    );
    init_toaster_fails(
        dir.path(),
        &["--step", "handler=microsoft/script:1", "properties=[1]", "--file", "path=a.bin"],
        "properties of step 1 must be a json object",
    );
    init_toaster_fails(
        dir.path(),
        &["--step", "description=nothing", "--file", "path=a.bin"],
        "a step needs handler=<id>",
    );

    let message = json_error(duhub().current_dir(dir.path()).args(INIT_TOASTER).args([
        "--json",
        "--step",
        "handler=microsoft/script:1",
        "--file",
        "path=missing.bin",
    ]));
    assert!(message.starts_with("opening missing.bin: "), "{message}");
}

// ---- update hash ----

#[test]
fn hash_of_an_empty_file_has_the_shape_az_prints() {
    let dir = temp_dir();
    let path = write_file(dir.path(), "empty.bin", b"");
    let assert = duhub().args(["update", "hash"]).arg(&path).assert().success().stderr("");
    let expected = json!([{
        "bytes": 0,
        "hash": SHA256_EMPTY,
        "hashAlgorithm": "sha256",
        "uri": format!("file://{}", path.display()),
    }]);
    // Text comparison, so the member order is checked too.
    assert_eq!(
        String::from_utf8_lossy(&assert.get_output().stdout),
        serde_json::to_string_pretty(&expected).unwrap() + "\n"
    );
}

#[test]
fn hash_of_several_files_keeps_their_order_and_resolves_relative_paths() {
    let dir = temp_dir();
    write_file(dir.path(), "b.bin", b"hello");
    write_file(dir.path(), "a.bin", b"abc");
    write_file(dir.path(), "a b#1.bin", &[0u8; 4096]);
    let cwd = dir.path().canonicalize().unwrap();
    let output = run_json(
        duhub().current_dir(dir.path()).args([
            "update",
            "hash",
            "b.bin",
            "a.bin",
            "a b#1.bin",
            "--hash-algo",
            "sha256",
            "--json",
        ]),
        0,
    );
    let uri = |name: &str| format!("file://{}/{name}", cwd.display());
    assert_eq!(
        output,
        json!([
            { "bytes": 5, "hash": SHA256_HELLO, "hashAlgorithm": "sha256", "uri": uri("b.bin") },
            { "bytes": 3, "hash": SHA256_ABC, "hashAlgorithm": "sha256", "uri": uri("a.bin") },
            { "bytes": 4096, "hash": SHA256_4096_ZEROS, "hashAlgorithm": "sha256", "uri": uri("a%20b%231.bin") },
        ])
    );
}

#[test]
fn hash_refuses_missing_files_and_other_algorithms() {
    let dir = temp_dir();
    write_file(dir.path(), "a.bin", b"abc");
    duhub()
        .current_dir(dir.path())
        .args(["update", "hash", "a.bin", "missing.bin"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with("error: opening missing.bin: "));
    duhub()
        .current_dir(dir.path())
        .args(["update", "hash", "a.bin", "--hash-algo", "sha1"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("invalid value 'sha1'"));
    duhub().args(["update", "hash"]).assert().code(2).stdout("");
}

// ---- update validate ----

/// The SchemaStore import manifest fixtures, valid (`test`) or invalid (`negative_test`).
fn schemastore_import_manifests(kind: &str) -> Vec<std::path::PathBuf> {
    let base = fixture(&format!("schemastore/{kind}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&base).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("azure-deviceupdate-import-manifest-") {
            files.extend(fixture_files(&format!("schemastore/{kind}/{name}")));
        }
    }
    files.sort();
    files
}

#[test]
fn validate_accepts_every_schemastore_import_manifest_test() {
    let files = schemastore_import_manifests("test");
    assert_eq!(files.len(), 4, "{files:?}");
    for file in files {
        duhub()
            .args(["update", "validate"])
            .arg(&file)
            .assert()
            .success()
            .stdout(format!("{}: valid\n", file.display()))
            .stderr("");
        assert_eq!(
            run_json(duhub().args(["update", "validate", "--json"]).arg(&file), 0),
            json!({ "valid": true, "errors": [] })
        );
    }
    assert_eq!(
        run_json(duhub().args(["update", "validate", "--json"]).arg(fixture(AZ_EXAMPLE)), 0),
        json!({ "valid": true, "errors": [] })
    );
}

#[test]
fn validate_rejects_every_schemastore_negative_test() {
    let expected: &[(&str, &str, &str)] = &[
        ("import-manifest-4.0/invalidstep-importmanifest.json", "/instructions/steps/0", "required"),
        ("import-manifest-4.0/nosteps-importmanifest.json", "/instructions/steps", "minItems"),
        ("import-manifest-4.0/toomanycompatinfo-importmanifest.json", "/compatibility/0", "maxProperties"),
        // Update manifests, not import manifests: refused for their manifestVersion "4".
        ("update-manifest-4/invalidreferencestep-full-updatemanifest.json", "/manifestVersion", "const"),
        ("update-manifest-4/toomanyfiles-mini-updatemanifest.json", "/manifestVersion", "const"),
    ];
    let mut all = Vec::new();
    for entry in std::fs::read_dir(fixture("schemastore/negative_test")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        all.extend(fixture_files(&format!("schemastore/negative_test/{name}")));
    }
    assert_eq!(all.len(), expected.len(), "{all:?}");
    for (file, pointer, rule) in expected {
        let path = fixture(&format!("schemastore/negative_test/azure-deviceupdate-{file}"));
        assert!(all.contains(&path), "{path:?}");
        let output = run_json(duhub().args(["update", "validate", "--json"]).arg(&path), 1);
        assert_eq!(output["valid"], json!(false), "{file}");
        let errors = output["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{file}: {output}");
        assert_eq!(
            (errors[0]["pointer"].as_str().unwrap(), errors[0]["rule"].as_str().unwrap()),
            (*pointer, *rule),
            "{file}"
        );
        duhub()
            .args(["update", "validate"])
            .arg(&path)
            .assert()
            .code(1)
            .stdout(predicate::str::starts_with(format!("{}: 1 problem\n  {pointer}: ", path.display())))
            .stdout(predicate::str::ends_with(format!(" [{rule}]\n")));
    }
}

#[test]
fn validate_reports_every_problem_with_its_pointer_and_rule() {
    let dir = temp_dir();
    let mut manifest: Value = serde_json::from_str(&fixture_text(AZ_EXAMPLE)).unwrap();
    manifest["updateId"]["version"] = json!("1");
    manifest["compatibility"] = json!([]);
    manifest["files"][0]["sizeInBytes"] = json!(-1);
    let path = write_file(dir.path(), "bad.json", serde_json::to_string_pretty(&manifest).unwrap().as_bytes());

    let output = run_json(duhub().args(["update", "validate", "--json"]).arg(&path), 1);
    let object = output.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["valid", "errors"]);
    assert_eq!(output["valid"], json!(false));
    let errors = output["errors"].as_array().unwrap();
    let found: Vec<(&str, &str)> =
        errors.iter().map(|e| (e["pointer"].as_str().unwrap(), e["rule"].as_str().unwrap())).collect();
    assert_eq!(
        found,
        [("/updateId/version", "pattern"), ("/compatibility", "minItems"), ("/files/0/sizeInBytes", "minimum")]
    );
    for error in errors {
        assert_eq!(error.as_object().unwrap().keys().collect::<Vec<_>>(), ["pointer", "rule", "message"]);
    }
    assert_eq!(errors[2]["message"], json!("sizeInBytes -1 is below the minimum of 1"));

    duhub()
        .args(["update", "validate"])
        .arg(&path)
        .assert()
        .code(1)
        .stderr("")
        .stdout(format!(
            "{}: 3 problems\n\
             \x20 /updateId/version: version \"1\" must be dot-separated numbers such as \"1.0\" or \"2021.11.8\" [pattern]\n\
             \x20 /compatibility: compatibility has 0 items (at least 1) [minItems]\n\
             \x20 /files/0/sizeInBytes: sizeInBytes -1 is below the minimum of 1 [minimum]\n",
            path.display()
        ));
}

#[test]
fn validate_reports_invalid_json_as_invalid_and_a_missing_file_as_an_error() {
    let dir = temp_dir();
    let path = write_file(dir.path(), "broken.json", b"{\"manifestVersion\": ");
    let output = run_json(duhub().args(["update", "validate", "--json"]).arg(&path), 1);
    assert_eq!(output["valid"], json!(false));
    let errors = output["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["pointer"], json!(""));
    assert_eq!(errors[0]["rule"], json!("json"));
    assert!(errors[0]["message"].as_str().unwrap().starts_with("not valid JSON: "), "{output}");

    let missing = dir.path().join("missing.json");
    duhub()
        .args(["update", "validate"])
        .arg(&missing)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with(format!("error: reading {}: ", missing.display())));
    let message = json_error(duhub().args(["update", "validate", "--json"]).arg(&missing));
    assert!(message.starts_with(&format!("reading {}: ", missing.display())), "{message}");
}
