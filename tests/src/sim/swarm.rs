//! A run's parameters, all drawn from its seed (swarm testing: each run turns a random
//! subset of fault kinds on, so rare combinations get runs of their own).

use super::disk::DiskConfig;
use super::network::NetworkConfig;
use ringkv_core::Rng;
use ringkv_core::node::Config;
use ringkv_core::placement::Member;

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    pub crashes: bool,
    pub partitions: bool,
    pub one_way: bool,
    pub loss: bool,
    pub duplication: bool,
    pub disk_failures: bool,
    /// Mean time between fault injections.
    pub mean_interval_ms: u64,
    /// Nodes down at once, at most.
    pub max_down: usize,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.crashes || self.partitions || self.loss || self.duplication || self.disk_failures
    }
}

/// What clients do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Workload {
    /// Every kind of operation, at random (the default for checking).
    #[default]
    Mixed,
    GetsOnly,
    SetsOnly,
    /// Read-modify-write: a VGET, then a VSET with its context, on the same key.
    ReadModifyWrite,
}

/// Everything that shapes one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameters {
    pub seed: u64,
    pub nodes: usize,
    pub replicas: u8,
    pub read_quorum: u8,
    pub write_quorum: u8,
    pub clients: usize,
    pub operations_per_client: u32,
    pub keys: u32,
    pub think_time_max_ms: u64,
    pub network: NetworkConfig,
    pub disk: DiskConfig,
    pub faults: Faults,
    pub fault_phase_ms: u64,
    /// After the faults stop, clients keep working this long (see `Cluster::run`).
    pub calm_phase_ms: u64,
    pub requests_max: u32,
    pub workload: Workload,
    /// Nodes (the first ones) crashed at the start and kept down for the fault phase.
    pub down_from_start: usize,
    pub sabotage: ringkv_core::node::Sabotage,
    /// Sabotage of the frontend: client sessions let a pipelined request run before
    /// the earlier requests of its connection finished.
    pub unordered_sessions: bool,
    /// Events after which the run is stopped and fails (`cluster::RUN_EVENTS_MAX`).
    pub events_max: u64,
    /// A client's one-way latency to its node is drawn from this range (microseconds;
    /// an empty range is zero latency, as the simulator had before seed 5552706).
    pub client_latency_us: std::ops::Range<u64>,
    /// After quiescence, read every key at R=N (read repair converges replicas).
    pub read_sweep: bool,
    /// Then let time pass this long with no clients (anti-entropy's turn).
    pub entropy_phase_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub anti_entropy_exchanges_max: u32,
    /// Membership changes during the fault phase: (milliseconds after the start, change).
    pub membership_changes: Vec<(u64, MembershipChange)>,
    /// Tombstone reaping (`node::reap`): the grace period and the walk interval.
    pub tombstone_grace_ms: u64,
    pub reap_interval_ms: u64,
    /// The ring's 2^bits partitions (6; more make anti-entropy's round robin slower,
    /// as the default 1,024 do on a real cluster).
    pub partition_bits: u32,
    /// Each node's hint store bound in bytes (`Config::hint_bytes_max`): small in one
    /// seed of four, so stand-ins refuse hints past it and the bound checker sees it
    /// held.
    pub hint_bytes_max: u64,
    /// The cluster's `SYNC` default (`Config::sync_writes_default`): `all` in one seed
    /// of four; requests with a W name their own now and then.
    pub sync_writes: ringkv_core::quorum::SyncWrites,
    /// How often every disk syncs its buffered writes (the shells' interval sync).
    pub sync_interval_ms: u64,
    /// One read in this many asks all N replicas (`Config::full_read_one_in`): every
    /// read in one seed of four, the production default in half, one in two otherwise.
    pub full_read_one_in: u32,
    /// The nodes' `Config::replica_timeout_ms` (150), which also caps how long a
    /// forward waits before it is retried: a sabotage test that needs forwards
    /// retried as a matter of course shortens it below the network's latency.
    pub replica_timeout_ms: u64,
}

/// A planned change of the cluster's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new node starts with nodes 1 to 3 as its seeds and joins.
    Join,
    /// The node at this index is told to leave (`RINGKV.LEAVE`); it stays running.
    Leave(usize),
    /// The node at this index is lost for good: crashed, its disks wiped, never
    /// restarted.
    Destroy(usize),
    /// An operator removes the (destroyed) node at this index through another node
    /// (`RINGKV.REMOVE`), reissuing the command each second until it is accepted.
    Remove(usize),
}

