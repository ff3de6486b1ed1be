//! The reported `deviceUpdate.agent` property: what the agent tells the service.

use indexmap::IndexMap;
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{
    AgentState, DEVICE_UPDATE_COMPONENT, Path, TwinError, UpdateAction, Workflow, component_patch, find,
    optional_object, parse_bytes, to_json,
};
use crate::UpdateId;
use crate::result::{ExtendedResultCode, ExtendedResultCodes, InstallResult, ResultCode};

// ---------------------------------------------------------------------------------------------
// DeviceProperties
// ---------------------------------------------------------------------------------------------

/// `deviceProperties`: the device class inputs and the agent's versions.
///
/// Serialises as `manufacturer`, `model`, the additional properties in order, then
/// `interfaceId`, `contractModelId`, `aduVer`, `doVer` when present. Parsing requires
/// `manufacturer` and `model` (strings) and keeps every other member, in order, in
/// [`DeviceProperties::additional`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceProperties {
    /// Device manufacturer.
    pub manufacturer: String,
    /// Device model.
    pub model: String,
    /// Further properties (e.g. custom compatibility properties), in order. Names of the
    /// members above are skipped when serialising.
    pub additional: IndexMap<String, Value>,
    /// `interfaceId`: `None` omits it, `Some(None)` writes `null` (agents 1.0 and 1.1),
    /// `Some(Some(id))` writes the id (agent 0.8: [`super::INTERFACE_V1`]).
    pub interface_id: Option<Option<String>>,
    /// `contractModelId`, e.g. [`super::CONTRACT_MODEL_V3`].
    pub contract_model_id: Option<String>,
    /// `aduVer`: `<builder>;agent/<version>`, e.g. `DU;agent/1.1.0`.
    pub adu_ver: Option<String>,
    /// `doVer`: the Delivery Optimization version (older agents).
    pub do_ver: Option<String>,
}

const KNOWN_DEVICE_PROPERTIES: [&str; 6] =
    ["manufacturer", "model", "interfaceId", "contractModelId", "aduVer", "doVer"];

impl DeviceProperties {
    /// Manufacturer and model only.
    pub fn new(manufacturer: impl Into<String>, model: impl Into<String>) -> Self {
        Self { manufacturer: manufacturer.into(), model: model.into(), ..Self::default() }
    }

    /// This set with one more additional string property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.additional.insert(name.into(), Value::String(value.into()));
        self
    }

    /// The string value of a property by its twin name (`manufacturer`, `model`, an additional
    /// one, …), as used to form the device class from `compatPropertyNames`.
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "manufacturer" => Some(&self.manufacturer),
            "model" => Some(&self.model),
            "interfaceId" => self.interface_id.as_ref()?.as_deref(),
            "contractModelId" => self.contract_model_id.as_deref(),
            "aduVer" => self.adu_ver.as_deref(),
            "doVer" => self.do_ver.as_deref(),
            other => self.additional.get(other)?.as_str(),
        }
    }
}

