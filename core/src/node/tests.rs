//! Node behaviour, step by step, on a tiny in-memory cluster whose frames and storage
//! completions the test releases by hand. (The simulator in tests/ runs whole clusters
//! under faults; these pin single behaviours down.)

use super::memory::MemoryDisk;
use super::writer::is_one_shot;
use super::*;
use crate::placement::Member;
use crate::resp::{AdminCommand, Arguments};
use crate::version::{VersionBounds, VersionSet};
use crate::wire::{ReplicaStatus, decode_frame};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

struct Harness {
    nodes: Vec<Node>,
    disks: Vec<MemoryDisk>,
    frames: VecDeque<(NodeId, NodeId, Vec<u8>)>,
    jobs: Vec<VecDeque<StorageOp>>,
    replies: Vec<(usize, Vec<u8>)>,
    /// Nodes whose frames (both ways) are dropped.
    cut: BTreeSet<usize>,
    /// Nodes whose disk refuses every write and delete as full.
    full: BTreeSet<usize>,
    /// Nodes whose storage operations wait (frames still flow): a slow disk.
    paused: BTreeSet<usize>,
    now: Instant,
    next_tag: u64,
}

const CLUSTER: u64 = 77;

impl Harness {
    fn new(count: u64, configure: impl Fn(&mut Config)) -> Harness {
        let members: Vec<Member> = (1..=count).map(|id| Member::equal(NodeId(id))).collect();
        let mut config = Config::new(CLUSTER, members);
        config.partition_bits = 4;
        configure(&mut config);
        let now = Instant::from_millis(10);
        let nodes: Vec<Node> = (1..=count)
            .map(|id| {
                let mut config = config.clone();
                config.peer_address = format!("n{id}").into_bytes();
                Node::new(config, NodeIdentity { id: NodeId(id) }, id, now).unwrap()
            })
            .collect();
        let mut harness = Harness {
            disks: vec![MemoryDisk::new(); nodes.len()],
            jobs: (0..nodes.len()).map(|_| VecDeque::new()).collect(),
            nodes,
            frames: VecDeque::new(),
            replies: Vec::new(),
            cut: BTreeSet::new(),
            full: BTreeSet::new(),
            paused: BTreeSet::new(),
            now,
            next_tag: 0,
        };
        for index in 0..harness.nodes.len() {
            harness.drain(index);
        }
        harness.settle();
        harness
    }

    fn index(id: NodeId) -> usize {
        id.0 as usize - 1
    }

    fn drain(&mut self, index: usize) {
        let from = self.nodes[index].id();
        while let Some(action) = self.nodes[index].poll_action() {
            match action {
                Action::Send { to, frame } => self.frames.push_back((from, to, frame.to_vec())),
                Action::Reply { bytes, .. } => self.replies.push((index, bytes.to_vec())),
                Action::Storage(operation) => self.jobs[index].push_back(operation.owned()),
                Action::Connect { .. } => {}
                Action::Introduce { address, frame } => {
                    let to = core::str::from_utf8(address)
                        .ok()
                        .and_then(|a| a.strip_prefix('n'))
                        .and_then(|id| id.parse().ok())
                        .map(NodeId);
                    if let Some(to) = to {
                        self.frames.push_back((from, to, frame.to_vec()));
                    }
                }
            }
        }
    }

    /// Node `index` restarts on its disk: a new node, in-memory state gone.
    fn restart(&mut self, index: usize) {
        let config = self.nodes[index].config().clone();
        let id = self.nodes[index].id();
        self.nodes[index] = Node::new(config, NodeIdentity { id }, id.0 + 100, self.now).unwrap();
        self.jobs[index].clear();
        self.drain(index);
    }

    /// Starts node `id` outside the cluster, with node 1 as its seed.
    fn add_joining(&mut self, id: u64) {
        let mut config = self.nodes[0].config().clone();
        config.members.clear();
        config.peer_address = format!("n{id}").into_bytes();
        config.seeds = vec![b"n1".to_vec()];
        let node = Node::new(config, NodeIdentity { id: NodeId(id) }, id, self.now).unwrap();
        assert_eq!(Harness::index(node.id()), self.nodes.len());
        self.nodes.push(node);
        self.disks.push(MemoryDisk::new());
        self.jobs.push(VecDeque::new());
        let index = self.nodes.len() - 1;
        self.drain(index);
    }

    /// Delivers every queued frame once (frames to or from a cut node are dropped).
    fn deliver(&mut self) -> bool {
        let frames: Vec<_> = self.frames.drain(..).collect();
        let any = !frames.is_empty();
        for (from, to, frame) in frames {
            let (a, b) = (Harness::index(from), Harness::index(to));
            if self.cut.contains(&a) || self.cut.contains(&b) {
                continue;
            }
            let (message, _) = decode_frame(&frame, CLUSTER, self.nodes[b].wire_limits()).unwrap();
            self.nodes[b].handle(self.now, Input::Peer { from, message });
            self.drain(b);
        }
        any
    }

    /// Completes node `index`'s oldest storage operation.
    fn complete_one(&mut self, index: usize) -> bool {
        let Some(job) = self.jobs[index].pop_front() else {
            return false;
        };
        let full = self.full.contains(&index) && job.is_write();
        let failure = full.then_some(StorageFailure::DiskFull);
        let answer = self.disks[index].perform(&job, failure);
        self.nodes[index].handle(self.now, Input::Storage(answer));
        self.drain(index);
        true
    }

    /// Runs frames and storage (of nodes not cut) until nothing moves.
    fn settle(&mut self) {
        for round in 0.. {
            assert!(round < 100_000, "settle never ends");
            let mut moved = self.deliver();
            for index in 0..self.nodes.len() {
                if !self.cut.contains(&index) && !self.paused.contains(&index) {
                    while self.complete_one(index) {
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves time forward by `milliseconds`, firing timers on the way.
    fn advance(&mut self, milliseconds: u64) {
        let end = self.now + core::time::Duration::from_millis(milliseconds);
        loop {
            let next = self.nodes.iter().filter_map(Node::poll_timeout).min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    for index in 0..self.nodes.len() {
                        if self.nodes[index]
                            .poll_timeout()
                            .is_some_and(|t| t <= self.now)
                        {
                            self.nodes[index].handle(self.now, Input::Timeout);
                            self.drain(index);
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn send(&mut self, index: usize, command: Command<'_>) {
        self.next_tag += 1;
        let timestamp_ms = self.now.as_nanos() / 1_000_000;
        let input = Input::Client {
            client: ClientId(1),
            tag: self.next_tag,
            timestamp_ms,
            command,
        };
        self.nodes[index].handle(self.now, input);
        self.drain(index);
    }

    /// A VSET of `key` at node `index` with `context`, settled: its reply.
    fn vset(&mut self, index: usize, key: &[u8], context: &str, value: &[u8]) -> String {
        self.send(
            index,
            Command::VSet {
                key,
                context: context.as_bytes(),
                value,
                write_quorum: None,
                sync: None,
            },
        );
        self.settle();
        self.last_reply()
    }

    fn last_reply(&self) -> String {
        self.replies
            .last()
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default()
    }

    /// A node index whose data is a replica of `key`, and one that is not (if any).
    /// Cuts `others` off and tells node `index` they are down (as its failure detector
    /// would).
    fn cut_off(&mut self, index: usize, others: &[usize]) {
        for &other in others {
            self.cut.insert(other);
            let peer = NodeId(other as u64 + 1);
            self.nodes[index].handle(self.now, Input::PeerDown { peer });
        }
        self.drain(index);
    }

    /// Cuts every replica of `key` off from the first node outside its preference
    /// list (which then stands in for them): (that node, the replicas).
    fn isolate_outsider(&mut self, key: &[u8]) -> (usize, Vec<usize>) {
        let (outsider, replicas) = (self.outsider_of(key), self.replicas_of(key));
        self.cut_off(outsider, &replicas);
        (outsider, replicas)
    }

    /// The first node that is not a replica of `key`.
    fn outsider_of(&self, key: &[u8]) -> usize {
        let replicas = self.replicas_of(key);
        (0..self.nodes.len())
            .find(|index| !replicas.contains(index))
            .expect("a node outside the key's preference list")
    }

    fn replicas_of(&self, key: &[u8]) -> Vec<usize> {
        let partition = self.nodes[0].ring().partition_of(key);
        self.nodes[0]
            .ring()
            .preference_list(partition)
            .map(Harness::index)
            .collect()
    }

    /// A key node `index` does not replicate: it forwards the key's writes.
    fn key_forwarded_by(&self, index: usize) -> Vec<u8> {
        (0..)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|key| !self.replicas_of(key).contains(&index))
            .unwrap()
    }

    /// Two keys node 1 forwards to the same first replica, and that replica. Test
    /// harness only: the key iterator is endless, so its `unwrap`s cannot fail.
    fn two_keys_forwarded_to_one_replica(&self) -> (usize, [Vec<u8>; 2]) {
        let mut forwarded = (0..)
            .map(|i| format!("key-{i}").into_bytes())
            .filter(|key| !self.replicas_of(key).contains(&0));
        let first_key = forwarded.next().unwrap();
        let first = self.replicas_of(&first_key)[0];
        let second_key = forwarded
            .find(|key| self.replicas_of(key)[0] == first)
            .unwrap();
        (first, [first_key, second_key])
    }

    /// The nodes the queued frames ask for a replica's read.
    fn replica_gets_queued(&self) -> Vec<NodeId> {
        self.frames
            .iter()
            .filter(|(_, to, frame)| {
                let (message, _) = decode_frame(
                    frame,
                    CLUSTER,
                    self.nodes[Harness::index(*to)].wire_limits(),
                )
                .unwrap();
                matches!(message, Message::ReplicaGet { .. })
            })
            .map(|&(_, to, _)| to)
            .collect()
    }

    fn stored(&self, index: usize, key: &[u8]) -> Option<VersionSet> {
        let bytes = self.disks[index].get(Space::Data, key)?;
        Some(VersionSet::decode(bytes, Default::default()).unwrap())
    }
}

fn values(versions: &VersionSet) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = versions
        .siblings()
        .filter_map(|s| s.value.data.clone())
        .collect();
    values.sort();
    values
}

#[test]
fn a_set_replies_only_after_w_replicas_made_it_durable() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 2);
    let key = b"cart";
    harness.send(
        0,
        Command::Set {
            key,
            value: b"apples",
        },
    );
    // The coordinator reads, mints and writes locally; nothing is sent before that write
    // is durable, and no reply comes before a second replica's write is.
    assert!(harness.complete_one(0), "the coordinator's read");
    assert!(
        harness.frames.is_empty(),
        "nothing leaves before the local write is durable"
    );
    assert!(harness.complete_one(0), "the coordinator's write");
    assert_eq!(
        harness.frames.len(),
        2,
        "then both other replicas are sent the versions"
    );
    harness.deliver();
    assert!(harness.complete_one(1), "replica 2 reads");
    harness.deliver();
    assert!(
        harness.replies.is_empty(),
        "W=2: one durable copy is not enough"
    );
    assert!(harness.complete_one(1), "replica 2's write is durable");
    harness.deliver();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.settle();
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, key).unwrap()),
            [b"apples".to_vec()]
        );
    }
}

#[test]
fn a_read_asks_r_replicas_and_the_rest_when_one_is_slower_than_recent_answers() {
    let mut harness = Harness::new(3, |c| {
        c.full_read_one_in = u32::MAX;
        c.read_speculation_min_ms = 5;
        c.replica_timeout_ms = 300;
    });
    let key = b"profile";
    harness.send(0, Command::Set { key, value: b"v1" });
    harness.settle();
    let read = |harness: &mut Harness| {
        harness.send(
            0,
            Command::VGet {
                key,
                read_quorum: None,
            },
        )
    };
    // R=2 of N=3 at a replica: its own read and one other replica's.
    read(&mut harness);
    let asked = harness.replica_gets_queued();
    assert_eq!(asked.len(), 1, "one ReplicaGet, not two: {asked:?}");
    harness.settle();
    assert!(harness.last_reply().contains("v1"));
    assert_eq!(harness.nodes[0].stats().reads_speculated, 0);
    // The replica it asks goes silent: past the slowest recent answer (here the
    // 5 ms floor) the read asks the third replica and answers long before the
    // replica timeout.
    harness.replies.clear();
    read(&mut harness);
    let asked = harness.replica_gets_queued();
    assert_eq!(asked.len(), 1);
    harness.cut.insert(Harness::index(asked[0]));
    harness.settle();
    harness.advance(4);
    assert!(
        harness.replies.is_empty(),
        "still waiting on the one it asked"
    );
    harness.advance(2);
    assert!(
        harness.last_reply().contains("v1"),
        "{}",
        harness.last_reply()
    );
    assert_eq!(harness.nodes[0].stats().reads_speculated, 1);
}

#[test]
fn a_full_read_asks_all_n_replicas() {
    let mut harness = Harness::new(3, |c| c.full_read_one_in = 1);
    harness.send(
        0,
        Command::VGet {
            key: b"profile",
            read_quorum: None,
        },
    );
    assert_eq!(harness.replica_gets_queued().len(), 2);
    harness.settle();
    assert!(harness.last_reply().ends_with("*0\r\n"), "no siblings");
    assert_eq!(harness.nodes[0].stats().reads_speculated, 0);
}

#[test]
fn concurrent_writes_become_siblings_and_a_context_write_supersedes_them() {
    let mut harness = Harness::new(3, |_| {});
    let key = b"cart";
    harness.send(
        0,
        Command::VSet {
            key,
            context: b"",
            value: b"apples",
            write_quorum: None,
            sync: None,
        },
    );
    harness.send(
        1,
        Command::VSet {
            key,
            context: b"",
            value: b"pears",
            write_quorum: None,
            sync: None,
        },
    );
    harness.settle();
    harness.send(
        2,
        Command::VGet {
            key,
            read_quorum: Some(3),
        },
    );
    harness.settle();
    let reply = harness.last_reply();
    assert!(
        reply.contains("apples") && reply.contains("pears"),
        "both siblings: {reply}"
    );
    let token = reply.split("\r\n").nth(2).unwrap().to_string();
    harness.send(
        2,
        Command::VSet {
            key,
            context: token.as_bytes(),
            value: b"both",
            write_quorum: Some(3),
            sync: None,
        },
    );
    harness.settle();
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, key).unwrap()),
            [b"both".to_vec()]
        );
    }
    harness.send(0, Command::Get { key });
    harness.settle();
    assert_eq!(harness.last_reply(), "$4\r\nboth\r\n");
}

