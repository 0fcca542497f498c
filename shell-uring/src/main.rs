//! `ringkv-node-uring`: one ringkv node over io_uring.
//!
//! Today it checks that io_uring is usable and says so; the event loop arrives with the
//! shell-uring issue. It exits non-zero rather than pretending to serve.

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::init();
    if let Err(unavailable) = ringkv_uring::probe::probe() {
        eprintln!("ringkv-node-uring: {unavailable}");
        return ExitCode::from(1);
    }
    eprintln!(
        "ringkv-node-uring {}: io_uring is available, but the io_uring event loop is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
