//! The simulated cluster: K ringkv nodes in one thread, on a simulated network and
//! disks, driven by simulated clients under seeded faults (design.md section 9).
//!
//! One run: clients issue operations while faults come and go (crashes and restarts,
//! symmetric and one-way partitions, loss, duplication, reordering, slow and failing
//! disks); then faults stop, crashed nodes restart, the network heals, the cluster is
//! given time to deliver hints, every key is read once with R = N (read repair is the
//! repair until anti-entropy lands), and the checkers look at what every disk holds.
//!
//! Determinism: every choice comes from the run's seed through seeded generators, all
//! queues break ties by insertion order, and maps are ordered. The same seed replays
//! the same run, event for event.
//!
//! Clients speak RESP: each has one connection at a time to a node, whose
//! per-connection protocol state is the frontend's own [`Session`] (the code both
//! binaries run), so the simulator drives whole nodes the way a client library does.
//! A client step sends one request or a pipeline of several (a write and a read of the
//! same key, random mixes, or a MULTI ... EXEC that must apply nothing), writes with
//! contexts from its reads or with the tokens its writes returned, and reads the
//! replies back in order.
//!
//! Storage model: an operation completes after a seeded latency; a write or delete
//! takes effect at its completion, so a crash before completion loses it (and a read
//! never sees a durable write before its sync, as with ringkv-storage, whose index is
//! updated after the fsync). A buffered write (`SYNC one`, the paper's section 6.1)
//! takes effect at its completion too but is durable only once its space is synced:
//! every `sync_interval_ms` for all disks, or by a later durable write; a crash is a
//! power cut and undoes the buffered writes not synced yet (`disk::SimDisk`). A
//! failing disk fails writes.

use super::disk::{DiskConfig, SimDisk};
use super::history::{History, Operation, OperationKind, Outcome, WriteId};
use super::network::{Network, NetworkConfig};
use super::swarm::{MembershipChange, Parameters, Workload};
use ringkv_client::reply::{Reply, ReplyLimits};
use ringkv_core::node::{
    Action, ClientId, Completion, Config, Input, Node, NodeIdentity, Space, Stats, StorageOp,
};
use ringkv_core::placement::{Member, Ring};
use ringkv_core::resp::{AdminCommand, Command, RespLimits};
use ringkv_core::wire::{MemberStatus, decode_frame};
use ringkv_core::{Instant, NodeId, Rng, VersionSet, VersionVector};
use ringkv_frontend::session::{Session, SessionLimits, Step};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

/// The cluster id every simulated node shares.
pub const CLUSTER_ID: u64 = 0x5151_0001;
/// The client id of admin commands the harness sends itself.
const ADMIN_CLIENT: u64 = u64::MAX;

#[derive(Clone, Debug)]
enum Event {
    Storage {
        node: usize,
        boot: u32,
        job: StorageOp,
    },
    /// A scan read its page when it was issued (a real engine reads a scan's page when
    /// its thread takes it up, and answers later): writes that complete before the
    /// answer arrives are not in it.
    Scanned {
        node: usize,
        boot: u32,
        completion: Completion,
    },
    ClientStep {
        client: usize,
    },
    /// Request bytes a client wrote reach the node's session.
    ClientArrive {
        client: usize,
        connection: ClientId,
    },
    Fault,
    /// The shells' interval sync of buffered writes, on every disk.
    SyncDisks,
    Restart {
        node: usize,
    },
    HealPartition {
        generation: u64,
    },
    CalmNetwork {
        generation: u64,
    },
    DiskRecovers {
        node: usize,
    },
    LinkDown {
        node: usize,
        peer: NodeId,
        boot: u32,
    },
    Membership(MembershipChange),
}

#[derive(Debug)]
struct Scheduled(Instant, u64, Event);
impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl SimNode {
    /// A node just booted, with fresh disks seeded from `rng`.
    fn new(id: NodeId, node: Node, disk: DiskConfig, rng: &mut Rng) -> SimNode {
        SimNode {
            id,
            node: Some(node),
            disk: SimDisk::new(disk, [rng.next_u64(), rng.next_u64(), rng.next_u64()]),
            boot: 0,
            bounds: BTreeMap::new(),
            earlier_stats: Stats::default(),
            hints_refused_at: Vec::new(),
            hints_refused_seen: 0,
            left_at: None,
            disk_failing: false,
            destroyed: false,
        }
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// One simulated node: the state machine (None while crashed) and its disks.
#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub node: Option<Node>,
    /// Its data, hints and meta stores.
    pub disk: SimDisk,
    pub boot: u32,
    /// Bound peaks over every boot: (name, peak, max).
    pub bounds: BTreeMap<&'static str, (u64, u64)>,
    /// Counters of earlier boots (a crash loses the node's own).
    pub earlier_stats: Stats,
    pub disk_failing: bool,
    /// Lost for good (`MembershipChange::Destroy`): never restarted.
    pub destroyed: bool,
    /// When it refused hinted writes for lack of room in its hint store, and how many
    /// this boot had refused when last looked at.
    pub hints_refused_at: Vec<Instant>,
    hints_refused_seen: u64,
    /// When it marked itself `Left` (final: it serves no request from then on).
    pub left_at: Option<Instant>,
}

/// A simulated client: one connection at a time, one request or one pipeline of
/// requests in flight.
#[derive(Debug)]
struct Client {
    operations_left: u32,
    /// Operations sent and not answered yet (indices into the history), in the order
    /// their replies come back.
    in_flight: VecDeque<usize>,
    /// Per key, the context to write with next (as sent and parsed) and the writes
    /// its holder was shown: from the client's last VGET (its siblings) or the token
    /// its last VSET or VDEL returned (what that write's context showed, and the
    /// write itself).
    last_context: BTreeMap<Vec<u8>, (String, VersionVector, Vec<WriteId>)>,
    /// Read-modify-write: the key just read, to write next.
    pending_write: Option<Vec<u8>>,
    connection: Option<SimConnection>,
    /// Connections opened so far (the client id a node sees carries it).
    connections: u32,
    /// One way between the client and any node: requests arrive this much after they
    /// were sent, and the next step comes no sooner than a round trip after a reply,
    /// so every operation takes simulated time (as on a real network; a client that
    /// got instant answers at the same instant forever kept a run from ending).
    latency: Duration,
    rng: Rng,
}

/// A client's connection to a node: the node's per-connection protocol state and
/// the bytes in each direction.
#[derive(Debug)]
struct SimConnection {
    node: usize,
    boot: u32,
    /// The client id the node sees: client index, connection count in the high half.
    id: ClientId,
    session: Session,
    /// Request bytes the session has not taken yet.
    input: Vec<u8>,
    /// Reply bytes the client has not read yet.
    replies: Vec<u8>,
    /// The operation of each request sent, by tag (tags count from 0 per connection).
    sent: Vec<usize>,
}

/// Counters for reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub crashes: u64,
    pub partitions: u64,
    pub storage_failures: u64,
    /// Buffered writes that crashes (power cuts) took back.
    pub buffered_writes_lost: u64,
    pub decode_failures: u64,
    /// Client replies that were not RESP, or VGET contexts that did not parse.
    pub bad_replies: u64,
    /// Events the run handled: frames delivered, scheduled events, node timeouts.
    pub events: u64,
}

/// Every run is bounded: past this many events (a run's `events_max`, by default), or
/// this many client operations, it stops and fails its seed (property 5) instead of
/// running on or exhausting memory.
/// The longest of 400 fresh seeds took about 36,000 events and 3,200 operations.
pub const RUN_EVENTS_MAX: u64 = 2_000_000;
/// See [`RUN_EVENTS_MAX`].
pub const RUN_OPERATIONS_MAX: usize = 200_000;

