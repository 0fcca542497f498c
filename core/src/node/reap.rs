//! Tombstone reaping (design.md section 3): a delete is a tombstone write, and a
//! tombstone is removed only once no copy anywhere could bring the deleted value back.
//! The same walk compacts clocks: a record whose clock names one-shot writers (a
//! stand-in's hint, a retried forward's attempts, see `node::writer`) that hold no
//! live value loses those entries under the same rule, which keeps a key's clock
//! from growing with every retry and outage until it passes its bound. Such an entry
//! only remembers dots that were superseded; once every replica holds the record and
//! no hint or handoff copy of the partition is left, no copy of those dots can come
//! back, and no one-shot writer mints again (a stand-in forgets its id with its hint).
//! A compaction rewrites the record (same conditional step as a delete) and needs no
//! counter floor.
//!
//! # The rule
//!
//! A tombstone (a record whose every sibling is a delete) is removed from every
//! replica when all of these held:
//!
//! 1. every replica of its key held that exact record (same entry hash) at a first
//!    check, and still did at a second check at least `tombstone_grace_ms` later;
//! 2. after the first check plus the grace period, every member of the cluster (all of
//!    them up), its view placing data as the leader's does, answered that it holds no
//!    hint for the key's partition and no copy of the partition that it has yet to
//!    hand off (a member that has not yet heard of a join still counts as its own a
//!    partition it must hand off, so it answers that it cannot tell);
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
//!   offers them (`HandoffOffer`; each answers with the keys it holds differently); a
//!   replica that holds some differently is owed an anti-entropy exchange of the
//!   partition (`entropy`, "Urgent exchanges"), so a replica that missed a delete, or
//!   one left without a tombstone its peers still hold, is whole by the next walk;
//! - a tombstone every replica holds alike becomes a *candidate*, remembered (key hash,
//!   entry hash, time of this first check) in a table of at most `reap_candidates_max`;
//! - a candidate confirmed again with the same entry hash, whose first check was at
//!   least the grace period before this walk's query, is removed: `ReapKeys` to the
//!   other replicas, and a conditional delete here. Each replica deletes under the
//!   key's lock, only if its record is still that one and its floor covers it.
//!
//! A replica that did not reap (down, lost message, floor not yet raised) pushes the
//! tombstone back to the others through anti-entropy, and a later walk reaps it again
//! (its offer finds the replicas that reaped without it and owes them an exchange).
//! One whose reaping delete kept the record (changed by a write that landed first,
//! floor not yet durable, busy) owes every other replica an exchange at once: the
//! leader, having reaped, never walks that key again, and a later write would leave the
//! old tombstone there as a sibling the others never see.
//! A read that saw the tombstone just before a replica reaped it repairs that replica
//! with it again; a replica whose record a push (read repair, anti-entropy) gives
//! reaping work it did not have owes every other replica an exchange of the partition,
//! so the leader holds it again and reaps it with the others (only the leader walks,
//! over what it holds).
//! Candidates of a partition that a finished walk did not confirm again are forgotten.
//! A missing answer, a replica or member going down, or a placement change abandons the
//! walk; the next one starts over. Nothing is persisted but the floor: a restart
//! forgets the candidates, which only delays reaping by one grace period.

use super::Node;
use super::admission::{Admission, BackgroundContext, background_context};
use super::entries::{entry_hash, is_reapable};
use super::entropy::{BUCKET_BITS, HashTrees};
use super::gossip::View;
use super::hints::Hints;
use super::key_ops::{DeleteCause, KeyOp};
use super::request_id::{self, Owner};
use super::shared::Shared;
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

impl BackgroundContext<'_> {
    /// True when this node leads `partition`'s reaping: first in its preference list.
    fn leads(&self, partition: usize) -> bool {
        self.view.ready && self.view.ring.preference_list(partition).next() == Some(self.shared.id)
    }

    fn busy_partitions(&self) -> Option<Vec<u32>> {
        busy_partitions(self.shared, self.view, self.trees, self.hints)
    }
}

/// The partitions node `shared.id` holds hints of or data it does not replicate;
/// `None` while it cannot tell (trees or the hint list not loaded) or the list is too
/// long for one message.
fn busy_partitions(
    shared: &Shared,
    view: &View,
    trees: &HashTrees,
    hints: &Hints,
) -> Option<Vec<u32>> {
    if !view.ready || !trees.fully_built() || !hints.listed {
        return None;
    }
    let mut busy: Vec<u32> = (0..view.ring.partition_count())
        .filter(|&p| trees.keys_held(p) > 0 && !view.replicates(shared.id, p))
        .map(|p| p as u32)
        .collect();
    busy.extend(hints.keys().map(|key| view.ring.partition_of(key) as u32));
    busy.sort_unstable();
    busy.dedup();
    (busy.len() <= shared.config.wire_limits.list_length_max).then_some(busy)
}

