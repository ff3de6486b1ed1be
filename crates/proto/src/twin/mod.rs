//! The IoT Plug and Play twin payloads of Device Update: the `deviceUpdate` component of
//! interfaces `dtmi:azure:iot:deviceUpdate;1` and `;2`, and the `deviceInformation` component.
//!
//! - Desired side, written by the service: [`ServiceProperties`], found in any document shape by
//!   [`DesiredService::locate`] (full twin, desired patch, component or bare object).
//! - Reported side, written by the agent: [`AgentProperties`] with [`DeviceProperties`],
//!   [`LastInstallResult`] and [`StepResult`], and builders for each message the agent sends.
//! - The writable-property acknowledgement: [`ServiceAck`].
//! - The `deviceInformation` component: [`DeviceInformation`].
//!
//! Parsing is tolerant where real senders differ (`null` anywhere, `null` file URLs, unknown
//! members, unknown action and state numbers, the numeric `extendedResultCode` of older agents)
//! and never panics; it fails with a [`TwinError`] that names the offending place.
//! Serialisation writes members in the order the official agent and the Azure service use.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::validation::json_type_name as kind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

mod ack;
mod desired;
mod device_info;
mod reported;

pub use ack::ServiceAck;
pub use desired::{DesiredService, ServiceProperties, UpdateManifestField};
pub use device_info::DeviceInformation;
pub use reported::{AgentProperties, DeviceProperties, LastInstallResult, StepResult};

/// Model id announced by agents 0.8.x.
pub const DEVICE_UPDATE_MODEL_V1: &str = "dtmi:azure:iot:deviceUpdateModel;1";
/// Model id announced by agents 1.0.x.
pub const DEVICE_UPDATE_MODEL_V2: &str = "dtmi:azure:iot:deviceUpdateModel;2";
/// Model id announced by agent 1.1.0.
pub const DEVICE_UPDATE_MODEL_V3: &str = "dtmi:azure:iot:deviceUpdateModel;3";
/// Contract model 1: component `deviceUpdate` of interface `;1`, update manifest v4.
pub const CONTRACT_MODEL_V1: &str = "dtmi:azure:iot:deviceUpdateContractModel;1";
/// Contract model 2 (`deviceProperties.contractModelId` of agents 1.0.x).
pub const CONTRACT_MODEL_V2: &str = "dtmi:azure:iot:deviceUpdateContractModel;2";
/// Contract model 3 (`deviceProperties.contractModelId` of agent 1.1.0).
pub const CONTRACT_MODEL_V3: &str = "dtmi:azure:iot:deviceUpdateContractModel;3";
/// Interface 1 of the `deviceUpdate` component (numeric `extendedResultCode`).
pub const INTERFACE_V1: &str = "dtmi:azure:iot:deviceUpdate;1";
/// Interface 2 of the `deviceUpdate` component (`rootKeyPackageUrl`, `extendedResultCodes`).
pub const INTERFACE_V2: &str = "dtmi:azure:iot:deviceUpdate;2";
/// Interface of the `deviceInformation` component.
pub const DEVICE_INFORMATION_INTERFACE: &str = "dtmi:azure:DeviceManagement:DeviceInformation;1";
/// Interface of the `diagnosticInformation` component.
pub const DIAGNOSTIC_INFORMATION_INTERFACE: &str = "dtmi:azure:iot:diagnosticInformation;1";

/// Component name of the Device Update interface.
pub const DEVICE_UPDATE_COMPONENT: &str = "deviceUpdate";
/// Component name of the device information interface.
pub const DEVICE_INFORMATION_COMPONENT: &str = "deviceInformation";
/// Component name of the diagnostic information interface.
pub const DIAGNOSTIC_INFORMATION_COMPONENT: &str = "diagnosticInformation";
/// Member that marks an object as a PnP component (`"__t": "c"`).
pub const COMPONENT_MARKER_KEY: &str = "__t";
/// Value of [`COMPONENT_MARKER_KEY`].
pub const COMPONENT_MARKER_VALUE: &str = "c";

