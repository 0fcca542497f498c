//! The Dynamo node: a sans-io state machine that coordinates client requests, serves as
//! a replica for its peers, holds hints for unreachable nodes and detects failures
//! (design.md sections 2 and 5).
//!
//! # Driving a node
//!
//! ```text
//! let mut node = Node::new(config, identity, seed, now)?;
//! loop {
//!     node.handle(now, input);                       // one mutation
//!     while let Some(action) = node.poll_action() {  // drain every action, always
//!         shell.perform(action);
//!     }
//!     sleep_until(node.poll_timeout());              // then handle(now, Input::Timeout)
//! }
//! ```
//!
//! `now` must never go backwards (a step back is treated as no time passing). After
//! every `handle`, the shell drains [`Node::poll_action`] until it returns `None`; the
//! borrowed bytes of an action are valid until the next poll. Storage operations carry
//! a token that the shell hands back in [`Completion`]; a write or delete completes only
//! once durable. A shell must pass a fresh random `seed` at every start: stand-in writer
//! ids are drawn from it and must never repeat.
//!
//! Two promises the shell's storage must keep, because dots depend on them: a read
//! returns only durable records (ringkv-storage updates its index after the fsync), and
//! a node's data survives its restarts. A node whose data directory was lost must come
//! back under a new id: under its old id it would mint dots its peers already hold for
//! other values (ringkv-frontend's `identity` refuses to start a node whose stores
//! vanished under its identity, and never mints an id over existing stores).
//!
//! # Requests
//!
//! - Any node coordinates any request. A read asks the first N healthy nodes of the
//!   key's extended preference list, replies after R answers with the merged versions
//!   (VGET: context token and every live sibling; GET: the last-write-wins pick), keeps
//!   listening for `read_repair_window_ms` and then sends the merge to replicas that
//!   answered with less (read repair).
//! - A write is minted by a replica: only a preference-list member gives the write its
//!   dot, against its own stored versions under the key's lock, and makes it durable
//!   locally before anyone else sees it (so a dot can never be minted twice, even
//!   across a crash). A coordinator that is not a replica forwards the write to the
//!   first healthy one; the minting replica sends the new versions to the other healthy
//!   targets and replies after W durable acknowledgements (its own included).
//! - SET and DEL supersede what the minting replica holds (design.md section 7); VSET
//!   and VDEL supersede exactly what their context saw. A delete is a tombstone write.
//!   DEL answers how many of its keys' deletes reached W, not how many keys held a
//!   value (knowing that would cost a quorum read per key).
//! - Requests that miss their quorum fail with a clear error after
//!   `request_timeout_ms` (or at once, when too many targets failed); writes already
//!   made stay.
//!
//! # Sloppy quorum and hinted handoff
//!
//! Targets are the first N healthy nodes of the extended list. A replica that is down,
//! or that does not answer within `replica_timeout_ms`, is replaced by the next healthy
//! node past them, whose copy carries a hint naming the intended owner. A stand-in keeps
//! hinted writes in its `Hints` space and offers them to their owners every
//! `hint_interval_ms` (backing off per owner on failure); a hint is deleted once its
//! owner acknowledged it durable, unless a newer hinted write merged into it meanwhile.
//!
//! Reads use the same targets, stand-ins included for replicas believed down or silent.
//! A stand-in answers from its own data only, so for a key it holds just as a hint it
//! answers "nothing", and that answer counts toward R (Riak's default, `notfound_ok`):
//! while every replica of a key is unreachable, a read can miss a value that exists.
//!
//! When no preference-list member is reachable at all, the coordinator mints the write
//! itself as a stand-in, under a fresh writer id with [`STAND_IN_WRITER_BIT`] set (one
//! id per such write: a stand-in holds no durable counter for the key, so it can never
//! reuse an id). Each such write adds one entry to the key's clock; a clock that would
//! exceed `version_bounds.coordinators_max` refuses the write.
//!
//! # Bounds
//!
//! In-flight requests, storage operations, locked keys and the operations waiting on
//! them, hints, hint deliveries, requests per peer, queued actions and their bytes all
//! have a bound from [`Config`]; at a bound the node refuses with an overloaded error
//! instead of growing. [`Node::bounds`] reports each peak next to its bound.
//!
//! # Membership and anti-entropy
//!
//! Membership is gossiped (`node::gossip`, `crate::membership`): placement follows
//! the `Up` members of this node's view and is recomputed when it changes. When a
//! partition moves away from a node, the node hands its copy to the partition's
//! replicas and deletes each key once all of them confirmed it (`node::handoff`); a
//! leaving node does so for everything, then marks itself `Left`. Dots are minted
//! under writer epochs (`node::writer`) so that a node that regains a partition it
//! handed off never reuses a dot. Replicas that drifted apart are repaired in the
//! background by anti-entropy (`node::entropy`), besides read repair and hinted
//! handoff. Tombstones are reaped once every replica held them unchanged through a
//! grace period and no member holds a copy that could bring the deleted value back
//! (`node::reap`).
//!
//! # Not yet
//!
//! The membership view is not persisted (a restarted node relearns it from its
//! configuration and gossip; a leave not yet gossiped is forgotten).
//!
//! # Where things live
//!
//! The node is a router over concerns. A concern is a type that owns its state and
//! whose methods take what else they need as arguments: `Shared`
//! (configuration, id, time, randomness, the action queue, the storage task registry,
//! counters) and, by reference, the other concerns' state they read (the view, the peer
//! table, the anti-entropy trees), gathered in a context type where a concern needs
//! several (`Coordination`, `ReplicaContext`, `BackgroundContext`). What a concern
//! cannot do itself comes back as a value the node acts on: a key operation's read step
//! that is the coordinator's (a mint) or hint delivery's, an ended key operation that
//! handoff or reaping waits for, a confirmed handoff page or ripe tombstones to delete
//! under key locks, a placement change for the writer epochs. The node's own `impl`
//! blocks hold only that glue (`router.rs`, and a few lines in `gossip.rs`,
//! `handoff.rs`, `reap.rs`, `admission.rs`) and the client commands and status replies
//! (`client.rs`), which read every concern.
//!
//! The concerns depend on each other in one direction: the coordinator runs its own
//! key operations through the replica (mints, read repairs, hint reads and deletes);
//! the replica never calls back into the coordinator, it hands the mint step and the
//! ended operations back through the node. No file of `node/` imports a file that
//! imports it.
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | [`Node`]: the concerns it owns, `handle`, `poll_action`, `poll_timeout`, the timer run |
//! | `router.rs` | which concern each peer message and each storage completion goes to |
//! | `shared.rs` | what every concern shares (`Shared`) |
//! | `actions.rs` | the action queue: what the shell is asked to do |
//! | `storage.rs` | the one storage-operation type ([`StorageOp`]) and the one completion type ([`Completion`]) |
//! | `timers.rs` | the periodic timers by name (hints, gossip, anti-entropy, handoff, reaping) |
//! | `request_id.rs` | request ids on the wire and whose each is |
//! | `tasks.rs` | the registry of storage operations in flight (`Tasks`), by purpose |
//! | `admission.rs` | admission control for background work, the foreground latency it watches, and what a background step is handed (`BackgroundContext`) |
//! | `client.rs`, `read_reply.rs` | client commands in (node glue), RESP replies of reads |
//! | `requests.rs` | the requests in flight (`Request` kinds, `Requests`) and their table with deadlines |
//! | `coordinator/` | coordination (`Coordinator`: the request table and forwards taken): `mod.rs` the context, request lifetimes, batches, deadlines and replies; `read.rs` reads and read repair; `write.rs` writes, the mint and stand-ins; `forward.rs` forwarding |
//! | `forwards.rs` | forwarded writes already answered (duplicates) |
//! | `replica.rs`, `locks.rs`, `key_ops.rs` | the replica (`Replica`): peers' reads and writes, the key operations (`KeyOp`) it runs under per-key locks (read-merge-write) |
//! | `hints.rs`, `delivery.rs`, `peers.rs` | hints held for others; their delivery (coordination); peers' health, probes and hint backoff |
//! | `entries.rs`, `entropy.rs` | a record's entry hash and a key operation's tree change; anti-entropy (`Entropy`: trees and exchanges; `OwedExchanges`: the exchanges owed first) |
//! | `handoff.rs` | handing partitions off (`Handoffs`) |
//! | `reap.rs` | reaping tombstones (`Reaper`) |
//! | `writer.rs` | writer epochs (`Writer`) |
//! | `gossip.rs`, `view_store.rs`, `config.rs` | membership: the view and gossip (`View`); its durable copy (`ViewStore`); the node's configuration |
//! | `memory.rs`, `fuzz.rs` (feature `fuzzing`) | the in-memory stores every driver without ringkv-storage uses (core tests, fuzz driver, simulator); the fuzz driver |

