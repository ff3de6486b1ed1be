//! The Device Update API commands (`update import|list|show|delete`, `group`, `device-class`,
//! `deployment`, `compliance`, `token`): their help, the checks made before connecting, and
//! how a refused request ends. What the server's Device Update endpoints answer is tested with
//! the server.

use std::path::PathBuf;

use duhub_testkit::ServeProcess;
use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::{assert_help, duhub, json_error, json_of, temp_dir, write_file};

/// Every Device Update command, as its words on the command line.
const COMMANDS: &[&[&str]] = &[
    &["update", "import"],
    &["update", "list"],
    &["update", "show"],
    &["update", "delete"],
    &["group", "list"],
    &["group", "show"],
    &["device-class", "list"],
    &["device-class", "show"],
    &["deployment", "create"],
    &["deployment", "list"],
    &["deployment", "show"],
    &["deployment", "status"],
    &["deployment", "cancel"],
    &["deployment", "retry"],
    &["deployment", "delete"],
    &["deployment", "pause"],
    &["deployment", "resume"],
    &["deployment", "promote"],
    &["deployment", "abort"],
    &["compliance"],
    &["token", "list"],
    &["token", "create"],
    &["token", "revoke"],
];

#[test]
fn every_device_update_command_has_help_with_json_admin_instance_and_examples() {
    for command in COMMANDS {
        assert_help(command, &["--json", "--admin <FILE>", "--instance <ID>", "Examples:"]);
    }
    assert_help(&["group"], &["list", "show"]);
    assert_help(&["device-class"], &["list", "show"]);
    assert_help(
        &["deployment"],
        &["create", "list", "show", "status", "cancel", "retry", "delete", "pause", "resume", "promote", "abort"],
    );
    assert_help(&["token"], &["list", "create", "revoke"]);
    assert_help(&["update"], &["import", "list", "show", "delete"]);
}

#[test]
fn help_names_each_commands_own_options() {
    assert_help(&["update", "import"], &["<MANIFEST>", "[FILE]...", "--friendly-name <NAME>", "--no-wait"]);
    assert_help(&["update", "list"], &["--provider <PROVIDER>", "--name <NAME>", "--filter <FILTER>"]);
    assert_help(&["update", "show"], &["<PROVIDER> <NAME> <VERSION>", "--files"]);
    assert_help(&["update", "delete"], &["<PROVIDER> <NAME> <VERSION>", "--no-wait"]);
    assert_help(
        &["deployment", "create"],
        &[
            "<GROUP> <DEPLOYMENT_ID>",
            "--update <PROVIDER/NAME/VERSION>",
            "--start <RFC3339>",
            "--rollback-update <PROVIDER/NAME/VERSION>",
            "--rollback-failed-count <N>",
            "--rollback-failed-percent <P>",
            "Phased rollout:",
            "--waves <SIZE,...>",
            "--bake <DURATION>",
            "--success-percent <P>",
            "--max-failure-percent <P>",
            "--min-executed <N>",
            "--device-timeout <DURATION>",
            "--on-failure <pause|abort|rollback>",
            "--rate <N/min[,double]>",
            "--window <HH:MM-HH:MM>",
            "--approve-waves",
            "--seed <N>",
            "--waves 1%,10%,50%,100%",
        ],
    );
    assert_help(&["deployment", "status"], &["<GROUP> <ID>", "--devices"]);
    assert_help(&["deployment", "cancel"], &["--device-class <CLASS>"]);
    assert_help(&["deployment", "retry"], &["--device-class <CLASS>"]);
    assert_help(&["compliance"], &["--group <GROUP>", "--device-class <CLASS>"]);
}

/// Writes an import manifest listing `fw.swu` and its related file `delta.json` into `dir`.
fn write_manifest(dir: &std::path::Path) -> PathBuf {
    let manifest = json!({
        "updateId": {"provider": "Contoso", "name": "Toaster", "version": "1.0"},
        "compatibility": [{"manufacturer": "Contoso", "model": "Toaster"}],
        "instructions": {"steps": [{"handler": "microsoft/swupdate:1", "files": ["fw.swu"]}]},
        "files": [{
            "filename": "fw.swu",
            "sizeInBytes": 8,
            "hashes": {"sha256": "AAAA"},
            "relatedFiles": [{"filename": "delta.json", "sizeInBytes": 2, "hashes": {"sha256": "AAAA"}}],
        }],
        "createdDateTime": "2026-11-23T17:50:19Z",
        "manifestVersion": "5.0",
    });
    write_file(dir, "toaster.importmanifest.json", manifest.to_string().as_bytes())
}

