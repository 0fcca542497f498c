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
//! order, one page per tick. A write that completes meanwhile updates the tree at once
//! if its key lies in the range already scanned; otherwise it is kept (bounded) until
//! the page in flight comes back, and its entry replaces what the page read of the key
//! (the page may have been read before the write). A key comparison that reads a whole
//! bucket resets the bucket's hash to what it read, unless a write to the bucket became
//! durable while the read was in flight, or the rebuild had not covered the bucket when
//! the read was issued (the rebuild's page adds those keys itself). So a tree matches
//! its store whenever no write is in flight, and equal stores give equal roots (up to a
//! hash collision).
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
//! # Urgent exchanges
//!
//! The round robin visits a partition once per `interval x partitions` (over a quarter
//! of an hour at the defaults), too slow for a replica known to have missed something.
//! So the node keeps a bounded set of exchanges it owes: (peer, partition) when a write
//! this node coordinated missed the peer (it was down, or silent past the replica
//! timeout; a hint is kept too, but a hint can be lost or refused for room), and every
//! partition this node replicates when its own store lost records (with any replica).
//! While the set is not empty the timer ticks `URGENT_SPEEDUP` times as often and
//! starts owed exchanges first, with peers that are up, under the same admission and
//! the same bound on exchanges at once. An exchange is paid when the peer answers; one
//! that expires unanswered is owed again (a new replica ignores exchanges of a
//! partition until gossip tells it that it replicates it, as after `RINGKV.REMOVE`).
//! Marks past the bound are dropped: the round robin still gets there.
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

use super::entries::{TreeChange, TreeEntry, entry_hashes, is_reapable};
use super::gossip::View;
use super::peers::Peers;
use super::request_id::NO_REQUEST;
use super::shared::Shared;
use super::tasks::Task;
use super::{ScanPage, StorageFailure};
use crate::placement::key_hash;

use crate::time::Instant;
use crate::version::NodeId;
use crate::wire::Message;
use core::time::Duration;
use std::collections::BTreeSet;
use xxhash_rust::xxh3::xxh3_64;

/// Buckets per partition tree: 2^6.
pub(crate) const BUCKET_BITS: u32 = 6;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Keys read per page while rebuilding trees at start.
const BUILD_PAGE_KEYS: u32 = 1_024;
/// Changes kept while the rebuild page they raced with is read.
const RACED_MAX: usize = 4_096;
/// How many times as often the timer ticks while exchanges are owed.
const URGENT_SPEEDUP: u64 = 50;
/// Owed exchanges kept, per partition of the ring.
const URGENT_PER_PARTITION: usize = 4;

/// Every partition's bucket hashes and key count on this node, and every bucket's
/// count of deleted records.
#[derive(Debug)]
pub(crate) struct HashTrees {
    partition_bits: u32,
    buckets: Vec<u64>,
    keys: Vec<u32>,
    reapable: Vec<u32>,
    /// Every key hash up to this one has been scanned in; `None`: nothing yet.
    built_through: Option<u64>,
    built: bool,
    /// Durable changes per bucket (wrapping): a bucket read for a comparison is reset
    /// to what was read only if no change landed while the read was in flight.
    changes: Vec<u32>,
    /// Durable changes of keys the rebuild had not reached yet, (key hash, new entry),
    /// in order: the page in flight may have read the key before the change, so each
    /// is reconciled with the page when it comes back. Bounded by `RACED_MAX`; past
    /// it the rebuild starts over.
    raced: Vec<(u64, Option<TreeEntry>)>,
    raced_overflow: bool,
}

