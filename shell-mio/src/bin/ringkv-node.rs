//! `ringkv-node`: one ringkv node over a mio event loop, or (`ringkv-node dev`) a local
//! cluster of them. `ringkv-node --help` explains every flag.

use clap::Parser;
use ringkv_core::version::NodeId;
use ringkv_mio::identity;
use ringkv_mio::server::Server;
use ringkv_mio::settings::{Cli, CliCommand, NodeFlags};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Some(CliCommand::Dev(flags)) => ringkv_mio::dev::run(flags),
        None => match run_node(cli.node) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                log::error!("{error}");
                eprintln!("ringkv-node: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_node(flags: NodeFlags) -> Result<(), Box<dyn std::error::Error>> {
    let settings = flags.with_file()?.settle()?;
    let identity =
        identity::load_or_create(settings.data_dir(), settings.node_id, settings.cluster_id)?;
    let seed = identity::random_seed()?;
    let server = Server::start(settings, NodeId(identity.node_id), seed)?;
    server.run()?;
    Ok(())
}
