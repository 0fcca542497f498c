//! Coordinating requests: reads over R of the first N healthy nodes, writes minted by a
//! replica and sent to N targets with stand-ins for the unreachable, forwarding from a
//! non-replica, multi-key batches, and the per-request deadlines that drive timeouts,
//! stand-in replacement and read repair.

mod forward;
mod read;
mod speculation;
mod write;

use crate::node::actions::ClientId;
use crate::node::admission::ForegroundLatency;
use crate::node::entropy::OwedExchanges;
use crate::node::forwards::RecentForwards;
use crate::node::gossip::View;
use crate::node::hints::Hints;
use crate::node::key_ops::KeyOp;
use crate::node::peers::Peers;
use crate::node::read_reply::{ReadKind, holds_value, write_read};
use crate::node::replica::{Ended, Failure, Replica, ReplicaContext, Start};
use crate::node::requests::{BatchRequest, Full, ReplyTo, Request, Requests};
use crate::node::shared::Shared;
use crate::node::storage::Space;
use crate::node::writer::Writer;
use crate::node::{RequestError, StorageFailure};
use crate::placement::Ring;
use crate::resp::{write_bulk, write_error, write_integer, write_simple};
use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::{NodeId, VersionSet};
use crate::wire::Message;
use core::time::Duration;
use smallvec::SmallVec;
use speculation::{AnswerTimes, RetriedAttempts};

/// Targets of a write: (node, owner it stands in for).
type Targets = SmallVec<[(NodeId, Option<NodeId>); 8]>;

/// The requests this node coordinates (client reads and writes, forwards, batches,
/// hint deliveries) and the forwarded writes it already took.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) requests: Requests,
    /// Forwarded writes already answered, so a duplicate is not minted twice.
    forwards: RecentForwards,
    /// How long replicas took to answer reads: when a read asks its spare targets.
    answer_times: AnswerTimes,
    /// How long replicas took to answer forwarded writes: how long a forward waits on
    /// a replica before it is retried elsewhere (`speculation`).
    forward_times: AnswerTimes,
    /// Forward attempts retried elsewhere, so that their late answers are timed too.
    retried_attempts: RetriedAttempts,
}

/// What coordinating uses besides its own state: the replica runs this node's own
/// copy of each key (mints, read repairs, hint reads and deletes) under its locks.
pub(crate) struct Coordination<'a> {
    pub(crate) shared: &'a mut Shared,
    pub(crate) view: &'a View,
    pub(crate) peers: &'a mut Peers,
    pub(crate) hints: &'a mut Hints,
    pub(crate) writer: &'a mut Writer,
    pub(crate) foreground: &'a mut ForegroundLatency,
    pub(crate) replica: &'a mut Replica,
    pub(crate) owed: &'a mut OwedExchanges,
}

/// The node's [`Coordinator`] and its [`Coordination`] (borrowing the node's fields one
/// by one).
macro_rules! coordination {
    ($node:ident) => {
        (
            &mut $node.coordinator,
            $crate::node::coordinator::Coordination {
                shared: &mut $node.shared,
                view: &$node.view,
                peers: &mut $node.peers,
                hints: &mut $node.hints,
                writer: &mut $node.writer,
                foreground: &mut $node.foreground,
                replica: &mut $node.replica,
                owed: &mut $node.owed,
            },
        )
    };
}
pub(crate) use coordination;

