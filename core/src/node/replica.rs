//! The replica: answering peers' reads and writes, and the key operations it runs one
//! at a time per stored key under its lock (`locks.rs`): the read-merge-write that
//! merges versions (a peer's write, a read repair, a hint), the mint's read and write
//! steps, a hint's read for delivery, and conditional deletes for handoff and reaping.
//!
//! [`Replica`] owns the key locks and the operations waiting on them. What it needs
//! from other concerns comes in a [`ReplicaContext`]; what only another concern can do
//! comes back as a value the node routes: a mint's read step
//! ([`ReadStep::Mint`], the coordinator mints against the stored versions and hands
//! the record back to [`Replica::store`]), a hint read for delivery
//! ([`ReadStep::DeliverHint`]), and the end of an operation another concern waits for
//! ([`Ended`]: a mint to replicate or fail, a delivery that read nothing, a handoff or
//! reaping delete). The node runs the lock loop (`router.rs`) so that each ended
//! operation's effects come before the next operation on the key starts, in that
//! order.
//!
//! # Buffered writes (the paper's section 6.1)
//!
//! A write's record is *durable* (synced before the step completes) or *buffered*
//! (complete once in the store's log and its index; the store syncs it within its sync
//! interval, and any later durable record of the same store syncs it first, since a
//! log is durable as a prefix). Which one:
//!
//! - durable: every mint (the coordinator's own record of a write, whose dot this node
//!   must never forget: `node::writer`), every hint (a stand-in's copy is the only one
//!   its owner will get), every merge a sender deletes its copy after (hint delivery,
//!   handoff), a peer's write with `durable` set (`SYNC all`), the node's own records
//!   (writer epoch, view) and every delete;
//! - buffered: a peer's write of a `SYNC one` request (the default), read repair and
//!   anti-entropy pushes.
//!
//! What a power cut can take from a node: the buffered merges of its last sync
//! interval. Such a write is still durable on the node that minted it, which acked
//! first, so a write acknowledged at W survives any number of crashes; it is at risk
//! only when the minting node's disk is lost too (design.md's destroy scenario) before
//! the other replicas synced. Read repair and anti-entropy bring a node that lost
//! buffered merges back to its peers' state. What lets a peer delete its copy of a
//! record is confirmed from durable state only: the scans behind a handoff offer's
//! answer and a reaping leader's page are durable scans (`StorageOp::Scan`).

use super::entries::{TreeChange, TreeEntry, entry_hash, set_is_reapable};
use super::entropy::HashTrees;
use super::gossip::View;
use super::hints::{HintWrite, Hints, hint_key, parse_hint_key};
use super::key_ops::{DeleteCause, KeyOp};
use super::locks::{Enqueued, KeyLocks, LocksFull};
use super::request_id::NO_REQUEST;
use super::shared::Shared;
use super::storage::Space;
use super::tasks::{Task, Tasks};
use super::writer::{Writer, is_one_shot};
use super::{Listing, RequestError, StorageFailure};
use crate::placement::key_hash;
use crate::slab::SlotId;
use crate::version::{NodeId, VersionSet};
use crate::wire::{Message, ReplicaStatus};

/// The replica's key locks and the operations queued on them.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) locks: KeyLocks<KeyOp>,
}

/// What the replica uses besides its own state.
pub(crate) struct ReplicaContext<'a> {
    pub(crate) shared: &'a mut Shared,
    pub(crate) hints: &'a mut Hints,
    pub(crate) writer: &'a mut Writer,
    pub(crate) view: &'a View,
}

/// The node's [`Replica`] and its [`ReplicaContext`] (borrowing the node's fields one
/// by one).
macro_rules! replica_context {
    ($node:ident) => {
        (
            &mut $node.replica,
            $crate::node::replica::ReplicaContext {
                shared: &mut $node.shared,
                hints: &mut $node.hints,
                writer: &mut $node.writer,
                view: &$node.view,
            },
        )
    };
}
pub(crate) use replica_context;

/// How a key operation's step ended.
pub(crate) enum Step {
    /// A write or delete was issued; wait for its completion.
    Storing,
    /// Nothing to store: the operation is over.
    Done(Result<(), StorageFailure>),
}

