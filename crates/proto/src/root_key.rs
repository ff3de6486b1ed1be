//! Root keys and root key packages.
//!
//! A root key package lists the root keys a device should trust beyond the ones it was built
//! with, plus root keys and signing keys that are disabled. It is signed by the root keys
//! themselves: `signatures[i]` belongs to the i-th member of `protected.rootKeys`, and covers
//! the parson serialisation of `protected` ([`crate::json::to_parson_string`]).
//!
//! Validation against a set of anchors (the keys a device was built with) follows the official
//! agent: **every** anchor must find its kid in `rootKeys` and its signature at the same index
//! must verify with the anchor's own key.

use serde_json::{Map, Value};

use crate::b64;
use crate::json::to_parson_string;
use crate::keys::{RsaPublicKey, SignatureAlgorithm, SigningKeyPair};
use crate::result::ExtendedResultCode;

/// A named RSA root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKey {
    /// Key id, e.g. `ADU.200702.R`.
    pub kid: String,
    /// The public key.
    pub key: RsaPublicKey,
}

/// Hash algorithms of `disabledSigningKeys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "SHA256" => Some(Self::Sha256),
            "SHA384" => Some(Self::Sha384),
            "SHA512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The package's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }

    /// The hash of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha384 => &ring::digest::SHA384,
            Self::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, bytes).as_ref().to_vec()
    }
}

/// A disabled signing key: the hash of its DER `SubjectPublicKeyInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledSigningKey {
    /// Hash algorithm.
    pub alg: HashAlgorithm,
    /// Hash of the signing key's SPKI DER.
    pub hash: Vec<u8>,
}

impl DisabledSigningKey {
    /// The entry that disables `key`, with SHA-256.
    pub fn for_key(key: &RsaPublicKey) -> Self {
        Self { alg: HashAlgorithm::Sha256, hash: key.spki_sha256().to_vec() }
    }

    /// Whether this entry names `key`.
    pub fn matches(&self, key: &RsaPublicKey) -> bool {
        self.alg.digest(&key.spki_der()) == self.hash
    }
}

/// One signature of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSignature {
    /// Algorithm.
    pub alg: SignatureAlgorithm,
    /// Signature bytes.
    pub sig: Vec<u8>,
}

/// A parsed root key package. Keeps the exact bytes its signatures cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyPackage {
    /// What `protected` says.
    pub content: PackageContent,
    /// Signatures, by position of `content.root_keys`.
    pub signatures: Vec<PackageSignature>,
    signed_bytes: String,
}

/// Why a root key package was refused, with the official agent's extended result code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct PackageError {
    /// Extended result code (utility facility, root key package or root key utility component).
    pub extended_result_code: ExtendedResultCode,
    /// What is wrong.
    pub detail: String,
}

impl PackageError {
    fn new(extended_result_code: ExtendedResultCode, detail: impl Into<String>) -> Self {
        Self { extended_result_code, detail: detail.into() }
    }
}

/// Extended result codes of root key handling (facility UTILITY, components 5 and 6).
pub mod erc {
    use crate::result::ExtendedResultCode as Erc;

