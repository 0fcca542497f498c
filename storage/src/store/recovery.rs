//! Opening a store: the directory lock, the segments found, the index checkpoint (or
//! a rebuild), the replay of the log after it, the torn tail cut.

use super::*;

impl Store {
    /// Opens (or creates) the store in `dir`, recovering from whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let started = std::time::Instant::now();
        let dir = dir.as_ref().to_path_buf();
        segment::create_directory_durably(&dir)
            .map_err(|e| StorageError::io("creating the data directory", e))?;
        let lock_file = lock_directory(&dir)?;
        let bounds = Bounds {
            key_size_bytes_max: config.key_size_bytes_max,
            value_size_bytes_max: config.value_size_bytes_max,
        };
        let counters = Counters::default();
        let (mut segments, highest_id) = open_segments(&dir, &counters)?;

        let mut index_files = crate::index::IndexFiles::read(&dir)?;
        let loaded = load_index(&dir, &mut index_files, &segments, &config)?;
        let index_rebuilt = loaded.is_none() && !segments.is_empty();
        let loaded_checkpoint = loaded.as_ref().map(|(_, checkpoint)| *checkpoint);
        let (mut table, checkpoint) = match loaded {
            Some(loaded) => loaded,
            None => (
                Table::with_bits(Table::bits_for(config.keys_expected))?,
                Checkpoint::default(),
            ),
        };

        let Replayed {
            newest_log,
            next_sequence,
            torn_tail,
        } = replay(
            &dir, &segments, &mut table, checkpoint, bounds, &config, &counters,
        )?;
        recount_live_bytes(&segments, &table);

        let mut next_segment_id = checkpoint
            .next_segment_id
            .max(highest_id.map_or(1, |id| id + 1));
        let segments_found = segments.len() as u64;
        let active = active_segment(
            &dir,
            &mut segments,
            newest_log,
            &mut next_segment_id,
            next_sequence,
            &config,
        )?;
        let store = Store {
            dir,
            bounds,
            _lock_file: lock_file,
            shared: RwLock::new(Shared { table, segments }),
            writer: Mutex::new({
                let mut writer = Writer::new(Arc::clone(&active), next_sequence, next_segment_id);
                writer.prepare_memory(&config);
                // An active segment with records is not copied: reads of those go to
                // the file. The next one is kept from its first record.
                if active.end_offset() == segment::HEADER_SIZE_BYTES {
                    writer.keep_in_memory(&active, &config);
                }
                writer
            }),
            commit_lock: parking_lot::Mutex::new(()),
            checkpoint_lock: Mutex::new(index_files),
            sync_state: Mutex::new(SyncState {
                durable_before: next_sequence,
                syncing: false,
            }),
            sync_done: Condvar::new(),
            compaction: Mutex::new(None),
            pending_deletion: Mutex::new(Vec::new()),
            write_poisoned: AtomicBool::new(false),
            index_rebuilt,
            recovery: Recovery {
                segments: segments_found,
                checkpoint: loaded_checkpoint.map(|c| (c.segment_id, c.offset)),
                index_rebuilt,
                replayed_records: counters.replayed_records.load(Ordering::Relaxed),
                torn_tail,
                corrupt_records: counters.corrupt_records.load(Ordering::Relaxed),
                duration_ms: started.elapsed().as_millis() as u64,
            },
            counters,
            failpoint: Mutex::new(None),
            config,
        };
        log::info!("{}: opened: {}", store.dir.display(), store.recovery);
        store.checkpoint_after_open(loaded_checkpoint.is_none());
        Ok(store)
    }

    /// Starts from a checkpoint that covers everything recovered, so the next open
    /// replays nothing of what this one already did (unneeded after a clean close).
    /// On a full disk the store still opens: reads work, and the old checkpoint plus
    /// replay stays correct.
    fn checkpoint_after_open(&self, no_checkpoint_before: bool) {
        let recovered_something = self.index_rebuilt
            || self.counters.replayed_records.load(Ordering::Relaxed) > 0
            || no_checkpoint_before;
        if !recovered_something {
            return;
        }
        if let Err(error) = self.checkpoint() {
            self.counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{}: index checkpoint after open failed: {error}",
                self.dir.display()
            );
        }
    }
}

/// The index checkpoint, if there is a usable one (None: rebuild from the segments).
fn load_index(
    dir: &Path,
    files: &mut crate::index::IndexFiles,
    segments: &Segments,
    config: &Config,
) -> Result<Option<(Table, Checkpoint)>> {
    let record_size_max = config.record_size_bytes_max() as u32;
    Ok(match files.load(dir, record_size_max) {
        Ok(Some((table, checkpoint))) if entries_fit(&table, segments) => Some((table, checkpoint)),
        Ok(Some(_)) => {
            log::warn!(
                "{}: index points at missing segments; rebuilding it",
                dir.display()
            );
            None
        }
        Ok(None) => None,
        Err(StorageError::Corrupt { reason, .. }) => {
            log::warn!(
                "{}: index unusable ({reason}); rebuilding it from the segments",
                dir.display()
            );
            None
        }
        Err(other) => return Err(other),
    })
}

