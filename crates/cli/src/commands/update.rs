//! `duhub update init|hash|validate`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::ArgMatches;
use duhub_proto::UpdateId;
use duhub_proto::import_manifest::{
    self, InitFile, InitInlineStep, InitReferenceStep, InitRelatedFile, InitRequest, InitStep,
};
use serde_json::{Value, json};

use crate::cli::{HashArgs, InitV5Args, ValidateArgs};
use crate::output::{Outcome, print_json};

/// Each occurrence of `--compat`, `--step`, `--file` and `--related-file` with its values and
/// where it stood on the command line, which decides which step a file belongs to and which
/// file a related file belongs to.
#[derive(Debug, Default)]
pub(super) struct InitOccurrences {
    compat: Vec<Occurrence>,
    step: Vec<Occurrence>,
    file: Vec<Occurrence>,
    related_file: Vec<Occurrence>,
}

/// One occurrence of a multi-value option.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Occurrence {
    /// Command-line index of its first value.
    start: usize,
    /// Its `key=value` items.
    values: Vec<String>,
}

pub(super) fn init_occurrences(matches: &ArgMatches) -> InitOccurrences {
    let Some(v5) = matches
        .subcommand_matches("update")
        .and_then(|m| m.subcommand_matches("init"))
        .and_then(|m| m.subcommand_matches("v5"))
    else {
        return InitOccurrences::default();
    };
    InitOccurrences {
        compat: occurrences(v5, "compat"),
        step: occurrences(v5, "step"),
        file: occurrences(v5, "file"),
        related_file: occurrences(v5, "related_file"),
    }
}

/// The occurrences of `id`, in command-line order.
fn occurrences(matches: &ArgMatches, id: &str) -> Vec<Occurrence> {
    let indices: Vec<usize> = matches.indices_of(id).map(Iterator::collect).unwrap_or_default();
    let Some(groups) = matches.get_occurrences::<String>(id) else { return Vec::new() };
    let mut result = Vec::new();
    let mut next = 0;
    for group in groups {
        let values: Vec<String> = group.cloned().collect();
        let start = indices.get(next).copied().unwrap_or(usize::MAX);
        next += values.len();
        result.push(Occurrence { start, values });
    }
    result
}

fn starts(occurrences: &[Occurrence]) -> Vec<usize> {
    occurrences.iter().map(|o| o.start).collect()
}

/// Index of the last item of `owners` placed before `position`.
fn owner_of(owners: &[usize], position: usize) -> Option<usize> {
    owners.iter().rposition(|start| *start < position)
}

pub(super) fn init_v5(args: &InitV5Args, given: &InitOccurrences) -> Result<Outcome> {
    let now = time::OffsetDateTime::now_utc();
    let created = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let mut request =
        InitRequest::new(UpdateId::new(&args.update_provider, &args.update_name, &args.update_version), created);
    request.description = args.description.clone().filter(|d| !d.is_empty());
    request.is_deployable = args.is_deployable;
    request.no_validation = args.no_validation;
    request.compatibility = given
        .compat
        .iter()
        .map(|occurrence| key_values(&occurrence.values, "--compat"))
        .filter(|pairs| !pairs.is_empty())
        .collect();

    let mut files = Vec::with_capacity(given.file.len());
    for occurrence in &given.file {
        files.push(init_file(&key_value_map(&occurrence.values, "--file"))?);
    }
    let file_starts = starts(&given.file);
    for occurrence in &given.related_file {
        let owner =
            owner_of(&file_starts, occurrence.start).context("--related-file must follow the --file it belongs to")?;
        let related = init_related_file(&key_value_map(&occurrence.values, "--related-file"))?;
        if let Some(file) = files.get_mut(owner) {
            file.related_files.push(related);
        }
    }

    let step_starts = starts(&given.step);
    let mut file_owners: HashMap<usize, Vec<usize>> = HashMap::new();
    for (f, start) in file_starts.iter().enumerate() {
        if let Some(step) = owner_of(&step_starts, *start) {
            file_owners.entry(step).or_default().push(f);
        }
    }
    for (s, occurrence) in given.step.iter().enumerate() {
        let map = key_value_map(&occurrence.values, "--step");
        let step =
            init_step(&map, file_owners.remove(&s).unwrap_or_default()).with_context(|| format!("--step {}", s + 1))?;
        request.steps.push(step);
    }
    request.files = files;

    let output = import_manifest::init_v5(&request)?;
    for warning in &output.warnings {
        eprintln!("warning: {warning}");
    }
    print_json(&output.manifest)?;
    Ok(Outcome::Success)
}

/// `key=value` items, split at the first `=`; items without `=` are skipped with a warning.
fn key_values(values: &[String], option: &str) -> Vec<(String, String)> {
    values
        .iter()
        .filter_map(|item| match item.split_once('=') {
            Some((key, value)) => Some((key.to_owned(), value.to_owned())),
            None => {
                eprintln!("warning: skipping {option} item '{item}': the format is key=value");
                None
            }
        })
        .collect()
}

