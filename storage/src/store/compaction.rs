//! Compaction, in steps of a byte budget: live records copied to a temporary segment,
//! renamed into place, the index moved, the sources deleted after a checkpoint.
//!
//! # Which segments, and when
//!
//! A sealed segment is *worth compacting* once [`Config::compaction_dead_share_min`]
//! of its bytes is dead. A job starts only once the segments worth compacting hold,
//! together, [`Config::compaction_dead_segment_share_min`] of a segment's size in dead
//! bytes, and it then rewrites all of them (most dead first), plus any *small* segment
//! (live bytes under a quarter of a segment), into one output of at most a segment's
//! size. This is Bitcask's merge policy (a fragmentation trigger, a dead-bytes trigger,
//! small files merged along).
//!
//! Why not one segment as soon as it is half dead: every job pays a fixed cost, one
//! scan of the whole index for the sources' entries, one for strays at the end, and a
//! checkpoint of the whole index, tens of milliseconds on a node holding 100,000 keys.
//! Under overwrites of a hot key set, a job's output is itself half dead seconds
//! later, and one source per job rewrote ever smaller outputs about once a second,
//! taking that CPU from the event loop (BENCHMARKS.md, "One node's tail: compaction's
//! share"). Now the small outputs wait to ride along with the next sealed log segment
//! and the fixed cost is paid about once per segment written. What waits is bounded:
//! under a quarter of a segment of dead bytes in segments worth compacting, and
//! segments less than half dead.
//!
//! # Tombstones across several sources
//!
//! A tombstone is dropped only when every segment other than its own source starts
//! above its sequence, the other sources included: sources are deleted one at a time,
//! and a crash between two deletions (followed by an index rebuild) must not find an
//! older record of the key in a source still there with the tombstone gone.

use super::*;

/// Compaction output written between two syncs of it.
const COMPACTION_SYNC_BYTES: usize = 256 << 10;
/// Index entries read per step of the search for the sources' entries.
const COMPACTION_SCAN_STEP_ENTRIES: usize = 16_384;
/// Index entries moved per step when a compaction finishes.
const COMPACTION_MOVE_STEP_ENTRIES: usize = 4_096;
/// Most segments one job rewrites.
pub(super) const SOURCES_MAX: usize = 16;
/// A segment whose live bytes are under this share of a segment's size rides along
/// with any job.
const SMALL_SEGMENT_SHARE: f64 = 0.25;

