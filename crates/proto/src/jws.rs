//! Compact JWS (RFC 7515) with RS256, and the signed JSON web key (`sjwk`) of Device Update.
//!
//! An update manifest signature is a compact JWS whose header is
//! `{"alg":"RS256","sjwk":"<SJWK>"}` and whose payload is `{"sha256":"<base64 of the SHA-256
//! of the manifest string>"}`. The SJWK is itself a compact JWS, signed by a root key named by
//! its `kid`, whose payload is the signing key as a JWK. Verification of the chain lives in
//! [`crate::trust`]; this module holds the pieces and the official agent's result codes.

use serde_json::Value;

use crate::b64;
use crate::keys::{RsaPublicKey, SignatureAlgorithm, SigningKeyPair};
use crate::result::ExtendedResultCode;

/// Why a JWS did not verify, with the numbering of the official agent's `JWSResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Generic failure (a section that does not decode, a header without `kid`).
    #[error("jws verification failed")]
    Failed,
    /// Not three non-empty dot-separated sections, or a header without `alg` / `sjwk`.
    #[error("jws has a bad structure")]
    BadStructure,
    /// The signature does not verify with the key.
    #[error("jws signature is invalid")]
    InvalidSignature,
    /// The SJWK's root key is listed in the root key package's `disabledRootKeys`.
    #[error("root key is disabled")]
    DisallowedRootKid,
    /// No trusted root key has the SJWK's `kid`.
    #[error("root key not found")]
    MissingRootKid,
    /// The root keys could not be loaded (official agent: no valid root key package).
    #[error("root key is invalid or the root key package could not be loaded")]
    InvalidRootKid,
    /// The JWS header is not base64url.
    #[error("jws header is not valid base64url")]
    InvalidEncodingJwsHeader,
    /// The SJWK payload lacks `n` or `e`, or `e` is not `AQAB`.
    #[error("signing key payload is invalid")]
    InvalidSjwkPayload,
    /// The signing key's hash is in the root key package's `disabledSigningKeys`.
    #[error("signing key is disabled")]
    DisallowedSigningKey,
    /// The disabled signing keys could not be read.
    #[error("disabled signing keys could not be read")]
    FailedGetDisabledSigningKeys,
    /// The signing key's public key could not be built.
    #[error("signing key public key could not be built")]
    FailGenPubKey,
    /// The signing key's public key could not be hashed.
    #[error("signing key public key could not be hashed")]
    HashPubKeyFailed,
}

impl JwsError {
    /// The official agent's `JWSResult` number.
    pub fn code(self) -> u8 {
        match self {
            Self::Failed => 0,
            Self::BadStructure => 2,
            Self::InvalidSignature => 4,
            Self::DisallowedRootKid => 5,
            Self::MissingRootKid => 6,
            Self::InvalidRootKid => 7,
            Self::InvalidEncodingJwsHeader => 8,
            Self::InvalidSjwkPayload => 9,
            Self::DisallowedSigningKey => 10,
            Self::FailedGetDisabledSigningKeys => 11,
            Self::FailGenPubKey => 12,
            Self::HashPubKeyFailed => 13,
        }
    }

    /// The extended result code the official agent reports for this failure:
    /// `0xA0000005` for a disabled signing key, else `0xA02000rr` with `rr` = [`Self::code`].
    pub fn extended_result_code(self) -> ExtendedResultCode {
        ExtendedResultCode::from_jws_result(self.code())
    }
}

/// The three base64url sections of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections<'a> {
    /// Encoded header.
    pub header: &'a str,
    /// Encoded payload.
    pub payload: &'a str,
    /// Encoded signature (everything after the second dot).
    pub signature: &'a str,
}

impl<'a> Sections<'a> {
    /// Splits at the first two dots; header, payload and signature must be non-empty.
    pub fn split(jws: &'a str) -> Result<Self, JwsError> {
        let (header, rest) = jws.split_once('.').ok_or(JwsError::BadStructure)?;
        let (payload, signature) = rest.split_once('.').ok_or(JwsError::BadStructure)?;
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(JwsError::BadStructure);
        }
        Ok(Self { header, payload, signature })
    }

    /// The header section alone (what the official agent reads first).
    pub fn header_of(jws: &'a str) -> Result<&'a str, JwsError> {
        match jws.split_once('.') {
            Some((header, rest)) if !header.is_empty() && !rest.is_empty() => Ok(header),
            _ => Err(JwsError::BadStructure),
        }
    }

    /// The bytes the signature covers: `header "." payload`.
    pub fn signing_input(&self) -> String {
        format!("{}.{}", self.header, self.payload)
    }
}

/// Decodes a base64url section holding a JSON object.
pub fn decode_json_object(section: &str) -> Option<serde_json::Map<String, Value>> {
    parse_object(&b64::decode_url(section).ok()?)
}

/// Parses bytes as a JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A string member of a JSON object.
pub(crate) fn string_member<'m>(object: &'m serde_json::Map<String, Value>, name: &str) -> Option<&'m str> {
    object.get(name).and_then(Value::as_str)
}

