//! The power-cut tests can fail: an engine that never fsyncs a directory (new
//! directories, segments, checkpoints and renames reach their directory only in
//! memory) must lose a fresh store's acknowledged write, and the model checker with
//! power cuts must report it. A separate test binary, because the sabotage switch is
//! process-wide. Needs root and /dev/fuse; elsewhere it says so and passes without
//! running.

use ringkv_tests::forgetful_fs::ForgetfulFs;
use ringkv_tests::storage_model::{check_seed_with_power_cuts, first_write_through_a_power_cut};

#[test]
fn an_engine_without_directory_fsyncs_loses_writes_and_the_power_cut_tests_see_it() {
    if !ForgetfulFs::available_for("storage power-cut sabotage") {
        return;
    }
    ringkv_storage::store::sabotage::skip_directory_syncs();

    let left = first_write_through_a_power_cut();
    println!("cut: {}", left.cut);
    assert!(
        !left.directory_kept && left.value.is_none(),
        "the unsynced store directory survived the cut: {left:?}"
    );

    let seed = 3;
    println!("storage power-cut sabotage: seed {seed}");
    let failure = check_seed_with_power_cuts(seed, 64)
        .expect_err("the power-cut model checker missed writes lost with their directory");
    println!("caught as expected: {failure}");
    assert!(
        failure.contains("power cut"),
        "unexpected failure text: {failure}"
    );
}
