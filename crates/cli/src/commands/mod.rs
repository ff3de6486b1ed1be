//! The commands, one module per command group. Each returns an [`Outcome`] or an error
//! (which becomes exit code 2, or 1 when the server refused a request).

mod device;
mod device_twin;
mod du;
mod keys;
mod manifest;
mod serve;
mod simulate;
mod update;

use anyhow::Result;
use clap::{ArgMatches, FromArgMatches as _};

use crate::cli::{
    Cli, Command, DeploymentCommand, DeviceClassCommand, DeviceCommand, DeviceGroupCommand, GroupCommand, InitCommand,
    KeysCommand, ManifestCommand, TokenCommand, UpdateCommand,
};
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
        Command::Update(UpdateCommand::Import(args)) => du::updates::import(&args),
        Command::Update(UpdateCommand::List(args)) => du::updates::list(&args),
        Command::Update(UpdateCommand::Show(args)) => du::updates::show(&args),
        Command::Update(UpdateCommand::Delete(args)) => du::updates::delete(&args),
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
        Command::Device(DeviceCommand::List(args)) => device_twin::list(&args),
        Command::Device(DeviceCommand::Show(args)) => device::show(&args),
        Command::Device(DeviceCommand::Delete(args)) => device::delete(&args),
        Command::Device(DeviceCommand::ConnectionString(args)) => device::connection_string(&args),
        Command::Device(DeviceCommand::AgentConfig(args)) => device::agent_config(&args),
        Command::Device(DeviceCommand::Tag(args)) => device_twin::tag(&args),
        Command::Device(DeviceCommand::Group(DeviceGroupCommand::Set(args))) => device_twin::group_set(&args),
        Command::Device(DeviceCommand::Group(DeviceGroupCommand::Clear(args))) => device_twin::group_clear(&args),
        Command::Group(GroupCommand::List(args)) => du::management::group_list(&args),
        Command::Group(GroupCommand::Show(args)) => du::management::group_show(&args),
        Command::DeviceClass(DeviceClassCommand::List(args)) => du::management::device_class_list(&args),
        Command::DeviceClass(DeviceClassCommand::Show(args)) => du::management::device_class_show(&args),
        Command::Compliance(args) => du::management::compliance(&args),
        Command::Deployment(DeploymentCommand::Create(args)) => du::deployments::create(&args),
        Command::Deployment(DeploymentCommand::List(args)) => du::deployments::list(&args),
        Command::Deployment(DeploymentCommand::Show(args)) => du::deployments::show(&args),
        Command::Deployment(DeploymentCommand::Status(args)) => du::deployments::status(&args),
        Command::Deployment(DeploymentCommand::Cancel(args)) => {
            du::deployments::cancel_or_retry(&args, du::deployments::SubgroupAction::Cancel)
        }
        Command::Deployment(DeploymentCommand::Retry(args)) => {
            du::deployments::cancel_or_retry(&args, du::deployments::SubgroupAction::Retry)
        }
        Command::Deployment(DeploymentCommand::Delete(args)) => du::deployments::delete(&args),
        Command::Deployment(DeploymentCommand::Pause(args)) => {
            du::rollouts::control(&args, du::rollouts::Control::Pause)
        }
        Command::Deployment(DeploymentCommand::Resume(args)) => {
            du::rollouts::control(&args, du::rollouts::Control::Resume)
        }
        Command::Deployment(DeploymentCommand::Promote(args)) => {
            du::rollouts::control(&args, du::rollouts::Control::Promote)
        }
        Command::Deployment(DeploymentCommand::Abort(args)) => {
            du::rollouts::control(&args, du::rollouts::Control::Abort)
        }
        Command::Token(TokenCommand::List(args)) => du::tokens::list(&args),
        Command::Token(TokenCommand::Create(args)) => du::tokens::create(&args),
        Command::Token(TokenCommand::Revoke(args)) => du::tokens::revoke(&args),
        Command::Simulate(args) => simulate::simulate(&args),
    }
}