impl HashTrees {
    pub(crate) fn new(partition_bits: u32) -> HashTrees {
        let partitions = 1usize << partition_bits;
        HashTrees {
            partition_bits,
            buckets: vec![0; partitions * BUCKETS],
            keys: vec![0; partitions],
            reapable: vec![0; partitions * BUCKETS],
            built_through: None,
            built: false,
            changes: vec![0; partitions * BUCKETS],
            raced: Vec::new(),
            raced_overflow: false,
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

    /// True once the bucket's whole range has been scanned in: only then do its hash
    /// and counts stand for the store (a comparison must not reset a bucket the
    /// rebuild has yet to add, or the rebuild would count its keys twice).
    fn bucket_built(&self, partition: usize, bucket: usize) -> bool {
        self.covers(self.bucket_range(partition, bucket).1)
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
            if self.raced.len() < RACED_MAX {
                self.raced.push((hash, new));
            } else {
                self.raced_overflow = true;
            }
            return;
        }
        let (partition, bucket) = self.locate(hash);
        let index = partition * BUCKETS + bucket;
        self.changes[index] = self.changes[index].wrapping_add(1);
        self.remove(index, partition, old);
        if let Some(new) = new {
            self.add(index, partition, new);
        }
    }

    /// Adds a stored record the tree did not count yet.
    fn add_record(&mut self, key: &[u8], record: &[u8]) {
        let (partition, bucket) = self.locate(key_hash(key));
        self.add(
            partition * BUCKETS + bucket,
            partition,
            TreeEntry::of(key, record),
        );
    }

    fn remove(&mut self, index: usize, partition: usize, entry: Option<TreeEntry>) {
        if let Some(entry) = entry {
            self.buckets[index] ^= entry.hash;
            self.keys[partition] = self.keys[partition].saturating_sub(1);
            if entry.reapable {
                self.reapable[index] = self.reapable[index].saturating_sub(1);
            }
        }
    }

    fn add(&mut self, index: usize, partition: usize, entry: TreeEntry) {
        self.buckets[index] ^= entry.hash;
        self.keys[partition] = self.keys[partition].saturating_add(1);
        if entry.reapable {
            self.reapable[index] = self.reapable[index].saturating_add(1);
        }
    }

    /// One rebuild page: `items` in hash order; `next` is where the scan goes on.
    /// Changes that raced with the page are reconciled with it; after too many, the
    /// rebuild starts over.
    pub(crate) fn scanned<'c>(
        &mut self,
        items: &[(Vec<u8>, Vec<u8>)],
        next: Option<u64>,
        in_flight: impl Iterator<Item = &'c TreeChange>,
    ) {
        if std::mem::take(&mut self.raced_overflow) {
            *self = HashTrees::new(self.partition_bits);
            return;
        }
        let from = self
            .built_through
            .map_or(0, |through| through.saturating_add(1));
        for (key, record) in items {
            self.add_record(key, record);
        }
        let through = next.unwrap_or(u64::MAX);
        // Each key the page covers that a write touched meanwhile must hold: the `old`
        // of a write still in flight (the store may already show its new record, and
        // its completion will apply old -> new), else the latest durable change (the
        // page may have been read before it). Changes past the page are dropped: the
        // next page is read after they were durable.
        let mut raced = std::mem::take(&mut self.raced);
        raced.retain(|&(hash, _)| (from..=through).contains(&hash));
        let mut targets: Vec<(u64, Option<TreeEntry>)> = Vec::with_capacity(raced.len());
        for &(hash, latest) in raced.iter().rev() {
            if !targets.iter().any(|&(seen, _)| seen == hash) {
                targets.push((hash, latest));
            }
        }
        for change in in_flight.filter(|c| (from..=through).contains(&c.key_hash)) {
            match targets
                .iter_mut()
                .find(|(hash, _)| *hash == change.key_hash)
            {
                Some(target) => target.1 = change.old,
                None => targets.push((change.key_hash, change.old)),
            }
        }
        for (hash, target) in targets {
            let read = page_entry(items, hash);
            if read != target {
                let (partition, bucket) = self.locate(hash);
                let index = partition * BUCKETS + bucket;
                self.remove(index, partition, read);
                if let Some(target) = target {
                    self.add(index, partition, target);
                }
            }
        }
        raced.clear();
        self.raced = raced;
        match next {
            Some(after) => self.built_through = Some(after),
            None => {
                self.built_through = Some(u64::MAX);
                self.built = true;
            }
        }
    }

