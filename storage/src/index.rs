//! The persistent hash index: key hash -> where the newest record of that key lives.
//!
//! # Layout
//! A table of 32-byte slots, in memory in 4 KiB pages:
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
//! # Growing without a stall
//! Doubling in one go copies every entry under the store's commit lock: measured
//! (an ad-hoc probe, `Table::grown`) at 4 ms for 98,304 entries, 205 ms for 786,432 and
//! 1.7 s for 6.3 million, all of it a stall of every write (and, in the shells, of the
//! event loop that commits). So a table grows alongside its changes, as Redis rehashes
//! incrementally: the insert that takes it past eleven sixteenths full starts a table
//! twice the size, and every insert from then on copies the next
//! [`GROWTH_STEP_ENTRIES`] entries into it in hash order. The copy's cursor is a hash: a change to an entry
//! at or below it is made in both tables, a change above it only here (the copy
//! takes it later). Reads, scans and checkpoints use this table, complete and current
//! throughout. The copy is done after about a fiftieth of the table's size in inserts,
//! a third of the way to the load limit at three quarters; the new table then takes this one's
//! place, a new incarnation, exactly as a doubling in one go did. Only a table that
//! reaches the load limit or exhausts its overflow area with no copy under way
//! (its memory could not be mapped, or the copy met a full overflow area and was
//! dropped) still doubles in one go.
//!
//! # Checkpoints: incremental, into two files in turn
//! The table lives in anonymous memory (read whole from a checkpoint file at open,
//! which verifies every byte anyway). A checkpoint is written into one of two files,
//! `index.0` and `index.1`, the one not holding the newest checkpoint:
//!
//! | file offset | size | what |
//! |---|---|---|
//! | 0 | 4096 | header: geometry, the log position covered, generation, checksums |
//! | 4096 | pages x 4096 | the table's pages |
//! | after the pages | pages x 4 | a CRC32 of each page |
//!
//! Only the pages changed since *that file* was last written go out (each page
//! carries the epoch of its last change; each file remembers the epoch it covers), then
//! the page checksums, a sync, and last the header with a generation one above every
//! other, and a sync. A crash part way leaves the file's old header, whose generation
//! is below the other file's, so opening picks the other, complete, file; opening
//! checks the header's checksum, the page checksums' checksum and every page against
//! its checksum. Right after an open the other file is of unknown age and gets every
//! page once; after a resize, both do.
//!
//! A checkpoint is a consistent snapshot taken in one instant ([`Table::begin_snapshot`],
//! under the store's commit lock) and written page by page while writes go on: a
//! change to a page the snapshot has not written yet first keeps a copy of the page as
//! it was ([`Table::touch`]), so the snapshot's memory is bounded by the pages it has
//! left (at most the table's size again). The store writes it in steps of
//! [`SNAPSHOT_STEP_PAGES`] pages under its index lock and syncs the file every
//! [`CHECKPOINT_SYNC_BYTES`], so the log's own syncs never queue behind more than that
//! much index data on the device (a whole-table write used to stall every put for 200
//! to 290 ms: BENCHMARKS.md).

use crate::error::{Result, StorageError};
use memmap2::MmapMut;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per slot.
pub const SLOT_SIZE_BYTES: usize = 32;
/// Entries an insert copies into a growing table (see "Growing without a stall").
pub const GROWTH_STEP_ENTRIES: usize = 32;
/// Bytes of the file header that precedes the pages.
pub const FILE_HEADER_SIZE_BYTES: usize = 4096;
/// Bytes per page: the unit of change tracking, checksums and checkpoint writes.
pub const PAGE_SIZE_BYTES: usize = 4096;
/// Smallest table: 1024 home slots.
pub const TABLE_BITS_MIN: u32 = 10;
/// Largest table: 2^32 home slots (128 GiB of index), far past any configured bound.
pub const TABLE_BITS_MAX: u32 = 32;
/// Pages a checkpoint takes from the table per step (1 MiB), under the store's index
/// lock: a copy of at most this much holds up a commit.
pub const SNAPSHOT_STEP_PAGES: usize = 256;
/// Index bytes a checkpoint writes between two syncs of its file.
pub const CHECKPOINT_SYNC_BYTES: usize = 256 << 10;
/// The two checkpoint files, written in turn.
pub const FILE_NAMES: [&str; 2] = ["index.0", "index.1"];
/// The single index file of format 1 (before incremental checkpoints): removed at
/// open, which then rebuilds the index from the log once.
pub const LEGACY_FILE_NAME: &str = "index";
const MAGIC: &[u8; 8] = b"RINGKVIX";
const FORMAT_VERSION: u32 = 2;
const FLAG_TOMBSTONE: u32 = 1;

const _: () = assert!(SLOT_SIZE_BYTES == 8 + 8 + 4 + 4 + 4 + 4);
const _: () = assert!(PAGE_SIZE_BYTES % SLOT_SIZE_BYTES == 0);

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

/// The in-memory hash-sorted table.
#[derive(Debug)]
pub struct Table {
    map: MmapMut,
    bits: u32,
    slot_count: usize,
    entry_count: u64,
    /// Entries that are tombstones (so `Store::stats` counts live keys without a
    /// walk of the table under its lock).
    tombstone_count: u64,
    /// Which table this is: a resized table is a new one, every page of it new to
    /// both files.
    incarnation: u64,
    /// The epoch changes are tagged with now; a snapshot starts the next one.
    epoch: u64,
    /// The epoch of each page's last change.
    page_epochs: Vec<u64>,
    /// Each page's CRC32 as of the last checkpoint that wrote it: the right checksum
    /// for every file the page has not changed since.
    page_checksums: Vec<u32>,
    snapshot: Option<Snapshot>,
    /// The table twice the size being filled, while one is.
    growth: Option<Box<Growth>>,
}

