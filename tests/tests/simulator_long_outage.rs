//! A long outage: a node down for a long period while clients write and delete,
//! then back. Hinted handoff and anti-entropy (no read sweep) must converge it, and no
//! deleted or superseded value may come back (the causality checker, and property 1 for
//! deletes whose tombstones were reaped). Tombstones are reaped with a 2 s grace period
//! throughout: never while node 1 is down, and plenty once it is back.

use ringkv_core::node::Space;
use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::sim::history::Outcome;
use ringkv_tests::sim::run_seed;
use ringkv_tests::sim::swarm::Parameters;

/// The fixed seeds `cargo test` runs (the control runs the first); the scenario
/// itself takes others from `RINGKV_SIM_SEED_BASE`, `RINGKV_SIM_RUNS` or `RINGKV_SEED`
/// (`.ci/run` runs a fresh base).
const SEEDS: std::ops::Range<u64> = 1..11;

fn long_outage(seed: u64) -> Parameters {
    let mut parameters = Parameters::scenario(seed, 4, 100);
    // Node 1 is down for the whole 20 s of load, and back when the faults stop.
    parameters.down_from_start = 1;
    parameters.fault_phase_ms = 20_000;
    parameters.read_sweep = false;
    parameters.entropy_phase_ms = 20_000;
    parameters.tombstone_grace_ms = 2_000;
    parameters.reap_interval_ms = 500;
    parameters
}

#[test]
fn a_node_down_for_long_converges_and_deletes_stay_deleted() {
    let plan = SeedPlan::from_env_at(SEEDS.start, SEEDS.end - SEEDS.start).expect("seed variables");
    println!("long-outage scenario: seeds {}..+{}", plan.base, plan.runs);
    for seed in plan.seeds() {
        let (cluster, violations) = run_seed(long_outage(seed));
        assert!(
            violations.is_empty(),
            "RINGKV_SEED={seed} (long outage): {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let stats = cluster.node_stats();
        assert!(
            stats.hints_delivered > 0,
            "RINGKV_SEED={seed}: hints reached node 1"
        );
        let deletes = cluster
            .history
            .operations
            .iter()
            .filter(|op| op.kind.is_delete())
            .filter(|op| op.outcome == Outcome::Ok)
            .count();
        let held = cluster.nodes[0].disk.records(Space::Data).count();
        println!(
            "seed {seed}: {deletes} deletes acknowledged, node 1 holds {held} keys, {} tombstones reaped ({} walks, {} blocked)",
            stats.reap_keys, stats.reap_walks, stats.reap_walks_blocked
        );
        assert!(deletes > 0 && held > 0, "RINGKV_SEED={seed}");
        assert!(
            stats.reap_keys > 0,
            "RINGKV_SEED={seed}: tombstones were reaped"
        );
        assert!(
            stats.reap_walks_blocked > 0,
            "RINGKV_SEED={seed}: node 1 being down held reaping back"
        );
    }
}

/// The scenario can fail: with hint delivery, read repair and anti-entropy all off,
/// the node that was away stays behind and the convergence checker says so.
#[test]
fn without_any_repair_the_returning_node_stays_behind() {
    let seed = SEEDS.start;
    let mut parameters = long_outage(seed);
    parameters.without_repair();
    let (_, violations) = run_seed(parameters);
    assert!(
        violations
            .iter()
            .any(|v| v.to_string().starts_with("property 2")),
        "RINGKV_SEED={seed}: no repair, yet replicas converged"
    );
}
