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
Exit codes: 0 success, 1 invalid input (validate/verify) or a failure the server reported,\n\
2 usage or I/O error.")]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write and check import manifests; import, list, show and delete updates on a server.
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
    /// Device groups and their device class subgroups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Device classes: devices that share compatibility properties.
    #[command(subcommand)]
    DeviceClass(DeviceClassCommand),
    /// Deploy updates to groups, follow, cancel and retry deployments.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// How many devices are on the latest update: all, a group's or a subgroup's.
    #[command(after_help = "Examples:\n  duhub compliance\n  duhub compliance --group line-1\n  \
duhub compliance --group line-1 --device-class 3ebe2a9a5ecc9b2ea71b6c0e9e5cd6e6bb5d8f8b --json")]
    Compliance(ComplianceArgs),
    /// Manage the bearer tokens of the Device Update REST API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a simulated fleet of real agents against a server, and rehearse a deployment on it.
    ///
    /// Creates the devices (PREFIX0000, ...) if they are missing, puts them in --group, and runs
    /// one agent per device in this process: its own MQTT/TLS connection, data directory, real
    /// signature-chain verification, compatibility check and verified downloads, with the
    /// outcome of every step (any handler type) simulated as `microsoft/simulator:1` does, from
    /// the scenario. Progress goes to stderr. Without --deploy it runs until Ctrl-C, so you can
    /// deploy from the CLI, an SDK or the dashboard and watch. With --deploy ... --until-done it
    /// waits for every device, creates the deployment for the group, waits until every device
    /// is done and the service's status agrees, prints the rehearsal report and exits: 0 when
    /// the service's counts equal what the devices reported and every device ended as the
    /// scenario says, 1 otherwise.
    #[command(after_help = "Examples:\n  duhub simulate --devices 100\n  \
duhub simulate --devices 1000 --fail-percent 5 --seed 7 --deploy contoso/toaster/1.0 --until-done\n  \
duhub simulate --devices 10000 --scenario fleet.toml --sources 127.0.0.2,127.0.0.3 \\\n      \
--deploy contoso/toaster/1.0 --until-done --json\n\
Scenario files: see the README (\"Fleet simulator\").\n\
Many devices need many open files: raise the limit first (ulimit -n 20000).")]
    Simulate(Box<SimulateArgs>),
}