/// The bulk string a VSET or VDEL answered: its token.
fn token_of(reply: &str) -> String {
    assert!(reply.starts_with('$'), "a token: {reply}");
    reply.split("\r\n").nth(1).unwrap().to_string()
}

#[test]
fn the_token_a_write_returns_never_covers_a_sibling_its_writer_was_not_shown() {
    // The cart: two writers start from the same (empty) context; each writes
    // again with the token its first write returned. Neither may erase the other's
    // write, which it never saw; each must supersede its own.
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 3);
    let key = b"cart";
    let vset = |harness: &mut Harness, node: usize, context: &str, value: &[u8]| {
        harness.send(
            node,
            Command::VSet {
                key,
                context: context.as_bytes(),
                value,
                write_quorum: None,
                sync: None,
            },
        );
        harness.settle();
        token_of(&harness.last_reply())
    };
    let token_a = vset(&mut harness, 0, "", b"from-A");
    let token_b = vset(&mut harness, 2, "", b"from-B");
    for index in 0..3 {
        let stored = harness.stored(index, key).unwrap();
        assert_eq!(values(&stored), [b"from-A".to_vec(), b"from-B".to_vec()]);
    }
    vset(&mut harness, 2, &token_b, b"from-B-2");
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, key).unwrap()),
            [b"from-A".to_vec(), b"from-B-2".to_vec()],
            "node {index}: from-A was acknowledged and never shown to B"
        );
    }
    let token_a2 = vset(&mut harness, 1, &token_a, b"from-A-2");
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, key).unwrap()),
            [b"from-A-2".to_vec(), b"from-B-2".to_vec()],
        );
    }
    // A chain of writes, each with the token of the one before, keeps one sibling.
    let mut token = token_a2;
    for round in 0..5 {
        token = vset(
            &mut harness,
            round % 3,
            &token,
            format!("A-{round}").as_bytes(),
        );
    }
    assert_eq!(
        values(&harness.stored(0, key).unwrap()),
        [b"A-4".to_vec(), b"from-B-2".to_vec()]
    );
    assert!(
        harness.stored(0, key).unwrap().clock_size() <= 3 * 4,
        "lanes bound the clock"
    );
}

#[test]
fn del_counts_the_keys_that_existed() {
    // Four nodes, N=3: each key has a node that is not its replica and forwards.
    let mut harness = Harness::new(4, |c| c.replicas = 3);
    let del = |harness: &mut Harness, node: usize, keys: &[&[u8]]| {
        harness.send(
            node,
            Command::Del {
                keys: keys.iter().copied().collect(),
            },
        );
        harness.settle();
        harness.last_reply()
    };
    for node in 0..4 {
        let key = format!("del-{node}");
        harness.send(
            node,
            Command::Set {
                key: key.as_bytes(),
                value: b"v",
            },
        );
        harness.settle();
        for other in 0..4 {
            let reply = del(&mut harness, other, &[b"never-1", b"never-2"]);
            assert_eq!(reply, ":0\r\n", "node {other}: no key existed");
        }
        let reply = del(&mut harness, (node + 1) % 4, &[key.as_bytes(), b"never-1"]);
        assert_eq!(
            reply,
            ":1\r\n",
            "node {}: one of the two existed",
            (node + 1) % 4
        );
        let reply = del(&mut harness, (node + 2) % 4, &[key.as_bytes()]);
        assert_eq!(reply, ":0\r\n", "deleted already");
    }
}

#[test]
fn a_read_repairs_the_replica_that_answered_with_less() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 2);
    let key = b"profile";
    harness.cut.insert(2);
    harness.send(0, Command::Set { key, value: b"v1" });
    harness.settle();
    // The coordinator restarts before node 3's answer is overdue, so it keeps no hint
    // for node 3: only a read can repair it.
    harness.restart(0);
    harness.cut.clear();
    harness.frames.clear();
    harness.settle();
    assert_eq!(harness.stored(2, key), None, "node 3 missed the write");
    harness.send(
        1,
        Command::VGet {
            key,
            read_quorum: Some(3),
        },
    );
    harness.settle();
    assert!(harness.last_reply().contains("v1"));
    harness.advance(1_000);
    harness.settle();
    assert_eq!(
        harness.stored(2, key),
        harness.stored(0, key),
        "read repair brought node 3 up"
    );
    assert_eq!(harness.nodes[1].stats().read_repairs_sent, 1);
    let hints_stored: u64 = harness.nodes.iter().map(|n| n.stats().hints_stored).sum();
    assert_eq!(hints_stored, 0, "repaired by the read, not by a hint");
}

