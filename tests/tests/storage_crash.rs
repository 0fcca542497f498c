//! Crash and corruption: torn tails cut at every byte, flipped bytes in records and in
//! the index, and a process that dies at every stage of compaction.

use ringkv_storage::record::Bounds;
use ringkv_storage::segment::{self, ScanEvent, ScanMode, Segment};
use ringkv_storage::{CompactionProgress, Config, Durability, Failpoint, StorageError, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BOUNDS: Bounds = Bounds {
    key_size_bytes_max: 1024,
    value_size_bytes_max: 8 << 10,
};

fn config() -> Config {
    Config {
        durability: Durability::None,
        segment_size_bytes: 64 << 10,
        value_size_bytes_max: 8 << 10,
        checkpoint_interval_bytes: 1 << 30,
        compaction_dead_share_min: 0.3,
        ..Config::default()
    }
}

/// Segment files in `dir`, by id.
fn segment_files(dir: &Path) -> BTreeMap<u32, PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|item| {
            let item = item.unwrap();
            let (id, temporary) = segment::parse_file_name(item.file_name().to_str()?)?;
            (!temporary).then(|| (id, item.path()))
        })
        .collect()
}

/// (offset, size, key) of every record in a segment file.
fn records_in(path: &Path, id: u32) -> Vec<(u32, u32, Vec<u8>)> {
    let segment = Segment::open(path, id).unwrap();
    let mut records = Vec::new();
    segment
        .scan(
            segment::HEADER_SIZE_BYTES,
            BOUNDS,
            ScanMode::SkipCorrupt,
            |event| {
                if let ScanEvent::Record { offset, record } = event {
                    records.push((offset, record.size_bytes() as u32, record.key.to_vec()));
                }
                Ok(())
            },
        )
        .unwrap();
    records
}

fn copy_dir(from: &Path, to: &Path) {
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
    }
}

