//! ringkv-storage: each node's local engine.
//!
//! Single responsibility: keep opaque key -> opaque record bytes durable and crash-safe
//! on one machine. It knows nothing of the cluster: no versions, no placement, no peers.
//! The shape (design.md section 8) is Bitcask's: append-only segment files with a
//! checksum per record, plus a persistent hash index in a memmapped file so that a
//! restart replays only the tail of the log.
//!
//! | module | what it keeps |
//! |---|---|
//! | [`record`] | the record format: magic, version, flags, lengths, sequence, CRC32 |
//! | [`segment`] | preallocated segment files, their headers, scans that cut torn tails or skip corruption |
//! | [`index`] | the hash-sorted table and its incremental checkpoints |
//! | `memory` | anonymous memory in huge pages for the index and in-memory segments |
//! | [`store`] | the store: writes (prepare, write+sync, commit), group commit, reads, scans, recovery, compaction |
//! | [`durability`] | the modes `always`, `group`, `interval:<ms>`, `none` |
//!
//! Decisions a user should know:
//! - Keys up to 1 KiB and values up to 1 MiB by default (ringkv's limits); a node may
//!   raise the value bound to 64 MiB to hold an encoded record with siblings.
//! - A write is acknowledged after the fsync that covers it in `always` and `group`
//!   modes; `interval:<ms>` can lose that window of acknowledged writes on power loss,
//!   `none` everything since the last sync.
//! - A read never returns bytes that fail their checksum: it fails with
//!   [`StorageError::Corrupt`], and the cluster repairs the key from a replica.
//! - Deleted keys stay deleted across crashes, index rebuilds and compaction
//!   (tombstones are kept until no older record of the key can exist anywhere).
//! - Compaction runs only when the caller asks, in steps of a byte budget.
//! - The engine's own threads: none. Callers bring the threads; `Store` is `Sync`.
//!
//! Directory entries are durable before anything relies on them (after a power cut
//! only what was fsynced remains, directory entries included). The audit, every
//! create, rename and unlink here and in the node's frontend:
//! - directories (a store's, the node's data directory): `segment::create_directory_durably`
//!   fsyncs each new directory's parent up to the first that existed;
//! - a new segment: created, preallocated, header written, file fsynced, then its
//!   directory fsynced (at open and at every rotation) before a record is committed
//!   in it;
//! - the index checkpoint: written into the older of `index.0` and `index.1` in
//!   place (pages, page checksums, fsync, then the header, fsync); a file created for
//!   it has its directory fsynced before the checkpoint counts (before any segment is
//!   deleted on its strength);
//! - a compaction output: `<id>.seg.tmp` written and fsynced, renamed, the directory
//!   fsynced before the index points at it;
//! - a deleted segment (compacted away): unlinked, then the directory fsynced; if the
//!   unlink is lost, the segment comes back holding only records the index no longer
//!   points at, and older than a tombstone still kept for each deleted key among them
//!   (a job of several sources deletes them one at a time, so it keeps a tombstone
//!   while any other segment, its other sources included, starts below it);
//! - leftovers removed at open (`*.tmp`, and format 1's `index.tmp` and `index`) and
//!   the `LOCK` file: not
//!   synced, on purpose; if they come back after a cut they are removed or reused at
//!   the next open;
//! - the node's `identity` file (frontend): temporary file written and fsynced,
//!   renamed, the directory fsynced, after the store directories exist.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod durability;
pub mod error;
pub mod index;
mod memory;
pub mod record;
pub mod segment;
pub mod store;

pub use durability::Durability;
pub use error::{Result, StorageError};
pub use store::{
    CachedRead, CompactionProgress, Config, Failpoint, PreparedWrite, Recovery, ScanChunk, Stats,
    Store, WriteBatch,
};