/// The whole simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    pub parameters: Parameters,
    pub now: Instant,
    rng: Rng,
    pub nodes: Vec<SimNode>,
    pub network: Network<Vec<u8>>,
    clients: Vec<Client>,
    events: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
    pub history: History,
    next_write_id: WriteId,
    /// Bumped on every fault change (crash, restart, partition, heal, loss, disk);
    /// `epochs[fault_epoch]` describes the current one.
    pub fault_epoch: u64,
    network_config: NetworkConfig,
    faults_on: bool,
    partition_generation: u64,
    network_generation: u64,
    pub ring: Ring,
    pub config: Config,
    pub stats: RunStats,
    /// Directed links a partition blocks, by node index.
    blocked: Vec<(usize, usize)>,
    /// The fault state of every epoch, for the availability check.
    pub epochs: Vec<EpochState>,
    /// Network counters and operations issued when the workload phase ended (before
    /// healing, hint delivery and the read sweep), for reports.
    pub workload_network: super::network::NetworkStats,
    pub workload_operations: usize,
    /// Clients keep issuing operations until then, budget or not (the calm tail).
    calm_until: Instant,
    /// With membership changes planned: every stretch of time in which the running
    /// nodes' views disagreed (membership digests without heartbeats), as (from, the
    /// last change a node made to its own entry before the end, to).
    pub view_disagreements: Vec<(Instant, Instant, Instant)>,
    views_disagree_since: Option<Instant>,
    /// When some node's belief that a member is up or down changed, or a node stopped
    /// or started: property 7 judges only reads whose nodes' beliefs stood still since
    /// their write began (a pipelined read runs after its write, on beliefs that may
    /// have changed since both were sent).
    pub belief_changes: Vec<Instant>,
    /// Each node's current beliefs, one bit per member (`None` while down).
    beliefs: Vec<Option<u64>>,
    /// Every running node's own (version, status), and when one last changed.
    own_entries: Vec<Option<(u64, ringkv_core::wire::MemberStatus)>>,
    own_entry_changed_at: Instant,
    membership_changed_at: Instant,
    /// Node replies to clients, handed to their sessions once the node's actions are
    /// drained: (client id, tag, bytes, close).
    replies_due: VecDeque<(ClientId, u64, Vec<u8>, bool)>,
    /// Client work in progress (nested calls hand replies to the outermost).
    client_work_depth: u32,
}

/// The fault state during one fault epoch.
#[derive(Clone, Debug)]
pub struct EpochState {
    pub started: Instant,
    pub up: Vec<bool>,
    pub blocked: Vec<(usize, usize)>,
    pub lossy: bool,
    pub failing_disks: Vec<bool>,
    /// When a node last joined or was told to leave (`Instant::ZERO`: never).
    pub membership_changed_at: Instant,
}

impl Cluster {
    /// A cluster for `parameters`, every node up.
    pub fn new(parameters: Parameters) -> Cluster {
        Cluster::with_sessions(parameters)
    }

    fn with_sessions(parameters: Parameters) -> Cluster {
        let mut rng = Rng::new(parameters.seed);
        let members: Vec<Member> = (0..parameters.nodes)
            .map(|index| Member::equal(NodeId(index as u64 + 1)))
            .collect();
        let mut config = parameters.node_config(CLUSTER_ID, members.clone());
        if !parameters.membership_changes.is_empty() {
            // Joiners, and joined nodes restarting, come in through the first three.
            config.seeds = (1..=3)
                .map(|id| sim_address(NodeId(id)).into_bytes())
                .collect();
        }
        let ring = Ring::new(
            &members,
            config.partition_bits,
            usize::from(config.replicas),
        )
        // The same members and N that `boot` validates: an invalid set is a bug in the
        // test that shaped the parameters, and panics before any run starts.
        .expect("parameters give 1 <= N <= nodes");
        let now = Instant::from_millis(1_000);
        let nodes = (0..parameters.nodes)
            .map(|index| {
                let id = NodeId(index as u64 + 1);
                let node = boot(&config, id, rng.next_u64(), now);
                SimNode::new(id, node, parameters.disk, &mut rng)
            })
            .collect();
        let network = Network::new(parameters.network, rng.next_u64());
        let clients = (0..parameters.clients)
            .map(|_| {
                let mut client_rng = Rng::new(rng.next_u64());
                Client {
                    operations_left: parameters.operations_per_client,
                    in_flight: VecDeque::new(),
                    last_context: BTreeMap::new(),
                    pending_write: None,
                    connection: None,
                    connections: 0,
                    latency: Duration::from_micros({
                        let range = &parameters.client_latency_us;
                        let spread = range.end.saturating_sub(range.start);
                        if spread == 0 {
                            0
                        } else {
                            range.start + client_rng.below(spread)
                        }
                    }),
                    rng: client_rng,
                }
            })
            .collect();
        let mut cluster = Cluster {
            now,
            rng,
            nodes,
            network,
            clients,
            events: BinaryHeap::new(),
            sequence: 0,
            history: History::default(),
            next_write_id: 1,
            fault_epoch: 0,
            network_config: parameters.network,
            faults_on: false,
            partition_generation: 0,
            network_generation: 0,
            ring,
            config,
            stats: RunStats::default(),
            blocked: Vec::new(),
            epochs: Vec::new(),
            workload_network: Default::default(),
            workload_operations: 0,
            calm_until: Instant::ZERO,
            view_disagreements: Vec::new(),
            belief_changes: Vec::new(),
            beliefs: Vec::new(),
            views_disagree_since: None,
            own_entries: Vec::new(),
            own_entry_changed_at: Instant::ZERO,
            membership_changed_at: Instant::ZERO,
            replies_due: VecDeque::new(),
            client_work_depth: 0,
            parameters,
        };
        cluster.record_epoch();
        for index in 0..cluster.nodes.len() {
            cluster.drain(index);
        }
        cluster
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.sequence += 1;
        self.events
            .push(Reverse(Scheduled(at, self.sequence, event)));
    }

    fn record_epoch(&mut self) {
        self.epochs.push(EpochState {
            started: self.now,
            up: self.nodes.iter().map(|n| n.node.is_some()).collect(),
            blocked: self.blocked.clone(),
            lossy: self.network_lossy(),
            failing_disks: self.nodes.iter().map(|n| n.disk_failing).collect(),
            membership_changed_at: self.membership_changed_at,
        });
    }

    fn network_lossy(&self) -> bool {
        self.network_config.loss > 0.0
    }

    fn fault_changed(&mut self) {
        self.fault_epoch += 1;
        self.record_epoch();
    }

