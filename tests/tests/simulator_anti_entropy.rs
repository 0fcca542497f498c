//! A partition, writes on both sides, then the heal with read
//! repair and hinted handoff switched off and no read sweep: anti-entropy alone must
//! bring every replica to the same versions (property 2), losing nothing (property 1).
//!
//! Three nodes and N=3, so every write lands on real replicas (there is no node left to
//! stand in) and only the replicas that were reachable got it. A control run of the
//! same seeds with exchanges switched off must show replicas that did not converge:
//! the scenario can fail, and anti-entropy is what made it pass.

use ringkv_core::node::Sabotage;
use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::sim::run_seed;
use ringkv_tests::sim::swarm::{Faults, Parameters, Workload};

/// The fixed seeds `cargo test` runs (and the control always runs); the scenario
/// itself takes others from `RINGKV_SIM_SEED_BASE`, `RINGKV_SIM_RUNS` or `RINGKV_SEED`
/// (`.ci/run` runs a fresh base).
const SEEDS: std::ops::Range<u64> = 1..21;

fn partitioned_writes(seed: u64, exchanges_max: u32) -> Parameters {
    let mut parameters = Parameters::from_seed(seed);
    parameters.nodes = 3;
    parameters.replicas = 3;
    parameters.read_quorum = 1;
    parameters.write_quorum = 1;
    parameters.clients = 4;
    parameters.operations_per_client = 40;
    parameters.keys = 20;
    parameters.workload = Workload::SetsOnly;
    parameters.network.loss = 0.0;
    parameters.network.duplication = 0.0;
    parameters.disk.failure = 0.0;
    parameters.faults = Faults {
        partitions: true,
        one_way: true,
        mean_interval_ms: 500,
        max_down: 1,
        ..Faults::default()
    };
    parameters.fault_phase_ms = 5_000;
    parameters.calm_phase_ms = 0;
    parameters.sabotage = Sabotage {
        skip_repair: true,
        ..Sabotage::default()
    };
    parameters.read_sweep = false;
    parameters.entropy_phase_ms = 20_000;
    parameters.anti_entropy_interval_ms = 50;
    parameters.anti_entropy_exchanges_max = exchanges_max;
    parameters
}

#[test]
fn anti_entropy_alone_converges_replicas_after_a_partition() {
    let plan = SeedPlan::from_env_at(SEEDS.start, SEEDS.end - SEEDS.start).expect("seed variables");
    println!("anti-entropy scenario: seeds {}..+{}", plan.base, plan.runs);
    let mut pushed = 0;
    for seed in plan.seeds() {
        let (cluster, violations) = run_seed(partitioned_writes(seed, 2));
        assert!(
            violations.is_empty(),
            "RINGKV_SEED={seed} (anti-entropy scenario): {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let stats = cluster.node_stats();
        assert_eq!(stats.read_repairs_sent, 0, "RINGKV_SEED={seed}");
        pushed += stats.entropy_keys_pushed;
    }
    assert!(pushed > 0, "the partitions left something to repair");
}

#[test]
fn without_exchanges_the_same_partitions_leave_replicas_apart() {
    let diverged = SEEDS
        .filter(|&seed| {
            let (_, violations) = run_seed(partitioned_writes(seed, 0));
            violations.iter().any(|v| v.property == 2)
        })
        .count();
    assert!(diverged > 0, "no seed diverged without anti-entropy");
}