/// What replaying the log found.
struct Replayed {
    /// The newest log segment (not a compaction output), the one writes go on in.
    newest_log: Option<u32>,
    next_sequence: u64,
    /// Where the newest log segment was cut, when it held bytes past its last record.
    torn_tail: Option<(u32, u32)>,
}

/// Replays every record after the checkpoint into `table`: the rest of its segment,
/// then every later one. The newest log segment is cut at its first invalid record;
/// corruption elsewhere is counted and skipped.
fn replay(
    dir: &Path,
    segments: &Segments,
    table: &mut Table,
    checkpoint: Checkpoint,
    bounds: Bounds,
    config: &Config,
    counters: &Counters,
) -> Result<Replayed> {
    let newest_log = segments
        .values()
        .filter(|s| s.kind == SegmentKind::Log)
        .map(|s| s.id)
        .max();
    let mut next_sequence = checkpoint.next_sequence.max(1);
    let mut torn_tail = None;
    for segment in segments.values() {
        segment.set_end_offset(segment.file_size_bytes()?.min(u64::from(u32::MAX)) as u32);
        if segment.id < checkpoint.segment_id {
            continue;
        }
        let from = if segment.id == checkpoint.segment_id {
            checkpoint.offset.max(segment::HEADER_SIZE_BYTES)
        } else {
            segment::HEADER_SIZE_BYTES
        };
        let mode = if Some(segment.id) == newest_log {
            ScanMode::CutAtFirstInvalid
        } else {
            ScanMode::SkipCorrupt
        };
        let end = segment.scan(from, bounds, mode, |event| {
            match event {
                ScanEvent::Record { offset, record } => {
                    if record.header.tombstone && sabotage::replay_ignores_tombstones() {
                        return Ok(());
                    }
                    let entry = Entry {
                        hash: key_hash(record.key),
                        sequence: record.header.sequence,
                        segment_id: segment.id,
                        offset,
                        size_bytes: record.size_bytes() as u32,
                        tombstone: record.header.tombstone,
                    };
                    next_sequence = next_sequence.max(entry.sequence + 1);
                    counters.replayed_records.fetch_add(1, Ordering::Relaxed);
                    apply_entry(table, segments, bounds, config.keys_max, entry, record.key, counters)?;
                }
                ScanEvent::Corrupt { offset, size_bytes, reason } => counters.corruption(
                    &format_args!(
                        "{}: segment {} has {size_bytes} unreadable bytes at offset {offset} ({reason})",
                        dir.display(),
                        segment.id
                    ),
                ),
            }
            Ok(())
        })?;
        if Some(segment.id) == newest_log {
            let size = segment.file_size_bytes()?.min(u64::from(u32::MAX)) as u32;
            if !segment.is_zero(u64::from(end), u64::from(size))? {
                torn_tail = Some((segment.id, end));
            }
            segment.cut_at(end, size.max(config.segment_size_bytes))?;
            segment.set_end_offset(end);
        }
    }
    Ok(Replayed {
        newest_log,
        next_sequence,
        torn_tail,
    })
}

/// Replay adjusted live bytes as it went, from a count of zero for segments the
/// checkpoint already covered; recount from the final table instead.
fn recount_live_bytes(segments: &Segments, table: &Table) {
    for segment in segments.values() {
        segment.reset_live_bytes();
    }
    for entry in table.entries() {
        if let Some(segment) = segments.get(&entry.segment_id) {
            segment.add_live_bytes(i64::from(entry.size_bytes));
        }
    }
}

/// The segment writes go on: the newest log segment, or a new one (its directory
/// synced) when there is none.
fn active_segment(
    dir: &Path,
    segments: &mut Segments,
    newest_log: Option<u32>,
    next_segment_id: &mut u32,
    next_sequence: u64,
    config: &Config,
) -> Result<Arc<Segment>> {
    if let Some(active) = newest_log.and_then(|id| segments.get(&id)) {
        return Ok(Arc::clone(active));
    }
    let active = Arc::new(Segment::create(
        dir,
        *next_segment_id,
        SegmentKind::Log,
        next_sequence,
        config.segment_size_bytes,
        false,
    )?);
    segment::sync_directory(dir)?;
    segments.insert(*next_segment_id, Arc::clone(&active));
    *next_segment_id += 1;
    Ok(active)
}

fn lock_directory(dir: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("LOCK"))
        .map_err(|e| StorageError::io("opening the lock file", e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StorageError::Locked),
        Err(errno) => Err(StorageError::io("locking the data directory", errno.into())),
    }
}