    /// Runs the whole scenario: workload under faults, heal, quiesce, read sweep.
    pub fn run(&mut self) {
        let start = self.now;
        self.faults_on = true;
        for index in 0..self.parameters.down_from_start.min(self.nodes.len()) {
            self.crash(index);
        }
        for client in 0..self.clients.len() {
            let delay = self.clients[client].rng.below(50);
            self.schedule(
                start + Duration::from_millis(delay),
                Event::ClientStep { client },
            );
        }
        if self.parameters.faults.any() {
            let first = self.fault_delay();
            self.schedule(start + first, Event::Fault);
        }
        let interval = Duration::from_millis(self.parameters.sync_interval_ms);
        self.schedule(start + interval, Event::SyncDisks);
        for (at_ms, change) in self.parameters.membership_changes.clone() {
            self.schedule(
                start + Duration::from_millis(at_ms),
                Event::Membership(change),
            );
        }
        let fault_end = start + Duration::from_millis(self.parameters.fault_phase_ms);
        self.run_until(fault_end, |_| false);
        self.workload_network = self.network.stats();
        self.workload_operations = self.history.operations.len();
        self.stop_faults();
        // A calm tail: clients keep working with every fault gone, so the availability
        // checker has writes to judge (it needs `request_timeout_ms` without a fault
        // change before a write).
        if self.parameters.calm_phase_ms > 0 {
            self.calm_until = self.now + Duration::from_millis(self.parameters.calm_phase_ms);
            for client in 0..self.clients.len() {
                if self.clients[client].in_flight.is_empty() {
                    self.schedule(self.now, Event::ClientStep { client });
                }
            }
            let calm_until = self.calm_until;
            self.run_until(calm_until, |_| false);
            for client in &mut self.clients {
                client.operations_left = 0;
            }
        }
        // Let clients finish what they started and hints reach their owners.
        let quiet_limit = self.now + Duration::from_millis(120_000);
        self.run_until(quiet_limit, |cluster| cluster.is_quiet());
        if self.parameters.read_sweep {
            self.read_sweep();
            let sweep_limit = self.now + Duration::from_millis(30_000);
            self.run_until(sweep_limit, |cluster| cluster.is_quiet());
        }
        // Read repair goes out after the repair window; let it land.
        let settle = self.now + Duration::from_millis(self.config.read_repair_window_ms + 5_000);
        self.run_until(settle, |_| false);
        if self.parameters.entropy_phase_ms > 0 {
            let entropy_end = self.now + Duration::from_millis(self.parameters.entropy_phase_ms);
            self.run_until(entropy_end, |_| false);
        }
        if !self.parameters.membership_changes.is_empty() {
            // The checkers judge replicas by the placement the cluster ended with (the
            // test checks that every view agrees on it).
            if let Some(node) = self.nodes[0].node.as_ref() {
                self.ring = node.ring().clone();
            }
        }
    }

