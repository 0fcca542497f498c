//! The store: one data directory, opened by one process, used from many threads.
//!
//! Cut along its seams: `write` (batches, the split API, group commit), `read`
//! (point reads, scans), `recovery` (open), `checkpoint` and `compaction`; this
//! file holds the types, the state they share and the index helpers that commit and
//! recovery both use.
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
//! # Reads from memory
//! The newest log segments are also kept in memory ([`Config::log_memory_bytes`],
//! whole segments; the oldest copy is handed to the new active segment, so the
//! memory stays allocated and is never freed on the write path): a batch's bytes are
//! copied into its segment's copy at commit, before the index points at them, so a
//! read the index sends there is a `memcpy`, not a `pread`. A node reads a key's record before
//! every write (to mint or merge against its versions) and the commit checks that an
//! overwritten index entry holds the same key; for keys written recently, both now
//! cost no syscall (issue 25's "no read before a write", measured in BENCHMARKS.md).
//! Older records (earlier segments, compaction outputs, and an active segment that
//! held records when the store was opened) are read from the file as before.
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
//! sync. Disk reads never happen under the `shared` write lock. A checkpoint holds the
//! commit lock only to take its snapshot, and the `shared` write lock only to copy a
//! step of pages ([`crate::index::SNAPSHOT_STEP_PAGES`]); it writes them with no lock
//! held but its own.

use crate::durability::Durability;
use crate::error::{Result, StorageError};
use crate::index::{Checkpoint, Entry, InsertError, Table};
use crate::record::{self, Bounds};
use crate::segment::{self, ReadWait, ScanEvent, ScanMode, Segment, SegmentKind, ValueRead};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

mod checkpoint;
mod compaction;
mod read;
mod recovery;
mod write;

#[cfg(any(test, feature = "fuzzing"))]
pub use recovery::fuzz_recover;

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
    /// A sealed segment is worth compacting once this share of its bytes is dead.
    pub compaction_dead_share_min: f64,
    /// A compaction starts once the segments worth compacting hold, together, at least
    /// this share of one segment's size in dead bytes; it then rewrites them all (and
    /// small segments besides) into one output. See `compaction` for why.
    pub compaction_dead_segment_share_min: f64,
    /// The newest log segments are also kept in memory, up to this many bytes (whole
    /// segments; fewer than one segment's size keeps none): reading a record written
    /// there costs no syscall, which is what a write's read of its key's versions and
    /// the commit's check of an overwritten key mostly hit (see "Reads from memory").
    pub log_memory_bytes: u64,
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
            compaction_dead_segment_share_min: 0.25,
            log_memory_bytes: 128 << 20,
        }
    }
}

