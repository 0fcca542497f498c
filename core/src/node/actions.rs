//! What a node asks its shell to do, and the bounded queue that holds it until polled.
//!
//! Every action's bytes (a peer frame, a client reply, a storage key and record) are
//! written into one byte buffer the node owns; [`Action`] borrows from it. The buffer is
//! emptied, keeping its capacity, once every action has been polled, so a shell that
//! drains after each `handle` (the str0m rule) never makes the node allocate here. The
//! queue refuses past `actions_max` actions or `action_bytes_max` bytes: a refused
//! action is counted, and the caller turns it into the failure it stands for.

use super::{Completion, Listing, ScanPage, StorageFailure};
use crate::version::NodeId;
use crate::wire::{Message, encode_frame};
use std::collections::VecDeque;

/// A client connection, named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

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

/// A storage operation. Its completion carries `token` back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOp<'a> {
    /// Read a record (completion: `Read`).
    Read {
        token: u64,
        space: Space,
        key: &'a [u8],
    },
    /// Store a record; complete only once it is durable (completion: `Written`).
    Write {
        token: u64,
        space: Space,
        key: &'a [u8],
        record: &'a [u8],
    },
    /// Delete a record; complete once durable (completion: `Written`).
    Delete {
        token: u64,
        space: Space,
        key: &'a [u8],
    },
    /// List up to `limit` keys after `after`, in byte order (completion: `Listed`).
    List {
        token: u64,
        space: Space,
        after: &'a [u8],
        limit: u32,
    },
    /// Up to `limit` of this node's own keys with their records, whose
    /// `placement::key_hash` lies in `first..=last` and is above `after` when given, in
    /// hash order; keys sharing a hash are never split across pages (completion:
    /// `Scanned`). ringkv-storage's `Store::scan` is exactly this.
    Scan {
        token: u64,
        first: u64,
        last: u64,
        after: Option<u64>,
        limit: u32,
    },
}

/// A [`StorageOp`] with its bytes owned: what a shell or simulator keeps while the
/// operation runs (the action's borrowed bytes last only until the next poll).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageJob {
    Read {
        token: u64,
        space: Space,
        key: Vec<u8>,
    },
    Write {
        token: u64,
        space: Space,
        key: Vec<u8>,
        record: Vec<u8>,
    },
    Delete {
        token: u64,
        space: Space,
        key: Vec<u8>,
    },
    List {
        token: u64,
        space: Space,
        after: Vec<u8>,
        limit: u32,
    },
    Scan {
        token: u64,
        first: u64,
        last: u64,
        after: Option<u64>,
        limit: u32,
    },
}

impl From<StorageOp<'_>> for StorageJob {
    fn from(operation: StorageOp<'_>) -> StorageJob {
        match operation {
            StorageOp::Read { token, space, key } => StorageJob::Read {
                token,
                space,
                key: key.to_vec(),
            },
            StorageOp::Write {
                token,
                space,
                key,
                record,
            } => StorageJob::Write {
                token,
                space,
                key: key.to_vec(),
                record: record.to_vec(),
            },
            StorageOp::Delete { token, space, key } => StorageJob::Delete {
                token,
                space,
                key: key.to_vec(),
            },
            StorageOp::List {
                token,
                space,
                after,
                limit,
            } => StorageJob::List {
                token,
                space,
                after: after.to_vec(),
                limit,
            },
            StorageOp::Scan {
                token,
                first,
                last,
                after,
                limit,
            } => StorageJob::Scan {
                token,
                first,
                last,
                after,
                limit,
            },
        }
    }
}

impl StorageJob {
    /// The token its completion carries back.
    pub fn token(&self) -> u64 {
        match self {
            StorageJob::Read { token, .. }
            | StorageJob::Write { token, .. }
            | StorageJob::Delete { token, .. }
            | StorageJob::List { token, .. }
            | StorageJob::Scan { token, .. } => *token,
        }
    }

    /// True for writes and deletes (they complete once durable).
    pub fn is_write(&self) -> bool {
        matches!(self, StorageJob::Write { .. } | StorageJob::Delete { .. })
    }
}

/// A stored key and its record.
pub type KeyRecord = (Vec<u8>, Vec<u8>);