mod actions;
mod admission;
mod client;
mod config;
mod coordinator;
mod delivery;
mod entries;
mod entropy;
mod forwards;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod gossip;
mod handoff;
mod hints;
mod key_ops;
mod locks;
#[cfg(any(test, feature = "fuzzing"))]
pub mod memory;
mod peers;
mod read_reply;
mod reap;
mod replica;
mod request_id;
mod requests;
mod router;
mod shared;
mod storage;
mod tasks;
mod timers;
mod view_store;
mod writer;

pub use actions::{Action, ClientId};
#[cfg(feature = "sabotage")]
pub use config::Sabotage;
pub use config::{
    Config, ConfigError, EPOCH_WRITER_BIT, FULL_READ_ONE_IN_DEFAULT, HINT_BYTES_MAX_DEFAULT,
    STAND_IN_WRITER_BIT,
};
pub use entropy::tree_roots;
pub use storage::{
    Completion, KeyRecord, ListedKey, Listing, ScanPage, Space, StorageFailure, StorageOp,
};

use crate::membership::{LocalMember, Membership};
use crate::placement::Ring;
use crate::random::Rng;
use crate::resp::Command;
use crate::time::Instant;
use crate::version::{ContextError, NodeId};
use crate::wire::MemberStatus;
use crate::wire::Message;
use actions::ActionQueue;
use coordinator::coordination;
use core::time::Duration;
use gossip::View;
use hints::Hints;
use peers::Peers;
use shared::Shared;
use tasks::{Task, Tasks};
use timers::{Timer, TimerTable};

