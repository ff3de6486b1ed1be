//! Trust decisions: which root keys a verifier trusts, and verification of update manifest
//! signatures along the root key → signing key (`sjwk`) → manifest chain.
//!
//! The order of checks and the result for each failure follow the official agent 1.1.0
//! (`VerifyJWSWithSJWK`, `RootKeyUtility_GetKeyForKid`, `Json_ValidateManifestHash`), so a
//! device reports the same extended result code whichever agent it runs. Where 1.1.0 has a
//! defect (every check fails with `InvalidRootKid` when no root key package is stored) the
//! default here is the sane behaviour; [`TrustStore::require_package`] restores the official one.

use crate::b64;
use crate::jws::{self, JwsError, Sections};
use crate::keys::RsaPublicKey;
use crate::result::ExtendedResultCode;
use crate::root_key::{self, PackageError, RootKey, RootKeyPackage};

/// The root keys a verifier trusts: anchors (built in or configured) and, optionally, a root
/// key package validated against them that adds keys and disables keys.
#[derive(Debug, Clone)]
pub struct TrustStore {
    anchors: Vec<RootKey>,
    package: Option<RootKeyPackage>,
    require_package: bool,
}

/// Whether accepting a root key package changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageChange {
    /// The package is the one already held.
    Unchanged,
    /// The package replaced the previous one (or there was none).
    Changed,
}

impl TrustStore {
    /// Trusts `anchors` and no package.
    pub fn new(anchors: Vec<RootKey>) -> Self {
        Self { anchors, package: None, require_package: false }
    }

    /// Trusts `anchors` and `package`, after validating the package against them.
    pub fn with_package(anchors: Vec<RootKey>, package: RootKeyPackage) -> Result<Self, PackageError> {
        let mut store = Self::new(anchors);
        store.accept_package(package)?;
        Ok(store)
    }

    /// What an official production agent trusts: Microsoft's production root keys and their
    /// published root key package.
    pub fn production() -> Self {
        let anchors = root_key::production_root_keys();
        match RootKeyPackage::parse(root_key::PRODUCTION_ROOT_KEY_PACKAGE) {
            Ok(package) if package.validate(&anchors).is_ok() => {
                Self { anchors, package: Some(package), require_package: false }
            }
            // Invariant: the embedded package is tested to validate; fall back to anchors only.
            _ => Self::new(anchors),
        }
    }

    /// Behave like the official agent 1.1.0 when no package is held: every root key lookup
    /// fails with [`JwsError::InvalidRootKid`].
    pub fn require_package(mut self, required: bool) -> Self {
        self.require_package = required;
        self
    }

    /// The anchors.
    pub fn anchors(&self) -> &[RootKey] {
        &self.anchors
    }

    /// The package held, if any.
    pub fn package(&self) -> Option<&RootKeyPackage> {
        self.package.as_ref()
    }

    /// Validates `package` against the anchors and holds it.
    pub fn accept_package(&mut self, package: RootKeyPackage) -> Result<PackageChange, PackageError> {
        package.validate(&self.anchors)?;
        if self.package.as_ref() == Some(&package) {
            return Ok(PackageChange::Unchanged);
        }
        self.package = Some(package);
        Ok(PackageChange::Changed)
    }

    /// The root key for `kid`, as `RootKeyUtility_GetKeyForKid` decides.
    pub fn root_key(&self, kid: &str) -> Result<&RsaPublicKey, JwsError> {
        let anchor = self.anchors.iter().find(|k| k.kid == kid);
        let Some(package) = &self.package else {
            if self.require_package {
                return Err(JwsError::InvalidRootKid);
            }
            return anchor.map(|k| &k.key).ok_or(JwsError::MissingRootKid);
        };
        if package.is_root_key_disabled(kid) {
            return Err(JwsError::DisallowedRootKid);
        }
        anchor.or_else(|| package.enabled_root_key(kid)).map(|k| &k.key).ok_or(JwsError::MissingRootKid)
    }

    fn is_signing_key_disabled(&self, key: &RsaPublicKey) -> bool {
        self.package.as_ref().is_some_and(|p| p.is_signing_key_disabled(key))
    }

