//! Tombstone reaping (design.md section 3): a delete is a tombstone write, and a
//! tombstone is removed only once no copy anywhere could bring the deleted value back.
//!
//! # The rule
//!
//! A tombstone (a record whose every sibling is a delete) is removed from every
//! replica when all of these held:
//!
//! 1. every replica of its key held that exact record (same entry hash) at a first
//!    check, and still did at a second check at least `tombstone_grace_ms` later;
//! 2. after the first check plus the grace period, every member of the cluster (all of
//!    them up) answered that it holds no hint for the key's partition and no copy of
//!    the partition that it has yet to hand off;
//! 3. the placement did not change in between.
//!
//! Why that is enough: a value the delete superseded could come back only from a copy
//! that does not hold the tombstone. Replicas all hold it (1). A stand-in's hint or an
//! old replica's not yet handed-off copy would show in (2); any of those made before
//! the delete exists by the first check plus the grace period (which covers messages
//! and storage writes still in flight when the delete was acknowledged), and nothing
//! made later holds the old value without the tombstone. A member that is down might
//! hold such a copy, so any member down blocks reaping altogether. Clocks are never
//! compared across nodes: the grace period is measured on the leading node's own
//! monotonic clock, between its two checks.
//!
//! Removing a record makes the node forget which counters its writer id used for the
//! key, while a replica that has not reaped yet (or that pushes the tombstone back by
//! anti-entropy before it reaps) still holds a clock naming them. So before removing a
//! record each replica makes sure its durable counter floor covers its writer's counter
//! in it, and a later dot for a key without a live value of its writer is minted above
//! the floor (`node::writer`; an old client context can name the reaped counters too). Such a write is then concurrent with a tombstone still held
//! elsewhere, never hidden by it; the tombstone stays as an invisible sibling until a
//! later write supersedes it.
//!
//! # The walk
//!
//! The first member of a partition's preference list leads its reaping; the others
//! only answer. At most once per `reap_interval_ms`, when background work is admitted
//! and its trees are built, a node that leads a partition holding deleted records
//! (its tree counts them per bucket) asks every member for its busy partitions
//! (`ReapQuery`/`ReapStatus`), then walks the buckets of its partitions that hold
//! deleted records, one page of `background_page_keys` keys at a time:
//!
//! - the page's deleted records are offered to the other replicas exactly as handoff
//!   offers them (`HandoffOffer`; each answers with the keys it holds differently);
//! - a tombstone every replica holds alike becomes a *candidate*, remembered (key hash,
//!   entry hash, time of this first check) in a table of at most `reap_candidates_max`;
//! - a candidate confirmed again with the same entry hash, whose first check was at
//!   least the grace period before this walk's query, is removed: `ReapKeys` to the
//!   other replicas, and a conditional delete here. Each replica deletes under the
//!   key's lock, only if its record is still that one and its floor covers it.
//!
//! A replica that did not reap (down, lost message, floor not yet raised) pushes the
//! tombstone back to the others through anti-entropy, and a later walk reaps it again.
//! Candidates of a partition that a finished walk did not confirm again are forgotten.
//! A missing answer, a replica or member going down, or a placement change abandons the
//! walk; the next one starts over. Nothing is persisted but the floor: a restart
//! forgets the candidates, which only delays reaping by one grace period.

use super::Node;
use super::entries::entry_hash;
use super::entropy::BUCKET_BITS;
use super::replica::{DeleteCause, KeyOp};
use super::request_id::{self, Owner};
use super::tasks::Task;
use super::timers::Timer;
use super::{ScanPage, Space, StorageFailure};
use crate::placement::key_hash;
use crate::time::Instant;
use crate::version::{NodeId, VersionSet};
use crate::wire::{MemberStatus, Message};
use core::time::Duration;
use smallvec::SmallVec;
use std::collections::BTreeMap;

const BUCKETS: u32 = 1 << BUCKET_BITS;
/// While a walk runs, a step that had to wait is tried again this often.
pub(crate) const STEP_MS: u64 = 200;