/// Who this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub id: NodeId,
}

/// One event for the node.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// A client's command. `tag` comes back with the reply; `timestamp_ms` is the wall
    /// clock at arrival, used only for last-write-wins.
    Client {
        client: ClientId,
        tag: u64,
        timestamp_ms: u64,
        command: Command<'a>,
    },
    /// A decoded frame from a peer (the shell decodes with [`Node::wire_limits`] and
    /// refuses foreign frames).
    Peer { from: NodeId, message: Message<'a> },
    /// The connection to a peer is up.
    PeerUp { peer: NodeId },
    /// The connection to a peer broke: frames sent on it may have arrived.
    PeerDown { peer: NodeId },
    /// A connection to the peer could not be made (refused, unreachable): no frame
    /// sent to it since the last `PeerDown` (or since start) was delivered. Forwarded
    /// writes sent in that time go to the next replica at once.
    PeerUnreachable { peer: NodeId },
    /// A storage operation finished.
    Storage(Completion),
    /// [`Node::poll_timeout`] passed.
    Timeout,
}

/// Why a client request failed. `Display` is the RESP error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// A bound was reached; the client may retry later.
    Overloaded(&'static str),
    QuorumOutOfRange {
        requested: u8,
        replicas: u8,
    },
    KeyTooLarge {
        size: usize,
        max: usize,
    },
    ValueTooLarge {
        size: usize,
        max: usize,
    },
    InvalidContext(ContextError),
    /// Fewer than the required replicas answered in time.
    QuorumTimeout {
        operation: &'static str,
        required: u8,
    },
    /// Too many replicas failed for the quorum to be met.
    QuorumUnreachable {
        operation: &'static str,
        required: u8,
    },
    /// The key has more siblings or writers than the configured bounds.
    TooManyVersions,
    /// This node's storage failed.
    StorageFailed(StorageFailure),
    /// The replica a write was forwarded to could not complete it.
    ForwardFailed,
    NotSupported(&'static str),
    /// This node's view holds no member that is up: it has not joined a cluster yet.
    NotJoined,
    /// This node has left the cluster: it serves no data request (`View::has_left`).
    Left,
}

impl core::fmt::Display for RequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RequestError::Overloaded(what) => write!(f, "OVERLOADED {what}, retry later"),
            RequestError::QuorumOutOfRange {
                requested,
                replicas,
            } => write!(f, "ERR quorum {requested} must be within 1..={replicas}"),
            RequestError::KeyTooLarge { size, max } => {
                write!(f, "ERR key too large: {size} bytes, the limit is {max}")
            }
            RequestError::ValueTooLarge { size, max } => {
                write!(f, "ERR value too large: {size} bytes, the limit is {max}")
            }
            RequestError::InvalidContext(error) => write!(f, "ERR invalid context: {error}"),
            RequestError::QuorumTimeout {
                operation,
                required,
            } => write!(
                f,
                "TIMEOUT {operation} did not reach {required} replicas in time"
            ),
            RequestError::QuorumUnreachable {
                operation,
                required,
            } => write!(
                f,
                "UNAVAILABLE {operation} cannot reach {required} replicas"
            ),
            RequestError::TooManyVersions => {
                f.write_str("ERR the key has too many siblings or writers; resolve with VSET")
            }
            RequestError::StorageFailed(failure) => write!(f, "IOERR local storage: {failure:?}"),
            RequestError::ForwardFailed => {
                f.write_str("UNAVAILABLE the coordinating replica could not complete the write")
            }
            RequestError::NotSupported(what) => write!(f, "ERR {what} is not supported yet"),
            RequestError::NotJoined => {
                f.write_str("UNAVAILABLE this node has not joined a cluster yet")
            }
            RequestError::Left => f.write_str(
                "UNAVAILABLE this node has left the cluster; send requests to another node",
            ),
        }
    }
}

