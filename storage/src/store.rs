//! The store: one data directory, opened by one process, used from many threads.
//!
//! # Writing
//! A write goes through three separable steps, so that the io_uring shell can do the
//! middle one itself:
//! 1. **prepare**: under the writer lock, reserve space in the active segment, hand out
//!    sequences and encode the batch's records into a buffer;
//! 2. **write and sync** the buffer at the reserved offset (the caller, or [`Store::write`]);
//! 3. **commit**: point the index at the new records.
//!
//! The index is updated only after the bytes are durable (in `always` and `group`
//! modes), so it never points at bytes a crash could lose. Between steps 1 and 3 a
//! reader sees the previous value; after step 3, the new one; never a mixture.
//!
//! # Group commit
//! In `group` mode a writer whose record is not yet durable either becomes the leader
//! (syncs every segment written since the last sync, then wakes everyone covered) or
//! waits for the leader that is already syncing. One fsync covers every write queued
//! when it starts. An fsync failure poisons the store for writes until it is reopened:
//! after a failed fsync the kernel may have dropped the dirty pages, and retrying would
//! report success for data that is gone.
//!
//! # Zeroing ahead of the log
//! Segments are preallocated with `fallocate`, which on ext4 and XFS leaves *unwritten*
//! extents: the first write into each turns it into a written extent, a metadata
//! change that makes the next `fdatasync` commit the filesystem journal as well as
//! flush the data. [`Store::write`] therefore writes zeros ahead of the log
//! ([`ZERO_AHEAD_BYTES`] at a time, under the writer lock, once its batch is committed,
//! so the batch's own latency does not include them), and the writes that follow land
//! in blocks that are already written: their syncs flush data only. This matters once
//! a sync covers more than a block of new records (4 KiB values, or group commit
//! rounds of many small ones); measured in BENCHMARKS.md. The zeros go only past every
//! reservation, while the writer lock keeps new reservations out, so they never
//! overwrite a record. A split-API caller gets the zeros with its prepared batch
//! ([`PreparedWrite::zeros`]) and writes them after the batch's bytes, before those of
//! any batch it prepares later. Recovery already reads zeros as preallocated space.
//!
//! # Recovery
//! The index checkpoint says which log position it covers; opening replays only the
//! records after it (the rest of that segment, then every segment with a larger id).
//! A record is applied when its sequence is at least the entry's, so replay is
//! idempotent and copies made by compaction never shadow a newer write. The newest log
//! segment's torn tail is cut at the last valid record; corruption elsewhere is logged,
//! counted and skipped. A missing or damaged index is rebuilt from every segment.
//!
//! # Deletes and tombstones
//! A delete writes a tombstone record and keeps a tombstone entry in the index, so that
//! an older record of the key (in any segment) can never come back on replay or
//! rebuild. Compaction drops a tombstone only once no other segment could hold an older
//! record of that key: every other segment's minimum sequence is above the tombstone's.
//!
//! # Lock order
//! checkpoint -> compaction -> commit -> writer -> shared (index and segment map) ->
//! sync. Disk reads never happen under the `shared` write lock. A checkpoint writes the
//! table under the commit lock, which stalls commits for as long as the device takes to
//! absorb the index file (measured in BENCHMARKS.md; incremental checkpoints are the
//! open fix).

use crate::durability::Durability;
use crate::error::{Result, StorageError};
use crate::index::{Checkpoint, Entry, InsertError, Table};
use crate::record::{self, Bounds};
use crate::segment::{self, ReadWait, ScanEvent, ScanMode, Segment, SegmentKind, ValueRead};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Largest value size a store may be configured for (64 MiB). The default is
/// ringkv's client limit of 1 MiB; a node may raise it to hold an encoded record with
/// several siblings.
pub const VALUE_SIZE_BYTES_LIMIT: usize = 64 << 20;

/// Storage configuration. [`Config::default`] is what a node uses unless told otherwise.
#[derive(Clone, Debug)]
pub struct Config {
    pub durability: Durability,
    /// Size of each preallocated segment file.
    pub segment_size_bytes: u32,
    pub key_size_bytes_max: usize,
    pub value_size_bytes_max: usize,
    /// Upper bound on index entries (values and tombstones); past it writes of new keys
    /// fail with [`StorageError::IndexFull`].
    pub keys_max: u64,
    /// Initial index sizing, to avoid growth pauses when the key count is known.
    pub keys_expected: u64,
    /// Log bytes written between index checkpoints: the most a restart replays.
    pub checkpoint_interval_bytes: u64,
    /// A sealed segment is compacted once this share of its bytes is dead.
    pub compaction_dead_share_min: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            durability: Durability::Group,
            segment_size_bytes: 64 << 20,
            key_size_bytes_max: ringkv_core::limits::KEY_SIZE_BYTES_MAX,
            value_size_bytes_max: ringkv_core::limits::VALUE_SIZE_BYTES_MAX,
            keys_max: 1 << 28,
            keys_expected: 0,
            checkpoint_interval_bytes: 256 << 20,
            compaction_dead_share_min: 0.5,
        }
    }
}

impl Config {
    fn record_size_bytes_max(&self) -> usize {
        record::HEADER_SIZE_BYTES + self.key_size_bytes_max + self.value_size_bytes_max
    }

    fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(StorageError::Config(reason));
        if self.key_size_bytes_max > ringkv_core::limits::KEY_SIZE_BYTES_MAX {
            return fail(format!(
                "key_size_bytes_max {} exceeds ringkv's limit of {}",
                self.key_size_bytes_max,
                ringkv_core::limits::KEY_SIZE_BYTES_MAX
            ));
        }
        if self.value_size_bytes_max > VALUE_SIZE_BYTES_LIMIT {
            return fail(format!(
                "value_size_bytes_max {} exceeds {VALUE_SIZE_BYTES_LIMIT}",
                self.value_size_bytes_max
            ));
        }
        let smallest = segment::HEADER_SIZE_BYTES as usize + self.record_size_bytes_max();
        if (self.segment_size_bytes as usize) < smallest {
            return fail(format!(
                "segment_size_bytes {} cannot hold one largest record ({smallest} bytes)",
                self.segment_size_bytes
            ));
        }
        if !(0.0..=1.0).contains(&self.compaction_dead_share_min)
            || self.compaction_dead_share_min.is_nan()
        {
            return fail("compaction_dead_share_min must lie in 0..=1".to_owned());
        }
        if self.keys_max == 0 {
            return fail("keys_max must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A group of puts and deletes written together (one reservation, one sync, one commit).
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    data: Vec<u8>,
    operations: Vec<BatchOperation>,
}

#[derive(Clone, Debug)]
struct BatchOperation {
    key: Range<usize>,
    value: Range<usize>,
    tombstone: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put of `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.push(key, value, false);
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.push(key, &[], true);
    }

    fn push(&mut self, key: &[u8], value: &[u8], tombstone: bool) {
        let key_start = self.data.len();
        self.data.extend_from_slice(key);
        let value_start = self.data.len();
        self.data.extend_from_slice(value);
        self.operations.push(BatchOperation {
            key: key_start..value_start,
            value: value_start..self.data.len(),
            tombstone,
        });
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.operations.clear();
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// A batch whose space and sequences are reserved and whose bytes are encoded, not yet
/// written. Hand it back to [`Store::commit`] once the bytes are written (and, in
/// `always` or `group` mode, synced), or to [`Store::abort`].
#[derive(Debug)]
#[must_use = "a prepared write holds a reservation until committed or aborted"]
pub struct PreparedWrite {
    segment: Arc<Segment>,
    offset: u32,
    bytes: Vec<u8>,
    first_sequence: u64,
    records: Vec<PreparedRecord>,
    zeros: Option<Range<u32>>,
}

#[derive(Clone, Debug)]
struct PreparedRecord {
    entry: Entry,
    /// The key's place in `bytes`.
    key: Range<usize>,
}

impl PreparedWrite {
    /// The encoded records, to be written at [`PreparedWrite::file_offset`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where in the segment file the bytes go.
    pub fn file_offset(&self) -> u64 {
        u64::from(self.offset)
    }

    /// The segment file to write to and sync.
    pub fn file(&self) -> &File {
        self.segment.file()
    }

    /// Zeros to write (at the offset given) after this batch's bytes, so later syncs
    /// flush data only (see the module docs). They lie past every reservation made so
    /// far but may hold later ones: write them before the bytes of any batch prepared
    /// after this one (a caller with one batch in flight at a time always does).
    /// Skipping them costs speed, never data.
    pub fn zeros(&self) -> Option<(u64, &'static [u8])> {
        let range = self.zeros.clone()?;
        Some((
            u64::from(range.start),
            &ZEROS[..(range.end - range.start) as usize],
        ))
    }

    /// The sequence of each record, in batch order.
    pub fn sequences(&self) -> impl Iterator<Item = u64> + '_ {
        self.records.iter().map(|r| r.entry.sequence)
    }
}

/// What [`Store::get_cached_into`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedRead {
    /// The value is in the caller's buffer.
    Found,
    /// No live value under the key (absent or deleted).
    Absent,
    /// A record it needs is not in the page cache: read it again with
    /// [`Store::get_into`] from a thread that may wait.
    NotCached,
}

/// One chunk of a scan over live keys.
#[derive(Debug, Default)]
pub struct ScanChunk {
    /// (key, value) pairs in key-hash order.
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pass as `after` to continue; `None` when the range is exhausted.
    pub next: Option<u64>,
}

/// What one call of [`Store::compact_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionProgress {
    /// No segment is worth compacting.
    Idle,
    /// Copied this many bytes of live records; call again to go on.
    Copied { bytes: u64 },
    /// A segment was rewritten and removed.
    Finished {
        segment_id: u32,
        reclaimed_bytes: u64,
    },
}

/// Places where a test can make the store stop as if the process died there (the
/// step returns an error and the test drops the store without closing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// Compaction output written and synced, not yet renamed into place.
    CompactionBeforeRename,
    /// Output renamed into place, index not yet moved to it.
    CompactionAfterRename,
    /// Index moved to the output in memory, no checkpoint written yet.
    CompactionAfterIndexMove,
    /// Checkpoint written, obsolete source segment not yet deleted.
    BeforeObsoleteDeletion,
}

/// Counters for INFO and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub keys: u64,
    pub segments: u64,
    pub corrupt_records: u64,
    pub checkpoints: u64,
    pub syncs: u64,
    pub compactions: u64,
    pub replayed_records: u64,
    pub checkpoint_failures: u64,
    pub index_rebuilt: bool,
}

/// What a store's open found and did, logged at info level and kept for INFO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files found.
    pub segments: u64,
    /// The checkpoint the index was loaded from: replay began at (segment, offset).
    /// `None` when there was no usable one (a new store, or the index was rebuilt).
    pub checkpoint: Option<(u32, u32)>,
    /// The index was rebuilt by scanning every segment.
    pub index_rebuilt: bool,
    /// Records replayed into the index past the checkpoint.
    pub replayed_records: u64,
    /// Where the newest log was cut, (segment, offset), when bytes that were not a
    /// valid record and not zeros followed its last valid record (a torn tail).
    pub torn_tail: Option<(u32, u32)>,
    /// Unreadable regions skipped while opening.
    pub corrupt_records: u64,
    /// Time the open took.
    pub duration_ms: u64,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} segments, ", self.segments)?;
        match (self.checkpoint, self.index_rebuilt) {
            (Some((segment, offset)), _) => write!(
                f,
                "index from the checkpoint at segment {segment} offset {offset}"
            )?,
            (None, true) => f.write_str("index rebuilt from every segment")?,
            (None, false) => f.write_str("a new store")?,
        }
        write!(f, ", {} records replayed", self.replayed_records)?;
        match self.torn_tail {
            Some((segment, offset)) => {
                write!(f, ", torn tail cut at segment {segment} offset {offset}")?
            }
            None => f.write_str(", no torn tail")?,
        }
        write!(
            f,
            ", {} corrupt records skipped, in {} ms",
            self.corrupt_records, self.duration_ms
        )
    }
}

/// Zeros written ahead of the log at a time (see the module docs): one journal commit
/// per this many bytes of records instead of one per sync.
pub const ZERO_AHEAD_BYTES: u32 = 256 << 10;

/// What zeroing ahead writes.
static ZEROS: [u8; ZERO_AHEAD_BYTES as usize] = [0; ZERO_AHEAD_BYTES as usize];

/// Open segments by id.
type Segments = BTreeMap<u32, Arc<Segment>>;

