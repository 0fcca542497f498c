//! Versions: dotted version vector sets (DVVSet), the structure Riak 2.x uses to track
//! concurrent writes without sibling explosion (Almeida et al., "Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", 2014).
//!
//! A [`VersionSet`] holds one entry per node that ever coordinated a write of the key:
//! the node's counter and its values still live, newest first, where the value at
//! position `i` carries the dot `(node, counter - i)`. A value with no dot (an
//! *anonymous* value) exists only while a client's write is being applied. The clock
//! grows with the writers of the key, never with its clients or plain writes: member
//! lanes and epochs, plus one-shot writers (a stand-in's hint record, each attempt of a
//! retried forward, a write whose lanes all held unseen siblings). Entries of one-shot
//! writers that hold no live value are removed only when every replica agrees
//! ([`VersionSet::without_dead_writers`], decided by `node::reap`); nothing else is
//! ever truncated, and a write or merge that would pass
//! `VersionBounds::coordinators_max` is refused.
//!
//! The operations a node needs:
//! - [`VersionSet::update`]: the coordinator applies a client's write, made with the
//!   context the client read (or the coordinator's own view for a plain SET), and gives
//!   it a dot. What the context has seen is superseded; everything else stays a sibling.
//! - [`VersionSet::sync`]: replicas merge; commutative, associative and idempotent.
//! - [`VersionSet::join`]: the context a read returns (a [`VersionVector`]), handed to
//!   clients as an opaque printable token ([`VersionVector::to_token`]).
//! - [`VersionSet::last_write_wins`]: plain GET's deterministic pick: the latest writer
//!   timestamp, ties broken by the dot.
//!
//! The invariant callers must keep: a node mints dots only for its own id, and only by
//! [`VersionSet::update`] against its own stored versions of the key. Two nodes minting
//! the same dot for different values would make replicas disagree forever, so a
//! coordinator that is not a replica of the key forwards the write to one that is.
//!
//! A forwarded write that may be minted more than once (its first replica went silent
//! after taking it, and a retry was minted elsewhere) stays one sibling: every attempt
//! has a one-shot id, the first copy's value names its attempt's id as its *alias*,
//! and [`VersionSet::update_retry`] mints a retry as the dot `(id, 1)` of its own
//! attempt with every earlier attempt's `(id, 1)` in its context. A clock holding an
//! attempt's dot covers that attempt's copy (the first copy through its alias), so a
//! later attempt supersedes every earlier one wherever they meet, and an attempt
//! arriving where any attempt's dot already is mints nothing. Each such dot is minted
//! at most once, by the one node its attempt went to: the same dot minted twice, on two
//! nodes holding different versions, could name two different causal pasts, and two
//! plain writes retried that way superseded each other until neither was left (see
//! `node::coordinator::forward`).
//!
//! A delete is an update with a [`Value::tombstone`]; when a tombstone may be reaped is
//! the node's decision (`node::reap`). A node that reaped a key mints its next dots for
//! it above a counter floor ([`VersionSet::update_above`]).

use crate::bytes::{DecodeError, PutBytes, Reader};
use core::cmp::Ordering;
use core::fmt;

/// A server node's identity in clocks and dots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// The unique event that created a value: the `counter`-th write coordinated by `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

/// One written value (or a tombstone) with the coordinator's wall-clock time, used only
/// for the last-write-wins pick, never for causality.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    pub timestamp_ms: u64,
    /// `None` for a tombstone.
    pub data: Option<Vec<u8>>,
    /// The first attempt's one-shot id, for a value minted from a forwarded write's
    /// first attempt: every retry of the same client write has `(alias, 1)` in its
    /// context, and any clock holding that dot covers this value too (see
    /// [`VersionSet::sync`]), so one client write never survives as two siblings.
    pub alias: Option<NodeId>,
}

impl Value {
    /// A value of `data` written at `timestamp_ms`.
    pub fn new(data: Vec<u8>, timestamp_ms: u64) -> Value {
        Value {
            timestamp_ms,
            data: Some(data),
            alias: None,
        }
    }

    /// A delete written at `timestamp_ms`.
    pub fn tombstone(timestamp_ms: u64) -> Value {
        Value {
            timestamp_ms,
            data: None,
            alias: None,
        }
    }

    /// This value, minted from a forwarded write whose retries take the dot
    /// `(alias, 1)`.
    pub fn with_alias(self, alias: NodeId) -> Value {
        Value {
            alias: Some(alias),
            ..self
        }
    }

    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    node: NodeId,
    counter: u64,
    /// Newest first; `values.len() <= counter`.
    values: Vec<Value>,
}

/// A dotted version vector set: the versions of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSet {
    /// Sorted by node, one per coordinator.
    entries: Vec<Entry>,
    anonymous: Vec<Value>,
}

/// A sibling as seen by a reader: its value and, when it has one, its dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sibling<'a> {
    pub dot: Option<Dot>,
    pub value: &'a Value,
}

/// The causal context of a read: for each coordinator, how many of its writes it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    /// Sorted by node, counters at least 1.
    entries: Vec<(NodeId, u64)>,
}

impl VersionSet {
    /// No versions at all (a key never written).
    pub fn new() -> VersionSet {
        VersionSet::default()
    }

    /// A client's write of `value` made after reading `context`, before a coordinator
    /// gives it a dot (DVVSet's `new(VV, V)`).
    pub fn from_context(context: &VersionVector, value: Value) -> VersionSet {
        VersionSet {
            entries: context
                .entries
                .iter()
                .map(|&(node, counter)| Entry {
                    node,
                    counter,
                    values: Vec::new(),
                })
                .collect(),
            anonymous: vec![value],
        }
    }

    /// The coordinator's update: `write` (from [`VersionSet::from_context`]) applied to
    /// the coordinator's current versions `current`, with a new dot of `coordinator`.
    /// Everything `write`'s context covers is superseded; the rest stays as siblings.
    pub fn update(write: VersionSet, current: &VersionSet, coordinator: NodeId) -> VersionSet {
        VersionSet::update_above(write, current, coordinator, 0)
    }

