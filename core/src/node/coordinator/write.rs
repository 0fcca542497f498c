//! Coordinating a write: minted here under the key's lock (as a replica, or as a
//! stand-in for an unreachable owner), then sent to the other targets with a stand-in
//! for each that cannot take it, replied at W.

use super::{Coordination, Coordinator};
use crate::node::RequestError;
use crate::node::hints::{HintWrite, hint_key};
use crate::node::key_ops::KeyOp;
use crate::node::replica::{Step, hint_bytes};
use crate::node::request_id;
use crate::node::requests::{AttemptIds, ReplyTo, Request, WriteRequest, WriteSpec};
use crate::node::shared::Shared;
use crate::node::storage::Space;
use crate::node::writer::{Writer, one_shot_id};
use crate::quorum::{Progress, SyncWrites, WriteQuorum};
use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::{Dot, NodeId, Value, VersionSet, VersionVector};
use crate::wire::{Message, ReplicaStatus};
use core::time::Duration;
use smallvec::SmallVec;

impl Coordinator {
    /// A client's (or batch's) write of `key`.
    pub(crate) fn start_write(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        spec: WriteSpec,
    ) {
        let partition = cx.view.ring.partition_of(key);
        if cx
            .view
            .ring
            .preference_list(partition)
            .any(|node| node == cx.shared.id)
        {
            return self.coordinate_write(cx, reply, reply_context, key, spec, None);
        }
        // The first replica that is up, passing over one this node waits on in silence
        // or retried a forward away from (frozen or dead, not yet marked down) when
        // another is up: a forward to it would wait to be retried. When every replica
        // is down or was retried away from and not heard from since (a one-way
        // partition leaves them up), this node mints the write as a stand-in: a
        // forward would be retried at each of them in turn, and every attempt that may
        // have been minted costs the key a clock entry for good (seed 4357959284: one
        // hot key's clock filled its bound in nine seconds of one-way partitions, and
        // owners at the bound refused the hints that would have made them whole).
        let up = |node| cx.peers.is_up(node) && !cx.peers.is_suspected(node);
        let first_healthy = cx
            .view
            .ring
            .preference_list(partition)
            .find(|&node| cx.answering(node))
            .or_else(|| {
                cx.view
                    .ring
                    .preference_list(partition)
                    .find(|&node| up(node))
            });
        match first_healthy {
            Some(replica) => self.forward_write(cx, reply, reply_context, key, spec, replica),
            None if cx.shared.sabotage().strict_quorum => {
                let required = spec.write_quorum;
                let error = RequestError::QuorumUnreachable {
                    operation: "write",
                    required,
                };
                self.finish_write(cx, reply, reply_context, Err(error))
            }
            None => {
                let owner = cx.view.ring.preference_list(partition).next();
                self.coordinate_write(cx, reply, reply_context, key, spec, owner)
            }
        }
    }

