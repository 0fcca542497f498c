//! The power-cut tests can fail: an engine that never fsyncs a directory (new
//! directories, segments, checkpoints and renames reach their directory only in
//! memory) must lose a fresh store's acknowledged write, and the model checker with
//! power cuts must report it. A separate test binary, because the sabotage switch is
//! process-wide. Needs root and /dev/fuse; elsewhere it says so and passes without
//! running.

use ringkv_storage::{Config, Durability, Store};
use ringkv_tests::forgetful_fs::ForgetfulFs;
use ringkv_tests::storage_model::check_seed_with_power_cuts;

#[test]
fn an_engine_without_directory_fsyncs_loses_writes_and_the_power_cut_tests_see_it() {
    if !ForgetfulFs::available_for("storage power-cut sabotage") {
        return;
    }
    ringkv_storage::store::sabotage::skip_directory_syncs();

    let mountpoint = tempfile::tempdir().unwrap();
    let mut disk = ForgetfulFs::mount(mountpoint.path()).unwrap();
    let dir = mountpoint.path().join("node").join("data");
    let config = Config {
        durability: Durability::Always,
        ..Config::default()
    };
    let store = Store::open(&dir, config.clone()).unwrap();
    store.put(b"first", b"acknowledged").unwrap();
    drop(store);
    let report = disk.power_cut(None).unwrap();
    println!("cut: {report}");
    assert!(
        !dir.exists(),
        "the unsynced store directory survived the cut"
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
