//! Signing with our own keys: root key packages we create verify as the official agent
//! verifies them, and disabled root and signing keys are refused with the official codes.
//! (Microsoft's sample packages that disable keys carry no valid signatures, so these rules
//! can only be exercised with packages we sign.)

use std::sync::OnceLock;

use duhub_proto::jws::{self, JwsError};
use duhub_proto::keys::{self, SigningKeyPair};
use duhub_proto::root_key::{DisabledSigningKey, PackageContent, RootKey, RootKeyPackage};
use duhub_proto::trust::{ManifestSignatureError, TrustStore};

use crate::support::read;

/// Microsoft's public test-only root key pairs (`rootkey1`, `rootkey2`) and one generated
/// signing key.
struct Keys {
    root1: SigningKeyPair,
    root2: SigningKeyPair,
    signing: SigningKeyPair,
    other: SigningKeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        root1: keys::signing_key_from_pem(&read("vectors/rootkeys/test-private-keys/testroot1.pem")).unwrap(),
        root2: keys::signing_key_from_pem(&read("vectors/rootkeys/test-private-keys/testroot2.pem")).unwrap(),
        signing: keys::generate_rsa(2048).unwrap().pair,
        other: keys::generate_rsa(2048).unwrap().pair,
    })
}

fn root(kid: &str, pair: &SigningKeyPair) -> RootKey {
    RootKey { kid: kid.into(), key: pair.public_key().clone() }
}

fn draft(version: u64, roots: Vec<RootKey>) -> PackageContent {
    PackageContent {
        is_test: false,
        version,
        published: 1_700_000_000 + version as i64,
        disabled_root_keys: vec![],
        disabled_signing_keys: vec![],
        root_keys: roots,
    }
}

const MANIFEST: &str = r#"{"manifestVersion":"5","updateId":{"provider":"Contoso","name":"Toaster","version":"1.0"},"compatibility":[{"manufacturer":"Contoso","model":"Toaster"}],"instructions":{"steps":[{"handler":"microsoft/swupdate:2","files":["f0123456789abcdef"],"handlerProperties":{"installedCriteria":"1.0"}}]},"files":{"f0123456789abcdef":{"fileName":"fw.swu","sizeInBytes":4096,"hashes":{"sha256":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}}},"createdDateTime":"2026-11-23T12:00:00.0000000Z"}"#;

fn signature_via(root_kid: &str, root_key: &SigningKeyPair) -> String {
    let k = keys();
    let sjwk = jws::create_sjwk(k.signing.public_key(), "signing.1", root_kid, root_key);
    jws::sign_update_manifest(MANIFEST, &sjwk, &k.signing)
}

fn verify(store: &TrustStore, signature: &str) -> Result<(), u32> {
    store.verify_update_manifest(Some(MANIFEST), Some(signature)).map(|_| ()).map_err(|e| e.extended_result_code().0)
}

