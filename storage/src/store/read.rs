//! Reads: point reads (waiting or page-cache only) and hash-range scans.

use super::*;

impl Store {
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
}
