//! Forwarding: a node that holds no replica of a key forwards the client's write to
//! the first healthy replica, which coordinates it; and taking a forward from a peer.
//!
//! # Retries without a second sibling
//!
//! A forward can be lost after it was minted: the replica froze or died before its
//! answer came back. Waiting out the request timeout would make the client wait on a
//! dead node; minting the write again elsewhere under an unrelated dot would leave one
//! client write as two siblings, and a later write made with the retry's token (which
//! names only the second dot) would leave the first copy behind as a stale sibling.
//! So every attempt of a forward carries a fresh one-shot id:
//!
//! - The first attempt is minted as usual (the replica's lane) with its id as its
//!   value's alias ([`crate::version::Value::alias`]).
//! - Every later attempt, once an earlier one may have been minted, is a *retry*: it
//!   is minted as the dot `(id, 1)` of its own id, and its context holds the dot
//!   `(earlier, 1)` of every earlier attempt that may have been minted (the message
//!   lists them). A clock holding an attempt's dot covers that attempt's copy (the
//!   first copy through its alias, `VersionSet::sync` drops it), so wherever copies
//!   meet, the latest attempt's stands for the write, and a context naming it
//!   supersedes them all.
//! - An attempt arriving where any attempt's dot is already in the clock, or the
//!   first copy's value is live, mints nothing: the write is there.
//!
//! Each attempt's dot is minted at most once: an attempt goes to one node, and a
//! duplicate of it finds its own dot. A dot minted twice, on two nodes holding
//! different versions, would stand for two different causal pasts: two plain writes
//! retried across each other (each retry minted once where the other's retry was and
//! once where it was not) superseded each other until neither was left, the
//! acknowledged-write loss the simulator found when one retry dot served every retry.
//!
//! Only the node the client asked makes attempts, one after another, so the last one
//! names every earlier one. A replica whose disk is full answers a forwarded write
//! with [`ReplicaStatus::DiskFull`] (nothing was minted) and the forwarder takes the
//! next replica with the same attempt; it never forwards the write on itself. When two
//! disk-full replicas did (each handing on what the other handed it), the write's
//! attempts branched: one branch's retry was minted under an id the client's node
//! never heard of, so the token it returned named an earlier attempt only, and the
//! client's next write left the deleted value standing beside it (seed 11907403985).
//! A replica handing on its own client's write (`Coordinator::hand_on`) starts the
//! chain as its first attempt.
//!
//! What is left (at-least-once, as a client's own retry would be): when an earlier copy
//! reached another replica, a client read it there and superseded it with its context
//! before a later attempt's dot reached that replica, the later copy comes back as a
//! sibling of that client's write (its timestamp is the first copy's, so a plain GET
//! still picks the later write); and a write whose attempts reached replicas that never
//! exchange them before they are superseded can show two copies. The simulator counts
//! copies that came back ("retry copies back").
//!
//! A retry costs its key a clock entry for every attempt it names, as a stand-in's
//! hint costs one; first attempts cost nothing in the clock. Reaping removes those
//! entries once every replica superseded them (`node::reap`). A write whose attempts
//! would pass [`ATTEMPTS_MAX`] fails instead.
//!
//! An attempt may have been minted once it was sent, unless its connection was never
//! made (`forward_undelivered`) or the replica refused it as overloaded. Retries
//! happen when the link to the replica breaks after the forward was sent
//! (`forward_lost`), when the replica answers with a failure, when it has sent this
//! node nothing for `forward_silence_ms` while the forward waits (frozen or dead before
//! anything marked it down; it is then passed over as a forward target until it is
//! heard from again), or when it is heard from but has not answered after
//! `forward_retry_ms` (slow, as a node catching up after a restart: it is passed over
//! for `replica_timeout_ms`, so only a few writes pay for finding out). Both waits
//! stretch to the slowest recent forward's answer time (`speculation`): on a network
//! slower than they allow, every forward was retried at each replica in turn. When
//! every replica is down or was retried away from and not heard from since, the
//! write is minted here as a stand-in rather than forwarded to a replica it would be
//! retried away from again. Only the current attempt's answer is taken: an earlier
//! attempt's token would not name the retry (its answer only times it).

use super::{Coordination, Coordinator, check_quorum};
use crate::node::RequestError;
use crate::node::replica::check_sizes;
use crate::node::request_id;
use crate::node::requests::{AttemptIds, ForwardRequest, ReplyTo, Request, Retry, WriteSpec};
use crate::node::writer::{is_one_shot, one_shot_id};
use crate::quorum::SyncWrites;
use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::{NodeId, Value, VersionVector};
use crate::wire::{Message, ReplicaStatus};
use core::time::Duration;
use smallvec::SmallVec;

