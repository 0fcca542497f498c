//! The storage executor: the node's three stores (`data`, `hints`, `meta`, one
//! ringkv-storage directory each) and the threads that run the core's storage
//! operations on them, so the event loop never waits on the disk.
//!
//! - **Durable writes go in rounds on the event loop's thread**, never a thread of
//!   their own: durable writes and deletes wait in the executor, one list per store,
//!   and once per wakeup, after the loop flushed its output, [`Executor::run_rounds`]
//!   takes each store's waiting operations (at most [`BATCH_OPERATIONS_MAX`] operations
//!   or [`BATCH_BYTES_MAX`] bytes) as one batch, written and synced once with plain
//!   syscalls: group commit, one fsync for every write waiting when the round starts,
//!   and no thread handoff, as Redis's `appendfsync always` does it. Operations on one
//!   key keep their order because rounds take them in arrival order. A round of at
//!   least [`SYNC_AWAY_OPERATIONS_MIN`] operations (a busy node's) is written here
//!   and synced on the syncer thread while the loop goes on serving reads and
//!   buffered writes; the store's next round waits for it, gathering what arrives
//!   meanwhile, and its completions come when the loop next takes completions. A
//!   smaller round (a lightly loaded node's) is synced here: at 2,000 requests a
//!   second nearly every round holds one write, and a thread hand-off per write cost
//!   more than the loop's wait. A failed batch
//!   fails each of its operations (nothing of it is acknowledged). Both binaries work
//!   this way. A writer thread did it once (measured at 2,000 requests a second on 3
//!   nodes it cost a third more CPU per request: its wakeups and thread switches), and
//!   ringkv-node-uring once wrote its rounds through the ring (linked write and
//!   fdatasync, run on io-wq workers, which cost a third more CPU per request than
//!   these syscalls; both in BENCHMARKS.md). Both are gone.
//! - **Buffered writes run on the loop's thread** (`durable` false, see
//!   `ringkv_core::quorum::SyncWrites`): they wait in one batch per store until the
//!   loop next takes completions ([`Executor::try_done`], [`Executor::has_done`]), or
//!   the batch reaches [`BATCH_OPERATIONS_MAX`] operations or [`BATCH_BYTES_MAX`]
//!   bytes, and then the whole batch goes to the log and the index
//!   (`Store::write_buffered`: one `pwrite`, no fsync) and every write's completion is
//!   queued: no thread handoff, no wakeup, and one syscall for all the replica writes
//!   a wakeup read, where one each cost a third of a node's syscalls in the closed
//!   loop (BENCHMARKS.md). A failed batch fails each of its writes. A reader
//!   thread syncs them on the shell's interval ([`Executor::sync`]), and the next
//!   durable round syncs them too; an index checkpoint they make due goes to a
//!   reader thread. The core keeps one write per key in flight, so a buffered write
//!   never overtakes a durable one of the same key waiting for its round.
//! - **Point reads run inline** on the caller's thread (the event loop) when the page
//!   cache holds what they need (`Store::get_cached_into`, one `preadv2(RWF_NOWAIT)`),
//!   and their completion is queued at once: a cached read costs no thread handoff,
//!   no wakeup and no context switch (why it matters is measured in BENCHMARKS.md).
//! - **A round** uses the storage engine's split API: `next_round` prepares a store's
//!   waiting operations as one batch, the loop writes its bytes (and zeros ahead) and
//!   syncs, and `finish_round` commits the batch and completes every operation in it,
//!   or fails them all (a failed write gives the batch back; a failed sync poisons
//!   the store).
//! - **Reader threads** ([`READERS`]) take the reads the page cache cannot serve,
//!   listings and scans, and compaction slices, so nothing waits behind an fsync and
//!   the loop never waits for the disk.
//! - Completions go back on a channel, and the loop is woken through the `wake`
//!   callback (a mio `Waker` for ringkv-node) once per round, not once per operation.
//!
//! Both channels are bounded at the core's `storage_operations_max` (the core never
//! has more in flight), so submission never blocks; a full channel would be a bug and
//! completes the operation as an I/O failure rather than blocking the loop.
//!
//! `List` (the hints space, read at start) has no ordered index to use: a listing
//! that starts (`after` empty) scans the store's whole hash range once and keeps the
//! sorted keys with their stored sizes; its later pages are cut from that list. Hints
//! are bounded by `hints_max` and `hint_bytes_max`, and the core lists them once per
//! start; a key deleted meanwhile is listed but then read as absent, and hints written
//! meanwhile the core already knows.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ringkv_core::node::{
    Completion, ListedKey, Listing, ScanPage, Space, StorageFailure, StorageOp,
};
use ringkv_storage::{CachedRead, CompactionProgress, Durability, StorageError, Store, WriteBatch};
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Most operations one write round puts in one batch.
pub const BATCH_OPERATIONS_MAX: usize = 1024;
/// Most log bytes one write round puts in one batch (`WriteBatch::size_bytes`), and
/// never more than the store's segment holds (`Store::batch_size_bytes_max`: the
/// meta store's segments are 2 MiB).
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Threads serving reads, scans and compaction.
pub const READERS: usize = 2;
/// A durable round of at least this many operations is synced on the syncer thread
/// while the loop goes on; a smaller one (a lightly loaded node's) on the loop's
/// thread (see the module docs).
pub const SYNC_AWAY_OPERATIONS_MIN: usize = 2;

/// Work for a thread: one of the core's operations, or the shell's own.
#[derive(Debug)]
enum Job {
    Core(StorageOp),
    /// One compaction slice of the data store.
    Compact {
        budget_bytes: u64,
    },
    /// Make every write durable (interval and none modes; shutdown).
    Sync,
    /// Checkpoint the store's index if enough log was written (caller mode: the loop
    /// commits rounds and must not write the index itself).
    Checkpoint(Space),
}

/// A finished job: one of the core's storage operations (its completion, until the loop
/// hands it to the core), or a compaction slice.
#[derive(Debug)]
pub enum Done {
    Storage(Completion),
    /// A compaction slice: what it did, or why it failed.
    Compacted(Result<CompactionProgress, String>),
}

impl From<Completion> for Done {
    fn from(completion: Completion) -> Done {
        Done::Storage(completion)
    }
}