impl Store {
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
        let (sources, floors) = {
            let shared = read(&self.shared);
            let sources = self.choose_sources(&shared, active_id, &pending, &busy);
            if sources.is_empty() {
                return Ok(None);
            }
            // Each source's tombstone floor: the lowest sequence any other segment
            // (the other sources included) may hold.
            let floors: Vec<(u32, u64)> = sources
                .iter()
                .map(|source| {
                    let floor = shared
                        .segments
                        .values()
                        .filter(|s| s.id != source.id)
                        .map(|s| s.min_sequence)
                        .min()
                        .unwrap_or(u64::MAX);
                    (source.id, floor)
                })
                .collect();
            (sources, floors)
        };
        let source_ids: SmallVec<[u32; SOURCES_MAX]> = sources.iter().map(|s| s.id).collect();
        let entries = self.entries_in(&source_ids);
        let floor_of = |segment_id: u32| {
            floors
                .iter()
                .find(|(id, _)| *id == segment_id)
                .map_or(0, |(_, floor)| *floor)
        };
        let (dropped, kept): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| e.tombstone && e.sequence < floor_of(e.segment_id));
        let total: u64 = kept.iter().map(|e| u64::from(e.size_bytes)).sum();
        let capacity = u64::from(u32::MAX) - u64::from(segment::HEADER_SIZE_BYTES);
        if total > capacity {
            // Live bytes were counted as at most a segment's size when the sources
            // were chosen; more now means the counts are wrong, not that it may grow.
            return Err(StorageError::Misuse("compaction output over u32 offsets"));
        }
        let output = if kept.is_empty() {
            None
        } else {
            let id = {
                let mut writer = lock(&self.writer);
                writer.next_segment_id += 1;
                writer.next_segment_id - 1
            };
            let min_sequence = sources.iter().map(|s| s.min_sequence).min().unwrap_or(0);
            Some(Segment::create(
                &self.dir,
                id,
                SegmentKind::Compacted,
                min_sequence,
                segment::HEADER_SIZE_BYTES + total as u32,
                true,
            )?)
        };
        Ok(Some(CompactionJob {
            sources,
            entries: kept,
            cursor: 0,
            output,
            output_offset: segment::HEADER_SIZE_BYTES,
            moved: Vec::new(),
            dropped,
        }))
    }

    /// The sources of the next job (see the module docs), or none when no job is due.
    fn choose_sources(
        &self,
        shared: &Shared,
        active_id: u32,
        pending: &[u32],
        busy: &[u32],
    ) -> Vec<Arc<Segment>> {
        let segment_size_bytes = u64::from(self.config.segment_size_bytes);
        let mut eligible: Vec<&Arc<Segment>> = shared
            .segments
            .values()
            // A rotation after `active_id` was read creates a log segment with a
            // larger id: that one is the active segment now, so skip them all.
            .filter(|s| !(s.kind == SegmentKind::Log && s.id >= active_id))
            .filter(|s| !pending.contains(&s.id) && !busy.contains(&s.id))
            .collect();
        let worth = |s: &Segment| {
            s.dead_share() >= self.config.compaction_dead_share_min && s.dead_share() > 0.0
        };
        let dead_worth: u64 = eligible
            .iter()
            .filter(|s| worth(s))
            .map(|s| s.dead_bytes())
            .sum();
        let trigger_bytes =
            (self.config.compaction_dead_segment_share_min * segment_size_bytes as f64) as u64;
        if dead_worth == 0 || dead_worth < trigger_bytes {
            return Vec::new();
        }
        // Most dead first, then the small ones smallest first.
        let small_bytes = (SMALL_SEGMENT_SHARE * segment_size_bytes as f64) as u64;
        eligible.sort_by(|a, b| {
            let rank = |s: &Segment| u8::from(!worth(s));
            rank(a)
                .cmp(&rank(b))
                .then(b.dead_share().total_cmp(&a.dead_share()))
                .then(a.live_bytes().cmp(&b.live_bytes()))
        });
        let mut sources = Vec::new();
        let mut live_total = 0u64;
        for segment in eligible {
            if sources.len() == SOURCES_MAX {
                break;
            }
            if !worth(segment) && segment.live_bytes() >= small_bytes {
                continue;
            }
            let live = segment.live_bytes().min(segment.written_bytes());
            if !sources.is_empty() && live_total + live > segment_size_bytes {
                continue;
            }
            live_total += live;
            sources.push(Arc::clone(segment));
        }
        sources
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
            let Some(source) = job.sources.iter().find(|s| s.id == entry.segment_id) else {
                return Err(StorageError::Misuse("compaction entry outside its sources"));
            };
            match source.read_record(
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
        // Written and synced a step at a time, so the log's own syncs never queue
        // behind more than one step of compaction output on the device.
        for (index, step) in pending.chunks(COMPACTION_SYNC_BYTES).enumerate() {
            output.write_at(step, pending_start + (index * COMPACTION_SYNC_BYTES) as u32)?;
            output.sync()?;
        }
        Ok(copied)
    }

    /// Every index entry pointing into one of `segment_ids`, read a step of entries at a time
    /// (in hash order, resuming after the last hash, so a resize between steps loses
    /// nothing) under the index's read lock, which a commit's write lock waits for.
    /// Entries shifted by inserts or removals between steps are still found, as the
    /// cursor is a hash, not a slot.
    fn entries_in(&self, segment_ids: &[u32]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let shared = read(&self.shared);
            let mut scanned = 0usize;
            let mut last_hash = None;
            for entry in shared.table.range(0, after, u64::MAX) {
                // A step ends between two hashes, never inside a run of equal ones.
                if scanned >= COMPACTION_SCAN_STEP_ENTRIES && last_hash != Some(entry.hash) {
                    break;
                }
                scanned += 1;
                last_hash = Some(entry.hash);
                if segment_ids.contains(&entry.segment_id) {
                    entries.push(entry);
                }
            }
            drop(shared);
            match last_hash {
                Some(hash) if scanned >= COMPACTION_SCAN_STEP_ENTRIES && hash != u64::MAX => {
                    after = Some(hash);
                }
                _ => return entries,
            }
        }
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
        if let Some(output) = &output {
            let _commit = self.commit_lock.lock();
            write(&self.shared)
                .segments
                .insert(output.id, Arc::clone(output));
        }
        // The index moves a step of entries at a time, each step under the commit
        // lock (a commit's find and place are never split by a move) and the index's
        // write lock, so no commit waits for more than one step.
        let source_of = |old: &Entry| job.sources.iter().find(|s| s.id == old.segment_id);
        for step in job.moved.chunks(COMPACTION_MOVE_STEP_ENTRIES) {
            let Some(output) = &output else { break };
            let commit = self.commit_lock.lock();
            let mut shared = write(&self.shared);
            for (old, new_offset) in step {
                let Some(slot) = shared.table.slot_of(old) else {
                    continue;
                };
                let moved = Entry {
                    segment_id: output.id,
                    offset: *new_offset,
                    ..*old
                };
                shared.table.replace(slot, moved);
                if let Some(source) = source_of(old) {
                    source.add_live_bytes(-i64::from(old.size_bytes));
                }
                output.add_live_bytes(i64::from(old.size_bytes));
            }
            drop(shared);
            // A commit waiting for the lock gets it before the next step does.
            parking_lot::MutexGuard::unlock_fair(commit);
        }
        for step in job.dropped.chunks(COMPACTION_MOVE_STEP_ENTRIES) {
            let commit = self.commit_lock.lock();
            let mut shared = write(&self.shared);
            for old in step {
                if let Some(slot) = shared.table.slot_of(old) {
                    shared.table.remove(slot);
                    if let Some(source) = source_of(old) {
                        source.add_live_bytes(-i64::from(old.size_bytes));
                    }
                }
            }
            drop(shared);
            parking_lot::MutexGuard::unlock_fair(commit);
        }
        // Defence in depth: a source that something outside this job still points
        // into is kept. The search goes by hash, so entries shifted or a table
        // resized meanwhile are still seen, and nothing new can point into a sealed
        // segment afterwards.
        let source_ids: SmallVec<[u32; SOURCES_MAX]> = job.sources.iter().map(|s| s.id).collect();
        let stray = self.entries_in(&source_ids);
        if let Some(first) = stray.first() {
            log::error!(
                "{}: segment {} (of {} sources) gained {} entries during its compaction; \
                 keeping every source",
                self.dir.display(),
                first.segment_id,
                source_ids.len(),
                stray.len()
            );
            return Err(StorageError::Misuse("compaction source still referenced"));
        }
        {
            let _commit = self.commit_lock.lock();
            let mut shared = write(&self.shared);
            for source in &job.sources {
                shared.segments.remove(&source.id);
            }
        }
        let output_bytes = output.as_ref().map_or(0, |o| u64::from(o.end_offset()));
        let source_bytes: u64 = job.sources.iter().map(|s| u64::from(s.end_offset())).sum();
        let removed = job.sources.len() as u32;
        // Handed over, not shared: the deletion goes in steps only when it holds the
        // last reference (`Store::delete_obsolete`).
        lock(&self.pending_deletion).extend(job.sources);
        let reclaimed_bytes = source_bytes.saturating_sub(output_bytes);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.failpoint(Failpoint::CompactionAfterIndexMove)?;
        self.checkpoint()?;
        Ok(CompactionProgress::Finished {
            sources: removed,
            reclaimed_bytes,
        })
    }
}
