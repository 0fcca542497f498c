//! Hinted handoff bookkeeping: which writes this node holds for which other node.
//!
//! A stand-in stores a hinted write durably in its `Hints` space under the key
//! `owner id (8 bytes, big-endian) ++ key`, merging (DVVSet sync) with any hint it
//! already holds for that owner and key. This table remembers which hints exist, so
//! the node can offer them to their owners; after a restart it is rebuilt by listing
//! the `Hints` space.
//!
//! Delivery never loses a hint that arrived meanwhile: a hint is read under its key's
//! lock, and deleted (again under the lock) only if its generation, bumped by every
//! durable merge into it, is still the one that was read and delivered.
//!
//! Bounded in count (`hints_max`) and in bytes (`hint_bytes_max`, the records' sizes
//! as stored): a hinted write is admitted only while the hints held plus those admitted
//! and not yet durable fit both, with the bytes it may add (the versions a peer sent,
//! or the key, value and context a stand-in mints) reserved until it is durable, when
//! the record's stored size replaces its hint's old one. A stand-in with a full table
//! refuses the write as overloaded (its peer then tries another stand-in or counts it
//! as a failure); a coordinator keeping a hint for a down replica keeps none (the
//! replica catches up by anti-entropy instead). Hints found on disk at start count with
//! their stored sizes; a table that fills while listing them stops listing, and
//! reaping, which must know every hint, waits (see `node::reap`).
//!
//! A stand-in that mints a write itself (no replica of the key answers it) mints it
//! under a one-shot writer id, which costs the key's clock an entry. It keeps minting
//! a hint's later writes under the same id while the hint's record holds the last dot
//! it minted under it (so the record remembers every such dot and the next counter is
//! new): a hot key written through a long outage costs one entry, not one per write,
//! which would pass the clock's bound and leave the key unwritable. Once the record is
//! delivered and deleted (or after a restart) the id is forgotten and a fresh one is
//! drawn.

use crate::version::{Dot, NodeId, VersionSet};
use std::collections::BTreeMap;
use std::ops::Bound;

/// The storage key of `owner`'s hint for `key`.
pub(crate) fn hint_key(owner: NodeId, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&owner.0.to_be_bytes());
    out.extend_from_slice(key);
}

/// The owner and key of a hint's storage key.
pub(crate) fn parse_hint_key(stored: &[u8]) -> Option<(NodeId, &[u8])> {
    let (owner, key) = stored.split_at_checked(8)?;
    let owner = u64::from_be_bytes(owner.try_into().ok()?);
    Some((NodeId(owner), key))
}

#[derive(Clone, Copy, Debug)]
struct HintEntry {
    generation: u64,
    delivering: bool,
    /// The last dot this node minted as a stand-in into the hint's record.
    minted: Option<Dot>,
    /// The record's size as last stored.
    bytes: u32,
}

/// A hinted write admitted against the table's bounds: it holds one entry and `bytes`
/// of room until it is stored ([`Hints::stored`]) or dropped ([`Hints::unreserve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    bytes: u32,
}

/// A hinted write under way (a key operation's): whose hint it is, its reservation,
/// and the size of the record it stored, once it queued one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HintWrite {
    pub(crate) owner: NodeId,
    pub(crate) reservation: Reservation,
    pub(crate) record_bytes: Option<u32>,
}

