//! ringkv-mio: the `ringkv-node` binary, and the shell code both node binaries share.
//!
//! Single responsibility: move bytes between sockets, the disk and the core. No protocol
//! decision lives here; the core decides, the shell does. Everything the io_uring shell
//! needs too (the clock, configuration and CLI, the storage executor, connection
//! buffers) is a public module of this crate, so `ringkv-uring` uses it rather than
//! copying it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod clock;
pub mod connection;
pub mod dev;
pub mod executor;
pub mod frontend;
pub mod identity;
pub mod launch;
pub mod metrics;
pub mod server;
pub mod settings;
