//! The `deviceInformation` component (`dtmi:azure:DeviceManagement:DeviceInformation;1`).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{DEVICE_INFORMATION_COMPONENT, Path, TwinError, component_patch, find, parse_bytes, to_json};

/// Hardware and operating system facts the agent reports once per connection.
///
/// Serialises in the agent's order (`manufacturer, model, osName, swVersion,
/// processorArchitecture, processorManufacturer, totalMemory, totalStorage`), omitting absent
/// members. Sizes are kilobytes; parsing accepts integers, non-negative floats (truncated, the
/// DTDL type is double) and numeric strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInformation {
    /// Device manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Device model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Operating system name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Software (e.g. firmware or kernel) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Processor architecture (e.g. `x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_architecture: Option<String>,
    /// Processor manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_manufacturer: Option<String>,
    /// Total memory in kilobytes.
    #[serde(default, deserialize_with = "kilobytes", skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Total storage in kilobytes.
    #[serde(default, deserialize_with = "kilobytes", skip_serializing_if = "Option::is_none")]
    pub total_storage: Option<u64>,
}

/// 2^64 as a float: the first value above `u64::MAX`.
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

fn kilobytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let number = match &value {
        Value::Null => return Ok(None),
        Value::Number(number) => number.clone(),
        Value::String(text) => {
            text.trim().parse().map_err(|_| D::Error::custom(format!("size {text:?} is not a number of kilobytes")))?
        }
        other => {
            return Err(D::Error::custom(format!("size must be a number, found {other}")));
        }
    };
    if let Some(integer) = number.as_u64() {
        return Ok(Some(integer));
    }
    match number.as_f64() {
        Some(float) if (0.0..U64_LIMIT).contains(&float) => Ok(Some(float.trunc() as u64)),
        _ => Err(D::Error::custom(format!("size {number} is not a non-negative number of kilobytes"))),
    }
}

fn is_device_information(object: &Map<String, Value>) -> bool {
    [
        "manufacturer",
        "model",
        "osName",
        "swVersion",
        "processorArchitecture",
        "processorManufacturer",
        "totalMemory",
        "totalStorage",
    ]
    .iter()
    .any(|key| object.contains_key(*key))
}

const DEVICE_INFORMATION_PATH: Path =
    Path { side: "reported", component: DEVICE_INFORMATION_COMPONENT, property: None, is_leaf: is_device_information };

impl DeviceInformation {
    /// The reported patch: `{"deviceInformation":{"__t":"c",…}}`.
    pub fn to_patch(&self) -> Value {
        let members = match to_json(self) {
            Value::Object(members) => members,
            _ => Map::new(),
        };
        component_patch(DEVICE_INFORMATION_COMPONENT, members)
    }

    /// Finds the component in a full twin (`reported`), a reported patch, or a bare object with
    /// any of its members. `Ok(None)` when absent.
    pub fn locate(doc: &Value) -> Result<Option<Self>, TwinError> {
        find(doc, DEVICE_INFORMATION_PATH)?.map(|found| found.parse()).transpose()
    }

    /// [`DeviceInformation::locate`] on JSON bytes.
    pub fn from_slice(json: &[u8]) -> Result<Option<Self>, TwinError> {
        Self::locate(&parse_bytes(json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> DeviceInformation {
        DeviceInformation {
            manufacturer: Some("Contoso".into()),
            model: Some("Toaster".into()),
            os_name: Some("Linux".into()),
            sw_version: Some("6.1.0".into()),
            processor_architecture: Some("aarch64".into()),
            processor_manufacturer: Some("ARM".into()),
            total_memory: Some(2_048_000),
            total_storage: Some(16_000_000),
        }
    }

    #[test]
    fn patch_has_marker_then_members_in_agent_order() {
        assert_eq!(
            sample().to_patch().to_string(),
            r#"{"deviceInformation":{"__t":"c","manufacturer":"Contoso","model":"Toaster","osName":"Linux","swVersion":"6.1.0","processorArchitecture":"aarch64","processorManufacturer":"ARM","totalMemory":2048000,"totalStorage":16000000}}"#
        );
        assert_eq!(DeviceInformation::default().to_patch().to_string(), r#"{"deviceInformation":{"__t":"c"}}"#);
    }

    #[test]
    fn round_trips_through_locate() -> Result<(), TwinError> {
        assert_eq!(DeviceInformation::locate(&sample().to_patch())?, Some(sample()));
        let twin = json!({"desired": {}, "reported": sample().to_patch()});
        assert_eq!(DeviceInformation::locate(&twin)?, Some(sample()));
        assert_eq!(DeviceInformation::locate(&json!({"deviceUpdate": {}}))?, None);
        Ok(())
    }

    #[test]
    fn sizes_accept_floats_and_numeric_strings() -> Result<(), serde_json::Error> {
        let parsed: DeviceInformation = serde_json::from_value(json!({
            "totalMemory": 2048.9, "totalStorage": " 4096 "
        }))?;
        assert_eq!((parsed.total_memory, parsed.total_storage), (Some(2048), Some(4096)));
        let parsed: DeviceInformation = serde_json::from_value(json!({"totalMemory": null, "totalStorage": "1.5e3"}))?;
        assert_eq!((parsed.total_memory, parsed.total_storage), (None, Some(1500)));
        for bad in [json!(-1), json!(-0.5), json!(1e20), json!("lots"), json!(true), json!([1])] {
            let doc = json!({ "totalMemory": bad });
            assert!(serde_json::from_value::<DeviceInformation>(doc.clone()).is_err(), "{doc}");
        }
        Ok(())
    }
}
