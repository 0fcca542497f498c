//! The operations that run on one stored key under its lock (`locks.rs`), one at a
//! time in arrival order: what the replica runs (`replica.rs`) for the coordinator,
//! hint delivery, handoff and reaping.

use crate::node::hints::HintWrite;
use crate::slab::SlotId;
use crate::version::{NodeId, VersionSet};

/// A read-modify-write (or read) of one stored key, run under the key's lock.
#[derive(Debug)]
pub(crate) enum KeyOp {
    /// Mint the write of request `request` against the stored versions; `hint`: a
    /// stand-in's write into its hint for the owner.
    Mint {
        request: SlotId,
        hint: Option<HintWrite>,
    },
    /// Sync `versions` into the stored ones; acknowledge to `reply` once durable;
    /// `hint`: the stored key is a hint for its owner. `held_value` is set once
    /// the stored versions are read (for the acknowledgement); `revived` when an
    /// unacknowledged merge (read repair, anti-entropy) gives reaping work back to a
    /// record that had none (see `node::reap`). `durable`: the record is synced before
    /// the acknowledgement (always for a hint); otherwise it is a buffered write
    /// (`node::replica`, "Buffered writes").
    Merge {
        versions: VersionSet,
        reply: Option<(NodeId, u64)>,
        hint: Option<HintWrite>,
        durable: bool,
        held_value: bool,
        revived: bool,
    },
    /// Read a hint for delivery `delivery`.
    ReadHint { delivery: SlotId },
    /// Delete a delivered hint if nothing merged into it since `generation`.
    DeleteHint { owner: NodeId, generation: u64 },
    /// Delete a key if its record's entry hash is still `expected` (the record every
    /// replica confirmed), for `cause`.
    DeleteIfUnchanged { expected: u64, cause: DeleteCause },
}

/// Why a key is deleted from this node's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteCause {
    /// Handed off in page `serial` (`node::handoff`).
    Handoff { serial: u32 },
    /// A tombstone every replica held for the grace period (`node::reap`).
    Reap,
}
