//! The storage operations a node has in flight, by what each is for: every concern's
//! storage tasks in one registry, so a completion finds its owner by its token.

use super::entries::TreeEntry;
use crate::slab::SlotId;
use crate::version::NodeId;

/// A storage operation in flight.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Task {
    /// The running operation of a key lock. `change`: the entry hashes of the record
    /// it read and of the one it is writing, for the anti-entropy tree once durable.
    Locked {
        lock: u32,
        change: Option<(Option<TreeEntry>, Option<TreeEntry>)>,
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
    /// A page of a partition this node hands off.
    HandoffPage,
    /// This node's bucket, read to answer a peer's handoff offer.
    OfferScan,
    /// A page of a bucket whose tombstones this node may reap.
    ReapPage,
}