    /// Not JSON.
    pub const FAIL_JSON_PARSE: Erc = Erc(0xA000_0001);
    /// `protected.version` missing or zero.
    pub const MISSING_VERSION: Erc = Erc(0x8050_0004);
    /// `protected.published` missing or not positive.
    pub const MISSING_PUBLISHED: Erc = Erc(0x8050_0005);
    /// `protected.disabledRootKeys` missing or malformed.
    pub const MISSING_DISABLED_ROOT_KEYS: Erc = Erc(0x8050_0006);
    /// A disabled signing key without `alg`.
    pub const MISSING_HASH_ALG: Erc = Erc(0x8050_0007);
    /// A signature without `alg`.
    pub const MISSING_SIGNATURE_ALG: Erc = Erc(0x8050_0008);
    /// A `hash` or `sig` missing.
    pub const MISSING_HASH_OR_SIG: Erc = Erc(0x8050_0009);
    /// `protected.disabledSigningKeys` missing or not an array.
    pub const MISSING_DISABLED_SIGNING_KEYS: Erc = Erc(0x8050_000A);
    /// A root key without `keyType`.
    pub const MISSING_KEY_TYPE: Erc = Erc(0x8050_000B);
    /// `protected.rootKeys` missing.
    pub const MISSING_ROOT_KEYS: Erc = Erc(0x8050_000C);
    /// `protected` missing.
    pub const MISSING_PROTECTED: Erc = Erc(0x8050_000D);
    /// `signatures` missing.
    pub const MISSING_SIGNATURES: Erc = Erc(0x8050_000E);
    /// `protected.rootKeys` empty.
    pub const ROOT_KEYS_EMPTY: Erc = Erc(0x8050_0011);
    /// `signatures` empty.
    pub const SIGNATURES_EMPTY: Erc = Erc(0x8050_0012);
    /// A root key without a usable modulus.
    pub const INVALID_MODULUS: Erc = Erc(0x8050_0013);
    /// Unknown hash algorithm.
    pub const INVALID_HASH_ALGORITHM: Erc = Erc(0x8050_0014);
    /// Unknown signature algorithm.
    pub const INVALID_SIGNING_ALGORITHM: Erc = Erc(0x8050_0015);
    /// Bad base64url.
    pub const INVALID_ENCODING: Erc = Erc(0x8050_0016);
    /// Empty key id.
    pub const INVALID_KEY_ID: Erc = Erc(0x8050_0017);
    /// `keyType` other than `RSA`.
    pub const UNSUPPORTED_KEY_TYPE: Erc = Erc(0x8050_0018);
    /// RSA parameters that do not form a key.
    pub const INVALID_RSA_PARAMETERS: Erc = Erc(0x8050_0019);
    /// A signature entry that is not an object.
    pub const GETOBJ_SIGNATURES_ELEMENT: Erc = Erc(0x8050_001A);
    /// A disabled signing key entry that is not an object.
    pub const GETOBJ_DISABLED_SIGNING_KEYS_ELEMENT: Erc = Erc(0x8050_001B);
    /// An exponent that is not a positive integer.
    pub const INVALID_EXPONENT: Erc = Erc(0x8050_001C);
    /// No anchors to validate with.
    pub const HARDCODED_ROOTKEY_LOAD_FAILED: Erc = Erc(0x8060_0002);
    /// An anchor's kid is not in `rootKeys`, or has no signature at its index.
    pub const SIGNATURE_FOR_KEY_NOT_FOUND: Erc = Erc(0x8060_0003);
    /// An anchor's signature does not verify.
    pub const SIGNATURE_VALIDATION_FAILED: Erc = Erc(0x8060_0004);
    /// A test package offered to a production trust store.
    pub const TEST_PKG_ON_PROD_AGENT: Erc = Erc(0xA000_0007);
    /// A production package offered to a test trust store.
    pub const PROD_PKG_ON_TEST_AGENT: Erc = Erc(0xA000_0006);
}

impl RootKeyPackage {
    /// Parses a package (compact or pretty JSON).
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PackageError::new(erc::FAIL_JSON_PARSE, format!("root key package is not JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Parses a package from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PackageError> {
        let root = value
            .as_object()
            .ok_or_else(|| PackageError::new(erc::FAIL_JSON_PARSE, "root key package is not a JSON object"))?;
        let protected = match root.get("protected") {
            Some(Value::Object(p)) => p,
            _ => return Err(PackageError::new(erc::MISSING_PROTECTED, "missing object \"protected\"")),
        };
        let version = protected
            .get("version")
            .and_then(positive_integer)
            .ok_or_else(|| PackageError::new(erc::MISSING_VERSION, "protected.version must be a positive integer"))?;
        let published = protected.get("published").and_then(positive_integer).ok_or_else(|| {
            PackageError::new(erc::MISSING_PUBLISHED, "protected.published must be a positive Unix time")
        })?;
        let is_test = match protected.get("isTest") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(PackageError::new(erc::FAIL_JSON_PARSE, "protected.isTest must be a boolean")),
        };
        let content = PackageContent {
            is_test,
            version,
            published: i64::try_from(published).unwrap_or(i64::MAX),
            disabled_root_keys: parse_disabled_root_keys(protected)?,
            disabled_signing_keys: parse_disabled_signing_keys(protected)?,
            root_keys: parse_root_keys(protected)?,
        };
        Ok(Self {
            content,
            signatures: parse_signatures(root)?,
            signed_bytes: to_parson_string(&Value::Object(protected.clone())),
        })
    }