/// Verifies a compact JWS with a known key, as the official agent's `VerifyJWSWithKey`.
pub fn verify_with_key(jws: &str, key: &RsaPublicKey) -> Result<(), JwsError> {
    let sections = Sections::split(jws)?;
    let header = b64::decode_url(sections.header).map_err(|_| JwsError::Failed)?;
    let header = parse_object(&header).ok_or(JwsError::BadStructure)?;
    let alg = string_member(&header, "alg").ok_or(JwsError::BadStructure)?;
    let signature = b64::decode_url(sections.signature).map_err(|_| JwsError::InvalidSignature)?;
    // The official agent supports RS256 only, whatever the case of the name.
    if SignatureAlgorithm::parse(alg) != Some(SignatureAlgorithm::Rs256) {
        return Err(JwsError::InvalidSignature);
    }
    if key.verify(SignatureAlgorithm::Rs256, sections.signing_input().as_bytes(), &signature) {
        Ok(())
    } else {
        Err(JwsError::InvalidSignature)
    }
}

/// Signs `header` and `payload` (JSON texts) into a compact RS256 JWS.
pub fn sign_compact(header_json: &str, payload_json: &str, key: &SigningKeyPair) -> String {
    let signing_input =
        format!("{}.{}", b64::encode_url(header_json.as_bytes()), b64::encode_url(payload_json.as_bytes()));
    let signature = key.sign(SignatureAlgorithm::Rs256, signing_input.as_bytes());
    format!("{signing_input}.{}", b64::encode_url(&signature))
}

/// The JWK payload of an SJWK, as the service writes it: standard-base64 `n`, `e` = `AQAB`.
pub fn signing_key_jwk(key: &RsaPublicKey, kid: &str) -> String {
    let jwk = serde_json::json!({
        "kty": "RSA",
        "n": key.n_std_b64(),
        "e": key.e_url_b64(),
        "alg": "RS256",
        "kid": kid,
    });
    jwk.to_string()
}

/// Certifies a signing key with a root key: the SJWK that goes into manifest signatures.
pub fn create_sjwk(signing_key: &RsaPublicKey, signing_kid: &str, root_kid: &str, root_key: &SigningKeyPair) -> String {
    let header = serde_json::json!({"alg": "RS256", "kid": root_kid}).to_string();
    sign_compact(&header, &signing_key_jwk(signing_key, signing_kid), root_key)
}

/// Signs an update manifest string: the `updateManifestSignature` value.
///
/// `manifest` must be exactly the string that goes into the twin's `updateManifest`.
pub fn sign_update_manifest(manifest: &str, sjwk: &str, signing_key: &SigningKeyPair) -> String {
    let header = serde_json::json!({"alg": "RS256", "sjwk": sjwk}).to_string();
    let payload = serde_json::json!({"sha256": b64::sha256_std(manifest.as_bytes())}).to_string();
    sign_compact(&header, &payload, signing_key)
}

/// What an SJWK says, read without verifying it (for display and key management).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SjwkInfo {
    /// `kid` of the root key that signed it.
    pub root_kid: String,
    /// `kid` of the signing key it certifies.
    pub signing_kid: Option<String>,
    /// The signing key.
    pub signing_key: RsaPublicKey,
}

/// Reads an SJWK's header and payload without verifying anything.
pub fn inspect_sjwk(sjwk: &str) -> Result<SjwkInfo, JwsError> {
    let sections = Sections::split(sjwk)?;
    let header = decode_json_object(sections.header).ok_or(JwsError::Failed)?;
    let root_kid = string_member(&header, "kid").ok_or(JwsError::Failed)?.to_owned();
    let payload = decode_json_object(sections.payload).ok_or(JwsError::Failed)?;
    let signing_key = signing_key_from_jwk(&payload)?;
    let signing_kid = string_member(&payload, "kid").map(str::to_owned);
    Ok(SjwkInfo { root_kid, signing_kid, signing_key })
}

/// The signing key of an SJWK payload, checked as the official agent checks it: `n` and `e`
/// present and `e` exactly `AQAB`.
pub(crate) fn signing_key_from_jwk(payload: &serde_json::Map<String, Value>) -> Result<RsaPublicKey, JwsError> {
    let n = string_member(payload, "n").filter(|n| !n.is_empty());
    let e = string_member(payload, "e").filter(|e| !e.is_empty());
    match (n, e) {
        (Some(n), Some("AQAB")) => RsaPublicKey::from_b64_components(n, "AQAB").map_err(|_| JwsError::FailGenPubKey),
        _ => Err(JwsError::InvalidSjwkPayload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_official_agent() {
        assert!(Sections::split("a.b.c").is_ok());
        assert_eq!(Sections::split("a.b.c.d").unwrap().signature, "c.d");
        for bad in ["", "abc", "a.b", "a.b.", ".b.c", "a..c", "somesignature"] {
            assert_eq!(Sections::split(bad), Err(JwsError::BadStructure), "{bad:?}");
        }
        assert_eq!(Sections::header_of("a.b"), Ok("a"));
        assert_eq!(Sections::header_of("a."), Err(JwsError::BadStructure));
    }

    #[test]
    fn extended_result_codes() {
        assert_eq!(JwsError::BadStructure.extended_result_code(), ExtendedResultCode(0xA020_0002));
        assert_eq!(JwsError::InvalidSignature.extended_result_code(), ExtendedResultCode(0xA020_0004));
        assert_eq!(JwsError::InvalidRootKid.extended_result_code(), ExtendedResultCode(0xA020_0007));
        assert_eq!(JwsError::Failed.extended_result_code(), ExtendedResultCode(0xA020_0000));
        assert_eq!(JwsError::DisallowedSigningKey.extended_result_code(), ExtendedResultCode(0xA000_0005));
    }
}