    /// Durable changes the bucket has seen (wrapping), to tell whether a read of it
    /// raced with one.
    pub(crate) fn bucket_changes(&self, partition: usize, bucket: usize) -> u32 {
        self.changes[partition * BUCKETS + bucket]
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

    /// Records reaping has work on (`entries::is_reapable`) in one bucket.
    pub(crate) fn reapable_in(&self, partition: usize, bucket: usize) -> u32 {
        self.reapable[partition * BUCKETS + bucket]
    }

    /// Records reaping has work on in a partition.
    pub(crate) fn reapable_held(&self, partition: usize) -> u32 {
        self.reapable[partition * BUCKETS..(partition + 1) * BUCKETS]
            .iter()
            .sum()
    }

    /// A whole bucket was just read: its hash and reapable count are what was read.
    fn reset_bucket(&mut self, partition: usize, bucket: usize, hash: u64, reapable: u32) {
        self.buckets[partition * BUCKETS + bucket] = hash;
        self.reapable[partition * BUCKETS + bucket] = reapable;
    }
}

/// What a scan page read of the key with hash `hash`.
fn page_entry(items: &[(Vec<u8>, Vec<u8>)], hash: u64) -> Option<TreeEntry> {
    items
        .iter()
        .find(|(key, _)| key_hash(key) == hash)
        .map(|(key, record)| TreeEntry::of(key, record))
}

/// Every partition's root of a tree built from `records` (a store's data, any order):
/// what a node's tree must report once no write is in flight.
pub fn tree_roots<'a>(
    partition_bits: u32,
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u64> {
    let mut trees = HashTrees::new(partition_bits);
    trees.built = true;
    for (key, record) in records {
        trees.add_record(key, record);
    }
    (0..1usize << partition_bits)
        .map(|partition| trees.root(partition))
        .collect()
}

/// An exchange this node started, waiting for the peer's bucket hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    request: u64,
    peer: NodeId,
    partition: u32,
    expires_at: Instant,
    /// The owed exchange this one pays (`(peer, partition)` of `OwedExchanges`), owed
    /// again if no answer comes back.
    pays: Option<(NodeId, u32)>,
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
    /// The bucket's change count when this node's scan of it was issued; `None` when
    /// the tree's rebuild had not covered the bucket yet (the read then says nothing
    /// about the tree).
    changes_at_scan: Option<u32>,
}

/// Exchanges this node owes (see "Urgent exchanges"): (peer, partition), the peer
/// being this node's own id when any replica will do. Marked by the coordinator and by
/// damage at start, paid by [`Entropy::tick`].
#[derive(Debug)]
pub(crate) struct OwedExchanges {
    set: BTreeSet<(NodeId, u32)>,
    /// Owed again once `later_due` passes (`owe_later`).
    later: BTreeSet<(NodeId, u32)>,
    later_due: Option<Instant>,
    max: usize,
}

impl OwedExchanges {
    pub(crate) fn new(partition_bits: u32) -> OwedExchanges {
        OwedExchanges {
            set: BTreeSet::new(),
            later: BTreeSet::new(),
            later_due: None,
            max: (1usize << partition_bits) * URGENT_PER_PARTITION,
        }
    }

    /// A write of `partition` this node coordinated missed `peer`: exchange the
    /// partition with it soon after it is up.
    pub(crate) fn owe(&mut self, peer: NodeId, partition: usize) {
        if self.set.len() < self.max {
            self.set.insert((peer, partition as u32));
        }
    }

    /// Owe `peer` an exchange of `partition` once more at `due` (every entry owed
    /// later waits for the latest due time).
    pub(crate) fn owe_later(&mut self, peer: NodeId, partition: usize, due: Instant) {
        if self.later.len() < self.max {
            self.later.insert((peer, partition as u32));
        }
        self.later_due = Some(self.later_due.map_or(due, |was| was.max(due)));
    }

    /// Moves the exchanges owed later into the owed set once they are due.
    fn release_due(&mut self, now: Instant) {
        if self.later_due.is_some_and(|due| due <= now) {
            self.later_due = None;
            for (peer, partition) in core::mem::take(&mut self.later) {
                self.owe(peer, partition as usize);
            }
        }
    }