impl std::error::Error for RequestError {}

/// One bounded structure: its peak use and its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundUse {
    pub name: &'static str,
    pub peak: u64,
    pub max: u64,
}

/// Counters for INFO, tests and the simulator's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub reads_coordinated: u64,
    /// Reads that asked only R replicas and then the rest of their N: the ones asked
    /// were slower than recent answers, or one failed (see `coordinator::speculation`).
    pub reads_speculated: u64,
    pub writes_coordinated: u64,
    pub writes_forwarded: u64,
    /// Forwards sent again to the next replica because the first was never delivered.
    pub forwards_redirected: u64,
    /// Forwards retried at another replica as their retry dot (an attempt may have
    /// been minted: its replica went silent, its link broke, or it failed).
    pub forwards_retried: u64,
    /// Writes this node could not store (its disk full) handed to another replica.
    pub writes_handed_on: u64,
    pub stand_in_writes: u64,
    pub messages_sent: u64,
    pub read_repairs_sent: u64,
    pub hints_stored: u64,
    /// Hints this node began to keep as a write's coordinator for an owner that no
    /// target took the write for (down, no stand-in left).
    pub hints_held_for_down_owners: u64,
    pub hints_delivered: u64,
    /// Hints deleted undelivered because their owner left the cluster or was removed.
    pub hints_dropped: u64,
    /// Hinted writes refused because the hint store was at its count or byte bound.
    pub hints_refused: u64,
    pub overloaded: u64,
    /// Unacknowledged merges (repairs) folded into one already waiting on their key.
    pub merges_coalesced: u64,
    pub requests_timed_out: u64,
    pub peers_marked_down: u64,
    pub actions_refused: u64,
    /// Anti-entropy: exchanges started, of those found in sync at the root, keys sent
    /// to a replica that held them differently, ticks refused for foreground load.
    pub entropy_exchanges: u64,
    pub entropy_in_sync: u64,
    pub entropy_keys_pushed: u64,
    pub entropy_ticks_refused: u64,
    /// Handoff: pages offered, records sent and their bytes, the offers' key and hash
    /// bytes (per replica offered to), keys deleted once every replica confirmed them,
    /// pages abandoned (timeout, refusal, a replica down).
    pub handoff_pages: u64,
    pub handoff_keys_sent: u64,
    pub handoff_bytes_sent: u64,
    pub handoff_offer_bytes: u64,
    pub handoff_keys_deleted: u64,
    pub handoff_pages_abandoned: u64,
    /// Writer epochs started, and dots minted under one-shot writer ids while a new
    /// epoch was not yet durable (see `node::writer`).
    pub writer_epochs_started: u64,
    pub one_shot_writes: u64,
    /// Reaping: walks started, walks blocked or abandoned (a member down or busy, a
    /// missing answer, a placement change), records reaped on this node (tombstones
    /// removed, clocks compacted), and records waiting for their grace period.
    pub reap_walks: u64,
    pub reap_walks_blocked: u64,
    pub reap_keys: u64,
    pub reap_candidates: u64,
    /// Records reaping has work on now (tombstones, and records holding one-shot clock
    /// entries every replica superseded): 0 once everything past its grace is reaped.
    pub records_reapable: u64,
    /// Local records the disk could not give back (checksum or decode failure) that a
    /// merge from another replica (read repair, anti-entropy, hint, handoff) replaced.
    pub corrupt_records_replaced: u64,
}

