//! Power cuts on a filesystem that forgets what was not fsynced (`ForgetfulFs`): the
//! filesystem itself, a fresh store's first write, and random operation sequences with
//! cuts among them (`storage_model::check_seed_with_power_cuts`).
//!
//! Needs root and /dev/fuse; elsewhere each test says so and passes without running.
//! Seeded: prints its seed; `RINGKV_SEED=<n>` replays one, `RINGKV_SIM_RUNS=<n>` and
//! `RINGKV_SIM_SEED_BASE=<n>` try more.

use ringkv_tests::forgetful_fs::ForgetfulFs;
use ringkv_tests::seeds::SeedPlan;
use ringkv_tests::storage_model::{check_seed_with_power_cuts, first_write_through_a_power_cut};
use std::fs::{self, File};
use std::io::Write;

#[test]
fn the_filesystem_forgets_what_was_not_synced_and_keeps_what_was() {
    if !ForgetfulFs::available_for("the_filesystem_forgets_what_was_not_synced_and_keeps_what_was")
    {
        return;
    }
    let mountpoint = tempfile::tempdir().unwrap();
    let mut disk = ForgetfulFs::mount(mountpoint.path()).unwrap();
    let root = mountpoint.path();
    // Synced file in a synced directory: kept.
    fs::create_dir(root.join("kept")).unwrap();
    File::open(root).unwrap().sync_all().unwrap();
    let mut file = File::create(root.join("kept/file")).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_all().unwrap();
    File::open(root.join("kept")).unwrap().sync_all().unwrap();
    // Appended after the sync: lost.
    file.write_all(b" and more").unwrap();
    drop(file);
    // A directory created without its parent's sync: lost.
    fs::create_dir(root.join("unsynced-dir")).unwrap();
    // A rename without the directory's sync: undone; an unlink likewise.
    fs::write(root.join("kept/renamed-from"), b"x").unwrap();
    File::open(root.join("kept/renamed-from"))
        .unwrap()
        .sync_all()
        .unwrap();
    File::open(root.join("kept")).unwrap().sync_all().unwrap();
    fs::rename(root.join("kept/renamed-from"), root.join("kept/renamed-to")).unwrap();
    fs::remove_file(root.join("kept/file")).unwrap();
    // Synced data whose name was never synced: lost, name and all.
    let mut orphan = File::create(root.join("kept/orphan")).unwrap();
    orphan.write_all(b"data").unwrap();
    orphan.sync_all().unwrap();
    drop(orphan);
    let before = disk.counters();
    assert!(
        before.file_syncs >= 3 && before.directory_syncs >= 3,
        "{before:?}"
    );

    let report = disk.power_cut(None).unwrap();
    println!("cut: {report}");
    assert_eq!(fs::read(root.join("kept/file")).unwrap(), b"synced");
    assert!(!root.join("kept/orphan").exists());
    assert!(!root.join("unsynced-dir").exists());
    assert!(root.join("kept/renamed-from").exists());
    assert!(!root.join("kept/renamed-to").exists());
    assert_eq!(report.files_rolled_back, 1, "{report}");
    assert!(report.inodes_dropped >= 2, "{report}");
    assert_eq!(report.pages_kept_torn + report.entries_kept_torn, 0);

    // A torn cut keeps some unsynced pages and drops others, never whole files'
    // worth of garbage: every page is either its synced or its written version.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(root.join("kept/file"))
        .unwrap();
    file.write_all(&[7u8; 64 << 10]).unwrap();
    drop(file);
    let report = disk.power_cut(Some(11)).unwrap();
    println!("torn cut: {report}");
    assert_eq!(
        report.pages_kept_torn + report.pages_forgotten,
        16,
        "{report}"
    );
    assert!(
        report.pages_kept_torn > 0 && report.pages_forgotten > 0,
        "{report}"
    );
    let torn = fs::read(root.join("kept/file")).unwrap();
    assert!(torn.len() == 6 || torn.len() == 64 << 10, "{}", torn.len());
    for (index, page) in torn.chunks(4096).enumerate() {
        let written = page.iter().all(|byte| *byte == 7);
        let synced = if index == 0 {
            page.starts_with(b"synced") && page[6..].iter().all(|byte| *byte == 0)
        } else {
            page.iter().all(|byte| *byte == 0)
        };
        assert!(written || synced, "page {index} is neither version");
    }
}

#[test]
fn a_fresh_stores_first_acknowledged_write_survives_a_power_cut() {
    if !ForgetfulFs::available_for("a_fresh_stores_first_acknowledged_write_survives_a_power_cut") {
        return;
    }
    let left = first_write_through_a_power_cut();
    println!("cut: {}", left.cut);
    assert!(left.directory_kept, "the store's directory is gone");
    assert_eq!(left.value.as_deref(), Some(&b"acknowledged"[..]));
}

#[test]
fn random_sequences_with_power_cuts_match_the_model() {
    if !ForgetfulFs::available_for("random_sequences_with_power_cuts_match_the_model") {
        return;
    }
    let plan = SeedPlan::from_env(1).unwrap();
    for seed in plan.seeds() {
        println!("storage power cuts: seed {seed} (replay with RINGKV_SEED={seed})");
        if let Err(failure) = check_seed_with_power_cuts(seed, 24) {
            panic!("storage power cuts failed with seed {seed}: {failure}");
        }
    }
}