    /// [`VersionSet::update`], except that unless the coordinator's entry holds live
    /// values, the new dot's counter is above `floor`.
    ///
    /// A coordinator whose copy of a key was removed (a reaped tombstone) no longer
    /// knows which counters it used for the key, while other copies, and the contexts
    /// clients still hold, may name lower ones: an old context can even bring back a
    /// stale entry of the coordinator. It keeps a floor at least as high as every
    /// counter it removed, and a dot above the floor is one no copy has seen. An entry
    /// with live values came from a record holding the coordinator's newest dots (its
    /// counter cannot jump: the values' dots count down from it).
    pub fn update_above(
        write: VersionSet,
        current: &VersionSet,
        coordinator: NodeId,
        floor: u64,
    ) -> VersionSet {
        let VersionSet {
            entries,
            mut anonymous,
        } = write;
        if let Some(alias) = anonymous.last().and_then(|value| value.alias) {
            if current.minted_as(&[alias]).is_some() {
                // A forward's first attempt arriving where it was minted already (a
                // retry's context naming its alias was merged here, or its copy is
                // here): minting it again with a context taken from `current` could
                // supersede the very write it is.
                return current.clone();
            }
        }
        let Some(value) = anonymous.pop() else {
            // Nothing to write: the result is what the coordinator had, plus the context.
            return VersionSet {
                entries,
                anonymous: Vec::new(),
            }
            .sync(current);
        };
        let context_only = VersionSet {
            entries,
            anonymous: Vec::new(),
        };
        let mut merged = context_only.sync(current);
        merged.event(coordinator, value, floor);
        // The context may name an attempt's dot whose first copy is still here.
        merged.drop_covered_by_retries();
        merged
    }

    /// The coordinator's update for a *retried* forward: `write` is minted as the dot
    /// `(id, 1)` of its attempt's one-shot id, with the dot `(earlier, 1)` of every
    /// earlier attempt (the first attempt's alias first) added to its context, so it
    /// supersedes whichever earlier copy it meets. When `current` holds any attempt's
    /// dot or the first copy's value, the write was minted before (here, or elsewhere
    /// and merged here): nothing new is minted and the result is `current`.
    pub fn update_retry(
        write: VersionSet,
        current: &VersionSet,
        id: NodeId,
        earlier: &[NodeId],
    ) -> VersionSet {
        if current.counter_of(id) > 0 || current.minted_as(earlier).is_some() {
            return current.clone();
        }
        let mut write = write;
        for &attempt in earlier {
            write.cover(attempt);
        }
        VersionSet::update_above(write, current, id, 0)
    }

