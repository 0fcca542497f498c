//! Anti-entropy (design.md section 6): replicas that drifted apart (a write that missed
//! a replica and was never read again, a hint lost with its stand-in) find and repair
//! their differences in the background, without reading everything.
//!
//! # Hash trees
//!
//! Each node keeps, for every partition, 64 bucket hashes. A key's bucket is the six
//! bits of its `key_hash` after the partition bits, so a bucket is one contiguous hash
//! range and one storage scan reads it. A bucket hash is the XOR of `entry_hash(key,
//! record)` over the bucket's keys: XOR is order-independent and its own inverse, so a
//! write updates the tree in O(1) by XOR-ing out the old record's hash and in the new
//! one, once the write is durable. A partition's root is a hash of its 64 buckets.
//!
//! Trees live in memory. At start a node rebuilds them by scanning its data in hash
//! order, one page per tick; a write that completes meanwhile updates the tree only if
//! its key lies in the range already scanned (the scan picks up the rest). A scan page
//! and a write completing at the same moment can still leave a bucket wrong; that costs
//! a needless key comparison, never data, and every key comparison that reads a whole
//! bucket resets that bucket's hash to what it read.
//!
//! # Exchanges
//!
//! Every `anti_entropy_interval_ms`, when background work is admitted (see below), the
//! node takes the next partition it replicates whose tree is built and sends its root to
//! another healthy replica of it (`TreeHashes`, level 0). The peer answers with nothing
//! when the roots agree, else with its 64 bucket hashes (level 1). For up to
//! `anti_entropy_buckets_max` differing buckets, the initiator scans the bucket and sends
//! its key hashes (`KeyHashes`); the peer scans its own bucket, sends the keys it holds
//! differently as merges (`ReplicaPut` without a reply, merged by DVVSet sync like read
//! repair) and answers with its own key hashes, from which the initiator sends its
//! differing keys the other way. Both sides end with the union of both copies. Bytes
//! moved are the root, one bucket list, the differing buckets' key hashes and the
//! differing keys: nothing else is read or sent.
//!
//! A bucket with more keys than `wire_limits.list_length_max` is compared over its first
//! page only (the rest waits for a later exchange with a larger partition count); at the
//! default 1,024 partitions that is over 250 million keys per node.
//!
//! # Admission
//!
//! Exchanges are background work: one starts per interval at most, at most
//! `anti_entropy_exchanges_max` run at once (each expires after `request_timeout_ms`),
//! and none starts while the node is busy with foreground work: more than a quarter of
//! its request, storage-operation or action bounds in use, or client requests it
//! coordinated in the last one to two seconds took more than
//! `background_latency_max_ms` on average (GET, SET, VGET, VSET, VDEL; multi-key DEL
//! and EXISTS are not timed). Handoff and reaping use the same test. A refused tick backs the
//! interval off, doubling up to 16 times the configured one; an admitted tick resets it.

use super::Node;
use super::entries::{TreeEntry, entry_hashes};
use super::request_id::NO_REQUEST;
use super::tasks::Task;
use super::timers::Timer;
use crate::placement::key_hash;

use crate::time::Instant;
use crate::version::{NodeId, VersionSet};
use crate::wire::Message;
use core::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

/// Buckets per partition tree: 2^6.
pub(crate) const BUCKET_BITS: u32 = 6;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Keys read per page while rebuilding trees at start.
const BUILD_PAGE_KEYS: u32 = 1_024;

/// Every partition's bucket hashes and key count on this node, and every bucket's
/// count of deleted records.
#[derive(Debug)]
pub(crate) struct HashTrees {
    partition_bits: u32,
    buckets: Vec<u64>,
    keys: Vec<u32>,
    deleted: Vec<u32>,
    /// Every key hash up to this one has been scanned in; `None`: nothing yet.
    built_through: Option<u64>,
    built: bool,
}

impl HashTrees {
    pub(crate) fn new(partition_bits: u32) -> HashTrees {
        let partitions = 1usize << partition_bits;
        HashTrees {
            partition_bits,
            buckets: vec![0; partitions * BUCKETS],
            keys: vec![0; partitions],
            deleted: vec![0; partitions * BUCKETS],
            built_through: None,
            built: false,
        }
    }

