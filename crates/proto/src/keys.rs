//! RSA keys: public keys from their components, JWK and DER forms, RS256 signing keys.
//!
//! Verification and signing use `ring` (PKCS#1 v1.5, SHA-256/384/512, keys of 2048 to 8192
//! bits). The DER `SubjectPublicKeyInfo` needed for the disabled-signing-key hash is written
//! here by hand: it is a fixed structure of four nested elements, and pulling a DER library
//! into the agent for it would cost more than these forty lines.

use ring::signature::{self, RsaPublicKeyComponents};

use crate::b64;

/// RSA signature algorithms of JWS and root key packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
}

impl SignatureAlgorithm {
    /// Parses `RS256`, `RS384`, `RS512`, ignoring case as the official agent does.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "RS256" => Some(Self::Rs256),
            "RS384" => Some(Self::Rs384),
            "RS512" => Some(Self::Rs512),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
        }
    }

    fn verification(self) -> &'static signature::RsaParameters {
        match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// An RSA public key as its big-endian modulus and exponent (no leading zero bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey({} bits, e={})", self.bits(), b64::encode_url(&self.e))
    }
}

/// A key that cannot be an RSA public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The modulus is empty or zero.
    #[error("empty RSA modulus")]
    EmptyModulus,
    /// The exponent is empty or zero.
    #[error("empty RSA exponent")]
    EmptyExponent,
    /// A component is not valid base64.
    #[error("RSA {component} is not valid base64")]
    Encoding {
        /// `n` or `e`.
        component: &'static str,
    },
    /// The private key bytes were not accepted.
    #[error("invalid RSA private key: {0}")]
    PrivateKey(String),
}

impl RsaPublicKey {
    /// Builds a key from big-endian `n` and `e`; leading zero bytes are dropped.
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if n.is_empty() {
            return Err(KeyError::EmptyModulus);
        }
        if e.is_empty() {
            return Err(KeyError::EmptyExponent);
        }
        Ok(Self { n: n.to_vec(), e: e.to_vec() })
    }

    /// Builds a key from a base64 (either alphabet) modulus and an integer exponent.
    pub fn from_b64_n_and_int_e(n: &str, e: u64) -> Result<Self, KeyError> {
        let n = b64::decode_lenient(n).map_err(|_| KeyError::Encoding { component: "n" })?;
        Self::from_components(&n, &e.to_be_bytes())
    }

    /// Builds a key from base64 (either alphabet) modulus and exponent, as in a JWK.
    pub fn from_b64_components(n: &str, e: &str) -> Result<Self, KeyError> {
        let n = b64::decode_lenient(n).map_err(|_| KeyError::Encoding { component: "n" })?;
        let e = b64::decode_lenient(e).map_err(|_| KeyError::Encoding { component: "e" })?;
        Self::from_components(&n, &e)
    }

    /// Big-endian modulus without leading zeros.
    pub fn modulus(&self) -> &[u8] {
        &self.n
    }

    /// Big-endian public exponent without leading zeros.
    pub fn exponent(&self) -> &[u8] {
        &self.e
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        match self.n.first() {
            Some(first) => self.n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        }
    }

    /// Whether `signature` is a valid `alg` signature of `message` under this key.
    pub fn verify(&self, alg: SignatureAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        let components = RsaPublicKeyComponents { n: &self.n, e: &self.e };
        components.verify(alg.verification(), message, signature).is_ok()
    }

    /// DER `SubjectPublicKeyInfo` (rsaEncryption, NULL parameters, PKCS#1 `RSAPublicKey`).
    pub fn spki_der(&self) -> Vec<u8> {
        let rsa_public_key = der_sequence(&[der_integer(&self.n), der_integer(&self.e)].concat());
        let mut bit_string_body = Vec::with_capacity(rsa_public_key.len() + 1);
        bit_string_body.push(0); // no unused bits
        bit_string_body.extend_from_slice(&rsa_public_key);
        // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
        const RSA_ALGORITHM_IDENTIFIER: [u8; 15] =
            [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
        der_sequence(&[&RSA_ALGORITHM_IDENTIFIER[..], &der_element(0x03, &bit_string_body)].concat())
    }

    /// SHA-256 of the DER `SubjectPublicKeyInfo`: the `disabledSigningKeys` hash.
    pub fn spki_sha256(&self) -> [u8; 32] {
        b64::sha256(&self.spki_der())
    }

    /// The modulus in standard base64 with padding, as the service writes SJWK `n`.
    pub fn n_std_b64(&self) -> String {
        b64::encode_std(&self.n)
    }

    /// The modulus in base64url without padding, as root key packages carry it.
    pub fn n_url_b64(&self) -> String {
        b64::encode_url(&self.n)
    }

    /// The exponent in base64url without padding (`AQAB` for 65537).
    pub fn e_url_b64(&self) -> String {
        b64::encode_url(&self.e)
    }

    /// The exponent as an integer, if it fits.
    pub fn e_u64(&self) -> Option<u64> {
        if self.e.len() > 8 {
            return None;
        }
        Some(self.e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let significant = strip_leading_zeros(&bytes);
    let mut out = vec![0x80 | significant.len() as u8];
    out.extend_from_slice(significant);
    out
}

fn der_element(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_length(body.len()));
    out.extend_from_slice(body);
    out
}

fn der_sequence(body: &[u8]) -> Vec<u8> {
    der_element(0x30, body)
}

/// A non-negative INTEGER: a leading zero byte keeps the sign bit clear.
fn der_integer(unsigned_be: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(unsigned_be.len() + 1);
    if unsigned_be.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(unsigned_be);
    der_element(0x02, &body)
}

/// An RSA private key that signs with RS256.
pub struct SigningKeyPair {
    pair: signature::RsaKeyPair,
    public: RsaPublicKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private material.
        write!(f, "SigningKeyPair({:?})", self.public)
    }
}

