//! The store's plain API: what a node relies on every request.

use ringkv_storage::{
    CachedRead, CompactionProgress, Config, Durability, StorageError, Store, WriteBatch,
};

fn small_config() -> Config {
    Config {
        durability: Durability::None,
        segment_size_bytes: 2 << 20,
        value_size_bytes_max: 64 << 10,
        checkpoint_interval_bytes: 1 << 20,
        ..Config::default()
    }
}

#[test]
fn put_get_delete_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Config::default()).unwrap();
        store.put(b"apple", b"red").unwrap();
        store.put(b"banana", b"yellow").unwrap();
        store.put(b"apple", b"green").unwrap();
        store.delete(b"banana").unwrap();
        store.put(b"", b"empty keys are keys too").unwrap();
        assert_eq!(store.get(b"apple").unwrap().as_deref(), Some(&b"green"[..]));
        assert_eq!(store.get(b"banana").unwrap(), None);
        assert_eq!(store.get(b"cherry").unwrap(), None);
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.get(b"apple").unwrap().as_deref(), Some(&b"green"[..]));
    assert_eq!(store.get(b"banana").unwrap(), None);
    assert_eq!(
        store.get(b"").unwrap().as_deref(),
        Some(&b"empty keys are keys too"[..])
    );
    assert_eq!(store.stats().keys, 2);
    assert_eq!(
        store.stats().replayed_records,
        0,
        "a clean close leaves nothing to replay"
    );
}

#[test]
fn oversize_keys_and_values_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    store.put(b"k", b"before").unwrap();
    let key = vec![b'k'; 1025];
    assert!(matches!(
        store.put(&key, b"v"),
        Err(StorageError::KeyTooLarge {
            size_bytes: 1025,
            size_bytes_max: 1024
        })
    ));
    let value = vec![0u8; (1 << 20) + 1];
    assert!(matches!(
        store.put(b"k", &value),
        Err(StorageError::ValueTooLarge { .. })
    ));
    let exactly = vec![7u8; 1 << 20];
    store.put(b"big", &exactly).unwrap();
    assert_eq!(store.get(b"big").unwrap().unwrap().len(), 1 << 20);
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"before"[..]));
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), Config::default()),
        Err(StorageError::Locked)
    ));
}

#[test]
fn writes_rotate_segments_and_restart_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![1u8; 10_000];
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for i in 0..1_000u32 {
            store.put(format!("key-{i}").as_bytes(), &value).unwrap();
            // The store's owner checkpoints, off the put's path.
            store.checkpoint_if_due();
        }
        assert!(store.stats().segments >= 5, "10 MB over 2 MiB segments");
        assert!(
            store.stats().checkpoints >= 5,
            "a checkpoint per MiB written"
        );
        // Dropped without close: the last checkpoint is at most 1 MiB behind.
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.stats().keys, 1_000);
    let replayed = store.stats().replayed_records;
    assert!(
        replayed <= 110,
        "replayed {replayed} records, more than one checkpoint interval"
    );
    for i in (0..1_000u32).step_by(97) {
        assert_eq!(
            store.get(format!("key-{i}").as_bytes()).unwrap().unwrap(),
            value
        );
    }
}

#[test]
fn batches_commit_together_and_scan_walks_a_hash_range_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..500u32 {
        batch.put(format!("k{i}").as_bytes(), &i.to_le_bytes());
    }
    batch.delete(b"k7");
    store.write(&batch).unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let chunk = store.scan(0, u64::MAX, after, 64).unwrap();
        assert!(chunk.items.len() <= 65);
        seen.extend(chunk.items);
        match chunk.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        499,
        "every live key once, the deleted one not at all"
    );
    let hashes: Vec<u64> = seen
        .iter()
        .map(|(k, _)| ringkv_storage::store::key_hash(k))
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] < w[1]),
        "hash order, no repeats"
    );

    let (low, high) = (1u64 << 62, 3u64 << 62);
    let partial = store.scan(low, high, None, 10_000).unwrap();
    let expected = hashes
        .iter()
        .filter(|&&h| (low..=high).contains(&h))
        .count();
    assert_eq!(partial.items.len(), expected);
    assert!(partial.next.is_none());
}