/// A doubling under way (see "Growing without a stall").
#[derive(Debug)]
struct Growth {
    table: Table,
    /// Every entry with a hash up to this one is in `table` (`None`: none yet).
    copied_through: Option<u64>,
    /// No slot of `table` below this one is free for the next copied entry.
    next_free: usize,
}

impl Growth {
    fn holds(&self, hash: u64) -> bool {
        self.copied_through.is_some_and(|through| hash <= through)
    }
}

/// A checkpoint under way: the pages it has yet to take, and the old contents of
/// those changed since it began.
#[derive(Debug)]
struct Snapshot {
    /// Changes tagged with this epoch or earlier are in the snapshot.
    epoch: u64,
    pending: Vec<bool>,
    saved: HashMap<usize, Box<[u8]>>,
}

/// What a snapshot covers, for its writer (see [`Table::begin_snapshot`]).
#[derive(Clone, Debug)]
pub struct SnapshotPlan {
    pub incarnation: u64,
    pub epoch: u64,
    bits: u32,
    slot_count: usize,
    entry_count: u64,
    /// Pages to write.
    pub pages: usize,
    /// Each page's checksum as of the last checkpoint that wrote it; the writer
    /// replaces those it writes.
    checksums: Vec<u32>,
}

/// Pages taken from a snapshot, with their contents.
#[derive(Debug, Default)]
pub struct PageBatch {
    pages: Vec<usize>,
    bytes: Vec<u8>,
}

impl PageBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

fn overflow_slots(bits: u32) -> usize {
    (1usize << bits) / 16 + 64
}

fn page_count(slot_count: usize) -> usize {
    (slot_count * SLOT_SIZE_BYTES).div_ceil(PAGE_SIZE_BYTES)
}

