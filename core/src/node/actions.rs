//! What a node asks its shell to do, and the bounded queue that holds it until polled.
//!
//! Every action's bytes (a peer frame, a client reply, a storage key and record) are
//! written into one byte buffer the node owns; [`Action`] borrows from it. The buffer is
//! emptied, keeping its capacity, once every action has been polled, so a shell that
//! drains after each `handle` (the str0m rule) never makes the node allocate here. The
//! queue refuses past `actions_max` actions or `action_bytes_max` bytes: a refused
//! action is counted, and the caller turns it into the failure it stands for.

use super::storage::{Space, StorageOp};
use crate::version::NodeId;
use crate::wire::{Message, encode_frame};
use std::collections::VecDeque;

/// A client connection, named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

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
    Storage(StorageOp<&'a [u8]>),
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
        durable: bool,
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
        durable: bool,
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
        (key, record): (&[u8], &[u8]),
        durable: bool,
    ) -> Result<(), ActionsFull> {
        let key_size = key.len();
        self.push(
            Kind::Write {
                token,
                space,
                key_size,
                durable,
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
        (after, limit): (Option<u64>, u32),
        durable: bool,
    ) -> Result<(), ActionsFull> {
        let kind = Kind::Scan {
            token,
            first,
            last,
            after,
            limit,
            durable,
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
                durable,
            } => {
                let (key, record) = bytes.split_at(key_size);
                Action::Storage(StorageOp::Write {
                    token,
                    space,
                    key,
                    record,
                    durable,
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
                durable,
            } => Action::Storage(StorageOp::Scan {
                token,
                first,
                last,
                after,
                limit,
                durable,
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
        queue
            .write(8, Space::Hints, (b"k", b"record"), false)
            .unwrap();
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
                record: b"record",
                durable: false
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
