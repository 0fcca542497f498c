//! Index checkpoints: a snapshot of the table taken in one instant under the commit
//! lock, written page by page into the older of the two index files while writes go
//! on, with only the pages changed since that file was written (see `crate::index`).

use super::*;
use crate::index::{IndexFiles, PageBatch, SNAPSHOT_STEP_PAGES};

/// How many times a checkpoint starts over when a resize replaced the table under it.
const CHECKPOINT_ATTEMPTS_MAX: u32 = 3;

impl Store {
    /// True when enough log was written since the last checkpoint
    /// ([`Config::checkpoint_interval_bytes`]).
    pub fn checkpoint_due(&self) -> bool {
        lock(&self.writer).written_since_checkpoint >= self.config.checkpoint_interval_bytes
    }

    /// Checkpoints when [`Store::checkpoint_due`]. The store's owner calls it off its
    /// latency path, from a thread that may wait (the node's executor hands it to a
    /// reader thread): it takes as long as writing the changed pages takes, though it
    /// holds up no write for longer than copying [`SNAPSHOT_STEP_PAGES`] pages. Best
    /// effort: the writes that made it due are already durable and committed, so a
    /// failure (disk full) is logged and retried at the next trigger, never reported
    /// as a failed write.
    pub fn checkpoint_if_due(&self) {
        if !self.checkpoint_due() {
            return;
        }
        // Several threads may see it due at once; one checkpoint is enough.
        let files = match self.checkpoint_lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Err(error) = self.checkpoint_holding(files) {
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

    fn checkpoint_holding(&self, mut files: MutexGuard<'_, IndexFiles>) -> Result<()> {
        for _ in 0..CHECKPOINT_ATTEMPTS_MAX {
            // The snapshot and the log position it covers are taken together under the
            // commit lock, as are the obsolete segments: none retired after this
            // snapshot is deleted while the snapshot still points into it.
            let (plan, checkpoint, obsolete) = {
                let _commit = self.commit_lock.lock();
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
                let plan = write(&self.shared)
                    .table
                    .begin_snapshot(files.target_covers());
                (
                    plan,
                    checkpoint,
                    std::mem::take(&mut *lock(&self.pending_deletion)),
                )
            };
            let written = self.write_snapshot(&mut files, &plan, checkpoint);
            let (written, checksums) = match written {
                Ok(Some(checksums)) => (Ok(true), Some(checksums)),
                Ok(None) => (Ok(false), None),
                Err(error) => (Err(error), None),
            };
            write(&self.shared).table.end_snapshot(&plan, checksums);
            if !matches!(written, Ok(true)) {
                // Not written: these segments wait for the next checkpoint.
                lock(&self.pending_deletion).extend(obsolete);
                match written {
                    Err(error) => return Err(error),
                    // A resize replaced the table: start over with the new one.
                    _ => continue,
                }
            }
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            return self.delete_obsolete(obsolete);
        }
        Err(StorageError::Io {
            kind: std::io::ErrorKind::Interrupted,
            doing: "writing an index checkpoint",
            detail: format!(
                "the table was resized under {CHECKPOINT_ATTEMPTS_MAX} checkpoints in a row"
            ),
        })
    }

    /// Writes the snapshot `plan` into the next index file. `Ok(None)` when a resize
    /// replaced the table first; otherwise the written pages' checksums.
    fn write_snapshot(
        &self,
        files: &mut IndexFiles,
        plan: &crate::index::SnapshotPlan,
        checkpoint: Checkpoint,
    ) -> Result<Option<Vec<u32>>> {
        let mut file = files.begin_checkpoint(&self.dir, plan.clone())?;
        let mut batch = PageBatch::default();
        let mut cursor = 0;
        loop {
            let taken = write(&self.shared).table.take_snapshot_pages(
                plan,
                &mut cursor,
                SNAPSHOT_STEP_PAGES,
                &mut batch,
            );
            if !taken {
                return Ok(None);
            }
            if batch.is_empty() {
                break;
            }
            file.write_pages(&batch)?;
        }
        // The checkpoint covers every committed record, and buffered writes
        // (`Store::write_buffered`, a caller's unsynced round) are committed before
        // they are synced: sync them first, or a power cut could leave the index
        // pointing at records the log lost.
        self.sync()?;
        self.failpoint(Failpoint::BeforeCheckpointHeader)?;
        file.finish(&self.dir, checkpoint, files).map(Some)
    }

    fn delete_obsolete(&self, obsolete: Vec<Arc<Segment>>) -> Result<()> {
        if obsolete.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.failpoint(Failpoint::BeforeObsoleteDeletion) {
            lock(&self.pending_deletion).extend(obsolete);
            return Err(error);
        }
        for segment in obsolete {
            // Dropped here, on this background thread, not under the writer lock.
            drop(lock(&self.writer).forget_in_memory(segment.id));
            // Sole owner: in steps. A reader still holding it (it looked the record up
            // before compaction moved it) keeps reading the unlinked file's inode.
            let deleted = if Arc::strong_count(&segment) == 1 {
                segment.delete_in_steps(&self.dir)
            } else {
                std::fs::remove_file(segment.path())
                    .map_err(|e| StorageError::io("deleting an obsolete segment", e))
            };
            if let Err(error) = deleted {
                log::warn!(
                    "{}: could not delete obsolete segment {}: {error}",
                    self.dir.display(),
                    segment.id
                );
            }
        }
        segment::sync_directory(&self.dir)
    }
}