#[test]
fn our_package_verifies_and_survives_pretty_printing() {
    let k = keys();
    let package = draft(1, vec![root("rootkey1", &k.root1)]).sign(&[("rootkey1", &k.root1)]).unwrap();
    let anchors = vec![root("rootkey1", &k.root1)];
    assert_eq!(package.validate(&anchors), Ok(()));
    // Readers that re-serialise `protected` the parson way get the bytes we signed, also from
    // a pretty-printed copy.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&package.to_json()).unwrap()).unwrap();
    let reparsed = RootKeyPackage::parse(&pretty).unwrap();
    assert_eq!(reparsed.signed_bytes(), package.signed_bytes());
    assert_eq!(reparsed.validate(&anchors), Ok(()));
    assert!(package.signed_bytes().starts_with(r#"{"isTest":false,"version":1,"published":1700000001,"#));
    // A package signed by a key that is not the anchor's is refused.
    let forged = draft(1, vec![root("rootkey1", &k.other)]).sign(&[("rootkey1", &k.other)]).unwrap();
    assert_eq!(forged.validate(&anchors).unwrap_err().extended_result_code.0, 0x8060_0004);
    let unrelated = draft(1, vec![root("rootkey2", &k.root2)]).sign(&[("rootkey2", &k.root2)]).unwrap();
    assert_eq!(unrelated.validate(&anchors).unwrap_err().extended_result_code.0, 0x8060_0003);
    assert!(TrustStore::with_package(anchors, forged).is_err());
}

#[test]
fn signing_needs_every_listed_root() {
    let k = keys();
    let d = draft(1, vec![root("rootkey1", &k.root1), root("rootkey2", &k.root2)]);
    assert!(d.sign(&[("rootkey1", &k.root1)]).is_err());
    assert!(d.sign(&[("rootkey1", &k.root1), ("rootkey2", &k.root1)]).is_err(), "a mismatched private key");
    assert!(d.sign(&[("rootkey1", &k.root1), ("rootkey2", &k.root2)]).is_ok());
}

#[test]
fn disabled_signing_key_is_refused_with_0xa0000005() {
    let k = keys();
    let anchors = vec![root("rootkey1", &k.root1)];
    let v1 = draft(1, anchors.clone()).sign(&[("rootkey1", &k.root1)]).unwrap();
    let mut store = TrustStore::with_package(anchors.clone(), v1).unwrap();
    let signature = signature_via("rootkey1", &k.root1);
    assert_eq!(verify(&store, &signature), Ok(()));

    let mut v2 = draft(2, anchors.clone());
    v2.disabled_signing_keys.push(DisabledSigningKey::for_key(k.signing.public_key()));
    store.accept_package(v2.sign(&[("rootkey1", &k.root1)]).unwrap()).unwrap();
    assert_eq!(verify(&store, &signature), Err(0xA000_0005));
    assert_eq!(
        store.verify_update_manifest(Some(MANIFEST), Some(&signature)),
        Err(ManifestSignatureError::Jws(JwsError::DisallowedSigningKey))
    );
}

#[test]
fn disabled_missing_and_package_only_root_keys() {
    let k = keys();
    let anchors = vec![root("rootkey1", &k.root1)];
    let both = vec![root("rootkey1", &k.root1), root("rootkey2", &k.root2)];
    let signers = [("rootkey1", &k.root1), ("rootkey2", &k.root2)];
    let store = TrustStore::with_package(anchors.clone(), draft(1, both.clone()).sign(&signers).unwrap()).unwrap();
    // rootkey2 is trusted through the package although it is not an anchor.
    assert_eq!(verify(&store, &signature_via("rootkey2", &k.root2)), Ok(()));
    // An unknown root.
    assert_eq!(verify(&store, &signature_via("rootkey3", &k.other)), Err(0xA020_0006));
    // A known kid with the wrong key: the SJWK signature fails.
    assert_eq!(verify(&store, &signature_via("rootkey2", &k.other)), Err(0xA020_0004));

    let mut disabling = draft(2, both.clone());
    disabling.disabled_root_keys = vec!["rootkey2".into(), "rootkey1".into()];
    let store = TrustStore::with_package(anchors, disabling.sign(&signers).unwrap()).unwrap();
    assert_eq!(verify(&store, &signature_via("rootkey2", &k.root2)), Err(0xA020_0005));
    assert_eq!(verify(&store, &signature_via("rootkey1", &k.root1)), Err(0xA020_0005), "even an anchor");
}

#[test]
fn accepting_the_same_package_twice_is_unchanged() {
    let k = keys();
    let anchors = vec![root("rootkey1", &k.root1)];
    let package = draft(1, anchors.clone()).sign(&[("rootkey1", &k.root1)]).unwrap();
    let mut store = TrustStore::new(anchors);
    use duhub_proto::trust::PackageChange;
    assert_eq!(store.accept_package(package.clone()), Ok(PackageChange::Changed));
    assert_eq!(store.accept_package(package), Ok(PackageChange::Unchanged));
}

#[test]
fn generated_keys_have_the_requested_size_and_pem_round_trips() {
    let generated = keys::generate_rsa(2048).unwrap();
    assert_eq!(generated.pair.public_key().bits(), 2048);
    assert!(generated.pkcs8_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let reloaded = keys::signing_key_from_pem(&generated.pkcs8_pem).unwrap();
    assert_eq!(reloaded.public_key(), generated.pair.public_key());
    assert!(keys::signing_key_from_pem("not a key").is_err());
}
