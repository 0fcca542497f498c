//! A checker that cannot fail proves nothing: each of the seven properties' checkers is
//! shown here to catch a node broken on purpose (`ringkv_core::node::Sabotage`, and the
//! frontend's unordered sessions).
//!
//! Each test runs seeds (from `FIRST_SEED`, at most `SEEDS_MAX`) with one sabotage and
//! fault settings that give it a chance to show, and passes once a seed violates the
//! property that sabotage breaks. It prints the seed that caught it, and runs the same
//! seed and settings again with the sabotage off, which must keep the property: the
//! broken node, not the fault settings, is what the checker caught.

use ringkv_core::node::Sabotage;
use ringkv_tests::sim::run_seed;
use ringkv_tests::sim::swarm::{Faults, Parameters};

const FIRST_SEED: u64 = 7_000;
const SEEDS_MAX: u64 = 200;

/// Runs seeds with `shape` applied until one violates `property`.
fn caught(name: &str, property: u8, shape: impl Fn(&mut Parameters)) {
    caught_saying(name, property, "", shape);
}

/// Runs seeds with `shape` applied until one violates `property` with a detail that
/// contains `saying` (one branch of a checker).
fn caught_saying(name: &str, property: u8, saying: &str, shape: impl Fn(&mut Parameters)) {
    for seed in FIRST_SEED..FIRST_SEED + SEEDS_MAX {
        let mut parameters = Parameters::from_seed(seed);
        shape(&mut parameters);
        let (_, violations) = run_seed(parameters.clone());
        let found = violations
            .iter()
            .find(|v| v.property == property && v.detail.contains(saying));
        if let Some(violation) = found {
            println!("{name}: seed {seed} caught it: {violation}");
            parameters.sabotage = Sabotage::default();
            parameters.unordered_sessions = false;
            let (_, honest) = run_seed(parameters);
            let still: Vec<_> = honest.iter().filter(|v| v.property == property).collect();
            assert!(
                still.is_empty(),
                "{name}: seed {seed} fails without sabotage: {still:?}"
            );
            return;
        }
    }
    panic!("{name}: no seed in {FIRST_SEED}..+{SEEDS_MAX} violated property {property}");
}

fn no_faults() -> Faults {
    Faults {
        mean_interval_ms: 1_000,
        max_down: 1,
        ..Faults::default()
    }
}

#[test]
fn acking_before_durable_loses_acknowledged_writes() {
    caught("ack before durable", 1, |p| {
        p.sabotage = Sabotage {
            ack_before_durable: true,
            ..Sabotage::default()
        };
        p.nodes = 3;
        p.replicas = 1;
        p.read_quorum = 1;
        p.write_quorum = 1;
        p.disk.latency_min_ms = 20;
        p.disk.latency_max_ms = 60;
        p.disk.failure = 0.0;
        p.faults = Faults {
            crashes: true,
            mean_interval_ms: 100,
            max_down: 1,
            ..Faults::default()
        };
    });
}

#[test]
fn dropping_a_concurrent_sibling_loses_acknowledged_writes() {
    caught("drop concurrent siblings", 1, |p| {
        p.sabotage = Sabotage {
            drop_concurrent_siblings: true,
            ..Sabotage::default()
        };
        p.clients = p.clients.max(3);
        p.keys = 2;
        p.faults = no_faults();
    });
}

#[test]
fn ignoring_the_context_brings_superseded_values_back() {
    caught("ignore context", 3, |p| {
        p.sabotage = Sabotage {
            ignore_context: true,
            ..Sabotage::default()
        };
        p.keys = 2;
        p.faults = no_faults();
    });
}

#[test]
fn skipping_repair_and_handoff_leaves_replicas_diverged() {
    caught("skip repair", 2, |p| {
        p.sabotage = Sabotage {
            skip_repair: true,
            ..Sabotage::default()
        };
        p.nodes = p.nodes.max(3);
        p.replicas = 3;
        p.write_quorum = 1;
        p.faults = Faults {
            partitions: true,
            crashes: true,
            mean_interval_ms: 300,
            max_down: 1,
            ..Faults::default()
        };
    });
}

#[test]
fn a_strict_quorum_is_not_always_writable() {
    caught("strict quorum", 4, |p| {
        p.sabotage = Sabotage {
            strict_quorum: true,
            ..Sabotage::default()
        };
        p.nodes = 5;
        p.replicas = 3;
        p.write_quorum = 3;
        p.disk.failure = 0.0;
        p.fault_phase_ms = 10_000;
        p.operations_per_client = 60;
        p.faults = Faults {
            crashes: true,
            mean_interval_ms: 2_000,
            max_down: 2,
            ..Faults::default()
        };
    });
}

#[test]
fn ignoring_the_request_bound_is_seen() {
    caught("ignore request bound", 5, |p| {
        p.sabotage = Sabotage {
            ignore_request_bound: true,
            ..Sabotage::default()
        };
        p.requests_max = 1;
        p.clients = 6;
        p.nodes = 2;
        p.replicas = 2;
        p.read_quorum = 1;
        p.write_quorum = 1;
        p.faults = no_faults();
    });
}

#[test]
fn ignoring_the_hint_byte_bound_is_seen() {
    caught_saying("ignore hint bytes bound", 5, "hint bytes peaked", |p| {
        p.sabotage = Sabotage {
            ignore_hint_bytes_bound: true,
            ..Sabotage::default()
        };
        p.hint_bytes_max = 512;
        p.nodes = 5;
        p.replicas = 3;
        p.write_quorum = 2;
        p.disk.failure = 0.0;
        p.faults = Faults {
            crashes: true,
            mean_interval_ms: 1_000,
            max_down: 2,
            ..Faults::default()
        };
    });
}

