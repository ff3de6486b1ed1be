//! `duhub device list|tag|group`: devices as their twins show them. The group is the
//! `ADUGroup` twin tag, the agent's state and installed update are what it reported in
//! `deviceUpdate.agent`. Lists are read page by page through IoT Hub's query API
//! (`POST /devices/query`), so listing a large fleet is a series of bounded requests.

use anyhow::{Result, anyhow, bail};
use duhub_proto::twin::{AgentProperties, AgentState};
use duhub_proto::twin_doc::{self, Section, TwinDocError};
use duhub_server::du::fleet::{DEFAULT_GROUP, GROUP_TAG};
use serde_json::{Map, Value, json};

use super::device::{Service, block_on};
use super::du::Table;
use crate::cli::{DeviceGroupSetArgs, DeviceIdArgs, DeviceListArgs, DeviceTagArgs};
use crate::output::{Outcome, print_json};

pub(super) fn list(args: &DeviceListArgs) -> Result<Outcome> {
    // `$default` is the absence of the tag, which the query API cannot select: those devices
    // are picked from the full list.
    let query = match args.group.as_deref() {
        None | Some(DEFAULT_GROUP) => "SELECT * FROM devices".to_owned(),
        Some(group) => format!("SELECT * FROM devices WHERE tags.{GROUP_TAG} = {}", quoted(group)?),
    };
    let service = Service::connect(&args.admin)?;
    let mut devices = Vec::new();
    let only_default = args.group.as_deref() == Some(DEFAULT_GROUP);
    block_on(service.query(&query, |twin| {
        let device = summary(twin);
        if !only_default || device["group"] == DEFAULT_GROUP {
            devices.push(device);
        }
    }))?;
    if args.admin.json {
        print_json(&devices)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["DEVICE", "STATUS", "CONNECTION", "GROUP", "AGENT", "INSTALLED UPDATE"]);
    for device in &devices {
        table.row(row(device));
    }
    table.print(match &args.group {
        Some(_) => "no devices in that group",
        None => "no devices (create one with `duhub device create ID`)",
    });
    Ok(Outcome::Success)
}

/// A string literal of the query language.
fn quoted(text: &str) -> Result<String> {
    if !text.contains('\'') {
        Ok(format!("'{text}'"))
    } else if !text.contains('"') {
        Ok(format!("\"{text}\""))
    } else {
        bail!("a group id cannot hold both ' and \"")
    }
}

/// What `device list --json` shows of a twin.
fn summary(twin: &Value) -> Value {
    let agent = AgentProperties::locate(twin).ok().flatten();
    let group = match twin.pointer(&format!("/tags/{GROUP_TAG}")) {
        Some(Value::String(group)) => Value::String(group.clone()),
        Some(other) => Value::String(other.to_string()),
        None if agent.is_some() => DEFAULT_GROUP.into(),
        None => Value::Null,
    };
    let agent_state = agent.as_ref().map(|agent| match agent.state {
        // An agent reports a state once it has been given a deployment; before, it is idle.
        None | Some(AgentState::Idle) => "idle".to_owned(),
        Some(AgentState::DeploymentInProgress) => "deploying".to_owned(),
        Some(AgentState::Failed) => "failed".to_owned(),
        Some(other) => format!("state {}", other.code()),
    });
    let installed = agent
        .as_ref()
        .and_then(AgentProperties::installed_update)
        .map(|update| json!({"provider": update.provider, "name": update.name, "version": update.version}));
    let last_result = twin.pointer("/properties/reported/deviceUpdate/agent/lastInstallResult").cloned();
    json!({
        "deviceId": twin.get("deviceId").cloned().unwrap_or(Value::Null),
        "status": twin.get("status").cloned().unwrap_or(Value::Null),
        "connectionState": twin.get("connectionState").cloned().unwrap_or(Value::Null),
        "lastActivityTime": twin.get("lastActivityTime").cloned().unwrap_or(Value::Null),
        "group": group,
        "agentState": agent_state,
        "installedUpdate": installed,
        "lastInstallResult": last_result.filter(Value::is_object),
    })
}

