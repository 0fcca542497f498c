//! What happened in a simulated run: every client operation with its outcome, and the
//! dots the cluster gave each write, learnt by watching durable storage writes.
//!
//! Every write carries a unique write id: the first 8 bytes of its value, or, for a
//! delete, its timestamp (the simulator stamps each request with its write id). So any
//! stored sibling names the client operation that created it, and the checkers can ask
//! which writes survived, which superseded which, and whether one dot ever named two
//! different writes.

use ringkv_core::version::Dot;
use ringkv_core::{Instant, VersionSet, VersionVector};
use std::collections::{BTreeMap, BTreeSet};

/// A write's identity.
pub type WriteId = u64;

/// The kind of client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Get,
    VGet,
    Set,
    VSet,
    Del,
    VDel,
    /// `MULTI`: ringkv has no transactions; what follows up to EXEC is refused.
    Multi,
    /// `EXEC` after a MULTI: answered with EXECABORT.
    Exec,
}

impl OperationKind {
    pub fn is_write(self) -> bool {
        matches!(
            self,
            OperationKind::Set | OperationKind::VSet | OperationKind::Del | OperationKind::VDel
        )
    }

    /// True for DEL and VDEL.
    pub fn is_delete(self) -> bool {
        matches!(self, OperationKind::Del | OperationKind::VDel)
    }

    /// True for writes that name a context (VSET, VDEL).
    pub fn has_context(self) -> bool {
        matches!(self, OperationKind::VSet | OperationKind::VDel)
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok,
    /// The node answered with an error.
    Failed(String),
    /// The connection died with the request outstanding (the coordinator crashed).
    Unknown,
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub node: usize,
    pub kind: OperationKind,
    pub key: Vec<u8>,
    pub write_id: Option<WriteId>,
    pub write_quorum: u8,
    /// For reads, the R it asked for (or the node's default); 0 for writes.
    pub read_quorum: u8,
    /// The context a VSET or VDEL carried.
    pub context: Option<VersionVector>,
    /// The writes the read that gave `context` returned (they must be superseded).
    pub context_siblings: Vec<WriteId>,
    /// For reads: the writes returned (VGET: every live sibling; GET: the pick).
    pub read_values: Vec<WriteId>,
    pub start: Instant,
    pub end: Option<Instant>,
    pub outcome: Outcome,
    /// Fault epochs at start and end (see `Cluster::fault_epoch`).
    pub start_epoch: u64,
    pub end_epoch: u64,
    /// The client connection it was sent on (unique per run) and its place there:
    /// requests of one connection are pipelined in this order.
    pub connection: u64,
    pub position: u32,
    /// Sent between MULTI and EXEC: must be refused, never applied.
    pub in_transaction: bool,
    /// When it was sent, every running node (its coordinator, and the replica that
    /// mints a forwarded write) believed every replica of the key up (no stand-in takes
    /// part: a quorum of replicas is a strict one).
    pub replicas_believed_up: bool,
}

/// One durable record, for tracing: key, siblings as (dot, write id), clock.
pub type StoredRecord = (
    Vec<u8>,
    Vec<(Option<Dot>, WriteId)>,
    Vec<(ringkv_core::NodeId, u64)>,
);

/// One copy of a plain write (see [`History::copy_pasts`]).
#[derive(Clone, Debug)]
pub struct CopyPast {
    pub dot: Dot,
    pub alias: Option<ringkv_core::NodeId>,
    pub past: VersionVector,
}

impl CopyPast {
    /// True when a clock covering `vector` covers this copy: its dot, or for a
    /// forward's first attempt its alias's retry dot (`VersionSet::sync` drops it).
    pub fn covered_by(&self, vector: &VersionVector) -> bool {
        covers(vector, self.dot)
            || self
                .alias
                .is_some_and(|node| covers(vector, Dot { node, counter: 1 }))
    }
}

/// The run's history.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub operations: Vec<Operation>,
    /// Every dot each write was stored under (a forwarded write retried after a lost
    /// reply may be minted twice: two dots, one value).
    pub dots: BTreeMap<WriteId, BTreeSet<Dot>>,
    /// Which write each dot of each key names; a dot naming two writes is a violation.
    pub writes_by_dot: BTreeMap<(Vec<u8>, Dot), WriteId>,
    /// Dots seen naming a second, different write: (key, dot, first, second).
    pub reused_dots: Vec<(Vec<u8>, Dot, WriteId, WriteId)>,
    /// What each write superseded: its context, or for a plain write the clocks of
    /// the first records that held each of its dots, merged (a retried forward is
    /// minted twice, each time superseding what its minting replica held).
    pub causal_past: BTreeMap<WriteId, VersionVector>,
    /// For a plain write, each copy's dot, its value's alias (a forward's first
    /// attempt: a clock holding `(alias, 1)` covers that copy too) and its own past:
    /// the clock of the first record that held that dot (`causal_past` is all of them
    /// merged).
    pub copy_pasts: BTreeMap<WriteId, Vec<CopyPast>>,
    /// Writes made with a client's context (their past is that context).
    pub context_writes: BTreeSet<WriteId>,
    /// Keys some node removed from its data (a reaped tombstone, a handed-off copy).
    pub removed: BTreeSet<Vec<u8>>,
    /// When each write was first stored as a hint on a stand-in (its record, or a
    /// record holding it, in some node's hints space): from then on reads of the key's
    /// replicas may miss it, which Dynamo's sloppy quorum allows.
    pub hinted_at: BTreeMap<WriteId, Instant>,
    /// When set, every durable record is kept in `records` (for debugging a seed).
    pub trace: bool,
    /// (key, siblings as (dot, write id), clock) of every durable record, if tracing.
    pub records: Vec<StoredRecord>,
}