impl Serialize for DeviceProperties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("manufacturer", &self.manufacturer)?;
        map.serialize_entry("model", &self.model)?;
        for (name, value) in &self.additional {
            if !KNOWN_DEVICE_PROPERTIES.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        if let Some(interface_id) = &self.interface_id {
            map.serialize_entry("interfaceId", interface_id)?;
        }
        let tail = [("contractModelId", &self.contract_model_id), ("aduVer", &self.adu_ver), ("doVer", &self.do_ver)];
        for (name, value) in tail {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// Removes `name` from `members`: absent or `null` give `None`, a string gives it, anything
/// else is an error.
fn take_string<E: serde::de::Error>(members: &mut IndexMap<String, Value>, name: &str) -> Result<Option<String>, E> {
    match members.shift_remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(E::custom(format!("{name} must be a string, found {other}"))),
    }
}

impl<'de> Deserialize<'de> for DeviceProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut members = IndexMap::<String, Value>::deserialize(deserializer)?;
        let manufacturer =
            take_string(&mut members, "manufacturer")?.ok_or_else(|| D::Error::missing_field("manufacturer"))?;
        let model = take_string(&mut members, "model")?.ok_or_else(|| D::Error::missing_field("model"))?;
        let interface_id = match members.shift_remove("interfaceId") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(id)) => Some(Some(id)),
            Some(other) => {
                return Err(D::Error::custom(format!("interfaceId must be a string, found {other}")));
            }
        };
        Ok(Self {
            manufacturer,
            model,
            interface_id,
            contract_model_id: take_string(&mut members, "contractModelId")?,
            adu_ver: take_string(&mut members, "aduVer")?,
            do_ver: take_string(&mut members, "doVer")?,
            additional: members,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// StepResult, LastInstallResult
// ---------------------------------------------------------------------------------------------

/// The result of one step, an entry of `stepResults`.
///
/// Serialises as `resultCode`, `extendedResultCodes` (interface `;2`) or the legacy numeric
/// `extendedResultCode` (interface `;1`) when present, then `resultDetails` (`null` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step's result code.
    pub result_code: ResultCode,
    /// `extendedResultCodes` (interface `;2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_result_codes: Option<ExtendedResultCodes>,
    /// `extendedResultCode`, the number older agents and the embedded SDK send.
    #[serde(rename = "extendedResultCode", default, skip_serializing_if = "Option::is_none")]
    pub legacy_extended_result_code: Option<ExtendedResultCode>,
    /// `resultDetails`.
    #[serde(default)]
    pub result_details: Option<String>,
}

impl StepResult {
    /// The first extended result code, whichever form was reported.
    pub fn extended_result_code(&self) -> Option<ExtendedResultCode> {
        first_code(&self.extended_result_codes, self.legacy_extended_result_code)
    }

    /// The result as an [`InstallResult`] (extended result 0 when none was reported).
    pub fn install_result(&self) -> InstallResult {
        to_install_result(
            self.result_code,
            &self.extended_result_codes,
            self.legacy_extended_result_code,
            &self.result_details,
        )
    }
}

impl From<InstallResult> for StepResult {
    fn from(result: InstallResult) -> Self {
        Self {
            result_code: result.result_code,
            extended_result_codes: Some(result.extended_result_codes),
            legacy_extended_result_code: None,
            result_details: result.result_details,
        }
    }
}

fn first_code(codes: &Option<ExtendedResultCodes>, legacy: Option<ExtendedResultCode>) -> Option<ExtendedResultCode> {
    codes.as_ref().map(ExtendedResultCodes::root).or(legacy)
}

fn to_install_result(
    result_code: ResultCode,
    codes: &Option<ExtendedResultCodes>,
    legacy: Option<ExtendedResultCode>,
    details: &Option<String>,
) -> InstallResult {
    InstallResult {
        result_code,
        extended_result_codes: codes.clone().unwrap_or_else(|| ExtendedResultCodes::new(legacy.unwrap_or_default())),
        result_details: details.clone(),
    }
}

/// `stepResults` when present (use with `#[serde(default)]` so that absent gives `None`):
/// `null` gives `Some(None)`; every entry must be an object.
fn step_results<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<IndexMap<String, StepResult>>>, D::Error> {
    let Some(entries) = Option::<IndexMap<String, Map<String, Value>>>::deserialize(deserializer)? else {
        return Ok(Some(None));
    };
    let steps = entries
        .into_iter()
        .map(|(name, entry)| Ok((name, StepResult::deserialize(Value::Object(entry))?)))
        .collect::<Result<IndexMap<_, _>, serde_json::Error>>()
        .map_err(D::Error::custom)?;
    Ok(Some(Some(steps)))
}

/// `lastInstallResult`: the workflow's result and its steps' results.
///
/// Serialises as `stepResults` (omitted when `None`, `null` when `Some(None)`), `resultCode`,
/// `extendedResultCodes` / legacy `extendedResultCode` when present, `resultDetails` (`null`
/// when absent), then any [`LastInstallResult::other`] members. Parsing keeps unknown members
/// in `other`: the embedded SDK and old agents may put `step_N` results there directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastInstallResult {
    /// `step_<index>` -> result; `Some(None)` is the explicit `null` sent with state 6.
    #[serde(default, deserialize_with = "step_results", skip_serializing_if = "Option::is_none")]
    pub step_results: Option<Option<IndexMap<String, StepResult>>>,
    /// The workflow's result code.
    pub result_code: ResultCode,
    /// `extendedResultCodes` (interface `;2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_result_codes: Option<ExtendedResultCodes>,
    /// `extendedResultCode`, the number older agents and the embedded SDK send.
    #[serde(rename = "extendedResultCode", default, skip_serializing_if = "Option::is_none")]
    pub legacy_extended_result_code: Option<ExtendedResultCode>,
    /// `resultDetails`.
    #[serde(default)]
    pub result_details: Option<String>,
    /// Other members, in order (e.g. a stray `step_0`).
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

impl LastInstallResult {
    /// A result without steps (`stepResults` omitted).
    pub fn new(result: InstallResult) -> Self {
        Self {
            step_results: None,
            result_code: result.result_code,
            extended_result_codes: Some(result.extended_result_codes),
            legacy_extended_result_code: None,
            result_details: result.result_details,
            other: IndexMap::new(),
        }
    }

    /// What agent 1.1.0 reports when a deployment starts: `stepResults` `null`, `resultCode` 1,
    /// `extendedResultCodes` `"00000000"`, `resultDetails` `null`.
    pub fn in_progress() -> Self {
        Self { step_results: Some(None), ..Self::new(InstallResult::success(ResultCode::SUCCESS)) }
    }

    /// This result with `step` recorded as `step_<index>` (the index in `instructions.steps`).
    pub fn with_step(mut self, index: usize, step: impl Into<StepResult>) -> Self {
        self.step_results
            .get_or_insert_with(|| Some(IndexMap::new()))
            .get_or_insert_with(IndexMap::new)
            .insert(format!("step_{index}"), step.into());
        self
    }

    /// The first extended result code, whichever form was reported.
    pub fn extended_result_code(&self) -> Option<ExtendedResultCode> {
        first_code(&self.extended_result_codes, self.legacy_extended_result_code)
    }

    /// The workflow result as an [`InstallResult`] (extended result 0 when none was reported).
    pub fn install_result(&self) -> InstallResult {
        to_install_result(
            self.result_code,
            &self.extended_result_codes,
            self.legacy_extended_result_code,
            &self.result_details,
        )
    }

    /// Every step result: those in `stepResults`, then `step_*` members placed directly in
    /// the object that parse as a step result.
    pub fn steps(&self) -> Vec<(&str, StepResult)> {
        let listed = self.step_results.iter().flatten().flatten();
        let stray = self
            .other
            .iter()
            .filter(|(name, value)| name.starts_with("step_") && value.is_object())
            .filter_map(|(name, value)| Some((name, StepResult::deserialize(value).ok()?)));
        listed
            .map(|(name, step)| (name.as_str(), step.clone()))
            .chain(stray.map(|(name, step)| (name.as_str(), step)))
            .collect()
    }
}

impl From<InstallResult> for LastInstallResult {
    fn from(result: InstallResult) -> Self {
        Self::new(result)
    }
}

// ---------------------------------------------------------------------------------------------
// AgentProperties
// ---------------------------------------------------------------------------------------------

/// The reported `agent` object of the `deviceUpdate` component.
///
/// Serialises in the agent's order (`deviceProperties, compatPropertyNames, lastInstallResult,
/// state, workflow, installedUpdateId`), omitting absent members; parsing ignores unknown ones.
/// The builders produce each message agent 1.1.0 sends; [`AgentProperties::to_patch`] wraps
/// them as `{"deviceUpdate":{"__t":"c","agent":{…}}}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProperties {
    /// Device class inputs and agent versions (sent at startup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_properties: Option<DeviceProperties>,
    /// Comma-separated names of the `deviceProperties` forming the device class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat_property_names: Option<String>,
    /// The last workflow's result.
    #[serde(default, deserialize_with = "optional_object", skip_serializing_if = "Option::is_none")]
    pub last_install_result: Option<LastInstallResult>,
    /// The agent state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// The workflow the agent works on or last worked on.
    #[serde(default, deserialize_with = "optional_object", skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    /// The installed update id, a JSON string (see [`UpdateId::to_installed_update_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_update_id: Option<String>,
}

