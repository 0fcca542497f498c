//! The storage engine's model checker: random sequences of put, delete, get, batch,
//! reopen, crash (drop without close), checkpoint and compaction steps, checked against
//! a `BTreeMap` after every operation. Used by `tests/storage_model.rs` (the real run)
//! and `tests/storage_model_catches_sabotage.rs` (proof that it can fail).
//!
//! [`check_seed_with_power_cuts`] runs the same on a [`ForgetfulFs`] with power cuts
//! among the steps (some torn): the store lives in a directory that does not exist
//! before the first step, every write is acknowledged after its fsync (`always`), so
//! after each cut the store must hold exactly the model, directory entries included.

use crate::forgetful_fs::ForgetfulFs;
use proptest::prelude::*;
use ringkv_storage::{Config, Durability, Store, WriteBatch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub enum Operation {
    Put {
        key: u8,
        size_bytes: u16,
    },
    Delete {
        key: u8,
    },
    Get {
        key: u8,
    },
    Batch(Vec<(u8, Option<u16>)>),
    Reopen,
    Crash,
    Checkpoint,
    Compact {
        steps: u8,
    },
    /// kill -9 and a power cut: only what was fsynced remains; with a tear seed, a
    /// random half of what was not survives too (only on a [`ForgetfulFs`]).
    PowerCut {
        tear: Option<u64>,
    },
}

/// Runs `cases` random sequences drawn from `seed`; `Err` describes the first
/// divergence (shrunk to a minimal sequence).
pub fn check_seed(seed: u64, cases: u32) -> Result<(), String> {
    let mut runner = crate::seeds::proptest_runner(seed, cases);
    let strategy = prop::collection::vec(operation(), 1..250);
    runner
        .run(&strategy, |operations| {
            run(operations);
            Ok(())
        })
        .map_err(|failure| failure.to_string())
}

/// Like [`check_seed`], on a forgetful filesystem with power cuts among the steps;
/// `Err` also when the filesystem cannot be mounted here.
pub fn check_seed_with_power_cuts(seed: u64, cases: u32) -> Result<(), String> {
    let mut runner = crate::seeds::proptest_runner(seed, cases);
    let strategy = prop::collection::vec(
        prop_oneof![
            12 => operation(),
            1 => prop::option::of(any::<u64>()).prop_map(|tear| Operation::PowerCut { tear }),
        ],
        1..120,
    );
    runner
        .run(&strategy, |operations| {
            let mountpoint = tempfile::tempdir().unwrap();
            let mut disk = ForgetfulFs::mount(mountpoint.path()).unwrap();
            run_on(operations, Disk::Forgetful(&mut disk));
            Ok(())
        })
        .map_err(|failure| failure.to_string())
}

/// What a fresh store's first write left after a power cut.
#[derive(Debug)]
pub struct FirstWriteAfterCut {
    /// The store's directory still exists.
    pub directory_kept: bool,
    /// What the reopened store holds under the written key (None if its directory
    /// is gone).
    pub value: Option<Vec<u8>>,
    pub cut: crate::forgetful_fs::CutReport,
}

/// A store opened where no directory exists yet on a fresh forgetful filesystem,
/// one write with `always` (acknowledged after its fsync), dropped as by kill -9,
/// a power cut, and what is left.
pub fn first_write_through_a_power_cut() -> FirstWriteAfterCut {
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
    let cut = disk.power_cut(None).unwrap();
    let directory_kept = dir.exists();
    let value = if directory_kept {
        Store::open(&dir, config).unwrap().get(b"first").unwrap()
    } else {
        None
    };
    FirstWriteAfterCut {
        directory_kept,
        value,
        cut,
    }
}

/// One random operation.
pub fn operation() -> impl Strategy<Value = Operation> {
    let key = 0u8..24;
    let size = 0u16..3_000;
    prop_oneof![
        30 => (key.clone(), size.clone()).prop_map(|(key, size_bytes)| Operation::Put { key, size_bytes }),
        8 => key.clone().prop_map(|key| Operation::Delete { key }),
        15 => key.clone().prop_map(|key| Operation::Get { key }),
        5 => prop::collection::vec((key, prop::option::of(size)), 1..8).prop_map(Operation::Batch),
        2 => Just(Operation::Reopen),
        2 => Just(Operation::Crash),
        1 => Just(Operation::Checkpoint),
        6 => (1u8..20).prop_map(|steps| Operation::Compact { steps }),
    ]
}

fn config() -> Config {
    Config {
        durability: Durability::None,
        segment_size_bytes: 16 << 10,
        value_size_bytes_max: 4 << 10,
        checkpoint_interval_bytes: 6 << 10,
        compaction_dead_share_min: 0.3,
        ..Config::default()
    }
}

fn key_name(key: u8) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

fn value_for(counter: u32, size_bytes: u16) -> Vec<u8> {
    counter
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(usize::from(size_bytes))
        .collect()
}

fn check_all(store: &Store, model: &BTreeMap<u8, Vec<u8>>, when: &str) {
    for key in 0..24u8 {
        let stored = store.get(&key_name(key)).unwrap();
        assert_eq!(stored.as_ref(), model.get(&key), "key {key} after {when}");
    }
    let mut scanned = 0;
    let mut after = None;
    loop {
        let chunk = store.scan(0, u64::MAX, after, 5).unwrap();
        scanned += chunk.items.len();
        match chunk.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(scanned, model.len(), "scan after {when}");
}

/// Where a run keeps its store.
#[derive(Debug)]
pub enum Disk<'a> {
    /// A temporary directory on the machine's disk: crashes, no power cuts.
    Temporary,
    /// A forgetful filesystem: power cuts too, writes acknowledged after their fsync.
    Forgetful(&'a mut ForgetfulFs),
}

/// Runs one operation sequence against a fresh store; panics on any divergence.
pub fn run(operations: Vec<Operation>) {
    run_on(operations, Disk::Temporary);
}

/// Runs one operation sequence against a fresh store on `disk`.
pub fn run_on(operations: Vec<Operation>, mut disk: Disk<'_>) {
    let temporary = tempfile::tempdir().unwrap();
    let (dir, config): (PathBuf, Config) = match &disk {
        Disk::Temporary => (temporary.path().to_path_buf(), config()),
        Disk::Forgetful(forgetful) => (
            // Not there yet: the store creates it, and a cut must not lose it.
            forgetful.mountpoint().join("node").join("data"),
            Config {
                durability: Durability::Always,
                ..config()
            },
        ),
    };
    let open = |dir: &Path| Store::open(dir, config.clone()).unwrap();
    let mut store = open(&dir);
    let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut counter = 0u32;
    for operation in operations {
        counter += 1;
        match operation {
            Operation::Put { key, size_bytes } => {
                let value = value_for(counter, size_bytes);
                store.put(&key_name(key), &value).unwrap();
                model.insert(key, value);
            }
            Operation::Delete { key } => {
                store.delete(&key_name(key)).unwrap();
                model.remove(&key);
            }
            Operation::Get { key } => {
                assert_eq!(
                    store.get(&key_name(key)).unwrap().as_ref(),
                    model.get(&key),
                    "get {key}"
                );
            }
            Operation::Batch(items) => {
                let mut batch = WriteBatch::new();
                for (i, (key, size)) in items.into_iter().enumerate() {
                    match size {
                        Some(size_bytes) => {
                            let value = value_for(counter * 100 + i as u32, size_bytes);
                            batch.put(&key_name(key), &value);
                            model.insert(key, value);
                        }
                        None => {
                            batch.delete(&key_name(key));
                            model.remove(&key);
                        }
                    }
                }
                store.write(&batch).unwrap();
            }
            Operation::Reopen => {
                store.close().unwrap();
                store = open(&dir);
                check_all(&store, &model, "reopen");
            }
            Operation::Crash => {
                drop(store);
                store = open(&dir);
                check_all(&store, &model, "crash");
            }
            Operation::PowerCut { tear } => {
                let Disk::Forgetful(forgetful) = &mut disk else {
                    continue;
                };
                drop(store);
                let report = forgetful.power_cut(tear).unwrap();
                store = open(&dir);
                check_all(&store, &model, &format!("a power cut ({report})"));
            }
            Operation::Checkpoint => store.checkpoint().unwrap(),
            Operation::Compact { steps } => {
                for _ in 0..steps {
                    store.compact_step(2 << 10).unwrap();
                }
            }
        }
    }
    check_all(&store, &model, "the last operation");
    assert_eq!(store.stats().corrupt_records, 0);
}