    /// The dot that stands here for the forwarded write whose attempts' ids are
    /// `attempts` (oldest first): its live copy (the first copy, aliased one of them,
    /// or an attempt's dot), else the latest attempt dot `(id, 1)` the clock holds
    /// (merged from elsewhere, or named by a later attempt's context; possibly
    /// superseded since).
    pub fn minted_as(&self, attempts: &[NodeId]) -> Option<Dot> {
        if attempts.is_empty() {
            return None; // a write coordinated where it arrived: the common path
        }
        let of_write = |sibling: &Sibling<'_>| {
            sibling.value.alias.is_some_and(|a| attempts.contains(&a))
                || sibling
                    .dot
                    .is_some_and(|dot| dot.counter == 1 && attempts.contains(&dot.node))
        };
        self.siblings()
            .find(of_write)
            .and_then(|sibling| sibling.dot)
            .or_else(|| {
                attempts
                    .iter()
                    .rev()
                    .find(|&&node| self.counter_of(node) > 0)
                    .map(|&node| Dot { node, counter: 1 })
            })
    }

    /// Adds the dot `(node, 1)` to the clock (a context entry with no value).
    fn cover(&mut self, node: NodeId) {
        if let Err(index) = self.entries.binary_search_by_key(&node, |entry| entry.node) {
            self.entries.insert(
                index,
                Entry {
                    node,
                    counter: 1,
                    values: Vec::new(),
                },
            );
        }
    }

    /// Removes every first copy whose alias's dot `(alias, 1)` this set's clock holds:
    /// a retry of the same client write was minted, which stands for it. Only a value
    /// that is the oldest live one of its entry can go (an entry's live values are its
    /// newest dots); a node mints a forwarded write only in a lane whose live values
    /// the write covers, so it is always the only live value of its lane.
    fn drop_covered_by_retries(&mut self) {
        for index in 0..self.entries.len() {
            while let Some(alias) = self.entries[index].values.last().and_then(|v| v.alias) {
                if self.counter_of(alias) == 0 {
                    break;
                }
                self.entries[index].values.pop();
            }
        }
    }

    /// A new dot of `node` for `value`, above `floor` unless the entry holds values
    /// (their dots are counted down from the counter, so it cannot jump).
    fn event(&mut self, node: NodeId, value: Value, floor: u64) {
        match self.entries.binary_search_by_key(&node, |entry| entry.node) {
            Ok(index) => {
                let entry = &mut self.entries[index];
                // Saturating: a counter at u64::MAX (a hostile peer's) must not panic.
                entry.counter = if entry.values.is_empty() {
                    entry.counter.max(floor).saturating_add(1)
                } else {
                    entry.counter.saturating_add(1)
                };
                entry.values.insert(0, value);
            }
            Err(index) => self.entries.insert(
                index,
                Entry {
                    node,
                    counter: floor.saturating_add(1),
                    values: vec![value],
                },
            ),
        }
    }

    /// True when `node`'s entry holds a live value whose dot `context` does not cover:
    /// a sibling a client with that context was never shown. A write by `node` with
    /// that context would get a dot above it, and no version vector can name the
    /// write without naming that sibling too (see `VersionVector::with_dot`).
    pub fn has_unseen_values(&self, node: NodeId, context: &VersionVector) -> bool {
        self.entries
            .binary_search_by_key(&node, |entry| entry.node)
            .is_ok_and(|index| {
                let entry = &self.entries[index];
                !entry.values.is_empty() && entry.counter > context.counter_of(node)
            })
    }

    /// The counter of `node`'s entry in the clock (0: none).
    pub fn counter_of(&self, node: NodeId) -> u64 {
        self.entries
            .binary_search_by_key(&node, |entry| entry.node)
            .map_or(0, |index| self.entries[index].counter)
    }

    /// True when `bytes`, an encoded set, holds at least one sibling and every sibling
    /// is a tombstone: a key whose only content is its delete. Reads the record in
    /// place without allocating; a record that does not parse is not deleted.
    pub fn record_is_deleted(bytes: &[u8]) -> bool {
        fn values_deleted(reader: &mut Reader<'_>, count: u16) -> Option<bool> {
            for _ in 0..count {
                let flags = skip_encoded_value(reader)?;
                if flags & VALUE_FLAG_TOMBSTONE == 0 {
                    return Some(false);
                }
            }
            Some(true)
        }
        let mut reader = Reader::new(bytes);
        let parse = |reader: &mut Reader<'_>| -> Option<bool> {
            if reader.u8().ok()? != ENCODING_VERSION {
                return None;
            }
            let mut siblings = 0usize;
            for _ in 0..reader.u16().ok()? {
                reader.u64().ok()?;
                reader.u64().ok()?;
                let count = reader.u16().ok()?;
                siblings += usize::from(count);
                if !values_deleted(reader, count)? {
                    return Some(false);
                }
            }
            let count = reader.u16().ok()?;
            siblings += usize::from(count);
            let deleted = values_deleted(reader, count)?;
            Some(deleted && siblings > 0 && reader.remaining() == 0)
        };
        parse(&mut reader).unwrap_or(false)
    }

    /// True when `bytes`, an encoded set, has a clock entry of a writer `dead` accepts
    /// that holds no live value: it only remembers dots that were superseded (see
    /// [`VersionSet::without_dead_writers`]). Reads the record in place without
    /// allocating; a record that does not parse has none.
    pub fn record_has_dead_writers(bytes: &[u8], dead: impl Fn(NodeId) -> bool) -> bool {
        let mut reader = Reader::new(bytes);
        let mut parse = || -> Option<bool> {
            if reader.u8().ok()? != ENCODING_VERSION {
                return None;
            }
            let mut found = false;
            for _ in 0..reader.u16().ok()? {
                let node = NodeId(reader.u64().ok()?);
                reader.u64().ok()?;
                let count = reader.u16().ok()?;
                found |= count == 0 && dead(node);
                for _ in 0..count {
                    skip_encoded_value(&mut reader)?;
                }
            }
            Some(found)
        };
        parse().unwrap_or(false)
    }

    /// True when this set has a clock entry of a writer `dead` accepts that holds no
    /// live value (what [`VersionSet::record_has_dead_writers`] tells of a record).
    pub fn has_dead_writers(&self, dead: impl Fn(NodeId) -> bool) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.values.is_empty() && dead(entry.node))
    }

    /// This set without the clock entries of writers `dead` accepts that hold no live
    /// value. Only safe where no copy anywhere still holds a value with one of their
    /// dots (a copy would come back as a sibling) and no write can still arrive that
    /// an entry's dot would mark as already here: `node::reap` decides when. The
    /// callers pass writers that never mint again (one-shot ids), so a removed entry
    /// is never needed to count above.
    pub fn without_dead_writers(&self, dead: impl Fn(NodeId) -> bool) -> VersionSet {
        let mut set = self.clone();
        set.entries
            .retain(|entry| !entry.values.is_empty() || !dead(entry.node));
        set
    }

    /// Merges two replicas' versions of the same key.
    pub fn sync(&self, other: &VersionSet) -> VersionSet {
        let anonymous = if self.is_dominated_by(other) {
            other.anonymous.clone()
        } else if other.is_dominated_by(self) {
            self.anonymous.clone()
        } else {
            let mut union = self.anonymous.clone();
            for value in &other.anonymous {
                if !union.contains(value) {
                    union.push(value.clone());
                }
            }
            union
        };
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut left, mut right) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            let next = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(_), None) => left.next().cloned(),
                (None, Some(_)) => right.next().cloned(),
                (Some(a), Some(b)) => match a.node.cmp(&b.node) {
                    Ordering::Less => left.next().cloned(),
                    Ordering::Greater => right.next().cloned(),
                    Ordering::Equal => {
                        let (a, b) = (left.next(), right.next());
                        a.zip(b).map(|(a, b)| merge_entries(a, b))
                    }
                },
            };
            entries.extend(next);
        }
        let mut merged = VersionSet { entries, anonymous };
        merged.drop_covered_by_retries();
        merged
    }

    /// True when every event `self` knows of, `other` knows too, and `other` knows
    /// more (DVVSet's `less`).
    pub fn is_dominated_by(&self, other: &VersionSet) -> bool {
        strictly_greater(&other.entries, &self.entries)
    }

    /// The context of these versions: the version vector to hand to a reader.
    pub fn join(&self) -> VersionVector {
        VersionVector {
            entries: self.entries.iter().map(|e| (e.node, e.counter)).collect(),
        }
    }

    /// Every live sibling (tombstones included), anonymous ones first.
    pub fn siblings(&self) -> impl Iterator<Item = Sibling<'_>> + '_ {
        let anonymous = self
            .anonymous
            .iter()
            .map(|value| Sibling { dot: None, value });
        let dotted = self.entries.iter().flat_map(|entry| {
            entry
                .values
                .iter()
                .enumerate()
                .map(move |(age, value)| Sibling {
                    dot: Some(Dot {
                        node: entry.node,
                        counter: entry.counter - age as u64,
                    }),
                    value,
                })
        });
        anonymous.chain(dotted)
    }

    /// Sabotage for the simulator's checkers: drops every sibling but the
    /// last-write-wins pick while keeping the clock, as a buggy merge would.
    #[cfg(feature = "sabotage")]
    pub fn sabotage_keep_newest_sibling(&mut self) {
        let Some(newest) = self.last_write_wins().cloned() else {
            return;
        };
        let mut kept = false;
        self.anonymous.retain(|value| {
            let keep = !kept && *value == newest;
            kept |= keep;
            keep
        });
        for entry in &mut self.entries {
            entry.values.retain(|value| {
                let keep = !kept && *value == newest;
                kept |= keep;
                keep
            });
        }
    }

    /// Number of siblings.
    pub fn sibling_count(&self) -> usize {
        self.anonymous.len() + self.entries.iter().map(|e| e.values.len()).sum::<usize>()
    }

    /// Number of coordinators in the clock.
    pub fn clock_size(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no sibling, or every sibling is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.siblings().all(|s| s.value.is_tombstone())
    }

    /// Plain GET's pick among siblings: the latest timestamp, ties broken by the larger
    /// dot (a dotted value beats an anonymous one). Deterministic on every replica.
    pub fn last_write_wins(&self) -> Option<&Value> {
        self.siblings()
            .max_by(|a, b| {
                a.value
                    .timestamp_ms
                    .cmp(&b.value.timestamp_ms)
                    .then(a.dot.cmp(&b.dot))
                    .then_with(|| a.value.cmp(b.value))
            })
            .map(|sibling| sibling.value)
    }

    /// The application merge hook: `merge` sees every sibling and returns the one value
    /// to write back (with this set's [`join`](VersionSet::join) as the context).
    pub fn reconcile(&self, merge: impl FnOnce(&[Sibling<'_>]) -> Value) -> Value {
        let siblings: Vec<Sibling<'_>> = self.siblings().collect();
        merge(&siblings)
    }

    /// The most bytes minting `value` under a clock of `clock_entries` entries (its
    /// context's and its dot's) can add to a stored set's encoding: the set's header
    /// when there was none, an entry per clock entry and the value itself.
    pub fn mint_growth_bytes(value: &Value, clock_entries: usize) -> usize {
        const HEADER_BYTES: usize = 1 + 2 + 2;
        const ENTRY_BYTES: usize = 8 + 8 + 2;
        const VALUE_BYTES: usize = 8 + 1 + 8 + 4;
        HEADER_BYTES
            + ENTRY_BYTES * clock_entries
            + VALUE_BYTES
            + value.data.as_ref().map_or(0, Vec::len)
    }

    /// The length of [`VersionSet::encode`]'s output.
    pub fn encoded_size_bytes(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|entry| 8 + 8 + 2 + entry.values.iter().map(encoded_value_bytes).sum::<usize>())
            .sum();
        let anonymous: usize = self.anonymous.iter().map(encoded_value_bytes).sum();
        1 + 2 + entries + 2 + anonymous
    }

    /// Appends the set's binary form (used for storage records and peer messages).
    ///
    /// `u8` format version, `u16` entry count, then per entry `u64` node, `u64` counter,
    /// `u16` value count and the values; then `u16` anonymous count and the values. A
    /// value is `u64` timestamp, `u8` flags (bit 0 tombstone, bit 1 aliased), the `u64`
    /// alias when aliased, `u32` length, bytes.
    ///
    /// The counts fit their fields because a node keeps every set within
    /// [`VersionBounds`] (at most 1024 siblings and 1024 coordinators by default,
    /// values under the client limit) before it stores or sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // One allocation at most: grown value by value, a record's buffer was
        // reallocated several times per write (a closed-loop profile's `realloc`s).
        out.reserve(self.encoded_size_bytes());
        out.put_u8(ENCODING_VERSION);
        out.put_u16(self.entries.len() as u16);
        for entry in &self.entries {
            out.put_u64(entry.node.0);
            out.put_u64(entry.counter);
            out.put_u16(entry.values.len() as u16);
            for value in &entry.values {
                encode_value(value, out);
            }
        }
        out.put_u16(self.anonymous.len() as u16);
        for value in &self.anonymous {
            encode_value(value, out);
        }
    }

    /// Decodes a whole encoded set, checking every count and length against `bounds`
    /// before allocating, and the structural invariants (sorted unique nodes, no more
    /// values than a counter allows).
    pub fn decode(bytes: &[u8], bounds: VersionBounds) -> Result<VersionSet, DecodeError> {
        let mut reader = Reader::new(bytes);
        if reader.u8()? != ENCODING_VERSION {
            return Err(DecodeError::Invalid("unknown version set encoding"));
        }
        let entry_count = reader.count_u16(bounds.coordinators_max, "too many coordinators")?;
        let mut entries: Vec<Entry> = Vec::with_capacity(entry_count);
        let mut values_total = 0usize;
        for _ in 0..entry_count {
            let node = NodeId(reader.u64()?);
            let counter = reader.u64()?;
            let value_count = reader.count_u16(bounds.siblings_max, "too many siblings")?;
            values_total += value_count;
            if values_total > bounds.siblings_max {
                return Err(DecodeError::Invalid("too many siblings"));
            }
            if counter == 0 || (value_count as u64) > counter {
                return Err(DecodeError::Invalid("more values than the counter allows"));
            }
            if entries.last().is_some_and(|last| last.node >= node) {
                return Err(DecodeError::Invalid("coordinators out of order"));
            }
            let mut values = Vec::with_capacity(value_count);
            for _ in 0..value_count {
                values.push(decode_value(&mut reader, bounds)?);
            }
            entries.push(Entry {
                node,
                counter,
                values,
            });
        }
        let anonymous_count = reader.count_u16(bounds.siblings_max, "too many siblings")?;
        if values_total + anonymous_count > bounds.siblings_max {
            return Err(DecodeError::Invalid("too many siblings"));
        }
        let mut anonymous = Vec::with_capacity(anonymous_count);
        for _ in 0..anonymous_count {
            anonymous.push(decode_value(&mut reader, bounds)?);
        }
        reader.finish("trailing bytes after a version set")?;
        Ok(VersionSet { entries, anonymous })
    }
}