#[test]
fn a_write_for_a_down_replica_goes_to_a_stand_in_and_is_handed_off_when_it_returns() {
    let mut harness = Harness::new(4, |c| {
        c.replicas = 3;
        c.write_quorum_default = 3;
        c.read_quorum_default = 2;
    });
    let key = b"k";
    let replicas = harness.replicas_of(key);
    let (coordinator, down) = (replicas[0], replicas[2]);
    let stand_in = harness.outsider_of(key);
    harness.cut.insert(down);
    let down_id = NodeId(down as u64 + 1);
    harness.nodes[coordinator].handle(harness.now, Input::PeerDown { peer: down_id });
    harness.send(
        coordinator,
        Command::Set {
            key,
            value: b"hinted",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n", "W=3 met with a stand-in");
    assert_eq!(harness.nodes[stand_in].hints_held(), 1);
    assert_eq!(
        harness.stored(stand_in, key),
        None,
        "a stand-in keeps the write as a hint, not as its own"
    );
    // The owner comes back; the coordinator's probe finds it; the stand-in delivers.
    harness.cut.clear();
    harness.nodes[stand_in].handle(harness.now, Input::PeerUp { peer: down_id });
    harness.drain(stand_in);
    harness.advance(2_000);
    harness.settle();
    assert_eq!(
        values(&harness.stored(down, key).unwrap()),
        [b"hinted".to_vec()]
    );
    assert_eq!(
        harness.nodes[stand_in].hints_held(),
        0,
        "delivered hints are deleted"
    );
    assert!(
        harness.disks[stand_in]
            .records(Space::Hints)
            .next()
            .is_none()
    );
    assert!(
        harness.nodes[coordinator].believes_up(down_id),
        "the probe brought it back"
    );
}

#[test]
fn a_stand_in_refuses_hints_past_its_byte_bound_until_delivery_frees_room() {
    let mut harness = Harness::new(4, |c| {
        c.replicas = 3;
        c.write_quorum_default = 3;
        c.hint_bytes_max = 2_000;
    });
    // Keys whose replicas are nodes 1 to 3 (node 4 stands in); node 3 is down.
    let keys: Vec<Vec<u8>> = (0..)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|key| harness.outsider_of(key) == 3)
        .take(5)
        .collect();
    let (coordinator, down, stand_in) = (0, 2, 3);
    harness.cut.insert(down);
    let down_id = NodeId(down as u64 + 1);
    harness.nodes[coordinator].handle(harness.now, Input::PeerDown { peer: down_id });
    harness.drain(coordinator);
    let value = [b'v'; 600];
    let mut refused = 0;
    for key in &keys {
        harness.send(coordinator, Command::Set { key, value: &value });
        harness.settle();
        let reply = harness.last_reply();
        if reply != "+OK\r\n" {
            assert!(reply.starts_with('-'), "{reply}");
            refused += 1;
        }
    }
    // Each hint takes about 650 bytes: three fit in 2,000, the rest are refused (W=3
    // has no other stand-in) and the bound held at its peak.
    let held = harness.nodes[stand_in].hints_held();
    assert_eq!((held, refused), (3, 2));
    let bytes = harness.nodes[stand_in].hint_bytes_held();
    assert!((1_900..=2_000).contains(&bytes), "{bytes}");
    let bound = harness.nodes[stand_in]
        .bounds()
        .into_iter()
        .find(|bound| bound.name == "hint bytes")
        .unwrap();
    assert!(bound.peak <= bound.max, "{bound:?}");
    // The owner returns: the hints are delivered and deleted, and their room is free.
    harness.cut.clear();
    harness.nodes[stand_in].handle(harness.now, Input::PeerUp { peer: down_id });
    harness.drain(stand_in);
    harness.advance(2_000);
    harness.settle();
    assert_eq!(harness.nodes[stand_in].hints_held(), 0);
    assert_eq!(harness.nodes[stand_in].hint_bytes_held(), 0);
}

#[test]
fn a_stand_in_cut_off_from_every_replica_adds_one_clock_entry_for_all_its_writes() {
    // A client on a node cut off from all three replicas of a hot key: the node
    // stands in for them and mints every write itself. More writes than a clock may
    // name entries must leave the key writable, on the stand-in and at the owner.
    let mut harness = Harness::new(4, |c| {
        c.replicas = 3;
        c.write_quorum_default = 1;
        c.read_quorum_default = 1;
    });
    let key = b"hot";
    let (stand_in, replicas) = harness.isolate_outsider(key);
    let writes = VersionBounds::default().coordinators_max + 10;
    for write in 0..writes {
        let value = format!("v{write}");
        harness.send(
            stand_in,
            Command::Set {
                key,
                value: value.as_bytes(),
            },
        );
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n", "write {write}");
    }
    assert_eq!(
        harness.nodes[stand_in].hints_held(),
        3,
        "one for each replica"
    );
    // The owner is back: the hint arrives and the key stays writable there.
    let owner = replicas[0];
    harness.cut.clear();
    let owner_id = NodeId(owner as u64 + 1);
    harness.nodes[stand_in].handle(harness.now, Input::PeerUp { peer: owner_id });
    harness.drain(stand_in);
    harness.advance(5_000);
    harness.settle();
    let held = harness.stored(owner, key).expect("the hint was delivered");
    let last = format!("v{}", writes - 1);
    assert_eq!(values(&held), [last.into_bytes()]);
    assert!(
        held.clock_size() == 1,
        "one stand-in entry for every write: {:?}",
        held.join().entries()
    );
    harness.send(
        owner,
        Command::Set {
            key,
            value: b"after",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
}

#[test]
fn the_coordinator_keeps_a_hint_for_a_replica_no_stand_in_could_replace() {
    // Three nodes and N=3: every node is a replica, so there is no stand-in.
    let mut harness = Harness::new(3, |c| {
        c.write_quorum_default = 2;
        c.anti_entropy_interval_ms = 3_600_000;
    });
    let key = b"missed";
    harness.cut.insert(2);
    harness.send(0, Command::Set { key, value: b"v1" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n", "W=2 met without node 3");
    assert_eq!(harness.nodes[0].hints_held(), 0, "node 3 may still answer");
    // Node 3 never answers: past the replica timeout the coordinator keeps the write
    // for it, durably, in its hint space.
    harness.advance(2_000);
    assert_eq!(harness.nodes[0].hints_held(), 1);
    assert_eq!(harness.nodes[0].stats().hints_held_for_down_owners, 1);
    assert_eq!(harness.disks[0].records(Space::Hints).count(), 1);
    // A write while node 3 is known down keeps a hint at once.
    harness.send(
        0,
        Command::Set {
            key: b"later",
            value: b"v2",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    assert_eq!(harness.nodes[0].hints_held(), 2);
    // Node 3 is back: the hints reach it without a read or an exchange.
    harness.cut.clear();
    harness.frames.clear();
    harness.advance(5_000);
    harness.settle();
    assert_eq!(values(&harness.stored(2, key).unwrap()), [b"v1".to_vec()]);
    assert_eq!(
        values(&harness.stored(2, b"later").unwrap()),
        [b"v2".to_vec()]
    );
    assert_eq!(
        harness.nodes[0].hints_held(),
        0,
        "delivered hints are deleted"
    );
    assert_eq!(harness.disks[0].records(Space::Hints).count(), 0);
    let pushed: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().entropy_keys_pushed)
        .sum();
    assert_eq!(pushed, 0, "delivered by hints, not by anti-entropy");
}

#[test]
fn a_slow_replica_no_stand_in_could_replace_is_waited_for_and_a_dead_one_is_not() {
    // Three nodes, N=3 and W=3: every node is a target, so none can stand in.
    let mut harness = Harness::new(3, |c| {
        c.write_quorum_default = 3;
        c.replica_timeout_ms = 300;
        c.request_timeout_ms = 2_000;
        c.gossip_interval_ms = 20;
    });
    let key = b"hot";
    harness.send(0, Command::Set { key, value: b"v1" });
    while harness.complete_one(0) {}
    harness.deliver();
    // Node 3 has the write queued behind its slow disk; it still gossips.
    harness.paused.insert(2);
    harness.settle();
    harness.advance(700);
    assert!(
        harness.replies.is_empty(),
        "past the replica timeout the write still waits for node 3, which is heard from: {}",
        harness.last_reply()
    );
    harness.paused.clear();
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n", "node 3's late ack makes W");
    assert_eq!(harness.replies.len(), 1, "one answer");
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, key).unwrap()),
            [b"v1".to_vec()]
        );
    }
    // Node 3 goes silent for good: the next write is refused within two replica
    // timeouts, not left waiting for the request's deadline.
    harness.cut.insert(2);
    harness.replies.clear();
    let sent_at = harness.now;
    harness.send(0, Command::Set { key, value: b"v2" });
    harness.settle();
    while harness.replies.is_empty() && harness.now < sent_at + core::time::Duration::from_secs(3) {
        harness.advance(10);
    }
    assert!(
        harness.last_reply().starts_with("-UNAVAILABLE"),
        "{}",
        harness.last_reply()
    );
    let took = harness.now.saturating_duration_since(sent_at);
    assert!(
        took <= core::time::Duration::from_millis(600),
        "refused after {took:?}"
    );
}

#[test]
fn a_forward_lost_with_its_link_is_retried_at_once_and_stays_one_write() {
    let mut harness = Harness::new(5, |c| c.replicas = 3);
    let key = harness.key_forwarded_by(0);
    let first = harness.replicas_of(&key)[0];
    let first_id = NodeId(first as u64 + 1);
    harness.send(
        0,
        Command::VSet {
            key: &key,
            context: b"",
            value: b"v1",
            write_quorum: None,
            sync: None,
        },
    );
    // The first replica takes the forward and mints it durably, then its links break
    // before anything it sent arrives.
    harness.deliver();
    while harness.complete_one(first) {}
    harness.cut.insert(first);
    harness.nodes[0].handle(harness.now, Input::PeerDown { peer: first_id });
    harness.drain(0);
    harness.settle();
    let token = token_of(&harness.last_reply());
    assert_eq!(harness.nodes[0].stats().forwards_retried, 1);
    assert_eq!(
        values(&harness.stored(first, &key).unwrap()),
        [b"v1".to_vec()]
    );
    // The client writes on with the token the retry returned. When the first replica
    // is back, its copy of v1 is superseded too: one client write, one sibling.
    harness.send(
        0,
        Command::VSet {
            key: &key,
            context: token.as_bytes(),
            value: b"v2",
            write_quorum: None,
            sync: None,
        },
    );
    harness.settle();
    token_of(&harness.last_reply());
    harness.cut.clear();
    for index in 0..5 {
        harness.nodes[index].handle(harness.now, Input::PeerUp { peer: first_id });
        harness.drain(index);
    }
    harness.advance(60_000);
    for index in harness.replicas_of(&key) {
        assert_eq!(
            values(&harness.stored(index, &key).unwrap()),
            [b"v2".to_vec()],
            "node {index}"
        );
    }
    // A connection that could not be made carried nothing: the next forward to the
    // first replica goes to the second as soon as the shell says so, as a first try.
    harness.replies.clear();
    harness.cut.insert(first);
    harness.send(
        0,
        Command::Set {
            key: &key,
            value: b"v3",
        },
    );
    harness.settle();
    harness.nodes[0].handle(harness.now, Input::PeerUnreachable { peer: first_id });
    harness.drain(0);
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    assert_eq!(harness.nodes[0].stats().forwards_redirected, 1);
    assert_eq!(harness.nodes[0].stats().forwards_retried, 1);
}

#[test]
fn a_forward_retried_twice_mints_each_attempt_once_and_stays_one_write() {
    let mut harness = Harness::new(5, |c| c.replicas = 3);
    let key = harness.key_forwarded_by(0);
    let replicas = harness.replicas_of(&key);
    harness.send(
        0,
        Command::Set {
            key: &key,
            value: b"v1",
        },
    );
    // The first two replicas each take an attempt and store it, then their links
    // break before anything they sent arrives.
    for &replica in &replicas[..2] {
        harness.deliver();
        while harness.complete_one(replica) {}
        harness.cut.insert(replica);
        let peer = NodeId(replica as u64 + 1);
        harness.nodes[0].handle(harness.now, Input::PeerDown { peer });
        harness.drain(0);
    }
    // W = 2 with two replicas cut: the third takes a stand-in once they time out (it
    // is slow to answer meanwhile, so node 0 may try a fourth attempt as a stand-in).
    harness.advance(1_000);
    assert_eq!(harness.last_reply(), "+OK\r\n");
    assert!(harness.nodes[0].stats().forwards_retried >= 2);
    let dot_at = |harness: &Harness, index: usize| {
        let stored = harness.stored(index, &key).unwrap();
        let dots: Vec<_> = stored.siblings().map(|s| s.dot.unwrap()).collect();
        assert_eq!(values(&stored), [b"v1".to_vec()], "node {index}");
        dots[0]
    };
    let first = dot_at(&harness, replicas[0]);
    let second = dot_at(&harness, replicas[1]);
    assert_eq!(first.node, NodeId(replicas[0] as u64 + 1), "a lane dot");
    let is_attempt_dot =
        |dot: crate::version::Dot| dot.counter == 1 && dot.node.0 & super::STAND_IN_WRITER_BIT != 0;
    assert!(is_attempt_dot(second));
    // Healed, the copies are one sibling: a later attempt's, under an id of its own.
    harness.cut.clear();
    for index in 0..5 {
        for &replica in &replicas[..2] {
            let peer = NodeId(replica as u64 + 1);
            harness.nodes[index].handle(harness.now, Input::PeerUp { peer });
            harness.drain(index);
        }
    }
    harness.advance(60_000);
    let last = dot_at(&harness, replicas[2]);
    assert!(is_attempt_dot(last) && last != second, "{last:?}");
    for &index in &replicas {
        assert_eq!(dot_at(&harness, index), last, "node {index}");
        // Its context named the earlier attempts.
        let clock = harness.stored(index, &key).unwrap().join();
        assert_eq!(clock.counter_of(second.node), 1);
    }
}

#[test]
fn a_replica_whose_disk_is_full_hands_the_write_to_another() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 2);
    harness.full.insert(0);
    harness.send(
        0,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n", "W=2 met by the other two");
    assert_eq!(harness.nodes[0].stats().writes_handed_on, 1);
    assert_eq!(
        harness.stored(0, b"k"),
        None,
        "nothing stored on the full disk"
    );
    for index in [1, 2] {
        assert_eq!(
            values(&harness.stored(index, b"k").unwrap()),
            [b"v".to_vec()]
        );
    }
    // A VSET with a context keeps it: the new value supersedes the old one.
    harness.send(
        1,
        Command::VGet {
            key: b"k",
            read_quorum: None,
        },
    );
    harness.settle();
    // A VGET answers [token, [values]].
    let reply = harness.last_reply();
    let token = reply.split("\r\n").nth(2).unwrap().to_string();
    let reply = harness.vset(0, b"k", &token, b"v2");
    assert!(reply.starts_with('$'), "{reply}");
    for index in [1, 2] {
        assert_eq!(
            values(&harness.stored(index, b"k").unwrap()),
            [b"v2".to_vec()]
        );
    }
    // Once the disk has room again, the hint kept for node 1 catches it up.
    harness.full.clear();
    harness.advance(5_000);
    harness.settle();
    assert_eq!(values(&harness.stored(0, b"k").unwrap()), [b"v2".to_vec()]);
}

#[test]
fn a_replica_whose_disk_is_full_hands_a_forwarded_write_back_to_its_forwarder() {
    // Two of a key's three replicas have full disks; node 1 is none of them.
    let mut harness = Harness::new(5, |c| {
        c.replicas = 3;
        c.write_quorum_default = 1;
    });
    let key = (0..)
        .map(|i| format!("key-{i}").into_bytes())
        .find(|key| !harness.replicas_of(key).contains(&0))
        .unwrap();
    let replicas = harness.replicas_of(&key);
    harness.full.insert(replicas[0]);
    harness.full.insert(replicas[1]);
    let reply = harness.vset(0, &key, "", b"v1");
    assert!(reply.starts_with('$'), "{reply}");
    // Each full replica answered "disk full" once, and node 1 took the next replica
    // with the same attempt: one attempt, minted once, under the third's lane.
    for &full in &replicas[..2] {
        assert_eq!(
            harness.nodes[full].stats().writes_handed_on,
            1,
            "node {full}"
        );
        assert_eq!(harness.stored(full, &key), None);
    }
    assert_eq!(harness.nodes[0].stats().forwards_retried, 0);
    let stored = harness.stored(replicas[2], &key).unwrap();
    let dots: Vec<_> = stored.siblings().map(|s| s.dot.unwrap()).collect();
    assert_eq!(dots.len(), 1);
    assert_eq!(dots[0].node, NodeId(replicas[2] as u64 + 1), "a lane dot");
    // The token names that copy: a write made with it supersedes it.
    let token = reply.split("\r\n").nth(1).unwrap().to_string();
    let reply = harness.vset(0, &key, &token, b"v2");
    assert!(reply.starts_with('$'), "{reply}");
    assert_eq!(
        values(&harness.stored(replicas[2], &key).unwrap()),
        [b"v2".to_vec()]
    );
}

#[test]
fn a_forward_passes_over_a_first_replica_that_went_silent() {
    let mut harness = Harness::new(5, |c| c.replicas = 3);
    let (first, same_first) = harness.two_keys_forwarded_to_one_replica();
    // The first replica freezes: node 1 forwards to it and hears nothing back.
    harness.cut.insert(first);
    harness.send(
        0,
        Command::Set {
            key: &same_first[0],
            value: b"v",
        },
    );
    harness.settle();
    assert!(harness.replies.is_empty());
    // Past a third of the replica timeout of silence, the next forward goes elsewhere.
    harness.advance(150);
    harness.send(
        0,
        Command::Set {
            key: &same_first[1],
            value: b"v",
        },
    );
    harness.settle();
    assert_eq!(
        harness.last_reply(),
        "+OK\r\n",
        "not stuck behind the silent replica"
    );
}

#[test]
fn a_forward_waits_on_a_silent_replica_as_long_as_recent_forwards_took() {
    let mut harness = Harness::new(5, |c| {
        c.replicas = 3;
        c.forward_silence_ms = 20;
        c.forward_retry_ms = 50;
        c.replica_timeout_ms = 300;
        c.gossip_interval_ms = 60_000;
    });
    let (first, same_first) = harness.two_keys_forwarded_to_one_replica();
    let retried = |harness: &Harness| harness.nodes[0].stats().forwards_retried;
    // The first replica's disk stalls: with no forward timed yet, the forward is
    // retried at the next replica past the floors (20 ms of silence, 50 ms heard
    // from), and answered there.
    harness.paused.insert(first);
    harness.send(
        0,
        Command::Set {
            key: &same_first[0],
            value: b"v",
        },
    );
    harness.settle();
    harness.advance(60);
    assert_eq!(retried(&harness), 1, "retried past the floor");
    assert_eq!(harness.last_reply(), "+OK\r\n");
    // The stalled replica answers the first attempt 100 ms after it was sent.
    harness.advance(40);
    harness.paused.clear();
    harness.settle();
    // The same stall again: a forward now waits as long as that answer took.
    harness.paused.insert(first);
    harness.send(
        0,
        Command::Set {
            key: &same_first[1],
            value: b"w",
        },
    );
    harness.settle();
    harness.advance(80);
    assert_eq!(
        retried(&harness),
        1,
        "not retried while within the slowest recent forward's time"
    );
    harness.advance(40);
    assert_eq!(retried(&harness), 2, "retried past it");
    assert_eq!(harness.last_reply(), "+OK\r\n");
}

#[test]
fn a_write_whose_replicas_are_all_down_is_minted_by_a_stand_in() {
    let mut harness = Harness::new(5, |c| {
        c.replicas = 2;
        c.write_quorum_default = 2;
        c.read_quorum_default = 1;
    });
    let key = b"lonely";
    let (coordinator, _) = harness.isolate_outsider(key);
    harness.send(
        coordinator,
        Command::VSet {
            key,
            context: b"",
            value: b"x",
            write_quorum: None,
            sync: None,
        },
    );
    harness.settle();
    assert!(
        harness.last_reply().starts_with('$'),
        "a context comes back: {}",
        harness.last_reply()
    );
    let held: usize = harness.nodes.iter().map(Node::hints_held).sum();
    assert_eq!(held, 2, "two stand-ins hold it for the two replicas");
    assert_eq!(harness.nodes[coordinator].stats().stand_in_writes, 1);
}

#[test]
fn requests_past_the_in_flight_bound_are_refused_as_overloaded() {
    let mut harness = Harness::new(3, |c| c.requests_max = 1);
    harness.send(0, Command::Get { key: b"a" });
    harness.send(0, Command::Get { key: b"b" });
    assert!(
        harness.last_reply().starts_with("-OVERLOADED"),
        "{}",
        harness.last_reply()
    );
    harness.settle();
    assert_eq!(harness.replies.len(), 2, "the first still completes");
    assert!(harness.nodes[0].bounds().iter().all(|b| b.peak <= b.max));
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let mut harness = Harness::new(3, |c| c.key_size_bytes_max = 8);
    harness.send(
        0,
        Command::VGet {
            key: b"k",
            read_quorum: Some(4),
        },
    );
    assert_eq!(
        harness.last_reply(),
        "-ERR quorum 4 must be within 1..=3\r\n"
    );
    harness.send(
        0,
        Command::Set {
            key: b"much too long",
            value: b"v",
        },
    );
    assert_eq!(
        harness.last_reply(),
        "-ERR key too large: 13 bytes, the limit is 8\r\n"
    );
    harness.send(
        0,
        Command::VSet {
            key: b"k",
            context: b"not-a-token",
            value: b"v",
            write_quorum: None,
            sync: None,
        },
    );
    assert!(
        harness.last_reply().starts_with("-ERR invalid context"),
        "{}",
        harness.last_reply()
    );
    let mut keys = Arguments::new();
    keys.push(b"k".as_slice());
    let long_seed = [b'x'; 300];
    harness.send(0, Command::Admin(AdminCommand::Join { seed: &long_seed }));
    assert!(
        harness.last_reply().starts_with("-ERR seed address"),
        "{}",
        harness.last_reply()
    );
    harness.settle();
    // Only the nodes' own records (the membership) are stored: no data, no hint.
    assert!(
        harness.disks.iter().all(|disk| {
            disk.records(Space::Data).next().is_none()
                && disk.records(Space::Hints).next().is_none()
        }),
        "nothing was written"
    );
    harness.send(0, Command::Exists { keys });
    harness.settle();
    assert_eq!(harness.last_reply(), ":0\r\n");
}

#[test]
fn a_quorum_that_cannot_be_met_times_out_with_a_clear_error() {
    let mut harness = Harness::new(3, |c| {
        c.write_quorum_default = 3;
        c.request_timeout_ms = 500;
    });
    harness.cut.insert(1);
    harness.cut.insert(2);
    harness.send(
        0,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    harness.settle();
    harness.advance(1_000);
    assert!(
        harness.last_reply().starts_with("-UNAVAILABLE")
            || harness.last_reply().starts_with("-TIMEOUT"),
        "{}",
        harness.last_reply()
    );
    assert_eq!(harness.replies.len(), 1, "one answer");
    assert_eq!(
        values(&harness.stored(0, b"k").unwrap()),
        [b"v".to_vec()],
        "the local write stays"
    );
}

#[test]
fn a_node_started_with_a_seed_joins_and_every_view_agrees_on_placement() {
    let mut harness = Harness::new(3, |_| {});
    harness.add_joining(4);
    harness.send(3, Command::Get { key: b"early" });
    assert!(
        harness
            .last_reply()
            .starts_with("-UNAVAILABLE this node has not joined"),
        "{}",
        harness.last_reply()
    );
    harness.settle();
    // A few gossip rounds spread the join.
    harness.advance(10_000);
    let digest = harness.nodes[0].membership().placement_digest();
    for node in &harness.nodes {
        assert_eq!(node.membership().placement_digest(), digest);
        assert_eq!(node.ring().members().len(), 4);
        assert_eq!(node.membership().local().status, MemberStatus::Up);
    }
    // The new member coordinates requests and holds a share of the partitions.
    harness.send(
        3,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.send(3, Command::Admin(AdminCommand::Members));
    let members = harness.last_reply();
    assert_eq!(members.matches("status=up").count(), 4, "{members}");
}

#[test]
fn membership_survives_a_restart_a_leave_and_a_join_included() {
    let mut harness = Harness::new(3, |_| {});
    harness.add_joining(4);
    harness.settle();
    harness.advance(10_000);
    assert_eq!(
        harness.nodes[3].membership().local().status,
        MemberStatus::Up
    );
    // Node 4 restarts while its seed (node 1) is cut off: its stored view is all it
    // has to find the cluster by.
    harness.cut.insert(0);
    harness.restart(3);
    harness.settle();
    harness.cut.clear();
    let node = &harness.nodes[3];
    assert_eq!(node.membership().local().status, MemberStatus::Up);
    assert_eq!(node.ring().members().len(), 4, "it knows the cluster again");
    assert_eq!(
        node.membership().placement_digest(),
        harness.nodes[0].membership().placement_digest()
    );
    // Node 2 starts leaving, then restarts: it is still leaving (or has left), never Up.
    harness.send(1, Command::Admin(AdminCommand::Leave));
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.cut.insert(1);
    harness.complete_one(1); // the membership record, and nothing else
    harness.restart(1);
    harness.cut.clear();
    harness.settle();
    let status = harness.nodes[1].membership().local().status;
    assert!(
        matches!(status, MemberStatus::Leaving | MemberStatus::Left),
        "{status:?}"
    );
    harness.advance(20_000);
    harness.settle();
    for node in &harness.nodes {
        assert_eq!(
            node.membership().get(NodeId(2)).map(|m| m.status),
            Some(MemberStatus::Left),
            "node {} sees node 2 left",
            node.id().0
        );
    }
    // A node that left stays out across a restart.
    harness.restart(1);
    harness.settle();
    assert_eq!(
        harness.nodes[1].membership().local().status,
        MemberStatus::Left
    );
}

#[test]
fn a_removed_member_is_out_for_good_and_its_partitions_get_new_replicas() {
    let mut harness = Harness::new(5, |c| c.write_quorum_default = 2);
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys[..20] {
        harness.send(0, Command::Set { key, value: key });
        harness.settle();
    }
    // Node 5 dies for good; the others notice, and writes go on without it.
    harness.cut.insert(4);
    for index in 0..4 {
        harness.nodes[index].handle(harness.now, Input::PeerDown { peer: NodeId(5) });
        harness.drain(index);
    }
    for key in &keys[20..] {
        harness.send(0, Command::Set { key, value: key });
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n");
    }
    let remove = |harness: &mut Harness, id| {
        harness.send(0, Command::Admin(AdminCommand::Remove { id }));
        harness.last_reply()
    };
    assert!(remove(&mut harness, 2).starts_with("-ERR the member is up"));
    assert!(remove(&mut harness, 1).starts_with("-ERR this is the node itself"));
    assert!(remove(&mut harness, 9).starts_with("-ERR no such member"));
    assert!(remove(&mut harness, 5).starts_with("-ERR the member was heard from lately"));
    harness.advance(harness.nodes[0].config().gossip_silence_ms);
    assert_eq!(remove(&mut harness, 5), "+OK\r\n");
    // Gossip spreads the removal within seconds; the exchanges owed to each new replica
    // fill it (the round robin alone would take 16 s here).
    harness.advance(5_000);
    harness.settle();
    for node in &harness.nodes[..4] {
        assert_eq!(
            node.membership().get(NodeId(5)).map(|m| m.status),
            Some(MemberStatus::Left),
            "node {} sees node 5 gone",
            node.id().0
        );
        assert_eq!(node.ring().members().len(), 4);
        assert_eq!(node.hints_held(), 0, "hints for node 5 are dropped");
    }
    // Every key is back at N = 3 copies on the four that remain.
    for key in &keys {
        let holders = (0..4).filter(|&i| harness.stored(i, key).is_some()).count();
        let replicas = harness.replicas_of(key);
        assert!(replicas.iter().all(|&r| r < 4));
        for replica in replicas {
            assert_eq!(
                values(&harness.stored(replica, key).unwrap()),
                std::slice::from_ref(key),
                "{} on node {}",
                String::from_utf8_lossy(key),
                replica + 1
            );
        }
        assert!(holders >= 3);
    }
}

#[test]
fn handoff_sends_to_the_replicas_that_are_up_and_deletes_only_when_all_have_it() {
    let mut harness = Harness::new(4, |c| c.replicas = 2);
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        harness.send(0, Command::Set { key, value: key });
        harness.settle();
    }
    harness.advance(2_000); // trees built
    let held_before = keys_held(&harness.nodes[3]);
    assert!(held_before > 0);
    // Node 1 is down while node 4 leaves.
    harness.cut.insert(0);
    harness.nodes[3].handle(harness.now, Input::PeerDown { peer: NodeId(1) });
    harness.drain(3);
    harness.send(3, Command::Admin(AdminCommand::Leave));
    harness.advance(10_000);
    harness.settle();
    // Keys whose new replicas are node 1 and another: the other has them already, and
    // node 4 kept them; keys whose new replicas are all up moved and were deleted.
    let ring = harness.nodes[1].ring().clone();
    let mut waiting = 0;
    for key in keys.iter().filter(|key| harness.stored(3, key).is_some()) {
        let replicas: Vec<usize> = ring
            .preference_list(ring.partition_of(key))
            .map(Harness::index)
            .collect();
        assert!(replicas.contains(&0), "only keys that wait for node 1 stay");
        for &replica in replicas.iter().filter(|&&r| r != 0) {
            assert!(
                harness.stored(replica, key).is_some(),
                "sent to node {}",
                replica + 1
            );
        }
        waiting += 1;
    }
    assert!(waiting > 0 && keys_held(&harness.nodes[3]) < held_before);
    // Node 1 is back: the rest moves and node 4 has left.
    harness.cut.clear();
    harness.nodes[3].handle(harness.now, Input::PeerUp { peer: NodeId(1) });
    harness.drain(3);
    harness.advance(20_000);
    harness.settle();
    assert_eq!(keys_held(&harness.nodes[3]), 0);
    assert_eq!(
        harness.nodes[3].membership().local().status,
        MemberStatus::Left
    );
    for key in &keys {
        let ring = harness.nodes[0].ring();
        for replica in ring
            .preference_list(ring.partition_of(key))
            .map(Harness::index)
        {
            assert!(harness.stored(replica, key).is_some());
        }
    }
}

fn keys_held(node: &Node) -> u32 {
    (0..node.ring().partition_count())
        .map(|p| node.keys_held(p))
        .sum()
}

#[test]
fn a_leaving_node_hands_off_its_data_and_then_has_left() {
    let mut harness = Harness::new(4, |_| {});
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        harness.send(0, Command::Set { key, value: key });
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n");
    }
    harness.advance(2_000); // trees built
    assert!(keys_held(&harness.nodes[3]) > 0, "node 4 holds a share");
    harness.send(3, Command::Admin(AdminCommand::Leave));
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.advance(20_000);
    harness.settle();
    for node in &harness.nodes {
        assert_eq!(node.ring().members().len(), 3);
        assert!(node.ring().members().iter().all(|m| m.id != NodeId(4)));
        assert_eq!(
            node.membership().get(NodeId(4)).map(|m| m.status),
            Some(MemberStatus::Left),
            "node {} sees node 4 left",
            node.id().0
        );
    }
    // Everything moved before anything was deleted: N = 3 of 3 members hold every key.
    let leaver = &harness.nodes[3];
    assert_eq!(keys_held(leaver), 0);
    assert!(leaver.stats().handoff_keys_deleted > 0);
    for key in &keys {
        assert_eq!(harness.stored(3, key), None);
        let stored = harness.stored(0, key);
        assert!(stored.is_some());
        assert_eq!(harness.stored(1, key), stored);
        assert_eq!(harness.stored(2, key), stored);
    }
    // Writes go on while the leaver is out of every preference list.
    harness.send(
        0,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    // The leaver serves no client and keeps nothing: what it kept would be held by a
    // node nobody reads from, lost when it is shut down (a membership seed, 32005807424,
    // had a leaver mint client writes as a stand-in after it had left).
    harness.send(
        3,
        Command::Set {
            key: b"k",
            value: b"late",
        },
    );
    harness.settle();
    assert_eq!(
        harness.last_reply(),
        "-UNAVAILABLE this node has left the cluster; send requests to another node\r\n"
    );
    // A peer whose view is behind asks it to stand in for node 2: refused as left.
    let value = crate::version::Value::new(b"v".to_vec(), 1);
    let empty = crate::version::VersionVector::new();
    let minted = VersionSet::update(
        VersionSet::from_context(&empty, value),
        &VersionSet::new(),
        NodeId(1),
    );
    let mut versions = Vec::new();
    minted.encode(&mut versions);
    let stand_in_put = Message::ReplicaPut {
        request: 7,
        key: b"k",
        versions: &versions,
        hint: Some(NodeId(2)),
        durable: true,
    };
    harness.nodes[3].handle(
        harness.now,
        Input::Peer {
            from: NodeId(1),
            message: stand_in_put,
        },
    );
    let mut answers = Vec::new();
    let limits = harness.nodes[0].wire_limits();
    while let Some(action) = harness.nodes[3].poll_action() {
        if let Action::Send { to, frame } = action {
            // A frame the node under test just encoded (cfg(test) only): it decodes.
            let (message, _) = decode_frame(frame, CLUSTER, limits).unwrap();
            if let Message::ReplicaPutReply {
                request, status, ..
            } = message
            {
                answers.push((to, request, status));
            }
        }
    }
    assert_eq!(answers, [(NodeId(1), 7, ReplicaStatus::Left)]);
    harness.settle();
    assert_eq!(harness.nodes[3].hints_held(), 0);
    assert_eq!(keys_held(&harness.nodes[3]), 0);
}

#[test]
fn anti_entropy_alone_repairs_a_replica_that_missed_a_write() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 2);
    let key = b"never-read-again";
    harness.cut.insert(2);
    harness.send(0, Command::Set { key, value: b"v1" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    // The coordinator restarts before node 3's answer is overdue, so it keeps no hint
    // for node 3.
    harness.restart(0);
    harness.cut.clear();
    harness.frames.clear();
    harness.settle();
    assert_eq!(harness.stored(2, key), None, "node 3 missed the write");
    // Every node replicates all 16 partitions; one exchange per second per node.
    harness.advance(40_000);
    harness.settle();
    assert_eq!(harness.stored(2, key), harness.stored(0, key));
    let pushed: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().entropy_keys_pushed)
        .sum();
    // Only the missing key moved: pushed by one or both of the replicas holding it,
    // whichever started an exchange with node 3 before the other's push had landed.
    assert!((1..=2).contains(&pushed), "{pushed} keys pushed");
    let read_repairs: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().read_repairs_sent)
        .sum();
    assert_eq!(read_repairs, 0);
}

