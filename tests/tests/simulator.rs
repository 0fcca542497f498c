//! The deterministic cluster simulator over many seeds (design.md section 9).
//!
//! `cargo test` runs `DEFAULT_RUNS` seeds; `RINGKV_SEED=<n>` replays one,
//! `RINGKV_SIM_RUNS=<n>` and `RINGKV_SIM_SEED_BASE=<n>` try others, and
//! `RINGKV_SIM_SECONDS=<s>` stops starting new seeds after that long (a time-boxed
//! batch, as `.ci/run` runs one from a fresh base; it prints how far it got).
//! `tests/explore-seeds.sh` runs a long exploration on every core.

use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::sim::run_seed;
use ringkv_tests::sim::swarm::Parameters;

const DEFAULT_RUNS: u64 = 200;

#[test]
fn every_seed_keeps_the_seven_properties() {
    let plan = SeedPlan::from_env(DEFAULT_RUNS).expect("seed variables");
    let budget_seconds: Option<u64> = std::env::var("RINGKV_SIM_SECONDS").ok().map(|text| {
        text.parse()
            .expect("RINGKV_SIM_SECONDS is a number of seconds")
    });
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut totals = Totals::default();
    let mut ran: u64 = 0;
    // The slowest seeds by wall time, with their sizes: what a slow batch spent its time on.
    let mut slowest: Vec<(std::time::Duration, u64, u64, u64)> = Vec::new();
    for seed in plan.seeds() {
        if budget_seconds.is_some_and(|budget| started.elapsed().as_secs() >= budget) {
            break;
        }
        ran += 1;
        let parameters = Parameters::from_seed(seed);
        let seed_started = std::time::Instant::now();
        // A panic (in a node or the simulator) is a failure of this seed: say which.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_seed(parameters.clone())
        }));
        let Ok((cluster, violations)) = run else {
            println!(
                "seed {seed} PANICKED (replay: RINGKV_SEED={seed} cargo test -p ringkv-tests --test simulator)"
            );
            failures.push(seed);
            continue;
        };
        totals.add(&cluster);
        note_slowest(
            &mut slowest,
            (
                seed_started.elapsed(),
                seed,
                cluster.stats.events,
                cluster.history.operations.len() as u64,
            ),
        );
        if plan.replay {
            println!("seed {seed}: {parameters:?}");
            println!("operations: {}", cluster.history.operations.len());
        }
        if !violations.is_empty() {
            println!(
                "seed {seed} FAILED (replay: RINGKV_SEED={seed} cargo test -p ringkv-tests --test simulator)"
            );
            for violation in violations.iter().take(10) {
                println!("  {violation}");
            }
            failures.push(seed);
        }
    }
    println!(
        "simulator: {ran} seeds from {} ({}..={}) in {:.0} s, {} failed",
        plan.base,
        plan.base,
        plan.base + ran.saturating_sub(1),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (elapsed, seed, events, operations) in &slowest {
        println!(
            "slow seed {seed}: {:.2} s, {events} events, {operations} operations",
            elapsed.as_secs_f64()
        );
    }
    assert!(failures.is_empty(), "seeds that failed: {failures:?}");
    println!("{totals:#?}");
    if totals.runs >= DEFAULT_RUNS {
        totals.assert_exercised();
    }
}

/// Keeps the five slowest seeds, slowest first.
fn note_slowest(
    slowest: &mut Vec<(std::time::Duration, u64, u64, u64)>,
    seed: (std::time::Duration, u64, u64, u64),
) {
    const KEPT: usize = 5;
    slowest.push(seed);
    slowest.sort_by_key(|seed| std::cmp::Reverse(seed.0));
    slowest.truncate(KEPT);
}

