//! `duhub update import|list|show|delete`: updates on a server. Import uploads the manifest and
//! its files (`POST /duhub/uploads`), starts the import (`POST /updates:import`) and follows the
//! operation; delete follows its operation the same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::client::{DuClient, Reply, describe_error, error_details, succeeded};
use super::{Table, block_on, fields, segment, show_progress, spinner, string_list, text, update_id_text, upload_bar};
use crate::cli::{UpdateDeleteArgs, UpdateIdArgs, UpdateImportArgs, UpdateListArgs, UpdateShowArgs};
use crate::output::{Outcome, print_json};

/// A file to upload for an import, under the name the manifest knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImportFile {
    name: String,
    path: PathBuf,
}

pub(in crate::commands) fn import(args: &UpdateImportArgs) -> Result<Outcome> {
    let manifest_bytes =
        std::fs::read(&args.manifest).with_context(|| format!("reading {}", args.manifest.display()))?;
    let manifest: Value = serde_json::from_slice(&manifest_bytes)
        .with_context(|| format!("{} is not a JSON import manifest", args.manifest.display()))?;
    let listed = manifest_file_names(&manifest).with_context(|| format!("in {}", args.manifest.display()))?;
    let (files, warnings) = import_files(&args.manifest, &listed, &args.files)?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    for file in &files {
        let is_file = std::fs::metadata(&file.path).map(|m| m.is_file()).unwrap_or(false);
        if !is_file {
            bail!("cannot upload {}: {} is not a readable file", file.name, file.path.display());
        }
    }
    let client = DuClient::connect(&args.du)?;
    block_on(import_files_and_manifest(&client, args, &files))
}

async fn import_files_and_manifest(
    client: &DuClient,
    args: &UpdateImportArgs,
    files: &[ImportFile],
) -> Result<Outcome> {
    let visible = show_progress(args.du.json);
    let manifest_name = file_name(&args.manifest)?;
    let manifest = upload(client, &manifest_name, &args.manifest, args.du.json, visible).await?;
    let mut uploaded = Vec::with_capacity(files.len());
    for file in files {
        let stored = upload(client, &file.name, &file.path, args.du.json, visible).await?;
        uploaded.push(json!({"filename": file.name, "url": stored.url}));
    }
    let mut item = json!({
        "importManifest": {"url": manifest.url, "sizeInBytes": manifest.size_in_bytes, "hashes": manifest.hashes},
    });
    if let Some(friendly_name) = &args.friendly_name {
        item["friendlyName"] = friendly_name.clone().into();
    }
    if !uploaded.is_empty() {
        item["files"] = uploaded.into();
    }
    let reply = client.post("/updates:import", Some(&json!([item]))).await?;
    follow(client, reply, "import", args.no_wait, args.du.json, |operation| {
        match operation.pointer("/update/updateId") {
            Some(update_id) => format!("imported {}", update_id_text(Some(update_id))),
            None => format!("import {} succeeded", text(operation, "/operationId")),
        }
    })
    .await
}

async fn upload(
    client: &DuClient,
    name: &str,
    path: &Path,
    json: bool,
    visible: bool,
) -> Result<super::client::Uploaded> {
    let bar = upload_bar(name, visible);
    let uploaded = client.upload(path, &bar).await.with_context(|| format!("uploading {}", path.display()));
    bar.finish();
    let uploaded = uploaded?;
    if !json && !visible {
        eprintln!("uploaded {name} ({} bytes)", uploaded.size_in_bytes);
    }
    Ok(uploaded)
}

