//! `duhub deployment create|list|show|status|cancel|retry|delete`: deployments of updates to
//! device groups. Cancel and retry exist only per device class subgroup in the API; without
//! `--device-class` they are sent to every subgroup the deployment lists. A deployment's phased
//! rollout (policy, display, controls) is in `rollouts`.

use anyhow::{Result, bail};
use duhub_proto::UpdateId;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::DuClient;
use super::{Table, block_on, fields, segment, string_list, text, update_id_text};
use crate::cli::{DeploymentArgs, DeploymentCreateArgs, DeploymentStatusArgs, DeploymentSubgroupArgs, GroupArgs};
use crate::output::{Outcome, print_json};

/// `/management/groups/{group}/deployments/{deployment}`.
pub(super) fn deployment_path(group: &str, deployment: &str) -> String {
    format!("/management/groups/{}/deployments/{}", segment(group), segment(deployment))
}

/// `/management/groups/{group}/deviceClassSubgroups/{class}/deployments/{deployment}`.
fn subgroup_deployment_path(group: &str, class: &str, deployment: &str) -> String {
    format!(
        "/management/groups/{}/deviceClassSubgroups/{}/deployments/{}",
        segment(group),
        segment(class),
        segment(deployment)
    )
}

pub(in crate::commands) fn create(args: &DeploymentCreateArgs) -> Result<Outcome> {
    // A bad policy is a usage error, found before connecting.
    let start = args.start.unwrap_or_else(OffsetDateTime::now_utc);
    let body = deployment_body(args, start)?;
    let client = DuClient::connect(&args.du)?;
    let (mut deployment, rollout) = block_on(async {
        let deployment = client.put(&deployment_path(&args.group, &args.deployment), &body).await?;
        let rollout = match body.get("rollout") {
            Some(_) => super::rollouts::get(&client, &args.group, &args.deployment).await?,
            None => None,
        };
        Ok((deployment, rollout))
    })?;
    if args.du.json {
        if let Some(rollout) = rollout {
            deployment["rollout"] = rollout;
        }
        print_json(&deployment)?;
    } else {
        print!("{}", describe_deployment(&deployment));
        if let Some(rollout) = rollout {
            print!("{}", super::rollouts::describe(&rollout));
        }
    }
    Ok(Outcome::Success)
}

/// Creates (or replaces) the deployment `args` describes; the server's answer.
pub(in crate::commands) async fn put(client: &DuClient, args: &DeploymentCreateArgs) -> Result<Value> {
    let start = args.start.unwrap_or_else(OffsetDateTime::now_utc);
    let body = deployment_body(args, start)?;
    client.put(&deployment_path(&args.group, &args.deployment), &body).await
}

/// The status of a group's deployment (`GET .../deployments/{id}/status`).
pub(in crate::commands) async fn get_status(client: &DuClient, group: &str, deployment: &str) -> Result<Value> {
    client.get(&format!("{}/status", deployment_path(group, deployment))).await
}

/// The body of `PUT .../deployments/{id}`.
fn deployment_body(args: &DeploymentCreateArgs, start: OffsetDateTime) -> Result<Value> {
    let start = start.to_offset(time::UtcOffset::UTC).replace_nanosecond(0)?.format(&Rfc3339)?;
    let mut body = json!({
        "deploymentId": args.deployment,
        "groupId": args.group,
        "startDateTime": start,
        "update": {"updateId": update_id_json(&args.update)},
    });
    if let (Some(update), Some(count), Some(percent)) =
        (&args.rollback_update, args.rollback_failed_count, args.rollback_failed_percent)
    {
        body["rollbackPolicy"] = json!({
            "update": {"updateId": update_id_json(update)},
            "failure": {"devicesFailedPercentage": percent, "devicesFailedCount": count},
        });
    }
    if let Some(policy) = super::rollouts::policy(&args.rollout)? {
        body["rollout"] = serde_json::to_value(policy)?;
    }
    Ok(body)
}

fn update_id_json(update: &UpdateId) -> Value {
    json!({"provider": update.provider, "name": update.name, "version": update.version})
}

pub(in crate::commands) fn list(args: &GroupArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let path = format!("/management/groups/{}/deployments", segment(&args.group));
    let deployments = block_on(client.pages(&path, &[]))?;
    if args.du.json {
        print_json(&deployments)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["DEPLOYMENT", "UPDATE", "START", "SUBGROUPS", "FLAGS"]);
    for deployment in &deployments {
        table.row(vec![
            text(deployment, "/deploymentId"),
            update_id_text(deployment.pointer("/update/updateId")),
            text(deployment, "/startDateTime"),
            deployment.get("deviceClassSubgroups").and_then(Value::as_array).map_or(0, Vec::len).to_string(),
            flags(deployment),
        ]);
    }
    table.print(&format!("no deployments in group {}", args.group));
    Ok(Outcome::Success)
}

