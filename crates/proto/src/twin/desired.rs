//! The desired `deviceUpdate.service` property: what the service asks the agent to do.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{
    DEVICE_UPDATE_COMPONENT, Found, Path, TwinError, UpdateAction, Workflow, component_patch, find, optional_object,
    parse_bytes, to_json,
};

/// The `updateManifest` member as received. The service sends the manifest as a JSON string
/// (whose exact bytes the signature covers); anything else is kept so that it can be refused
/// later (the official agent re-serialises an object, which then fails the hash check).
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateManifestField {
    /// A JSON string: the signed manifest text.
    Text(String),
    /// Any other non-null JSON value.
    NotText(Value),
}

impl UpdateManifestField {
    /// The manifest text, when it was sent as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::NotText(_) => None,
        }
    }
}

impl Serialize for UpdateManifestField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::NotText(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for UpdateManifestField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::String(text) => Self::Text(text),
            other => Self::NotText(other),
        })
    }
}

/// The desired `service` object of the `deviceUpdate` component.
///
/// Parsing accepts `null` for every member and inside `fileUrls`, and ignores unknown members.
/// Serialisation is the form the service writes as a merge patch: `workflow`,
/// `rootKeyPackageUrl` (both omitted when absent), then `updateManifest`,
/// `updateManifestSignature` and `fileUrls`, written as `null` when absent so that a cancel
/// deletes the previous deployment's values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProperties {
    /// What to do, and the deployment workflow id.
    #[serde(default, deserialize_with = "optional_object", skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    /// Where the agent fetches the root key package (interface `;2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key_package_url: Option<String>,
    /// The update manifest, a JSON string.
    #[serde(default)]
    pub update_manifest: Option<UpdateManifestField>,
    /// Compact JWS over the manifest's SHA-256.
    #[serde(default)]
    pub update_manifest_signature: Option<String>,
    /// File id -> download URL (values may be `null`).
    #[serde(default)]
    pub file_urls: Option<IndexMap<String, Option<String>>>,
}

impl ServiceProperties {
    /// A deployment as the service writes it.
    pub fn deployment(
        workflow: Workflow,
        root_key_package_url: Option<String>,
        update_manifest: impl Into<String>,
        update_manifest_signature: impl Into<String>,
        file_urls: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            workflow: Some(workflow),
            root_key_package_url,
            update_manifest: Some(UpdateManifestField::Text(update_manifest.into())),
            update_manifest_signature: Some(update_manifest_signature.into()),
            file_urls: Some(file_urls.into_iter().map(|(id, url)| (id, Some(url))).collect()),
        }
    }

    /// Cancel / no deployment: `{"workflow":{"action":255,"id":"nodeployment"},
    /// "updateManifest":null,"updateManifestSignature":null,"fileUrls":null}`.
    pub fn no_deployment() -> Self {
        Self { workflow: Some(Workflow::no_deployment()), ..Self::default() }
    }

    /// `workflow.action`, if any.
    pub fn action(&self) -> Option<UpdateAction> {
        self.workflow.as_ref().and_then(|workflow| workflow.action)
    }

    /// `workflow.id`, if any.
    pub fn workflow_id(&self) -> Option<&str> {
        self.workflow.as_ref().and_then(|workflow| workflow.id.as_deref())
    }

    /// The manifest text, when `updateManifest` is a string.
    pub fn update_manifest_text(&self) -> Option<&str> {
        self.update_manifest.as_ref().and_then(UpdateManifestField::as_str)
    }

    /// The URL of a file id, when present and not `null`.
    pub fn file_url(&self, file_id: &str) -> Option<&str> {
        self.file_urls.as_ref()?.get(file_id)?.as_deref()
    }

    /// The desired patch the service writes: `{"deviceUpdate":{"__t":"c","service":{…}}}`.
    pub fn to_patch(&self) -> Value {
        component_patch(DEVICE_UPDATE_COMPONENT, [("service".to_owned(), to_json(self))])
    }
}

/// A desired `service` object found in a document, with the desired `$version`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredService {
    /// The parsed object.
    pub service: ServiceProperties,
    /// The object exactly as received (member order kept), for the acknowledgement.
    pub raw: Map<String, Value>,
    /// `$version` of the desired properties, when the document carries it.
    pub version: Option<i64>,
}

