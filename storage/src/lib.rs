//! ringkv-storage: each node's local engine.
//!
//! Single responsibility: keep opaque key -> opaque record bytes durable and crash-safe
//! on one machine. It knows nothing of the cluster: no versions, no placement, no peers.
//! The shape (design.md section 8) is Bitcask's: append-only segment files with a
//! checksum per record, plus a persistent hash index in a memmapped file so that a
//! restart replays only the tail of the log.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod durability;
pub mod error;
pub mod index;
pub mod record;
pub mod segment;
pub mod store;

pub use durability::Durability;
pub use error::{Result, StorageError};
pub use store::{
    CompactionProgress, Config, Failpoint, PreparedWrite, ScanChunk, Stats, Store, WriteBatch,
};