    /// The exact bytes the signatures cover.
    pub fn signed_bytes(&self) -> &str {
        &self.signed_bytes
    }

    /// Checks the package against trusted anchors as the official agent does: each anchor's
    /// kid must be in `rootKeys` and `signatures[index]` must verify with the anchor's key.
    pub fn validate(&self, anchors: &[RootKey]) -> Result<(), PackageError> {
        if anchors.is_empty() {
            return Err(PackageError::new(erc::HARDCODED_ROOTKEY_LOAD_FAILED, "no trusted root keys to validate with"));
        }
        for anchor in anchors {
            let index = self.content.root_keys.iter().position(|k| k.kid == anchor.kid).ok_or_else(|| {
                PackageError::new(
                    erc::SIGNATURE_FOR_KEY_NOT_FOUND,
                    format!("trusted root key {} is not listed in the package", anchor.kid),
                )
            })?;
            let signature = self.signatures.get(index).ok_or_else(|| {
                PackageError::new(
                    erc::SIGNATURE_FOR_KEY_NOT_FOUND,
                    format!("no signature at index {index} for trusted root key {}", anchor.kid),
                )
            })?;
            if !anchor.key.verify(signature.alg, self.signed_bytes.as_bytes(), &signature.sig) {
                return Err(PackageError::new(
                    erc::SIGNATURE_VALIDATION_FAILED,
                    format!("signature of trusted root key {} does not verify", anchor.kid),
                ));
            }
        }
        Ok(())
    }

    /// The root key with `kid`, if listed and not disabled.
    pub fn enabled_root_key(&self, kid: &str) -> Option<&RootKey> {
        if self.is_root_key_disabled(kid) {
            return None;
        }
        self.content.root_keys.iter().find(|k| k.kid == kid)
    }

    /// Whether `kid` is listed in `disabledRootKeys`.
    pub fn is_root_key_disabled(&self, kid: &str) -> bool {
        self.content.disabled_root_keys.iter().any(|d| d == kid)
    }

    /// Whether the signing key is listed in `disabledSigningKeys`.
    pub fn is_signing_key_disabled(&self, key: &RsaPublicKey) -> bool {
        self.content.disabled_signing_keys.iter().any(|d| d.matches(key))
    }

    /// The package as JSON: `protected` written as the signed bytes, so any reader that
    /// re-serialises it the parson way gets the same bytes.
    pub fn to_json(&self) -> String {
        package_json(&self.signed_bytes, &self.signatures)
    }
}

/// What a package's `protected` object says; signed into a package with
/// [`PackageContent::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageContent {
    /// Whether it is a test package.
    pub is_test: bool,
    /// Version, at least 1; raise it with every change.
    pub version: u64,
    /// Publication time, Unix seconds.
    pub published: i64,
    /// Disabled root key ids.
    pub disabled_root_keys: Vec<String>,
    /// Disabled signing keys.
    pub disabled_signing_keys: Vec<DisabledSigningKey>,
    /// Root keys; each must be signed for by its private key.
    pub root_keys: Vec<RootKey>,
}

impl PackageContent {
    /// The `protected` object in the member order of Microsoft's packages.
    pub fn protected_value(&self) -> Value {
        let mut root_keys = Map::new();
        for key in &self.root_keys {
            let mut entry = Map::new();
            entry.insert("keyType".into(), "RSA".into());
            entry.insert("n".into(), key.key.n_url_b64().into());
            entry.insert("e".into(), key.key.e_u64().unwrap_or(65537).into());
            root_keys.insert(key.kid.clone(), Value::Object(entry));
        }
        let disabled_signing_keys: Vec<Value> = self
            .disabled_signing_keys
            .iter()
            .map(|d| serde_json::json!({"alg": d.alg.name(), "hash": b64::encode_url(&d.hash)}))
            .collect();
        let mut protected = Map::new();
        protected.insert("isTest".into(), self.is_test.into());
        protected.insert("version".into(), self.version.into());
        protected.insert("published".into(), self.published.into());
        protected.insert("disabledRootKeys".into(), self.disabled_root_keys.clone().into());
        protected.insert("disabledSigningKeys".into(), disabled_signing_keys.into());
        protected.insert("rootKeys".into(), Value::Object(root_keys));
        Value::Object(protected)
    }