/// The write id a stored value names.
pub fn write_id_of(value: &ringkv_core::Value) -> WriteId {
    match &value.data {
        Some(data) if data.len() >= 8 => {
            let mut id = [0u8; 8];
            id.copy_from_slice(&data[..8]);
            u64::from_le_bytes(id)
        }
        _ => value.timestamp_ms,
    }
}

impl History {
    /// Learns from one durable record of `key`'s versions.
    pub fn observe_stored(&mut self, key: &[u8], versions: &VersionSet) {
        let clock = versions.join();
        if self.trace {
            let siblings = versions
                .siblings()
                .map(|s| (s.dot, write_id_of(s.value)))
                .collect();
            self.records
                .push((key.to_vec(), siblings, clock.entries().to_vec()));
        }
        for sibling in versions.siblings() {
            let Some(dot) = sibling.dot else {
                continue;
            };
            let id = write_id_of(sibling.value);
            match self.writes_by_dot.get(&(key.to_vec(), dot)) {
                Some(&known) if known != id => {
                    self.reused_dots.push((key.to_vec(), dot, known, id));
                }
                Some(_) => {}
                None => {
                    self.writes_by_dot.insert((key.to_vec(), dot), id);
                    if !self.context_writes.contains(&id) {
                        // The first record holding a dot is its mint's.
                        let past = self.causal_past.entry(id).or_default();
                        for &(node, counter) in clock.entries() {
                            *past = core::mem::take(past).with_dot(Dot { node, counter });
                        }
                        self.copy_pasts.entry(id).or_default().push(CopyPast {
                            dot,
                            alias: sibling.value.alias,
                            past: clock.clone(),
                        });
                    }
                }
            }
            self.dots.entry(id).or_default().insert(dot);
        }
    }

    /// Sets each context write's causal past to its context (more exact than a clock).
    pub fn record_context(&mut self, id: WriteId, context: &VersionVector) {
        self.context_writes.insert(id);
        self.causal_past.insert(id, context.clone());
    }
}

/// True when `vector` covers `dot`.
pub fn covers(vector: &VersionVector, dot: Dot) -> bool {
    vector
        .entries()
        .binary_search_by_key(&dot.node, |(node, _)| *node)
        .is_ok_and(|index| vector.entries()[index].1 >= dot.counter)
}
