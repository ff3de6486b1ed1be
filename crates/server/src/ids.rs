//! Identifiers, secrets and timestamps: the one place the server draws random bytes and reads
//! the wall clock for record fields. Used by `store` (device keys, generation ids, token
//! hashes, row times) and `du` (operation and workflow ids, record times).

use base64::Engine as _;

/// Fills `bytes` from the system's secure random source.
pub fn fill_random(bytes: &mut [u8]) {
    use ring::rand::SecureRandom as _;
    // Invariant: the system random source does not fail on supported platforms; a failure
    // leaves zeros, which a key check would still accept, so fail loudly instead.
    if ring::rand::SystemRandom::new().fill(bytes).is_err() {
        panic!("the system random number generator failed");
    }
}

/// A random `u64`.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_be_bytes(bytes)
}

/// A fresh 256-bit key, base64 (device and shared access policy keys).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A fresh 256-bit API token, base64url without padding.
pub fn generate_api_token() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A device identity's generation id: a random `u64` in decimal.
pub fn generation_id() -> String {
    random_u64().to_string()
}

/// A random UUID (version 4) in its usual text form.
pub fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let part = |range: std::ops::Range<usize>| hex(bytes.get(range).unwrap_or_default());
    format!("{}-{}-{}-{}-{}", part(0..4), part(4..6), part(6..8), part(8..10), part(10..16))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The current UTC time, RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The current UTC time as the Device Update service writes retry timestamps and dates:
/// 7 fractional digits.
pub fn now_service_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    duhub_proto::update_manifest::format_created_date_time(now.unix_timestamp(), now.nanosecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.get(14..15), Some("4"));
        assert_ne!(id, new_uuid());
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