#[derive(Debug)]
struct Shared {
    table: Table,
    segments: BTreeMap<u32, Arc<Segment>>,
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    next_sequence: u64,
    next_segment_id: u32,
    /// First sequence of each reserved, uncommitted batch -> where it starts.
    in_flight: BTreeMap<u64, (u32, u32)>,
    unsynced: Vec<Arc<Segment>>,
    written_since_checkpoint: u64,
    last_sync: std::time::Instant,
    /// The active segment holds written zeros (or records) up to here.
    zeroed_until: u32,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every sequence below this is durable.
    durable_before: u64,
    syncing: bool,
}

#[derive(Debug)]
struct CompactionJob {
    source: Arc<Segment>,
    entries: Vec<Entry>,
    cursor: usize,
    output: Option<Segment>,
    output_offset: u32,
    /// (entry as it was in the source, its offset in the output)
    moved: Vec<(Entry, u32)>,
    /// Entries to remove if unchanged: tombstones no longer needed, unreadable records.
    dropped: Vec<Entry>,
}

#[derive(Debug, Default)]
struct Counters {
    corrupt_records: AtomicU64,
    checkpoints: AtomicU64,
    syncs: AtomicU64,
    compactions: AtomicU64,
    replayed_records: AtomicU64,
    checkpoint_failures: AtomicU64,
}

impl Counters {
    /// Counts and logs one unreadable record or region: the one place corruption is
    /// reported, so the counter and the log line always agree.
    fn corruption(&self, what: &dyn core::fmt::Display) {
        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
        log::warn!("storage: {what}; skipped (a replica can repair the key)");
    }
}

/// A local key-value store in one directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    config: Config,
    bounds: Bounds,
    _lock_file: File,
    shared: RwLock<Shared>,
    writer: Mutex<Writer>,
    commit_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
    sync_state: Mutex<SyncState>,
    sync_done: Condvar,
    compaction: Mutex<Option<CompactionJob>>,
    pending_deletion: Mutex<Vec<Arc<Segment>>>,
    write_poisoned: AtomicBool,
    index_rebuilt: bool,
    recovery: Recovery,
    counters: Counters,
    failpoint: Mutex<Option<Failpoint>>,
}

// A panic while holding a lock leaves data that every path here keeps consistent at
// each step (the index is only mutated inside short, non-panicking sections), so a
// poisoned lock is taken over rather than propagated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Deliberate bugs, switched on only by tests that prove a checker catches them.
pub mod sabotage {
    #[cfg(feature = "failpoints")]
    static REPLAY_IGNORES_TOMBSTONES: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// Makes recovery skip tombstone records, so deleted values come back (process-wide:
    /// use it only in a test binary of its own).
    #[cfg(feature = "failpoints")]
    pub fn break_replay_of_tombstones() {
        REPLAY_IGNORES_TOMBSTONES.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(feature = "failpoints")]
    static DIRECTORY_SYNCS_SKIPPED: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// Makes every directory fsync a no-op (new directories, segments, checkpoints and
    /// compaction outputs then reach their directories only in memory), so that a power
    /// cut loses a fresh store (process-wide: use it only in a test binary of its own).
    #[cfg(feature = "failpoints")]
    pub fn skip_directory_syncs() {
        DIRECTORY_SYNCS_SKIPPED.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn directory_syncs_skipped() -> bool {
        #[cfg(feature = "failpoints")]
        return DIRECTORY_SYNCS_SKIPPED.load(std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(feature = "failpoints"))]
        false
    }

    pub(crate) fn replay_ignores_tombstones() -> bool {
        #[cfg(feature = "failpoints")]
        return REPLAY_IGNORES_TOMBSTONES.load(std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(feature = "failpoints"))]
        false
    }
}

