//! The command tree as a whole: `--help`, `--version`, unknown or missing commands.

use predicates::prelude::*;

use crate::support::{assert_help, duhub};

#[test]
fn top_level_help_lists_the_commands_and_exit_codes() {
    assert_help(
        &[],
        &[
            "update ",
            "keys ",
            "manifest ",
            "--version",
            "Exit codes: 0 success, 1 invalid input (validate/verify) or a failure the server reported,\n\
             2 usage or I/O error.",
        ],
    );
}

#[test]
fn version_prints_the_package_version() {
    duhub().arg("--version").assert().success().stdout(format!("duhub {}\n", env!("CARGO_PKG_VERSION"))).stderr("");
    // `propagate_version`: subcommands know it too.
    duhub()
        .args(["keys", "init", "--version"])
        .assert()
        .success()
        .stdout(format!("duhub-keys-init {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    duhub()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("unrecognized subcommand 'frobnicate'"));
    duhub()
        .args(["keys", "frobnicate"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("unrecognized subcommand 'frobnicate'"));
}

#[test]
fn a_missing_command_or_option_is_a_usage_error() {
    duhub().assert().code(2).stdout("").stderr(predicate::str::contains("Usage: duhub <COMMAND>"));
    duhub()
        .args(["keys", "init"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("the following required arguments were not provided"))
        .stderr(predicate::str::contains("--dir <DIR>"));
    duhub()
        .args(["update", "hash", "--bogus", "x"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("unexpected argument '--bogus'"));
}