    /// Verifies an SJWK: its root key, its signature and that its signing key is not disabled.
    pub fn verify_sjwk(&self, sjwk: &str) -> Result<VerifiedSigningKey, JwsError> {
        let sections = Sections::split(sjwk)?;
        let header = b64::decode_url(sections.header).map_err(|_| JwsError::Failed)?;
        let header = jws::parse_object(&header).ok_or(JwsError::Failed)?;
        let root_kid = jws::string_member(&header, "kid").ok_or(JwsError::Failed)?;
        let root_key = self.root_key(root_kid)?;
        jws::verify_with_key(sjwk, root_key)?;
        let payload = b64::decode_url(sections.payload).map_err(|_| JwsError::Failed)?;
        let payload = jws::parse_object(&payload).ok_or(JwsError::InvalidSjwkPayload)?;
        let signing_key = jws::signing_key_from_jwk(&payload)?;
        if self.is_signing_key_disabled(&signing_key) {
            return Err(JwsError::DisallowedSigningKey);
        }
        Ok(VerifiedSigningKey {
            root_kid: root_kid.to_owned(),
            signing_kid: jws::string_member(&payload, "kid").map(str::to_owned),
            key: signing_key,
        })
    }

    /// Verifies a JWS whose header carries an `sjwk`, returning its decoded payload.
    pub fn verify_jws_with_sjwk(&self, jws: &str) -> Result<VerifiedJws, JwsError> {
        let header = Sections::header_of(jws)?;
        let header = b64::decode_url(header).map_err(|_| JwsError::InvalidEncodingJwsHeader)?;
        let header = jws::parse_object(&header).ok_or(JwsError::BadStructure)?;
        let sjwk = jws::string_member(&header, "sjwk").filter(|s| !s.is_empty()).ok_or(JwsError::BadStructure)?;
        let signer = self.verify_sjwk(sjwk)?;
        jws::verify_with_key(jws, &signer.key)?;
        let sections = Sections::split(jws)?;
        let payload = b64::decode_url(sections.payload).map_err(|_| JwsError::Failed)?;
        Ok(VerifiedJws { signer, payload })
    }

    /// Verifies an update manifest against its `updateManifestSignature`, in the order and with
    /// the extended result codes of the official agent.
    ///
    /// `manifest` is the decoded string value of desired `updateManifest`.
    pub fn verify_update_manifest(
        &self,
        manifest: Option<&str>,
        signature: Option<&str>,
    ) -> Result<VerifiedSigningKey, ManifestSignatureError> {
        let signature = signature.ok_or(ManifestSignatureError::MissingSignature)?;
        let verified = self.verify_jws_with_sjwk(signature).map_err(ManifestSignatureError::Jws)?;
        let manifest = manifest.ok_or(ManifestSignatureError::MissingManifest)?;
        let payload = jws::parse_object(&verified.payload).ok_or(ManifestSignatureError::BadPayload)?;
        let signed = jws::string_member(&payload, "sha256").ok_or(ManifestSignatureError::BadPayload)?;
        let actual = b64::sha256_std(manifest.as_bytes());
        if signed != actual {
            return Err(ManifestSignatureError::HashMismatch { signed: signed.to_owned(), actual });
        }
        Ok(verified.signer)
    }
}

/// The signing key an SJWK certified, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigningKey {
    /// The root key that certified it.
    pub root_kid: String,
    /// The signing key's own `kid`.
    pub signing_kid: Option<String>,
    /// The signing key.
    pub key: RsaPublicKey,
}

/// A verified JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    /// Who signed it.
    pub signer: VerifiedSigningKey,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
}

/// Why an update manifest's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestSignatureError {
    /// No `updateManifestSignature`.
    #[error("the update manifest has no signature")]
    MissingSignature,
    /// The signature chain did not verify.
    #[error("the update manifest signature did not verify: {0}")]
    Jws(JwsError),
    /// No `updateManifest` string.
    #[error("there is no update manifest string to check the signature against")]
    MissingManifest,
    /// The JWS payload is not `{"sha256": "..."}`.
    #[error("the signature payload carries no sha256")]
    BadPayload,
    /// The manifest is not the one signed.
    #[error("the update manifest does not match its signature (signed sha256 {signed}, actual {actual})")]
    HashMismatch {
        /// The hash in the signature.
        signed: String,
        /// The hash of the manifest received.
        actual: String,
    },
}

impl ManifestSignatureError {
    /// The extended result code the official agent reports.
    pub fn extended_result_code(&self) -> ExtendedResultCode {
        match self {
            Self::Jws(e) => e.extended_result_code(),
            _ => ExtendedResultCode::MANIFEST_VALIDATION_FAILED,
        }
    }
}
