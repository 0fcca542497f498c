//! `ringkv-node-uring`: one ringkv node over io_uring, or (`ringkv-node-uring dev`) a
//! local cluster of them. Same flags, files and data directories as `ringkv-node`.
//! On a kernel without io_uring it stops at once and names `ringkv-node` instead.

use ringkv_uring::server::Server;
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(unavailable) = ringkv_uring::probe::probe() {
        eprintln!("ringkv-node-uring: {unavailable}");
        return ExitCode::FAILURE;
    }
    ringkv_frontend::launch::main("ringkv-node-uring", |settings, node_id, seed| {
        Server::start(settings, node_id, seed)?.run()?;
        Ok(())
    })
}
