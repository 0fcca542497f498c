//! The seven properties of design.md section 9, checked on a quiesced cluster's disks
//! and the run's history. Each returns the violations it found, with enough detail to
//! start debugging from the seed.
//!
//! 1. No write acknowledged at W is lost: on every replica of its key, the write is a
//!    sibling, or a sibling there causally supersedes it (the sibling's causal past, its
//!    context or for a plain write the clock it was minted against, covers the write's
//!    dot). For a key some node removed from its data (a reaped tombstone), a write
//!    a stored delete of the key causally supersedes is kept too (reaping removed it
//!    with the tombstone), and a delete is kept when the replica holds no sibling the
//!    delete superseded: what matters is that no deleted value is back. Also: no dot
//!    ever names two different writes.
//! 2. Replicas converge: the N replicas of every key hold equal version sets (for a
//!    key some node removed from its data: or all hold nothing but tombstones, a reap
//!    still spreading), no node still holds hints, and every node's anti-entropy tree
//!    is the one its store gives (equal stores report equal digests).
//! 3. Causality: after an acknowledged VSET or VDEL, no sibling its context's read
//!    returned is on any replica, except the one documented at-least-once case: the
//!    retry copy of a retried forward when the context covered only its first copy
//!    (counted in the run's totals as "retry copies back").
//! 4. Always writable: a write that failed with a quorum error while, for the whole
//!    request and `request_timeout_ms` before it, no fault changed, the network lost
//!    nothing, and at least W live nodes with working disks were reachable both ways
//!    from its coordinator, is a violation.
//! 5. Bounds hold: no node's bounded structure peaked past its bound, the network queue
//!    stayed within its bound, every frame decoded and every client reply parsed.
//! 6. Whatever context or returned token a client wrote with, no acknowledged value is
//!    lost: judged by what clients were *shown*, not by clocks. A write made with a
//!    context may supersede only the values its context's holder saw (the siblings of
//!    the VGET it came from, or for a token the values the earlier write's context
//!    saw and that write itself), what those superseded in turn, and deletes its
//!    clock covers (a read never shows a delete). A blind write (SET, DEL) supersedes
//!    what the clock it was minted against covers. Property 1 trusts clocks, so a
//!    node that hands out a token covering a sibling its writer never saw passes it;
//!    this one does not.
//! 7. Per connection, a command observes every earlier command of the same connection
//!    (pipelined before it, or acknowledged): a read after an acknowledged SET or VSET
//!    of its key on the same connection returns the write, or a value that superseded
//!    it (GET: never a value the write superseded), or nothing only when a delete
//!    superseded it (GET: or a later delete won its last-write-wins pick), whenever the read's R and the
//!    write's W overlap (R + W > N) on the key's replicas (the coordinator believed
//!    them all up for both, and both were answered before a replica timeout could
//!    bring in a stand-in: a stand-in keeps a write as a hint, which reads do not
//!    see), no fault was active (a down node, a cut link, a lossy network, a failing
//!    disk) and none came between, and no membership change.
//!    And a transaction applies nothing: every write sent between MULTI and EXEC is
//!    refused and never stored.

use super::cluster::Cluster;
use super::history::{Operation, OperationKind, Outcome, WriteId, covers, write_id_of};
use ringkv_core::node::Space;
use ringkv_core::version::{Dot, VersionVector};
use ringkv_core::{Instant, VersionSet};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property of design.md section 9 (1 to 5).
    pub property: u8,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "property {}: {}", self.property, self.detail)
    }
}

/// Every checker, in property order.
pub fn check_all(cluster: &Cluster) -> Vec<Violation> {
    if cluster.over_bounds() {
        // The run was stopped, not finished: nothing else can be judged (and the
        // history checkers would take as long as the runaway did).
        return bounds_hold(cluster);
    }
    let mut violations = Vec::new();
    violations.extend(no_acknowledged_write_lost(cluster));
    violations.extend(replicas_converge(cluster));
    violations.extend(causality_holds(cluster));
    violations.extend(always_writable(cluster));
    violations.extend(bounds_hold(cluster));
    violations.extend(tokens_lose_nothing(cluster));
    violations.extend(connections_observe_their_writes(cluster));
    violations
}

/// Which writes a write superseded by what its author was shown (see property 6),
/// memoized: `shown(x, w)` is true when write `x` supersedes write `w` that way.
struct Shown<'c> {
    cluster: &'c Cluster,
    /// The operation of each write id.
    writes: BTreeMap<WriteId, &'c Operation>,
    /// The deletes of each key.
    deletes: BTreeMap<&'c [u8], Vec<WriteId>>,
    /// The writes of each key.
    by_key: HashMap<&'c [u8], Vec<WriteId>>,
    /// The writes each blind write's causal past covers (they depend on it alone).
    covered_writes: HashMap<WriteId, Vec<WriteId>>,
    /// Hashed: a hot key's history asks about millions of pairs.
    memo: HashMap<(WriteId, WriteId), bool>,
    /// The deletes each write's context covers (they depend on the write alone).
    covered_deletes: BTreeMap<WriteId, Vec<WriteId>>,
}

