//! `ringkv-node`: one ringkv node over a mio event loop, or (`ringkv-node dev`) a local
//! cluster of them. `ringkv-node --help` explains every flag.

use ringkv_mio::server::Server;
use std::process::ExitCode;

fn main() -> ExitCode {
    ringkv_frontend::launch::main("ringkv-node", |settings, node_id, seed| {
        Server::start(settings, node_id, seed)?.run()?;
        Ok(())
    })
}