impl SigningKeyPair {
    /// Loads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = signature::RsaKeyPair::from_pkcs8(der).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Self::from_pair(pair)
    }

    /// Loads a PKCS#1 `RSAPrivateKey` DER private key.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = signature::RsaKeyPair::from_der(der).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: signature::RsaKeyPair) -> Result<Self, KeyError> {
        use ring::signature::KeyPair as _;
        let components: RsaPublicKeyComponents<Vec<u8>> = pair.public_key().into();
        let public = RsaPublicKey::from_components(&components.n, &components.e)?;
        Ok(Self { pair, public })
    }

    /// The public half.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// RSASSA-PKCS1-v1_5 signature of `message` with `alg`.
    pub fn sign(&self, alg: SignatureAlgorithm, message: &[u8]) -> Vec<u8> {
        let encoding: &'static dyn signature::RsaEncoding = match alg {
            SignatureAlgorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
            SignatureAlgorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
            SignatureAlgorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
        };
        let mut out = vec![0u8; self.pair.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        // Invariant: ring only fails here when the output buffer has the wrong length, and it
        // is sized from the key itself.
        if self.pair.sign(encoding, &rng, message, &mut out).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(feature = "signer")]
pub use signer::*;

#[cfg(feature = "signer")]
mod signer {
    //! Key generation and PEM files, for signers only (the agent never holds private keys).
    use super::{KeyError, SigningKeyPair};
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};

    /// A freshly generated private key with its PKCS#8 PEM text.
    pub struct GeneratedKey {
        /// The key, ready to sign.
        pub pair: SigningKeyPair,
        /// `-----BEGIN PRIVATE KEY-----` PEM (PKCS#8) to store with mode 0600.
        pub pkcs8_pem: String,
    }

    /// Generates an RSA key of `bits` bits (3072 for root and signing keys).
    pub fn generate_rsa(bits: usize) -> Result<GeneratedKey, KeyError> {
        let private =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let der = private.to_pkcs8_der().map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let pem = private.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let pair = SigningKeyPair::from_pkcs8_der(der.as_bytes())?;
        Ok(GeneratedKey { pair, pkcs8_pem: pem.to_string() })
    }

    /// Loads a PEM private key: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn signing_key_from_pem(pem: &str) -> Result<SigningKeyPair, KeyError> {
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let der = private.to_pkcs8_der().map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        SigningKeyPair::from_pkcs8_der(der.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_hash_of_production_signing_key() {
        // vectors/jws/disabled-signing-key-hash.json
        let n = "lLfsKo8Ytbcc2Q3N50UtLIfWQLVSAEbch+F/ce7S1YrJhXOSrzSfCnLpUiqPTw4zX/tiArAEuy7DAeUnEHEcx7Nkwwy5/8zKejvcEXpAJ/e3BKG4E4onfHQEpOsxwOKEeG0Gv9wWL3zTcNvdKXODXF3UPeJ1oGbPQms2zmCJxBbtSIYItmvicx2ekdVzWFw/vKTNuKk8hqK7HRfjOUKuKXyc+yHQI0aFBr2zkk3xh1tEOK98WJfxbcjPsDO6gzYzkXzCMza0O0GibBgLATT9Mf8YPpYG2jvOaDUoCQn2UcURNdl8hJbyjnZo2Jr+U84yuqOk7F4ZySoBv4bXJH2ZRRZFh/uSlsV9wRmYhYrv91DZiqk8HR6DSlnfneu28FThEmmosUM3k2YLsBc4Boupt3yaH8YnJT74u33uz19/MzTujKg7Tai12+XbtnZD9jTGayJtlhFeW+HC57AtAFZhqYwyGkX+83AaPXZ4a1O8u23NUGu2Ap7oM1N0yBJ+IlOz";
        let key = RsaPublicKey::from_b64_components(n, "AQAB").unwrap();
        assert_eq!(key.bits(), 3072);
        assert_eq!(
            &key.spki_der()[..19],
            &[
                0x30, 0x82, 0x01, 0xa2, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                0x05, 0x00
            ]
        );
        assert_eq!(b64::encode_url(&key.spki_sha256()), "Y0jA4rDItwp5NIZYPUP8jAQoXIRPSKCDo4xtiWjyvig");
    }

    #[test]
    fn spki_hash_of_unit_test_keys() {
        for (n, expected) in [
            (
                "ucKAJMkskVVKjtVLFdraMSd0cTa2Vcndkle540smg3a2v4hYXoHWBaA0tkZj5VM1fWR-XcjHJ9NRh74TzsHqPJODXn085tWGMwOzUEPhOSAzRaY-FCr23SIqM6AHCYPxziKbz9kEcD6e043UyCRMyLf8fQJ3SOvBXCNoVSkiQ8rwcDeHjFiSzk_BLy0JGRjfzJZF8l-q1N-Vqpq3VtOmQJphblSL6bC9AR1GNrvaJbHiSciaFvuiucneVBu3B6bY0wEin20x_CrjTNmiWEtuY_zoUxJGLGQVHkzJRRAQweHxw_FDSMd3UhiINRuN7Qb3r_S9HPoFNkZvaOUVOVe7WUY0jAFIzVUEcq2CTx43p0XvaLeYEz-DsG-RlPkkT2i-1ykEhwtJfsKGDTIP5mPDslZkTUScgZFRMToJdwOtGKkAzGXQPlvtf3IL49fUTM4r8dpIc7E1N2Djt94__kcdY1e8JxfgRH7RoiQCATHep6-mQW5UKq_onJW2bNo7i9Gb",
                "F_sCYQEx8MYFTY384ELk98VH4A_h9cmwkc26Sl3d3tk",
            ),
            (
                "2WisuSoVDzKsz02BmP2bulWJzwrDH4hBIgKaz4Ithol_LYOSpk0knonvCiEB5Zb9kKMUAlOdKluvO2nGKp95kqZzm77thqjUbe5bZyFOCqPlPH-0nUHhg_oHXvX_5Oz3l-7KhMG0bUWzQ72nkmUHViexAPBpY-u4zZTRr8MONbGtMInrVI7SJTbToZ1zzM-b04o8wxlNfNJspjY2P_82mmJXZKlRlGdWuLYLoeXhKosfSu9MP1aLjC-puEmYmZ-dsoMg3_DHhluC-7VN2r8dAm3e3cTKuL3bNvGguTwTnccMEw1VxLMUsnpsDtxFHjebwpRVvs76JJsW3fllYZZ2T1l5WWxQbWDCdui7dDvnAfEww7Juxw4dKdXnlSorBGa5-QxZ0OnfKQTYbQweA_GehkKPPvku9mzK-n0PxfsaQMLS1-JfXgiVNQ4erhu_625iKFwWKlfuqOuZWiJMkFTK-NBmpDKAaBtxdH_5Xgc3ZA7SMymyVfw-9UmWv-ooK1F9",
                "fwqaAORIQGeDzcHBcGOrrfM5gV6NAMVhhbkjtaUhJ80",
            ),
        ] {
            let key = RsaPublicKey::from_b64_n_and_int_e(n, 65537).unwrap();
            assert_eq!(b64::encode_url(&key.spki_sha256()), expected);
        }
    }

    #[test]
    fn leading_zero_of_hard_coded_modulus_is_dropped() {
        let with = RsaPublicKey::from_components(&[0, 0xc1, 2], &[1, 0, 1]).unwrap();
        let without = RsaPublicKey::from_components(&[0xc1, 2], &[0, 1, 0, 1]).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.e_u64(), Some(65537));
        assert_eq!(with.e_url_b64(), "AQAB");
        assert!(RsaPublicKey::from_components(&[0, 0], &[1]).is_err());
    }
}
