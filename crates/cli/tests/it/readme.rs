//! The README's quick start, run as written: every shell block marked with a `quickstart`
//! comment is run verbatim (`sh -e`), in order, in a fresh directory, against the built `duhub`
//! and `duhub-agent` (first in `PATH`), with a fresh `HOME`. The README is the script: when its
//! commands change, this test runs the new ones.
//!
//! Markers (HTML comments, invisible on GitHub), on the line before a fence:
//!
//! - `<!-- quickstart -->`: run the block and wait for it to succeed;
//! - `<!-- quickstart: background, ready when the output shows "TEXT" -->`: start the block (a
//!   human runs it in another terminal) and go on once its output shows TEXT; it is stopped with
//!   SIGTERM at the end.
//!
//! The server takes its ports from `DUHUB_HTTPS_PORT=0` and `DUHUB_MQTT_PORT=0` (any free ones,
//! as the README says), so the test runs beside others. Afterwards the test asks the server,
//! through the CLI, whether every deployment it holds reached every device of its group and
//! succeeded, and whether every device with an agent reports the deployed update installed.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Process, agent_binary, json_of, temp_dir, test_environment};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");

/// How long one block may run (the deployment's `--wait` is in one).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a background block may take to show its text (the first start of the server makes
/// its keys: seconds in a debug build).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a marker asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Run,
    Background { ready: String },
}

/// A marked shell block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    mode: Mode,
    code: String,
    line: usize,
}

/// The marked blocks of `markdown`, in order. A marker that is not understood, or not followed
/// by a shell fence, is an error (so a typo cannot silently drop a step).
fn quickstart_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index].trim();
        index += 1;
        let Some(marker) = line.strip_prefix("<!-- quickstart").and_then(|rest| rest.strip_suffix("-->")) else {
            continue;
        };
        let marker = marker.trim().trim_start_matches(':').trim();
        let mode = if marker.is_empty() {
            Mode::Run
        } else if let Some(ready) =
            marker.strip_prefix("background, ready when the output shows \"").and_then(|rest| rest.strip_suffix('"'))
        {
            Mode::Background { ready: ready.to_owned() }
        } else {
            return Err(format!("README.md:{index}: marker {line:?} is not understood"));
        };
        let fence = lines.get(index).map(|fence| fence.trim());
        if !matches!(fence, Some("```sh" | "```shell" | "```bash")) {
            return Err(format!("README.md:{index}: a quickstart marker must be followed by a ```sh block"));
        }
        let start = index + 1;
        let Some(length) = lines[start..].iter().position(|line| line.trim() == "```") else {
            return Err(format!("README.md:{}: the block is not closed", start));
        };
        blocks.push(Block { mode, code: lines[start..start + length].join("\n"), line: start });
        index = start + length + 1;
    }
    Ok(blocks)
}

#[test]
fn markers_are_read_strictly() {
    let markdown = "text\n<!-- quickstart -->\n```sh\necho a\necho b\n```\n\
                    <!-- quickstart: background, ready when the output shows \"up\" -->\n```sh\nserve\n```\n\
                    ```sh\nnot marked\n```\n";
    let blocks = quickstart_blocks(markdown).unwrap();
    assert_eq!(
        blocks,
        [
            Block { mode: Mode::Run, code: "echo a\necho b".into(), line: 3 },
            Block { mode: Mode::Background { ready: "up".into() }, code: "serve".into(), line: 8 },
        ]
    );
    assert!(quickstart_blocks("<!-- quickstart: later -->\n```sh\nx\n```\n").unwrap_err().contains("not understood"));
    assert!(quickstart_blocks("<!-- quickstart -->\n\n```sh\nx\n```\n").unwrap_err().contains("followed by"));
    assert!(quickstart_blocks("<!-- quickstart -->\n```python\nx\n```\n").unwrap_err().contains("followed by"));
    assert!(quickstart_blocks("<!-- quickstart -->\n```sh\nx\n").unwrap_err().contains("not closed"));
}

