//! IoT Hub connection strings: `HostName=<host>;DeviceId=<id>;SharedAccessKey=<base64>` and friends.
//!
//! The grammar is the Azure SDKs': `;`-separated `Key=Value` items, split at the first `=` (keys and SAS values
//! end in base64 `=` padding), key names case-sensitive as in the Python SDK (`HostName`, `DeviceId`, `ModuleId`,
//! `SharedAccessKey`, `SharedAccessKeyName`, `SharedAccessSignature`, `GatewayHostName`, `x509`). Unknown keys are
//! kept in [`ConnectionString::other`] rather than refused, so newer strings still load.
//!
//! [`ConnectionString::parse`] also applies the Python SDK's completeness rules: a device string needs a key, a
//! SAS or `x509=true`; a service string needs `SharedAccessKeyName` and `SharedAccessKey` (or a SAS); a key and
//! `x509=true` together are refused. Printing ([`fmt::Display`]) writes the canonical order of Azure's
//! `IotHubConnectionStringBuilder`: `HostName`, `DeviceId`, `ModuleId`, `SharedAccessKeyName`, `SharedAccessKey`,
//! `SharedAccessSignature`, `x509`, `GatewayHostName`, then unknown keys in the order read.

use std::fmt;

use crate::{b64, sas};

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// The string is empty (or only whitespace).
    #[error("connection string is empty")]
    Empty,
    /// An item has no `=`.
    #[error("connection string item {0:?} is not Key=Value")]
    NotKeyValue(String),
    /// An item has an empty key (`=value`, or `;;`).
    #[error("connection string has an empty key")]
    EmptyKey,
    /// A known key has an empty value.
    #[error("connection string key {0} has an empty value")]
    EmptyValue(String),
    /// A key appears twice.
    #[error("connection string key {0} appears twice")]
    DuplicateKey(String),
    /// `HostName` is missing.
    #[error("connection string has no HostName")]
    MissingHostName,
    /// `x509` is neither `true` nor `false`.
    #[error("connection string x509 value {0:?} is neither true nor false")]
    BadX509(String),
    /// `SharedAccessKey` together with `x509=true`.
    #[error("connection string mixes SharedAccessKey and x509=true")]
    MixedAuthentication,
    /// The string lacks what a device or service string needs.
    #[error("connection string is incomplete: {0}")]
    Incomplete(&'static str),
    /// `SharedAccessKey` is absent where a key is needed.
    #[error("connection string has no SharedAccessKey")]
    NoKey,
    /// `SharedAccessKey` is not base64.
    #[error("connection string SharedAccessKey is not base64: {0}")]
    BadKey(String),
}

/// A parsed IoT Hub connection string (device, module or service). `Debug` hides the key and
/// the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: the hub name used in usernames and SAS resources (may carry a port, `localhost:8443`).
    pub host_name: String,
    /// `DeviceId`, for device and module strings.
    pub device_id: Option<String>,
    /// `ModuleId`, for module strings.
    pub module_id: Option<String>,
    /// `SharedAccessKey`: the base64 text of the key.
    pub shared_access_key: Option<String>,
    /// `SharedAccessKeyName`: the shared access policy of service strings.
    pub shared_access_key_name: Option<String>,
    /// `SharedAccessSignature`: a ready-made token instead of a key.
    pub shared_access_signature: Option<String>,
    /// `GatewayHostName`: the host to dial instead of `HostName`.
    pub gateway_host_name: Option<String>,
    /// `x509=true`: the device authenticates with a client certificate.
    pub x509: bool,
    /// Unknown keys with their values, in the order read.
    pub other: Vec<(String, String)>,
}

impl core::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            host_name,
            device_id,
            module_id,
            shared_access_key,
            shared_access_key_name,
            shared_access_signature,
            gateway_host_name,
            x509,
            other,
        } = self;
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("ConnectionString")
            .field("host_name", host_name)
            .field("device_id", device_id)
            .field("module_id", module_id)
            .field("shared_access_key", &hidden(shared_access_key))
            .field("shared_access_key_name", shared_access_key_name)
            .field("shared_access_signature", &hidden(shared_access_signature))
            .field("gateway_host_name", gateway_host_name)
            .field("x509", x509)
            .field("other", other)
            .finish()
    }
}

