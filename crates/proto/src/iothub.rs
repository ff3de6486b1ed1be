//! The IoT Hub device MQTT grammar: the CONNECT username, topic names in both directions, subscription rules
//! and property bags (protocol-reference §8).
//!
//! | purpose | direction | topic |
//! |---|---|---|
//! | twin GET | device → hub | `$iothub/twin/GET/?$rid=<rid>` |
//! | reported patch | device → hub | `$iothub/twin/PATCH/properties/reported/?$rid=<rid>` |
//! | twin response | hub → device | `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]` |
//! | desired patch | hub → device | `$iothub/twin/PATCH/properties/desired/?$version=<n>` |
//! | method request | hub → device | `$iothub/methods/POST/<name>/?$rid=<rid>` |
//! | method response | device → hub | `$iothub/methods/res/<status>/?$rid=<rid>` |
//! | telemetry | device → hub | `devices/<id>[/modules/<mid>]/messages/events/<properties>` |
//! | cloud-to-device | hub → device | `devices/<id>/messages/devicebound/<properties>` |
//! | module input | hub → module | `devices/<id>/modules/<mid>/inputs/<input>/<properties>` |
//!
//! The hub side parses with [`DeviceTopic::parse`] and writes with [`twin_response_topic`], [`desired_patch_topic`],
//! [`method_request_topic`], [`c2d_topic`] and [`module_input_topic`]; the device side does the reverse with
//! [`ServiceTopic::parse`], [`twin_get_topic`], [`reported_patch_topic`], [`method_response_topic`] and
//! [`telemetry_topic`]. Device and module ids appear raw in topics (the Python SDK never encodes them); query
//! values, method names and property bags are percent-encoded with [`percent_encode`] and decoded with
//! [`percent_decode`]. Parsers never panic: an unrecognised topic is `Unknown`.

use std::fmt;

use crate::sas::{SasError, percent_decode, percent_encode};

/// System property names of telemetry and cloud-to-device property bags.
pub mod property {
    /// Message id.
    pub const MESSAGE_ID: &str = "$.mid";
    /// Correlation id.
    pub const CORRELATION_ID: &str = "$.cid";
    /// User id.
    pub const USER_ID: &str = "$.uid";
    /// Content type (`application/json`).
    pub const CONTENT_TYPE: &str = "$.ct";
    /// Content encoding (`utf-8`).
    pub const CONTENT_ENCODING: &str = "$.ce";
    /// IoT Plug and Play interface id.
    pub const INTERFACE_ID: &str = "$.ifid";
    /// Absolute expiry time.
    pub const EXPIRY: &str = "$.exp";
    /// Module output name.
    pub const OUTPUT_NAME: &str = "$.on";
    /// Cloud-to-device destination (`/devices/<id>/messages/deviceBound`); clients ignore it.
    pub const TO: &str = "$.to";
    /// Cloud-to-device feedback request; clients understand it but do not surface it.
    pub const ACK: &str = "iothub-ack";
}

/// A malformed username, query or property bag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The CONNECT username is not `<host>/<clientId>/?<query>`.
    #[error("malformed MQTT username: {0}")]
    Username(String),
    /// A property bag or query item is not `key=value`.
    #[error("malformed property bag: {0}")]
    Properties(String),
    /// A percent-escape is invalid or the decoded text is not UTF-8.
    #[error("invalid percent-encoding: {0}")]
    Encoding(String),
}

/// The CONNECT username: `<host>/<clientId>/?<query>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUsername {
    /// The hub host name as the client knows it (`HostName`, may carry a port).
    pub host: String,
    /// `<deviceId>` or `<deviceId>/<moduleId>`.
    pub client_id: String,
    /// The query items, percent-decoded, in order.
    pub query: Vec<(String, String)>,
}