/// Seeds that once failed, replayed on every run. 9114809: a W=3 write refused with
/// three nodes reachable (property 4); 5552706: a client with no think time got
/// instant answers at one instant forever, so the run never ended and its history
/// grew until memory ran out (client operations now take simulated time, and every
/// run is bounded); 37418253602 (found by a 100,000-seed exploration with today's
/// clients): a W=2 write refused with both nodes up, the same cause as 9114809 (read
/// repairs of a hot key queued behind its writes until a live replica looked dead);
/// it fails without the repair folding and passes with it. 58568641085 and
/// 58568680337 (a 100,000-seed exploration from 58568603984): the property-7 checker
/// judged a read after a write that a flaky disk had sent to a stand-in as a hint
/// (no fault epoch marks one refused write); 58568652950 (the same exploration): it
/// judged a pipelined read by the beliefs when it was sent, but the read ran after
/// its write, when the coordinator took a replica for down and read a stand-in. Both
/// are cases Dynamo's sloppy quorum allows; the checker now skips them, and all three
/// failed before. 15423155685 (CI's fresh batch, zero disk and network latency, a
/// full disk): a delivered hint whose delete the full disk refused was delivered again
/// at once, for ever, when each acknowledgement started the next delivery; the next
/// delivery now waits for the delete.
/// 11907403985 (CI's fresh batch, two full disks): two disk-full replicas each
/// forwarded on what the other had handed them, so one write's attempts branched, and
/// the token the client got named none of the copies a branch minted; the client's
/// next write left its deleted value standing (property 3). A replica now hands a
/// forwarded write back to its forwarder.
/// 41583920103 (CI's fresh batch, partitions and flaky disks): the property-7 checker
/// took a SET to supersede a concurrent VSET through an earlier SET it had seen one
/// copy of, whose retried copy, minted later, had superseded the VSET; a plain GET
/// rightly returned the VSET (the later timestamp). The checker now goes through an
/// earlier plain write minted more than once only through the copies it saw (each
/// copy's own past kept: the first record holding its dot).
/// 47322577490 (CI's fresh batch, three nodes, N=2, six clients on one key): a W=2
/// write failed UNAVAILABLE with every node up: its replica, behind a queue of durable
/// writes to the hot key, answered after the replica timeout, every node was a target
/// already, and the coordinator counted the silent replica failed. A silent target no
/// stand-in can replace is now waited for while it answers this node's requests.
/// 41103680710 (CI's fresh batch, one-way partitions): the first form of that fix
/// waited on a target while anything of it arrived; cut off one way, its gossip still
/// came while it heard nothing, and a W=3 delete waited past property 4's 1 s bound
/// before its refusal. Only answers to this node's requests count now.
/// 4357959284 (a fresh batch, 13 nodes, one key, network storms of up to 60 ms hops):
/// forwards waited a fixed 20 ms on a silent replica, so nearly every forward was
/// retried at each replica in turn (790 retries in 690 operations), each retried
/// attempt a clock entry; the key's clock reached its 1,024-entry bound, and owners at
/// the bound refused the hints that would have made them whole while those hints held
/// back the reaping that compacts clocks (property 2; property 1 before 8dfe3f9). The
/// forward waits now stretch to the slowest recent forward (111 retries).
/// 6100214766 and 6100222979 (a fresh batch): the property-6 checker took a SET that
/// had seen only the retry of a retried plain DEL not to supersede an earlier SET the
/// DEL's first copy had superseded; the store drops that first copy wherever the
/// retry's dots meet it (its alias), so the checker now counts a copy as seen through
/// its alias too.
const ONCE_FAILED: [u64; 17] = [
    9_114_809,
    5_552_706,
    37_418_253_602,
    58_568_641_085,
    58_568_652_950,
    58_568_680_337,
    15_423_155_685,
    1_811_413_976,
    18_600_285_845,
    11_907_403_985,
    41_583_920_103,
    2_878_747_486,
    47_322_577_490,
    41_103_680_710,
    4_357_959_284,
    6_100_214_766,
    6_100_222_979,
];

#[test]
fn the_seeds_that_once_failed_replay_clean() {
    for seed in ONCE_FAILED {
        let (cluster, violations) = run_seed(Parameters::from_seed(seed));
        assert!(
            violations.is_empty(),
            "seed {seed}: {violations:?} (replay: RINGKV_SEED={seed} cargo test -p ringkv-tests --test simulator)"
        );
        assert!(
            cluster.history.operations.len() < 20_000,
            "seed {seed} ran {} operations",
            cluster.history.operations.len()
        );
    }
}

/// Seed 9114809 as it first failed, with instant clients: read repairs of its one hot
/// key queued behind the writes on a replica until the replica answered slower than
/// the replica timeout, its peers took it for dead, and a W=3 write was refused with
/// all three nodes up. Repairs now fold into the merge already waiting on the key.
/// (On ad9bcc4 the seed failed, and passed with only this fix applied; today's clients
/// reach the nodes in another order, so this run passes without the fix too and pins
/// down that the folding happens: the core test
/// `repairs_of_a_busy_key_fold_into_one_waiting_merge` fails without it.)
#[test]
fn repairs_of_a_hot_key_do_not_make_a_live_replica_look_dead() {
    let seed = 9_114_809;
    let mut parameters = Parameters::from_seed(seed);
    parameters.client_latency_us = 0..0;
    let (cluster, violations) = run_seed(parameters);
    assert!(
        violations.is_empty(),
        "seed {seed} with instant clients: {violations:?}"
    );
    assert!(
        cluster.node_stats().merges_coalesced > 0,
        "the repairs were folded"
    );
}