#[test]
fn compaction_reclaims_overwritten_space_and_keeps_every_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let value =
        |round: u32, i: u32| format!("round {round} key {i} {}", "x".repeat(2_000)).into_bytes();
    for round in 0..4 {
        for i in 0..1_000u32 {
            store
                .put(format!("key-{i}").as_bytes(), &value(round, i))
                .unwrap();
        }
    }
    for i in (0..1_000u32).step_by(3) {
        store.delete(format!("key-{i}").as_bytes()).unwrap();
    }
    let segments_before = store.stats().segments;
    let mut rewritten = 0;
    let mut reclaimed = 0;
    for _ in 0..10_000 {
        match store.compact_step(256 << 10).unwrap() {
            CompactionProgress::Idle => break,
            CompactionProgress::Copied { bytes } => assert!(bytes <= (256 << 10) + 4_096),
            CompactionProgress::Finished {
                sources,
                reclaimed_bytes,
            } => {
                rewritten += sources;
                reclaimed += reclaimed_bytes;
            }
        }
    }
    // Four rounds of 1,000 values of 2 KB over 2 MiB segments: three quarters of the
    // sealed segments' bytes are dead, and jobs take several sources each.
    assert!(rewritten >= 2, "rewrote {rewritten} segments");
    assert!(reclaimed >= 4 << 20, "reclaimed {reclaimed} bytes");
    assert!(store.stats().segments < segments_before);
    // The sources were deleted (in steps, through `.seg.old`), nothing left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|name| name.ends_with(".old")),
        "{names:?}"
    );
    let segment_files = names.iter().filter(|name| name.ends_with(".seg")).count();
    assert_eq!(segment_files as u64, store.stats().segments, "{names:?}");
    let check = |store: &Store| {
        for i in 0..1_000u32 {
            let got = store.get(format!("key-{i}").as_bytes()).unwrap();
            if i % 3 == 0 {
                assert_eq!(got, None, "key-{i} was deleted");
            } else {
                assert_eq!(got, Some(value(3, i)), "key-{i}");
            }
        }
    };
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), small_config()).unwrap();
    check(&store);
    assert_eq!(store.stats().corrupt_records, 0);
}

#[test]
fn a_segment_deletion_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for i in 0..200u32 {
            store.put(&i.to_le_bytes(), b"kept").unwrap();
        }
        store.close().unwrap();
    }
    // What a crash part way through `Segment::delete_in_steps` leaves: the obsolete
    // segment renamed and partly shrunk (here a copy of a live one, under a higher id).
    let live = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|item| item.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let bytes = std::fs::read(&live).unwrap();
    let old = dir.path().join("0000000999.seg.old");
    std::fs::write(&old, &bytes[..bytes.len() / 3]).unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert!(!old.exists(), "the leftover is deleted at open");
    assert_eq!(store.stats().corrupt_records, 0);
    assert_eq!(store.stats().keys, 200);
    for i in 0..200u32 {
        assert_eq!(
            store.get(&i.to_le_bytes()).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
    }
}

#[test]
fn every_durability_mode_stores_and_recovers_writes() {
    for durability in [
        Durability::Always,
        Durability::Group,
        Durability::Interval { interval_ms: 5 },
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            durability,
            ..small_config()
        };
        {
            let store = Store::open(dir.path(), config.clone()).unwrap();
            for i in 0..50u32 {
                store
                    .put(&i.to_le_bytes(), format!("{durability} {i}").as_bytes())
                    .unwrap();
            }
            store.sync_if_due().unwrap();
            store.sync().unwrap();
            if durability.acknowledges_after_sync() {
                assert!(store.stats().syncs >= 1, "{durability} never synced");
            }
        }
        let store = Store::open(dir.path(), config).unwrap();
        for i in 0..50u32 {
            let expected = format!("{durability} {i}").into_bytes();
            assert_eq!(
                store.get(&i.to_le_bytes()).unwrap(),
                Some(expected),
                "{durability}"
            );
        }
    }
}