/// `canceled`, `retried`, `rollback`, ... of a deployment, comma-separated.
fn flags(deployment: &Value) -> String {
    let mut flags = Vec::new();
    for (member, flag) in
        [("isCanceled", "canceled"), ("isRetried", "retried"), ("isCloudInitiatedRollback", "cloud rollback")]
    {
        if deployment.get(member).and_then(Value::as_bool) == Some(true) {
            flags.push(flag);
        }
    }
    if deployment.get("rollbackPolicy").is_some_and(Value::is_object) {
        flags.push("rollback policy");
    }
    flags.join(", ")
}

pub(in crate::commands) fn show(args: &DeploymentArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let deployment = block_on(client.get(&deployment_path(&args.group, &args.deployment)))?;
    if args.du.json {
        print_json(&deployment)?;
    } else {
        print!("{}", describe_deployment(&deployment));
    }
    Ok(Outcome::Success)
}

/// A deployment as `key: value` lines.
fn describe_deployment(deployment: &Value) -> String {
    let rollback = deployment
        .get("rollbackPolicy")
        .filter(|policy| policy.is_object())
        .map(|policy| {
            format!(
                "to {} once {} devices and {}% have failed",
                update_id_text(policy.pointer("/update/updateId")),
                text(policy, "/failure/devicesFailedCount"),
                text(policy, "/failure/devicesFailedPercentage"),
            )
        })
        .unwrap_or_default();
    fields(
        &format!("deployment {}", text(deployment, "/deploymentId")),
        &[
            ("group", text(deployment, "/groupId")),
            ("update", update_id_text(deployment.pointer("/update/updateId"))),
            ("friendly name", text(deployment, "/update/friendlyName")),
            ("start", text(deployment, "/startDateTime")),
            ("subgroups", string_list(deployment.get("deviceClassSubgroups"))),
            ("rollback", rollback),
            ("flags", flags(deployment)),
        ],
    )
}

pub(in crate::commands) fn status(args: &DeploymentStatusArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let path = format!("{}/status", deployment_path(&args.group, &args.deployment));
    let (status, device_states, rollout, timed_out) = block_on(async {
        let mut status = client.get(&path).await?;
        let mut rollout = super::rollouts::get(&client, &args.group, &args.deployment).await?;
        let mut timed_out = false;
        if args.wait {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
            let bar = super::spinner(String::new(), super::show_progress(args.du.json));
            loop {
                let counts = Progress::of(&status);
                let finished = match &rollout {
                    Some(rollout) => {
                        bar.set_message(format!(
                            "deployment {}: {counts}; {}",
                            args.deployment,
                            super::rollouts::headline(rollout)
                        ));
                        super::rollouts::settled(rollout)
                    }
                    None => {
                        bar.set_message(format!("deployment {}: {counts}", args.deployment));
                        counts.finished()
                    }
                };
                if finished {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                // The status is computed from every twin of the group: ask every other second.
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                status = client.get(&path).await?;
                if rollout.is_some() {
                    rollout = super::rollouts::get(&client, &args.group, &args.deployment).await?;
                }
            }
            bar.finish_and_clear();
        }
        let mut device_states = Vec::new();
        if args.devices {
            for subgroup in status.get("subgroupStatus").and_then(Value::as_array).into_iter().flatten() {
                let class = text(subgroup, "/deviceClassId");
                let states =
                    format!("{}/devicestates", subgroup_deployment_path(&args.group, &class, &args.deployment));
                let devices = client.pages(&states, &[]).await?;
                device_states.push(json!({"deviceClassId": class, "devices": devices}));
            }
        }
        Ok((status, device_states, rollout, timed_out))
    })?;
    print_status(args, &status, &device_states, rollout.as_ref())?;
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let counts = Progress::of(&status);
    if timed_out {
        eprintln!(
            "error: deployment {} of group {} still has devices to finish after {} s ({counts})",
            args.deployment, args.group, args.timeout
        );
        return Ok(Outcome::Failed);
    }
    if let Some(rollout) = &rollout {
        match text(rollout, "/status").as_str() {
            "AwaitingApproval" => return Ok(Outcome::Success),
            "Paused" | "Aborted" => {
                eprintln!(
                    "error: the rollout of deployment {} is {} (see its history)",
                    args.deployment,
                    text(rollout, "/status")
                );
                return Ok(Outcome::Failed);
            }
            _ => {}
        }
    }
    if counts.failed > 0 {
        eprintln!("error: deployment {} failed on {} of {} devices", args.deployment, counts.failed, counts.total);
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Success)
}

/// The device counts of a deployment status, over its subgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(in crate::commands) struct Progress {
    pub(in crate::commands) total: u64,
    pub(in crate::commands) in_progress: u64,
    pub(in crate::commands) succeeded: u64,
    pub(in crate::commands) failed: u64,
    pub(in crate::commands) canceled: u64,
}