    /// This node's store lost records: exchange every partition it replicates soon,
    /// with any replica.
    pub(crate) fn owe_every(&mut self, own: NodeId, view: &View) {
        for partition in 0..view.ring.partition_count() {
            if view.replicates(own, partition) {
                self.owe(own, partition);
            }
        }
    }

    /// How many are owed, now or later, for INFO.
    pub(crate) fn len(&self) -> usize {
        self.set.len() + self.later.len()
    }
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

/// The anti-entropy surface: the node hands it the shared piece, the view and the peer
/// table, and says whether background work is admitted now.
impl Entropy {
    /// The anti-entropy timer: continue the tree rebuild, expire exchanges, maybe
    /// start one. When to tick next.
    pub(crate) fn tick(
        &mut self,
        shared: &mut Shared,
        (view, peers): (&View, &Peers),
        owed: &mut OwedExchanges,
        admitted: bool,
    ) -> Instant {
        let now = shared.now;
        let base_ms = shared.config.anti_entropy_interval_ms;
        if !admitted {
            self.ticks_refused += 1;
            self.interval_ms = (self.interval_ms * 2).min(base_ms * 16);
            return now + Duration::from_millis(self.interval_ms);
        }
        self.interval_ms = base_ms;
        self.expire_exchanges(now, owed);
        let exchanges_max = shared.config.anti_entropy_exchanges_max as usize;
        if !self.trees.fully_built() {
            self.continue_tree_build(shared);
        } else {
            owed.release_due(now);
            let mut started_owed = false;
            while self.exchanges.len() < exchanges_max && self.start_owed(shared, view, peers, owed)
            {
                started_owed = true;
            }
            if self.exchanges.len() < exchanges_max {
                self.start_exchange(shared, view, peers);
            }
            // Owed exchanges with peers that are all down wait at the usual pace.
            if started_owed && !owed.set.is_empty() {
                return now + Duration::from_millis((base_ms / URGENT_SPEEDUP).max(1));
            }
        }
        now + Duration::from_millis(base_ms)
    }

    /// Starts the first owed exchange that can start now (its peer up, the partition's
    /// tree built); forgets owed exchanges the view no longer allows. False: none could.
    fn start_owed(
        &mut self,
        shared: &mut Shared,
        view: &View,
        peers: &Peers,
        owed: &mut OwedExchanges,
    ) -> bool {
        let own = shared.id;
        let mut stale: smallvec::SmallVec<[(NodeId, u32); 8]> = smallvec::SmallVec::new();
        let mut chosen = None;
        for &(peer, partition) in &owed.set {
            let index = partition as usize;
            let allowed = if peer == own {
                view.replicates(own, index)
            } else {
                view.shares_partition(own, peer, partition)
            };
            if !allowed {
                if stale.len() < stale.inline_size() {
                    stale.push((peer, partition));
                }
                continue;
            }
            if !self.trees.is_built(index) {
                continue;
            }
            let with = if peer == own {
                let candidates: smallvec::SmallVec<[NodeId; 8]> = view
                    .ring
                    .preference_list(index)
                    .filter(|&node| node != own && peers.is_up(node))
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                candidates[shared.rng.below(candidates.len() as u64) as usize]
            } else if peers.is_up(peer) {
                peer
            } else {
                continue;
            };
            chosen = Some((peer, partition, with));
            break;
        }
        for entry in stale {
            owed.set.remove(&entry);
        }
        let Some((peer, partition, with)) = chosen else {
            return false;
        };
        owed.set.remove(&(peer, partition));
        if self.exchange(shared, partition as usize, with, Some((peer, partition))) {
            true
        } else {
            owed.owe(peer, partition as usize);
            false
        }
    }

    /// Forgets exchanges whose answer did not come in time. An owed one is owed again:
    /// the peer may not have heard yet of the view that made it a replica (it ignores
    /// the exchange until then), or was busy or just went down.
    fn expire_exchanges(&mut self, now: Instant, owed: &mut OwedExchanges) {
        let mut index = 0;
        while index < self.exchanges.len() {
            if self.exchanges[index].expires_at > now {
                index += 1;
                continue;
            }
            if let Some((peer, partition)) = self.exchanges.swap_remove(index).pays {
                owed.owe(peer, partition as usize);
            }
        }
    }