impl<'c> Shown<'c> {
    fn new(cluster: &'c Cluster) -> Shown<'c> {
        let writes = cluster
            .history
            .operations
            .iter()
            .filter_map(|op| Some((op.write_id?, op)))
            .collect();
        let mut deletes: BTreeMap<&[u8], Vec<WriteId>> = BTreeMap::new();
        let mut by_key: HashMap<&[u8], Vec<WriteId>> = HashMap::new();
        for operation in &cluster.history.operations {
            let Some(id) = operation.write_id else {
                continue;
            };
            by_key.entry(operation.key.as_slice()).or_default().push(id);
            if operation.kind.is_delete() {
                deletes
                    .entry(operation.key.as_slice())
                    .or_default()
                    .push(id);
            }
        }
        Shown {
            cluster,
            writes,
            deletes,
            by_key,
            covered_writes: HashMap::new(),
            memo: HashMap::new(),
            covered_deletes: BTreeMap::new(),
        }
    }

    fn supersedes(&mut self, x: WriteId, w: WriteId) -> bool {
        if x == w {
            return true;
        }
        if let Some(&known) = self.memo.get(&(x, w)) {
            return known;
        }
        // Cycles cannot happen (a context only names earlier writes); the guard keeps
        // a broken history from recursing forever.
        self.memo.insert((x, w), false);
        let answer = self.decide(x, w);
        self.memo.insert((x, w), answer);
        answer
    }

    /// True when `x` superseded every copy of `w`. A retried forward can be minted
    /// more than once, and a write that superseded one copy may be concurrent with
    /// another: then `w` is still live beside it. Copies are judged by `x`'s causal
    /// past alone (a clock names everything its writes superseded), not through other
    /// writes, whose own copies may have different pasts.
    fn supersedes_every_copy(&mut self, x: WriteId, w: WriteId) -> bool {
        let history = &self.cluster.history;
        match (history.dots.get(&w), history.causal_past.get(&x)) {
            (Some(copies), Some(past)) if copies.len() > 1 && x != w => {
                copies.iter().all(|&copy| covers(past, copy))
            }
            _ => self.supersedes(x, w),
        }
    }

    fn decide(&mut self, x: WriteId, w: WriteId) -> bool {
        let history = &self.cluster.history;
        let Some(operation) = self.writes.get(&x).copied() else {
            return false;
        };
        let covers_dots_of = |past: &VersionVector, id: WriteId| {
            history
                .dots
                .get(&id)
                .is_some_and(|dots| dots.iter().any(|&dot| covers(past, dot)))
        };
        let Some(context) = &operation.context else {
            // A blind write: what its minting replica held, by the clock, and what
            // those writes superseded (a retried plain write's copies can have
            // different pasts, so its clock may not name all of that).
            let Some(past) = history.causal_past.get(&x) else {
                return false;
            };
            if covers_dots_of(past, w) {
                return true;
            }
            let earlier = self
                .covered_writes
                .entry(x)
                .or_insert_with(|| {
                    let writes = self.by_key[operation.key.as_slice()].iter().copied();
                    writes
                        .filter(|&id| id != x && covers_dots_of(past, id))
                        .collect()
                })
                .clone();
            // Through an earlier plain write minted more than once (a retried
            // forward), only through the copies `x` saw: its merged past holds every
            // copy's, and a copy minted after `x` may have superseded what `x` never
            // saw (seed 41583920103: a SET that had seen the first copy of a retried
            // SET was taken to supersede a VSET that only the retry's later copy
            // superseded). A copy's own past is its first record's clock. A write that
            // saw a later attempt saw the first copy too, through its alias, as the
            // store's merge does (seed 6100222979: a SET that saw only a retried
            // DEL's retry was taken to have left the SET the DEL's first copy
            // superseded standing).
            let cluster = self.cluster;
            let through_seen_copies = |id: WriteId| {
                let copies = cluster.history.copy_pasts.get(&id)?;
                if copies.len() < 2 {
                    return None;
                }
                Some(
                    copies
                        .iter()
                        .any(|copy| copy.covered_by(past) && covers_dots_of(&copy.past, w)),
                )
            };
            let judged: Vec<(WriteId, Option<bool>)> = earlier
                .into_iter()
                .map(|id| (id, through_seen_copies(id)))
                .collect();
            return judged.into_iter().any(|(id, judged)| match judged {
                Some(superseded) => superseded,
                None => self.supersedes(id, w),
            });
        };
        if operation.context_siblings.contains(&w) {
            return true;
        }
        for &seen in &operation.context_siblings {
            if self.supersedes(seen, w) {
                return true;
            }
        }
        // Deletes are never shown; the context covers them.
        let deletes = self
            .covered_deletes
            .entry(x)
            .or_insert_with(|| {
                let deletes = self.deletes.get(operation.key.as_slice()).into_iter();
                deletes
                    .flatten()
                    .copied()
                    .filter(|&id| id != x && covers_dots_of(context, id))
                    .collect()
            })
            .clone();
        deletes.into_iter().any(|delete| self.supersedes(delete, w))
    }
}

/// Property 6.
pub fn tokens_lose_nothing(cluster: &Cluster) -> Vec<Violation> {
    let mut shown = Shown::new(cluster);
    let mut violations = Vec::new();
    for operation in &cluster.history.operations {
        let value_write = matches!(operation.kind, OperationKind::Set | OperationKind::VSet);
        let (Some(id), Outcome::Ok, true) = (operation.write_id, &operation.outcome, value_write)
        else {
            continue;
        };
        if cluster.history.removed.contains(&operation.key) {
            continue; // a reaped key: property 1 judges it
        }
        for (replica, versions) in replica_states(cluster, &operation.key) {
            let kept = versions
                .siblings()
                .any(|sibling| shown.supersedes(write_id_of(sibling.value), id));
            if !kept {
                violations.push(Violation {
                    property: 6,
                    detail: format!(
                        "acknowledged write {id} of {:?} is gone from node {}, and no write there was made by a client shown it ({} siblings)",
                        String::from_utf8_lossy(&operation.key),
                        replica + 1,
                        versions.sibling_count()
                    ),
                });
            }
        }
    }
    violations
}

/// Property 7.
pub fn connections_observe_their_writes(cluster: &Cluster) -> Vec<Violation> {
    let history = &cluster.history;
    let replicas = cluster.config.replicas;
    let mut shown = Shown::new(cluster);
    let mut violations = Vec::new();
    let mut by_connection: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in &history.operations {
        if operation.in_transaction {
            let stored = operation
                .write_id
                .is_some_and(|id| history.dots.contains_key(&id));
            if stored || operation.outcome == Outcome::Ok {
                violations.push(Violation {
                    property: 7,
                    detail: format!(
                        "a {:?} of {:?} sent between MULTI and EXEC was {}",
                        operation.kind,
                        String::from_utf8_lossy(&operation.key),
                        if stored { "applied" } else { "acknowledged" }
                    ),
                });
            }
            continue;
        }
        if operation.connection != 0 {
            by_connection
                .entry(operation.connection)
                .or_default()
                .push(operation);
        }
    }
    // Every write id of each key, for the reads that did not show a write directly.
    let mut writes_by_key: BTreeMap<&[u8], Vec<WriteId>> = BTreeMap::new();
    for operation in &history.operations {
        if let Some(id) = operation.write_id {
            writes_by_key
                .entry(operation.key.as_slice())
                .or_default()
                .push(id);
        }
    }
    let membership_changes = !cluster.parameters.membership_changes.is_empty();
    for operations in by_connection.values() {
        for (position, write) in operations.iter().enumerate() {
            let value_write = matches!(write.kind, OperationKind::Set | OperationKind::VSet);
            let (Some(id), Outcome::Ok, true) = (write.write_id, &write.outcome, value_write)
            else {
                continue;
            };
            for read in &operations[position + 1..] {
                let is_read = matches!(read.kind, OperationKind::Get | OperationKind::VGet);
                if !is_read || read.key != write.key || read.outcome != Outcome::Ok {
                    continue;
                }
                let overlapping = read.read_quorum + write.write_quorum > replicas;
                // Dynamo's read-your-writes needs the quorums to overlap on the key's
                // replicas. A stand-in keeps a write as a hint, which reads do not see,
                // and answers a read for a silent replica with what it holds: so both
                // must have gone to the replicas (believed up when sent) and been
                // answered before any replica timed out (after which stand-ins step in).
                let timeout = Duration::from_millis(cluster.config.replica_timeout_ms);
                let prompt = |op: &Operation, from: Instant| {
                    op.end
                        .is_some_and(|end| end.saturating_duration_since(from) < timeout)
                };
                let read_from = read.start.max(write.end.unwrap_or(read.start));
                // A replica's disk may refuse one write (a flaky disk, no fault epoch):
                // the coordinator then stores it on a stand-in as a hint, just the same.
                let hinted = history
                    .hinted_at
                    .get(&id)
                    .is_some_and(|&at| read.end.is_none_or(|end| at <= end));
                let beliefs_changed = read.end.is_none_or(|end| {
                    let first = cluster
                        .belief_changes
                        .partition_point(|&at| at < write.start);
                    cluster
                        .belief_changes
                        .get(first)
                        .is_some_and(|&at| at <= end)
                });
                let strict = write.replicas_believed_up
                    && read.replicas_believed_up
                    && !beliefs_changed
                    && !hinted
                    && prompt(write, write.start)
                    && prompt(read, read_from);
                // And no fault at all while they ran: a failing disk or a cut link
                // sends a write to a stand-in as surely as a node believed down.
                let no_fault =
                    cluster
                        .epochs
                        .get(write.start_epoch as usize)
                        .is_some_and(|epoch| {
                            epoch.blocked.is_empty()
                                && !epoch.lossy
                                && epoch.up.iter().all(|&up| up)
                                && epoch.failing_disks.iter().all(|&failing| !failing)
                        });
                let calm = read.end_epoch == write.start_epoch
                    && no_fault
                    && !membership_changes
                    && strict;
                if !overlapping || !calm {
                    continue;
                }
                // VGET shows every sibling: one must be the write or supersede it.
                // GET shows one pick among siblings, which may be a write concurrent
                // with whatever superseded this one: it fails to observe the write only
                // by returning a value the write superseded, every copy of it. (A
                // retried forward is minted more than once: its retry, minted later,
                // can supersede or be concurrent with a write that superseded its
                // first copy, and the retry, still in flight when the write was
                // acknowledged, may be the later.)
                let observed = match read.kind {
                    OperationKind::Get => read.read_values.iter().any(|&x| {
                        x == id || !shown.supersedes_every_copy(id, x) || shown.supersedes(x, id)
                    }),
                    _ => read.read_values.iter().any(|&x| shown.supersedes(x, id)),
                };
                // Nothing returned is right when a delete superseded the write, or, for
                // GET's last-write-wins pick, when a delete with a later timestamp is
                // concurrent with the write or with a write that superseded it (a SET
                // minted after it on the replica supersedes it, whatever its timestamp).
                if observed {
                    continue;
                }
                let key_writes = writes_by_key
                    .get(write.key.as_slice())
                    .into_iter()
                    .flatten();
                let carriers: Vec<WriteId> = key_writes
                    .copied()
                    .filter(|&x| shown.supersedes(x, id))
                    .collect();
                let key_deletes = shown
                    .deletes
                    .get(write.key.as_slice())
                    .cloned()
                    .unwrap_or_default();
                let deleted = key_deletes.into_iter().any(|d| {
                    shown.supersedes(d, id)
                        || (read.kind == OperationKind::Get && carriers.iter().any(|&x| d > x))
                });
                if !deleted {
                    violations.push(Violation {
                        property: 7,
                        detail: format!(
                            "a {:?} of {:?} after acknowledged write {id} on the same connection returned {:?}, which does not observe it",
                            read.kind,
                            String::from_utf8_lossy(&read.key),
                            read.read_values
                        ),
                    });
                }
            }
        }
    }
    violations
}

/// The replicas (node indices) of `key` and what each holds.
fn replica_states(cluster: &Cluster, key: &[u8]) -> Vec<(usize, VersionSet)> {
    let partition = cluster.ring.partition_of(key);
    cluster
        .ring
        .preference_list(partition)
        .map(|id| {
            let index = id.0 as usize - 1;
            (index, cluster.stored(index, key).unwrap_or_default())
        })
        .collect()
}

fn holds(versions: &VersionSet, id: WriteId) -> bool {
    versions.siblings().any(|s| write_id_of(s.value) == id)
}

/// Property 1.
pub fn no_acknowledged_write_lost(cluster: &Cluster) -> Vec<Violation> {
    let history = &cluster.history;
    let mut violations: Vec<Violation> = history
        .reused_dots
        .iter()
        .map(|(key, dot, first, second)| Violation {
            property: 1,
            detail: format!(
                "{:?}: dot {dot:?} named write {first} and write {second}",
                String::from_utf8_lossy(key)
            ),
        })
        .collect();
    // The causal past of every stored delete, by key.
    let mut delete_pasts: BTreeMap<&[u8], Vec<&VersionVector>> = BTreeMap::new();
    let mut delete_ids: BTreeMap<&[u8], Vec<WriteId>> = BTreeMap::new();
    for operation in &history.operations {
        if let (true, Some(id)) = (operation.kind.is_delete(), operation.write_id) {
            if history.dots.contains_key(&id) {
                delete_ids
                    .entry(operation.key.as_slice())
                    .or_default()
                    .push(id);
            }
            if let Some(past) = history.causal_past.get(&id) {
                delete_pasts
                    .entry(operation.key.as_slice())
                    .or_default()
                    .push(past);
            }
        }
    }
    for operation in &history.operations {
        let (Some(id), Outcome::Ok) = (operation.write_id, &operation.outcome) else {
            continue;
        };
        let Some(dots) = history.dots.get(&id) else {
            violations.push(Violation {
                property: 1,
                detail: format!(
                    "write {id} of {:?} was acknowledged but never stored durably",
                    String::from_utf8_lossy(&operation.key)
                ),
            });
            continue;
        };
        let removed = history.removed.contains(&operation.key);
        // Directly, or through writes that superseded it: reaping removes the clock
        // entries of one-shot writers every replica superseded, so a later delete's
        // context may no longer name the write's dot.
        let reaped_with_a_delete = removed
            && (delete_pasts
                .get(operation.key.as_slice())
                .is_some_and(|pasts| {
                    pasts
                        .iter()
                        .any(|past| dots.iter().any(|&dot| covers(past, dot)))
                })
                || superseded_by(
                    cluster,
                    &operation.key,
                    delete_ids
                        .get(operation.key.as_slice())
                        .cloned()
                        .unwrap_or_default(),
                    dots,
                ));
        let reaped_delete = removed && operation.kind.is_delete();
        for (replica, versions) in replica_states(cluster, &operation.key) {
            if holds(&versions, id) || superseded(cluster, &operation.key, &versions, dots) {
                continue;
            }
            if reaped_with_a_delete && !reaped_delete {
                continue;
            }
            if reaped_delete && !holds_what_it_deleted(cluster, &versions, id) {
                continue;
            }
            let detail = if reaped_delete {
                format!(
                    "a value acknowledged delete {id} of {:?} superseded is back on node {} after the delete was reaped ({} siblings)",
                    String::from_utf8_lossy(&operation.key),
                    replica + 1,
                    versions.sibling_count()
                )
            } else {
                format!(
                    "acknowledged write {id} of {:?} is neither on node {} nor superseded by what it holds ({} siblings)",
                    String::from_utf8_lossy(&operation.key),
                    replica + 1,
                    versions.sibling_count()
                )
            };
            violations.push(Violation {
                property: 1,
                detail,
            });
        }
    }
    violations
}

/// True when a sibling of `versions` is one delete `id` superseded: a deleted value
/// is back.
fn holds_what_it_deleted(cluster: &Cluster, versions: &VersionSet, id: WriteId) -> bool {
    let Some(past) = cluster.history.causal_past.get(&id) else {
        return true; // nothing to judge by: keep the strict verdict
    };
    versions
        .siblings()
        .any(|sibling| sibling.dot.is_some_and(|dot| covers(past, dot)))
}

/// True when a sibling of `versions` causally follows one of `dots`.
fn superseded(cluster: &Cluster, key: &[u8], versions: &VersionSet, dots: &BTreeSet<Dot>) -> bool {
    let kept = versions.siblings().map(|s| write_id_of(s.value)).collect();
    superseded_by(cluster, key, kept, dots)
}

/// True when one of the writes `kept` causally follows one of `dots`.
fn superseded_by(
    cluster: &Cluster,
    key: &[u8],
    mut kept: Vec<WriteId>,
    dots: &BTreeSet<Dot>,
) -> bool {
    let history = &cluster.history;
    let past_of = |id: WriteId| history.causal_past.get(&id);
    let covered_by = |id: WriteId, dots: &BTreeSet<Dot>| {
        past_of(id).is_some_and(|past| dots.iter().any(|&dot| covers(past, dot)))
    };
    if kept.iter().any(|&id| covered_by(id, dots)) {
        return true;
    }
    // Transitively: a held write superseded a write that superseded this one. A plain
    // write's copies can have different pasts (a retried forward minted on two
    // replicas), so one copy's clock may name what another superseded.
    let mut others: Vec<(WriteId, &BTreeSet<Dot>)> = history
        .operations
        .iter()
        .filter(|op| op.key == key)
        .filter_map(|op| Some((op.write_id?, history.dots.get(&op.write_id?)?)))
        .filter(|(id, _)| !kept.contains(id))
        .collect();
    loop {
        let (newly, rest): (Vec<_>, Vec<_>) = others
            .into_iter()
            .partition(|(_, their)| kept.iter().any(|&id| covered_by(id, their)));
        if newly.is_empty() {
            return false;
        }
        if newly.iter().any(|&(id, _)| covered_by(id, dots)) {
            return true;
        }
        kept.extend(newly.into_iter().map(|(id, _)| id));
        others = rest;
    }
}

/// A one-shot writer id (a stand-in's hint, a retried forward's attempt).
fn is_one_shot(id: ringkv_core::NodeId) -> bool {
    id.0 & ringkv_core::node::STAND_IN_WRITER_BIT != 0
}

/// Every key the run's operations named.
fn operation_keys(cluster: &Cluster) -> BTreeSet<&[u8]> {
    cluster
        .history
        .operations
        .iter()
        .map(|op| op.key.as_slice())
        .collect()
}

/// The most clock entries any node's copy of a key held at the end (a clock past its
/// bound refuses writes that need a new entry).
pub fn largest_clock(cluster: &Cluster) -> usize {
    operation_keys(cluster)
        .into_iter()
        .flat_map(|key| {
            (0..cluster.nodes.len()).filter_map(move |index| cluster.stored(index, key))
        })
        .map(|versions| versions.clock_size())
        .max()
        .unwrap_or(0)
}

/// Property 2.
pub fn replicas_converge(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
    for key in operation_keys(cluster) {
        let states = replica_states(cluster, key);
        let Some((first_node, first)) = states.first() else {
            continue;
        };
        let reap_spreading = cluster.history.removed.contains(key)
            && states.iter().all(|(_, versions)| versions.is_deleted());
        // A clock compaction that reached some replicas and not yet the others (a
        // lost message, a record changed meanwhile) differs only in entries that no
        // value depends on; anti-entropy brings them back and a later walk compacts
        // all copies. Whether compaction brought a superseded value back is property
        // 3's question.
        let first_compacted = first.without_dead_writers(is_one_shot);
        for (node, versions) in &states[1..] {
            let same = versions.without_dead_writers(is_one_shot) == first_compacted;
            if !same && !reap_spreading {
                violations.push(Violation {
                    property: 2,
                    detail: format!(
                        "{:?}: node {} holds {} siblings (clock {:?}), node {} holds {} (clock {:?})",
                        String::from_utf8_lossy(key),
                        first_node + 1,
                        first.sibling_count(),
                        first.join().entries(),
                        node + 1,
                        versions.sibling_count(),
                        versions.join().entries()
                    ),
                });
            }
        }
    }
    violations.extend(trees_match_stores(cluster));
    for sim in &cluster.nodes {
        let held = sim.node.as_ref().map_or(0, |node| node.hints_held());
        if held > 0 {
            violations.push(Violation {
                property: 2,
                detail: format!(
                    "node {} still holds {held} hints after quiescence",
                    sim.id.0
                ),
            });
        }
    }
    violations
}

/// Part of property 2: a quiesced node's anti-entropy tree is its store's, so replicas
/// holding the same records report the same roots (a stale bucket would make two equal
/// replicas look different until an exchange happened to visit the partition).
fn trees_match_stores(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
    for sim in &cluster.nodes {
        let Some(node) = sim.node.as_ref() else {
            continue;
        };
        let partition_bits = node.config().partition_bits;
        let roots = ringkv_core::node::tree_roots(partition_bits, sim.disk.records(Space::Data));
        for (partition, &root) in roots.iter().enumerate() {
            match node.partition_root(partition) {
                Some(held) if held != root => violations.push(Violation {
                    property: 2,
                    detail: format!(
                        "node {}'s anti-entropy tree of partition {partition} is not its store's \
                         ({held:016x}, the store gives {root:016x})",
                        sim.id.0
                    ),
                }),
                _ => {}
            }
        }
    }
    violations
}

/// Property 3.
pub fn causality_holds(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = siblings_are_concurrent(cluster);
    for operation in &cluster.history.operations {
        let (Some(id), Outcome::Ok, true) = (
            operation.write_id,
            &operation.outcome,
            operation.kind.has_context(),
        ) else {
            continue;
        };
        for (replica, versions) in replica_states(cluster, &operation.key) {
            for &seen in &operation.context_siblings {
                if holds(&versions, seen)
                    && !retry_copy_came_back(cluster, operation, &versions, seen)
                {
                    violations.push(Violation {
                        property: 3,
                        detail: format!(
                            "write {seen} of {:?} came back on node {} after write {id} superseded it",
                            String::from_utf8_lossy(&operation.key),
                            replica + 1
                        ),
                    });
                }
            }
        }
    }
    violations
}

/// Property 3 for every write, blind ones included: siblings a replica holds at the
/// end are concurrent. A write held beside one whose causal past covers every copy of
/// it came back after it was superseded (a copy arriving where its dot was forgotten,
/// as after a clock compaction some copy of the key had not seen).
fn siblings_are_concurrent(cluster: &Cluster) -> Vec<Violation> {
    let history = &cluster.history;
    let mut violations = Vec::new();
    for key in operation_keys(cluster) {
        for (replica, versions) in replica_states(cluster, key) {
            let held: Vec<WriteId> = versions.siblings().map(|s| write_id_of(s.value)).collect();
            for &later in &held {
                let Some(past) = history.causal_past.get(&later) else {
                    continue;
                };
                for &earlier in held.iter().filter(|&&id| id != later) {
                    let superseded = history
                        .dots
                        .get(&earlier)
                        .is_some_and(|dots| dots.iter().all(|&dot| covers(past, dot)));
                    if superseded {
                        violations.push(Violation {
                            property: 3,
                            detail: format!(
                                "write {earlier} of {:?} is held on node {} beside write {later}, which superseded it",
                                String::from_utf8_lossy(key),
                                replica + 1
                            ),
                        });
                    }
                }
            }
        }
    }
    violations
}

/// How many (write, replica) pairs property 3 let pass as a retry copy back.
pub fn retry_copies_back(cluster: &Cluster) -> usize {
    let mut count = 0;
    for operation in &cluster.history.operations {
        if !(operation.outcome == Outcome::Ok && operation.kind.has_context()) {
            continue;
        }
        for (_, versions) in replica_states(cluster, &operation.key) {
            for &seen in &operation.context_siblings {
                if holds(&versions, seen)
                    && retry_copy_came_back(cluster, operation, &versions, seen)
                {
                    count += 1;
                }
            }
        }
    }
    count
}

/// True when every copy of write `seen` that `versions` holds is an attempt dot of a
/// retried forward (`(id, 1)` of a one-shot id) that `operation`'s context did not
/// cover, while it covered another copy of the write: the documented at-least-once case
/// of an internal retry (`coordinator::forward`): a client superseded an earlier copy
/// before a later attempt's copy reached its replica, and that copy stays as a sibling
/// (with the write's timestamp, so a plain GET still picks the later write).
fn retry_copy_came_back(
    cluster: &Cluster,
    operation: &Operation,
    versions: &ringkv_core::VersionSet,
    seen: WriteId,
) -> bool {
    let Some(context) = &operation.context else {
        return false;
    };
    let Some(dots) = cluster.history.dots.get(&seen) else {
        return false;
    };
    let is_attempt_dot = |dot: Dot| dot.counter == 1 && is_one_shot(dot.node);
    dots.iter().any(|&dot| covers(context, dot))
        && versions
            .siblings()
            .filter(|sibling| write_id_of(sibling.value) == seen)
            .all(|sibling| {
                sibling
                    .dot
                    .is_some_and(|dot| is_attempt_dot(dot) && !covers(context, dot))
            })
}

/// Property 4.
pub fn always_writable(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
    for operation in &cluster.history.operations {
        let Outcome::Failed(error) = &operation.outcome else {
            continue;
        };
        if !(error.starts_with("TIMEOUT") || error.starts_with("UNAVAILABLE")) {
            continue;
        }
        let Some(reachable) = promised_writable(cluster, operation) else {
            continue;
        };
        violations.push(Violation {
            property: 4,
            detail: format!(
                "write {:?} to {:?} at node {} failed ({error}) with {reachable} nodes reachable, W = {}",
                operation.write_id,
                String::from_utf8_lossy(&operation.key),
                operation.node + 1,
                operation.write_quorum
            ),
        });
    }
    violations.extend(no_request_waits_on_a_dead_node(cluster));
    violations
}

/// The longest a read or write may take while nodes are down and its quorum of live
/// nodes remains (no client waits on a dead node; the request timeout is 2 s).
pub const FAILURE_WINDOW_REQUEST_MS: u64 = 1_000;

/// The most nodes dead or cut off at once under which the bound is judged.
pub const FAILURE_WINDOW_NODES_MAX: usize = 2;

/// Property 4's latency bound: a read or write issued on an idle connection to a live
/// coordinator while the only faults are one or two nodes dead or cut off from it
/// (crashed, or partitioned away as a frozen node would be: the nodes it reaches all
/// reach each other; no loss, no failing disk, no membership change), with its quorum
/// of nodes reached, ends (answered or refused) within [`FAILURE_WINDOW_REQUEST_MS`],
/// unless the faults changed first. A coordinator that waits on a dead or frozen
/// replica instead of going to the next one (or to a stand-in) misses it.
fn no_request_waits_on_a_dead_node(cluster: &Cluster) -> Vec<Violation> {
    let bound = Duration::from_millis(FAILURE_WINDOW_REQUEST_MS);
    let mut violations = Vec::new();
    for (operation, down) in failure_window_requests(cluster) {
        let took = operation
            .end
            .map(|end| end.saturating_duration_since(operation.start));
        if took.is_none_or(|took| took > bound) {
            violations.push(Violation {
                property: 4,
                detail: format!(
                    "{:?} {:?} of {:?} at node {} took {took:?} ({:?}) with nodes {down:?} dead or cut off, quorum {}: a client waited on a dead node",
                    operation.kind,
                    operation.write_id,
                    String::from_utf8_lossy(&operation.key),
                    operation.node + 1,
                    operation.outcome,
                    quorum_of(operation)
                ),
            });
        }
    }
    violations
}

/// The quorum an operation waits for: R for a read, W for a write.
fn quorum_of(operation: &Operation) -> u8 {
    if operation.kind.is_write() {
        operation.write_quorum
    } else {
        operation.read_quorum
    }
}

/// How many requests the failure-window latency bound judged.
pub fn requests_judged_in_failure_windows(cluster: &Cluster) -> usize {
    failure_window_requests(cluster).len()
}

/// The requests the latency bound judges, each with the nodes (1-based) their
/// coordinator could not reach.
fn failure_window_requests(cluster: &Cluster) -> Vec<(&Operation, Vec<usize>)> {
    let bound = Duration::from_millis(FAILURE_WINDOW_REQUEST_MS);
    if cluster.parameters.disk.failure > 0.0 || !cluster.parameters.membership_changes.is_empty() {
        return Vec::new();
    }
    // When each connection's commands so far have all ended (`Instant::MAX`: never).
    let mut busy_until: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut judged = Vec::new();
    for operation in &cluster.history.operations {
        // A connection runs one command at a time: a command queued behind a waiting
        // one waits too, and is judged by the first.
        let idle = operation.connection == 0
            || busy_until
                .get(&operation.connection)
                .is_none_or(|&until| until <= operation.start);
        if operation.connection != 0 {
            let until = busy_until
                .entry(operation.connection)
                .or_insert(Instant::ZERO);
            *until = (*until).max(operation.end.unwrap_or(Instant::MAX));
        }
        let is_read = matches!(operation.kind, OperationKind::Get | OperationKind::VGet);
        if !idle || !(operation.kind.is_write() || is_read) || operation.in_transaction {
            continue;
        }
        let quorum = quorum_of(operation);
        let index = operation.start_epoch as usize;
        let Some(state) = cluster.epochs.get(index) else {
            continue;
        };
        // The nodes the coordinator reaches both ways; every other node is dead or
        // frozen to it. They must all reach each other (no partial partition inside).
        let linked = |a: usize, b: usize| {
            !state.blocked.contains(&(a, b)) && !state.blocked.contains(&(b, a))
        };
        let coordinator = operation.node;
        let reached: Vec<usize> = (0..state.up.len())
            .filter(|&node| state.up[node] && linked(coordinator, node))
            .collect();
        let clique = reached
            .iter()
            .all(|&a| reached.iter().all(|&b| a == b || linked(a, b)));
        let down: Vec<usize> = (0..state.up.len())
            .filter(|node| !reached.contains(node))
            .map(|node| node + 1)
            .collect();
        // One or two nodes, as an operator meets them. With more not yet marked down,
        // a stand-in chosen for a silent replica can be silent too, and each such
        // round waits out the replica timeout.
        let only_dead_or_frozen = clique
            && !state.lossy
            && state.failing_disks.iter().all(|&failing| !failing)
            && (1..=FAILURE_WINDOW_NODES_MAX).contains(&down.len());
        let lasted = cluster
            .epochs
            .get(index + 1)
            .is_none_or(|next| next.started >= operation.start + bound);
        if only_dead_or_frozen
            && state.up[coordinator]
            && reached.len() >= usize::from(quorum)
            && lasted
        {
            judged.push((operation, down));
        }
    }
    judged
}

/// Gossip rounds after a membership change before property 4 holds writes to account
/// (views agree within this many rounds: the membership scenario checks it).
pub const MEMBERSHIP_SETTLE_ROUNDS: u64 = 10;

/// Writes property 4 holds to account: how many the run had.
pub fn writes_promised_writable(cluster: &Cluster) -> usize {
    cluster
        .history
        .operations
        .iter()
        .filter(|op| promised_writable(cluster, op).is_some())
        .count()
}

/// For a write issued while, for the whole request and `request_timeout_ms` before it,
/// no fault changed, the network lost nothing, no disk failed at random, the
/// coordinator was up with a working disk, and at least W live nodes with working disks
/// were reachable both ways from it: how many were. `None` for every other operation,
/// and for writes within `MEMBERSHIP_SETTLE_ROUNDS` gossip rounds of a join or leave
/// (until gossip told the coordinator, a joiner is no use to it).
fn promised_writable(cluster: &Cluster, operation: &Operation) -> Option<usize> {
    let settle = std::time::Duration::from_millis(cluster.config.request_timeout_ms);
    if !operation.kind.is_write()
        || operation.start_epoch != operation.end_epoch
        || cluster.parameters.disk.failure > 0.0
    {
        return None;
    }
    let state = cluster.epochs.get(operation.start_epoch as usize)?;
    let coordinator = operation.node;
    let membership_settle = std::time::Duration::from_millis(
        cluster.config.gossip_interval_ms * MEMBERSHIP_SETTLE_ROUNDS,
    );
    let membership_settled = state.membership_changed_at == ringkv_core::Instant::ZERO
        || state.membership_changed_at + membership_settle <= operation.start;
    if state.started + settle > operation.start
        || !membership_settled
        || state.lossy
        || !state.up[coordinator]
        || state.failing_disks[coordinator]
    {
        return None;
    }
    // A node that has left the cluster serves no request: the promise is a member's.
    let end = operation.end.unwrap_or(cluster.now);
    if cluster.nodes[coordinator]
        .left_at
        .is_some_and(|at| at <= end)
    {
        return None;
    }
    // A stand-in whose hint store is at its bound refuses the hint: with the owners
    // down, the write then has no room to go (the bound is the promise's limit).
    let hints_refused = cluster.nodes.iter().any(|sim| {
        sim.hints_refused_at
            .iter()
            .any(|&at| operation.start <= at && at <= end)
    });
    if hints_refused {
        return None;
    }
    let reachable = (0..state.up.len())
        .filter(|&node| {
            state.up[node]
                && !state.failing_disks[node]
                && !state.blocked.contains(&(coordinator, node))
                && !state.blocked.contains(&(node, coordinator))
        })
        .count();
    (reachable >= usize::from(operation.write_quorum)).then_some(reachable)
}

/// Property 5.
pub fn bounds_hold(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
    if cluster.over_bounds() {
        violations.push(Violation {
            property: 5,
            detail: format!(
                "the run passed its bounds ({} events, {} client operations at {:?}; at most {} and {}): it was stopped, not finished",
                cluster.stats.events,
                cluster.history.operations.len(),
                cluster.now,
                cluster.parameters.events_max,
                super::cluster::RUN_OPERATIONS_MAX
            ),
        });
    }
    for sim in &cluster.nodes {
        for (name, (peak, max)) in &sim.bounds {
            if peak > max {
                violations.push(Violation {
                    property: 5,
                    detail: format!("node {}: {name} peaked at {peak}, bound {max}", sim.id.0),
                });
            }
        }
    }
    let network = cluster.network.stats();
    if network.in_flight_peak > cluster.parameters.network.in_flight_max {
        violations.push(Violation {
            property: 5,
            detail: format!("network queue peaked at {}", network.in_flight_peak),
        });
    }
    if cluster.stats.decode_failures > 0 {
        violations.push(Violation {
            property: 5,
            detail: format!("{} frames failed to decode", cluster.stats.decode_failures),
        });
    }
    if cluster.stats.bad_replies > 0 {
        violations.push(Violation {
            property: 5,
            detail: format!(
                "{} client replies were not RESP or carried an unreadable context",
                cluster.stats.bad_replies
            ),
        });
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::swarm::Parameters;

    #[test]
    fn undecodable_frames_and_broken_replies_are_violations() {
        let mut cluster = Cluster::new(Parameters::from_seed(1));
        assert!(
            bounds_hold(&cluster).is_empty(),
            "a fresh cluster holds its bounds"
        );
        cluster.stats.bad_replies = 2;
        cluster.stats.decode_failures = 1;
        let violations = bounds_hold(&cluster);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations.iter().all(|v| v.property == 5));
    }
}