impl HintWrite {
    pub(crate) fn new(owner: NodeId, reservation: Reservation) -> HintWrite {
        HintWrite {
            owner,
            reservation,
            record_bytes: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Hints {
    entries: BTreeMap<(NodeId, Vec<u8>), HintEntry>,
    max: usize,
    bytes_max: u64,
    /// The stored size of every hint's record.
    bytes: u64,
    /// Merges admitted but not yet durable that may add an entry, and the bytes they
    /// may add.
    reserved: usize,
    reserved_bytes: u64,
    generations: u64,
    /// Where the last delivery round stopped (round robin over owners and keys).
    cursor: Option<(NodeId, Vec<u8>)>,
    pub(crate) peak: usize,
    pub(crate) peak_bytes: u64,
    /// Hinted writes refused for lack of room.
    pub(crate) refused: u64,
    /// The table holds every hint on disk (the listing at start finished).
    pub(crate) listed: bool,
}

impl Hints {
    pub(crate) fn new(max: u32, bytes_max: u64) -> Hints {
        Hints {
            entries: BTreeMap::new(),
            max: max as usize,
            bytes_max,
            bytes: 0,
            reserved: 0,
            reserved_bytes: 0,
            generations: 0,
            cursor: None,
            peak: 0,
            peak_bytes: 0,
            refused: 0,
            listed: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when this node holds no hint and admitted none that may yet be stored,
    /// and the hints on disk at start have been listed (none is unknown).
    pub(crate) fn holds_none(&self) -> bool {
        self.listed && self.entries.is_empty() && self.reserved == 0
    }

    /// The stored size of every hint held, in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when one more hint of `bytes` fits beside those held and admitted.
    fn has_room(&self, bytes: u64) -> bool {
        self.entries.len() + self.reserved < self.max
            && self.bytes + self.reserved_bytes + bytes <= self.bytes_max
    }

    fn note_peaks(&mut self) {
        self.peak = self.peak.max(self.entries.len() + self.reserved);
        self.peak_bytes = self.peak_bytes.max(self.bytes + self.reserved_bytes);
    }

    /// The user key of every hint held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.keys().map(|(_, key)| key.as_slice())
    }

    /// Admits a hinted write that may add up to `bytes` to its hint's record: its
    /// reservation, or None when the table has no room for it.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Option<Reservation> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        if !self.has_room(u64::from(bytes)) {
            self.refused += 1;
            return None;
        }
        self.reserved += 1;
        self.reserved_bytes += u64::from(bytes);
        self.note_peaks();
        Some(Reservation { bytes })
    }

    /// An admitted hinted write ended without being stored.
    pub(crate) fn unreserve(&mut self, reservation: Reservation) {
        self.reserved = self.reserved.saturating_sub(1);
        self.reserved_bytes = self
            .reserved_bytes
            .saturating_sub(u64::from(reservation.bytes));
    }

    /// An admitted hinted write into `write.owner`'s hint for `key` is durable (its
    /// record was not rewritten when `write.record_bytes` is None).
    pub(crate) fn stored(&mut self, key: &[u8], write: HintWrite) {
        let HintWrite {
            owner,
            reservation,
            record_bytes,
        } = write;
        self.unreserve(reservation);
        self.generations += 1;
        let generation = self.generations;
        match self.entries.get_mut(&(owner, key.to_vec())) {
            Some(entry) => {
                entry.generation = generation;
                if let Some(record_bytes) = record_bytes {
                    self.bytes = self.bytes - u64::from(entry.bytes) + u64::from(record_bytes);
                    entry.bytes = record_bytes;
                }
            }
            None => {
                let bytes = record_bytes.unwrap_or(reservation.bytes);
                self.bytes += u64::from(bytes);
                self.entries.insert(
                    (owner, key.to_vec()),
                    HintEntry {
                        generation,
                        delivering: false,
                        minted: None,
                        bytes,
                    },
                );
            }
        }
        self.note_peaks();
    }

    /// A hint found on disk at start (listing the `Hints` space), its record
    /// `record_bytes` long; false when the table has no room for it.
    pub(crate) fn found(&mut self, owner: NodeId, key: &[u8], record_bytes: u32) -> bool {
        if self.entries.contains_key(&(owner, key.to_vec())) {
            return true;
        }
        if !self.has_room(u64::from(record_bytes)) {
            return false;
        }
        self.generations += 1;
        let generation = self.generations;
        self.bytes += u64::from(record_bytes);
        self.entries.insert(
            (owner, key.to_vec()),
            HintEntry {
                generation,
                delivering: false,
                minted: None,
                bytes: record_bytes,
            },
        );
        self.note_peaks();
        true
    }

    /// A write this node minted as a stand-in into `(owner, key)`'s record as `dot`
    /// is durable.
    pub(crate) fn minted(&mut self, owner: NodeId, key: &[u8], dot: Dot) {
        if let Some(entry) = self.entries.get_mut(&(owner, key.to_vec())) {
            entry.minted = Some(dot);
        }
    }

    /// The writer id a stand-in write into `(owner, key)`'s record, read as `current`
    /// under the key's lock, may be minted under: the one its last write was, when the
    /// record still holds that write's dot as its writer's newest (see the module docs).
    pub(crate) fn stand_in_writer(
        &self,
        owner: NodeId,
        key: &[u8],
        current: &VersionSet,
    ) -> Option<NodeId> {
        let minted = self.entries.get(&(owner, key.to_vec()))?.minted?;
        (current.counter_of(minted.node) == minted.counter).then_some(minted.node)
    }

    pub(crate) fn generation(&self, owner: NodeId, key: &[u8]) -> Option<u64> {
        self.entries
            .get(&(owner, key.to_vec()))
            .map(|entry| entry.generation)
    }

    /// Forgets the hint if nothing merged into it since `generation`: true if it did.
    pub(crate) fn remove_if_unchanged(
        &mut self,
        owner: NodeId,
        key: &[u8],
        generation: u64,
    ) -> bool {
        let id = (owner, key.to_vec());
        match self.entries.get(&id) {
            Some(entry) if entry.generation == generation => {
                self.bytes -= u64::from(entry.bytes);
                self.entries.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// The next hint not being delivered whose owner `ready` accepts, marked as being
    /// delivered; round robin from where the last call stopped.
    pub(crate) fn next_deliverable(
        &mut self,
        ready: impl Fn(NodeId) -> bool,
    ) -> Option<(NodeId, Vec<u8>)> {
        let after = match &self.cursor {
            Some(cursor) => Bound::Excluded(cursor.clone()),
            None => Bound::Unbounded,
        };
        let found = self
            .entries
            .range((after, Bound::Unbounded))
            .chain(self.entries.range(..))
            .find(|((owner, _), entry)| !entry.delivering && ready(*owner))
            .map(|(id, _)| id.clone());
        let id = found?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.delivering = true;
        }
        self.cursor = Some(id.clone());
        Some(id)
    }

    /// A delivery attempt ended (whatever its outcome).
    pub(crate) fn delivery_ended(&mut self, owner: NodeId, key: &[u8]) {
        if let Some(entry) = self.entries.get_mut(&(owner, key.to_vec())) {
            entry.delivering = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_as(owner: NodeId, reservation: Reservation, record_bytes: u32) -> HintWrite {
        HintWrite {
            record_bytes: Some(record_bytes),
            ..HintWrite::new(owner, reservation)
        }
    }

    #[test]
    fn hint_keys_round_trip_and_short_ones_are_refused() {
        let mut out = Vec::new();
        hint_key(NodeId(0x0102), b"cart", &mut out);
        assert_eq!(parse_hint_key(&out), Some((NodeId(0x0102), &b"cart"[..])));
        assert_eq!(parse_hint_key(b"short"), None);
    }

    #[test]
    fn a_hint_merged_into_during_delivery_is_not_deleted() {
        let mut hints = Hints::new(8, 1 << 20);
        let reservation = hints.reserve(10).unwrap();
        hints.stored(b"k", stored_as(NodeId(2), reservation, 10));
        let read = hints.generation(NodeId(2), b"k").unwrap();
        let reservation = hints.reserve(10).unwrap();
        hints.stored(b"k", stored_as(NodeId(2), reservation, 12));
        assert!(!hints.remove_if_unchanged(NodeId(2), b"k", read));
        let current = hints.generation(NodeId(2), b"k").unwrap();
        assert!(hints.remove_if_unchanged(NodeId(2), b"k", current));
        assert_eq!(hints.len(), 0);
        assert_eq!(hints.bytes(), 0);
    }

    #[test]
    fn delivery_goes_round_robin_and_skips_owners_not_ready() {
        let mut hints = Hints::new(8, 1 << 20);
        for (owner, key) in [(2, b"a"), (2, b"b"), (3, b"a")] {
            let reservation = hints.reserve(10).unwrap();
            hints.stored(key, stored_as(NodeId(owner), reservation, 10));
        }
        let first = hints.next_deliverable(|_| true).unwrap();
        assert_eq!(first, (NodeId(2), b"a".to_vec()));
        let second = hints.next_deliverable(|owner| owner == NodeId(3)).unwrap();
        assert_eq!(second, (NodeId(3), b"a".to_vec()));
        let third = hints.next_deliverable(|_| true).unwrap();
        assert_eq!(third, (NodeId(2), b"b".to_vec()));
        assert_eq!(
            hints.next_deliverable(|_| true),
            None,
            "all are being delivered"
        );
        hints.delivery_ended(NodeId(2), b"a");
        assert_eq!(
            hints.next_deliverable(|_| true),
            Some((NodeId(2), b"a".to_vec()))
        );
    }

    #[test]
    fn the_table_refuses_past_its_bound_counting_admitted_writes() {
        let mut hints = Hints::new(2, 1 << 20);
        let first = hints.reserve(10).unwrap();
        let second = hints.reserve(10).unwrap();
        assert_eq!(hints.reserve(10), None);
        hints.unreserve(first);
        hints.stored(b"k", stored_as(NodeId(2), second, 10));
        assert!(hints.reserve(10).is_some(), "one stored, one admitted");
        assert_eq!(hints.reserve(10), None);
        assert!(!hints.found(NodeId(2), b"other", 10));
        assert_eq!(hints.peak, 2);
    }

    #[test]
    fn the_table_refuses_past_its_byte_bound_and_frees_what_delivery_deletes() {
        let mut hints = Hints::new(100, 1_000);
        let first = hints.reserve(600).unwrap();
        assert_eq!(
            hints.reserve(500),
            None,
            "600 admitted: 500 more would pass 1,000"
        );
        let small = hints.reserve(400).unwrap();
        hints.unreserve(small);
        // Stored, the record's size replaces what was reserved.
        hints.stored(b"a", stored_as(NodeId(2), first, 300));
        assert_eq!(hints.bytes(), 300);
        let second = hints.reserve(700).unwrap();
        hints.stored(b"b", stored_as(NodeId(3), second, 650));
        assert_eq!(hints.bytes(), 950);
        assert_eq!(hints.reserve(100), None);
        // A later write into a hint's record replaces its size.
        let again = hints.reserve(50).unwrap();
        hints.stored(b"a", stored_as(NodeId(2), again, 320));
        assert_eq!(hints.bytes(), 970);
        // Delivered and deleted, its bytes are free again.
        let generation = hints.generation(NodeId(3), b"b").unwrap();
        assert!(hints.remove_if_unchanged(NodeId(3), b"b", generation));
        assert_eq!(hints.bytes(), 320);
        assert!(hints.reserve(600).is_some());
        // Hints listed at start count with their stored sizes.
        let mut restarted = Hints::new(100, 1_000);
        assert!(restarted.found(NodeId(2), b"a", 900));
        assert!(!restarted.found(NodeId(2), b"b", 200));
        assert_eq!(restarted.peak_bytes, 900);
    }
}
