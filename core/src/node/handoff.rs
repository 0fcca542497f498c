//! Handoff (design.md section 6): when placement moves a partition away from this node
//! (another node joined, or this one is leaving), this node streams its copy to the
//! partition's replicas and deletes each key only once every one of them confirmed it.
//!
//! # One page at a time
//!
//! Every `handoff_interval_ms`, when background work is admitted, the node picks a
//! partition it holds keys of (its anti-entropy tree counts them) but does not
//! replicate, at least one of whose replicas is up. It marks the partition dropped in
//! its writer epoch (`node::writer`; durable before anything is deleted), then walks
//! the partition bucket by bucket, skipping empty buckets:
//!
//! 1. scan a page of at most `background_page_keys` keys of the bucket;
//! 2. offer the page to every replica that is up (`HandoffOffer`: each key with the
//!    entry hash of its record). A replica, if it agrees it replicates the partition,
//!    scans its own bucket and answers with the positions it lacks or holds
//!    differently (`HandoffNeed`);
//! 3. send each wanted record as a `ReplicaPut` with a reply: the replica merges it by
//!    DVVSet sync and acknowledges once durable. A key is confirmed by a replica that
//!    held the same record or acknowledged the merge;
//! 4. once every replica confirmed every key of the page, delete each key under its
//!    lock, and only if its record is still the one offered (a write that arrived
//!    meanwhile keeps the key for the next pass). The tree is updated as for any
//!    durable change. When a replica was down, nothing is deleted: once the replicas
//!    that were offered the page confirmed it, the walk goes on to the next page;
//! 5. go on after the page.
//!
//! So each reachable replica gets the partition while another is down, and deletion
//! still waits for all of them. A partition walked with a replica down is not walked
//! again until its replicas or their reachability change; then a pass offers it to
//! all (those that have it answer with nothing to send) and deletes.
//!
//! Bytes sent: the offers (key and 8 bytes per key and replica) and the records a
//! replica lacks; replicas that already hold a key cost no record. Records sent are
//! charged to a token bucket refilled at `handoff_bytes_per_second`; an empty bucket,
//! or a busy node, pauses the walk until the next tick.
//!
//! # Failures and restarts
//!
//! A missing answer (`request_timeout_ms`), a refused merge or a replica going down
//! abandons the page; the next tick starts the partition over. Nothing here is
//! persisted but the dropped mark: deleted keys are what progress is, so a restart on
//! either side resumes where the deletes got to, and a replica that restarts has made
//! durable whatever it acknowledged.
//!
//! While a partition is moving, reads and writes go to its new replicas. With one
//! membership change at a time, at most one replica of a partition is new, so a read
//! at R >= 2 always hears a replica that held the data; an R = 1 read can miss a key
//! not yet handed over (read repair then copies it).
//!
//! # Leaving
//!
//! A `Leaving` node replicates nothing, so handoff moves all its data away. Once its
//! trees are built and count no key, and it holds no hint and has admitted none not yet
//! stored, it marks itself `Left` (final; gossip spreads it) and may be shut down.
//! From then on it takes nothing on (`View::has_left`): client data commands get
//! `RequestError::Left`, replica requests from peers whose views are behind are refused
//! with `ReplicaStatus::Left` (the coordinator takes a stand-in or the next replica), a
//! forward it had in flight fails rather than being minted here, and it keeps no hint.
//! Members drop a departed node's frames, so anything it kept it could never deliver.

use super::Node;
use super::admission::{BackgroundContext, background_context};
use super::entries::{entry_hash, entry_hashes};
use super::entropy::{BUCKET_BITS, HashTrees};
use super::gossip::View;
use super::key_ops::{DeleteCause, KeyOp};
use super::peers::Peers;
use super::request_id::{self, Owner};
use super::shared::Shared;
use super::tasks::Task;
use super::timers::Timer;
use super::{ScanPage, Space, StorageFailure};
use crate::time::Instant;
use crate::version::NodeId;
use crate::wire::{MemberStatus, Message, ReplicaStatus};
use core::time::Duration;
use smallvec::SmallVec;
use std::collections::BTreeMap;