    fn continue_tree_build(&mut self, shared: &mut Shared) {
        if self.building {
            return;
        }
        let after = self.trees.build_cursor();
        let task = Task::BuildTrees;
        if shared
            .start_scan(task, (0, u64::MAX), (after, BUILD_PAGE_KEYS), false)
            .is_some()
        {
            self.building = true;
        }
    }

    /// A page of the tree rebuild was read (`Err`: the scan failed; the next tick
    /// tries again).
    pub(crate) fn tree_page(
        &mut self,
        shared: &mut Shared,
        page: Result<ScanPage, StorageFailure>,
        admitted: bool,
    ) {
        self.building = false;
        let Ok(page) = page else {
            return;
        };
        if shared.sabotage().trees_ignore_races {
            self.trees.raced.clear();
            self.trees
                .scanned(&page.items, page.next, core::iter::empty());
        } else {
            let in_flight = shared.tasks.tree_changes();
            self.trees.scanned(&page.items, page.next, in_flight);
        }
        if page.next.is_some() && admitted {
            self.continue_tree_build(shared);
        }
    }

    fn start_exchange(&mut self, shared: &mut Shared, view: &View, peers: &Peers) {
        let partitions = view.ring.partition_count();
        for _ in 0..partitions {
            let partition = self.cursor % partitions;
            self.cursor = (self.cursor + 1) % partitions;
            if !self.trees.is_built(partition) || !view.replicates(shared.id, partition) {
                continue;
            }
            let candidates: smallvec::SmallVec<[NodeId; 8]> = view
                .ring
                .preference_list(partition)
                .filter(|&node| node != shared.id && peers.is_up(node))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let peer = candidates[shared.rng.below(candidates.len() as u64) as usize];
            self.exchange(shared, partition, peer, None);
            return;
        }
    }

    /// Starts an exchange of `partition` with `peer`: sends it this node's root.
    /// `pays`: the owed exchange it stands for. False: the message could not be sent.
    fn exchange(
        &mut self,
        shared: &mut Shared,
        partition: usize,
        peer: NodeId,
        pays: Option<(NodeId, u32)>,
    ) -> bool {
        let request = shared.rng.next_u64() >> 1;
        let root = self.trees.root(partition);
        let message = Message::TreeHashes {
            request,
            partition: partition as u32,
            level: 0,
            hashes: vec![(0, root)],
        };
        if shared.send(peer, &message) {
            self.exchanges_started += 1;
            self.exchanges.push(Exchange {
                request,
                peer,
                partition: partition as u32,
                expires_at: shared.now + Duration::from_millis(shared.config.request_timeout_ms),
                pays,
            });
            return true;
        }
        false
    }

    /// A peer's anti-entropy message (`TreeHashes` or `KeyHashes`).
    pub(crate) fn handle_message(
        &mut self,
        shared: &mut Shared,
        view: &View,
        owed: &mut OwedExchanges,
        from: NodeId,
        message: Message<'_>,
    ) {
        match message {
            Message::TreeHashes {
                request,
                partition,
                level,
                hashes,
            } => {
                let at = (partition, level);
                self.tree_hashes(shared, view, owed, (from, request), at, &hashes)
            }
            Message::KeyHashes {
                request,
                partition,
                bucket,
                reply,
                keys,
            } => {
                let bucket = (partition, bucket, reply);
                self.key_hashes(shared, view, (from, request), bucket, &keys)
            }
            _ => debug_assert!(false, "not an anti-entropy message: {message:?}"),
        }
    }

    /// A peer's tree hashes: level 0 is its root (answer with this node's buckets
    /// unless the roots agree), level 1 the answer to an exchange this node started
    /// (compare the buckets that differ).
    fn tree_hashes(
        &mut self,
        shared: &mut Shared,
        view: &View,
        owed: &mut OwedExchanges,
        (from, request): (NodeId, u64),
        (partition, level): (u32, u8),
        hashes: &[(u32, u64)],
    ) {
        if !view.shares_partition(shared.id, from, partition) {
            return;
        }
        match level {
            0 => self.answer_root(shared, (from, request), partition, hashes),
            1 => self.compare_buckets(shared, owed, (from, request), partition, hashes),
            _ => {}
        }
    }

