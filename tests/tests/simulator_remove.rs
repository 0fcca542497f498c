//! Replacing a dead node for good: 5 nodes (N=3 R=2 W=2) under reads, writes and
//! deletes; node 5 is destroyed (crashed, its disks wiped) 3 s in, and an operator
//! removes it through node 1 (`RINGKV.REMOVE`, reissued each second until accepted;
//! refused while node 5 was heard from within the gossip silence period). Clients go on
//! for 10 s after the removal, then the cluster gets `REPAIR_MS` with no clients at
//! the default anti-entropy interval.
//!
//! Promised: nothing acknowledged is lost (the seven checkers, judged against the
//! four-node placement the cluster ends with: every key's replicas hold the same
//! record), every view sees node 5 as `Left`, and every tombstone is reaped (grace
//! 2 s), which needs every replica of its partition to hold it alike.

use ringkv_core::node::Space;
use ringkv_core::wire::MemberStatus;
use ringkv_core::{NodeId, VersionSet};
use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::sim::cluster::Cluster;
use ringkv_tests::sim::history::Outcome;
use ringkv_tests::sim::run_seed;
use ringkv_tests::sim::swarm::{MembershipChange, Parameters};

/// Time from the last client request to the end of the run: the "in seconds" the
/// scenario promises for every key to be back at N replicas and every tombstone reaped.
const REPAIR_MS: u64 = 15_000;

const DESTROYED: usize = 4;

/// Seeds that failed once, each fixed since (run with the fixed seeds unless a seed
/// variable chooses others): 1007, an exchange owed to a new replica paid while that
/// replica had not yet heard it replicates the partition (it ignored the exchange);
/// 1146, a replica left without a tombstone its peers held after a partial reap (the
/// walk saw the difference and did nothing); 5004 and 5127, a read that saw a record
/// just before the replicas reaped it repaired it back onto replicas whose leader no
/// longer held it; 9277 and 9496, the same with a write landing right after, leaving
/// the replicas' records different; 41503120977, a write reached one replica before
/// the leader's `ReapKeys` while the other two reaped, so its reaping delete kept the
/// record and the write left the old tombstone there as a sibling the others never saw
/// (no walk looks again once the leader reaped; a kept reap now owes exchanges).
const ONCE_FAILED: [u64; 7] = [1007, 1146, 5004, 5127, 9277, 9496, 41503120977];

fn seeds() -> Vec<u64> {
    let plan = SeedPlan::from_env(10).expect("seed variables");
    let mut seeds: Vec<u64> = plan.seeds().collect();
    if !plan.replay && std::env::var("RINGKV_SIM_SEED_BASE").is_err() {
        seeds.extend(ONCE_FAILED);
    }
    seeds
}

fn destroy_and_remove(seed: u64) -> Parameters {
    let mut parameters = Parameters::scenario(seed, 5, 200);
    parameters.membership_changes = vec![
        (3_000, MembershipChange::Destroy(DESTROYED)),
        (4_000, MembershipChange::Remove(DESTROYED)),
    ];
    // The removal is accepted once node 5 has been silent for the gossip silence
    // period (10 s): about 13 s in. Clients go on 10 s after that.
    parameters.fault_phase_ms = 24_000;
    parameters.read_sweep = false;
    parameters.entropy_phase_ms = REPAIR_MS;
    parameters.tombstone_grace_ms = 2_000;
    parameters.reap_interval_ms = 500;
    // 256 partitions: anti-entropy's round robin (one partition a second) takes over
    // three minutes to visit a node's partitions, so repairs must come from what the
    // removal and the walks owe, as with the default 1,024 on a real cluster.
    parameters.partition_bits = 8;
    parameters
}

/// What the scenario promises beyond the seven checkers.
fn removal_violations(cluster: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    let removed = NodeId(DESTROYED as u64 + 1);
    for node in cluster.nodes.iter().filter_map(|sim| sim.node.as_ref()) {
        let status = node.membership().get(removed).map(|m| m.status);
        if status != Some(MemberStatus::Left) {
            found.push(format!(
                "node {} sees node {} as {status:?}",
                node.id().0,
                removed.0
            ));
        }
        let reapable = node.stats().records_reapable;
        if reapable > 0 {
            found.push(format!(
                "node {} holds {reapable} records reaping has yet to remove {REPAIR_MS} ms after the last request",
                node.id().0
            ));
        }
    }
    // Name the records (tombstones only: a record holding superseded one-shot
    // entries is judged by the count above), with every final replica's copy.
    for (index, sim) in cluster.nodes.iter().enumerate() {
        for (key, record) in sim.disk.records(Space::Data) {
            if !VersionSet::record_is_deleted(record) {
                continue;
            }
            let partition = cluster.ring.partition_of(key);
            let copies: Vec<String> = cluster
                .ring
                .preference_list(partition)
                .map(|id| {
                    let copy = cluster.stored(id.0 as usize - 1, key);
                    format!("node {}: {copy:?}", id.0)
                })
                .collect();
            found.push(format!(
                "node {} holds a tombstone of {:?} (partition {partition}); replicas: {}",
                index + 1,
                String::from_utf8_lossy(key),
                copies.join("; ")
            ));
        }
    }
    if cluster.ring.members().iter().any(|m| m.id == removed) {
        found.push(format!("node {} is still placed", removed.0));
    }
    found
}

fn check_seed(seed: u64) {
    let (cluster, violations) = run_seed(destroy_and_remove(seed));
    let mut all: Vec<String> = violations.iter().map(ToString::to_string).collect();
    all.extend(removal_violations(&cluster));
    assert!(
        all.is_empty(),
        "RINGKV_SEED={seed} (remove scenario): {}",
        all.join("\n")
    );
    let deletes = cluster
        .history
        .operations
        .iter()
        .filter(|op| op.kind.is_delete())
        .filter(|op| op.outcome == Outcome::Ok)
        .count();
    let stats = cluster.node_stats();
    println!(
        "seed {seed}: {} operations, {deletes} deletes acknowledged, {} hints dropped, \
         {} keys pushed by anti-entropy, {} tombstones reaped",
        cluster.history.operations.len(),
        stats.hints_dropped,
        stats.entropy_keys_pushed,
        stats.reap_keys,
    );
    assert!(deletes > 0, "RINGKV_SEED={seed}: no delete to reap");
    assert!(
        stats.reap_keys > 0,
        "RINGKV_SEED={seed}: nothing was reaped"
    );
}

#[test]
fn a_destroyed_member_removed_under_load_leaves_every_key_at_n_replicas_and_reaped() {
    for seed in seeds() {
        check_seed(seed);
    }
}

/// The scenario can fail: a node that never repairs (no hint delivery, read repair or
/// anti-entropy) leaves the new replicas of node 5's partitions without their keys.
#[test]
fn without_repair_the_new_replicas_stay_empty_and_the_scenario_says_so() {
    let seed = seeds()[0];
    let mut parameters = destroy_and_remove(seed);
    parameters.without_repair();
    let (cluster, violations) = run_seed(parameters);
    assert!(
        violations
            .iter()
            .any(|v| v.to_string().starts_with("property 2"))
            || !removal_violations(&cluster).is_empty(),
        "RINGKV_SEED={seed}: no repair, yet every key reached its new replicas"
    );
}