/// A Dynamo node. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Node {
    /// What every concern uses: configuration, identity, time, randomness and the
    /// outputs (actions, storage tasks, counters).
    shared: Shared,
    /// The membership view and the placement built from it.
    view: View,
    /// When each periodic round (hints, gossip, anti-entropy, handoff, reaping) is due.
    timers: TimerTable,
    /// Anti-entropy: the hash trees and the exchanges in flight.
    entropy: entropy::Entropy,
    /// Anti-entropy exchanges owed to replicas that missed writes (or to all, after
    /// damage), paid before the round robin.
    owed: entropy::OwedExchanges,
    /// Partitions being handed to their new replicas.
    handoffs: handoff::Handoffs,
    /// Tombstone reaping: the walk in flight and the candidates.
    reaper: reap::Reaper,
    /// Recent client latency, which background work is admitted against.
    foreground: admission::ForegroundLatency,
    /// Writer epochs: under which id this node mints dots, per partition.
    writer: writer::Writer,
    /// The membership view's durable copy (`view_store`).
    view_store: view_store::ViewStore,
    /// Coordination: the requests this node coordinates, with their deadlines, and the
    /// forwarded writes it already took.
    coordinator: coordinator::Coordinator,
    /// The replica: its per-key locks and the key operations waiting on them.
    replica: replica::Replica,
    /// Peers' health, probes, requests in flight and hint backoff.
    peers: Peers,
    /// The hints this node holds for others.
    hints: Hints,
}

