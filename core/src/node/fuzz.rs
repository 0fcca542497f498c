//! The fuzz entry point for a whole node: arbitrary bytes become a sequence of inputs
//! (client commands, peer frames of any type from known and unknown peers, time moving
//! on, storage completions that succeed, fail or hand back garbage, peers going up and
//! down) into one [`Node`] of a three-node cluster with small bounds. After every input
//! the actions are drained, at most [`ACTIONS_PER_INPUT_MAX`] of them: a node that
//! keeps producing actions without new input is stuck in a loop, and that panics here.
//! After every input every bounded structure's peak must be within its bound, and after
//! the timers fired the next one must lie in the future (else a shell spins).
//!
//! Used by `fuzz/fuzz_targets/node_events.rs` and by the corpus replay test.
// A fuzz entry point reports what it finds by panicking; it is built only for tests
// and the fuzzer.
#![allow(clippy::panic)]

use super::memory::MemoryDisk;
use super::{Action, ClientId, Completion, Config, Input, Node, NodeIdentity};
use super::{StorageFailure, StorageOp};
use crate::placement::Member;
use crate::resp::Command;
use crate::time::Instant;
use crate::version::NodeId;
use crate::wire::{FRAME_HEADER_SIZE_BYTES, PROTOCOL_VERSION, decode_frame};
use core::time::Duration;

/// Actions one input may lead to before the node counts as stuck.
pub const ACTIONS_PER_INPUT_MAX: usize = 100_000;
/// Storage operations waiting for a completion; the node's own bound is far lower.
const PENDING_MAX: usize = 10_000;
const CLUSTER: u64 = 0xF022;

/// Reads the fuzz input a few bytes at a time; zeros once it is used up.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, length: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(length.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// One node and what it asked of its storage.
struct Bench {
    node: Node,
    now: Instant,
    disk: MemoryDisk,
    pending: Vec<StorageOp>,
    next_tag: u64,
}

impl Bench {
    fn new() -> Bench {
        let members: Vec<Member> = (1..=3).map(|id| Member::equal(NodeId(id))).collect();
        let mut config = Config::new(CLUSTER, members);
        config.partition_bits = 4;
        config.peer_address = b"n1".to_vec();
        config.requests_max = 8;
        config.storage_operations_max = 16;
        config.locked_keys_max = 8;
        config.waiting_operations_max = 8;
        config.hints_max = 8;
        config.peer_requests_max = 8;
        config.actions_max = 64;
        let now = Instant::from_millis(1);
        let node = match Node::new(config, NodeIdentity { id: NodeId(1) }, 7, now) {
            Ok(node) => node,
            Err(error) => panic!("the fuzz configuration is valid: {error:?}"),
        };
        let mut bench = Bench {
            node,
            now,
            disk: MemoryDisk::new(),
            pending: Vec::new(),
            next_tag: 0,
        };
        bench.drain();
        bench
    }

    /// Takes every action the node has, within the bound.
    fn drain(&mut self) {
        for _ in 0..ACTIONS_PER_INPUT_MAX {
            let Some(action) = self.node.poll_action() else {
                self.check_bounds();
                return;
            };
            if let Action::Storage(operation) = action {
                assert!(
                    self.pending.len() < PENDING_MAX,
                    "storage operations pile up"
                );
                self.pending.push(operation.owned());
            }
        }
        panic!("more than {ACTIONS_PER_INPUT_MAX} actions from one input: a busy loop");
    }

    fn check_bounds(&self) {
        for bound in self.node.bounds() {
            assert!(
                bound.peak <= bound.max,
                "{} peaked at {}, bound {}",
                bound.name,
                bound.peak,
                bound.max
            );
        }
    }

    fn handle(&mut self, input: Input<'_>) {
        self.node.handle(self.now, input);
        self.drain();
    }

    fn client(&mut self, bytes: &mut Bytes<'_>) {
        let count = 1 + usize::from(bytes.byte() % 4);
        let arguments: Vec<&[u8]> = (0..count)
            .map(|_| {
                let length = usize::from(bytes.byte() % 24);
                bytes.take(length)
            })
            .collect();
        let Ok(command) = Command::parse(&arguments) else {
            return;
        };
        self.next_tag += 1;
        let input = Input::Client {
            client: ClientId(u64::from(bytes.byte() % 3)),
            tag: self.next_tag,
            timestamp_ms: self.now.as_nanos() / 1_000_000,
            command,
        };
        self.handle(input);
    }

