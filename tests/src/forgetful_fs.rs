//! A filesystem that forgets what was not fsynced: the disk as a power cut leaves it,
//! for the power-loss tests (the model of Jepsen's LazyFS, written over FUSE with the
//! `fuser` crate).
//!
//! Every file keeps two versions of its contents, what processes see (current) and
//! what would survive a power cut (durable); every directory keeps two versions of its
//! entries the same way. `fsync`/`fdatasync` of a file makes its contents and size
//! durable, `fsync` of a directory its entries (creations, renames, unlinks), nothing
//! else does: in particular a file's own fsync does not make its name durable, as
//! POSIX promises nothing more. [`ForgetfulFs::power_cut`] unmounts (the processes
//! using it must be dead: kill -9 first), turns every file and directory back into its
//! durable version, drops what no durable entry reaches, and mounts again, so nothing
//! the kernel cached survives either. With a tear seed, each unsynced 4 KiB page and
//! each unsynced directory entry independently survives or not, and a file's size is
//! its durable or its current one: what a disk that wrote back part of its cache
//! leaves (torn pages, a leftover temporary file).
//!
//! Everything lives in memory, bounded: [`FILE_SIZE_BYTES_MAX`] per file and
//! [`PAGES_MAX`] pages in all (EFBIG, ENOSPC beyond). No attribute or entry caching in
//! the kernel (zero TTLs) and no writeback cache, so every write reaches this process
//! when the writer makes it. What the storage engine relies on and how it fares here:
//! `fallocate` (mode 0 only: extends the size, sparse), private read-only `mmap` of
//! the index, `flock` (kept by the kernel, FUSE forwards none), `preadv2(RWF_NOWAIT)`
//! (FUSE refuses it; the engine falls back to a read that may wait).
//!
//! A [`Trap`] stops the first matching request (a write to `node/data/index.tmp`, say)
//! until the test lets it go: the test kills the process meanwhile, so a cut lands at
//! an exact step of a checkpoint, a segment rotation or a recovery. The held request
//! then fails without effect, as one in flight when the power went (an fsync held so
//! makes nothing durable).
//!
//! Needs root and `/dev/fuse`; [`ForgetfulFs::unavailable`] says what is missing.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use ringkv_core::random::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

/// The unit of tearing: an unsynced page survives a torn cut whole or not at all.
pub const PAGE_SIZE_BYTES: u64 = 4096;
/// The largest file; a write or truncate beyond is EFBIG.
pub const FILE_SIZE_BYTES_MAX: u64 = 1 << 30;
/// Pages held in all (current and durable versions together, 4 GiB); beyond, ENOSPC.
pub const PAGES_MAX: usize = 1 << 20;
/// Inodes held in all; beyond, ENOSPC.
pub const INODES_MAX: usize = 1 << 16;
/// The kernel caches no attribute and no entry: it asks every time.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

type Page = Box<[u8; PAGE_SIZE_BYTES as usize]>;

/// One version of a file's contents: its size and its written pages (sparse; a page
/// never written reads as zeros).
#[derive(Clone, Debug, Default)]
struct Contents {
    size_bytes: u64,
    pages: HashMap<u64, Page>,
}