/// Follows the long-running operation a 202 answer points at, unless `no_wait`, and prints it:
/// `success` says what succeeded; a failure prints the server's error and yields exit code 1.
async fn follow(
    client: &DuClient,
    reply: Reply,
    what: &str,
    no_wait: bool,
    json: bool,
    success: impl FnOnce(&Value) -> String,
) -> Result<Outcome> {
    let Some(location) = reply.operation_location else {
        bail!("the server accepted the {what} but sent no Operation-Location to follow it at");
    };
    if no_wait {
        if json {
            print_json(&json!({"operationLocation": location.as_str()}))?;
        } else {
            println!("{what} started; its operation is at {location}");
        }
        return Ok(Outcome::Success);
    }
    let waiting = spinner(format!("{what}: waiting"), show_progress(json));
    let operation = client.poll(&location, |status| waiting.set_message(format!("{what}: {status}"))).await;
    waiting.finish_and_clear();
    let operation = operation?;
    if json {
        print_json(&operation)?;
    }
    if succeeded(&operation) {
        if !json {
            println!("{}", success(&operation));
        }
        return Ok(Outcome::Success);
    }
    let status = text(&operation, "/status");
    match operation.get("error") {
        Some(error) => {
            eprintln!("error: {what} {}: {}", status.to_lowercase(), describe_error(error));
            for line in error_details(error) {
                eprintln!("  {line}");
            }
        }
        None => eprintln!("error: {what} {} (operation {})", status.to_lowercase(), text(&operation, "/operationId")),
    }
    Ok(Outcome::Failed)
}

pub(in crate::commands) fn list(args: &UpdateListArgs) -> Result<Outcome> {
    if args.provider.is_some() && args.name.is_none() && args.filter.is_some() {
        bail!("--filter applies to all updates (without --provider) or to versions (with --provider and --name)");
    }
    let client = DuClient::connect(&args.du)?;
    let filter: Vec<(&str, &str)> = args.filter.as_deref().map(|f| ("filter", f)).into_iter().collect();
    block_on(async {
        match (&args.provider, &args.name) {
            (None, _) => {
                let updates = client.pages("/updates", &filter).await?;
                if args.du.json {
                    print_json(&updates)?;
                    return Ok(Outcome::Success);
                }
                let mut table = Table::new(&["PROVIDER", "NAME", "VERSION", "FRIENDLY NAME", "IMPORTED"]);
                for update in &updates {
                    table.row(vec![
                        text(update, "/updateId/provider"),
                        text(update, "/updateId/name"),
                        text(update, "/updateId/version"),
                        text(update, "/friendlyName"),
                        text(update, "/importedDateTime"),
                    ]);
                }
                table.print("no updates");
            }
            (Some(provider), None) => {
                let names = client.pages(&format!("/updates/providers/{}/names", segment(provider)), &[]).await?;
                print_strings(&names, args.du.json, &format!("no updates from provider {provider}"))?;
            }
            (Some(provider), Some(name)) => {
                let path = format!("/updates/providers/{}/names/{}/versions", segment(provider), segment(name));
                let versions = client.pages(&path, &filter).await?;
                print_strings(&versions, args.du.json, &format!("no versions of {provider}/{name}"))?;
            }
        }
        Ok(Outcome::Success)
    })
}

/// Prints a list of strings, one a line.
fn print_strings(items: &[Value], json: bool, empty: &str) -> Result<()> {
    if json {
        return print_json(&items);
    }
    if items.is_empty() {
        println!("{empty}");
    }
    for item in items {
        println!("{}", item.as_str().map_or_else(|| item.to_string(), str::to_owned));
    }
    Ok(())
}

/// `/updates/providers/{p}/names/{n}/versions/{v}`.
fn version_path(update: &UpdateIdArgs) -> String {
    format!(
        "/updates/providers/{}/names/{}/versions/{}",
        segment(&update.provider),
        segment(&update.name),
        segment(&update.version)
    )
}

pub(in crate::commands) fn show(args: &UpdateShowArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    block_on(async {
        let path = version_path(&args.update);
        let update = client.get(&path).await?;
        if !args.files {
            if args.du.json {
                print_json(&update)?;
            } else {
                print!("{}", describe_update(&update));
            }
            return Ok(Outcome::Success);
        }
        let file_ids = client.pages(&format!("{path}/files"), &[]).await?;
        let mut files = Vec::with_capacity(file_ids.len());
        for file_id in &file_ids {
            let file_id = file_id.as_str().context("the server listed a file id that is not a string")?;
            files.push(client.get(&format!("{path}/files/{}", segment(file_id))).await?);
        }
        if args.du.json {
            print_json(&json!({"update": update, "files": files}))?;
            return Ok(Outcome::Success);
        }
        print!("{}", describe_update(&update));
        println!();
        let mut table = Table::new(&["FILE", "SIZE", "SHA256", "FILE ID", "DOWNLOAD HANDLER"]);
        for file in &files {
            table.row(vec![
                text(file, "/fileName"),
                text(file, "/sizeInBytes"),
                text(file, "/hashes/sha256"),
                text(file, "/fileId"),
                text(file, "/downloadHandler/id"),
            ]);
            for related in file.get("relatedFiles").and_then(Value::as_array).into_iter().flatten() {
                table.row(vec![
                    format!("  + {}", text(related, "/fileName")),
                    text(related, "/sizeInBytes"),
                    text(related, "/hashes/sha256"),
                ]);
            }
        }
        table.print("no files");
        Ok(Outcome::Success)
    })
}

