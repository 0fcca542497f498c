//! Properties of dotted version vector sets over random histories of writes (with and
//! without read contexts, at any replica, by any coordinator), reads and replica syncs.
//!
//! Seeded: prints its seed; `RINGKV_SEED=<n>` replays one, `RINGKV_SIM_RUNS=<n>` and
//! `RINGKV_SIM_SEED_BASE=<n>` try more.

use proptest::prelude::*;
use ringkv_core::version::{Dot, Sibling};
use ringkv_core::{NodeId, Value, VersionSet, VersionVector};
use ringkv_tests::seeds::{SeedPlan, proptest_runner};

const REPLICAS: usize = 3;

#[derive(Clone, Debug)]
enum Step {
    /// A client write coordinated by `replica` (dots are minted only by the node that
    /// owns them, against its own state), with the context of an earlier read (`read`
    /// picks one of those made so far, at any replica) or none.
    Write {
        replica: usize,
        read: Option<usize>,
    },
    Read {
        replica: usize,
    },
    Sync {
        from: usize,
        to: usize,
    },
    /// A forwarded write minted by `first` (in a lane of its own, as a node mints a
    /// forward, its value aliased to the retry dot) and retried at `retry` as the retry
    /// dot, both with the same context.
    Retried {
        first: usize,
        retry: usize,
        read: Option<usize>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..REPLICAS, prop::option::of(0usize..64))
            .prop_map(|(replica, read)| Step::Write { replica, read }),
        3 => (0..REPLICAS).prop_map(|replica| Step::Read { replica }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
        1 => (0..REPLICAS, 0..REPLICAS, prop::option::of(0usize..64))
            .prop_map(|(first, retry, read)| Step::Retried { first, retry, read }),
    ]
}

fn covers(context: &VersionVector, dot: Dot) -> bool {
    context
        .entries()
        .iter()
        .any(|&(node, counter)| node == dot.node && counter >= dot.counter)
}