    fn answer_root(
        &mut self,
        shared: &mut Shared,
        (from, request): (NodeId, u64),
        partition: u32,
        hashes: &[(u32, u64)],
    ) {
        let index = partition as usize;
        if !self.trees.is_built(index) {
            return; // the initiator's exchange expires; trees are still building
        }
        let agree = hashes.first().map(|&(_, root)| root) == Some(self.trees.root(index));
        let hashes: Vec<(u32, u64)> = if agree {
            Vec::new()
        } else {
            (0u32..)
                .zip(self.trees.buckets(index).iter().copied())
                .collect()
        };
        let message = Message::TreeHashes {
            request,
            partition,
            level: 1,
            hashes,
        };
        shared.send(from, &message);
    }

    /// The peer's bucket hashes answered an exchange of this node's: compare the
    /// buckets that differ, up to `anti_entropy_buckets_max`. A partition that differs
    /// in more (or whose comparisons the bound refused) is owed another exchange at
    /// once: after a long outage whose hints were refused for room, leaving the rest
    /// to the round robin left 36 of 1,024 partitions different two minutes later.
    fn compare_buckets(
        &mut self,
        shared: &mut Shared,
        owed: &mut OwedExchanges,
        (from, request): (NodeId, u64),
        partition: u32,
        hashes: &[(u32, u64)],
    ) {
        let Some(position) = self
            .exchanges
            .iter()
            .position(|e| e.request == request && e.peer == from && e.partition == partition)
        else {
            return; // expired, or not this node's exchange
        };
        self.exchanges.swap_remove(position);
        if hashes.is_empty() {
            self.exchanges_in_sync += 1;
            return;
        }
        let mine = self.trees.buckets(partition as usize);
        let mut differing: smallvec::SmallVec<[u32; 16]> = hashes
            .iter()
            .filter(|&&(bucket, hash)| mine.get(bucket as usize).is_some_and(|&own| own != hash))
            .map(|&(bucket, _)| bucket)
            .collect();
        let compared = shared.config.anti_entropy_buckets_max as usize;
        let mut unfinished = differing.len() > compared;
        differing.truncate(compared);
        for bucket in differing {
            let comparison = Comparison {
                peer: from,
                request,
                partition,
                bucket,
                theirs: None,
                answer: true,
                changes_at_scan: None,
            };
            unfinished |= !self.scan_bucket(shared, comparison);
        }
        if unfinished {
            owed.owe(from, partition as usize);
        }
    }

    /// A peer's key hashes for one bucket: compare them with this node's.
    fn key_hashes(
        &mut self,
        shared: &mut Shared,
        view: &View,
        (from, request): (NodeId, u64),
        (partition, bucket, reply): (u32, u32, bool),
        keys: &[(&[u8], u64)],
    ) {
        if !view.shares_partition(shared.id, from, partition) || bucket as usize >= BUCKETS {
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
            changes_at_scan: None,
        };
        self.scan_bucket(shared, comparison);
    }

    /// Starts scanning a bucket for `comparison`; false when the bound on comparisons
    /// or storage operations refused it (the next exchange finds what this one could
    /// not).
    fn scan_bucket(&mut self, shared: &mut Shared, mut comparison: Comparison) -> bool {
        if self.comparisons.len() >= shared.config.anti_entropy_buckets_max as usize * 4 {
            return false;
        }
        let (partition, bucket) = (comparison.partition as usize, comparison.bucket as usize);
        let range = self.trees.bucket_range(partition, bucket);
        let limit = shared.config.wire_limits.list_length_max as u32;
        comparison.changes_at_scan = self
            .trees
            .bucket_built(partition, bucket)
            .then(|| self.trees.bucket_changes(partition, bucket));
        match shared.start_scan(Task::EntropyScan, range, (None, limit), false) {
            Some(token) => {
                self.comparisons.push((token, comparison));
                true
            }
            None => false,
        }
    }