/// Arguments of `duhub simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// How many devices.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,
    /// Device id prefix: devices are PREFIX followed by a zero-padded number.
    #[arg(long, value_name = "PREFIX", default_value = "sim-")]
    pub prefix: String,
    /// Manufacturer of every device (unless the scenario has a population).
    #[arg(long, value_name = "M", default_value = "contoso")]
    pub manufacturer: String,
    /// Model of every device (unless the scenario has a population).
    #[arg(long, value_name = "X", default_value = "simulated")]
    pub model: String,
    /// The group the devices are put in (ADUGroup tag).
    #[arg(long, value_name = "G", default_value = "simulated")]
    pub group: String,
    /// Scenario file (TOML): population, failures, latencies, reboots, outages.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Exactly floor(N*P/100) devices, chosen by the seed, fail their install step.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fail_percent: Option<u32>,
    /// Seed of every random choice [default: the scenario's, else 1].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Local addresses to connect from, in turn (e.g. 127.0.0.2,127.0.0.3: each gives ~28,000
    /// ports).
    #[arg(long, value_name = "IP,IP,...", value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
    /// MQTT servers (host:port), devices spread over them; a device whose server goes away
    /// connects to the next [default: admin.json's].
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub server: Vec<String>,
    /// Connect over MQTT over WebSocket (the servers' ports are then HTTPS ports).
    #[arg(long)]
    pub websocket: bool,
    /// Root of the devices' data directories (one per device).
    #[arg(long, value_name = "DIR", default_value = "duhub-simulator")]
    pub data_dir: PathBuf,
    /// Rehearsal: deploy this update to the group once every device reported.
    #[arg(long, value_name = "PROVIDER/NAME/VERSION", value_parser = crate::cli::parse_update_id)]
    pub deploy: Option<duhub_proto::UpdateId>,
    /// The rehearsal's deployment id [default: rehearsal-<unix time>].
    #[arg(long, value_name = "ID", requires = "deploy")]
    pub deployment_id: Option<String>,
    /// Exit when every device is done and the service agrees, with the rehearsal report.
    #[arg(long, requires = "deploy")]
    pub until_done: bool,
    /// Give up a rehearsal after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub timeout: u64,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
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
    /// Device Update instance id of REST paths (/deviceUpdate/ID/...) [default: default].
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Base URL devices download update files and the root key package from, when it is not
    /// https://HOSTNAME:HTTPS_PORT (e.g. behind a reverse proxy or CDN).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Signing key store [default: DATA_DIR/keys, created on first start; see `duhub keys`].
    #[arg(long, value_name = "DIR")]
    pub keys_dir: Option<PathBuf>,
    /// Keep update files in S3 (`s3://BUCKET/PREFIX`, settings from AWS_* variables) or Azure Blob
    /// storage (`az://CONTAINER/PREFIX`, from AZURE_*) instead of DATA_DIR/content; needs a duhub
    /// built with `--features object-store`.
    #[arg(long, value_name = "URL")]
    pub content_url: Option<String>,
    /// Print the startup summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `duhub device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device identity with symmetric keys (generated unless given).
    Create(DeviceCreateArgs),
    /// List the devices: status, connection, Device Update group, agent state, installed update.
    ///
    /// The group is the ADUGroup twin tag ($default for an untagged device whose agent has
    /// reported, - for a device without agent). AGENT is what the agent last reported: idle,
    /// deploying, or failed with its extended result code. Read page by page through IoT Hub's
    /// query API. With --json: [{"deviceId", "status", "connectionState", "lastActivityTime",
    /// "group", "agentState", "installedUpdate", "lastInstallResult"}].
    #[command(after_help = "Examples:\n  duhub device list\n  duhub device list --group lab --json")]
    List(DeviceListArgs),
    /// Show a device identity.
    Show(DeviceIdArgs),
    /// Delete a device identity and its twin.
    Delete(DeviceIdArgs),
    /// Print a device's connection string.
    ConnectionString(DeviceIdArgs),
    /// Print a complete duhub-agent configuration (TOML) for a device: its connection string,
    /// the server's CA and root keys, where it downloads the root key package, a data directory.
    #[command(after_help = "Examples:\n  duhub device agent-config toaster-1 --model toaster > agent.toml\n  \
                            duhub-agent --config agent.toml")]
    AgentConfig(AgentConfigArgs),
    /// Set twin tags of a device; KEY= (empty value) removes a tag.
    ///
    /// Values are strings; a KEY with dots (location.site=berlin) sets a nested tag. Keys and
    /// values follow IoT Hub's twin rules: names of at most 1024 bytes without '.', ' ', '$' or
    /// control characters, values of at most 4096 bytes, at most 8 KB of tags in all. The
    /// ADUGroup tag is the device's Device Update group (see `duhub device group`).
    #[command(after_help = "Examples:\n  duhub device tag toaster-1 ADUGroup=lab location.site=berlin\n  \
duhub device tag toaster-1 location=")]
    Tag(DeviceTagArgs),
    /// Put a device into a Device Update group, or back into the default one.
    #[command(subcommand)]
    Group(DeviceGroupCommand),
}

/// `duhub device group ...`
#[derive(Debug, Subcommand)]
pub enum DeviceGroupCommand {
    /// Put a device into a group: set its ADUGroup twin tag. Deployments to the group reach it.
    #[command(after_help = "Examples:\n  duhub device group set toaster-1 lab")]
    Set(DeviceGroupSetArgs),
    /// Take a device out of its group: remove its ADUGroup twin tag (it joins $default).
    #[command(after_help = "Examples:\n  duhub device group clear toaster-1")]
    Clear(DeviceIdArgs),
}