fn file_length_bytes(pages: usize) -> u64 {
    (FILE_HEADER_SIZE_BYTES + pages * PAGE_SIZE_BYTES + pages * 4) as u64
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
        Table::empty(bits, 0)
    }

    fn empty(bits: u32, incarnation: u64) -> Result<Table> {
        let bits = bits.clamp(TABLE_BITS_MIN, TABLE_BITS_MAX);
        let slot_count = (1usize << bits) + overflow_slots(bits);
        let pages = page_count(slot_count);
        let map = crate::memory::huge_page_memory(pages * PAGE_SIZE_BYTES, false)
            .map_err(|e| StorageError::io("allocating the index", e))?;
        Ok(Table {
            map,
            bits,
            slot_count,
            entry_count: 0,
            tombstone_count: 0,
            incarnation,
            epoch: 1,
            // Every page is new to both files.
            page_epochs: vec![1; pages],
            page_checksums: vec![0; pages],
            snapshot: None,
            growth: None,
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

    /// Number of entries that are values (not tombstones).
    pub fn live_len(&self) -> u64 {
        self.entry_count - self.tombstone_count
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

    /// True when one more entry would take the table past eleven sixteenths full, where
    /// it starts growing.
    fn is_at_growth_start(&self) -> bool {
        self.entry_count + 1 > ((1u64 << self.bits) * 11) / 16
    }

    /// True while a table twice the size is being filled.
    pub fn is_growing(&self) -> bool {
        self.growth.is_some()
    }

    /// The home slot of `hash`.
    pub fn home(&self, hash: u64) -> usize {
        (hash >> (64 - self.bits)) as usize
    }

    fn slot_bytes(&self, slot: usize) -> &[u8] {
        let at = slot * SLOT_SIZE_BYTES;
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

    /// Notes that the bytes `range` of the table are about to change: tags their
    /// pages with the current epoch and, for a snapshot that has yet to take a page,
    /// first keeps the page as it was.
    fn touch(&mut self, range: core::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let first = range.start / PAGE_SIZE_BYTES;
        let last = (range.end - 1) / PAGE_SIZE_BYTES;
        for page in first..=last {
            if let Some(snapshot) = &mut self.snapshot
                && snapshot.pending[page]
                && self.page_epochs[page] <= snapshot.epoch
            {
                let at = page * PAGE_SIZE_BYTES;
                snapshot.saved.insert(
                    page,
                    self.map[at..at + PAGE_SIZE_BYTES]
                        .to_vec()
                        .into_boxed_slice(),
                );
            }
            self.page_epochs[page] = self.epoch;
        }
    }

    fn put_slot(&mut self, slot: usize, entry: Option<Entry>) {
        let at = slot * SLOT_SIZE_BYTES;
        self.touch(at..at + SLOT_SIZE_BYTES);
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

    /// Moves the slots `from` (a byte range) to start at byte `to`.
    fn move_slots(&mut self, from: core::ops::Range<usize>, to: usize) {
        self.touch(to..to + from.len());
        self.map.copy_within(from, to);
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
        let Some(old) = self.get(slot) else {
            return;
        };
        self.tombstone_count -= u64::from(old.tombstone);
        self.tombstone_count += u64::from(entry.tombstone);
        self.put_slot(slot, Some(entry));
        self.in_growth(old.hash, |table| {
            let slot = table.slot_of(&old)?;
            table.replace(slot, entry);
            Some(())
        });
    }

    /// The slot holding exactly `entry` (`None` once it was changed or removed).
    pub fn slot_of(&self, entry: &Entry) -> Option<usize> {
        self.find(entry.hash)
            .find(|(_, e)| e == entry)
            .map(|(slot, _)| slot)
    }

    /// Makes a change to an entry of hash `hash` in the growing table too, when the
    /// copy already holds that hash. A change that finds the copy unlike this table
    /// (never expected) or cannot be placed there drops the copy: a later insert starts
    /// it again.
    fn in_growth(&mut self, hash: u64, change: impl FnOnce(&mut Table) -> Option<()>) {
        let Some(growth) = self.growth.as_mut() else {
            return;
        };
        if growth.holds(hash) && change(&mut growth.table).is_none() {
            self.growth = None;
        }
    }

    /// Inserts an entry for a key that has none, keeping the hash order, and moves a
    /// doubling along (see "Growing without a stall"). `NeedsGrowth` when the table is
    /// at its load limit or its overflow area is full and no copy is under way; the
    /// caller doubles it in one go ([`Table::grown`]). The slot returned is the
    /// entry's in the table as it is after the call.
    pub fn insert(&mut self, entry: Entry) -> core::result::Result<usize, InsertError> {
        if self.growth.is_none() && self.is_at_growth_start() && self.bits < TABLE_BITS_MAX {
            // Memory that cannot be mapped now leaves the doubling in one go.
            if let Ok(table) = Table::empty(self.bits + 1, self.incarnation + 1) {
                self.growth = Some(Box::new(Growth {
                    table,
                    copied_through: None,
                    next_free: 0,
                }));
            }
        }
        if self.growth.is_some() && !self.copy_into_growth(GROWTH_STEP_ENTRIES) {
            self.take_grown();
        }
        match self.insert_here(entry) {
            Ok(slot) => {
                self.in_growth(entry.hash, |table| table.insert_here(entry).ok().map(drop));
                Ok(slot)
            }
            Err(InsertError::NeedsGrowth) if self.growth.is_some() => {
                // Full before the copy finished: finish it now.
                while self.growth.is_some() && self.copy_into_growth(usize::MAX) {}
                if self.growth.is_none() {
                    return Err(InsertError::NeedsGrowth);
                }
                self.take_grown();
                self.insert_here(entry)
            }
            Err(error) => Err(error),
        }
    }

    /// Copies the next `entries_max` entries (more to end on a whole run of equal
    /// hashes) into the growing table. False once every entry is there.
    fn copy_into_growth(&mut self, entries_max: usize) -> bool {
        let Some(mut growth) = self.growth.take() else {
            return false;
        };
        let mut last = None;
        let mut more = false;
        for (copied, entry) in self.range(0, growth.copied_through, u64::MAX).enumerate() {
            if copied >= entries_max && last != Some(entry.hash) {
                more = true;
                break;
            }
            if !growth.table.append(entry, &mut growth.next_free) {
                // The copy's overflow area is full: drop it (never expected; the
                // load limit then doubles in one go, which tries larger tables).
                return true;
            }
            last = Some(entry.hash);
        }
        if last.is_some() {
            growth.copied_through = last;
        }
        self.growth = Some(growth);
        more
    }

    /// Puts `entry`, whose hash is above every hash here, at the first free slot from
    /// its home, starting the search at `*next_free` (below which no slot is free for
    /// it); false when the overflow area is full.
    fn append(&mut self, entry: Entry, next_free: &mut usize) -> bool {
        let mut position = self.home(entry.hash).max(*next_free);
        while position < self.slot_count && self.is_occupied(position) {
            position += 1;
        }
        if position >= self.slot_count {
            return false;
        }
        self.put_slot(position, Some(entry));
        self.entry_count += 1;
        self.tombstone_count += u64::from(entry.tombstone);
        *next_free = position + 1;
        true
    }

    fn is_occupied(&self, slot: usize) -> bool {
        read_u64(self.slot_bytes(slot), 8) != 0
    }

    /// The finished copy takes this table's place.
    fn take_grown(&mut self) {
        if let Some(growth) = self.growth.take() {
            debug_assert_eq!(growth.table.entry_count, self.entry_count);
            *self = growth.table;
        }
    }

    fn insert_here(&mut self, entry: Entry) -> core::result::Result<usize, InsertError> {
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
        let from = position * SLOT_SIZE_BYTES;
        let to = empty * SLOT_SIZE_BYTES;
        self.move_slots(from..to, from + SLOT_SIZE_BYTES);
        self.put_slot(position, Some(entry));
        self.entry_count += 1;
        self.tombstone_count += u64::from(entry.tombstone);
        Ok(position)
    }

    /// Removes the entry in `slot`, shifting displaced successors back.
    pub fn remove(&mut self, slot: usize) {
        let Some(removed) = self.get(slot) else {
            return;
        };
        if let Some(growth) = self.growth.as_mut()
            && growth.holds(removed.hash)
        {
            match growth.table.slot_of(&removed) {
                Some(slot) => {
                    growth.table.remove(slot);
                    // The cluster shrank: its last slot may be the next free one.
                    growth.next_free = growth.next_free.min(slot);
                }
                None => self.growth = None,
            }
        }
        self.tombstone_count -= u64::from(removed.tombstone);
        let mut end = slot + 1;
        while let Some(next) = self.get(end) {
            if self.home(next.hash) >= end {
                break;
            }
            end += 1;
        }
        // Slots slot+1 .. end are displaced: each moves one back.
        let from = (slot + 1) * SLOT_SIZE_BYTES;
        let to = end * SLOT_SIZE_BYTES;
        self.move_slots(from..to, from - SLOT_SIZE_BYTES);
        self.put_slot(end - 1, None);
        self.entry_count -= 1;
    }

    /// A table twice the size with the same entries (a new incarnation: a snapshot
    /// of this one cannot go on in it).
    pub fn grown(&self) -> Result<Table> {
        if self.bits >= TABLE_BITS_MAX {
            return Err(StorageError::IndexFull {
                keys_max: ((1u64 << TABLE_BITS_MAX) * 3) / 4,
            });
        }
        let mut bits = self.bits + 1;
        loop {
            let mut grown = Table::empty(bits, self.incarnation + 1)?;
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
            self.tombstone_count += u64::from(entry.tombstone);
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

    /// Starts a snapshot of the table as it is now, for a file that holds this table
    /// as of epoch `covers` (`None`, or another incarnation's: every page). A snapshot
    /// already under way (one whose writer failed) is dropped.
    pub fn begin_snapshot(&mut self, covers: Option<(u64, u64)>) -> SnapshotPlan {
        let since = match covers {
            Some((incarnation, epoch)) if incarnation == self.incarnation => Some(epoch),
            _ => None,
        };
        let pending: Vec<bool> = self
            .page_epochs
            .iter()
            .map(|&changed| since.is_none_or(|since| changed > since))
            .collect();
        let plan = SnapshotPlan {
            incarnation: self.incarnation,
            epoch: self.epoch,
            bits: self.bits,
            slot_count: self.slot_count,
            entry_count: self.entry_count,
            pages: pending.iter().filter(|&&p| p).count(),
            checksums: self.page_checksums.clone(),
        };
        self.snapshot = Some(Snapshot {
            epoch: self.epoch,
            pending,
            saved: HashMap::new(),
        });
        self.epoch += 1;
        plan
    }

    /// Takes up to `pages_max` of the snapshot's pages from `*cursor` on into `batch`
    /// (emptied first), advancing the cursor. False when the snapshot `plan` began is
    /// gone (the table was replaced by a resize).
    pub fn take_snapshot_pages(
        &mut self,
        plan: &SnapshotPlan,
        cursor: &mut usize,
        pages_max: usize,
        batch: &mut PageBatch,
    ) -> bool {
        batch.pages.clear();
        batch.bytes.clear();
        if self.incarnation != plan.incarnation {
            return false;
        }
        let Some(snapshot) = &mut self.snapshot else {
            return false;
        };
        if snapshot.epoch != plan.epoch {
            return false;
        }
        while *cursor < snapshot.pending.len() && batch.pages.len() < pages_max {
            let page = *cursor;
            *cursor += 1;
            if !std::mem::take(&mut snapshot.pending[page]) {
                continue;
            }
            match snapshot.saved.remove(&page) {
                Some(saved) => batch.bytes.extend_from_slice(&saved),
                None => {
                    let at = page * PAGE_SIZE_BYTES;
                    batch
                        .bytes
                        .extend_from_slice(&self.map[at..at + PAGE_SIZE_BYTES]);
                }
            }
            batch.pages.push(page);
        }
        true
    }

    /// Ends the snapshot `plan` began; `written` gives the checksums of a snapshot
    /// whose checkpoint completed, now the table's.
    pub fn end_snapshot(&mut self, plan: &SnapshotPlan, written: Option<Vec<u32>>) {
        if self.incarnation != plan.incarnation
            || self
                .snapshot
                .as_ref()
                .is_none_or(|snapshot| snapshot.epoch != plan.epoch)
        {
            return;
        }
        self.snapshot = None;
        if let Some(checksums) = written {
            self.page_checksums = checksums;
        }
    }

    /// Bytes the snapshot under way holds in page copies.
    pub fn snapshot_saved_bytes(&self) -> usize {
        self.snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.saved.len() * PAGE_SIZE_BYTES)
    }

    /// Checks the invariants every operation relies on; returns the number of
    /// tombstones.
    fn verify(
        &self,
        record_size_bytes_max: u32,
        checkpoint: Checkpoint,
    ) -> core::result::Result<u64, &'static str> {
        let mut count = 0u64;
        let mut tombstones = 0u64;
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
            tombstones += u64::from(entry.tombstone);
        }
        if count != self.entry_count {
            return Err("index entry count does not match its header");
        }
        // The padding past the last slot is zero.
        if self.map[self.slot_count * SLOT_SIZE_BYTES..]
            .iter()
            .any(|&byte| byte != 0)
        {
            return Err("index padding is not zero");
        }
        Ok(tombstones)
    }
}

/// A checkpoint file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    bits: u32,
    slot_count: u64,
    entry_count: u64,
    checkpoint: Checkpoint,
    generation: u64,
    checksums_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; FILE_HEADER_SIZE_BYTES] {
        let mut header = [0u8; FILE_HEADER_SIZE_BYTES];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&self.bits.to_le_bytes());
        header[16..24].copy_from_slice(&self.slot_count.to_le_bytes());
        header[24..32].copy_from_slice(&self.entry_count.to_le_bytes());
        header[32..36].copy_from_slice(&self.checkpoint.segment_id.to_le_bytes());
        header[36..40].copy_from_slice(&self.checkpoint.offset.to_le_bytes());
        header[40..44].copy_from_slice(&self.checkpoint.next_segment_id.to_le_bytes());
        header[48..56].copy_from_slice(&self.checkpoint.next_sequence.to_le_bytes());
        header[56..64].copy_from_slice(&self.generation.to_le_bytes());
        header[64..68].copy_from_slice(&self.checksums_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&header[..68]);
        header[68..72].copy_from_slice(&header_crc.to_le_bytes());
        header
    }

    fn decode(header: &[u8]) -> core::result::Result<Header, &'static str> {
        if header.len() < FILE_HEADER_SIZE_BYTES {
            return Err("index shorter than its header");
        }
        if &header[0..8] != MAGIC {
            return Err("bad index magic");
        }
        if crc32fast::hash(&header[..68]) != read_u32(header, 68) {
            return Err("index header checksum mismatch");
        }
        if read_u32(header, 8) != FORMAT_VERSION {
            return Err("unknown index format version");
        }
        let bits = read_u32(header, 12);
        if !(TABLE_BITS_MIN..=TABLE_BITS_MAX).contains(&bits) {
            return Err("index table size out of range");
        }
        let slot_count = read_u64(header, 16);
        if slot_count != ((1u64 << bits) + overflow_slots(bits) as u64) {
            return Err("index size does not match its header");
        }
        Ok(Header {
            bits,
            slot_count,
            entry_count: read_u64(header, 24),
            checkpoint: Checkpoint {
                segment_id: read_u32(header, 32),
                offset: read_u32(header, 36),
                next_segment_id: read_u32(header, 40),
                next_sequence: read_u64(header, 48),
            },
            generation: read_u64(header, 56),
            checksums_crc: read_u32(header, 64),
        })
    }
}