impl ConnectUsername {
    /// Parses a username.
    ///
    /// The host ends at the first `/`, the client id at the following `/?` (so device ids starting with `?` cannot
    /// be told apart). Without `/?` the rest is the client id (one trailing `/` dropped) and the query is empty.
    /// The client id must be `<device>` or `<device>/<module>` with non-empty parts. Query items are decoded like
    /// a property bag except that an item without `=` is kept with an empty value.
    pub fn parse(username: &str) -> Result<Self, TopicError> {
        let (host, rest) =
            username.split_once('/').ok_or_else(|| TopicError::Username("no '/' after the host name".to_owned()))?;
        if host.is_empty() {
            return Err(TopicError::Username("empty host name".to_owned()));
        }
        let (client_id, query) = match rest.split_once("/?") {
            Some((client_id, query)) => (client_id, query),
            None => (rest.strip_suffix('/').unwrap_or(rest), ""),
        };
        let (device, module) = split_client_id(client_id);
        if device.is_empty() || module.is_some_and(|m| m.is_empty() || m.contains('/')) {
            return Err(TopicError::Username(format!("client id {client_id:?} is not <device>[/<module>]")));
        }
        let mut items = Vec::new();
        for item in query.split('&').filter(|item| !item.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            items.push((decode(key)?, decode(value)?));
        }
        Ok(Self { host: host.to_owned(), client_id: client_id.to_owned(), query: items })
    }

    /// The first value of query item `key` (exact, case-sensitive name).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `api-version` (`2019-10-01`, or `2020-09-30` with a model id).
    pub fn api_version(&self) -> Option<&str> {
        self.get("api-version")
    }

    /// `model-id`, decoded (`dtmi:azure:iot:deviceUpdateModel;3`).
    pub fn model_id(&self) -> Option<&str> {
        self.get("model-id")
    }

    /// `DeviceClientType`, decoded (`azure-iot-device-iothub-py/2.14.0(...)`).
    pub fn device_client_type(&self) -> Option<&str> {
        self.get("DeviceClientType")
    }

    /// The device id part of the client id.
    pub fn device_id(&self) -> &str {
        split_client_id(&self.client_id).0
    }

    /// The module id part of the client id, for module clients.
    pub fn module_id(&self) -> Option<&str> {
        split_client_id(&self.client_id).1
    }
}

impl fmt::Display for ConnectUsername {
    /// `<host>/<clientId>/?<query>` with keys and values percent-encoded: byte-exact with the Python SDK.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/?{}", self.host, self.client_id, encode_properties(&self.query))
    }
}

/// Splits a client id at its first `/`: `("dev1", None)` or `("dev1", Some("mod1"))`.
pub fn split_client_id(client_id: &str) -> (&str, Option<&str>) {
    match client_id.split_once('/') {
        Some((device, module)) => (device, Some(module)),
        None => (client_id, None),
    }
}