/// Buffered writes (`SYNC one`) are safe only because the node that mints a write
/// syncs it before anyone acknowledges: a minting node that buffers its own record
/// too loses acknowledged writes to a power cut.
#[test]
fn buffering_the_minted_record_loses_acknowledged_writes_to_a_power_cut() {
    caught("buffer mints", 1, |p| {
        p.sabotage = Sabotage {
            buffer_mints: true,
            ..Sabotage::default()
        };
        p.nodes = 3;
        p.replicas = 1;
        p.read_quorum = 1;
        p.write_quorum = 1;
        p.sync_writes = ringkv_core::quorum::SyncWrites::One;
        p.sync_interval_ms = 2_000;
        p.disk.failure = 0.0;
        p.faults = Faults {
            crashes: true,
            mean_interval_ms: 300,
            max_down: 1,
            ..Faults::default()
        };
    });
}

#[test]
fn reaping_without_the_counter_floor_mints_a_dot_twice() {
    caught("reap without floor", 1, |p| {
        p.sabotage = Sabotage {
            reap_without_floor: true,
            ..Sabotage::default()
        };
        p.keys = 2;
        p.tombstone_grace_ms = 500;
        p.reap_interval_ms = 200;
        p.faults = no_faults();
    });
}

/// Property 4's latency bound: a coordinator that waits out the request timeout on a
/// forward to a replica that died or was cut off (no retry at the next replica, the
/// behaviour before forwards had attempt ids) keeps a client waiting on a dead node.
#[test]
fn forwards_that_wait_on_a_dead_replica_miss_the_failure_window_bound() {
    caught_saying("forwards wait", 4, "waited on a dead node", |p| {
        p.sabotage = Sabotage {
            forwards_wait: true,
            ..Sabotage::default()
        };
    });
}

/// Reaping compacts a clock (drops superseded one-shot writers' entries) only once every
/// replica holds the same record: a replica that compacts on its own forgets dots a
/// copy elsewhere still holds, and that superseded value comes back beside the write
/// that superseded it.
#[test]
fn compacting_a_clock_without_the_other_replicas_brings_a_superseded_value_back() {
    caught_saying("compact unconfirmed", 3, "which superseded it", |p| {
        p.sabotage = Sabotage {
            compact_unconfirmed: true,
            ..Sabotage::default()
        };
        // Forwards retried as a matter of course: every retry is a one-shot entry.
        p.network.latency_max_ms = p.network.latency_max_ms.max(15);
        p.replica_timeout_ms = 20;
    });
}

/// The resurrection branch of property 1: a replica that was down while the others
/// reaped a tombstone unchecked comes back with the value the delete superseded, and
/// anti-entropy spreads it again. Three nodes and three replicas, so no stand-in takes
/// a hint that would carry the tombstone to the stale replica first.
#[test]
fn reaping_while_a_replica_is_down_brings_a_deleted_value_back() {
    caught_saying("reap while a replica is down", 1, "is back on node", |p| {
        // Without hints and read repair, only anti-entropy reaches the replica that was
        // down (the coordinators' hints would otherwise hand it the tombstones before
        // an exchange could spread its stale value).
        p.sabotage = Sabotage {
            reap_unconfirmed: true,
            skip_repair: true,
            ..Sabotage::default()
        };
        p.nodes = 3;
        p.replicas = 3;
        p.read_quorum = 2;
        p.write_quorum = 2;
        // Enough keys that a later write seldom overwrites the value brought back.
        p.keys = 60;
        p.operations_per_client = p.operations_per_client.max(300);
        p.reap_interval_ms = 200;
        p.faults = Faults {
            crashes: true,
            mean_interval_ms: 500,
            max_down: 1,
            ..Faults::default()
        };
    });
}

#[test]
fn a_token_naming_the_merged_clock_loses_a_concurrent_write() {
    // Property 1 trusts clocks and cannot see it; property 6 judges by what clients
    // were shown.
    caught("merged clock as the token", 6, |p| {
        p.sabotage = Sabotage {
            merged_clock_token: true,
            ..Sabotage::default()
        };
        p.keys = 2;
        p.clients = p.clients.max(3);
        p.faults = no_faults();
    });
}

#[test]
fn a_pipelined_read_that_runs_before_the_write_ahead_of_it_is_caught() {
    caught("unordered sessions", 7, |p| {
        p.unordered_sessions = true;
        p.keys = 3;
        p.faults = no_faults();
    });
}

#[test]
fn a_tree_that_ignores_racing_writes_is_not_its_store() {
    caught_saying("trees ignore races", 2, "anti-entropy tree", |p| {
        p.sabotage = Sabotage {
            trees_ignore_races: true,
            ..Sabotage::default()
        };
        p.faults = Faults {
            crashes: true,
            ..no_faults()
        };
    });
}

#[test]
fn a_retried_forward_without_its_alias_brings_a_superseded_value_back() {
    // Retries are common where the network is slower than a forward waits: a
    // forward's replica stays silent past the window, which the replica timeout caps.
    // Without the alias, the first attempt's copy of a retried write comes back after
    // a write whose context covered the retry.
    caught("retry without alias", 3, |p| {
        p.sabotage = Sabotage {
            retry_without_alias: true,
            ..Sabotage::default()
        };
        p.keys = 2;
        p.clients = p.clients.max(3);
        p.network.latency_max_ms = p.network.latency_max_ms.max(15);
        p.replica_timeout_ms = 20;
        p.faults = no_faults();
        // Reads of all N: the value brought back shows on whichever replica holds it
        // (a read of R may ask the two that do not).
        p.full_read_one_in = 1;
    });
}
