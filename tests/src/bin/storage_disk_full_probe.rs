//! Fills a store on a small filesystem until the disk is full, then checks that the
//! store stays readable and consistent, reopens, and recovers once space returns.
//!
//! Usage: `storage-disk-full-probe <dir>` where `<dir>` is on a small, otherwise empty
//! filesystem (tests/storage_disk_full.rs mounts a tmpfs in a private namespace). Prints
//! one line per stage and exits non-zero, with the reason, on the first broken promise.

use ringkv_storage::{Config, Durability, StorageError, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

const WRITES_MAX: u32 = 100_000;

fn config() -> Config {
    Config {
        durability: Durability::Group,
        segment_size_bytes: 1 << 20,
        value_size_bytes_max: 64 << 10,
        checkpoint_interval_bytes: 256 << 10,
        ..Config::default()
    }
}

fn value(i: u32) -> Vec<u8> {
    let mut value = format!("value {i} ").into_bytes();
    value.resize(16 << 10, (i % 251) as u8);
    value
}

fn verify(store: &Store, acknowledged: &BTreeMap<u32, Vec<u8>>, stage: &str) -> Result<(), String> {
    for (i, expected) in acknowledged {
        let key = format!("key-{i}");
        match store.get(key.as_bytes()) {
            Ok(Some(found)) if &found == expected => {}
            other => {
                return Err(format!(
                    "{stage}: {key} read back {:?}",
                    other.map(|v| v.map(|v| v.len()))
                ));
            }
        }
    }
    println!(
        "{stage}: all {} acknowledged writes read back",
        acknowledged.len()
    );
    Ok(())
}

fn fill(
    store: &Store,
    acknowledged: &mut BTreeMap<u32, Vec<u8>>,
    first: u32,
) -> Result<u32, String> {
    for i in first..first + WRITES_MAX {
        let value = value(i);
        match store.put(format!("key-{i}").as_bytes(), &value) {
            Ok(()) => {
                acknowledged.insert(i, value);
            }
            Err(StorageError::DiskFull) => return Ok(i),
            Err(other) => return Err(format!("write {i} failed with {other} instead of DiskFull")),
        }
    }
    Err(format!("{WRITES_MAX} writes never filled the disk"))
}

fn run(dir: &Path) -> Result<(), String> {
    let data = dir.join("data");
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 2 << 20]).map_err(|e| format!("ballast: {e}"))?;
    let mut acknowledged = BTreeMap::new();

    let store = Store::open(&data, config()).map_err(|e| format!("open: {e}"))?;
    let refused_at = fill(&store, &mut acknowledged, 0)?;
    println!("disk full after {refused_at} writes: refused with DiskFull");
    verify(&store, &acknowledged, "while full")?;
    match store.put(b"one-more", b"x") {
        Err(StorageError::DiskFull) | Ok(()) => {}
        Err(other) => return Err(format!("write on a full disk failed with {other}")),
    }
    drop(store);

    let store = Store::open(&data, config()).map_err(|e| format!("reopen while full: {e}"))?;
    verify(&store, &acknowledged, "reopened while full")?;
    drop(store);

    std::fs::remove_file(&ballast).map_err(|e| format!("removing ballast: {e}"))?;
    let store = Store::open(&data, config()).map_err(|e| format!("reopen with space: {e}"))?;
    let more = refused_at + 1_000_000;
    store
        .put(format!("key-{more}").as_bytes(), &value(more))
        .map_err(|e| format!("write after space returned: {e}"))?;
    acknowledged.insert(more, value(more));
    println!("space returned: writes accepted again");
    store.close().map_err(|e| format!("close: {e}"))?;
    let store = Store::open(&data, config()).map_err(|e| format!("final reopen: {e}"))?;
    verify(&store, &acknowledged, "final reopen")?;
    if store.stats().corrupt_records != 0 {
        return Err(format!(
            "{} corrupt records after disk full",
            store.stats().corrupt_records
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: storage-disk-full-probe <dir on a small filesystem>");
        return ExitCode::from(2);
    };
    match run(Path::new(&dir)) {
        Ok(()) => {
            println!("disk full probe: passed");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("disk full probe: FAILED: {reason}");
            ExitCode::FAILURE
        }
    }
}
