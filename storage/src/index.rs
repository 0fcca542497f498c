//! The persistent hash index: key hash -> where the newest record of that key lives.
//!
//! # Layout
//! A table of 32-byte slots after a 4096-byte header, stored in the file `index`:
//!
//! | slot offset | size | field |
//! |---|---|---|
//! | 0 | 8 | xxh3_64 of the key |
//! | 8 | 8 | sequence of the record (0 marks an empty slot) |
//! | 16 | 4 | segment id |
//! | 20 | 4 | offset of the record in the segment |
//! | 24 | 4 | size of the record in bytes |
//! | 28 | 4 | flags: bit 0 tombstone |
//!
//! # Ordering
//! A key's home slot is the top bits of its hash, and linear probing keeps the table
//! sorted by hash: an insert walks past smaller-or-equal hashes and shifts the rest of
//! the cluster right; a removal shifts the cluster back. So every entry sits at or after
//! its home slot, a hash range (a ringkv partition is one) is a contiguous run of slots,
//! and a scan can resume from "the last hash returned" even after the table was resized.
//! Clusters near the end spill into an overflow area instead of wrapping around; when
//! that is exhausted, or the table is three quarters full, it doubles.
//!
//! # Persistence
//! The live table is a private (copy-on-write) mapping of the last checkpoint, or an
//! anonymous mapping after a resize: changes never reach the file in place, so a crash
//! can never leave a half-shifted table behind. A checkpoint writes the whole table and
//! a header (which log position it covers, checksums of both) to `index.tmp`, syncs it
//! and renames it over `index`. Opening verifies both checksums and the ordering
//! invariants before trusting a single slot.

use crate::error::{Result, StorageError};
use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Bytes per slot.
pub const SLOT_SIZE_BYTES: usize = 32;
/// Bytes of the file header that precedes the slots.
pub const FILE_HEADER_SIZE_BYTES: usize = 4096;
/// Smallest table: 1024 home slots.
pub const TABLE_BITS_MIN: u32 = 10;
/// Largest table: 2^32 home slots (128 GiB of index), far past any configured bound.
pub const TABLE_BITS_MAX: u32 = 32;
const MAGIC: &[u8; 8] = b"RINGKVIX";
const FORMAT_VERSION: u32 = 1;
const FLAG_TOMBSTONE: u32 = 1;

const _: () = assert!(SLOT_SIZE_BYTES == 8 + 8 + 4 + 4 + 4 + 4);

/// One key's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: u64,
    pub sequence: u64,
    pub segment_id: u32,
    pub offset: u32,
    pub size_bytes: u32,
    pub tombstone: bool,
}

/// The log position a checkpoint covers: every record before it is in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Replay starts in this segment ...
    pub segment_id: u32,
    /// ... at this offset, and continues through every segment with a larger id.
    pub offset: u32,
    /// The next sequence to hand out.
    pub next_sequence: u64,
    /// The next segment id to hand out.
    pub next_segment_id: u32,
}

/// Why an insert could not place an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The table must grow first.
    NeedsGrowth,
}

/// The in-memory (mapped) hash-sorted table.
#[derive(Debug)]
pub struct Table {
    map: MmapMut,
    bits: u32,
    slot_count: usize,
    entry_count: u64,
}

