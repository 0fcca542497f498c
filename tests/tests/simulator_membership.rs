//! Membership under load: a cluster grows from 3 to 8 nodes, one join at a
//! time, while clients read and write, then two of the nodes leave. Nothing
//! acknowledged may be lost (the seven checkers, judged against the placement the
//! cluster ends with), every copy must have moved to the final replicas and left the
//! nodes that no longer replicate it, the leavers must reach `Left` everywhere, and
//! every disagreement between views must end within a bounded number of gossip rounds.
//!
//! No read sweep: handoff, hinted handoff, read repair and anti-entropy are what move
//! and converge the data.

use ringkv_core::node::Sabotage;
use ringkv_core::wire::MemberStatus;
use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::sim::cluster::Cluster;
use ringkv_tests::sim::swarm::{Faults, MembershipChange, Parameters};
use ringkv_tests::sim::{checkers, run_seed};

/// Ten seeds from 0; `RINGKV_SEED`, `RINGKV_SIM_SEED_BASE` and `RINGKV_SIM_RUNS`
/// choose others (see `ringkv_tests::seeds`).
fn seeds() -> Vec<u64> {
    SeedPlan::from_env(10)
        .expect("seed variables")
        .seeds()
        .collect()
}

/// Seeds of the run without faults that once failed, replayed beside the plan's unless
/// a seed variable chose others: 32005900056, a member that had not yet heard of a join
/// told a reaping leader it held nothing to hand off (its old view made the partition
/// its own), and the delete was reaped before its copy of the deleted value came back.
const SEEDS_ONCE_FAILED: [u64; 1] = [32_005_900_056];

/// The same for the crash run: 32005807424, a leaver that had marked itself `Left`
/// still coordinated client writes, minted two as a stand-in (it saw their replicas
/// down, since members drop a departed node's frames) and held hints it could never
/// deliver.
const CRASH_SEEDS_ONCE_FAILED: [u64; 1] = [32_005_807_424];

fn seeds_and(once_failed: &[u64]) -> Vec<u64> {
    let plan = SeedPlan::from_env(10).expect("seed variables");
    let mut seeds: Vec<u64> = plan.seeds().collect();
    if !plan.replay && std::env::var("RINGKV_SIM_SEED_BASE").is_err() {
        seeds.extend(once_failed);
    }
    seeds
}
/// Gossip rounds (1 s each) within which views must agree again after the last change
/// a node made to its own entry (a join, a status change, a restart); property 4 relies
/// on it.
const AGREEMENT_ROUNDS_MAX: u64 = checkers::MEMBERSHIP_SETTLE_ROUNDS;

fn grow_then_shrink(seed: u64, faults: Faults) -> Parameters {
    let mut parameters = Parameters::scenario(seed, 3, 300);
    parameters.faults = faults;
    let mut changes: Vec<(u64, MembershipChange)> = (0..5)
        .map(|i| (1_000 + i * 3_000, MembershipChange::Join))
        .collect();
    changes.push((17_000, MembershipChange::Leave(1)));
    changes.push((21_000, MembershipChange::Leave(4)));
    parameters.membership_changes = changes;
    parameters.fault_phase_ms = 26_000;
    // Clients go on past the settle time after the last change, so property 4 judges
    // writes to the shrunk cluster.
    parameters.calm_phase_ms = 12_000;
    parameters.read_sweep = false;
    parameters.entropy_phase_ms = 30_000;
    parameters
}

