//! Shared access signature (SAS) tokens of IoT Hub: parsing, verification and generation.
//!
//! A token reads `SharedAccessSignature sr=<enc(resource)>&sig=<enc(base64(hmac))>&se=<expiry>[&skn=<policy>]`
//! where `hmac` = HMAC-SHA256 keyed with the base64-decoded shared access key over
//! `<sr as sent> + "\n" + <se as sent>`. Fields may come in any order.
//!
//! Tokens are checked the way the Azure SDKs produce them:
//!
//! - device clients (`azure-iot-device`): `sr` = `quote(<host>/devices/<id>[/modules/<mid>], safe="")`, `sig`
//!   percent-encoded with nothing safe, no `skn`;
//! - service clients (`azure-iot-hub`): `sr` = `quote_plus(<host[:port]>)` (so `localhost%3A8443`), `sig` with `/`
//!   left unescaped, `skn` = the policy name.
//!
//! The signature covers the **encoded** resource exactly as received, so verification never re-encodes anything.
//! [`generate`] writes what the Python device SDK writes, byte for byte.
//!
//! Percent-encoding here follows RFC 3986: [`percent_encode`] keeps only the unreserved characters
//! (`A-Za-z0-9-._~`, Python's `quote(x, safe="")`), [`percent_decode`] decodes `%XX` escapes and leaves `+` alone
//! (Python's `unquote`). The MQTT topic grammar in [`crate::iothub`] uses the same pair.

use crate::b64;
use ring::hmac;

/// The literal scheme that starts every token.
const SCHEME: &str = "SharedAccessSignature ";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The text is not a well-formed token (or not a well-formed percent-encoding).
    #[error("malformed shared access signature: {0}")]
    Malformed(String),
    /// The signature does not match the key.
    #[error("shared access signature does not match the key")]
    BadSignature,
    /// The signature matches but the token expired (`se` <= now).
    #[error("shared access signature expired at {expiry} (now {now})")]
    Expired {
        /// The token's `se`, seconds since the Unix epoch.
        expiry: u64,
        /// The time of the check, seconds since the Unix epoch.
        now: u64,
    },
}