/// Workflow id the service writes when there is no deployment (with action Cancel).
pub const NO_DEPLOYMENT_ID: &str = "nodeployment";
/// Default `compatPropertyNames` of the official agent.
pub const DEFAULT_COMPAT_PROPERTY_NAMES: &str = "manufacturer,model";

/// Why a twin document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// The bytes are not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// A value along the way has the wrong JSON type.
    #[error("{}: expected {expected}, found {found}", show_pointer(at))]
    Type {
        /// JSON pointer of the value.
        at: String,
        /// What was expected there.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// The object was found but its members do not fit the model.
    #[error("{}: {message}", show_pointer(at))]
    Invalid {
        /// JSON pointer of the object.
        at: String,
        /// What is wrong.
        message: String,
    },
}

fn show_pointer(at: &str) -> &str {
    if at.is_empty() { "/" } else { at }
}

// ---------------------------------------------------------------------------------------------
// Actions, states, workflow
// ---------------------------------------------------------------------------------------------

/// `workflow.action`: what the service asks the agent to do. Numbers without a variant are
/// kept in [`UpdateAction::Other`]; equality and hashing compare the numbers, so
/// `Other(3) == ProcessDeployment`.
#[derive(Debug, Clone, Copy)]
pub enum UpdateAction {
    /// -1: undefined (internal to the agent; an unknown action in the SDK tests).
    Undefined,
    /// 0: legacy download (agents <= 0.7; rejected by 1.1.0).
    Download,
    /// 1: legacy install (agents <= 0.7).
    Install,
    /// 2: legacy apply (agents <= 0.7).
    Apply,
    /// 3: process the deployment described by the manifest.
    ProcessDeployment,
    /// 255: cancel the current deployment, or no deployment.
    Cancel,
    /// Any other number, kept as sent.
    Other(i64),
}

impl UpdateAction {
    /// The number on the wire.
    pub const fn code(self) -> i64 {
        match self {
            Self::Undefined => -1,
            Self::Download => 0,
            Self::Install => 1,
            Self::Apply => 2,
            Self::ProcessDeployment => 3,
            Self::Cancel => 255,
            Self::Other(code) => code,
        }
    }

    /// The action for a number; unknown numbers give [`UpdateAction::Other`].
    pub const fn from_code(code: i64) -> Self {
        match code {
            -1 => Self::Undefined,
            0 => Self::Download,
            1 => Self::Install,
            2 => Self::Apply,
            3 => Self::ProcessDeployment,
            255 => Self::Cancel,
            other => Self::Other(other),
        }
    }
}

impl PartialEq for UpdateAction {
    fn eq(&self, other: &Self) -> bool {
        self.code() == other.code()
    }
}

impl Eq for UpdateAction {}

impl Hash for UpdateAction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

impl fmt::Display for UpdateAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl Serialize for UpdateAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for UpdateAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Self::from_code)
    }
}

/// The agent's reported `state`. Only 0, 6 and 255 are sent by current agents; 2 and 4 came
/// from agents <= 0.7. Other numbers are kept in [`AgentState::Other`]; equality and hashing
/// compare the numbers.
#[derive(Debug, Clone, Copy)]
pub enum AgentState {
    /// 0: idle, ready for a deployment (also after a success or a cancel).
    Idle,
    /// 2: legacy download succeeded.
    DownloadSucceeded,
    /// 4: legacy install succeeded.
    InstallSucceeded,
    /// 6: a deployment is being processed.
    DeploymentInProgress,
    /// 255: the last deployment failed.
    Failed,
    /// Any other number, kept as sent.
    Other(i64),
}

impl AgentState {
    /// The number on the wire.
    pub const fn code(self) -> i64 {
        match self {
            Self::Idle => 0,
            Self::DownloadSucceeded => 2,
            Self::InstallSucceeded => 4,
            Self::DeploymentInProgress => 6,
            Self::Failed => 255,
            Self::Other(code) => code,
        }
    }

    /// The state for a number; unknown numbers give [`AgentState::Other`].
    pub const fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Idle,
            2 => Self::DownloadSucceeded,
            4 => Self::InstallSucceeded,
            6 => Self::DeploymentInProgress,
            255 => Self::Failed,
            other => Self::Other(other),
        }
    }
}