fn dots(set: &VersionSet) -> Vec<Dot> {
    set.siblings().filter_map(|s: Sibling<'_>| s.dot).collect()
}

/// Runs a history; `coordinator_of` says which node id each replica mints dots as.
fn run(steps: Vec<Step>, coordinator_of: fn(usize) -> u64) {
    let mut replicas = vec![VersionSet::new(); REPLICAS];
    let mut reads: Vec<(VersionVector, Vec<Dot>)> = Vec::new();
    let mut coordinators = std::collections::BTreeSet::new();
    for (number, step) in steps.into_iter().enumerate() {
        match step {
            Step::Write { replica, read } => {
                let coordinator = coordinator_of(replica);
                let (context, seen) = match read.and_then(|i| reads.get(i % reads.len().max(1))) {
                    Some((context, seen)) if !reads.is_empty() => (context.clone(), seen.clone()),
                    _ => (VersionVector::new(), Vec::new()),
                };
                let before = replicas[replica].clone();
                let value = Value::new(number.to_le_bytes().to_vec(), number as u64);
                let after = VersionSet::update(
                    VersionSet::from_context(&context, value.clone()),
                    &before,
                    NodeId(coordinator),
                );
                coordinators.insert(coordinator);
                let after_dots = dots(&after);
                // The new value is there.
                assert!(
                    after.siblings().any(|s| *s.value == value),
                    "the write vanished"
                );
                // Everything the read saw is superseded.
                for dot in &seen {
                    assert!(
                        !after_dots.contains(dot),
                        "{dot:?} survived a write that had read it"
                    );
                }
                // Nothing the context had not seen is lost (a stale context never
                // removes a newer sibling; two writes with one context both survive).
                // (A retried write's first copy is covered by its retry dot too.)
                for sibling in before.siblings() {
                    let Some(dot) = sibling.dot else { continue };
                    let alias_covered = sibling
                        .value
                        .alias
                        .is_some_and(|alias| context.counter_of(alias) > 0);
                    if !covers(&context, dot) && !alias_covered {
                        assert!(
                            after_dots.contains(&dot),
                            "{dot:?} lost to a context that never saw it"
                        );
                    }
                }
                assert!(
                    after.clock_size() <= coordinators.len(),
                    "clock larger than its coordinators"
                );
                replicas[replica] = after;
            }
            Step::Read { replica } => {
                let set = &replicas[replica];
                reads.push((set.join(), dots(set)));
            }
            Step::Retried { first, retry, read } => {
                let context = match read.and_then(|i| reads.get(i % reads.len().max(1))) {
                    Some((context, _)) => context.clone(),
                    None => VersionVector::new(),
                };
                let value = Value::new(number.to_le_bytes().to_vec(), number as u64);
                let alias = NodeId(ringkv_core::node::STAND_IN_WRITER_BIT | number as u64);
                let lane = NodeId(coordinator_of(first) << 32 | number as u64);
                coordinators.insert(lane.0);
                coordinators.insert(alias.0);
                replicas[first] = VersionSet::update(
                    VersionSet::from_context(&context, value.clone().with_alias(alias)),
                    &replicas[first],
                    lane,
                );
                replicas[retry] = VersionSet::update_retry(
                    VersionSet::from_context(&context, value.clone()),
                    &replicas[retry],
                    alias,
                );
                for (at, set) in [(first, &replicas[first]), (retry, &replicas[retry])] {
                    assert!(
                        set.siblings().any(|s| s.value.data == value.data),
                        "the retried write vanished at {at}"
                    );
                }
            }
            Step::Sync { from, to } => {
                let merged = replicas[to].sync(&replicas[from]);
                for dot in dots(&replicas[to]).into_iter().chain(dots(&replicas[from])) {
                    let superseded = merged
                        .join()
                        .entries()
                        .iter()
                        .any(|&(n, c)| n == dot.node && c >= dot.counter);
                    assert!(superseded, "sync forgot that {dot:?} happened");
                }
                replicas[to] = merged;
            }
        }
    }
    let [a, b, c] = [&replicas[0], &replicas[1], &replicas[2]];
    assert_eq!(a.sync(b), b.sync(a), "sync is not commutative");
    assert_eq!(
        a.sync(b).sync(c),
        a.sync(&b.sync(c)),
        "sync is not associative"
    );
    for set in [a, b, c] {
        assert_eq!(set.sync(set), *set, "sync is not idempotent");
    }
    let all = a.sync(b).sync(c);
    for set in [a, b, c] {
        assert_eq!(set.sync(&all), all, "replicas do not converge");
    }
    // A retried write is one sibling once its copies met.
    let mut data: Vec<_> = all.siblings().map(|s| s.value.data.clone()).collect();
    data.sort();
    let count = data.len();
    data.dedup();
    assert_eq!(data.len(), count, "one write, two siblings");
}

#[test]
fn version_sets_keep_causality_and_converge_over_random_histories() {
    let plan = SeedPlan::from_env(1).unwrap();
    for seed in plan.seeds() {
        println!("version properties: seed {seed} (replay with RINGKV_SEED={seed})");
        let mut runner = proptest_runner(seed, 512);
        let result = runner.run(&prop::collection::vec(step(), 1..80), |steps| {
            run(steps, |replica| replica as u64 + 1);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("version properties failed with seed {seed}: {failure}");
        }
    }
}

#[test]
fn the_checks_catch_replicas_minting_the_same_dots() {
    // Deliberately broken: every replica mints dots as node 1, so two replicas can give
    // one dot to different values. The property checks must notice.
    let seed = 3;
    println!("version properties sabotage: seed {seed}");
    let mut runner = proptest_runner(seed, 512);
    let result = runner.run(&prop::collection::vec(step(), 1..80), |steps| {
        run(steps, |_| 1);
        Ok(())
    });
    let failure = result.expect_err("shared dots went unnoticed");
    println!("caught as expected: {failure}");
}