fn is_agent(object: &Map<String, Value>) -> bool {
    ["deviceProperties", "compatPropertyNames", "lastInstallResult", "state", "workflow", "installedUpdateId"]
        .iter()
        .any(|key| object.contains_key(*key))
}

const AGENT_PATH: Path =
    Path { side: "reported", component: DEVICE_UPDATE_COMPONENT, property: Some("agent"), is_leaf: is_agent };

impl AgentProperties {
    /// The startup message (every connect): `deviceProperties` and `compatPropertyNames`.
    pub fn startup(device_properties: DeviceProperties, compat_property_names: impl Into<String>) -> Self {
        Self {
            device_properties: Some(device_properties),
            compat_property_names: Some(compat_property_names.into()),
            ..Self::default()
        }
    }

    /// The "deployment in progress" report: state 6, [`LastInstallResult::in_progress`] and the
    /// workflow.
    pub fn in_progress(workflow: Workflow) -> Self {
        Self::default()
            .with_last_install_result(LastInstallResult::in_progress())
            .with_state(AgentState::DeploymentInProgress)
            .with_workflow(workflow)
    }

    /// The success report: state 0, `result` (normally [`ResultCode::APPLY_SUCCESS`] with the
    /// step results), the workflow when there is one and `installedUpdateId`.
    pub fn succeeded(workflow: Option<Workflow>, result: LastInstallResult, installed: &UpdateId) -> Self {
        Self {
            workflow,
            ..Self::default()
                .with_last_install_result(result)
                .with_state(AgentState::Idle)
                .with_installed_update(installed)
        }
    }

