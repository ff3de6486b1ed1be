//! `duhub device list|tag|group` against a real `duhub serve`, and the device agent run from
//! another directory with the settings `duhub device agent-config` wrote, unchanged.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::{Process, agent_binary, assert_help, duhub, json_of, temp_dir, test_environment, write_file};

/// `duhub serve` in `dir` on free ports, ready.
fn serve(dir: &Path) -> Process {
    std::fs::create_dir_all(dir).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_duhub"));
    command.arg("serve").current_dir(dir);
    let ports: [(&str, &OsStr); 3] = [
        ("DUHUB_HTTPS_PORT", OsStr::new("0")),
        ("DUHUB_MQTT_PORT", OsStr::new("0")),
        ("DUHUB_BIND", OsStr::new("127.0.0.1")),
    ];
    test_environment(&mut command, &ports);
    let mut server = Process::start(&mut command, &dir.join("serve.log"), "duhub serve");
    server.wait_for_output("duhub is running", Duration::from_secs(120));
    server
}

/// `duhub` in `dir`, where it finds `duhub-data/admin.json`.
fn cli(dir: &Path) -> Command {
    let mut command = duhub();
    command.current_dir(dir).env_remove("DUHUB_ADMIN").env_remove("DUHUB_INSTANCE");
    command
}

#[test]
fn device_commands_have_help() {
    assert_help(&["device"], &["list", "tag", "group", "agent-config"]);
    assert_help(&["device", "list"], &["--group <GROUP>", "--json", "agentState", "installedUpdate", "Examples:"]);
    assert_help(&["device", "tag"], &["<ID> <KEY=VALUE>...", "KEY=", "1024", "4096", "Examples:"]);
    assert_help(&["device", "group"], &["set", "clear"]);
    assert_help(&["device", "group", "set"], &["<ID> <GROUP>", "ADUGroup", "--json"]);
    assert_help(&["device", "group", "clear"], &["<ID>", "$default", "--json"]);
    assert_help(&["deployment", "status"], &["--wait", "--timeout <SECONDS>"]);
}

#[test]
fn bad_tags_are_refused_before_connecting() {
    let dir = temp_dir();
    // No server and no admin.json: the tag's problem is what is reported.
    for (args, message) in [
        (vec!["tag", "d1", "has space=1"], "invalid tag \"has space\": member names must not contain ' '"),
        (vec!["tag", "d1", "ADUGroup"], "is not KEY=VALUE"),
        (vec!["tag", "d1", "a.$b=1"], "invalid tag \"a.$b\""),
        (vec!["group", "set", "d1", "$default"], "use `duhub device group clear ID`"),
        (vec!["group", "set", "d1", ""], "must not be empty"),
    ] {
        cli(dir.path())
            .arg("device")
            .args(&args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains("admin.json").not());
    }
    let long = format!("k={}", "v".repeat(4097));
    cli(dir.path())
        .args(["device", "tag", "d1", &long])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("4096").and(predicate::str::contains("IoT Hub's rules")));
}

