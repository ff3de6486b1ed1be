//! The phased rollout commands on a real `duhub serve` (SQLite, and PostgreSQL when there is
//! one): `deployment create` with a policy, `deployment status` showing the waves, gates and
//! history, the `pause|resume|promote|abort` round trip with the errors the server refuses
//! with, and policies the CLI refuses before sending anything.
//!
//! Ten test devices report their agent once and go away, so no device ever finishes: waves
//! move only by `promote`, which is what these tests control.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duhub_testkit::{ServeProcess, TestDatabase, postgres_url};
use serde_json::{Value, json};

use crate::simulate::{admin_path, binary, import_update};
use crate::support::{duhub, json_of, temp_dir};

/// How long the reconciler may take to start a rollout.
const WAIT: Duration = Duration::from_secs(60);

/// What a run of the CLI gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        json_of(self.stdout.as_bytes())
    }
}

/// Runs `duhub ARGS --admin ADMIN` on a blocking thread.
async fn run(admin: &Path, args: &[&str]) -> Run {
    let mut command = duhub();
    command.args(args).arg("--admin").arg(admin);
    tokio::task::spawn_blocking(move || {
        let output = command.output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// `count` devices `dev-00..` of model `a` in `group`, each having reported its agent once.
async fn devices(node: &ServeProcess, group: &str, count: usize) {
    let service = node.service().unwrap();
    for i in 0..count {
        let id = format!("dev-{i:02}");
        let (key, _) = service.create_device(&id).await.unwrap();
        service.set_group(&id, group).await.unwrap();
        let mut device = node.connect_device(&id, &key).await;
        let startup = json!({"deviceUpdate": {"__t": "c", "agent": {
            "deviceProperties": {"manufacturer": "contoso", "model": "a",
                                 "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3"},
            "compatPropertyNames": "manufacturer,model"}}});
        device.patch_reported(&startup).await.unwrap();
        device.disconnect().await.unwrap();
    }
}

/// Runs `deployment status GROUP ID --json` until `wanted` holds.
async fn status_until(
    node: &ServeProcess,
    admin: &Path,
    id: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = run(admin, &["deployment", "status", "fleet", id, "--json"]).await;
        if status.code == 0 && wanted(&status.json()) {
            return status.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {what}: {}{}\n{}",
            status.stdout,
            status.stderr,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rollout_round_trip(database_url: Option<&str>) {
    let root = temp_dir();
    let node = ServeProcess::start(&binary(), &root.path().join("data"), database_url).await.unwrap();
    let admin: PathBuf = admin_path(&node);
    let (dir, import_admin) = (root.path().to_owned(), admin.clone());
    tokio::task::spawn_blocking(move || import_update(&dir, &import_admin, "1.0")).await.unwrap();
    devices(&node, "fleet", 10).await;

    // A bad policy is refused before anything is sent, naming the flag and the rule.
    let bad =
        run(&admin, &["deployment", "create", "fleet", "r0", "--update", "contoso/sim/1.0", "--waves", "50%,10%"])
            .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--waves: waves are cumulative: 10% must be above 50% (rollout/waves/1)"),
        "{}",
        bad.stderr
    );
    let missing = run(&admin, &["deployment", "show", "fleet", "r0"]).await;
    assert_eq!(missing.code, 1, "nothing was created: {}", missing.stdout);
    // What only the server knows comes back as its error.
    let bad = run(
        &admin,
        &[
            "deployment",
            "create",
            "fleet",
            "r0",
            "--update",
            "contoso/sim/1.0",
            "--waves",
            "10%,100%",
            "--on-failure",
            "rollback",
        ],
    )
    .await;
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("rollout/onFailure: rollback needs the deployment's rollbackPolicy"), "{}", bad.stderr);

    // Create with a policy: the answer carries the rollout as the server keeps it.
    let created = run(
        &admin,
        &[
            "deployment",
            "create",
            "fleet",
            "r1",
            "--update",
            "contoso/sim/1.0",
            "--waves",
            "10%,50%,100%",
            "--bake",
            "30m",
            "--success-percent",
            "95",
            "--max-failure-percent",
            "5",
            "--min-executed",
            "2",
            "--device-timeout",
            "2h",
            "--on-failure",
            "pause",
            "--rate",
            "100/min,double",
            "--approve-waves",
            "--seed",
            "7",
            "--json",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}{}", created.stdout, created.stderr);
    let created = created.json();
    assert_eq!(created["deploymentId"], "r1");
    assert_eq!(
        created["rollout"]["policy"],
        json!({"waves": ["10%", "50%", "100%"], "bakeSeconds": 1800, "successPercent": 95.0,
               "maxFailurePercent": 5.0, "minExecuted": 2, "deviceTimeoutSeconds": 7200, "onFailure": "pause",
               "rate": {"devicesPerMinute": 100, "doublePerWave": true}, "approveWaves": true, "seed": 7}),
        "{created:#}"
    );

    // Status shows the waves once the reconciler started the first.
    let status = status_until(&node, &admin, "r1", "the first wave", |s| s["rollout"]["currentWave"] == 0).await;
    assert_eq!(status["rollout"]["status"], "Running", "{status:#}");
    assert_eq!(status["rollout"]["waves"][0]["counts"]["devices"], 1, "10% of 10 devices: {status:#}");
    assert!(status["subgroupStatus"].is_array(), "still the service's status: {status:#}");
    let text = run(&admin, &["deployment", "status", "fleet", "r1"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    for expected in [
        "rollout: Running, wave 1 of 3",
        "bake:",
        "30m",
        "wave 1: 0 succeeded of 1 needed (95% of 1 devices): not yet",
        "0 failed of 0 finished",
        "1     10%   20",
        "2     50%   not started",
        "waveStarted  1     schedule",
    ] {
        assert!(text.stdout.contains(expected), "{expected:?} in:\n{}", text.stdout);
    }

    // Pause, resume, promote, abort: each answers the rollout; the history names the token.
    let paused = run(&admin, &["deployment", "pause", "fleet", "r1", "--json"]).await;
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    let paused = paused.json();
    assert_eq!(paused["status"], "Paused");
    let last = paused["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["event"].as_str(), &last["cause"]),
        (Some("paused"), &json!({"kind": "operator", "token": "admin"}))
    );
    let again = run(&admin, &["deployment", "pause", "fleet", "r1"]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("the rollout is already paused"), "{}", again.stderr);
    let resumed = run(&admin, &["deployment", "resume", "fleet", "r1"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stdout.starts_with("resumed the rollout of deployment r1 of group fleet\nrollout: Running"),
        "{}",
        resumed.stdout
    );
    let promoted = run(&admin, &["deployment", "promote", "fleet", "r1", "--json"]).await.json();
    assert_eq!((promoted["currentWave"].as_u64(), promoted["status"].as_str()), (Some(1), Some("Running")));
    assert_eq!(promoted["waves"][1]["counts"]["devices"], 4, "50% of 10, less wave 1's: {promoted:#}");
    let promoted = run(&admin, &["deployment", "promote", "fleet", "r1", "--json"]).await.json();
    assert_eq!(promoted["currentWave"], 2);
    let last = run(&admin, &["deployment", "promote", "fleet", "r1"]).await;
    assert_eq!(last.code, 1, "{}", last.stdout);
    assert!(last.stderr.contains("the rollout is already in its last wave"), "{}", last.stderr);
    let last = run(&admin, &["deployment", "promote", "fleet", "r1", "--json"]).await;
    assert_eq!((last.code, last.json()["error"]["code"].as_str()), (1, Some("Conflict")));
    let aborted = run(&admin, &["deployment", "abort", "fleet", "r1", "--json"]).await.json();
    assert_eq!(aborted["status"], "Aborted");
    let after = run(&admin, &["deployment", "resume", "fleet", "r1"]).await;
    assert_eq!(after.code, 1);
    assert!(after.stderr.contains("was aborted"), "{}", after.stderr);
    let status = run(&admin, &["deployment", "status", "fleet", "r1", "--json"]).await.json();
    let events: Vec<&str> =
        status["rollout"]["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["waveStarted", "paused", "resumed", "promoted", "promoted", "aborted"], "{status:#}");
    let text = run(&admin, &["deployment", "status", "fleet", "r1", "--devices"]).await;
    assert!(text.stdout.contains("rollout: Aborted, wave 3 of 3"), "{}", text.stdout);
    assert!(text.stdout.contains("aborted      3     operator admin"), "{}", text.stdout);

    // A deployment without a policy: no rollout in its status, and nothing to control.
    let plain = run(&admin, &["deployment", "create", "fleet", "r2", "--update", "contoso/sim/1.0"]).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let status = run(&admin, &["deployment", "status", "fleet", "r2", "--json"]).await.json();
    assert!(status.get("rollout").is_none(), "{status:#}");
    assert!(!run(&admin, &["deployment", "status", "fleet", "r2"]).await.stdout.contains("rollout:"));
    let refused = run(&admin, &["deployment", "pause", "fleet", "r2"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("has no rollout policy"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_on_sqlite() {
    rollout_round_trip(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_on_postgres() {
    let Some(url) = postgres_url().await else {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    };
    let database = TestDatabase::create(&url).await.unwrap();
    rollout_round_trip(Some(&database.url)).await;
    database.drop_database().await.unwrap();
}

/// The key paths of a YAML document in block style (as `docs/*.yaml` are written): one path of
/// keys per mapping key, block scalars (`|`) and list items skipped. Tabs are refused. (No YAML
/// parser is a dependency; this reads enough to check what the document names.)
fn yaml_keys(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut keys = Vec::new();
    let mut block_owner: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        if line.contains('\t') {
            return Err(format!("line {}: a tab", number + 1));
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(owner) = block_owner {
            if indent > owner {
                continue;
            }
            block_owner = None;
        }
        if trimmed == "-" || trimmed.starts_with("- ") {
            continue;
        }
        let (key, value) = match trimmed.strip_suffix(':') {
            Some(key) => (key, ""),
            None => trimmed.split_once(": ").ok_or_else(|| format!("line {}: not `key: value`: {line}", number + 1))?,
        };
        if matches!(value.trim(), "|" | ">" | "|-" | ">-") {
            block_owner = Some(indent);
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim_matches('"').to_owned()));
        keys.push(stack.iter().map(|(_, k)| k.clone()).collect());
    }
    Ok(keys)
}

/// `docs/rollouts.openapi.yaml` documents exactly the routes the server serves for rollouts
/// (which the round trip above uses), the `rollout` member of a deployment and the schemas,
/// and every `$ref` in it resolves.
#[test]
fn the_openapi_fragment_names_every_rollout_route() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rollouts.openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("openapi: 3.0."), "an OpenAPI 3.0 document");
    let keys = yaml_keys(&text).unwrap();
    let deployment = "/deviceUpdate/{instanceId}/management/groups/{groupId}/deployments/{deploymentId}";
    let mut routes: Vec<(String, String)> =
        keys.iter().filter(|k| k.len() == 3 && k[0] == "paths").map(|k| (k[1].clone(), k[2].clone())).collect();
    routes.sort();
    let mut expected: Vec<(String, String)> = [
        (deployment.to_owned(), "put"),
        (format!("{deployment}/rollout"), "get"),
        (format!("{deployment}:abort"), "post"),
        (format!("{deployment}:pause"), "post"),
        (format!("{deployment}:promote"), "post"),
        (format!("{deployment}:resume"), "post"),
    ]
    .into_iter()
    .map(|(p, m)| (p, m.to_owned()))
    .collect();
    expected.sort();
    assert_eq!(routes, expected);
    let has = |path: &[&str]| keys.iter().any(|k| k.iter().map(String::as_str).eq(path.iter().copied()));
    assert!(has(&["components", "schemas", "DeploymentWithRollout", "properties", "rollout"]));
    for schema in ["RolloutPolicy", "Rollout", "Wave", "WaveCounts", "RolloutEvent", "Cause", "RolloutStatus"] {
        assert!(has(&["components", "schemas", schema]), "schema {schema}");
    }
    for member in [
        "waves",
        "bakeSeconds",
        "successPercent",
        "maxFailurePercent",
        "minExecuted",
        "deviceTimeoutSeconds",
        "onFailure",
        "rate",
        "window",
        "approveWaves",
        "seed",
    ] {
        assert!(has(&["components", "schemas", "RolloutPolicy", "properties", member]), "policy member {member}");
    }
    for member in ["policy", "status", "currentWave", "waves", "totals", "history", "acceptedFailures"] {
        assert!(has(&["components", "schemas", "Rollout", "properties", member]), "rollout member {member}");
    }
    let mut refs = 0;
    for line in text.lines() {
        let Some((_, target)) = line.split_once("$ref: \"#/") else { continue };
        let target = target.trim_end().trim_end_matches('"');
        let parts: Vec<&str> = target.split('/').collect();
        assert!(has(&parts), "$ref #/{target} resolves");
        refs += 1;
    }
    assert!(refs > 20, "{refs} references");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(readme.contains("## Phased rollouts") && readme.contains("docs/rollouts.openapi.yaml"));
}