#[test]
fn the_split_api_lets_the_caller_write_and_sync_the_bytes_itself() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let mut first = WriteBatch::new();
    first.put(b"a", b"1");
    first.put(b"b", b"2");
    let mut second = WriteBatch::new();
    second.put(b"a", b"3");
    let prepared_first = store.prepare(&first).unwrap();
    let prepared_second = store.prepare(&second).unwrap();
    assert!(
        prepared_second.file_offset()
            >= prepared_first.file_offset() + prepared_first.bytes().len() as u64
    );
    assert!(prepared_first.sequences().max() < prepared_second.sequences().min());

    // Nothing is visible before commit.
    assert_eq!(store.get(b"a").unwrap(), None);
    // Only the newest reservation may be aborted; an older one would leave a hole.
    let prepared_third = store.prepare(&second).unwrap();
    for prepared in [&prepared_first, &prepared_second, &prepared_third] {
        prepared
            .file()
            .write_all_at(prepared.bytes(), prepared.file_offset())
            .unwrap();
    }
    prepared_first.file().sync_data().unwrap();
    store.abort(prepared_third).unwrap();
    // Commits may arrive out of order: the newer sequence still wins.
    store.commit(prepared_second).unwrap();
    store.commit(prepared_first).unwrap();
    assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(store.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));

    let older = store.prepare(&first).unwrap();
    let newer = store.prepare(&second).unwrap();
    assert!(matches!(store.abort(older), Err(StorageError::Misuse(_))));
    store.abort(newer).unwrap();

    // A caller whose sync failed reports it: nothing is indexed, later writes fail.
    let mut third = WriteBatch::new();
    third.put(b"c", b"never");
    let failed = store.prepare(&third).unwrap();
    // A batch prepared behind it (a caller's next round) whose own sync succeeds is
    // refused at commit all the same.
    let mut fourth = WriteBatch::new();
    fourth.put(b"e", b"behind the failed one");
    let behind = store.prepare(&fourth).unwrap();
    behind
        .file()
        .write_all_at(behind.bytes(), behind.file_offset())
        .unwrap();
    behind.file().sync_data().unwrap();
    store.fail(failed);
    assert!(store.commit(behind).is_err());
    assert_eq!(store.get(b"e").unwrap(), None);
    assert_eq!(store.get(b"c").unwrap(), None);
    assert!(
        store.prepare(&third).is_err(),
        "poisoned after a failed sync"
    );
    assert!(store.put(b"d", b"x").is_err());
}

#[test]
fn a_clean_restart_reads_no_sealed_segment_beyond_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![9u8; 4_000];
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for i in 0..2_000u32 {
            store.put(format!("key-{i}").as_bytes(), &value).unwrap();
        }
        store.close().unwrap();
    }
    // Scribble over the records (not the headers) of every segment. A restart that
    // read them would count corrupt records; one that trusts the index does not.
    let mut segment_count = 0;
    for item in std::fs::read_dir(dir.path()).unwrap() {
        let path = item.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            for byte in bytes[64..].iter_mut().step_by(4_096) {
                *byte ^= 0xFF;
            }
            std::fs::write(&path, bytes).unwrap();
            segment_count += 1;
        }
    }
    assert!(segment_count >= 4);
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.stats().replayed_records, 0);
    assert_eq!(
        store.stats().corrupt_records,
        0,
        "restart read segment contents"
    );
    assert!(!store.stats().index_rebuilt);
    assert_eq!(store.stats().keys, 2_000);
}

/// Drops the directory's segment pages from the page cache (they are clean once synced).
fn evict_segments(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let file = std::fs::File::open(&path).unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
    }
}

#[test]
fn reads_that_may_not_wait_serve_cached_records_and_defer_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // No copy in memory: this is about the page cache.
    let config = Config {
        log_memory_bytes: 0,
        ..small_config()
    };
    let store = Store::open(dir.path(), config).unwrap();
    store.put(b"apple", b"red").unwrap();
    store.put(b"banana", b"yellow").unwrap();
    store.delete(b"banana").unwrap();
    store.sync().unwrap();
    let mut value = Vec::new();
    assert_eq!(
        store.get_cached_into(b"apple", &mut value).unwrap(),
        CachedRead::Found
    );
    assert_eq!(value, b"red");
    for absent in [&b"banana"[..], b"cherry"] {
        assert_eq!(
            store.get_cached_into(absent, &mut value).unwrap(),
            CachedRead::Absent
        );
        assert!(value.is_empty());
    }
    // The kernel may keep a page that is briefly busy (tests write in parallel):
    // evict until it is gone, within a bound.
    let mut read = CachedRead::Found;
    for _ in 0..100 {
        evict_segments(dir.path());
        read = store.get_cached_into(b"apple", &mut value).unwrap();
        if read != CachedRead::Found {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        read,
        CachedRead::NotCached,
        "evicted pages are not read inline"
    );
    assert!(value.is_empty());
    // A read that may wait brings the page back; the next inline read is served.
    assert!(store.get_into(b"apple", &mut value).unwrap());
    assert_eq!(
        store.get_cached_into(b"apple", &mut value).unwrap(),
        CachedRead::Found
    );
    assert_eq!(value, b"red");
}