#[test]
fn replicas_in_sync_exchange_roots_and_nothing_else() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 3);
    for index in 0..20u32 {
        let key = index.to_le_bytes();
        harness.send(
            0,
            Command::Set {
                key: &key,
                value: b"v",
            },
        );
        harness.settle();
    }
    harness.advance(20_000);
    let stats: Vec<Stats> = harness.nodes.iter().map(Node::stats).collect();
    let started: u64 = stats.iter().map(|s| s.entropy_exchanges).sum();
    let in_sync: u64 = stats.iter().map(|s| s.entropy_in_sync).sum();
    let pushed: u64 = stats.iter().map(|s| s.entropy_keys_pushed).sum();
    assert!(started >= 30, "{started} exchanges");
    assert!(in_sync + 3 >= started, "{in_sync} of {started} in sync");
    assert_eq!(pushed, 0);
}

/// Found by the simulator (seed 2878747486): a peer's key comparison reached a node that
/// had just restarted, its bucket read came back before the tree rebuild's page, and
/// the bucket was reset to what it read; the rebuild then added the same keys again,
/// and the tree stayed unlike the store (unlike every replica's) for good.
#[test]
fn a_comparison_read_before_the_rebuild_reaches_a_bucket_leaves_the_bucket_to_it() {
    let mut harness = Harness::new(2, |c| c.write_quorum_default = 2);
    let key = b"compared-while-rebuilding";
    harness.send(0, Command::Set { key, value: b"v" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    // Node 2 restarts and is held apart until its tree rebuild has read nothing yet.
    harness.restart(1);
    harness.cut.insert(1);
    let is_scan = |job: &StorageOp| matches!(job, StorageOp::Scan { .. });
    for _ in 0..1_000 {
        if harness.jobs[1].iter().any(is_scan) {
            break;
        }
        while let Some(at) = harness.jobs[1].iter().position(|job| !is_scan(job)) {
            let job = harness.jobs[1].remove(at).unwrap();
            let answer = harness.disks[1].perform(&job, None);
            harness.nodes[1].handle(harness.now, Input::Storage(answer));
            harness.drain(1);
        }
        harness.advance(50);
    }
    let rebuild_pages = harness.jobs[1].iter().filter(|job| is_scan(job)).count();
    assert_eq!(rebuild_pages, 1, "the rebuild's first page is waiting");
    assert!(!harness.nodes[1].trees_built());
    // Node 1's key hashes for the key's bucket arrive; node 2 reads the bucket.
    let hash = crate::placement::key_hash(key);
    let partition_bits = harness.nodes[1].config().partition_bits;
    let partition = (hash >> (64 - partition_bits)) as u32;
    let bucket = ((hash << partition_bits) >> (64 - entropy::BUCKET_BITS)) as u32;
    let record = harness.disks[0].get(Space::Data, key).unwrap().to_vec();
    let message = Message::KeyHashes {
        request: 1,
        partition,
        bucket,
        reply: false,
        keys: vec![(key.as_slice(), entries::entry_hash(key, &record))],
    };
    harness.nodes[1].handle(
        harness.now,
        Input::Peer {
            from: NodeId(1),
            message,
        },
    );
    harness.drain(1);
    // The bucket read completes first, then the rebuild.
    let compared = harness.jobs[1].pop_back().unwrap();
    assert!(is_scan(&compared), "{compared:?}");
    let answer = harness.disks[1].perform(&compared, None);
    harness.nodes[1].handle(harness.now, Input::Storage(answer));
    harness.drain(1);
    harness.cut.clear();
    harness.settle();
    assert!(harness.nodes[1].trees_built());
    let roots = tree_roots(partition_bits, harness.disks[1].records(Space::Data));
    for (partition, &root) in roots.iter().enumerate() {
        assert_eq!(
            harness.nodes[1].partition_root(partition),
            Some(root),
            "partition {partition}"
        );
    }
    assert_eq!(
        harness.nodes[1].partition_root(partition as usize),
        harness.nodes[0].partition_root(partition as usize)
    );
}

#[test]
fn a_join_moves_each_key_to_its_new_replicas_and_the_old_copies_go() {
    let mut harness = Harness::new(3, |_| {});
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        harness.send(0, Command::Set { key, value: key });
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n");
    }
    harness.add_joining(4);
    harness.settle();
    harness.advance(30_000);
    harness.settle();
    let ring = &harness.nodes[0].ring();
    assert_eq!(ring.members().len(), 4);
    for key in &keys {
        let partition = ring.partition_of(key);
        let replicas: Vec<usize> = ring
            .preference_list(partition)
            .map(Harness::index)
            .collect();
        let expected = harness.stored(0, key).or_else(|| harness.stored(1, key));
        for index in 0..4 {
            let stored = harness.stored(index, key);
            if replicas.contains(&index) {
                assert_eq!(stored, expected, "replica {index} of {key:?}");
                assert!(stored.is_some());
            } else {
                assert_eq!(stored, None, "node {index} handed {key:?} off");
            }
        }
    }
    let sent: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().handoff_keys_sent)
        .sum();
    let deleted: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().handoff_keys_deleted)
        .sum();
    // Keys whose list now holds node 4 lost one old replica each; the rest did not
    // move. Only the new member lacked them: replicas that kept theirs got no record.
    let to_new = keys
        .iter()
        .filter(|key| {
            ring.preference_list(ring.partition_of(key))
                .any(|node| node == NodeId(4))
        })
        .count() as u64;
    assert!(to_new > 0 && to_new < keys.len() as u64);
    assert_eq!(deleted, to_new);
    // (Anti-entropy may have copied a few to node 4 first: those cost no record.)
    assert!(
        sent > 0 && sent <= to_new,
        "{sent} records sent for {to_new} keys"
    );
}