#[test]
fn a_run_past_its_event_bound_is_stopped_and_fails_its_seed() {
    let seed = 11;
    let mut parameters = Parameters::from_seed(seed);
    parameters.events_max = 2_000;
    let (cluster, violations) = run_seed(parameters);
    println!("seed {seed}: stopped after {} events", cluster.stats.events);
    assert!(
        cluster.stats.events <= 2_001 + 64,
        "{}",
        cluster.stats.events
    );
    assert!(
        violations
            .iter()
            .any(|v| v.property == 5 && v.detail.contains("passed its bounds")),
        "{violations:?}"
    );
}

/// What a batch of runs exercised, so a simulator that quietly stopped injecting faults
/// or stopped reaching a mechanism fails instead of passing vacuously.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    operations: u64,
    acknowledged_writes: u64,
    failed_operations: u64,
    unknown_outcomes: u64,
    reads_with_siblings: u64,
    crashes: u64,
    partitions: u64,
    stand_in_writes: u64,
    hints_stored: u64,
    hints_delivered: u64,
    read_repairs: u64,
    forwarded_writes: u64,
    forwards_retried: u64,
    retry_copies_back: u64,
    /// The most clock entries any replica's copy of a key held at the end (a clock
    /// past its bound refuses writes).
    clock_entries_max: u64,
    writes_handed_on: u64,
    hints_held_for_down_owners: u64,
    peers_marked_down: u64,
    storage_failures: u64,
    buffered_writes_lost: u64,
    writes_promised_writable: u64,
    requests_judged_in_failure_windows: u64,
    messages_lost: u64,
    messages_duplicated: u64,
}

impl Totals {
    fn add(&mut self, cluster: &ringkv_tests::sim::cluster::Cluster) {
        use ringkv_tests::sim::history::{OperationKind, Outcome};
        let stats = cluster.node_stats();
        let network = cluster.network.stats();
        self.runs += 1;
        for op in &cluster.history.operations {
            self.operations += 1;
            match &op.outcome {
                Outcome::Ok if op.kind.is_write() => self.acknowledged_writes += 1,
                Outcome::Failed(_) => self.failed_operations += 1,
                Outcome::Unknown => self.unknown_outcomes += 1,
                _ => {}
            }
            if op.kind == OperationKind::VGet && op.read_values.len() > 1 {
                self.reads_with_siblings += 1;
            }
        }
        self.crashes += cluster.stats.crashes;
        self.partitions += cluster.stats.partitions;
        self.storage_failures += cluster.stats.storage_failures;
        self.buffered_writes_lost += cluster.stats.buffered_writes_lost;
        self.writes_promised_writable +=
            ringkv_tests::sim::checkers::writes_promised_writable(cluster) as u64;
        self.requests_judged_in_failure_windows +=
            ringkv_tests::sim::checkers::requests_judged_in_failure_windows(cluster) as u64;
        self.stand_in_writes += stats.stand_in_writes;
        self.hints_stored += stats.hints_stored;
        self.hints_delivered += stats.hints_delivered;
        self.read_repairs += stats.read_repairs_sent;
        self.forwarded_writes += stats.writes_forwarded;
        self.forwards_retried += stats.forwards_retried;
        self.retry_copies_back += ringkv_tests::sim::checkers::retry_copies_back(cluster) as u64;
        self.writes_handed_on += stats.writes_handed_on;
        let largest = ringkv_tests::sim::checkers::largest_clock(cluster) as u64;
        self.clock_entries_max = self.clock_entries_max.max(largest);
        self.hints_held_for_down_owners += stats.hints_held_for_down_owners;
        self.peers_marked_down += stats.peers_marked_down;
        self.messages_lost += network.lost + network.blocked;
        self.messages_duplicated += network.duplicated;
    }