/// A row of `device list`.
fn row(device: &Value) -> Vec<String> {
    let text = |name: &str| device.get(name).and_then(Value::as_str).unwrap_or("-").to_owned();
    let mut agent = text("agentState");
    if agent == "failed" {
        let codes = device
            .pointer("/lastInstallResult/extendedResultCodes")
            .and_then(Value::as_str)
            .filter(|codes| !codes.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                let number = device.pointer("/lastInstallResult/extendedResultCode").and_then(Value::as_u64);
                number.map(|number| format!("{number:08X}"))
            });
        if let Some(codes) = codes {
            agent = format!("failed ({codes})");
        }
    }
    let installed = device
        .get("installedUpdate")
        .filter(|update| update.is_object())
        .map(|update| {
            let part = |name: &str| update.get(name).and_then(Value::as_str).unwrap_or_default();
            format!("{}/{}/{}", part("provider"), part("name"), part("version"))
        })
        .unwrap_or_else(|| "-".to_owned());
    vec![text("deviceId"), text("status"), text("connectionState"), text("group"), agent, installed]
}

pub(super) fn tag(args: &DeviceTagArgs) -> Result<Outcome> {
    let patch = tags_patch(&args.tags)?;
    let service = Service::connect(&args.admin)?;
    let tags = patch_tags(&service, &args.id, patch)?;
    if args.admin.json {
        print_json(&json!({"deviceId": args.id, "tags": tags}))?;
    } else if tags.as_object().is_none_or(Map::is_empty) {
        println!("device {} has no tags", args.id);
    } else {
        println!("tags of device {}: {}", args.id, describe_tags(&tags));
    }
    Ok(Outcome::Success)
}

pub(super) fn group_set(args: &DeviceGroupSetArgs) -> Result<Outcome> {
    if args.group == DEFAULT_GROUP {
        bail!("{DEFAULT_GROUP} is the group of devices without an {GROUP_TAG} tag: use `duhub device group clear ID`");
    }
    if args.group.is_empty() {
        bail!("a group id must not be empty (to leave a group: `duhub device group clear ID`)");
    }
    let patch = json!({ GROUP_TAG: args.group });
    twin_doc::validate_patch(&patch, Section::Tags).map_err(|error| tag_error(&error))?;
    let service = Service::connect(&args.admin)?;
    let tags = patch_tags(&service, &args.id, patch)?;
    if args.admin.json {
        print_json(&json!({"deviceId": args.id, "tags": tags}))?;
    } else {
        println!("device {} is in group {}", args.id, args.group);
    }
    Ok(Outcome::Success)
}

pub(super) fn group_clear(args: &DeviceIdArgs) -> Result<Outcome> {
    let service = Service::connect(&args.admin)?;
    let tags = patch_tags(&service, &args.id, json!({ GROUP_TAG: null }))?;
    if args.admin.json {
        print_json(&json!({"deviceId": args.id, "tags": tags}))?;
    } else {
        println!("device {} has no {GROUP_TAG} tag: it is in {DEFAULT_GROUP}", args.id);
    }
    Ok(Outcome::Success)
}

/// Merges `patch` into the device's tags; returns the tags after the change.
fn patch_tags(service: &Service, device_id: &str, patch: Value) -> Result<Value> {
    let path = format!("/twins/{}", duhub_proto::sas::percent_encode(device_id));
    let twin = block_on(service.call(reqwest::Method::PATCH, &path, Some(json!({ "tags": patch }))))?;
    Ok(twin.and_then(|twin| twin.get("tags").cloned()).unwrap_or_else(|| json!({})))
}

/// The tags patch of `KEY=VALUE` arguments: values are strings, `KEY=` is `null` (removal), a
/// dotted key is a nested tag. Checked against IoT Hub's twin rules.
fn tags_patch(items: &[String]) -> Result<Value> {
    let mut patch = Map::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            bail!("{item:?} is not KEY=VALUE (KEY= removes a tag)");
        };
        if key.is_empty() {
            bail!("{item:?} names no tag: write KEY=VALUE");
        }
        let value = if value.is_empty() { Value::Null } else { Value::String(value.to_owned()) };
        let path: Vec<&str> = key.split('.').collect();
        if !insert(&mut patch, &path, value) {
            bail!("tag {key:?} is given twice, or inside a tag given as a value");
        }
    }
    let patch = Value::Object(patch);
    twin_doc::validate_patch(&patch, Section::Tags).map_err(|error| tag_error(&error))?;
    Ok(patch)
}

/// Puts `value` at `path` in `object`; `false` when something is there already.
fn insert(object: &mut Map<String, Value>, path: &[&str], value: Value) -> bool {
    match path {
        [] => false,
        [last] => {
            if object.contains_key(*last) {
                return false;
            }
            object.insert((*last).to_owned(), value);
            true
        }
        [first, rest @ ..] => match object.entry((*first).to_owned()).or_insert_with(|| json!({})) {
            Value::Object(inner) => insert(inner, rest, value),
            _ => false,
        },
    }
}