const BUCKETS: u32 = 1 << BUCKET_BITS;

/// Offers a replica scans at once; more are ignored (the offerer retries).
const OFFERS_MAX: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the dropped mark to be durable, or for a tick (budget, load).
    Waiting,
    Scanning,
    /// Offers sent; waiting for every replica's confirmations.
    Offered,
    /// Deleting the confirmed page; this many deletes are still running.
    Deleting(u32),
}

/// The partition this node is handing off.
#[derive(Debug)]
struct Pass {
    partition: u32,
    bucket: u32,
    after: Option<u64>,
    targets: SmallVec<[NodeId; 4]>,
    serial: u32,
    phase: Phase,
    /// The page: (key, record), its entry hashes, where the scan goes on.
    page: Vec<(Vec<u8>, Vec<u8>)>,
    hashes: Vec<u64>,
    next: Option<u64>,
    /// Per target, per key of the page: confirmed. Per target: answered the offer.
    confirmed: Vec<Vec<bool>>,
    answered: SmallVec<[bool; 4]>,
    /// Per target: up when the page was offered (only those are offered it).
    live: SmallVec<[bool; 4]>,
    /// Some page went without a target that was down: nothing of the pass is deleted.
    partial: bool,
    expires_at: Instant,
}

impl Pass {
    fn request(&self, position: u32) -> u64 {
        request_id::handoff(self.serial, position)
    }

    /// Every target confirmed every key of the page: it may be deleted.
    fn all_confirmed(&self) -> bool {
        self.answered.iter().all(|&answered| answered)
            && self.confirmed.iter().flatten().all(|&confirmed| confirmed)
    }

    /// Every target the page was offered to confirmed every key of it.
    fn live_confirmed(&self) -> bool {
        (0..self.targets.len())
            .filter(|&target| self.live[target])
            .all(|target| self.answered[target] && self.confirmed[target].iter().all(|&c| c))
    }

    /// The targets the pass reaches, as a bit set over `targets`.
    fn live_set(&self) -> u8 {
        self.live
            .iter()
            .enumerate()
            .fold(0, |set, (i, &live)| set | (u8::from(live) << i))
    }
}

/// A peer's offer this node is scanning its own bucket for.
#[derive(Debug)]
pub(crate) struct OfferScan {
    from: NodeId,
    request: u64,
    /// (key, entry hash, position in the offer), sorted by key.
    keys: Vec<(Vec<u8>, u64, u32)>,
}

/// The node's handoff state.
#[derive(Debug)]
pub(crate) struct Handoffs {
    budget_bytes: u64,
    budget_at: Instant,
    cursor: usize,
    serial: u32,
    pass: Option<Pass>,
    /// Partitions a pass went through while a target was down, with the targets it
    /// reached (bits over the preference list): not walked again until that changes.
    partially_sent: BTreeMap<u32, (SmallVec<[NodeId; 4]>, u8)>,
    offers: Vec<(u64, OfferScan)>,
    pub(crate) pages: u64,
    pub(crate) keys_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) offer_bytes: u64,
    pub(crate) keys_deleted: u64,
    pub(crate) pages_abandoned: u64,
}

impl Handoffs {
    pub(crate) fn new(now: Instant, bytes_per_second: u64) -> Handoffs {
        Handoffs {
            budget_bytes: bytes_per_second,
            budget_at: now,
            cursor: 0,
            serial: 0,
            pass: None,
            partially_sent: BTreeMap::new(),
            offers: Vec::new(),
            pages: 0,
            keys_sent: 0,
            bytes_sent: 0,
            offer_bytes: 0,
            keys_deleted: 0,
            pages_abandoned: 0,
        }
    }

    /// True for the request ids of the page in flight.
    pub(crate) fn owns_request(&self, request: u64) -> bool {
        request_id::owner(request) == Owner::Handoff
            && self.pass.as_ref().is_some_and(|pass| {
                request_id::batch(request) == request_id::batch(pass.request(0))
            })
    }

    /// The partition being handed off, if any.
    pub(crate) fn partition(&self) -> Option<u32> {
        self.pass.as_ref().map(|pass| pass.partition)
    }
}

