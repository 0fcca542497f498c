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
//! Bounded by `hints_max`: a stand-in with a full table refuses new hints (its peer
//! then tries another stand-in or counts it as a failure).
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
}

#[derive(Debug)]
pub(crate) struct Hints {
    entries: BTreeMap<(NodeId, Vec<u8>), HintEntry>,
    max: usize,
    /// Merges admitted but not yet durable that may add an entry.
    reserved: usize,
    generations: u64,
    /// Where the last delivery round stopped (round robin over owners and keys).
    cursor: Option<(NodeId, Vec<u8>)>,
    pub(crate) peak: usize,
    /// The table holds every hint on disk (the listing at start finished).
    pub(crate) listed: bool,
}

impl Hints {
    pub(crate) fn new(max: u32) -> Hints {
        Hints {
            entries: BTreeMap::new(),
            max: max as usize,
            reserved: 0,
            generations: 0,
            cursor: None,
            peak: 0,
            listed: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The user key of every hint held.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.keys().map(|(_, key)| key.as_slice())
    }

    /// Admits a hinted write for `(owner, key)`: true if the table has room for it.
    pub(crate) fn reserve(&mut self) -> bool {
        if self.entries.len() + self.reserved >= self.max {
            return false;
        }
        self.reserved += 1;
        self.peak = self.peak.max(self.entries.len() + self.reserved);
        true
    }

    /// An admitted hinted write ended without being stored.
    pub(crate) fn unreserve(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// An admitted hinted write for `(owner, key)` is durable.
    pub(crate) fn stored(&mut self, owner: NodeId, key: &[u8]) {
        self.unreserve();
        self.generations += 1;
        let generation = self.generations;
        match self.entries.get_mut(&(owner, key.to_vec())) {
            Some(entry) => entry.generation = generation,
            None => {
                self.entries.insert(
                    (owner, key.to_vec()),
                    HintEntry {
                        generation,
                        delivering: false,
                        minted: None,
                    },
                );
            }
        }
        self.peak = self.peak.max(self.entries.len() + self.reserved);
    }

    /// A hint found on disk at start (listing the `Hints` space); false when full.
    pub(crate) fn found(&mut self, owner: NodeId, key: &[u8]) -> bool {
        if self.entries.len() + self.reserved >= self.max {
            return false;
        }
        self.generations += 1;
        let generation = self.generations;
        self.entries
            .entry((owner, key.to_vec()))
            .or_insert(HintEntry {
                generation,
                delivering: false,
                minted: None,
            });
        self.peak = self.peak.max(self.entries.len() + self.reserved);
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

    #[test]
    fn hint_keys_round_trip_and_short_ones_are_refused() {
        let mut out = Vec::new();
        hint_key(NodeId(0x0102), b"cart", &mut out);
        assert_eq!(parse_hint_key(&out), Some((NodeId(0x0102), &b"cart"[..])));
        assert_eq!(parse_hint_key(b"short"), None);
    }

    #[test]
    fn a_hint_merged_into_during_delivery_is_not_deleted() {
        let mut hints = Hints::new(8);
        assert!(hints.reserve());
        hints.stored(NodeId(2), b"k");
        let read = hints.generation(NodeId(2), b"k").unwrap();
        assert!(hints.reserve());
        hints.stored(NodeId(2), b"k");
        assert!(!hints.remove_if_unchanged(NodeId(2), b"k", read));
        let current = hints.generation(NodeId(2), b"k").unwrap();
        assert!(hints.remove_if_unchanged(NodeId(2), b"k", current));
        assert_eq!(hints.len(), 0);
    }

    #[test]
    fn delivery_goes_round_robin_and_skips_owners_not_ready() {
        let mut hints = Hints::new(8);
        for (owner, key) in [(2, b"a"), (2, b"b"), (3, b"a")] {
            assert!(hints.reserve());
            hints.stored(NodeId(owner), key);
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
        let mut hints = Hints::new(2);
        assert!(hints.reserve());
        assert!(hints.reserve());
        assert!(!hints.reserve());
        hints.unreserve();
        hints.stored(NodeId(2), b"k");
        assert!(hints.reserve(), "one stored, one admitted");
        assert!(!hints.found(NodeId(2), b"other"));
        assert_eq!(hints.peak, 2);
    }
}
