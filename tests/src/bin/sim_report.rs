//! Numbers for BENCHMARKS.md from the deterministic simulator: messages per get and per
//! put, how many versions reads see under concurrent read-modify-writes, and how
//! available writes stay with nodes down, sloppy quorum next to a strict one.
//!
//! `cargo run --release -p ringkv-tests --bin ringkv-sim-report [cluster] [gossip] [entropy] [join]`
//! (fixed seeds: the same output every run; no section names: all of them). The gossip
//! section measures membership convergence at 10, 100 and 1,000 nodes.

use ringkv_core::node::{Sabotage, Space};
use ringkv_tests::sim::cluster::Cluster;
use ringkv_tests::sim::disk::DiskConfig;
use ringkv_tests::sim::entropy_bytes::repair_cost;
use ringkv_tests::sim::gossip::{FailureSpread, failure_rounds, join_rounds};
use ringkv_tests::sim::history::{OperationKind, Outcome};
use ringkv_tests::sim::network::NetworkConfig;
use ringkv_tests::sim::swarm::{Faults, MembershipChange, Parameters, Workload};

const SEEDS: std::ops::Range<u64> = 1..11;

fn base(seed: u64, nodes: usize, workload: Workload) -> Parameters {
    let mut parameters = Parameters::from_seed(seed);
    parameters.nodes = nodes;
    parameters.replicas = 3;
    parameters.read_quorum = 2;
    parameters.write_quorum = 2;
    parameters.clients = 8;
    parameters.operations_per_client = 200;
    parameters.keys = 256;
    parameters.think_time_max_ms = 20;
    parameters.network = NetworkConfig {
        latency_min_ms: 1,
        latency_max_ms: 3,
        ..NetworkConfig::reliable()
    };
    parameters.disk = DiskConfig {
        latency_min_ms: 1,
        latency_max_ms: 2,
        failure: 0.0,
    };
    parameters.faults = Faults {
        mean_interval_ms: 1_000,
        max_down: 0,
        ..Faults::default()
    };
    parameters.fault_phase_ms = 60_000;
    parameters.calm_phase_ms = 0;
    parameters.workload = workload;
    parameters
}

fn run(parameters: Parameters) -> Cluster {
    let mut cluster = Cluster::new(parameters);
    cluster.run();
    cluster
}

/// Peer messages per successful operation during the workload.
fn messages_per_operation(nodes: usize, workload: Workload) -> (f64, u64) {
    let (mut messages, mut operations) = (0u64, 0u64);
    for seed in SEEDS {
        let cluster = run(base(seed, nodes, workload));
        messages += cluster.workload_network.sent;
        operations += cluster.history.operations[..cluster.workload_operations]
            .iter()
            .filter(|op| op.outcome == Outcome::Ok)
            .count() as u64;
    }
    (messages as f64 / operations as f64, operations)
}

/// Share of VGETs (that found the key) answering 1, 2 and 3+ values.
fn versions_seen(keys: u32) -> ([f64; 3], u64) {
    let mut counts = [0u64; 3];
    for seed in SEEDS {
        let mut parameters = base(seed, 5, Workload::ReadModifyWrite);
        parameters.keys = keys;
        let cluster = run(parameters);
        for op in &cluster.history.operations[..cluster.workload_operations] {
            if op.kind == OperationKind::VGet && op.outcome == Outcome::Ok {
                match op.read_values.len() {
                    0 => {}
                    1 => counts[0] += 1,
                    2 => counts[1] += 1,
                    _ => counts[2] += 1,
                }
            }
        }
    }
    let total: u64 = counts.iter().sum();
    (
        counts.map(|count| count as f64 / total as f64 * 100.0),
        total,
    )
}

