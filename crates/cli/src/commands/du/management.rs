//! `duhub group list|show`, `duhub device-class list|show` and `duhub compliance`: the read-only
//! views of the Device Update management API.

use anyhow::Result;
use serde_json::{Value, json};

use super::client::DuClient;
use super::{Table, block_on, fields, key_values, segment, string_list, text, update_id_text};
use crate::cli::{ComplianceArgs, DeviceClassArgs, DuArgs, GroupArgs};
use crate::output::{Outcome, print_json};

pub(in crate::commands) fn group_list(args: &DuArgs) -> Result<Outcome> {
    let client = DuClient::connect(args)?;
    let groups = block_on(client.pages("/management/groups", &[]))?;
    if args.json {
        print_json(&groups)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["GROUP", "TYPE", "DEVICES", "NEW UPDATES", "IN PROGRESS", "ON LATEST", "DEPLOYMENTS"]);
    for group in &groups {
        table.row(vec![
            text(group, "/groupId"),
            text(group, "/groupType"),
            text(group, "/deviceCount"),
            text(group, "/subgroupsWithNewUpdatesAvailableCount"),
            text(group, "/subgroupsWithUpdatesInProgressCount"),
            text(group, "/subgroupsWithOnLatestUpdateCount"),
            string_list(group.get("deployments")),
        ]);
    }
    table.print("no groups");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn group_show(args: &GroupArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let path = format!("/management/groups/{}", segment(&args.group));
    let (group, subgroups, best_updates, compliance) = block_on(async {
        Ok((
            client.get(&path).await?,
            client.pages(&format!("{path}/deviceClassSubgroups"), &[]).await?,
            client.pages(&format!("{path}/bestUpdates"), &[]).await?,
            client.get(&format!("{path}/updateCompliance")).await?,
        ))
    })?;
    if args.du.json {
        print_json(&json!({
            "group": group,
            "deviceClassSubgroups": subgroups,
            "bestUpdates": best_updates,
            "updateCompliance": compliance,
        }))?;
        return Ok(Outcome::Success);
    }
    print!(
        "{}",
        fields(
            &format!("group {}", text(&group, "/groupId")),
            &[
                ("type", text(&group, "/groupType")),
                ("created", text(&group, "/createdDateTime")),
                ("devices", text(&group, "/deviceCount")),
                ("deployments", string_list(group.get("deployments"))),
                ("compliance", compliance_line(&compliance)),
            ],
        )
    );
    println!();
    let mut table = Table::new(&["DEVICE CLASS", "DEVICES", "DEPLOYMENT", "BEST UPDATE", "UPDATABLE", "CREATED"]);
    for subgroup in &subgroups {
        let class = text(subgroup, "/deviceClassId");
        let best = best_updates.iter().find(|b| text(b, "/deviceClassId") == class);
        table.row(vec![
            class,
            text(subgroup, "/deviceCount"),
            text(subgroup, "/deploymentId"),
            best.map(|b| update_id_text(b.pointer("/update/updateId"))).unwrap_or_default(),
            best.map(|b| text(b, "/deviceCount")).unwrap_or_default(),
            text(subgroup, "/createdDateTime"),
        ]);
    }
    table.print("no device class subgroups");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn device_class_list(args: &DuArgs) -> Result<Outcome> {
    let client = DuClient::connect(args)?;
    let classes = block_on(client.pages("/management/deviceClasses", &[]))?;
    if args.json {
        print_json(&classes)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["DEVICE CLASS", "FRIENDLY NAME", "COMPATIBILITY", "BEST UPDATE"]);
    for class in &classes {
        table.row(vec![
            text(class, "/deviceClassId"),
            text(class, "/friendlyName"),
            key_values(class.pointer("/deviceClassProperties/compatProperties")),
            update_id_text(class.pointer("/bestCompatibleUpdate/updateId")),
        ]);
    }
    table.print("no device classes");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn device_class_show(args: &DeviceClassArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let path = format!("/management/deviceClasses/{}", segment(&args.id));
    let (class, installable) = block_on(async {
        Ok((client.get(&path).await?, client.pages(&format!("{path}/installableUpdates"), &[]).await?))
    })?;
    if args.du.json {
        print_json(&json!({"deviceClass": class, "installableUpdates": installable}))?;
        return Ok(Outcome::Success);
    }
    let model = match (
        text(&class, "/deviceClassProperties/contractModel/name"),
        text(&class, "/deviceClassProperties/contractModel/id"),
    ) {
        (name, id) if name.is_empty() => id,
        (name, id) => format!("{name} ({id})"),
    };
    print!(
        "{}",
        fields(
            &format!("device class {}", text(&class, "/deviceClassId")),
            &[
                ("friendly name", text(&class, "/friendlyName")),
                ("compatibility", key_values(class.pointer("/deviceClassProperties/compatProperties"))),
                ("contract model", model),
                ("best update", update_id_text(class.pointer("/bestCompatibleUpdate/updateId"))),
            ],
        )
    );
    println!();
    let mut table = Table::new(&["INSTALLABLE UPDATE", "FRIENDLY NAME", "DESCRIPTION"]);
    for update in &installable {
        table.row(vec![
            update_id_text(update.get("updateId")),
            text(update, "/friendlyName"),
            text(update, "/description"),
        ]);
    }
    table.print("no installable updates");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn compliance(args: &ComplianceArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let (path, scope) = match (&args.group, &args.device_class) {
        (None, _) => ("/management/updateCompliance".to_owned(), "all devices".to_owned()),
        (Some(group), None) => {
            (format!("/management/groups/{}/updateCompliance", segment(group)), format!("group {group}"))
        }
        (Some(group), Some(class)) => (
            format!("/management/groups/{}/deviceClassSubgroups/{}/updateCompliance", segment(group), segment(class)),
            format!("group {group}, device class {class}"),
        ),
    };
    let compliance = block_on(client.get(&path))?;
    if args.du.json {
        print_json(&compliance)?;
        return Ok(Outcome::Success);
    }
    print!(
        "{}",
        fields(
            &format!("update compliance of {scope}"),
            &[
                ("devices", text(&compliance, "/totalDeviceCount")),
                ("on the latest update", text(&compliance, "/onLatestUpdateDeviceCount")),
                ("with new updates", text(&compliance, "/newUpdatesAvailableDeviceCount")),
                ("updating", text(&compliance, "/updatesInProgressDeviceCount")),
            ],
        )
    );
    Ok(Outcome::Success)
}

/// An update compliance object in one line.
fn compliance_line(compliance: &Value) -> String {
    format!(
        "{} devices: {} on the latest update, {} with new updates, {} updating",
        text(compliance, "/totalDeviceCount"),
        text(compliance, "/onLatestUpdateDeviceCount"),
        text(compliance, "/newUpdatesAvailableDeviceCount"),
        text(compliance, "/updatesInProgressDeviceCount"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_in_one_line() {
        let compliance = json!({
            "totalDeviceCount": 10,
            "onLatestUpdateDeviceCount": 7,
            "newUpdatesAvailableDeviceCount": 2,
            "updatesInProgressDeviceCount": 1,
        });
        assert_eq!(compliance_line(&compliance), "10 devices: 7 on the latest update, 2 with new updates, 1 updating");
    }
}