/// How big each store may grow its records and segments.
#[derive(Clone, Copy, Debug)]
pub struct StoreSizes {
    pub durability: Durability,
    pub data_segment_size_bytes: u32,
    /// Bytes written to each store between index checkpoints.
    pub checkpoint_interval_bytes: u64,
    /// Largest encoded record (all siblings of a key).
    pub record_size_bytes_max: usize,
}

/// Why the stores could not open.
#[derive(Debug)]
pub struct OpenError {
    pub store: &'static str,
    pub error: StorageError,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot open the {} store: {}", self.store, self.error)
    }
}

impl std::error::Error for OpenError {}

#[derive(Debug)]
struct Stores {
    data: Store,
    hints: Store,
    meta: Store,
    /// The keys of the listing under way: its space and its keys in byte order, each
    /// with its stored size.
    listing: Mutex<Option<(Space, Vec<ListedKey>)>>,
    rounds: RoundCounters,
    /// Per store: a [`Job::Checkpoint`] is queued or running (one at a time).
    checkpoint_queued: [AtomicBool; 3],
}

/// What the writer's rounds cost (INFO): each round writes one batch per store and
/// syncs it, so a write that arrives during a round waits for the next one.
#[derive(Debug, Default)]
struct RoundCounters {
    rounds: AtomicU64,
    operations: AtomicU64,
    round_us_total: AtomicU64,
    round_us_max: AtomicU64,
    /// Batches refused because the disk (or the index) is full.
    batches_disk_full: AtomicU64,
    /// Batches that failed otherwise (I/O errors).
    batches_failed: AtomicU64,
}

impl RoundCounters {
    /// Counts a batch that failed with `failure`.
    fn failed(&self, failure: StorageFailure) {
        let counter = match failure {
            StorageFailure::DiskFull => &self.batches_disk_full,
            StorageFailure::Corrupt | StorageFailure::Io => &self.batches_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, operations: usize, took: std::time::Duration) {
        let round_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.operations
            .fetch_add(operations as u64, Ordering::Relaxed);
        self.round_us_total.fetch_add(round_us, Ordering::Relaxed);
        self.round_us_max.fetch_max(round_us, Ordering::Relaxed);
    }
}

/// A copy of the writer's round counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteRounds {
    pub rounds: u64,
    pub operations: u64,
    pub round_us_total: u64,
    pub round_us_max: u64,
    /// Batches refused because the disk or the index was full.
    pub batches_disk_full: u64,
    /// Batches that failed with another error.
    pub batches_failed: u64,
}

impl Stores {
    fn get(&self, space: Space) -> &Store {
        match space {
            Space::Data => &self.data,
            Space::Hints => &self.hints,
            Space::Meta => &self.meta,
        }
    }

    /// True when a batch of `space` holding `count` operations in `size_bytes` has no
    /// room for one more of `next_bytes` (a key and value's record bytes): the batch
    /// goes first. An empty batch always takes one (the store bounds a record).
    fn batch_is_full(
        &self,
        space: Space,
        (count, size_bytes): (usize, usize),
        next_bytes: usize,
    ) -> bool {
        let bytes_max = BATCH_BYTES_MAX.min(self.get(space).batch_size_bytes_max());
        count > 0 && (count >= BATCH_OPERATIONS_MAX || size_bytes + next_bytes > bytes_max)
    }
}

/// One store's waiting writes, prepared as one batch to write at
/// [`WriteRound::file_offset`] of [`WriteRound::file`] and, when [`WriteRound::sync`],
/// to sync before [`Executor::finish_round`].
#[derive(Debug)]
struct WriteRound {
    space: Space,
    prepared: ringkv_storage::PreparedWrite,
    tokens: Vec<u64>,
    /// Sync before finishing: the durability mode acknowledges a write only once it
    /// is synced (every operation of a round is durable: buffered writes never wait
    /// for one).
    sync: bool,
    started: std::time::Instant,
}

impl WriteRound {
    fn bytes(&self) -> &[u8] {
        self.prepared.bytes()
    }

    fn file_offset(&self) -> u64 {
        self.prepared.file_offset()
    }

    fn file(&self) -> &std::fs::File {
        self.prepared.file()
    }

    /// Zeros to write after the bytes, before the sync (the next round of the store
    /// is prepared only once this one finished, as the storage engine requires).
    fn zeros(&self) -> Option<(u64, &'static [u8])> {
        self.prepared.zeros()
    }
}

/// Why a round failed.
#[derive(Debug)]
enum RoundFailure {
    /// Writing the bytes failed (or was short): the batch is given back, and the
    /// store takes writes again (a full disk may have room later).
    Write(std::io::Error),
    /// The sync failed: the store refuses writes until it is reopened.
    Sync(std::io::Error),
}

/// The executor: submit operations, collect completions.
#[derive(Debug)]
pub struct Executor {
    stores: Arc<Stores>,
    /// Durable writes and deletes waiting for a round, per store, and whether a
    /// store's round is being written.
    waiting: RefCell<[Vec<StorageOp>; 3]>,
    rounds_out: Cell<[bool; 3]>,
    queue_max: usize,
    sync_rounds: bool,
    reads: Option<Sender<Job>>,
    done: Receiver<Done>,
    done_sender: Sender<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Point reads served inline, and those handed to a reader thread.
    reads_inline: AtomicU64,
    reads_deferred: AtomicU64,
    /// Each store's buffered writes waiting for the loop to take completions, and
    /// their tokens (see the module docs).
    buffered: RefCell<[(WriteBatch, Vec<u64>); 3]>,
    /// Rounds handed to the syncer thread (at most one per store), and the rounds it
    /// synced, for the loop to finish. The syncer waits on std's channel, which parks
    /// it at once: crossbeam's `recv` yields the CPU several times before parking, and
    /// those `sched_yield`s (18,700 in 10 s of closed loop) took 4.5% of a node's CPU.
    sync_jobs: Option<std::sync::mpsc::SyncSender<WriteRound>>,
    synced: Receiver<(WriteRound, std::io::Result<()>)>,
}

/// The stores under a node's data directory, each in a directory of its name.
pub const STORE_NAMES: [&str; 3] = ["data", "hints", "meta"];