    /// Starts a new node that joins through node 1; returns its index.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let id = NodeId(index as u64 + 1);
        let node = boot(&self.config, id, self.rng.next_u64(), self.now);
        let sim = SimNode::new(id, node, self.parameters.disk, &mut self.rng);
        self.nodes.push(sim);
        self.membership_changed_at = self.now;
        self.fault_changed();
        self.drain(index);
        index
    }

    /// Tells node `index` to leave (its reply goes to no client).
    pub fn leave(&mut self, index: usize) {
        self.admin(index, AdminCommand::Leave);
    }

    /// Node `index` is lost for good: crashed, its disks replaced by empty ones, and
    /// never restarted (a restart already scheduled finds it destroyed).
    pub fn destroy(&mut self, index: usize) {
        if self.nodes[index].node.is_some() {
            self.crash(index);
        }
        let seeds = [
            self.rng.next_u64(),
            self.rng.next_u64(),
            self.rng.next_u64(),
        ];
        let sim = &mut self.nodes[index];
        sim.disk = SimDisk::new(self.parameters.disk, seeds);
        sim.destroyed = true;
        self.membership_changed_at = self.now;
        self.fault_changed();
    }

    /// An operator's admin command to node `index` (its reply goes to no client).
    fn admin(&mut self, index: usize, command: AdminCommand<'_>) {
        let command = Command::Admin(command);
        self.with_node(index, |node, now| {
            node.handle(
                now,
                Input::Client {
                    client: ClientId(ADMIN_CLIENT),
                    tag: 0,
                    timestamp_ms: 0,
                    command,
                },
            )
        });
        self.membership_changed_at = self.now;
        self.fault_changed();
    }

    /// True when no client operation, request, storage operation, hint or message is
    /// outstanding and every node believes every other node is up. (Storage matters: a
    /// node that just restarted is still listing the hints on its disk.)
    pub fn is_quiet(&self) -> bool {
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| !n.destroyed)
            .map(|n| n.id)
            .collect();
        self.clients
            .iter()
            .all(|c| c.in_flight.is_empty() && c.operations_left == 0)
            && self.network.in_flight() == 0
            && self.nodes.iter().all(|n| {
                n.node.as_ref().is_none_or(|node| {
                    node.hints_held() == 0
                        && node.requests_in_flight() == 0
                        && node.storage_operations_in_flight() == 0
                        && ids.iter().all(|&peer| node.believes_up(peer))
                })
            })
    }

    fn fault_delay(&mut self) -> Duration {
        let mean = self.parameters.faults.mean_interval_ms.max(1);
        Duration::from_millis(mean / 2 + self.rng.below(mean))
    }

    /// True once the run passed its `events_max` or [`RUN_OPERATIONS_MAX`]: it
    /// stops there, and `bounds_hold` fails the seed.
    pub fn over_bounds(&self) -> bool {
        self.stats.events > self.parameters.events_max
            || self.history.operations.len() > RUN_OPERATIONS_MAX
    }

    /// Processes events until `end`, or until `done` holds, or the run is over its
    /// bounds.
    pub fn run_until(&mut self, end: Instant, done: impl Fn(&Cluster) -> bool) {
        loop {
            if done(self) || self.over_bounds() {
                return;
            }
            let next = [
                self.network.next_delivery(),
                self.events.peek().map(|Reverse(Scheduled(at, _, _))| *at),
                self.nodes
                    .iter()
                    .filter_map(|n| n.node.as_ref().and_then(Node::poll_timeout))
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&next| next <= end) else {
                self.now = self.now.max(end);
                return;
            };
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some((from, to, frame)) = self.network.deliver_due(now) {
            self.stats.events += 1;
            self.deliver_frame(from, to, &frame);
        }
        while let Some(Reverse(Scheduled(at, _, _))) = self.events.peek() {
            if *at > now || self.over_bounds() {
                break;
            }
            let Some(Reverse(Scheduled(_, _, event))) = self.events.pop() else {
                break;
            };
            self.stats.events += 1;
            self.handle_event(event);
        }
        for index in 0..self.nodes.len() {
            let due = self.nodes[index]
                .node
                .as_ref()
                .and_then(Node::poll_timeout)
                .is_some_and(|at| at <= now);
            if due {
                self.with_node(index, |node, now| node.handle(now, Input::Timeout));
            }
        }
        if !self.parameters.membership_changes.is_empty() {
            self.track_views();
        }
        self.track_beliefs();
    }

    fn track_beliefs(&mut self) {
        let mut changed = self.beliefs.len() != self.nodes.len();
        self.beliefs.resize(self.nodes.len(), None);
        for (index, sim) in self.nodes.iter().enumerate() {
            let beliefs = sim.node.as_ref().map(|view| {
                self.nodes
                    .iter()
                    .take(64)
                    .enumerate()
                    .filter(|(_, member)| view.believes_up(member.id))
                    .fold(0u64, |bits, (bit, _)| bits | 1 << bit)
            });
            if self.beliefs[index] != beliefs {
                self.beliefs[index] = beliefs;
                changed = true;
            }
        }
        if changed {
            self.belief_changes.push(self.now);
        }
    }

    fn track_views(&mut self) {
        let own: Vec<Option<(u64, ringkv_core::wire::MemberStatus)>> = self
            .nodes
            .iter()
            .map(|sim| {
                let local = sim.node.as_ref()?.membership().local();
                Some((local.version, local.status))
            })
            .collect();
        if own != self.own_entries {
            self.own_entries = own;
            self.own_entry_changed_at = self.now;
        }
        let mut digests = self
            .nodes
            .iter()
            .filter_map(|sim| sim.node.as_ref())
            .map(|node| node.membership().view_digest());
        let first = digests.next();
        let agree = digests.all(|digest| Some(digest) == first);
        match (agree, self.views_disagree_since) {
            (false, None) => self.views_disagree_since = Some(self.now),
            (true, Some(since)) => {
                let origin = self.own_entry_changed_at.max(since);
                self.view_disagreements.push((since, origin, self.now));
                self.views_disagree_since = None;
            }
            _ => {}
        }
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        (index < self.nodes.len()).then_some(index)
    }

    fn deliver_frame(&mut self, from: NodeId, to: NodeId, frame: &[u8]) {
        let Some(index) = self.index_of(to) else {
            return;
        };
        let Some(node) = self.nodes[index].node.as_mut() else {
            return;
        };
        match decode_frame(frame, CLUSTER_ID, node.wire_limits()) {
            Ok((message, _)) => {
                node.handle(self.now, Input::Peer { from, message });
                self.drain(index);
            }
            Err(_) => self.stats.decode_failures += 1,
        }
    }

    fn with_node(&mut self, index: usize, apply: impl FnOnce(&mut Node, Instant)) {
        let now = self.now;
        if let Some(node) = self.nodes[index].node.as_mut() {
            apply(node, now);
            self.drain(index);
        }
    }

    /// Performs every action node `index` has queued.
    fn drain(&mut self, index: usize) {
        let now = self.now;
        let boot = self.nodes[index].boot;
        let from = self.nodes[index].id;
        loop {
            let latency = self.nodes[index].disk.latency();
            let Some(node) = self.nodes[index].node.as_mut() else {
                return;
            };
            let Some(action) = node.poll_action() else {
                break;
            };
            match action {
                Action::Send { to, frame } => {
                    let frame = frame.to_vec();
                    self.network.send(now, from, to, frame);
                }
                Action::Reply {
                    client,
                    tag,
                    bytes,
                    close,
                } => {
                    if client.0 != ADMIN_CLIENT {
                        self.replies_due
                            .push_back((client, tag, bytes.to_vec(), close));
                    }
                }
                Action::Storage(op) => {
                    let job = op.owned();
                    let event = if matches!(job, StorageOp::Scan { .. }) {
                        Event::Scanned {
                            node: index,
                            boot,
                            completion: self.nodes[index].disk.perform(&job),
                        }
                    } else {
                        Event::Storage {
                            node: index,
                            boot,
                            job,
                        }
                    };
                    self.schedule(now + latency, event);
                }
                Action::Connect { .. } => {}
                Action::Introduce { address, frame } => {
                    if let Some(to) = sim_address_node(address) {
                        let frame = frame.to_vec();
                        self.network.send(now, from, to, frame);
                    }
                }
            }
        }
        if let Some(node) = self.nodes[index].node.as_ref() {
            let refused = node.hints_refused();
            let left = node.membership().local().status == MemberStatus::Left;
            for bound in node.bounds() {
                let entry = self.nodes[index]
                    .bounds
                    .entry(bound.name)
                    .or_insert((0, bound.max));
                entry.0 = entry.0.max(bound.peak);
            }
            let sim = &mut self.nodes[index];
            if left && sim.left_at.is_none() {
                sim.left_at = Some(now);
            }
            if refused > sim.hints_refused_seen {
                sim.hints_refused_seen = refused;
                sim.hints_refused_at.push(now);
            }
        }
        if self.client_work_depth == 0 {
            self.deliver_replies();
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Storage { node, boot, job } => self.complete_storage(node, boot, job),
            Event::Scanned {
                node,
                boot,
                completion,
            } => self.deliver_scan(node, boot, completion),
            Event::ClientStep { client } => self.client_step(client),
            Event::ClientArrive { client, connection } => {
                let current = self.clients[client]
                    .connection
                    .as_ref()
                    .is_some_and(|c| c.id == connection);
                if current {
                    self.pump(client);
                }
            }
            Event::Fault => self.inject_fault(),
            Event::Restart { node } => self.restart(node),
            Event::SyncDisks => {
                for sim in &mut self.nodes {
                    sim.disk.sync();
                }
                let interval = Duration::from_millis(self.parameters.sync_interval_ms);
                self.schedule(self.now + interval, Event::SyncDisks);
            }
            Event::HealPartition { generation } => {
                if generation == self.partition_generation {
                    self.network.heal();
                    self.blocked.clear();
                    self.fault_changed();
                }
            }
            Event::CalmNetwork { generation } => {
                if generation == self.network_generation {
                    self.set_network(self.parameters.network);
                }
            }
            Event::DiskRecovers { node } => {
                self.nodes[node].disk_failing = false;
                self.nodes[node].disk.set_failing(false);
                self.fault_changed();
            }
            Event::Membership(MembershipChange::Join) => {
                self.add_node();
            }
            Event::Membership(MembershipChange::Leave(index)) => {
                // Like an operator's script: (re)issue the leave until the node says it
                // is leaving (a crash before its status spread, or while it was down,
                // loses the command: the view is not persisted), then until it is gone.
                let Some(sim) = self.nodes.get(index) else {
                    return;
                };
                let status = sim.node.as_ref().map(|n| n.membership().local().status);
                match status {
                    Some(MemberStatus::Left) => return,
                    Some(MemberStatus::Leaving) => {}
                    Some(_) => self.leave(index),
                    None => {}
                }
                self.schedule(
                    self.now + Duration::from_millis(1_000),
                    Event::Membership(MembershipChange::Leave(index)),
                );
            }
            Event::Membership(MembershipChange::Destroy(index)) => self.destroy(index),
            Event::Membership(MembershipChange::Remove(index)) => {
                let Some(removed) = self.nodes.get(index).map(|sim| sim.id) else {
                    return;
                };
                let Some(operator) = (0..self.nodes.len()).find(|&i| {
                    i != index && !self.nodes[i].destroyed && self.nodes[i].node.is_some()
                }) else {
                    return;
                };
                let status = self.nodes[operator]
                    .node
                    .as_ref()
                    .and_then(|n| n.membership().get(removed).map(|m| m.status));
                if status == Some(MemberStatus::Left) {
                    return;
                }
                self.admin(operator, AdminCommand::Remove { id: removed.0 });
                self.schedule(
                    self.now + Duration::from_millis(1_000),
                    Event::Membership(MembershipChange::Remove(index)),
                );
            }
            Event::LinkDown { node, peer, boot } => {
                if self.nodes[node].boot == boot {
                    self.with_node(node, |n, now| n.handle(now, Input::PeerDown { peer }));
                }
            }
        }
    }

    fn complete_storage(&mut self, index: usize, boot: u32, job: StorageOp) {
        if self.nodes[index].boot != boot || self.nodes[index].node.is_none() {
            return; // lost with the crash
        }
        let now = self.now;
        let completion = self.nodes[index].disk.perform(&job);
        match (&job, &completion) {
            (
                StorageOp::Write {
                    space, key, record, ..
                },
                Completion::Written { result: Ok(()), .. },
            ) => self.observe_write(*space, key, record),
            (
                StorageOp::Delete {
                    space: Space::Data,
                    key,
                    ..
                },
                Completion::Written { result: Ok(()), .. },
            ) => {
                self.history.removed.insert(key.clone());
            }
            (StorageOp::Write { .. }, Completion::Written { result: Err(_), .. }) => {
                self.stats.storage_failures += 1
            }
            _ => {}
        }
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.handle(now, Input::Storage(completion));
        }
        self.drain(index);
    }

    fn deliver_scan(&mut self, index: usize, boot: u32, completion: Completion) {
        if self.nodes[index].boot != boot {
            return; // lost with the crash
        }
        let now = self.now;
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.handle(now, Input::Storage(completion));
        }
        self.drain(index);
    }

    /// What the history learns from a durable write: the versions a record holds,
    /// and when a write first went to a stand-in as a hint.
    fn observe_write(&mut self, space: Space, key: &[u8], record: &[u8]) {
        let Ok(versions) =
            VersionSet::decode(record, ringkv_core::version::VersionBounds::default())
        else {
            return;
        };
        let user_key = match space {
            Space::Data => Some(key),
            Space::Hints => key.get(8..),
            Space::Meta => None,
        };
        if let Some(user_key) = user_key {
            self.history.observe_stored(user_key, &versions);
        }
        if space == Space::Hints {
            for sibling in versions.siblings() {
                self.history
                    .hinted_at
                    .entry(crate::sim::history::write_id_of(sibling.value))
                    .or_insert(self.now);
            }
        }
    }

    // ---- clients ----------------------------------------------------------------------

    fn client_step(&mut self, client: usize) {
        if !self.clients[client].in_flight.is_empty() {
            return;
        }
        let calm = self.now < self.calm_until;
        if !calm && (self.clients[client].operations_left == 0 || !self.faults_on) {
            self.clients[client].operations_left = 0;
            return;
        }
        self.clients[client].operations_left =
            self.clients[client].operations_left.saturating_sub(1);
        let parameters = &self.parameters;
        let keys = u64::from(parameters.keys.max(1));
        let replicas = u64::from(parameters.replicas);
        let workload = parameters.workload;
        let nodes = self.nodes.len() as u64;
        let rng = &mut self.clients[client].rng;
        let node = rng.below(nodes) as usize;
        let random_key = |rng: &mut Rng| format!("key-{}", rng.below(keys)).into_bytes();
        let quorum = |rng: &mut Rng| {
            (workload == Workload::Mixed && rng.chance(0.2)).then(|| 1 + rng.below(replicas) as u8)
        };
        let mixed_kind = |rng: &mut Rng| match rng.below(100) {
            0..30 => OperationKind::VGet,
            30..55 => OperationKind::VSet,
            55..70 => OperationKind::Set,
            70..80 => OperationKind::Get,
            80..90 => OperationKind::Del,
            _ => OperationKind::VDel,
        };
        // (kind, key, quorum, in a transaction) per request, sent as one pipeline.
        let mut requests: Vec<(OperationKind, Vec<u8>, Option<u8>, bool)> = Vec::new();
        match workload {
            Workload::Mixed => match rng.below(100) {
                // A write and then a read of the same key, pipelined: the read must
                // observe the write (checker 7).
                0..12 => {
                    let key = random_key(rng);
                    let write = if rng.chance(0.5) {
                        OperationKind::Set
                    } else {
                        OperationKind::VSet
                    };
                    let read = if rng.chance(0.5) {
                        OperationKind::VGet
                    } else {
                        OperationKind::Get
                    };
                    requests.push((write, key.clone(), quorum(rng), false));
                    requests.push((read, key, quorum(rng), false));
                }
                // A pipeline of random requests.
                12..25 => {
                    for _ in 0..2 + rng.below(3) {
                        let (kind, key) = (mixed_kind(rng), random_key(rng));
                        requests.push((kind, key, quorum(rng), false));
                    }
                }
                // A transaction, as redis-py's default pipeline sends it: nothing in
                // it may be applied.
                25..29 => {
                    requests.push((OperationKind::Multi, Vec::new(), None, false));
                    for _ in 0..1 + rng.below(2) {
                        let kind = if rng.chance(0.5) {
                            OperationKind::Set
                        } else {
                            OperationKind::VSet
                        };
                        requests.push((kind, random_key(rng), None, true));
                    }
                    requests.push((OperationKind::Exec, Vec::new(), None, false));
                }
                _ => {
                    let (kind, key) = (mixed_kind(rng), random_key(rng));
                    requests.push((kind, key, quorum(rng), false));
                }
            },
            Workload::GetsOnly => requests.push((OperationKind::Get, random_key(rng), None, false)),
            Workload::SetsOnly => requests.push((OperationKind::Set, random_key(rng), None, false)),
            Workload::ReadModifyWrite => match self.clients[client].pending_write.take() {
                Some(read_key) => requests.push((OperationKind::VSet, read_key, None, false)),
                None => {
                    let key = random_key(&mut self.clients[client].rng);
                    self.clients[client].pending_write = Some(key.clone());
                    requests.push((OperationKind::VGet, key, None, false));
                }
            },
        }
        self.client_work_depth += 1;
        for (kind, key, quorum, in_transaction) in requests {
            self.send_request(client, node, kind, key, quorum, in_transaction);
        }
        self.client_work_depth -= 1;
        self.arrive_later(client);
        if self.client_work_depth == 0 {
            self.deliver_replies();
        }
    }

    /// The bytes just written on the client's connection reach the node one latency
    /// later.
    fn arrive_later(&mut self, client: usize) {
        let Some(connection) = self.clients[client].connection.as_ref() else {
            return;
        };
        let (id, at) = (connection.id, self.now + self.clients[client].latency);
        self.schedule(
            at,
            Event::ClientArrive {
                client,
                connection: id,
            },
        );
    }

    /// Sends one client operation to node `node` and records it.
    pub fn issue(
        &mut self,
        client: usize,
        node: usize,
        kind: OperationKind,
        key: Vec<u8>,
        quorum: Option<u8>,
    ) {
        self.send_request(client, node, kind, key, quorum, false);
        self.arrive_later(client);
    }

    /// The client's connection to `node`, opened (and any other closed) when needed;
    /// `None` while the node is down (the connection is refused).
    fn connect(&mut self, client: usize, node: usize) -> Option<&mut SimConnection> {
        let boot = self.nodes[node].boot;
        let current = self.clients[client]
            .connection
            .as_ref()
            .is_some_and(|c| c.node == node && c.boot == boot);
        if !current {
            self.close_connection(client);
            self.nodes[node].node.as_ref()?;
            let state = &mut self.clients[client];
            state.connections += 1;
            let id = ClientId(client as u64 | (u64::from(state.connections) << 32));
            state.connection = Some(SimConnection {
                node,
                boot,
                id,
                session: Session::new(id.0, true),
                input: Vec::new(),
                replies: Vec::new(),
                sent: Vec::new(),
            });
            if self.parameters.unordered_sessions {
                if let Some(connection) = self.clients[client].connection.as_mut() {
                    connection.session.sabotage_unordered();
                }
            }
        }
        self.clients[client].connection.as_mut()
    }

    /// Records one request and writes it on the client's connection to `node` (the
    /// session takes it in [`Cluster::pump`]).
    fn send_request(
        &mut self,
        client: usize,
        node: usize,
        kind: OperationKind,
        key: Vec<u8>,
        quorum: Option<u8>,
        in_transaction: bool,
    ) {
        let write_id = kind.is_write().then(|| {
            self.next_write_id += 1;
            self.next_write_id
        });
        let (context_token, context_vector, context_siblings) = match kind {
            OperationKind::VSet | OperationKind::VDel => {
                let known = self.clients[client].last_context.get(&key).cloned();
                // Now and then a blind write, with the empty context.
                match known {
                    Some(known) if !self.clients[client].rng.chance(0.1) => known,
                    _ => Default::default(),
                }
            }
            _ => (String::new(), VersionVector::new(), Vec::new()),
        };
        let context = kind.has_context().then_some(context_vector);
        if let (Some(id), Some(context)) = (write_id, &context) {
            if !in_transaction {
                self.history.record_context(id, context);
            }
        }
        let mut value = Vec::new();
        if let Some(id) = write_id {
            value.extend_from_slice(&id.to_le_bytes());
            let filler = self.clients[client].rng.below(32) as usize;
            value.resize(8 + filler, b'.');
        }
        let index = self.history.operations.len();
        let write_quorum = match kind {
            OperationKind::VSet | OperationKind::VDel => {
                quorum.unwrap_or(self.config.write_quorum_default)
            }
            // DEL and SET carry no W: the node uses its default.
            _ => self.config.write_quorum_default,
        };
        // Every running node's view, not only the coordinator's: a forwarded write is
        // minted, and its stand-ins chosen, by a replica.
        let partition = self.ring.partition_of(&key);
        let replicas_believed_up = self.nodes[node].node.is_some()
            && self
                .nodes
                .iter()
                .filter_map(|n| n.node.as_ref())
                .all(|view| {
                    self.ring
                        .preference_list(partition)
                        .all(|replica| view.believes_up(replica))
                });
        let read_quorum = match kind {
            OperationKind::VGet => quorum.unwrap_or(self.config.read_quorum_default),
            OperationKind::Get => self.config.read_quorum_default,
            _ => 0,
        };
        let connection = self.connect(client, node).map(|c| {
            encode_request(&mut c.input, kind, &key, &value, &context_token, quorum);
            c.sent.push(index);
            (c.id.0, c.sent.len() as u32 - 1)
        });
        let (connection_id, position) = connection.unwrap_or((0, 0));
        self.history.operations.push(Operation {
            client,
            node,
            kind,
            key,
            write_id,
            write_quorum,
            read_quorum,
            context,
            context_siblings,
            read_values: Vec::new(),
            start: self.now,
            end: None,
            outcome: Outcome::Pending,
            start_epoch: self.fault_epoch,
            end_epoch: self.fault_epoch,
            connection: connection_id,
            position,
            in_transaction,
            replicas_believed_up,
        });
        self.clients[client].in_flight.push_back(index);
        if connection.is_none() {
            // Connection refused: the client tries again later.
            self.client_reply(client, None);
        }
    }

    /// Lets the client's session take what it can of the bytes sent: each request it
    /// lets run goes to the node, each it answers itself goes back to the client.
    fn pump(&mut self, client: usize) {
        self.client_work_depth += 1;
        let limits = SessionLimits {
            resp: RespLimits::default(),
            read_buffer_bytes_max: RespLimits::default().bulk_size_bytes_max + (64 << 10),
            value_size_bytes_max: self.config.value_size_bytes_max,
            password: None,
        };
        let mut reply = Vec::new();
        while let Some(connection) = self.clients[client].connection.as_mut() {
            let mut input = std::mem::take(&mut connection.input);
            let (used, step) = connection
                .session
                .next(&input, self.now, limits, &mut reply);
            let (node, id) = (connection.node, connection.id);
            let (answered, refused) = match &step {
                Step::Replied { tag } => (Some(*tag), false),
                Step::Refused { tag } => (Some(*tag), true),
                _ => (None, false),
            };
            if let Some(tag) = answered {
                let replies = &mut connection.replies;
                connection
                    .session
                    .finish(tag, &reply, refused, |out| replies.extend_from_slice(out));
            }
            // `{ step }` moves the step (and the input it borrows) into the match, so
            // it is gone before the input is trimmed.
            #[allow(clippy::blocks_in_conditions)]
            let done = match { step } {
                Step::Wait => true,
                Step::Replied { .. } | Step::Refused { .. } => false,
                Step::Run { tag, command } => {
                    let timestamp_ms = connection
                        .sent
                        .get(tag as usize)
                        .and_then(|&op| self.history.operations[op].write_id)
                        .unwrap_or(0);
                    self.with_node(node, |n, now| {
                        n.handle(
                            now,
                            Input::Client {
                                client: id,
                                tag,
                                timestamp_ms,
                                command,
                            },
                        )
                    });
                    false
                }
            };
            input.drain(..used);
            if let Some(connection) = self.clients[client].connection.as_mut() {
                connection.input = input;
            }
            self.read_replies(client);
            if refused {
                self.close_connection(client);
            }
            if done {
                break;
            }
        }
        self.client_work_depth -= 1;
        if self.client_work_depth == 0 {
            self.deliver_replies();
        }
    }

    /// Hands node replies to their connections' sessions, in the order they came.
    fn deliver_replies(&mut self) {
        self.client_work_depth += 1;
        while let Some((id, tag, bytes, close)) = self.replies_due.pop_front() {
            let client = (id.0 & 0xffff_ffff) as usize;
            let Some(connection) = self
                .clients
                .get_mut(client)
                .and_then(|c| c.connection.as_mut())
                .filter(|c| c.id == id)
            else {
                continue; // a connection closed meanwhile
            };
            let replies = &mut connection.replies;
            let finished = connection
                .session
                .finish(tag, &bytes, close, |out| replies.extend_from_slice(out));
            self.read_replies(client);
            match finished {
                Some(finished) if finished.closing => self.close_connection(client),
                Some(finished) if finished.resume => self.pump(client),
                Some(_) => {}
                // A reply for a tag the session is not waiting for: a node bug.
                None => self.stats.bad_replies += 1,
            }
        }
        self.client_work_depth -= 1;
    }

    /// Reads the whole replies that arrived, in request order.
    fn read_replies(&mut self, client: usize) {
        loop {
            let Some(connection) = self.clients[client].connection.as_mut() else {
                return;
            };
            let parsed =
                ringkv_client::reply::parse_reply(&connection.replies, ReplyLimits::default());
            match parsed {
                Ok(Some((reply, used))) => {
                    connection.replies.drain(..used);
                    self.client_reply(client, Some(reply));
                }
                Ok(None) => return,
                Err(_) => {
                    self.stats.bad_replies += 1; // a node wrote broken RESP
                    connection.replies.clear();
                    return self.close_connection(client);
                }
            }
        }
    }

    /// Closes the client's connection: what it still waits for has an unknown outcome.
    fn close_connection(&mut self, client: usize) {
        if self.clients[client].connection.take().is_none() {
            return;
        }
        while !self.clients[client].in_flight.is_empty() {
            self.client_reply(client, None);
        }
    }

    /// The reply to the client's oldest request in flight (`None`: the connection
    /// died first).
    fn client_reply(&mut self, client: usize, reply: Option<Reply>) {
        let Some(index) = self.clients[client].in_flight.pop_front() else {
            self.stats.bad_replies += 1; // a reply nobody asked for
            return;
        };
        let operation = &mut self.history.operations[index];
        operation.end = Some(self.now);
        operation.end_epoch = self.fault_epoch;
        operation.outcome = match &reply {
            None => Outcome::Unknown,
            Some(Reply::Error(text)) => Outcome::Failed(text.clone()),
            Some(_) => Outcome::Ok,
        };
        // The context to write with next: a VGET's, naming its siblings; or the token
        // a VSET or VDEL returned, naming what that write's context showed and the
        // write itself.
        let mut next_context: Option<(Vec<u8>, Vec<WriteId>)> = None;
        match (operation.kind, reply) {
            (OperationKind::VGet, Some(Reply::Array(Some(items)))) => {
                if let [Reply::Bulk(Some(token)), Reply::Array(Some(values))] = items.as_slice() {
                    let ids: Vec<WriteId> = values
                        .iter()
                        .filter_map(|v| match v {
                            Reply::Bulk(Some(data)) => Some(value_id(data)),
                            _ => None,
                        })
                        .collect();
                    operation.read_values = ids.clone();
                    next_context = Some((token.clone(), ids));
                }
            }
            (OperationKind::VSet | OperationKind::VDel, Some(Reply::Bulk(Some(token)))) => {
                let mut seen = operation.context_siblings.clone();
                seen.extend(operation.write_id);
                next_context = Some((token, seen));
            }
            (OperationKind::Get, Some(Reply::Bulk(Some(data)))) => {
                operation.read_values = vec![value_id(&data)];
            }
            _ => {}
        }
        if let Some((token, seen)) = next_context {
            let token = String::from_utf8_lossy(&token).into_owned();
            let key = operation.key.clone();
            match VersionVector::from_token(&token) {
                Ok(context) => {
                    let contexts = &mut self.clients[client].last_context;
                    contexts.insert(key, (token, context, seen));
                }
                // A node handed out a context it cannot read back.
                Err(_) => self.stats.bad_replies += 1,
            }
        }
        if self.clients[client].in_flight.is_empty() {
            let think = self.clients[client]
                .rng
                .below(self.parameters.think_time_max_ms + 1);
            // The reply's way back, then the thinking.
            let round_trip = self.clients[client].latency * 2;
            let at = self.now + round_trip + Duration::from_millis(think);
            self.schedule(at, Event::ClientStep { client });
        }
    }

    // ---- faults -----------------------------------------------------------------------

    fn inject_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let faults = self.parameters.faults;
        let mut choices: Vec<u8> = Vec::new();
        if faults.crashes {
            choices.push(0);
        }
        if faults.partitions {
            choices.push(1);
        }
        if faults.loss || faults.duplication {
            choices.push(2);
        }
        if faults.disk_failures {
            choices.push(3);
        }
        if !choices.is_empty() {
            let choice = choices[self.rng.below(choices.len() as u64) as usize];
            match choice {
                0 => self.crash_random(),
                1 => self.partition_random(),
                2 => self.storm(),
                _ => self.fail_disk_random(),
            }
        }
        let next = self.fault_delay();
        self.schedule(self.now + next, Event::Fault);
    }

    fn crash_random(&mut self) {
        let down = self.nodes.iter().filter(|n| n.node.is_none()).count();
        if down >= self.parameters.faults.max_down {
            return;
        }
        let index = self.rng.below(self.nodes.len() as u64) as usize;
        if self.nodes[index].node.is_none() {
            return;
        }
        self.crash(index);
        let restart_after = 200 + self.rng.below(3_000);
        self.schedule(
            self.now + Duration::from_millis(restart_after),
            Event::Restart { node: index },
        );
    }

    /// Crashes node `index`: its state machine and unsynced writes are gone; clients
    /// waiting on it see their connection die; peers notice the broken links.
    pub fn crash(&mut self, index: usize) {
        self.stats.crashes += 1;
        let sim = &mut self.nodes[index];
        if let Some(node) = sim.node.take() {
            sim.earlier_stats = add_stats(sim.earlier_stats, node.stats());
        }
        sim.hints_refused_seen = 0;
        sim.boot += 1;
        let lost_before = sim.disk.buffered_writes_lost;
        sim.disk.power_cut();
        self.stats.buffered_writes_lost += sim.disk.buffered_writes_lost - lost_before;
        let id = sim.id;
        // Its clients' connections die with it, and what they waited for.
        for client in 0..self.clients.len() {
            let connected = self.clients[client]
                .connection
                .as_ref()
                .is_some_and(|c| c.node == index);
            if connected {
                self.close_connection(client);
            }
        }
        // Connection resets reach most peers quickly; some only notice by timeout.
        for peer in 0..self.nodes.len() {
            if peer != index && self.rng.chance(0.7) {
                let delay = Duration::from_millis(1 + self.rng.below(20));
                let boot = self.nodes[peer].boot;
                self.schedule(
                    self.now + delay,
                    Event::LinkDown {
                        node: peer,
                        peer: id,
                        boot,
                    },
                );
            }
        }
        self.fault_changed();
    }

    /// Restarts node `index` from its disks, with a fresh seed.
    pub fn restart(&mut self, index: usize) {
        if self.nodes[index].node.is_some() || self.nodes[index].destroyed {
            return;
        }
        let seed = self.rng.next_u64();
        let node = boot(&self.config, self.nodes[index].id, seed, self.now);
        self.nodes[index].node = Some(node);
        self.drain(index);
        self.fault_changed();
    }

    fn partition_random(&mut self) {
        self.stats.partitions += 1;
        let count = self.nodes.len();
        if count < 2 {
            return;
        }
        let mut side_a = Vec::new();
        let mut side_b = Vec::new();
        for index in 0..count {
            if self.rng.chance(0.5) {
                side_a.push(index);
            } else {
                side_b.push(index);
            }
        }
        if side_a.is_empty() || side_b.is_empty() {
            return;
        }
        let one_way = self.parameters.faults.one_way && self.rng.chance(0.5);
        let ids = |side: &[usize]| {
            side.iter()
                .map(|&i| NodeId(i as u64 + 1))
                .collect::<Vec<_>>()
        };
        self.network
            .partition(&ids(&side_a), &ids(&side_b), one_way);
        for &a in &side_a {
            for &b in &side_b {
                self.blocked.push((a, b));
                if !one_way {
                    self.blocked.push((b, a));
                }
            }
        }
        self.partition_generation += 1;
        let heal_after = 300 + self.rng.below(3_000);
        let generation = self.partition_generation;
        self.schedule(
            self.now + Duration::from_millis(heal_after),
            Event::HealPartition { generation },
        );
        self.fault_changed();
    }

    fn storm(&mut self) {
        let faults = self.parameters.faults;
        let mut config = self.parameters.network;
        if faults.loss {
            config.loss = self.rng.next_f64() * 0.15;
        }
        if faults.duplication {
            config.duplication = self.rng.next_f64() * 0.1;
        }
        config.latency_max_ms = config.latency_max_ms.max(1 + self.rng.below(60));
        self.set_network(config);
        self.network_generation += 1;
        let generation = self.network_generation;
        let calm_after = 300 + self.rng.below(2_000);
        self.schedule(
            self.now + Duration::from_millis(calm_after),
            Event::CalmNetwork { generation },
        );
    }

    fn set_network(&mut self, config: NetworkConfig) {
        self.network.set_config(config);
        self.network_config = config;
        self.fault_changed();
    }

    fn fail_disk_random(&mut self) {
        let index = self.rng.below(self.nodes.len() as u64) as usize;
        let sim = &mut self.nodes[index];
        sim.disk_failing = true;
        sim.disk.set_failing(true);
        let recover_after = 100 + self.rng.below(1_500);
        self.schedule(
            self.now + Duration::from_millis(recover_after),
            Event::DiskRecovers { node: index },
        );
        self.fault_changed();
    }

    /// Ends the fault phase: heal, calm, restart everyone, disks healthy.
    pub fn stop_faults(&mut self) {
        self.faults_on = false;
        self.partition_generation += 1;
        self.network_generation += 1;
        self.network.heal();
        self.blocked.clear();
        let calm = NetworkConfig {
            loss: 0.0,
            duplication: 0.0,
            ..self.parameters.network
        };
        self.network.set_config(calm);
        self.network_config = calm;
        for index in 0..self.nodes.len() {
            let sim = &mut self.nodes[index];
            sim.disk_failing = false;
            sim.disk.set_failing(false);
            sim.disk.set_config(DiskConfig {
                failure: 0.0,
                ..self.parameters.disk
            });
            self.restart(index);
        }
        self.fault_changed();
    }

    /// Reads every key ever written once with R = N, from a random live node, so read
    /// repair brings every replica up to the merge.
    pub fn read_sweep(&mut self) {
        let mut keys: Vec<Vec<u8>> = self
            .history
            .operations
            .iter()
            .map(|op| op.key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        let replicas = self.config.replicas;
        if self.clients.is_empty() {
            return;
        }
        for key in keys {
            // One read at a time, retried a few times if it fails.
            for _ in 0..5 {
                let node = self.rng.below(self.nodes.len() as u64) as usize;
                self.issue(0, node, OperationKind::VGet, key.clone(), Some(replicas));
                let limit = self.now + Duration::from_millis(30_000);
                self.run_until(limit, |cluster| cluster.clients[0].in_flight.is_empty());
                let succeeded = self
                    .history
                    .operations
                    .last()
                    .is_some_and(|op| op.outcome == Outcome::Ok);
                if succeeded {
                    break;
                }
                let pause = self.now + Duration::from_millis(500);
                self.run_until(pause, |_| false);
            }
        }
    }

    /// What node `index` durably holds for `key` (its own copy, not hints).
    pub fn stored(&self, index: usize, key: &[u8]) -> Option<VersionSet> {
        let bytes = self.nodes[index].disk.get(Space::Data, key)?;
        VersionSet::decode(bytes, ringkv_core::version::VersionBounds::default()).ok()
    }
}