/// Limits a decoder enforces on a version set from disk or the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionBounds {
    /// Entries in the clock (coordinators ever seen for the key).
    pub coordinators_max: usize,
    /// Siblings in total of a set stored or sent (merges of replicas that took writes
    /// apart can hold more than one write leaves; a merge past it is refused).
    pub siblings_max: usize,
    /// Siblings a client's write may leave: a write past it is refused (a write whose
    /// context covers the siblings leaves one).
    pub siblings_minted_max: usize,
    /// Bytes of one value.
    pub value_size_bytes_max: usize,
}

impl Default for VersionBounds {
    fn default() -> VersionBounds {
        VersionBounds {
            coordinators_max: 1024,
            siblings_max: 1024,
            siblings_minted_max: 64,
            value_size_bytes_max: crate::limits::VALUE_SIZE_BYTES_MAX,
        }
    }
}

const ENCODING_VERSION: u8 = 1;
const VALUE_FLAG_TOMBSTONE: u8 = 1;
const VALUE_FLAG_ALIAS: u8 = 2;

/// The length of `encode_value`'s output for `value`.
fn encoded_value_bytes(value: &Value) -> usize {
    let alias = if value.alias.is_some() { 8 } else { 0 };
    8 + 1 + alias + 4 + value.data.as_ref().map_or(0, Vec::len)
}

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    out.put_u64(value.timestamp_ms);
    let tombstone = if value.data.is_none() {
        VALUE_FLAG_TOMBSTONE
    } else {
        0
    };
    match value.alias {
        Some(alias) => {
            out.put_u8(tombstone | VALUE_FLAG_ALIAS);
            out.put_u64(alias.0);
        }
        None => out.put_u8(tombstone),
    }
    let data = value.data.as_deref().unwrap_or_default();
    out.put_u32(data.len() as u32);
    out.extend_from_slice(data);
}

