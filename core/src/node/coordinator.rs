//! Coordinating requests: reads over R of the first N healthy nodes, writes minted by a
//! replica and sent to N targets with stand-ins for the unreachable, forwarding from a
//! non-replica, multi-key batches, and the per-request deadlines that drive timeouts,
//! stand-in replacement and read repair.

use super::actions::ClientId;
use super::hints::hint_key;
use super::key_ops::KeyOp;
use super::read_reply::{ReadKind, write_read};
use super::request_id::{self, NO_REQUEST};
use super::requests::{
    BatchRequest, ForwardRequest, Full, ReadRequest, ReplyTo, Request, WriteRequest, WriteSpec,
};
use super::storage::Space;
use super::tasks::Task;
use super::{Node, RequestError};
use crate::placement::Ring;
use crate::quorum::{Progress, ReadQuorum, WriteQuorum};
use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::{NodeId, VersionSet, VersionVector};
use crate::wire::{Message, ReplicaStatus};
use core::time::Duration;
use smallvec::SmallVec;

/// Targets of a write: (node, owner it stands in for).
type Targets = SmallVec<[(NodeId, Option<NodeId>); 8]>;

impl Node {
    fn deadline_after(&self, milliseconds: u64) -> Instant {
        self.shared.now + Duration::from_millis(milliseconds)
    }

    pub(crate) fn insert_request(&mut self, request: Request) -> Result<SlotId, RequestError> {
        let bounded = !cfg!(feature = "sabotage") || !self.shared.sabotage().ignore_request_bound;
        let max = if bounded {
            self.shared.config.requests_max as usize
        } else {
            usize::MAX
        };
        self.requests.insert(request, max).map_err(|Full| {
            self.shared.stats.overloaded += 1;
            RequestError::Overloaded("too many requests in flight")
        })
    }

    /// Re-arms `id`'s deadline from its state.
    pub(crate) fn arm(&mut self, id: SlotId) {
        self.requests.arm(id);
    }

    /// Ends `id`, releasing what it holds for peers.
    pub(crate) fn remove_request(&mut self, id: SlotId) -> Option<Request> {
        let request = self.requests.remove(id)?;
        match &request {
            Request::Read(read) => {
                for peer in read.quorum.pending() {
                    self.peers.end_request(peer);
                }
            }
            Request::Write(write) => {
                if let Some(quorum) = &write.quorum {
                    for peer in quorum.pending() {
                        self.peers.end_request(peer);
                    }
                }
            }
            Request::Forward(forward) => self.peers.end_request(forward.to),
            Request::Delivery(delivery) => {
                if delivery.sent {
                    self.peers.end_request(delivery.owner);
                }
                self.hints.delivery_ended(delivery.owner, &delivery.key);
            }
            Request::Batch(_) => {}
        }
        Some(request)
    }