fn overflow_slots(bits: u32) -> usize {
    (1usize << bits) / 16 + 64
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

impl Table {
    /// An empty table with `1 << bits` home slots (anonymous memory).
    pub fn with_bits(bits: u32) -> Result<Table> {
        let bits = bits.clamp(TABLE_BITS_MIN, TABLE_BITS_MAX);
        let slot_count = (1usize << bits) + overflow_slots(bits);
        let map = MmapMut::map_anon(FILE_HEADER_SIZE_BYTES + slot_count * SLOT_SIZE_BYTES)
            .map_err(|e| StorageError::io("allocating the index", e))?;
        Ok(Table {
            map,
            bits,
            slot_count,
            entry_count: 0,
        })
    }

    /// The smallest table that holds `keys` entries under the load limit.
    pub fn bits_for(keys: u64) -> u32 {
        let wanted = keys.saturating_mul(4) / 3 + 1;
        (64 - wanted.leading_zeros()).clamp(TABLE_BITS_MIN, TABLE_BITS_MAX)
    }

    /// Number of entries (values and tombstones).
    pub fn len(&self) -> u64 {
        self.entry_count
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// Number of slots (home and overflow).
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// True when one more entry would pass the load limit.
    pub fn is_at_load_limit(&self) -> bool {
        self.entry_count + 1 > ((1u64 << self.bits) * 3) / 4
    }

    /// The home slot of `hash`.
    pub fn home(&self, hash: u64) -> usize {
        (hash >> (64 - self.bits)) as usize
    }

    fn slot_bytes(&self, slot: usize) -> &[u8] {
        let at = FILE_HEADER_SIZE_BYTES + slot * SLOT_SIZE_BYTES;
        &self.map[at..at + SLOT_SIZE_BYTES]
    }

    /// The entry in `slot`, or `None` when it is empty or past the end.
    pub fn get(&self, slot: usize) -> Option<Entry> {
        if slot >= self.slot_count {
            return None;
        }
        let bytes = self.slot_bytes(slot);
        let sequence = read_u64(bytes, 8);
        if sequence == 0 {
            return None;
        }
        Some(Entry {
            hash: read_u64(bytes, 0),
            sequence,
            segment_id: read_u32(bytes, 16),
            offset: read_u32(bytes, 20),
            size_bytes: read_u32(bytes, 24),
            tombstone: read_u32(bytes, 28) & FLAG_TOMBSTONE != 0,
        })
    }

    fn put_slot(&mut self, slot: usize, entry: Option<Entry>) {
        let at = FILE_HEADER_SIZE_BYTES + slot * SLOT_SIZE_BYTES;
        let bytes = &mut self.map[at..at + SLOT_SIZE_BYTES];
        match entry {
            None => bytes.fill(0),
            Some(entry) => {
                bytes[0..8].copy_from_slice(&entry.hash.to_le_bytes());
                bytes[8..16].copy_from_slice(&entry.sequence.to_le_bytes());
                bytes[16..20].copy_from_slice(&entry.segment_id.to_le_bytes());
                bytes[20..24].copy_from_slice(&entry.offset.to_le_bytes());
                bytes[24..28].copy_from_slice(&entry.size_bytes.to_le_bytes());
                let flags = if entry.tombstone { FLAG_TOMBSTONE } else { 0 };
                bytes[28..32].copy_from_slice(&flags.to_le_bytes());
            }
        }
    }

    /// Slots holding entries with exactly `hash` (usually zero or one).
    pub fn find(&self, hash: u64) -> impl Iterator<Item = (usize, Entry)> + '_ {
        (self.home(hash)..self.slot_count)
            .map_while(move |slot| self.get(slot).map(|entry| (slot, entry)))
            .take_while(move |(_, entry)| entry.hash <= hash)
            .filter(move |(_, entry)| entry.hash == hash)
    }

    /// Overwrites the entry in `slot` with one of the same hash.
    pub fn replace(&mut self, slot: usize, entry: Entry) {
        debug_assert_eq!(self.get(slot).map(|e| e.hash), Some(entry.hash));
        self.put_slot(slot, Some(entry));
    }

    /// Inserts an entry for a key that has none, keeping the hash order.
    pub fn insert(&mut self, entry: Entry) -> core::result::Result<usize, InsertError> {
        if self.is_at_load_limit() {
            return Err(InsertError::NeedsGrowth);
        }
        let mut position = self.home(entry.hash);
        while let Some(existing) = self.get(position) {
            if existing.hash > entry.hash {
                break;
            }
            position += 1;
        }
        let mut empty = position;
        while empty < self.slot_count && self.get(empty).is_some() {
            empty += 1;
        }
        if empty >= self.slot_count {
            return Err(InsertError::NeedsGrowth);
        }
        let from = FILE_HEADER_SIZE_BYTES + position * SLOT_SIZE_BYTES;
        let to = FILE_HEADER_SIZE_BYTES + empty * SLOT_SIZE_BYTES;
        self.map.copy_within(from..to, from + SLOT_SIZE_BYTES);
        self.put_slot(position, Some(entry));
        self.entry_count += 1;
        Ok(position)
    }

    /// Removes the entry in `slot`, shifting displaced successors back.
    pub fn remove(&mut self, slot: usize) {
        if self.get(slot).is_none() {
            return;
        }
        let mut end = slot + 1;
        while let Some(next) = self.get(end) {
            if self.home(next.hash) >= end {
                break;
            }
            end += 1;
        }
        // Slots slot+1 .. end are displaced: each moves one back.
        let from = FILE_HEADER_SIZE_BYTES + (slot + 1) * SLOT_SIZE_BYTES;
        let to = FILE_HEADER_SIZE_BYTES + end * SLOT_SIZE_BYTES;
        self.map.copy_within(from..to, from - SLOT_SIZE_BYTES);
        self.put_slot(end - 1, None);
        self.entry_count -= 1;
    }

    /// A table twice the size with the same entries.
    pub fn grown(&self) -> Result<Table> {
        if self.bits >= TABLE_BITS_MAX {
            return Err(StorageError::IndexFull {
                keys_max: ((1u64 << TABLE_BITS_MAX) * 3) / 4,
            });
        }
        let mut bits = self.bits + 1;
        loop {
            let mut grown = Table::with_bits(bits)?;
            if grown.copy_sorted_from(self) {
                return Ok(grown);
            }
            // The overflow area was too small for the last cluster: try larger still.
            bits += 1;
            if bits > TABLE_BITS_MAX {
                return Err(StorageError::IndexFull {
                    keys_max: self.entry_count,
                });
            }
        }
    }

    fn copy_sorted_from(&mut self, source: &Table) -> bool {
        let mut next_free = 0usize;
        for entry in source.entries() {
            let position = self.home(entry.hash).max(next_free);
            if position >= self.slot_count {
                return false;
            }
            self.put_slot(position, Some(entry));
            next_free = position + 1;
            self.entry_count += 1;
        }
        true
    }

    /// Every entry, in hash order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.slot_count).filter_map(move |slot| self.get(slot))
    }

    /// Entries with `first <= hash <= last` and, when a cursor is given, `hash > after`,
    /// in hash order, starting at the right slot rather than at slot 0.
    pub fn range(
        &self,
        first: u64,
        after: Option<u64>,
        last: u64,
    ) -> impl Iterator<Item = Entry> + '_ {
        let wanted = move |hash: u64| hash >= first && after.is_none_or(|after| hash > after);
        let start_hash = after.map_or(first, |after| after.max(first));
        (self.home(start_hash)..self.slot_count)
            .filter_map(move |slot| self.get(slot))
            .skip_while(move |entry| !wanted(entry.hash))
            .take_while(move |entry| entry.hash <= last)
    }

    /// Writes the table and `checkpoint` to `dir/index` atomically (temp file, sync,
    /// rename, directory sync). Takes `&self`: readers may go on meanwhile.
    pub fn write_checkpoint(&self, dir: &Path, checkpoint: Checkpoint) -> Result<()> {
        let table_crc = crc32fast::hash(&self.map[FILE_HEADER_SIZE_BYTES..]);
        let mut header = [0u8; FILE_HEADER_SIZE_BYTES];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&self.bits.to_le_bytes());
        header[16..24].copy_from_slice(&(self.slot_count as u64).to_le_bytes());
        header[24..32].copy_from_slice(&self.entry_count.to_le_bytes());
        header[32..36].copy_from_slice(&checkpoint.segment_id.to_le_bytes());
        header[36..40].copy_from_slice(&checkpoint.offset.to_le_bytes());
        header[40..44].copy_from_slice(&checkpoint.next_segment_id.to_le_bytes());
        header[48..56].copy_from_slice(&checkpoint.next_sequence.to_le_bytes());
        header[56..60].copy_from_slice(&table_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&header[..60]);
        header[60..64].copy_from_slice(&header_crc.to_le_bytes());

        let temporary = dir.join("index.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temporary)?;
            file.write_all(&header)?;
            file.write_all(&self.map[FILE_HEADER_SIZE_BYTES..])?;
            file.sync_all()?;
            std::fs::rename(&temporary, dir.join("index"))
        };
        if let Err(error) = write() {
            let _ = std::fs::remove_file(&temporary);
            return Err(StorageError::io("writing an index checkpoint", error));
        }
        crate::segment::sync_directory(dir)
    }

    /// Opens `dir/index`. `Ok(None)` when there is none; `Err(Corrupt)` when it fails any
    /// check (the caller then rebuilds from the segments).
    pub fn open(dir: &Path, record_size_bytes_max: u32) -> Result<Option<(Table, Checkpoint)>> {
        let path = dir.join("index");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StorageError::io("opening the index", error)),
        };
        let length = file
            .metadata()
            .map_err(|e| StorageError::io("opening the index", e))?
            .len();
        let corrupt = |reason| StorageError::Corrupt {
            segment_id: 0,
            offset: 0,
            reason,
        };
        if length < FILE_HEADER_SIZE_BYTES as u64 {
            return Err(corrupt("index shorter than its header"));
        }
        let map = map_private(&file)?;
        let header = &map[..FILE_HEADER_SIZE_BYTES];
        if &header[0..8] != MAGIC {
            return Err(corrupt("bad index magic"));
        }
        if crc32fast::hash(&header[..60]) != read_u32(header, 60) {
            return Err(corrupt("index header checksum mismatch"));
        }
        if read_u32(header, 8) != FORMAT_VERSION {
            return Err(corrupt("unknown index format version"));
        }
        let bits = read_u32(header, 12);
        if !(TABLE_BITS_MIN..=TABLE_BITS_MAX).contains(&bits) {
            return Err(corrupt("index table size out of range"));
        }
        let slot_count = (1usize << bits) + overflow_slots(bits);
        if read_u64(header, 16) != slot_count as u64
            || length != (FILE_HEADER_SIZE_BYTES + slot_count * SLOT_SIZE_BYTES) as u64
        {
            return Err(corrupt("index size does not match its header"));
        }
        if crc32fast::hash(&map[FILE_HEADER_SIZE_BYTES..]) != read_u32(header, 56) {
            return Err(corrupt("index table checksum mismatch"));
        }
        let checkpoint = Checkpoint {
            segment_id: read_u32(header, 32),
            offset: read_u32(header, 36),
            next_segment_id: read_u32(header, 40),
            next_sequence: read_u64(header, 48),
        };
        let entry_count = read_u64(header, 24);
        let table = Table {
            map,
            bits,
            slot_count,
            entry_count,
        };
        table
            .verify(record_size_bytes_max, checkpoint)
            .map_err(corrupt)?;
        Ok(Some((table, checkpoint)))
    }

    /// Checks the invariants every operation relies on.
    fn verify(
        &self,
        record_size_bytes_max: u32,
        checkpoint: Checkpoint,
    ) -> core::result::Result<(), &'static str> {
        let mut count = 0u64;
        let mut previous_hash = 0u64;
        for slot in 0..self.slot_count {
            let Some(entry) = self.get(slot) else {
                continue;
            };
            if self.home(entry.hash) > slot {
                return Err("index entry before its home slot");
            }
            if count > 0 && entry.hash < previous_hash {
                return Err("index entries out of hash order");
            }
            if entry.size_bytes > record_size_bytes_max
                || entry.size_bytes < crate::record::HEADER_SIZE_BYTES as u32
            {
                return Err("index entry size out of bounds");
            }
            if entry.sequence >= checkpoint.next_sequence
                || entry.segment_id >= checkpoint.next_segment_id
            {
                return Err("index entry newer than its checkpoint");
            }
            previous_hash = entry.hash;
            count += 1;
        }
        if count != self.entry_count {
            return Err("index entry count does not match its header");
        }
        Ok(())
    }
}