    /// The failure report: state 255 with the failing result.
    pub fn failed(workflow: Option<Workflow>, result: LastInstallResult) -> Self {
        Self { workflow, ..Self::default().with_last_install_result(result).with_state(AgentState::Failed) }
    }

    /// The cancel report: state 0, `resultCode` -1, extended result 0.
    pub fn cancelled(workflow: Option<Workflow>) -> Self {
        let result = InstallResult::new(ResultCode::FAILURE_CANCELLED, ExtendedResultCode::NONE);
        Self { workflow, ..Self::default().with_last_install_result(result.into()).with_state(AgentState::Idle) }
    }

    /// This report with `deviceProperties`.
    pub fn with_device_properties(mut self, device_properties: DeviceProperties) -> Self {
        self.device_properties = Some(device_properties);
        self
    }

    /// This report with `compatPropertyNames`.
    pub fn with_compat_property_names(mut self, names: impl Into<String>) -> Self {
        self.compat_property_names = Some(names.into());
        self
    }

    /// This report with `lastInstallResult`.
    pub fn with_last_install_result(mut self, result: LastInstallResult) -> Self {
        self.last_install_result = Some(result);
        self
    }

    /// This report with `state`.
    pub fn with_state(mut self, state: AgentState) -> Self {
        self.state = Some(state);
        self
    }

