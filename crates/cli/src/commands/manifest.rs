//! `duhub manifest sign|verify`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use duhub_proto::import_manifest;
use duhub_proto::jws;
use duhub_proto::root_key::{self, RootKey, RootKeyPackage};
use duhub_proto::trust::TrustStore;
use duhub_proto::twin::DesiredService;
use duhub_proto::update_manifest::{self, UpdateManifest};
use serde_json::{Value, json};

use crate::cli::{SignArgs, VerifyArgs};
use crate::output::{Outcome, print_json};
use duhub_server::keystore::KeyStore;

pub(super) fn sign(args: &SignArgs) -> Result<Outcome> {
    let text = read(&args.manifest)?;
    let manifest = update_manifest_text(&text).with_context(|| format!("in {}", args.manifest.display()))?;
    let signer = KeyStore::at(&args.keys).signer()?;
    let signature = jws::sign_update_manifest(&manifest, &signer.sjwk, &signer.key);
    tracing::info!(signing_key = %signer.kid, "signed update manifest");
    print_json(&json!({ "updateManifest": manifest, "updateManifestSignature": signature }))?;
    Ok(Outcome::Success)
}

/// The exact string to sign: an update manifest normalised to the service's serialisation, or
/// the update manifest generated from an import manifest without reference steps.
fn update_manifest_text(text: &str) -> Result<String> {
    let value: Value = serde_json::from_str(text).context("the manifest is not JSON")?;
    let version = value.get("manifestVersion").and_then(Value::as_str).unwrap_or_default();
    if import_manifest::ManifestVersion::parse(version).is_some() {
        let import = import_manifest::parse(text)?;
        let now = time::OffsetDateTime::now_utc();
        let created = update_manifest::format_created_date_time(now.unix_timestamp(), now.nanosecond());
        let generated = update_manifest::generate(&import, &[], &created)
            .context("an import manifest with reference steps must be imported into a server to be signed")?;
        return Ok(generated.json);
    }
    match UpdateManifest::parse(text)? {
        UpdateManifest::Full(full) => {
            let problems = full.check();
            if let Some(first) = problems.first() {
                bail!("the update manifest is inconsistent: {first}");
            }
            Ok(full.to_service_json())
        }
        UpdateManifest::Detached(detached) => Ok(detached.to_service_json()),
        UpdateManifest::Legacy(legacy) => {
            bail!("manifest version {} is a legacy format that current agents refuse", legacy.manifest_version)
        }
    }
}

pub(super) fn verify(args: &VerifyArgs) -> Result<Outcome> {
    let store = trust_store(args)?;
    let text = read(&args.file)?;
    let document: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", args.file.display()))?;
    let located = DesiredService::locate(&document)
        .with_context(|| format!("reading {}", args.file.display()))?
        .with_context(|| format!("{} holds no update manifest or signature", args.file.display()))?;
    let service = &located.service;
    if service.update_manifest.is_none() && service.update_manifest_signature.is_none() {
        bail!("{} holds no update manifest to verify (a cancel or an empty deployment)", args.file.display());
    }
    let verdict =
        store.verify_update_manifest(service.update_manifest_text(), service.update_manifest_signature.as_deref());
    let (valid, code, detail) = match &verdict {
        Ok(signer) => (true, None, describe_valid(signer, service.update_manifest_text())),
        Err(error) => (false, Some(error.extended_result_code()), error.to_string()),
    };
    let code_text = code.map(|c| format!("0x{c:08X}"));
    if args.json {
        print_json(&json!({ "valid": valid, "extendedResultCode": code_text, "detail": detail }))?;
    } else if valid {
        println!("valid: {detail}");
    } else {
        println!("invalid ({}): {detail}", code_text.unwrap_or_default());
    }
    Ok(if valid { Outcome::Success } else { Outcome::Invalid })
}

fn describe_valid(signer: &duhub_proto::trust::VerifiedSigningKey, manifest: Option<&str>) -> String {
    let update = match manifest.map(UpdateManifest::parse) {
        Some(Ok(UpdateManifest::Full(m))) => {
            format!("update {} (manifest version {})", m.update_id, m.manifest_version)
        }
        Some(Ok(UpdateManifest::Detached(m))) => format!("detached manifest of update {}", m.update_id),
        Some(Ok(UpdateManifest::Legacy(m))) => format!("legacy manifest version {}", m.manifest_version),
        Some(Err(e)) => format!("manifest unreadable: {e}"),
        None => "no manifest".to_owned(),
    };
    format!(
        "{update} signed by signing key {} certified by root key {}",
        signer.signing_kid.as_deref().unwrap_or("(no kid)"),
        signer.root_kid
    )
}

fn trust_store(args: &VerifyArgs) -> Result<TrustStore> {
    if args.test_roots {
        return Ok(TrustStore::new(root_key::test_root_keys()));
    }
    let mut anchors: Vec<RootKey> = Vec::new();
    for path in &args.root_key {
        anchors.extend(
            root_key::parse_root_key_list(&read(path)?).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    if let Some(dir) = &args.keys {
        let store = KeyStore::at(dir);
        anchors.extend(store.root_keys()?);
        if args.root_keys.is_none() {
            return Ok(TrustStore::with_package(anchors, store.package()?)?);
        }
    }
    match &args.root_keys {
        Some(path) => {
            if anchors.is_empty() {
                bail!("--root-keys needs the trusted root public keys: give --root-key FILE or --keys DIR");
            }
            let package = RootKeyPackage::parse(&read(path)?).with_context(|| format!("reading {}", path.display()))?;
            TrustStore::with_package(anchors, package).with_context(|| {
                format!("the root key package {} is not signed by the given root keys", path.display())
            })
        }
        None if anchors.is_empty() => Ok(TrustStore::production()),
        None => {
            eprintln!(
                "warning: no root key package given (--root-keys): disabled root and signing keys are not checked"
            );
            Ok(TrustStore::new(anchors))
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