fn value_id(data: &[u8]) -> WriteId {
    let mut id = [0u8; 8];
    let length = data.len().min(8);
    id[..length].copy_from_slice(&data[..length]);
    u64::from_le_bytes(id)
}

/// Sums two nodes' counters.
pub fn add_stats(a: Stats, b: Stats) -> Stats {
    Stats {
        reads_coordinated: a.reads_coordinated + b.reads_coordinated,
        reads_speculated: a.reads_speculated + b.reads_speculated,
        writes_coordinated: a.writes_coordinated + b.writes_coordinated,
        writes_forwarded: a.writes_forwarded + b.writes_forwarded,
        forwards_redirected: a.forwards_redirected + b.forwards_redirected,
        forwards_retried: a.forwards_retried + b.forwards_retried,
        writes_handed_on: a.writes_handed_on + b.writes_handed_on,
        stand_in_writes: a.stand_in_writes + b.stand_in_writes,
        messages_sent: a.messages_sent + b.messages_sent,
        read_repairs_sent: a.read_repairs_sent + b.read_repairs_sent,
        hints_stored: a.hints_stored + b.hints_stored,
        hints_held_for_down_owners: a.hints_held_for_down_owners + b.hints_held_for_down_owners,
        hints_delivered: a.hints_delivered + b.hints_delivered,
        hints_dropped: a.hints_dropped + b.hints_dropped,
        hints_refused: a.hints_refused + b.hints_refused,
        overloaded: a.overloaded + b.overloaded,
        merges_coalesced: a.merges_coalesced + b.merges_coalesced,
        requests_timed_out: a.requests_timed_out + b.requests_timed_out,
        peers_marked_down: a.peers_marked_down + b.peers_marked_down,
        actions_refused: a.actions_refused + b.actions_refused,
        entropy_exchanges: a.entropy_exchanges + b.entropy_exchanges,
        entropy_in_sync: a.entropy_in_sync + b.entropy_in_sync,
        entropy_keys_pushed: a.entropy_keys_pushed + b.entropy_keys_pushed,
        entropy_ticks_refused: a.entropy_ticks_refused + b.entropy_ticks_refused,
        handoff_pages: a.handoff_pages + b.handoff_pages,
        handoff_keys_sent: a.handoff_keys_sent + b.handoff_keys_sent,
        handoff_bytes_sent: a.handoff_bytes_sent + b.handoff_bytes_sent,
        handoff_offer_bytes: a.handoff_offer_bytes + b.handoff_offer_bytes,
        handoff_keys_deleted: a.handoff_keys_deleted + b.handoff_keys_deleted,
        handoff_pages_abandoned: a.handoff_pages_abandoned + b.handoff_pages_abandoned,
        writer_epochs_started: a.writer_epochs_started + b.writer_epochs_started,
        one_shot_writes: a.one_shot_writes + b.one_shot_writes,
        reap_walks: a.reap_walks + b.reap_walks,
        reap_walks_blocked: a.reap_walks_blocked + b.reap_walks_blocked,
        reap_keys: a.reap_keys + b.reap_keys,
        reap_candidates: a.reap_candidates + b.reap_candidates,
        records_reapable: a.records_reapable + b.records_reapable,
        corrupt_records_replaced: a.corrupt_records_replaced + b.corrupt_records_replaced,
    }
}