#[test]
fn zeros_written_ahead_of_the_log_never_touch_a_record() {
    // Plain writes zero ahead of the log while split-API reservations are still
    // unwritten; values of many sizes cross several zeroed chunks and segments.
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        for round in 0..600u32 {
            let size = (round as usize * 7_919) % 20_000;
            let reserved_key = format!("reserved-{}", round % 50).into_bytes();
            let reserved_value = vec![(round % 251) as u8 + 1; size];
            let mut reserved = WriteBatch::new();
            reserved.put(&reserved_key, &reserved_value);
            let prepared = store.prepare(&reserved).unwrap();
            let plain_key = format!("plain-{}", round % 70).into_bytes();
            let plain_value = vec![(round % 13) as u8 + 1; size / 2 + 1];
            if round % 2 == 0 {
                // The split API's contract: the batch's bytes and its zeros go before
                // any batch prepared later.
                prepared
                    .file()
                    .write_all_at(prepared.bytes(), prepared.file_offset())
                    .unwrap();
                if let Some((offset, zeros)) = prepared.zeros() {
                    prepared.file().write_all_at(zeros, offset).unwrap();
                }
                store.put(&plain_key, &plain_value).unwrap();
            } else {
                // Zeros skipped, and a plain write lands while the batch is unwritten.
                store.put(&plain_key, &plain_value).unwrap();
                prepared
                    .file()
                    .write_all_at(prepared.bytes(), prepared.file_offset())
                    .unwrap();
            }
            store.sync().unwrap();
            store.commit(prepared).unwrap();
            expected.insert(reserved_key, reserved_value);
            expected.insert(plain_key, plain_value);
        }
        for (key, value) in &expected {
            assert_eq!(store.get(key).unwrap().as_ref(), Some(value));
        }
        store.close().unwrap();
    }
    // Reopen without the checkpoint so every segment is replayed from its bytes.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".seg") && name != "LOCK" {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let store = Store::open(dir.path(), small_config()).unwrap();
    for (key, value) in &expected {
        assert_eq!(store.get(key).unwrap().as_ref(), Some(value), "{key:?}");
    }
    assert_eq!(store.stats().corrupt_records, 0);
}

/// What an open found is reported (logged at info, and kept for INFO): a new store,
/// then the checkpoint it replayed from, the records replayed and a torn tail cut.
#[test]
fn an_open_reports_what_recovery_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), small_config()).unwrap();
        let recovery = store.recovery().clone();
        assert_eq!(
            (
                recovery.checkpoint,
                recovery.index_rebuilt,
                recovery.torn_tail
            ),
            (None, false, None),
            "a new store: {recovery}"
        );
        assert!(recovery.to_string().contains("a new store"), "{recovery}");
        for i in 0..10u32 {
            store.put(format!("key-{i}").as_bytes(), b"value").unwrap();
        }
        // Dropped without close: the ten records are past the open's checkpoint.
    }
    // Tear the tail: bytes that are no record after the last one.
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".seg"))
        .max()
        .unwrap();
    let path = dir.path().join(&newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 9].copy_from_slice(b"\xff garbage");
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(dir.path(), small_config()).unwrap();
    let recovery = store.recovery().clone();
    assert!(recovery.checkpoint.is_some(), "{recovery}");
    assert_eq!(recovery.replayed_records, 10, "{recovery}");
    let (segment, offset) = recovery.torn_tail.expect("the torn tail is reported");
    assert_eq!(format!("{segment:010}.seg"), newest);
    assert!(
        offset as usize <= end,
        "cut at {offset}, the garbage began at {end}"
    );
    assert!(
        recovery.to_string().contains("torn tail cut at segment"),
        "{recovery}"
    );
    assert_eq!(store.stats().keys, 10, "nothing valid was lost");
}

#[test]
fn records_of_the_newest_segments_are_read_from_memory_and_older_ones_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        log_memory_bytes: 2 << 20,
        ..small_config()
    };
    let value = |i: u32| format!("value {i} {}", "v".repeat(300)).into_bytes();
    let segment_files = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|item| item.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    };
    // Scribbles over every record of a segment file (its header kept), behind the
    // store's back: what reads from the file then see is damage.
    let scribble = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).unwrap();
        for byte in &mut bytes[32..] {
            *byte ^= 0x5a;
        }
        std::fs::write(path, &bytes).unwrap();
    };
    {
        let store = Store::open(dir.path(), config.clone()).unwrap();
        // Enough for three 2 MiB segments: only the newest is in memory.
        for i in 0..15_000u32 {
            store.put(&i.to_le_bytes(), &value(i)).unwrap();
        }
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        let newest = files.last().unwrap();
        scribble(newest);
        let last = 14_999u32;
        assert_eq!(
            store.get(&last.to_le_bytes()).unwrap(),
            Some(value(last)),
            "read from memory, not from the scribbled file"
        );
        // An overwrite of a key whose record is in memory commits without reading
        // the file (the commit's same-key check reads the copy).
        store.put(&last.to_le_bytes(), b"newer").unwrap();
        assert_eq!(
            store.get(&last.to_le_bytes()).unwrap().as_deref(),
            Some(&b"newer"[..])
        );
        // The oldest segment is not in memory: damage there is seen.
        scribble(&files[0]);
        assert!(matches!(
            store.get(&0u32.to_le_bytes()),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