/// Most attempts of one forwarded write that may have been minted (each costs the key a
/// clock entry); a write that would need more fails.
pub(crate) const ATTEMPTS_MAX: usize = 8;

impl Coordinator {
    /// A peer's client write to coordinate here (this node is a replica of the key,
    /// or a stand-in when none answered the peer). A duplicate of a forward already
    /// taken is dropped: the first copy answers.
    pub(crate) fn forwarded_write(
        &mut self,
        cx: &mut Coordination<'_>,
        from: NodeId,
        message: Message<'_>,
    ) {
        let Message::ForwardPut {
            request,
            key,
            context,
            plain,
            value,
            timestamp_ms,
            write_quorum,
            sync_all,
            alias,
            earlier,
        } = message
        else {
            return debug_assert!(false, "not a forward: {message:?}");
        };
        let expires =
            cx.shared.now + Duration::from_millis(cx.shared.config.request_timeout_ms * 2);
        if !self
            .forwards
            .first_time(cx.shared.now, expires, from, request, timestamp_ms, key)
        {
            return; // a duplicate: the first copy answers
        }
        let reply = ReplyTo::Peer {
            peer: from,
            request,
        };
        let context = if plain {
            None
        } else if context.is_empty() {
            Some(VersionVector::new())
        } else {
            match core::str::from_utf8(context)
                .ok()
                .map(VersionVector::from_token)
            {
                Some(Ok(context)) => Some(context),
                _ => return self.finish_write(cx, reply, true, Err(RequestError::ForwardFailed)),
            }
        };
        let checked =
            check_quorum(cx.shared, Some(write_quorum), write_quorum).and_then(|quorum| {
                check_sizes(cx.shared, key, value.map_or(0, <[u8]>::len)).map(|()| quorum)
            });
        let write_quorum = match checked {
            Ok(quorum) => quorum,
            Err(error) => return self.finish_write(cx, reply, true, Err(error)),
        };
        let all_one_shot = is_one_shot(alias) && earlier.iter().all(|&id| is_one_shot(id));
        if !all_one_shot || earlier.len() >= ATTEMPTS_MAX {
            // Not one-shot ids: minting their dots could reuse a member's.
            return self.finish_write(cx, reply, true, Err(RequestError::ForwardFailed));
        }
        let value = match value {
            Some(data) => Value::new(data.to_vec(), timestamp_ms),
            None => Value::tombstone(timestamp_ms),
        };
        // A first attempt's value carries its id, which a retry's context names; a
        // retry is minted as its own id's dot.
        let retry = (!earlier.is_empty()).then(|| Retry {
            id: alias,
            earlier: earlier.into_iter().collect(),
        });
        let aliased = retry.is_none() && !cx.shared.sabotage().retry_without_alias;
        let spec = WriteSpec {
            context,
            value: if aliased {
                value.with_alias(alias)
            } else {
                value
            },
            write_quorum,
            sync: if sync_all {
                SyncWrites::All
            } else {
                SyncWrites::One
            },
            retry,
        };
        let partition = cx.view.ring.partition_of(key);
        let owner = if cx
            .view
            .ring
            .preference_list(partition)
            .any(|node| node == cx.shared.id)
        {
            None
        } else {
            cx.view.ring.preference_list(partition).next()
        };
        self.coordinate_write(cx, reply, true, key, spec, owner);
    }

    pub(super) fn forward_write(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        spec: WriteSpec,
        to: NodeId,
    ) {
        let partition = cx.view.ring.partition_of(key);
        cx.shared.stats.writes_forwarded += 1;
        // A write handed on keeps its attempts: a first attempt goes on as the same
        // attempt (its copy here was never stored), a retry as a new one.
        let mut spec = spec;
        let (attempt, earlier) = match (spec.retry.take(), spec.value.alias) {
            (Some(retry), _) => {
                let mut earlier = retry.earlier;
                earlier.push(retry.id);
                (one_shot_id(&mut cx.shared.rng), earlier)
            }
            (None, Some(alias)) => (alias, AttemptIds::new()),
            (None, None) => (one_shot_id(&mut cx.shared.rng), AttemptIds::new()),
        };
        let request = Request::Forward(ForwardRequest {
            reply,
            reply_context,
            key: key.to_vec(),
            partition,
            spec,
            to,
            link_generation: 0,
            tried: SmallVec::new(),
            attempt,
            earlier,
            may_be_minted: false,
            sent_at: cx.shared.now,
            attempt_at: Instant::MAX,
            final_at: cx.deadline_after(cx.shared.config.request_timeout_ms),
        });
        match self.insert_request(cx, request) {
            Ok(id) => self.send_forward(cx, id, to),
            Err(error) => self.finish_write(cx, reply, reply_context, Err(error)),
        }
    }