impl PartialEq for AgentState {
    fn eq(&self, other: &Self) -> bool {
        self.code() == other.code()
    }
}

impl Eq for AgentState {}

impl Hash for AgentState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl Serialize for AgentState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for AgentState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Self::from_code)
    }
}

/// The `workflow` object, desired (what to do) and reported (what the agent works on).
///
/// Every member may be missing or `null` on input (a desired workflow without `action` exists
/// in the wild); serialisation writes `action`, `id`, `retryTimestamp` in that order and omits
/// absent ones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// The action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<UpdateAction>,
    /// The deployment workflow id (a GUID, or [`NO_DEPLOYMENT_ID`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Set by the service to ask for a retry of the same workflow id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timestamp: Option<String>,
}

impl Workflow {
    /// A workflow with an action and an id, no retry timestamp.
    pub fn new(action: UpdateAction, id: impl Into<String>) -> Self {
        Self { action: Some(action), id: Some(id.into()), retry_timestamp: None }
    }

    /// The cancel / no deployment workflow: action 255, id `nodeployment`.
    pub fn no_deployment() -> Self {
        Self::new(UpdateAction::Cancel, NO_DEPLOYMENT_ID)
    }

    /// This workflow with a retry timestamp.
    pub fn with_retry_timestamp(mut self, timestamp: impl Into<String>) -> Self {
        self.retry_timestamp = Some(timestamp.into());
        self
    }

    /// Whether the action is Cancel (255).
    pub fn is_cancel(&self) -> bool {
        self.action == Some(UpdateAction::Cancel)
    }

    /// Whether `self`, newly desired, asks to retry `current` (§6.3): same id, and a retry
    /// timestamp that `current` lacks or that differs from the current one.
    pub fn is_retry_of(&self, current: &Workflow) -> bool {
        self.id.is_some()
            && self.id == current.id
            && self.retry_timestamp.is_some()
            && self.retry_timestamp != current.retry_timestamp
    }
}

// ---------------------------------------------------------------------------------------------
// Component patches and locating objects in documents
// ---------------------------------------------------------------------------------------------

/// `{"<component>":{"__t":"c", <members>...}}`: a reported (or desired) patch of one component.
pub fn component_patch(component: &str, members: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut inner = Map::new();
    inner.insert(COMPONENT_MARKER_KEY.to_owned(), Value::from(COMPONENT_MARKER_VALUE));
    inner.extend(members);
    let mut outer = Map::new();
    outer.insert(component.to_owned(), Value::Object(inner));
    Value::Object(outer)
}

/// `value` serialised; the types of this module always serialise (string keys only).
fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Parses bytes as JSON.
fn parse_bytes(json: &[u8]) -> Result<Value, TwinError> {
    serde_json::from_slice(json).map_err(|e| TwinError::Json(e.to_string()))
}

/// Where an object is looked for.
#[derive(Clone, Copy)]
struct Path {
    /// `desired` or `reported`.
    side: &'static str,
    /// The component name.
    component: &'static str,
    /// The property inside the component, or `None` when the members sit in the component.
    property: Option<&'static str>,
    /// Whether an object with none of the wrappers is the wanted object itself.
    is_leaf: fn(&Map<String, Value>) -> bool,
}

/// An object found by [`find`].
struct Found<'a> {
    /// The object.
    value: &'a Value,
    /// Its members.
    object: &'a Map<String, Value>,
    /// `$version` of the desired or reported properties, when the document carries it.
    version: Option<i64>,
    /// JSON pointer of the object.
    at: String,
}

impl Found<'_> {
    /// Deserialises the object, reporting errors at its pointer.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, TwinError> {
        T::deserialize(self.value).map_err(|e| TwinError::Invalid { at: self.at.clone(), message: e.to_string() })
    }
}

fn as_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, TwinError> {
    value.as_object().ok_or_else(|| TwinError::Type { at: at.to_owned(), expected: "an object", found: kind(value) })
}

/// Steps into `key` of `node` when present: `Ok(None)` for `null` (a merge patch deleting it),
/// an error when it is not an object.
fn step<'a>(node: &'a Map<String, Value>, key: &str, at: &mut String) -> Result<Option<Option<&'a Value>>, TwinError> {
    let Some(inner) = node.get(key) else {
        return Ok(None);
    };
    at.push('/');
    at.push_str(key);
    if inner.is_null() {
        return Ok(Some(None));
    }
    as_object(inner, at)?;
    Ok(Some(Some(inner)))
}