/// Hash that places a key in the index: the cluster's partitioning hash, so that a
/// partition is one contiguous hash range here.
pub use ringkv_core::placement::key_hash;

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

        let record_size_max = config.record_size_bytes_max() as u32;
        let loaded = match Table::open(&dir, record_size_max) {
            Ok(Some((table, checkpoint))) if entries_fit(&table, &segments) => {
                Some((table, checkpoint))
            }
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
        };
        let index_rebuilt = loaded.is_none() && !segments.is_empty();
        let loaded_checkpoint = loaded.as_ref().map(|(_, checkpoint)| *checkpoint);
        let (mut table, checkpoint) = match loaded {
            Some(loaded) => loaded,
            None => (
                Table::with_bits(Table::bits_for(config.keys_expected))?,
                Checkpoint::default(),
            ),
        };

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
                        apply_entry(&mut table, &segments, bounds, config.keys_max, entry, record.key, &counters)?;
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
        // Replay adjusted live bytes as it went, from a count of zero for segments the
        // checkpoint already covered; recount from the final table instead.
        for segment in segments.values() {
            segment.reset_live_bytes();
        }
        for entry in table.entries() {
            if let Some(segment) = segments.get(&entry.segment_id) {
                segment.add_live_bytes(i64::from(entry.size_bytes));
            }
        }

        let mut next_segment_id = checkpoint
            .next_segment_id
            .max(highest_id.map_or(1, |id| id + 1));
        let segments_found = segments.len() as u64;
        let active = match newest_log.and_then(|id| segments.get(&id)) {
            Some(active) => Arc::clone(active),
            None => {
                let active = Arc::new(Segment::create(
                    &dir,
                    next_segment_id,
                    SegmentKind::Log,
                    next_sequence,
                    config.segment_size_bytes,
                    false,
                )?);
                segment::sync_directory(&dir)?;
                segments.insert(next_segment_id, Arc::clone(&active));
                next_segment_id += 1;
                active
            }
        };
        let store = Store {
            dir,
            bounds,
            _lock_file: lock_file,
            shared: RwLock::new(Shared { table, segments }),
            writer: Mutex::new(Writer {
                zeroed_until: active.end_offset(),
                active,
                next_sequence,
                next_segment_id,
                in_flight: BTreeMap::new(),
                unsynced: Vec::new(),
                written_since_checkpoint: 0,
                last_sync: std::time::Instant::now(),
            }),
            commit_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
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
        // Start from a checkpoint that covers everything recovered, so the next open
        // replays nothing of what this one already did (unneeded after a clean close).
        // On a full disk the store still opens: reads work, and the old checkpoint plus
        // replay stays correct.
        let recovered_something = store.index_rebuilt
            || store.counters.replayed_records.load(Ordering::Relaxed) > 0
            || loaded_checkpoint.is_none();
        if !recovered_something {
            return Ok(store);
        }
        if let Err(error) = store.checkpoint() {
            store
                .counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{}: index checkpoint after open failed: {error}",
                store.dir.display()
            );
        }
        Ok(store)
    }

    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Arms a failpoint: the next time the store reaches it, the step fails there.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn fail_at(&self, failpoint: Failpoint) {
        *lock(&self.failpoint) = Some(failpoint);
    }

    fn failpoint(&self, here: Failpoint) -> Result<()> {
        let mut armed = lock(&self.failpoint);
        if *armed == Some(here) {
            *armed = None;
            return Err(StorageError::Io {
                kind: std::io::ErrorKind::Interrupted,
                doing: "stopping at a test failpoint",
                detail: format!("{here:?}"),
            });
        }
        Ok(())
    }

    // ----- writing -------------------------------------------------------------------

    /// Puts `value` under `key` and returns once the write is as durable as the mode says.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(&batch)
    }

    /// Deletes `key` (a tombstone) and returns once that is as durable as the mode says.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(&batch)
    }

    /// Writes a batch: prepare, write, sync per the durability mode, commit.
    pub fn write(&self, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let prepared = {
            let mut writer = lock(&self.writer);
            let prepared = self.reserve(&mut writer, batch)?;
            if let Err(error) = prepared.segment.write_at(&prepared.bytes, prepared.offset) {
                self.rewind(&mut writer, &prepared);
                return Err(error);
            }
            prepared
        };
        let last_sequence = prepared.records.last().map_or(0, |r| r.entry.sequence);
        let synced = match self.config.durability {
            Durability::Always => {
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                prepared.segment.sync().inspect_err(|_| self.poison())
            }
            Durability::Group => self.wait_durable(last_sequence),
            Durability::Interval { interval_ms } => {
                let due =
                    lock(&self.writer).last_sync.elapsed().as_millis() >= u128::from(interval_ms);
                if due { self.sync() } else { Ok(()) }
            }
            Durability::None => Ok(()),
        };
        if let Err(error) = synced {
            self.forget(&prepared);
            return Err(error);
        }
        self.commit(prepared)?;
        self.zero_ahead(&mut lock(&self.writer));
        self.checkpoint_if_due();
        Ok(())
    }

    /// Step 1 of the split API: reserve space and sequences and encode the batch.
    /// The prepared batch may carry zeros to write after its bytes
    /// ([`PreparedWrite::zeros`]).
    pub fn prepare(&self, batch: &WriteBatch) -> Result<PreparedWrite> {
        let mut writer = lock(&self.writer);
        let mut prepared = self.reserve(&mut writer, batch)?;
        prepared.zeros = self.zeros_due(&mut writer);
        Ok(prepared)
    }

    /// Step 3 of the split API: point the index at a prepared batch whose bytes the
    /// caller has written (and synced, when the durability mode promises it).
    pub fn commit(&self, prepared: PreparedWrite) -> Result<()> {
        let result = {
            let _commit = lock(&self.commit_lock);
            let mut result = Ok(());
            for record in &prepared.records {
                let key = &prepared.bytes[record.key.clone()];
                if let Err(error) = self.apply(record.entry, key) {
                    result = Err(error);
                    break;
                }
            }
            result
        };
        lock(&self.writer)
            .in_flight
            .remove(&prepared.first_sequence);
        result
    }

    /// Gives back a prepared batch that will not be committed (typically: writing its
    /// bytes failed). Only the newest prepared batch can be aborted: an older one would
    /// leave a hole before later records. The next batch reuses the space; if the
    /// aborted bytes did reach the file and the process dies before that, recovery may
    /// apply them, which is allowed for a write that was never acknowledged.
    pub fn abort(&self, prepared: PreparedWrite) -> Result<()> {
        let mut writer = lock(&self.writer);
        if writer.in_flight.last_key_value().map(|(first, _)| *first)
            != Some(prepared.first_sequence)
        {
            return Err(StorageError::Misuse(
                "only the newest prepared batch can be aborted",
            ));
        }
        self.rewind(&mut writer, &prepared);
        Ok(())
    }

    /// Step 3 of the split API when writing or syncing the caller's bytes failed: the
    /// batch is never indexed, and the store refuses writes until it is reopened, as
    /// after a failed sync in [`Store::write`] (the kernel may have dropped the pages,
    /// and a retried sync would report success for data that is gone).
    pub fn fail(&self, prepared: PreparedWrite) {
        self.forget(&prepared);
        self.poison();
    }

    fn reserve(&self, writer: &mut Writer, batch: &WriteBatch) -> Result<PreparedWrite> {
        if self.write_poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Io {
                kind: std::io::ErrorKind::Other,
                doing: "writing after a failed sync",
                detail: "an earlier fsync failed; reopen the store to recover".to_owned(),
            });
        }
        let mut size = 0usize;
        for operation in &batch.operations {
            if operation.key.len() > self.config.key_size_bytes_max {
                return Err(StorageError::KeyTooLarge {
                    size_bytes: operation.key.len(),
                    size_bytes_max: self.config.key_size_bytes_max,
                });
            }
            if operation.value.len() > self.config.value_size_bytes_max {
                return Err(StorageError::ValueTooLarge {
                    size_bytes: operation.value.len(),
                    size_bytes_max: self.config.value_size_bytes_max,
                });
            }
            size += record::HEADER_SIZE_BYTES + operation.key.len() + operation.value.len();
        }
        let room = (self.config.segment_size_bytes - segment::HEADER_SIZE_BYTES) as usize;
        if size > room {
            return Err(StorageError::Misuse("batch larger than a segment"));
        }
        if writer.active.end_offset() as usize + size > self.config.segment_size_bytes as usize {
            self.rotate(writer)?;
        }
        let offset = writer.active.end_offset();
        let first_sequence = writer.next_sequence;
        let mut bytes = Vec::with_capacity(size);
        let mut records = Vec::with_capacity(batch.len());
        for (i, operation) in batch.operations.iter().enumerate() {
            let key = &batch.data[operation.key.clone()];
            let value = &batch.data[operation.value.clone()];
            let start = bytes.len();
            let sequence = first_sequence + i as u64;
            let record_size = record::encode(&mut bytes, sequence, key, value, operation.tombstone)
                .map_err(StorageError::Misuse)?;
            let key_start = start + record::HEADER_SIZE_BYTES;
            records.push(PreparedRecord {
                entry: Entry {
                    hash: key_hash(key),
                    sequence,
                    segment_id: writer.active.id,
                    offset: offset + start as u32,
                    size_bytes: record_size as u32,
                    tombstone: operation.tombstone,
                },
                key: key_start..key_start + key.len(),
            });
        }
        writer.next_sequence += batch.len() as u64;
        writer.active.set_end_offset(offset + size as u32);
        writer
            .in_flight
            .insert(first_sequence, (writer.active.id, offset));
        writer.written_since_checkpoint += size as u64;
        if !writer.unsynced.iter().any(|s| s.id == writer.active.id) {
            let active = Arc::clone(&writer.active);
            writer.unsynced.push(active);
        }
        Ok(PreparedWrite {
            segment: Arc::clone(&writer.active),
            offset,
            bytes,
            first_sequence,
            records,
            zeros: None,
        })
    }

    /// Writes zeros past the end of the active segment's records when fewer than
    /// [`ZERO_AHEAD_BYTES`] of written blocks are left there (see the module docs).
    /// The caller holds the writer lock.
    /// Zeroing only makes later syncs cheaper: when it fails (the device is failing,
    /// or a sparse file found the disk full), the batch's own write and sync report
    /// what matters, and the next write tries again.
    fn zero_ahead(&self, writer: &mut Writer) {
        let Some(range) = self.zeros_due(writer) else {
            return;
        };
        let length = (range.end - range.start) as usize;
        if let Err(error) = writer.active.write_at(&ZEROS[..length], range.start) {
            log::debug!("{}: zeroing ahead failed: {error}", self.dir.display());
            writer.zeroed_until = range.start;
        }
    }

    /// The zeros to write next past the active segment's reservations, if fewer than
    /// half of [`ZERO_AHEAD_BYTES`] are left there; counted as written from now on
    /// (writing them is the caller's, and not writing them only costs speed).
    fn zeros_due(&self, writer: &mut Writer) -> Option<Range<u32>> {
        let end = writer.active.end_offset();
        let size = self.config.segment_size_bytes;
        let from = writer.zeroed_until.max(end);
        if from >= size || from - end >= ZERO_AHEAD_BYTES / 2 {
            return None;
        }
        let to = from.saturating_add(ZERO_AHEAD_BYTES).min(size);
        writer.zeroed_until = to;
        Some(from..to)
    }

    /// Undoes the newest reservation (the caller holds the writer lock).
    fn rewind(&self, writer: &mut Writer, prepared: &PreparedWrite) {
        writer.in_flight.remove(&prepared.first_sequence);
        if writer.active.id == prepared.segment.id
            && writer.next_sequence == prepared.first_sequence + prepared.records.len() as u64
        {
            writer.active.set_end_offset(prepared.offset);
            writer.next_sequence = prepared.first_sequence;
        }
    }

    /// Drops a written but unsynced batch from the in-flight set without indexing it.
    fn forget(&self, prepared: &PreparedWrite) {
        lock(&self.writer)
            .in_flight
            .remove(&prepared.first_sequence);
    }

    fn rotate(&self, writer: &mut Writer) -> Result<()> {
        let id = writer.next_segment_id;
        let segment = Arc::new(Segment::create(
            &self.dir,
            id,
            SegmentKind::Log,
            writer.next_sequence,
            self.config.segment_size_bytes,
            false,
        )?);
        segment::sync_directory(&self.dir)?;
        writer.next_segment_id += 1;
        write(&self.shared)
            .segments
            .insert(id, Arc::clone(&segment));
        writer.zeroed_until = segment.end_offset();
        writer.active = segment;
        Ok(())
    }

    fn poison(&self) {
        if !self.write_poisoned.swap(true, Ordering::AcqRel) {
            log::error!(
                "{}: fsync failed; refusing writes until the store is reopened",
                self.dir.display()
            );
        }
    }

    /// Waits until every sequence up to `sequence` is durable, syncing as the leader
    /// when no sync is under way.
    fn wait_durable(&self, sequence: u64) -> Result<()> {
        let mut state = lock(&self.sync_state);
        loop {
            if state.durable_before > sequence {
                return Ok(());
            }
            if self.write_poisoned.load(Ordering::Acquire) {
                return Err(StorageError::Io {
                    kind: std::io::ErrorKind::Other,
                    doing: "syncing",
                    detail: "an earlier fsync failed".to_owned(),
                });
            }
            if !state.syncing {
                state.syncing = true;
                drop(state);
                let result = self.sync_written();
                state = lock(&self.sync_state);
                state.syncing = false;
                if let Ok(covered_before) = result {
                    state.durable_before = state.durable_before.max(covered_before);
                }
                self.sync_done.notify_all();
                result?;
                continue;
            }
            state = self
                .sync_done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Syncs every segment written since the last sync; returns the first sequence it
    /// does not cover.
    fn sync_written(&self) -> Result<u64> {
        let (covered_before, segments) = {
            let mut writer = lock(&self.writer);
            writer.last_sync = std::time::Instant::now();
            (writer.next_sequence, std::mem::take(&mut writer.unsynced))
        };
        for segment in &segments {
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = segment.sync() {
                self.poison();
                return Err(error);
            }
        }
        Ok(covered_before)
    }

    /// Makes every write so far durable (for `interval` and `none` modes, and shutdown).
    pub fn sync(&self) -> Result<()> {
        let next = lock(&self.writer).next_sequence;
        self.wait_durable(next.saturating_sub(1))
    }

    /// In `interval` mode, syncs if the interval has passed since the last sync; a shell
    /// calls this from a timer so an idle store still reaches disk in time.
    pub fn sync_if_due(&self) -> Result<()> {
        if let Durability::Interval { interval_ms } = self.config.durability {
            let elapsed = lock(&self.writer).last_sync.elapsed();
            if elapsed.as_millis() >= u128::from(interval_ms) {
                return self.sync();
            }
        }
        Ok(())
    }

    /// Points the index at `entry` for `key` unless it already holds something newer.
    fn apply(&self, entry: Entry, key: &[u8]) -> Result<()> {
        // Which existing entry (if any) is this key? Decide with disk reads outside the
        // write lock; the commit lock keeps the table from changing meanwhile.
        let same_key = {
            let shared = read(&self.shared);
            find_key(
                &shared.table,
                &shared.segments,
                self.bounds,
                entry.hash,
                key,
                &self.counters,
            )
        };
        let mut shared = write(&self.shared);
        let shared = &mut *shared;
        place(
            &mut shared.table,
            &shared.segments,
            self.config.keys_max,
            entry,
            same_key,
        )
    }

    // ----- reading -------------------------------------------------------------------

    /// The value stored under `key`, `None` when absent or deleted. A record that fails
    /// verification is never returned: the read fails with `Corrupt` instead.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut value = Vec::new();
        Ok(self.get_into(key, &mut value)?.then_some(value))
    }

    /// Like [`Store::get`], but reads the value into `value` (replacing its contents)
    /// and returns whether the key was found. A caller that reuses one buffer saves an
    /// allocation per read, which matters for large values.
    pub fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool> {
        match self.read_into(key, value, ReadWait::Allowed)? {
            CachedRead::Found => Ok(true),
            CachedRead::Absent => Ok(false),
            // A read that may wait never answers this; an error rather than a panic.
            CachedRead::NotCached => Err(StorageError::io(
                "reading a record",
                std::io::Error::other("a waiting read reported an uncached record"),
            )),
        }
    }

    /// Like [`Store::get_into`], but never waits for the device: answers
    /// [`CachedRead::NotCached`] when a record it needs is not in the page cache (or the
    /// kernel cannot tell), so an event loop can serve cached reads inline and hand the
    /// rest to a thread that may block. Errors are those of `get_into`.
    pub fn get_cached_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<CachedRead> {
        self.read_into(key, value, ReadWait::PageCacheOnly)
    }

    fn read_into(&self, key: &[u8], value: &mut Vec<u8>, wait: ReadWait) -> Result<CachedRead> {
        if key.len() > self.config.key_size_bytes_max {
            return Ok(CachedRead::Absent);
        }
        let hash = key_hash(key);
        let candidates: SmallVec<[(Entry, Arc<Segment>); 2]> = {
            let shared = read(&self.shared);
            shared
                .table
                .find(hash)
                .filter_map(|(_, entry)| {
                    shared
                        .segments
                        .get(&entry.segment_id)
                        .map(|s| (entry, Arc::clone(s)))
                })
                .collect()
        };
        let mut head = [0u8; segment::HEAD_SIZE_BYTES_MAX];
        let mut corrupt = None;
        for (entry, segment) in candidates {
            let found = segment.read_value(
                entry.offset,
                entry.size_bytes,
                key,
                self.bounds,
                &mut head,
                value,
                wait,
            );
            match found {
                Ok(ValueRead::Key { tombstone }) => {
                    if tombstone {
                        value.clear();
                        return Ok(CachedRead::Absent);
                    }
                    return Ok(CachedRead::Found);
                }
                Ok(ValueRead::NotCached) => {
                    value.clear();
                    return Ok(CachedRead::NotCached);
                }
                Ok(ValueRead::OtherKey) => {}
                Err(error @ StorageError::Corrupt { .. }) => {
                    self.counters.corruption(&error);
                    corrupt = Some(error);
                }
                Err(other) => return Err(other),
            }
        }
        value.clear();
        match corrupt {
            Some(error) => Err(error),
            None => Ok(CachedRead::Absent),
        }
    }

    /// Up to `limit` live keys (with values) whose hash lies in `first..=last`, after
    /// the cursor `after`, in hash order. Holds the index read lock only while
    /// collecting positions, so writers are never held for a whole scan. Keys sharing a
    /// hash are never split across chunks. Unreadable records are counted and skipped.
    pub fn scan(
        &self,
        first: u64,
        last: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<ScanChunk> {
        let limit = limit.max(1);
        let (positions, next) = {
            let shared = read(&self.shared);
            let mut positions: Vec<(Entry, Arc<Segment>)> = Vec::new();
            let mut next = None;
            for entry in shared.table.range(first, after, last) {
                if positions.len() >= limit
                    && positions.last().is_some_and(|(e, _)| e.hash != entry.hash)
                {
                    next = positions.last().map(|(e, _)| e.hash);
                    break;
                }
                if entry.tombstone {
                    continue;
                }
                if let Some(segment) = shared.segments.get(&entry.segment_id) {
                    positions.push((entry, Arc::clone(segment)));
                }
            }
            (positions, next)
        };
        let mut items = Vec::with_capacity(positions.len());
        let mut buffer = Vec::new();
        for (entry, segment) in positions {
            match segment.read_record(entry.offset, entry.size_bytes, self.bounds, &mut buffer) {
                Ok(record) => items.push((record.key.to_vec(), record.value.to_vec())),
                Err(error @ StorageError::Corrupt { .. }) => self.counters.corruption(&error),
                Err(other) => return Err(other),
            }
        }
        Ok(ScanChunk { items, next })
    }

    /// Counters for INFO and tests.
    /// What this store's open found (see [`Recovery`]).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn stats(&self) -> Stats {
        let shared = read(&self.shared);
        Stats {
            keys: shared.table.entries().filter(|e| !e.tombstone).count() as u64,
            segments: shared.segments.len() as u64,
            corrupt_records: self.counters.corrupt_records.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            compactions: self.counters.compactions.load(Ordering::Relaxed),
            replayed_records: self.counters.replayed_records.load(Ordering::Relaxed),
            checkpoint_failures: self.counters.checkpoint_failures.load(Ordering::Relaxed),
            index_rebuilt: self.index_rebuilt,
        }
    }
}