/// A page whose check ended: its ripe tombstones, which the node deletes on this
/// replica (each only if its record is unchanged) before the walk goes on with
/// [`Reaper::continue_walk`].
pub(crate) struct Reaped {
    pub(crate) keys: Vec<(Vec<u8>, u64)>,
}

/// The reaping surface: the node hands each step a [`BackgroundContext`]; a step that ended
/// a page's check returns its [`Reaped`] tombstones.
impl Reaper {
    /// The reaping timer; when it is due next.
    pub(crate) fn tick(&mut self, cx: &mut BackgroundContext<'_>) -> Instant {
        let now = cx.shared.now;
        let interval_ms = cx.shared.config.reap_interval_ms;
        if cx.shared.config.reap_candidates_max == 0 {
            return now + Duration::from_millis(interval_ms);
        }
        let placement = cx.view.membership.placement_digest();
        match &self.walk {
            Some(walk) => {
                let stalled = matches!(walk.phase, Phase::Querying | Phase::Offered)
                    && now >= walk.expires_at;
                let lost = walk.targets.iter().any(|&t| !cx.peers.is_up(t))
                    && !cx.shared.sabotage().reap_unconfirmed;
                if stalled || lost || walk.placement != placement {
                    self.abandon_walk(cx.shared);
                } else if walk.phase == Phase::Ready {
                    self.continue_walk(cx);
                }
            }
            None if now >= self.next_walk_at => self.start_walk(cx),
            None => {}
        }
        now + Duration::from_millis(STEP_MS.min(interval_ms))
    }