/// A broken twin rule, naming the tag with dots.
fn tag_error(error: &TwinDocError) -> anyhow::Error {
    let tag: Vec<String> =
        error.pointer.split('/').skip(1).map(|token| token.replace("~1", "/").replace("~0", "~")).collect();
    let tag = if tag.is_empty() { "tags".to_owned() } else { tag.join(".") };
    anyhow!("invalid tag {tag:?}: {} (IoT Hub's rules for twin tags)", error.message)
}

/// Tags as `KEY=VALUE` items: strings as they are, other values as JSON.
fn describe_tags(tags: &Value) -> String {
    let Some(tags) = tags.as_object() else { return tags.to_string() };
    tags.iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(items: &[&str]) -> Result<Value> {
        tags_patch(&items.iter().map(|item| (*item).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn tag_arguments_become_a_merge_patch() {
        assert_eq!(
            patch(&["ADUGroup=lab", "location.site=berlin", "location.floor=2", "old="]).unwrap(),
            json!({"ADUGroup": "lab", "location": {"site": "berlin", "floor": "2"}, "old": null})
        );
        assert_eq!(patch(&["note=a=b"]).unwrap(), json!({"note": "a=b"}));
    }

    #[test]
    fn bad_tags_are_explained_with_iot_hubs_rules() {
        let error = |items: &[&str]| patch(items).unwrap_err().to_string();
        assert!(error(&["ADUGroup"]).contains("is not KEY=VALUE"));
        assert!(error(&["=lab"]).contains("names no tag"));
        assert!(error(&["a=1", "a=2"]).contains("given twice"));
        assert!(error(&["a=1", "a.b=2"]).contains("given twice, or inside"));
        let message = error(&["has space=1"]);
        assert!(message.contains("invalid tag \"has space\"") && message.contains("IoT Hub"), "{message}");
        assert!(error(&["$group=1"]).contains("must not contain '$'"));
        assert!(error(&["a..b=1"]).contains("must not be empty"));
        assert!(error(&[&format!("{}=1", "k".repeat(1025))]).contains("1024"));
        assert!(error(&[&format!("k={}", "v".repeat(4097))]).contains("4096"));
        let deep = format!("{}=1", ["k"; 12].join("."));
        assert!(error(&[&deep]).contains("nest at most"));
    }

    #[test]
    fn devices_are_summarised_from_their_twins() {
        let twin = json!({
            "deviceId": "toaster-1", "status": "enabled", "connectionState": "Connected",
            "tags": {"ADUGroup": "lab"},
            "properties": {"reported": {"deviceUpdate": {"__t": "c", "agent": {
                "deviceProperties": {"manufacturer": "contoso", "model": "toaster"},
                "state": 255,
                "lastInstallResult": {"resultCode": 0, "extendedResultCodes": "30500F02", "resultDetails": "no"},
                "installedUpdateId": "{\"provider\":\"contoso\",\"name\":\"toaster\",\"version\":\"0.9\"}"}}}}
        });
        let device = summary(&twin);
        assert_eq!(device["group"], "lab");
        assert_eq!(device["agentState"], "failed");
        assert_eq!(device["installedUpdate"], json!({"provider": "contoso", "name": "toaster", "version": "0.9"}));
        assert_eq!(
            row(&device),
            ["toaster-1", "enabled", "Connected", "lab", "failed (30500F02)", "contoso/toaster/0.9"]
        );
        // An untagged device with an agent is in $default; one without an agent in no group.
        let mut untagged = twin.clone();
        untagged["tags"] = json!({});
        untagged["properties"]["reported"]["deviceUpdate"]["agent"] =
            json!({"deviceProperties": {"manufacturer": "contoso", "model": "toaster"}});
        let device = summary(&untagged);
        assert_eq!((device["group"].as_str(), device["agentState"].as_str()), (Some("$default"), Some("idle")));
        assert_eq!(device["installedUpdate"], Value::Null);
        let bare = json!({"deviceId": "sensor", "status": "enabled", "connectionState": "Disconnected", "tags": {}});
        let device = summary(&bare);
        assert_eq!((device["group"].clone(), device["agentState"].clone()), (Value::Null, Value::Null));
        assert_eq!(row(&device), ["sensor", "enabled", "Disconnected", "-", "-", "-"]);
    }

    #[test]
    fn group_ids_are_quoted_for_the_query_language() {
        assert_eq!(quoted("lab").unwrap(), "'lab'");
        assert_eq!(quoted("it's").unwrap(), "\"it's\"");
        assert!(quoted("'\"").is_err());
    }
}
