//! Index checkpoints: written whole to `index.tmp`, synced, renamed over `index`,
//! the directory synced.

use super::*;

impl Store {
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
            // The checkpoint covers every committed record, and buffered writes
            // (`Store::write_buffered`, a caller's unsynced round) are committed before
            // they are synced: sync them first, or a power cut could leave the index
            // pointing at records the log lost. Under the commit lock nothing is
            // committed meanwhile; a sync already under way is waited for.
            self.sync()?;
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
}