/// A tombstone every replica held alike at its first check.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    entry_hash: u64,
    first_checked: Instant,
    /// The last walk that confirmed it.
    walk: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for every member's `ReapStatus`.
    Querying,
    /// Ready for the next page (or waiting for room to scan it).
    Ready,
    Scanning,
    /// The page's tombstones were offered; waiting for every replica's answer.
    Offered,
}

/// One walk over the partitions this node leads.
#[derive(Debug)]
struct Walk {
    serial: u32,
    placement: u64,
    query_sent_at: Instant,
    /// Members yet to answer the query.
    waiting: Vec<NodeId>,
    /// Partitions some member holds hints or a not yet handed-off copy of.
    busy: Vec<u64>,
    phase: Phase,
    expires_at: Instant,
    partition: usize,
    bucket: u32,
    after: Option<u64>,
    targets: SmallVec<[NodeId; 4]>,
    page_serial: u32,
    /// The page's tombstones: (key, entry hash, this node's writer counter in it); per
    /// position, held differently by a replica; per target, answered.
    page: Vec<(Vec<u8>, u64, u64)>,
    next: Option<u64>,
    differs: Vec<bool>,
    answered: SmallVec<[bool; 4]>,
}

impl Walk {
    fn request(&self, page: u32) -> u64 {
        request_id::reap(self.serial, page)
    }

    fn is_busy(&self, partition: usize) -> bool {
        self.busy
            .get(partition / 64)
            .is_some_and(|word| word & (1 << (partition % 64)) != 0)
    }

    fn set_busy(&mut self, partition: usize) {
        if let Some(word) = self.busy.get_mut(partition / 64) {
            *word |= 1 << (partition % 64);
        }
    }

    /// Moves past the page that ended at `next`.
    fn advance(&mut self, next: Option<u64>) {
        match next {
            Some(after) => self.after = Some(after),
            None => {
                self.bucket += 1;
                self.after = None;
            }
        }
    }
}

/// The node's reaping state.
#[derive(Debug)]
pub(crate) struct Reaper {
    next_walk_at: Instant,
    walks: u32,
    walk: Option<Walk>,
    candidates: BTreeMap<u64, Candidate>,
    pub(crate) walks_started: u64,
    pub(crate) walks_blocked: u64,
    pub(crate) keys_reaped: u64,
}

impl Reaper {
    pub(crate) fn new(now: Instant, interval_ms: u64) -> Reaper {
        Reaper {
            next_walk_at: now + Duration::from_millis(interval_ms),
            walks: 0,
            walk: None,
            candidates: BTreeMap::new(),
            walks_started: 0,
            walks_blocked: 0,
            keys_reaped: 0,
        }
    }

    /// True for the request ids of the walk in flight.
    pub(crate) fn owns_request(&self, request: u64) -> bool {
        request_id::owner(request) == Owner::Reap
            && self.walk.as_ref().is_some_and(|walk| {
                request_id::batch(request) == request_id::batch(walk.request(0))
            })
    }

    /// Tombstones remembered between walks.
    pub(crate) fn candidates(&self) -> usize {
        self.candidates.len()
    }
}

impl Node {
    /// The reaping timer.
    pub(crate) fn reap_tick(&mut self) {
        let now = self.shared.now;
        let interval_ms = self.shared.config.reap_interval_ms;
        let step = now + Duration::from_millis(STEP_MS.min(interval_ms));
        self.timers.set(Timer::Reap, step);
        if self.shared.config.reap_candidates_max == 0 {
            self.timers
                .set(Timer::Reap, now + Duration::from_millis(interval_ms));
            return;
        }
        let placement = self.view.membership.placement_digest();
        match &self.reaper.walk {
            Some(walk) => {
                let stalled = matches!(walk.phase, Phase::Querying | Phase::Offered)
                    && now >= walk.expires_at;
                let lost = walk.targets.iter().any(|&t| !self.peers.is_up(t))
                    && !self.shared.sabotage().reap_unconfirmed;
                if stalled || lost || walk.placement != placement {
                    self.abandon_walk();
                } else if walk.phase == Phase::Ready {
                    self.continue_walk();
                }
            }
            None if now >= self.reaper.next_walk_at => self.start_walk(),
            None => {}
        }
    }