/// A storage job's outcome with its bytes owned, until the shell (or a test driver)
/// hands it to the node as a [`Completion`], which borrows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Read {
        token: u64,
        result: Result<Option<Vec<u8>>, StorageFailure>,
    },
    Written {
        token: u64,
        result: Result<(), StorageFailure>,
    },
    Listed {
        token: u64,
        result: Result<(Vec<Vec<u8>>, bool), StorageFailure>,
    },
    Scanned {
        token: u64,
        result: Result<(Vec<KeyRecord>, Option<u64>), StorageFailure>,
    },
}

impl Answer {
    /// The completion the node takes, borrowing this.
    pub fn completion(&self) -> Completion<'_> {
        match self {
            Answer::Read { token, result } => Completion::Read {
                token: *token,
                result: result.as_ref().map(|v| v.as_deref()).map_err(|e| *e),
            },
            Answer::Written { token, result } => Completion::Written {
                token: *token,
                result: *result,
            },
            Answer::Listed { token, result } => Completion::Listed {
                token: *token,
                result: result
                    .as_ref()
                    .map(|(keys, complete)| Listing {
                        keys,
                        complete: *complete,
                    })
                    .map_err(|e| *e),
            },
            Answer::Scanned { token, result } => Completion::Scanned {
                token: *token,
                result: result
                    .as_ref()
                    .map(|(items, next)| ScanPage { items, next: *next })
                    .map_err(|e| *e),
            },
        }
    }
}

/// What [`StorageOp::Scan`] answers, computed over an in-memory map of this node's
/// own keys (for simulators and tests; ringkv-storage's `Store::scan` is the real one):
/// up to `limit` (key, record) pairs with `first <= key_hash <= last` and above
/// `after`, in hash order (then key order), never splitting keys that share a hash,
/// and the cursor of the next page.
pub fn scan_in_memory<'k>(
    records: impl Iterator<Item = (&'k [u8], &'k [u8])>,
    (first, last): (u64, u64),
    after: Option<u64>,
    limit: u32,
) -> (Vec<KeyRecord>, Option<u64>) {
    let mut matching: Vec<(u64, &[u8], &[u8])> = records
        .map(|(key, record)| (crate::placement::key_hash(key), key, record))
        .filter(|&(hash, _, _)| {
            hash >= first && hash <= last && after.is_none_or(|after| hash > after)
        })
        .collect();
    matching.sort_unstable();
    let limit = (limit as usize).max(1);
    let mut items: Vec<KeyRecord> = Vec::new();
    let mut next = None;
    for (hash, key, record) in matching {
        if items.len() >= limit {
            let previous = crate::placement::key_hash(&items[items.len() - 1].0);
            if previous != hash {
                next = Some(previous);
                break;
            }
        }
        items.push((key.to_vec(), record.to_vec()));
    }
    (items, next)
}

/// What [`StorageOp::List`] answers over an in-memory map (for simulators and tests;
/// the shells list the real store): up to `limit` keys after `after` in byte order,
/// and whether that was the last of them.
pub fn list_in_memory<'k>(
    keys: impl Iterator<Item = &'k [u8]>,
    after: &[u8],
    limit: u32,
) -> (Vec<Vec<u8>>, bool) {
    let mut listed: Vec<Vec<u8>> = keys
        .filter(|key| after.is_empty() || *key > after)
        .map(<[u8]>::to_vec)
        .collect();
    listed.sort_unstable();
    let complete = listed.len() <= limit as usize;
    listed.truncate(limit as usize);
    (listed, complete)
}

