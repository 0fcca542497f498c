//! The replica side: answering peers' reads and writes, the per-key read-modify-write
//! that mints, merges and stores versions, and hint delivery.

use super::entries::{TreeEntry, entry_hash};
use super::hints::{hint_key, parse_hint_key};
use super::key_ops::{DeleteCause, KeyOp};
use super::locks::{Enqueued, LocksFull};
use super::request_id::NO_REQUEST;
use super::requests::{ReplyTo, Request, WriteRequest, WriteSpec};
use super::shared::Shared;
use super::storage::Space;
use super::tasks::{Task, Tasks};
use super::writer::Writer;
use super::{Listing, Node, RequestError, StorageFailure};
use crate::placement::key_hash;
use crate::slab::SlotId;
use crate::version::{Dot, NodeId, Value, VersionSet, VersionVector};
use crate::wire::{Message, ReplicaStatus};
use core::time::Duration;

/// How a key operation's read step ended.
enum Step {
    /// A write or delete was issued; wait for its completion.
    Storing,
    /// Nothing to store: the operation is over.
    Done(Result<(), StorageFailure>),
}

impl Node {
    /// A peer's request to this replica: a read, a write to merge, or a client's write
    /// to mint.
    pub(crate) fn replica_message(&mut self, from: NodeId, message: Message<'_>) {
        match message {
            Message::ReplicaGet { request, key } => self.replica_read(from, request, key),
            Message::ReplicaPut {
                request,
                key,
                versions,
                hint,
            } => self.replica_write(from, request, key, versions, hint),
            Message::ForwardPut {
                request,
                key,
                context,
                plain,
                value,
                timestamp_ms,
                write_quorum,
            } => self.forwarded_write(
                from,
                request,
                key,
                context,
                plain,
                value,
                timestamp_ms,
                write_quorum,
            ),
            _ => debug_assert!(false, "not a replica request: {message:?}"),
        }
    }

    /// One replica's answer to a read, decoded: versions, nothing, or a failure (an
    /// undecodable record counts as a failure, never as "nothing").
    pub(crate) fn decode_answer(
        &self,
        found: Result<Option<&[u8]>, ()>,
    ) -> Result<Option<VersionSet>, ()> {
        match found? {
            Some(bytes) => VersionSet::decode(bytes, self.shared.config.version_bounds)
                .map(Some)
                .map_err(|_| ()),
            None => Ok(None),
        }
    }

    fn replica_read(&mut self, from: NodeId, request: u64, key: &[u8]) {
        if key.len() > self.shared.config.key_size_bytes_max {
            return self.reply_replica_read(from, request, ReplicaStatus::StorageFailed, &[]);
        }
        let task = Task::ReplicaRead {
            peer: from,
            request,
        };
        let started = self
            .shared
            .tasks
            .start(task, &mut self.shared.actions, |actions, token| {
                actions.read(token, Space::Data, key)
            });
        if started.is_none() {
            self.reply_replica_read(from, request, ReplicaStatus::Overloaded, &[]);
        }
    }

    fn reply_replica_read(
        &mut self,
        to: NodeId,
        request: u64,
        status: ReplicaStatus,
        versions: &[u8],
    ) {
        self.shared.send(
            to,
            &Message::ReplicaGetReply {
                request,
                status,
                versions,
            },
        );
    }

    fn replica_write(
        &mut self,
        from: NodeId,
        request: u64,
        key: &[u8],
        versions: &[u8],
        hint: Option<NodeId>,
    ) {
        let reply = (request != NO_REQUEST).then_some((from, request));
        let refuse = |node: &mut Node, status| {
            if let Some((peer, request)) = reply {
                let held_value = false;
                let message = Message::ReplicaPutReply {
                    request,
                    status,
                    held_value,
                };
                node.shared.send(peer, &message);
            }
        };
        if key.len() > self.shared.config.key_size_bytes_max {
            return refuse(self, ReplicaStatus::StorageFailed);
        }
        let Ok(versions) = VersionSet::decode(versions, self.shared.config.version_bounds) else {
            return refuse(self, ReplicaStatus::StorageFailed);
        };
        let hint_owner = hint.filter(|&owner| owner != self.shared.id);
        if hint_owner.is_some() && !self.hints.reserve() {
            self.shared.stats.overloaded += 1;
            return refuse(self, ReplicaStatus::Overloaded);
        }
        let reply = if self.shared.sabotage().ack_before_durable {
            refuse(self, ReplicaStatus::Ok);
            None
        } else {
            reply
        };
        if let Err(status) = self.merge_locally(key, versions, reply, hint_owner) {
            if hint_owner.is_some() {
                self.hints.unreserve();
            }
            refuse(self, status);
        }
    }

