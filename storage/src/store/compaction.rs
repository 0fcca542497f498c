//! Compaction, in steps of a byte budget: live records copied to a temporary segment,
//! renamed into place, the index moved, the source deleted after a checkpoint.

use super::*;

/// Compaction output written between two syncs of it.
const COMPACTION_SYNC_BYTES: usize = 256 << 10;
/// Index entries read per step of the search for a source's entries.
const COMPACTION_SCAN_STEP_ENTRIES: usize = 16_384;
/// Index entries moved per step when a compaction finishes.
const COMPACTION_MOVE_STEP_ENTRIES: usize = 4_096;

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
        let (source, floor) = {
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
            let floor = shared
                .segments
                .values()
                .filter(|s| s.id != source.id)
                .map(|s| s.min_sequence)
                .min()
                .unwrap_or(u64::MAX);
            (source, floor)
        };
        let entries = self.entries_in(source.id);
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
        // Written and synced a step at a time, so the log's own syncs never queue
        // behind more than one step of compaction output on the device.
        for (index, step) in pending.chunks(COMPACTION_SYNC_BYTES).enumerate() {
            output.write_at(step, pending_start + (index * COMPACTION_SYNC_BYTES) as u32)?;
            output.sync()?;
        }
        Ok(copied)
    }

    /// Every index entry pointing into `segment_id`, read a step of entries at a time
    /// (in hash order, resuming after the last hash, so a resize between steps loses
    /// nothing) under the index's read lock, which a commit's write lock waits for.
    /// Entries shifted by inserts or removals between steps are still found, as the
    /// cursor is a hash, not a slot.
    fn entries_in(&self, segment_id: u32) -> Vec<Entry> {
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
                if entry.segment_id == segment_id {
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
        let unchanged = |table: &Table, old: &Entry| {
            table
                .find(old.hash)
                .find(|(_, e)| e == old)
                .map(|(slot, _)| slot)
        };
        for step in job.moved.chunks(COMPACTION_MOVE_STEP_ENTRIES) {
            let Some(output) = &output else { break };
            let commit = self.commit_lock.lock();
            let mut shared = write(&self.shared);
            for (old, new_offset) in step {
                let Some(slot) = unchanged(&shared.table, old) else {
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
            drop(shared);
            // A commit waiting for the lock gets it before the next step does.
            parking_lot::MutexGuard::unlock_fair(commit);
        }
        for step in job.dropped.chunks(COMPACTION_MOVE_STEP_ENTRIES) {
            let commit = self.commit_lock.lock();
            let mut shared = write(&self.shared);
            for old in step {
                if let Some(slot) = unchanged(&shared.table, old) {
                    shared.table.remove(slot);
                    job.source.add_live_bytes(-i64::from(old.size_bytes));
                }
            }
            drop(shared);
            parking_lot::MutexGuard::unlock_fair(commit);
        }
        // Defence in depth: a source that something outside this job still points
        // into is kept. The search goes by hash, so entries shifted or a table
        // resized meanwhile are still seen, and nothing new can point into a sealed
        // segment afterwards.
        let stray = self.entries_in(job.source.id);
        if !stray.is_empty() {
            log::error!(
                "{}: segment {} gained {} entries during its compaction; keeping it",
                self.dir.display(),
                job.source.id,
                stray.len()
            );
            return Err(StorageError::Misuse("compaction source still referenced"));
        }
        {
            let _commit = self.commit_lock.lock();
            write(&self.shared).segments.remove(&job.source.id);
        }
        let reclaimed_bytes = u64::from(job.source.end_offset())
            .saturating_sub(output.as_ref().map_or(0, |o| u64::from(o.end_offset())));
        let segment_id = job.source.id;
        // Handed over, not shared: the deletion goes in steps only when it holds the
        // last reference (`Store::delete_obsolete`).
        lock(&self.pending_deletion).push(job.source);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.failpoint(Failpoint::CompactionAfterIndexMove)?;
        self.checkpoint()?;
        Ok(CompactionProgress::Finished {
            segment_id,
            reclaimed_bytes,
        })
    }
}
