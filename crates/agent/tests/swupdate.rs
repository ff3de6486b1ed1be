//! `microsoft/swupdate:2` with the real `swupdate` (Debian's package): the test builds a signed
//! `.swu` image (a `newc`-with-CRC cpio archive: `sw-description`, its CMS signature, then the
//! payload files), writes a handler script that runs `swupdate -i`, and drives the handler's
//! `is_installed`, `install` and `apply` through the [`StepHandler`] API.
//!
//! Needs `swupdate` and `openssl` on `PATH`; without them the test prints
//! `skipped: swupdate not installed` (or `openssl`) and passes, unless
//! `DUHUB_REQUIRE_SWUPDATE=1`, when it fails instead.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use duhub_agent::handlers::{StepContext, StepHandler, SwUpdateHandler};
use serde_json::{Map, Value, json};

/// The handler script: `install` runs swupdate on the image, `is-installed` compares the
/// installed criteria with the version file the image installs, `apply` has nothing to do.
const UPDATE_SCRIPT: &str = r#"#!/bin/sh
# duhub swupdate:2 test script (protocol: see crates/agent/src/handlers/swupdate.rs).
action=""; swu=""; work=""; log_file=""; result_file=""; criteria=""; cert=""; hw=""; version_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --action) action="$2"; shift ;;
    --action-*) action="${1#--action-}" ;;
    --swu-file) swu="$2"; shift ;;
    --work-folder) work="$2"; shift ;;
    --output-file) shift ;;
    --log-file) log_file="$2"; shift ;;
    --result-file) result_file="$2"; shift ;;
    --installed-criteria) criteria="$2"; shift ;;
    --cert) cert="$2"; shift ;;
    --hwrevision) hw="$2"; shift ;;
    --version-file) version_file="$2"; shift ;;
  esac
  shift
done
result() { printf '{"resultCode":%s,"extendedResultCode":%s,"resultDetails":"%s"}' "$1" "$2" "$3" > "$result_file"; }
case "$action" in
  is-installed)
    if [ -f "$version_file" ] && [ "$(cat "$version_file")" = "$criteria" ]; then
      result 900 0 "installed"
    else
      result 901 0 "not installed"
    fi ;;
  install)
    # A private TMPDIR: swupdate extracts sw-description and creates its IPC sockets there.
    TMPDIR="$work/swupdate-tmp"; export TMPDIR
    rm -rf "$TMPDIR"; mkdir -p "$TMPDIR"
    swupdate -v -i "$swu" -k "$cert" -H "$hw" > "$log_file" 2>&1
    rc=$?
    # swupdate 2022.12 sometimes exits 1 after a complete install (a child process of its
    # ends at shutdown); the log tells a real failure apart.
    if [ $rc -ne 0 ] && grep -q "SWUPDATE successful" "$log_file" && ! grep -q "SWUPDATE failed" "$log_file"; then
      rc=0
    fi
    [ $rc -eq 0 ] || exit $rc
    result 600 0 "swupdate installed $swu" ;;
  apply)
    result 700 0 "" ;;
  *)
    exit 2 ;;
esac
"#;

/// Whether `program` is on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `Some(reason)` when the test cannot run here (and may be skipped).
fn missing_tool() -> Option<&'static str> {
    if !on_path("swupdate") {
        Some("skipped: swupdate not installed")
    } else if !on_path("openssl") {
        Some("skipped: openssl not installed")
    } else {
        None
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `newc` cpio archive with CRC (`070702`, what `cpio -o -H crc` writes): the entries in order,
/// the trailer, padded to 512 bytes.
fn cpio_crc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    fn pad4(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer: (&str, &[u8]) = ("TRAILER!!!", &[]);
    for (index, (name, data)) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let is_trailer = *name == "TRAILER!!!";
        let checksum = data.iter().fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)));
        let fields: [u32; 13] = [
            if is_trailer { 0 } else { u32::try_from(index).unwrap() + 1 }, // ino
            if is_trailer { 0 } else { 0o100_644 },                         // mode
            0,                                                              // uid
            0,                                                              // gid
            1,                                                              // nlink
            0,                                                              // mtime
            u32::try_from(data.len()).unwrap(),                             // filesize
            0,                                                              // devmajor
            0,                                                              // devminor
            0,                                                              // rdevmajor
            0,                                                              // rdevminor
            u32::try_from(name.len() + 1).unwrap(),                         // namesize
            checksum,                                                       // check
        ];
        out.extend_from_slice(b"070702");
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    out
}