/// A page every replica confirmed: the node deletes each key under its lock if its
/// record's entry hash is still the one offered, and reports each delete with
/// [`Handoffs::deleted`].
pub(crate) struct PageToDelete {
    pub(crate) serial: u32,
    pub(crate) page: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) hashes: Vec<u64>,
}

/// The handoff surface: the node hands each step a [`BackgroundContext`]; a step that
/// confirmed a page returns it for the node to delete.
impl Handoffs {
    /// The timer's first part: refill the byte budget, and abandon a page that
    /// stalled or lost a target.
    pub(crate) fn refill_and_check(&mut self, shared: &Shared, peers: &Peers) {
        let now = shared.now;
        let rate = shared.config.handoff_bytes_per_second;
        let elapsed_ms = now.saturating_duration_since(self.budget_at).as_millis() as u64;
        self.budget_at = now;
        self.budget_bytes = self
            .budget_bytes
            .saturating_add(rate.saturating_mul(elapsed_ms) / 1_000)
            .min(rate);
        if let Some(pass) = &self.pass {
            let stalled = matches!(pass.phase, Phase::Offered) && now >= pass.expires_at;
            let lost_target = (pass.targets.iter().zip(&pass.live))
                .any(|(&target, &live)| live && !peers.is_up(target));
            if stalled || (lost_target && !matches!(pass.phase, Phase::Deleting(_))) {
                self.abandon_page(shared);
            }
        }
    }

    /// The timer's second part: continue a waiting pass, or start one when admitted.
    pub(crate) fn tick(&mut self, cx: &mut BackgroundContext<'_>) {
        match &self.pass {
            Some(pass) if pass.phase == Phase::Waiting => self.continue_pass(cx),
            Some(_) => {}
            None => {
                if cx.admits() {
                    self.start_pass(cx);
                }
            }
        }
    }

    /// True while no partition is being handed off.
    pub(crate) fn is_idle(&self) -> bool {
        self.pass.is_none()
    }

    fn abandon_page(&mut self, shared: &Shared) {
        if let Some(pass) = self.pass.take() {
            log::debug!(
                "node {}: handoff of partition {} paused at bucket {}",
                shared.id.0,
                pass.partition,
                pass.bucket
            );
            self.pages_abandoned += 1;
        }
    }

    /// Starts a pass over the next partition to hand off: one whose replicas are all up
    /// (it ends in deletes) before one with a replica down (it only sends).
    fn start_pass(&mut self, cx: &mut BackgroundContext<'_>) {
        if !cx.view.ready {
            return;
        }
        let Some((partition, targets, live)) = self
            .next_partition(cx, true)
            .or_else(|| self.next_partition(cx, false))
        else {
            return;
        };
        self.pass = Some(Pass {
            partition,
            bucket: 0,
            after: None,
            answered: SmallVec::from_elem(false, targets.len()),
            confirmed: Vec::new(),
            live,
            partial: false,
            targets,
            serial: 0,
            phase: Phase::Waiting,
            page: Vec::new(),
            hashes: Vec::new(),
            next: None,
            expires_at: cx.shared.now,
        });
        self.continue_pass(cx);
    }

    /// The next partition (round robin) this node holds keys of but does not replicate,
    /// with its replicas and which are up: all of them (`all_up`), or at least one and
    /// not the same ones a pass already sent it to.
    #[allow(clippy::type_complexity)]
    fn next_partition(
        &mut self,
        cx: &BackgroundContext<'_>,
        all_up: bool,
    ) -> Option<(u32, SmallVec<[NodeId; 4]>, SmallVec<[bool; 4]>)> {
        let partitions = cx.view.ring.partition_count();
        let start = self.cursor;
        for step in 0..partitions {
            let partition = (start + step) % partitions;
            if !cx.trees.is_built(partition)
                || cx.trees.keys_held(partition) == 0
                || cx.view.replicates(cx.shared.id, partition)
            {
                continue;
            }
            let targets: SmallVec<[NodeId; 4]> = cx.view.ring.preference_list(partition).collect();
            let live: SmallVec<[bool; 4]> = targets.iter().map(|&t| cx.peers.is_up(t)).collect();
            let up = live.iter().filter(|&&up| up).count();
            if targets.is_empty() || targets.len() > 8 || up == 0 || (all_up && up < live.len()) {
                continue;
            }
            let reached = live
                .iter()
                .enumerate()
                .fold(0u8, |set, (i, &up)| set | (u8::from(up) << i));
            let sent = self.partially_sent.get(&(partition as u32));
            if !all_up && sent.is_some_and(|(to, bits)| *to == targets && *bits == reached) {
                continue; // nothing new to send until a replica comes or goes
            }
            self.cursor = (partition + 1) % partitions;
            return Some((partition as u32, targets, live));
        }
        None
    }