    pub(crate) fn check_quorum(
        &self,
        requested: Option<u8>,
        default: u8,
    ) -> Result<u8, RequestError> {
        let quorum = requested.unwrap_or(default);
        if quorum == 0 || quorum > self.shared.config.replicas {
            return Err(RequestError::QuorumOutOfRange {
                requested: quorum,
                replicas: self.shared.config.replicas,
            });
        }
        Ok(quorum)
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

    // ---- reads ----------------------------------------------------------------------

    pub(crate) fn start_read(
        &mut self,
        reply: ReplyTo,
        kind: ReadKind,
        key: &[u8],
        read_quorum: u8,
    ) {
        self.shared.stats.reads_coordinated += 1;
        let partition = self.view.ring.partition_of(key);
        let targets = self.read_targets(partition);
        let quorum = match ReadQuorum::new(targets.iter().copied(), usize::from(read_quorum)) {
            Ok(quorum) => quorum,
            Err(_) => {
                return self.finish_read(
                    reply,
                    kind,
                    Err(RequestError::QuorumUnreachable {
                        operation: "read",
                        required: read_quorum,
                    }),
                );
            }
        };
        let request = Request::Read(ReadRequest {
            reply,
            kind,
            key: key.to_vec(),
            partition,
            quorum,
            required: read_quorum,
            replied: false,
            attempt_at: self.deadline_after(self.shared.config.replica_timeout_ms),
            final_at: self.deadline_after(self.shared.config.request_timeout_ms),
        });
        let id = match self.insert_request(request) {
            Ok(id) => id,
            Err(error) => return self.finish_read(reply, kind, Err(error)),
        };
        for target in targets {
            self.ask_for_read(id, target);
        }
        self.read_progress(id);
    }

    /// Sends (or, for this node, reads locally) one replica's part of read `id`.
    fn ask_for_read(&mut self, id: SlotId, target: NodeId) {
        let Some(Request::Read(read)) = self.requests.held(id) else {
            return;
        };
        if target == self.shared.id {
            let task = Task::LocalRead { request: id };
            let started =
                self.shared
                    .tasks
                    .start(task, &mut self.shared.actions, |actions, token| {
                        actions.read(token, Space::Data, &read.key)
                    });
            if started.is_none() {
                self.read_failed(id, target);
            }
            return;
        }
        if !self.peers.begin_request(target) {
            return self.read_failed(id, target);
        }
        let sent = self.shared.actions.send(
            target,
            self.shared.config.cluster_id,
            &Message::ReplicaGet {
                request: request_id::coordinator(id),
                key: &read.key,
            },
        );
        if sent.is_err() {
            self.peers.end_request(target);
            self.read_failed(id, target);
        }
    }

    fn read_failed(&mut self, id: SlotId, node: NodeId) {
        if let Some(Request::Read(read)) = self.requests.get_mut(id) {
            read.quorum.record_failure(node);
        }
    }

    /// `node` answered read `id` (`None` versions: it has nothing; `Err`: it failed).
    pub(crate) fn read_answer(
        &mut self,
        id: SlotId,
        node: NodeId,
        answer: Result<Option<VersionSet>, ()>,
    ) {
        let Some(Request::Read(read)) = self.requests.get_mut(id) else {
            return;
        };
        if !read.quorum.is_pending(node) {
            return;
        }
        if node != self.shared.id {
            self.peers.end_request(node);
        }
        match answer {
            Ok(versions) => read.quorum.record_answer(node, versions),
            Err(()) => read.quorum.record_failure(node),
        };
        self.read_progress(id);
    }

    fn read_progress(&mut self, id: SlotId) {
        let Some(Request::Read(read)) = self.requests.held_mut(id) else {
            return;
        };
        let progress = read.quorum.progress();
        let settled = read.quorum.pending().next().is_none();
        match progress {
            Progress::Reached if !read.replied => {
                read.replied = true;
                read.attempt_at = self.shared.now
                    + Duration::from_millis(self.shared.config.read_repair_window_ms);
                match read.reply {
                    // Written straight from the quorum's merge: no copy of the versions.
                    ReplyTo::Client {
                        client,
                        tag,
                        received_at,
                    } => {
                        self.foreground.record(self.shared.now, received_at);
                        let (kind, merged) = (read.kind, read.quorum.merged());
                        let _ = self
                            .shared
                            .actions
                            .reply(client, tag, false, |out| write_read(out, kind, merged));
                    }
                    reply => {
                        let (kind, merged) = (read.kind, read.quorum.merged().clone());
                        self.finish_read(reply, kind, Ok(&merged));
                    }
                }
                if settled {
                    self.end_read(id);
                } else {
                    self.arm(id);
                }
            }
            Progress::Reached if settled => self.end_read(id),
            Progress::Unreachable => {
                if !read.replied {
                    let (reply, kind, required) = (read.reply, read.kind, read.required);
                    self.finish_read(
                        reply,
                        kind,
                        Err(RequestError::QuorumUnreachable {
                            operation: "read",
                            required,
                        }),
                    );
                }
                self.end_read(id);
            }
            _ => {}
        }
    }

    /// Ends read `id`, sending read repair to the replicas that answered with less.
    fn end_read(&mut self, id: SlotId) {
        let Some(Request::Read(read)) = self.remove_request(id) else {
            debug_assert!(false, "read {id:?} ended twice");
            return;
        };
        if !read.replied || self.shared.sabotage().skip_repair {
            return;
        }
        let merged = read.quorum.merged();
        let stale: SmallVec<[NodeId; 8]> = read
            .quorum
            .stale_replicas()
            .filter(|&node| {
                self.view
                    .ring
                    .preference_list(read.partition)
                    .any(|replica| replica == node)
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        self.shared.scratch.clear();
        merged.encode(&mut self.shared.scratch);
        let versions = std::mem::take(&mut self.shared.scratch);
        for node in stale {
            self.shared.stats.read_repairs_sent += 1;
            if node == self.shared.id {
                // Refused when this key's lock queue is full: the next read repairs it.
                let _ = self.merge_locally(&read.key, merged.clone(), None, None);
                continue;
            }
            self.shared.send(
                node,
                &Message::ReplicaPut {
                    request: NO_REQUEST,
                    key: &read.key,
                    versions: &versions,
                    hint: None,
                },
            );
        }
        self.shared.scratch = versions;
    }

    fn read_deadline(&mut self, id: SlotId) {
        let now = self.shared.now;
        let Some(Request::Read(read)) = self.requests.held_mut(id) else {
            return;
        };
        if read.replied {
            // The read-repair window is over.
            return self.end_read(id);
        }
        if now >= read.final_at {
            self.shared.stats.requests_timed_out += 1;
            let (reply, kind, required) = (read.reply, read.kind, read.required);
            self.finish_read(
                reply,
                kind,
                Err(RequestError::QuorumTimeout {
                    operation: "read",
                    required,
                }),
            );
            self.remove_request(id);
            return;
        }
        // Replica timeout: suspect the silent ones and ask the next healthy nodes.
        let partition = read.partition;
        let silent: SmallVec<[NodeId; 8]> = read.quorum.pending().collect();
        read.attempt_at = now + Duration::from_millis(self.shared.config.replica_timeout_ms);
        for node in silent {
            self.peers.timed_out(node, now);
            self.peers.end_request(node);
            let Some(Request::Read(read)) = self.requests.held(id) else {
                return;
            };
            match self.next_stand_in(partition, read.quorum.targets()) {
                Some(stand_in) => {
                    if let Some(Request::Read(read)) = self.requests.get_mut(id) {
                        read.quorum.replace(node, stand_in);
                    }
                    self.ask_for_read(id, stand_in);
                }
                None => self.read_failed(id, node),
            }
        }
        self.arm(id);
        self.read_progress(id);
    }

    // ---- writes ---------------------------------------------------------------------

    /// A client's (or batch's) write of `key`.
    pub(crate) fn start_write(
        &mut self,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        spec: WriteSpec,
    ) {
        let partition = self.view.ring.partition_of(key);
        if self
            .view
            .ring
            .preference_list(partition)
            .any(|node| node == self.shared.id)
        {
            return self.coordinate_write(reply, reply_context, key, spec, None);
        }
        let first_healthy = self
            .view
            .ring
            .preference_list(partition)
            .find(|&node| self.peers.is_up(node));
        match first_healthy {
            Some(replica) => {
                self.forward_write(reply, reply_context, key, partition, spec, replica)
            }
            None if self.shared.sabotage().strict_quorum => {
                let required = spec.write_quorum;
                let error = RequestError::QuorumUnreachable {
                    operation: "write",
                    required,
                };
                self.finish_write(reply, reply_context, Err(error))
            }
            None => {
                let owner = self.view.ring.preference_list(partition).next();
                self.coordinate_write(reply, reply_context, key, spec, owner)
            }
        }
    }

    /// Mints and replicates a write here: as a replica (`local_owner` None) or as a
    /// stand-in for `local_owner`.
    pub(crate) fn coordinate_write(
        &mut self,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        spec: WriteSpec,
        local_owner: Option<NodeId>,
    ) {
        self.shared.stats.writes_coordinated += 1;
        if local_owner.is_some() && !self.hints.reserve() {
            self.shared.stats.overloaded += 1;
            let error = RequestError::Overloaded("too many hints held");
            return self.finish_write(reply, reply_context, Err(error));
        }
        let partition = self.view.ring.partition_of(key);
        let writer = match local_owner {
            None => self
                .writer
                .writer_for(&mut self.shared, &self.view, partition),
            Some(_) => {
                self.shared.stats.stand_in_writes += 1;
                NodeId(super::STAND_IN_WRITER_BIT | (self.shared.rng.next_u64() >> 1))
            }
        };
        let write_quorum = spec.write_quorum;
        let request = Request::Write(WriteRequest {
            reply,
            reply_context,
            key: key.to_vec(),
            partition,
            writer,
            local_owner,
            spec: Some(spec),
            versions: Vec::new(),
            context: VersionVector::new(),
            write_quorum,
            quorum: None,
            stand_ins: SmallVec::new(),
            replied: false,
            existed: false,
            attempt_at: Instant::MAX,
            final_at: self.deadline_after(self.shared.config.request_timeout_ms),
        });
        let id = match self.insert_request(request) {
            Ok(id) => id,
            Err(error) => {
                if local_owner.is_some() {
                    self.hints.unreserve();
                }
                return self.finish_write(reply, reply_context, Err(error));
            }
        };
        let space = match local_owner {
            None => {
                self.shared.scratch.clear();
                self.shared.scratch.extend_from_slice(key);
                Space::Data
            }
            Some(owner) => {
                hint_key(owner, key, &mut self.shared.scratch);
                Space::Hints
            }
        };
        let storage_key = std::mem::take(&mut self.shared.scratch);
        let queued = self.enqueue_key_op(space, &storage_key, KeyOp::Mint { request: id });
        self.shared.scratch = storage_key;
        if queued.is_err() {
            if local_owner.is_some() {
                self.hints.unreserve();
            }
            self.fail_write(id, RequestError::Overloaded("too many keys being written"));
        }
    }

    /// The minted write `id` is durable here: send it to the other targets.
    pub(crate) fn replicate(&mut self, id: SlotId) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        let targets = self.write_targets(write.partition, write.local_owner);
        let required = write.write_quorum;
        let quorum = WriteQuorum::new(targets.iter().map(|&(node, _)| node), usize::from(required));
        let Ok(mut quorum) = quorum else {
            return self.fail_write(
                id,
                RequestError::QuorumUnreachable {
                    operation: "write",
                    required,
                },
            );
        };
        quorum.record_ack(self.shared.id);
        let attempt_at = self.deadline_after(self.shared.config.replica_timeout_ms);
        if let Some(Request::Write(write)) = self.requests.get_mut(id) {
            write.quorum = Some(quorum);
            write.attempt_at = attempt_at;
            for &(node, owner) in &targets {
                if let Some(owner) = owner.filter(|_| node != self.shared.id) {
                    write.stand_ins.push((node, owner));
                }
            }
        }
        for (node, owner) in targets {
            if node != self.shared.id {
                self.send_write(id, node, owner);
            }
        }
        self.arm(id);
        self.write_progress(id);
    }

    /// Sends write `id`'s versions to `node` (a stand-in for `owner` when Some).
    fn send_write(&mut self, id: SlotId, node: NodeId, owner: Option<NodeId>) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        if !self.peers.begin_request(node) {
            return self.write_target_failed(id, node);
        }
        let sent = self.shared.actions.send(
            node,
            self.shared.config.cluster_id,
            &Message::ReplicaPut {
                request: request_id::coordinator(id),
                key: &write.key,
                versions: &write.versions,
                hint: owner,
            },
        );
        if sent.is_err() {
            self.peers.end_request(node);
            self.write_target_failed(id, node);
        }
    }

    /// `node` acknowledged write `id` durable (or refused it); `held_value`: it held a
    /// value before.
    pub(crate) fn write_answer(
        &mut self,
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
        self.peers.end_request(node);
        if status == ReplicaStatus::Ok {
            write.existed |= held_value;
            quorum.record_ack(node);
            self.write_progress(id);
        } else {
            self.write_target_failed(id, node);
        }
    }

    /// `node` will not acknowledge write `id`: ask a stand-in in its place, or count it
    /// failed when none is left.
    fn write_target_failed(&mut self, id: SlotId, node: NodeId) {
        let Some(Request::Write(write)) = self.requests.get(id) else {
            return;
        };
        let Some(quorum) = write.quorum.as_ref() else {
            return;
        };
        let owner = write
            .stand_ins
            .iter()
            .find(|(stand_in, _)| *stand_in == node)
            .map_or(node, |&(_, owner)| owner);
        let mut taken: SmallVec<[NodeId; 8]> = quorum.targets().iter().copied().collect();
        if let Some(owner) = write.local_owner {
            taken.push(owner);
        }
        let stand_in = self.next_stand_in(write.partition, &taken);
        // A preference-list member that was not a target (it was down when the write
        // began) takes the write as its own copy, not as a hint for another owner.
        let is_owner = stand_in.is_some_and(|stand_in| {
            self.view
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
                self.send_write(id, stand_in, None);
            }
            Some(stand_in) => {
                quorum.replace(node, stand_in);
                write.stand_ins.push((stand_in, owner));
                self.send_write(id, stand_in, Some(owner));
            }
            None => {
                quorum.record_failure(node);
            }
        }
        self.write_progress(id);
    }

    fn write_progress(&mut self, id: SlotId) {
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
                self.finish_write(reply, reply_context, Ok((&token, existed)));
                if settled {
                    self.remove_request(id);
                }
            }
            Progress::Reached if settled => {
                self.remove_request(id);
            }
            Progress::Unreachable => {
                let required = write.write_quorum;
                self.fail_write(
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
    pub(crate) fn fail_write(&mut self, id: SlotId, error: RequestError) {
        let Some(Request::Write(write)) = self.remove_request(id) else {
            return;
        };
        if !write.replied {
            self.finish_write(write.reply, write.reply_context, Err(error));
        }
    }

    /// The minted versions of write `id`, kept for sending: `versions` encoded,
    /// `context` their join.
    pub(crate) fn write_minted(&mut self, id: SlotId, context: VersionVector) {
        if let Some(Request::Write(write)) = self.requests.get_mut(id) {
            write.context = context;
        }
    }

    fn write_deadline(&mut self, id: SlotId) {
        let now = self.shared.now;
        let Some(Request::Write(write)) = self.requests.get_mut(id) else {
            return;
        };
        if now >= write.final_at {
            if !write.replied {
                self.shared.stats.requests_timed_out += 1;
            }
            let required = write.write_quorum;
            return self.fail_write(
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
        write.attempt_at = now + Duration::from_millis(self.shared.config.replica_timeout_ms);
        for node in silent {
            self.peers.timed_out(node, now);
            self.peers.end_request(node);
            self.write_target_failed(id, node);
        }
        self.arm(id);
    }

    // ---- forwarding -----------------------------------------------------------------

    fn forward_write(
        &mut self,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        partition: usize,
        spec: WriteSpec,
        to: NodeId,
    ) {
        self.shared.stats.writes_forwarded += 1;
        let request = Request::Forward(ForwardRequest {
            reply,
            reply_context,
            key: key.to_vec(),
            partition,
            spec,
            to,
            tried: SmallVec::new(),
            attempt_at: Instant::MAX,
            final_at: self.deadline_after(self.shared.config.request_timeout_ms),
        });
        match self.insert_request(request) {
            Ok(id) => self.send_forward(id, to),
            Err(error) => self.finish_write(reply, reply_context, Err(error)),
        }
    }

    fn send_forward(&mut self, id: SlotId, to: NodeId) {
        let attempt_at = self.deadline_after(self.shared.config.replica_timeout_ms);
        let Some(Request::Forward(forward)) = self.requests.get_mut(id) else {
            return;
        };
        forward.to = to;
        forward.tried.push(to);
        forward.attempt_at = attempt_at;
        let started = self.peers.begin_request(to);
        let token = forward.spec.context.as_ref().map(VersionVector::to_token);
        let sent = started
            && self
                .shared
                .actions
                .send(
                    to,
                    self.shared.config.cluster_id,
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
                self.peers.end_request(to);
            }
            self.forward_failed(id);
        }
    }

    /// The replica a write was forwarded to answered.
    pub(crate) fn forward_answer(
        &mut self,
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
            self.peers.end_request(from);
            if let Some(Request::Forward(forward)) = self.requests.get_mut(id) {
                forward.to = self.shared.id;
            }
            return self.forward_failed(id);
        }
        let Some(Request::Forward(forward)) = self.remove_request(id) else {
            return;
        };
        if status != ReplicaStatus::Ok {
            // The replica may have minted and stored the write before failing: trying
            // another replica could mint it a second time under another dot.
            let error = RequestError::ForwardFailed;
            return self.finish_write(forward.reply, forward.reply_context, Err(error));
        }
        match core::str::from_utf8(context) {
            Ok(token) => self.finish_write(
                forward.reply,
                forward.reply_context,
                Ok((token, held_value)),
            ),
            Err(_) => self.finish_write(
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
    fn forward_failed(&mut self, id: SlotId) {
        let Some(Request::Forward(forward)) = self.requests.get(id) else {
            return;
        };
        let next = self
            .view
            .ring
            .preference_list(forward.partition)
            .find(|&node| self.peers.is_up(node) && !forward.tried.contains(&node));
        if let Some(next) = next {
            if let Some(Request::Forward(forward)) = self.requests.get_mut(id) {
                forward.to = next;
            }
            return self.send_forward(id, next);
        }
        let Some(Request::Forward(forward)) = self.remove_request(id) else {
            return;
        };
        let owner = self.view.ring.preference_list(forward.partition).next();
        self.coordinate_write(
            forward.reply,
            forward.reply_context,
            &forward.key,
            forward.spec,
            owner,
        );
    }

    fn forward_deadline(&mut self, id: SlotId) {
        let now = self.shared.now;
        let Some(Request::Forward(forward)) = self.requests.get_mut(id) else {
            return;
        };
        if now < forward.final_at {
            // Silent past the replica timeout: evidence against the replica, so later
            // writes go elsewhere; this one keeps waiting (it is never retried).
            forward.attempt_at = Instant::MAX;
            let to = forward.to;
            self.peers.timed_out(to, now);
            return self.arm(id);
        }
        let Some(Request::Forward(forward)) = self.remove_request(id) else {
            return;
        };
        self.shared.stats.requests_timed_out += 1;
        self.peers.timed_out(forward.to, self.shared.now);
        let required = forward.spec.write_quorum;
        self.finish_write(
            forward.reply,
            forward.reply_context,
            Err(RequestError::QuorumTimeout {
                operation: "write",
                required,
            }),
        );
    }

    // ---- batches --------------------------------------------------------------------

    pub(crate) fn start_batch(
        &mut self,
        client: ClientId,
        tag: u64,
        count: usize,
    ) -> Result<SlotId, RequestError> {
        self.insert_request(Request::Batch(BatchRequest {
            client,
            tag,
            remaining: count as u32,
            count: 0,
            error: None,
        }))
    }

    /// One key of batch `parent` is done: `Ok(n)` adds n to the count.
    pub(crate) fn batch_part_done(&mut self, parent: SlotId, result: Result<i64, RequestError>) {
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
        let Some(Request::Batch(batch)) = self.remove_request(parent) else {
            return;
        };
        let outcome = match batch.error {
            Some(error) => Err(error),
            None => Ok(batch.count),
        };
        self.reply_integer(batch.client, batch.tag, outcome);
    }

    // ---- deadlines ------------------------------------------------------------------

    pub(crate) fn request_deadline(&mut self, id: SlotId) {
        match self.requests.get(id) {
            Some(Request::Read(_)) => self.read_deadline(id),
            Some(Request::Write(_)) => self.write_deadline(id),
            Some(Request::Forward(_)) => self.forward_deadline(id),
            Some(Request::Delivery(_)) => self.delivery_deadline(id),
            // A batch arms no deadline, and an ended request's deadline is cleared.
            Some(Request::Batch(_)) | None => debug_assert!(false, "no deadline for {id:?}"),
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