/// Everything of one swupdate step: keys, image, script, sandbox.
struct Setup {
    _dir: tempfile::TempDir,
    sandbox: PathBuf,
    data_dir: PathBuf,
    target: PathBuf,
    properties: Map<String, Value>,
    files: Vec<PathBuf>,
}

const PAYLOAD: &[u8] = b"hello from duhub via swupdate\n";
const VERSION: &str = "1.0.2";

impl Setup {
    /// `tamper`: change the payload after signing, so that its hash no longer matches.
    fn new(tamper: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (sandbox, data_dir, target, keys) =
            (root.join("sandbox"), root.join("data"), root.join("target"), root.join("keys"));
        for folder in [&sandbox, &data_dir, &target, &keys] {
            fs::create_dir_all(folder).unwrap();
        }
        let (cert, key) = (keys.join("cert.pem"), keys.join("key.pem"));
        run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
            "-subj",
            "/CN=duhub swupdate test",
            "-addext",
            "extendedKeyUsage=emailProtection",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        let version_file = format!("{VERSION}\n");
        let description = format!(
            r#"software =
{{
    version = "{VERSION}";
    description = "duhub swupdate:2 test";
    hardware-compatibility: [ "1.0" ];
    files: (
        {{
            filename = "payload.txt";
            path = "{installed}";
            sha256 = "{payload_hash}";
        }},
        {{
            filename = "version.txt";
            path = "{version}";
            sha256 = "{version_hash}";
        }}
    );
}};
"#,
            installed = target.join("installed.txt").display(),
            payload_hash = sha256_hex(PAYLOAD),
            version = target.join("version").display(),
            version_hash = sha256_hex(version_file.as_bytes()),
        );
        let description_file = keys.join("sw-description");
        fs::write(&description_file, &description).unwrap();
        let signature_file = keys.join("sw-description.sig");
        run(Command::new("openssl").args(["cms", "-sign", "-outform", "DER", "-nosmimecap", "-binary"]).args([
            "-in",
            description_file.to_str().unwrap(),
            "-out",
            signature_file.to_str().unwrap(),
            "-signer",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
        ]));
        let signature = fs::read(&signature_file).unwrap();
        let payload: Vec<u8> = if tamper { b"tampered payload!!!!!!!!!!!!!!\n".to_vec() } else { PAYLOAD.to_vec() };
        let image = cpio_crc(&[
            ("sw-description", description.as_bytes()),
            ("sw-description.sig", &signature),
            ("payload.txt", &payload),
            ("version.txt", version_file.as_bytes()),
        ]);
        let image_file = sandbox.join("image.swu");
        fs::write(&image_file, image).unwrap();
        let script_file = sandbox.join("update.sh");
        fs::write(&script_file, UPDATE_SCRIPT).unwrap();
        let arguments = format!(
            "--cert {} --hwrevision duhub:1.0 --version-file {}",
            cert.display(),
            target.join("version").display()
        );
        let Value::Object(properties) = json!({
            "scriptFileName": "update.sh",
            "swuFileName": "image.swu",
            "arguments": arguments,
            "installedCriteria": VERSION,
        }) else {
            unreachable!()
        };
        Self { sandbox, data_dir, target, properties, files: vec![script_file, image_file], _dir: dir }
    }