/// A topic a device publishes to, as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `$iothub/twin/GET/?$rid=<rid>`.
    TwinGet {
        /// The request id, decoded.
        rid: String,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`.
    TwinPatchReported {
        /// The request id, decoded.
        rid: String,
    },
    /// `$iothub/methods/res/<status>/?$rid=<rid>`.
    MethodResponse {
        /// The method's status code.
        status: u16,
        /// The request id of the method request, decoded.
        rid: String,
    },
    /// `devices/<id>[/modules/<mid>]/messages/events/<properties>`.
    Telemetry {
        /// The device id in the topic (raw, to compare with the authenticated one).
        device_id: String,
        /// The module id in the topic.
        module_id: Option<String>,
        /// The decoded property bag, in order.
        properties: Vec<(String, String)>,
    },
    /// Anything else, including malformed queries and property bags.
    Unknown,
}

impl DeviceTopic {
    /// Classifies a topic a device published to. Query items must all be `key=value`; `$rid` must appear exactly
    /// once and be non-empty; other query items are ignored.
    pub fn parse(topic: &str) -> Self {
        Self::try_parse(topic).unwrap_or(Self::Unknown)
    }

    fn try_parse(topic: &str) -> Option<Self> {
        if let Some(query) = topic.strip_prefix("$iothub/twin/GET/?") {
            return Some(Self::TwinGet { rid: rid_of(query)? });
        }
        if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
            return Some(Self::TwinPatchReported { rid: rid_of(query)? });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
            let (status, query) = rest.split_once("/?")?;
            return Some(Self::MethodResponse { status: parse_status(status)?, rid: rid_of(query)? });
        }
        let rest = topic.strip_prefix("devices/")?;
        let (device_id, rest) = rest.split_once('/')?;
        let (module_id, rest) = match rest.strip_prefix("modules/") {
            Some(rest) => {
                let (module_id, rest) = rest.split_once('/')?;
                (Some(module_id), rest)
            }
            None => (None, rest),
        };
        let bag = after_level(rest, "messages/events")?;
        if device_id.is_empty() || module_id.is_some_and(str::is_empty) {
            return None;
        }
        Some(Self::Telemetry {
            device_id: device_id.to_owned(),
            module_id: module_id.map(str::to_owned),
            properties: decode_properties(bag).ok()?,
        })
    }
}

/// A topic the hub publishes to, as a device sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceTopic {
    /// `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]`.
    TwinResponse {
        /// 200 for a GET, 204 for a reported patch, >= 300 for errors.
        status: u16,
        /// The request id, decoded.
        rid: String,
        /// The new reported version after a reported patch.
        version: Option<u64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version=<n>`.
    DesiredPatch {
        /// The desired version, when the topic carries it (the payload always does).
        version: Option<u64>,
    },
    /// `$iothub/methods/POST/<name>/?$rid=<rid>`.
    MethodRequest {
        /// The method name, decoded.
        name: String,
        /// The request id, decoded.
        rid: String,
    },
    /// `devices/<id>/messages/devicebound/<properties>`.
    CloudToDevice {
        /// The device id in the topic.
        device_id: String,
        /// The decoded property bag, in order (including `$.to`, which clients ignore).
        properties: Vec<(String, String)>,
    },
    /// `devices/<id>/modules/<mid>/inputs/<input>/<properties>`.
    ModuleInput {
        /// The device id in the topic.
        device_id: String,
        /// The module id in the topic.
        module_id: String,
        /// The input name.
        input: String,
        /// The decoded property bag, in order.
        properties: Vec<(String, String)>,
    },
    /// Anything else, including malformed queries and property bags.
    Unknown,
}

impl ServiceTopic {
    /// Classifies a topic the hub published to.
    pub fn parse(topic: &str) -> Self {
        Self::try_parse(topic).unwrap_or(Self::Unknown)
    }

    fn try_parse(topic: &str) -> Option<Self> {
        if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
            let (status, query) = rest.split_once("/?")?;
            let items = decode_properties(query).ok()?;
            return Some(Self::TwinResponse {
                status: parse_status(status)?,
                rid: single(&items, "$rid").filter(|rid| !rid.is_empty())?.to_owned(),
                version: optional_version(&items)?,
            });
        }
        if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/?") {
            let items = decode_properties(query).ok()?;
            return Some(Self::DesiredPatch { version: optional_version(&items)? });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
            let (name, query) = rest.split_once("/?")?;
            let name = decode(name).ok().filter(|name| !name.is_empty())?;
            return Some(Self::MethodRequest { name, rid: rid_of(query)? });
        }
        let rest = topic.strip_prefix("devices/")?;
        let (device_id, rest) = rest.split_once('/')?;
        if device_id.is_empty() {
            return None;
        }
        if let Some(bag) = after_level(rest, "messages/devicebound") {
            let properties = decode_properties(bag).ok()?;
            return Some(Self::CloudToDevice { device_id: device_id.to_owned(), properties });
        }
        let (module_id, rest) = rest.strip_prefix("modules/")?.split_once('/')?;
        let inputs = rest.strip_prefix("inputs/")?;
        let (input, bag) = inputs.split_once('/').unwrap_or((inputs, ""));
        if module_id.is_empty() || input.is_empty() {
            return None;
        }
        Some(Self::ModuleInput {
            device_id: device_id.to_owned(),
            module_id: module_id.to_owned(),
            input: input.to_owned(),
            properties: decode_properties(bag).ok()?,
        })
    }
}

/// `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<n>]`, `rid` percent-encoded.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    let mut topic = format!("$iothub/twin/res/{status}/?$rid={}", percent_encode(rid));
    if let Some(version) = version {
        topic.push_str(&format!("&$version={version}"));
    }
    topic
}