/// Finds the object `path` names in a full twin (`{"properties":{"desired":…}}` or
/// `{"desired":…}`), a patch (`{"<component>":…,"$version":n}`), a component object
/// (`{"__t":"c","<property>":…}`) or the bare object. `Ok(None)` when the document does not
/// carry it (or deletes it with `null`).
fn find(doc: &Value, path: Path) -> Result<Option<Found<'_>>, TwinError> {
    let mut at = String::new();
    let mut node = doc;
    for wrapper in ["properties", path.side] {
        match step(as_object(node, &at)?, wrapper, &mut at)? {
            None => {}
            Some(None) => return Ok(None),
            Some(Some(inner)) => node = inner,
        }
    }
    let object = as_object(node, &at)?;
    let version = match object.get("$version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| TwinError::Type {
            at: format!("{at}/$version"),
            expected: "an integer",
            found: kind(v),
        })?),
    };
    let mut in_component = false;
    match step(object, path.component, &mut at)? {
        None => {}
        Some(None) => return Ok(None),
        Some(Some(inner)) => {
            node = inner;
            in_component = true;
        }
    }
    let object = as_object(node, &at)?;
    match path.property {
        Some(property) => match step(object, property, &mut at)? {
            Some(None) => return Ok(None),
            Some(Some(inner)) => node = inner,
            None if (path.is_leaf)(object) => {}
            None => return Ok(None),
        },
        None if in_component || (path.is_leaf)(object) => {}
        None => return Ok(None),
    }
    let object = as_object(node, &at)?;
    Ok(Some(Found { value: node, object, version, at }))
}

