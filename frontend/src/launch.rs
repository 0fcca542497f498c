//! What both node binaries do before their event loop: parse the command line, run
//! `dev` when asked, settle the settings, load or create the node's identity and draw
//! its seed. One copy, so `ringkv-node` and `ringkv-node-uring` take the same flags,
//! files and data directories.

use crate::identity;
use crate::settings::{Cli, CliCommand, NodeFlags, Settings};
use clap::Parser;
use ringkv_core::version::NodeId;
use std::error::Error;
use std::process::ExitCode;

/// The whole `main` of a node binary named `binary`; `serve` runs the node until it
/// stops.
pub fn main(
    binary: &str,
    serve: impl FnOnce(Settings, NodeId, u64) -> Result<(), Box<dyn Error>>,
) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Some(CliCommand::Dev(flags)) => crate::dev::run(flags),
        None => match run_node(cli.node, serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                log::error!("{error}");
                eprintln!("{binary}: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_node(
    flags: NodeFlags,
    serve: impl FnOnce(Settings, NodeId, u64) -> Result<(), Box<dyn Error>>,
) -> Result<(), Box<dyn Error>> {
    let settings = flags.with_file()?.settle()?;
    let identity =
        identity::load_or_create(settings.data_dir(), settings.node_id, settings.cluster_id)?;
    let seed = identity::random_seed()?;
    serve(settings, NodeId(identity.node_id), seed)
}