/// Regression test for issue 10: the README's own first steps ended in a failed deployment,
/// and nothing ran them.
#[test]
fn the_readme_quick_start_installs_an_update() {
    let readme = std::fs::read_to_string(README).unwrap();
    let blocks = quickstart_blocks(&readme).unwrap_or_else(|e| panic!("{e}"));
    let script: String = blocks.iter().map(|block| format!("{}\n", block.code)).collect();
    for step in [
        "duhub serve",
        "duhub update init",
        "duhub update import",
        "duhub device create",
        "duhub device agent-config",
        "duhub-agent --config",
        "duhub device group set",
        "duhub deployment create",
        "duhub deployment status",
        "duhub compliance",
    ] {
        assert!(script.contains(step), "the README's quick start does not run `{step}` any more");
    }
    agent_binary();

    let root = temp_dir();
    let (work, home) = (root.path().join("quickstart"), root.path().join("home"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let environment: [(&str, &OsStr); 4] = [
        ("HOME", home.as_os_str()),
        ("DUHUB_HTTPS_PORT", OsStr::new("0")),
        ("DUHUB_MQTT_PORT", OsStr::new("0")),
        ("DUHUB_BIND", OsStr::new("127.0.0.1")),
    ];
    let mut background: Vec<(usize, Process)> = Vec::new();
    let logs = |background: &[(usize, Process)]| -> String {
        background
            .iter()
            .map(|(line, process)| format!("--- output of the block at README.md:{line} ---\n{}\n", process.log()))
            .collect()
    };
    for (number, block) in blocks.iter().enumerate() {
        let mut command = std::process::Command::new("sh");
        command.arg("-ec").arg(&block.code).current_dir(&work);
        test_environment(&mut command, &environment);
        let log = root.path().join(format!("block-{number}.log"));
        let what = format!("the block at README.md:{}", block.line);
        let mut process = Process::start(&mut command, &log, &what);
        match &block.mode {
            Mode::Background { ready } => {
                process.wait_for_output(ready, READY_TIMEOUT);
                background.push((block.line, process));
            }
            Mode::Run => {
                let status = process.wait(BLOCK_TIMEOUT);
                let output = process.log();
                println!("$ {}\n{output}", block.code.replace('\n', "\n$ "));
                assert!(
                    status.is_some_and(|status| status.success()),
                    "{what} failed ({status:?}):\n{}\n--- its output ---\n{output}\n{}",
                    block.code,
                    logs(&background)
                );
            }
        }
    }

    // What the server says, through the CLI.
    let cli = |args: &[&str]| -> Value {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_duhub"));
        command.args(args).arg("--json").current_dir(&work);
        test_environment(&mut command, &environment);
        let output = command.output().unwrap();
        assert!(output.status.success(), "duhub {args:?}: {output:?}\n{}", logs(&background));
        json_of(&output.stdout)
    };
    let mut deployed = Vec::new();
    for group in cli(&["group", "list"]).as_array().unwrap() {
        let group = group["groupId"].as_str().unwrap();
        for deployment in cli(&["deployment", "list", group]).as_array().unwrap() {
            let id = deployment["deploymentId"].as_str().unwrap();
            let status = cli(&["deployment", "status", group, id, "--devices"]);
            let devices: Vec<&Value> = status["deviceStates"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|subgroup| subgroup["devices"].as_array().unwrap())
                .collect();
            assert!(!devices.is_empty(), "deployment {id} of group {group} reached no device: {status}");
            for device in devices {
                assert_eq!(device["deviceState"], "Succeeded", "deployment {id} of group {group}: {status}");
            }
            deployed.push(deployment["update"]["updateId"].clone());
        }
    }
    assert!(!deployed.is_empty(), "the quick start made no deployment");
    let devices = cli(&["device", "list"]);
    let with_agent: Vec<&Value> =
        devices.as_array().unwrap().iter().filter(|device| !device["agentState"].is_null()).collect();
    assert!(!with_agent.is_empty(), "no device runs an agent: {devices}");
    for device in with_agent {
        assert_eq!(device["agentState"], "idle", "{device}");
        assert!(deployed.contains(&device["installedUpdate"]), "{device} does not have the update deployed to it");
        assert_eq!(device["connectionState"], "Connected", "{device}");
    }
    assert!(Path::new(&work).join("duhub-data/admin.json").is_file());
}