impl Parameters {
    /// A run's parameters from its seed.
    pub fn from_seed(seed: u64) -> Parameters {
        let mut rng = Rng::new(seed ^ 0x5a5a_0f0f_1234_8765);
        let nodes = match rng.below(10) {
            0 => 1 + rng.below(2) as usize,
            1 => 8 + rng.below(9) as usize,
            _ => 3 + rng.below(5) as usize,
        };
        let replicas = (nodes as u8).min(if rng.chance(0.8) {
            3
        } else {
            1 + rng.below(5) as u8
        });
        let read_quorum = 1 + rng.below(u64::from(replicas)) as u8;
        let write_quorum = 1 + rng.below(u64::from(replicas)) as u8;
        let latency_min_ms = rng.below(3);
        let network = NetworkConfig {
            latency_min_ms,
            latency_max_ms: latency_min_ms + rng.below(15),
            loss: 0.0,
            duplication: 0.0,
            in_flight_max: 100_000,
        };
        let disk_latency_min_ms = rng.below(3);
        let disk = DiskConfig {
            latency_min_ms: disk_latency_min_ms,
            latency_max_ms: disk_latency_min_ms + rng.below(10),
            failure: if rng.chance(0.2) {
                rng.next_f64() * 0.02
            } else {
                0.0
            },
        };
        let faults = Faults {
            crashes: rng.chance(0.6),
            partitions: rng.chance(0.5),
            one_way: rng.chance(0.5),
            loss: rng.chance(0.4),
            duplication: rng.chance(0.4),
            disk_failures: rng.chance(0.3),
            mean_interval_ms: 200 + rng.below(1_500),
            max_down: 1 + rng.below(nodes as u64 / 2 + 1) as usize,
        };
        let mut parameters = Parameters {
            seed,
            nodes,
            replicas,
            read_quorum,
            write_quorum,
            clients: 1 + rng.below(6) as usize,
            operations_per_client: 10 + rng.below(40) as u32,
            keys: 1 + rng.below(12) as u32,
            think_time_max_ms: rng.below(200),
            network,
            disk,
            faults,
            fault_phase_ms: 2_000 + rng.below(8_000),
            calm_phase_ms: 3_000 + rng.below(2_000),
            requests_max: 4_096,
            workload: Workload::Mixed,
            down_from_start: 0,
            sabotage: ringkv_core::node::Sabotage::default(),
            unordered_sessions: false,
            events_max: super::cluster::RUN_EVENTS_MAX,
            client_latency_us: 200..2_000,
            read_sweep: true,
            entropy_phase_ms: 0,
            anti_entropy_interval_ms: 1_000,
            anti_entropy_exchanges_max: 2,
            membership_changes: Vec::new(),
            tombstone_grace_ms: 0,
            reap_interval_ms: 0,
            partition_bits: 6,
            hint_bytes_max: ringkv_core::node::HINT_BYTES_MAX_DEFAULT,
            sync_writes: ringkv_core::quorum::SyncWrites::One,
            sync_interval_ms: 100,
            full_read_one_in: 1,
            replica_timeout_ms: 150,
        };
        // Drawn last, so the draws above mean what they meant before reaping existed.
        parameters.tombstone_grace_ms = 500 + rng.below(2_500);
        parameters.reap_interval_ms = 200 + rng.below(800);
        if rng.below(4) == 0 {
            parameters.hint_bytes_max = 256 + rng.below(4_096);
        }
        if rng.below(4) == 0 {
            parameters.sync_writes = ringkv_core::quorum::SyncWrites::All;
        }
        parameters.sync_interval_ms = 10 + rng.below(500);
        parameters.full_read_one_in = match rng.below(4) {
            0 => 1,
            1 => 2,
            _ => ringkv_core::node::FULL_READ_ONE_IN_DEFAULT,
        };
        parameters
    }

    /// The base of the long scenarios (membership, long outage, remove): `seed`'s
    /// draws, then `nodes` nodes at N=3 R=2 W=2, four clients reading, writing and
    /// deleting `keys` keys until the fault phase ends, and no faults, loss,
    /// duplication or failing disk unless the scenario adds them.
    pub fn scenario(seed: u64, nodes: usize, keys: u32) -> Parameters {
        let mut parameters = Parameters::from_seed(seed);
        parameters.nodes = nodes;
        parameters.replicas = 3;
        parameters.read_quorum = 2;
        parameters.write_quorum = 2;
        parameters.clients = 4;
        parameters.operations_per_client = 100_000;
        parameters.keys = keys;
        parameters.think_time_max_ms = 40;
        parameters.workload = Workload::Mixed;
        parameters.network.loss = 0.0;
        parameters.network.duplication = 0.0;
        parameters.disk.failure = 0.0;
        parameters.faults = Faults::default();
        parameters
    }

    /// No repair at all: no hint delivery, read repair or anti-entropy exchange (what
    /// a scenario that promises convergence must be shown to catch).
    pub fn without_repair(&mut self) {
        self.sabotage.skip_repair = true;
        self.anti_entropy_exchanges_max = 0;
    }

    /// The node configuration for this run.
    pub fn node_config(&self, cluster_id: u64, members: Vec<Member>) -> Config {
        let mut config = Config::new(cluster_id, members);
        config.partition_bits = self.partition_bits;
        config.replicas = self.replicas;
        config.read_quorum_default = self.read_quorum;
        config.write_quorum_default = self.write_quorum;
        config.request_timeout_ms = 2_000;
        config.replica_timeout_ms = self.replica_timeout_ms;
        config.read_repair_window_ms = 100;
        config.probe_interval_initial_ms = 50;
        config.probe_interval_max_ms = 1_000;
        config.hint_interval_ms = 100;
        config.hint_backoff_max_ms = 1_000;
        config.requests_max = self.requests_max;
        config.sabotage = self.sabotage;
        config.anti_entropy_interval_ms = self.anti_entropy_interval_ms;
        config.anti_entropy_exchanges_max = self.anti_entropy_exchanges_max;
        config.tombstone_grace_ms = self.tombstone_grace_ms;
        config.reap_interval_ms = self.reap_interval_ms;
        config.hint_bytes_max = self.hint_bytes_max;
        config.sync_writes_default = self.sync_writes;
        config.full_read_one_in = self.full_read_one_in;
        config
    }
}