/// What the store knows of one checkpoint file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FileState {
    /// The generation of its valid header; 0 when it has none (absent, damaged, or
    /// part way through its first write).
    generation: u64,
    /// The table (incarnation, epoch) its pages hold; `None` when unknown.
    covers: Option<(u64, u64)>,
}

/// The two checkpoint files: which holds the newest checkpoint, and what each holds.
#[derive(Debug, Default)]
pub struct IndexFiles {
    files: [FileState; 2],
}

impl IndexFiles {
    /// Reads both headers in `dir` (a damaged or missing one counts as none) and
    /// removes the format-1 index file, if any.
    pub fn read(dir: &Path) -> Result<IndexFiles> {
        match std::fs::remove_file(dir.join(LEGACY_FILE_NAME)) {
            Ok(()) => log::info!(
                "{}: removed the format-1 index; it is rebuilt from the log once",
                dir.display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io("removing the old index", error)),
        }
        let mut files = IndexFiles::default();
        for (number, name) in FILE_NAMES.iter().enumerate() {
            let file = match File::open(dir.join(name)) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(StorageError::io("opening the index", error)),
            };
            let mut header = [0u8; FILE_HEADER_SIZE_BYTES];
            if file.read_exact_at(&mut header, 0).is_err() {
                continue;
            }
            if let Ok(header) = Header::decode(&header) {
                files.files[number].generation = header.generation;
            }
        }
        Ok(files)
    }

    /// The file holding the newest checkpoint (by generation), if any has a header.
    fn newest(&self) -> Option<usize> {
        let [first, second] = &self.files;
        match (first.generation, second.generation) {
            (0, 0) => None,
            (a, b) if a >= b => Some(0),
            _ => Some(1),
        }
    }

    /// Loads the table from the newest checkpoint: `Ok(None)` when there is none,
    /// `Err(Corrupt)` when it fails any check (the caller then rebuilds from the
    /// segments; the next checkpoint still gets a generation above it).
    pub fn load(
        &mut self,
        dir: &Path,
        record_size_bytes_max: u32,
    ) -> Result<Option<(Table, Checkpoint)>> {
        let Some(newest) = self.newest() else {
            return Ok(None);
        };
        let corrupt = |reason| StorageError::Corrupt {
            segment_id: 0,
            offset: 0,
            reason,
        };
        let mut file = File::open(dir.join(FILE_NAMES[newest]))
            .map_err(|e| StorageError::io("opening the index", e))?;
        let length = file
            .metadata()
            .map_err(|e| StorageError::io("opening the index", e))?
            .len();
        let mut header = [0u8; FILE_HEADER_SIZE_BYTES];
        file.read_exact(&mut header)
            .map_err(|_| corrupt("index shorter than its header"))?;
        let header = Header::decode(&header).map_err(corrupt)?;
        let mut table = Table::empty(header.bits, 0)?;
        let pages = page_count(table.slot_count);
        if length != file_length_bytes(pages) {
            return Err(corrupt("index size does not match its header"));
        }
        file.read_exact(&mut table.map[..])
            .map_err(|e| StorageError::io("reading the index", e))?;
        let mut checksum_bytes = vec![0u8; pages * 4];
        file.read_exact(&mut checksum_bytes)
            .map_err(|e| StorageError::io("reading the index", e))?;
        if crc32fast::hash(&checksum_bytes) != header.checksums_crc {
            return Err(corrupt("index page checksums do not match their header"));
        }
        for page in 0..pages {
            let expected = read_u32(&checksum_bytes, page * 4);
            let at = page * PAGE_SIZE_BYTES;
            if crc32fast::hash(&table.map[at..at + PAGE_SIZE_BYTES]) != expected {
                return Err(corrupt("index page checksum mismatch"));
            }
            table.page_checksums[page] = expected;
        }
        table.entry_count = header.entry_count;
        // Nothing changed since this file: its pages are the table's.
        table.page_epochs.fill(0);
        table.tombstone_count = table
            .verify(record_size_bytes_max, header.checkpoint)
            .map_err(corrupt)?;
        self.files[newest].covers = Some((table.incarnation, 0));
        Ok(Some((table, header.checkpoint)))
    }

    /// Which file the next checkpoint goes to (never the one holding the newest).
    fn target(&self) -> usize {
        match self.newest() {
            Some(0) => 1,
            _ => 0,
        }
    }

    /// What the next checkpoint's file holds, for [`Table::begin_snapshot`].
    pub fn target_covers(&self) -> Option<(u64, u64)> {
        self.files[self.target()].covers
    }

    /// Opens the next checkpoint's file for writing `plan`'s pages.
    pub fn begin_checkpoint(&mut self, dir: &Path, plan: SnapshotPlan) -> Result<CheckpointFile> {
        let target = self.target();
        let path = dir.join(FILE_NAMES[target]);
        let io = |e| StorageError::io("writing an index checkpoint", e);
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let length = file_length_bytes(page_count(plan.slot_count));
        if file.metadata().map_err(io)?.len() != length {
            // A new file, or one of another table size: every page goes out anyway.
            file.set_len(length).map_err(io)?;
        }
        // From here on the file's pages hold no single table until its header says so.
        self.files[target].covers = None;
        Ok(CheckpointFile {
            file,
            target,
            created,
            plan,
            unsynced_bytes: 0,
        })
    }
}

