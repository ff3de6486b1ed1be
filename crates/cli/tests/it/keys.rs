//! `duhub keys init|rotate-signing|disable-signing|show`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::{assert_help, duhub, init_key_store, json_error, run_json, shared_keys, temp_dir};

/// Permission bits of a file or directory.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Every file under `dir` (relative path → content), recursively.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, files);
            } else {
                files.insert(path.strip_prefix(base).unwrap().to_owned(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// A kid as the key store makes them: `duhub.<kind>.<YYYYMMDD>.<6 hex digits>`.
fn assert_kid(kid: &str, kind: &str) {
    let parts: Vec<&str> = kid.split('.').collect();
    assert_eq!(parts.len(), 4, "{kid}");
    assert_eq!((parts[0], parts[1]), ("duhub", kind), "{kid}");
    assert!(parts[2].len() == 8 && parts[2].bytes().all(|b| b.is_ascii_digit()), "{kid}");
    assert!(parts[3].len() == 6 && parts[3].bytes().all(|b| b.is_ascii_hexdigit()), "{kid}");
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The `protected` part of a key store's root key package.
fn package_protected(dir: &Path) -> Value {
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rootkeypackage.json")).unwrap()).unwrap();
    package["protected"].clone()
}

#[test]
fn help_of_every_keys_command_lists_its_options() {
    assert_help(&["keys"], &["init", "rotate-signing", "disable-signing", "show"]);
    for command in ["init", "rotate-signing", "show"] {
        assert_help(&["keys", command], &["--dir <DIR>", "--json"]);
    }
    assert_help(&["keys", "disable-signing"], &["--dir <DIR>", "<KID>", "--json"]);
}

#[test]
fn init_creates_the_key_store_files_with_private_modes() {
    let shared = shared_keys();
    let dir = shared.dir();
    let root_kid = str_of(&shared.init, "/rootKeys/0/kid");
    let signing_kid = str_of(&shared.init, "/currentSigningKey");

    let files: Vec<PathBuf> = snapshot(&dir).into_keys().collect();
    let mut expected: Vec<PathBuf> = [
        "keystore.json".to_owned(),
        format!("roots/{root_kid}.pem"),
        "rootkeypackage.json".to_owned(),
        "rootkeys.json".to_owned(),
        format!("signing/{signing_kid}.pem"),
        format!("signing/{signing_kid}.sjwk"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    expected.sort();
    assert_eq!(files, expected, "no other (e.g. temporary) files");

    for private in ["keystore.json".to_owned(), format!("roots/{root_kid}.pem"), format!("signing/{signing_kid}.pem")] {
        assert_eq!(mode(&dir.join(&private)), 0o600, "{private}");
    }
    for private_dir in [&dir, &dir.join("roots"), &dir.join("signing")] {
        assert_eq!(mode(private_dir), 0o700, "{}", private_dir.display());
    }
    for public in ["rootkeypackage.json".to_owned(), "rootkeys.json".to_owned(), format!("signing/{signing_kid}.sjwk")]
    {
        assert_eq!(mode(&dir.join(&public)) & 0o600, 0o600, "{public} is readable and writable by its owner");
    }

    let root_pem = std::fs::read_to_string(dir.join(format!("roots/{root_kid}.pem"))).unwrap();
    assert!(root_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8");
    let sjwk = std::fs::read_to_string(dir.join(format!("signing/{signing_kid}.sjwk"))).unwrap();
    assert_eq!(sjwk.trim().split('.').count(), 3, "a compact JWS");

    let root_keys: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("rootkeys.json")).unwrap()).unwrap();
    assert_eq!(root_keys.as_object().unwrap().keys().collect::<Vec<_>>(), [root_kid]);
    assert_eq!(root_keys[root_kid]["keyType"], json!("RSA"));
    assert_eq!(root_keys[root_kid]["e"], json!(65537));
    // RSA 3072: a 384-byte modulus, 512 base64url characters.
    assert_eq!(str_of(&root_keys, &format!("/{root_kid}/n")).len(), 512);

    let protected = package_protected(&dir);
    assert_eq!(protected["version"], json!(1));
    assert_eq!(protected["isTest"], json!(false));
    assert_eq!(protected["disabledRootKeys"], json!([]));
    assert_eq!(protected["disabledSigningKeys"], json!([]));
    assert_eq!(protected["rootKeys"], root_keys, "the package lists the root key of rootkeys.json");
}

#[test]
fn init_json_describes_the_new_store() {
    let shared = shared_keys();
    let dir = shared.dir();
    let init = &shared.init;
    let keys: Vec<&String> = init.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dir", "rootKeys", "signingKeys", "currentSigningKey", "rootKeyPackage", "trustedRootKeys"]);
    assert_eq!(str_of(init, "/dir"), dir.to_str().unwrap());

    let roots = init["rootKeys"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    let root_kid = str_of(init, "/rootKeys/0/kid");
    assert_kid(root_kid, "R");

    let signing = init["signingKeys"].as_array().unwrap();
    assert_eq!(signing.len(), 1);
    let kid = str_of(init, "/signingKeys/0/kid");
    assert_kid(kid, "S");
    assert_eq!(str_of(init, "/currentSigningKey"), kid);
    assert_eq!(str_of(init, "/signingKeys/0/root"), root_kid);
    assert_eq!(init["signingKeys"][0]["disabled"], json!(false));
    assert_eq!(str_of(init, "/signingKeys/0/spkiSha256").len(), 43, "base64url SHA-256 without padding");

    assert_eq!(init["rootKeyPackage"]["version"], json!(1));
    assert_eq!(str_of(init, "/rootKeyPackage/path"), dir.join("rootkeypackage.json").to_str().unwrap());
    assert_eq!(str_of(init, "/trustedRootKeys"), dir.join("rootkeys.json").to_str().unwrap());

    // `show --json` prints the same.
    assert_eq!(&run_json(duhub().args(["keys", "show", "--json", "--dir"]).arg(&dir), 0), init);
}

#[test]
fn init_refuses_an_existing_store_and_leaves_it_unchanged() {
    let dir = shared_keys().dir();
    let before = snapshot(&dir);
    duhub()
        .args(["keys", "init", "--dir"])
        .arg(&dir)
        .assert()
        .code(2)
        .stdout("")
        .stderr(format!("error: {} already holds a key store; refusing to overwrite it\n", dir.display()));
    let message = json_error(duhub().args(["keys", "init", "--json", "--dir"]).arg(&dir));
    assert!(message.ends_with("already holds a key store; refusing to overwrite it"), "{message}");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn rotate_and_disable_signing_keys() {
    let tmp = temp_dir();
    let dir = tmp.path().join("keys");
    let init = init_key_store(&dir);
    let old = str_of(&init, "/currentSigningKey").to_owned();
    let keys = || {
        let mut command = duhub();
        command.arg("keys");
        command
    };

    // The current key cannot be disabled.
    keys().args(["disable-signing", &old, "--dir"]).arg(&dir).assert().code(2).stdout("").stderr(format!(
        "error: signing key {old} is the current signing key; run `duhub keys rotate-signing` first\n"
    ));
    assert_eq!(package_protected(&dir)["version"], json!(1));

    let rotated = run_json(keys().args(["rotate-signing", "--json", "--dir"]).arg(&dir), 0);
    let new = str_of(&rotated, "/currentSigningKey").to_owned();
    assert_kid(&new, "S");
    assert_ne!(new, old);
    let kids: Vec<&str> =
        rotated["signingKeys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, [old.as_str(), new.as_str()], "oldest first");
    assert_eq!(rotated["signingKeys"][0]["disabled"], json!(false));
    assert_eq!(rotated["signingKeys"][1]["disabled"], json!(false));
    assert_eq!(rotated["rootKeyPackage"]["version"], json!(1), "rotation alone publishes no package");
    assert_eq!(package_protected(&dir)["version"], json!(1));
    assert_eq!(mode(&dir.join(format!("signing/{new}.pem"))), 0o600);
    assert!(dir.join(format!("signing/{new}.sjwk")).is_file());

    let disabled = run_json(keys().args(["disable-signing", "--json", "--dir"]).arg(&dir).arg(&old), 0);
    assert_eq!(disabled["rootKeyPackage"]["version"], json!(2));
    assert_eq!(str_of(&disabled, "/currentSigningKey"), new);
    assert_eq!(disabled["signingKeys"][0]["disabled"], json!(true));
    assert_eq!(disabled["signingKeys"][1]["disabled"], json!(false));
    let protected = package_protected(&dir);
    assert_eq!(protected["version"], json!(2));
    assert_eq!(
        protected["disabledSigningKeys"],
        json!([{ "alg": "SHA256", "hash": str_of(&init, "/signingKeys/0/spkiSha256") }])
    );
    let index: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("keystore.json")).unwrap()).unwrap();
    assert_eq!(index["packageVersion"], json!(2));
    assert_eq!(mode(&dir.join("keystore.json")), 0o600, "still private after being rewritten");

    let before = snapshot(&dir);
    keys()
        .args(["disable-signing", &old, "--dir"])
        .arg(&dir)
        .assert()
        .code(2)
        .stdout("")
        .stderr(format!("error: signing key {old} is already disabled\n"));
    keys()
        .args(["disable-signing", "duhub.S.20000101.000000", "--dir"])
        .arg(&dir)
        .assert()
        .code(2)
        .stdout("")
        .stderr(format!("error: no signing key duhub.S.20000101.000000 in {}\n", dir.display()));
    let message = json_error(keys().args(["disable-signing", "nope", "--json", "--dir"]).arg(&dir));
    assert!(message.starts_with("no signing key nope in "), "{message}");
    assert_eq!(snapshot(&dir), before, "refused commands change nothing");

    assert_eq!(run_json(keys().args(["show", "--json", "--dir"]).arg(&dir), 0), disabled);
    let root = str_of(&init, "/rootKeys/0/kid");
    keys()
        .args(["show", "--dir"])
        .arg(&dir)
        .assert()
        .success()
        .stderr("")
        .stdout(predicate::str::starts_with(format!("key store: {}\n", dir.display())))
        .stdout(predicate::str::contains(format!("  root key     {root}  (created ")))
        .stdout(predicate::str::contains(format!("  signing key  {old}  disabled  (created ")))
        .stdout(predicate::str::contains(format!("  signing key  {new}  current  (created ")))
        .stdout(predicate::str::contains(format!(
            "  root key package v2: {}\n",
            dir.join("rootkeypackage.json").display()
        )))
        .stdout(predicate::str::ends_with(format!(
            "  trust anchors for agents: {}\n",
            dir.join("rootkeys.json").display()
        )));
}

#[test]
fn commands_on_a_missing_store_are_errors() {
    let tmp = temp_dir();
    let dir = tmp.path().join("none");
    for command in ["show", "rotate-signing"] {
        duhub()
            .args(["keys", command, "--dir"])
            .arg(&dir)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains("create a key store with `duhub keys init --dir`"));
    }
    let message = json_error(duhub().args(["keys", "show", "--json", "--dir"]).arg(&dir));
    assert!(message.starts_with(&format!("reading {}", dir.join("keystore.json").display())), "{message}");
    duhub().args(["keys", "disable-signing", "x", "--dir"]).arg(&dir).assert().code(2).stdout("");
    assert!(!dir.exists(), "nothing was created");
}
