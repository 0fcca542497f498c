//! The storage model checker can fail: with recovery deliberately broken (tombstones
//! ignored on replay, so deleted values come back after a crash) it must report a
//! divergence. A separate test binary, because the sabotage switch is process-wide.

use ringkv_tests::storage_model::check_seed;

#[test]
fn the_model_checker_catches_deleted_values_coming_back_after_a_crash() {
    ringkv_storage::store::sabotage::break_replay_of_tombstones();
    let seed = 7;
    println!("storage model sabotage: seed {seed}");
    let failure = check_seed(seed, 256).expect_err("the model checker missed resurrected deletes");
    println!("caught as expected: {failure}");
    assert!(
        failure.contains("key"),
        "unexpected failure text: {failure}"
    );
}