impl Node {
    /// A node at `now`. Starts by listing the hints it holds on disk.
    pub fn new(
        config: Config,
        identity: NodeIdentity,
        seed: u64,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        config.validate(identity.id)?;
        let initial = config.members.iter().find(|m| m.id == identity.id);
        let local = LocalMember {
            id: identity.id,
            peer_address: config.peer_address.clone(),
            client_address: config.client_address.clone(),
            weight: initial.map_or(config.weight, |m| m.weight),
            zone: initial.map_or(config.zone, |m| m.zone),
            status: match initial {
                Some(_) => MemberStatus::Up,
                None => MemberStatus::Joining,
            },
        };
        let membership = Membership::new(
            local,
            &config.members,
            config.seeds.clone(),
            config.members_max as usize,
            now,
        )
        .map_err(ConfigError::Membership)?;
        let view = View::new(membership, &config)?;
        let request_slots = if cfg!(feature = "sabotage") {
            // Room for the sabotaged node that ignores its bound; the checker must see it.
            config.requests_max.saturating_mul(2)
        } else {
            config.requests_max
        };
        // Sabotage: a hint store that admits hints past its byte bound (the bounds
        // checker must see it).
        #[cfg(feature = "sabotage")]
        let hint_bytes_max = if config.sabotage.ignore_hint_bytes_bound {
            u64::MAX
        } else {
            config.hint_bytes_max
        };
        #[cfg(not(feature = "sabotage"))]
        let hint_bytes_max = config.hint_bytes_max;
        let mut node = Node {
            view,
            timers: TimerTable::new(|timer| {
                let after_ms = match timer {
                    Timer::HintRound => config.hint_interval_ms,
                    Timer::Gossip => 0,
                    Timer::Entropy => config.anti_entropy_interval_ms,
                    Timer::Handoff => config.handoff_interval_ms,
                    Timer::Reap => reap::STEP_MS.min(config.reap_interval_ms),
                };
                now + Duration::from_millis(after_ms)
            }),
            entropy: entropy::Entropy::new(config.partition_bits, config.anti_entropy_interval_ms),
            owed: entropy::OwedExchanges::new(config.partition_bits),
            handoffs: handoff::Handoffs::new(now, config.handoff_bytes_per_second),
            reaper: reap::Reaper::new(now, config.reap_interval_ms),
            foreground: admission::ForegroundLatency::default(),
            writer: writer::Writer::default(),
            view_store: view_store::ViewStore::default(),
            coordinator: coordinator::Coordinator::new(request_slots, config.requests_max),
            replica: replica::Replica::new(config.locked_keys_max, config.waiting_operations_max),
            peers: Peers::new(&config, identity.id),
            hints: Hints::new(config.hints_max, hint_bytes_max),
            shared: Shared {
                id: identity.id,
                rng: Rng::new(seed),
                now,
                actions: ActionQueue::new(config.actions_max, config.action_bytes_max),
                tasks: Tasks::new(config.storage_operations_max),
                scratch: Vec::new(),
                stats: Stats::default(),
                config,
            },
        };
        node.list_hints(&[]);
        node.writer.load(&mut node.shared);
        node.view_store.load(&mut node.shared);
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The limits a shell decodes peer frames with.
    pub fn wire_limits(&self) -> crate::wire::WireLimits {
        self.shared.config.wire_limits
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            peers_marked_down: self.peers.marked_down,
            actions_refused: self.shared.actions.refused,
            hints_refused: self.hints.refused,
            entropy_exchanges: self.entropy.exchanges_started,
            entropy_in_sync: self.entropy.exchanges_in_sync,
            entropy_keys_pushed: self.entropy.keys_pushed,
            entropy_ticks_refused: self.entropy.ticks_refused,
            handoff_pages: self.handoffs.pages,
            handoff_keys_sent: self.handoffs.keys_sent,
            handoff_bytes_sent: self.handoffs.bytes_sent,
            handoff_offer_bytes: self.handoffs.offer_bytes,
            handoff_keys_deleted: self.handoffs.keys_deleted,
            handoff_pages_abandoned: self.handoffs.pages_abandoned,
            reap_walks: self.reaper.walks_started,
            reap_walks_blocked: self.reaper.walks_blocked,
            reap_keys: self.reaper.keys_reaped,
            reap_candidates: self.reaper.candidates() as u64,
            records_reapable: (0..self.view.ring.partition_count())
                .map(|partition| u64::from(self.entropy.trees.reapable_held(partition)))
                .sum(),
            writer_epochs_started: self.writer.epochs_started,
            one_shot_writes: self.writer.one_shot_writes,
            ..self.shared.stats
        }
    }