    fn ctx<'a>(&'a self, cancel: &'a AtomicBool) -> StepContext<'a> {
        StepContext {
            workflow_id: "swupdate-test",
            sandbox: &self.sandbox,
            handler_properties: &self.properties,
            files: self.files.clone(),
            installed_criteria: None,
            data_dir: &self.data_dir,
            cancel,
        }
    }

    fn swupdate_log(&self) -> String {
        fs::read_to_string(self.sandbox.join("action_install_script.log")).unwrap_or_default()
    }
}

fn codes(result: &duhub_proto::result::InstallResult) -> (i32, u32) {
    (result.result_code.0, result.extended_result_codes.root().0)
}

fn skip_unless_available() -> bool {
    match missing_tool() {
        None => false,
        Some(reason) => {
            assert!(
                std::env::var("DUHUB_REQUIRE_SWUPDATE").as_deref() != Ok("1"),
                "DUHUB_REQUIRE_SWUPDATE=1: {reason}"
            );
            println!("{reason}");
            true
        }
    }
}

/// One swupdate at a time: concurrent runs share swupdate's IPC and were seen to fail each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn swupdate_installs_a_signed_image_through_the_handler() {
    if skip_unless_available() {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(false);
    let cancel = AtomicBool::new(false);
    let ctx = setup.ctx(&cancel);
    let handler = SwUpdateHandler::new(Some(std::time::Duration::from_secs(120)));

    assert_eq!(codes(&handler.is_installed(&ctx)), (901, 0));
    let mut installed = handler.install(&ctx);
    if codes(&installed) != (600, 0) {
        // Debian's swupdate 2022.12 now and then fails a run it logs as successful, or fails
        // under load; one retry tells that apart from a handler that is wrong every time.
        eprintln!("swupdate failed once; retrying: {installed:?}\n{}", setup.swupdate_log());
        installed = handler.install(&ctx);
    }
    assert_eq!(codes(&installed), (600, 0), "{installed:?}\n{}", setup.swupdate_log());
    assert_eq!(fs::read(setup.target.join("installed.txt")).unwrap(), PAYLOAD, "{}", setup.swupdate_log());
    assert_eq!(fs::read_to_string(setup.target.join("version")).unwrap().trim(), VERSION);
    assert!(setup.swupdate_log().contains("SWUPDATE successful"), "{}", setup.swupdate_log());
    assert_eq!(codes(&handler.apply(&ctx)), (700, 0));
    assert_eq!(codes(&handler.is_installed(&ctx)), (900, 0));
}

#[test]
fn swupdate_rejects_a_tampered_image() {
    if skip_unless_available() {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let setup = Setup::new(true);
    let cancel = AtomicBool::new(false);
    let ctx = setup.ctx(&cancel);
    let handler = SwUpdateHandler::new(Some(std::time::Duration::from_secs(120)));
    let failed = handler.install(&ctx);
    // swupdate exits 1; the script passes it on: 0x30101000 + 1.
    assert_eq!(codes(&failed), (0, 0x3010_1001), "{failed:?}\n{}", setup.swupdate_log());
    assert!(!setup.target.join("installed.txt").exists(), "{}", setup.swupdate_log());
    assert_eq!(codes(&handler.is_installed(&ctx)), (901, 0));
}

/// The archive writer matches what `cpio -o -H crc` expects to read back, when cpio is there.
#[test]
fn cpio_archive_is_readable_by_cpio() {
    if !on_path("cpio") {
        println!("skipped: cpio not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.cpio");
    fs::write(&archive, cpio_crc(&[("one", b"1"), ("two.txt", b"hello\n")])).unwrap();
    let output = Command::new("cpio")
        .args(["-i", "--only-verify-crc", "-v", "-F"])
        .arg(&archive)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listing = String::from_utf8_lossy(&output.stderr);
    assert!(listing.contains("one") && listing.contains("two.txt"), "{listing}");
}
