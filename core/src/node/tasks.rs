//! The storage operations a node has in flight, by what each is for: every concern's
//! storage tasks in one registry, so a completion finds its owner by its token.

use super::actions::{ActionQueue, ActionsFull};
use super::entries::TreeChange;
use crate::slab::{Slab, SlotId};
use crate::version::NodeId;

/// A storage operation in flight.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Task {
    /// The running operation of a key lock. `change`: the entry hashes of the record
    /// it read and of the one it is writing, for the anti-entropy tree once durable.
    Locked {
        lock: u32,
        change: Option<TreeChange>,
    },
    /// A peer's ReplicaGet.
    ReplicaRead {
        peer: NodeId,
        request: u64,
    },
    /// This node's own answer to a read it coordinates.
    LocalRead {
        request: SlotId,
    },
    ListHints,
    /// A page of the anti-entropy tree rebuild.
    BuildTrees,
    /// A bucket read for an anti-entropy comparison.
    EntropyScan,
    /// The writer epoch record: read at start, stored on a change.
    LoadWriter,
    StoreWriter,
    /// The membership record: read at start, stored on a change.
    LoadView,
    StoreView,
    /// A page of a partition this node hands off.
    HandoffPage,
    /// This node's bucket, read to answer a peer's handoff offer.
    OfferScan,
    /// A page of a bucket whose tombstones this node may reap.
    ReapPage,
}

/// The registry: each storage operation in flight under its token, bounded by
/// `storage_operations_max` (the slab's capacity).
#[derive(Debug)]
pub(crate) struct Tasks {
    slab: Slab<Task>,
    /// Most tasks in flight at once.
    pub(crate) peak: usize,
}

impl Tasks {
    pub(crate) fn new(capacity: u32) -> Tasks {
        Tasks {
            slab: Slab::with_capacity(capacity),
            peak: 0,
        }
    }

    /// Registers `task` and queues its operation with `queue` (given the action queue
    /// and the task's token). Its token, or `None` when the registry or the action
    /// queue is full; then nothing is left behind.
    pub(crate) fn start(
        &mut self,
        task: Task,
        actions: &mut ActionQueue,
        queue: impl FnOnce(&mut ActionQueue, u64) -> Result<(), ActionsFull>,
    ) -> Option<u64> {
        let id = self.slab.insert(task).ok()?;
        let token = id.to_u64();
        if queue(actions, token).is_err() {
            self.slab.remove(id);
            return None;
        }
        self.peak = self.peak.max(self.slab.len());
        Some(token)
    }

    /// The task waiting for `token`'s completion.
    pub(crate) fn get(&self, token: u64) -> Option<&Task> {
        self.slab.get(SlotId::from_u64(token))
    }

    pub(crate) fn get_mut(&mut self, token: u64) -> Option<&mut Task> {
        self.slab.get_mut(SlotId::from_u64(token))
    }

    /// Ends the task of `token` (its operation completed or was never queued).
    pub(crate) fn end(&mut self, token: u64) -> Option<Task> {
        self.slab.remove(SlotId::from_u64(token))
    }

    /// The data-key changes of key operations in flight (see [`TreeChange`]).
    pub(crate) fn tree_changes(&self) -> impl Iterator<Item = &TreeChange> + '_ {
        self.slab.iter().filter_map(|(_, task)| match task {
            Task::Locked {
                change: Some(change),
                ..
            } => Some(change),
            _ => None,
        })
    }

    /// Tasks in flight.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }
}