    /// True while this node believes `peer` is up.
    pub fn believes_up(&self, peer: NodeId) -> bool {
        peer == self.shared.id || self.peers.is_up(peer)
    }

    /// Hints held for other nodes.
    pub fn hints_held(&self) -> usize {
        self.hints.len()
    }

    /// The stored size of the hints held for other nodes, in bytes.
    pub fn hint_bytes_held(&self) -> u64 {
        self.hints.bytes()
    }

    /// Hinted writes refused so far because the hint store was at a bound.
    pub fn hints_refused(&self) -> u64 {
        self.hints.refused
    }

    /// Requests in flight.
    pub fn requests_in_flight(&self) -> usize {
        self.coordinator.requests.len()
    }

    /// Storage operations in flight (including the hint listing after a start).
    pub fn storage_operations_in_flight(&self) -> usize {
        self.shared.tasks.len()
    }

    /// The shell found that the data store lost records it had made durable (records
    /// that failed their checksum when the store was opened): this node may have
    /// minted dots it no longer remembers, so it mints under a new writer epoch from
    /// now on (see `writer`). Anti-entropy brings the lost records back from replicas.
    pub fn storage_damaged(&mut self) {
        self.writer.damaged(&mut self.shared, &self.view);
        self.owed.owe_every(self.shared.id, &self.view);
    }

    /// True once the anti-entropy trees cover all of this node's data.
    pub fn trees_built(&self) -> bool {
        self.entropy.trees.fully_built()
    }

    /// Placement as this node sees it.
    pub fn ring(&self) -> &Ring {
        &self.view.ring
    }

    /// This node's membership view.
    pub fn membership(&self) -> &Membership {
        &self.view.membership
    }

    /// The root of `partition`'s anti-entropy tree; None while it is being rebuilt.
    pub fn partition_root(&self, partition: usize) -> Option<u64> {
        self.entropy
            .trees
            .is_built(partition)
            .then(|| self.entropy.trees.root(partition))
    }

    /// Keys this node holds in `partition` (from its anti-entropy tree).
    pub fn keys_held(&self, partition: usize) -> u32 {
        self.entropy.trees.keys_held(partition)
    }

    /// Every bounded structure with its peak use and its bound.
    pub fn bounds(&self) -> [BoundUse; 10] {
        let config = &self.shared.config;
        let bound = |name, peak: usize, max: u64| BoundUse {
            name,
            peak: peak as u64,
            max,
        };
        [
            bound(
                "requests",
                self.coordinator.requests.peak,
                u64::from(config.requests_max),
            ),
            bound(
                "storage operations",
                self.shared.tasks.peak,
                u64::from(config.storage_operations_max),
            ),
            bound(
                "locked keys",
                self.replica.locks.locked_peak,
                u64::from(config.locked_keys_max),
            ),
            bound(
                "waiting operations",
                self.replica.locks.waiting_peak,
                u64::from(config.waiting_operations_max),
            ),
            bound("hints", self.hints.peak, u64::from(config.hints_max)),
            BoundUse {
                name: "hint bytes",
                peak: self.hints.peak_bytes,
                max: config.hint_bytes_max,
            },
            bound(
                "hint deliveries",
                self.coordinator.requests.deliveries_peak as usize,
                u64::from(config.hint_deliveries_max),
            ),
            bound(
                "requests per peer",
                self.peers.requests_peak as usize,
                u64::from(config.peer_requests_max),
            ),
            bound(
                "queued actions",
                self.shared.actions.actions_peak,
                u64::from(config.actions_max),
            ),
            bound(
                "queued action bytes",
                self.shared.actions.bytes_peak,
                config.action_bytes_max as u64,
            ),
        ]
    }