    fn start_walk(&mut self, cx: &mut BackgroundContext<'_>) {
        let now = cx.shared.now;
        self.next_walk_at = now + Duration::from_millis(cx.shared.config.reap_interval_ms);
        if !cx.trees.fully_built() || !cx.admits() {
            return;
        }
        let partitions = cx.view.ring.partition_count();
        if !(0..partitions).any(|p| cx.leads(p) && cx.trees.reapable_held(p) > 0) {
            return;
        }
        let id = cx.shared.id;
        let mut members: Vec<NodeId> = cx
            .view
            .membership
            .members()
            .iter()
            .filter(|m| m.id != id && m.status != MemberStatus::Left)
            .map(|m| m.id)
            .collect();
        let Some(own_busy) = cx.busy_partitions() else {
            return;
        };
        if cx.shared.sabotage().reap_unconfirmed {
            members.clear(); // asks no one, and goes on with members down
        } else if members.iter().any(|&m| !cx.peers.is_up(m)) {
            self.walks_blocked += 1;
            return;
        }
        self.walks = self.walks.wrapping_add(1);
        self.walks_started += 1;
        let mut walk = Walk {
            serial: self.walks,
            placement: cx.view.membership.placement_digest(),
            query_sent_at: now,
            waiting: members,
            busy: vec![0; partitions.div_ceil(64)],
            phase: Phase::Querying,
            expires_at: now + Duration::from_millis(cx.shared.config.request_timeout_ms),
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
        let (request, placement) = (walk.request(0), walk.placement);
        let waiting = walk.waiting.clone();
        self.walk = Some(walk);
        for member in waiting {
            if !cx
                .shared
                .send(member, &Message::ReapQuery { request, placement })
            {
                return self.abandon_walk(cx.shared);
            }
        }
        self.query_answered(cx);
    }

    fn abandon_walk(&mut self, shared: &Shared) {
        if let Some(walk) = self.walk.take() {
            log::debug!(
                "node {}: reaping walk {} abandoned at partition {}",
                shared.id.0,
                walk.serial,
                walk.partition
            );
            self.walks_blocked += 1;
        }
    }

    /// A member's answer to this node's query.
    pub(crate) fn status(
        &mut self,
        cx: &mut BackgroundContext<'_>,
        (from, request): (NodeId, u64),
        complete: bool,
        partitions: &[u32],
    ) {
        let Some(walk) = &mut self.walk else {
            return;
        };
        if walk.phase != Phase::Querying || request != walk.request(0) {
            return;
        }
        let Some(position) = walk.waiting.iter().position(|&m| m == from) else {
            return;
        };
        if !complete {
            return self.abandon_walk(cx.shared);
        }
        walk.waiting.swap_remove(position);
        for &partition in partitions {
            walk.set_busy(partition as usize);
        }
        self.query_answered(cx);
    }

    fn query_answered(&mut self, cx: &mut BackgroundContext<'_>) {
        let Some(walk) = &mut self.walk else {
            return;
        };
        if walk.phase == Phase::Querying && walk.waiting.is_empty() {
            walk.phase = Phase::Ready;
            self.continue_walk(cx);
        }
    }

    /// Moves the walk to the next bucket holding deleted records; false when the walk
    /// is over.
    fn next_bucket(&mut self, cx: &BackgroundContext<'_>) -> bool {
        let partitions = cx.view.ring.partition_count();
        loop {
            let Some(walk) = &self.walk else {
                return false;
            };
            let (partition, bucket, after) = (walk.partition, walk.bucket, walk.after);
            if partition >= partitions {
                self.walk = None;
                return false;
            }
            let next_partition = if !cx.leads(partition) || walk.is_busy(partition) {
                true
            } else if bucket >= BUCKETS || (bucket == 0 && cx.trees.reapable_held(partition) == 0) {
                self.forget_unconfirmed(cx.view, partition);
                true
            } else {
                false
            };
            let Some(walk) = &mut self.walk else {
                return false;
            };
            if next_partition {
                walk.partition += 1;
                walk.bucket = 0;
                walk.after = None;
                continue;
            }
            if after.is_none() && cx.trees.reapable_in(partition, bucket as usize) == 0 {
                walk.bucket += 1;
                continue;
            }
            return true;
        }
    }

    /// Scans the next page holding deleted records, or ends the walk.
    pub(crate) fn continue_walk(&mut self, cx: &mut BackgroundContext<'_>) {
        if !self.next_bucket(cx) {
            return;
        }
        let Some(walk) = &mut self.walk else {
            return;
        };
        let partition = walk.partition;
        let id = cx.shared.id;
        let targets: SmallVec<[NodeId; 4]> = cx
            .view
            .ring
            .preference_list(partition)
            .filter(|&node| node != id)
            .collect();
        let unconfirmed = cx.shared.sabotage().reap_unconfirmed;
        if !unconfirmed && targets.iter().any(|&t| !cx.peers.is_up(t)) {
            return self.abandon_walk(cx.shared);
        }
        if !cx.admits() {
            return; // the next tick tries again
        }
        let range = cx.trees.bucket_range(partition, walk.bucket as usize);
        let config = &cx.shared.config;
        let limit = config
            .background_page_keys
            .min(config.wire_limits.list_length_max as u32);
        if cx
            .shared
            // Durable: the leader removes its own tombstones too, which must not be
            // buffered records a power cut would take back from under the others.
            .start_scan(Task::ReapPage, range, (walk.after, limit), true)
            .is_none()
        {
            return;
        }
        walk.targets = targets;
        walk.phase = Phase::Scanning;
    }

    /// A walk finished `partition`: its candidates this walk did not confirm again are
    /// no longer tombstones everywhere (or no longer exist).
    fn forget_unconfirmed(&mut self, view: &View, partition: usize) {
        let Some(walk) = &self.walk else {
            return;
        };
        let serial = walk.serial;
        let (first, last) = view.ring.hash_range(partition);
        self.candidates
            .retain(|hash, c| !(first..=last).contains(hash) || c.walk == serial);
    }

    /// A page of a bucket this node leads was read: offer its tombstones.
    pub(crate) fn page_read(
        &mut self,
        cx: &mut BackgroundContext<'_>,
        result: Result<ScanPage, StorageFailure>,
    ) -> Option<Reaped> {
        let unconfirmed = cx.shared.sabotage().reap_unconfirmed;
        let writer = cx.writer.writer_id(cx.shared.id);
        let bounds = cx.shared.config.version_bounds;
        let walk = self.walk.as_mut()?;
        if walk.phase != Phase::Scanning {
            return None;
        }
        let Ok(ScanPage { items, next }) = result else {
            walk.phase = Phase::Ready;
            return None;
        };
        walk.page.clear();
        walk.page.extend(
            items
                .iter()
                .filter(|(_, record)| is_reapable(record))
                .filter_map(|(key, record)| {
                    // A record that does not decode is never reaped.
                    let versions = VersionSet::decode(record, bounds).ok()?;
                    // Only a removed record needs the floor to cover its counters.
                    let counter = if versions.is_deleted() {
                        super::writer::lanes_counter(&versions, writer)
                    } else {
                        0
                    };
                    Some((key.clone(), entry_hash(key, record), counter))
                }),
        );
        walk.next = next;
        walk.differs = vec![false; walk.page.len()];
        walk.answered = SmallVec::from_elem(false, walk.targets.len());
        if walk.page.is_empty() {
            walk.advance(next);
            walk.phase = Phase::Ready;
            self.continue_walk(cx);
            return None;
        }
        if unconfirmed {
            let everything: Vec<usize> = (0..walk.page.len()).collect();
            return self.reap_positions(cx.shared, &everything);
        }
        walk.page_serial = (walk.page_serial + 1) & ((1 << request_id::LOW_BITS) - 1);
        walk.page_serial = walk.page_serial.max(1);
        walk.phase = Phase::Offered;
        walk.expires_at =
            cx.shared.now + Duration::from_millis(cx.shared.config.request_timeout_ms);
        let keys: Vec<(&[u8], u64)> = walk
            .page
            .iter()
            .map(|(key, hash, _)| (key.as_slice(), *hash))
            .collect();
        let message = Message::HandoffOffer {
            request: walk.request(walk.page_serial),
            partition: walk.partition as u32,
            bucket: walk.bucket,
            keys,
        };
        let mut sent = true;
        for &target in &walk.targets {
            sent &= cx.shared.send(target, &message);
        }
        if !sent {
            self.abandon_walk(cx.shared);
            return None;
        }
        self.page_checked(cx)
    }

    /// The partition of the page this node offered under `request`, while the answers
    /// are awaited.
    pub(crate) fn offered_partition(&self, request: u64) -> Option<usize> {
        let walk = self.walk.as_ref()?;
        (walk.phase == Phase::Offered && request == walk.request(walk.page_serial))
            .then_some(walk.partition)
    }

    /// A replica's answer to this node's offer of tombstones.
    pub(crate) fn need(
        &mut self,
        cx: &mut BackgroundContext<'_>,
        (from, request): (NodeId, u64),
        differing: &[u32],
    ) -> Option<Reaped> {
        let walk = self.walk.as_mut()?;
        if walk.phase != Phase::Offered || request != walk.request(walk.page_serial) {
            return None;
        }
        let target = walk.targets.iter().position(|&t| t == from)?;
        if walk.answered[target] {
            return None;
        }
        walk.answered[target] = true;
        for &position in differing {
            if let Some(differs) = walk.differs.get_mut(position as usize) {
                *differs = true;
            }
        }
        self.page_checked(cx)
    }

    /// Once every replica answered: the page's tombstones every replica holds alike
    /// become candidates, and candidates that passed their grace period are reaped.
    fn page_checked(&mut self, cx: &mut BackgroundContext<'_>) -> Option<Reaped> {
        let now = cx.shared.now;
        let grace = Duration::from_millis(cx.shared.config.tombstone_grace_ms);
        let candidates_max = cx.shared.config.reap_candidates_max as usize;
        let walk = self.walk.as_mut()?;
        if walk.phase != Phase::Offered || !walk.answered.iter().all(|&a| a) {
            return None;
        }
        let mut ripe: Vec<usize> = Vec::new();
        let candidates = &mut self.candidates;
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
            if !cx.shared.sabotage().reap_without_floor
                && !cx.writer.floor_covers(cx.shared, highest)
            {
                ripe.clear();
            }
        }
        self.reap_positions(cx.shared, &ripe)
    }