    /// Scans the next page, once the drop is durable and the budget allows.
    fn continue_pass(&mut self, cx: &mut BackgroundContext<'_>) {
        let Some(pass) = &mut self.pass else {
            return;
        };
        let partition = pass.partition as usize;
        if cx.view.replicates(cx.shared.id, partition) {
            // Placement gave it back: nothing to hand off any more.
            self.pass = None;
            return;
        }
        if !cx.writer.mark_dropped(cx.shared, partition) || self.budget_bytes == 0 || !cx.admits() {
            pass.phase = Phase::Waiting;
            return;
        }
        let trees = cx.trees;
        while pass.bucket < BUCKETS
            && pass.after.is_none()
            && trees.buckets(partition)[pass.bucket as usize] == 0
        {
            pass.bucket += 1;
        }
        if pass.bucket == BUCKETS {
            if pass.partial {
                let reached = (pass.targets.clone(), pass.live_set());
                self.partially_sent.insert(pass.partition, reached);
            } else {
                self.partially_sent.remove(&pass.partition);
            }
            self.pass = None;
            return;
        }
        let range = trees.bucket_range(partition, pass.bucket as usize);
        let config = &cx.shared.config;
        let limit = config
            .background_page_keys
            .min(config.wire_limits.list_length_max as u32);
        pass.phase =
            match cx
                .shared
                .start_scan(Task::HandoffPage, range, (pass.after, limit), false)
            {
                Some(_) => Phase::Scanning,
                None => Phase::Waiting, // the next tick tries again
            };
    }

    /// Continues a pass that waited for its dropped mark to become durable.
    pub(crate) fn resume(&mut self, cx: &mut BackgroundContext<'_>) {
        if self
            .pass
            .as_ref()
            .is_some_and(|pass| pass.phase == Phase::Waiting)
        {
            self.continue_pass(cx);
        }
    }

    /// This node's page of the partition it hands off was read: offer it.
    pub(crate) fn page_read(
        &mut self,
        cx: &mut BackgroundContext<'_>,
        result: Result<ScanPage, StorageFailure>,
    ) -> Option<PageToDelete> {
        let pass = self.pass.as_mut()?;
        if pass.phase != Phase::Scanning {
            return None;
        }
        let Ok(ScanPage { items, next }) = result else {
            pass.phase = Phase::Waiting;
            return None;
        };
        if items.is_empty() {
            advance(pass, next);
            self.continue_pass(cx);
            return None;
        }
        let shared = &mut *cx.shared;
        self.serial = self.serial.wrapping_add(1);
        pass.serial = self.serial;
        pass.hashes.clear();
        pass.hashes
            .extend(items.iter().map(|(key, record)| entry_hash(key, record)));
        pass.confirmed = vec![vec![false; items.len()]; pass.targets.len()];
        pass.page = items;
        pass.next = next;
        for (live, &target) in pass.live.iter_mut().zip(&pass.targets) {
            *live = cx.peers.is_up(target);
        }
        pass.partial |= pass.live.iter().any(|&live| !live);
        pass.answered
            .iter_mut()
            .for_each(|answered| *answered = false);
        pass.phase = Phase::Offered;
        pass.expires_at = shared.now + Duration::from_millis(shared.config.request_timeout_ms);
        self.pages += 1;
        let offered: usize = pass.page.iter().map(|(key, _)| key.len() + 2 + 8).sum();
        let reached = pass.live.iter().filter(|&&live| live).count();
        self.offer_bytes += (offered * reached) as u64;
        let keys: Vec<(&[u8], u64)> = pass
            .page
            .iter()
            .zip(&pass.hashes)
            .map(|((key, _), &hash)| (key.as_slice(), hash))
            .collect();
        let message = Message::HandoffOffer {
            request: pass.request(0),
            partition: pass.partition,
            bucket: pass.bucket,
            keys,
        };
        let mut sent = pass.live.iter().any(|&live| live);
        for (&target, &live) in pass.targets.iter().zip(&pass.live) {
            if live {
                sent &= shared.send(target, &message);
            }
        }
        if !sent {
            self.abandon_page(shared);
            return None;
        }
        self.confirmed_page(shared) // only a sabotaged node deletes before any answer
    }