/// Opens the three stores under `dir`.
fn open_stores(dir: &Path, sizes: StoreSizes) -> Result<Stores, OpenError> {
    let value_size_bytes_max = sizes
        .record_size_bytes_max
        .min(ringkv_storage::store::VALUE_SIZE_BYTES_LIMIT);
    // Each store keeps its two newest log segments in memory (the data store's are
    // 64 MiB by default): the read before a write and the commit's same-key check of
    // recently written keys cost no syscall (ringkv-storage's "Reads from memory").
    let config = |segment_size_bytes: u32| ringkv_storage::Config {
        durability: sizes.durability,
        segment_size_bytes,
        value_size_bytes_max,
        checkpoint_interval_bytes: sizes.checkpoint_interval_bytes,
        log_memory_bytes: 2 * u64::from(segment_size_bytes),
        ..ringkv_storage::Config::default()
    };
    // Every store must hold one largest record in a segment.
    let smallest = u32::try_from(value_size_bytes_max + (1 << 20)).unwrap_or(u32::MAX);
    let open = |store: &'static str, segment_size_bytes: u32| {
        Store::open(dir.join(store), config(segment_size_bytes.max(smallest)))
            .map_err(|error| OpenError { store, error })
    };
    let [data, hints, meta] = STORE_NAMES;
    Ok(Stores {
        data: open(data, sizes.data_segment_size_bytes)?,
        hints: open(hints, 16 << 20)?,
        meta: open(meta, 1 << 20)?,
        listing: Mutex::new(None),
        rounds: RoundCounters::default(),
        checkpoint_queued: Default::default(),
    })
}