fn is_service(object: &Map<String, Value>) -> bool {
    ["workflow", "rootKeyPackageUrl", "updateManifest", "updateManifestSignature", "fileUrls"]
        .iter()
        .any(|key| object.contains_key(*key))
}

const SERVICE_PATH: Path =
    Path { side: "desired", component: DEVICE_UPDATE_COMPONENT, property: Some("service"), is_leaf: is_service };

impl DesiredService {
    /// Finds `deviceUpdate.service` in a full twin (`{"desired":{…,"$version":n},…}` or
    /// `{"properties":{"desired":…}}`), a desired patch (`{"deviceUpdate":{…},"$version":n}`),
    /// a component object (`{"__t":"c","service":{…}}`) or a bare service object (one with any
    /// of its members).
    ///
    /// `Ok(None)` when the document does not carry it, or deletes it with `null`.
    pub fn locate(doc: &Value) -> Result<Option<Self>, TwinError> {
        find(doc, SERVICE_PATH)?.map(Self::from_found).transpose()
    }

    /// [`DesiredService::locate`] on JSON bytes.
    pub fn from_slice(json: &[u8]) -> Result<Option<Self>, TwinError> {
        Self::locate(&parse_bytes(json)?)
    }

    fn from_found(found: Found<'_>) -> Result<Self, TwinError> {
        Ok(Self { service: found.parse()?, raw: found.object.clone(), version: found.version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerates_nulls_and_unknown_members() -> Result<(), serde_json::Error> {
        let parsed: ServiceProperties = serde_json::from_value(json!({
            "workflow": null, "rootKeyPackageUrl": null, "updateManifest": null,
            "updateManifestSignature": null, "fileUrls": {"a": null, "b": "http://b"}, "extra": [1]
        }))?;
        assert_eq!(parsed.workflow, None);
        assert_eq!(parsed.update_manifest, None);
        assert_eq!(parsed.file_url("a"), None);
        assert_eq!(parsed.file_url("b"), Some("http://b"));
        assert_eq!(parsed.file_url("c"), None);
        let urls = parsed.file_urls.as_ref().map(|urls| urls.keys().cloned().collect::<Vec<_>>());
        assert_eq!(urls, Some(vec!["a".to_owned(), "b".to_owned()]));
        Ok(())
    }

    #[test]
    fn non_string_manifest_is_kept_apart() -> Result<(), serde_json::Error> {
        let parsed: ServiceProperties = serde_json::from_value(json!({"updateManifest": {"manifestVersion": "5"}}))?;
        assert_eq!(parsed.update_manifest, Some(UpdateManifestField::NotText(json!({"manifestVersion": "5"}))));
        assert_eq!(parsed.update_manifest_text(), None);
        let text: ServiceProperties = serde_json::from_value(json!({"updateManifest": "{}"}))?;
        assert_eq!(text.update_manifest_text(), Some("{}"));
        Ok(())
    }

    #[test]
    fn wrong_types_are_errors() {
        for bad in [
            json!({"workflow": {"action": "3"}}),
            json!({"workflow": {"id": 5}}),
            json!({"workflow": []}),
            json!({"workflow": [3, "id"]}),
            json!({"fileUrls": {"a": 1}}),
            json!({"fileUrls": ["a"]}),
            json!({"updateManifestSignature": {}}),
            json!({"rootKeyPackageUrl": 1}),
        ] {
            assert!(serde_json::from_value::<ServiceProperties>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_deployment_serialises_like_the_service() {
        assert_eq!(
            to_json(&ServiceProperties::no_deployment()).to_string(),
            r#"{"workflow":{"action":255,"id":"nodeployment"},"updateManifest":null,"updateManifestSignature":null,"fileUrls":null}"#
        );
    }

    #[test]
    fn locate_errors_point_at_the_service() {
        let doc = json!({"deviceUpdate": {"service": {"workflow": {"action": true}}}});
        let Err(TwinError::Invalid { at, message }) = DesiredService::locate(&doc) else {
            panic!("bad action accepted");
        };
        assert_eq!(at, "/deviceUpdate/service");
        assert!(message.contains("boolean"), "{message}");
        assert!(matches!(DesiredService::from_slice(b"{\"deviceUpdate\":"), Err(TwinError::Json(_))));
    }
}