/// One thing for the shell to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send one encoded peer frame.
    Send {
        to: NodeId,
        frame: &'a [u8],
    },
    /// Write RESP bytes to a client; `tag` is the request's tag from the input (the
    /// shell answers a connection's pipelined requests in tag order). `close`: then
    /// close the connection (QUIT).
    Reply {
        client: ClientId,
        tag: u64,
        bytes: &'a [u8],
        close: bool,
    },
    Storage(StorageOp<'a>),
    /// Open (or reopen) a connection to a peer; sent before probing a down peer.
    /// `address` is the peer address gossip announced for it (empty while unknown: the
    /// initial members' addresses come from the shell's own configuration).
    Connect {
        peer: NodeId,
        address: &'a [u8],
    },
    /// Connect to a node known only by its peer address (a seed), say hello, then
    /// send `frame`. Its answers arrive as peer messages under its id.
    Introduce {
        address: &'a [u8],
        frame: &'a [u8],
    },
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Send {
        to: NodeId,
    },
    Reply {
        client: ClientId,
        tag: u64,
        close: bool,
    },
    Read {
        token: u64,
        space: Space,
    },
    Write {
        token: u64,
        space: Space,
        key_size: usize,
    },
    Delete {
        token: u64,
        space: Space,
    },
    List {
        token: u64,
        space: Space,
        limit: u32,
    },
    Connect {
        peer: NodeId,
    },
    Introduce {
        address_size: usize,
    },
    Scan {
        token: u64,
        first: u64,
        last: u64,
        after: Option<u64>,
        limit: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    kind: Kind,
    start: usize,
    end: usize,
}

/// The queue is at its bound: the action was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionsFull;

#[derive(Debug)]
pub(crate) struct ActionQueue {
    queue: VecDeque<Queued>,
    bytes: Vec<u8>,
    actions_max: usize,
    bytes_max: usize,
    pub(crate) refused: u64,
    pub(crate) actions_peak: usize,
    pub(crate) bytes_peak: usize,
}

impl ActionQueue {
    pub(crate) fn new(actions_max: u32, bytes_max: usize) -> ActionQueue {
        ActionQueue {
            queue: VecDeque::with_capacity(actions_max as usize),
            bytes: Vec::new(),
            actions_max: actions_max as usize,
            bytes_max,
            refused: 0,
            actions_peak: 0,
            bytes_peak: 0,
        }
    }

    /// Room for `count` more actions (callers check before work that cannot be undone).
    pub(crate) fn has_room(&self, count: usize) -> bool {
        self.queue.len() + count <= self.actions_max
    }

    /// Appends an action whose bytes `fill` writes; `fill` returning false (an encoding
    /// error) queues nothing.
    fn push(
        &mut self,
        kind: Kind,
        fill: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Result<(), ActionsFull> {
        if self.queue.is_empty() {
            self.bytes.clear();
        }
        if self.queue.len() >= self.actions_max {
            self.refused += 1;
            return Err(ActionsFull);
        }
        let start = self.bytes.len();
        if !fill(&mut self.bytes) || self.bytes.len() > self.bytes_max {
            self.bytes.truncate(start);
            self.refused += 1;
            return Err(ActionsFull);
        }
        let end = self.bytes.len();
        self.queue.push_back(Queued { kind, start, end });
        self.actions_peak = self.actions_peak.max(self.queue.len());
        self.bytes_peak = self.bytes_peak.max(end);
        Ok(())
    }

    pub(crate) fn send(
        &mut self,
        to: NodeId,
        cluster_id: u64,
        message: &Message<'_>,
    ) -> Result<(), ActionsFull> {
        self.push(Kind::Send { to }, |out| {
            encode_frame(out, cluster_id, message).is_ok()
        })
    }

    pub(crate) fn reply(
        &mut self,
        client: ClientId,
        tag: u64,
        close: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ActionsFull> {
        self.push(Kind::Reply { client, tag, close }, |out| {
            write(out);
            true
        })
    }

    pub(crate) fn read(&mut self, token: u64, space: Space, key: &[u8]) -> Result<(), ActionsFull> {
        self.push(Kind::Read { token, space }, |out| {
            out.extend_from_slice(key);
            true
        })
    }

    pub(crate) fn write(
        &mut self,
        token: u64,
        space: Space,
        key: &[u8],
        record: &[u8],
    ) -> Result<(), ActionsFull> {
        let key_size = key.len();
        self.push(
            Kind::Write {
                token,
                space,
                key_size,
            },
            |out| {
                out.extend_from_slice(key);
                out.extend_from_slice(record);
                true
            },
        )
    }

    pub(crate) fn delete(
        &mut self,
        token: u64,
        space: Space,
        key: &[u8],
    ) -> Result<(), ActionsFull> {
        self.push(Kind::Delete { token, space }, |out| {
            out.extend_from_slice(key);
            true
        })
    }

    pub(crate) fn list(
        &mut self,
        token: u64,
        space: Space,
        after: &[u8],
        limit: u32,
    ) -> Result<(), ActionsFull> {
        self.push(
            Kind::List {
                token,
                space,
                limit,
            },
            |out| {
                out.extend_from_slice(after);
                true
            },
        )
    }

    pub(crate) fn scan(
        &mut self,
        token: u64,
        (first, last): (u64, u64),
        after: Option<u64>,
        limit: u32,
    ) -> Result<(), ActionsFull> {
        let kind = Kind::Scan {
            token,
            first,
            last,
            after,
            limit,
        };
        self.push(kind, |_| true)
    }

    pub(crate) fn connect(&mut self, peer: NodeId, address: &[u8]) -> Result<(), ActionsFull> {
        self.push(Kind::Connect { peer }, |out| {
            out.extend_from_slice(address);
            true
        })
    }

    pub(crate) fn introduce(
        &mut self,
        address: &[u8],
        cluster_id: u64,
        message: &Message<'_>,
    ) -> Result<(), ActionsFull> {
        let address_size = address.len();
        self.push(Kind::Introduce { address_size }, |out| {
            out.extend_from_slice(address);
            encode_frame(out, cluster_id, message).is_ok()
        })
    }

    pub(crate) fn poll(&mut self) -> Option<Action<'_>> {
        let Some(queued) = self.queue.pop_front() else {
            self.bytes.clear();
            return None;
        };
        let bytes = &self.bytes[queued.start..queued.end];
        Some(match queued.kind {
            Kind::Send { to } => Action::Send { to, frame: bytes },
            Kind::Reply { client, tag, close } => Action::Reply {
                client,
                tag,
                bytes,
                close,
            },
            Kind::Read { token, space } => Action::Storage(StorageOp::Read {
                token,
                space,
                key: bytes,
            }),
            Kind::Write {
                token,
                space,
                key_size,
            } => {
                let (key, record) = bytes.split_at(key_size);
                Action::Storage(StorageOp::Write {
                    token,
                    space,
                    key,
                    record,
                })
            }
            Kind::Delete { token, space } => Action::Storage(StorageOp::Delete {
                token,
                space,
                key: bytes,
            }),
            Kind::List {
                token,
                space,
                limit,
            } => Action::Storage(StorageOp::List {
                token,
                space,
                after: bytes,
                limit,
            }),
            Kind::Connect { peer } => Action::Connect {
                peer,
                address: bytes,
            },
            Kind::Scan {
                token,
                first,
                last,
                after,
                limit,
            } => Action::Storage(StorageOp::Scan {
                token,
                first,
                last,
                after,
                limit,
            }),
            Kind::Introduce { address_size } => {
                let (address, frame) = bytes.split_at(address_size);
                Action::Introduce { address, frame }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_out_in_order_with_their_bytes_and_the_buffer_is_reused() {
        let mut queue = ActionQueue::new(4, 1024);
        queue.read(7, Space::Data, b"key").unwrap();
        queue.write(8, Space::Hints, b"k", b"record").unwrap();
        queue
            .reply(ClientId(1), 3, false, |out| {
                out.extend_from_slice(b"+OK\r\n")
            })
            .unwrap();
        assert_eq!(
            queue.poll(),
            Some(Action::Storage(StorageOp::Read {
                token: 7,
                space: Space::Data,
                key: b"key"
            }))
        );
        assert_eq!(
            queue.poll(),
            Some(Action::Storage(StorageOp::Write {
                token: 8,
                space: Space::Hints,
                key: b"k",
                record: b"record"
            }))
        );
        assert!(matches!(
            queue.poll(),
            Some(Action::Reply {
                bytes: b"+OK\r\n",
                ..
            })
        ));
        assert_eq!(queue.poll(), None);
        let capacity = queue.bytes.capacity();
        queue.read(9, Space::Data, b"again").unwrap();
        assert_eq!(queue.bytes.len(), 5, "drained bytes were dropped");
        assert_eq!(queue.bytes.capacity(), capacity, "and their room kept");
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let mut queue = ActionQueue::new(2, 8);
        queue.connect(NodeId(1), b"").unwrap();
        assert_eq!(
            queue.read(1, Space::Data, b"123456789"),
            Err(ActionsFull),
            "byte bound"
        );
        queue.connect(NodeId(2), b"").unwrap();
        assert_eq!(
            queue.connect(NodeId(3), b""),
            Err(ActionsFull),
            "count bound"
        );
        assert_eq!(queue.refused, 2);
        assert_eq!(queue.actions_peak, 2);
        assert_eq!(queue.queue.len(), 2);
    }
}