fn decode_value(reader: &mut Reader<'_>, bounds: VersionBounds) -> Result<Value, DecodeError> {
    let timestamp_ms = reader.u64()?;
    let flags = reader.u8()?;
    if flags & !(VALUE_FLAG_TOMBSTONE | VALUE_FLAG_ALIAS) != 0 {
        return Err(DecodeError::Invalid("unknown value flags"));
    }
    let alias = if flags & VALUE_FLAG_ALIAS != 0 {
        Some(NodeId(reader.u64()?))
    } else {
        None
    };
    let length = reader.length_u32(bounds.value_size_bytes_max, "value over the size bound")?;
    let value = if flags & VALUE_FLAG_TOMBSTONE == 0 {
        Value::new(reader.slice(length)?.to_vec(), timestamp_ms)
    } else if length == 0 {
        Value::tombstone(timestamp_ms)
    } else {
        return Err(DecodeError::Invalid("tombstone with bytes"));
    };
    Ok(Value { alias, ..value })
}

/// DVVSet's entry merge: keep the longer history, and of the values only those the
/// other side has not seen superseded.
fn merge_entries(a: &Entry, b: &Entry) -> Entry {
    let (newer, older) = if a.counter >= b.counter {
        (a, b)
    } else {
        (b, a)
    };
    let newer_oldest_live = newer.counter - newer.values.len() as u64;
    let older_oldest_live = older.counter - older.values.len() as u64;
    let values = if newer_oldest_live >= older_oldest_live {
        newer.values.clone()
    } else {
        // Values of `newer` with counters above what `older` saw superseded.
        let keep = (newer.counter - older.counter) as usize + older.values.len();
        newer.values.iter().take(keep).cloned().collect()
    };
    Entry {
        node: newer.node,
        counter: newer.counter,
        values,
    }
}

/// True when clock `a` has seen everything `b` has, and more.
fn strictly_greater(a: &[Entry], b: &[Entry]) -> bool {
    let (mut i, mut j, mut strict) = (0, 0, false);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return strict,
            (Some(_), None) => return true,
            (None, Some(_)) => return false,
            (Some(x), Some(y)) => match x.node.cmp(&y.node) {
                Ordering::Equal => {
                    match x.counter.cmp(&y.counter) {
                        Ordering::Less => return false,
                        Ordering::Greater => strict = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
                Ordering::Less => {
                    strict = true;
                    i += 1;
                }
                Ordering::Greater => return false,
            },
        }
    }
}

impl VersionVector {
    /// The empty context (a client that has read nothing).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// (node, counter) pairs, sorted by node.
    pub fn entries(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// How many of `node`'s events this context covers (0: none).
    pub fn counter_of(&self, node: NodeId) -> u64 {
        self.entries
            .binary_search_by_key(&node, |(n, _)| *n)
            .map_or(0, |index| self.entries[index].1)
    }

    /// This context plus the event `dot`: the token a write made with this context
    /// returns. It names exactly what the context named and the write, provided every
    /// dot of `dot.node` between the context's counter and `dot` is dead where the
    /// write was minted (the minting replica checks with
    /// [`VersionSet::has_unseen_values`]); a dead dot is superseded on every replica
    /// once repair runs, so covering it costs no write.
    pub fn with_dot(mut self, dot: Dot) -> VersionVector {
        match self.entries.binary_search_by_key(&dot.node, |(n, _)| *n) {
            Ok(index) => {
                let counter = &mut self.entries[index].1;
                *counter = (*counter).max(dot.counter);
            }
            Err(index) => self.entries.insert(index, (dot.node, dot.counter)),
        }
        self
    }

    /// True when `self` has seen every event `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(node, counter)| {
            self.entries
                .binary_search_by_key(node, |(n, _)| *n)
                .is_ok_and(|i| self.entries[i].1 >= *counter)
        })
    }

    /// The opaque, printable context token given to clients: base64url (no padding) of
    /// `u8` version, `u16` count, (`u64` node, `u64` counter) pairs and a 32-bit check
    /// of those bytes, so a mangled token is refused instead of silently changing which
    /// siblings a write supersedes.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(3 + self.entries.len() * 16 + 4);
        bytes.put_u8(TOKEN_VERSION);
        bytes.put_u16(self.entries.len() as u16);
        for (node, counter) in &self.entries {
            bytes.put_u64(node.0);
            bytes.put_u64(*counter);
        }
        let check = token_check(&bytes);
        bytes.put_u32(check);
        base64url::encode(&bytes)
    }

    /// Parses a token made by [`VersionVector::to_token`]; anything else is an error.
    pub fn from_token(token: &str) -> Result<VersionVector, ContextError> {
        if token.len() > TOKEN_LENGTH_MAX {
            return Err(ContextError::TooLong);
        }
        let bytes = base64url::decode(token).ok_or(ContextError::NotBase64)?;
        let Some(body_length) = bytes.len().checked_sub(4) else {
            return Err(ContextError::Malformed("too short"));
        };
        let (body, check) = bytes.split_at(body_length);
        if token_check(body).to_le_bytes() != check {
            return Err(ContextError::Malformed("check does not match"));
        }
        let mut reader = Reader::new(body);
        let malformed = |_| ContextError::Malformed("truncated");
        if reader.u8().map_err(malformed)? != TOKEN_VERSION {
            return Err(ContextError::Malformed("unknown token version"));
        }
        let count = reader
            .count_u16(TOKEN_ENTRIES_MAX, "")
            .map_err(|_| ContextError::Malformed("too many entries"))?;
        let mut entries: Vec<(NodeId, u64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let node = NodeId(reader.u64().map_err(malformed)?);
            let counter = reader.u64().map_err(malformed)?;
            if counter == 0 || entries.last().is_some_and(|(last, _)| *last >= node) {
                return Err(ContextError::Malformed("entries out of order"));
            }
            entries.push((node, counter));
        }
        reader
            .finish("")
            .map_err(|_| ContextError::Malformed("trailing bytes"))?;
        Ok(VersionVector { entries })
    }
}