/// A parsed `SharedAccessSignature` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The signed resource, URL-decoded (`localhost/devices/dev1`).
    pub resource: String,
    /// The `sr` field exactly as received (`localhost%2Fdevices%2Fdev1`): what the signature covers.
    pub encoded_resource: String,
    /// The signature bytes: `sig` URL-decoded, then base64-decoded.
    pub signature: Vec<u8>,
    /// The `se` field: expiry in seconds since the Unix epoch.
    pub expiry: u64,
    /// The `skn` field (URL-decoded): the shared access policy name of service tokens.
    pub key_name: Option<String>,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`.
    ///
    /// The scheme must be followed by exactly one space and the rest may hold no whitespace (as IoT Hub's own
    /// parser). Field names are matched case-insensitively, empty items (`&&`) are skipped, unknown fields are
    /// ignored and a repeated field is an error. `sr`, `sig` and `se` are required and must not be empty. `se` must
    /// be a canonical decimal integer (no sign, no leading zero), so that the text signed is `expiry.to_string()`.
    pub fn parse(text: &str) -> Result<Self, SasError> {
        let fields = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| SasError::Malformed("must start with \"SharedAccessSignature \"".to_owned()))?;
        if fields.chars().any(char::is_whitespace) {
            return Err(SasError::Malformed("unexpected whitespace".to_owned()));
        }
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for item in fields.split('&').filter(|item| !item.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| SasError::Malformed(format!("field {:?} has no '='", truncate(item))))?;
            let slot = if name.eq_ignore_ascii_case("sr") {
                &mut sr
            } else if name.eq_ignore_ascii_case("sig") {
                &mut sig
            } else if name.eq_ignore_ascii_case("se") {
                &mut se
            } else if name.eq_ignore_ascii_case("skn") {
                &mut skn
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(SasError::Malformed(format!("field {:?} appears twice", truncate(name))));
            }
        }
        let encoded_resource = required(sr, "sr")?;
        let sig = required(sig, "sig")?;
        let se = required(se, "se")?;

        let resource = percent_decode(encoded_resource)?;
        let signature = b64::decode_lenient(&percent_decode(sig)?)
            .map_err(|e| SasError::Malformed(format!("sig is not base64: {e}")))?;
        if signature.is_empty() {
            return Err(SasError::Malformed("sig is empty".to_owned()));
        }
        let expiry = parse_expiry(se)?;
        let key_name = skn.map(percent_decode).transpose()?;
        Ok(Self { resource, encoded_resource: encoded_resource.to_owned(), signature, expiry, key_name })
    }

    /// Checks the signature against `key` (the base64-decoded shared access key), then the expiry.
    ///
    /// The HMAC-SHA256 covers `encoded_resource + "\n" + expiry` and is compared in constant time. A token whose
    /// signature does not match is [`SasError::BadSignature`] whatever its expiry; a genuine token with
    /// `expiry <= now_unix` is [`SasError::Expired`].
    pub fn verify(&self, key: &[u8], now_unix: u64) -> Result<(), SasError> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let message = string_to_sign(&self.encoded_resource, self.expiry);
        hmac::verify(&key, message.as_bytes(), &self.signature).map_err(|_| SasError::BadSignature)?;
        if self.is_expired(now_unix) {
            return Err(SasError::Expired { expiry: self.expiry, now: now_unix });
        }
        Ok(())
    }

    /// Whether the token has expired at `now_unix` (`expiry <= now_unix`).
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expiry <= now_unix
    }

    /// The host, device id and module id of a device or module token
    /// (`<host>/devices/<id>[/modules/<mid>]`), or `None` for any other resource.
    ///
    /// The words `devices` and `modules` match case-insensitively; the host and the ids are returned as written
    /// (ids are case-sensitive). Empty parts and extra path segments give `None`.
    pub fn device_of(&self) -> Option<(String, String, Option<String>)> {
        let parts: Vec<&str> = self.resource.split('/').collect();
        let (host, device, module) = match parts.as_slice() {
            [host, devices, device] if devices.eq_ignore_ascii_case("devices") => (*host, *device, None),
            [host, devices, device, modules, module]
                if devices.eq_ignore_ascii_case("devices") && modules.eq_ignore_ascii_case("modules") =>
            {
                (*host, *device, Some(*module))
            }
            _ => return None,
        };
        if host.is_empty() || device.is_empty() || module.is_some_and(str::is_empty) {
            return None;
        }
        Some((host.to_owned(), device.to_owned(), module.map(str::to_owned)))
    }
}

/// Generates a token the way the Python device SDK does.
///
/// `sr` = [`percent_encode`]`(resource)`, `sig` = [`percent_encode`]`(base64(HMAC-SHA256(key, sr + "\n" + expiry)))`,
/// then `se`, then `skn` (percent-encoded) when `key_name` is given. `key` is the base64-decoded shared access key.
pub fn generate(resource: &str, key: &[u8], expiry: u64, key_name: Option<&str>) -> String {
    let encoded_resource = percent_encode(resource);
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, string_to_sign(&encoded_resource, expiry).as_bytes());
    let signature = percent_encode(&b64::encode_std(tag.as_ref()));
    let mut token = format!("{SCHEME}sr={encoded_resource}&sig={signature}&se={expiry}");
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&percent_encode(name));
    }
    token
}

/// The resource a device or module token signs: `<host>/devices/<id>[/modules/<mid>]` (not encoded).
pub fn device_resource(host: &str, device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module_id) => format!("{host}/devices/{device_id}/modules/{module_id}"),
        None => format!("{host}/devices/{device_id}"),
    }
}

/// Percent-encodes every byte of `s` except the RFC 3986 unreserved characters `A-Za-z0-9-._~`
/// (Python's `urllib.parse.quote(s, safe="")`), with upper-case hex digits.
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &byte in s.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    out
}

/// Decodes `%XX` escapes (either hex case). `+` stays `+` (RFC 3986, Python's `unquote`). A `%` not followed by
/// two hex digits, or a result that is not UTF-8, is [`SasError::Malformed`].
pub fn percent_decode(s: &str) -> Result<String, SasError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
            match (high, low) {
                (Some(high), Some(low)) => out.push((high << 4) | low),
                _ => {
                    return Err(SasError::Malformed(format!(
                        "bad percent-escape at byte {index} of {:?}",
                        truncate(s)
                    )));
                }
            }
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| SasError::Malformed(format!("{:?} does not decode to UTF-8", truncate(s))))
}

/// The text the HMAC covers.
fn string_to_sign(encoded_resource: &str, expiry: u64) -> String {
    format!("{encoded_resource}\n{expiry}")
}

fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, SasError> {
    match value {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(SasError::Malformed(format!("field {name} is empty"))),
        None => Err(SasError::Malformed(format!("field {name} is missing"))),
    }
}

fn parse_expiry(se: &str) -> Result<u64, SasError> {
    let canonical = se.bytes().all(|b| b.is_ascii_digit()) && (se == "0" || !se.starts_with('0'));
    let expiry = if canonical { se.parse::<u64>().ok() } else { None };
    expiry.ok_or_else(|| SasError::Malformed(format!("se {:?} is not a canonical decimal integer", truncate(se))))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// At most the first 64 characters of `s`, for error messages about untrusted text.
fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(end, _)| s.get(..end).unwrap_or(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_every_byte_class() {
        let text = "a-b_c.d~e/f:g h+i%j$k&l=m?n#o\u{e9}\u{1F600}";
        let encoded = percent_encode(text);
        assert_eq!(encoded, "a-b_c.d~e%2Ff%3Ag%20h%2Bi%25j%24k%26l%3Dm%3Fn%23o%C3%A9%F0%9F%98%80");
        assert_eq!(percent_decode(&encoded).unwrap(), text);
        assert_eq!(percent_decode("%c3%a9+").unwrap(), "\u{e9}+", "lower-case hex accepted, '+' kept");
    }

    #[test]
    fn percent_decoding_refuses_bad_escapes_and_non_utf8() {
        for bad in ["%", "%4", "a%zz", "%G0", "%ff", "%C3"] {
            assert!(matches!(percent_decode(bad), Err(SasError::Malformed(_))), "{bad:?} decoded");
        }
    }

    #[test]
    fn expiry_must_be_canonical() {
        assert_eq!(parse_expiry("0"), Ok(0));
        assert_eq!(parse_expiry("1795459871"), Ok(1_795_459_871));
        assert_eq!(parse_expiry("18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "01", "+1", "-1", "1.5", "1e9", "18446744073709551616", " 1"] {
            assert!(parse_expiry(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_on_char_boundaries() {
        assert_eq!(truncate("abc"), "abc");
        let long = "\u{e9}".repeat(100);
        assert_eq!(truncate(&long).chars().count(), 64);
    }
}