    /// (partition, bucket) of a key hash.
    fn locate(&self, hash: u64) -> (usize, usize) {
        let partition = (hash >> (64 - self.partition_bits)) as usize;
        let bucket = ((hash << self.partition_bits) >> (64 - BUCKET_BITS)) as usize;
        (partition, bucket)
    }

    /// The inclusive key-hash range of one bucket.
    pub(crate) fn bucket_range(&self, partition: usize, bucket: usize) -> (u64, u64) {
        let shift = 64 - self.partition_bits - BUCKET_BITS;
        let first = ((partition as u64) << (64 - self.partition_bits)) | ((bucket as u64) << shift);
        (first, first | ((1u64 << shift) - 1))
    }

    fn covers(&self, hash: u64) -> bool {
        self.built || self.built_through.is_some_and(|through| hash <= through)
    }

    /// True once the partition's whole range has been scanned in.
    pub(crate) fn is_built(&self, partition: usize) -> bool {
        let last = (((partition as u64) << (64 - self.partition_bits)) as u128
            | ((1u128 << (64 - self.partition_bits)) - 1)) as u64;
        self.covers(last)
    }

    pub(crate) fn fully_built(&self) -> bool {
        self.built
    }

    /// Where the rebuild scan goes on from.
    pub(crate) fn build_cursor(&self) -> Option<u64> {
        self.built_through
    }

    /// A durable change of the key with `key_hash` `hash`, from record `old` to
    /// record `new` (None: absent).
    pub(crate) fn apply(&mut self, hash: u64, old: Option<TreeEntry>, new: Option<TreeEntry>) {
        if !self.covers(hash) {
            return;
        }
        let (partition, bucket) = self.locate(hash);
        let index = partition * BUCKETS + bucket;
        if let Some(old) = old {
            self.buckets[index] ^= old.hash;
            self.keys[partition] = self.keys[partition].saturating_sub(1);
            if old.deleted {
                self.deleted[index] = self.deleted[index].saturating_sub(1);
            }
        }
        if let Some(new) = new {
            self.add(index, partition, new);
        }
    }

    fn add(&mut self, index: usize, partition: usize, entry: TreeEntry) {
        self.buckets[index] ^= entry.hash;
        self.keys[partition] = self.keys[partition].saturating_add(1);
        if entry.deleted {
            self.deleted[index] = self.deleted[index].saturating_add(1);
        }
    }

    /// One rebuild page: `items` in hash order; `next` is where the scan goes on.
    pub(crate) fn scanned(&mut self, items: &[(Vec<u8>, Vec<u8>)], next: Option<u64>) {
        for (key, record) in items {
            let (partition, bucket) = self.locate(key_hash(key));
            self.add(
                partition * BUCKETS + bucket,
                partition,
                TreeEntry::of(key, record),
            );
        }
        match next {
            Some(after) => self.built_through = Some(after),
            None => {
                self.built_through = Some(u64::MAX);
                self.built = true;
            }
        }
    }

    /// A partition's root: a hash of its buckets.
    pub(crate) fn root(&self, partition: usize) -> u64 {
        let buckets = &self.buckets[partition * BUCKETS..(partition + 1) * BUCKETS];
        let mut bytes = [0u8; BUCKETS * 8];
        for (chunk, hash) in bytes.chunks_exact_mut(8).zip(buckets) {
            chunk.copy_from_slice(&hash.to_le_bytes());
        }
        xxh3_64(&bytes)
    }

    pub(crate) fn buckets(&self, partition: usize) -> &[u64] {
        &self.buckets[partition * BUCKETS..(partition + 1) * BUCKETS]
    }

    /// Keys this node holds in `partition`.
    pub(crate) fn keys_held(&self, partition: usize) -> u32 {
        self.keys[partition]
    }

    /// Deleted records (tombstones only) in one bucket.
    pub(crate) fn deleted_in(&self, partition: usize, bucket: usize) -> u32 {
        self.deleted[partition * BUCKETS + bucket]
    }

    /// Deleted records in a partition.
    pub(crate) fn deleted_held(&self, partition: usize) -> u32 {
        self.deleted[partition * BUCKETS..(partition + 1) * BUCKETS]
            .iter()
            .sum()
    }

    /// A whole bucket was just read: its hash and deleted count are what was read.
    fn reset_bucket(&mut self, partition: usize, bucket: usize, hash: u64, deleted: u32) {
        self.buckets[partition * BUCKETS + bucket] = hash;
        self.deleted[partition * BUCKETS + bucket] = deleted;
    }
}