impl Progress {
    pub(in crate::commands) fn of(status: &Value) -> Self {
        let mut progress = Self::default();
        for subgroup in status.get("subgroupStatus").and_then(Value::as_array).into_iter().flatten() {
            let count = |name: &str| subgroup.get(name).and_then(Value::as_u64).unwrap_or(0);
            progress.total += count("totalDevices");
            progress.in_progress += count("devicesInProgressCount");
            progress.succeeded += count("devicesCompletedSucceededCount");
            progress.failed += count("devicesCompletedFailedCount");
            progress.canceled += count("devicesCanceledCount");
        }
        progress
    }

    /// Whether the deployment reached devices and none of them is still in progress. (A
    /// deployment whose group has no compatible device yet waits for one.)
    fn finished(self) -> bool {
        self.total > 0 && self.in_progress == 0
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total == 0 {
            return f.write_str("no device has joined it yet");
        }
        write!(
            f,
            "{} devices: {} in progress, {} succeeded, {} failed, {} canceled",
            self.total, self.in_progress, self.succeeded, self.failed, self.canceled
        )
    }
}

fn print_status(
    args: &DeploymentStatusArgs,
    status: &Value,
    device_states: &[Value],
    rollout: Option<&Value>,
) -> Result<()> {
    if args.du.json {
        let mut out =
            if args.devices { json!({"status": status, "deviceStates": device_states}) } else { status.clone() };
        if let (Some(rollout), Some(object)) = (rollout, out.as_object_mut()) {
            object.insert("rollout".into(), rollout.clone());
        }
        print_json(&out)?;
        return Ok(());
    }
    println!(
        "deployment {} of group {}: {}",
        args.deployment,
        text(status, "/groupId"),
        text(status, "/deploymentState")
    );
    if let Some(error) = status.get("error").filter(|e| e.is_object()) {
        println!("  error: {}", super::client::describe_error(error));
    }
    let mut table = Table::new(&["DEVICE CLASS", "STATE", "DEVICES", "IN PROGRESS", "SUCCEEDED", "FAILED", "CANCELED"]);
    for subgroup in status.get("subgroupStatus").and_then(Value::as_array).into_iter().flatten() {
        let mut state = text(subgroup, "/deploymentState");
        if let Some(error) = subgroup.get("error").filter(|e| e.is_object()) {
            state = format!("{state} ({})", super::client::describe_error(error));
        }
        table.row(vec![
            text(subgroup, "/deviceClassId"),
            state,
            text(subgroup, "/totalDevices"),
            text(subgroup, "/devicesInProgressCount"),
            text(subgroup, "/devicesCompletedSucceededCount"),
            text(subgroup, "/devicesCompletedFailedCount"),
            text(subgroup, "/devicesCanceledCount"),
        ]);
    }
    println!();
    table.print("no device class subgroups");
    if let Some(rollout) = rollout {
        println!();
        print!("{}", super::rollouts::describe(rollout));
    }
    if args.devices {
        let mut table = Table::new(&["DEVICE CLASS", "DEVICE", "MODULE", "STATE", "RETRIES", "MOVED ON"]);
        for subgroup in device_states {
            let class = text(subgroup, "/deviceClassId");
            for device in subgroup.get("devices").and_then(Value::as_array).into_iter().flatten() {
                table.row(vec![
                    class.clone(),
                    text(device, "/deviceId"),
                    text(device, "/moduleId"),
                    text(device, "/deviceState"),
                    text(device, "/retryCount"),
                    if device.get("movedOnToNewDeployment").and_then(Value::as_bool) == Some(true) {
                        "yes".to_owned()
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        println!();
        table.print("no devices");
    }
    Ok(())
}

/// What `cancel` and `retry` do.
#[derive(Debug, Clone, Copy)]
pub(in crate::commands) enum SubgroupAction {
    /// `POST ...:cancel`.
    Cancel,
    /// `POST ...:retry`.
    Retry,
}

impl SubgroupAction {
    fn verb(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Cancel => "canceled",
            Self::Retry => "retried",
        }
    }
}

pub(in crate::commands) fn cancel_or_retry(args: &DeploymentSubgroupArgs, action: SubgroupAction) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let answers = block_on(async {
        let classes = match &args.device_class {
            Some(class) => vec![class.clone()],
            None => {
                let deployment = client.get(&deployment_path(&args.group, &args.deployment)).await?;
                let classes: Vec<String> = deployment
                    .get("deviceClassSubgroups")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                if classes.is_empty() {
                    bail!(
                        "deployment {} of group {} has no device class subgroups to {}",
                        args.deployment,
                        args.group,
                        action.verb()
                    );
                }
                classes
            }
        };
        let mut answers = Vec::with_capacity(classes.len());
        for class in &classes {
            let path = format!("{}:{}", subgroup_deployment_path(&args.group, class, &args.deployment), action.verb());
            let answer = client.post(&path, None).await?.body.unwrap_or(Value::Null);
            if !args.du.json {
                println!("{} deployment {} for device class {class}", action.done(), args.deployment);
            }
            answers.push(answer);
        }
        Ok(answers)
    })?;
    if args.du.json {
        print_json(&answers)?;
    }
    Ok(Outcome::Success)
}

pub(in crate::commands) fn delete(args: &DeploymentArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    block_on(client.delete(&deployment_path(&args.group, &args.deployment)))?;
    if args.du.json {
        print_json(&json!({"deleted": {"groupId": args.group, "deploymentId": args.deployment}}))?;
    } else {
        println!("deleted deployment {} of group {}", args.deployment, args.group);
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command, DeploymentCommand};

    fn create_args(args: &[&str]) -> DeploymentCreateArgs {
        let cli = Cli::try_parse_from(["duhub", "deployment", "create"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Deployment(DeploymentCommand::Create(args)) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn deployment_bodies() {
        let args =
            create_args(&["g1", "d1", "--update", "Contoso/Toaster/1.0", "--start", "2026-12-01T03:00:00.5+01:00"]);
        let start = args.start.unwrap();
        assert_eq!(
            deployment_body(&args, start).unwrap(),
            json!({
                "deploymentId": "d1",
                "groupId": "g1",
                "startDateTime": "2026-12-01T02:00:00Z",
                "update": {"updateId": {"provider": "Contoso", "name": "Toaster", "version": "1.0"}},
            })
        );
        let args = create_args(&[
            "g1",
            "d1",
            "--update",
            "Contoso/Toaster/1.0",
            "--rollback-update",
            "Contoso/Toaster/0.9",
            "--rollback-failed-count",
            "5",
            "--rollback-failed-percent",
            "10",
        ]);
        let body = deployment_body(&args, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(body["startDateTime"], "1970-01-01T00:00:00Z");
        assert_eq!(
            body["rollbackPolicy"],
            json!({
                "update": {"updateId": {"provider": "Contoso", "name": "Toaster", "version": "0.9"}},
                "failure": {"devicesFailedPercentage": 10, "devicesFailedCount": 5},
            })
        );
    }

    #[test]
    fn rollout_flags_become_the_policy_and_bad_ones_name_the_flag_and_rule() {
        let args = create_args(&[
            "g",
            "d",
            "--update",
            "P/N/1.0",
            "--waves",
            "1%,10%,50%,100%",
            "--bake",
            "30m",
            "--success-percent",
            "95",
            "--max-failure-percent",
            "5",
            "--min-executed",
            "20",
            "--device-timeout",
            "2h",
            "--on-failure",
            "abort",
            "--rate",
            "100/min,double",
            "--window",
            "22:00-04:00",
            "--approve-waves",
            "--seed",
            "42",
        ]);
        let body = deployment_body(&args, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            body["rollout"],
            json!({
                "waves": ["1%", "10%", "50%", "100%"], "bakeSeconds": 1800, "successPercent": 95.0,
                "maxFailurePercent": 5.0, "minExecuted": 20, "deviceTimeoutSeconds": 7200, "onFailure": "abort",
                "rate": {"devicesPerMinute": 100, "doublePerWave": true}, "window": "22:00-04:00",
                "approveWaves": true, "seed": 42,
            })
        );
        // Only --waves: the server's defaults, and no seed (the server draws one).
        let body = deployment_body(
            &create_args(&["g", "d", "--update", "P/N/1.0", "--waves", "5,100%"]),
            OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(
            body["rollout"],
            json!({"waves": ["5", "100%"], "bakeSeconds": 0, "successPercent": 100.0, "maxFailurePercent": 100.0,
                   "minExecuted": 0, "onFailure": "pause", "approveWaves": false})
        );
        assert!(
            deployment_body(&create_args(&["g", "d", "--update", "P/N/1.0"]), OffsetDateTime::UNIX_EPOCH)
                .unwrap()
                .get("rollout")
                .is_none()
        );
        let refused = |extra: &[&str]| {
            let mut all = vec!["g", "d", "--update", "P/N/1.0"];
            all.extend_from_slice(extra);
            deployment_body(&create_args(&all), OffsetDateTime::UNIX_EPOCH).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&["--waves", "50%,10%"]),
            "--waves: waves are cumulative: 10% must be above 50% (rollout/waves/1)"
        );
        assert_eq!(refused(&["--waves", "10%,5"]), "--waves: a count cannot follow a percentage (rollout/waves/1)");
        assert!(refused(&["--waves", "100%", "--success-percent", "101"]).starts_with("--success-percent: "));
        assert!(refused(&["--waves", "100%", "--device-timeout", "0s"]).starts_with("--device-timeout: "));
        assert!(refused(&["--waves", "100%", "--rate", "0/min"]).starts_with("--rate: "));
    }

    #[test]
    fn rollout_flags_need_waves_and_parse_their_values() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["duhub", "deployment", "create", "g", "d", "--update", "P/N/1.0"].iter().chain(args))
        };
        assert!(parse(&["--bake", "30m"]).is_err(), "--bake without --waves");
        assert!(parse(&["--approve-waves"]).is_err());
        for bad in [
            &["--waves", "0%"][..],
            &["--waves", "10%,x"],
            &["--waves", "100%", "--bake", "30"],
            &["--waves", "100%", "--on-failure", "retry"],
            &["--waves", "100%", "--rate", "100/s"],
            &["--waves", "100%", "--window", "2-5"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["--waves", "100%", "--window", "02:00-05:00", "--rate", "5/min"]).is_ok());
    }

    #[test]
    fn rollback_flags_go_together_and_update_ids_have_three_parts() {
        let parse = |args: &[&str]| Cli::try_parse_from(["duhub", "deployment", "create", "g", "d"].iter().chain(args));
        assert!(parse(&["--update", "P/N/1.0", "--rollback-update", "P/N/0.9"]).is_err());
        assert!(parse(&["--update", "P/N/1.0", "--rollback-failed-count", "1"]).is_err());
        assert!(
            parse(&[
                "--update",
                "P/N/1.0",
                "--rollback-update",
                "P/N/0.9",
                "--rollback-failed-count",
                "1",
                "--rollback-failed-percent",
                "101"
            ])
            .is_err()
        );
        assert!(parse(&["--update", "P/N"]).is_err());
        assert!(parse(&["--update", "P/N/1.0", "--start", "tomorrow"]).is_err());
    }

    #[test]
    fn update_ids_parse_from_provider_name_version() {
        use crate::cli::parse_update_id;
        assert_eq!(parse_update_id("Contoso/Toaster/1.0").unwrap(), UpdateId::new("Contoso", "Toaster", "1.0"));
        for bad in ["Contoso/Toaster", "Contoso/Toaster/1.0/x", "/Toaster/1.0", "Contoso//1.0", "Contoso/Toaster/", ""]
        {
            assert!(parse_update_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployments_are_described_in_lines() {
        let deployment = json!({
            "deploymentId": "d1",
            "groupId": "g1",
            "startDateTime": "2026-12-01T02:00:00Z",
            "update": {"updateId": {"provider": "P", "name": "N", "version": "1.0"}},
            "deviceClassSubgroups": ["c1", "c2"],
            "isCanceled": true,
            "rollbackPolicy": {
                "update": {"updateId": {"provider": "P", "name": "N", "version": "0.9"}},
                "failure": {"devicesFailedPercentage": 10, "devicesFailedCount": 5},
            },
        });
        assert_eq!(
            describe_deployment(&deployment),
            "deployment d1\n  \
             group:     g1\n  \
             update:    P/N/1.0\n  \
             start:     2026-12-01T02:00:00Z\n  \
             subgroups: c1, c2\n  \
             rollback:  to P/N/0.9 once 5 devices and 10% have failed\n  \
             flags:     canceled, rollback policy\n"
        );
    }
}