/// What a key operation's read step leads to.
pub(crate) enum ReadStep {
    /// The replica's own step.
    Own(Step),
    /// Mint write `request` against `current` (the coordinator's part).
    Mint {
        request: SlotId,
        current: VersionSet,
    },
    /// Send the hint just read for delivery `delivery` (the read's record); the
    /// operation is then over.
    DeliverHint { delivery: SlotId },
}

/// A key operation another concern waits for is over.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ended {
    /// Write `request`'s minted record is stored (or not).
    Mint {
        request: SlotId,
        result: Result<(), Failure>,
    },
    /// The hint read for delivery `delivery` ended; `failed`: the read failed.
    HintRead { delivery: SlotId, failed: bool },
    /// A conditional delete for `cause` ended; `deleted`: the key is gone.
    Deleted { cause: DeleteCause, deleted: bool },
    /// A delivered (or undeliverable) hint was deleted.
    HintDeleted,
    /// A read repair or anti-entropy push gave a record of `partition` reaping work it
    /// did not have (`node::reap`).
    Revived { partition: usize },
    /// A reaping delete of a record of `partition` kept it (changed since the replicas
    /// confirmed it, floor not yet durable, busy, failed) while other replicas may
    /// have removed theirs (`node::reap`).
    ReapKept { partition: usize },
}

/// What trying to start a lock's running operation did.
pub(crate) enum Start {
    /// Its read is issued, or the lock is free.
    Issued,
    /// The task table or the action queue refused it: the operation ended as
    /// overloaded (`ended`: what another concern must hear of it); `more`: another
    /// operation waits on the key and should be tried next.
    Refused { ended: Option<Ended>, more: bool },
}

impl Replica {
    pub(crate) fn new(locked_keys_max: u32, waiting_operations_max: u32) -> Replica {
        Replica {
            locks: KeyLocks::new(locked_keys_max, waiting_operations_max),
        }
    }

    // ---- peers' reads and writes -----------------------------------------------------

    /// A peer's read of `key`: read it and answer when the read completes
    /// ([`Replica::peer_read_done`]).
    pub(crate) fn read(shared: &mut Shared, from: NodeId, request: u64, key: &[u8]) {
        if key.len() > shared.config.key_size_bytes_max {
            return reply_read(shared, from, request, ReplicaStatus::StorageFailed, &[]);
        }
        let task = Task::ReplicaRead {
            peer: from,
            request,
        };
        let started = shared
            .tasks
            .start(task, &mut shared.actions, |actions, token| {
                actions.read(token, Space::Data, key)
            });
        if started.is_none() {
            reply_read(shared, from, request, ReplicaStatus::Overloaded, &[]);
        }
    }

    /// A peer's replica read was read from the store: answer it.
    pub(crate) fn peer_read_done(
        shared: &mut Shared,
        peer: NodeId,
        request: u64,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        let (status, versions) = match result {
            Ok(Some(versions)) => (ReplicaStatus::Ok, versions),
            Ok(None) => (ReplicaStatus::NotFound, &[][..]),
            Err(_) => (ReplicaStatus::StorageFailed, &[][..]),
        };
        reply_read(shared, peer, request, status, versions);
    }

