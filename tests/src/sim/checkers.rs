//! The five properties of design.md section 9, checked on a quiesced cluster's disks
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
//!    still spreading), and no node still holds hints.
//! 3. Causality: after an acknowledged VSET or VDEL, no sibling its context's read
//!    returned is on any replica.
//! 4. Always writable: a write that failed with a quorum error while, for the whole
//!    request and `request_timeout_ms` before it, no fault changed, the network lost
//!    nothing, and at least W live nodes with working disks were reachable both ways
//!    from its coordinator, is a violation.
//! 5. Bounds hold: no node's bounded structure peaked past its bound, the network queue
//!    stayed within its bound, every frame decoded and every client reply parsed.

use super::cluster::Cluster;
use super::history::{Operation, Outcome, WriteId, covers, write_id_of};
use ringkv_core::VersionSet;
use ringkv_core::version::{Dot, VersionVector};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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
    let mut violations = Vec::new();
    violations.extend(no_acknowledged_write_lost(cluster));
    violations.extend(replicas_converge(cluster));
    violations.extend(causality_holds(cluster));
    violations.extend(always_writable(cluster));
    violations.extend(bounds_hold(cluster));
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
    for operation in &history.operations {
        if let (true, Some(id)) = (operation.kind.is_delete(), operation.write_id) {
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
        let reaped_with_a_delete = removed
            && delete_pasts
                .get(operation.key.as_slice())
                .is_some_and(|pasts| {
                    pasts
                        .iter()
                        .any(|past| dots.iter().any(|&dot| covers(past, dot)))
                });
        let reaped_delete = removed && operation.kind.is_delete();
        for (replica, versions) in replica_states(cluster, &operation.key) {
            if holds(&versions, id) || superseded(cluster, &versions, dots) {
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
fn superseded(cluster: &Cluster, versions: &VersionSet, dots: &BTreeSet<Dot>) -> bool {
    versions.siblings().any(|sibling| {
        cluster
            .history
            .causal_past
            .get(&write_id_of(sibling.value))
            .is_some_and(|past| dots.iter().any(|&dot| covers(past, dot)))
    })
}

/// Property 2.
pub fn replicas_converge(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
    let keys: BTreeSet<&[u8]> = cluster
        .history
        .operations
        .iter()
        .map(|op| op.key.as_slice())
        .collect();
    for key in keys {
        let states = replica_states(cluster, key);
        let Some((first_node, first)) = states.first() else {
            continue;
        };
        let reap_spreading = cluster.history.removed.contains(key)
            && states.iter().all(|(_, versions)| versions.is_deleted());
        for (node, versions) in &states[1..] {
            if versions != first && !reap_spreading {
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

/// Property 3.
pub fn causality_holds(cluster: &Cluster) -> Vec<Violation> {
    let mut violations = Vec::new();
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
                if holds(&versions, seen) {
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
    violations
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
