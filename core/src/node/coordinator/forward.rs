//! Forwarding: a node that holds no replica of a key forwards the client's write to
//! the first healthy replica, which coordinates it; and taking a forward from a peer.

use super::{Coordination, Coordinator, check_quorum};
use crate::node::RequestError;
use crate::node::replica::check_sizes;
use crate::node::request_id;
use crate::node::requests::{ForwardRequest, ReplyTo, Request, WriteSpec};
use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::{NodeId, Value, VersionVector};
use crate::wire::{Message, ReplicaStatus};
use core::time::Duration;
use smallvec::SmallVec;

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
        let value = match value {
            Some(data) => Value::new(data.to_vec(), timestamp_ms),
            None => Value::tombstone(timestamp_ms),
        };
        let spec = WriteSpec {
            context,
            value,
            write_quorum,
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
        let request = Request::Forward(ForwardRequest {
            reply,
            reply_context,
            key: key.to_vec(),
            partition,
            spec,
            to,
            link_generation: 0,
            tried: SmallVec::new(),
            attempt_at: Instant::MAX,
            final_at: cx.deadline_after(cx.shared.config.request_timeout_ms),
        });
        match self.insert_request(cx, request) {
            Ok(id) => self.send_forward(cx, id, to),
            Err(error) => self.finish_write(cx, reply, reply_context, Err(error)),
        }
    }

    pub(super) fn send_forward(&mut self, cx: &mut Coordination<'_>, id: SlotId, to: NodeId) {
        let attempt_at = cx.deadline_after(cx.shared.config.replica_timeout_ms);
        let Some(Request::Forward(forward)) = self.requests.held_mut(id) else {
            return;
        };
        forward.to = to;
        forward.link_generation = cx.peers.link_generation(to);
        forward.tried.push(to);
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
                    },
                )
                .is_ok();
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
        let Some(Request::Forward(forward)) = self.requests.get(id) else {
            return;
        };
        if forward.to != from {
            return;
        }
        if status == ReplicaStatus::Overloaded {
            // Refused before minting: nothing was written, another replica may try.
            cx.peers.end_request(from);
            if let Some(Request::Forward(forward)) = self.requests.held_mut(id) {
                forward.to = cx.shared.id;
            }
            return self.forward_failed(cx, id);
        }
        let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
            return;
        };
        if status != ReplicaStatus::Ok {
            // The replica may have minted and stored the write before failing: trying
            // another replica could mint it a second time under another dot.
            let error = RequestError::ForwardFailed;
            return self.finish_write(cx, forward.reply, forward.reply_context, Err(error));
        }
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

    /// The forward never reached its target, or was refused unwritten: try the next
    /// healthy replica, else mint here as a stand-in. (A forward that may have been
    /// written is never retried: a retry would mint the same client write again under
    /// another dot, and a later write superseding one copy would leave the other.)
    pub(super) fn forward_failed(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Forward(forward)) = self.requests.held(id) else {
            return;
        };
        let next = cx
            .view
            .ring
            .preference_list(forward.partition)
            .find(|&node| cx.peers.is_up(node) && !forward.tried.contains(&node));
        if let Some(next) = next {
            if let Some(Request::Forward(forward)) = self.requests.held_mut(id) {
                forward.to = next;
            }
            return self.send_forward(cx, id, next);
        }
        let Some(Request::Forward(forward)) = self.remove_request(cx, id) else {
            return;
        };
        let owner = cx.view.ring.preference_list(forward.partition).next();
        self.coordinate_write(
            cx,
            forward.reply,
            forward.reply_context,
            &forward.key,
            forward.spec,
            owner,
        );
    }

    pub(super) fn forward_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let now = cx.shared.now;
        let Some(Request::Forward(forward)) = self.requests.get_mut(id) else {
            return;
        };
        if now < forward.final_at {
            // Silent past the replica timeout: evidence against the replica, so later
            // writes go elsewhere; this one keeps waiting (it is never retried).
            forward.attempt_at = Instant::MAX;
            let to = forward.to;
            cx.peers.timed_out(to, now);
            return self.arm(id);
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