/// A checkpoint being written into one file (see the module docs).
#[derive(Debug)]
pub struct CheckpointFile {
    file: File,
    target: usize,
    created: bool,
    plan: SnapshotPlan,
    unsynced_bytes: usize,
}

impl CheckpointFile {
    /// The snapshot this checkpoint writes.
    pub fn plan(&self) -> &SnapshotPlan {
        &self.plan
    }

    /// Writes `batch`'s pages (runs of consecutive pages in one call each), syncing
    /// the file every [`CHECKPOINT_SYNC_BYTES`].
    pub fn write_pages(&mut self, batch: &PageBatch) -> Result<()> {
        let io = |e| StorageError::io("writing an index checkpoint", e);
        let mut run_start = 0;
        for index in 0..batch.pages.len() {
            let page = batch.pages[index];
            let bytes = &batch.bytes[index * PAGE_SIZE_BYTES..(index + 1) * PAGE_SIZE_BYTES];
            self.plan.checksums[page] = crc32fast::hash(bytes);
            let run_ends = batch
                .pages
                .get(index + 1)
                .is_none_or(|&next| next != page + 1);
            if run_ends {
                let first_page = batch.pages[run_start];
                self.file
                    .write_all_at(
                        &batch.bytes[run_start * PAGE_SIZE_BYTES..(index + 1) * PAGE_SIZE_BYTES],
                        (FILE_HEADER_SIZE_BYTES + first_page * PAGE_SIZE_BYTES) as u64,
                    )
                    .map_err(io)?;
                run_start = index + 1;
            }
        }
        self.unsynced_bytes += batch.bytes.len();
        if self.unsynced_bytes >= CHECKPOINT_SYNC_BYTES {
            self.file.sync_data().map_err(io)?;
            self.unsynced_bytes = 0;
        }
        Ok(())
    }