impl Executor {
    /// Opens the stores under `dir` and starts the threads. `queue_max` bounds each
    /// channel (the core's `storage_operations_max`); `wake` is called when
    /// completions are waiting.
    pub fn start(
        dir: &Path,
        sizes: StoreSizes,
        queue_max: usize,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Result<Executor, OpenError> {
        let stores = Arc::new(open_stores(dir, sizes)?);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let (reads, read_jobs) = crossbeam_channel::bounded(queue_max);
        // Completions: room for every operation the core can have in flight, plus
        // compaction and sync jobs.
        let (done_sender, done) = crossbeam_channel::bounded(queue_max * 2 + 64);
        let mut threads = Vec::new();
        for reader in 0..READERS {
            let (stores, jobs, sender, wake) = (
                Arc::clone(&stores),
                read_jobs.clone(),
                done_sender.clone(),
                Arc::clone(&wake),
            );
            threads.push(spawn(&format!("ringkv-reader-{reader}"), move || {
                read_loop(&stores, &jobs, &sender, &*wake)
            }));
        }
        // One round per store can be out: the channels never hold more.
        let (sync_jobs, sync_queue) = std::sync::mpsc::sync_channel::<WriteRound>(3);
        let (synced_sender, synced) = crossbeam_channel::bounded(3);
        let syncer_wake = Arc::clone(&wake);
        threads.push(spawn("ringkv-syncer", move || {
            for round in sync_queue {
                let result = round.file().sync_data();
                if synced_sender.send((round, result)).is_err() {
                    return;
                }
                syncer_wake();
            }
        }));
        Ok(Executor {
            stores,
            waiting: RefCell::new([Vec::new(), Vec::new(), Vec::new()]),
            rounds_out: Cell::new([false; 3]),
            queue_max,
            sync_rounds: sizes.durability.acknowledges_after_sync(),
            reads: Some(reads),
            done,
            done_sender,
            threads,
            reads_inline: AtomicU64::new(0),
            reads_deferred: AtomicU64::new(0),
            buffered: RefCell::default(),
            sync_jobs: Some(sync_jobs),
            synced,
        })
    }

    /// Queues one of the core's storage operations. A point read the page cache can
    /// serve is done here and now: its completion is waiting when this returns.
    pub fn submit(&self, operation: StorageOp<&[u8]>) {
        if let StorageOp::Write {
            token,
            space,
            key,
            record,
            durable: false,
        } = operation
        {
            return self.write_buffered(token, space, (key, record));
        }
        if let StorageOp::Read { token, space, key } = operation {
            let mut value = Vec::new();
            let result = match self.stores.get(space).get_cached_into(key, &mut value) {
                Ok(CachedRead::Found) => Ok(Some(value)),
                Ok(CachedRead::Absent) => Ok(None),
                Ok(CachedRead::NotCached) => {
                    self.reads_deferred.fetch_add(1, Ordering::Relaxed);
                    return self.queue(operation.owned());
                }
                Err(error) => {
                    log::warn!("storage: reading from {space:?} failed: {error}");
                    Err(failure(&error))
                }
            };
            return self.finish_inline(token, result);
        }
        self.queue(operation.owned());
    }

    /// Keeps a write for the next round, or hands a job to the reader threads.
    fn queue(&self, job: StorageOp) {
        let token = job.token();
        if job.is_write() {
            let mut waiting = self.waiting.borrow_mut();
            if waiting.iter().map(Vec::len).sum::<usize>() >= self.queue_max {
                log::error!("storage queue full; failing operation {token}");
                let _ = self.done_sender.try_send(failed(Job::Core(job)));
                return;
            }
            waiting[space_index(job.space())].push(job);
            return;
        }
        let sent = match &self.reads {
            Some(channel) => channel
                .try_send(Job::Core(job))
                .map_err(TrySendError::into_inner),
            None => Err(Job::Core(job)),
        };
        if let Err(job) = sent {
            log::error!("storage queue full or closed; failing operation {token}");
            let _ = self.done_sender.try_send(failed(job));
        }
    }

    /// A buffered write: into its store's waiting batch, written when the loop next
    /// takes completions or the batch is full (see the module docs).
    fn write_buffered(&self, token: u64, space: Space, (key, record): (&[u8], &[u8])) {
        let next_bytes = ringkv_storage::record::size_bytes(key.len(), record.len());
        let full = {
            let buffered = self.buffered.borrow();
            let (batch, _) = &buffered[space_index(space)];
            let size = (batch.len(), batch.size_bytes());
            self.stores.batch_is_full(space, size, next_bytes)
        };
        if full {
            self.write_buffered_batch(space);
        }
        let mut buffered = self.buffered.borrow_mut();
        let (batch, tokens) = &mut buffered[space_index(space)];
        batch.put(key, record);
        tokens.push(token);
    }

    /// Writes every store's waiting buffered writes and queues their completions.
    fn write_buffered_batches(&self) {
        for space in [Space::Data, Space::Hints, Space::Meta] {
            self.write_buffered_batch(space);
        }
    }

    fn write_buffered_batch(&self, space: Space) {
        let mut buffered = self.buffered.borrow_mut();
        let (batch, tokens) = &mut buffered[space_index(space)];
        if batch.is_empty() {
            return;
        }
        let result = self
            .stores
            .get(space)
            .write_buffered(batch)
            .map_err(|error| {
                log::warn!("storage: writing to {space:?} failed: {error}");
                self.stores.rounds.failed(failure(&error));
                failure(&error)
            });
        batch.clear();
        for token in tokens.drain(..) {
            if self
                .done_sender
                .try_send(Completion::Written { token, result }.into())
                .is_err()
            {
                // The channel holds every operation the core can have in flight, twice.
                log::error!("completion queue full; write {token} is lost");
            }
        }
        drop(buffered);
        self.checkpoint_when_due(space);
    }

    fn finish_inline(&self, token: u64, result: Result<Option<Vec<u8>>, StorageFailure>) {
        self.reads_inline.fetch_add(1, Ordering::Relaxed);
        if self
            .done_sender
            .try_send(Completion::Read { token, result }.into())
            .is_err()
        {
            // The channel holds every operation the core can have in flight, twice.
            log::error!("completion queue full; read {token} is lost");
        }
    }

    /// True when completions are waiting (an inline read's, a thread's, or buffered writes
    /// still to write): the loop
    /// must not sleep before handing them to the core.
    pub fn has_done(&self) -> bool {
        !self.done.is_empty()
            || !self.synced.is_empty()
            || self
                .buffered
                .borrow()
                .iter()
                .any(|(batch, _)| !batch.is_empty())
    }

    /// Point reads served inline so far, and those a reader thread served.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.reads_inline.load(Ordering::Relaxed),
            self.reads_deferred.load(Ordering::Relaxed),
        )
    }

    /// Hands the store's index checkpoint to a reader thread once enough log was
    /// written (after a round, or a buffered write).
    fn checkpoint_when_due(&self, space: Space) {
        let queued = &self.stores.checkpoint_queued[space_index(space)];
        if !self.stores.get(space).checkpoint_due() || queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self
            .reads
            .as_ref()
            .is_some_and(|reads| reads.try_send(Job::Checkpoint(space)).is_ok());
        if !sent {
            queued.store(false, Ordering::Release); // the next round asks again
        }
    }

    /// Asks a reader thread for one compaction slice of the data store.
    pub fn compact(&self, budget_bytes: u64) -> bool {
        self.reads
            .as_ref()
            .is_some_and(|r| r.try_send(Job::Compact { budget_bytes }).is_ok())
    }

    /// Asks a reader thread to make every write durable (buffered writes, interval
    /// mode): off the loop's path, so no write round waits behind this fsync (a
    /// durable round that needs one meanwhile shares it: `Store::sync` is the same
    /// group commit).
    pub fn sync(&self) {
        if let Some(channel) = &self.reads {
            let _ = channel.try_send(Job::Sync);
        }
    }

    /// The next store's waiting writes as one prepared batch, for a store without a
    /// round out. Operations the store refuses at once (a poisoned store, say)
    /// complete with the error here.
    fn next_round(&self) -> Option<WriteRound> {
        let mut out = self.rounds_out.get();
        for space in [Space::Data, Space::Hints, Space::Meta] {
            let index = space_index(space);
            if out[index] {
                continue;
            }
            let (jobs, bytes) = {
                let mut waiting = self.waiting.borrow_mut();
                let list = &mut waiting[index];
                if list.is_empty() {
                    continue;
                }
                let mut bytes = 0usize;
                let mut count = 0usize;
                for job in list.iter() {
                    let next_bytes = match job {
                        StorageOp::Write { key, record, .. } => {
                            ringkv_storage::record::size_bytes(key.len(), record.len())
                        }
                        StorageOp::Delete { key, .. } => {
                            ringkv_storage::record::size_bytes(key.len(), 0)
                        }
                        _ => 0,
                    };
                    if self.stores.batch_is_full(space, (count, bytes), next_bytes) {
                        break;
                    }
                    bytes += next_bytes;
                    count += 1;
                }
                (list.drain(..count).collect::<Vec<_>>(), bytes)
            };
            // `bytes` counts record headers too: room enough, allocated once.
            let mut batch = WriteBatch::with_capacity(jobs.len(), bytes);
            let mut tokens = Vec::with_capacity(jobs.len());
            for job in &jobs {
                tokens.push(job.token());
                match job {
                    StorageOp::Write { key, record, .. } => batch.put(key, record),
                    StorageOp::Delete { key, .. } => batch.delete(key),
                    _ => {}
                }
            }
            match self.stores.get(space).prepare(&batch) {
                Ok(prepared) => {
                    out[index] = true;
                    self.rounds_out.set(out);
                    return Some(WriteRound {
                        space,
                        prepared,
                        tokens,
                        sync: self.sync_rounds,
                        started: std::time::Instant::now(),
                    });
                }
                Err(error) => {
                    log::warn!("storage: preparing a batch for {space:?} failed: {error}");
                    let result = Err(failure(&error));
                    self.stores.rounds.failed(failure(&error));
                    for token in tokens {
                        let _ = self
                            .done_sender
                            .try_send(Completion::Written { token, result }.into());
                    }
                }
            }
        }
        None
    }

    /// Writes (and syncs, when the durability mode wants it) every store's waiting
    /// writes here and now, one round per store, and queues their completions. The
    /// loop calls it once per wakeup, after it flushed its output.
    pub fn run_rounds(&self) {
        use std::os::unix::fs::FileExt;
        self.write_buffered_batches();
        while let Some(round) = self.next_round() {
            let written = round
                .file()
                .write_all_at(round.bytes(), round.file_offset())
                .map_err(RoundFailure::Write);
            if written.is_ok() {
                // Zeroing ahead only makes later syncs cheaper (see ringkv-storage).
                if let Some((offset, zeros)) = round.zeros() {
                    if let Err(error) = round.file().write_all_at(zeros, offset) {
                        log::debug!("storage: zeroing ahead failed: {error}");
                    }
                }
            }
            let round = match (&written, &self.sync_jobs) {
                (Ok(()), Some(syncer))
                    if round.sync && round.tokens.len() >= SYNC_AWAY_OPERATIONS_MIN =>
                {
                    match syncer.try_send(round) {
                        Ok(()) => continue,
                        Err(
                            std::sync::mpsc::TrySendError::Full(refused)
                            | std::sync::mpsc::TrySendError::Disconnected(refused),
                        ) => refused,
                    }
                }
                _ => round,
            };
            let written = written.and_then(|()| {
                if round.sync {
                    round.file().sync_data().map_err(RoundFailure::Sync)
                } else {
                    Ok(())
                }
            });
            self.finish_round(round, written);
        }
    }

    /// Finishes the rounds the syncer thread synced: their completions are queued.
    fn finish_synced_rounds(&self) {
        while let Ok((round, synced)) = self.synced.try_recv() {
            self.finish_round(round, synced.map_err(RoundFailure::Sync));
        }
    }

    /// A round's bytes were written (and synced), or failed to be (`written`): commit
    /// it, or give it back, or refuse the store's writes from now on, and complete
    /// each of its operations.
    fn finish_round(&self, round: WriteRound, written: Result<(), RoundFailure>) {
        let WriteRound {
            space,
            prepared,
            tokens,
            started,
            ..
        } = round;
        let mut out = self.rounds_out.get();
        out[space_index(space)] = false;
        self.rounds_out.set(out);
        let store = self.stores.get(space);
        let result = match written {
            Ok(()) => {
                let committed = store.commit(prepared).map_err(|error| {
                    log::warn!("storage: committing a batch to {space:?} failed: {error}");
                    failure(&error)
                });
                self.checkpoint_when_due(space);
                committed
            }
            Err(RoundFailure::Write(error)) => {
                log::warn!("storage: writing a batch to {space:?} failed: {error}");
                let full = error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error());
                if let Err(misuse) = store.abort(prepared) {
                    log::error!("storage: giving back a failed batch: {misuse}");
                }
                Err(if full {
                    StorageFailure::DiskFull
                } else {
                    StorageFailure::Io
                })
            }
            Err(RoundFailure::Sync(error)) => {
                log::error!("storage: syncing a batch to {space:?} failed: {error}");
                store.fail(prepared);
                Err(StorageFailure::Io)
            }
        };
        self.stores.rounds.record(tokens.len(), started.elapsed());
        if let Err(failure) = result {
            self.stores.rounds.failed(failure);
        }
        for token in tokens {
            if self
                .done_sender
                .try_send(Completion::Written { token, result }.into())
                .is_err()
            {
                log::error!("completion queue full; write {token} is lost");
            }
        }
    }

    /// The next finished operation, if any. When none is waiting, the buffered writes
    /// are written first (their completions are among them): the writes the core
    /// asked for while it took the completions before go in one batch.
    pub fn try_done(&self) -> Option<Done> {
        self.finish_synced_rounds();
        if let Ok(done) = self.done.try_recv() {
            return Some(done);
        }
        self.write_buffered_batches();
        self.done.try_recv().ok()
    }

    /// Storage counters of the data store, and its size on disk.
    pub fn data_stats(&self) -> ringkv_storage::Stats {
        self.stores.data.stats()
    }

    /// What each store's open found, by store name (`STORE_NAMES` order).
    pub fn recoveries(&self) -> [(&'static str, &ringkv_storage::Recovery); 3] {
        let [data, hints, meta] = STORE_NAMES;
        [
            (data, self.stores.data.recovery()),
            (hints, self.stores.hints.recovery()),
            (meta, self.stores.meta.recovery()),
        ]
    }

    /// The writer's rounds so far.
    pub fn write_rounds(&self) -> WriteRounds {
        let counters = &self.stores.rounds;
        WriteRounds {
            rounds: counters.rounds.load(Ordering::Relaxed),
            operations: counters.operations.load(Ordering::Relaxed),
            round_us_total: counters.round_us_total.load(Ordering::Relaxed),
            round_us_max: counters.round_us_max.load(Ordering::Relaxed),
            batches_disk_full: counters.batches_disk_full.load(Ordering::Relaxed),
            batches_failed: counters.batches_failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads after the queued work and syncs every store.
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.reads = None;
        self.sync_jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Synced, not checkpointed: the next start replays (and so checks) the log
        // written since the last checkpoint, which is how damage to a stopped node's
        // newest records is found at its start (the corrupted-segment scenario).
        for store in [&self.stores.data, &self.stores.hints, &self.stores.meta] {
            store.sync()?;
        }
        Ok(())
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    match std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
    {
        Ok(handle) => handle,
        // Without its storage threads a node cannot serve at all; failing to start
        // one happens only when the OS is out of threads or memory at start.
        Err(error) => {
            log::error!("cannot start thread {name}: {error}");
            std::process::exit(1)
        }
    }
}

fn failure(error: &StorageError) -> StorageFailure {
    match error {
        StorageError::DiskFull | StorageError::IndexFull { .. } => StorageFailure::DiskFull,
        StorageError::Corrupt { .. } => StorageFailure::Corrupt,
        _ => StorageFailure::Io,
    }
}

/// The completion of a job that could not run.
fn failed(job: Job) -> Done {
    let io = StorageFailure::Io;
    match job {
        Job::Core(job) => Done::Storage(Completion::failed(&job, io)),
        Job::Compact { .. } | Job::Sync | Job::Checkpoint(_) => {
            Done::Compacted(Err("not run".to_owned()))
        }
    }
}

fn space_index(space: Space) -> usize {
    match space {
        Space::Data => 0,
        Space::Hints => 1,
        Space::Meta => 2,
    }
}

fn read_loop(stores: &Stores, jobs: &Receiver<Job>, done: &Sender<Done>, wake: &dyn Fn()) {
    while let Ok(job) = jobs.recv() {
        if let Job::Sync = job {
            // The interval sync of buffered writes: nobody waits for it.
            sync_all(stores);
            continue;
        }
        if let Job::Checkpoint(space) = job {
            stores.get(space).checkpoint_if_due();
            stores.checkpoint_queued[space_index(space)].store(false, Ordering::Release);
            continue;
        }
        let finished = run_read(stores, job);
        if done.send(finished).is_err() {
            return;
        }
        // Wake once for everything this thread finishes back to back.
        if jobs.is_empty() {
            wake();
        }
    }
}

fn sync_all(stores: &Stores) {
    for space in [Space::Data, Space::Hints, Space::Meta] {
        if let Err(error) = stores.get(space).sync() {
            log::warn!("storage: syncing {space:?} failed: {error}");
        }
    }
}

fn run_read(stores: &Stores, job: Job) -> Done {
    match job {
        Job::Core(StorageOp::Read { token, space, key }) => Done::Storage(Completion::Read {
            token,
            result: stores.get(space).get(&key).map_err(|error| {
                log::warn!("storage: reading from {space:?} failed: {error}");
                failure(&error)
            }),
        }),
        Job::Core(StorageOp::List {
            token,
            space,
            after,
            limit,
        }) => Done::Storage(Completion::Listed {
            token,
            result: list(stores, space, &after, limit).map_err(|e| failure(&e)),
        }),
        Job::Core(StorageOp::Scan {
            token,
            first,
            last,
            after,
            limit,
            durable,
        }) => Done::Storage(Completion::Scanned {
            token,
            // A durable scan syncs first (nothing to do when nothing is buffered), so
            // its page holds only records a power cut keeps.
            result: (if durable { stores.data.sync() } else { Ok(()) })
                .and_then(|()| stores.data.scan(first, last, after, limit as usize))
                .map(|chunk| ScanPage {
                    items: chunk.items,
                    next: chunk.next,
                })
                .map_err(|error| {
                    log::warn!("storage: scan failed: {error}");
                    failure(&error)
                }),
        }),
        Job::Compact { budget_bytes } => Done::Compacted(
            stores
                .data
                .compact_step(budget_bytes)
                .map_err(|error| error.to_string()),
        ),
        other => failed(other),
    }
}

/// Up to `limit` keys after `after` in byte order, and whether none follow.
fn list(stores: &Stores, space: Space, after: &[u8], limit: u32) -> Result<Listing, StorageError> {
    let mut listing = stores
        .listing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = matches!(&*listing, Some((listed, _)) if *listed == space);
    if after.is_empty() || !current {
        *listing = Some((space, all_keys(stores.get(space))?));
    }
    let Some((_, keys)) = listing.as_ref() else {
        return Ok(Listing {
            keys: Vec::new(),
            complete: true,
        });
    };
    let start = keys.partition_point(|listed| listed.key.as_slice() <= after);
    let limit = (limit as usize).max(1);
    let page: Vec<ListedKey> = keys[start..].iter().take(limit).cloned().collect();
    let complete = start + page.len() >= keys.len();
    if complete {
        *listing = None;
    }
    Ok(Listing {
        keys: page,
        complete,
    })
}

/// Every live key of `store` with its stored size, sorted by key.
fn all_keys(store: &Store) -> Result<Vec<ListedKey>, StorageError> {
    let mut keys: Vec<ListedKey> = Vec::new();
    let mut cursor = None;
    loop {
        let chunk = store.scan(0, u64::MAX, cursor, 4096)?;
        keys.extend(
            chunk
                .items
                .into_iter()
                .map(|(key, record)| ListedKey::new(key, record.len())),
        );
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Waits until `count` completions came, or 10 s passed, running the write rounds
    /// meanwhile as the event loop does.
    fn wait(executor: &Executor, count: usize) -> Vec<Done> {
        completions(executor, count, true)
    }

    /// The tokens of the writes among `done` that succeeded, in order.
    fn written_ok(done: &[Done]) -> Vec<u64> {
        done.iter()
            .filter_map(|done| match done {
                Done::Storage(Completion::Written {
                    token,
                    result: Ok(()),
                }) => Some(*token),
                _ => None,
            })
            .collect()
    }

    /// Reads `key` of `space` back (token 0), waiting for the answer.
    fn read_back(executor: &Executor, space: Space, key: &[u8]) -> Vec<Done> {
        executor.submit(StorageOp::Read {
            token: 0,
            space,
            key,
        });
        wait(executor, 1)
    }

    /// Waits until `count` completions came, or 10 s passed; runs the write rounds
    /// meanwhile when `rounds`.
    fn completions(executor: &Executor, count: usize, rounds: bool) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while all.len() < count && Instant::now() < deadline {
            if rounds {
                executor.run_rounds();
            }
            match executor.try_done() {
                Some(done) => all.push(done),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        all
    }

    fn executor(dir: &Path) -> Executor {
        let sizes = StoreSizes {
            durability: Durability::Group,
            data_segment_size_bytes: 16 << 20,
            checkpoint_interval_bytes: ringkv_storage::Config::default().checkpoint_interval_bytes,
            record_size_bytes_max: 2 << 20,
        };
        Executor::start(dir, sizes, 64, || {}).unwrap()
    }

    #[test]
    fn writes_complete_durable_and_read_back_per_space() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        for (token, space) in [(1, Space::Data), (2, Space::Hints), (3, Space::Meta)] {
            executor.submit(StorageOp::Write {
                token,
                space,
                key: b"k",
                record: format!("record {token}").as_bytes(),
                durable: true,
            });
        }
        let written = wait(&executor, 3);
        assert_eq!(written.len(), 3);
        assert!(
            written
                .iter()
                .all(|d| matches!(d, Done::Storage(Completion::Written { result: Ok(()), .. })))
        );
        executor.submit(StorageOp::Read {
            token: 4,
            space: Space::Hints,
            key: b"k",
        });
        let read = wait(&executor, 1);
        assert!(
            matches!(&read[0], Done::Storage(Completion::Read { token: 4, result: Ok(Some(v)) }) if v == b"record 2"),
            "the spaces are kept apart: {read:?}"
        );
        executor.shutdown().unwrap();
        let executor = self::executor(dir.path());
        executor.submit(StorageOp::Read {
            token: 5,
            space: Space::Meta,
            key: b"k",
        });
        let read = wait(&executor, 1);
        assert!(
            matches!(&read[0], Done::Storage(Completion::Read { result: Ok(Some(v)), .. }) if v == b"record 3"),
            "kept across a restart: {read:?}"
        );
    }

    #[test]
    fn buffered_writes_wait_for_the_loop_to_take_completions_and_go_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        for token in 1..=3u64 {
            executor.submit(StorageOp::Write {
                token,
                space: Space::Data,
                key: format!("k{token}").as_bytes(),
                record: b"buffered",
                durable: false,
            });
        }
        assert!(executor.has_done(), "the loop must not sleep on them");
        // Not written yet: a read served meanwhile (inline, from memory) misses them,
        // as it may for any write not yet acknowledged.
        executor.submit(StorageOp::Read {
            token: 4,
            space: Space::Data,
            key: b"k2",
        });
        let first = executor.try_done();
        assert!(
            matches!(
                first,
                Some(Done::Storage(Completion::Read {
                    token: 4,
                    result: Ok(None)
                }))
            ),
            "{first:?}"
        );
        // Taking completions with none left writes the batch: all three complete.
        let written = wait(&executor, 3);
        assert_eq!(written_ok(&written), [1, 2, 3]);
        assert!(!executor.has_done());
        let read = read_back(&executor, Space::Data, b"k2");
        assert!(
            matches!(&read[0], Done::Storage(Completion::Read { result: Ok(Some(v)), .. }) if v == b"buffered"),
            "{read:?}"
        );
    }

    #[test]
    fn a_round_of_several_writes_is_synced_away_and_the_next_round_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        let submit = |token: u64| {
            executor.submit(StorageOp::Write {
                token,
                space: Space::Data,
                key: format!("k{token}").as_bytes(),
                record: b"durable",
                durable: true,
            });
        };
        for token in 1..=3 {
            submit(token);
        }
        executor.run_rounds();
        // Written, out on the syncer thread: the next write waits for the next round.
        submit(4);
        executor.run_rounds();
        assert_eq!(
            executor.waiting.borrow()[0].len(),
            1,
            "round 2 waits for round 1"
        );
        let first = completions(&executor, 3, false);
        assert_eq!(written_ok(&first), [1, 2, 3], "{first:?}");
        let second = wait(&executor, 1);
        assert_eq!(written_ok(&second), [4], "{second:?}");
        let rounds = executor.write_rounds();
        assert_eq!((rounds.rounds, rounds.operations), (2, 4));
        for token in 1..=4u64 {
            let read = read_back(&executor, Space::Data, format!("k{token}").as_bytes());
            assert!(
                matches!(&read[0], Done::Storage(Completion::Read { result: Ok(Some(v)), .. }) if v == b"durable"),
                "k{token}: {read:?}"
            );
        }
    }

    #[test]
    fn writes_larger_together_than_a_segment_go_in_several_batches() {
        // The meta store's segments hold 3 MiB here; four 1.5 MiB records were once
        // one batch, refused whole ("batch larger than a segment").
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        let record = vec![7u8; 3 << 19];
        for durable in [false, true] {
            let tokens = if durable { 5..=8u64 } else { 1..=4u64 };
            for token in tokens.clone() {
                executor.submit(StorageOp::Write {
                    token,
                    space: Space::Meta,
                    key: format!("k{token}").as_bytes(),
                    record: &record,
                    durable,
                });
            }
            let written = wait(&executor, 4);
            let expected: Vec<u64> = tokens.collect();
            assert_eq!(
                written_ok(&written),
                expected,
                "durable {durable}: {written:?}"
            );
        }
        for token in 1..=8u64 {
            let read = read_back(&executor, Space::Meta, format!("k{token}").as_bytes());
            assert!(
                matches!(&read[0], Done::Storage(Completion::Read { result: Ok(Some(v)), .. }) if *v == record),
                "k{token}"
            );
        }
    }

    #[test]
    fn a_cached_read_completes_at_once_and_an_evicted_one_on_a_reader_thread() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        executor.submit(StorageOp::Write {
            token: 1,
            space: Space::Data,
            key: b"k",
            record: b"value",
            durable: true,
        });
        assert_eq!(wait(&executor, 1).len(), 1);
        // Reopened: the record is in the file only (a store keeps in memory only log
        // segments it began), so reads go through the page cache.
        executor.shutdown().unwrap();
        let executor = self::executor(dir.path());
        executor.submit(StorageOp::Read {
            token: 2,
            space: Space::Data,
            key: b"k",
        });
        // No waiting: the completion is queued before `submit` returns.
        assert!(executor.has_done());
        let done = executor.try_done();
        assert!(
            matches!(&done, Some(Done::Storage(Completion::Read { token: 2, result: Ok(Some(v)) })) if v == b"value"),
            "{done:?}"
        );
        assert_eq!(executor.reads(), (1, 0));
        // Drop the (synced, so clean) segment pages from the page cache; the kernel
        // may keep a briefly busy page, so evict until a cached read misses.
        let mut value = Vec::new();
        for _ in 0..100 {
            for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "seg") {
                    let file = std::fs::File::open(&path).unwrap();
                    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
                }
            }
            let data = &executor.stores.data;
            if data.get_cached_into(b"k", &mut value).unwrap() == CachedRead::NotCached {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        executor.submit(StorageOp::Read {
            token: 3,
            space: Space::Data,
            key: b"k",
        });
        let read = wait(&executor, 1);
        assert!(
            matches!(&read[0], Done::Storage(Completion::Read { token: 3, result: Ok(Some(v)) }) if v == b"value"),
            "{read:?}"
        );
        assert_eq!(executor.reads(), (1, 1), "served by a reader thread");
    }

    /// Writes and syncs `round`'s bytes as `run_rounds` does, then finishes it.
    fn finish_written(executor: &Executor, round: WriteRound) {
        use std::os::unix::fs::FileExt;
        round
            .file()
            .write_all_at(round.bytes(), round.file_offset())
            .unwrap();
        round.file().sync_data().unwrap();
        executor.finish_round(round, Ok(()));
    }

    #[test]
    fn buffered_writes_are_acknowledged_without_a_sync_and_their_records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        let syncs_before = executor.data_stats().syncs;
        for token in 0..20u64 {
            executor.submit(StorageOp::Write {
                token,
                space: Space::Data,
                key: &token.to_le_bytes(),
                record: b"buffered",
                durable: false,
            });
        }
        let done = wait(&executor, 20);
        assert!(
            done.iter()
                .all(|d| matches!(d, Done::Storage(Completion::Written { result: Ok(()), .. }))),
            "{done:?}"
        );
        assert_eq!(
            executor.data_stats().syncs,
            syncs_before,
            "buffered writes wait for no fsync"
        );
        executor.submit(StorageOp::Read {
            token: 99,
            space: Space::Data,
            key: &3u64.to_le_bytes(),
        });
        let read = wait(&executor, 1);
        assert!(
            matches!(
                &read[..],
                [Done::Storage(Completion::Read { token: 99, result: Ok(Some(record)) })]
                    if record == b"buffered"
            ),
            "{read:?}"
        );
        executor.sync();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while executor.data_stats().syncs == syncs_before {
            assert!(
                std::time::Instant::now() < deadline,
                "the interval sync ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn rounds_commit_what_was_written_and_failures_complete_with_errors() {
        // The test takes and finishes each round itself (failures injected), so it
        // collects completions without running rounds.
        let wait = |executor: &Executor, count: usize| completions(executor, count, false);
        let dir = tempfile::tempdir().unwrap();
        let sizes = StoreSizes {
            durability: Durability::Group,
            data_segment_size_bytes: 16 << 20,
            checkpoint_interval_bytes: ringkv_storage::Config::default().checkpoint_interval_bytes,
            record_size_bytes_max: 2 << 20,
        };
        let executor = Executor::start(dir.path(), sizes, 64, || {}).unwrap();
        let write = |token: u64, key: &[u8], record: &[u8]| {
            executor.submit(StorageOp::Write {
                token,
                space: Space::Data,
                key,
                record,
                durable: true,
            })
        };
        write(1, b"a", b"one");
        write(2, b"b", b"two");
        let round = executor.next_round().expect("a round");
        assert!(round.sync, "group commit syncs each round");
        assert!(
            executor.next_round().is_none(),
            "one round per store at a time"
        );
        write(3, b"c", b"three"); // waits for the next round
        finish_written(&executor, round);
        let done = wait(&executor, 2);
        assert!(
            done.iter()
                .all(|d| matches!(d, Done::Storage(Completion::Written { result: Ok(()), .. }))),
            "{done:?}"
        );
        assert_eq!(
            executor.stores.data.get(b"b").unwrap().as_deref(),
            Some(&b"two"[..])
        );

        // A failed write gives the batch back; the store takes writes again.
        let round = executor.next_round().expect("the waiting write");
        let error = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        executor.finish_round(round, Err(RoundFailure::Write(error)));
        let done = wait(&executor, 1);
        assert!(
            matches!(
                done[0],
                Done::Storage(Completion::Written {
                    token: 3,
                    result: Err(StorageFailure::DiskFull)
                })
            ),
            "{done:?}"
        );
        assert_eq!(
            executor.write_rounds().batches_disk_full,
            1,
            "INFO counts it"
        );
        assert_eq!(executor.stores.data.get(b"c").unwrap(), None);
        write(4, b"d", b"four");
        let round = executor.next_round().expect("writes are taken again");

        // A failed sync: the batch is not indexed and the store refuses writes.
        let error = std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
        executor.finish_round(round, Err(RoundFailure::Sync(error)));
        assert!(matches!(
            wait(&executor, 1)[0],
            Done::Storage(Completion::Written {
                token: 4,
                result: Err(StorageFailure::Io)
            })
        ));
        assert_eq!(executor.stores.data.get(b"d").unwrap(), None);
        write(5, b"e", b"five");
        assert!(executor.next_round().is_none(), "refused at once");
        assert!(matches!(
            wait(&executor, 1)[0],
            Done::Storage(Completion::Written {
                token: 5,
                result: Err(_)
            })
        ));
    }

    #[test]
    fn the_index_is_checkpointed_once_rounds_wrote_enough_log() {
        // Rounds commit through the split API, which once never checkpointed: found by
        // the power-loss suite on ringkv-node-uring (no checkpoint file ever written),
        // every restart replayed the whole log.
        let dir = tempfile::tempdir().unwrap();
        let sizes = StoreSizes {
            durability: Durability::Group,
            data_segment_size_bytes: 16 << 20,
            checkpoint_interval_bytes: 64 << 10,
            record_size_bytes_max: 2 << 20,
        };
        let executor = Executor::start(dir.path(), sizes, 64, || {}).unwrap();
        let value = vec![7u8; 16 << 10];
        let before = executor.stores.data.stats().checkpoints;
        for token in 0..8u64 {
            let key = token.to_le_bytes();
            executor.submit(StorageOp::Write {
                token,
                space: Space::Data,
                key: &key,
                record: &value,
                durable: true,
            });
            wait(&executor, 1);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while executor.stores.data.stats().checkpoints == before {
            assert!(
                std::time::Instant::now() < deadline,
                "128 KiB written with a 64 KiB interval and no checkpoint"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn listing_pages_through_keys_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let executor = executor(dir.path());
        let keys: Vec<Vec<u8>> = (0..10u8).rev().map(|i| vec![b'h', i]).collect();
        for (token, key) in keys.iter().enumerate() {
            executor.submit(StorageOp::Write {
                token: token as u64,
                space: Space::Hints,
                key,
                record: b"r",
                durable: true,
            });
        }
        assert_eq!(wait(&executor, 10).len(), 10);
        executor.submit(StorageOp::List {
            token: 99,
            space: Space::Hints,
            after: &[b'h', 3],
            limit: 4,
        });
        let listed = wait(&executor, 1);
        let Done::Storage(Completion::Listed {
            result:
                Ok(Listing {
                    keys: page,
                    complete,
                }),
            ..
        }) = &listed[0]
        else {
            panic!("{listed:?}");
        };
        let keys: Vec<&[u8]> = page.iter().map(|listed| listed.key.as_slice()).collect();
        assert_eq!(keys, [[b'h', 4], [b'h', 5], [b'h', 6], [b'h', 7]]);
        assert!(
            page.iter().all(|listed| listed.stored_bytes == 3),
            "key and record"
        );
        assert!(!complete);
        executor.submit(StorageOp::List {
            token: 100,
            space: Space::Hints,
            after: &[b'h', 7],
            limit: 4,
        });
        let listed = wait(&executor, 1);
        assert!(
            matches!(&listed[0], Done::Storage(Completion::Listed { result: Ok(Listing { keys: page, complete: true }), .. }) if page.iter().map(|listed| listed.key.clone()).collect::<Vec<_>>() == vec![vec![b'h', 8], vec![b'h', 9]]),
            "the last page, from the kept listing: {listed:?}"
        );
    }
}