/// Share of writes sent to live coordinators that succeeded, with `down` of 5 nodes
/// down from the start.
fn write_availability(down: usize, write_quorum: u8, strict: bool) -> (f64, u64) {
    let (mut succeeded, mut attempted) = (0u64, 0u64);
    for seed in SEEDS {
        let mut parameters = base(seed, 5, Workload::SetsOnly);
        parameters.down_from_start = down;
        parameters.write_quorum = write_quorum;
        parameters.fault_phase_ms = 20_000;
        parameters.sabotage = Sabotage {
            strict_quorum: strict,
            ..Sabotage::default()
        };
        let cluster = run(parameters);
        for op in &cluster.history.operations[..cluster.workload_operations] {
            if op.node < down || op.outcome == Outcome::Unknown || op.outcome == Outcome::Pending {
                continue; // a client would try another node
            }
            attempted += 1;
            if op.outcome == Outcome::Ok {
                succeeded += 1;
            }
        }
    }
    (succeeded as f64 / attempted as f64 * 100.0, attempted)
}

/// Median of a run's rounds over `seeds` (None counts as past the limit).
fn median(mut rounds: Vec<u64>) -> u64 {
    rounds.sort_unstable();
    rounds[rounds.len() / 2]
}

/// Rounds for a join and for a failure to reach every view, membership only.
fn gossip_convergence() {
    const ROUNDS_MAX: u64 = 200;
    const SILENCE_ROUNDS: u64 = 10;
    println!(
        "\nMembership only (tests/src/sim/gossip.rs): push-pull rounds, one per gossip interval, seeds 1..5 (median, min-max)."
    );
    println!(
        "\n| nodes | join: rounds until Up in every view | failure: rounds until the first view suspects (silence window {SILENCE_ROUNDS}) | until every view suspects | spread (all - first) | log2(n) |"
    );
    println!("|---|---|---|---|---|---|");
    for nodes in [10usize, 100, 1000] {
        let seeds = 1..=5u64;
        let joins: Vec<u64> = seeds
            .clone()
            .map(|seed| join_rounds(nodes, seed, ROUNDS_MAX).unwrap_or(ROUNDS_MAX + 1))
            .collect();
        let failures: Vec<FailureSpread> = seeds
            .map(|seed| {
                failure_rounds(nodes, seed, SILENCE_ROUNDS, ROUNDS_MAX).unwrap_or(FailureSpread {
                    first: ROUNDS_MAX + 1,
                    all: ROUNDS_MAX + 1,
                })
            })
            .collect();
        let range = |values: &[u64]| {
            let (min, max) = (values.iter().min(), values.iter().max());
            format!(
                "{} ({}-{})",
                median(values.to_vec()),
                min.unwrap_or(&0),
                max.unwrap_or(&0)
            )
        };
        let firsts: Vec<u64> = failures.iter().map(|f| f.first).collect();
        let alls: Vec<u64> = failures.iter().map(|f| f.all).collect();
        let spreads: Vec<u64> = failures.iter().map(|f| f.all - f.first).collect();
        println!(
            "| {nodes} | {} | {} | {} | {} | {:.1} |",
            range(&joins),
            range(&firsts),
            range(&alls),
            range(&spreads),
            (nodes as f64).log2()
        );
    }
}

/// Anti-entropy bytes to repair k divergent keys out of 1 million (two replicas).
fn entropy_bytes() {
    const KEYS: u32 = 1_000_000;
    println!(
        "\nAnti-entropy only (tests/src/sim/entropy_bytes.rs): two replicas of {KEYS} keys (N=2, 1,024 partitions), k held newer by one; bytes of TreeHashes, KeyHashes and ReplicaPut frames until both agree and each has compared every partition once."
    );
    println!("\n| k divergent | bytes | bytes beyond the in-sync pass | keys pushed | exchanges |");
    println!("|---|---|---|---|---|");
    let mut baseline = 0;
    for divergent in [0u32, 1, 10, 100, 1_000, 10_000] {
        match repair_cost(KEYS, divergent, 600_000) {
            Some(cost) => {
                if divergent == 0 {
                    baseline = cost.bytes;
                }
                println!(
                    "| {divergent} | {} | {} | {} | {} |",
                    cost.bytes,
                    cost.bytes.saturating_sub(baseline),
                    cost.keys_pushed,
                    cost.exchanges
                );
            }
            None => println!("| {divergent} | did not converge in 600 s simulated | | | |"),
        }
    }
}