    /// Reaps the page's tombstones at `positions` on every other replica, and hands
    /// them back for this one; the walk moves past the page.
    fn reap_positions(&mut self, shared: &mut Shared, positions: &[usize]) -> Option<Reaped> {
        let walk = self.walk.as_mut()?;
        let page = std::mem::take(&mut walk.page);
        let next = walk.next;
        walk.advance(next);
        walk.phase = Phase::Ready;
        let mut reaped = Reaped { keys: Vec::new() };
        if positions.is_empty() {
            return Some(reaped);
        }
        let keys: Vec<(&[u8], u64)> = positions
            .iter()
            .filter_map(|&p| page.get(p))
            .map(|(key, hash, _)| (key.as_slice(), *hash))
            .collect();
        let message = Message::ReapKeys {
            partition: walk.partition as u32,
            keys,
        };
        for &target in &walk.targets {
            shared.send(target, &message);
        }
        for &position in positions {
            let Some((key, expected, _)) = page.get(position) else {
                continue;
            };
            self.candidates.remove(&key_hash(key));
            reaped.keys.push((key.clone(), *expected));
        }
        Some(reaped)
    }
}

/// The node's glue: the timer, a leader's pages and answers (whose ripe tombstones it
/// deletes under key locks), and the replica's side (status, deletes, floors).
impl Node {
    /// The reaping timer.
    pub(crate) fn reap_tick(&mut self) {
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        let next = self.reaper.tick(&mut cx);
        self.timers.set(Timer::Reap, next);
    }

