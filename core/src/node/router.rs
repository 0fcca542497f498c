//! The node's router: every peer message and every storage completion goes to the
//! concern that owns it, and nothing else happens here.
//!
//! A peer message is routed by its kind (and, for the answers several concerns share,
//! by who owns the request id); a storage completion by the task its token names in
//! the task registry (`tasks.rs`).

use super::coordinator::coordination;
use super::key_ops::DeleteCause;
use super::replica::{
    Ended, Failure, ReadStep, Replica, Start, Step, decode_answer, hints_listed, replica_context,
};
use super::request_id::NO_REQUEST;
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
                self.gossip_received(from, &members, false);
                return self.peers.answered(from, self.shared.now);
            }
            _ => {}
        }
        if self.peers.get(from).is_none() || self.refused_as_left(from, &message) {
            return;
        }
        let answer = matches!(
            message,
            Message::Pong { .. }
                | Message::ReplicaGetReply { .. }
                | Message::ReplicaPutReply { .. }
                | Message::ForwardPutReply { .. }
        );
        self.peers.alive(from, self.shared.now);
        if answer {
            self.peers.answered(from, self.shared.now);
        }
        match message {
            Message::Ping { nonce } => {
                self.shared.send(from, &Message::Pong { nonce });
            }
            Message::ReplicaGet { request, key } => {
                Replica::read(&mut self.shared, from, request, key);
            }
            Message::ReplicaPut {
                request,
                key,
                versions,
                hint,
                durable,
            } => {
                let (replica, mut cx) = replica_context!(self);
                let stored = (hint, durable);
                if let Some(lock) = replica.write(&mut cx, from, request, key, versions, stored) {
                    self.run_lock(lock);
                }
            }
            Message::ForwardPut { .. } => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.forwarded_write(&mut cx, from, message);
            }
            Message::ReplicaGetReply { .. }
            | Message::ReplicaPutReply { .. }
            | Message::ForwardPutReply { .. } => self.answer(from, message),
            Message::TreeHashes { .. } | Message::KeyHashes { .. } => {
                let (shared, view, owed) = (&mut self.shared, &self.view, &mut self.owed);
                self.entropy
                    .handle_message(shared, view, owed, from, message)
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

    /// A node that has left refuses the requests it would answer as a replica (a peer
    /// whose view is behind may still send them), with `ReplicaStatus::Left`, so that
    /// the peer takes a stand-in or the next replica at once: what it stored now would
    /// be held by a node nobody reads from or hands data to. True when `message` was
    /// such a request or anything else a departed node has no part in.
    fn refused_as_left(&mut self, from: NodeId, message: &Message<'_>) -> bool {
        if !self.view.has_left() {
            return false;
        }
        let status = ReplicaStatus::Left;
        match *message {
            Message::ReplicaGet { request, .. } => {
                let versions = &[][..];
                let reply = Message::ReplicaGetReply {
                    request,
                    status,
                    versions,
                };
                self.shared.send(from, &reply);
                true
            }
            Message::ReplicaPut { request, .. } if request != NO_REQUEST => {
                let held_value = false;
                let reply = Message::ReplicaPutReply {
                    request,
                    status,
                    held_value,
                };
                self.shared.send(from, &reply);
                true
            }
            Message::ForwardPut { request, .. } => {
                let (context, held_value) = (&[][..], false);
                let reply = Message::ForwardPutReply {
                    request,
                    status,
                    context,
                    held_value,
                };
                self.shared.send(from, &reply);
                true
            }
            Message::ReplicaPut { .. }
            | Message::HandoffOffer { .. }
            | Message::TreeHashes { .. }
            | Message::KeyHashes { .. } => true,
            _ => false,
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
                    ReplicaStatus::StorageFailed
                    | ReplicaStatus::Overloaded
                    | ReplicaStatus::DiskFull
                    | ReplicaStatus::Left => {
                        // A read at R = N fails on one such answer ("cannot reach").
                        log::debug!(
                            "node {}: peer {} answered read {request} with {status:?}",
                            self.shared.id.0,
                            from.0
                        );
                        Err(())
                    }
                };
                let answer = decode_answer(&self.shared, found);
                if found.is_ok() && answer.is_err() {
                    log::warn!(
                        "node {}: peer {} answered read {request} with versions that do not decode",
                        self.shared.id.0,
                        from.0
                    );
                }
                let (coordinator, mut cx) = coordination!(self);
                coordinator.read_answer(&mut cx, SlotId::from_u64(request), from, answer);
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
                let (coordinator, mut cx) = coordination!(self);
                match coordinator.requests.get(id) {
                    Some(Request::Write(_)) => {
                        coordinator.write_answer(&mut cx, id, from, status, held_value)
                    }
                    Some(Request::Delivery(_)) => {
                        coordinator.delivery_answer(&mut cx, id, from, status)
                    }
                    _ => {}
                }
            }
            Message::ForwardPutReply {
                request,
                status,
                context,
                held_value,
            } => {
                let (coordinator, mut cx) = coordination!(self);
                let id = SlotId::from_u64(request);
                coordinator.forward_answer(&mut cx, id, from, status, context, held_value);
            }
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
            Message::ReapQuery { request, placement } => self.reap_query(from, request, placement),
            Message::ReapStatus {
                request,
                complete,
                partitions,
            } => self.reap_status(from, request, complete, &partitions),
            Message::ReapKeys { partition, keys } => self.reap_keys(partition, &keys),
            _ => debug_assert!(false, "not a handoff or reaping message: {message:?}"),
        }
    }

    /// `peer` is down: writes waiting for its acknowledgement try a stand-in now (a
    /// replica merges a write idempotently, so a second copy is harmless). Forwards
    /// sent to it go to the next replica: as they were when nothing sent in the current
    /// link generation arrived (`undelivered`), as retries when sent on a link that
    /// broke (they may have been minted).
    pub(crate) fn peer_lost(&mut self, peer: NodeId, undelivered: bool) {
        let generation = self.peers.link_generation(peer);
        let (forwards, writes) = self.coordinator.requests.waiting_on(peer, generation);
        let (coordinator, mut cx) = coordination!(self);
        for id in writes {
            coordinator.write_target_lost(&mut cx, id, peer);
        }
        for (id, current_generation) in forwards {
            if current_generation && undelivered {
                coordinator.forward_undelivered(&mut cx, id, peer);
            } else if !current_generation {
                coordinator.forward_lost(&mut cx, id, peer);
            }
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
                let trees = &mut self.entropy.trees;
                self.replica.write_done(trees, lock, change, result);
                self.finish_locked(lock, result);
            }
            (Task::ReplicaRead { peer, request }, Completion::Read { result, .. }) => {
                Replica::peer_read_done(&mut self.shared, peer, request, borrowed(&result));
            }
            (Task::LocalRead { request }, Completion::Read { result, .. }) => {
                let answer = decode_answer(&self.shared, borrowed(&result).map_err(|_| ()));
                let own = self.shared.id;
                let (coordinator, mut cx) = coordination!(self);
                coordinator.read_answer(&mut cx, request, own, answer);
            }
            (Task::ListHints, Completion::Listed { result, .. }) => {
                if let Some(after) = hints_listed(&mut self.hints, result) {
                    self.list_hints(&after);
                }
            }
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
            (Task::LoadView, Completion::Read { result, .. }) => {
                self.view_loaded(borrowed(&result));
            }
            (Task::StoreView, Completion::Written { result, .. }) => {
                if self.view_store.stored(result) {
                    self.view_store.store(&mut self.shared, &self.view);
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
    // ---- the replica's key operations ----------------------------------------------

    /// Queues `op` on a key (`Replica::enqueue`) and starts it when the key is free.
    pub(crate) fn enqueue_key_op(
        &mut self,
        space: super::storage::Space,
        key: &[u8],
        op: super::key_ops::KeyOp,
    ) -> Result<(), super::key_ops::KeyOp> {
        if let Some(lock) = self.replica.enqueue(space, key, op)? {
            self.run_lock(lock);
        }
        Ok(())
    }

    /// Starts `lock`'s running operation; one the storage queues refuse ends as
    /// overloaded (its effects first), and the next waiting one is tried.
    pub(crate) fn run_lock(&mut self, lock: u32) {
        loop {
            let (replica, mut cx) = replica_context!(self);
            let Start::Refused { ended, more } = replica.start(&mut cx, lock) else {
                return;
            };
            if let Some(ended) = ended {
                self.key_op_ended(ended);
            }
            if !more {
                return;
            }
        }
    }

    /// The read step of `lock`'s running operation finished: the replica's own step,
    /// or the coordinator's mint, or a hint's delivery.
    fn locked_read_done(
        &mut self,
        token: u64,
        lock: u32,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        let (replica, mut cx) = replica_context!(self);
        let step = match replica.read_done(&mut cx, token, lock, result) {
            ReadStep::Own(step) => step,
            ReadStep::Mint { request, current } => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.mint_locked(&mut cx, lock, token, request, current)
            }
            ReadStep::DeliverHint { delivery } => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.send_delivery(&mut cx, delivery, result.ok().flatten());
                Step::Done(Ok(()))
            }
        };
        if let Step::Done(result) = step {
            self.shared.tasks.end(token);
            self.finish_locked(lock, result);
        }
    }

    /// `lock`'s running operation is over: its effects, then the next operation.
    fn finish_locked(&mut self, lock: u32, result: Result<(), StorageFailure>) {
        let (replica, mut cx) = replica_context!(self);
        let result = result.map_err(Failure::Storage);
        let Some((ended, more)) = replica.finish(&mut cx, lock, result) else {
            return;
        };
        if let Some(ended) = ended {
            self.key_op_ended(ended);
        }
        if more {
            self.run_lock(lock);
        }
    }

    /// A key operation another concern waits for ended.
    fn key_op_ended(&mut self, ended: Ended) {
        match ended {
            Ended::Mint { .. } | Ended::HintRead { .. } => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.key_op_ended(&mut cx, ended);
            }
            Ended::Deleted { cause, deleted } => match cause {
                DeleteCause::Handoff { serial } => self.handoff_deleted(serial, deleted),
                DeleteCause::Reap => self.reap_deleted(deleted),
            },
            Ended::Revived { partition } => self.reapable_revived(partition),
            Ended::ReapKept { partition } => self.reap_kept(partition),
            // While the node is calm, a hint gone makes room for the next delivery at
            // once instead of at the next round. (Not on the owner's acknowledgement:
            // a hint whose delete fails would be delivered again and again.)
            Ended::HintDeleted => {
                let admission = self.admission();
                let (coordinator, mut cx) = coordination!(self);
                if admission.admits(cx.shared) {
                    coordinator.deliver_hints(&mut cx);
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