#[test]
fn import_names_a_missing_listed_file_before_connecting() {
    let dir = temp_dir();
    let manifest = write_manifest(dir.path());
    write_file(dir.path(), "fw.swu", b"firmware");
    // There is no admin.json: the missing related file must be found first.
    let admin = dir.path().join("no-such-admin.json");
    duhub()
        .args(["update", "import"])
        .arg(&manifest)
        .arg("--admin")
        .arg(&admin)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with("error: cannot upload delta.json"))
        .stderr(predicate::str::contains(dir.path().join("delta.json").display().to_string()))
        .stderr(predicate::str::contains("admin.json").not());
    let message = json_error(duhub().args(["update", "import", "--json"]).arg(&manifest).arg("--admin").arg(&admin));
    assert!(message.contains("delta.json"), "{message}");
}

#[test]
fn import_with_files_needs_every_listed_one() {
    let dir = temp_dir();
    let manifest = write_manifest(dir.path());
    let firmware = write_file(dir.path(), "build/fw.swu", b"firmware");
    duhub()
        .args(["update", "import"])
        .arg(&manifest)
        .arg(&firmware)
        .arg("--admin")
        .arg(dir.path().join("no-such-admin.json"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the manifest lists delta.json, but no FILE is named so"));
}

#[test]
fn import_refuses_a_manifest_that_is_not_json_or_names_paths() {
    let dir = temp_dir();
    let admin = dir.path().join("no-such-admin.json");
    let not_json = write_file(dir.path(), "m.json", b"{");
    duhub()
        .args(["update", "import"])
        .arg(&not_json)
        .arg("--admin")
        .arg(&admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a JSON import manifest"));
    let escaping = write_file(dir.path(), "e.json", br#"{"files": [{"filename": "../etc/passwd"}]}"#);
    duhub()
        .args(["update", "import"])
        .arg(&escaping)
        .arg("--admin")
        .arg(&admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("files[0].filename \"../etc/passwd\" is not a plain file name"));
}

#[test]
fn commands_without_admin_json_say_how_to_get_one() {
    let dir = temp_dir();
    duhub()
        .current_dir(dir.path())
        .env_remove("DUHUB_ADMIN")
        .args(["group", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read duhub-data/admin.json"))
        .stderr(predicate::str::contains("duhub serve"));
}

#[test]
fn usage_errors_are_found_before_connecting() {
    let admin = ["--admin", "/nonexistent/admin.json"];
    duhub()
        .args(["update", "list", "--provider", "Contoso", "--filter", "x"])
        .args(admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--filter applies to all updates"));
    duhub()
        .args(["update", "list", "--name", "Toaster"])
        .args(admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--provider <PROVIDER>"));
    duhub()
        .args(["deployment", "create", "g", "d", "--update", "Contoso/Toaster"])
        .args(admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("expected PROVIDER/NAME/VERSION"));
    duhub()
        .args(["deployment", "create", "g", "d", "--update", "P/N/1.0", "--rollback-update", "P/N/0.9"])
        .args(admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--rollback-failed-count <N>"));
    duhub()
        .args(["compliance", "--device-class", "c"])
        .args(admin)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--group <GROUP>"));
}

/// A request the server refuses ends with exit code 1 and, with --json, the server's error
/// object. (A missing update is refused whether or not the server serves the Device Update API.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_exits_1_with_the_servers_error() {
    let root = temp_dir();
    let node = ServeProcess::start(&PathBuf::from(env!("CARGO_BIN_EXE_duhub")), &root.path().join("data"), None)
        .await
        .unwrap();
    let admin = root.path().join("data/admin.json");
    let show = move |json: bool| {
        let mut command = duhub();
        command.args(["update", "show", "NoSuchProvider", "NoSuchName", "9.9.9", "--admin"]).arg(&admin);
        if json {
            command.arg("--json");
        }
        command.assert().code(1).stderr(predicate::str::starts_with("error: ")).get_output().clone()
    };
    let output = tokio::task::spawn_blocking(move || (show(false), show(true))).await.unwrap();
    let (human, json) = output;
    assert!(human.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains(
            "from GET /deviceUpdate/default/updates/providers/NoSuchProvider/names/NoSuchName/versions/9.9.9"
        ),
        "{stderr}\nserver log:\n{}",
        node.log()
    );
    let value = json_of(&json.stdout);
    let error = value.get("error").and_then(Value::as_object).unwrap_or_else(|| panic!("{value}"));
    assert!(error.get("code").and_then(Value::as_str).is_some_and(|c| !c.is_empty()), "{value}");
    assert!(error.get("message").and_then(Value::as_str).is_some(), "{value}");
}

/// Runs the built `duhub` with `args` on a blocking thread; returns (exit code, stdout JSON).
async fn cli_json(args: Vec<String>) -> (i32, Value) {
    tokio::task::spawn_blocking(move || {
        let output = duhub().args(&args).arg("--json").output().unwrap();
        let code = output.status.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{args:?}: not JSON: {text}\n{}", String::from_utf8_lossy(&output.stderr)));
        (code, value)
    })
    .await
    .unwrap()
}

/// The Device Update commands on a real `duhub serve`, with a device played by the test: import
/// with the CLI (uploads), a device reports its agent, deploy with the CLI, the device gets the
/// deployment, reports success, and the CLI's status and compliance show it. (`readme.rs` runs
/// the README's own commands with the real agent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_flow_imports_deploys_and_watches_status() {
    let root = temp_dir();
    let node = ServeProcess::start(&PathBuf::from(env!("CARGO_BIN_EXE_duhub")), &root.path().join("data"), None)
        .await
        .unwrap();
    let admin = root.path().join("data/admin.json").display().to_string();
    let updates = root.path().join("updates");
    std::fs::create_dir_all(&updates).unwrap();
    let fixture = duhub_testkit::ImportFixture::new(
        "contoso",
        "toaster",
        "1.0",
        &[("manufacturer", "contoso"), ("model", "toaster")],
        &[("install.sh", b"#!/bin/sh\necho installed\n")],
    );
    fixture.write(&updates).unwrap();
    let manifest = updates.join(fixture.manifest_name()).display().to_string();
    let args = |words: &[&str]| -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).chain(["--admin".to_owned(), admin.clone()]).collect()
    };

    let (code, operation) = cli_json(args(&["update", "import", &manifest])).await;
    assert_eq!(code, 0, "{operation}\n{}", node.log());
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    let (code, listed) = cli_json(args(&["update", "list"])).await;
    assert_eq!(code, 0);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (code, again) = cli_json(args(&["update", "import", &manifest])).await;
    assert_eq!(code, 1, "importing the same update again fails: {again}");

    // A device with an agent in group "lab".
    let service = node.service().unwrap();
    let (key, _) = service.create_device("toaster-1").await.unwrap();
    service.set_group("toaster-1", "lab").await.unwrap();
    // The agent configuration the README hands to duhub-agent: complete and valid.
    let config = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            let output = duhub()
                .args(["device", "agent-config", "toaster-1", "--model", "toaster", "--admin", &admin])
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        }
    })
    .await
    .unwrap();
    let settings: duhub_agent::settings::Settings = toml::from_str(&config).unwrap();
    settings.check().unwrap();
    assert!(settings.connection_string.contains(&format!("SharedAccessKey={key}")), "{config}");
    assert_eq!(settings.model, "toaster");
    assert_eq!(settings.mqtt_port, Some(node.mqtt.port()));
    assert!(settings.ca_pem.as_deref().is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")));
    let roots = duhub_proto::root_key::parse_root_key_list(settings.root_keys.as_deref().unwrap()).unwrap();
    assert_eq!(roots.len(), 1, "the server's root key: {config}");
    let mut device = node.connect_device("toaster-1", &key).await;
    device.subscribe_desired().await.unwrap();
    let startup = json!({"deviceUpdate": {"__t": "c", "agent": {
        "deviceProperties": {"manufacturer": "contoso", "model": "toaster", "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3"},
        "compatPropertyNames": "manufacturer,model"}}});
    device.patch_reported(&startup).await.unwrap();
    let (code, groups) = cli_json(args(&["group", "list"])).await;
    assert_eq!(code, 0);
    assert!(groups.to_string().contains("\"lab\""), "{groups}");

    let (code, deployment) =
        cli_json(args(&["deployment", "create", "lab", "rollout-1", "--update", "contoso/toaster/1.0"])).await;
    assert_eq!(code, 0, "{deployment}");
    let service_property = loop {
        let patch = device.next_desired(std::time::Duration::from_secs(20)).await.unwrap();
        if let Some(service) = patch.body.pointer("/deviceUpdate/service").filter(|s| s.get("workflow").is_some()) {
            break service.clone();
        }
    };
    let workflow = service_property["workflow"]["id"].as_str().unwrap().to_owned();
    let done = json!({"deviceUpdate": {"__t": "c", "agent": {
        "state": 0, "workflow": {"action": 3, "id": workflow},
        "lastInstallResult": {"resultCode": 700, "extendedResultCodes": "00000000", "resultDetails": null},
        "installedUpdateId": "{\"provider\":\"contoso\",\"name\":\"toaster\",\"version\":\"1.0\"}"}}});
    device.patch_reported(&done).await.unwrap();

    let (code, status) = cli_json(args(&["deployment", "status", "lab", "rollout-1", "--devices"])).await;
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["status"]["subgroupStatus"][0]["devicesCompletedSucceededCount"], 1, "{status}");
    assert!(status.to_string().contains("\"Succeeded\""), "{status}");
    let (code, compliance) = cli_json(args(&["compliance"])).await;
    assert_eq!(code, 0);
    assert_eq!(compliance["onLatestUpdateDeviceCount"], 1, "{compliance}");
}
