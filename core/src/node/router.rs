//! The node's router: every peer message and every storage completion goes to the
//! concern that owns it, and nothing else happens here.
//!
//! A peer message is routed by its kind (and, for the answers several concerns share,
//! by who owns the request id); a storage completion by the task its token names in
//! the task registry (`tasks.rs`).

use super::requests::Request;
use super::storage::Completion;
use super::tasks::Task;
use super::{Node, StorageFailure};
use crate::slab::SlotId;
use crate::version::NodeId;
use crate::wire::{Message, ReplicaStatus};

impl Node {
    /// Routes one message from a peer.
    pub(crate) fn peer_message(&mut self, from: NodeId, message: Message<'_>) {
        if from == self.shared.id {
            return;
        }
        // Gossip is how strangers become members; everything else needs a member.
        match message {
            Message::Gossip { members } => return self.gossip_received(from, &members, true),
            Message::GossipReply { members } => {
                return self.gossip_received(from, &members, false);
            }
            _ => {}
        }
        if self.peers.get(from).is_none() {
            return;
        }
        self.peers.alive(from, self.shared.now);
        match message {
            Message::Ping { nonce } => {
                self.shared.send(from, &Message::Pong { nonce });
            }
            Message::ReplicaGet { .. }
            | Message::ReplicaPut { .. }
            | Message::ForwardPut { .. } => self.replica_message(from, message),
            Message::ReplicaGetReply { .. }
            | Message::ReplicaPutReply { .. }
            | Message::ForwardPutReply { .. } => self.answer(from, message),
            Message::TreeHashes { .. } | Message::KeyHashes { .. } => {
                self.entropy
                    .handle_message(&mut self.shared, &self.view, from, message)
            }
            Message::HandoffOffer { .. }
            | Message::HandoffNeed { .. }
            | Message::ReapQuery { .. }
            | Message::ReapStatus { .. }
            | Message::ReapKeys { .. } => self.background_message(from, message),
            Message::Hello { .. }
            | Message::Pong { .. }
            | Message::Gossip { .. }
            | Message::GossipReply { .. } => {}
        }
    }

    /// An answer to a request of this node's: to the coordinator, hint delivery or
    /// handoff, whichever owns the request id.
    fn answer(&mut self, from: NodeId, message: Message<'_>) {
        match message {
            Message::ReplicaGetReply {
                request,
                status,
                versions,
            } => {
                let found = match status {
                    ReplicaStatus::Ok => Ok(Some(versions)),
                    ReplicaStatus::NotFound => Ok(None),
                    ReplicaStatus::StorageFailed | ReplicaStatus::Overloaded => Err(()),
                };
                let answer = self.decode_answer(found);
                self.read_answer(SlotId::from_u64(request), from, answer);
            }
            Message::ReplicaPutReply {
                request,
                status,
                held_value,
            } => {
                if self.handoffs.owns_request(request) {
                    return self.handoff_ack(from, request, status);
                }
                let id = SlotId::from_u64(request);
                match self.requests.get(id) {
                    Some(Request::Write(_)) => self.write_answer(id, from, status, held_value),
                    Some(Request::Delivery(_)) => self.delivery_answer(id, from, status),
                    _ => {}
                }
            }
            Message::ForwardPutReply {
                request,
                status,
                context,
                held_value,
            } => self.forward_answer(SlotId::from_u64(request), from, status, context, held_value),
            _ => debug_assert!(false, "not an answer: {message:?}"),
        }
    }

    /// Handoff's and reaping's messages (a reaping node's offer reuses the handoff
    /// exchange, told apart by its request id).
    fn background_message(&mut self, from: NodeId, message: Message<'_>) {
        match message {
            Message::HandoffOffer {
                request,
                partition,
                bucket,
                keys,
            } => self.handoff_offer(from, request, partition, bucket, &keys),
            Message::HandoffNeed { request, wanted } if self.reaper.owns_request(request) => {
                self.reap_need(from, request, &wanted)
            }
            Message::HandoffNeed { request, wanted } => self.handoff_need(from, request, &wanted),
            Message::ReapQuery { request } => self.reap_query(from, request),
            Message::ReapStatus {
                request,
                complete,
                partitions,
            } => self.reap_status(from, request, complete, &partitions),
            Message::ReapKeys { partition, keys } => self.reap_keys(partition, &keys),
            _ => debug_assert!(false, "not a handoff or reaping message: {message:?}"),
        }
    }

    /// Routes one storage completion to the task that waits for it.
    pub(crate) fn storage_completion(&mut self, completion: Completion) {
        let token = completion.token();
        let Some(&task) = self.shared.tasks.get(token) else {
            return;
        };
        // Every task but a key lock's read step ends with its completion.
        if !matches!(
            (task, &completion),
            (Task::Locked { .. }, Completion::Read { .. })
        ) {
            self.shared.tasks.end(token);
        }
        match (task, completion) {
            (Task::Locked { lock, .. }, Completion::Read { result, .. }) => {
                self.locked_read_done(token, lock, borrowed(&result));
            }
            (Task::Locked { lock, change }, Completion::Written { result, .. }) => {
                self.locked_write_done(lock, change, result);
            }
            (Task::ReplicaRead { peer, request }, Completion::Read { result, .. }) => {
                self.replica_read_done(peer, request, borrowed(&result));
            }
            (Task::LocalRead { request }, Completion::Read { result, .. }) => {
                let answer = self.decode_answer(borrowed(&result).map_err(|_| ()));
                self.read_answer(request, self.shared.id, answer);
            }
            (Task::ListHints, Completion::Listed { result, .. }) => self.hints_listed(result),
            (Task::BuildTrees, Completion::Scanned { result, .. }) => {
                let admitted = self.background_admitted();
                self.entropy.tree_page(&mut self.shared, result, admitted);
            }
            (Task::EntropyScan, Completion::Scanned { result, .. }) => {
                self.entropy.bucket_scanned(&mut self.shared, token, result);
            }
            (Task::LoadWriter, Completion::Read { result, .. }) => {
                let result = borrowed(&result);
                self.writer.loaded(&mut self.shared, &self.view, result);
            }
            (Task::StoreWriter, Completion::Written { result, .. }) => {
                if self.writer.stored(result) {
                    self.resume_handoff();
                    self.writer.store(&mut self.shared);
                }
            }
            (Task::HandoffPage, Completion::Scanned { result, .. }) => self.handoff_page(result),
            (Task::ReapPage, Completion::Scanned { result, .. }) => self.reap_page(result),
            (Task::OfferScan, Completion::Scanned { result, .. }) => {
                self.offer_scanned(token, result);
            }
            // A completion of the wrong kind for its token: a shell bug. The task is
            // gone, so nothing waits on it forever.
            (task, completion) => {
                debug_assert!(false, "{completion:?} cannot end {task:?}");
                if let Task::Locked { lock, .. } = task {
                    self.finish_locked(lock, Err(StorageFailure::Io));
                }
            }
        }
    }
}

/// A read's result with its record borrowed.
fn borrowed(
    result: &Result<Option<Vec<u8>>, StorageFailure>,
) -> Result<Option<&[u8]>, StorageFailure> {
    result
        .as_ref()
        .map(Option::as_deref)
        .map_err(|failure| *failure)
}