/// The mean latency of client requests this node coordinated lately: over the current
/// one-second window and the one before it, whichever is higher (an idle node's drops
/// to zero within two windows, so background work is never held back by old news).
#[derive(Debug, Default)]
pub(crate) struct ForegroundLatency {
    window_start: Instant,
    sum_us: u64,
    count: u64,
    previous_mean_us: u64,
}

const LATENCY_WINDOW: Duration = Duration::from_secs(1);

impl ForegroundLatency {
    fn roll(&mut self, now: Instant) {
        if now < self.window_start + LATENCY_WINDOW {
            return;
        }
        let two_windows_ago =
            now.saturating_duration_since(self.window_start) >= LATENCY_WINDOW * 2;
        self.previous_mean_us = if two_windows_ago {
            0
        } else {
            self.sum_us.checked_div(self.count).unwrap_or(0)
        };
        self.window_start = now;
        self.sum_us = 0;
        self.count = 0;
    }

    /// A client request that arrived at `received_at` is answered at `now`.
    pub(crate) fn record(&mut self, now: Instant, received_at: Instant) {
        self.roll(now);
        let latency_us = now.saturating_duration_since(received_at).as_micros() as u64;
        self.sum_us = self.sum_us.saturating_add(latency_us);
        self.count += 1;
    }

    /// The recent mean, in microseconds.
    pub(crate) fn mean_us(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.window_start);
        let current = self.sum_us.checked_div(self.count).unwrap_or(0);
        if elapsed >= LATENCY_WINDOW * 2 {
            0
        } else if elapsed >= LATENCY_WINDOW {
            current
        } else {
            current.max(self.previous_mean_us)
        }
    }
}

/// An exchange this node started, waiting for the peer's bucket hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    request: u64,
    peer: NodeId,
    partition: u32,
    expires_at: Instant,
}

/// Key hashes a peer sent for one bucket, kept until this node's own scan of it ends.
#[derive(Debug)]
pub(crate) struct Comparison {
    pub(crate) peer: NodeId,
    request: u64,
    partition: u32,
    bucket: u32,
    /// The peer's (key, hash), sorted by key. `None`: this node offers its hashes first.
    theirs: Option<Vec<(Vec<u8>, u64)>>,
    /// Answer the peer with this node's own key hashes.
    answer: bool,
}

/// The node's anti-entropy state.
#[derive(Debug)]
pub(crate) struct Entropy {
    pub(crate) trees: HashTrees,
    exchanges: Vec<Exchange>,
    interval_ms: u64,
    cursor: usize,
    /// Scans waiting to be compared, by storage token.
    comparisons: Vec<(u64, Comparison)>,
    pub(crate) building: bool,
    pub(crate) exchanges_started: u64,
    pub(crate) exchanges_in_sync: u64,
    pub(crate) keys_pushed: u64,
    pub(crate) ticks_refused: u64,
}

impl Entropy {
    pub(crate) fn new(partition_bits: u32, interval_ms: u64) -> Entropy {
        Entropy {
            trees: HashTrees::new(partition_bits),
            exchanges: Vec::new(),
            interval_ms,
            cursor: 0,
            comparisons: Vec::new(),
            building: false,
            exchanges_started: 0,
            exchanges_in_sync: 0,
            keys_pushed: 0,
            ticks_refused: 0,
        }
    }
}

impl Node {
    /// True while foreground work leaves room for background work: its queues are at
    /// most a quarter full, and client requests finished lately took at most
    /// `background_latency_max_ms` on average.
    pub(crate) fn background_admitted(&self) -> bool {
        let quarter = |max: u32| (max as usize).div_ceil(4);
        let latency_ms = self.foreground.mean_us(self.shared.now) / 1_000;
        latency_ms <= self.shared.config.background_latency_max_ms
            && self.requests.len() <= quarter(self.shared.config.requests_max)
            && self.shared.tasks.len() <= quarter(self.shared.config.storage_operations_max)
            && self
                .shared
                .actions
                .has_room(self.shared.config.actions_max as usize * 3 / 4)
    }