    /// Signs the draft with the private key of every listed root key (RS256).
    pub fn sign(&self, signers: &[(&str, &SigningKeyPair)]) -> Result<RootKeyPackage, PackageError> {
        let signed_bytes = to_parson_string(&self.protected_value());
        let mut signatures = Vec::with_capacity(self.root_keys.len());
        for key in &self.root_keys {
            let (_, signer) = signers.iter().find(|(kid, _)| *kid == key.kid).ok_or_else(|| {
                PackageError::new(
                    erc::SIGNATURE_FOR_KEY_NOT_FOUND,
                    format!("no private key given for root key {}", key.kid),
                )
            })?;
            if signer.public_key() != &key.key {
                return Err(PackageError::new(
                    erc::SIGNATURE_VALIDATION_FAILED,
                    format!("the private key given for {} does not match its public key", key.kid),
                ));
            }
            let sig = signer.sign(SignatureAlgorithm::Rs256, signed_bytes.as_bytes());
            signatures.push(PackageSignature { alg: SignatureAlgorithm::Rs256, sig });
        }
        RootKeyPackage::parse(&package_json(&signed_bytes, &signatures))
    }
}

/// `{"protected":<signed bytes>,"signatures":[{"alg","sig"}]}`.
fn package_json(signed_bytes: &str, signatures: &[PackageSignature]) -> String {
    let signatures: Vec<Value> =
        signatures.iter().map(|s| serde_json::json!({"alg": s.alg.name(), "sig": b64::encode_url(&s.sig)})).collect();
    format!("{{\"protected\":{signed_bytes},\"signatures\":{}}}", Value::Array(signatures))
}

fn positive_integer(value: &Value) -> Option<u64> {
    // parson reads every number as a double; accept integral doubles too.
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < 9.0e15).map(|f| f as u64))
            .filter(|n| *n > 0),
        _ => None,
    }
}

fn parse_disabled_root_keys(protected: &Map<String, Value>) -> Result<Vec<String>, PackageError> {
    let missing =
        || PackageError::new(erc::MISSING_DISABLED_ROOT_KEYS, "protected.disabledRootKeys must be an array of key ids");
    let items = protected.get("disabledRootKeys").and_then(Value::as_array).ok_or_else(missing)?;
    items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(missing)).collect()
}

fn parse_disabled_signing_keys(protected: &Map<String, Value>) -> Result<Vec<DisabledSigningKey>, PackageError> {
    let items = protected.get("disabledSigningKeys").and_then(Value::as_array).ok_or_else(|| {
        PackageError::new(erc::MISSING_DISABLED_SIGNING_KEYS, "protected.disabledSigningKeys must be an array")
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let entry = item.as_object().ok_or_else(|| {
                PackageError::new(
                    erc::GETOBJ_DISABLED_SIGNING_KEYS_ELEMENT,
                    format!("disabledSigningKeys[{i}] is not an object"),
                )
            })?;
            let alg = entry.get("alg").and_then(Value::as_str).ok_or_else(|| {
                PackageError::new(erc::MISSING_HASH_ALG, format!("disabledSigningKeys[{i}] has no \"alg\""))
            })?;
            let alg = HashAlgorithm::parse(alg).ok_or_else(|| {
                PackageError::new(
                    erc::INVALID_HASH_ALGORITHM,
                    format!("disabledSigningKeys[{i}]: unknown hash algorithm \"{alg}\""),
                )
            })?;
            let hash = decode_member(entry, "hash", &format!("disabledSigningKeys[{i}]"))?;
            Ok(DisabledSigningKey { alg, hash })
        })
        .collect()
}