    /// This node's scan of a bucket under comparison finished (`Err`: it failed, and
    /// the comparison is forgotten).
    pub(crate) fn bucket_scanned(
        &mut self,
        shared: &mut Shared,
        token: u64,
        page: Result<ScanPage, StorageFailure>,
    ) {
        let Some(position) = self.comparisons.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, comparison) = self.comparisons.swap_remove(position);
        let Ok(page) = page else {
            return;
        };
        let items = &page.items;
        let mine = entry_hashes(items);
        let (partition, bucket) = (comparison.partition as usize, comparison.bucket as usize);
        let unchanged = comparison.changes_at_scan
            == Some(self.trees.bucket_changes(partition, bucket))
            || shared.sabotage().trees_ignore_races;
        // A change that landed while the read was in flight may be missing from it; a
        // bucket the rebuild has not covered (at the read, or now: an overflowing
        // rebuild starts over) is the rebuild's to count.
        let built =
            comparison.changes_at_scan.is_some() && self.trees.bucket_built(partition, bucket);
        if page.next.is_none() && unchanged && built {
            let mut hash = mine.iter().fold(0, |acc, &(_, h)| acc ^ h);
            let mut reapable = items
                .iter()
                .filter(|(_, record)| is_reapable(record))
                .count() as u32;
            // A write still in flight may already show in the read: count its key at
            // the record it replaces, which its completion will take out.
            let (first, last) = self.trees.bucket_range(partition, bucket);
            let in_flight = shared.tasks.tree_changes();
            for change in in_flight.filter(|c| (first..=last).contains(&c.key_hash)) {
                if shared.sabotage().trees_ignore_races {
                    break;
                }
                let read = page_entry(items, change.key_hash);
                for (entry, sign) in [(read, -1i64), (change.old, 1)] {
                    if let Some(entry) = entry {
                        hash ^= entry.hash;
                        if entry.reapable {
                            reapable = reapable.saturating_add_signed(sign as i32);
                        }
                    }
                }
            }
            self.trees.reset_bucket(partition, bucket, hash, reapable);
        }
        if let Some(theirs) = &comparison.theirs {
            for ((key, record), &(_, hash)) in items.iter().zip(&mine) {
                let same = theirs
                    .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                    .is_ok_and(|at| theirs[at].1 == hash);
                if !same {
                    self.keys_pushed += 1;
                    let message = Message::ReplicaPut {
                        request: NO_REQUEST,
                        key,
                        versions: record,
                        hint: None,
                        durable: false,
                    };
                    shared.send(comparison.peer, &message);
                }
            }
        }
        if comparison.answer {
            let message = Message::KeyHashes {
                request: comparison.request,
                partition: comparison.partition,
                bucket: comparison.bucket,
                reply: comparison.theirs.is_some(),
                keys: mine,
            };
            shared.send(comparison.peer, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionSet;

    fn record(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn updates_in_any_order_give_the_same_tree_as_a_scan() {
        let mut by_writes = HashTrees::new(4);
        by_writes.scanned(&[], None, core::iter::empty());
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
        by_scan.scanned(&items, None, core::iter::empty());
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
        trees.scanned(&[], None, core::iter::empty());
        let key = b"k".as_slice();
        let (partition, bucket) = trees.locate(key_hash(key));
        trees.apply(key_hash(key), None, Some(TreeEntry::of(key, &live)));
        assert_eq!(trees.reapable_in(partition, bucket), 0);
        let (old, new) = (TreeEntry::of(key, &live), TreeEntry::of(key, &deleted));
        trees.apply(key_hash(key), Some(old), Some(new));
        assert_eq!(trees.reapable_in(partition, bucket), 1);
        assert_eq!(trees.reapable_held(partition), 1);
        let mut scanned = HashTrees::new(4);
        scanned.scanned(
            &[(key.to_vec(), deleted.clone())],
            None,
            core::iter::empty(),
        );
        assert_eq!(scanned.reapable, trees.reapable);
        trees.apply(key_hash(key), Some(new), None);
        assert_eq!(trees.reapable_held(partition), 0);
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
    fn a_change_that_raced_with_the_rebuild_page_is_not_lost() {
        let key = b"raced".to_vec();
        let hash = key_hash(&key);
        let written = TreeEntry::of(&key, b"new");
        // The whole tree once the rebuild is over, from a quiet scan of the new record.
        let mut quiet = HashTrees::new(4);
        quiet.scanned(&[(key.clone(), b"new".to_vec())], None, core::iter::empty());
        // The page read the old record; the write from old to new became durable
        // before the page came back (the tree did not cover the key yet).
        let mut trees = HashTrees::new(4);
        trees.apply(hash, Some(TreeEntry::of(&key, b"old")), Some(written));
        trees.scanned(&[(key.clone(), b"old".to_vec())], None, core::iter::empty());
        assert_eq!(trees.buckets, quiet.buckets);
        assert_eq!(trees.keys, quiet.keys);
        // The page read after the write: nothing to reconcile.
        let mut trees = HashTrees::new(4);
        trees.apply(hash, None, Some(written));
        trees.scanned(&[(key.clone(), b"new".to_vec())], None, core::iter::empty());
        assert_eq!(trees.buckets, quiet.buckets);
        // The key was deleted meanwhile: the page's copy goes.
        let mut trees = HashTrees::new(4);
        trees.apply(hash, Some(TreeEntry::of(&key, b"old")), None);
        trees.scanned(&[(key.clone(), b"old".to_vec())], None, core::iter::empty());
        assert_eq!(trees.buckets, HashTrees::new(4).buckets);
        assert_eq!(trees.keys.iter().sum::<u32>(), 0);
    }

    #[test]
    fn a_write_in_flight_that_already_shows_in_the_page_is_counted_once() {
        let key = b"visible".to_vec();
        let hash = key_hash(&key);
        let (old, new) = (TreeEntry::of(&key, b"old"), TreeEntry::of(&key, b"new"));
        let mut quiet = HashTrees::new(4);
        quiet.scanned(&[(key.clone(), b"new".to_vec())], None, core::iter::empty());
        // The store made the new record visible before the core heard it is durable.
        let change = TreeChange {
            key_hash: hash,
            old: Some(old),
            new: Some(new),
        };
        let mut trees = HashTrees::new(4);
        let page = [(key.clone(), b"new".to_vec())];
        trees.scanned(&page, None, [change].iter());
        trees.apply(hash, Some(old), Some(new));
        assert_eq!(trees.buckets, quiet.buckets);
        assert_eq!(trees.keys, quiet.keys);
    }

    #[test]
    fn too_many_raced_changes_start_the_rebuild_over() {
        let mut trees = HashTrees::new(4);
        for i in 0..=RACED_MAX as u64 {
            trees.apply(i, None, None);
        }
        trees.scanned(&[], None, core::iter::empty());
        assert!(!trees.fully_built());
        assert_eq!(trees.build_cursor(), None);
        trees.scanned(&[], None, core::iter::empty());
        assert!(trees.fully_built());
    }

    #[test]
    fn a_bucket_counts_the_changes_a_comparison_read_may_have_missed() {
        let mut trees = HashTrees::new(4);
        trees.scanned(&[], None, core::iter::empty());
        let key = b"k".to_vec();
        let hash = key_hash(&key);
        let (partition, bucket) = trees.locate(hash);
        let before = trees.bucket_changes(partition, bucket);
        trees.apply(hash, None, Some(TreeEntry::of(&key, b"v")));
        assert_ne!(trees.bucket_changes(partition, bucket), before);
    }

    #[test]
    fn writes_beyond_the_rebuild_cursor_are_left_to_the_scan() {
        let mut trees = HashTrees::new(4);
        trees.scanned(&[], Some(u64::MAX / 2), core::iter::empty());
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
        trees.scanned(&[(high.to_vec(), b"y".to_vec())], None, core::iter::empty());
        assert_eq!(trees.keys.iter().sum::<u32>(), 2);
        assert!(trees.fully_built());
    }
}
