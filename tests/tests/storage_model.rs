//! Model-based test of the storage engine against a `BTreeMap` (see
//! `ringkv_tests::storage_model`).
//!
//! Seeded: prints its seed; `RINGKV_SEED=<n>` replays one, `RINGKV_SIM_RUNS=<n>` and
//! `RINGKV_SIM_SEED_BASE=<n>` try more.

use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::storage_model::check_seed;

#[test]
fn random_operation_sequences_match_a_btreemap_model() {
    let plan = SeedPlan::from_env(1).unwrap();
    for seed in plan.seeds() {
        println!("storage model: seed {seed} (replay with RINGKV_SEED={seed})");
        if let Err(failure) = check_seed(seed, 48) {
            panic!("storage model failed with seed {seed}: {failure}");
        }
    }
}