impl Store {
    // ----- checkpoints ---------------------------------------------------------------

    /// True when enough log was written since the last checkpoint
    /// ([`Config::checkpoint_interval_bytes`]).
    pub fn checkpoint_due(&self) -> bool {
        lock(&self.writer).written_since_checkpoint >= self.config.checkpoint_interval_bytes
    }

    /// Checkpoints when [`Store::checkpoint_due`]. [`Store::write`] calls it after each
    /// batch; a caller of the split API calls it after [`Store::commit`], off its
    /// latency path (a checkpoint writes and syncs the whole index). Best effort: the
    /// write that triggered it is already durable and committed, so a failure (disk
    /// full) is logged and retried at the next trigger, never reported as a failed
    /// write.
    pub fn checkpoint_if_due(&self) {
        if !self.checkpoint_due() {
            return;
        }
        // Several writers may see it due at once; one checkpoint is enough.
        let checkpointing = match self.checkpoint_lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Err(error) = self.checkpoint_holding(checkpointing) {
            self.counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{}: index checkpoint failed, will retry: {error}",
                self.dir.display()
            );
        }
    }

    /// Writes an index checkpoint covering every committed write, then deletes the
    /// segments compaction made obsolete (safe only now: the index on disk no longer
    /// points into them). A failed checkpoint (disk full) leaves the previous one in
    /// place: nothing is lost, the next restart just replays more.
    pub fn checkpoint(&self) -> Result<()> {
        // One checkpoint at a time, so an older snapshot never lands after a newer one.
        self.checkpoint_holding(lock(&self.checkpoint_lock))
    }

    fn checkpoint_holding(&self, _checkpointing: MutexGuard<'_, ()>) -> Result<()> {
        // The table is written under the commit lock. Copying it first and writing
        // outside the lock was measured and was worse: the stall comes from the device
        // absorbing the whole file, which the log's fsyncs wait behind either way (see
        // BENCHMARKS.md). The obsolete segments are taken under the same lock, so none
        // retired after this snapshot is deleted while the snapshot still points into it.
        let obsolete = {
            let _commit = lock(&self.commit_lock);
            let checkpoint = {
                let mut writer = lock(&self.writer);
                let (segment_id, offset) = match writer.in_flight.first_key_value() {
                    Some((_, position)) => *position,
                    None => (writer.active.id, writer.active.end_offset()),
                };
                writer.written_since_checkpoint = 0;
                Checkpoint {
                    segment_id,
                    offset,
                    next_sequence: writer.next_sequence,
                    next_segment_id: writer.next_segment_id,
                }
            };
            read(&self.shared)
                .table
                .write_checkpoint(&self.dir, checkpoint)?;
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            std::mem::take(&mut *lock(&self.pending_deletion))
        };
        if obsolete.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.failpoint(Failpoint::BeforeObsoleteDeletion) {
            lock(&self.pending_deletion).extend(obsolete);
            return Err(error);
        }
        for segment in &obsolete {
            if let Err(error) = std::fs::remove_file(segment.path()) {
                log::warn!(
                    "{}: could not delete obsolete segment {}: {error}",
                    self.dir.display(),
                    segment.id
                );
            }
        }
        segment::sync_directory(&self.dir)
    }

    // ----- compaction ----------------------------------------------------------------

    /// Does at most `budget_bytes` of compaction work and returns. A shell calls this in
    /// slices between foreground work. Each step is crash-safe: the output is written
    /// as a temporary file and only renamed into place complete and synced; the index
    /// moves to it atomically; the source is deleted only after a checkpoint that no
    /// longer points into it.
    pub fn compact_step(&self, budget_bytes: u64) -> Result<CompactionProgress> {
        let mut job_slot = lock(&self.compaction);
        if job_slot.is_none() {
            match self.start_compaction()? {
                Some(job) => *job_slot = Some(job),
                None => return Ok(CompactionProgress::Idle),
            }
        }
        let Some(job) = job_slot.as_mut() else {
            return Ok(CompactionProgress::Idle);
        };
        let copied = self.copy_live_records(job, budget_bytes.max(1))?;
        if job.cursor < job.entries.len() {
            return Ok(CompactionProgress::Copied { bytes: copied });
        }
        let Some(job) = job_slot.take() else {
            return Ok(CompactionProgress::Idle);
        };
        drop(job_slot);
        self.finish_compaction(job)
    }

    fn start_compaction(&self) -> Result<Option<CompactionJob>> {
        // Segments with reserved, uncommitted batches are never sources: their records
        // would reach the index after the job's snapshot and be left behind. No new
        // reservation can enter a sealed segment, so this holds for the whole job.
        let (active_id, busy): (u32, Vec<u32>) = {
            let writer = lock(&self.writer);
            (
                writer.active.id,
                writer
                    .in_flight
                    .values()
                    .map(|(segment_id, _)| *segment_id)
                    .collect(),
            )
        };
        let pending: Vec<u32> = lock(&self.pending_deletion).iter().map(|s| s.id).collect();
        let (source, entries, floor) = {
            let shared = read(&self.shared);
            let candidate = shared
                .segments
                .values()
                // A rotation after `active_id` was read creates a log segment with a
                // larger id: that one is the active segment now, so skip them all.
                .filter(|s| !(s.kind == SegmentKind::Log && s.id >= active_id))
                .filter(|s| !pending.contains(&s.id) && !busy.contains(&s.id))
                .filter(|s| {
                    s.dead_share() >= self.config.compaction_dead_share_min && s.dead_share() > 0.0
                })
                .max_by(|a, b| a.dead_share().total_cmp(&b.dead_share()));
            let Some(source) = candidate.cloned() else {
                return Ok(None);
            };
            let entries: Vec<Entry> = shared
                .table
                .entries()
                .filter(|e| e.segment_id == source.id)
                .collect();
            let floor = shared
                .segments
                .values()
                .filter(|s| s.id != source.id)
                .map(|s| s.min_sequence)
                .min()
                .unwrap_or(u64::MAX);
            (source, entries, floor)
        };
        let (dropped, kept): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| e.tombstone && e.sequence < floor);
        let total: u64 = kept.iter().map(|e| u64::from(e.size_bytes)).sum();
        let output = if kept.is_empty() {
            None
        } else {
            let id = {
                let mut writer = lock(&self.writer);
                writer.next_segment_id += 1;
                writer.next_segment_id - 1
            };
            Some(Segment::create(
                &self.dir,
                id,
                SegmentKind::Compacted,
                source.min_sequence,
                segment::HEADER_SIZE_BYTES + total as u32,
                true,
            )?)
        };
        Ok(Some(CompactionJob {
            source,
            entries: kept,
            cursor: 0,
            output,
            output_offset: segment::HEADER_SIZE_BYTES,
            moved: Vec::new(),
            dropped,
        }))
    }

    fn copy_live_records(&self, job: &mut CompactionJob, budget_bytes: u64) -> Result<u64> {
        let Some(output) = job.output.as_ref() else {
            job.cursor = job.entries.len();
            return Ok(0);
        };
        let mut copied = 0u64;
        let mut record_buffer = Vec::new();
        let mut pending = Vec::new();
        let pending_start = job.output_offset;
        while job.cursor < job.entries.len() && copied < budget_bytes {
            let entry = job.entries[job.cursor];
            job.cursor += 1;
            match job.source.read_record(
                entry.offset,
                entry.size_bytes,
                self.bounds,
                &mut record_buffer,
            ) {
                Ok(_) => {
                    job.moved.push((entry, job.output_offset));
                    pending.extend_from_slice(&record_buffer);
                    job.output_offset += entry.size_bytes;
                    copied += u64::from(entry.size_bytes);
                }
                Err(error @ StorageError::Corrupt { .. }) => {
                    // The local copy is gone; anti-entropy restores it from a replica.
                    self.counters.corruption(&error);
                    job.dropped.push(entry);
                }
                Err(other) => return Err(other),
            }
        }
        output.write_at(&pending, pending_start)?;
        Ok(copied)
    }

    fn finish_compaction(&self, job: CompactionJob) -> Result<CompactionProgress> {
        let output = match job.output {
            Some(output) => {
                output.sync()?;
                self.failpoint(Failpoint::CompactionBeforeRename)?;
                let final_path = self.dir.join(segment::file_name(output.id));
                std::fs::rename(output.path(), &final_path)
                    .map_err(|e| StorageError::io("renaming a compaction output", e))?;
                segment::sync_directory(&self.dir)?;
                self.failpoint(Failpoint::CompactionAfterRename)?;
                let reopened = Arc::new(Segment::open(&final_path, output.id)?);
                reopened.set_end_offset(job.output_offset);
                Some(reopened)
            }
            None => None,
        };
        {
            let _commit = lock(&self.commit_lock);
            // Defence in depth, checked before any change and under the read lock only
            // (the commit lock already freezes the table): a source that something
            // outside this job still points into is kept.
            let accounted: std::collections::BTreeSet<(u64, u64)> = job
                .moved
                .iter()
                .map(|(e, _)| e)
                .chain(&job.dropped)
                .map(|e| (e.hash, e.sequence))
                .collect();
            let stray = read(&self.shared).table.entries().any(|e| {
                e.segment_id == job.source.id && !accounted.contains(&(e.hash, e.sequence))
            });
            if stray {
                log::error!(
                    "{}: segment {} gained entries during its compaction; keeping it",
                    self.dir.display(),
                    job.source.id
                );
                return Err(StorageError::Misuse("compaction source still referenced"));
            }
            let mut shared = write(&self.shared);
            let shared = &mut *shared;
            if let Some(output) = &output {
                shared.segments.insert(output.id, Arc::clone(output));
            }
            let unchanged = |table: &Table, old: &Entry| {
                table
                    .find(old.hash)
                    .find(|(_, e)| e == old)
                    .map(|(slot, _)| slot)
            };
            for (old, new_offset) in &job.moved {
                let (Some(slot), Some(output)) = (unchanged(&shared.table, old), &output) else {
                    continue;
                };
                let moved = Entry {
                    segment_id: output.id,
                    offset: *new_offset,
                    ..*old
                };
                shared.table.replace(slot, moved);
                job.source.add_live_bytes(-i64::from(old.size_bytes));
                output.add_live_bytes(i64::from(old.size_bytes));
            }
            for old in &job.dropped {
                if let Some(slot) = unchanged(&shared.table, old) {
                    shared.table.remove(slot);
                    job.source.add_live_bytes(-i64::from(old.size_bytes));
                }
            }
            shared.segments.remove(&job.source.id);
        }
        let reclaimed_bytes = u64::from(job.source.end_offset())
            .saturating_sub(output.as_ref().map_or(0, |o| u64::from(o.end_offset())));
        lock(&self.pending_deletion).push(Arc::clone(&job.source));
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.failpoint(Failpoint::CompactionAfterIndexMove)?;
        self.checkpoint()?;
        Ok(CompactionProgress::Finished {
            segment_id: job.source.id,
            reclaimed_bytes,
        })
    }

    /// Syncs and writes a final checkpoint, so the next open replays nothing.
    pub fn close(self) -> Result<()> {
        self.sync()?;
        self.checkpoint()
    }
}