#[test]
fn a_node_that_regains_a_partition_it_handed_off_mints_under_a_new_writer() {
    let mut harness = Harness::new(3, |_| {});
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        harness.send(0, Command::Set { key, value: b"old" });
        harness.settle();
    }
    harness.add_joining(4);
    harness.settle();
    harness.advance(30_000);
    harness.settle();
    // A key node 1 handed off to node 4.
    let dropped = keys
        .iter()
        .find(|key| harness.stored(0, key).is_none())
        .expect("node 1 handed some key off")
        .clone();
    // Node 4 leaves: node 1 replicates the key's partition again.
    harness.send(3, Command::Admin(AdminCommand::Leave));
    harness.advance(30_000);
    harness.settle();
    assert_eq!(
        harness.nodes[0]
            .membership()
            .get(NodeId(4))
            .map(|m| m.status),
        Some(MemberStatus::Left)
    );
    assert!(harness.nodes[0].stats().writer_epochs_started >= 1);
    harness.send(
        0,
        Command::Set {
            key: &dropped,
            value: b"new",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    let stored = harness.stored(0, &dropped).unwrap();
    assert_eq!(values(&stored), [b"new".to_vec()]);
    let writers: Vec<NodeId> = stored.join().entries().iter().map(|&(n, _)| n).collect();
    assert!(
        writers
            .iter()
            .any(|w| w.0 & crate::node::EPOCH_WRITER_BIT != 0),
        "the new dot is under node 1's new epoch: {writers:?}"
    );
}

/// Short reaping times for the tests: 3 s of grace, a walk every second.
fn quick_reaping(config: &mut Config) {
    config.tombstone_grace_ms = 3_000;
    config.reap_interval_ms = 1_000;
}

fn reaped(harness: &Harness) -> u64 {
    harness.nodes.iter().map(|n| n.stats().reap_keys).sum()
}

#[test]
fn a_tombstone_every_replica_holds_is_reaped_after_its_grace_period() {
    let mut harness = Harness::new(3, |c| {
        quick_reaping(c);
        c.write_quorum_default = 3;
    });
    for key in [b"gone".as_slice(), b"kept"] {
        harness.send(0, Command::Set { key, value: b"v" });
        harness.settle();
    }
    harness.send(
        0,
        Command::Del {
            keys: smallvec::smallvec![b"gone".as_slice()],
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), ":1\r\n");
    harness.advance(2_000);
    for index in 0..3 {
        assert!(
            harness
                .stored(index, b"gone")
                .is_some_and(|v| v.is_deleted()),
            "node {}: the tombstone stays through its grace period",
            index + 1
        );
    }
    harness.advance(10_000);
    for index in 0..3 {
        assert_eq!(harness.stored(index, b"gone"), None, "node {}", index + 1);
        assert!(harness.stored(index, b"kept").is_some());
    }
    assert_eq!(reaped(&harness), 3);
    harness.send(1, Command::Get { key: b"gone" });
    harness.settle();
    assert_eq!(harness.last_reply(), "$-1\r\n");
    // The key can be written again, and the write is whole on every replica.
    harness.send(
        1,
        Command::Set {
            key: b"gone",
            value: b"back",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    for index in 0..3 {
        assert_eq!(
            values(&harness.stored(index, b"gone").unwrap()),
            [b"back".to_vec()]
        );
    }
}

#[test]
fn reaping_removes_the_clock_entries_of_one_shot_writers_every_replica_superseded() {
    let mut harness = Harness::new(4, |c| {
        quick_reaping(c);
        c.replicas = 3;
        c.write_quorum_default = 1;
        c.read_quorum_default = 1;
    });
    let key = b"hot";
    // A node cut off from every replica mints a write under a one-shot id.
    let (stand_in, replicas) = harness.isolate_outsider(key);
    harness.send(stand_in, Command::Set { key, value: b"v1" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    // The replicas are back and take the hints; a replica's write supersedes v1.
    harness.cut.clear();
    for &replica in &replicas {
        let peer = NodeId(replica as u64 + 1);
        harness.nodes[stand_in].handle(harness.now, Input::PeerUp { peer });
    }
    harness.drain(stand_in);
    harness.advance(5_000);
    assert_eq!(harness.nodes[stand_in].hints_held(), 0);
    harness.send(replicas[0], Command::Set { key, value: b"v2" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    let one_shots = |versions: &VersionSet| {
        let clock = versions.join();
        clock
            .entries()
            .iter()
            .filter(|(id, _)| is_one_shot(*id))
            .count()
    };
    for &replica in &replicas {
        let held = harness.stored(replica, key).unwrap();
        assert_eq!(values(&held), [b"v2".to_vec()]);
        assert_eq!(one_shots(&held), 1, "the stand-in's entry, superseded");
    }
    harness.advance(15_000);
    for &replica in &replicas {
        let held = harness.stored(replica, key).unwrap();
        assert_eq!(values(&held), [b"v2".to_vec()], "node {}", replica + 1);
        assert_eq!(one_shots(&held), 0, "node {}: compacted", replica + 1);
    }
    assert!(reaped(&harness) >= 3);
    harness.send(stand_in, Command::Get { key });
    harness.settle();
    assert_eq!(harness.last_reply(), "$2\r\nv2\r\n");
}

#[test]
fn no_tombstone_is_reaped_while_a_member_is_down() {
    let mut harness = Harness::new(4, quick_reaping);
    // A key node 4 does not replicate: only its being down can hold reaping back.
    let key = (0u32..)
        .map(|i| format!("key-{i}").into_bytes())
        .find(|key| !harness.replicas_of(key).contains(&3))
        .unwrap();
    harness.send(
        0,
        Command::Set {
            key: &key,
            value: b"v",
        },
    );
    harness.settle();
    harness.send(
        0,
        Command::Del {
            keys: smallvec::smallvec![key.as_slice()],
        },
    );
    harness.settle();
    harness.cut.insert(3);
    harness.advance(30_000);
    let replicas = harness.replicas_of(&key);
    for &index in &replicas {
        assert!(harness.stored(index, &key).is_some(), "node {}", index + 1);
    }
    assert_eq!(reaped(&harness), 0);
    let blocked: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().reap_walks_blocked)
        .sum();
    assert!(blocked > 0);
    harness.cut.clear();
    harness.advance(30_000);
    for &index in &replicas {
        assert_eq!(harness.stored(index, &key), None, "node {}", index + 1);
    }
}

#[test]
fn a_hint_for_the_partition_holds_reaping_back_until_it_is_delivered() {
    let mut harness = Harness::new(4, |c| {
        quick_reaping(c);
        c.write_quorum_default = 2;
    });
    let key = (0u32..)
        .map(|i| format!("key-{i}").into_bytes())
        .find(|key| !harness.replicas_of(key).contains(&3))
        .unwrap();
    harness.advance(2_000); // trees built
    let replicas = harness.replicas_of(&key);
    let (coordinator, down) = (replicas[0], replicas[2]);
    let down_id = NodeId(down as u64 + 1);
    // The last replica misses the write: node 4 keeps it as a hint.
    harness.cut.insert(down);
    harness.nodes[coordinator].handle(harness.now, Input::PeerDown { peer: down_id });
    harness.send(
        coordinator,
        Command::Set {
            key: &key,
            value: b"v",
        },
    );
    harness.settle();
    assert_eq!(harness.nodes[3].hints_held(), 1);
    harness.nodes[coordinator].handle(harness.now, Input::PeerUp { peer: down_id });
    // The delete reaches every replica, but the old hint is still held: no hint round
    // has run since the replica came back.
    harness.cut.clear();
    harness.send(
        coordinator,
        Command::Del {
            keys: smallvec::smallvec![key.as_slice()],
        },
    );
    harness.settle();
    assert!(harness.stored(down, &key).is_some_and(|v| v.is_deleted()));
    let busy = harness.nodes[3].busy_partitions().unwrap();
    assert_eq!(busy, [harness.nodes[0].ring().partition_of(&key) as u32]);
    // Given time, the hint is delivered (merged under the tombstone), then reaped.
    harness.advance(30_000);
    assert_eq!(harness.nodes[3].hints_held(), 0);
    for &index in &replicas {
        assert_eq!(harness.stored(index, &key), None, "node {}", index + 1);
    }
}

/// A write after a reap, minted by the leader, sent to a replica that still holds the
/// tombstone (its `ReapKeys` was lost): the value must survive there.
fn write_after_a_lost_reap(harness: &mut Harness) -> Vec<Vec<u8>> {
    let key = b"again";
    let leader = harness.replicas_of(key)[0];
    let lagging = harness.replicas_of(key)[2];
    // The leader mints the write and the delete, so the tombstone's clock names its
    // counters.
    harness.send(leader, Command::Set { key, value: b"v" });
    harness.settle();
    harness.send(
        leader,
        Command::Del {
            keys: smallvec::smallvec![key.as_slice()],
        },
    );
    harness.settle();
    let tombstone = harness.disks[lagging]
        .get(Space::Data, key)
        .unwrap()
        .to_vec();
    harness.advance(15_000);
    assert_eq!(harness.stored(leader, key), None, "reaped");
    harness.disks[lagging].set(Space::Data, key, Some(&tombstone));
    harness.send(leader, Command::Set { key, value: b"new" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    values(&harness.stored(lagging, key).unwrap())
}

#[test]
fn a_write_after_a_reap_is_not_hidden_by_a_replica_that_kept_the_tombstone() {
    let mut harness = Harness::new(3, |c| {
        quick_reaping(c);
        c.write_quorum_default = 3;
    });
    assert_eq!(write_after_a_lost_reap(&mut harness), [b"new".to_vec()]);
}

#[cfg(feature = "sabotage")]
#[test]
fn without_the_counter_floor_the_tombstone_hides_the_new_write() {
    let mut harness = Harness::new(3, |c| {
        quick_reaping(c);
        c.write_quorum_default = 3;
        c.sabotage.reap_without_floor = true;
    });
    assert_eq!(write_after_a_lost_reap(&mut harness), Vec::<Vec<u8>>::new());
}

#[test]
fn background_work_waits_while_client_requests_are_slow() {
    let mut harness = Harness::new(3, |c| c.background_latency_max_ms = 100);
    harness.advance(3_000); // trees built
    let refused = |h: &Harness| h.nodes[0].stats().entropy_ticks_refused;
    harness.advance(3_000);
    assert_eq!(refused(&harness), 0, "fast (idle) foreground: admitted");
    // A write whose storage takes 400 ms: the coordinator's mean latency is 400 ms.
    harness.send(
        0,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    harness.now += core::time::Duration::from_millis(400);
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.advance(900);
    let during = refused(&harness);
    assert!(during > 0, "slow foreground: anti-entropy refused");
    // Two quiet windows later the slow request is old news.
    harness.advance(5_000);
    let after = refused(&harness);
    harness.advance(5_000);
    assert_eq!(
        refused(&harness),
        after,
        "admitted again once requests are fast"
    );
    // Under the default bound (250 ms), a 200 ms request holds nothing back.
    let mut relaxed = Harness::new(3, |_| {});
    relaxed.advance(3_000);
    relaxed.send(
        0,
        Command::Set {
            key: b"k",
            value: b"v",
        },
    );
    relaxed.now += core::time::Duration::from_millis(200);
    relaxed.settle();
    relaxed.advance(900);
    assert_eq!(refused(&relaxed), 0);
}

/// `RINGKV.DIGEST` of node `index`: partition -> root line.
fn digest(harness: &mut Harness, index: usize) -> BTreeMap<String, String> {
    harness.send(index, Command::Admin(AdminCommand::Digest));
    harness
        .last_reply()
        .lines()
        .filter_map(|line| line.strip_prefix("partition="))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(partition, root)| (partition.to_owned(), root.to_owned()))
        .collect()
}

#[test]
fn the_digest_shows_a_replica_that_missed_writes_until_it_is_repaired() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 2);
    harness.advance(2_000); // trees built
    harness.cut.insert(2);
    for i in 0..10 {
        let key = format!("key-{i}").into_bytes();
        harness.send(
            0,
            Command::Set {
                key: &key,
                value: b"v",
            },
        );
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n");
    }
    harness.cut.clear();
    harness.frames.clear();
    let (first, third) = (digest(&mut harness, 0), digest(&mut harness, 2));
    assert_eq!(first.len(), 16, "N = 3 of 3 nodes: every partition");
    assert!(first.values().all(|line| line.starts_with("root=")));
    assert_ne!(first, third, "node 3 missed the writes");
    // Anti-entropy (and the stand-ins' hints) bring node 3 back: the digests agree.
    harness.advance(120_000);
    assert_eq!(digest(&mut harness, 0), digest(&mut harness, 2));
    assert_eq!(digest(&mut harness, 0), digest(&mut harness, 1));
}

#[test]
fn an_unreadable_record_refuses_mints_and_is_replaced_by_a_replicas_copy() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 3);
    let key = b"k";
    harness.send(0, Command::Set { key, value: b"v1" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    harness.advance(2_000); // trees built
    harness.disks[2].set(Space::Data, key, Some(b"not a version set"));
    harness.restart(2); // its tree is rebuilt from what the disk gives back
    harness.advance(2_000);
    // Node 3 coordinates a write it would mint over the unreadable record: refused.
    harness.send(2, Command::Set { key, value: b"v2" });
    harness.settle();
    assert!(
        harness.last_reply().starts_with('-'),
        "{}",
        harness.last_reply()
    );
    assert_eq!(harness.nodes[2].stats().corrupt_records_replaced, 0);
    // Anti-entropy finds the difference and sends node 3 a replica's copy, which
    // replaces the unreadable record.
    harness.advance(120_000);
    assert_eq!(harness.stored(2, key), harness.stored(0, key));
    assert_eq!(harness.nodes[2].stats().corrupt_records_replaced, 1);
    harness.send(2, Command::Set { key, value: b"v3" });
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n", "node 3 mints again");
}

#[test]
fn damage_reported_before_the_writer_record_is_read_still_retires_the_writer_id() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 3);
    harness.advance(1_000);
    harness.restart(0);
    harness.nodes[0].storage_damaged(); // at start, as the shell does
    harness.drain(0);
    harness.advance(1_000);
    harness.send(
        0,
        Command::Set {
            key: b"a",
            value: b"1",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    let stored = harness.stored(0, b"a").unwrap();
    let dot = stored.siblings().next().unwrap().dot.unwrap();
    assert_ne!(dot.node, NodeId(1), "minted under a new writer id");
}

#[test]
fn after_storage_damage_a_node_never_mints_under_its_old_writer_id() {
    let mut harness = Harness::new(3, |c| c.write_quorum_default = 3);
    harness.advance(1_000); // writer epochs loaded
    let writer_of = |harness: &Harness, key: &[u8]| {
        let stored = harness.stored(0, key).unwrap();
        let dot = stored.siblings().next().unwrap().dot.unwrap();
        dot.node
    };
    // Node 1 coordinates; as a replica it mints the dot.
    // Every node replicates every key (N = 3 of 3): node 1 mints as a replica.
    let first: &[u8] = b"a";
    harness.send(
        0,
        Command::Set {
            key: first,
            value: b"1",
        },
    );
    harness.settle();
    assert_eq!(harness.last_reply(), "+OK\r\n");
    let before = writer_of(&harness, first);
    harness.nodes[0].storage_damaged();
    harness.drain(0);
    harness.settle();
    for value in [&b"2"[..], b"3"] {
        harness.send(0, Command::Set { key: first, value });
        harness.settle();
        assert_eq!(harness.last_reply(), "+OK\r\n");
        assert_ne!(
            writer_of(&harness, first),
            before,
            "a new writer id after damage"
        );
    }
}

/// Seed 9114809 of the simulator: read repairs of one hot key queued one storage round
/// trip each behind its writes, until the replica answered writes slower than the
/// peers' replica timeout and was taken for dead (a W=3 write refused with all three
/// nodes up). Unacknowledged merges now fold into the one waiting on the key.
#[test]
fn repairs_of_a_busy_key_fold_into_one_waiting_merge() {
    let mut harness = Harness::new(3, |_| {});
    let key = b"hot";
    let (replica, from) = (2, NodeId(1));
    let empty = crate::version::VersionVector::new();
    // Ten concurrent versions, minted by ten different writers.
    let repairs: Vec<Vec<u8>> = (0..10u64)
        .map(|writer| {
            let value = crate::version::Value::new(format!("v{writer}").into_bytes(), 1);
            let minted = VersionSet::update(
                VersionSet::from_context(&empty, value),
                &VersionSet::new(),
                NodeId(100 + writer),
            );
            let mut bytes = Vec::new();
            minted.encode(&mut bytes);
            bytes
        })
        .collect();
    for versions in &repairs {
        let message = Message::ReplicaPut {
            request: super::request_id::NO_REQUEST,
            key,
            versions,
            hint: None,
            durable: false,
        };
        let now = harness.now;
        harness.nodes[replica].handle(now, Input::Peer { from, message });
        harness.drain(replica);
    }
    let writes_before = harness.nodes[replica].stats();
    assert_eq!(
        writes_before.merges_coalesced, 8,
        "the first runs, the second waits, eight fold into it"
    );
    let mut storage_jobs = 0;
    while harness.complete_one(replica) {
        storage_jobs += 1;
    }
    assert_eq!(storage_jobs, 4, "two merges: a read and a write each");
    let stored = harness.stored(replica, key).expect("stored");
    assert_eq!(stored.sibling_count(), 10, "every repair's version is kept");
}

#[test]
fn a_merge_past_the_sibling_bound_is_refused_and_every_record_stays_readable() {
    let mut harness = Harness::new(3, |c| {
        c.write_quorum_default = 1;
        c.version_bounds.siblings_max = 3;
        c.version_bounds.siblings_minted_max = 2;
    });
    let blind =
        |harness: &mut Harness, node: usize, value: &[u8]| harness.vset(node, b"k", "", value);
    // Node 1 alone: two blind writes are two siblings; a third would leave three.
    harness.cut.extend([1, 2]);
    assert!(blind(&mut harness, 0, b"a").starts_with('$'));
    assert!(blind(&mut harness, 0, b"b").starts_with('$'));
    assert!(
        blind(&mut harness, 0, b"c").starts_with("-ERR"),
        "{}",
        harness.last_reply()
    );
    // Node 2 alone, two more: the four cannot be merged into one record.
    harness.cut.clear();
    harness.cut.extend([0, 2]);
    assert!(blind(&mut harness, 1, b"d").starts_with('$'));
    assert!(blind(&mut harness, 1, b"e").starts_with('$'));
    harness.cut.clear();
    harness.advance(30_000);
    for node in [0, 1] {
        let stored = harness.stored(node, b"k").expect("readable");
        assert_eq!(stored.sibling_count(), 2, "node {node} kept its own");
    }
    // A write made with a context naming a node's siblings resolves them there.
    harness.send(
        0,
        Command::VGet {
            key: b"k",
            read_quorum: Some(1),
        },
    );
    harness.settle();
    let token = harness
        .last_reply()
        .split("\r\n")
        .nth(2)
        .unwrap()
        .to_string();
    let reply = harness.vset(0, b"k", &token, b"resolved");
    assert!(reply.starts_with('$'), "{reply}");
}

#[test]
fn a_member_whose_placement_differs_cannot_vouch_for_a_reap() {
    let mut harness = Harness::new(3, |_| {});
    harness.advance(2_000); // trees built, hints listed
    let digest = harness.nodes[1].membership().placement_digest();
    let mut statuses = Vec::new();
    for placement in [digest, digest ^ 1] {
        let query = Message::ReapQuery {
            request: 9,
            placement,
        };
        harness.nodes[1].handle(
            harness.now,
            Input::Peer {
                from: NodeId(1),
                message: query,
            },
        );
        let limits = harness.nodes[0].wire_limits();
        while let Some(action) = harness.nodes[1].poll_action() {
            if let Action::Send { frame, .. } = action {
                // A frame the node under test just encoded (cfg(test) only): it decodes.
                let (message, _) = decode_frame(frame, CLUSTER, limits).unwrap();
                if let Message::ReapStatus { complete, .. } = message {
                    statuses.push(complete);
                }
            }
        }
    }
    // Same placement: it can tell (nothing busy); another: it cannot, and the leader
    // abandons the walk.
    assert_eq!(statuses, [true, false]);
}