    /// Writes the page checksums, syncs, then writes the header making this file the
    /// newest checkpoint, covering the log up to `checkpoint`, and syncs again (and
    /// the directory, for a new file). The caller must have made the log durable up to
    /// `checkpoint` first. Returns the checksums for [`Table::end_snapshot`].
    pub fn finish(
        self,
        dir: &Path,
        checkpoint: Checkpoint,
        files: &mut IndexFiles,
    ) -> Result<Vec<u32>> {
        let io = |e| StorageError::io("writing an index checkpoint", e);
        let pages = self.plan.checksums.len();
        let mut checksum_bytes = Vec::with_capacity(pages * 4);
        for checksum in &self.plan.checksums {
            checksum_bytes.extend_from_slice(&checksum.to_le_bytes());
        }
        self.file
            .write_all_at(
                &checksum_bytes,
                (FILE_HEADER_SIZE_BYTES + pages * PAGE_SIZE_BYTES) as u64,
            )
            .map_err(io)?;
        self.file.sync_data().map_err(io)?;
        let generation = files.files.iter().map(|f| f.generation).max().unwrap_or(0) + 1;
        let header = Header {
            bits: self.plan.bits,
            slot_count: self.plan.slot_count as u64,
            entry_count: self.plan.entry_count,
            checkpoint,
            generation,
            checksums_crc: crc32fast::hash(&checksum_bytes),
        };
        self.file.write_all_at(&header.encode(), 0).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        if self.created {
            crate::segment::sync_directory(dir)?;
        }
        files.files[self.target] = FileState {
            generation,
            covers: Some((self.plan.incarnation, self.plan.epoch)),
        };
        Ok(self.plan.checksums)
    }
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
                let new = Entry {
                    tombstone: rng.chance(0.3),
                    ..entry(hash, step + 1)
                };
                if model.contains_key(&hash) {
                    let (slot, _) = table.find(hash).next().unwrap();
                    table.replace(slot, new);
                } else {
                    match table.insert(new) {
                        Ok(_) => {}
                        Err(InsertError::NeedsGrowth) => {
                            table = table.grown().unwrap();
                            table.insert(new).unwrap();
                        }
                    }
                }
                model.insert(hash, (step + 1, new.tombstone));
            } else if model.remove(&hash).is_some() {
                let (slot, _) = table.find(hash).next().unwrap();
                table.remove(slot);
            }
        }
        assert_sorted_and_homed(&table);
        assert_eq!(table.len(), model.len() as u64);
        let live = model.values().filter(|(_, tombstone)| !tombstone).count();
        assert_eq!(table.live_len(), live as u64);
        for (&hash, &(sequence, _)) in &model {
            let found: Vec<_> = table.find(hash).collect();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].1.sequence, sequence);
        }
        let all: Vec<u64> = table.entries().map(|e| e.hash).collect();
        assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
    }

    /// The growing copy holds exactly this table's entries up to its cursor.
    fn assert_copy_matches(table: &Table) {
        let Some(growth) = &table.growth else { return };
        let Some(through) = growth.copied_through else {
            assert!(growth.table.is_empty());
            return;
        };
        let here: Vec<Entry> = table.range(0, None, through).collect();
        let there: Vec<Entry> = growth.table.entries().collect();
        let first_difference = here.iter().zip(&there).position(|(a, b)| a != b);
        assert!(
            here.len() == there.len() && first_difference.is_none(),
            "copy through {through:#x}: {} entries here, {} there, first difference at {first_difference:?}",
            here.len(),
            there.len()
        );
        assert_sorted_and_homed(&growth.table);
    }

    #[test]
    fn a_table_grows_alongside_its_changes_never_in_one_go() {
        for seed in [1u64, 2, 3] {
            println!("seed {seed}");
            let mut rng = Rng::new(seed);
            let mut table = Table::with_bits(TABLE_BITS_MIN).unwrap();
            // (hash, key id) -> entry; pairs of keys share a hash, so copy steps meet
            // runs of equal hashes.
            let mut model = std::collections::BTreeMap::new();
            let mut steps_growing = 0u32;
            for step in 0..60_000u64 {
                let hash = rng.below(4_000).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let id = rng.below(2) as u32;
                let slot_of = |table: &Table| {
                    table
                        .find(hash)
                        .find(|(_, e)| e.offset == id)
                        .map(|(slot, _)| slot)
                };
                if rng.chance(0.65) {
                    let new = Entry {
                        offset: id,
                        tombstone: rng.chance(0.2),
                        ..entry(hash, step + 1)
                    };
                    match slot_of(&table) {
                        Some(slot) => table.replace(slot, new),
                        None => {
                            let placed = table.insert(new);
                            assert_eq!(placed.map(|slot| table.get(slot)), Ok(Some(new)));
                        }
                    }
                    model.insert((hash, id), new);
                } else if model.remove(&(hash, id)).is_some() {
                    let slot = slot_of(&table).unwrap();
                    table.remove(slot);
                }
                steps_growing += u32::from(table.is_growing());
                assert_eq!(table.len(), model.len() as u64, "seed {seed} step {step}");
                if step % 97 == 0 {
                    assert_copy_matches(&table);
                }
            }
            assert_sorted_and_homed(&table);
            let all: Vec<Entry> = table.entries().collect();
            let mut expected: Vec<Entry> = model.values().copied().collect();
            expected.sort_by_key(|e| e.hash);
            let key = |e: &Entry| (e.hash, e.offset);
            let mut all_sorted = all.clone();
            all_sorted.sort_by_key(key);
            expected.sort_by_key(key);
            assert_eq!(all_sorted, expected, "seed {seed}");
            // About 5,200 keys end up held: from 1,024 home slots to 8,192, every
            // doubling alongside the changes.
            assert!(
                table.bits >= TABLE_BITS_MIN + 3,
                "seed {seed}: bits {}",
                table.bits
            );
            assert!(steps_growing > 0);
        }
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

    const CHECKPOINT: Checkpoint = Checkpoint {
        segment_id: 3,
        offset: 4096,
        next_sequence: 1 << 40,
        next_segment_id: 4,
    };

    /// A whole checkpoint, taken in steps of 3 pages; returns the pages written.
    fn checkpoint(table: &mut Table, dir: &Path, files: &mut IndexFiles) -> usize {
        let plan = table.begin_snapshot(files.target_covers());
        let mut file = files.begin_checkpoint(dir, plan.clone()).unwrap();
        let mut batch = PageBatch::default();
        let mut cursor = 0;
        loop {
            assert!(table.take_snapshot_pages(&plan, &mut cursor, 3, &mut batch));
            if batch.is_empty() {
                break;
            }
            file.write_pages(&batch).unwrap();
        }
        let checksums = file.finish(dir, CHECKPOINT, files).unwrap();
        table.end_snapshot(&plan, Some(checksums));
        plan.pages
    }

    fn reopen(dir: &Path) -> Result<Option<(Table, Checkpoint)>> {
        IndexFiles::read(dir)?.load(dir, 1 << 21)
    }

    fn filled(entries: u64, seed: u64) -> Table {
        let mut table = Table::with_bits(TABLE_BITS_MIN + 2).unwrap();
        let mut rng = Rng::new(seed);
        for sequence in 1..=entries {
            table
                .insert(entry(rng.next_u64(), sequence))
                .unwrap_or_else(|_| panic!("full"));
        }
        table
    }

    #[test]
    fn a_checkpoint_reopens_identically_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = filled(500, 1);
        let tombstones: Vec<(usize, Entry)> = (0..table.slot_count())
            .filter_map(|slot| table.get(slot).map(|e| (slot, e)))
            .step_by(7)
            .collect();
        for &(slot, e) in &tombstones {
            table.replace(
                slot,
                Entry {
                    tombstone: true,
                    ..e
                },
            );
        }
        assert_eq!(table.live_len(), 500 - tombstones.len() as u64);
        let mut files = IndexFiles::read(dir.path()).unwrap();
        checkpoint(&mut table, dir.path(), &mut files);
        let (reopened, read_back) = reopen(dir.path()).unwrap().unwrap();
        assert_eq!(read_back, CHECKPOINT);
        assert!(reopened.entries().eq(table.entries()));
        assert_eq!(reopened.live_len(), table.live_len());

        let path = dir.path().join(FILE_NAMES[0]);
        let pristine = std::fs::read(&path).unwrap();
        for at in [
            0,
            13,
            40,
            61,
            66,
            70,
            FILE_HEADER_SIZE_BYTES + 9,
            FILE_HEADER_SIZE_BYTES + 3 * PAGE_SIZE_BYTES + 100,
            pristine.len() - 1,
        ] {
            let mut damaged = pristine.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            assert!(
                matches!(
                    reopen(dir.path()),
                    Err(StorageError::Corrupt { .. }) | Ok(None)
                ),
                "damage at byte {at} went unnoticed"
            );
        }
        std::fs::write(&path, &pristine[..pristine.len() - 32]).unwrap();
        assert!(matches!(
            reopen(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(reopen(dir.path()), Ok(None)));
    }

    #[test]
    fn checkpoints_alternate_files_and_write_only_the_pages_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = filled(2_000, 2);
        let pages = page_count(table.slot_count());
        let mut files = IndexFiles::read(dir.path()).unwrap();
        // Both files start unknown: each gets every page once.
        assert_eq!(checkpoint(&mut table, dir.path(), &mut files), pages);
        assert_eq!(checkpoint(&mut table, dir.path(), &mut files), pages);
        // One changed entry: one page for the next file, and for the one after.
        let mut changed = table.entries().nth(700).unwrap();
        let slot = table.find(changed.hash).next().unwrap().0;
        changed.sequence = 5_000;
        table.replace(slot, changed);
        assert_eq!(checkpoint(&mut table, dir.path(), &mut files), 1);
        assert_eq!(checkpoint(&mut table, dir.path(), &mut files), 1);
        assert_eq!(checkpoint(&mut table, dir.path(), &mut files), 0);
        let (reopened, _) = reopen(dir.path()).unwrap().unwrap();
        assert!(reopened.entries().eq(table.entries()));

        // After a reopen, the file it came from is current and the other unknown.
        let mut files = IndexFiles::read(dir.path()).unwrap();
        let (mut reopened, _) = files.load(dir.path(), 1 << 21).unwrap().unwrap();
        assert_eq!(checkpoint(&mut reopened, dir.path(), &mut files), pages);
        assert_eq!(checkpoint(&mut reopened, dir.path(), &mut files), 0);
        // After a resize, every page again.
        let mut grown = reopened.grown().unwrap();
        let grown_pages = page_count(grown.slot_count());
        assert_eq!(checkpoint(&mut grown, dir.path(), &mut files), grown_pages);
        assert_eq!(checkpoint(&mut grown, dir.path(), &mut files), grown_pages);
        let (last, _) = reopen(dir.path()).unwrap().unwrap();
        assert!(last.entries().eq(table.entries()));
    }

    /// `count` inserts of random hashes (sequences from `first_sequence`), each
    /// followed by two removals of random slots.
    fn churn(table: &mut Table, rng: &mut Rng, first_sequence: u64, count: u64) {
        for sequence in first_sequence..first_sequence + count {
            table.insert(entry(rng.next_u64(), sequence)).unwrap();
            for _ in 0..2 {
                let victim = rng.below(table.slot_count() as u64) as usize;
                table.remove(victim);
            }
        }
    }

    #[test]
    fn a_snapshot_holds_the_table_as_it_began_while_changes_go_on() {
        let seed = 0xC0FFEE;
        println!("seed {seed}");
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut table = filled(1_500, seed);
        let mut files = IndexFiles::read(dir.path()).unwrap();
        checkpoint(&mut table, dir.path(), &mut files);
        for round in 0..4 {
            // Changes before the snapshot, some of which it must carry.
            churn(&mut table, &mut rng, 10_000, 200);
            let expected: Vec<Entry> = table.entries().collect();
            let plan = table.begin_snapshot(files.target_covers());
            let mut file = files.begin_checkpoint(dir.path(), plan.clone()).unwrap();
            let mut batch = PageBatch::default();
            let mut cursor = 0;
            loop {
                // Inserts and removals shift clusters across pages, taken or not.
                churn(&mut table, &mut rng, 20_000, 20);
                assert!(table.take_snapshot_pages(&plan, &mut cursor, 2, &mut batch));
                if batch.is_empty() {
                    break;
                }
                file.write_pages(&batch).unwrap();
            }
            let checksums = file.finish(dir.path(), CHECKPOINT, &mut files).unwrap();
            table.end_snapshot(&plan, Some(checksums));
            let (reopened, _) = reopen(dir.path()).unwrap().unwrap();
            let found: Vec<Entry> = reopened.entries().collect();
            assert_eq!(found, expected, "round {round}");
        }
    }

    #[test]
    fn a_checkpoint_cut_before_its_header_leaves_the_previous_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = filled(800, 3);
        let mut files = IndexFiles::read(dir.path()).unwrap();
        checkpoint(&mut table, dir.path(), &mut files);
        checkpoint(&mut table, dir.path(), &mut files);
        let before: Vec<Entry> = table.entries().collect();
        for sequence in 0..300 {
            table
                .insert(entry(sequence << 50 | 7, 9_000 + sequence))
                .unwrap();
        }
        // Pages written and synced into the older file, no header: the newer stays.
        let plan = table.begin_snapshot(files.target_covers());
        let mut file = files.begin_checkpoint(dir.path(), plan.clone()).unwrap();
        let mut batch = PageBatch::default();
        let mut cursor = 0;
        assert!(table.take_snapshot_pages(&plan, &mut cursor, usize::MAX, &mut batch));
        file.write_pages(&batch).unwrap();
        drop(file);
        table.end_snapshot(&plan, None);
        let (reopened, _) = reopen(dir.path()).unwrap().unwrap();
        assert!(reopened.entries().eq(before.iter().copied()));
        // The next checkpoint goes to the same file again, with every page it needs.
        checkpoint(&mut table, dir.path(), &mut files);
        let (reopened, _) = reopen(dir.path()).unwrap().unwrap();
        assert!(reopened.entries().eq(table.entries()));
    }

    #[test]
    fn a_resize_ends_the_snapshot_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = filled(100, 4);
        let mut files = IndexFiles::read(dir.path()).unwrap();
        let plan = table.begin_snapshot(files.target_covers());
        let _file = files.begin_checkpoint(dir.path(), plan.clone()).unwrap();
        let mut grown = table.grown().unwrap();
        let mut batch = PageBatch::default();
        assert!(!grown.take_snapshot_pages(&plan, &mut 0, 8, &mut batch));
    }
}