    /// A peer's write of `versions` to merge into this node's copy of `key` (or into
    /// a hint for `hint`). Acknowledged once stored (`durable`: once synced; a hint
    /// always is), unless `request` is [`NO_REQUEST`]. `Ok(Some(lock))`: the merge
    /// starts now under `lock`.
    pub(crate) fn write(
        &mut self,
        cx: &mut ReplicaContext<'_>,
        from: NodeId,
        request: u64,
        key: &[u8],
        versions: &[u8],
        (hint, durable): (Option<NodeId>, bool),
    ) -> Option<u32> {
        let reply = (request != NO_REQUEST).then_some((from, request));
        let refuse = |shared: &mut Shared, status| {
            if let Some((peer, request)) = reply {
                let held_value = false;
                let message = Message::ReplicaPutReply {
                    request,
                    status,
                    held_value,
                };
                shared.send(peer, &message);
            }
        };
        if key.len() > cx.shared.config.key_size_bytes_max {
            refuse(cx.shared, ReplicaStatus::StorageFailed);
            return None;
        }
        let versions_bytes = versions.len();
        let Ok(versions) = VersionSet::decode(versions, cx.shared.config.version_bounds) else {
            refuse(cx.shared, ReplicaStatus::StorageFailed);
            return None;
        };
        let hint = match hint.filter(|&owner| owner != cx.shared.id) {
            None => None,
            Some(owner) => match cx.hints.reserve(hint_bytes(key, versions_bytes)) {
                Some(reservation) => Some(HintWrite::new(owner, reservation)),
                None => {
                    cx.shared.stats.overloaded += 1;
                    refuse(cx.shared, ReplicaStatus::Overloaded);
                    return None;
                }
            },
        };
        let reply = if cx.shared.sabotage().ack_before_durable {
            refuse(cx.shared, ReplicaStatus::Ok);
            None
        } else {
            reply
        };
        match self.merge(cx.shared, key, versions, reply, hint, durable) {
            Ok(started) => started,
            Err(status) => {
                if let Some(hint) = hint {
                    cx.hints.unreserve(hint.reservation);
                }
                refuse(cx.shared, status);
                None
            }
        }
    }

    /// Queues a merge of `versions` into this node's copy of `key` (its own, or a hint
    /// for `hint_owner`). `Ok(Some(lock))`: the merge starts now under `lock`.
    pub(crate) fn merge(
        &mut self,
        shared: &mut Shared,
        key: &[u8],
        versions: VersionSet,
        reply: Option<(NodeId, u64)>,
        hint: Option<HintWrite>,
        durable: bool,
    ) -> Result<Option<u32>, ReplicaStatus> {
        let space = match hint {
            Some(hint) => {
                hint_key(hint.owner, key, &mut shared.scratch);
                Space::Hints
            }
            None => {
                shared.scratch.clear();
                shared.scratch.extend_from_slice(key);
                Space::Data
            }
        };
        let storage_key = std::mem::take(&mut shared.scratch);
        // An unacknowledged merge (a read repair, an anti-entropy push) folds into a
        // merge already waiting on the key: version sets join in any order, so one
        // waiting merge carries them all. Without this, repairs of a hot key queued
        // one storage round trip each behind its writes, until the replicas' answers
        // took longer than the peers' replica timeout and a live node was taken for
        // dead (simulator seed 9114809: a W=3 write refused with all three up).
        // A hint's merge is not folded: each holds a reservation of the hint table.
        if reply.is_none() && hint.is_none() {
            if let Some(KeyOp::Merge {
                versions: waiting,
                hint: None,
                ..
            }) = self.locks.last_waiting_mut(space, &storage_key)
            {
                *waiting = waiting.sync(&versions);
                shared.stats.merges_coalesced += 1;
                shared.scratch = storage_key;
                return Ok(None);
            }
        }
        let op = KeyOp::Merge {
            versions,
            reply,
            hint,
            durable: durable || hint.is_some(),
            held_value: false,
            revived: false,
        };
        let queued = self.enqueue(space, &storage_key, op);
        shared.scratch = storage_key;
        queued.map_err(|_| {
            shared.stats.overloaded += 1;
            ReplicaStatus::Overloaded
        })
    }

    // ---- the lock loop ---------------------------------------------------------------

    /// Queues `op` on a key. `Ok(Some(lock))`: the key was free and `op` is its running
    /// operation; the caller starts it with [`Replica::start`].
    pub(crate) fn enqueue(
        &mut self,
        space: Space,
        key: &[u8],
        op: KeyOp,
    ) -> Result<Option<u32>, KeyOp> {
        match self.locks.enqueue(space, key, op) {
            Ok(Enqueued::Started(lock)) => Ok(Some(lock)),
            Ok(Enqueued::Waiting) => Ok(None),
            Err(LocksFull(op)) => Err(op),
        }
    }