impl Contents {
    fn read(&self, offset: u64, size_bytes: u64) -> Vec<u8> {
        let end = self.size_bytes.min(offset.saturating_add(size_bytes));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let page = at / PAGE_SIZE_BYTES;
            let within = (at % PAGE_SIZE_BYTES) as usize;
            let take = ((PAGE_SIZE_BYTES as usize) - within).min((end - at) as usize);
            match self.pages.get(&page) {
                Some(bytes) => out.extend_from_slice(&bytes[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    /// Makes page `page` what it is in `other` (written there, or never written).
    fn copy_page(&mut self, other: &Contents, page: u64) {
        match other.pages.get(&page) {
            Some(bytes) => self.pages.insert(page, bytes.clone()),
            None => self.pages.remove(&page),
        };
    }

    /// Zeroes everything from `size_bytes` on and sets the size; returns the pages it
    /// changed.
    fn truncate(&mut self, size_bytes: u64) -> Vec<u64> {
        let mut changed: Vec<u64> = self
            .pages
            .keys()
            .copied()
            .filter(|page| page * PAGE_SIZE_BYTES >= size_bytes)
            .collect();
        for page in &changed {
            self.pages.remove(page);
        }
        let partial = size_bytes / PAGE_SIZE_BYTES;
        let within = (size_bytes % PAGE_SIZE_BYTES) as usize;
        if within != 0 {
            if let Some(bytes) = self.pages.get_mut(&partial) {
                bytes[within..].fill(0);
                changed.push(partial);
            }
        }
        self.size_bytes = size_bytes;
        changed
    }
}

#[derive(Debug)]
enum Body {
    File {
        current: Contents,
        durable: Contents,
        /// Pages whose current version may differ from the durable one.
        dirty: BTreeSet<u64>,
    },
    Directory {
        current: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug)]
struct Inode {
    body: Body,
    permissions: u16,
}

/// The requests a [`Trap`] can stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Creating a file at the path.
    Create,
    /// Opening the existing file at the path.
    Open,
    /// Writing into the file at the path.
    Write,
    /// Renaming something to the path.
    Rename,
    /// fsync of the file at the path.
    FileSync,
    /// fsync of the directory at the path.
    DirectorySync,
}

/// A trap the filesystem holds until a matching request comes.
#[derive(Debug)]
struct ArmedTrap {
    operation: Operation,
    path: PathBuf,
    fired: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// A request stopped (or to be stopped) by the filesystem: [`Trap::wait`] returns
/// once it came; dropping the trap lets it go on.
#[derive(Debug)]
pub struct Trap {
    fired: mpsc::Receiver<()>,
    _release: mpsc::Sender<()>,
}

impl Trap {
    /// True once the request came (and is held), false if it did not in `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.fired.recv_timeout(timeout).is_ok()
    }
}

/// How long a trapped request waits for its test at most.
const TRAP_HOLD_MAX: Duration = Duration::from_secs(60);

/// What the filesystem did since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub writes: u64,
    pub written_bytes: u64,
    pub file_syncs: u64,
    pub directory_syncs: u64,
    pub power_cuts: u64,
}

/// What one power cut forgot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose contents went back to an older version (some unsynced page or size).
    pub files_rolled_back: u64,
    /// Unsynced pages lost (not kept by a tear).
    pub pages_forgotten: u64,
    /// Unsynced pages a torn cut kept.
    pub pages_kept_torn: u64,
    /// Directory entries whose unsynced creation, rename or removal was undone.
    pub entries_forgotten: u64,
    /// Unsynced directory entry changes a torn cut kept.
    pub entries_kept_torn: u64,
    /// Files and directories that had a name before the cut and have none after it
    /// (their entries were never made durable); unlinked files are not counted.
    pub inodes_dropped: u64,
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files rolled back ({} unsynced pages lost, {} kept torn), {} directory entries undone ({} kept torn), {} named files or directories gone",
            self.files_rolled_back,
            self.pages_forgotten,
            self.pages_kept_torn,
            self.entries_forgotten,
            self.entries_kept_torn,
            self.inodes_dropped
        )
    }
}

#[derive(Debug)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    pages: usize,
    counters: Counters,
    trap: Option<ArmedTrap>,
    /// Sabotage: a directory fsync succeeds and makes nothing durable.
    directory_syncs_ignored: bool,
    /// Files and directories open (opened or created, not yet released): a killed
    /// process's io_uring can hold its files a moment after it exited, and the power
    /// cut's unmount must wait for that.
    open_handles: u64,
}

