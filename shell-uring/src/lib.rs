//! ringkv-uring: the `ringkv-node-uring` binary, the same core driven through io_uring.
//!
//! Single responsibility: the io_uring event loop. Everything that is not the loop
//! (clock, configuration, storage executor, connection buffers) comes from `ringkv_mio`
//! so the two binaries behave the same and share one copy of that code.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod probe;