    /// Applies one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        self.shared.now = self.shared.now.max(now);
        match input {
            Input::Client {
                client,
                tag,
                timestamp_ms,
                command,
            } => self.client_command(client, tag, timestamp_ms, command),
            Input::Peer { from, message } => self.peer_message(from, message),
            Input::PeerUp { peer } => self.peers.alive(peer, self.shared.now),
            Input::PeerDown { peer } => {
                self.peers.link_broke(peer, self.shared.now);
                self.peer_lost(peer, false);
            }
            Input::PeerUnreachable { peer } => {
                self.peers.mark_down(peer, self.shared.now);
                self.peer_lost(peer, true);
            }
            Input::Storage(completion) => self.storage_completion(completion),
            Input::Timeout => {}
        }
        self.run_timers();
    }

    /// The next action for the shell; its bytes are valid until the next call.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<'_>> {
        let action = self.shared.actions.poll();
        if let Some(Action::Send { .. }) = action {
            self.shared.stats.messages_sent += 1;
        }
        action
    }

    /// When to call `handle(now, Input::Timeout)` next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hints_held = self.hints.len() > 0;
        let periodic = self
            .timers
            .next(|timer| timer != Timer::HintRound || hints_held);
        [
            self.coordinator.requests.next_deadline(),
            self.peers.next_probe(),
            periodic,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_timers(&mut self) {
        let now = self.shared.now;
        for _ in 0..self.shared.config.expirations_per_wakeup_max {
            // Leave room for what an expiry may emit; the rest waits for the next call.
            if !self
                .shared
                .actions
                .has_room(usize::from(self.shared.config.replicas) * 2 + 4)
            {
                break;
            }
            let Some(id) = self.coordinator.requests.pop_expired(now) else {
                break;
            };
            let (coordinator, mut cx) = coordination!(self);
            coordinator.request_deadline(&mut cx, id);
        }
        while self.shared.actions.has_room(2) {
            let Some(peer) = self.peers.take_due_probe(now) else {
                break;
            };
            let nonce = self.shared.rng.next_u64();
            let address = self
                .view
                .membership
                .get(peer)
                .map_or(&[][..], |member| &member.peer_address);
            let _ = self.shared.actions.connect(peer, address);
            self.shared.send(peer, &Message::Ping { nonce });
        }
        if self.timers.is_due(Timer::HintRound, now) {
            let next = now + Duration::from_millis(self.shared.config.hint_interval_ms);
            self.timers.set(Timer::HintRound, next);
            let (coordinator, mut cx) = coordination!(self);
            coordinator.deliver_hints(&mut cx);
            coordinator.drop_departed_hints(&mut cx);
        }
        if self.timers.is_due(Timer::Gossip, now) {
            let next = now + Duration::from_millis(self.shared.config.gossip_interval_ms);
            self.timers.set(Timer::Gossip, next);
            self.view.gossip_round(&mut self.shared, &mut self.peers);
            self.view_store.load(&mut self.shared);
            self.view_store.store(&mut self.shared, &self.view);
        }
        if self.timers.is_due(Timer::Entropy, now) {
            let admitted = self.background_admitted();
            let view_and_peers = (&self.view, &self.peers);
            let next =
                self.entropy
                    .tick(&mut self.shared, view_and_peers, &mut self.owed, admitted);
            self.timers.set(Timer::Entropy, next);
        }
        if self.timers.is_due(Timer::Handoff, now) {
            self.handoff_tick();
        }
        if self.timers.is_due(Timer::Reap, now) {
            self.reap_tick();
        }
    }

    fn healthy(&self, node: NodeId) -> bool {
        node == self.shared.id || self.peers.is_up(node)
    }

    /// Starts (or continues after `after`) listing the hints on disk.
    fn list_hints(&mut self, after: &[u8]) {
        let limit = 1024u32.min(self.shared.config.hints_max);
        self.shared.tasks.start(
            Task::ListHints,
            &mut self.shared.actions,
            |actions, token| actions.list(token, Space::Hints, after, limit),
        );
    }
}

#[cfg(test)]
mod tests;