    /// Mints and replicates a write here: as a replica (`local_owner` None) or as a
    /// stand-in for `local_owner`.
    pub(crate) fn coordinate_write(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        spec: WriteSpec,
        local_owner: Option<NodeId>,
    ) {
        if cx.view.has_left() {
            // A forward retried after this node left: it keeps nothing now.
            return self.finish_write(cx, reply, reply_context, Err(RequestError::Left));
        }
        cx.shared.stats.writes_coordinated += 1;
        let hint = match local_owner {
            None => None,
            Some(owner) => match cx.hints.reserve(stand_in_bytes(key, &spec)) {
                Some(reservation) => Some(HintWrite::new(owner, reservation)),
                None => {
                    cx.shared.stats.overloaded += 1;
                    let error = RequestError::Overloaded("too many hints held");
                    return self.finish_write(cx, reply, reply_context, Err(error));
                }
            },
        };
        let partition = cx.view.ring.partition_of(key);
        if local_owner.is_some() {
            cx.shared.stats.stand_in_writes += 1;
        }
        let writer = match (&spec.retry, local_owner) {
            (Some(retry), _) => retry.id,
            (None, None) => cx.writer.writer_for(cx.shared, cx.view, partition),
            (None, Some(_)) => one_shot_id(&mut cx.shared.rng),
        };
        let write_quorum = spec.write_quorum;
        let request = Request::Write(WriteRequest {
            reply,
            reply_context,
            key: key.to_vec(),
            partition,
            writer,
            local_owner,
            spec,
            minted: None,
            versions: Vec::new(),
            context: VersionVector::new(),
            write_quorum,
            quorum: None,
            stand_ins: SmallVec::new(),
            replied: false,
            existed: false,
            attempt_at: Instant::MAX,
            final_at: cx.deadline_after(cx.shared.config.request_timeout_ms),
        });
        let id = match self.insert_request(cx, request) {
            Ok(id) => id,
            Err(error) => {
                if let Some(hint) = hint {
                    cx.hints.unreserve(hint.reservation);
                }
                return self.finish_write(cx, reply, reply_context, Err(error));
            }
        };
        let space = match local_owner {
            None => {
                cx.shared.scratch.clear();
                cx.shared.scratch.extend_from_slice(key);
                Space::Data
            }
            Some(owner) => {
                hint_key(owner, key, &mut cx.shared.scratch);
                Space::Hints
            }
        };
        let storage_key = std::mem::take(&mut cx.shared.scratch);
        let op = KeyOp::Mint { request: id, hint };
        let queued = self.enqueue_own(cx, space, &storage_key, op);
        cx.shared.scratch = storage_key;
        if queued.is_err() {
            if let Some(hint) = hint {
                cx.hints.unreserve(hint.reservation);
            }
            self.fail_write(
                cx,
                id,
                RequestError::Overloaded("too many keys being written"),
            );
        }
    }

    /// The mint of write `request` read `current` under `lock`: mint the write's
    /// versions and store them (the replica's step), replicating once durable.
    pub(crate) fn mint_locked(
        &mut self,
        cx: &mut Coordination<'_>,
        lock: u32,
        token: u64,
        request: SlotId,
        current: VersionSet,
    ) -> Step {
        let bounds = cx.shared.config.version_bounds;
        let Some(Request::Write(write)) = self.requests.get_mut(request) else {
            // The request timed out while waiting for the lock: nothing to write.
            return Step::Done(Ok(()));
        };
        if write.minted.is_some() {
            debug_assert!(false, "a write minted twice");
            return Step::Done(Ok(()));
        }
        if let (Some(owner), None) = (write.local_owner, &write.spec.retry) {
            if let Some(writer) = cx.hints.stand_in_writer(owner, &write.key, &current) {
                write.writer = writer;
            }
        }
        let value = core::mem::replace(&mut write.spec.value, Value::tombstone(0));
        let context = write.spec.context.clone();
        let (minted, reply_context, dot) =
            mint_versions(cx.writer, cx.shared, write, context, value, &current);
        write.minted = Some(dot);
        if minted.sibling_count() > bounds.siblings_minted_max
            || minted.clock_size() > bounds.coordinators_max
        {
            self.fail_write(cx, request, RequestError::TooManyVersions);
            return Step::Done(Ok(()));
        }
        write.versions.clear();
        minted.encode(&mut write.versions);
        write.context = reply_context;
        let queued = cx.replica.store(cx.shared, lock, token, &write.versions);
        match queued {
            Ok(()) => {
                if cx.shared.sabotage().ack_before_durable {
                    self.replicate(cx, request);
                }
                Step::Storing
            }
            Err(()) => {
                self.fail_write(
                    cx,
                    request,
                    RequestError::Overloaded("too many queued actions"),
                );
                Step::Done(Ok(()))
            }
        }
    }

