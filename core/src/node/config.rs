//! Everything a node is told at start: the cluster, the quorum defaults, the timeouts
//! and a bound for every table and queue it keeps.

use crate::placement::{Member, PARTITION_BITS_DEFAULT};
use crate::quorum::SyncWrites;
use crate::version::{NodeId, VersionBounds};
use crate::wire::WireLimits;

/// A node's configuration. [`Config::validate`] checks it before a node is built.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Frames from another cluster id are refused.
    pub cluster_id: u64,
    /// The initial cluster: nodes started with the same list form it at once, every
    /// member `Up`. A node joining a running cluster starts with an empty list and
    /// `seeds`. Later changes travel by gossip (see `crate::membership`).
    pub members: Vec<Member>,
    /// Where peers and clients reach this node, as gossip announces it.
    pub peer_address: Vec<u8>,
    pub client_address: Vec<u8>,
    /// This node's weight and zone when it joins (members of `members` use theirs).
    pub weight: u32,
    pub zone: Option<u32>,
    /// Peer addresses of nodes to gossip with when alone, and now and then otherwise.
    pub seeds: Vec<Vec<u8>>,
    pub partition_bits: u32,
    /// N: copies of every key.
    pub replicas: u8,
    /// R and W when a request does not name its own.
    pub read_quorum_default: u8,
    pub write_quorum_default: u8,
    /// Which replicas sync a write before acknowledging, when a request does not say
    /// (`crate::quorum::SyncWrites`).
    pub sync_writes_default: SyncWrites,

    /// A client request that has not reached its quorum by then fails.
    pub request_timeout_ms: u64,
    /// A replica that has not answered by then is suspected; a write asks a stand-in
    /// in its place, a read asks the next healthy node.
    pub replica_timeout_ms: u64,
    /// A forwarded write whose replica has sent this node nothing for this long is
    /// retried at the next replica (as the write's retry dot, so it is never two
    /// siblings), and the silent replica is passed over until it is heard from. The
    /// floor: the wait stretches to the slowest of the last forwards' answer times,
    /// up to `replica_timeout_ms` (`coordinator::speculation`).
    pub forward_silence_ms: u64,
    /// A forwarded write unanswered this long is retried at the next replica even when
    /// its replica is heard from (it is slow: a node catching up after a restart), and
    /// that replica is passed over as a forward's target for `replica_timeout_ms`.
    /// Stretched as `forward_silence_ms` is.
    pub forward_retry_ms: u64,
    /// After a read replied, how long it keeps listening for late answers before it
    /// sends read repair.
    pub read_repair_window_ms: u64,
    /// One read in this many asks all N of its replicas, as the Dynamo paper's reads
    /// do, so that read repair reaches all of them; the others ask R (see
    /// `node::coordinator::read`). 1: every read asks N.
    pub full_read_one_in: u32,
    /// The shortest wait before a read that asked R replicas asks the rest of its N
    /// (the wait follows the slowest recent answers; see
    /// `node::coordinator::speculation`).
    pub read_speculation_min_ms: u64,
    /// A down peer is probed after this, doubling up to the maximum.
    pub probe_interval_initial_ms: u64,
    pub probe_interval_max_ms: u64,
    /// Consecutive timeouts that mark a peer down.
    pub failure_timeouts: u32,
    /// How often hints are offered to their owners; failures back off to the maximum.
    pub hint_interval_ms: u64,
    pub hint_backoff_max_ms: u64,
    /// A gossip round every interval, to a random live member, and one round in
    /// `gossip_seed_one_in` to a seed.
    pub gossip_interval_ms: u64,
    pub gossip_seed_one_in: u32,
    /// A member whose heartbeat has not advanced for this long, and that this node has
    /// not heard from itself meanwhile, is marked down (and probed).
    pub gossip_silence_ms: u64,
    /// Anti-entropy (see `node::entropy`): one exchange may start per interval, at most
    /// `anti_entropy_exchanges_max` run at once (0: never; trees are still kept), each
    /// comparing at most `anti_entropy_buckets_max` differing buckets key by key.
    pub anti_entropy_interval_ms: u64,
    pub anti_entropy_exchanges_max: u32,
    pub anti_entropy_buckets_max: u32,
    /// Handoff (see `node::handoff`): every interval a node that holds data of
    /// partitions it no longer replicates offers it to their replicas, one page of at
    /// most `background_page_keys` keys at a time, sending at most
    /// `handoff_bytes_per_second` of records.
    pub handoff_interval_ms: u64,
    pub background_page_keys: u32,
    pub handoff_bytes_per_second: u64,
    /// Tombstone reaping (see `node::reap`): a tombstone is removed once every replica
    /// has held it, unchanged, for `tombstone_grace_ms` and no member holds a hint or
    /// a handed-off copy of its partition. A node walks the partitions it leads at
    /// most once per `reap_interval_ms`, remembering at most `reap_candidates_max`
    /// tombstones between walks (0: never reap).
    pub tombstone_grace_ms: u64,
    pub reap_interval_ms: u64,
    pub reap_candidates_max: u32,
    /// Background work (anti-entropy, handoff, reaping) pauses while client requests
    /// this node coordinated lately took longer than this on average.
    pub background_latency_max_ms: u64,

    /// Coordinated requests (client and forwarded) in flight.
    pub requests_max: u32,
    /// Storage operations in flight.
    pub storage_operations_max: u32,
    /// Keys with a read-modify-write in progress, and operations waiting behind them.
    pub locked_keys_max: u32,
    pub waiting_operations_max: u32,
    /// Hinted writes held for other nodes.
    pub hints_max: u32,
    /// Bytes of hinted records held for other nodes (their stored sizes, with the
    /// writes admitted and not yet durable; see `node::hints`).
    pub hint_bytes_max: u64,
    /// Hints being delivered at once.
    pub hint_deliveries_max: u32,
    /// Requests outstanding to one peer; past it the peer counts as overloaded.
    pub peer_requests_max: u32,
    /// Actions waiting to be polled, and the bytes they carry.
    pub actions_max: u32,
    pub action_bytes_max: usize,
    /// Entries in the membership view (members that left included).
    pub members_max: u32,
    /// Keys in one DEL or EXISTS.
    pub keys_per_command_max: u32,
    /// Expired deadlines handled in one call; the rest wait for the next.
    pub expirations_per_wakeup_max: u32,

    pub key_size_bytes_max: usize,
    pub value_size_bytes_max: usize,
    pub version_bounds: VersionBounds,
    pub wire_limits: WireLimits,

    /// Deliberate faults, only for proving the simulator's checkers.
    #[cfg(feature = "sabotage")]
    pub sabotage: Sabotage,
}

