//! ringkv-mio: the `ringkv-node` binary, one mio event loop over the shared
//! [`ringkv_frontend`].
//!
//! Single responsibility: move bytes between sockets and the frontend. No protocol
//! decision lives here; the core and the frontend decide, this loop does.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod load;
pub mod sender;
pub mod server;