    /// The partitions this node holds hints of or data it does not replicate (see
    /// [`BackgroundContext`]).
    pub(crate) fn busy_partitions(&self) -> Option<Vec<u32>> {
        busy_partitions(&self.shared, &self.view, &self.entropy.trees, &self.hints)
    }

    /// A leading node asks what could bring a deleted value back. A node whose view
    /// places data otherwise cannot tell: it may still count as its own a partition it
    /// has to hand off (membership seed 32005900056: a node that had not yet heard of a
    /// join answered that it held nothing to hand off, and the delete was reaped before
    /// its copy of the deleted value came back by handoff).
    pub(crate) fn reap_query(&mut self, from: NodeId, request: u64, placement: u64) {
        let busy = self
            .busy_partitions()
            .filter(|_| placement == self.view.membership.placement_digest());
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
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        self.reaper
            .status(&mut cx, (from, request), complete, partitions);
    }

    /// A page of a bucket this node leads was read.
    pub(crate) fn reap_page(&mut self, result: Result<ScanPage, StorageFailure>) {
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        if let Some(reaped) = self.reaper.page_read(&mut cx, result) {
            self.reap_here(reaped, admission);
        }
    }

    /// A read repair or anti-entropy push gave a record of `partition` reaping work it
    /// did not have (a tombstone where nothing was, superseded one-shot entries on a
    /// compacted clock): a read saw it just before the replicas reaped it. Left on
    /// some replicas only, it stays until anti-entropy's round robin comes by (only
    /// the leader walks, over what it holds, and a later write may make the record one
    /// no walk looks at, different on each replica). So this replica owes every other
    /// replica an exchange of the partition: they hold the record alike again, and a
    /// walk reaps it again. Only on that change: pushes between replicas of a hot key
    /// that already hold reapable records start no exchanges.
    pub(crate) fn reapable_revived(&mut self, partition: usize) {
        self.owe_other_replicas(partition);
    }

    /// A reaping delete kept this replica's record (it changed since the replicas
    /// confirmed it, its floor is not yet durable, the node was busy) while the others
    /// may have removed theirs. No walk would look at it again: the leader walks only
    /// over what it holds, and a later write can leave the old tombstone here as a
    /// sibling the others never see. So this replica owes every other replica an
    /// exchange of the partition, as for a revived record.
    pub(crate) fn reap_kept(&mut self, partition: usize) {
        self.owe_other_replicas(partition);
    }

    /// Owes every other replica of `partition` (when this node is one) an exchange.
    fn owe_other_replicas(&mut self, partition: usize) {
        if !self.replicates(partition) {
            return;
        }
        let own = self.shared.id;
        for replica in self.view.ring.preference_list(partition) {
            if replica != own {
                self.owed.owe(replica, partition);
            }
        }
    }

    /// A replica's answer to this node's offer of tombstones. One that holds some of
    /// them differently (it missed the delete, or a later write, or reaped alone) is
    /// owed an exchange of the partition, so that the next walk finds them alike.
    pub(crate) fn reap_need(&mut self, from: NodeId, request: u64, differing: &[u32]) {
        if !differing.is_empty() {
            if let Some(partition) = self.reaper.offered_partition(request) {
                self.owed.owe(from, partition);
            }
        }
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        if let Some(reaped) = self.reaper.need(&mut cx, (from, request), differing) {
            self.reap_here(reaped, admission);
        }
    }

    /// Deletes a checked page's ripe tombstones on this node, then goes on walking.
    fn reap_here(&mut self, reaped: Reaped, admission: Admission) {
        for (key, expected) in reaped.keys {
            let op = KeyOp::DeleteIfUnchanged {
                expected,
                cause: DeleteCause::Reap,
            };
            let _ = self.enqueue_key_op(Space::Data, &key, op);
        }
        let mut cx = background_context!(self, admission);
        self.reaper.continue_walk(&mut cx);
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
                // Busy: kept here while the leader and others may remove theirs.
                self.reap_kept(index);
                break;
            }
        }
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
