//! Argument definitions. Every command takes `--json` for machine-readable output.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory as _, Parser, Subcommand};

/// The full command tree, for parsing and for `--help`.
pub fn command() -> clap::Command {
    Cli::command()
}

/// duhub: self-hosted Device Update for IoT fleets, compatible with Azure Device Update.
#[derive(Debug, Parser)]
#[command(name = "duhub", version, propagate_version = true)]
#[command(after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.\n\
Exit codes: 0 success, 1 invalid input (validate/verify), 2 usage or I/O error.")]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write, hash and validate import manifests.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Manage an instance's signing keys and root key package.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign and verify update manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Run the server: MQTT device endpoint, twins, device registry and REST APIs.
    ///
    /// On first start it creates the data directory with an SQLite database, a private CA and
    /// server certificate, and a service access key, and prints how to connect. Settings come
    /// from --config (TOML), DUHUB_* environment variables and these flags, in rising priority.
    Serve(ServeArgs),
    /// Print the default server settings as TOML (a starting point for --config).
    PrintDefaultConfig,
    /// Manage device identities on a running server.
    #[command(subcommand)]
    Device(DeviceCommand),
}

/// Arguments of `duhub serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Settings file (TOML); see `duhub print-default-config`.
    #[arg(long, env = "DUHUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./duhub-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Host name in connection strings and the server certificate [default: localhost].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub bind: Option<std::net::IpAddr>,
    /// HTTPS port: REST APIs and MQTT over WebSocket [default: 8443; 0 = any free port].
    #[arg(long, value_name = "N")]
    pub https_port: Option<u16>,
    /// MQTT over TLS port [default: 8883; 0 = any free port].
    #[arg(long, value_name = "N")]
    pub mqtt_port: Option<u16>,
    /// Also accept plain-TCP MQTT on this port (trusted networks and tests only).
    #[arg(long, value_name = "N")]
    pub mqtt_plain_port: Option<u16>,
    /// sqlite://FILE or postgres://USER@HOST/DB [default: SQLite in the data directory].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print the startup summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `duhub device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device identity with symmetric keys (generated unless given).
    Create(DeviceCreateArgs),
    /// List device identities.
    List(AdminArgs),
    /// Show a device identity.
    Show(DeviceIdArgs),
    /// Delete a device identity and its twin.
    Delete(DeviceIdArgs),
    /// Print a device's connection string.
    ConnectionString(DeviceIdArgs),
}

/// How CLI commands find the server: `admin.json`, written by `duhub serve`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's admin.json [default: ./duhub-data/admin.json].
    #[arg(long, env = "DUHUB_ADMIN", value_name = "FILE")]
    pub admin: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A device id and the server.
#[derive(Debug, Args)]
pub struct DeviceIdArgs {
    /// Device id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `duhub device create`.
#[derive(Debug, Args)]
pub struct DeviceCreateArgs {
    /// Device id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Primary key (base64); generated when omitted.
    #[arg(long, value_name = "BASE64")]
    pub primary_key: Option<String>,
    /// Secondary key (base64); generated when omitted.
    #[arg(long, value_name = "BASE64")]
    pub secondary_key: Option<String>,
    /// Create the device disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `duhub update ...`
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Write an import manifest (like `az iot du update init`).
    #[command(subcommand)]
    Init(InitCommand),
    /// Print the size and base64 SHA-256 of files (like `az iot du update calculate-hash`).
    Hash(HashArgs),
    /// Validate an import manifest against the v4.0/v5.0 schema and the service's rules.
    ///
    /// Exits 0 when valid, 1 when invalid (listing every problem with its JSON pointer),
    /// 2 when the file cannot be read.
    Validate(ValidateArgs),
}

/// `duhub update init ...`
#[derive(Debug, Subcommand)]
pub enum InitCommand {
    /// Write an import manifest v5.0 to stdout, with the arguments of `az iot du update init v5`.
    ///
    /// Each --step is an inline step (handler=<id> [properties='<json>'] [description=<text>]
    /// [files=a,b]) or a reference step (updateId.provider=<p> updateId.name=<n>
    /// updateId.version=<v> [description=<text>]). Each --file (path=<file>
    /// [downloadHandler=<id>] [properties='<json>']) belongs to the --step before it and is
    /// hashed; each --related-file (path=<file> [properties='<json>']) belongs to the --file
    /// before it.
    #[command(
        after_help = "Example:\n  duhub update init v5 --update-provider Contoso --update-name Toaster --update-version 1.0 \\\n    --compat manufacturer=Contoso model=Toaster \\\n    --step handler=microsoft/swupdate:2 properties='{\"installedCriteria\":\"1.0\"}' \\\n    --file path=./fw.swu --file path=./install.sh > toaster-1.0.importmanifest.json"
    )]
    V5(InitV5Args),
}