fn parse_root_keys(protected: &Map<String, Value>) -> Result<Vec<RootKey>, PackageError> {
    let keys = protected
        .get("rootKeys")
        .and_then(Value::as_object)
        .ok_or_else(|| PackageError::new(erc::MISSING_ROOT_KEYS, "protected.rootKeys must be an object"))?;
    if keys.is_empty() {
        return Err(PackageError::new(erc::ROOT_KEYS_EMPTY, "protected.rootKeys is empty"));
    }
    keys.iter()
        .map(|(kid, definition)| {
            if kid.is_empty() {
                return Err(PackageError::new(erc::INVALID_KEY_ID, "a root key has an empty key id"));
            }
            let definition = definition
                .as_object()
                .ok_or_else(|| PackageError::new(erc::MISSING_KEY_TYPE, format!("root key {kid} is not an object")))?;
            match definition.get("keyType").and_then(Value::as_str) {
                None | Some("") => {
                    return Err(PackageError::new(erc::MISSING_KEY_TYPE, format!("root key {kid} has no keyType")));
                }
                Some("RSA") => {}
                Some(other) => {
                    return Err(PackageError::new(
                        erc::UNSUPPORTED_KEY_TYPE,
                        format!("root key {kid} has keyType \"{other}\""),
                    ));
                }
            }
            let n = definition
                .get("n")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| PackageError::new(erc::INVALID_MODULUS, format!("root key {kid} has no modulus")))?;
            let e = definition.get("e").and_then(exponent).ok_or_else(|| {
                PackageError::new(erc::INVALID_EXPONENT, format!("root key {kid} has no valid exponent"))
            })?;
            let n = b64::decode_lenient(n).map_err(|_| {
                PackageError::new(erc::INVALID_RSA_PARAMETERS, format!("root key {kid}: modulus is not base64url"))
            })?;
            let key = RsaPublicKey::from_components(&n, &e)
                .map_err(|err| PackageError::new(erc::INVALID_RSA_PARAMETERS, format!("root key {kid}: {err}")))?;
            Ok(RootKey { kid: kid.clone(), key })
        })
        .collect()
}

/// `e` is a JSON number in real packages and a string in the schema; accept both
/// (a decimal string or base64url bytes such as `AQAB`).
fn exponent(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Number(_) => positive_integer(value).map(|e| e.to_be_bytes().to_vec()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok().filter(|e| *e > 0).map(|e| e.to_be_bytes().to_vec())
        }
        Value::String(s) => b64::decode_lenient(s).ok().filter(|e| e.iter().any(|b| *b != 0)),
        _ => None,
    }
}

fn parse_signatures(root: &Map<String, Value>) -> Result<Vec<PackageSignature>, PackageError> {
    let items = root
        .get("signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| PackageError::new(erc::MISSING_SIGNATURES, "missing array \"signatures\""))?;
    if items.is_empty() {
        return Err(PackageError::new(erc::SIGNATURES_EMPTY, "\"signatures\" is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let entry = item.as_object().ok_or_else(|| {
                PackageError::new(erc::GETOBJ_SIGNATURES_ELEMENT, format!("signatures[{i}] is not an object"))
            })?;
            let alg = entry.get("alg").and_then(Value::as_str).ok_or_else(|| {
                PackageError::new(erc::MISSING_SIGNATURE_ALG, format!("signatures[{i}] has no \"alg\""))
            })?;
            let alg = SignatureAlgorithm::parse(alg).filter(|_| alg == alg.to_ascii_uppercase()).ok_or_else(|| {
                PackageError::new(
                    erc::INVALID_SIGNING_ALGORITHM,
                    format!("signatures[{i}]: unknown algorithm \"{alg}\""),
                )
            })?;
            let sig = decode_member(entry, "sig", &format!("signatures[{i}]"))?;
            Ok(PackageSignature { alg, sig })
        })
        .collect()
}

fn decode_member(entry: &Map<String, Value>, name: &str, at: &str) -> Result<Vec<u8>, PackageError> {
    let text = entry
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PackageError::new(erc::MISSING_HASH_OR_SIG, format!("{at} has no \"{name}\"")))?;
    match b64::decode_url(text) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(PackageError::new(erc::INVALID_ENCODING, format!("{at}: \"{name}\" is not base64url"))),
    }
}

