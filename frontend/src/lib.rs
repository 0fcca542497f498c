//! ringkv-frontend: everything both node binaries (`ringkv-node` over mio,
//! `ringkv-node-uring` over io_uring) share, so that neither copies the other.
//!
//! An event loop owns sockets and the ring; this crate owns what happens between the
//! bytes and the core: each client connection's protocol state ([`session`]: RESP
//! parsing, AUTH/HELLO, per-connection command order, refused transactions, oversize
//! requests, reply order), the peer connections, the storage executor, settings and
//! CLI, metrics, the node's identity, the one `main` of both binaries ([`launch`]) and
//! the local dev cluster ([`dev`]). The protocol decisions ([`session`]) are sans-io
//! like the core: they take `now` and bytes, so the simulator drives them too.
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
pub mod session;
pub mod settings;