/// `$iothub/twin/PATCH/properties/desired/?$version=<n>`.
pub fn desired_patch_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/<name>/?$rid=<rid>`, `name` and `rid` percent-encoded (plain method names and ids are
/// unchanged; the Python SDK does not decode the name, so the server should keep method names plain).
pub fn method_request_topic(name: &str, rid: &str) -> String {
    format!("$iothub/methods/POST/{}/?$rid={}", percent_encode(name), percent_encode(rid))
}

/// `devices/<id>/messages/devicebound/<properties>`, the properties in the order given (see [`encode_properties`]).
pub fn c2d_topic(device_id: &str, properties: &[(String, String)]) -> String {
    format!("devices/{device_id}/messages/devicebound/{}", encode_properties(properties))
}

/// `devices/<id>/modules/<mid>/inputs/<input>/<properties>`.
pub fn module_input_topic(device_id: &str, module_id: &str, input: &str, properties: &[(String, String)]) -> String {
    format!("devices/{device_id}/modules/{module_id}/inputs/{input}/{}", encode_properties(properties))
}

/// `$iothub/twin/GET/?$rid=<rid>`, `rid` percent-encoded.
pub fn twin_get_topic(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={}", percent_encode(rid))
}

/// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`, `rid` percent-encoded.
pub fn reported_patch_topic(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={}", percent_encode(rid))
}

/// `$iothub/methods/res/<status>/?$rid=<rid>`, `rid` percent-encoded.
pub fn method_response_topic(status: u16, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={}", percent_encode(rid))
}

/// `devices/<id>[/modules/<mid>]/messages/events/<properties>`.
pub fn telemetry_topic(device_id: &str, module_id: Option<&str>, properties: &[(String, String)]) -> String {
    match module_id {
        Some(module_id) => {
            format!("devices/{device_id}/modules/{module_id}/messages/events/{}", encode_properties(properties))
        }
        None => format!("devices/{device_id}/messages/events/{}", encode_properties(properties)),
    }
}

/// Whether a device (or module) may subscribe to `filter`: only if every topic the filter can match lies inside
/// one of the trees the hub publishes to that client.
///
/// The trees: `$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#`, `$iothub/methods/POST/#`, and
/// `devices/<id>/messages/devicebound/#` for a device or `devices/<id>/modules/<mid>/inputs/#` for a module. A
/// filter is inside a tree when it repeats the tree's levels literally (no wildcard among them) and then goes on
/// with any valid filter levels, or stops (the tree's root itself). Invalid filters and ids that are empty or
/// contain `/`, `+`, `#` or NUL are refused.
pub fn subscription_allowed(filter: &str, device_id: &str, module_id: Option<&str>) -> bool {
    if !valid_filter(filter) {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    // Tree levels are literals (ids with wildcards are refused below), so equal levels are never wildcards.
    let inside = |tree: &[&str]| levels.len() >= tree.len() && tree.iter().zip(&levels).all(|(t, l)| t == l);
    if inside(&["$iothub", "twin", "res"])
        || inside(&["$iothub", "twin", "PATCH", "properties", "desired"])
        || inside(&["$iothub", "methods", "POST"])
    {
        return true;
    }
    if !valid_id(device_id) {
        return false;
    }
    match module_id {
        None => inside(&["devices", device_id, "messages", "devicebound"]),
        Some(module_id) => valid_id(module_id) && inside(&["devices", device_id, "modules", module_id, "inputs"]),
    }
}

/// Whether topic name `topic` matches topic filter `filter` under MQTT 3.1.1 rules (§4.7): `+` matches exactly one
/// level (possibly empty), `#` (last level only) matches the parent level and any number of child levels, and a
/// topic starting with `$` is not matched by a filter starting with a wildcard. An invalid filter or topic name
/// (empty, NUL, misplaced wildcard, wildcard in the topic) matches nothing.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if !valid_filter(filter) || topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return false;
    }
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(filter_level), Some(topic_level)) if filter_level == topic_level => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Encodes a property bag: `enc(key)=enc(value)` joined by `&`, in the order given, with [`percent_encode`]
/// (`$.mid` becomes `%24.mid`). The Python SDK puts system properties first and sorts custom ones; callers that
/// want that order sort before calling.
pub fn encode_properties(properties: &[(String, String)]) -> String {
    let mut out = String::new();
    for (index, (key, value)) in properties.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(key));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// Decodes a property bag (or a topic query): `&`-separated items, each `key=value` split at the first `=`, both