    pub(super) fn send_forward(&mut self, cx: &mut Coordination<'_>, id: SlotId, to: NodeId) {
        let attempt_at = cx.shared.now + self.forward_silence(cx);
        let Some(Request::Forward(forward)) = self.requests.held_mut(id) else {
            return;
        };
        forward.to = to;
        forward.link_generation = cx.peers.link_generation(to);
        forward.tried.push(to);
        forward.sent_at = cx.shared.now;
        forward.attempt_at = attempt_at;
        let started = cx.peers.begin_request(to, cx.shared.now);
        let token = forward.spec.context.as_ref().map(VersionVector::to_token);
        let sent = started
            && cx
                .shared
                .actions
                .send(
                    to,
                    cx.shared.config.cluster_id,
                    &Message::ForwardPut {
                        request: request_id::coordinator(id),
                        key: &forward.key,
                        context: token.as_deref().unwrap_or("").as_bytes(),
                        plain: forward.spec.context.is_none(),
                        value: forward.spec.value.data.as_deref(),
                        timestamp_ms: forward.spec.value.timestamp_ms,
                        write_quorum: forward.spec.write_quorum,
                        sync_all: forward.spec.sync == SyncWrites::All,
                        alias: forward.attempt,
                        earlier: forward.earlier.to_vec(),
                    },
                )
                .is_ok();
        forward.may_be_minted = sent;
        self.arm(id);
        if !sent {
            if started {
                cx.peers.end_request(to);
            }
            self.forward_failed(cx, id);
        }
    }

    /// Forward `id` to `peer` was never delivered (no connection could be made since it
    /// was sent): nothing was minted there, so the next replica may take it.
    pub(crate) fn forward_undelivered(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        peer: NodeId,
    ) {
        let Some(Request::Forward(forward)) = self.requests.held(id) else {
            return;
        };
        if forward.to != peer {
            return;
        }
        cx.peers.end_request(peer);
        cx.shared.stats.forwards_redirected += 1;
        if let Some(Request::Forward(forward)) = self.requests.held_mut(id) {
            forward.may_be_minted = false;
        }
        self.forward_failed(cx, id);
    }

    /// The link to `peer` broke after forward `id` was sent to it: it may have been
    /// minted there, and no answer will come. Retry it at the next replica as the
    /// write's retry dot.
    pub(crate) fn forward_lost(&mut self, cx: &mut Coordination<'_>, id: SlotId, peer: NodeId) {
        let Some(Request::Forward(forward)) = self.requests.held(id) else {
            return;
        };
        if forward.to != peer || cx.shared.sabotage().forwards_wait {
            return;
        }
        cx.peers.end_request(peer);
        cx.shared.stats.forwards_retried += 1;
        self.forward_failed(cx, id);
    }