    /// True when this node leads `partition`'s reaping: first in its preference list.
    fn leads(&self, partition: usize) -> bool {
        self.view.ready && self.view.ring.preference_list(partition).next() == Some(self.shared.id)
    }

    fn start_walk(&mut self) {
        let now = self.shared.now;
        self.reaper.next_walk_at = now + Duration::from_millis(self.shared.config.reap_interval_ms);
        let trees = &self.entropy.trees;
        if !trees.fully_built() || !self.background_admitted() {
            return;
        }
        let partitions = self.view.ring.partition_count();
        if !(0..partitions).any(|p| self.leads(p) && self.entropy.trees.deleted_held(p) > 0) {
            return;
        }
        let mut members: Vec<NodeId> = self
            .view
            .membership
            .members()
            .iter()
            .filter(|m| m.id != self.shared.id && m.status != MemberStatus::Left)
            .map(|m| m.id)
            .collect();
        let Some(own_busy) = self.busy_partitions() else {
            return;
        };
        if self.shared.sabotage().reap_unconfirmed {
            members.clear(); // asks no one, and goes on with members down
        } else if members.iter().any(|&m| !self.peers.is_up(m)) {
            self.reaper.walks_blocked += 1;
            return;
        }
        self.reaper.walks = self.reaper.walks.wrapping_add(1);
        self.reaper.walks_started += 1;
        let mut walk = Walk {
            serial: self.reaper.walks,
            placement: self.view.membership.placement_digest(),
            query_sent_at: now,
            waiting: members,
            busy: vec![0; partitions.div_ceil(64)],
            phase: Phase::Querying,
            expires_at: now + Duration::from_millis(self.shared.config.request_timeout_ms),
            partition: 0,
            bucket: 0,
            after: None,
            targets: SmallVec::new(),
            page_serial: 0,
            page: Vec::new(),
            next: None,
            differs: Vec::new(),
            answered: SmallVec::new(),
        };
        for partition in own_busy {
            walk.set_busy(partition as usize);
        }
        let request = walk.request(0);
        let waiting = walk.waiting.clone();
        self.reaper.walk = Some(walk);
        for member in waiting {
            if !self.shared.send(member, &Message::ReapQuery { request }) {
                return self.abandon_walk();
            }
        }
        self.query_answered();
    }

    fn abandon_walk(&mut self) {
        if let Some(walk) = self.reaper.walk.take() {
            log::debug!(
                "node {}: reaping walk {} abandoned at partition {}",
                self.shared.id.0,
                walk.serial,
                walk.partition
            );
            self.reaper.walks_blocked += 1;
        }
    }

    /// The partitions this node holds hints of or data it does not replicate; `None`
    /// while it cannot tell (trees or the hint list not loaded) or the list is too
    /// long for one message.
    pub(crate) fn busy_partitions(&self) -> Option<Vec<u32>> {
        if !self.view.ready || !self.entropy.trees.fully_built() || !self.hints.listed {
            return None;
        }
        let mut busy: Vec<u32> = (0..self.view.ring.partition_count())
            .filter(|&p| self.entropy.trees.keys_held(p) > 0 && !self.replicates(p))
            .map(|p| p as u32)
            .collect();
        busy.extend(
            self.hints
                .keys()
                .map(|key| self.view.ring.partition_of(key) as u32),
        );
        busy.sort_unstable();
        busy.dedup();
        (busy.len() <= self.shared.config.wire_limits.list_length_max).then_some(busy)
    }

    /// A leading node asks what could bring a deleted value back.
    pub(crate) fn reap_query(&mut self, from: NodeId, request: u64) {
        let busy = self.busy_partitions();
        let message = Message::ReapStatus {
            request,
            complete: busy.is_some(),
            partitions: busy.unwrap_or_default(),
        };
        self.shared.send(from, &message);
    }