    /// This node's disk is full: its store refused write `id`'s record before writing
    /// anything, so the dot minted for it exists nowhere (it was neither stored nor
    /// sent). The next healthy replica coordinates the write instead, as it would for
    /// a replica that is down; true if one took it. A write a peer forwarded here goes
    /// back to that peer as [`ReplicaStatus::DiskFull`], and the peer makes the next
    /// attempt: only the client's node makes attempts (see `coordinator::forward`).
    pub(crate) fn hand_on(&mut self, cx: &mut Coordination<'_>, id: SlotId) -> bool {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return false;
        };
        let (Some(dot), None, None) = (write.minted, write.local_owner, write.quorum.as_ref())
        else {
            return false;
        };
        if let ReplyTo::Peer { peer, request } = write.reply {
            self.remove_request(cx, id);
            cx.shared.stats.writes_handed_on += 1;
            cx.shared.send(
                peer,
                &Message::ForwardPutReply {
                    request,
                    status: ReplicaStatus::DiskFull,
                    context: &[],
                    held_value: false,
                },
            );
            return true;
        }
        let own = cx.shared.id;
        let next = cx
            .view
            .ring
            .preference_list(write.partition)
            .find(|&node| node != own && cx.peers.is_up(node));
        let Some(next) = next else {
            return false;
        };
        let bounds = cx.shared.config.version_bounds;
        let value = VersionSet::decode(&write.versions, bounds)
            .ok()
            .and_then(|versions| {
                let sibling = versions.siblings().find(|s| s.dot == Some(dot))?;
                Some(sibling.value.clone())
            });
        let Some(value) = value else {
            // Only a forward attempt that found its write here already, superseded
            // since, holds no sibling of its own: it is not this node's to hand on.
            debug_assert!(dot.counter == 1, "a minted write holds its own dot");
            return false;
        };
        let Some(Request::Write(write)) = self.remove_request(cx, id) else {
            return false;
        };
        cx.shared.stats.writes_handed_on += 1;
        let spec = WriteSpec {
            value,
            ..write.spec
        };
        self.forward_write(cx, write.reply, write.reply_context, &write.key, spec, next);
        true
    }

    /// A write this node minted as a stand-in is durable in its hint record: the
    /// hint's next write may be minted under the same writer id (see `node::hints`).
    pub(crate) fn stand_in_minted(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        if let (Some(owner), Some(dot), None) = (write.local_owner, write.minted, &write.spec.retry)
        {
            if dot.node == write.writer {
                cx.hints.minted(owner, &write.key, dot);
            }
        }
    }

    /// The minted write `id` is durable here: send it to the other targets.
    pub(crate) fn replicate(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        let targets = cx.write_targets(write.partition, write.local_owner);
        let required = write.write_quorum;
        let quorum = WriteQuorum::new(targets.iter().map(|&(node, _)| node), usize::from(required));
        let Ok(mut quorum) = quorum else {
            return self.fail_write(
                cx,
                id,
                RequestError::QuorumUnreachable {
                    operation: "write",
                    required,
                },
            );
        };
        quorum.record_ack(cx.shared.id);
        let uncovered: SmallVec<[NodeId; 8]> = cx
            .view
            .ring
            .preference_list(write.partition)
            .filter(|&owner| {
                owner != cx.shared.id
                    && Some(owner) != write.local_owner
                    && !targets
                        .iter()
                        .any(|&(node, covers)| node == owner || covers == Some(owner))
            })
            .collect();
        let attempt_at = cx.deadline_after(cx.shared.config.replica_timeout_ms);
        if let Some(Request::Write(write)) = self.requests.get_mut(id) {
            write.quorum = Some(quorum);
            write.attempt_at = attempt_at;
            for &(node, owner) in &targets {
                if let Some(owner) = owner.filter(|_| node != cx.shared.id) {
                    write.stand_ins.push((node, owner));
                }
            }
        }
        for owner in uncovered {
            self.hold_hint(cx, id, owner);
        }
        for (node, owner) in targets {
            if node != cx.shared.id {
                self.send_write(cx, id, node, owner);
            }
        }
        self.arm(id);
        self.write_progress(cx, id);
    }

    /// Sends write `id`'s versions to `node` (a stand-in for `owner` when Some).
    pub(super) fn send_write(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        node: NodeId,
        owner: Option<NodeId>,
    ) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        if !cx.peers.begin_request(node, cx.shared.now) {
            return self.write_target_failed(cx, id, node);
        }
        let sent = cx.shared.actions.send(
            node,
            cx.shared.config.cluster_id,
            &Message::ReplicaPut {
                request: request_id::coordinator(id),
                key: &write.key,
                versions: &write.versions,
                hint: owner,
                durable: write.spec.sync == SyncWrites::All,
            },
        );
        if sent.is_err() {
            cx.peers.end_request(node);
            self.write_target_failed(cx, id, node);
        }
    }

    /// `node` acknowledged write `id` durable (or refused it); `held_value`: it held a
    /// value before.
    pub(crate) fn write_answer(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        node: NodeId,
        status: ReplicaStatus,
        held_value: bool,
    ) {
        let Some(Request::Write(write)) = self.requests.get_mut(id) else {
            return;
        };
        let Some(quorum) = write.quorum.as_mut() else {
            return;
        };
        if !quorum.is_pending(node) {
            return;
        }
        cx.peers.end_request(node);
        if status == ReplicaStatus::Ok {
            write.existed |= held_value;
            quorum.record_ack(node);
            self.write_progress(cx, id);
        } else {
            self.write_target_failed(cx, id, node);
        }
    }

    /// The link to `node` went down while write `id` waited for its acknowledgement.
    pub(crate) fn write_target_lost(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        node: NodeId,
    ) {
        let pending = matches!(
            self.requests.get(id),
            Some(Request::Write(write)) if write.quorum.as_ref().is_some_and(|q| q.is_pending(node))
        );
        if pending {
            cx.peers.end_request(node);
            self.write_target_failed(cx, id, node);
        }
    }

    /// `node` will not acknowledge write `id`: ask a stand-in in its place, or count it
    /// failed when none is left.
    pub(super) fn write_target_failed(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        node: NodeId,
    ) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        let owner = write
            .stand_ins
            .iter()
            .find(|(stand_in, _)| *stand_in == node)
            .map_or(node, |&(_, owner)| owner);
        let stand_in = self.write_stand_in(cx, id);
        // A preference-list member that was not a target (it was down when the write
        // began) takes the write as its own copy, not as a hint for another owner.
        let is_owner = stand_in.is_some_and(|stand_in| {
            cx.view
                .ring
                .preference_list(write.partition)
                .any(|member| member == stand_in)
        });
        let Some(Request::Write(write)) = self.requests.get_mut(id) else {
            return;
        };
        let Some(quorum) = write.quorum.as_mut() else {
            return;
        };
        match stand_in {
            Some(stand_in) if is_owner => {
                quorum.replace(node, stand_in);
                self.send_write(cx, id, stand_in, None);
            }
            Some(stand_in) => {
                quorum.replace(node, stand_in);
                write.stand_ins.push((stand_in, owner));
                self.send_write(cx, id, stand_in, Some(owner));
            }
            None => {
                quorum.record_failure(node);
                self.hold_hint(cx, id, owner);
            }
        }
        self.write_progress(cx, id);
    }

    /// The node to ask for write `id` in place of a target that will not answer: the
    /// next healthy one that is not a target already (nor the owner this node stands
    /// in for).
    fn write_stand_in(&self, cx: &Coordination<'_>, id: SlotId) -> Option<NodeId> {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return None;
        };
        let quorum = write.quorum.as_ref()?;
        let mut taken: SmallVec<[NodeId; 8]> = quorum.targets().iter().copied().collect();
        if let Some(owner) = write.local_owner {
            taken.push(owner);
        }
        cx.next_stand_in(write.partition, &taken)
    }

    /// No target takes write `id` for `owner` (it is down and no stand-in is left):
    /// keep a hint for it here, as a stand-in would, so that it gets the write when it
    /// is back instead of waiting for anti-entropy (Cassandra's coordinator hints), and
    /// owe `owner` an exchange of the partition, which repairs it when the hint table
    /// is full or the hint is lost.
    fn hold_hint(&mut self, cx: &mut Coordination<'_>, id: SlotId, owner: NodeId) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        if owner == cx.shared.id || cx.shared.sabotage().skip_repair || cx.view.has_left() {
            return;
        }
        cx.owed.owe(owner, write.partition);
        let Some(reservation) = cx
            .hints
            .reserve(hint_bytes(&write.key, write.versions.len()))
        else {
            return;
        };
        let bounds = cx.shared.config.version_bounds;
        let Ok(versions) = VersionSet::decode(&write.versions, bounds) else {
            debug_assert!(false, "a write's own versions decode");
            cx.hints.unreserve(reservation);
            return;
        };
        cx.shared.stats.hints_held_for_down_owners += 1;
        let hint = HintWrite::new(owner, reservation);
        match cx
            .replica
            .merge(cx.shared, &write.key, versions, None, Some(hint), true)
        {
            Ok(Some(lock)) => self.run_own_lock(cx, lock),
            Ok(None) => {}
            Err(_) => cx.hints.unreserve(reservation),
        }
    }

    pub(super) fn write_progress(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Write(write)) = self.requests.get_mut(id) else {
            return;
        };
        let Some(quorum) = write.quorum.as_ref() else {
            return;
        };
        let settled = quorum.pending().next().is_none();
        match quorum.progress() {
            Progress::Reached if !write.replied => {
                write.replied = true;
                let (reply, reply_context) = (write.reply, write.reply_context);
                // A plain SET's client gets +OK: no token to build.
                let needs_token = reply_context || matches!(reply, ReplyTo::Peer { .. });
                let token = if needs_token {
                    write.context.to_token()
                } else {
                    String::new()
                };
                let existed = write.existed;
                self.finish_write(cx, reply, reply_context, Ok((&token, existed)));
                if settled {
                    self.remove_request(cx, id);
                }
            }
            Progress::Reached if settled => {
                self.remove_request(cx, id);
            }
            Progress::Unreachable => {
                let required = write.write_quorum;
                self.fail_write(
                    cx,
                    id,
                    RequestError::QuorumUnreachable {
                        operation: "write",
                        required,
                    },
                );
            }
            _ => {}
        }
    }

    /// Fails write `id` (if it has not replied) and ends it.
    pub(crate) fn fail_write(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        error: RequestError,
    ) {
        let Some(Request::Write(write)) = self.remove_request(cx, id) else {
            return;
        };
        if !write.replied {
            self.finish_write(cx, write.reply, write.reply_context, Err(error));
        }
    }

    pub(super) fn write_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let now = cx.shared.now;
        let Some(Request::Write(write)) = self.requests.get_mut(id) else {
            return;
        };
        if now >= write.final_at {
            if !write.replied {
                cx.shared.stats.requests_timed_out += 1;
            }
            let required = write.write_quorum;
            return self.fail_write(
                cx,
                id,
                RequestError::QuorumTimeout {
                    operation: "write",
                    required,
                },
            );
        }
        let silent: SmallVec<[NodeId; 8]> = match &write.quorum {
            Some(quorum) => quorum.pending().collect(),
            None => SmallVec::new(),
        };
        let replied = write.replied;
        write.attempt_at = now + Duration::from_millis(cx.shared.config.replica_timeout_ms);
        for node in silent {
            cx.peers.timed_out(node, now);
            // A silent target that no stand-in can replace, but that answered another
            // request of this node's within the replica timeout, is slow rather than
            // gone (a replica behind a queue of durable writes to one hot key answers
            // after the timeout): failing it would fail a write that can still reach
            // W, so it stays asked, until the next timeout finds it silent or the
            // request's deadline. One that answered nothing (dead, or cut off from
            // this node's frames even if its own still arrive) is let go at once
            // (owed a hint), so a write refused for want of it is refused promptly; so
            // is every such target once the client has its answer.
            let answering =
                cx.peers
                    .answered_within(node, now, cx.shared.config.replica_timeout_ms);
            if !replied && answering && self.write_stand_in(cx, id).is_none() {
                continue;
            }
            cx.peers.end_request(node);
            self.write_target_failed(cx, id, node);
        }
        self.arm(id);
    }
}

