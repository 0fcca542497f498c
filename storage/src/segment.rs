//! Segment files: append-only, preallocated, each with a checksummed header.
//!
//! A segment is named `<id>.seg` (ten decimal digits). It starts with a 32-byte header,
//! then records back to back, then zeros up to its preallocated size:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RINGKVSG` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | segment id |
//! | 16 | 8 | min sequence: no record in this segment has a smaller sequence |
//! | 24 | 1 | kind: 0 log (appended by writers), 1 compacted (written by compaction) |
//! | 25 | 3 | reserved, 0 |
//! | 28 | 4 | CRC32 of bytes 0..28 |
//!
//! A compaction output is first written as `<id>.seg.tmp`, synced, then renamed; a
//! `.tmp` found at open is an unfinished compaction and is deleted.
//!
//! An obsolete segment is deleted in steps ([`Segment::delete_in_steps`]): renamed to
//! `<id>.seg.old` (and the directory synced), then shrunk [`DELETE_STEP_BYTES`] at a
//! time, then unlinked. On a filesystem mounted with online discard, freeing a whole
//! 64 MiB segment at once queues one large discard on the device, and every log sync
//! behind it waited 10-13 ms (BENCHMARKS.md); steps keep what a sync can queue behind
//! to one step's discard. An `.old` found at open was on its way out and is deleted.
//!
//! Scanning has two modes. The newest log segment is scanned in [`ScanMode::CutAtFirstInvalid`]:
//! its tail may be torn by a crash, so the first invalid record ends it. A valid record
//! further on means the invalid one was damage, not a torn write: the region is
//! reported as corrupt (so the owner knows durable records were lost) and the log still
//! ends at the invalid record, since records after it may be the stale rest of an
//! aborted batch. Every other segment is complete, so [`ScanMode::SkipCorrupt`] reports
//! an invalid region, looks for the next valid record after it and goes on; zeros at
//! the end are the preallocated space, not corruption.

use crate::error::{Result, StorageError};
use crate::record::{self, Bounds, Decoded, Record};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the segment header; the first record starts here.
pub const HEADER_SIZE_BYTES: u32 = 32;
const MAGIC: &[u8; 8] = b"RINGKVSG";
const FORMAT_VERSION: u32 = 1;
/// Largest record head (header and key) a read needs room for.
pub const HEAD_SIZE_BYTES_MAX: usize =
    record::HEADER_SIZE_BYTES + ringkv_core::limits::KEY_SIZE_BYTES_MAX;
/// Bytes read per scan window.
const SCAN_WINDOW_BYTES: usize = 4 << 20;

/// Who wrote a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// Appended by writers; the newest one is the active segment.
    Log,
    /// Written whole by compaction.
    Compacted,
}

/// One open segment file.
#[derive(Debug)]
pub struct Segment {
    pub id: u32,
    pub kind: SegmentKind,
    pub min_sequence: u64,
    file: File,
    path: PathBuf,
    /// Bytes of records the index points to (live values and needed tombstones).
    live_bytes: AtomicU64,
    /// End of the written records (for sealed segments, where the data ends).
    end_offset: AtomicU64,
    /// A copy of the segment's bytes in memory, for the newest log segments (see
    /// [`Segment::keep_in_memory`]): reads of records there cost no syscall.
    memory: parking_lot::RwLock<Option<MmapMut>>,
}

/// File name of segment `id`.
pub fn file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// Bytes an obsolete segment shrinks by per step of its deletion.
pub const DELETE_STEP_BYTES: u64 = 4 << 20;
/// Pause between two steps of a deletion, so the device serves what queued meanwhile.
pub const DELETE_STEP_PAUSE_MS: u64 = 1;

/// Parses a directory entry: `Some((id, is_leftover))` for segment files, where a
/// leftover is an unfinished compaction output (`.seg.tmp`) or an obsolete segment
/// whose deletion was cut short (`.seg.old`), both to be deleted at open.
pub fn parse_file_name(name: &str) -> Option<(u32, bool)> {
    let (stem, leftover) = match name
        .strip_suffix(".seg.tmp")
        .or_else(|| name.strip_suffix(".seg.old"))
    {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".seg")?, false),
    };
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, leftover))
}

/// A valid log segment header, for the recovery fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_header(id: u32) -> [u8; HEADER_SIZE_BYTES as usize] {
    encode_header(id, SegmentKind::Log, 0)
}