    /// Issues the read for `lock`'s running operation.
    pub(crate) fn start(&mut self, cx: &mut ReplicaContext<'_>, lock: u32) -> Start {
        let Some(slot) = self.locks.get(lock) else {
            return Start::Issued;
        };
        let task = Task::Locked { lock, change: None };
        let started = cx
            .shared
            .tasks
            .start(task, &mut cx.shared.actions, |actions, token| {
                actions.read(token, slot.space, &slot.key)
            });
        if started.is_some() {
            return Start::Issued;
        }
        cx.shared.stats.overloaded += 1;
        match self.finish(cx, lock, Err(Failure::Overloaded)) {
            Some((ended, more)) => Start::Refused { ended, more },
            None => Start::Issued,
        }
    }

    /// The running operation of `lock` is over: applies the replica's own effects and
    /// gives back what another concern must hear, and whether another operation waits
    /// on the key (the caller starts it).
    pub(crate) fn finish(
        &mut self,
        cx: &mut ReplicaContext<'_>,
        lock: u32,
        result: Result<(), Failure>,
    ) -> Option<(Option<Ended>, bool)> {
        let (op, more) = self.locks.finish(lock)?;
        Some((self.ended(cx, lock, op, result), more))
    }

    // ---- the steps -------------------------------------------------------------------

    /// The read step of `lock`'s running operation finished.
    pub(crate) fn read_done(
        &mut self,
        cx: &mut ReplicaContext<'_>,
        token: u64,
        lock: u32,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) -> ReadStep {
        self.note_tree_read(cx.shared, token, lock, result);
        let current = match result {
            Ok(None) => VersionSet::new(),
            Ok(Some(bytes)) => match VersionSet::decode(bytes, cx.shared.config.version_bounds) {
                Ok(current) => current,
                Err(_) => return ReadStep::Own(self.corrupt_record(cx, lock, token)),
            },
            Err(StorageFailure::Corrupt) => {
                return ReadStep::Own(self.corrupt_record(cx, lock, token));
            }
            Err(failure) => return ReadStep::Own(Step::Done(Err(failure))),
        };
        let drop_concurrent_siblings = cx.shared.sabotage().drop_concurrent_siblings;
        let Some(op) = self.locks.running_mut(lock) else {
            return ReadStep::Own(Step::Done(Ok(())));
        };
        let step = match op {
            KeyOp::Mint { request, .. } => {
                let request = *request;
                return ReadStep::Mint { request, current };
            }
            KeyOp::ReadHint { delivery } => {
                return ReadStep::DeliverHint {
                    delivery: *delivery,
                };
            }
            KeyOp::Merge {
                versions,
                reply,
                hint,
                held_value,
                revived,
                ..
            } => {
                *held_value = super::read_reply::holds_value(&current);
                let merged = if drop_concurrent_siblings {
                    newest_sibling_only(current.sync(versions))
                } else if cx.shared.sabotage().compact_unconfirmed {
                    current.sync(versions).without_dead_writers(is_one_shot)
                } else {
                    current.sync(versions)
                };
                if merged == current {
                    return ReadStep::Own(Step::Done(Ok(())));
                }
                *revived = reply.is_none()
                    && hint.is_none()
                    && set_is_reapable(&merged)
                    && !set_is_reapable(&current);
                let bounds = cx.shared.config.version_bounds;
                if merged.sibling_count() > bounds.siblings_max
                    || merged.clock_size() > bounds.coordinators_max
                {
                    // Stored, it could not be read back: refused (the sender keeps
                    // its copy; the key needs a write that resolves its siblings).
                    log::warn!(
                        "a merge would leave {} siblings and {} clock entries (bounds {} and {}): refused",
                        merged.sibling_count(),
                        merged.clock_size(),
                        bounds.siblings_max,
                        bounds.coordinators_max
                    );
                    return ReadStep::Own(Step::Done(Err(StorageFailure::Io)));
                }
                self.store_versions(cx.shared, lock, token, &merged)
            }
            KeyOp::DeleteIfUnchanged { expected, cause } => {
                let (expected, cause) = (*expected, *cause);
                let found = result.ok().flatten();
                self.delete_if_unchanged(cx, lock, token, found, (expected, cause))
            }
            KeyOp::DeleteHint { owner, generation } => {
                let (owner, generation) = (*owner, *generation);
                self.delete_hint_if_unchanged(cx, lock, token, owner, generation)
            }
        };
        ReadStep::Own(step)
    }

