//! The signing key store: a directory holding an instance's root keys, signing keys, their
//! certificates (SJWKs) and the signed root key package that devices download.
//!
//! ```text
//! DIR/keystore.json         index: keys, current signing key, package version   (0600)
//! DIR/roots/<kid>.pem       root private keys, PKCS#8                           (0600)
//! DIR/signing/<kid>.pem     signing private keys, PKCS#8                        (0600)
//! DIR/signing/<kid>.sjwk    the signing key certified by its root (compact JWS)
//! DIR/rootkeypackage.json   the current root key package, signed by every root
//! DIR/rootkeys.json         the root public keys: the trust anchors for agents
//! ```
//!
//! Every file is written to a temporary name and renamed, so a crash never leaves a
//! half-written key or package behind.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fs::{create_private_dir, write_private, write_public};
use anyhow::{Context as _, Result, bail};
use duhub_proto::jws;
use duhub_proto::keys::{self, SigningKeyPair};
use duhub_proto::root_key::{self, DisabledSigningKey, PackageContent, RootKey, RootKeyPackage};
use duhub_proto::trust::TrustStore;
use serde::{Deserialize, Serialize};

/// RSA modulus size of generated keys, as Microsoft's root and signing keys.
pub const KEY_BITS: usize = 3072;

/// The index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Format version of this file.
    pub format: u32,
    /// Root keys.
    pub roots: Vec<KeyRecord>,
    /// Signing keys, oldest first.
    pub signing_keys: Vec<SigningKeyRecord>,
    /// Kid of the signing key new manifests are signed with.
    pub current_signing_key: String,
    /// Version of the current root key package.
    pub package_version: u64,
}

/// A root key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    /// Key id.
    pub kid: String,
    /// Creation time (RFC 3339).
    pub created: String,
}

/// A signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyRecord {
    /// Key id.
    pub kid: String,
    /// Kid of the root key that certified it.
    pub root: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Whether the root key package disables it.
    pub disabled: bool,
    /// base64url SHA-256 of its SubjectPublicKeyInfo (the disabled-key hash).
    pub spki_sha256: String,
}

/// A key store directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

/// The material needed to sign update manifests.
pub struct Signer {
    /// Kid of the signing key.
    pub kid: String,
    /// The signing key's certificate.
    pub sjwk: String,
    /// The signing key.
    pub key: SigningKeyPair,
}