/// An update object as `key: value` lines.
fn describe_update(update: &Value) -> String {
    let compatibility = update
        .get("compatibility")
        .and_then(Value::as_array)
        .map(|sets| sets.iter().map(|set| super::key_values(Some(set))).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    let steps = update
        .pointer("/instructions/steps")
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let what = match step.get("updateId") {
                        Some(id) if text(step, "/type") == "reference" || step.get("handler").is_none() => {
                            format!("reference {}", update_id_text(Some(id)))
                        }
                        _ => {
                            let files = string_list(step.get("files"));
                            let files = if files.is_empty() { String::new() } else { format!(" [{files}]") };
                            format!("{}{files}", text(step, "/handler"))
                        }
                    };
                    format!("{}. {what}", i + 1)
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let referenced_by = update
        .get("referencedBy")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().map(|id| update_id_text(Some(id))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    fields(
        &format!("update {}", update_id_text(update.get("updateId"))),
        &[
            ("friendly name", text(update, "/friendlyName")),
            ("description", text(update, "/description")),
            ("type", text(update, "/updateType")),
            ("installed criteria", text(update, "/installedCriteria")),
            ("deployable", text(update, "/isDeployable")),
            ("compatibility", compatibility),
            ("steps", steps),
            ("referenced by", referenced_by),
            ("manifest version", text(update, "/manifestVersion")),
            ("created", text(update, "/createdDateTime")),
            ("imported", text(update, "/importedDateTime")),
            ("scan result", text(update, "/scanResult")),
        ],
    )
}

pub(in crate::commands) fn delete(args: &UpdateDeleteArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let update = &args.update;
    let id = format!("{}/{}/{}", update.provider, update.name, update.version);
    block_on(async {
        let reply = client.delete(&version_path(update)).await?;
        follow(&client, reply, "deletion", args.no_wait, args.du.json, |_| format!("deleted update {id}")).await
    })
}

/// The names of the files an import manifest lists: `files[].filename` and each file's
/// `relatedFiles[].filename`, in order, each once. Names must be plain file names.
fn manifest_file_names(manifest: &Value) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    let files = match manifest.get("files") {
        None | Some(Value::Null) => return Ok(names),
        Some(Value::Array(files)) => files,
        Some(_) => bail!("\"files\" is not an array"),
    };
    for (index, file) in files.iter().enumerate() {
        let mut add = |entry: &Value, at: String| -> Result<()> {
            let name =
                entry.get("filename").and_then(Value::as_str).with_context(|| format!("{at} has no filename"))?;
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
                bail!("{at}.filename {name:?} is not a plain file name");
            }
            if seen.insert(name.to_owned()) {
                names.push(name.to_owned());
            }
            Ok(())
        };
        add(file, format!("files[{index}]"))?;
        for (related_index, related) in
            file.get("relatedFiles").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            add(related, format!("files[{index}].relatedFiles[{related_index}]"))?;
        }
    }
    Ok(names)
}