    /// A member's answer to this node's query.
    pub(crate) fn reap_status(
        &mut self,
        from: NodeId,
        request: u64,
        complete: bool,
        partitions: &[u32],
    ) {
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        if walk.phase != Phase::Querying || request != walk.request(0) {
            return;
        }
        let Some(position) = walk.waiting.iter().position(|&m| m == from) else {
            return;
        };
        if !complete {
            return self.abandon_walk();
        }
        walk.waiting.swap_remove(position);
        for &partition in partitions {
            walk.set_busy(partition as usize);
        }
        self.query_answered();
    }

    fn query_answered(&mut self) {
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        if walk.phase == Phase::Querying && walk.waiting.is_empty() {
            walk.phase = Phase::Ready;
            self.continue_walk();
        }
    }

    /// Scans the next page holding deleted records, or ends the walk.
    fn continue_walk(&mut self) {
        let partitions = self.view.ring.partition_count();
        loop {
            let Some(walk) = &self.reaper.walk else {
                return;
            };
            let (partition, bucket, after) = (walk.partition, walk.bucket, walk.after);
            if partition >= partitions {
                self.reaper.walk = None;
                return;
            }
            let trees = &self.entropy.trees;
            let next_partition = if !self.leads(partition) || walk.is_busy(partition) {
                true
            } else if bucket >= BUCKETS || (bucket == 0 && trees.deleted_held(partition) == 0) {
                self.forget_unconfirmed(partition);
                true
            } else {
                false
            };
            let Some(walk) = &mut self.reaper.walk else {
                return;
            };
            if next_partition {
                walk.partition += 1;
                walk.bucket = 0;
                walk.after = None;
                continue;
            }
            if after.is_none() && self.entropy.trees.deleted_in(partition, bucket as usize) == 0 {
                walk.bucket += 1;
                continue;
            }
            break;
        }
        let Some(walk) = &self.reaper.walk else {
            return;
        };
        let partition = walk.partition;
        let targets: SmallVec<[NodeId; 4]> = self
            .view
            .ring
            .preference_list(partition)
            .filter(|&node| node != self.shared.id)
            .collect();
        let unconfirmed = self.shared.sabotage().reap_unconfirmed;
        if !unconfirmed && targets.iter().any(|&t| !self.peers.is_up(t)) {
            return self.abandon_walk();
        }
        if !self.background_admitted() {
            return; // the next tick tries again
        }
        let range = self
            .entropy
            .trees
            .bucket_range(partition, walk.bucket as usize);
        let after = walk.after;
        let limit = self
            .shared
            .config
            .background_page_keys
            .min(self.shared.config.wire_limits.list_length_max as u32);
        if self
            .shared
            .start_scan(Task::ReapPage, range, after, limit)
            .is_none()
        {
            return;
        }
        if let Some(walk) = &mut self.reaper.walk {
            walk.targets = targets;
            walk.phase = Phase::Scanning;
        }
    }

    /// A walk finished `partition`: its candidates this walk did not confirm again are
    /// no longer tombstones everywhere (or no longer exist).
    fn forget_unconfirmed(&mut self, partition: usize) {
        let Some(walk) = &self.reaper.walk else {
            return;
        };
        let serial = walk.serial;
        let (first, last) = self.view.ring.hash_range(partition);
        let stale: Vec<u64> = self
            .reaper
            .candidates
            .range(first..=last)
            .filter(|(_, c)| c.walk != serial)
            .map(|(&hash, _)| hash)
            .collect();
        for hash in stale {
            self.reaper.candidates.remove(&hash);
        }
    }