    /// A frame of this cluster and protocol whose type and body are fuzz bytes.
    fn peer(&mut self, bytes: &mut Bytes<'_>) {
        let from = NodeId(2 + u64::from(bytes.byte() % 3)); // 4 is no member
        let kind = bytes.byte();
        let length = usize::from(bytes.u16() % 1024);
        let body = bytes.take(length);
        let mut frame = Vec::with_capacity(FRAME_HEADER_SIZE_BYTES + body.len());
        let after_length = (FRAME_HEADER_SIZE_BYTES - 4 + body.len()) as u32;
        frame.extend_from_slice(&after_length.to_le_bytes());
        frame.push(PROTOCOL_VERSION);
        frame.extend_from_slice(&CLUSTER.to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(body);
        let limits = self.node.wire_limits();
        if let Ok((message, _)) = decode_frame(&frame, CLUSTER, limits) {
            self.handle(Input::Peer { from, message });
        }
    }

    fn advance(&mut self, bytes: &mut Bytes<'_>) {
        self.now += Duration::from_millis(u64::from(bytes.u16()));
        if self.node.poll_timeout().is_some_and(|at| at <= self.now) {
            self.timeout();
        }
    }

    /// Fires the node's timers. Afterwards its next timer must lie in the future: one
    /// still due would have a shell wake it again at once, for ever.
    fn timeout(&mut self) {
        self.handle(Input::Timeout);
        if let Some(at) = self.node.poll_timeout() {
            assert!(
                at > self.now,
                "a timer still due right after the timers fired"
            );
        }
    }

    /// Completes pending operation `index` as `how` says: 0 and above 3 succeed, 1
    /// fails (I/O), 2 fails (disk full), 3 hands a read garbage.
    fn complete(&mut self, index: usize, how: u8) {
        if self.pending.is_empty() {
            return;
        }
        let job = self.pending.remove(index % self.pending.len());
        let failure = match how {
            1 => Some(StorageFailure::Io),
            2 => Some(StorageFailure::DiskFull),
            _ => None,
        };
        let answer = match (&job, failure, how) {
            // A read handed garbage: what a corrupted store must never cause.
            (StorageOp::Read { token, .. }, None, 3) => Completion::Read {
                token: *token,
                result: Ok(Some(b"\x00\x01garbage".to_vec())),
            },
            _ => self.disk.perform(&job, failure),
        };
        self.node.handle(self.now, Input::Storage(answer));
        self.drain();
    }
}

/// Feeds `data` to one node as a sequence of inputs (see the module docs).
pub fn fuzz_node(data: &[u8]) {
    let mut bench = Bench::new();
    let mut bytes = Bytes { data };
    let mut steps = 0;
    while !bytes.data.is_empty() && steps < 10_000 {
        steps += 1;
        match bytes.byte() % 8 {
            0 | 1 => bench.client(&mut bytes),
            2 => bench.peer(&mut bytes),
            3 => bench.advance(&mut bytes),
            4 => {
                let (index, how) = (usize::from(bytes.byte()), bytes.byte() % 8);
                bench.complete(index, how);
            }
            5 => {
                let peer = NodeId(2 + u64::from(bytes.byte() % 2));
                let input = match bytes.byte() % 3 {
                    0 => Input::PeerUp { peer },
                    1 => Input::PeerDown { peer },
                    _ => Input::PeerUnreachable { peer },
                };
                bench.handle(input);
            }
            _ => {
                // Everything pending completes successfully, oldest first.
                for _ in 0..bench.pending.len().min(64) {
                    bench.complete(0, 0);
                }
            }
        }
    }
    // Then the node runs on its own for a while: timers fire, storage answers.
    for _ in 0..50 {
        bench.now += Duration::from_millis(500);
        bench.timeout();
        while !bench.pending.is_empty() {
            bench.complete(0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Space;

    #[test]
    fn an_encoded_set_reaches_the_disk() {
        let mut bench = Bench::new();
        // client: 3 arguments "SET" "k" "v", from client 0.
        let input = [2, 3, b'S', b'E', b'T', 1, b'k', 1, b'v', 0];
        bench.client(&mut Bytes { data: &input });
        for _ in 0..100 {
            if bench.pending.is_empty() {
                break;
            }
            bench.complete(0, 0);
        }
        assert!(
            bench.disk.get(Space::Data, b"k").is_some(),
            "{:?}",
            bench.disk
        );
    }

    #[test]
    fn a_few_inputs_run_through() {
        fuzz_node(b"");
        fuzz_node(&[
            0, 1, 3, b'S', b'E', b'T', 1, b'k', 1, b'v', 6, 3, 0xff, 0x10,
        ]);
        let mut long = Vec::new();
        for i in 0..2_000u32 {
            long.extend_from_slice(&i.to_le_bytes());
        }
        fuzz_node(&long);
    }
}