fn main() {
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    if wants("cluster") {
        cluster_numbers();
    }
    if wants("gossip") {
        gossip_convergence();
    }
    if wants("entropy") {
        entropy_bytes();
    }
    if wants("join") {
        join_bytes();
    }
}

/// Bytes a join moves against the ideal: the records of the new node's share.
fn join_bytes() {
    println!(
        "| seed | keys | new node's keys | records sent | record bytes sent / ideal | offer bytes / ideal | keys anti-entropy pushed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for seed in 1..6 {
        let mut parameters = base(seed, 3, Workload::SetsOnly);
        parameters.keys = 4_096;
        parameters.operations_per_client = 1_000;
        parameters.think_time_max_ms = 0;
        parameters.fault_phase_ms = 30_000;
        parameters.membership_changes = vec![(20_000, MembershipChange::Join)];
        parameters.read_sweep = false;
        parameters.entropy_phase_ms = 30_000;
        let cluster = run(parameters);
        let new = cluster.nodes.len() - 1;
        let stats = cluster.node_stats();
        let (mut keys, mut ideal) = (0u64, 0u64);
        let mut all = 0u64;
        for (key, record) in cluster.nodes[0]
            .disk
            .records(Space::Data)
            .chain(cluster.nodes[1].disk.records(Space::Data))
            .chain(cluster.nodes[2].disk.records(Space::Data))
            .collect::<std::collections::BTreeMap<_, _>>()
        {
            all += 1;
            let partition = cluster.ring.partition_of(key);
            if cluster
                .ring
                .preference_list(partition)
                .any(|n| n == cluster.nodes[new].id)
            {
                keys += 1;
                ideal += record.len() as u64;
            }
        }
        let held = cluster.nodes[new].disk.records(Space::Data).count() as u64;
        assert_eq!(held, keys, "the new node holds exactly its share");
        println!(
            "| {seed} | {all} | {keys} | {} | {:.2} | {:.2} | {} |",
            stats.handoff_keys_sent,
            stats.handoff_bytes_sent as f64 / ideal as f64,
            stats.handoff_offer_bytes as f64 / ideal as f64,
            stats.entropy_keys_pushed,
        );
    }
}

/// Messages per operation, versions seen and write availability, full simulator.
fn cluster_numbers() {
    println!(
        "Seeds {}..{} per row; 8 clients, N=3, R=2, W=2 unless stated.\n",
        SEEDS.start,
        SEEDS.end - 1
    );
    println!("| cluster | operation | peer messages per operation | operations |");
    println!("|---|---|---|---|");
    for nodes in [3, 5] {
        for (name, workload) in [("GET", Workload::GetsOnly), ("SET", Workload::SetsOnly)] {
            let (per, operations) = messages_per_operation(nodes, workload);
            println!("| {nodes} nodes | {name} | {per:.2} | {operations} |");
        }
    }

    println!("\n| keys | reads seeing 1 version | 2 versions | 3+ versions | reads |");
    println!("|---|---|---|---|---|");
    for keys in [256, 16, 2] {
        let ([one, two, more], reads) = versions_seen(keys);
        println!("| {keys} | {one:.2}% | {two:.2}% | {more:.2}% | {reads} |");
    }

    println!(
        "\n| nodes down of 5 | W | sloppy quorum: writes succeeded | strict quorum | writes |"
    );
    println!("|---|---|---|---|---|");
    for down in [1, 2] {
        for write_quorum in [2, 3] {
            let (sloppy, writes) = write_availability(down, write_quorum, false);
            let (strict, _) = write_availability(down, write_quorum, true);
            println!("| {down} | {write_quorum} | {sloppy:.2}% | {strict:.2}% | {writes} |");
        }
    }
}