    /// A replica's answer to this node's offer: send it what it lacks.
    pub(crate) fn need(
        &mut self,
        shared: &mut Shared,
        (from, request): (NodeId, u64),
        wanted: &[u32],
    ) -> Option<PageToDelete> {
        if !self.owns_request(request) {
            return None;
        }
        let pass = self.pass.as_mut()?;
        let target = pass.targets.iter().position(|&t| t == from)?;
        if pass.phase != Phase::Offered || pass.answered[target] || !pass.live[target] {
            return None;
        }
        pass.answered[target] = true;
        let length = pass.page.len();
        let confirmed = &mut pass.confirmed[target];
        confirmed.iter_mut().for_each(|c| *c = true);
        let mut sent_all = true;
        for &position in wanted {
            if (position as usize) >= length || !confirmed[position as usize] {
                continue;
            }
            confirmed[position as usize] = false;
            let (key, record) = &pass.page[position as usize];
            let message = Message::ReplicaPut {
                request: request_id::handoff(pass.serial, position),
                key,
                versions: record,
                hint: None,
                // This node deletes its copy once every replica acknowledged.
                durable: true,
            };
            let bytes = record.len() as u64;
            sent_all &= shared.send(from, &message);
            self.keys_sent += 1;
            self.bytes_sent += bytes;
            self.budget_bytes = self.budget_bytes.saturating_sub(bytes);
        }
        if !sent_all {
            self.abandon_page(shared);
            return None;
        }
        self.confirmed_page(shared)
    }

    /// A replica's acknowledgement of one record this node handed it.
    pub(crate) fn ack(
        &mut self,
        shared: &Shared,
        (from, request): (NodeId, u64),
        status: ReplicaStatus,
    ) -> Option<PageToDelete> {
        if !self.owns_request(request) {
            return None;
        }
        let pass = self.pass.as_mut()?;
        let target = pass.targets.iter().position(|&t| t == from)?;
        if pass.phase != Phase::Offered {
            return None;
        }
        if status != ReplicaStatus::Ok {
            self.abandon_page(shared);
            return None;
        }
        let position = request_id::low(request) as usize;
        if let Some(confirmed) = pass.confirmed[target].get_mut(position) {
            *confirmed = true;
        }
        self.confirmed_page(shared)
    }

    /// The page, once every replica confirmed every key of it.
    fn confirmed_page(&mut self, shared: &Shared) -> Option<PageToDelete> {
        let unconfirmed = shared.sabotage().handoff_unconfirmed;
        let pass = self.pass.as_mut()?;
        if pass.phase != Phase::Offered {
            return None;
        }
        let confirmed = pass.all_confirmed() || unconfirmed;
        if !confirmed {
            // Every reachable replica has the page; one that is down does not, so
            // nothing is deleted: go on to the next page (at the next tick).
            if pass.live_confirmed() {
                let next = pass.next;
                pass.page.clear();
                advance(pass, next);
                pass.phase = Phase::Waiting;
            }
            return None;
        }
        let page = std::mem::take(&mut pass.page);
        pass.phase = Phase::Deleting(page.len() as u32);
        Some(PageToDelete {
            serial: pass.serial,
            page,
            hashes: std::mem::take(&mut pass.hashes),
        })
    }