/// Opens every segment in `dir`; deletes unfinished compaction outputs and deletions
/// (`segment::parse_file_name`'s leftovers). Returns the segments by id and the highest
/// id seen (damaged ones included, so ids never repeat).
fn open_segments(dir: &Path, counters: &Counters) -> Result<(Segments, Option<u32>)> {
    let mut segments = BTreeMap::new();
    let mut highest = None;
    let listing =
        std::fs::read_dir(dir).map_err(|e| StorageError::io("listing the data directory", e))?;
    for item in listing {
        let item = item.map_err(|e| StorageError::io("listing the data directory", e))?;
        let name = item.file_name();
        let Some((id, leftover)) = name.to_str().and_then(segment::parse_file_name) else {
            continue;
        };
        highest = highest.max(Some(id));
        if leftover {
            std::fs::remove_file(item.path()).map_err(|e| {
                StorageError::io("removing an unfinished compaction or deletion", e)
            })?;
            continue;
        }
        match Segment::open(&item.path(), id) {
            Ok(segment) => {
                segments.insert(id, Arc::new(segment));
            }
            Err(error @ StorageError::Corrupt { .. }) => counters.corruption(&error),
            Err(other) => return Err(other),
        }
    }
    // Format 1's temporary checkpoint file (its `index` goes in `IndexFiles::read`).
    let _ = std::fs::remove_file(dir.join("index.tmp"));
    Ok((segments, highest))
}

/// True when every entry points inside an existing segment (one `stat` per segment,
/// not per entry).
fn entries_fit(table: &Table, segments: &Segments) -> bool {
    let mut sizes = BTreeMap::new();
    for (id, segment) in segments {
        match segment.file_size_bytes() {
            Ok(size) => sizes.insert(*id, size),
            Err(_) => return false,
        };
    }
    table.entries().all(|entry| {
        let end = u64::from(entry.offset) + u64::from(entry.size_bytes);
        sizes
            .get(&entry.segment_id)
            .is_some_and(|&size| end <= size)
            && entry.offset >= segment::HEADER_SIZE_BYTES
    })
}

/// Recovery's version of commit: single-threaded, no locks.
fn apply_entry(
    table: &mut Table,
    segments: &Segments,
    bounds: Bounds,
    keys_max: u64,
    entry: Entry,
    key: &[u8],
    counters: &Counters,
) -> Result<()> {
    let same_key = find_key(table, segments, bounds, entry.hash, key, counters);
    place(table, segments, keys_max, entry, same_key)
}

/// Fuzz entry point for recovery: a store directory whose log is `data` (after a first
/// byte that picks the layout) opens or refuses with an error, never panics; what it
/// scans, it also reads back with the same bytes (or reports corrupt); and a write
/// after recovery survives a reopen.
///
/// Layouts (first byte % 3): 0, one log segment holding `data`; 1, `data` split over a
/// sealed segment and the newest one; 2, one segment of the first half and an index
/// file of the second half.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_recover(data: &[u8]) {
    use std::sync::atomic::AtomicU64;
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let Some((&layout, body)) = data.split_first() else {
        return;
    };
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("ringkv-fuzz-recover-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let segment_file = |id: u32, body: &[u8]| {
        let mut bytes = segment::fuzz_header(id).to_vec();
        bytes.extend_from_slice(body);
        bytes.resize(bytes.len() + 4096, 0);
        let _ = std::fs::write(dir.join(segment::file_name(id)), bytes);
    };
    let half = body.len() / 2;
    match layout % 3 {
        0 => segment_file(1, body),
        1 => {
            segment_file(1, &body[..half]);
            segment_file(2, &body[half..]);
        }
        _ => {
            segment_file(1, &body[..half]);
            let _ = std::fs::write(dir.join(crate::index::FILE_NAMES[0]), &body[half..]);
        }
    }
    let config = Config {
        segment_size_bytes: 4 << 20,
        value_size_bytes_max: 1 << 20,
        ..Config::default()
    };
    if let Ok(store) = Store::open(&dir, config.clone()) {
        let mut after = None;
        for _ in 0..1_000 {
            let Ok(chunk) = store.scan(0, u64::MAX, after, 64) else {
                break;
            };
            for (key, value) in &chunk.items {
                // An error is a record reported corrupt; a value must be the scan's.
                if let Ok(read) = store.get(key) {
                    assert_eq!(read.as_ref(), Some(value), "a read disagrees with the scan");
                }
            }
            match chunk.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let written = store.put(b"fuzz-after-recovery", b"kept").is_ok();
        let closed = store.close().is_ok();
        if written && closed {
            if let Ok(store) = Store::open(&dir, config) {
                assert_eq!(
                    store.get(b"fuzz-after-recovery").ok().flatten().as_deref(),
                    Some(&b"kept"[..]),
                    "a write after recovery is gone after a reopen"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod fuzz_tests {
    #[test]
    fn recovery_survives_valid_garbage_and_torn_logs() {
        let mut record = Vec::new();
        crate::record::encode(&mut record, 1, b"key", b"value", false).unwrap();
        let mut two = record.clone();
        crate::record::encode(&mut two, 2, b"other", b"value 2", false).unwrap();
        for layout in 0..3u8 {
            for body in [
                &b""[..],
                &record,
                &two,
                &two[..two.len() - 3],
                b"\xff garbage",
            ] {
                let mut input = vec![layout];
                input.extend_from_slice(body);
                super::fuzz_recover(&input);
            }
        }
    }
}