/// Reads past one encoded value (see [`VersionSet::encode`]) without copying it; its
/// flags, or `None` when the bytes end first.
fn skip_encoded_value(reader: &mut Reader<'_>) -> Option<u8> {
    reader.u64().ok()?;
    let flags = reader.u8().ok()?;
    if flags & VALUE_FLAG_ALIAS != 0 {
        reader.u64().ok()?;
    }
    let length = reader.u32().ok()? as usize;
    reader.slice(length).ok()?;
    Some(flags)
}

const TOKEN_VERSION: u8 = 1;
/// Coordinators a context may name (a cluster larger than this is out of scope).
const TOKEN_ENTRIES_MAX: usize = 1024;
const TOKEN_LENGTH_MAX: usize = (3 + TOKEN_ENTRIES_MAX * 16 + 4).div_ceil(3) * 4;
/// The longest context token [`VersionVector::to_token`] can make (peer frames bound
/// forwarded contexts by it).
pub const CONTEXT_TOKEN_LENGTH_MAX: usize = TOKEN_LENGTH_MAX;

fn token_check(bytes: &[u8]) -> u32 {
    // Truncation keeps the low 32 bits of the hash on purpose.
    xxhash_rust::xxh3::xxh3_64(bytes) as u32
}

/// Why a context token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    TooLong,
    NotBase64,
    Malformed(&'static str),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::TooLong => f.write_str("context token too long"),
            ContextError::NotBase64 => f.write_str("context token is not base64url"),
            ContextError::Malformed(reason) => write!(f, "context token malformed: {reason}"),
        }
    }
}

impl std::error::Error for ContextError {}

/// Unpadded base64url (RFC 4648 section 5): printable, and safe in redis-cli arguments.
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let word = chunk
                .iter()
                .enumerate()
                .fold(0u32, |word, (i, &b)| word | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(word >> (18 - 6 * i)) as usize & 63]));
            }
        }
        out
    }

    fn sextet(c: u8) -> Option<u32> {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(value))
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if bytes.len() % 4 == 1 {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
        for chunk in bytes.chunks(4) {
            let mut word = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                word |= sextet(c)? << (18 - 6 * i);
            }
            let produced = chunk.len() - 1;
            // Canonical form: the unused low bits of a short final chunk must be zero.
            if produced < 3 && word & ((1 << (8 * (3 - produced))) - 1) != 0 {
                return None;
            }
            for i in 0..produced {
                out.push((word >> (16 - 8 * i)) as u8);
            }
        }
        Some(out)
    }
}

/// Fuzz entry point: any token text either is refused or round-trips exactly.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_context_token(data: &[u8]) {
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(context) = VersionVector::from_token(text) {
            assert_eq!(context.to_token(), text);
        }
    }
}