/// Arguments of `duhub device list`.
#[derive(Debug, Args)]
pub struct DeviceListArgs {
    /// Only the devices whose ADUGroup tag is GROUP.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `duhub device tag`.
#[derive(Debug, Args)]
pub struct DeviceTagArgs {
    /// Device id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Tags to set (KEY=VALUE) or remove (KEY=).
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `duhub device group set`.
#[derive(Debug, Args)]
pub struct DeviceGroupSetArgs {
    /// Device id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Group id: the value of the ADUGroup tag.
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Arguments of `duhub device agent-config`.
#[derive(Debug, Args)]
pub struct AgentConfigArgs {
    /// Device id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The agent's data directory (journal, downloads) [default: ./duhub-agent-ID].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// deviceProperties.manufacturer, part of the device class [default: Contoso].
    #[arg(long, value_name = "M", default_value = "Contoso")]
    pub manufacturer: String,
    /// deviceProperties.model, part of the device class [default: Video].
    #[arg(long, value_name = "M", default_value = "Video")]
    pub model: String,
    /// Where the server is.
    #[command(flatten)]
    pub admin: AdminArgs,
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
    /// Upload an import manifest and its files to a server and import the update.
    ///
    /// Without FILE arguments, the files the manifest lists (`files[].filename` and their
    /// `relatedFiles`) are taken from the manifest's directory; with FILE arguments, those files
    /// are uploaded under their file names, which the manifest must list. Every file is checked
    /// before anything is uploaded. Each file goes up with a progress bar on stderr; then the
    /// import is started and followed until it succeeds (printing the update id) or fails
    /// (printing the server's error, exit 1). With --json the final operation is printed.
    #[command(after_help = "Examples:\n  duhub update import ./toaster-1.0.importmanifest.json\n  \
duhub update import toaster.importmanifest.json build/fw.swu build/delta.json \\\n    \
--friendly-name \"Toaster 1.0\"\n  \
duhub update import toaster.importmanifest.json --no-wait --json")]
    Import(UpdateImportArgs),
    /// List the updates on a server, the names of a provider, or the versions of a name.
    ///
    /// Without --provider: every update (provider, name, version, friendly name, import date).
    /// With --provider: the update names of that provider. With --provider and --name: the
    /// versions. --filter is passed to the server (e.g. "isDeployable eq false") for all updates
    /// and for versions.
    #[command(after_help = "Examples:\n  duhub update list\n  duhub update list --provider Contoso\n  \
duhub update list --provider Contoso --name Toaster --json")]
    List(UpdateListArgs),
    /// Show an update; with --files also its files (names, sizes, hashes, related files).
    #[command(after_help = "Examples:\n  duhub update show Contoso Toaster 1.0\n  \
duhub update show Contoso Toaster 1.0 --files --json")]
    Show(UpdateShowArgs),
    /// Delete an update and its files, following the deletion until it is done.
    #[command(after_help = "Examples:\n  duhub update delete Contoso Toaster 1.0\n  \
duhub update delete Contoso Toaster 1.0 --no-wait --json")]
    Delete(UpdateDeleteArgs),
}

/// How Device Update commands find the server: `admin.json`, written by `duhub serve`, and
/// the instance.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// The server's admin.json [default: ./duhub-data/admin.json].
    #[arg(long, env = "DUHUB_ADMIN", value_name = "FILE")]
    pub admin: Option<PathBuf>,
    /// Device Update instance [default: admin.json's instanceId, else "default"].
    #[arg(long, env = "DUHUB_INSTANCE", value_name = "ID")]
    pub instance: Option<String>,
    /// Print the JSON the server returned (lists: one array of all pages).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `duhub update import`.
#[derive(Debug, Args)]
pub struct UpdateImportArgs {
    /// The import manifest (v4.0 or v5.0).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The update's files [default: the files the manifest lists, from its directory].
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A friendly name for the update.
    #[arg(long, value_name = "NAME")]
    pub friendly_name: Option<String>,
    /// Start the import and print where to follow it, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub update list`.
#[derive(Debug, Args)]
pub struct UpdateListArgs {
    /// List the update names of this provider (with --name: the versions).
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// List the versions of this update name (needs --provider).
    #[arg(long, value_name = "NAME", requires = "provider")]
    pub name: Option<String>,
    /// Server-side filter for all updates or for versions, e.g. "isDeployable eq false".
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// An update id given as three arguments.
#[derive(Debug, Args)]
pub struct UpdateIdArgs {
    /// Update provider.
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
    /// Update name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Update version.
    #[arg(id = "update_version", value_name = "VERSION")]
    pub version: String,
}

/// Arguments of `duhub update show`.
#[derive(Debug, Args)]
pub struct UpdateShowArgs {
    /// The update.
    #[command(flatten)]
    pub update: UpdateIdArgs,
    /// Also list the update's files (JSON: {"update", "files"}).
    #[arg(long)]
    pub files: bool,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub update delete`.
#[derive(Debug, Args)]
pub struct UpdateDeleteArgs {
    /// The update.
    #[command(flatten)]
    pub update: UpdateIdArgs,
    /// Start the deletion and print where to follow it, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// `duhub group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the device groups with their device counts and active deployments.
    #[command(after_help = "Examples:\n  duhub group list\n  duhub group list --json")]
    List(DuArgs),
    /// Show a group, its device class subgroups, the best update for each, and its compliance.
    ///
    /// With --json: {"group", "deviceClassSubgroups", "bestUpdates", "updateCompliance"}.
    #[command(after_help = "Examples:\n  duhub group show line-1\n  duhub group show '$default' --json")]
    Show(GroupArgs),
}

/// A group and the server.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Group id (the device twin's ADUGroup tag, or $default).
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// `duhub device-class ...`
#[derive(Debug, Subcommand)]
pub enum DeviceClassCommand {
    /// List the device classes with their compatibility properties and best compatible update.
    #[command(after_help = "Examples:\n  duhub device-class list\n  duhub device-class list --json")]
    List(DuArgs),
    /// Show a device class and the updates installable on it.
    ///
    /// With --json: {"deviceClass", "installableUpdates"}.
    #[command(after_help = "Examples:\n  duhub device-class show 3ebe2a9a5ecc9b2ea71b6c0e9e5cd6e6bb5d8f8b")]
    Show(DeviceClassArgs),
}

/// A device class and the server.
#[derive(Debug, Args)]
pub struct DeviceClassArgs {
    /// Device class id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// `duhub deployment ...`
#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Deploy an update to a group (or replace the deployment of that id).
    ///
    /// The deployment starts at --start (RFC 3339, default now). With a rollback policy, devices
    /// that fail are sent the rollback update once --rollback-failed-count devices and
    /// --rollback-failed-percent percent of the subgroup have failed.
    ///
    /// With --waves it is a phased rollout (a duhub extension): the waves start one after the
    /// other as their success gate passes, and the failure gate pauses, aborts or rolls back
    /// (see "Phased rollout" below and the README). The policy is checked before anything is
    /// sent. With --json: the deployment the server returned, with the rollout (as `deployment
    /// status` shows it) as its `rollout` member.
    #[command(after_help = "Examples:\n  duhub deployment create line-1 toaster-1-0 --update Contoso/Toaster/1.0\n  \
duhub deployment create line-1 toaster-1-0 --update Contoso/Toaster/1.0 \\\n    \
--start 2026-12-01T02:00:00Z --rollback-update Contoso/Toaster/0.9 \\\n    \
--rollback-failed-count 5 --rollback-failed-percent 10\n  \
duhub deployment create line-1 toaster-2-0 --update Contoso/Toaster/2.0 \\\n    \
--waves 1%,10%,50%,100% --bake 30m --success-percent 95 --max-failure-percent 5 \\\n    \
--min-executed 20 --device-timeout 2h --on-failure pause --rate 100/min,double --window 02:00-05:00\n  \
duhub deployment create line-1 toaster-2-0 --update Contoso/Toaster/2.0 --waves 10,100,100% --approve-waves")]
    Create(DeploymentCreateArgs),
    /// List the deployments of a group.
    #[command(after_help = "Examples:\n  duhub deployment list line-1")]
    List(GroupArgs),
    /// Show a deployment.
    #[command(after_help = "Examples:\n  duhub deployment show line-1 toaster-1-0 --json")]
    Show(DeploymentArgs),
    /// Show the state of a deployment in each device class subgroup; with --devices, each device.
    ///
    /// A phased rollout is shown too: its status and current wave, the policy, the gates (the
    /// current wave's successes against what its success gate needs; the failures since the
    /// last acceptance against the failure gate's threshold), every wave (size, start, devices
    /// by outcome) and the history (time, event, wave, cause with the API token's name, counts).
    /// With --json: the server's status, plus a `rollout` member (GET .../rollout) when the
    /// deployment has one; with --devices: {"status", "deviceStates": [{"deviceClassId",
    /// "devices"}], "rollout"?}.
    #[command(after_help = "Examples:\n  duhub deployment status line-1 toaster-1-0\n  \
duhub deployment status line-1 toaster-1-0 --devices\n  \
duhub deployment status line-1 toaster-1-0 --wait --timeout 1800\n  \
duhub deployment status line-1 toaster-2-0 --json | jq .rollout.history")]
    Status(DeploymentStatusArgs),
    /// Stop a deployment in one device class subgroup, or in all of its subgroups.
    ///
    /// With --json: an array of the deployments the server returned, one per subgroup.
    #[command(after_help = "Examples:\n  duhub deployment cancel line-1 toaster-1-0\n  \
duhub deployment cancel line-1 toaster-1-0 --device-class 3ebe2a9a5ecc9b2ea71b6c0e9e5cd6e6bb5d8f8b")]
    Cancel(DeploymentSubgroupArgs),
    /// Retry a deployment on the devices that failed, in one device class subgroup or in all.
    ///
    /// With --json: an array of the deployments the server returned, one per subgroup.
    #[command(after_help = "Examples:\n  duhub deployment retry line-1 toaster-1-0")]
    Retry(DeploymentSubgroupArgs),
    /// Delete a deployment.
    #[command(after_help = "Examples:\n  duhub deployment delete line-1 toaster-1-0")]
    Delete(DeploymentArgs),
    /// Pause a phased rollout: no more devices are started (those told go on).
    ///
    /// Refused (exit 1) when the rollout is already paused or was aborted. With --json: the
    /// rollout the server returned.
    #[command(after_help = "Examples:\n  duhub deployment pause line-1 toaster-2-0\n  \
duhub deployment pause line-1 toaster-2-0 --json")]
    Pause(DeploymentArgs),
    /// Resume a paused rollout. The failures so far are accepted: the failure gate counts only
    /// what finishes from now on.
    ///
    /// Refused (exit 1) unless the rollout is paused. With --json: the rollout.
    #[command(after_help = "Examples:\n  duhub deployment resume line-1 toaster-2-0")]
    Resume(DeploymentArgs),
    /// Start a rollout's next wave now, whatever its success gate says (and approve it when it
    /// waits for approval); a paused rollout runs again, its failures so far accepted.
    ///
    /// Refused (exit 1) in the last wave, before the first wave started and after an abort.
    /// With --json: the rollout.
    #[command(after_help = "Examples:\n  duhub deployment promote line-1 toaster-2-0")]
    Promote(DeploymentArgs),
    /// Abort a rollout: every device not finished is cancelled, and nothing more starts.
    ///
    /// With --json: the rollout.
    #[command(after_help = "Examples:\n  duhub deployment abort line-1 toaster-2-0")]
    Abort(DeploymentArgs),
}

/// Arguments of `duhub deployment create`.
#[derive(Debug, Args)]
pub struct DeploymentCreateArgs {
    /// Group id.
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Deployment id (lower case, at most 73 characters).
    #[arg(value_name = "DEPLOYMENT_ID")]
    pub deployment: String,
    /// The update to deploy.
    #[arg(long, value_name = "PROVIDER/NAME/VERSION", value_parser = crate::cli::parse_update_id)]
    pub update: duhub_proto::UpdateId,
    /// When the deployment starts (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = crate::cli::parse_start)]
    pub start: Option<time::OffsetDateTime>,
    /// Rollback policy: the update failed devices are sent back to.
    #[arg(
        long,
        value_name = "PROVIDER/NAME/VERSION",
        value_parser = crate::cli::parse_update_id,
        requires_all = ["rollback_failed_count", "rollback_failed_percent"]
    )]
    pub rollback_update: Option<duhub_proto::UpdateId>,
    /// Rollback policy: how many devices must have failed.
    #[arg(long, value_name = "N", requires = "rollback_update")]
    pub rollback_failed_count: Option<u32>,
    /// Rollback policy: what percentage of the devices must have failed.
    #[arg(
        long,
        value_name = "P",
        requires = "rollback_update",
        value_parser = clap::value_parser!(u8).range(0..=100)
    )]
    pub rollback_failed_percent: Option<u8>,
    /// A phased rollout.
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// The phased rollout options of `duhub deployment create` (a duhub extension).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Phased rollout")]
pub struct RolloutArgs {
    /// Roll out in waves: cumulative sizes, percentages of the group's compatible devices
    /// (1%,10%,100%) or counts (5,50,500; percentages may follow counts). Every device class
    /// has devices in every wave; within a class the seed ranks which devices come first.
    #[arg(long, value_name = "SIZE,...", value_delimiter = ',', value_parser = crate::cli::parse_wave)]
    pub waves: Vec<duhub_server::du::rollout::WaveSize>,
    /// How long a device must stay connected on the update to count as a success (30s, 30m,
    /// 2h, 1d, 1h30m) [default: 0s].
    #[arg(long, value_name = "DURATION", requires = "waves", value_parser = crate::cli::parse_duration)]
    pub bake: Option<u64>,
    /// Success gate: the percentage of a wave's devices that must succeed before the next wave
    /// starts [default: 100].
    #[arg(long, value_name = "P", requires = "waves")]
    pub success_percent: Option<f64>,
    /// Failure gate: it trips when more than P percent of the finished devices of the started
    /// waves failed (failed, timed out, offline after installing, back on another update during
    /// the bake) [default: 100].
    #[arg(long, value_name = "P", requires = "waves")]
    pub max_failure_percent: Option<f64>,
    /// The failure gate is evaluated once at least N devices finished [default: 0].
    #[arg(long, value_name = "N", requires = "waves")]
    pub min_executed: Option<u64>,
    /// A device not done this long after it was started counts as failed (30m, 2h, 1d).
    #[arg(long, value_name = "DURATION", requires = "waves", value_parser = crate::cli::parse_duration)]
    pub device_timeout: Option<u64>,
    /// What a tripped failure gate does: pause (start no more devices), abort (cancel every
    /// device not finished), rollback (send --rollback-update to the failed devices, and pause)
    /// [default: pause].
    #[arg(long, value_name = "pause|abort|rollback", requires = "waves", value_parser = crate::cli::parse_on_failure)]
    pub on_failure: Option<duhub_server::du::rollout::OnFailure>,
    /// Start at most N devices a minute: N/min, or N/min,double to double the rate with every
    /// wave.
    #[arg(long, value_name = "N/min[,double]", requires = "waves", value_parser = crate::cli::parse_rate)]
    pub rate: Option<duhub_server::du::rollout::Rate>,
    /// Start devices only in this daily UTC window, e.g. 02:00-05:00 (it may wrap midnight:
    /// 22:00-04:00).
    #[arg(long, value_name = "HH:MM-HH:MM", requires = "waves", value_parser = crate::cli::parse_window)]
    pub window: Option<duhub_server::du::rollout::Window>,
    /// Every wave after the first waits for `duhub deployment promote` once its predecessor
    /// passed the success gate.
    #[arg(long, requires = "waves")]
    pub approve_waves: bool,
    /// The seed that ranks the devices (the same seed picks the same devices) [default: drawn
    /// by the server, shown by `deployment status`].
    #[arg(long, value_name = "N", requires = "waves")]
    pub seed: Option<u64>,
}

