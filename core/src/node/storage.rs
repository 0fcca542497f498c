//! What a node asks of its stores and what they answer: one operation type and one
//! completion type, shared by the core, both shells, the simulator and every test
//! driver.
//!
//! An operation's bytes are generic: the node emits [`StorageOp<&[u8]>`], borrowing the
//! action queue's buffer until the next poll, and a shell that keeps the operation
//! while it runs holds [`StorageOp`] (`Vec<u8>`, the default) from
//! [`StorageOp::owned`]. A [`Completion`] owns its bytes: it is built where the store
//! answers and moved into the node with [`super::Input::Storage`].

/// Which local store an operation is for: the node's own keys, the writes it holds
/// for other nodes (hints; key = intended owner's id, 8 bytes big-endian, then the key),
/// or the node's own few records about itself (`Meta`: today one, the writer epoch of
/// `node::writer`). A shell keeps the three apart; `Scan` reads `Data` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Data,
    Hints,
    Meta,
}

/// A storage operation; `Bytes` is `&[u8]` as the node emits it, `Vec<u8>` once a
/// shell keeps it. Its completion carries `token` back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOp<Bytes = Vec<u8>> {
    /// Read a record (completion: `Read`).
    Read {
        token: u64,
        space: Space,
        key: Bytes,
    },
    /// Store a record (completion: `Written`). `durable`: complete only once the
    /// record is synced. Otherwise complete once it is written (readable, and kept by
    /// a process kill, but lost by a power cut until the store's next sync: the
    /// buffered writes of `node::replica`); a store syncs such writes within its sync
    /// interval, and any later durable write or durable scan of the same store syncs
    /// them first (a store's log is durable as a prefix).
    Write {
        token: u64,
        space: Space,
        key: Bytes,
        record: Bytes,
        durable: bool,
    },
    /// Delete a record; complete once durable (completion: `Written`).
    Delete {
        token: u64,
        space: Space,
        key: Bytes,
    },
    /// List up to `limit` keys after `after`, in byte order (completion: `Listed`).
    List {
        token: u64,
        space: Space,
        after: Bytes,
        limit: u32,
    },
    /// Up to `limit` of this node's own keys with their records, whose
    /// `placement::key_hash` lies in `first..=last` and is above `after` when given, in
    /// hash order; keys sharing a hash are never split across pages (completion:
    /// `Scanned`). ringkv-storage's `Store::scan` is exactly this. `durable`: sync the
    /// store first, so the page holds only records a power cut keeps (what a node
    /// confirms before a peer deletes its own copy: handoff offers, reaping).
    Scan {
        token: u64,
        first: u64,
        last: u64,
        after: Option<u64>,
        limit: u32,
        durable: bool,
    },
}

impl<Bytes: AsRef<[u8]>> StorageOp<Bytes> {
    /// The token its completion carries back.
    pub fn token(&self) -> u64 {
        match self {
            StorageOp::Read { token, .. }
            | StorageOp::Write { token, .. }
            | StorageOp::Delete { token, .. }
            | StorageOp::List { token, .. }
            | StorageOp::Scan { token, .. } => *token,
        }
    }

    /// True for writes and deletes.
    pub fn is_write(&self) -> bool {
        matches!(self, StorageOp::Write { .. } | StorageOp::Delete { .. })
    }

    /// True for an operation that completes only once durable: every delete, a
    /// durable write.
    pub fn is_durable_write(&self) -> bool {
        matches!(
            self,
            StorageOp::Write { durable: true, .. } | StorageOp::Delete { .. }
        )
    }

    /// The store it is for (`Scan` reads `Data`).
    pub fn space(&self) -> Space {
        match self {
            StorageOp::Read { space, .. }
            | StorageOp::Write { space, .. }
            | StorageOp::Delete { space, .. }
            | StorageOp::List { space, .. } => *space,
            StorageOp::Scan { .. } => Space::Data,
        }
    }

    /// The same operation with its bytes owned, to keep while it runs.
    pub fn owned(&self) -> StorageOp {
        let bytes = |bytes: &Bytes| bytes.as_ref().to_vec();
        match self {
            StorageOp::Read { token, space, key } => StorageOp::Read {
                token: *token,
                space: *space,
                key: bytes(key),
            },
            StorageOp::Write {
                token,
                space,
                key,
                record,
                durable,
            } => StorageOp::Write {
                token: *token,
                space: *space,
                key: bytes(key),
                record: bytes(record),
                durable: *durable,
            },
            StorageOp::Delete { token, space, key } => StorageOp::Delete {
                token: *token,
                space: *space,
                key: bytes(key),
            },
            StorageOp::List {
                token,
                space,
                after,
                limit,
            } => StorageOp::List {
                token: *token,
                space: *space,
                after: bytes(after),
                limit: *limit,
            },
            StorageOp::Scan {
                token,
                first,
                last,
                after,
                limit,
                durable,
            } => StorageOp::Scan {
                token: *token,
                first: *first,
                last: *last,
                after: *after,
                limit: *limit,
                durable: *durable,
            },
        }
    }
}

/// Why a storage operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    DiskFull,
    /// The record failed its checksum or did not decode.
    Corrupt,
    Io,
}

/// A stored key and its record.
pub type KeyRecord = (Vec<u8>, Vec<u8>);

/// A listed key and the bytes it takes in its store (key and record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedKey {
    pub key: Vec<u8>,
    pub stored_bytes: u32,
}

impl ListedKey {
    pub fn new(key: Vec<u8>, record_bytes: usize) -> ListedKey {
        let stored_bytes = u32::try_from(key.len() + record_bytes).unwrap_or(u32::MAX);
        ListedKey { key, stored_bytes }
    }
}

/// A page of keys from a `List` operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub keys: Vec<ListedKey>,
    /// No keys after these.
    pub complete: bool,
}

/// A page of this node's own keys and records from a `Scan` operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// (key, record) in key-hash order.
    pub items: Vec<KeyRecord>,
    /// Where the next page starts (`after`), or `None` when the range is done.
    pub next: Option<u64>,
}

/// The end of a [`StorageOp`], its bytes owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Read {
        token: u64,
        result: Result<Option<Vec<u8>>, StorageFailure>,
    },
    /// A write or delete is durable (or failed).
    Written {
        token: u64,
        result: Result<(), StorageFailure>,
    },
    Listed {
        token: u64,
        result: Result<Listing, StorageFailure>,
    },
    Scanned {
        token: u64,
        result: Result<ScanPage, StorageFailure>,
    },
}

impl Completion {
    /// What `operation` answers when it failed with `failure`.
    pub fn failed<Bytes: AsRef<[u8]>>(
        operation: &StorageOp<Bytes>,
        failure: StorageFailure,
    ) -> Completion {
        let token = operation.token();
        match operation {
            StorageOp::Read { .. } => Completion::Read {
                token,
                result: Err(failure),
            },
            StorageOp::Write { .. } | StorageOp::Delete { .. } => Completion::Written {
                token,
                result: Err(failure),
            },
            StorageOp::List { .. } => Completion::Listed {
                token,
                result: Err(failure),
            },
            StorageOp::Scan { .. } => Completion::Scanned {
                token,
                result: Err(failure),
            },
        }
    }

    /// The token of the operation it ends.
    pub fn token(&self) -> u64 {
        match self {
            Completion::Read { token, .. }
            | Completion::Written { token, .. }
            | Completion::Listed { token, .. }
            | Completion::Scanned { token, .. } => *token,
        }
    }
}
