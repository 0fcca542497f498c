//! Readers running during writes and compaction see the old record or the new one,
//! never a torn or foreign one; versions a reader sees never go backwards; group commit
//! shares fsyncs between concurrent writers.

use ringkv_storage::{Config, Durability, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

const KEYS: u32 = 64;
const WRITES_PER_WRITER: u32 = 3_000;

/// `key-<k>` at version `v`: a self-describing value whose every byte is checkable.
fn value(key: u32, version: u32) -> Vec<u8> {
    let mut value = format!("{key}:{version}:").into_bytes();
    let filler = (key.wrapping_mul(31).wrapping_add(version) % 251) as u8;
    value.resize(200 + (version as usize * 7) % 1_500, filler);
    value
}

/// Parses and fully checks a value; returns its version.
fn check(key: u32, bytes: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(24)]);
    let mut parts = text.splitn(3, ':');
    let stored_key: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("torn value: no key");
    let version: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("torn value: no version");
    assert_eq!(stored_key, key, "read another key's value");
    assert_eq!(
        bytes,
        &value(key, version)[..],
        "torn value for key {key} version {version}"
    );
    version
}

fn run(durability: Durability) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        durability,
        segment_size_bytes: 256 << 10,
        value_size_bytes_max: 4 << 10,
        checkpoint_interval_bytes: 512 << 10,
        compaction_dead_share_min: 0.3,
        ..Config::default()
    };
    let store = Arc::new(Store::open(dir.path(), config).unwrap());
    for key in 0..KEYS {
        store
            .put(format!("key-{key}").as_bytes(), &value(key, 0))
            .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // Two writers, each owning half the keys, so per-key versions only increase.
    for writer in 0..2u32 {
        let store = Arc::clone(&store);
        threads.push(thread::spawn(move || {
            for step in 1..=WRITES_PER_WRITER {
                let key = (step * 7 % (KEYS / 2)) * 2 + writer;
                store
                    .put(format!("key-{key}").as_bytes(), &value(key, step))
                    .unwrap();
            }
        }));
    }
    for reader in 0..2u64 {
        let (store, done, reads) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&reads));
        threads.push(thread::spawn(move || {
            let mut seen = vec![0u32; KEYS as usize];
            let mut rng = ringkv_core::Rng::new(reader);
            while !done.load(Ordering::Acquire) {
                let key = rng.below(u64::from(KEYS)) as u32;
                let bytes = store
                    .get(format!("key-{key}").as_bytes())
                    .unwrap()
                    .expect("key vanished");
                let version = check(key, &bytes);
                assert!(version >= seen[key as usize], "key {key} went back in time");
                seen[key as usize] = version;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let compactor = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        thread::spawn(move || {
            let mut steps = 0u64;
            while !done.load(Ordering::Acquire) {
                store.compact_step(32 << 10).unwrap();
                steps += 1;
                thread::yield_now();
            }
            steps
        })
    };
    let writers: Vec<_> = threads.drain(..2).collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Release);
    for thread in threads {
        thread.join().unwrap();
    }
    compactor.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(
        store.stats().compactions > 0,
        "compaction never ran during the writes"
    );
    for key in 0..KEYS {
        let bytes = store.get(format!("key-{key}").as_bytes()).unwrap().unwrap();
        check(key, &bytes);
    }
    assert_eq!(store.stats().corrupt_records, 0);
    (store.stats().syncs, u64::from(WRITES_PER_WRITER) * 2)
}

#[test]
fn readers_during_writes_and_compaction_see_whole_values_that_never_go_back() {
    run(Durability::None);
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_writers() {
    let (syncs, writes) = run(Durability::Group);
    println!("group commit: {syncs} fsyncs for {writes} writes");
    assert!(
        syncs < writes,
        "{syncs} fsyncs for {writes} writes: nothing was shared"
    );
}