/// Arguments of `duhub update init v5`.
#[derive(Debug, Args)]
pub struct InitV5Args {
    /// Update provider (letters, digits, '.' and '-').
    #[arg(long, value_name = "PROVIDER")]
    pub update_provider: String,
    /// Update name (letters, digits, '.' and '-').
    #[arg(long, value_name = "NAME")]
    pub update_name: String,
    /// Update version: two to four dot-separated numbers.
    #[arg(long, value_name = "VERSION")]
    pub update_version: String,
    /// A compatible device: space-separated KEY=VALUE device properties. Repeat for more devices.
    #[arg(long, required = true, num_args = 1.., action = ArgAction::Append, value_name = "KEY=VALUE")]
    pub compat: Vec<String>,
    /// An installation step (see above). Repeat for more steps.
    #[arg(long, required = true, num_args = 1.., action = ArgAction::Append, value_name = "KEY=VALUE")]
    pub step: Vec<String>,
    /// A file of the preceding step: path=<file> [downloadHandler=<id>] [properties='<json>'].
    #[arg(long, num_args = 1.., action = ArgAction::Append, value_name = "KEY=VALUE")]
    pub file: Vec<String>,
    /// A related file of the preceding --file: path=<file> [properties='<json>'].
    #[arg(long, num_args = 1.., action = ArgAction::Append, value_name = "KEY=VALUE")]
    pub related_file: Vec<String>,
    /// Update description.
    #[arg(long)]
    pub description: Option<String>,
    /// Whether the update can be deployed on its own (false for updates only used as steps).
    #[arg(long, value_name = "BOOL")]
    pub is_deployable: Option<bool>,
    /// Skip schema validation and the installedCriteria default.
    #[arg(long)]
    pub no_validation: bool,
    /// Accepted for uniformity: the output is JSON either way.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `duhub update hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// Files to hash.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Hash algorithm (only sha256).
    #[arg(long, default_value = "sha256", value_parser = ["sha256"])]
    pub hash_algo: String,
    /// Accepted for uniformity: the output is JSON either way.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `duhub update validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The import manifest.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print `{"valid": bool, "errors": [{"pointer", "rule", "message"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// `duhub keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key store: a root key (RSA 3072), a signing key certified by it, and a root
    /// key package signed by the root key. Private keys are written with mode 0600.
    Init(KeysDirArgs),
    /// Create the next signing key and make it current; the previous one stays valid until
    /// disabled.
    RotateSigning(KeysDirArgs),
    /// Disable a signing key: publish a new root key package that lists it as disabled.
    DisableSigning(DisableSigningArgs),
    /// Show the keys and the root key package of a key store.
    Show(KeysDirArgs),
}

/// A key store directory.
#[derive(Debug, Args)]
pub struct KeysDirArgs {
    /// The key store directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `duhub keys disable-signing`.
#[derive(Debug, Args)]
pub struct DisableSigningArgs {
    /// The key store directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Key id of the signing key to disable.
    #[arg(value_name = "KID")]
    pub kid: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `duhub manifest ...`
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Sign an update manifest (or an import manifest without reference steps, which is first
    /// turned into its update manifest). Prints {"updateManifest", "updateManifestSignature"}.
    Sign(SignArgs),
    /// Verify the signature of an update manifest as a device agent does.
    ///
    /// FILE is a desired `service` twin object, a `deviceUpdate` component or twin holding one,
    /// or {"updateManifest", "updateManifestSignature"}. By default the official production
    /// root keys and root key package are trusted. Exits 0 valid, 1 invalid, 2 usage/I-O error.
    Verify(VerifyArgs),
}

/// Arguments of `duhub manifest sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The manifest to sign.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The key store directory.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Accepted for uniformity: the output is JSON either way.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `duhub manifest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The twin object holding the manifest and its signature.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Trust this root key package instead of Microsoft's (needs --root-key or --keys).
    #[arg(long, value_name = "PACKAGE")]
    pub root_keys: Option<PathBuf>,
    /// Trusted root public keys (a `rootkeys.json` of a key store). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub root_key: Vec<PathBuf>,
    /// Trust what a key store's agents trust (its rootkeys.json and root key package).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Trust Microsoft's test root keys (agents built with EMBED_TEST_ROOT_KEYS) instead.
    #[arg(long, conflicts_with_all = ["keys", "root_keys", "root_key"])]
    pub test_roots: bool,
    /// Print {"valid", "extendedResultCode", "detail"}.
    #[arg(long)]
    pub json: bool,
}
