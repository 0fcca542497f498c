//! The write path: whole batches ([`Store::write`]) and the split API (prepare, the
//! caller's write and sync, commit), reservations, rotation, zeroing ahead, group
//! commit and the index update.

use super::*;

impl Store {
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

    /// Writes a batch: prepare, write, sync per the durability mode, commit. It never
    /// checkpoints the index: the store's owner calls [`Store::checkpoint_if_due`] off
    /// its latency path (a checkpoint inside a put made that put wait for it).
    pub fn write(&self, batch: &WriteBatch) -> Result<()> {
        self.write_synced(batch, true)
    }

    /// Writes a batch and commits it without syncing, whatever the durability mode: a
    /// *buffered* write (the paper's section 6.1). It is readable at once and kept by
    /// a process kill; a power cut can lose it until the next sync, which the caller
    /// asks for ([`Store::sync`], on its interval) or which any later synced write
    /// does (the log is durable as a prefix: a sync covers every segment written
    /// since the last one), as does an index checkpoint. Like [`Store::write`], it
    /// never checkpoints the index itself.
    pub fn write_buffered(&self, batch: &WriteBatch) -> Result<()> {
        self.write_synced(batch, false)
    }

    fn write_synced(&self, batch: &WriteBatch, durable: bool) -> Result<()> {
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
            _ if !durable => Ok(()),
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
        // A batch prepared before a failed sync is never indexed, even if its own sync
        // then reported success: after a failed fsync the kernel may have dropped
        // pages it shares with the failed batch.
        if self.write_poisoned.load(Ordering::Acquire) {
            self.forget(&prepared);
            return Err(StorageError::Io {
                kind: std::io::ErrorKind::Other,
                doing: "committing after a failed sync",
                detail: "an earlier fsync failed; reopen the store to recover".to_owned(),
            });
        }
        // Into the segment's copy in memory (if it has one) before the index points
        // at the records: a read that finds them in the index finds them there too.
        prepared.segment.remember(prepared.offset, &prepared.bytes);
        let result = {
            let _commit = self.commit_lock.lock();
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
            size += record::size_bytes(operation.key.len(), operation.value.len());
        }
        if size > self.batch_size_bytes_max() {
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
        // A sealed segment is whole on disk: with buffered writes its tail may not be
        // synced yet, and recovery reports a bad record inside a sealed segment as
        // damage (a torn tail is only expected in the active one). One sync per
        // segment. (In the split API a caller's round still being written into the
        // old segment is not covered: that round syncs itself if it is durable.)
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        writer.active.sync().inspect_err(|_| self.poison())?;
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
        writer.keep_in_memory(&segment, &self.config);
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
}