impl State {
    fn new() -> State {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                body: Body::Directory {
                    current: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                permissions: 0o755,
            },
        );
        State {
            inodes,
            next_inode: ROOT + 1,
            pages: 0,
            counters: Counters::default(),
            trap: None,
            directory_syncs_ignored: false,
            open_handles: 0,
        }
    }

    fn attributes(&self, inode: u64) -> Option<FileAttr> {
        let node = self.inodes.get(&inode)?;
        let (kind, size, nlink) = match &node.body {
            Body::File { current, .. } => (FileType::RegularFile, current.size_bytes, 1),
            Body::Directory { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm: node.permissions,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE_SIZE_BYTES as u32,
            flags: 0,
        })
    }

    fn entries(&self, inode: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get(&inode).map(|node| &node.body) {
            Some(Body::Directory { current, .. }) => Ok(current),
            Some(Body::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, inode: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&inode).map(|node| &mut node.body) {
            Some(Body::Directory { current, .. }) => Ok(current),
            Some(Body::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// The path of `inode` under the root, searched through the current entries
    /// (only while a trap is armed, on trees of a few dozen files).
    fn path_of(&self, inode: u64) -> Option<PathBuf> {
        let mut stack = vec![(ROOT, PathBuf::new())];
        while let Some((directory, path)) = stack.pop() {
            if directory == inode {
                return Some(path);
            }
            if let Ok(entries) = self.entries(directory) {
                for (name, child) in entries {
                    if *child == inode {
                        return Some(path.join(name));
                    }
                    if self.is_directory(*child) {
                        stack.push((*child, path.join(name)));
                    }
                }
            }
        }
        None
    }

    /// unlink (`directory` false) or rmdir of `name` in `parent`.
    fn remove(&mut self, parent: u64, name: &OsStr, directory: bool) -> Result<(), Errno> {
        let inode = self.lookup(parent, name)?;
        match (directory, self.is_directory(inode)) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            (true, true) if !self.entries(inode)?.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    fn is_directory(&self, inode: u64) -> bool {
        matches!(
            self.inodes.get(&inode).map(|node| &node.body),
            Some(Body::Directory { .. })
        )
    }

    /// A new file or directory named `name` in `parent`.
    fn make(&mut self, parent: u64, name: &OsStr, body: Body, mode: u32) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        if self.inodes.len() >= INODES_MAX {
            return Err(Errno::ENOSPC);
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(
            inode,
            Inode {
                body,
                permissions: (mode & 0o7777) as u16,
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), inode);
        Ok(inode)
    }

    fn file_mut(&mut self, inode: u64) -> Result<(&mut Contents, &mut BTreeSet<u64>), Errno> {
        match self.inodes.get_mut(&inode).map(|node| &mut node.body) {
            Some(Body::File { current, dirty, .. }) => Ok((current, dirty)),
            Some(Body::Directory { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn write(&mut self, inode: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= FILE_SIZE_BYTES_MAX)
            .ok_or(Errno::EFBIG)?;
        let first = offset / PAGE_SIZE_BYTES;
        let last = end.div_ceil(PAGE_SIZE_BYTES);
        let pages = self.pages;
        let (current, dirty) = self.file_mut(inode)?;
        let new_pages = (first..last)
            .filter(|page| !current.pages.contains_key(page))
            .count();
        if pages + new_pages > PAGES_MAX {
            return Err(Errno::ENOSPC);
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = at / PAGE_SIZE_BYTES;
            let within = (at % PAGE_SIZE_BYTES) as usize;
            let take = ((PAGE_SIZE_BYTES as usize) - within).min(rest.len());
            let bytes = current
                .pages
                .entry(page)
                .or_insert_with(|| Box::new([0; PAGE_SIZE_BYTES as usize]));
            bytes[within..within + take].copy_from_slice(&rest[..take]);
            dirty.insert(page);
            rest = &rest[take..];
            at += take as u64;
        }
        current.size_bytes = current.size_bytes.max(end);
        self.pages += new_pages;
        self.counters.writes += 1;
        self.counters.written_bytes += data.len() as u64;
        Ok(())
    }

    fn set_size(&mut self, inode: u64, size_bytes: u64) -> Result<(), Errno> {
        if size_bytes > FILE_SIZE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let (current, dirty) = self.file_mut(inode)?;
        let before = current.pages.len();
        let changed = current.truncate(size_bytes);
        let after = current.pages.len();
        dirty.extend(changed);
        self.pages -= before - after;
        Ok(())
    }

    /// fsync: a file's contents and size, or a directory's entries, become durable.
    fn sync(&mut self, inode: u64) -> Result<(), Errno> {
        let node = self.inodes.get_mut(&inode).ok_or(Errno::ENOENT)?;
        match &mut node.body {
            Body::File {
                current,
                durable,
                dirty,
            } => {
                let before = durable.pages.len();
                for page in std::mem::take(dirty) {
                    durable.copy_page(current, page);
                }
                durable.size_bytes = current.size_bytes;
                self.pages = self.pages + durable.pages.len() - before;
                self.counters.file_syncs += 1;
            }
            Body::Directory { current, durable } => {
                if !self.directory_syncs_ignored {
                    durable.clone_from(current);
                }
                self.counters.directory_syncs += 1;
            }
        }
        Ok(())
    }

    /// Every inode a current entry names, from the root down.
    fn reachable(&self) -> BTreeSet<u64> {
        let mut reachable = BTreeSet::from([ROOT]);
        let mut frontier = vec![ROOT];
        while let Some(inode) = frontier.pop() {
            if let Some(Inode {
                body: Body::Directory { current, .. },
                ..
            }) = self.inodes.get(&inode)
            {
                for child in current.values() {
                    if self.inodes.contains_key(child) && reachable.insert(*child) {
                        frontier.push(*child);
                    }
                }
            }
        }
        reachable
    }

    /// The power cut: every file and directory back to its durable version (some
    /// unsynced pages and entries kept, with a tear), then what is unreachable dropped.
    fn cut(&mut self, tear: Option<u64>) -> CutReport {
        let mut report = CutReport::default();
        let named_before = self.reachable();
        let mut rng = tear.map(Rng::new);
        let mut keep = || rng.as_mut().is_some_and(|rng| rng.chance(0.5));
        let mut inodes: Vec<u64> = self.inodes.keys().copied().collect();
        inodes.sort_unstable(); // the tear's draws in a replayable order
        for inode in inodes {
            let Some(node) = self.inodes.get_mut(&inode) else {
                continue;
            };
            match &mut node.body {
                Body::File {
                    current,
                    durable,
                    dirty,
                } => {
                    if dirty.is_empty() && current.size_bytes == durable.size_bytes {
                        continue;
                    }
                    report.files_rolled_back += 1;
                    let mut after = durable.clone();
                    if keep() {
                        after.size_bytes = current.size_bytes;
                    }
                    for page in std::mem::take(dirty) {
                        if keep() {
                            report.pages_kept_torn += 1;
                            after.copy_page(current, page);
                        } else {
                            report.pages_forgotten += 1;
                        }
                    }
                    let size_bytes = after.size_bytes;
                    after.truncate(size_bytes);
                    *current = after;
                }
                Body::Directory { current, durable } => {
                    let names: BTreeSet<OsString> =
                        current.keys().chain(durable.keys()).cloned().collect();
                    for name in names {
                        let (now, then) =
                            (current.get(&name).copied(), durable.get(&name).copied());
                        if now == then {
                            continue;
                        }
                        if keep() {
                            report.entries_kept_torn += 1;
                            match now {
                                Some(inode) => durable.insert(name, inode),
                                None => durable.remove(&name),
                            };
                        } else {
                            report.entries_forgotten += 1;
                        }
                    }
                    current.clone_from(durable);
                }
            }
        }
        // A torn cut may keep a new directory's entry in two parents (a rename whose
        // source removal was forgotten): both names stay, like a hard link.
        let reachable = self.reachable();
        self.inodes.retain(|inode, _| reachable.contains(inode));
        report.inodes_dropped = named_before.difference(&reachable).count() as u64;
        // Entries naming an inode that is gone (kept by a tear) go too.
        let alive: BTreeSet<u64> = self.inodes.keys().copied().collect();
        for node in self.inodes.values_mut() {
            if let Body::Directory { current, durable } = &mut node.body {
                current.retain(|_, inode| alive.contains(inode));
                durable.retain(|_, inode| alive.contains(inode));
            }
        }
        self.pages = self
            .inodes
            .values()
            .map(|node| match &node.body {
                Body::File {
                    current, durable, ..
                } => current.pages.len() + durable.pages.len(),
                Body::Directory { .. } => 0,
            })
            .sum();
        self.counters.power_cuts += 1;
        report
    }
}

/// Replies to a request that returns nothing.
fn answer(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

/// The FUSE side: every request takes the state's lock for its whole length.
#[derive(Debug)]
struct Forgetful {
    state: Arc<Mutex<State>>,
}

impl Forgetful {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another request leaves the state as consistent as each step is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds this request if the armed trap matches it (`place`: the inode, or a
    /// directory and a name in it), until the test drops the trap; true when it did:
    /// the request then fails with EIO and has no effect, as one in flight when the
    /// power went (its process is dead by then).
    fn stop_at(&self, operation: Operation, place: (u64, Option<&OsStr>)) -> bool {
        let armed = {
            let mut state = self.state();
            let matches = state.trap.as_ref().is_some_and(|trap| {
                trap.operation == operation
                    && state
                        .path_of(place.0)
                        .map(|path| match place.1 {
                            Some(name) => path.join(name),
                            None => path,
                        })
                        .is_some_and(|path| path == trap.path)
            });
            if matches { state.trap.take() } else { None }
        };
        let Some(trap) = armed else {
            return false;
        };
        let _ = trap.fired.send(());
        let _ = trap.release.recv_timeout(TRAP_HOLD_MAX);
        true
    }

    /// fsync of a file or a directory: what it holds becomes durable.
    fn sync(&self, operation: Operation, inode: INodeNo, reply: ReplyEmpty) {
        if self.stop_at(operation, (inode.0, None)) {
            return reply.error(Errno::EIO);
        }
        answer(self.state().sync(inode.0), reply);
    }

    fn reply_entry(state: &State, inode: Result<u64, Errno>, reply: ReplyEntry) {
        match inode.and_then(|inode| state.attributes(inode).ok_or(Errno::ENOENT)) {
            Ok(attributes) => reply.entry(&TTL, &attributes, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }
}

impl Filesystem for Forgetful {
    fn init(&mut self, _request: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Whole 64 KiB values in one request when the kernel allows (the default is
        // what fits fuser's buffer).
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        let inode = state.lookup(parent.0, name);
        Forgetful::reply_entry(&state, inode, reply);
    }

    fn getattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        match self.state().attributes(inode.0) {
            Some(attributes) => reply.attr(&TTL, &attributes),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _handle: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        if let Some(size) = size {
            if let Err(errno) = state.set_size(inode.0, size) {
                return reply.error(errno);
            }
        }
        if let Some(mode) = mode {
            if let Some(node) = state.inodes.get_mut(&inode.0) {
                node.permissions = (mode & 0o7777) as u16;
            }
        }
        match state.attributes(inode.0) {
            Some(attributes) => reply.attr(&TTL, &attributes),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let body = Body::Directory {
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        let inode = state.make(parent.0, name, body, mode & !umask);
        Forgetful::reply_entry(&state, inode, reply);
    }

    fn create(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if self.stop_at(Operation::Create, (parent.0, Some(name))) {
            return reply.error(Errno::EIO);
        }
        let mut state = self.state();
        let body = Body::File {
            current: Contents::default(),
            durable: Contents::default(),
            dirty: BTreeSet::new(),
        };
        match state
            .make(parent.0, name, body, mode & !umask)
            .and_then(|inode| state.attributes(inode).ok_or(Errno::ENOENT))
        {
            Ok(attributes) => {
                state.open_handles += 1;
                reply.created(
                    &TTL,
                    &attributes,
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::empty(),
                )
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(self.state().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(self.state().remove(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.stop_at(Operation::Rename, (new_parent.0, Some(new_name))) {
            return reply.error(Errno::EIO);
        }
        let mut state = self.state();
        let result = (|| {
            let moved = state.lookup(parent.0, name)?;
            state.entries(new_parent.0)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if let Ok(replaced) = state.lookup(new_parent.0, new_name) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                match (state.is_directory(moved), state.is_directory(replaced)) {
                    (false, true) => return Err(Errno::EISDIR),
                    (true, false) => return Err(Errno::ENOTDIR),
                    (true, true) if !state.entries(replaced)?.is_empty() => {
                        return Err(Errno::ENOTEMPTY);
                    }
                    _ => {}
                }
            }
            state.entries_mut(parent.0)?.remove(name);
            state
                .entries_mut(new_parent.0)?
                .insert(new_name.to_owned(), moved);
            Ok(())
        })();
        answer(result, reply);
    }

    fn open(&self, _request: &Request, inode: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.stop_at(Operation::Open, (inode.0, None)) {
            return reply.error(Errno::EIO);
        }
        let mut state = self.state();
        if state.inodes.contains_key(&inode.0) {
            state.open_handles += 1;
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn release(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        state.open_handles = state.open_handles.saturating_sub(1);
        reply.ok();
    }

    fn opendir(&self, _request: &Request, _inode: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.state().open_handles += 1;
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn releasedir(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _handle: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        state.open_handles = state.open_handles.saturating_sub(1);
        reply.ok();
    }

    fn read(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.inodes.get(&inode.0).map(|node| &node.body) {
            Some(Body::File { current, .. }) => reply.data(&current.read(offset, u64::from(size))),
            Some(Body::Directory { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.stop_at(Operation::Write, (inode.0, None)) {
            return reply.error(Errno::EIO);
        }
        match self.state().write(inode.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _handle: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // close(2) makes nothing durable
    }

    fn fsync(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(Operation::FileSync, inode, reply);
    }

    fn readdir(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let entries = match state.entries(inode.0) {
            Ok(entries) => entries,
            Err(errno) => return reply.error(errno),
        };
        let dots = [
            (inode.0, FileType::Directory, OsStr::new(".")),
            (inode.0, FileType::Directory, OsStr::new("..")),
        ];
        let listed = entries.iter().map(|(name, child)| {
            let kind = if state.is_directory(*child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            (*child, kind, name.as_os_str())
        });
        for (index, (child, kind, name)) in dots
            .into_iter()
            .chain(listed)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(Operation::DirectorySync, inode, reply);
    }

    fn statfs(&self, _request: &Request, _inode: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let free = (PAGES_MAX - state.pages.min(PAGES_MAX)) as u64;
        let files_free = (INODES_MAX - state.inodes.len().min(INODES_MAX)) as u64;
        reply.statfs(
            PAGES_MAX as u64,
            free,
            free,
            INODES_MAX as u64,
            files_free,
            PAGE_SIZE_BYTES as u32,
            255,
            PAGE_SIZE_BYTES as u32,
        );
    }

    fn access(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _mask: fuser::AccessFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut state = self.state();
        let result = offset
            .checked_add(length)
            .filter(|end| *end <= FILE_SIZE_BYTES_MAX)
            .ok_or(Errno::EFBIG)
            .and_then(|end| {
                let (current, _) = state.file_mut(inode.0)?;
                current.size_bytes = current.size_bytes.max(end);
                Ok(())
            });
        answer(result, reply);
    }
}

/// A mounted forgetful filesystem. Dropping it unmounts.
#[derive(Debug)]
pub struct ForgetfulFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl ForgetfulFs {
    /// Why this machine cannot mount one (not root, no `/dev/fuse`, the mount
    /// refused), or None when it can.
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("needs root (a FUSE mount without fusermount)".to_owned());
        }
        if !Path::new("/dev/fuse").exists() {
            return Some("needs /dev/fuse (modprobe fuse)".to_owned());
        }
        let probe = match tempfile::tempdir() {
            Ok(probe) => probe,
            Err(error) => return Some(format!("no temporary directory: {error}")),
        };
        match ForgetfulFs::mount(probe.path()) {
            Ok(_mounted) => None,
            Err(error) => Some(format!("the FUSE mount failed: {error}")),
        }
    }

    /// For a test that needs one: true when this machine can mount it; otherwise
    /// prints that `test` is skipped and why, and returns false, unless
    /// `RINGKV_REQUIRE_FUSE` is set (as `.ci/run` does), where it panics instead.
    pub fn available_for(test: &str) -> bool {
        let Some(reason) = ForgetfulFs::unavailable() else {
            return true;
        };
        assert!(
            std::env::var_os("RINGKV_REQUIRE_FUSE").is_none(),
            "{test}: RINGKV_REQUIRE_FUSE is set but the forgetful filesystem {reason}"
        );
        // Past the test harness's capture, so that a passing run shows it too.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("{test}: SKIPPED, the forgetful filesystem {reason}\n").as_bytes(),
        );
        false
    }

    /// Mounts an empty forgetful filesystem on `mountpoint` (an empty directory).
    pub fn mount(mountpoint: &Path) -> std::io::Result<ForgetfulFs> {
        let mut mounted = ForgetfulFs {
            state: Arc::new(Mutex::new(State::new())),
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        mounted.attach()?;
        Ok(mounted)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ringkv-forgetful".to_owned()),
            MountOption::NoAtime,
        ];
        let filesystem = Forgetful {
            state: Arc::clone(&self.state),
        };
        self.session = Some(fuser::spawn_mount(filesystem, &self.mountpoint, &config)?);
        Ok(())
    }

    fn detach(&mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }

    /// The power cut: unmounts (every process that used the filesystem must be dead),
    /// forgets everything not fsynced (with `tear`, a random half of the unsynced pages
    /// and entries survive, drawn from that seed), and mounts the rest again.
    pub fn power_cut(&mut self, tear: Option<u64>) -> std::io::Result<CutReport> {
        self.lock().trap = None;
        // The processes are dead, but the kernel may still be tearing down an io_uring
        // of theirs that holds files open (the unmount would then fail as busy).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.lock().open_handles > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.detach()?;
        let report = self.lock().cut(tear);
        self.attach()?;
        Ok(report)
    }

    /// Arms a trap (replacing any armed one): the first `operation` on `path` (relative
    /// to the mountpoint) will wait until the returned [`Trap`] is dropped.
    pub fn trap(&self, operation: Operation, path: impl Into<PathBuf>) -> Trap {
        let (fired_sender, fired) = mpsc::channel();
        let (release_sender, release) = mpsc::channel();
        self.lock().trap = Some(ArmedTrap {
            operation,
            path: path.into(),
            fired: fired_sender,
            release,
        });
        Trap {
            fired,
            _release: release_sender,
        }
    }

    /// Sabotage, to prove a test catches it: from now on a directory fsync succeeds
    /// and makes nothing durable, as if the program never called it.
    pub fn ignore_directory_syncs(&mut self) {
        self.lock().directory_syncs_ignored = true;
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ForgetfulFs {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