    /// The anti-entropy timer: continue the tree rebuild, expire exchanges, maybe
    /// start one.
    pub(crate) fn entropy_tick(&mut self) {
        let now = self.shared.now;
        let base_ms = self.shared.config.anti_entropy_interval_ms;
        if !self.background_admitted() {
            self.entropy.ticks_refused += 1;
            self.entropy.interval_ms = (self.entropy.interval_ms * 2).min(base_ms * 16);
            let next = now + Duration::from_millis(self.entropy.interval_ms);
            self.timers.set(Timer::Entropy, next);
            return;
        }
        self.entropy.interval_ms = base_ms;
        self.timers
            .set(Timer::Entropy, now + Duration::from_millis(base_ms));
        self.entropy.exchanges.retain(|e| e.expires_at > now);
        if !self.entropy.trees.fully_built() {
            self.continue_tree_build();
            return;
        }
        if self.entropy.exchanges.len() >= self.shared.config.anti_entropy_exchanges_max as usize {
            return;
        }
        self.start_exchange();
    }

    /// Queues a scan for `task`; its token, or None when the task table or the action
    /// queue is full (nothing is left behind).
    pub(crate) fn start_scan(
        &mut self,
        task: Task,
        range: (u64, u64),
        after: Option<u64>,
        limit: u32,
    ) -> Option<u64> {
        self.shared
            .tasks
            .start(task, &mut self.shared.actions, |actions, token| {
                actions.scan(token, range, after, limit)
            })
    }

    fn continue_tree_build(&mut self) {
        if self.entropy.building {
            return;
        }
        let after = self.entropy.trees.build_cursor();
        if self
            .start_scan(Task::BuildTrees, (0, u64::MAX), after, BUILD_PAGE_KEYS)
            .is_some()
        {
            self.entropy.building = true;
        }
    }

    pub(crate) fn tree_page(&mut self, items: &[(Vec<u8>, Vec<u8>)], next: Option<u64>) {
        self.entropy.building = false;
        self.entropy.trees.scanned(items, next);
        if next.is_some() && self.background_admitted() {
            self.continue_tree_build();
        }
    }

    fn start_exchange(&mut self) {
        let partitions = self.view.ring.partition_count();
        for _ in 0..partitions {
            let partition = self.entropy.cursor % partitions;
            self.entropy.cursor = (self.entropy.cursor + 1) % partitions;
            if !self.entropy.trees.is_built(partition) {
                continue;
            }
            if !self.replicates(partition) {
                continue;
            }
            let peers: smallvec::SmallVec<[NodeId; 8]> = self
                .view
                .ring
                .preference_list(partition)
                .filter(|&node| node != self.shared.id && self.peers.is_up(node))
                .collect();
            if peers.is_empty() {
                continue;
            }
            let peer = peers[self.shared.rng.below(peers.len() as u64) as usize];
            let request = self.shared.rng.next_u64() >> 1;
            let root = self.entropy.trees.root(partition);
            let message = Message::TreeHashes {
                request,
                partition: partition as u32,
                level: 0,
                hashes: vec![(0, root)],
            };
            if self.shared.send(peer, &message) {
                self.entropy.exchanges_started += 1;
                self.entropy.exchanges.push(Exchange {
                    request,
                    peer,
                    partition: partition as u32,
                    expires_at: self.shared.now
                        + Duration::from_millis(self.shared.config.request_timeout_ms),
                });
            }
            return;
        }
    }

    /// True when this node and `peer` both replicate `partition` in this node's ring.
    fn shares_partition(&self, peer: NodeId, partition: u32) -> bool {
        let partition = partition as usize;
        if partition >= self.view.ring.partition_count() {
            return false;
        }
        let mut list = self.view.ring.preference_list(partition);
        let (mut me, mut them) = (false, false);
        for node in &mut list {
            me |= node == self.shared.id;
            them |= node == peer;
        }
        me && them
    }