    /// One delete of the page `serial` is over (`deleted`: the key was removed).
    pub(crate) fn deleted(&mut self, cx: &mut BackgroundContext<'_>, serial: u32, deleted: bool) {
        if deleted {
            self.keys_deleted += 1;
        }
        let Some(pass) = &mut self.pass else {
            return;
        };
        if pass.serial != serial {
            return;
        }
        match pass.phase {
            Phase::Deleting(running) if running > 1 => pass.phase = Phase::Deleting(running - 1),
            Phase::Deleting(_) => {
                let next = pass.next;
                advance(pass, next);
                pass.phase = Phase::Waiting;
                self.continue_pass(cx);
            }
            _ => {}
        }
    }

    // ---- the replica's side -----------------------------------------------------------

    /// A node handing off a partition offers a page of it: scan this node's bucket.
    pub(crate) fn offer(
        &mut self,
        shared: &mut Shared,
        (view, trees): (&View, &HashTrees),
        (from, request): (NodeId, u64),
        (partition, bucket): (u32, u32),
        keys: &[(&[u8], u64)],
    ) {
        let index = partition as usize;
        if index >= view.ring.partition_count()
            || bucket >= BUCKETS
            || !view.replicates(shared.id, index)
            || self.offers.len() >= OFFERS_MAX
        {
            return; // the offerer's page expires and is offered again later
        }
        let range = trees.bucket_range(index, bucket as usize);
        let limit = shared.config.wire_limits.list_length_max as u32;
        // Durable: this answer lets the offerer delete its copy (handoff, reaping), so
        // it must not count a buffered record a power cut here would take back.
        let Some(token) = shared.start_scan(Task::OfferScan, range, (None, limit), true) else {
            return;
        };
        let mut keys: Vec<(Vec<u8>, u64, u32)> = (0u32..)
            .zip(keys)
            .map(|(position, &(key, hash))| (key.to_vec(), hash, position))
            .collect();
        keys.sort_unstable();
        let offer = OfferScan {
            from,
            request,
            keys,
        };
        self.offers.push((token, offer));
    }

    /// The offer this node's scan of `token` was for.
    pub(crate) fn take_offer(&mut self, token: u64) -> Option<OfferScan> {
        let position = self.offers.iter().position(|(t, _)| *t == token)?;
        Some(self.offers.swap_remove(position).1)
    }
}

impl OfferScan {
    /// True for a reaping node's offer (`node::reap` reuses the handoff exchange).
    pub(crate) fn is_reap(&self) -> bool {
        request_id::owner(self.request) == Owner::Reap
    }

    /// The records of `page` that are exactly the ones offered.
    pub(crate) fn alike<'p>(&self, page: &'p ScanPage) -> impl Iterator<Item = &'p [u8]> {
        let offered = &self.keys;
        page.items
            .iter()
            .filter(move |(key, record)| {
                offered
                    .binary_search_by(|(k, _, _)| k.as_slice().cmp(key))
                    .is_ok_and(|at| offered[at].1 == entry_hash(key, record))
            })
            .map(|(_, record)| record.as_slice())
    }

    /// Answers the offerer with the positions of the offered keys `page` (this
    /// node's bucket) lacks or holds differently.
    pub(crate) fn answer(self, shared: &mut Shared, page: &ScanPage) {
        let mut mine = entry_hashes(&page.items);
        mine.sort_unstable();
        let wanted: Vec<u32> = self
            .keys
            .iter()
            .filter(|(key, hash, _)| {
                mine.binary_search_by(|(k, _)| (*k).cmp(key.as_slice()))
                    .map_or(true, |at| mine[at].1 != *hash)
            })
            .map(|&(_, _, position)| position)
            .collect();
        let message = Message::HandoffNeed {
            request: self.request,
            wanted,
        };
        shared.send(self.from, &message);
    }
}

/// The node's glue: the timer, leaving, deleting confirmed pages under key locks, and
/// a reaping node's offers (which raise the writer floor).
impl Node {
    /// The handoff timer.
    pub(crate) fn handoff_tick(&mut self) {
        let now = self.shared.now;
        let next = now + Duration::from_millis(self.shared.config.handoff_interval_ms);
        self.timers.set(Timer::Handoff, next);
        self.handoffs.refill_and_check(&self.shared, &self.peers);
        self.writer.load(&mut self.shared);
        self.writer.store(&mut self.shared);
        if self.handoffs.is_idle() {
            self.maybe_left();
        }
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        self.handoffs.tick(&mut cx);
    }