/// percent-decoded. The empty string is the empty bag; an item without `=` or with an empty key is an error.
/// Repeated keys are kept.
pub fn decode_properties(bag: &str) -> Result<Vec<(String, String)>, TopicError> {
    if bag.is_empty() {
        return Ok(Vec::new());
    }
    bag.split('&')
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| TopicError::Properties(format!("item {:?} has no '='", shorten(item))))?;
            let key = decode(key)?;
            if key.is_empty() {
                return Err(TopicError::Properties(format!("item {:?} has an empty key", shorten(item))));
            }
            Ok((key, decode(value)?))
        })
        .collect()
}

fn decode(text: &str) -> Result<String, TopicError> {
    percent_decode(text).map_err(|e| match e {
        SasError::Malformed(message) => TopicError::Encoding(message),
        other => TopicError::Encoding(other.to_string()),
    })
}

/// The only value of `key` in `items`, or `None` when absent or repeated.
fn single<'a>(items: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let mut values = items.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The non-empty `$rid` of a query whose items are all `key=value`.
fn rid_of(query: &str) -> Option<String> {
    let items = decode_properties(query).ok()?;
    single(&items, "$rid").filter(|rid| !rid.is_empty()).map(str::to_owned)
}

/// `Some(None)` without `$version`, `Some(Some(n))` with one decimal `$version`, `None` when it is malformed.
fn optional_version(items: &[(String, String)]) -> Option<Option<u64>> {
    if !items.iter().any(|(k, _)| k == "$version") {
        return Some(None);
    }
    let version = single(items, "$version")?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok().map(Some)
}

fn parse_status(status: &str) -> Option<u16> {
    if status.is_empty() || status.len() > 5 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    status.parse().ok()
}

/// The property bag after `levels` in `rest`: `rest` is `levels`, or `levels/<bag>`.
fn after_level<'a>(rest: &'a str, levels: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(levels)?;
    if after.is_empty() { Some("") } else { after.strip_prefix('/') }
}

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let misplaced_hash = level == "#" && levels.peek().is_some();
        if misplaced_hash || (!is_wildcard(level) && level.contains(['+', '#'])) {
            return false;
        }
    }
    true
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#', '\0'])
}

/// At most the first 64 characters of `s`, for error messages about untrusted text.
fn shorten(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(end, _)| s.get(..end).unwrap_or(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_validity() {
        for good in ["#", "+", "a/+/b", "a/#", "/", "+/+", "$iothub/twin/res/#"] {
            assert!(valid_filter(good), "{good:?} refused");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a\0b", "++", "##"] {
            assert!(!valid_filter(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn optional_version_forms() {
        let items = |q: &str| decode_properties(q).unwrap();
        assert_eq!(optional_version(&items("$rid=1")), Some(None));
        assert_eq!(optional_version(&items("$rid=1&$version=7")), Some(Some(7)));
        assert_eq!(optional_version(&items("$version=x")), None);
        assert_eq!(optional_version(&items("$version=")), None);
        assert_eq!(optional_version(&items("$version=1&$version=1")), None);
        assert_eq!(optional_version(&items("$version=+1")), None);
    }

    #[test]
    fn after_level_forms() {
        assert_eq!(after_level("messages/events", "messages/events"), Some(""));
        assert_eq!(after_level("messages/events/", "messages/events"), Some(""));
        assert_eq!(after_level("messages/events/a=1", "messages/events"), Some("a=1"));
        assert_eq!(after_level("messages/eventsX", "messages/events"), None);
        assert_eq!(after_level("messages/event", "messages/events"), None);
    }
}