    /// This report with `workflow`.
    pub fn with_workflow(mut self, workflow: Workflow) -> Self {
        self.workflow = Some(workflow);
        self
    }

    /// This report with `installedUpdateId` set from an update id.
    pub fn with_installed_update(mut self, installed: &UpdateId) -> Self {
        self.installed_update_id = Some(installed.to_installed_update_id());
        self
    }

    /// The reported patch: `{"deviceUpdate":{"__t":"c","agent":{…}}}`.
    pub fn to_patch(&self) -> Value {
        component_patch(DEVICE_UPDATE_COMPONENT, [("agent".to_owned(), to_json(self))])
    }

    /// Finds `deviceUpdate.agent` in a full twin (`reported`, possibly under `properties`), a
    /// reported patch, a component object or a bare agent object (one with any of its
    /// members). `Ok(None)` when absent.
    pub fn locate(doc: &Value) -> Result<Option<Self>, TwinError> {
        find(doc, AGENT_PATH)?.map(|found| found.parse()).transpose()
    }

    /// [`AgentProperties::locate`] on JSON bytes.
    pub fn from_slice(json: &[u8]) -> Result<Option<Self>, TwinError> {
        Self::locate(&parse_bytes(json)?)
    }

    /// The reported `resultCode`, if any.
    pub fn result_code(&self) -> Option<ResultCode> {
        self.last_install_result.as_ref().map(|result| result.result_code)
    }

    /// The first extended result code, from `extendedResultCodes` or the numeric
    /// `extendedResultCode`, whichever was reported (what REST calls `extendedResultCode`).
    pub fn extended_result_code(&self) -> Option<ExtendedResultCode> {
        self.last_install_result.as_ref()?.extended_result_code()
    }

    /// The installed update, when `installedUpdateId` holds a valid update id JSON string.
    pub fn installed_update(&self) -> Option<UpdateId> {
        UpdateId::from_installed_update_id(self.installed_update_id.as_deref()?)
    }

    /// `workflow.action`, if reported.
    pub fn action(&self) -> Option<UpdateAction> {
        self.workflow.as_ref()?.action
    }

