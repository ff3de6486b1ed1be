//! The base64 flavours of Device Update formats.
//!
//! | where | flavour |
//! |---|---|
//! | JWS segments, root key package `n`, `sig`, disabled key hashes | base64url without padding |
//! | file hashes, the JWS payload `sha256`, SJWK `n` | standard alphabet with `=` padding |
//!
//! Decoding is lenient the way the official agent is: either alphabet, padding optional.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// URL-safe alphabet; accepts input with or without padding.
const URL_LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard alphabet; accepts input with or without padding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Invalid base64 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64: {0}")]
pub struct DecodeError(String);

/// Standard base64 with padding, as used for file hashes.
pub fn encode_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// base64url without padding, as used for JWS segments.
pub fn encode_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes either alphabet (`+/` or `-_`, not mixed meaningfully), padding optional.
pub fn decode_lenient(text: &str) -> Result<Vec<u8>, DecodeError> {
    let normalised: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    STANDARD_LENIENT.decode(normalised.as_bytes()).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes base64url (the `-_` alphabet only), padding optional: JWS segments, root key
/// package signatures and hashes. One text has one decoding, so a signature cannot be
/// re-encoded into a different string that still verifies.
pub fn decode_url(text: &str) -> Result<Vec<u8>, DecodeError> {
    URL_LENIENT_PADDING.decode(text.as_bytes()).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes strictly standard base64 with canonical padding (import manifest hashes).
pub fn decode_std_strict(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD.decode(text.as_bytes()).map_err(|e| DecodeError(e.to_string()))
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Standard base64 (with padding) of the SHA-256 of `bytes`: the form of `hashes.sha256`.
pub fn sha256_std(bytes: &[u8]) -> String {
    encode_std(&sha256(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_agent_base64url_case() {
        // From the official agent's crypto utility tests (vectors/jws/rs256-raw-vectors.json).
        let bytes = b"||||\\\\\\////?}}~~";
        assert_eq!(encode_url(bytes), "fHx8fFxcXC8vLy8_fX1-fg");
        assert_eq!(decode_lenient("fHx8fFxcXC8vLy8_fX1-fg").unwrap(), bytes);
        assert_eq!(decode_lenient("fHx8fFxcXC8vLy8_fX1-fg==").unwrap(), bytes);
        assert_eq!(decode_lenient("fHx8fFxcXC8vLy8/fX1+fg==").unwrap(), bytes);
        assert_eq!(decode_url("fHx8fFxcXC8vLy8_fX1-fg==").unwrap(), bytes);
        assert!(decode_url("fHx8fFxcXC8vLy8/fX1+fg==").is_err(), "standard alphabet is not base64url");
        assert!(decode_url("fHx8fFxcXC8vLy8_fX1-fh").is_err(), "non-zero trailing bits are refused");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_lenient("a").is_err());
        assert!(decode_lenient("@@@@").is_err());
        assert!(decode_std_strict("YQ").is_err());
        assert_eq!(decode_std_strict("YQ==").unwrap(), b"a");
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(sha256_std(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }
}