/// The most bytes a stand-in's mint of `spec` for `key` can add to its hint store:
/// the storage key, and the value under its context's clock entries, its dot's and its
/// retry's earlier attempts' (a plain write's clock is the record's own).
fn stand_in_bytes(key: &[u8], spec: &WriteSpec) -> usize {
    let context_entries = spec.context.as_ref().map_or(0, |c| c.entries().len());
    let retry_entries = spec.retry.as_ref().map_or(0, |retry| retry.earlier.len());
    let clock_entries = context_entries + retry_entries + 1;
    hint_bytes(
        key,
        VersionSet::mint_growth_bytes(&spec.value, clock_entries),
    )
}

/// What `write` mints against the stored `current`: its versions (under the writer
/// epoch's lane its context allows, above the counter floor) and the token its reply
/// carries (the context and this write's dot only, never a sibling the writer was not
/// shown: the lane holds none above the context).
fn mint_versions(
    writer: &mut Writer,
    shared: &mut Shared,
    write: &mut WriteRequest,
    context: Option<VersionVector>,
    value: Value,
    current: &VersionSet,
) -> (VersionSet, VersionVector, Dot) {
    let sabotage = shared.sabotage();
    let floor = if sabotage.reap_without_floor {
        0
    } else {
        writer.counter_floor()
    };
    let context = match context {
        _ if sabotage.ignore_context => VersionVector::new(),
        Some(context) => context,
        None => current.join(),
    };
    write.existed = crate::node::read_reply::holds_value(current);
    // Only VSET, VDEL and forwarded writes answer with a token.
    let token_wanted = write.reply_context || matches!(write.reply, ReplyTo::Peer { .. });
    // A forwarded write's attempt arriving where an attempt of it was minted already
    // mints nothing: the write is here (see `coordinator::forward`). A retry is minted
    // as its attempt's dot.
    let attempts: AttemptIds = match &write.spec.retry {
        Some(retry) => retry.earlier.iter().chain([&retry.id]).copied().collect(),
        None => value.alias.into_iter().collect(),
    };
    let (minted, dot) = match (current.minted_as(&attempts), &write.spec.retry) {
        (Some(dot), _) => (current.clone(), dot),
        (None, Some(retry)) => {
            let write = VersionSet::from_context(&context, value);
            let minted = VersionSet::update_retry(write, current, retry.id, &retry.earlier);
            let dot = Dot {
                node: retry.id,
                counter: 1,
            };
            (minted, dot)
        }
        (None, None) => {
            let lane = writer.lane_for(&mut shared.rng, write.writer, &context, current);
            let minted = VersionSet::update_above(
                VersionSet::from_context(&context, value),
                current,
                lane,
                floor,
            );
            let dot = Dot {
                node: lane,
                counter: minted.counter_of(lane),
            };
            (minted, dot)
        }
    };
    let reply_context = if !token_wanted {
        VersionVector::new()
    } else if sabotage.merged_clock_token {
        minted.join()
    } else if write.spec.retry.is_some() {
        // A retried write's token names every attempt's dot the replica's clock holds,
        // so a write made with it supersedes whichever copy of this one it meets (and
        // a read of the replica still descends the token: it names nothing else).
        let attempt_dots = attempts
            .iter()
            .filter(|&&node| minted.counter_of(node) > 0)
            .map(|&node| Dot { node, counter: 1 });
        attempt_dots.fold(context.with_dot(dot), VersionVector::with_dot)
    } else {
        context.with_dot(dot)
    };
    (minted, reply_context, dot)
}