    /// `workflow.id`, if reported.
    pub fn workflow_id(&self) -> Option<&str> {
        self.workflow.as_ref()?.id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn device_properties_keep_additional_members_in_order() -> Result<(), serde_json::Error> {
        let text =
            r#"{"aduVer":"DU;agent/1.1.0","manufacturer":"M","zeta":"z","model":"X","alpha":1,"interfaceId":null}"#;
        let parsed: DeviceProperties = serde_json::from_str(text)?;
        assert_eq!(parsed.manufacturer, "M");
        assert_eq!(parsed.interface_id, Some(None));
        assert_eq!(parsed.additional.keys().collect::<Vec<_>>(), ["zeta", "alpha"]);
        assert_eq!(parsed.get("zeta"), Some("z"));
        assert_eq!(parsed.get("alpha"), None);
        assert_eq!(parsed.get("aduVer"), Some("DU;agent/1.1.0"));
        assert_eq!(parsed.get("interfaceId"), None);
        assert_eq!(
            serde_json::to_string(&parsed)?,
            r#"{"manufacturer":"M","model":"X","zeta":"z","alpha":1,"interfaceId":null,"aduVer":"DU;agent/1.1.0"}"#
        );
        Ok(())
    }

    #[test]
    fn device_properties_require_manufacturer_and_model() {
        for bad in [
            json!({"model": "X"}),
            json!({"manufacturer": "M"}),
            json!({"manufacturer": null, "model": "X"}),
            json!({"manufacturer": 1, "model": "X"}),
            json!({"manufacturer": "M", "model": "X", "interfaceId": 1}),
            json!({"manufacturer": "M", "model": "X", "aduVer": []}),
            json!(["M", "X"]),
        ] {
            assert!(serde_json::from_value::<DeviceProperties>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_properties_never_serialise_duplicate_members() -> Result<(), serde_json::Error> {
        let mut properties = DeviceProperties::new("M", "X").with_property("model", "dup");
        properties.adu_ver = Some("v".into());
        assert_eq!(serde_json::to_string(&properties)?, r#"{"manufacturer":"M","model":"X","aduVer":"v"}"#);
        Ok(())
    }

    #[test]
    fn with_step_creates_or_replaces_a_null_map() {
        let result = LastInstallResult::in_progress().with_step(1, InstallResult::success(ResultCode::APPLY_SUCCESS));
        let keys: Vec<&str> = result.steps().into_iter().map(|(name, _)| name).collect();
        assert_eq!(keys, ["step_1"]);
        assert_eq!(
            to_json(&result).to_string(),
            r#"{"stepResults":{"step_1":{"resultCode":700,"extendedResultCodes":"00000000","resultDetails":null}},"resultCode":1,"extendedResultCodes":"00000000","resultDetails":null}"#
        );
    }

    #[test]
    fn install_result_from_either_form() -> Result<(), serde_json::Error> {
        let legacy: LastInstallResult = serde_json::from_str(r#"{"resultCode":0,"extendedResultCode":-1608515580}"#)?;
        assert_eq!(legacy.extended_result_code(), Some(ExtendedResultCode::JWS_INVALID_SIGNATURE));
        assert_eq!(legacy.result_details, None);
        assert_eq!(legacy.install_result(), InstallResult::failure(ExtendedResultCode::JWS_INVALID_SIGNATURE));
        let neither: LastInstallResult = serde_json::from_str(r#"{"resultCode":700}"#)?;
        assert_eq!(neither.extended_result_code(), None);
        assert_eq!(neither.install_result(), InstallResult::success(ResultCode::APPLY_SUCCESS));
        let both: StepResult =
            serde_json::from_str(r#"{"resultCode":0,"extendedResultCodes":"80300001","extendedResultCode":5}"#)?;
        assert_eq!(both.extended_result_code(), Some(ExtendedResultCode::MANIFEST_VALIDATION_FAILED));
        Ok(())
    }

    #[test]
    fn last_install_result_rejects_bad_members() {
        for bad in [
            json!({}),
            json!({"resultCode": "700"}),
            json!({"resultCode": 700, "extendedResultCodes": "nope"}),
            json!({"resultCode": 700, "extendedResultCodes": 0}),
            json!({"resultCode": 700, "extendedResultCode": "0"}),
            json!({"resultCode": 700, "resultDetails": 1}),
            json!({"resultCode": 700, "stepResults": []}),
            json!({"resultCode": 700, "stepResults": {"step_0": {}}}),
            json!({"resultCode": 700, "stepResults": {"step_0": [700]}}),
            json!([700]),
        ] {
            assert!(serde_json::from_value::<LastInstallResult>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_accessors() {
        let agent = AgentProperties::succeeded(
            Some(Workflow::new(UpdateAction::ProcessDeployment, "w")),
            InstallResult::success(ResultCode::APPLY_SUCCESS).into(),
            &UpdateId::new("P", "N", "1.0"),
        );
        assert_eq!(agent.result_code(), Some(ResultCode::APPLY_SUCCESS));
        assert_eq!(agent.extended_result_code(), Some(ExtendedResultCode::NONE));
        assert_eq!(agent.installed_update(), Some(UpdateId::new("P", "N", "1.0")));
        assert_eq!(agent.action(), Some(UpdateAction::ProcessDeployment));
        assert_eq!(agent.workflow_id(), Some("w"));
        let empty = AgentProperties::default();
        assert_eq!((empty.result_code(), empty.extended_result_code()), (None, None));
        assert_eq!((empty.installed_update(), empty.workflow_id()), (None, None));
        let garbage = AgentProperties { installed_update_id: Some("x".into()), ..empty };
        assert_eq!(garbage.installed_update(), None);
    }
}