fn expect(store: &Store, expected: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, context: &str) {
    for (key, value) in expected {
        assert_eq!(
            &store.get(key).unwrap(),
            value,
            "{} {context}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn a_tail_torn_at_any_byte_keeps_every_whole_record_and_nothing_after_the_tear() {
    let pristine = tempfile::tempdir().unwrap();
    {
        let store = Store::open(pristine.path(), config()).unwrap();
        for i in 0..10 {
            store
                .put(
                    format!("key-{i}").as_bytes(),
                    format!("base-{i}").as_bytes(),
                )
                .unwrap();
        }
        store.checkpoint().unwrap();
        store
            .put(b"key-1", b"overwritten after the checkpoint")
            .unwrap();
        store
            .put(b"key-new", b"created after the checkpoint")
            .unwrap();
        store.delete(b"key-2").unwrap();
        // Dropped without close: the index checkpoint does not cover the last three.
    }
    let (active_id, active_path) = segment_files(pristine.path()).pop_last().unwrap();
    let records = records_in(&active_path, active_id);
    let tail = &records[records.len() - 3..];
    let tail_start = tail[0].0;
    let tail_end = tail[2].0 + tail[2].1;

    for tear in ["truncated", "garbage"] {
        for cut in tail_start..=tail_end {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let path = dir.path().join(active_path.file_name().unwrap());
            if tear == "truncated" {
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(u64::from(cut)).unwrap();
            } else {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[cut as usize..tail_end as usize].fill(0xA5);
                std::fs::write(&path, bytes).unwrap();
            }
            let whole = |n: usize| tail[n].0 + tail[n].1 <= cut;
            let mut expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..10)
                .map(|i| {
                    (
                        format!("key-{i}").into_bytes(),
                        Some(format!("base-{i}").into_bytes()),
                    )
                })
                .collect();
            if whole(0) {
                expected.insert(
                    b"key-1".to_vec(),
                    Some(b"overwritten after the checkpoint".to_vec()),
                );
            }
            expected.insert(
                b"key-new".to_vec(),
                whole(1).then(|| b"created after the checkpoint".to_vec()),
            );
            if whole(2) {
                expected.insert(b"key-2".to_vec(), None);
            }
            let context = format!("with the tail {tear} at byte {cut}");
            let store = Store::open(dir.path(), config()).unwrap();
            expect(&store, &expected, &context);
            // The log goes on cleanly after the cut, and survives another crash.
            store.put(b"after", b"the cut").unwrap();
            drop(store);
            let store = Store::open(dir.path(), config()).unwrap();
            expected.insert(b"after".to_vec(), Some(b"the cut".to_vec()));
            expect(&store, &expected, &context);
            assert_eq!(store.stats().corrupt_records, 0, "{context}");
        }
    }
}

fn sealed_store() -> (tempfile::TempDir, BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    let store = Store::open(dir.path(), config()).unwrap();
    for i in 0..60 {
        let key = format!("key-{i}").into_bytes();
        let value = format!("value-{i}-{}", "v".repeat(2_000)).into_bytes();
        store.put(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
    assert!(
        store.stats().segments >= 2,
        "the first segment must be sealed"
    );
    store.close().unwrap();
    (dir, expected)
}

#[test]
fn a_flipped_byte_in_a_sealed_record_fails_that_read_and_never_returns_wrong_bytes() {
    let (pristine, expected) = sealed_store();
    let (first_id, first_path) = segment_files(pristine.path()).pop_first().unwrap();
    let (offset, size, key) = records_in(&first_path, first_id)[3].clone();
    // Every byte of a small part of the record: header, key, start and end of value.
    let positions: Vec<u32> = (0..40).chain(size - 8..size).map(|p| offset + p).collect();
    for position in positions {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let path = dir.path().join(first_path.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[position as usize] ^= 0x04;
        std::fs::write(&path, bytes).unwrap();

        let store = Store::open(dir.path(), config()).unwrap();
        match store.get(&key) {
            Err(StorageError::Corrupt { .. }) => {}
            other => panic!("flip at {position}: read gave {other:?} instead of Corrupt"),
        }
        let mut others = expected.clone();
        others.remove(&key);
        expect(&store, &others, &format!("with a flip at {position}"));
        assert!(store.stats().corrupt_records >= 1);
    }
}

#[test]
fn a_damaged_index_is_detected_and_rebuilt_from_the_segments() {
    let (pristine, expected) = sealed_store();
    let names = ringkv_storage::index::FILE_NAMES;
    let index_size = std::fs::metadata(pristine.path().join(names[0]))
        .unwrap()
        .len() as usize;
    // The same byte flipped in both checkpoint files (so whichever is newest is
    // damaged; a damaged older file is never read): header, pages, checksums.
    let positions: Vec<usize> = (0..72).chain((4096..index_size).step_by(1_531)).collect();
    for position in positions {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        for name in names {
            let path = dir.path().join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[position] ^= 0x80;
            std::fs::write(&path, bytes).unwrap();
        }
        let store = Store::open(dir.path(), config()).unwrap();
        assert!(
            store.stats().index_rebuilt,
            "flip at {position} was not noticed"
        );
        expect(
            &store,
            &expected,
            &format!("with the index flipped at {position}"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), dir.path());
    for name in names {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let store = Store::open(dir.path(), config()).unwrap();
    expect(&store, &expected, "with the index deleted");
}

/// Builds dead space (overwrites and deletes), then dies inside compaction: at
/// `failpoint`, or right after the `copy_steps`-th partial copy. After restart every
/// value must be as written, and compaction must finish the job.
fn crash_during_compaction(stop: Result<Failpoint, usize>) {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    {
        let store = Store::open(dir.path(), config()).unwrap();
        for round in 0..3 {
            for i in 0..200 {
                let key = format!("key-{i}").into_bytes();
                let value = format!("round-{round}-{i}-{}", "c".repeat(700)).into_bytes();
                store.put(&key, &value).unwrap();
                expected.insert(key, Some(value));
            }
        }
        for i in (0..200).step_by(4) {
            let key = format!("key-{i}").into_bytes();
            store.delete(&key).unwrap();
            expected.insert(key, None);
        }
        store.checkpoint().unwrap();
        match stop {
            Ok(failpoint) => {
                store.fail_at(failpoint);
                let mut failed = false;
                for _ in 0..1_000 {
                    match store.compact_step(8 << 10) {
                        Ok(CompactionProgress::Idle) => break,
                        Ok(_) => {}
                        Err(StorageError::Io {
                            doing: "stopping at a test failpoint",
                            ..
                        }) => {
                            failed = true;
                            break;
                        }
                        Err(other) => panic!("compaction failed: {other}"),
                    }
                }
                assert!(failed, "{failpoint:?} was never reached");
            }
            Err(copy_steps) => {
                // Stop right after the `copy_steps`-th partial copy: mid-job.
                let mut copies = 0;
                while copies < copy_steps {
                    match store.compact_step(2 << 10).unwrap() {
                        CompactionProgress::Copied { .. } => copies += 1,
                        CompactionProgress::Finished { .. } => {}
                        CompactionProgress::Idle => panic!("ran out of work after {copies} copies"),
                    }
                }
            }
        }
        // The process dies here: no close, no checkpoint.
    }
    let context = format!("after a crash at {stop:?}");
    let store = Store::open(dir.path(), config()).unwrap();
    expect(&store, &expected, &context);
    let mut finished = 0;
    for _ in 0..1_000 {
        match store.compact_step(1 << 20).unwrap() {
            CompactionProgress::Idle => break,
            CompactionProgress::Finished { .. } => finished += 1,
            CompactionProgress::Copied { .. } => {}
        }
    }
    assert!(
        finished >= 1,
        "{context}: compaction made no progress after restart"
    );
    expect(
        &store,
        &expected,
        &format!("{context} and a full compaction"),
    );
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    expect(
        &store,
        &expected,
        &format!("{context}, compaction and another crash"),
    );
    assert_eq!(store.stats().corrupt_records, 0, "{context}");
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|i| {
            i.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "{context}: temporary files left behind");
}

#[test]
fn a_crash_at_any_stage_of_compaction_loses_nothing() {
    for failpoint in [
        Failpoint::CompactionBeforeRename,
        Failpoint::CompactionAfterRename,
        Failpoint::CompactionAfterIndexMove,
        Failpoint::BeforeObsoleteDeletion,
    ] {
        crash_during_compaction(Ok(failpoint));
    }
    for copy_steps in [1, 2, 5] {
        crash_during_compaction(Err(copy_steps));
    }
}

/// A job rewrites several segments and deletes them one at a time, so a crash (or a
/// power cut that keeps one unlink and not another) can bring back any subset of its
/// sources. A tombstone must then still hide the older record of its key held in a
/// source that came back: the job keeps a tombstone unless every other segment, the
/// other sources included, starts above it. Here the older record sits in one source,
/// the tombstone in another; the first comes back and the index is rebuilt.
#[test]
fn a_tombstone_outlives_any_of_its_jobs_sources_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let filler = |round: u32, i: u32| format!("round-{round}-{i}-{}", "f".repeat(2_000));
    let store = Store::open(dir.path(), config()).unwrap();
    store.put(b"victim", b"deleted long ago").unwrap();
    for i in 0..40 {
        store
            .put(format!("filler-{i}").as_bytes(), filler(0, i).as_bytes())
            .unwrap();
    }
    store.delete(b"victim").unwrap();
    for round in 1..3 {
        for i in 0..40 {
            store
                .put(
                    format!("filler-{i}").as_bytes(),
                    filler(round, i).as_bytes(),
                )
                .unwrap();
        }
    }
    let before = segment_files(dir.path());
    let (first_id, first_path) = before
        .first_key_value()
        .map(|(id, p)| (*id, p.clone()))
        .unwrap();
    let victim_in_first = records_in(&first_path, first_id)
        .iter()
        .any(|(_, _, key)| key == b"victim");
    assert!(
        victim_in_first,
        "the old record must sit in the first segment"
    );
    let first_copy = std::fs::read(&first_path).unwrap();
    let mut largest_job = 0;
    for _ in 0..1_000 {
        match store.compact_step(1 << 20).unwrap() {
            CompactionProgress::Idle => break,
            CompactionProgress::Finished { sources, .. } => largest_job = largest_job.max(sources),
            CompactionProgress::Copied { .. } => {}
        }
    }
    let after = segment_files(dir.path());
    assert!(
        !after.contains_key(&first_id) && largest_job >= 2,
        "the first segment must go in a job of several sources ({largest_job}; {before:?} -> {after:?})"
    );
    drop(store);
    // The first source's deletion did not survive; the index is lost too.
    std::fs::write(&first_path, &first_copy).unwrap();
    for name in ringkv_storage::index::FILE_NAMES {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let store = Store::open(dir.path(), config()).unwrap();
    assert!(store.stats().index_rebuilt);
    assert_eq!(
        store.get(b"victim").unwrap(),
        None,
        "a deleted value came back"
    );
    for i in 0..40 {
        assert_eq!(
            store.get(format!("filler-{i}").as_bytes()).unwrap(),
            Some(filler(2, i).into_bytes())
        );
    }
}