impl Cluster {
    /// Every node's counters over all its boots.
    pub fn node_stats(&self) -> Stats {
        self.nodes.iter().fold(Stats::default(), |total, sim| {
            let current = sim.node.as_ref().map(Node::stats).unwrap_or_default();
            add_stats(total, add_stats(sim.earlier_stats, current))
        })
    }
}

/// A node for `id`. The configuration comes from `Parameters::node_config`, whose
/// fields the swarm keeps valid (1 <= R, W <= N <= nodes, non-zero bounds); a test that
/// shapes invalid parameters is itself broken, and this panics before the run starts.
fn boot(config: &Config, id: NodeId, seed: u64, now: Instant) -> Node {
    let mut config = config.clone();
    if !config.members.iter().any(|member| member.id == id) {
        // A joiner knows only its seeds, as an operator would start it.
        config.members.clear();
    }
    config.peer_address = sim_address(id).into_bytes();
    config.client_address = format!("client-{}", id.0).into_bytes();
    Node::new(config, NodeIdentity { id }, seed, now)
        .expect("parameters give a valid node configuration")
}

/// A simulated node's peer address.
pub fn sim_address(id: NodeId) -> String {
    format!("sim-{}", id.0)
}

/// The node a simulated peer address names.
fn sim_address_node(address: &[u8]) -> Option<NodeId> {
    let text = core::str::from_utf8(address).ok()?;
    text.strip_prefix("sim-")?.parse().ok().map(NodeId)
}

