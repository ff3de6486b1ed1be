//! The PnP writable-property acknowledgement the agent reports for `deviceUpdate.service`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{DEVICE_UPDATE_COMPONENT, DesiredService, Path, TwinError, component_patch, find, parse_bytes, to_json};

/// The reported `service` value acknowledging a desired `service`:
/// `{"value":…,"ac":200,"ad":"","av":<desired $version>}`.
///
/// Serialises as `value`, `ac`, `ad`, `av` (the official agent's order), omitting `ad` and `av`
/// when absent; parses the embedded SDK's `{"ac":200,"av":1,"value":{}}` as well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAck {
    /// The acknowledged value (`null` when absent).
    #[serde(default)]
    pub value: Value,
    /// Acknowledgement code, HTTP-like (always 200 in practice).
    pub ac: i64,
    /// Acknowledgement description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad: Option<String>,
    /// The desired `$version` acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub av: Option<i64>,
}

fn is_ack(object: &Map<String, Value>) -> bool {
    object.contains_key("ac")
}

const ACK_PATH: Path =
    Path { side: "reported", component: DEVICE_UPDATE_COMPONENT, property: Some("service"), is_leaf: is_ack };

impl ServiceAck {
    /// The only code agents send.
    pub const OK: i64 = 200;

    /// `ac` 200 for `value` at desired `version`, without a description (the embedded SDK form).
    pub fn new(value: Value, version: Option<i64>) -> Self {
        Self { value, ac: Self::OK, ad: None, av: version }
    }

    /// The official agent's acknowledgement of a received service object: the object as
    /// received with `updateManifestSignature` and `fileUrls` set to `null`, `ac` 200, `ad` "",
    /// `av` the desired `$version`.
    pub fn acknowledge(received: &DesiredService) -> Self {
        let mut value = received.raw.clone();
        value.insert("updateManifestSignature".to_owned(), Value::Null);
        value.insert("fileUrls".to_owned(), Value::Null);
        Self { value: Value::Object(value), ac: Self::OK, ad: Some(String::new()), av: received.version }
    }

    /// The reported patch: `{"deviceUpdate":{"__t":"c","service":{…}}}`.
    pub fn to_patch(&self) -> Value {
        component_patch(DEVICE_UPDATE_COMPONENT, [("service".to_owned(), to_json(self))])
    }

    /// Finds the acknowledgement in a full twin (`reported`), a reported patch, a component
    /// object or a bare acknowledgement (an object with `ac`). `Ok(None)` when absent.
    pub fn locate(doc: &Value) -> Result<Option<Self>, TwinError> {
        find(doc, ACK_PATH)?.map(|found| found.parse()).transpose()
    }

    /// [`ServiceAck::locate`] on JSON bytes.
    pub fn from_slice(json: &[u8]) -> Result<Option<Self>, TwinError> {
        Self::locate(&parse_bytes(json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn acknowledge_nulls_signature_and_urls_in_place() -> Result<(), TwinError> {
        let doc = json!({"deviceUpdate": {"__t": "c", "service": {
            "fileUrls": {"f": "u"}, "workflow": {"action": 3, "id": "w"},
            "updateManifestSignature": "s", "x": 1
        }}, "$version": 12});
        let received = DesiredService::locate(&doc)?.ok_or(TwinError::Json("none".into()))?;
        let ack = ServiceAck::acknowledge(&received);
        assert_eq!(
            ack.to_patch().to_string(),
            r#"{"deviceUpdate":{"__t":"c","service":{"value":{"fileUrls":null,"workflow":{"action":3,"id":"w"},"updateManifestSignature":null,"x":1},"ac":200,"ad":"","av":12}}}"#
        );
        Ok(())
    }

    #[test]
    fn acknowledge_adds_missing_members_as_null() -> Result<(), TwinError> {
        let received =
            DesiredService::locate(&json!({"workflow": {"action": 255}}))?.ok_or(TwinError::Json("none".into()))?;
        let ack = ServiceAck::acknowledge(&received);
        assert_eq!(
            to_json(&ack).to_string(),
            r#"{"value":{"workflow":{"action":255},"updateManifestSignature":null,"fileUrls":null},"ac":200,"ad":""}"#
        );
        Ok(())
    }

    #[test]
    fn locate_requires_ac() -> Result<(), TwinError> {
        assert_eq!(ServiceAck::locate(&json!({"value": {}}))?, None);
        let err = ServiceAck::locate(&json!({"deviceUpdate": {"service": {"value": {}}}}));
        assert!(matches!(err, Err(TwinError::Invalid { .. })), "{err:?}");
        let bare = ServiceAck::locate(&json!({"ac": 400, "ad": "bad"}))?;
        assert_eq!(bare, Some(ServiceAck { value: Value::Null, ac: 400, ad: Some("bad".into()), av: None }));
        Ok(())
    }
}