impl KeyStore {
    /// The store at `dir` (which may not exist yet).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("keystore.json")
    }

    /// Path of the current root key package.
    pub fn package_path(&self) -> PathBuf {
        self.dir.join("rootkeypackage.json")
    }

    /// Path of the root public keys file.
    pub fn root_keys_path(&self) -> PathBuf {
        self.dir.join("rootkeys.json")
    }

    /// Whether a store exists here.
    pub fn exists(&self) -> bool {
        self.index_path().exists()
    }

    /// Creates a store: a root key, a signing key certified by it, and a package signed by the
    /// root. Refuses to overwrite an existing store.
    pub fn init(&self, now: &Clock) -> Result<Index> {
        if self.exists() {
            bail!("{} already holds a key store; refusing to overwrite it", self.dir.display());
        }
        create_private_dir(&self.dir)?;
        create_private_dir(&self.dir.join("roots"))?;
        create_private_dir(&self.dir.join("signing"))?;
        let root = keys::generate_rsa(KEY_BITS).context("generating the root key")?;
        let root_kid = now.kid("R", &root.pair);
        write_private(&self.dir.join("roots").join(format!("{root_kid}.pem")), root.pkcs8_pem.as_bytes())?;
        let mut index = Index {
            format: 1,
            roots: vec![KeyRecord { kid: root_kid.clone(), created: now.rfc3339.clone() }],
            signing_keys: Vec::new(),
            current_signing_key: String::new(),
            package_version: 0,
        };
        self.add_signing_key(&mut index, &root_kid, &root.pair, now)?;
        self.publish_package(&mut index, now)?;
        self.write_index(&index)?;
        Ok(index)
    }

    /// Creates a new signing key certified by the first root and makes it current.
    pub fn rotate_signing(&self, now: &Clock) -> Result<(Index, String)> {
        let mut index = self.index()?;
        let root = index.roots.first().context("the key store has no root key")?.kid.clone();
        let root_key = self.root_private(&root)?;
        let kid = self.add_signing_key(&mut index, &root, &root_key, now)?;
        self.write_index(&index)?;
        Ok((index, kid))
    }

    /// Disables a signing key: lists its hash in a new version of the root key package.
    pub fn disable_signing(&self, kid: &str, now: &Clock) -> Result<Index> {
        let mut index = self.index()?;
        let record = index
            .signing_keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .with_context(|| format!("no signing key {kid} in {}", self.dir.display()))?;
        if record.disabled {
            bail!("signing key {kid} is already disabled");
        }
        if index.current_signing_key == kid {
            bail!("signing key {kid} is the current signing key; run `duhub keys rotate-signing` first");
        }
        record.disabled = true;
        self.publish_package(&mut index, now)?;
        self.write_index(&index)?;
        Ok(index)
    }

    /// Reads the index.
    pub fn index(&self) -> Result<Index> {
        let path = self.index_path();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading {} (create a key store with `duhub keys init --dir`)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The current signing key and its certificate.
    pub fn signer(&self) -> Result<Signer> {
        let index = self.index()?;
        let kid = index.current_signing_key.clone();
        let pem_path = self.dir.join("signing").join(format!("{kid}.pem"));
        let pem = fs::read_to_string(&pem_path).with_context(|| format!("reading {}", pem_path.display()))?;
        let key = keys::signing_key_from_pem(&pem).with_context(|| format!("loading {}", pem_path.display()))?;
        let sjwk_path = self.dir.join("signing").join(format!("{kid}.sjwk"));
        let sjwk = fs::read_to_string(&sjwk_path).with_context(|| format!("reading {}", sjwk_path.display()))?;
        Ok(Signer { kid, sjwk: sjwk.trim().to_owned(), key })
    }

    /// The root public keys.
    pub fn root_keys(&self) -> Result<Vec<RootKey>> {
        let path = self.root_keys_path();
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        root_key::parse_root_key_list(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The current root key package.
    pub fn package(&self) -> Result<RootKeyPackage> {
        let path = self.package_path();
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        RootKeyPackage::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// What an agent provisioned from this store trusts.
    pub fn trust_store(&self) -> Result<TrustStore> {
        Ok(TrustStore::with_package(self.root_keys()?, self.package()?)?)
    }

    fn root_private(&self, kid: &str) -> Result<SigningKeyPair> {
        let path = self.dir.join("roots").join(format!("{kid}.pem"));
        let pem = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        keys::signing_key_from_pem(&pem).with_context(|| format!("loading {}", path.display()))
    }

    fn add_signing_key(&self, index: &mut Index, root_kid: &str, root: &SigningKeyPair, now: &Clock) -> Result<String> {
        let generated = keys::generate_rsa(KEY_BITS).context("generating a signing key")?;
        let kid = now.kid("S", &generated.pair);
        let sjwk = jws::create_sjwk(generated.pair.public_key(), &kid, root_kid, root);
        let signing = self.dir.join("signing");
        write_private(&signing.join(format!("{kid}.pem")), generated.pkcs8_pem.as_bytes())?;
        write_public(&signing.join(format!("{kid}.sjwk")), sjwk.as_bytes())?;
        index.signing_keys.push(SigningKeyRecord {
            kid: kid.clone(),
            root: root_kid.to_owned(),
            created: now.rfc3339.clone(),
            disabled: false,
            spki_sha256: duhub_proto::b64::encode_url(&generated.pair.public_key().spki_sha256()),
        });
        index.current_signing_key = kid.clone();
        Ok(kid)
    }

    /// Signs and writes the next version of the root key package from the index.
    fn publish_package(&self, index: &mut Index, now: &Clock) -> Result<()> {
        let mut roots = Vec::new();
        let mut signers = Vec::new();
        for record in &index.roots {
            let private = self.root_private(&record.kid)?;
            roots.push(RootKey { kid: record.kid.clone(), key: private.public_key().clone() });
            signers.push((record.kid.clone(), private));
        }
        let mut disabled = Vec::new();
        for record in index.signing_keys.iter().filter(|k| k.disabled) {
            let sjwk_path = self.dir.join("signing").join(format!("{}.sjwk", record.kid));
            let sjwk = fs::read_to_string(&sjwk_path).with_context(|| format!("reading {}", sjwk_path.display()))?;
            let info = jws::inspect_sjwk(sjwk.trim()).with_context(|| format!("reading {}", sjwk_path.display()))?;
            disabled.push(DisabledSigningKey::for_key(&info.signing_key));
        }
        let draft = PackageContent {
            is_test: false,
            version: index.package_version + 1,
            published: now.unix,
            disabled_root_keys: Vec::new(),
            disabled_signing_keys: disabled,
            root_keys: roots.clone(),
        };
        let signer_refs: Vec<(&str, &SigningKeyPair)> = signers.iter().map(|(kid, key)| (kid.as_str(), key)).collect();
        let package = draft.sign(&signer_refs)?;
        package.validate(&roots)?;
        write_public(&self.root_keys_path(), root_key::root_key_list_json(&roots).as_bytes())?;
        write_public(&self.package_path(), package.to_json().as_bytes())?;
        index.package_version = draft.version;
        Ok(())
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let text = serde_json::to_string_pretty(index)?;
        write_private(&self.index_path(), text.as_bytes())
    }
}

/// The time, in the forms the key store needs.
#[derive(Debug, Clone)]
pub struct Clock {
    /// Unix seconds.
    pub unix: i64,
    /// RFC 3339.
    pub rfc3339: String,
    /// `YYYYMMDD`.
    pub date: String,
}

impl Clock {
    /// The current time.
    pub fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        let rfc3339 = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
        Self { unix: now.unix_timestamp(), rfc3339, date }
    }

    /// A key id: `duhub.<kind>.<date>.<first 6 hex digits of the SPKI hash>`.
    fn kid(&self, kind: &str, key: &SigningKeyPair) -> String {
        let hash = key.public_key().spki_sha256();
        format!("duhub.{kind}.{}.{:02x}{:02x}{:02x}", self.date, hash[0], hash[1], hash[2])
    }
}