impl Config {
    /// Whole log segments `log_memory_bytes` holds in memory.
    fn segments_in_memory_max(&self) -> usize {
        (self.log_memory_bytes / u64::from(self.segment_size_bytes).max(1)) as usize
    }

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
        if !(0.0..=1.0).contains(&self.compaction_dead_segment_share_min)
            || self.compaction_dead_segment_share_min.is_nan()
        {
            return fail("compaction_dead_segment_share_min must lie in 0..=1".to_owned());
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

    /// An empty batch with room for `operations` operations of `data_bytes` key and
    /// value bytes in all, allocated once.
    pub fn with_capacity(operations: usize, data_bytes: usize) -> WriteBatch {
        WriteBatch {
            data: Vec::with_capacity(data_bytes),
            operations: Vec::with_capacity(operations),
        }
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

    /// Bytes its records take in the log (headers, keys and values): what
    /// [`Store::batch_size_bytes_max`] bounds.
    pub fn size_bytes(&self) -> usize {
        record::HEADER_SIZE_BYTES * self.operations.len() + self.data.len()
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
    /// A job's segments were rewritten into one and removed.
    Finished {
        /// Segments the job rewrote.
        sources: u32,
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
    /// Checkpoint pages and checksums written and synced, header not yet written.
    BeforeCheckpointHeader,
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
    /// The log segments kept in memory, oldest first (`Config::log_memory_bytes`).
    in_memory: std::collections::VecDeque<Arc<Segment>>,
    /// Copies ready for the next segments kept in memory: populated at open
    /// ([`Writer::prepare_memory`]) or taken back from a segment compaction made
    /// obsolete, so that a rotation never faults fresh memory in under the writer
    /// lock. With `in_memory`'s, never more copies than the budget holds.
    spare_memory: Vec<memmap2::MmapMut>,
}

impl Writer {
    /// The write path after recovery: appending to `active` from its end, with
    /// nothing in flight and nothing unsynced.
    fn new(active: Arc<Segment>, next_sequence: u64, next_segment_id: u32) -> Writer {
        Writer {
            zeroed_until: active.end_offset(),
            active,
            next_sequence,
            next_segment_id,
            in_flight: BTreeMap::new(),
            unsynced: Vec::new(),
            written_since_checkpoint: 0,
            last_sync: std::time::Instant::now(),
            in_memory: std::collections::VecDeque::new(),
            spare_memory: Vec::new(),
        }
    }

    /// Maps and touches every copy the budget holds, at open (see `crate::memory`:
    /// first touches of huge pages on the write path would stall puts). A copy that
    /// cannot be mapped is left out: its segment is then read from the file. Copies
    /// smaller than a huge page are not prepared: they gain nothing from it, and a
    /// budget of many small segments (tests use 16 KiB ones) would map thousands of
    /// copies at every open.
    fn prepare_memory(&mut self, config: &Config) {
        if (config.segment_size_bytes as usize) < crate::memory::HUGE_PAGE_BYTES {
            return;
        }
        let segments_max = config.segments_in_memory_max();
        while self.in_memory.len() + self.spare_memory.len() < segments_max {
            match crate::memory::huge_page_memory(config.segment_size_bytes as usize, true) {
                Ok(memory) => self.spare_memory.push(memory),
                Err(_) => break,
            }
        }
    }

    /// Keeps `segment` (the new active one, nothing written yet) in memory when the
    /// budget holds a segment, taking the oldest copy past the budget for it.
    fn keep_in_memory(&mut self, segment: &Arc<Segment>, config: &Config) {
        let segments_max = config.segments_in_memory_max();
        if segments_max == 0 {
            return;
        }
        let mut reuse = None;
        while self.in_memory.len() >= segments_max {
            if let Some(oldest) = self.in_memory.pop_front() {
                reuse = oldest.take_memory().or(reuse);
            }
        }
        let reuse = reuse.or_else(|| self.spare_memory.pop());
        segment.keep_in_memory(config.segment_size_bytes, reuse);
        self.in_memory.push_back(Arc::clone(segment));
    }

    /// Lets go of segment `id`'s place among the in-memory copies (compaction made it
    /// obsolete), handing it to the caller to drop outside the writer lock: holding
    /// it here kept the deleted file open until a later rotation dropped it under
    /// the lock, and closing it freed its blocks there (a 64 MiB discard, 13 ms).
    fn forget_in_memory(&mut self, id: u32) -> Option<Arc<Segment>> {
        let position = self.in_memory.iter().position(|segment| segment.id == id)?;
        let segment = self.in_memory.remove(position)?;
        // Its copy serves the next segment kept in memory (no read is pointed at an
        // obsolete segment's records any more).
        self.spare_memory.extend(segment.take_memory());
        Some(segment)
    }
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every sequence below this is durable.
    durable_before: u64,
    syncing: bool,
}

#[derive(Debug)]
struct CompactionJob {
    /// The segments this job rewrites into one output, at most
    /// `compaction::SOURCES_MAX`.
    sources: Vec<Arc<Segment>>,
    /// Live entries of every source, in index (hash) order.
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
    /// Serializes commits with the background work that moves index entries. A
    /// `parking_lot` mutex because background loops release it with
    /// `unlock_fair`, handing it to a waiting commit: std's mutex lets the releasing
    /// thread take it straight back, and a compaction's back-to-back steps starved
    /// puts for the whole loop (20 ms, measured).
    commit_lock: parking_lot::Mutex<()>,
    /// Held through a checkpoint; what the two index files hold.
    checkpoint_lock: Mutex<crate::index::IndexFiles>,
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
// The index lock is `parking_lot`'s, which is task-fair: a reader arriving while a
// writer waits queues behind it. With std's, whose unlock lets the releasing thread
// take the lock straight back, compaction's back-to-back scan steps kept a put's
// commit waiting for the whole scan (10 ms, measured; see BENCHMARKS.md).
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
}
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
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
    /// The store's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The most log bytes one batch may take ([`WriteBatch::size_bytes`]): a batch is
    /// written into one segment, so a larger one is refused whole.
    pub fn batch_size_bytes_max(&self) -> usize {
        (self.config.segment_size_bytes - segment::HEADER_SIZE_BYTES) as usize
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

    /// What this store's open found (see [`Recovery`]).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Counters for INFO and tests.
    pub fn stats(&self) -> Stats {
        let shared = read(&self.shared);
        Stats {
            keys: shared.table.live_len(),
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

    /// Syncs and writes a final checkpoint, so the next open replays nothing.
    pub fn close(self) -> Result<()> {
        self.sync()?;
        self.checkpoint()
    }
}

// ----- helpers shared by commit and recovery ---------------------------------------------

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