/// Ways to break a node on purpose, so a test can show that a checker catches them.
/// Only a build with the `sabotage` feature can switch them on (through
/// `Config::sabotage`); otherwise every knob reads as off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// A replica acknowledges a write before its storage says it is durable.
    pub ack_before_durable: bool,
    /// A replica's merge keeps only the newest sibling, dropping concurrent ones.
    pub drop_concurrent_siblings: bool,
    /// A write ignores its context: it supersedes nothing.
    pub ignore_context: bool,
    /// Read repair is never sent and hints are never delivered.
    pub skip_repair: bool,
    /// The in-flight request table admits requests past `requests_max`.
    pub ignore_request_bound: bool,
    /// The hint store admits hints past `hint_bytes_max`.
    pub ignore_hint_bytes_bound: bool,
    /// Writes use a strict quorum: no stand-ins for unreachable replicas.
    pub strict_quorum: bool,
    /// Handoff deletes a page as soon as it is offered, before any replica confirmed.
    pub handoff_unconfirmed: bool,
    /// Minting ignores the writer epoch: a regained partition keeps the old writer id.
    pub ignore_writer_epoch: bool,
    /// Reaping removes every tombstone it scans: no replica confirmation, no grace
    /// period, no question to the other members.
    pub reap_unconfirmed: bool,
    /// Reaping keeps no counter floor, and mints start at counter 1 again.
    pub reap_without_floor: bool,
    /// A forward is never retried: its coordinator waits out the request timeout on a
    /// replica that died or froze (the behaviour before forwards had attempt ids).
    pub forwards_wait: bool,
    /// A replica drops the clock entries of one-shot writers that hold no live value
    /// as soon as it merges, without asking the other replicas (`node::reap`).
    pub compact_unconfirmed: bool,
    /// The token a write returns is the minting replica's whole merged clock (it
    /// covers concurrent siblings the writer was never shown).
    pub merged_clock_token: bool,
    /// The anti-entropy tree takes a scan's page as it was read, even when a write
    /// became durable while the read was in flight (the tree goes stale).
    pub trees_ignore_races: bool,
    /// A forward's first attempt is minted without its retry dot alias: a retried
    /// forward can live on as two siblings.
    pub retry_without_alias: bool,
    /// The minting replica buffers its own record of a write (as it does a peer's
    /// `SYNC one` write) instead of syncing it before it sends the write on.
    pub buffer_mints: bool,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    QuorumOutOfRange {
        name: &'static str,
        value: u8,
        replicas: u8,
    },
    ReplicasOutOfRange {
        replicas: u8,
        members: usize,
    },
    ZeroBound(&'static str),
    /// Member ids with either of the top two bits set are reserved for writer ids.
    ReservedMemberId(NodeId),
    /// The node is not in `members` and has no seeds to join through.
    NoWayIn(NodeId),
    Membership(crate::membership::MembershipError),
    Placement(crate::placement::PlacementError),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::QuorumOutOfRange {
                name,
                value,
                replicas,
            } => write!(f, "{name} = {value} must be within 1..={replicas}"),
            ConfigError::ReplicasOutOfRange { replicas, members } => {
                write!(f, "replicas = {replicas} needs 1..={members} members")
            }
            ConfigError::ZeroBound(name) => write!(f, "{name} must be at least 1"),
            ConfigError::ReservedMemberId(id) => {
                write!(f, "member id {} uses a reserved top bit", id.0)
            }
            ConfigError::NoWayIn(id) => write!(
                f,
                "node {} is not in the member list and has no seeds to join through",
                id.0
            ),
            ConfigError::Membership(error) => write!(f, "membership: {error}"),
            ConfigError::Placement(error) => write!(f, "placement: {error:?}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Dots minted by stand-ins use writer ids with this bit set (see `node` docs).
pub const STAND_IN_WRITER_BIT: u64 = 1 << 63;

/// The default bound of a node's hint store in bytes (`Config::hint_bytes_max`): 1 GiB,
/// a thousand of the largest values.
pub const HINT_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// One read in this many asks all N replicas by default (`Config::full_read_one_in`).
pub const FULL_READ_ONE_IN_DEFAULT: u32 = 8;
/// Dots minted by a node under a writer epoch after its first use this bit (see
/// `node::writer`).
pub const EPOCH_WRITER_BIT: u64 = 1 << 62;
/// Member ids never use these bits, so no writer id can equal a member's.
const RESERVED_ID_BITS: u64 = STAND_IN_WRITER_BIT | EPOCH_WRITER_BIT;

impl Config {
    /// A configuration for `members` with production defaults: N=3 (or fewer members),
    /// R=W=2 (or N), timeouts in hundreds of milliseconds.
    pub fn new(cluster_id: u64, members: Vec<Member>) -> Config {
        let replicas = members.len().clamp(1, 3) as u8;
        let quorum = replicas.min(2);
        Config {
            cluster_id,
            members,
            peer_address: Vec::new(),
            client_address: Vec::new(),
            weight: 1,
            zone: None,
            seeds: Vec::new(),
            partition_bits: PARTITION_BITS_DEFAULT,
            replicas,
            read_quorum_default: quorum,
            write_quorum_default: quorum,
            sync_writes_default: SyncWrites::default(),
            request_timeout_ms: 2_000,
            replica_timeout_ms: 300,
            forward_silence_ms: 20,
            forward_retry_ms: 50,
            read_repair_window_ms: 200,
            full_read_one_in: FULL_READ_ONE_IN_DEFAULT,
            read_speculation_min_ms: 1,
            probe_interval_initial_ms: 100,
            probe_interval_max_ms: 5_000,
            failure_timeouts: 1,
            hint_interval_ms: 200,
            hint_backoff_max_ms: 5_000,
            gossip_interval_ms: 1_000,
            gossip_seed_one_in: 10,
            gossip_silence_ms: 10_000,
            anti_entropy_interval_ms: 1_000,
            anti_entropy_exchanges_max: 2,
            anti_entropy_buckets_max: 8,
            handoff_interval_ms: 200,
            background_page_keys: 64,
            handoff_bytes_per_second: 32 << 20,
            tombstone_grace_ms: 60_000,
            reap_interval_ms: 10_000,
            reap_candidates_max: 65_536,
            background_latency_max_ms: 250,
            requests_max: 4_096,
            storage_operations_max: 4_096,
            locked_keys_max: 4_096,
            waiting_operations_max: 8_192,
            hints_max: 100_000,
            hint_bytes_max: HINT_BYTES_MAX_DEFAULT,
            hint_deliveries_max: 64,
            peer_requests_max: 4_096,
            actions_max: 65_536,
            action_bytes_max: 256 << 20,
            members_max: 1_024,
            keys_per_command_max: 256,
            expirations_per_wakeup_max: 1_024,
            key_size_bytes_max: crate::limits::KEY_SIZE_BYTES_MAX,
            value_size_bytes_max: crate::limits::VALUE_SIZE_BYTES_MAX,
            version_bounds: VersionBounds::default(),
            wire_limits: WireLimits::default(),
            #[cfg(feature = "sabotage")]
            sabotage: Sabotage::default(),
        }
    }

    /// Checks every field a node relies on.
    pub fn validate(&self, identity: NodeId) -> Result<(), ConfigError> {
        let replicas = self.replicas;
        let joining = !self.members.iter().any(|m| m.id == identity);
        if joining && self.seeds.is_empty() {
            return Err(ConfigError::NoWayIn(identity));
        }
        if replicas == 0 || (!joining && usize::from(replicas) > self.members.len()) {
            return Err(ConfigError::ReplicasOutOfRange {
                replicas,
                members: self.members.len(),
            });
        }
        for (name, value) in [
            ("read_quorum_default", self.read_quorum_default),
            ("write_quorum_default", self.write_quorum_default),
        ] {
            if value == 0 || value > replicas {
                return Err(ConfigError::QuorumOutOfRange {
                    name,
                    value,
                    replicas,
                });
            }
        }
        for (name, value) in [
            ("requests_max", self.requests_max),
            ("storage_operations_max", self.storage_operations_max),
            ("locked_keys_max", self.locked_keys_max),
            ("waiting_operations_max", self.waiting_operations_max),
            ("hints_max", self.hints_max),
            ("hint_deliveries_max", self.hint_deliveries_max),
            ("peer_requests_max", self.peer_requests_max),
            ("actions_max", self.actions_max),
            ("keys_per_command_max", self.keys_per_command_max),
            (
                "expirations_per_wakeup_max",
                self.expirations_per_wakeup_max,
            ),
            ("failure_timeouts", self.failure_timeouts),
            ("members_max", self.members_max),
            ("gossip_seed_one_in", self.gossip_seed_one_in),
            ("full_read_one_in", self.full_read_one_in),
            ("background_page_keys", self.background_page_keys),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        for (name, value) in [
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("handoff_interval_ms", self.handoff_interval_ms),
            ("handoff_bytes_per_second", self.handoff_bytes_per_second),
            ("reap_interval_ms", self.reap_interval_ms),
            ("hint_bytes_max", self.hint_bytes_max),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        if self.anti_entropy_buckets_max == 0 {
            return Err(ConfigError::ZeroBound("anti_entropy_buckets_max"));
        }
        if let Some(member) = self.members.iter().find(|m| m.id.0 & RESERVED_ID_BITS != 0) {
            return Err(ConfigError::ReservedMemberId(member.id));
        }
        if identity.0 & RESERVED_ID_BITS != 0 {
            return Err(ConfigError::ReservedMemberId(identity));
        }
        Ok(())
    }
}