#[test]
fn tags_and_groups_are_set_listed_and_removed() {
    let root = temp_dir();
    let site = root.path().join("site");
    let _server = serve(&site);
    for id in ["toaster-1", "toaster-2", "sensor"] {
        cli(&site).args(["device", "create", id]).assert().success();
    }
    let run = |args: &[&str]| json_of(&cli(&site).args(args).arg("--json").assert().success().get_output().stdout);

    assert_eq!(
        run(&["device", "tag", "toaster-1", "location.site=berlin", "ring=canary"]),
        json!({"deviceId": "toaster-1", "tags": {"location": {"site": "berlin"}, "ring": "canary"}})
    );
    assert_eq!(
        run(&["device", "group", "set", "toaster-1", "lab"])["tags"],
        json!({"location": {"site": "berlin"}, "ring": "canary", "ADUGroup": "lab"})
    );
    run(&["device", "group", "set", "toaster-2", "lab"]);
    assert_eq!(run(&["device", "tag", "toaster-1", "ring=", "location="])["tags"], json!({"ADUGroup": "lab"}));
    cli(&site)
        .args(["device", "tag", "toaster-1", "floor=2"])
        .assert()
        .success()
        .stdout("tags of device toaster-1: ADUGroup=lab floor=2\n");

    // The list: no agent has reported yet, so only the tag says a group.
    let devices = run(&["device", "list"]);
    let summary: Vec<(&str, &Value, &str)> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["deviceId"].as_str().unwrap(), &d["group"], d["connectionState"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("sensor", &Value::Null, "Disconnected"),
            ("toaster-1", &json!("lab"), "Disconnected"),
            ("toaster-2", &json!("lab"), "Disconnected")
        ]
    );
    let lab = run(&["device", "list", "--group", "lab"]);
    let ids: Vec<&str> = lab.as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["toaster-1", "toaster-2"]);
    cli(&site)
        .args(["device", "list"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("DEVICE     STATUS   CONNECTION    GROUP  AGENT  INSTALLED UPDATE\n"))
        .stdout(predicate::str::contains("toaster-1  enabled  Disconnected  lab    -      -\n"));

    cli(&site)
        .args(["device", "group", "clear", "toaster-2"])
        .assert()
        .success()
        .stdout("device toaster-2 has no ADUGroup tag: it is in $default\n");
    let lab = run(&["device", "list", "--group", "lab"]);
    assert_eq!(lab.as_array().unwrap().len(), 1);
    // Untagged, but without an agent: in no Device Update group, not even $default.
    assert_eq!(run(&["device", "list", "--group", "$default"]), json!([]));
    // A device that does not exist is named in the error.
    cli(&site)
        .args(["device", "group", "set", "nobody", "lab"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("device nobody not found"));
}

/// Regression test for issue 10: `agent-config` writes `data_dir = "duhub-agent-ID"`, a relative
/// path, and the script handler ran the script by that path from inside its work folder. Here
/// the settings file is used as `agent-config` wrote it, by an agent started in another
/// directory, and the script checks that the paths it is given are absolute.
#[test]
fn the_agent_runs_with_agent_configs_output_from_another_directory() {
    agent_binary();
    let root = temp_dir();
    let (site, elsewhere) = (root.path().join("site"), root.path().join("elsewhere"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let _server = serve(&site);

    let script = "#!/bin/sh\n\
        while [ $# -gt 0 ]; do\n\
          case \"$1\" in\n\
            --action-*) action=\"$1\" ;;\n\
            --work-folder) work=\"$2\"; shift ;;\n\
            --result-file) result=\"$2\"; shift ;;\n\
          esac\n\
          shift\n\
        done\n\
        case \"$work\" in /*) ;; *) exit 3 ;; esac\n\
        case \"$result\" in /*) ;; *) exit 4 ;; esac\n\
        case \"$action\" in\n\
          --action-is-installed) code=901 ;;\n\
          --action-install) code=600; echo installed >> \"$work/../../installed.log\" ;;\n\
          *) code=700 ;;\n\
        esac\n\
        echo \"{\\\"resultCode\\\": $code, \\\"extendedResultCode\\\": 0}\" > \"$result\"\n";
    write_file(&site, "install.sh", script.as_bytes());
    let manifest = cli(&site)
        .args(["update", "init", "v5", "--update-provider", "contoso", "--update-name", "toaster"])
        .args(["--update-version", "1.0", "--compat", "manufacturer=contoso", "model=toaster"])
        .args(["--step", "handler=microsoft/script:1", r#"properties={"scriptFileName":"install.sh"}"#])
        .args(["--file", "path=./install.sh"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    write_file(&site, "toaster.importmanifest.json", &manifest);
    cli(&site).args(["update", "import", "toaster.importmanifest.json"]).assert().success();
    cli(&site).args(["device", "create", "toaster-1"]).assert().success();
    let settings = cli(&site)
        .args(["device", "agent-config", "toaster-1", "--manufacturer", "contoso", "--model", "toaster"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8_lossy(&settings).contains("\ndata_dir = \"duhub-agent-toaster-1\"\n"),
        "the case under test is a relative data_dir"
    );
    write_file(&site, "toaster-1.toml", &settings);

    // Started from another directory, with the settings file named relative to it.
    let mut command = std::process::Command::new(agent_binary());
    command.args(["--config", "../site/toaster-1.toml"]).current_dir(&elsewhere);
    test_environment(&mut command, &[]);
    let mut agent = Process::start(&mut command, &root.path().join("agent.log"), "duhub-agent");
    agent.wait_for_output("ready for deployments", Duration::from_secs(60));

    cli(&site).args(["device", "group", "set", "toaster-1", "lab"]).assert().success();
    cli(&site).args(["deployment", "create", "lab", "rollout-1", "--update", "contoso/toaster/1.0"]).assert().success();
    let waited = cli(&site)
        .args(["deployment", "status", "lab", "rollout-1", "--wait", "--timeout", "120", "--json"])
        .assert()
        .get_output()
        .clone();
    assert!(
        waited.status.success(),
        "the deployment did not succeed: {}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr),
        agent.log()
    );
    let status = json_of(&waited.stdout);
    assert_eq!(status["subgroupStatus"][0]["devicesCompletedSucceededCount"], 1, "{status}");

    // The data directory is beside the settings file, and nothing was written where the agent
    // was started.
    let data_dir = site.join("duhub-agent-toaster-1");
    assert!(data_dir.join("journal.json").is_file(), "{}", agent.log());
    assert_eq!(std::fs::read_to_string(data_dir.join("installed.log")).unwrap(), "installed\n");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    let devices = json_of(&cli(&site).args(["device", "list", "--json"]).assert().success().get_output().stdout);
    let device = &devices[0];
    assert_eq!(device["deviceId"], "toaster-1");
    let in_default = json_of(
        &cli(&site).args(["device", "list", "--group", "$default", "--json"]).assert().success().get_output().stdout,
    );
    assert_eq!(in_default, json!([]), "toaster-1 is in lab");
    assert_eq!(device["group"], "lab");
    assert_eq!(device["agentState"], "idle");
    assert_eq!(device["connectionState"], "Connected");
    assert_eq!(device["installedUpdate"], json!({"provider": "contoso", "name": "toaster", "version": "1.0"}));
    assert_eq!(device["lastInstallResult"]["resultCode"], 700);
}
