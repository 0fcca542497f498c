//! The hash of one stored record (its key and its encoded versions), which
//! anti-entropy trees, handoff offers and reaping compare between replicas, and what a
//! tree keeps of a record.

use super::writer::is_one_shot;
use crate::placement::key_hash;
use crate::version::VersionSet;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A stored key's share of its bucket hash.
pub(crate) fn entry_hash(key: &[u8], record: &[u8]) -> u64 {
    xxh3_64_with_seed(record, key_hash(key))
}

/// True when reaping has work on `record` (`node::reap`): a tombstone and nothing
/// else (removed), or a record whose clock still names one-shot writers that hold no
/// live value (their entries are removed).
pub(crate) fn is_reapable(record: &[u8]) -> bool {
    VersionSet::record_is_deleted(record)
        || VersionSet::record_has_dead_writers(record, is_one_shot)
}

/// [`is_reapable`] of a decoded set.
pub(crate) fn set_is_reapable(set: &VersionSet) -> bool {
    (set.sibling_count() > 0 && set.is_deleted()) || set.has_dead_writers(is_one_shot)
}

/// What the tree keeps of one stored record: its entry hash, and whether reaping has
/// work on it (reaping looks only at buckets that hold such records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    pub(crate) hash: u64,
    pub(crate) reapable: bool,
}

impl TreeEntry {
    pub(crate) fn of(key: &[u8], record: &[u8]) -> TreeEntry {
        TreeEntry {
            hash: entry_hash(key, record),
            reapable: is_reapable(record),
        }
    }
}

/// (key, entry hash) of each scanned item, in scan order.
pub(crate) fn entry_hashes(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], u64)> {
    items
        .iter()
        .map(|(key, record)| (key.as_slice(), entry_hash(key, record)))
        .collect()
}

/// A data key's change by a key operation, from the record it read under its lock
/// (`old`) to the one it writes (`new`, once issued); the tree applies it once the
/// write is durable, and a scan that comes back meanwhile settles the key at `old`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TreeChange {
    pub(crate) key_hash: u64,
    pub(crate) old: Option<TreeEntry>,
    pub(crate) new: Option<TreeEntry>,
}