/// Fuzz entry point: any bytes either are refused or decode to a set that re-encodes
/// to the same bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_version_set(data: &[u8]) {
    if let Ok(set) = VersionSet::decode(data, VersionBounds::default()) {
        let mut again = Vec::new();
        set.encode(&mut again);
        assert_eq!(again, data);
        assert_eq!(set.encoded_size_bytes(), data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn v(text: &str) -> Value {
        Value::new(text.as_bytes().to_vec(), 0)
    }

    fn texts(set: &VersionSet) -> Vec<String> {
        let mut texts: Vec<String> = set
            .siblings()
            .map(|s| match &s.value.data {
                Some(d) => String::from_utf8_lossy(d).into_owned(),
                None => "<deleted>".to_owned(),
            })
            .collect();
        texts.sort();
        texts
    }

    /// A client write of `value` at `coordinator` after reading `read`.
    fn put(
        current: &VersionSet,
        read: &VersionVector,
        value: Value,
        coordinator: NodeId,
    ) -> VersionSet {
        VersionSet::update(VersionSet::from_context(read, value), current, coordinator)
    }

    #[test]
    fn a_dot_minted_above_a_floor_survives_the_tombstone_a_copy_still_holds() {
        // A wrote a, then deleted it: the tombstone's clock is {A: 2}.
        let written = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let tombstone = put(&written, &written.join(), Value::tombstone(1), A);
        // A reaped its copy; another replica still holds the tombstone.
        let reaped = VersionSet::new();
        let naive = put(&reaped, &VersionVector::new(), v("b"), A);
        assert_eq!(
            texts(&naive.sync(&tombstone)),
            ["<deleted>"],
            "without a floor the new write reuses dot (A, 1) and the tombstone hides it"
        );
        let floored = VersionSet::update_above(
            VersionSet::from_context(&VersionVector::new(), v("b")),
            &reaped,
            A,
            tombstone.counter_of(A),
        );
        assert_eq!(floored.counter_of(A), 3);
        assert!(texts(&floored.sync(&tombstone)).contains(&"b".to_owned()));
        // An old context names A's entry without its values: still above the floor.
        let stale = VersionSet::update_above(
            VersionSet::from_context(&written.join(), v("c")),
            &reaped,
            A,
            1_000,
        );
        assert_eq!(stale.counter_of(A), 1_001);
        // An entry with live values counts on from them (its dots count down from it).
        let live = put(&VersionSet::new(), &VersionVector::new(), v("d"), A);
        let concurrent = VersionSet::update_above(
            VersionSet::from_context(&VersionVector::new(), v("e")),
            &live,
            A,
            1_000,
        );
        assert_eq!(concurrent.counter_of(A), 2);
        assert_eq!(texts(&concurrent), ["d", "e"]);
    }

    #[test]
    fn a_retried_forward_stays_one_sibling_and_its_token_covers_the_first_copy() {
        const FIRST: NodeId = NodeId(1 << 63 | 98);
        const RETRY: NodeId = NodeId(1 << 63 | 99);
        const AGAIN: NodeId = NodeId(1 << 63 | 100);
        let base = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let context = base.join();
        let write = || VersionSet::from_context(&context, v("w"));
        // The first replica minted the forward (its reply was lost), and a retry was
        // minted elsewhere as its attempt's dot.
        let first = VersionSet::update(
            VersionSet::from_context(&context, v("w").with_alias(FIRST)),
            &base,
            B,
        );
        let retried = VersionSet::update_retry(write(), &base, RETRY, &[FIRST]);
        assert_eq!(retried.counter_of(RETRY), 1);
        assert_eq!(
            retried.counter_of(FIRST),
            1,
            "the retry's context names the first"
        );
        let merged = first.sync(&retried);
        assert_eq!(merged, retried.sync(&first));
        assert_eq!(texts(&merged), ["w"], "one client write, one sibling");
        // The client's next write, with the token the retry returned, supersedes the
        // first copy too, wherever it turns up later.
        let token = context.clone().with_dot(Dot {
            node: RETRY,
            counter: 1,
        });
        let token = token.with_dot(Dot {
            node: FIRST,
            counter: 1,
        });
        let next = put(&retried, &token, v("next"), C);
        assert_eq!(texts(&next.sync(&first)), ["next"]);
        assert_eq!(texts(&first.sync(&next)), ["next"]);
        // Without the alias, the first copy would come back as a stale sibling.
        let unaliased = put(&base, &context, v("w"), B);
        assert_eq!(texts(&next.sync(&unaliased)), ["next", "w"]);
        // A first attempt arriving where a retry was merged mints nothing, nor does a
        // retry arriving where an attempt of it is (merged, or covered by a later one).
        let late = VersionSet::update(
            VersionSet::from_context(&context, v("w").with_alias(FIRST)),
            &merged,
            B,
        );
        assert_eq!(late, merged);
        assert_eq!(
            VersionSet::update_retry(write(), &merged, RETRY, &[FIRST]),
            merged
        );
        let third = VersionSet::update_retry(write(), &base, AGAIN, &[FIRST, RETRY]);
        assert_eq!(
            texts(&third.sync(&merged)),
            ["w"],
            "three attempts, one sibling"
        );
        assert_eq!(
            VersionSet::update_retry(write(), &third, RETRY, &[FIRST]),
            third
        );
        // A retry arriving where the first attempt's value is mints nothing: the write
        // is that value.
        let found = VersionSet::update_retry(write(), &first, RETRY, &[FIRST]);
        assert_eq!(found, first);
        assert_eq!(
            found.minted_as(&[FIRST, RETRY]),
            Some(Dot {
                node: B,
                counter: 1
            })
        );
        // The alias survives the binary form.
        let mut bytes = Vec::new();
        first.encode(&mut bytes);
        assert_eq!(
            VersionSet::decode(&bytes, VersionBounds::default()),
            Ok(first)
        );
    }

    #[test]
    fn two_plain_writes_retried_across_each_other_leave_the_later_mint() {
        // Two plain writes, each forwarded, each first attempt lost. Write P's retry is
        // minted where Q's retry is, and a second retry of Q where P's retry is: each
        // plain mint supersedes what its replica holds. Had both retries of Q been the
        // same dot, each of P and Q would cover the other and the merge would hold
        // nothing at all (an acknowledged write lost, as a simulator seed showed).
        const P_FIRST: NodeId = NodeId(1 << 63 | 1);
        const P_RETRY: NodeId = NodeId(1 << 63 | 2);
        const Q_FIRST: NodeId = NodeId(1 << 63 | 3);
        const Q_RETRY: NodeId = NodeId(1 << 63 | 4);
        const Q_AGAIN: NodeId = NodeId(1 << 63 | 5);
        let plain = |current: &VersionSet, data: &str, id: NodeId, earlier: &[NodeId]| {
            let write = VersionSet::from_context(&current.join(), v(data));
            VersionSet::update_retry(write, current, id, earlier)
        };
        let q_alone = plain(&VersionSet::new(), "q", Q_RETRY, &[Q_FIRST]);
        let p_over_q = plain(&q_alone, "p", P_RETRY, &[P_FIRST]);
        let q_over_p = plain(&p_over_q.sync(&VersionSet::new()), "q", Q_AGAIN, &[Q_FIRST]);
        // The second retry of Q found P there (whose clock names Q's retry): nothing new.
        assert_eq!(q_over_p, p_over_q);
        // Q's second retry where only P's retry is: a mint of its own, superseding P.
        let p_alone = plain(&VersionSet::new(), "p", P_RETRY, &[P_FIRST]);
        let q_again = plain(&p_alone, "q", Q_AGAIN, &[Q_FIRST, Q_RETRY]);
        for merged in [
            q_again.sync(&p_over_q),
            p_over_q.sync(&q_again),
            q_again.sync(&p_over_q).sync(&q_alone),
        ] {
            assert_eq!(texts(&merged), ["q"], "a write survives every merge");
        }
        // The loss one id minted twice would make: Q's retry dot minted again where
        // only P's retry is.
        let q_twice = plain(&p_alone, "q", Q_RETRY, &[Q_FIRST]);
        assert!(texts(&q_twice.sync(&p_over_q)).is_empty());
    }

    #[test]
    fn a_record_is_deleted_only_when_every_sibling_is_a_tombstone() {
        let encode = |set: &VersionSet| {
            let mut bytes = Vec::new();
            set.encode(&mut bytes);
            bytes
        };
        let written = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let deleted = put(&written, &written.join(), Value::tombstone(1), A);
        let concurrent = put(&deleted, &written.join(), v("b"), B);
        assert!(!VersionSet::record_is_deleted(&encode(&written)));
        assert!(VersionSet::record_is_deleted(&encode(&deleted)));
        assert!(!VersionSet::record_is_deleted(&encode(&concurrent)));
        assert!(!VersionSet::record_is_deleted(&encode(&VersionSet::new())));
        let bytes = encode(&deleted);
        assert!(!VersionSet::record_is_deleted(&bytes[..bytes.len() - 1]));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!VersionSet::record_is_deleted(&longer));
        assert!(!VersionSet::record_is_deleted(&[]));
    }

    #[test]
    fn a_write_with_the_read_context_supersedes_what_was_read() {
        let s1 = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let s2 = put(&s1, &s1.join(), v("b"), A);
        assert_eq!(texts(&s2), ["b"]);
        assert_eq!(s2.join().entries(), [(A, 2)]);
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_later_write_resolves_them() {
        let s1 = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let context = s1.join();
        let s2 = put(&s1, &context, v("b"), A);
        let s3 = put(&s2, &context, v("c"), B);
        assert_eq!(texts(&s3), ["b", "c"]);
        let s4 = put(&s3, &s3.join(), v("merged"), C);
        assert_eq!(texts(&s4), ["merged"]);
        assert_eq!(s4.clock_size(), 3);
    }

    #[test]
    fn replicas_that_diverged_sync_to_the_same_siblings_either_way() {
        let base = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let on_a = put(&base, &base.join(), v("from a"), A);
        let on_b = put(&base, &base.join(), v("from b"), B);
        let ab = on_a.sync(&on_b);
        assert_eq!(ab, on_b.sync(&on_a));
        assert_eq!(texts(&ab), ["from a", "from b"]);
        assert_eq!(ab.sync(&ab), ab);
        // A replica that only has the old state learns it is superseded.
        assert_eq!(base.sync(&ab), ab);
        assert!(base.is_dominated_by(&ab));
        assert!(!ab.is_dominated_by(&base));
    }

    #[test]
    fn last_write_wins_picks_the_latest_timestamp_then_the_larger_dot() {
        let s1 = put(
            &VersionSet::new(),
            &VersionVector::new(),
            Value::new(b"old".to_vec(), 10),
            A,
        );
        let s2 = put(
            &s1,
            &VersionVector::new(),
            Value::new(b"new".to_vec(), 20),
            B,
        );
        assert_eq!(
            s2.last_write_wins().unwrap().data.as_deref(),
            Some(&b"new"[..])
        );
        let tie = put(
            &s2,
            &VersionVector::new(),
            Value::new(b"tie".to_vec(), 20),
            C,
        );
        assert_eq!(
            tie.last_write_wins().unwrap().data.as_deref(),
            Some(&b"tie"[..]),
            "C > B"
        );
        assert_eq!(VersionSet::new().last_write_wins(), None);
    }

    #[test]
    fn a_delete_is_a_tombstone_sibling_until_superseded() {
        let s1 = put(&VersionSet::new(), &VersionVector::new(), v("a"), A);
        let deleted = put(&s1, &s1.join(), Value::tombstone(5), A);
        assert!(deleted.is_deleted());
        assert_eq!(deleted.sibling_count(), 1);
        let concurrent = put(&deleted, &s1.join(), v("racing"), B);
        assert!(
            !concurrent.is_deleted(),
            "a concurrent write survives the delete"
        );
    }

    #[test]
    fn reconcile_hands_every_sibling_to_the_application() {
        let s1 = put(&VersionSet::new(), &VersionVector::new(), v("x"), A);
        let s2 = put(&s1, &VersionVector::new(), v("y"), B);
        let merged = s2.reconcile(|siblings| {
            let mut all: Vec<u8> = siblings
                .iter()
                .flat_map(|s| s.value.data.clone().unwrap())
                .collect();
            all.sort();
            Value::new(all, 1)
        });
        assert_eq!(merged.data.as_deref(), Some(&b"xy"[..]));
    }

    #[test]
    fn the_binary_form_round_trips_and_refuses_broken_input() {
        let s1 = put(&VersionSet::new(), &VersionVector::new(), v("a"), B);
        let s2 = put(&s1, &VersionVector::new(), Value::tombstone(3), A);
        let mut bytes = Vec::new();
        s2.encode(&mut bytes);
        assert_eq!(s2.encoded_size_bytes(), bytes.len());
        assert_eq!(VersionSet::decode(&bytes, VersionBounds::default()), Ok(s2));
        for cut in 0..bytes.len() {
            assert!(VersionSet::decode(&bytes[..cut], VersionBounds::default()).is_err());
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x41;
            // Refused, or a valid set that re-encodes to exactly the damaged bytes.
            fuzz_version_set(&damaged);
        }
        let tight = VersionBounds {
            siblings_max: 1,
            ..VersionBounds::default()
        };
        assert_eq!(
            VersionSet::decode(&bytes, tight),
            Err(DecodeError::Invalid("too many siblings"))
        );
    }

    #[test]
    fn context_tokens_are_printable_round_trip_and_refuse_tampering() {
        let s = put(
            &put(&VersionSet::new(), &VersionVector::new(), v("a"), A),
            &VersionVector::new(),
            v("b"),
            NodeId(u64::MAX),
        );
        let token = s.join().to_token();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(VersionVector::from_token(&token), Ok(s.join()));
        assert_eq!(
            VersionVector::from_token(&VersionVector::new().to_token()),
            Ok(VersionVector::new())
        );
        let mut tampered = token.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        assert!(VersionVector::from_token(core::str::from_utf8(&tampered).unwrap()).is_err());
        for bad in ["", "!!!!", "A", &token[..token.len() - 1]] {
            assert!(VersionVector::from_token(bad).is_err(), "{bad:?}");
        }
        fuzz_context_token(token.as_bytes());
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for length in 0..40u8 {
            let bytes: Vec<u8> = (0..length).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url::decode(&base64url::encode(&bytes)), Some(bytes));
        }
    }
}