    /// Queues a merge of `versions` into this node's copy of `key` (its own, or a hint
    /// for `hint_owner`).
    pub(crate) fn merge_locally(
        &mut self,
        key: &[u8],
        versions: VersionSet,
        reply: Option<(NodeId, u64)>,
        hint_owner: Option<NodeId>,
    ) -> Result<(), ReplicaStatus> {
        let space = match hint_owner {
            Some(owner) => {
                hint_key(owner, key, &mut self.shared.scratch);
                Space::Hints
            }
            None => {
                self.shared.scratch.clear();
                self.shared.scratch.extend_from_slice(key);
                Space::Data
            }
        };
        let storage_key = std::mem::take(&mut self.shared.scratch);
        // An unacknowledged merge (a read repair, an anti-entropy push) folds into a
        // merge already waiting on the key: version sets join in any order, so one
        // waiting merge carries them all. Without this, repairs of a hot key queued
        // one storage round trip each behind its writes, until the replicas' answers
        // took longer than the peers' replica timeout and a live node was taken for
        // dead (simulator seed 9114809: a W=3 write refused with all three up).
        if reply.is_none() {
            if let Some(KeyOp::Merge {
                versions: waiting,
                hint_owner: waiting_owner,
                ..
            }) = self.locks.last_waiting_mut(space, &storage_key)
            {
                if *waiting_owner == hint_owner {
                    *waiting = waiting.sync(&versions);
                    self.shared.stats.merges_coalesced += 1;
                    self.shared.scratch = storage_key;
                    return Ok(());
                }
            }
        }
        let queued = self.enqueue_key_op(
            space,
            &storage_key,
            KeyOp::Merge {
                versions,
                reply,
                hint_owner,
                held_value: false,
            },
        );
        self.shared.scratch = storage_key;
        queued.map_err(|_| {
            self.shared.stats.overloaded += 1;
            ReplicaStatus::Overloaded
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forwarded_write(
        &mut self,
        from: NodeId,
        request: u64,
        key: &[u8],
        context: &[u8],
        plain: bool,
        value: Option<&[u8]>,
        timestamp_ms: u64,
        write_quorum: u8,
    ) {
        let expires =
            self.shared.now + Duration::from_millis(self.shared.config.request_timeout_ms * 2);
        if !self
            .forwards
            .first_time(self.shared.now, expires, from, request, timestamp_ms, key)
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
                _ => return self.finish_write(reply, true, Err(RequestError::ForwardFailed)),
            }
        };
        let checked = self
            .check_quorum(Some(write_quorum), write_quorum)
            .and_then(|quorum| {
                self.check_sizes(key, value.map_or(0, <[u8]>::len))
                    .map(|()| quorum)
            });
        let write_quorum = match checked {
            Ok(quorum) => quorum,
            Err(error) => return self.finish_write(reply, true, Err(error)),
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
        let partition = self.view.ring.partition_of(key);
        let owner = if self
            .view
            .ring
            .preference_list(partition)
            .any(|node| node == self.shared.id)
        {
            None
        } else {
            self.view.ring.preference_list(partition).next()
        };
        self.coordinate_write(reply, true, key, spec, owner);
    }

    // ---- storage completions of the replica's tasks --------------------------------

    /// The read step of key lock `lock`'s running operation finished.
    pub(crate) fn locked_read_done(
        &mut self,
        token: u64,
        lock: u32,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        self.note_tree_read(token, lock, result);
        match self.locked_read(lock, token, result) {
            Step::Storing => {}
            Step::Done(result) => {
                self.shared.tasks.end(token);
                self.finish_locked(lock, result);
            }
        }
    }

    /// The write step of key lock `lock`'s running operation finished; a durable change
    /// of a data key updates the anti-entropy tree.
    pub(crate) fn locked_write_done(
        &mut self,
        lock: u32,
        change: Option<(Option<TreeEntry>, Option<TreeEntry>)>,
        result: Result<(), StorageFailure>,
    ) {
        if let (Ok(()), Some((old, new)), Some(slot)) = (result, change, self.locks.get(lock)) {
            self.entropy.trees.apply(key_hash(&slot.key), old, new);
        }
        self.finish_locked(lock, result);
    }

    /// A peer's replica read was read from the store: answer it.
    pub(crate) fn replica_read_done(
        &mut self,
        peer: NodeId,
        request: u64,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        match result {
            Ok(Some(versions)) => {
                self.reply_replica_read(peer, request, ReplicaStatus::Ok, versions)
            }
            Ok(None) => self.reply_replica_read(peer, request, ReplicaStatus::NotFound, &[]),
            Err(_) => self.reply_replica_read(peer, request, ReplicaStatus::StorageFailed, &[]),
        }
    }

    /// A page of the hint store's keys was listed: learn them, and list the next page.
    pub(crate) fn hints_listed(&mut self, result: Result<Listing, StorageFailure>) {
        let Ok(listing) = result else {
            return;
        };
        let mut room = true;
        for stored in &listing.keys {
            if let Some((owner, key)) = parse_hint_key(stored) {
                room = self.hints.found(owner, key);
                if !room {
                    break;
                }
            }
        }
        if let (true, false, Some(last)) = (room, listing.complete, listing.keys.last()) {
            self.list_hints(last);
        }
        // A full table cannot say which hints the disk holds beyond it.
        self.hints.listed = room && listing.complete;
    }

    /// Queues `op` on a key; starts it when the key is free.
    pub(crate) fn enqueue_key_op(
        &mut self,
        space: Space,
        key: &[u8],
        op: KeyOp,
    ) -> Result<(), KeyOp> {
        match self.locks.enqueue(space, key, op) {
            Ok(Enqueued::Started(lock)) => {
                self.run_lock(lock);
                Ok(())
            }
            Ok(Enqueued::Waiting) => Ok(()),
            Err(LocksFull(op)) => Err(op),
        }
    }

    /// Issues the read for `lock`'s running operation, failing operations that cannot
    /// start until one starts or none is left.
    fn run_lock(&mut self, lock: u32) {
        loop {
            let Some(slot) = self.locks.get(lock) else {
                return;
            };
            let task = Task::Locked { lock, change: None };
            let started =
                self.shared
                    .tasks
                    .start(task, &mut self.shared.actions, |actions, token| {
                        actions.read(token, slot.space, &slot.key)
                    });
            if started.is_some() {
                return;
            }
            self.shared.stats.overloaded += 1;
            let Some((op, more)) = self.locks.finish(lock) else {
                return;
            };
            self.key_op_ended(lock, op, Err(Overload));
            if !more {
                return;
            }
        }
    }

    /// Remembers the entry hash of the record a data-space key operation read (None:
    /// the key was absent), so the tree can be updated once its write is durable.
    fn note_tree_read(
        &mut self,
        token: u64,
        lock: u32,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        let Some(slot) = self.locks.get(lock) else {
            return;
        };
        let found = match result {
            Ok(found) => found,
            // A record the disk cannot give back is missing from the tree too (the
            // rebuild scan skips it): a merge that replaces it starts from nothing.
            Err(StorageFailure::Corrupt) => None,
            Err(_) => return,
        };
        if slot.space != Space::Data {
            return;
        }
        let old = found.map(|record| TreeEntry::of(&slot.key, record));
        if let Some(Task::Locked { change, .. }) = self.shared.tasks.get_mut(token) {
            *change = Some((old, None));
        }
    }

    /// The running operation of `lock` read its key.
    fn locked_read(
        &mut self,
        lock: u32,
        token: u64,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) -> Step {
        let current = match result {
            Ok(None) => VersionSet::new(),
            Ok(Some(bytes)) => match VersionSet::decode(bytes, self.shared.config.version_bounds) {
                Ok(current) => current,
                Err(_) => return self.corrupt_record(lock, token),
            },
            Err(StorageFailure::Corrupt) => return self.corrupt_record(lock, token),
            Err(failure) => return Step::Done(Err(failure)),
        };
        let drop_concurrent_siblings = self.shared.sabotage().drop_concurrent_siblings;
        let Some(op) = self.locks.running_mut(lock) else {
            return Step::Done(Ok(()));
        };
        match op {
            KeyOp::Mint { request } => {
                let request = *request;
                self.mint(lock, token, request, current)
            }
            KeyOp::Merge {
                versions,
                held_value,
                ..
            } => {
                *held_value = super::read_reply::holds_value(&current);
                let merged = if drop_concurrent_siblings {
                    newest_sibling_only(current.sync(versions))
                } else {
                    current.sync(versions)
                };
                if merged == current {
                    return Step::Done(Ok(()));
                }
                self.store_locked(lock, token, &merged)
            }
            KeyOp::ReadHint { delivery } => {
                let delivery = *delivery;
                self.send_delivery(delivery, result.ok().flatten());
                Step::Done(Ok(()))
            }
            KeyOp::DeleteIfUnchanged { expected, cause } => {
                let (expected, cause) = (*expected, *cause);
                self.delete_if_unchanged(lock, token, result.ok().flatten(), (expected, cause))
            }
            KeyOp::DeleteHint { owner, generation } => {
                let (owner, generation) = (*owner, *generation);
                self.delete_hint_if_unchanged(lock, token, owner, generation)
            }
        }
    }

    /// A `DeleteIfUnchanged` read `found`: delete the key if its record is still the
    /// `expected` one (and, for a reap, the writer floor covers it).
    fn delete_if_unchanged(
        &mut self,
        lock: u32,
        token: u64,
        found: Option<&[u8]>,
        (expected, cause): (u64, DeleteCause),
    ) -> Step {
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let unchanged = found.is_some_and(|record| entry_hash(&slot.key, record) == expected);
        if !unchanged {
            // Changed since the replicas confirmed it (or unreadable): kept, and
            // reported as not deleted.
            return Step::Done(Err(StorageFailure::Io));
        }
        if cause == DeleteCause::Reap && !found.is_some_and(|r| self.reap_allowed(r)) {
            return Step::Done(Err(StorageFailure::Io));
        }
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let key = slot.key.clone();
        match self.shared.actions.delete(token, Space::Data, &key) {
            Ok(()) => Step::Storing,
            Err(_) => Step::Done(Err(StorageFailure::Io)),
        }
    }

    /// A `DeleteHint` holds the hint's lock: delete it unless a write merged into it
    /// since `generation`.
    fn delete_hint_if_unchanged(
        &mut self,
        lock: u32,
        token: u64,
        owner: NodeId,
        generation: u64,
    ) -> Step {
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let unchanged = parse_hint_key(&slot.key)
            .is_some_and(|(_, key)| self.hints.generation(owner, key) == Some(generation));
        if !unchanged {
            return Step::Done(Ok(()));
        }
        let key = slot.key.clone();
        match self.shared.actions.delete(token, Space::Hints, &key) {
            Ok(()) => Step::Storing,
            Err(_) => Step::Done(Err(StorageFailure::Io)),
        }
    }

    /// The running operation of `lock` found its local record unreadable (a bad
    /// checksum, or bytes that do not decode). A merge (read repair, anti-entropy, a
    /// hint, handoff) replaces it with what another replica sent: the record is lost
    /// here anyway, and the merge carries every dot this node minted that a replica
    /// kept. A mint refuses (the client gets an error, another replica can coordinate):
    /// without the record this node could mint a dot it used before.
    fn corrupt_record(&mut self, lock: u32, token: u64) -> Step {
        let key = self
            .locks
            .get(lock)
            .map(|slot| String::from_utf8_lossy(&slot.key).into_owned())
            .unwrap_or_default();
        self.writer.damaged(&mut self.shared, &self.view);
        let Some(KeyOp::Merge { versions, .. }) = self.locks.running_mut(lock) else {
            log::warn!("local record of {key:?} is unreadable: refusing to mint over it");
            return Step::Done(Err(StorageFailure::Corrupt));
        };
        let merged = versions.clone();
        log::warn!("local record of {key:?} was unreadable: replaced by a replica's copy");
        self.shared.stats.corrupt_records_replaced += 1;
        self.store_locked(lock, token, &merged)
    }

    /// Mints write `request` against `current` and stores the result.
    fn mint(&mut self, lock: u32, token: u64, request: SlotId, current: VersionSet) -> Step {
        let bounds = self.shared.config.version_bounds;
        let Some(Request::Write(write)) = self.requests.get_mut(request) else {
            // The request timed out while waiting for the lock: nothing to write.
            return Step::Done(Ok(()));
        };
        let Some(spec) = write.spec.take() else {
            return Step::Done(Ok(()));
        };
        let (minted, reply_context) =
            mint_versions(&mut self.writer, &mut self.shared, write, spec, &current);
        if minted.sibling_count() > bounds.siblings_max
            || minted.clock_size() > bounds.coordinators_max
        {
            self.fail_write(request, RequestError::TooManyVersions);
            return Step::Done(Ok(()));
        }
        let Some(Request::Write(write)) = self.requests.get_mut(request) else {
            return Step::Done(Ok(()));
        };
        write.versions.clear();
        minted.encode(&mut write.versions);
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let queued = self
            .shared
            .actions
            .write(token, slot.space, &slot.key, &write.versions);
        let new = tree_change_pending(&self.shared.tasks, token)
            .then(|| TreeEntry::of(&slot.key, &write.versions));
        note_tree_write(&mut self.shared.tasks, token, new);
        self.write_minted(request, reply_context);
        match queued {
            Ok(()) => {
                if self.shared.sabotage().ack_before_durable {
                    self.replicate(request);
                }
                Step::Storing
            }
            Err(_) => {
                self.fail_write(request, RequestError::Overloaded("too many queued actions"));
                Step::Done(Ok(()))
            }
        }
    }

    fn store_locked(&mut self, lock: u32, token: u64, versions: &VersionSet) -> Step {
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let mut record = std::mem::take(&mut self.shared.scratch);
        record.clear();
        versions.encode(&mut record);
        let queued = self
            .shared
            .actions
            .write(token, slot.space, &slot.key, &record);
        let new = tree_change_pending(&self.shared.tasks, token)
            .then(|| TreeEntry::of(&slot.key, &record));
        note_tree_write(&mut self.shared.tasks, token, new);
        self.shared.scratch = record;
        match queued {
            Ok(()) => Step::Storing,
            Err(_) => Step::Done(Err(StorageFailure::Io)),
        }
    }

    /// The running operation of `lock` is over: apply its effects and start the next.
    pub(crate) fn finish_locked(&mut self, lock: u32, result: Result<(), StorageFailure>) {
        let Some((op, more)) = self.locks.finish(lock) else {
            return;
        };
        self.key_op_ended(lock, op, result.map_err(Failure::Storage));
        if more {
            self.run_lock(lock);
        }
    }

    fn key_op_ended(&mut self, lock: u32, op: KeyOp, result: Result<(), impl Into<Failure>>) {
        let result = result.map_err(Into::into);
        match op {
            KeyOp::Mint { request } => {
                // A stand-in's own copy is a hint for the owner (reserved when the
                // write was admitted).
                if let Some((owner, key)) = self.hint_of_lock(lock) {
                    match result {
                        Ok(()) => {
                            self.shared.stats.hints_stored += 1;
                            self.hints.stored(owner, &key);
                        }
                        Err(_) => self.hints.unreserve(),
                    }
                }
                match result {
                    Ok(()) if !self.shared.sabotage().ack_before_durable => self.replicate(request),
                    Ok(()) => {}
                    Err(failure) => self.fail_write(request, failure.into_request_error()),
                }
            }
            KeyOp::Merge {
                reply,
                hint_owner,
                held_value,
                ..
            } => {
                let status = match result {
                    Ok(()) => ReplicaStatus::Ok,
                    Err(Failure::Overloaded) => ReplicaStatus::Overloaded,
                    Err(Failure::Storage(_)) => ReplicaStatus::StorageFailed,
                };
                if let Some(owner) = hint_owner {
                    match (status, self.locks_key(lock)) {
                        (ReplicaStatus::Ok, Some(key)) => {
                            self.shared.stats.hints_stored += 1;
                            self.hints.stored(owner, &key);
                        }
                        _ => self.hints.unreserve(),
                    }
                }
                if let Some((peer, request)) = reply {
                    let message = Message::ReplicaPutReply {
                        request,
                        status,
                        held_value,
                    };
                    self.shared.send(peer, &message);
                }
            }
            KeyOp::ReadHint { delivery } => {
                if result.is_err() {
                    self.remove_request(delivery);
                }
            }
            KeyOp::DeleteIfUnchanged { cause, .. } => match cause {
                DeleteCause::Handoff { serial } => self.handoff_deleted(serial, result.is_ok()),
                DeleteCause::Reap => self.reap_deleted(result.is_ok()),
            },
            KeyOp::DeleteHint { owner, generation } => {
                if let (Ok(()), Some(key)) = (result, self.locks_key(lock)) {
                    self.hints.remove_if_unchanged(owner, &key, generation);
                }
            }
        }
    }

    /// The user key of a hint lock (the stored key without its owner prefix).
    fn locks_key(&self, lock: u32) -> Option<Vec<u8>> {
        self.hint_of_lock(lock).map(|(_, key)| key)
    }

    /// The owner and user key of `lock`, when it locks a hint.
    fn hint_of_lock(&self, lock: u32) -> Option<(NodeId, Vec<u8>)> {
        let (space, stored) = self.locks.slot_key(lock)?;
        if space != Space::Hints {
            return None;
        }
        parse_hint_key(stored).map(|(owner, key)| (owner, key.to_vec()))
    }

    // ---- hint delivery --------------------------------------------------------------

    pub(crate) fn check_sizes(&self, key: &[u8], value_size: usize) -> Result<(), RequestError> {
        if key.len() > self.shared.config.key_size_bytes_max {
            return Err(RequestError::KeyTooLarge {
                size: key.len(),
                max: self.shared.config.key_size_bytes_max,
            });
        }
        if value_size > self.shared.config.value_size_bytes_max {
            return Err(RequestError::ValueTooLarge {
                size: value_size,
                max: self.shared.config.value_size_bytes_max,
            });
        }
        Ok(())
    }
}

/// Why a key operation did not complete.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Overloaded,
    Storage(StorageFailure),
}

/// A lock that could not start its operation.
#[derive(Clone, Copy, Debug)]
struct Overload;

impl From<Overload> for Failure {
    fn from(_: Overload) -> Failure {
        Failure::Overloaded
    }
}

impl Failure {
    fn into_request_error(self) -> RequestError {
        match self {
            Failure::Overloaded => RequestError::Overloaded("too many storage operations"),
            Failure::Storage(failure) => RequestError::StorageFailed(failure),
        }
    }
}

/// Sabotage: keeps only the last-write-wins sibling, losing concurrent ones.
#[cfg(feature = "sabotage")]
fn newest_sibling_only(mut versions: VersionSet) -> VersionSet {
    versions.sabotage_keep_newest_sibling();
    versions
}

#[cfg(not(feature = "sabotage"))]
fn newest_sibling_only(versions: VersionSet) -> VersionSet {
    versions
}

/// True when the key operation of `token` read a data-space record, so its write will
/// change the anti-entropy tree (hints are not in the tree: their hash is never taken).
/// What `write` mints against the stored `current`: its versions (under the writer
/// epoch's lane its context allows, above the counter floor) and the token its reply
/// carries (the context and this write's dot only, never a sibling the writer was not
/// shown: the lane holds none above the context).
fn mint_versions(
    writer: &mut Writer,
    shared: &mut Shared,
    write: &mut WriteRequest,
    spec: WriteSpec,
    current: &VersionSet,
) -> (VersionSet, VersionVector) {
    let sabotage = shared.sabotage();
    let floor = if sabotage.reap_without_floor {
        0
    } else {
        writer.counter_floor()
    };
    let context = match spec.context {
        _ if sabotage.ignore_context => VersionVector::new(),
        Some(context) => context,
        None => current.join(),
    };
    write.existed = super::read_reply::holds_value(current);
    // Only VSET, VDEL and forwarded writes answer with a token.
    let token_wanted = write.reply_context || matches!(write.reply, ReplyTo::Peer { .. });
    let lane = writer.lane_for(&mut shared.rng, write.writer, &context, current);
    let minted = VersionSet::update_above(
        VersionSet::from_context(&context, spec.value),
        current,
        lane,
        floor,
    );
    let dot = Dot {
        node: lane,
        counter: minted.counter_of(lane),
    };
    let reply_context = if !token_wanted {
        VersionVector::new()
    } else if sabotage.merged_clock_token {
        minted.join()
    } else {
        context.with_dot(dot)
    };
    (minted, reply_context)
}

fn tree_change_pending(tasks: &Tasks, token: u64) -> bool {
    matches!(
        tasks.get(token),
        Some(Task::Locked {
            change: Some(_),
            ..
        })
    )
}

/// Records the entry hash of the record the key operation of `token` is writing.
fn note_tree_write(tasks: &mut Tasks, token: u64, entry: Option<TreeEntry>) {
    if let (
        Some(entry),
        Some(Task::Locked {
            change: Some((_, new)),
            ..
        }),
    ) = (entry, tasks.get_mut(token))
    {
        *new = Some(entry);
    }
}