impl Coordination<'_> {
    fn healthy(&self, node: NodeId) -> bool {
        node == self.shared.id || self.peers.is_up(node)
    }

    /// Up and answering: not waited on in silence past `forward_silence_ms`, nor passed
    /// over after a retried forward or a slow answer. A request goes to such a node
    /// before one that is merely up (frozen or dead, not yet marked down).
    fn answering(&self, node: NodeId) -> bool {
        let now = self.shared.now;
        let silent_ms = self.shared.config.forward_silence_ms;
        node == self.shared.id
            || (self.peers.is_up(node)
                && !self.peers.is_silent(node, now, silent_ms)
                && !self.peers.is_suspected(node)
                && !self.peers.is_slow(node, now))
    }

    fn deadline_after(&self, milliseconds: u64) -> Instant {
        self.shared.now + Duration::from_millis(milliseconds)
    }

    /// The first N healthy nodes of `partition`'s extended list.
    fn read_targets(&self, partition: usize) -> SmallVec<[NodeId; 8]> {
        first_healthy(&self.view.ring, partition, |node| self.healthy(node))
    }

    /// Write targets after this node's local write: the healthy preference-list
    /// members, and for each unhealthy one the next healthy node past them with a hint.
    /// This node is always a target (it holds a copy), as a stand-in for `local_owner`
    /// when it is one.
    fn write_targets(&self, partition: usize, local_owner: Option<NodeId>) -> Targets {
        let replicas = self.view.ring.replicas();
        let mut targets: Targets = SmallVec::new();
        targets.push((self.shared.id, local_owner));
        let mut missing: SmallVec<[NodeId; 8]> = SmallVec::new();
        for node in self.view.ring.preference_list(partition) {
            if node == self.shared.id || Some(node) == local_owner {
                continue;
            }
            if self.healthy(node) {
                targets.push((node, None));
            } else {
                missing.push(node);
            }
        }
        if self.shared.sabotage().strict_quorum {
            return targets;
        }
        let pref: SmallVec<[NodeId; 8]> = self.view.ring.preference_list(partition).collect();
        let mut owners = missing.into_iter();
        for node in self.view.ring.extended_list(partition).skip(replicas) {
            if targets.len() >= replicas {
                break;
            }
            if node == self.shared.id || pref.contains(&node) || !self.healthy(node) {
                continue;
            }
            match owners.next() {
                Some(owner) => targets.push((node, Some(owner))),
                None => break,
            }
        }
        targets
    }

    /// The next healthy node of the extended list that `taken` does not hold.
    fn next_stand_in(&self, partition: usize, taken: &[NodeId]) -> Option<NodeId> {
        if self.shared.sabotage().strict_quorum {
            return None;
        }
        self.view
            .ring
            .extended_list(partition)
            .find(|&node| node != self.shared.id && self.healthy(node) && !taken.contains(&node))
    }
}

impl Coordinator {
    pub(crate) fn new(request_slots: u32, requests_max: u32) -> Coordinator {
        Coordinator {
            requests: Requests::new(request_slots),
            forwards: RecentForwards::new(requests_max),
            answer_times: AnswerTimes::new(),
            forward_times: AnswerTimes::new(),
            retried_attempts: RetriedAttempts::default(),
        }
    }

    /// Queues this node's own key operation `op` (a mint, a hint read or delete) and
    /// starts it when the key is free.
    pub(crate) fn enqueue_own(
        &mut self,
        cx: &mut Coordination<'_>,
        space: Space,
        key: &[u8],
        op: KeyOp,
    ) -> Result<(), KeyOp> {
        if let Some(lock) = cx.replica.enqueue(space, key, op)? {
            self.run_own_lock(cx, lock);
        }
        Ok(())
    }

    /// Starts the fresh lock `lock`, whose only operation is this coordinator's.
    fn run_own_lock(&mut self, cx: &mut Coordination<'_>, lock: u32) {
        let mut replica_cx = ReplicaContext {
            shared: cx.shared,
            hints: cx.hints,
            writer: cx.writer,
            view: cx.view,
        };
        let start = cx.replica.start(&mut replica_cx, lock);
        if let Start::Refused { ended, more } = start {
            debug_assert!(!more, "a fresh lock holds one operation");
            if let Some(ended) = ended {
                self.key_op_ended(cx, ended);
            }
        }
    }

