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
    /// forward, its value aliased to the first attempt's id) and retried at `retry` as
    /// the retry's attempt dot: with the context read, or each with its replica's own
    /// clock (`plain`, a plain SET).
    Retried {
        first: usize,
        retry: usize,
        plain: bool,
        read: Option<usize>,
    },
    /// One more attempt of a retried write (`which` picks one), at `at`, any time later.
    Again {
        which: usize,
        at: usize,
    },
}

/// A retried write that may be retried again.
struct Pending {
    value: Value,
    /// `None`: plain.
    context: Option<VersionVector>,
    /// Its attempts' ids so far, the first attempt's first.
    attempts: Vec<NodeId>,
}

impl Pending {
    /// Mints the next attempt (`reuse`: deliberately broken, under the last attempt's
    /// id again) at `current`; records it in `writes`.
    fn retry(
        &mut self,
        current: &VersionSet,
        writes: &mut Writes,
        coordinators: &mut std::collections::BTreeSet<u64>,
        reuse: bool,
    ) -> VersionSet {
        let last = *self.attempts.last().expect("a first attempt");
        let id = if reuse && self.attempts.len() > 1 {
            last
        } else {
            NodeId(last.0 + 1)
        };
        let earlier: Vec<NodeId> = self.attempts.iter().copied().filter(|&a| a != id).collect();
        coordinators.insert(id.0);
        let context = self.context.clone().unwrap_or_else(|| current.join());
        let after = VersionSet::update_retry(
            VersionSet::from_context(&context, self.value.clone()),
            current,
            id,
            &earlier,
        );
        let past = earlier.iter().fold(context, |past, &node| {
            past.with_dot(Dot { node, counter: 1 })
        });
        writes.minted(&self.value, &past, &after);
        if !self.attempts.contains(&id) {
            self.attempts.push(id);
        }
        after
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..REPLICAS, prop::option::of(0usize..64))
            .prop_map(|(replica, read)| Step::Write { replica, read }),
        3 => (0..REPLICAS).prop_map(|replica| Step::Read { replica }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
        2 => (0..REPLICAS, 0..REPLICAS, any::<bool>(), prop::option::of(0usize..64))
            .prop_map(|(first, retry, plain, read)| Step::Retried {
                first,
                retry,
                plain,
                read,
            }),
        1 => (0usize..64, 0..REPLICAS).prop_map(|(which, at)| Step::Again { which, at }),
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

/// Every write's dots and the contexts it was minted with, for the check that no write
/// is lost.
#[derive(Default)]
struct Writes {
    dots: std::collections::HashMap<Vec<u8>, Vec<Dot>>,
    pasts: std::collections::HashMap<Vec<u8>, VersionVector>,
}

impl Writes {
    /// `value` was written with `context` into `set`: records its new dot, if it got one.
    fn minted(&mut self, value: &Value, context: &VersionVector, set: &VersionSet) {
        let data = value.data.clone().unwrap_or_default();
        let Some(dot) = set
            .siblings()
            .find(|s| s.value.data == value.data)
            .and_then(|s| s.dot)
        else {
            return;
        };
        let dots = self.dots.entry(data.clone()).or_default();
        if dots.contains(&dot) {
            return;
        }
        dots.push(dot);
        let past = self.pasts.entry(data).or_default();
        for &(node, counter) in context.entries() {
            *past = std::mem::take(past).with_dot(Dot { node, counter });
        }
    }

    /// Every write is live in `all`, or superseded by one that is: directly, or by a
    /// chain of writes each in the context of the next.
    fn check_none_lost(&self, all: &VersionSet) {
        let mut kept: std::collections::HashSet<&Vec<u8>> = self
            .dots
            .keys()
            .filter(|&data| all.siblings().any(|s| s.value.data.as_ref() == Some(data)))
            .collect();
        loop {
            let covered = |dot: &Dot| kept.iter().any(|&data| covers(&self.pasts[data], *dot));
            let newly: Vec<&Vec<u8>> = self
                .dots
                .iter()
                .filter(|&(data, dots)| !kept.contains(data) && dots.iter().any(covered))
                .map(|(data, _)| data)
                .collect();
            if newly.is_empty() {
                break;
            }
            kept.extend(newly);
        }
        for (data, dots) in &self.dots {
            assert!(kept.contains(data), "write {data:?} lost: {dots:?}");
        }
    }
}

/// Runs a history; `coordinator_of` says which node id each replica mints dots as;
/// `reuse_retry_id` deliberately breaks retries (a later attempt minted under the
/// previous retry's id).
fn run(steps: Vec<Step>, coordinator_of: fn(usize) -> u64, reuse_retry_id: bool) {
    let mut replicas = vec![VersionSet::new(); REPLICAS];
    let mut writes = Writes::default();
    let mut retried: Vec<Pending> = Vec::new();
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
                writes.minted(&value, &context, &after);
                replicas[replica] = after;
            }
            Step::Read { replica } => {
                let set = &replicas[replica];
                reads.push((set.join(), dots(set)));
            }
            Step::Retried {
                first,
                retry,
                plain,
                read,
            } => {
                let read = match read.and_then(|i| reads.get(i % reads.len().max(1))) {
                    Some((context, _)) => context.clone(),
                    None => VersionVector::new(),
                };
                let value = Value::new(number.to_le_bytes().to_vec(), number as u64);
                let alias = NodeId(ringkv_core::node::STAND_IN_WRITER_BIT | (number as u64) << 8);
                let lane = NodeId(coordinator_of(first) << 32 | number as u64);
                coordinators.insert(lane.0);
                // A retry's context names the first attempt's id.
                coordinators.insert(alias.0);
                let first_context = if plain {
                    replicas[first].join()
                } else {
                    read.clone()
                };
                replicas[first] = VersionSet::update(
                    VersionSet::from_context(&first_context, value.clone().with_alias(alias)),
                    &replicas[first],
                    lane,
                );
                writes.minted(&value, &first_context, &replicas[first]);
                let mut write = Pending {
                    value,
                    context: (!plain).then_some(read),
                    attempts: vec![alias],
                };
                replicas[retry] =
                    write.retry(&replicas[retry], &mut writes, &mut coordinators, false);
                for at in [first, retry] {
                    assert!(
                        replicas[at]
                            .siblings()
                            .any(|s| s.value.data == write.value.data),
                        "the retried write vanished at {at}"
                    );
                }
                retried.push(write);
            }
            Step::Again { which, at } => {
                let count = retried.len();
                if let Some(write) = retried.get_mut(which % count.max(1)) {
                    replicas[at] = write.retry(
                        &replicas[at],
                        &mut writes,
                        &mut coordinators,
                        reuse_retry_id,
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
    writes.check_none_lost(&all);
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
            run(steps, |replica| replica as u64 + 1, false);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("version properties failed with seed {seed}: {failure}");
        }
    }
}

/// Runs deliberately broken histories: the property checks must fail.
fn caught(what: &str, seed: u64, cases: u32, coordinator_of: fn(usize) -> u64, reuse: bool) {
    println!("version properties sabotage ({what}): seed {seed}");
    let mut runner = proptest_runner(seed, cases);
    let result = runner.run(&prop::collection::vec(step(), 1..80), |steps| {
        run(steps, coordinator_of, reuse);
        Ok(())
    });
    let failure = result.expect_err("the sabotage went unnoticed");
    println!("caught as expected: {failure}");
}

#[test]
fn the_checks_catch_replicas_minting_the_same_dots() {
    // Deliberately broken: every replica mints dots as node 1, so two replicas can give
    // one dot to different values. The property checks must notice.
    caught("shared dots", 3, 512, |_| 1, false);
}

#[test]
fn the_checks_catch_a_retry_dot_minted_twice() {
    // Deliberately broken: a later attempt of a retried write is minted under the
    // previous retry's id, so one dot can be minted on two replicas holding different
    // versions. Two plain writes retried across each other then supersede each other
    // until neither is left, and the no-write-lost check must notice.
    caught(
        "retry id reused",
        5,
        2048,
        |replica| replica as u64 + 1,
        true,
    );
}