// ----- helpers shared by commit and recovery ---------------------------------------------

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

/// Opens every segment in `dir`; deletes unfinished compaction outputs. Returns the
/// segments by id and the highest id seen (damaged ones included, so ids never repeat).
fn open_segments(dir: &Path, counters: &Counters) -> Result<(Segments, Option<u32>)> {
    let mut segments = BTreeMap::new();
    let mut highest = None;
    let listing =
        std::fs::read_dir(dir).map_err(|e| StorageError::io("listing the data directory", e))?;
    for item in listing {
        let item = item.map_err(|e| StorageError::io("listing the data directory", e))?;
        let name = item.file_name();
        let Some((id, temporary)) = name.to_str().and_then(segment::parse_file_name) else {
            continue;
        };
        highest = highest.max(Some(id));
        if temporary {
            std::fs::remove_file(item.path())
                .map_err(|e| StorageError::io("removing an unfinished compaction", e))?;
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

/// Finds the slot of `key`'s entry among those with its hash, reading keys from disk.
fn find_key(
    table: &Table,
    segments: &Segments,
    bounds: Bounds,
    hash: u64,
    key: &[u8],
    counters: &Counters,
) -> Option<(usize, Entry)> {
    for (slot, existing) in table.find(hash) {
        let Some(segment) = segments.get(&existing.segment_id) else {
            continue;
        };
        match segment.holds_key(existing.offset, key, bounds) {
            Ok(true) => return Some((slot, existing)),
            Ok(false) => {}
            Err(error) => counters.corruption(&error),
        }
    }
    None
}

/// Puts `entry` in the table: replaces `same_key`'s entry if `entry` is at least as new,
/// otherwise inserts, growing the table when needed.
fn place(
    table: &mut Table,
    segments: &Segments,
    keys_max: u64,
    entry: Entry,
    same_key: Option<(usize, Entry)>,
) -> Result<()> {
    let live = |segment_id: u32, delta: i64| {
        if let Some(segment) = segments.get(&segment_id) {
            segment.add_live_bytes(delta);
        }
    };
    match same_key {
        Some((slot, existing)) => {
            if entry.sequence < existing.sequence {
                return Ok(());
            }
            table.replace(slot, entry);
            live(existing.segment_id, -i64::from(existing.size_bytes));
            live(entry.segment_id, i64::from(entry.size_bytes));
        }
        None => {
            if table.len() >= keys_max {
                return Err(StorageError::IndexFull { keys_max });
            }
            if let Err(InsertError::NeedsGrowth) = table.insert(entry) {
                *table = table.grown()?;
                table.insert(entry).map_err(|_| StorageError::IndexFull {
                    keys_max: table.len(),
                })?;
            }
            live(entry.segment_id, i64::from(entry.size_bytes));
        }
    }
    Ok(())
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
            let _ = std::fs::write(dir.join("index"), &body[half..]);
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