    /// A key operation of this coordinator's ended under its lock.
    pub(crate) fn key_op_ended(&mut self, cx: &mut Coordination<'_>, ended: Ended) {
        match ended {
            Ended::Mint { request, result } => match result {
                Ok(()) if !cx.shared.sabotage().ack_before_durable => {
                    self.stand_in_minted(cx, request);
                    self.replicate(cx, request)
                }
                Ok(()) => {}
                Err(Failure::Storage(StorageFailure::DiskFull)) if self.hand_on(cx, request) => {}
                Err(failure) => self.fail_write(cx, request, failure.into_request_error()),
            },
            Ended::HintRead { delivery, failed } => {
                if failed {
                    self.remove_request(cx, delivery);
                }
            }
            Ended::Deleted { .. }
            | Ended::HintDeleted
            | Ended::Revived { .. }
            | Ended::ReapKept { .. } => {
                debug_assert!(false, "not a coordinator's operation")
            }
        }
    }

    pub(crate) fn insert_request(
        &mut self,
        cx: &mut Coordination<'_>,
        request: Request,
    ) -> Result<SlotId, RequestError> {
        let bounded = !cfg!(feature = "sabotage") || !cx.shared.sabotage().ignore_request_bound;
        let max = if bounded {
            cx.shared.config.requests_max as usize
        } else {
            usize::MAX
        };
        self.requests.insert(request, max).map_err(|Full| {
            cx.shared.stats.overloaded += 1;
            RequestError::Overloaded("too many requests in flight")
        })
    }

    /// Re-arms `id`'s deadline from its state.
    pub(crate) fn arm(&mut self, id: SlotId) {
        self.requests.arm(id);
    }

    /// Ends `id`, releasing what it holds for peers.
    pub(crate) fn remove_request(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
    ) -> Option<Request> {
        let request = self.requests.remove(id)?;
        match &request {
            Request::Read(read) => {
                for peer in read.quorum.pending() {
                    cx.peers.end_request(peer);
                }
            }
            Request::Write(write) => {
                if let Some(quorum) = &write.quorum {
                    for peer in quorum.pending() {
                        cx.peers.end_request(peer);
                    }
                }
            }
            Request::Forward(forward) => cx.peers.end_request(forward.to),
            Request::Delivery(delivery) => {
                if delivery.sent {
                    cx.peers.end_request(delivery.owner);
                }
                cx.hints.delivery_ended(delivery.owner, &delivery.key);
            }
            Request::Batch(_) => {}
        }
        Some(request)
    }

    // ---- batches --------------------------------------------------------------------

    pub(crate) fn start_batch(
        &mut self,
        cx: &mut Coordination<'_>,
        client: ClientId,
        tag: u64,
        count: usize,
    ) -> Result<SlotId, RequestError> {
        self.insert_request(
            cx,
            Request::Batch(BatchRequest {
                client,
                tag,
                remaining: count as u32,
                count: 0,
                error: None,
            }),
        )
    }

    /// One key of batch `parent` is done: `Ok(n)` adds n to the count.
    pub(crate) fn batch_part_done(
        &mut self,
        cx: &mut Coordination<'_>,
        parent: SlotId,
        result: Result<i64, RequestError>,
    ) {
        let Some(Request::Batch(batch)) = self.requests.get_mut(parent) else {
            return;
        };
        batch.remaining = batch.remaining.saturating_sub(1);
        match result {
            Ok(count) => batch.count += count,
            Err(error) => {
                batch.error.get_or_insert(error);
            }
        }
        if batch.remaining > 0 {
            return;
        }
        let Some(Request::Batch(batch)) = self.remove_request(cx, parent) else {
            return;
        };
        let outcome = match batch.error {
            Some(error) => Err(error),
            None => Ok(batch.count),
        };
        reply_integer(cx.shared, batch.client, batch.tag, outcome);
    }

    // ---- deadlines ------------------------------------------------------------------

