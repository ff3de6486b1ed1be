//! The fleet as Device Update sees it, computed from twins: which devices run an agent, their
//! device class (compatibility properties + contract model), their group (twin tag
//! `ADUGroup`), what they report and what the service last asked of them.
//!
//! Pure functions over [`FleetRow`]s; no I/O.

use std::collections::BTreeMap;

use duhub_proto::result::ResultCode;
use duhub_proto::twin::{AgentProperties, AgentState, UpdateAction, Workflow};
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};

use crate::store::FleetRow;

/// The twin tag that names a device's group.
pub const GROUP_TAG: &str = "ADUGroup";
/// The group of devices without the tag.
pub const DEFAULT_GROUP: &str = "$default";

/// A device class: compatibility property values and contract model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceClass {
    /// Stable id: 40 hex digits of the SHA-256 of the class's canonical JSON.
    pub id: String,
    /// Compatibility property name -> value, as the devices report them (sorted by name).
    pub compat: BTreeMap<String, String>,
    /// Contract model id, when reported.
    pub contract_model: Option<String>,
}

impl DeviceClass {
    /// The class of these compatibility values and contract model.
    pub fn new(compat: BTreeMap<String, String>, contract_model: Option<String>) -> Self {
        let canonical = json!({"compat": compat, "contractModel": contract_model}).to_string();
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let id = digest.as_ref().iter().take(20).map(|b| format!("{b:02x}")).collect();
        Self { id, compat, contract_model }
    }

    /// Whether an update with these compatibility sets fits this class: some set whose every
    /// name is a compatibility property of the class with the same value (names without case;
    /// `deviceManufacturer`/`deviceModel` stand for `manufacturer`/`model`, as older manifests
    /// write them).
    pub fn accepts(&self, compatibility: &[indexmap::IndexMap<String, String>]) -> bool {
        compatibility.iter().any(|set| {
            !set.is_empty()
                && set.len() == self.compat.len()
                && set.iter().all(|(name, value)| {
                    let wanted = canonical_name(name);
                    self.compat.iter().any(|(own, own_value)| canonical_name(own) == wanted && own_value == value)
                })
        })
    }

    /// The REST `DeviceClassProperties`.
    pub fn properties_json(&self) -> Value {
        let mut value = json!({"compatProperties": self.compat});
        if let Some(model) = &self.contract_model {
            let name = model.rsplit(':').next().unwrap_or(model).split(';').next().unwrap_or(model);
            value["contractModel"] = json!({"id": model, "name": name});
        }
        value
    }
}

fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "devicemanufacturer" => "manufacturer".into(),
        "devicemodel" => "model".into(),
        _ => lower,
    }
}

/// A device running a Device Update agent.
#[derive(Debug, Clone)]
pub struct DeviceView {
    /// Device id.
    pub device_id: String,
    /// Group id (tag or [`DEFAULT_GROUP`]).
    pub group_id: String,
    /// Whether the group comes from the tag.
    pub tagged: bool,
    /// Its class.
    pub class: DeviceClass,
    /// What the agent reports.
    pub agent: AgentProperties,
    /// The installed update, parsed.
    pub installed: Option<UpdateId>,
    /// The workflow the service last wrote to `deviceUpdate.service` (members of the wrong
    /// type read as absent).
    pub desired: Workflow,
    /// The desired `deviceUpdate.service` object as stored (for replacement patches).
    pub desired_service: Value,
}