    /// The write step of `lock`'s running operation finished; a durable change of a
    /// data key updates the anti-entropy tree. The caller then finishes the lock.
    pub(crate) fn write_done(
        &self,
        trees: &mut HashTrees,
        lock: u32,
        change: Option<TreeChange>,
        result: Result<(), StorageFailure>,
    ) {
        if let (Ok(()), Some(change)) = (result, change) {
            debug_assert!(
                self.locks
                    .get(lock)
                    .is_some_and(|slot| key_hash(&slot.key) == change.key_hash),
                "a tree change belongs to its lock's key"
            );
            trees.apply(change.key_hash, change.old, change.new);
        }
    }

    /// Stores `record` (a mint's encoded versions) as `lock`'s key; Err when the action
    /// queue refused it.
    pub(crate) fn store(
        &mut self,
        shared: &mut Shared,
        lock: u32,
        token: u64,
        record: &[u8],
    ) -> Result<(), ()> {
        // Only a merge may be buffered; a mint, a hint and every other record is durable.
        let buffer_mints = shared.sabotage().buffer_mints;
        let durable = match self.locks.running_mut(lock) {
            Some(KeyOp::Merge { durable, .. }) => *durable,
            Some(KeyOp::Mint { hint: None, .. }) => !buffer_mints,
            _ => true,
        };
        let Some(slot) = self.locks.held(lock) else {
            return Ok(());
        };
        let queued = shared
            .actions
            .write(token, slot.space, (&slot.key, record), durable);
        let new =
            tree_change_pending(&shared.tasks, token).then(|| TreeEntry::of(&slot.key, record));
        note_tree_write(&mut shared.tasks, token, new);
        let stored_bytes = slot.key.len() + record.len();
        if let Some(
            KeyOp::Mint {
                hint: Some(hint), ..
            }
            | KeyOp::Merge {
                hint: Some(hint), ..
            },
        ) = self.locks.running_mut(lock)
        {
            hint.record_bytes = Some(u32::try_from(stored_bytes).unwrap_or(u32::MAX));
        }
        queued.map_err(|_| ())
    }

    /// Remembers the entry hash of the record a data-space key operation read (None:
    /// the key was absent), so the tree can be updated once its write is durable.
    fn note_tree_read(
        &self,
        shared: &mut Shared,
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
        if let Some(Task::Locked { change, .. }) = shared.tasks.get_mut(token) {
            *change = Some(TreeChange {
                key_hash: key_hash(&slot.key),
                old,
                new: None,
            });
        }
    }

    /// A `DeleteIfUnchanged` read `found`: delete the key if its record is still the
    /// `expected` one (and, for a reap, the writer floor covers it).
    fn delete_if_unchanged(
        &mut self,
        cx: &mut ReplicaContext<'_>,
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
        if cause == DeleteCause::Reap {
            let Some(record) = found else {
                return Step::Done(Err(StorageFailure::Io));
            };
            if !VersionSet::record_is_deleted(record) {
                return self.compact(cx.shared, lock, token, record);
            }
            if !cx.writer.reap_allowed(cx.shared, record) {
                return Step::Done(Err(StorageFailure::Io));
            }
        }
        match cx.shared.actions.delete(token, Space::Data, &slot.key) {
            Ok(()) => Step::Storing,
            Err(_) => Step::Done(Err(StorageFailure::Io)),
        }
    }

    /// A reaped record that is not a tombstone: store it without the clock entries of
    /// one-shot writers that hold no live value (`node::reap`). Removing no writer
    /// that mints again, it needs no counter floor.
    fn compact(&mut self, shared: &mut Shared, lock: u32, token: u64, record: &[u8]) -> Step {
        let Ok(versions) = VersionSet::decode(record, shared.config.version_bounds) else {
            return Step::Done(Err(StorageFailure::Io));
        };
        let compacted = versions.without_dead_writers(is_one_shot);
        if compacted == versions {
            return Step::Done(Err(StorageFailure::Io));
        }
        self.store_versions(shared, lock, token, &compacted)
    }