    pub(crate) fn tree_hashes(
        &mut self,
        from: NodeId,
        request: u64,
        partition: u32,
        level: u8,
        hashes: &[(u32, u64)],
    ) {
        if !self.shares_partition(from, partition) {
            return;
        }
        let index = partition as usize;
        match level {
            0 => {
                if !self.entropy.trees.is_built(index) {
                    return; // the initiator's exchange expires; trees are still building
                }
                let agree =
                    hashes.first().map(|&(_, root)| root) == Some(self.entropy.trees.root(index));
                let hashes: Vec<(u32, u64)> = if agree {
                    Vec::new()
                } else {
                    (0u32..)
                        .zip(self.entropy.trees.buckets(index).iter().copied())
                        .collect()
                };
                self.shared.send(
                    from,
                    &Message::TreeHashes {
                        request,
                        partition,
                        level: 1,
                        hashes,
                    },
                );
            }
            1 => {
                let Some(position) = self.entropy.exchanges.iter().position(|e| {
                    e.request == request && e.peer == from && e.partition == partition
                }) else {
                    return;
                };
                self.entropy.exchanges.swap_remove(position);
                if hashes.is_empty() {
                    self.entropy.exchanges_in_sync += 1;
                    return;
                }
                let mine = self.entropy.trees.buckets(index);
                let differing: smallvec::SmallVec<[u32; 16]> = hashes
                    .iter()
                    .filter(|&&(bucket, hash)| {
                        mine.get(bucket as usize).is_some_and(|&own| own != hash)
                    })
                    .map(|&(bucket, _)| bucket)
                    .take(self.shared.config.anti_entropy_buckets_max as usize)
                    .collect();
                for bucket in differing {
                    let comparison = Comparison {
                        peer: from,
                        request,
                        partition,
                        bucket,
                        theirs: None,
                        answer: true,
                    };
                    self.scan_bucket(comparison);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn key_hashes(
        &mut self,
        from: NodeId,
        request: u64,
        partition: u32,
        bucket: u32,
        reply: bool,
        keys: &[(&[u8], u64)],
    ) {
        if !self.shares_partition(from, partition) || bucket as usize >= BUCKETS {
            return;
        }
        let mut theirs: Vec<(Vec<u8>, u64)> = keys.iter().map(|&(k, h)| (k.to_vec(), h)).collect();
        theirs.sort_unstable();
        let comparison = Comparison {
            peer: from,
            request,
            partition,
            bucket,
            theirs: Some(theirs),
            answer: !reply,
        };
        self.scan_bucket(comparison);
    }

    fn scan_bucket(&mut self, comparison: Comparison) {
        if self.entropy.comparisons.len()
            >= self.shared.config.anti_entropy_buckets_max as usize * 4
        {
            return; // bounded: the next exchange finds what this one could not
        }
        let range = self
            .entropy
            .trees
            .bucket_range(comparison.partition as usize, comparison.bucket as usize);
        let limit = self.shared.config.wire_limits.list_length_max as u32;
        if let Some(token) = self.start_scan(Task::EntropyScan, range, None, limit) {
            self.entropy.comparisons.push((token, comparison));
        }
    }

    /// This node's scan of a bucket under comparison finished.
    pub(crate) fn bucket_scanned(
        &mut self,
        token: u64,
        items: &[(Vec<u8>, Vec<u8>)],
        complete: bool,
    ) {
        let Some(position) = self
            .entropy
            .comparisons
            .iter()
            .position(|(t, _)| *t == token)
        else {
            return;
        };
        let (_, comparison) = self.entropy.comparisons.swap_remove(position);
        let mine = entry_hashes(items);
        if complete {
            let hash = mine.iter().fold(0, |acc, &(_, h)| acc ^ h);
            let deleted = items
                .iter()
                .filter(|(_, record)| VersionSet::record_is_deleted(record))
                .count() as u32;
            self.entropy.trees.reset_bucket(
                comparison.partition as usize,
                comparison.bucket as usize,
                hash,
                deleted,
            );
        }
        if let Some(theirs) = &comparison.theirs {
            for ((key, record), &(_, hash)) in items.iter().zip(&mine) {
                let same = theirs
                    .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                    .is_ok_and(|at| theirs[at].1 == hash);
                if !same {
                    self.entropy.keys_pushed += 1;
                    self.shared.send(
                        comparison.peer,
                        &Message::ReplicaPut {
                            request: NO_REQUEST,
                            key,
                            versions: record,
                            hint: None,
                        },
                    );
                }
            }
        }
        if comparison.answer {
            self.shared.send(
                comparison.peer,
                &Message::KeyHashes {
                    request: comparison.request,
                    partition: comparison.partition,
                    bucket: comparison.bucket,
                    reply: comparison.theirs.is_some(),
                    keys: mine,
                },
            );
        }
    }

    /// A scan of `token` failed: forget its comparison.
    pub(crate) fn scan_failed(&mut self, token: u64) {
        self.entropy.comparisons.retain(|(t, _)| *t != token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn updates_in_any_order_give_the_same_tree_as_a_scan() {
        let mut by_writes = HashTrees::new(4);
        by_writes.scanned(&[], None);
        let change = |trees: &mut HashTrees, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>| {
            let old = old.map(|record| TreeEntry::of(key, record));
            let new = new.map(|record| TreeEntry::of(key, record));
            trees.apply(key_hash(key), old, new);
        };
        change(&mut by_writes, b"a", None, Some(b"1"));
        change(&mut by_writes, b"b", None, Some(b"2"));
        change(&mut by_writes, b"a", Some(b"1"), Some(b"3"));
        change(&mut by_writes, b"c", None, Some(b"4"));
        change(&mut by_writes, b"c", Some(b"4"), None);
        let mut items = vec![(record("a"), record("3")), (record("b"), record("2"))];
        items.sort_by_key(|(key, _)| key_hash(key));
        let mut by_scan = HashTrees::new(4);
        by_scan.scanned(&items, None);
        assert_eq!(by_writes.buckets, by_scan.buckets);
        assert_eq!(by_writes.keys, by_scan.keys);
        let partition = by_scan.locate(key_hash(b"a")).0;
        assert_eq!(by_writes.root(partition), by_scan.root(partition));
        // A different value changes the root.
        change(&mut by_writes, b"a", Some(b"3"), Some(b"5"));
        assert_ne!(by_writes.root(partition), by_scan.root(partition));
    }

    #[test]
    fn a_bucket_counts_its_deleted_records_through_writes_and_scans() {
        use crate::version::{Value, VersionVector};
        let encode = |value: Value| {
            let set = VersionSet::update(
                VersionSet::from_context(&VersionVector::new(), value),
                &VersionSet::new(),
                NodeId(1),
            );
            let mut bytes = Vec::new();
            set.encode(&mut bytes);
            bytes
        };
        let live = encode(Value::new(b"v".to_vec(), 1));
        let deleted = encode(Value::tombstone(2));
        let mut trees = HashTrees::new(4);
        trees.scanned(&[], None);
        let key = b"k".as_slice();
        let (partition, bucket) = trees.locate(key_hash(key));
        trees.apply(key_hash(key), None, Some(TreeEntry::of(key, &live)));
        assert_eq!(trees.deleted_in(partition, bucket), 0);
        let (old, new) = (TreeEntry::of(key, &live), TreeEntry::of(key, &deleted));
        trees.apply(key_hash(key), Some(old), Some(new));
        assert_eq!(trees.deleted_in(partition, bucket), 1);
        assert_eq!(trees.deleted_held(partition), 1);
        let mut scanned = HashTrees::new(4);
        scanned.scanned(&[(key.to_vec(), deleted.clone())], None);
        assert_eq!(scanned.deleted, trees.deleted);
        trees.apply(key_hash(key), Some(new), None);
        assert_eq!(trees.deleted_held(partition), 0);
    }

    #[test]
    fn a_bucket_is_one_contiguous_hash_range_inside_its_partition() {
        let trees = HashTrees::new(10);
        for hash in [
            0u64,
            1,
            u64::MAX,
            0x8000_0000_0000_0000,
            0x1234_5678_9abc_def0,
        ] {
            let (partition, bucket) = trees.locate(hash);
            let (first, last) = trees.bucket_range(partition, bucket);
            assert!(first <= hash && hash <= last, "{hash:x}");
            assert_eq!(trees.locate(first), (partition, bucket));
            assert_eq!(trees.locate(last), (partition, bucket));
        }
    }

    #[test]
    fn writes_beyond_the_rebuild_cursor_are_left_to_the_scan() {
        let mut trees = HashTrees::new(4);
        trees.scanned(&[], Some(u64::MAX / 2));
        let low = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|k| key_hash(k) < u64::MAX / 2)
            .unwrap();
        let high = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|k| key_hash(k) > u64::MAX / 2)
            .unwrap();
        trees.apply(key_hash(&low), None, Some(TreeEntry::of(&low, b"x")));
        trees.apply(key_hash(&high), None, Some(TreeEntry::of(&high, b"y")));
        assert_eq!(
            trees.keys.iter().sum::<u32>(),
            1,
            "only the scanned range counts"
        );
        assert!(trees.is_built(0));
        assert!(!trees.is_built(15));
        trees.scanned(&[(high.to_vec(), b"y".to_vec())], None);
        assert_eq!(trees.keys.iter().sum::<u32>(), 2);
        assert!(trees.fully_built());
    }
}