    fn assert_exercised(&self) {
        for (what, count) in [
            ("acknowledged writes", self.acknowledged_writes),
            ("failed operations", self.failed_operations),
            ("unknown outcomes", self.unknown_outcomes),
            ("reads with siblings", self.reads_with_siblings),
            ("crashes", self.crashes),
            ("partitions", self.partitions),
            ("stand-in writes", self.stand_in_writes),
            ("hints stored", self.hints_stored),
            ("hints delivered", self.hints_delivered),
            ("read repairs", self.read_repairs),
            ("forwarded writes", self.forwarded_writes),
            ("forwards retried as their retry dot", self.forwards_retried),
            ("writes handed on (disk full)", self.writes_handed_on),
            (
                "hints held by coordinators",
                self.hints_held_for_down_owners,
            ),
            ("peers marked down", self.peers_marked_down),
            ("storage failures", self.storage_failures),
            ("buffered writes lost to crashes", self.buffered_writes_lost),
            (
                "writes the availability checker judged",
                self.writes_promised_writable,
            ),
            (
                "requests the failure-window latency bound judged",
                self.requests_judged_in_failure_windows,
            ),
            ("messages lost", self.messages_lost),
            ("messages duplicated", self.messages_duplicated),
        ] {
            assert!(count > 0, "{} runs exercised no {what}", self.runs);
        }
    }
}

/// Prints a replayed seed's history (for debugging with `RINGKV_SEED`).
#[test]
fn print_replayed_history() {
    let plan = SeedPlan::from_env(0).expect("seed variables");
    if !plan.replay || std::env::var("RINGKV_SIM_PRINT").is_err() {
        return;
    }
    let mut cluster = ringkv_tests::sim::cluster::Cluster::new(Parameters::from_seed(plan.base));
    cluster.history.trace = true;
    cluster.run();
    let violations = ringkv_tests::sim::checkers::check_all(&cluster);
    let only = std::env::var("RINGKV_SIM_PRINT").unwrap_or_default();
    for (key, siblings, clock) in &cluster.history.records {
        if only.is_empty() || only.as_bytes() == key.as_slice() {
            println!(
                "stored {}: {siblings:?} clock {clock:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    for (index, op) in cluster.history.operations.iter().enumerate() {
        println!(
            "{index:4} c{} n{} {:?} {} id={:?} w={} ctx={:?} seen={:?} read={:?} {:?}..{:?} {:?}",
            op.client,
            op.node + 1,
            op.kind,
            String::from_utf8_lossy(&op.key),
            op.write_id,
            op.write_quorum,
            op.context.as_ref().map(|c| c.entries().to_vec()),
            op.context_siblings,
            op.read_values,
            op.start,
            op.end,
            op.outcome
        );
    }
    for violation in violations {
        println!("{violation}");
    }
    for (id, dots) in &cluster.history.dots {
        println!(
            "write {id}: dots {dots:?} past {:?}",
            cluster
                .history
                .causal_past
                .get(id)
                .map(|p| p.entries().to_vec())
        );
    }
    let mut keys: Vec<&[u8]> = cluster
        .history
        .operations
        .iter()
        .map(|op| op.key.as_slice())
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        for index in 0..cluster.nodes.len() {
            if let Some(versions) = cluster.stored(index, key) {
                let siblings: Vec<_> = versions
                    .siblings()
                    .map(|s| (s.dot, ringkv_tests::sim::history::write_id_of(s.value)))
                    .collect();
                println!(
                    "{} on node {}: clock {:?} siblings {siblings:?}",
                    String::from_utf8_lossy(key),
                    index + 1,
                    versions.join().entries()
                );
            }
        }
    }
}

/// The same seed gives the same run: every operation, outcome, time and stored record.
#[test]
fn a_seed_replays_the_same_run_exactly() {
    let fingerprint = |seed: u64| {
        let mut cluster = ringkv_tests::sim::cluster::Cluster::new(Parameters::from_seed(seed));
        cluster.history.trace = true;
        cluster.run();
        let operations: Vec<String> = cluster
            .history
            .operations
            .iter()
            .map(|op| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?}",
                    op.node, op.kind, op.write_id, op.start, op.end, op.outcome
                )
            })
            .collect();
        (
            operations,
            cluster.history.records.clone(),
            cluster.now,
            format!("{:?}", cluster.node_stats()),
        )
    };
    for seed in [3, 41, 977] {
        println!("seed {seed}");
        let first = fingerprint(seed);
        assert!(!first.0.is_empty() && !first.1.is_empty());
        assert_eq!(first, fingerprint(seed), "seed {seed} did not replay");
        assert_ne!(first, fingerprint(seed + 1), "another seed, another run");
    }
}