    /// A page of a bucket this node leads was read: offer its tombstones.
    pub(crate) fn reap_page(&mut self, result: Result<ScanPage, StorageFailure>) {
        let unconfirmed = self.shared.sabotage().reap_unconfirmed;
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        if walk.phase != Phase::Scanning {
            return;
        }
        let Ok(ScanPage { items, next }) = result else {
            walk.phase = Phase::Ready;
            return;
        };
        let writer = self.writer.writer_id(self.shared.id);
        let bounds = self.shared.config.version_bounds;
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        walk.page.clear();
        walk.page.extend(
            items
                .iter()
                .filter(|(_, record)| VersionSet::record_is_deleted(record))
                .filter_map(|(key, record)| {
                    // A record that does not decode is never reaped.
                    let versions = VersionSet::decode(record, bounds).ok()?;
                    let counter = super::writer::lanes_counter(&versions, writer);
                    Some((key.clone(), entry_hash(key, record), counter))
                }),
        );
        walk.next = next;
        walk.differs = vec![false; walk.page.len()];
        walk.answered = SmallVec::from_elem(false, walk.targets.len());
        if walk.page.is_empty() {
            walk.advance(next);
            walk.phase = Phase::Ready;
            return self.continue_walk();
        }
        if unconfirmed {
            let everything: Vec<usize> = (0..walk.page.len()).collect();
            return self.reap_positions(&everything);
        }
        walk.page_serial = (walk.page_serial + 1) & ((1 << request_id::LOW_BITS) - 1);
        walk.page_serial = walk.page_serial.max(1);
        walk.phase = Phase::Offered;
        walk.expires_at =
            self.shared.now + Duration::from_millis(self.shared.config.request_timeout_ms);
        let request = walk.request(walk.page_serial);
        let keys: Vec<(&[u8], u64)> = walk
            .page
            .iter()
            .map(|(key, hash, _)| (key.as_slice(), *hash))
            .collect();
        let message = Message::HandoffOffer {
            request,
            partition: walk.partition as u32,
            bucket: walk.bucket,
            keys,
        };
        let mut sent = true;
        for &target in &walk.targets {
            sent &= self
                .shared
                .actions
                .send(target, self.shared.config.cluster_id, &message)
                .is_ok();
        }
        if !sent {
            return self.abandon_walk();
        }
        self.maybe_page_checked();
    }

    /// A replica's answer to this node's offer of tombstones.
    pub(crate) fn reap_need(&mut self, from: NodeId, request: u64, differing: &[u32]) {
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        if walk.phase != Phase::Offered || request != walk.request(walk.page_serial) {
            return;
        }
        let Some(target) = walk.targets.iter().position(|&t| t == from) else {
            return;
        };
        if walk.answered[target] {
            return;
        }
        walk.answered[target] = true;
        for &position in differing {
            if let Some(differs) = walk.differs.get_mut(position as usize) {
                *differs = true;
            }
        }
        self.maybe_page_checked();
    }

    /// Once every replica answered: the page's tombstones every replica holds alike
    /// become candidates, and candidates that passed their grace period are reaped.
    fn maybe_page_checked(&mut self) {
        let now = self.shared.now;
        let grace = Duration::from_millis(self.shared.config.tombstone_grace_ms);
        let candidates_max = self.shared.config.reap_candidates_max as usize;
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        if walk.phase != Phase::Offered || !walk.answered.iter().all(|&a| a) {
            return;
        }
        let mut ripe: Vec<usize> = Vec::new();
        let candidates = &mut self.reaper.candidates;
        for (position, (key, hash, _)) in walk.page.iter().enumerate() {
            if walk.differs[position] {
                continue;
            }
            let fresh = Candidate {
                entry_hash: *hash,
                first_checked: now,
                walk: walk.serial,
            };
            let room = candidates.len() < candidates_max;
            match candidates.get_mut(&key_hash(key)) {
                Some(candidate) if candidate.entry_hash == *hash => {
                    candidate.walk = walk.serial;
                    if candidate.first_checked + grace <= walk.query_sent_at {
                        ripe.push(position);
                    }
                }
                Some(candidate) => *candidate = fresh,
                None if room => {
                    candidates.insert(key_hash(key), fresh);
                }
                None => {}
            }
        }
        // This node's own floor: raised at the first check already, so that it is
        // durable by the second; until it covers them, ripe tombstones wait.
        let highest = (0..walk.page.len())
            .filter(|&p| !walk.differs[p])
            .map(|p| walk.page[p].2)
            .max();
        if let Some(highest) = highest {
            if !self.shared.sabotage().reap_without_floor
                && !self.writer.floor_covers(&mut self.shared, highest)
            {
                ripe.clear();
            }
        }
        self.reap_positions(&ripe);
    }