/// Deserialises an optional struct from a JSON object only: derived struct impls also accept
/// arrays (`[3, "id"]` as a workflow), which no sender means.
fn optional_object<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: serde::de::DeserializeOwned,
    D: Deserializer<'de>,
{
    match Option::<Map<String, Value>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(object) => T::deserialize(Value::Object(object)).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_map_numbers_both_ways() {
        for (code, action) in [
            (-1, UpdateAction::Undefined),
            (0, UpdateAction::Download),
            (1, UpdateAction::Install),
            (2, UpdateAction::Apply),
            (3, UpdateAction::ProcessDeployment),
            (255, UpdateAction::Cancel),
        ] {
            assert_eq!(UpdateAction::from_code(code), action);
            assert_eq!(action.code(), code);
            assert!(!matches!(UpdateAction::from_code(code), UpdateAction::Other(_)));
        }
        assert!(matches!(UpdateAction::from_code(4), UpdateAction::Other(4)));
        assert!(matches!(UpdateAction::from_code(i64::MIN), UpdateAction::Other(i64::MIN)));
        assert_eq!(UpdateAction::Other(3), UpdateAction::ProcessDeployment);
        assert_ne!(UpdateAction::Other(4), UpdateAction::Cancel);
    }

    #[test]
    fn states_map_numbers_both_ways() {
        for (code, state) in [
            (0, AgentState::Idle),
            (2, AgentState::DownloadSucceeded),
            (4, AgentState::InstallSucceeded),
            (6, AgentState::DeploymentInProgress),
            (255, AgentState::Failed),
        ] {
            assert_eq!(AgentState::from_code(code), state);
            assert_eq!(state.code(), code);
        }
        assert!(matches!(AgentState::from_code(-1), AgentState::Other(-1)));
        assert!(matches!(AgentState::from_code(7), AgentState::Other(7)));
        assert_eq!(AgentState::Other(6), AgentState::DeploymentInProgress);
    }

    #[test]
    fn action_and_state_serde() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&UpdateAction::Other(42))?, "42");
        assert_eq!(serde_json::from_str::<UpdateAction>("-1")?, UpdateAction::Undefined);
        assert!(serde_json::from_str::<UpdateAction>("3.0").is_err());
        assert!(serde_json::from_str::<UpdateAction>("\"3\"").is_err());
        assert_eq!(serde_json::from_str::<AgentState>("255")?, AgentState::Failed);
        assert_eq!(serde_json::to_string(&AgentState::DeploymentInProgress)?, "6");
        Ok(())
    }

    #[test]
    fn workflow_member_order_and_nulls() -> Result<(), serde_json::Error> {
        let workflow = Workflow::new(UpdateAction::ProcessDeployment, "w1").with_retry_timestamp("t");
        assert_eq!(serde_json::to_string(&workflow)?, r#"{"action":3,"id":"w1","retryTimestamp":"t"}"#);
        let reversed: Workflow = serde_json::from_str(r#"{"retryTimestamp":"t","id":"w1","action":3}"#)?;
        assert_eq!(reversed, workflow);
        let nulls: Workflow = serde_json::from_str(r#"{"action":null,"id":null,"retryTimestamp":null,"x":1}"#)?;
        assert_eq!(nulls, Workflow::default());
        assert_eq!(serde_json::to_string(&nulls)?, "{}");
        assert_eq!(serde_json::to_string(&Workflow::no_deployment())?, r#"{"action":255,"id":"nodeployment"}"#);
        assert!(Workflow::no_deployment().is_cancel());
        assert!(!workflow.is_cancel());
        Ok(())
    }

    #[test]
    fn retry_detection() {
        let plain = Workflow::new(UpdateAction::ProcessDeployment, "w");
        let retry1 = plain.clone().with_retry_timestamp("t1");
        let retry2 = plain.clone().with_retry_timestamp("t2");
        assert!(retry1.is_retry_of(&plain));
        assert!(retry2.is_retry_of(&retry1));
        assert!(!retry1.is_retry_of(&retry1));
        assert!(!plain.is_retry_of(&retry1));
        assert!(!plain.is_retry_of(&plain));
        let other = Workflow::new(UpdateAction::ProcessDeployment, "x").with_retry_timestamp("t1");
        assert!(!other.is_retry_of(&plain));
        let no_id = Workflow { id: None, ..retry1.clone() };
        assert!(!no_id.is_retry_of(&Workflow::default()));
    }

    #[test]
    fn component_patch_puts_marker_first() {
        let patch = component_patch("deviceUpdate", [("agent".to_owned(), json!({"state":0}))]);
        assert_eq!(patch.to_string(), r#"{"deviceUpdate":{"__t":"c","agent":{"state":0}}}"#);
    }

    fn service_path() -> Path {
        Path {
            side: "desired",
            component: DEVICE_UPDATE_COMPONENT,
            property: Some("service"),
            is_leaf: |o| o.contains_key("workflow"),
        }
    }

    #[test]
    fn find_reports_type_errors_with_pointers() {
        let err = |doc: Value| find(&doc, service_path()).err().map(|e| e.to_string());
        assert_eq!(err(json!([])), Some("/: expected an object, found an array".to_owned()));
        assert_eq!(err(json!({"desired": 1})), Some("/desired: expected an object, found a number".to_owned()));
        assert_eq!(
            err(json!({"deviceUpdate": {"service": "x"}})),
            Some("/deviceUpdate/service: expected an object, found a string".to_owned())
        );
        assert_eq!(
            err(json!({"deviceUpdate": {}, "$version": "7"})),
            Some("/$version: expected an integer, found a string".to_owned())
        );
        assert_eq!(
            err(json!({"properties": {"desired": {"deviceUpdate": true}}})),
            Some("/properties/desired/deviceUpdate: expected an object, found a boolean".to_owned())
        );
    }

    #[test]
    fn find_returns_none_for_absent_or_deleted() -> Result<(), TwinError> {
        for doc in [
            json!({}),
            json!({"$version": 3, "other": 1}),
            json!({"deviceUpdate": null, "$version": 3}),
            json!({"deviceUpdate": {"__t": "c"}}),
            json!({"deviceUpdate": {"__t": "c", "service": null}}),
            json!({"desired": null}),
            json!({"reported": {"deviceUpdate": {"agent": {}}}}),
        ] {
            assert!(find(&doc, service_path())?.is_none(), "{doc}");
        }
        Ok(())
    }
}