/// The files to upload with their names, and warnings. Without `given` files, the `listed`
/// ones from the manifest's directory; otherwise the given ones, which must include every
/// listed name (given files the manifest does not list are warned about).
fn import_files(manifest: &Path, listed: &[String], given: &[PathBuf]) -> Result<(Vec<ImportFile>, Vec<String>)> {
    if given.is_empty() {
        let directory = manifest.parent().unwrap_or_else(|| Path::new(""));
        let files = listed.iter().map(|name| ImportFile { name: name.clone(), path: directory.join(name) }).collect();
        return Ok((files, Vec::new()));
    }
    let mut files: Vec<ImportFile> = Vec::with_capacity(given.len());
    let mut warnings = Vec::new();
    for path in given {
        let name = file_name(path)?;
        if let Some(other) = files.iter().find(|f| f.name == name) {
            bail!("{} and {} have the same file name {name}", other.path.display(), path.display());
        }
        if !listed.contains(&name) {
            warnings.push(format!("{} is not listed in the manifest", path.display()));
        }
        files.push(ImportFile { name, path: path.clone() });
    }
    if let Some(missing) = listed.iter().find(|name| !files.iter().any(|f| &f.name == *name)) {
        bail!("the manifest lists {missing}, but no FILE is named so (give all of its files, or none)");
    }
    Ok((files, warnings))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} names no file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_list_their_files_and_related_files_once() {
        let manifest = json!({
            "files": [
                {"filename": "fw.swu", "relatedFiles": [{"filename": "delta.json"}, {"filename": "fw.swu"}]},
                {"filename": "install.sh"},
            ],
        });
        assert_eq!(manifest_file_names(&manifest).unwrap(), ["fw.swu", "delta.json", "install.sh"]);
        assert!(manifest_file_names(&json!({"updateId": {}})).unwrap().is_empty());
    }

    #[test]
    fn manifest_file_names_must_be_plain() {
        for bad in ["../x", "a/b", "a\\b", "..", ""] {
            let error = manifest_file_names(&json!({"files": [{"filename": bad}]})).unwrap_err();
            assert!(error.to_string().contains("files[0].filename"), "{error}");
        }
        let error = manifest_file_names(&json!({"files": [{"filename": "a", "relatedFiles": [{}]}]})).unwrap_err();
        assert_eq!(error.to_string(), "files[0].relatedFiles[0] has no filename");
        assert!(manifest_file_names(&json!({"files": {}})).is_err());
    }

    #[test]
    fn listed_files_come_from_the_manifest_directory() {
        let listed = vec!["fw.swu".to_owned(), "delta.json".to_owned()];
        let (files, warnings) = import_files(Path::new("/build/m.importmanifest.json"), &listed, &[]).unwrap();
        assert_eq!(
            files,
            [
                ImportFile { name: "fw.swu".into(), path: "/build/fw.swu".into() },
                ImportFile { name: "delta.json".into(), path: "/build/delta.json".into() },
            ]
        );
        assert!(warnings.is_empty());
        let (files, _) = import_files(Path::new("m.json"), &listed, &[]).unwrap();
        assert_eq!(files[0].path, PathBuf::from("fw.swu"));
    }

    #[test]
    fn given_files_must_cover_the_listed_ones() {
        let listed = vec!["fw.swu".to_owned(), "delta.json".to_owned()];
        let given = [PathBuf::from("/out/fw.swu"), PathBuf::from("/tmp/delta.json"), PathBuf::from("/x/extra")];
        let (files, warnings) = import_files(Path::new("m.json"), &listed, &given).unwrap();
        assert_eq!(files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["fw.swu", "delta.json", "extra"]);
        assert_eq!(warnings, ["/x/extra is not listed in the manifest"]);

        let error = import_files(Path::new("m.json"), &listed, &given[..1]).unwrap_err();
        assert!(error.to_string().contains("lists delta.json"), "{error}");
        let error = import_files(Path::new("m.json"), &listed, &[given[0].clone(), "/y/fw.swu".into()]).unwrap_err();
        assert!(error.to_string().contains("same file name fw.swu"), "{error}");
    }

    #[test]
    fn updates_are_described_in_lines() {
        let update = json!({
            "updateId": {"provider": "Contoso", "name": "Toaster", "version": "1.0"},
            "friendlyName": "Toaster 1.0",
            "isDeployable": true,
            "compatibility": [{"manufacturer": "Contoso", "model": "Toaster"}],
            "instructions": {"steps": [
                {"handler": "microsoft/swupdate:1", "files": ["f1", "f2"]},
                {"type": "reference", "updateId": {"provider": "Contoso", "name": "Leaf", "version": "2.0"}},
            ]},
            "manifestVersion": "5.0",
        });
        assert_eq!(
            describe_update(&update),
            "update Contoso/Toaster/1.0\n  \
             friendly name:    Toaster 1.0\n  \
             deployable:       true\n  \
             compatibility:    manufacturer=Contoso model=Toaster\n  \
             steps:            1. microsoft/swupdate:1 [f1, f2]; 2. reference Contoso/Leaf/2.0\n  \
             manifest version: 5.0\n"
        );
    }
}