    /// Reaps the page's tombstones at `positions` on every replica, then goes on.
    fn reap_positions(&mut self, positions: &[usize]) {
        let Some(walk) = &mut self.reaper.walk else {
            return;
        };
        let page = std::mem::take(&mut walk.page);
        let partition = walk.partition;
        let targets = walk.targets.clone();
        let next = walk.next;
        walk.advance(next);
        walk.phase = Phase::Ready;
        if !positions.is_empty() {
            let keys: Vec<(&[u8], u64)> = positions
                .iter()
                .filter_map(|&p| page.get(p))
                .map(|(key, hash, _)| (key.as_slice(), *hash))
                .collect();
            let message = Message::ReapKeys {
                partition: partition as u32,
                keys,
            };
            for target in targets {
                self.shared.send(target, &message);
            }
            for &position in positions {
                let Some((key, expected, _)) = page.get(position) else {
                    continue;
                };
                self.reaper.candidates.remove(&key_hash(key));
                let op = KeyOp::DeleteIfUnchanged {
                    expected: *expected,
                    cause: DeleteCause::Reap,
                };
                let _ = self.enqueue_key_op(Space::Data, key, op);
            }
        }
        self.continue_walk();
    }

    /// The leader of `partition` reaps these tombstones; this replica deletes each
    /// one still unchanged.
    pub(crate) fn reap_keys(&mut self, partition: u32, keys: &[(&[u8], u64)]) {
        let index = partition as usize;
        if index >= self.view.ring.partition_count() || !self.replicates(index) {
            return;
        }
        for &(key, expected) in keys {
            if self.view.ring.partition_of(key) != index {
                continue;
            }
            let op = KeyOp::DeleteIfUnchanged {
                expected,
                cause: DeleteCause::Reap,
            };
            if self.enqueue_key_op(Space::Data, key, op).is_err() {
                break; // busy: the leader reaps it on a later walk
            }
        }
    }

    /// Under the key's lock, with the record about to be reaped: true when the durable
    /// counter floor covers this node's writer in it (else the floor is raised first).
    pub(crate) fn reap_allowed(&mut self, record: &[u8]) -> bool {
        if self.shared.sabotage().reap_without_floor {
            return true;
        }
        let Ok(versions) = VersionSet::decode(record, self.shared.config.version_bounds) else {
            return false;
        };
        let counter =
            super::writer::lanes_counter(&versions, self.writer.writer_id(self.shared.id));
        self.writer.floor_covers(&mut self.shared, counter)
    }

    /// A replica comparing a reaping offer: raises its floor now over the tombstones it
    /// holds alike, so that the floor is durable by the time they are reaped.
    pub(crate) fn prepare_floor<'r>(&mut self, records: impl Iterator<Item = &'r [u8]>) {
        let writer = self.writer.writer_id(self.shared.id);
        let bounds = self.shared.config.version_bounds;
        let highest = records
            .filter(|record| VersionSet::record_is_deleted(record))
            .filter_map(|record| VersionSet::decode(record, bounds).ok())
            .map(|versions| super::writer::lanes_counter(&versions, writer))
            .max();
        if let Some(highest) = highest {
            self.writer.floor_covers(&mut self.shared, highest);
        }
    }

    /// One reaping delete is over (`deleted`: the key was removed).
    pub(crate) fn reap_deleted(&mut self, deleted: bool) {
        if deleted {
            self.reaper.keys_reaped += 1;
        }
    }
}