/// Maps the checkpoint copy-on-write, so later changes stay in memory.
#[allow(unsafe_code)]
fn map_private(file: &File) -> Result<MmapMut> {
    // SAFETY: the mapping is private (MAP_PRIVATE): our writes never reach the file. The
    // file itself is only ever replaced by rename, never written in place or truncated,
    // so the mapped pages stay valid for the mapping's whole life (the old inode lives on
    // while mapped). The data directory is locked against other ringkv processes.
    unsafe { MmapOptions::new().map_copy(file) }
        .map_err(|e| StorageError::io("mapping the index", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::Rng;

    fn entry(hash: u64, sequence: u64) -> Entry {
        Entry {
            hash,
            sequence,
            segment_id: 1,
            offset: 32,
            size_bytes: 40,
            tombstone: false,
        }
    }

    fn assert_sorted_and_homed(table: &Table) {
        let mut previous = 0;
        for slot in 0..table.slot_count() {
            if let Some(e) = table.get(slot) {
                assert!(table.home(e.hash) <= slot, "entry before its home");
                assert!(e.hash >= previous, "out of order");
                previous = e.hash;
            }
        }
    }

    #[test]
    fn random_inserts_and_removals_keep_the_table_sorted_and_findable() {
        let seed = 0x5EED;
        println!("seed {seed}");
        let mut rng = Rng::new(seed);
        let mut table = Table::with_bits(TABLE_BITS_MIN).unwrap();
        let mut model = std::collections::BTreeMap::new();
        for step in 0..20_000u64 {
            // Few distinct hashes, clustered, so collisions and long clusters happen.
            let hash = rng.below(600) << 54 | rng.below(4);
            if rng.chance(0.6) {
                if model.contains_key(&hash) {
                    let (slot, _) = table.find(hash).next().unwrap();
                    table.replace(slot, entry(hash, step + 1));
                } else {
                    match table.insert(entry(hash, step + 1)) {
                        Ok(_) => {}
                        Err(InsertError::NeedsGrowth) => {
                            table = table.grown().unwrap();
                            table.insert(entry(hash, step + 1)).unwrap();
                        }
                    }
                }
                model.insert(hash, step + 1);
            } else if model.remove(&hash).is_some() {
                let (slot, _) = table.find(hash).next().unwrap();
                table.remove(slot);
            }
        }
        assert_sorted_and_homed(&table);
        assert_eq!(table.len(), model.len() as u64);
        for (&hash, &sequence) in &model {
            let found: Vec<_> = table.find(hash).collect();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].1.sequence, sequence);
        }
        let all: Vec<u64> = table.entries().map(|e| e.hash).collect();
        assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
    }

    #[test]
    fn equal_hashes_coexist_and_range_scans_resume_after_a_cursor() {
        let mut table = Table::with_bits(TABLE_BITS_MIN).unwrap();
        for (hash, sequence) in [(5u64 << 60, 1), (5 << 60, 2), (3 << 60, 3), (9 << 60, 4)] {
            table.insert(entry(hash, sequence)).unwrap();
        }
        assert_eq!(table.find(5 << 60).count(), 2);
        let in_range: Vec<u64> = table
            .range(4 << 60, None, 9 << 60)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(in_range, [1, 2, 4]);
        let after: Vec<u64> = table
            .range(4 << 60, Some(5 << 60), u64::MAX)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(after, [4]);
    }

    #[test]
    fn a_checkpoint_reopens_identically_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = Table::with_bits(TABLE_BITS_MIN).unwrap();
        let mut rng = Rng::new(1);
        for sequence in 1..=500 {
            table
                .insert(entry(rng.next_u64(), sequence))
                .unwrap_or_else(|_| panic!("full"));
        }
        let checkpoint = Checkpoint {
            segment_id: 3,
            offset: 4096,
            next_sequence: 501,
            next_segment_id: 4,
        };
        table.write_checkpoint(dir.path(), checkpoint).unwrap();
        let (reopened, read_back) = Table::open(dir.path(), 1 << 21).unwrap().unwrap();
        assert_eq!(read_back, checkpoint);
        assert!(reopened.entries().eq(table.entries()));

        let path = dir.path().join("index");
        let pristine = std::fs::read(&path).unwrap();
        for at in [
            0,
            13,
            40,
            61,
            FILE_HEADER_SIZE_BYTES + 9,
            pristine.len() - 1,
        ] {
            let mut damaged = pristine.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            assert!(
                matches!(
                    Table::open(dir.path(), 1 << 21),
                    Err(StorageError::Corrupt { .. })
                ),
                "damage at byte {at} went unnoticed"
            );
        }
        std::fs::write(&path, &pristine[..pristine.len() - 32]).unwrap();
        assert!(matches!(
            Table::open(dir.path(), 1 << 21),
            Err(StorageError::Corrupt { .. })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Table::open(dir.path(), 1 << 21),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn changes_after_opening_never_reach_the_checkpoint_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = Table::with_bits(TABLE_BITS_MIN).unwrap();
        table.insert(entry(1 << 40, 1)).unwrap();
        table
            .write_checkpoint(
                dir.path(),
                Checkpoint {
                    next_sequence: 2,
                    next_segment_id: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        let before = std::fs::read(dir.path().join("index")).unwrap();
        let (mut reopened, _) = Table::open(dir.path(), 1 << 21).unwrap().unwrap();
        reopened.insert(entry(2 << 40, 2)).unwrap();
        let (slot, _) = reopened.find(1 << 40).next().unwrap();
        reopened.remove(slot);
        assert_eq!(std::fs::read(dir.path().join("index")).unwrap(), before);
    }
}