/// Root keys compiled into official production agents.
pub fn production_root_keys() -> Vec<RootKey> {
    anchors(&[
        (
            "ADU.200702.R",
            "ANVCLq8RVKNQZYeiTVu6GvupMt_pmV8FRcivvTUdiegnJ1ijqO7FxR5P95KmEgZ9PX2wB_Ysf95tKvW8SbwV7_CByz-ITycdiHEoYAi2GdLSOdAFHzx2hnG7WVi8sYh7q1YovzFzRDIQ_T3Tllz_Tlyza_-LhJuLgLhJ0H361kBYdk3Acid1y5ovm7SfDyXxHMUbC1owfS-476cmWFOv1R1VAVEN6RuiDz_X6R0gQabmFAqu_vIcKtbkBHv2FH7sD5eD-lj6gTYhuaMr-tlhCxqU98G-f0AUSsn6NX_vZnAAsf3b12ENO1h0Z5SJdXaWfJGH0o4Rl-57h2yaL0XYZT9ScJgqy8gEY_XJR89w9O1kp3SlI4-27fcc07AcZFcSWqmBhB-g51AZlrSCsaxI4-EygstAH6zEWbwQNFGC-SiNqB6b9XlFdbLcmhFDCL5hzJrEy3c2_4PdqHFPUY4Oe036eZiNvvyCfkBIqRIBqNl-86Ub8fuQdz5AhxjJq9n3eQ",
        ),
        (
            "ADU.200703.R",
            "ALKjsnQW-rsg-VJ25ic-gEHG_s8w-ciW9VkKqoHnUYOKxPUXOi8q5lfUcc6KPe-aVXY-meLCrkzuLbh49aJOKPKcTjllvOzkDeXjOKhZqwikG7T0oFKjOLNGIRPMPGgG3v4AppJu3kxHENYcnCT1zXDh9Wp8aBMd4cX2qE8hn4Z8RMWKmRzF0wabWnGdCRzDZDFqxReVHV0q8VXHZtTo9dmpW4yibGJgBTfXMrBzy_dLNickIYw4CrgY_vUVYDWLNe8eD4imE417fe-z57DJphxwe8zyKYuH972dtohvrHP_cvLvSCeWcoYGolzjfc6wnuXC2U7E8394B0tliEUMEeWWVjSILRYOWULS99ntHe3JN3dEfuOENp9YE-9v5MNE1HcGis9byIAcophlCzXcc8hp0F7oJUOe9tirBa9RKSNVQFgQ6rjizV15zOzftFuYx_rj0mwmzi4sVuDPje79kxIvAEmNHII4VqZdeURKGvPcFhCzwS0nEf4bmAXko2AxmQ",
        ),
    ])
}

/// Root keys compiled into official agents built with `EMBED_TEST_ROOT_KEYS=1`.
pub fn test_root_keys() -> Vec<RootKey> {
    anchors(&[
        (
            "ADU.200702.R.T",
            "ALnCgCTJLJFVSo7VSxXa2jEndHE2tlXJ3ZJXueNLJoN2tr-IWF6B1gWgNLZGY-VTNX1kfl3IxyfTUYe-E87B6jyTg159PObVhjMDs1BD4TkgM0WmPhQq9t0iKjOgBwmD8c4im8_ZBHA-ntON1MgkTMi3_H0Cd0jrwVwjaFUpIkPK8HA3h4xYks5PwS8tCRkY38yWRfJfqtTflaqat1bTpkCaYW5Ui-mwvQEdRja72iWx4knImhb7ornJ3lQbtwem2NMBIp9tMfwq40zZolhLbmP86FMSRixkFR5MyUUQEMHh8cPxQ0jHd1IYiDUbje0G96_0vRz6BTZGb2jlFTlXu1lGNIwBSM1VBHKtgk8eN6dF72i3mBM_g7BvkZT5JE9ovtcpBIcLSX7Chg0yD-Zjw7JWZE1EnIGRUTE6CXcDrRipAMxl0D5b7X9yC-PX1EzOK_HaSHOxNTdg47feP_5HHWNXvCcX4ER-0aIkAgEx3qevpkFuVCqv6JyVtmzaO4vRmw",
        ),
        (
            "ADU.200703.R.T",
            "ANlorLkqFQ8yrM9NgZj9m7pVic8Kwx-IQSICms-CLYaJfy2DkqZNJJ6J7wohAeWW_ZCjFAJTnSpbrztpxiqfeZKmc5u-7Yao1G3uW2chTgqj5Tx_tJ1B4YP6B171_-Ts95fuyoTBtG1Fs0O9p5JlB1YnsQDwaWPruM2U0a_DDjWxrTCJ61SO0iU206Gdc8zPm9OKPMMZTXzSbKY2Nj__NppiV2SpUZRnVri2C6Hl4SqLH0rvTD9Wi4wvqbhJmJmfnbKDIN_wx4Zbgvu1Tdq_HQJt3t3Eyri92zbxoLk8E53HDBMNVcSzFLJ6bA7cRR43m8KUVb7O-iSbFt35ZWGWdk9ZeVlsUG1gwnbou3Q75wHxMMOybscOHSnV55UqKwRmufkMWdDp3ykE2G0MHgPxnoZCjz75LvZsyvp9D8X7GkDC0tfiX14IlTUOHq4bv-tuYihcFipX7qjrmVoiTJBUyvjQZqQygGgbcXR_-V4HN2QO0jMpslX8PvVJlr_qKCtRfQ",
        ),
    ])
}

