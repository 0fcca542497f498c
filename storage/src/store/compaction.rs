//! Compaction, in steps of a byte budget: live records copied to a temporary segment,
//! renamed into place, the index moved, the source deleted after a checkpoint.

use super::*;

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
}