/// A deployment of a group and the server.
#[derive(Debug, Args)]
pub struct DeploymentArgs {
    /// Group id.
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Deployment id.
    #[arg(value_name = "ID")]
    pub deployment: String,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub deployment status`.
#[derive(Debug, Args)]
pub struct DeploymentStatusArgs {
    /// Group id.
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Deployment id.
    #[arg(value_name = "ID")]
    pub deployment: String,
    /// Also list every device of every subgroup with its state.
    #[arg(long)]
    pub devices: bool,
    /// Wait until no device of the deployment is in progress any more (progress on stderr),
    /// then show the status; exit 1 if a device failed or time ran out. With a rollout: until
    /// it completed, was aborted or paused (exit 1), or waits for approval (exit 0).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, requires = "wait")]
    pub timeout: u64,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub deployment cancel|retry`.
#[derive(Debug, Args)]
pub struct DeploymentSubgroupArgs {
    /// Group id.
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// Deployment id.
    #[arg(value_name = "ID")]
    pub deployment: String,
    /// Only this device class subgroup [default: every subgroup of the deployment].
    #[arg(long, value_name = "CLASS")]
    pub device_class: Option<String>,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub compliance`.
#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// Only the devices of this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Only the devices of this device class subgroup of --group.
    #[arg(long, value_name = "CLASS", requires = "group")]
    pub device_class: Option<String>,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// `duhub token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List the API tokens (never their secrets).
    #[command(after_help = "Examples:\n  duhub token list")]
    List(DuArgs),
    /// Create an API token and print it once: it cannot be shown again.
    #[command(after_help = "Examples:\n  duhub token create ci-pipeline\n  duhub token create ci-pipeline --json")]
    Create(TokenCreateArgs),
    /// Revoke an API token: requests bearing it are refused from now on.
    #[command(after_help = "Examples:\n  duhub token revoke 7f3c2a90")]
    Revoke(TokenRevokeArgs),
}

/// Arguments of `duhub token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name saying who or what uses the token.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Arguments of `duhub token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// Token id (see `duhub token list`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where the server is.
    #[command(flatten)]
    pub du: DuArgs,
}