    /// A `DeleteHint` holds the hint's lock: delete it unless a write merged into it
    /// since `generation`.
    fn delete_hint_if_unchanged(
        &self,
        cx: &mut ReplicaContext<'_>,
        lock: u32,
        token: u64,
        owner: NodeId,
        generation: u64,
    ) -> Step {
        let Some(slot) = self.locks.held(lock) else {
            return Step::Done(Ok(()));
        };
        let unchanged = parse_hint_key(&slot.key)
            .is_some_and(|(_, key)| cx.hints.generation(owner, key) == Some(generation));
        if !unchanged {
            return Step::Done(Ok(()));
        }
        match cx.shared.actions.delete(token, Space::Hints, &slot.key) {
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
    fn corrupt_record(&mut self, cx: &mut ReplicaContext<'_>, lock: u32, token: u64) -> Step {
        let key = self
            .locks
            .get(lock)
            .map(|slot| String::from_utf8_lossy(&slot.key).into_owned())
            .unwrap_or_default();
        cx.writer.damaged(cx.shared, cx.view);
        let Some(KeyOp::Merge { versions, .. }) = self.locks.running_mut(lock) else {
            log::warn!("local record of {key:?} is unreadable: refusing to mint over it");
            return Step::Done(Err(StorageFailure::Corrupt));
        };
        let merged = versions.clone();
        log::warn!("local record of {key:?} was unreadable: replaced by a replica's copy");
        cx.shared.stats.corrupt_records_replaced += 1;
        self.store_versions(cx.shared, lock, token, &merged)
    }

    fn store_versions(
        &mut self,
        shared: &mut Shared,
        lock: u32,
        token: u64,
        versions: &VersionSet,
    ) -> Step {
        let mut record = std::mem::take(&mut shared.scratch);
        record.clear();
        versions.encode(&mut record);
        let queued = self.store(shared, lock, token, &record);
        shared.scratch = record;
        match queued {
            Ok(()) => Step::Storing,
            Err(()) => Step::Done(Err(StorageFailure::Io)),
        }
    }

    /// Applies the replica's own effects of `lock`'s ended operation `op` (its slot still
    /// names the key) and gives back what another concern must hear.
    fn ended(
        &self,
        cx: &mut ReplicaContext<'_>,
        lock: u32,
        op: KeyOp,
        result: Result<(), Failure>,
    ) -> Option<Ended> {
        match op {
            KeyOp::Mint { request, hint } => {
                // A stand-in's own copy is a hint for the owner (reserved when the write
                // was admitted).
                if let Some(hint) = hint {
                    self.hint_ended(cx, lock, hint, result.is_ok());
                }
                Some(Ended::Mint { request, result })
            }
            KeyOp::Merge {
                reply,
                hint,
                held_value,
                revived,
                ..
            } => {
                let status = match result {
                    Ok(()) => ReplicaStatus::Ok,
                    Err(Failure::Overloaded) => ReplicaStatus::Overloaded,
                    Err(Failure::Storage(_)) => ReplicaStatus::StorageFailed,
                };
                if let Some(hint) = hint {
                    self.hint_ended(cx, lock, hint, status == ReplicaStatus::Ok);
                }
                if let Some((peer, request)) = reply {
                    let message = Message::ReplicaPutReply {
                        request,
                        status,
                        held_value,
                    };
                    cx.shared.send(peer, &message);
                }
                match self.locks.slot_key(lock) {
                    Some((Space::Data, key)) if revived && status == ReplicaStatus::Ok => {
                        Some(Ended::Revived {
                            partition: cx.view.ring.partition_of(key),
                        })
                    }
                    _ => None,
                }
            }
            KeyOp::ReadHint { delivery } => Some(Ended::HintRead {
                delivery,
                failed: result.is_err(),
            }),
            KeyOp::DeleteIfUnchanged { cause, .. } => match self.locks.slot_key(lock) {
                Some((Space::Data, key)) if cause == DeleteCause::Reap && result.is_err() => {
                    Some(Ended::ReapKept {
                        partition: cx.view.ring.partition_of(key),
                    })
                }
                _ => Some(Ended::Deleted {
                    cause,
                    deleted: result.is_ok(),
                }),
            },
            KeyOp::DeleteHint { owner, generation } => {
                let (Ok(()), Some((_, key))) = (result, self.hint_of_lock(lock)) else {
                    return None;
                };
                cx.hints
                    .remove_if_unchanged(owner, &key, generation)
                    .then_some(Ended::HintDeleted)
            }
        }
    }

    /// The owner and user key of `lock`, when it locks a hint.
    /// A hinted write under `lock` ended: durable (`stored`) or not.
    fn hint_ended(&self, cx: &mut ReplicaContext<'_>, lock: u32, hint: HintWrite, stored: bool) {
        match self.hint_of_lock(lock) {
            Some((_, key)) if stored => {
                cx.shared.stats.hints_stored += 1;
                cx.hints.stored(&key, hint);
            }
            _ => cx.hints.unreserve(hint.reservation),
        }
    }

    fn hint_of_lock(&self, lock: u32) -> Option<(NodeId, Vec<u8>)> {
        let (space, stored) = self.locks.slot_key(lock)?;
        if space != Space::Hints {
            return None;
        }
        parse_hint_key(stored).map(|(owner, key)| (owner, key.to_vec()))
    }
}

fn reply_read(
    shared: &mut Shared,
    to: NodeId,
    request: u64,
    status: ReplicaStatus,
    versions: &[u8],
) {
    let message = Message::ReplicaGetReply {
        request,
        status,
        versions,
    };
    shared.send(to, &message);
}

/// The bytes a hinted write of `versions_bytes` for `key` may add to the hint store:
/// its record and its storage key (the owner's id and the key).
pub(crate) fn hint_bytes(key: &[u8], versions_bytes: usize) -> usize {
    8 + key.len() + versions_bytes
}

/// A page of the hint store's keys was listed: learn them; the key to list the next
/// page after, if any.
pub(crate) fn hints_listed(
    hints: &mut Hints,
    result: Result<Listing, StorageFailure>,
) -> Option<Vec<u8>> {
    let Ok(listing) = result else {
        return None;
    };
    let mut room = true;
    for listed in &listing.keys {
        if let Some((owner, key)) = parse_hint_key(&listed.key) {
            room = hints.found(owner, key, listed.stored_bytes);
            if !room {
                break;
            }
        }
    }
    // A full table cannot say which hints the disk holds beyond it.
    hints.listed = room && listing.complete;
    match (room, listing.complete, listing.keys.last()) {
        (true, false, Some(last)) => Some(last.key.clone()),
        _ => None,
    }
}

/// One replica's answer to a read, decoded: versions, nothing, or a failure (an
/// undecodable record counts as a failure, never as "nothing").
pub(crate) fn decode_answer(
    shared: &Shared,
    found: Result<Option<&[u8]>, ()>,
) -> Result<Option<VersionSet>, ()> {
    match found? {
        Some(bytes) => VersionSet::decode(bytes, shared.config.version_bounds)
            .map(Some)
            .map_err(|_| ()),
        None => Ok(None),
    }
}

/// Refuses a key or value past the configured sizes.
pub(crate) fn check_sizes(
    shared: &Shared,
    key: &[u8],
    value_size: usize,
) -> Result<(), RequestError> {
    let config = &shared.config;
    if key.len() > config.key_size_bytes_max {
        return Err(RequestError::KeyTooLarge {
            size: key.len(),
            max: config.key_size_bytes_max,
        });
    }
    if value_size > config.value_size_bytes_max {
        return Err(RequestError::ValueTooLarge {
            size: value_size,
            max: config.value_size_bytes_max,
        });
    }
    Ok(())
}

/// Why a key operation did not complete.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    Overloaded,
    Storage(StorageFailure),
}

impl Failure {
    pub(crate) fn into_request_error(self) -> RequestError {
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
            change: Some(change),
            ..
        }),
    ) = (entry, tasks.get_mut(token))
    {
        change.new = Some(entry);
    }
}
