//! The commands, one module per command group. Each returns an [`Outcome`] or an error
//! (which becomes exit code 2).

mod device;
mod keys;
mod manifest;
mod serve;
mod update;

use anyhow::Result;
use clap::{ArgMatches, FromArgMatches as _};

use crate::cli::{Cli, Command, DeviceCommand, InitCommand, KeysCommand, ManifestCommand, UpdateCommand};
use crate::output::Outcome;

/// Runs the parsed command.
pub fn dispatch(matches: &ArgMatches) -> Result<Outcome> {
    let cli = Cli::from_arg_matches(matches)?;
    match cli.command {
        Command::Update(UpdateCommand::Init(InitCommand::V5(args))) => {
            let occurrences = update::init_occurrences(matches);
            update::init_v5(&args, &occurrences)
        }
        Command::Update(UpdateCommand::Hash(args)) => update::hash(&args),
        Command::Update(UpdateCommand::Validate(args)) => update::validate(&args),
        Command::Keys(KeysCommand::Init(args)) => keys::init(&args),
        Command::Keys(KeysCommand::RotateSigning(args)) => keys::rotate_signing(&args),
        Command::Keys(KeysCommand::DisableSigning(args)) => keys::disable_signing(&args),
        Command::Keys(KeysCommand::Show(args)) => keys::show(&args),
        Command::Manifest(ManifestCommand::Sign(args)) => manifest::sign(&args),
        Command::Manifest(ManifestCommand::Verify(args)) => manifest::verify(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::PrintDefaultConfig => {
            print!("{}", duhub_server::config::Settings::default_toml());
            Ok(Outcome::Success)
        }
        Command::Device(DeviceCommand::Create(args)) => device::create(&args),
        Command::Device(DeviceCommand::List(args)) => device::list(&args),
        Command::Device(DeviceCommand::Show(args)) => device::show(&args),
        Command::Device(DeviceCommand::Delete(args)) => device::delete(&args),
        Command::Device(DeviceCommand::ConnectionString(args)) => device::connection_string(&args),
    }
}