fn encode_header(
    id: u32,
    kind: SegmentKind,
    min_sequence: u64,
) -> [u8; HEADER_SIZE_BYTES as usize] {
    let mut header = [0u8; HEADER_SIZE_BYTES as usize];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&id.to_le_bytes());
    header[16..24].copy_from_slice(&min_sequence.to_le_bytes());
    header[24] = match kind {
        SegmentKind::Log => 0,
        SegmentKind::Compacted => 1,
    };
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

fn decode_header(
    bytes: &[u8; HEADER_SIZE_BYTES as usize],
) -> core::result::Result<(u32, SegmentKind, u64), &'static str> {
    if &bytes[0..8] != MAGIC {
        return Err("bad segment magic");
    }
    if crc32fast::hash(&bytes[..28]).to_le_bytes() != bytes[28..32] {
        return Err("segment header checksum mismatch");
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err("unknown segment format version");
    }
    let id = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let mut min = [0u8; 8];
    min.copy_from_slice(&bytes[16..24]);
    let kind = match bytes[24] {
        0 => SegmentKind::Log,
        1 => SegmentKind::Compacted,
        _ => return Err("unknown segment kind"),
    };
    Ok((id, kind, u64::from_le_bytes(min)))
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_directory(dir: &Path) -> Result<()> {
    if crate::store::sabotage::directory_syncs_skipped() {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("syncing the data directory", e))
}

/// Creates `dir` and every missing ancestor, durably: after a power cut the directory
/// exists. A new directory's entry lives in its parent, so each parent of a directory
/// created here is fsynced, deepest first, up to the first ancestor that already
/// existed (whose entry for the new child is what its fsync makes durable). A `dir`
/// that already exists is left alone.
pub fn create_directory_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The directories to create, deepest first; bounded by the path's depth.
    let mut missing: Vec<&Path> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in &missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !crate::store::sabotage::directory_syncs_skipped() {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// What a scan reports, in file order.
#[derive(Debug)]
pub enum ScanEvent<'a> {
    /// A verified record at `offset`.
    Record { offset: u32, record: Record<'a> },
    /// Bytes from `offset` for `size_bytes` hold no valid record (skip mode only).
    Corrupt {
        offset: u32,
        size_bytes: u32,
        reason: &'static str,
    },
}

/// How a scan treats an invalid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// The newest log segment: the first invalid record is the torn end of the log.
    CutAtFirstInvalid,
    /// Any other segment: report the bad region and continue after it.
    SkipCorrupt,
}

impl Segment {
    /// The error for a record at `offset` of this segment that is not what it should be.
    fn corrupt(&self, offset: u32, reason: &'static str) -> StorageError {
        StorageError::Corrupt {
            segment_id: self.id,
            offset,
            reason,
        }
    }

