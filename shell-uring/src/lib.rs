//! ringkv-uring: the `ringkv-node-uring` binary, the same core driven through io_uring.
//!
//! Single responsibility: the io_uring event loop. Everything that is not the loop
//! (the frontend with the core node and every connection's protocol state, the clock,
//! configuration and CLI, the storage executor, connection buffers) comes from
//! `ringkv_frontend`, so the two binaries behave the same and share one copy of that code.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod buffers;
pub mod probe;
pub mod ring;
pub mod server;
pub mod transport;