impl ConnectionString {
    /// A device string: `HostName=<host>;DeviceId=<id>;SharedAccessKey=<key_b64>`.
    pub fn device(host: &str, device_id: &str, key_b64: &str) -> Self {
        Self { device_id: Some(device_id.to_owned()), shared_access_key: Some(key_b64.to_owned()), ..Self::bare(host) }
    }

    /// A module string: `HostName=<host>;DeviceId=<id>;ModuleId=<mid>;SharedAccessKey=<key_b64>`.
    pub fn module(host: &str, device_id: &str, module_id: &str, key_b64: &str) -> Self {
        Self { module_id: Some(module_id.to_owned()), ..Self::device(host, device_id, key_b64) }
    }

    /// A service string: `HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<key_b64>`.
    pub fn service(host: &str, policy: &str, key_b64: &str) -> Self {
        Self {
            shared_access_key_name: Some(policy.to_owned()),
            shared_access_key: Some(key_b64.to_owned()),
            ..Self::bare(host)
        }
    }

    /// This string with `GatewayHostName=<gateway>`.
    pub fn with_gateway(self, gateway: &str) -> Self {
        Self { gateway_host_name: Some(gateway.to_owned()), ..self }
    }

    /// Parses a connection string; see the module documentation for the rules.
    ///
    /// Whitespace around the whole string and one trailing `;` are tolerated; values are taken verbatim.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let text = text.trim();
        let text = text.strip_suffix(';').unwrap_or(text);
        if text.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let mut host_name = None;
        let mut parsed = Self::bare("");
        let mut x509 = None;
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split(';') {
            let (key, value) =
                item.split_once('=').ok_or_else(|| ConnectionStringError::NotKeyValue(item.to_owned()))?;
            if key.is_empty() {
                return Err(ConnectionStringError::EmptyKey);
            }
            if seen.contains(&key) {
                return Err(ConnectionStringError::DuplicateKey(key.to_owned()));
            }
            seen.push(key);
            let slot = match key {
                "HostName" => &mut host_name,
                "DeviceId" => &mut parsed.device_id,
                "ModuleId" => &mut parsed.module_id,
                "SharedAccessKey" => &mut parsed.shared_access_key,
                "SharedAccessKeyName" => &mut parsed.shared_access_key_name,
                "SharedAccessSignature" => &mut parsed.shared_access_signature,
                "GatewayHostName" => &mut parsed.gateway_host_name,
                "x509" => &mut x509,
                _ => {
                    parsed.other.push((key.to_owned(), value.to_owned()));
                    continue;
                }
            };
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue(key.to_owned()));
            }
            *slot = Some(value.to_owned());
        }
        parsed.host_name = host_name.ok_or(ConnectionStringError::MissingHostName)?;
        parsed.x509 = match x509 {
            None => false,
            Some(value) if value.eq_ignore_ascii_case("true") => true,
            Some(value) if value.eq_ignore_ascii_case("false") => false,
            Some(value) => return Err(ConnectionStringError::BadX509(value)),
        };
        parsed.check_complete()?;
        Ok(parsed)
    }

    /// The host to dial: `GatewayHostName` if present, else `HostName`.
    pub fn dial_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// Whether this is a service (policy) string: no `DeviceId`.
    pub fn is_service(&self) -> bool {
        self.device_id.is_none()
    }

    /// The decoded `SharedAccessKey` (either base64 alphabet, padding optional).
    pub fn key_bytes(&self) -> Result<Vec<u8>, ConnectionStringError> {
        let key = self.shared_access_key.as_deref().ok_or(ConnectionStringError::NoKey)?;
        b64::decode_lenient(key).map_err(|e| ConnectionStringError::BadKey(e.to_string()))
    }

    /// The resource a SAS token for this string signs: [`sas::device_resource`] for device and module strings,
    /// `HostName` for service strings.
    pub fn sas_resource(&self) -> String {
        match &self.device_id {
            Some(device_id) => sas::device_resource(&self.host_name, device_id, self.module_id.as_deref()),
            None => self.host_name.clone(),
        }
    }

    /// A SAS token signed with this string's key, valid until `expiry` (seconds since the Unix epoch), with
    /// `skn` = `SharedAccessKeyName` when present. See [`sas::generate`].
    pub fn sas_token(&self, expiry: u64) -> Result<String, ConnectionStringError> {
        let key = self.key_bytes()?;
        Ok(sas::generate(&self.sas_resource(), &key, expiry, self.shared_access_key_name.as_deref()))
    }

    fn bare(host: &str) -> Self {
        Self {
            host_name: host.to_owned(),
            device_id: None,
            module_id: None,
            shared_access_key: None,
            shared_access_key_name: None,
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
            other: Vec::new(),
        }
    }

    fn check_complete(&self) -> Result<(), ConnectionStringError> {
        if self.x509 && self.shared_access_key.is_some() {
            return Err(ConnectionStringError::MixedAuthentication);
        }
        if self.module_id.is_some() && self.device_id.is_none() {
            return Err(ConnectionStringError::Incomplete("ModuleId without DeviceId"));
        }
        let has_sas = self.shared_access_signature.is_some();
        if self.device_id.is_some() {
            if self.shared_access_key.is_none() && !has_sas && !self.x509 {
                return Err(ConnectionStringError::Incomplete(
                    "a device needs SharedAccessKey, SharedAccessSignature or x509=true",
                ));
            }
        } else if !has_sas && (self.shared_access_key.is_none() || self.shared_access_key_name.is_none()) {
            return Err(ConnectionStringError::Incomplete(
                "a service string needs SharedAccessKeyName and SharedAccessKey, or a DeviceId",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={}", self.host_name)?;
        let known = [
            ("DeviceId", self.device_id.as_deref()),
            ("ModuleId", self.module_id.as_deref()),
            ("SharedAccessKeyName", self.shared_access_key_name.as_deref()),
            ("SharedAccessKey", self.shared_access_key.as_deref()),
            ("SharedAccessSignature", self.shared_access_signature.as_deref()),
            ("x509", self.x509.then_some("true")),
            ("GatewayHostName", self.gateway_host_name.as_deref()),
        ];
        for (key, value) in known {
            if let Some(value) = value {
                write!(f, ";{key}={value}")?;
            }
        }
        for (key, value) in &self.other {
            write!(f, ";{key}={value}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key_and_the_signature() {
        let cs = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ==").unwrap();
        let shown = format!("{cs:?}");
        assert!(shown.contains("device_id: Some(\"d\")") && shown.contains("<hidden>"), "{shown}");
        assert!(!shown.contains("c2VjcmV0LWtleQ"), "{shown}");
        let sas = ConnectionString::parse(
            "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=h&sig=s3cr3t",
        )
        .unwrap();
        assert!(!format!("{sas:?}").contains("s3cr3t"));
    }

    #[test]
    fn unknown_keys_print_after_known_ones_in_read_order() {
        let cs = ConnectionString::parse("Zeta=1;HostName=h;Alpha=2;DeviceId=d;SharedAccessKey=a2V5").unwrap();
        assert_eq!(cs.other, [("Zeta".to_owned(), "1".to_owned()), ("Alpha".to_owned(), "2".to_owned())]);
        assert_eq!(cs.to_string(), "HostName=h;DeviceId=d;SharedAccessKey=a2V5;Zeta=1;Alpha=2");
    }

    #[test]
    fn unknown_keys_may_be_empty_but_known_ones_not() {
        let cs = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=a2V5;Extra=").unwrap();
        assert_eq!(cs.other, [("Extra".to_owned(), String::new())]);
        assert_eq!(
            ConnectionString::parse("HostName=h;DeviceId=;SharedAccessKey=a2V5"),
            Err(ConnectionStringError::EmptyValue("DeviceId".to_owned()))
        );
    }
}