/// Parses `PROVIDER/NAME/VERSION`.
pub fn parse_update_id(text: &str) -> Result<duhub_proto::UpdateId, String> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [provider, name, version] if !provider.is_empty() && !name.is_empty() && !version.is_empty() => {
            Ok(duhub_proto::UpdateId::new(*provider, *name, *version))
        }
        _ => Err(format!("expected PROVIDER/NAME/VERSION, e.g. Contoso/Toaster/1.0, not '{text}'")),
    }
}

/// Parses a duration in seconds: `30s`, `30m`, `2h`, `1d` or several (`1h30m`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a duration such as 30s, 30m, 2h, 1d or 1h30m, not {text:?}");
    let (mut total, mut number, mut any) = (0u64, String::new(), false);
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|seconds| total.checked_add(seconds)).ok_or_else(bad)?;
        number.clear();
        any = true;
    }
    if !any || !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `--rate`: `N/min`, or `N/min,double` for a rate that doubles with every wave.
pub fn parse_rate(text: &str) -> Result<duhub_server::du::rollout::Rate, String> {
    let bad = || format!("expected N/min or N/min,double (e.g. 100/min,double), not {text:?}");
    let (rate, option) = match text.split_once(',') {
        Some((rate, option)) => (rate, Some(option.trim())),
        None => (text, None),
    };
    let double_per_wave = match option {
        None => false,
        Some("double") => true,
        Some(_) => return Err(bad()),
    };
    let devices_per_minute: u64 =
        rate.trim().strip_suffix("/min").ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
    Ok(duhub_server::du::rollout::Rate { devices_per_minute, double_per_wave })
}

/// Parses `--on-failure`.
pub fn parse_on_failure(text: &str) -> Result<duhub_server::du::rollout::OnFailure, String> {
    use duhub_server::du::rollout::OnFailure;
    match text {
        "pause" => Ok(OnFailure::Pause),
        "abort" => Ok(OnFailure::Abort),
        "rollback" => Ok(OnFailure::Rollback),
        other => Err(format!("expected pause, abort or rollback, not {other:?}")),
    }
}

/// Parses one size of `--waves`: `10%` or `20`.
pub fn parse_wave(text: &str) -> Result<duhub_server::du::rollout::WaveSize, String> {
    text.parse()
}

/// Parses `--window`: `HH:MM-HH:MM` (UTC).
pub fn parse_window(text: &str) -> Result<duhub_server::du::rollout::Window, String> {
    text.parse()
}

/// Parses an RFC 3339 date and time, e.g. `2026-12-01T02:00:00Z`.
pub fn parse_start(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 date and time such as 2026-12-01T02:00:00Z ({e})"))
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_tree_is_consistent() {
        // Clap checks ids, names and requirements of every subcommand only when it is used;
        // this checks them all at once.
        super::command().debug_assert();
    }
}
