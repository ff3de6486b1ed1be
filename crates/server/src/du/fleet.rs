//! The fleet as Device Update sees it, computed from twins: which devices run an agent, their
//! device class (compatibility properties + contract model), their group (twin tag
//! `ADUGroup`), what they report and what the service last asked of them.
//!
//! Pure functions over [`FleetRow`]s; no I/O.

use std::collections::BTreeMap;

use duhub_proto::result::ResultCode;
use duhub_proto::twin::{AgentProperties, AgentState, Workflow};
use duhub_proto::update_id::UpdateId;
use serde_json::{Value, json};

use crate::store::{DuRecord, Facts, FleetRow};

pub use crate::store::{DEFAULT_GROUP, GROUP_TAG};

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
        let id = crate::store::class_id(&compat, contract_model.as_deref());
        Self { id, compat, contract_model }
    }

    /// The class stored in a record as its canonical JSON (`{"compat", "contractModel"}`).
    pub fn from_body(body: &str) -> Self {
        let value: Value = serde_json::from_str(body).unwrap_or_default();
        let compat = value
            .get("compat")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
            .unwrap_or_default();
        let model = value.get("contractModel").and_then(Value::as_str).map(str::to_owned);
        Self::new(compat, model)
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
        let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
        let record = DuRecord::of(&object(&row.tags), &object(&row.desired), &object(&row.reported))?;
        let desired_service = row.desired.pointer("/deviceUpdate/service").cloned().unwrap_or(Value::Null);
        Some(Self {
            device_id: row.device_id.clone(),
            group_id: record.group_id,
            tagged: record.tagged,
            class: DeviceClass { id: record.class_id, compat: record.compat, contract_model: record.contract_model },
            agent: record.agent,
            installed: record.installed,
            desired: record.desired,
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

impl super::deploy::Reports for DeviceView {
    fn reported_workflow(&self) -> Option<&str> {
        DeviceView::reported_workflow(self)
    }
    fn reported_state(&self) -> Option<AgentState> {
        self.agent.state
    }
    fn reported_result(&self) -> Option<ResultCode> {
        DeviceView::reported_result(self)
    }
    fn installed(&self) -> Option<UpdateId> {
        self.installed.clone()
    }
}

impl super::deploy::Reports for Facts {
    fn reported_workflow(&self) -> Option<&str> {
        self.workflow_id.as_deref()
    }
    fn reported_state(&self) -> Option<AgentState> {
        self.state()
    }
    fn reported_result(&self) -> Option<ResultCode> {
        self.result()
    }
    fn installed(&self) -> Option<UpdateId> {
        Facts::installed(self)
    }
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