fn key_value_map(values: &[String], option: &str) -> HashMap<String, String> {
    key_values(values, option).into_iter().collect()
}

fn non_empty(map: &HashMap<String, String>, key: &str) -> Option<String> {
    map.get(key).filter(|v| !v.is_empty()).cloned()
}

fn init_step(map: &HashMap<String, String>, file_indices: Vec<usize>) -> Result<InitStep> {
    let description = non_empty(map, "description").or_else(|| non_empty(map, "desc"));
    if let (Some(provider), Some(name), Some(version)) =
        (map.get("updateId.provider"), map.get("updateId.name"), map.get("updateId.version"))
    {
        return Ok(InitStep::Reference(InitReferenceStep {
            update_id: UpdateId::new(provider, name, version),
            description,
        }));
    }
    let Some(handler) = map.get("handler") else {
        bail!(
            "a step needs handler=<id> (inline step) or all of updateId.provider=, updateId.name=, \
             updateId.version= (reference step)"
        );
    };
    let files = map
        .get("files")
        .map(|list| list.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect::<Vec<_>>());
    Ok(InitStep::Inline(InitInlineStep {
        handler: handler.clone(),
        properties: non_empty(map, "properties"),
        description,
        files,
        file_indices,
    }))
}

struct Measured {
    name: String,
    bytes: u64,
    sha256: String,
}

fn measure(map: &HashMap<String, String>, option: &str) -> Result<Measured> {
    let path = map.get("path").with_context(|| format!("{option} needs path=<file>"))?;
    let path = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{option} path={} names no file", path.display()))?;
    let (bytes, digest) = hash_file(&path)?;
    Ok(Measured { name, bytes, sha256: duhub_proto::b64::encode_std(&digest) })
}

fn init_file(map: &HashMap<String, String>) -> Result<InitFile> {
    let measured = measure(map, "--file")?;
    Ok(InitFile {
        name: measured.name,
        size_in_bytes: measured.bytes,
        sha256: measured.sha256,
        properties: non_empty(map, "properties"),
        download_handler: non_empty(map, "downloadHandler"),
        related_files: Vec::new(),
    })
}

fn init_related_file(map: &HashMap<String, String>) -> Result<InitRelatedFile> {
    let measured = measure(map, "--related-file")?;
    Ok(InitRelatedFile {
        name: measured.name,
        size_in_bytes: measured.bytes,
        sha256: measured.sha256,
        properties: non_empty(map, "properties"),
    })
}

/// Size and SHA-256 of a file, read in one streaming pass.
pub(super) fn hash_file(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer).with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
        total += read as u64;
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    Ok((total, digest))
}

pub(super) fn hash(args: &HashArgs) -> Result<Outcome> {
    let mut results = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let (bytes, digest) = hash_file(path)?;
        let absolute = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
        results.push(json!({
            "bytes": bytes,
            "hash": duhub_proto::b64::encode_std(&digest),
            "hashAlgorithm": args.hash_algo,
            "uri": file_uri(&absolute),
        }));
    }
    print_json(&results)?;
    Ok(Outcome::Success)
}

/// `file://` URI of an absolute path, percent-encoded as Python's `Path.as_uri()` does.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for byte in path.to_string_lossy().as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' | b'/' => uri.push(*byte as char),
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri
}

pub(super) fn validate(args: &ValidateArgs) -> Result<Outcome> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let violations = match serde_json::from_str::<Value>(&text) {
        Ok(value) => import_manifest::validate(&value),
        Err(e) => vec![duhub_proto::Violation {
            pointer: String::new(),
            rule: "json",
            message: format!("not valid JSON: {e}"),
            value: None,
        }],
    };
    let valid = violations.is_empty();
    if args.json {
        let errors: Vec<Value> =
            violations.iter().map(|v| json!({ "pointer": v.pointer, "rule": v.rule, "message": v.message })).collect();
        print_json(&json!({ "valid": valid, "errors": errors }))?;
    } else if valid {
        println!("{}: valid", args.file.display());
    } else {
        println!(
            "{}: {} problem{}",
            args.file.display(),
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        );
        for violation in &violations {
            println!("  {violation}");
        }
    }
    Ok(if valid { Outcome::Success } else { Outcome::Invalid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uri_percent_encodes_like_python() {
        assert_eq!(file_uri(Path::new("/tmp/a b/fw#1.swu")), "file:///tmp/a%20b/fw%231.swu");
        assert_eq!(file_uri(Path::new("/x/ü")), "file:///x/%C3%BC");
    }

    #[test]
    fn owners_are_the_nearest_preceding_option() {
        assert_eq!(owner_of(&[3, 10], 5), Some(0));
        assert_eq!(owner_of(&[3, 10], 12), Some(1));
        assert_eq!(owner_of(&[3, 10], 2), None);
    }
}
