//! `ringkv-node`: one ringkv node over a mio event loop.
//!
//! The event loop arrives with the shell-mio issue. Until then the binary says so and
//! exits non-zero rather than pretending to serve.

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::init();
    eprintln!(
        "ringkv-node {}: the mio event loop is not built yet; see README.md for what works today",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