    pub(crate) fn request_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        match self.requests.get(id) {
            Some(Request::Read(_)) => self.read_deadline(cx, id),
            Some(Request::Write(_)) => self.write_deadline(cx, id),
            Some(Request::Forward(_)) => self.forward_deadline(cx, id),
            Some(Request::Delivery(_)) => self.delivery_deadline(cx, id),
            // A batch arms no deadline, and an ended request's deadline is cleared.
            Some(Request::Batch(_)) | None => debug_assert!(false, "no deadline for {id:?}"),
        }
    }

    // ---- replies --------------------------------------------------------------------

    /// Replies to a read's requester.
    pub(crate) fn finish_read(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        kind: ReadKind,
        result: Result<&VersionSet, RequestError>,
    ) {
        match reply {
            ReplyTo::Client {
                client,
                tag,
                received_at,
            } => {
                cx.foreground.record(cx.shared.now, received_at);
                reply_with(cx.shared, client, tag, false, |out| match result {
                    Err(error) => write_error(out, &error.to_string()),
                    Ok(merged) => write_read(out, kind, merged),
                })
            }
            ReplyTo::Batch { parent } => {
                let exists = result.map(|merged| i64::from(holds_value(merged)));
                self.batch_part_done(cx, parent, exists);
            }
            // Reads are never forwarded.
            ReplyTo::Peer { .. } => {}
        }
    }

    /// Replies to a write's requester: `Ok((context token, whether a replica held a
    /// value before))` or the error.
    pub(crate) fn finish_write(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        reply_context: bool,
        result: Result<(&str, bool), RequestError>,
    ) {
        match reply {
            ReplyTo::Client {
                client,
                tag,
                received_at,
            } => {
                cx.foreground.record(cx.shared.now, received_at);
                reply_with(cx.shared, client, tag, false, |out| match result {
                    Err(error) => write_error(out, &error.to_string()),
                    Ok((token, _)) if reply_context => write_bulk(out, token.as_bytes()),
                    Ok(_) => write_simple(out, "OK"),
                })
            }
            // DEL counts the keys that existed (Redis's reply): a key whose write a
            // replica acknowledged after holding a value. With R + W > N among the
            // writes, a key written before is seen; like a read, a lower W can miss it.
            ReplyTo::Batch { parent } => {
                let existed = result.map(|(_, existed)| i64::from(existed));
                self.batch_part_done(cx, parent, existed)
            }
            ReplyTo::Peer { peer, request } => {
                let (status, token, held_value) = match result {
                    Ok((token, existed)) => (crate::wire::ReplicaStatus::Ok, token, existed),
                    Err(RequestError::Overloaded(_)) => {
                        (crate::wire::ReplicaStatus::Overloaded, "", false)
                    }
                    Err(_) => (crate::wire::ReplicaStatus::StorageFailed, "", false),
                };
                cx.shared.send(
                    peer,
                    &Message::ForwardPutReply {
                        request,
                        status,
                        context: token.as_bytes(),
                        held_value,
                    },
                );
            }
        }
    }
}

/// The first N healthy nodes of `partition`'s extended list.
fn first_healthy(
    ring: &Ring,
    partition: usize,
    healthy: impl Fn(NodeId) -> bool,
) -> SmallVec<[NodeId; 8]> {
    ring.extended_list(partition)
        .filter(|&node| healthy(node))
        .take(ring.replicas())
        .collect()
}

/// Writes a reply for `client`'s request `tag`.
pub(crate) fn reply_with(
    shared: &mut Shared,
    client: ClientId,
    tag: u64,
    close: bool,
    write: impl FnOnce(&mut Vec<u8>),
) {
    // A refused reply leaves the client waiting for its own timeout; it is counted
    // in `actions_refused` and cannot happen while the shell drains after each call.
    let _ = shared.actions.reply(client, tag, close, write);
}

/// The quorum a request asked for (or `default`), refused outside 1..=N.
pub(crate) fn check_quorum(
    shared: &Shared,
    requested: Option<u8>,
    default: u8,
) -> Result<u8, RequestError> {
    let quorum = requested.unwrap_or(default);
    if quorum == 0 || quorum > shared.config.replicas {
        return Err(RequestError::QuorumOutOfRange {
            requested: quorum,
            replicas: shared.config.replicas,
        });
    }
    Ok(quorum)
}

/// Replies an integer (or the error) to `client`'s request `tag`.
pub(crate) fn reply_integer(
    shared: &mut Shared,
    client: ClientId,
    tag: u64,
    result: Result<i64, RequestError>,
) {
    reply_with(shared, client, tag, false, |out| match result {
        Ok(count) => write_integer(out, count),
        Err(error) => write_error(out, &error.to_string()),
    });
}