/// The production root key package Microsoft publishes (version 1, published 2023-02-09),
/// which official agents must hold to verify service-signed manifests.
pub const PRODUCTION_ROOT_KEY_PACKAGE: &str = include_str!("data/production-root-key-package.json");

fn anchors(keys: &[(&str, &str)]) -> Vec<RootKey> {
    keys.iter()
        .filter_map(|(kid, n)| {
            RsaPublicKey::from_b64_n_and_int_e(n, 65537).ok().map(|key| RootKey { kid: (*kid).to_owned(), key })
        })
        .collect()
}

/// Reads trusted root keys from JSON: `{"<kid>": {"n": "<base64url>", "e": 65537}}`, or the
/// same under a top-level `"keys"` member (also accepting `n_base64url`, as in the vectors).
pub fn parse_root_key_list(text: &str) -> Result<Vec<RootKey>, PackageError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| PackageError::new(erc::FAIL_JSON_PARSE, format!("root key list is not JSON: {e}")))?;
    let object = value.get("keys").unwrap_or(&value);
    let object = object
        .as_object()
        .ok_or_else(|| PackageError::new(erc::FAIL_JSON_PARSE, "root key list must be an object of kid to key"))?;
    let mut keys = Vec::new();
    for (kid, entry) in object {
        let n = entry
            .get("n")
            .or_else(|| entry.get("n_base64url"))
            .and_then(Value::as_str)
            .ok_or_else(|| PackageError::new(erc::INVALID_MODULUS, format!("root key {kid} has no \"n\"")))?;
        let e = entry.get("e").and_then(exponent).unwrap_or_else(|| 65537u64.to_be_bytes().to_vec());
        let n = b64::decode_lenient(n).map_err(|_| {
            PackageError::new(erc::INVALID_RSA_PARAMETERS, format!("root key {kid}: modulus is not base64url"))
        })?;
        let key = RsaPublicKey::from_components(&n, &e)
            .map_err(|err| PackageError::new(erc::INVALID_RSA_PARAMETERS, format!("root key {kid}: {err}")))?;
        keys.push(RootKey { kid: kid.clone(), key });
    }
    if keys.is_empty() {
        return Err(PackageError::new(erc::HARDCODED_ROOTKEY_LOAD_FAILED, "root key list is empty"));
    }
    Ok(keys)
}

/// Writes trusted root keys in the form [`parse_root_key_list`] reads.
pub fn root_key_list_json(keys: &[RootKey]) -> String {
    let mut object = Map::new();
    for key in keys {
        object.insert(
            key.kid.clone(),
            serde_json::json!({"keyType": "RSA", "n": key.key.n_url_b64(), "e": key.key.e_u64().unwrap_or(65537)}),
        );
    }
    serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default()
}