/// Everything the scenario promises beyond the seven checkers.
fn membership_violations(cluster: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    let running: Vec<_> = cluster
        .nodes
        .iter()
        .filter_map(|sim| sim.node.as_ref())
        .collect();
    let digest = running[0].membership().placement_digest();
    for node in &running {
        if node.membership().placement_digest() != digest {
            found.push(format!("node {} disagrees on placement", node.id().0));
        }
        for leaver in [2, 5] {
            let status = node
                .membership()
                .get(ringkv_core::NodeId(leaver))
                .map(|m| m.status);
            if status != Some(MemberStatus::Left) {
                found.push(format!(
                    "node {} sees node {leaver} as {status:?}",
                    node.id().0
                ));
            }
        }
    }
    if cluster.ring.members().len() != 6 {
        found.push(format!("{} members placed", cluster.ring.members().len()));
    }
    let keys: std::collections::BTreeSet<&[u8]> = cluster
        .history
        .operations
        .iter()
        .map(|operation| operation.key.as_slice())
        .collect();
    for key in keys {
        let partition = cluster.ring.partition_of(key);
        for (index, sim) in cluster.nodes.iter().enumerate() {
            let replica = cluster.ring.preference_list(partition).any(|n| n == sim.id);
            if !replica && cluster.stored(index, key).is_some() {
                found.push(format!(
                    "node {} still holds {} after handoff",
                    sim.id.0,
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    let round_ms = cluster.config.gossip_interval_ms;
    for &(from, last_change, to) in &cluster.view_disagreements {
        let rounds = to.saturating_duration_since(last_change).as_millis() as u64 / round_ms;
        if rounds > AGREEMENT_ROUNDS_MAX {
            found.push(format!(
                "views disagreed from {from:?} to {to:?}: {rounds} rounds after the last change"
            ));
        }
    }
    found
}

fn check_seed(seed: u64, faults: Faults) -> (u64, u64) {
    let (cluster, violations) = run_seed(grow_then_shrink(seed, faults));
    let mut all: Vec<String> = violations.iter().map(ToString::to_string).collect();
    all.extend(membership_violations(&cluster));
    assert!(
        all.is_empty(),
        "RINGKV_SEED={seed} (membership scenario): {}",
        all.join("\n")
    );
    assert!(
        checkers::writes_promised_writable(&cluster) > 0 || faults.any(),
        "RINGKV_SEED={seed}: no write was judged by property 4"
    );
    let stats = cluster.node_stats();
    let longest = cluster
        .view_disagreements
        .iter()
        .map(|(_, last, to)| to.saturating_duration_since(*last).as_millis())
        .max()
        .unwrap_or(0);
    println!(
        "seed {seed}: {} operations, {} keys handed off ({} records sent, {} bytes), \
         {} epochs, {} one-shot writes, {} disagreements, longest {longest} ms after a change",
        cluster.history.operations.len(),
        stats.handoff_keys_deleted,
        stats.handoff_keys_sent,
        stats.handoff_bytes_sent,
        stats.writer_epochs_started,
        stats.one_shot_writes,
        cluster.view_disagreements.len(),
    );
    (stats.handoff_keys_deleted, stats.handoff_keys_sent)
}

#[test]
fn growing_to_eight_nodes_and_shrinking_by_two_loses_nothing() {
    let mut deleted = 0;
    let seeds = seeds_and(&SEEDS_ONCE_FAILED);
    for &seed in &seeds {
        let (seed_deleted, _) = check_seed(seed, Faults::default());
        assert!(
            seed_deleted > 0,
            "RINGKV_SEED={seed}: nothing was handed off"
        );
        deleted += seed_deleted;
    }
    println!("handoff deleted {deleted} keys over {} seeds", seeds.len());
}

/// The scenario can fail: a node that deletes what it hands off before the replicas
/// confirmed it loses acknowledged writes, and one that keeps minting under its old
/// writer id after regaining a partition reuses dots. Each must be caught on some seed
/// (and each catching seed passes with the sabotage off, above).
#[test]
fn the_scenario_catches_unconfirmed_deletes_and_reused_writer_ids() {
    let sabotaged = |seed, sabotage| {
        let mut parameters = grow_then_shrink(seed, Faults::default());
        parameters.sabotage = sabotage;
        let (cluster, violations) = run_seed(parameters);
        if let Some(first) = violations.first() {
            println!("seed {seed}: {first}");
        }
        !violations.is_empty() || !membership_violations(&cluster).is_empty()
    };
    for sabotage in [
        Sabotage {
            handoff_unconfirmed: true,
            ..Sabotage::default()
        },
        Sabotage {
            ignore_writer_epoch: true,
            ..Sabotage::default()
        },
    ] {
        // The first catching seed is enough; the clean test runs the same seeds.
        let caught = seeds().into_iter().find(|&seed| sabotaged(seed, sabotage));
        println!("{sabotage:?}: first caught on seed {caught:?}");
        assert!(caught.is_some(), "{sabotage:?} went unnoticed");
    }
}

/// The same plan with nodes crashing and restarting throughout (unsynced writes lost):
/// handoff resumes after either side restarts, from what it had deleted.
#[test]
fn growing_and_shrinking_through_crashes_loses_nothing() {
    let crashes = Faults {
        crashes: true,
        mean_interval_ms: 1_500,
        max_down: 1,
        ..Faults::default()
    };
    for seed in seeds_and(&CRASH_SEEDS_ONCE_FAILED) {
        check_seed(seed, crashes);
    }
}