    /// Marks this node `Left` once a leave has moved everything away.
    fn maybe_left(&mut self) {
        if self.view.membership.local().status != MemberStatus::Leaving
            || !self.entropy.trees.fully_built()
            || !self.hints.holds_none()
            || (0..self.view.ring.partition_count()).any(|p| self.entropy.trees.keys_held(p) > 0)
        {
            return;
        }
        log::info!("node {}: handed everything off, now left", self.shared.id.0);
        let merged = self.view.membership.set_local_status(MemberStatus::Left);
        self.view_changed(merged);
    }

    /// Continues a pass that waited for its dropped mark to become durable.
    pub(crate) fn resume_handoff(&mut self) {
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        self.handoffs.resume(&mut cx);
    }

    /// This node's page of the partition it hands off was read.
    pub(crate) fn handoff_page(&mut self, result: Result<ScanPage, StorageFailure>) {
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        if let Some(page) = self.handoffs.page_read(&mut cx, result) {
            self.delete_page(page);
        }
    }

    /// A replica's answer to this node's offer.
    pub(crate) fn handoff_need(&mut self, from: NodeId, request: u64, wanted: &[u32]) {
        let message = (from, request);
        match self.handoffs.need(&mut self.shared, message, wanted) {
            Some(page) => self.delete_page(page),
            // A page confirmed by the replicas that are up goes on at once.
            None => self.resume_handoff(),
        }
    }

    /// A replica's acknowledgement of one record this node handed it.
    pub(crate) fn handoff_ack(&mut self, from: NodeId, request: u64, status: ReplicaStatus) {
        match self.handoffs.ack(&self.shared, (from, request), status) {
            Some(page) => self.delete_page(page),
            None => self.resume_handoff(),
        }
    }

    /// Deletes each key of a confirmed page if its record is still the one offered.
    fn delete_page(&mut self, page: PageToDelete) {
        let serial = page.serial;
        for ((key, _), &expected) in page.page.iter().zip(&page.hashes) {
            let op = KeyOp::DeleteIfUnchanged {
                expected,
                cause: DeleteCause::Handoff { serial },
            };
            if self.enqueue_key_op(Space::Data, key, op).is_err() {
                self.handoff_deleted(serial, false);
            }
        }
    }

    /// One delete of the page `serial` is over (`deleted`: the key was removed).
    pub(crate) fn handoff_deleted(&mut self, serial: u32, deleted: bool) {
        let admission = self.admission();
        let mut cx = background_context!(self, admission);
        self.handoffs.deleted(&mut cx, serial, deleted);
    }

    /// A node handing off a partition offers a page of it.
    pub(crate) fn handoff_offer(
        &mut self,
        from: NodeId,
        request: u64,
        partition: u32,
        bucket: u32,
        keys: &[(&[u8], u64)],
    ) {
        self.handoffs.offer(
            &mut self.shared,
            (&self.view, &self.entropy.trees),
            (from, request),
            (partition, bucket),
            keys,
        );
    }

    /// This node's scan for an offer finished: answer with what it lacks (a reaping
    /// node's offer first raises the writer floor over the tombstones it names).
    pub(crate) fn offer_scanned(&mut self, token: u64, result: Result<ScanPage, StorageFailure>) {
        let Some(offer) = self.handoffs.take_offer(token) else {
            return;
        };
        let Ok(page) = result else {
            return; // the offerer retries
        };
        if offer.is_reap() {
            self.prepare_floor(offer.alike(&page));
        }
        offer.answer(&mut self.shared, &page);
    }
}

/// Moves a pass past the page that ended at `next`.
fn advance(pass: &mut Pass, next: Option<u64>) {
    match next {
        Some(after) => pass.after = Some(after),
        None => {
            pass.bucket += 1;
            pass.after = None;
        }
    }
}