impl DeviceView {
    /// The device from its twin; `None` for devices without a Device Update agent (no
    /// reported `deviceUpdate.agent.deviceProperties`).
    pub fn from_row(row: &FleetRow) -> Option<Self> {
        let agent_json = row.reported.pointer("/deviceUpdate/agent")?;
        let properties = agent_json.get("deviceProperties")?.as_object()?;
        let agent: AgentProperties = serde_json::from_value(agent_json.clone()).unwrap_or_default();
        let names = agent_json
            .get("compatPropertyNames")
            .and_then(Value::as_str)
            .filter(|names| !names.trim().is_empty())
            .unwrap_or("manufacturer,model");
        let mut compat = BTreeMap::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()).take(5) {
            let value = properties
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.as_str())
                .unwrap_or_default();
            compat.insert(name.to_owned(), value.to_owned());
        }
        let contract_model = properties.get("contractModelId").and_then(Value::as_str).map(str::to_owned);
        let group = row.tags.get(GROUP_TAG).and_then(Value::as_str).filter(|g| !g.is_empty());
        let installed = agent.installed_update_id.as_deref().and_then(UpdateId::from_installed_update_id);
        let desired_service = row.desired.pointer("/deviceUpdate/service").cloned().unwrap_or(Value::Null);
        let workflow = desired_service.get("workflow");
        let desired = Workflow {
            action: workflow.and_then(|w| w.get("action")).and_then(Value::as_i64).map(UpdateAction::from_code),
            id: workflow.and_then(|w| w.get("id")).and_then(Value::as_str).map(str::to_owned),
            retry_timestamp: workflow.and_then(|w| w.get("retryTimestamp")).and_then(Value::as_str).map(str::to_owned),
        };
        Some(Self {
            device_id: row.device_id.clone(),
            group_id: group.unwrap_or(DEFAULT_GROUP).to_owned(),
            tagged: group.is_some(),
            class: DeviceClass::new(compat, contract_model),
            agent,
            installed,
            desired,
            desired_service,
        })
    }

    /// The reported workflow id.
    pub fn reported_workflow(&self) -> Option<&str> {
        self.agent.workflow.as_ref().and_then(|w| w.id.as_deref())
    }

    /// The reported agent state.
    pub fn reported_state(&self) -> Option<AgentState> {
        self.agent.state
    }

    /// The reported overall result code.
    pub fn reported_result(&self) -> Option<ResultCode> {
        self.agent.last_install_result.as_ref().map(|r| r.result_code)
    }
}

/// Every Device Update device of the twins.
pub fn devices(rows: &[FleetRow]) -> Vec<DeviceView> {
    rows.iter().filter_map(DeviceView::from_row).collect()
}

/// Compares two versions part by part as numbers (`1.10` > `1.9`); parts that are not numbers
/// compare as text after the numbers.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.split('.').map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_owned())).collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tags: Value, reported: Value) -> FleetRow {
        FleetRow { device_id: "d1".into(), tags, desired: json!({}), reported, model_id: None }
    }

    #[test]
    fn devices_without_an_agent_are_not_in_the_fleet() {
        assert!(DeviceView::from_row(&row(json!({}), json!({"temperature": 3}))).is_none());
    }

    #[test]
    fn class_and_group_come_from_the_twin() {
        let reported = json!({"deviceUpdate": {"__t": "c", "agent": {
            "deviceProperties": {"manufacturer": "Contoso", "model": "Toaster", "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3"},
            "compatPropertyNames": "manufacturer,model",
            "installedUpdateId": "{\"provider\":\"c\",\"name\":\"t\",\"version\":\"1.0\"}"}}});
        let view = DeviceView::from_row(&row(json!({"ADUGroup": "north"}), reported.clone())).unwrap();
        assert_eq!(view.group_id, "north");
        assert_eq!(view.class.compat.get("model").map(String::as_str), Some("Toaster"));
        assert_eq!(view.installed, Some(UpdateId::new("c", "t", "1.0")));
        let untagged = DeviceView::from_row(&row(json!({}), reported)).unwrap();
        assert_eq!(untagged.group_id, DEFAULT_GROUP);
        assert_eq!(untagged.class.id, view.class.id, "the class does not depend on the group");
        assert_eq!(view.class.id.len(), 40);
    }

    #[test]
    fn compatibility_matches_whole_sets() {
        let class = DeviceClass::new(
            BTreeMap::from([("manufacturer".into(), "contoso".into()), ("model".into(), "toaster".into())]),
            None,
        );
        let set = |pairs: &[(&str, &str)]| -> indexmap::IndexMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert!(class.accepts(&[set(&[("manufacturer", "contoso"), ("model", "toaster")])]));
        assert!(class.accepts(&[set(&[("deviceManufacturer", "contoso"), ("deviceModel", "toaster")])]));
        assert!(!class.accepts(&[set(&[("manufacturer", "contoso"), ("model", "kettle")])]));
        assert!(!class.accepts(&[set(&[("manufacturer", "contoso")])]), "a subset is another class");
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10", "1.9"), std::cmp::Ordering::Greater);
        assert_eq!(compare_versions("2.0", "2.0"), std::cmp::Ordering::Equal);
        assert_eq!(compare_versions("1.0.1", "1.0"), std::cmp::Ordering::Greater);
    }
}