    /// The replica a write was forwarded to answered.
    pub(crate) fn forward_answer(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        from: NodeId,
        status: ReplicaStatus,
        context: &[u8],
        held_value: bool,
    ) {
        // Every answer times its attempt, a late one of an attempt already retried
        // included: that is how slow forwards are now (see `speculation`).
        let now = cx.shared.now;
        let current = match self.requests.get(id) {
            Some(Request::Forward(forward)) if forward.to == from => Some(forward.sent_at),
            _ => None,
        };
        if let Some(sent_at) = current.or_else(|| self.retried_attempts.take(id, from)) {
            self.forward_times
                .record(now.saturating_duration_since(sent_at));
        }
        if current.is_none() {
            return;
        }
        if status != ReplicaStatus::Ok {
            // Overloaded, disk full or left: refused before minting, nothing was written.
            // Otherwise the replica may have minted the write before failing: the next
            // attempt is a retry, minted as the write's retry dot.
            cx.peers.end_request(from);
            let refused = matches!(
                status,
                ReplicaStatus::Overloaded | ReplicaStatus::DiskFull | ReplicaStatus::Left
            );
            if let Some(Request::Forward(forward)) = self.requests.held_mut(id) {
                forward.to = cx.shared.id;
                forward.may_be_minted &= !refused;
            }
            return self.forward_failed(cx, id);
        }
        let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
            return;
        };
        match core::str::from_utf8(context) {
            Ok(token) => self.finish_write(
                cx,
                forward.reply,
                forward.reply_context,
                Ok((token, held_value)),
            ),
            Err(_) => self.finish_write(
                cx,
                forward.reply,
                forward.reply_context,
                Err(RequestError::ForwardFailed),
            ),
        }
    }

    /// The forward's current attempt will not be answered: try the next healthy
    /// replica, else mint here as a stand-in. When an attempt may have been minted, the
    /// rest are retries (see the module docs).
    pub(super) fn forward_failed(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Forward(forward)) = self.requests.held_mut(id) else {
            return;
        };
        if forward.may_be_minted {
            // The next attempt is a retry under an id of its own: one node's mint of a
            // dot must be the only one (see the module docs).
            forward.earlier.push(forward.attempt);
            forward.attempt = one_shot_id(&mut cx.shared.rng);
        }
        forward.may_be_minted = false;
        // The caller ended the attempt's request to its replica: ending the forward
        // here must not end it twice.
        forward.to = cx.shared.id;
        let next = cx
            .view
            .ring
            .preference_list(forward.partition)
            .find(|&node| cx.peers.is_up(node) && !forward.tried.contains(&node));
        if forward.earlier.len() >= ATTEMPTS_MAX {
            let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
                return;
            };
            let required = forward.spec.write_quorum;
            let error = RequestError::QuorumUnreachable {
                operation: "write",
                required,
            };
            return self.finish_write(cx, forward.reply, forward.reply_context, Err(error));
        }
        if let Some(next) = next {
            if let Some(Request::Forward(forward)) = self.requests.held_mut(id) {
                forward.to = next;
            }
            return self.send_forward(cx, id, next);
        }
        let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
            return;
        };
        let own = cx.shared.id;
        if cx
            .view
            .ring
            .preference_list(forward.partition)
            .any(|node| node == own)
        {
            // A write this replica handed on (its disk is full) that no other replica
            // took: it cannot be a stand-in for itself.
            let required = forward.spec.write_quorum;
            let error = RequestError::QuorumUnreachable {
                operation: "write",
                required,
            };
            return self.finish_write(cx, forward.reply, forward.reply_context, Err(error));
        }
        // A stand-in for a replica believed down when there is one: the replicas that
        // are up (tried, silent or slow, but not down) stay write targets, and W may
        // need every one of them.
        let ring = &cx.view.ring;
        let owner = ring
            .preference_list(forward.partition)
            .find(|&node| !cx.peers.is_up(node))
            .or_else(|| ring.preference_list(forward.partition).next());
        let mut spec = forward.spec;
        if !forward.earlier.is_empty() {
            spec.retry = Some(Retry {
                id: forward.attempt,
                earlier: forward.earlier,
            });
            spec.value.alias = None;
        }
        self.coordinate_write(
            cx,
            forward.reply,
            forward.reply_context,
            &forward.key,
            spec,
            owner,
        );
    }

    /// How long a forward waits on a replica that sends nothing before it is retried
    /// elsewhere: at least `forward_silence_ms`, as long as the slowest recent forward
    /// took, at most the replica timeout (see `speculation`).
    fn forward_silence(&self, cx: &Coordination<'_>) -> Duration {
        let config = &cx.shared.config;
        self.forward_times
            .slowest_within(config.forward_silence_ms, config.replica_timeout_ms)
    }

    /// How long a forward waits on a replica heard from: `forward_retry_ms` stretched
    /// as [`Coordinator::forward_silence`] is.
    fn forward_retry(&self, cx: &Coordination<'_>) -> Duration {
        let config = &cx.shared.config;
        self.forward_times
            .slowest_within(config.forward_retry_ms, config.replica_timeout_ms)
    }

    pub(super) fn forward_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let now = cx.shared.now;
        let (silence, retry) = (self.forward_silence(cx), self.forward_retry(cx));
        let Some(Request::Forward(forward)) = self.requests.get_mut(id) else {
            return;
        };
        if now < forward.final_at && cx.shared.sabotage().forwards_wait {
            forward.attempt_at = forward.final_at;
            return self.arm(id);
        }
        if now < forward.final_at {
            let to = forward.to;
            let waited = now.saturating_duration_since(forward.sent_at);
            let silence_ms = u64::try_from(silence.as_millis()).unwrap_or(u64::MAX);
            let silent = cx.peers.is_silent(to, now, silence_ms);
            if !silent && waited < retry {
                // The replica is alive (it spoke within the window): keep waiting.
                let retry_at = forward.sent_at + retry;
                forward.attempt_at = retry_at.min(now + silence);
                return self.arm(id);
            }
            // Silent (frozen or dead, not yet marked down), or alive but slow on this
            // write (a node catching up): retry at the next replica.
            self.retried_attempts.remember(id, to, forward.sent_at);
            if silent {
                cx.peers.suspect(to, now);
            } else {
                let timeout = Duration::from_millis(cx.shared.config.replica_timeout_ms);
                cx.peers.mark_slow(to, now + timeout);
            }
            cx.peers.end_request(to);
            cx.shared.stats.forwards_retried += 1;
            return self.forward_failed(cx, id);
        }
        let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
            return;
        };
        cx.shared.stats.requests_timed_out += 1;
        cx.peers.timed_out(forward.to, cx.shared.now);
        let required = forward.spec.write_quorum;
        self.finish_write(
            cx,
            forward.reply,
            forward.reply_context,
            Err(RequestError::QuorumTimeout {
                operation: "write",
                required,
            }),
        );
    }
}