/// Appends `kind`'s request in RESP, as a client library writes it.
fn encode_request(
    out: &mut Vec<u8>,
    kind: OperationKind,
    key: &[u8],
    value: &[u8],
    context: &str,
    quorum: Option<u8>,
) {
    let digits = quorum.map(|q| q.to_string());
    let mut arguments: Vec<&[u8]> = match kind {
        OperationKind::Get => vec![b"GET", key],
        OperationKind::VGet => vec![b"VGET", key],
        OperationKind::Set => vec![b"SET", key, value],
        OperationKind::VSet => vec![b"VSET", key, context.as_bytes(), value],
        OperationKind::Del => vec![b"DEL", key],
        OperationKind::VDel => vec![b"VDEL", key, context.as_bytes()],
        OperationKind::Multi => vec![b"MULTI"],
        OperationKind::Exec => vec![b"EXEC"],
    };
    if let Some(digits) = &digits {
        match kind {
            OperationKind::VGet => arguments.extend([&b"R"[..], digits.as_bytes()]),
            OperationKind::VSet | OperationKind::VDel => {
                arguments.extend([&b"W"[..], digits.as_bytes()]);
                // Half of these name their sync too, the other way from the cluster's
                // default half the time; chosen from the request's bytes, so the
                // clients' seeded draws stay what they were.
                let bytes = key.iter().chain(context.as_bytes()).chain(value);
                match bytes.fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b))) % 4 {
                    0 => arguments.extend([&b"SYNC"[..], b"all"]),
                    1 => arguments.extend([&b"SYNC"[..], b"one"]),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out.extend_from_slice(format!("*{}\r\n", arguments.len()).as_bytes());
    for argument in arguments {
        out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}