    /// Creates segment `id` (as `<id>.seg.tmp` when `temporary`), preallocates it and
    /// writes and syncs its header. The caller syncs the directory.
    pub fn create(
        dir: &Path,
        id: u32,
        kind: SegmentKind,
        min_sequence: u64,
        size_bytes: u32,
        temporary: bool,
    ) -> Result<Segment> {
        let mut name = file_name(id);
        if temporary {
            name.push_str(".tmp");
        }
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io("creating a segment", e))?;
        let cleanup = |error: StorageError| {
            let _ = std::fs::remove_file(&path);
            error
        };
        preallocate(&file, size_bytes).map_err(cleanup)?;
        file.write_all_at(&encode_header(id, kind, min_sequence), 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| cleanup(StorageError::io("writing a segment header", e)))?;
        Ok(Segment {
            id,
            kind,
            min_sequence,
            file,
            path,
            live_bytes: AtomicU64::new(0),
            end_offset: AtomicU64::new(u64::from(HEADER_SIZE_BYTES)),
            memory: parking_lot::RwLock::new(None),
        })
    }

    /// Opens an existing segment and verifies its header.
    pub fn open(path: &Path, expected_id: u32) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("opening a segment", e))?;
        let mut header = [0u8; HEADER_SIZE_BYTES as usize];
        let corrupt = |reason| StorageError::Corrupt {
            segment_id: expected_id,
            offset: 0,
            reason,
        };
        file.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt("segment shorter than its header"))?;
        let (id, kind, min_sequence) = decode_header(&header).map_err(corrupt)?;
        if id != expected_id {
            return Err(corrupt("segment id differs from its file name"));
        }
        Ok(Segment {
            id,
            kind,
            min_sequence,
            file,
            path: path.to_path_buf(),
            live_bytes: AtomicU64::new(0),
            end_offset: AtomicU64::new(u64::from(HEADER_SIZE_BYTES)),
            memory: parking_lot::RwLock::new(None),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps a copy of every record committed from now on in memory: `reuse`, an
    /// older segment's copy or a spare (the store's, populated at open) of the same
    /// size, or else `size_bytes` (the segment's size) newly mapped
    /// (`memory::huge_page_memory`, touched as records come; when the mapping fails, no
    /// copy is kept and reads go to the file). Only for a segment with
    /// nothing written past its header yet, so that every record a read can be
    /// pointed at is in the copy. A reused copy still holds the older segment's bytes
    /// past what this one wrote; no read goes there, since reads are only of records
    /// the index points at, each copied in before it was committed.
    pub fn keep_in_memory(&self, size_bytes: u32, reuse: Option<MmapMut>) {
        debug_assert_eq!(self.end_offset(), HEADER_SIZE_BYTES);
        let memory = reuse
            .filter(|memory| memory.len() == size_bytes as usize)
            .or_else(|| crate::memory::huge_page_memory(size_bytes as usize, false).ok());
        *self.memory.write() = memory;
    }

    /// Takes the in-memory copy away (reads go to the file again), for the next
    /// segment to reuse: a rotation runs under the writer lock, and freeing 64 MiB of
    /// touched pages there would hold up every put while it runs.
    pub fn take_memory(&self) -> Option<MmapMut> {
        self.memory.write().take()
    }

    /// Copies records written at `offset` into the in-memory copy, if there is one.
    /// The store calls it before the index points at them.
    pub fn remember(&self, offset: u32, bytes: &[u8]) {
        if let Some(memory) = self.memory.write().as_mut() {
            let start = offset as usize;
            if let Some(target) = memory.get_mut(start..start + bytes.len()) {
                target.copy_from_slice(bytes);
            }
        }
    }

    /// Copies `out.len()` bytes at `offset` from the in-memory copy; false when there
    /// is none (or the range is outside it).
    fn read_memory(&self, offset: u32, out: &mut [&mut [u8]]) -> bool {
        let memory = self.memory.read();
        let Some(memory) = memory.as_ref() else {
            return false;
        };
        let start = offset as usize;
        let length: usize = out.iter().map(|part| part.len()).sum();
        let Some(mut source) = memory.get(start..start + length) else {
            return false;
        };
        for part in out.iter_mut() {
            let (here, rest) = source.split_at(part.len());
            part.copy_from_slice(here);
            source = rest;
        }
        true
    }

    /// Deletes this obsolete segment in steps (see the module docs): renamed to
    /// `<id>.seg.old` and the directory synced, so that a crash part way never leaves
    /// a shortened segment under its live name, then shrunk [`DELETE_STEP_BYTES`] at a
    /// time and unlinked. The caller holds the only reference, so no reader is
    /// reading it; the caller syncs the directory afterwards.
    pub fn delete_in_steps(&self, dir: &Path) -> Result<()> {
        let old = dir.join(format!("{}.old", file_name(self.id)));
        std::fs::rename(&self.path, &old)
            .map_err(|e| StorageError::io("renaming an obsolete segment", e))?;
        sync_directory(dir)?;
        let mut length = self.file_size_bytes()?;
        while length > 0 {
            length = length.saturating_sub(DELETE_STEP_BYTES);
            self.file
                .set_len(length)
                .map_err(|e| StorageError::io("shrinking an obsolete segment", e))?;
            if length > 0 {
                std::thread::sleep(std::time::Duration::from_millis(DELETE_STEP_PAUSE_MS));
            }
        }
        std::fs::remove_file(&old).map_err(|e| StorageError::io("deleting an obsolete segment", e))
    }

    /// The open file (the io_uring shell writes and syncs through its descriptor).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size of the file on disk, preallocated space included.
    pub fn file_size_bytes(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| StorageError::io("reading segment size", e))
    }

    /// Writes `bytes` at `offset`.
    pub fn write_at(&self, bytes: &[u8], offset: u32) -> Result<()> {
        self.file
            .write_all_at(bytes, u64::from(offset))
            .map_err(|e| StorageError::io("appending to a segment", e))
    }

    /// Makes everything written so far durable (data, and the size if it changed).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("syncing a segment", e))
    }

    /// Reads the record at `offset` of `size_bytes` into `buffer` and verifies it.
    pub fn read_record<'b>(
        &self,
        offset: u32,
        size_bytes: u32,
        bounds: Bounds,
        buffer: &'b mut Vec<u8>,
    ) -> Result<Record<'b>> {
        let corrupt = |reason| self.corrupt(offset, reason);
        let size = size_bytes as usize;
        if size < record::HEADER_SIZE_BYTES
            || size
                > record::HEADER_SIZE_BYTES
                    + bounds.key_size_bytes_max
                    + bounds.value_size_bytes_max
        {
            return Err(corrupt("index length out of bounds"));
        }
        buffer.clear();
        buffer.resize(size, 0);
        match self.file.read_exact_at(buffer, u64::from(offset)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(corrupt("record past the end of the segment"));
            }
            Err(e) => return Err(StorageError::io("reading a record", e)),
        }
        match record::decode(buffer, bounds) {
            Decoded::Record(record) if record.size_bytes() == size => Ok(record),
            Decoded::Record(_) => Err(corrupt("record length differs from the index")),
            Decoded::Incomplete { .. } => Err(corrupt("record longer than the index says")),
            Decoded::Invalid(reason) => Err(corrupt(reason)),
        }
    }

    /// Reads the record at `offset` of `size_bytes`, expecting the key `key`: header and
    /// key land in `head`, the value in `value` (one vectored read, no copy). Tells
    /// whether the record holds `key` (and is a tombstone) or another key (a hash
    /// collision). Everything is verified before `value` counts. With
    /// [`ReadWait::PageCacheOnly`] the read is one `preadv2(RWF_NOWAIT)`: whatever
    /// would wait for the device (data not cached, a short read, a kernel or
    /// filesystem without the flag) answers [`ValueRead::NotCached`] instead.
    #[allow(clippy::too_many_arguments)]
    pub fn read_value(
        &self,
        offset: u32,
        size_bytes: u32,
        key: &[u8],
        bounds: Bounds,
        head: &mut [u8; HEAD_SIZE_BYTES_MAX],
        value: &mut Vec<u8>,
        wait: ReadWait,
    ) -> Result<ValueRead> {
        let size = size_bytes as usize;
        let head_size = record::HEADER_SIZE_BYTES + key.len();
        if head_size > HEAD_SIZE_BYTES_MAX {
            return Ok(ValueRead::OtherKey);
        }
        if size < head_size
            || size
                > record::HEADER_SIZE_BYTES
                    + bounds.key_size_bytes_max
                    + bounds.value_size_bytes_max
        {
            // Too short to hold this key: it is another record; read it whole to check
            // (rare: a hash collision), always from a thread that may wait.
            if wait == ReadWait::PageCacheOnly {
                return Ok(ValueRead::NotCached);
            }
            let mut whole = Vec::new();
            let record = self.read_record(offset, size_bytes, bounds, &mut whole)?;
            return Ok(if record.key == key {
                ValueRead::Key {
                    tombstone: record.header.tombstone,
                }
            } else {
                ValueRead::OtherKey
            });
        }
        let head = &mut head[..head_size];
        // Reusing the caller's buffer: no zeroing when its length already fits.
        value.resize(size - head_size, 0);
        if !self.read_head_and_value(offset, head, value, wait)? {
            return Ok(ValueRead::NotCached);
        }
        self.check_head_and_value(offset, key, bounds, head, value)
    }

    /// Reads a record's head and value into `head` and `value` (their lengths are the
    /// record's); false when `wait` is `PageCacheOnly` and the page cache does not
    /// hold all of it.
    fn read_head_and_value(
        &self,
        offset: u32,
        head: &mut [u8],
        value: &mut [u8],
        wait: ReadWait,
    ) -> Result<bool> {
        if self.read_memory(offset, &mut [&mut *head, &mut *value]) {
            return Ok(true);
        }
        let (head_size, size) = (head.len(), head.len() + value.len());
        let mut done = {
            let mut slices = [
                std::io::IoSliceMut::new(head),
                std::io::IoSliceMut::new(value),
            ];
            match wait {
                ReadWait::Allowed => rustix::io::preadv(&self.file, &mut slices, u64::from(offset))
                    .map_err(|e| StorageError::io("reading a record", e.into()))?,
                ReadWait::PageCacheOnly => {
                    match rustix::io::preadv2(
                        &self.file,
                        &mut slices,
                        u64::from(offset),
                        rustix::io::ReadWriteFlags::NOWAIT,
                    ) {
                        Ok(read) if read == size => read,
                        // Partly cached, past the end, or would block: a thread that
                        // may wait reads it again from the start and reports errors.
                        Ok(_) | Err(_) => return Ok(false),
                    }
                }
            }
        };
        // A short read (end of file, or interrupted) is finished piecewise.
        while done < size {
            let (buffer, at) = if done < head_size {
                (&mut head[done..], done)
            } else {
                (&mut value[done - head_size..], done)
            };
            match self.file.read_at(buffer, u64::from(offset) + at as u64) {
                Ok(0) => return Err(self.corrupt(offset, "record past the end of the segment")),
                Ok(read) => done += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io("reading a record", e)),
            }
        }
        Ok(true)
    }

    /// Checks a record read whole (header, length, checksum) and whether it holds
    /// `key`.
    fn check_head_and_value(
        &self,
        offset: u32,
        key: &[u8],
        bounds: Bounds,
        head: &[u8],
        value: &[u8],
    ) -> Result<ValueRead> {
        let corrupt = |reason| self.corrupt(offset, reason);
        let header = record::decode_header(head, bounds).map_err(|outcome| match outcome {
            Decoded::Invalid(reason) => corrupt(reason),
            _ => corrupt("record header incomplete"),
        })?;
        if header.record_size_bytes() != head.len() + value.len() {
            return Err(corrupt("record length differs from the index"));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[..20]);
        hasher.update(&head[record::HEADER_SIZE_BYTES..]);
        hasher.update(value);
        if hasher.finalize() != header.crc {
            return Err(corrupt("checksum mismatch"));
        }
        if usize::from(header.key_size_bytes) != key.len()
            || &head[record::HEADER_SIZE_BYTES..] != key
        {
            return Ok(ValueRead::OtherKey);
        }
        Ok(ValueRead::Key {
            tombstone: header.tombstone,
        })
    }

    /// True when the record at `offset` holds `key`. One read of the header and a
    /// key's length into a stack buffer, no allocation: this runs on every overwrite's
    /// commit. The header is checked; the checksum is not (callers only tell keys
    /// apart here, and every read of a value verifies it in full).
    pub fn holds_key(&self, offset: u32, key: &[u8], bounds: Bounds) -> Result<bool> {
        let corrupt = |reason| self.corrupt(offset, reason);
        let head_size = record::HEADER_SIZE_BYTES + key.len();
        if head_size > HEAD_SIZE_BYTES_MAX {
            return Ok(false);
        }
        let mut head = [0u8; HEAD_SIZE_BYTES_MAX];
        let mut read = 0;
        if self.read_memory(offset, &mut [&mut head[..head_size]]) {
            read = head_size;
        }
        while read < head_size {
            match self
                .file
                .read_at(&mut head[read..head_size], u64::from(offset) + read as u64)
            {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StorageError::io("reading a record key", e)),
            }
        }
        if read < record::HEADER_SIZE_BYTES {
            return Err(corrupt("record header unreadable"));
        }
        let header =
            record::decode_header(&head[..read], bounds).map_err(|outcome| match outcome {
                Decoded::Invalid(reason) => corrupt(reason),
                _ => corrupt("record header incomplete"),
            })?;
        if usize::from(header.key_size_bytes) != key.len() {
            return Ok(false);
        }
        if read < head_size {
            return Err(corrupt("record key unreadable"));
        }
        Ok(&head[record::HEADER_SIZE_BYTES..head_size] == key)
    }

    /// Visits the records from `from` to the end of the data, in file order, and returns
    /// the offset just past the last valid record.
    pub fn scan(
        &self,
        from: u32,
        bounds: Bounds,
        mode: ScanMode,
        mut visit: impl FnMut(ScanEvent<'_>) -> Result<()>,
    ) -> Result<u32> {
        let file_size = self.file_size_bytes()?.min(u64::from(u32::MAX));
        let mut window = Vec::new();
        let mut window_start = u64::from(from);
        let mut position = u64::from(from);
        let mut valid_end = u64::from(from.max(HEADER_SIZE_BYTES));
        let mut bad_region_start: Option<(u64, &'static str)> = None;
        // CutAtFirstInvalid: where the log ends, once an invalid record was found.
        let mut cut: Option<u64> = None;
        while position < file_size {
            let in_window = (position - window_start) as usize;
            if in_window >= window.len() || window.len() - in_window < record::HEADER_SIZE_BYTES {
                self.fill_window(&mut window, position, SCAN_WINDOW_BYTES, file_size)?;
                window_start = position;
            }
            let at = (position - window_start) as usize;
            let mut outcome = record::decode(&window[at..], bounds);
            if let Decoded::Incomplete { needed } = outcome {
                if position + needed as u64 <= file_size && needed > window.len() - at {
                    self.fill_window(
                        &mut window,
                        position,
                        needed.max(SCAN_WINDOW_BYTES),
                        file_size,
                    )?;
                    window_start = position;
                    outcome = record::decode(&window, bounds);
                }
            }
            let at = (position - window_start) as usize;
            let reason = match outcome {
                Decoded::Record(record) => {
                    if let Some((start, reason)) = bad_region_start.take() {
                        visit(ScanEvent::Corrupt {
                            offset: start as u32,
                            size_bytes: (position - start) as u32,
                            reason,
                        })?;
                    }
                    if let Some(end) = cut {
                        // Damage, not a torn write; the log still ends at it.
                        return Ok(end as u32);
                    }
                    let size = record.size_bytes() as u64;
                    visit(ScanEvent::Record {
                        offset: position as u32,
                        record,
                    })?;
                    position += size;
                    valid_end = position;
                    continue;
                }
                Decoded::Invalid(reason) => reason,
                Decoded::Incomplete { .. } => "record runs past the end of the segment",
            };
            if mode == ScanMode::CutAtFirstInvalid && cut.is_none() {
                cut = Some(valid_end);
            }
            if bad_region_start.is_none() {
                bad_region_start = Some((position, reason));
            }
            position += resynchronise(&window[at..]) as u64;
        }
        if let Some(end) = cut {
            // Nothing valid after the first invalid record: a torn tail.
            return Ok(end as u32);
        }
        if let Some((start, reason)) = bad_region_start {
            self.report_tail(start, reason, file_size, visit)?;
        }
        Ok(valid_end as u32)
    }

    /// An invalid region from `start` runs to the end of the file: the zeroed
    /// preallocated space (normal), or garbage (corruption in the last records),
    /// reported to `visit`.
    fn report_tail(
        &self,
        start: u64,
        reason: &'static str,
        file_size: u64,
        mut visit: impl FnMut(ScanEvent<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.is_zero(start, file_size)? {
            return Ok(());
        }
        visit(ScanEvent::Corrupt {
            offset: start as u32,
            size_bytes: (file_size - start) as u32,
            reason,
        })
    }

    fn fill_window(
        &self,
        window: &mut Vec<u8>,
        position: u64,
        size: usize,
        file_size: u64,
    ) -> Result<()> {
        let size = size.min((file_size - position) as usize);
        window.clear();
        window.resize(size, 0);
        self.file
            .read_exact_at(window, position)
            .map_err(|e| StorageError::io("scanning a segment", e))
    }

    pub(crate) fn is_zero(&self, from: u64, to: u64) -> Result<bool> {
        let mut buffer = vec![0u8; SCAN_WINDOW_BYTES];
        let mut position = from;
        while position < to {
            let size = ((to - position) as usize).min(buffer.len());
            self.file
                .read_exact_at(&mut buffer[..size], position)
                .map_err(|e| StorageError::io("scanning a segment", e))?;
            if buffer[..size].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            position += size as u64;
        }
        Ok(true)
    }

    /// Cuts everything from `offset` on (a torn tail) and re-zeroes the preallocated
    /// space, so a later scan cannot find stale records beyond the cut.
    pub fn cut_at(&self, offset: u32, size_bytes: u32) -> Result<()> {
        self.file
            .set_len(u64::from(offset))
            .map_err(|e| StorageError::io("cutting a torn tail", e))?;
        // Re-extending never needs more space than the cut freed; should it fail anyway,
        // a sparse extension reads as zeros just the same.
        if preallocate(&self.file, size_bytes).is_err() {
            self.file
                .set_len(u64::from(size_bytes))
                .map_err(|e| StorageError::io("cutting a torn tail", e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| StorageError::io("cutting a torn tail", e))
    }

    /// Live bytes (records the index points to).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Forgets the live byte count (before a recount).
    pub fn reset_live_bytes(&self) {
        self.live_bytes.store(0, Ordering::Relaxed);
    }

    /// Adjusts the live byte count by `delta` (saturating at zero).
    pub fn add_live_bytes(&self, delta: i64) {
        if delta >= 0 {
            self.live_bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.live_bytes
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Where the data ends (the append position for the active segment).
    pub fn end_offset(&self) -> u32 {
        self.end_offset.load(Ordering::Acquire) as u32
    }

    /// Records where the data ends.
    pub fn set_end_offset(&self, offset: u32) {
        self.end_offset.store(u64::from(offset), Ordering::Release);
    }

    /// Bytes of records written after the header.
    pub fn written_bytes(&self) -> u64 {
        u64::from(self.end_offset().saturating_sub(HEADER_SIZE_BYTES))
    }

    /// Written bytes that no longer count.
    pub fn dead_bytes(&self) -> u64 {
        self.written_bytes().saturating_sub(self.live_bytes())
    }

    /// Share of the written bytes that no longer count (0.0 to 1.0).
    pub fn dead_share(&self) -> f64 {
        let written = self.written_bytes();
        if written == 0 {
            return 0.0;
        }
        self.dead_bytes() as f64 / written as f64
    }
}

/// Whether a read may wait for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadWait {
    /// A blocking read: the caller is a thread that may wait for the disk.
    Allowed,
    /// Only what the page cache already holds (an event loop's inline read).
    PageCacheOnly,
}

/// What [`Segment::read_value`] found at an index position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRead {
    /// The record holds the key; `tombstone` when it is a delete.
    Key { tombstone: bool },
    /// The record holds another key sharing the hash.
    OtherKey,
    /// [`ReadWait::PageCacheOnly`] and the record is not (wholly) cached.
    NotCached,
}

fn preallocate(file: &File, size_bytes: u32) -> Result<()> {
    match rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::empty(),
        0,
        u64::from(size_bytes),
    ) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate (tmpfs on old kernels, some FUSE): a sparse file
        // still works; blocks are allocated on write, and ENOSPC then surfaces there.
        Err(rustix::io::Errno::OPNOTSUPP) => file
            .set_len(u64::from(size_bytes))
            .map_err(|e| StorageError::io("preallocating a segment", e)),
        Err(errno) => Err(StorageError::io("preallocating a segment", errno.into())),
    }
}

/// How far past an invalid byte at `bytes[0]` the next record can start: at the next
/// byte that begins the magic (or past the window).
fn resynchronise(bytes: &[u8]) -> usize {
    let magic_first = record::MAGIC.to_le_bytes()[0];
    bytes[1..]
        .iter()
        .position(|&b| b == magic_first)
        .map_or(bytes.len(), |p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_directory_is_created_once_and_an_existing_one_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("c");
        create_directory_durably(&dir).unwrap();
        assert!(dir.is_dir());
        std::fs::write(dir.join("f"), b"x").unwrap();
        create_directory_durably(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"x");
        let file = root.path().join("plain");
        std::fs::write(&file, b"y").unwrap();
        assert!(
            create_directory_durably(&file.join("under")).is_err(),
            "a file in the way is an error"
        );
    }

    const BOUNDS: Bounds = Bounds {
        key_size_bytes_max: 1024,
        value_size_bytes_max: 1 << 20,
    };

    #[test]
    fn file_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(file_name(42), "0000000042.seg");
        assert_eq!(parse_file_name("0000000042.seg"), Some((42, false)));
        assert_eq!(parse_file_name("0000000042.seg.tmp"), Some((42, true)));
        assert_eq!(parse_file_name("0000000042.seg.old"), Some((42, true)));
        for stranger in [
            "index",
            "42.seg",
            "00000000x2.seg",
            "0000000042.log",
            "LOCK",
        ] {
            assert_eq!(parse_file_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn a_header_with_any_flipped_byte_is_refused() {
        let header = encode_header(9, SegmentKind::Compacted, 1234);
        assert_eq!(
            decode_header(&header),
            Ok((9, SegmentKind::Compacted, 1234))
        );
        for byte in 0..header.len() {
            let mut damaged = header;
            damaged[byte] ^= 0x40;
            assert!(decode_header(&damaged).is_err(), "byte {byte}");
        }
    }

    fn segment_with(records: &[(&[u8], &[u8])]) -> (tempfile::TempDir, Segment, Vec<u32>) {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 1, SegmentKind::Log, 1, 1 << 16, false).unwrap();
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            offsets.push(HEADER_SIZE_BYTES + bytes.len() as u32);
            record::encode(&mut bytes, i as u64 + 1, key, value, false).unwrap();
        }
        segment.write_at(&bytes, HEADER_SIZE_BYTES).unwrap();
        (dir, segment, offsets)
    }

    /// (offset, key) of each record, offsets of corrupt regions, end of valid data.
    type Scanned = (Vec<(u32, Vec<u8>)>, Vec<u32>, u32);

    fn scan_all(segment: &Segment, mode: ScanMode) -> Scanned {
        let mut records = Vec::new();
        let mut corrupt = Vec::new();
        let end = segment
            .scan(HEADER_SIZE_BYTES, BOUNDS, mode, |event| {
                match event {
                    ScanEvent::Record { offset, record } => {
                        records.push((offset, record.key.to_vec()))
                    }
                    ScanEvent::Corrupt { offset, .. } => corrupt.push(offset),
                }
                Ok(())
            })
            .unwrap();
        (records, corrupt, end)
    }

    #[test]
    fn a_clean_segment_scans_every_record_and_stops_at_the_zeroes() {
        let (_dir, segment, offsets) = segment_with(&[(b"a", b"1"), (b"b", b"22"), (b"c", b"333")]);
        for mode in [ScanMode::CutAtFirstInvalid, ScanMode::SkipCorrupt] {
            let (records, corrupt, end) = scan_all(&segment, mode);
            assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), offsets);
            assert!(corrupt.is_empty());
            assert_eq!(end, offsets[2] + record::HEADER_SIZE_BYTES as u32 + 4);
        }
    }

    #[test]
    fn skip_mode_reports_a_damaged_record_and_finds_the_next_one() {
        let (_dir, segment, offsets) = segment_with(&[(b"a", b"1"), (b"b", b"22"), (b"c", b"333")]);
        segment.write_at(&[0xFF], offsets[1] + 25).unwrap();
        let (records, corrupt, _) = scan_all(&segment, ScanMode::SkipCorrupt);
        assert_eq!(
            records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            [b"a".to_vec(), b"c".to_vec()]
        );
        assert_eq!(corrupt, [offsets[1]]);
        // The newest segment ends at the damage, but says a valid record followed it.
        let (records, corrupt, end) = scan_all(&segment, ScanMode::CutAtFirstInvalid);
        assert_eq!(records.len(), 1);
        assert_eq!(corrupt, [offsets[1]]);
        assert_eq!(end, offsets[1]);
    }

    #[test]
    fn a_torn_tail_is_cut_without_a_corruption_report() {
        let (_dir, segment, offsets) = segment_with(&[(b"a", b"1"), (b"b", b"22"), (b"c", b"333")]);
        // The last record torn: its second half never reached the disk.
        segment.write_at(&[0u8; 8], offsets[2] + 20).unwrap();
        let (records, corrupt, end) = scan_all(&segment, ScanMode::CutAtFirstInvalid);
        assert_eq!(records.len(), 2);
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(end, offsets[2]);
    }

    #[test]
    fn reading_a_value_tells_its_own_key_from_any_other() {
        let (_dir, segment, offsets) = segment_with(&[(b"abc", b"value")]);
        let size = (record::HEADER_SIZE_BYTES + 8) as u32;
        let (mut head, mut value) = ([0u8; HEAD_SIZE_BYTES_MAX], Vec::new());
        let wait = ReadWait::Allowed;
        for other in [&b"abd"[..], b"ab", b"abcd", b"", &[b'x'; 40]] {
            let found =
                segment.read_value(offsets[0], size, other, BOUNDS, &mut head, &mut value, wait);
            assert_eq!(found.unwrap(), ValueRead::OtherKey, "{other:?}");
        }
        for wait in [ReadWait::Allowed, ReadWait::PageCacheOnly] {
            value.clear();
            let found = segment.read_value(
                offsets[0], size, b"abc", BOUNDS, &mut head, &mut value, wait,
            );
            // Just written, so cached: both modes read it.
            assert_eq!(found.unwrap(), ValueRead::Key { tombstone: false });
            assert_eq!(value, b"value");
        }
        segment.write_at(b"X", offsets[0] + 29).unwrap();
        assert!(matches!(
            segment.read_value(
                offsets[0], size, b"abc", BOUNDS, &mut head, &mut value, wait
            ),
            Err(StorageError::Corrupt {
                reason: "checksum mismatch",
                ..
            })
        ));
    }

    #[test]
    fn reading_a_record_verifies_length_and_checksum() {
        let (_dir, segment, offsets) = segment_with(&[(b"key", b"value")]);
        let size = (record::HEADER_SIZE_BYTES + 8) as u32;
        let mut buffer = Vec::new();
        assert_eq!(
            segment
                .read_record(offsets[0], size, BOUNDS, &mut buffer)
                .unwrap()
                .value,
            b"value"
        );
        assert!(segment.holds_key(offsets[0], b"key", BOUNDS).unwrap());
        for other in [&b"kex"[..], b"ke", b"keys", b""] {
            assert!(
                !segment.holds_key(offsets[0], other, BOUNDS).unwrap(),
                "{other:?}"
            );
        }
        assert!(
            segment
                .read_record(offsets[0], size - 1, BOUNDS, &mut buffer)
                .is_err()
        );
        assert!(
            segment
                .read_record(offsets[0], 3, BOUNDS, &mut buffer)
                .is_err()
        );
        assert!(
            segment
                .read_record((1 << 16) - 10, size, BOUNDS, &mut buffer)
                .is_err()
        );
        segment.write_at(b"X", offsets[0] + 30).unwrap();
        assert!(matches!(
            segment.read_record(offsets[0], size, BOUNDS, &mut buffer),
            Err(StorageError::Corrupt {
                reason: "checksum mismatch",
                ..
            })
        ));
    }
}
