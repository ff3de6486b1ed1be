//! `duhub keys ...`: create a key store, rotate and disable signing keys, show it.

use anyhow::Result;
use serde_json::json;

use crate::cli::{DisableSigningArgs, KeysDirArgs};
use crate::output::{Outcome, print_json};
use duhub_server::keystore::{Clock, Index, KeyStore};

pub(super) fn init(args: &KeysDirArgs) -> Result<Outcome> {
    let store = KeyStore::at(&args.dir);
    let index = store.init(&Clock::now())?;
    report(&store, &index, args.json, "created key store")
}

pub(super) fn rotate_signing(args: &KeysDirArgs) -> Result<Outcome> {
    let store = KeyStore::at(&args.dir);
    let (index, kid) = store.rotate_signing(&Clock::now())?;
    report(&store, &index, args.json, &format!("new current signing key {kid}"))
}

pub(super) fn disable_signing(args: &DisableSigningArgs) -> Result<Outcome> {
    let store = KeyStore::at(&args.dir);
    let index = store.disable_signing(&args.kid, &Clock::now())?;
    report(&store, &index, args.json, &format!("disabled signing key {}", args.kid))
}

pub(super) fn show(args: &KeysDirArgs) -> Result<Outcome> {
    let store = KeyStore::at(&args.dir);
    let index = store.index()?;
    report(&store, &index, args.json, "key store")
}

fn report(store: &KeyStore, index: &Index, as_json: bool, headline: &str) -> Result<Outcome> {
    if as_json {
        print_json(&json!({
            "dir": store.dir(),
            "rootKeys": index.roots,
            "signingKeys": index.signing_keys,
            "currentSigningKey": index.current_signing_key,
            "rootKeyPackage": { "version": index.package_version, "path": store.package_path() },
            "trustedRootKeys": store.root_keys_path(),
        }))?;
        return Ok(Outcome::Success);
    }
    println!("{headline}: {}", store.dir().display());
    for root in &index.roots {
        println!("  root key     {}  (created {})", root.kid, root.created);
    }
    for key in &index.signing_keys {
        let state = if key.disabled {
            "disabled"
        } else if key.kid == index.current_signing_key {
            "current"
        } else {
            "valid"
        };
        println!("  signing key  {}  {state}  (created {})", key.kid, key.created);
    }
    println!("  root key package v{}: {}", index.package_version, store.package_path().display());
    println!("  trust anchors for agents: {}", store.root_keys_path().display());
    Ok(Outcome::Success)
}
