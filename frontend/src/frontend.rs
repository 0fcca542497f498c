//! The half of a node both binaries share: the core [`Node`], the storage executor,
//! and everything between them and the connections, whatever moves the bytes. An
//! event loop (mio in `ringkv-mio`, io_uring in `ringkv-uring`) owns the sockets'
//! readiness or completions and calls in here with bytes read and connections opened;
//! [`Transport`] is what this half asks of it (register, connect, write, close).
//!
//! # Connections
//! - **Clients** (RESP): each connection's [`Session`] parses requests in place from
//!   its read buffer and decides what a client observes (reply order, per-connection
//!   command order, AUTH/HELLO, refused transactions, oversize requests, protocol
//!   errors; see [`crate::session`]); what it lets run goes to the core with a tag.
//!   INFO is answered here: the core's sections plus latency, clients and storage.
//!   Past `connections_max`, a new connection gets `-ERR max number of clients
//!   reached` and is closed.
//! - **Peers**: connections are one-way. A node sends to a peer on its own outbound
//!   connection, which starts with a `Hello` naming the sender, and receives on the
//!   connections peers opened to it. An outbound connection coming up is `PeerUp` for
//!   the core, breaking is `PeerDown`; a broken one is retried when the core sends to
//!   the peer again, at most every 100 ms doubling to 5 s (the core's probes back off
//!   too). A frame of another cluster or protocol version closes the connection with a
//!   log line naming both.
//! - **Introductions** (`Action::Introduce`): a short connection to a seed known only
//!   by address: `Hello`, the frame, then close. The seed answers on its own
//!   connection to the address this node announces.
//!
//! # Bounds
//! Each read buffer is bounded (a client's by the largest request, a peer's by the
//! largest frame), each write buffer too (a client past it is closed as too slow; a
//! frame past a peer's bound is dropped and counted, and the core's timeouts treat it
//! as lost). Per wakeup, at most [`READS_PER_WAKEUP`] reads per connection,
//! [`ACCEPTS_PER_WAKEUP`] accepts and [`COMPLETIONS_PER_WAKEUP`] storage completions are
//! handled; what is left is picked up by the next iteration without sleeping.
//!
//! # Writes go out in batches
//! Replies and frames are appended to their connection's buffer while a wakeup's
//! events are handled, and written once at its end: under load, many replies and many
//! frames share one write syscall.
//!
//! # Shutdown
//! On SIGINT or SIGTERM the node stops accepting and stops reading new client
//! requests, lets in-flight requests finish (at most [`SHUTDOWN_GRACE_MS`]), writes
//! what is buffered, syncs its stores and exits 0. A second signal exits at once.

use crate::clock::Clock;
use crate::connection::OutBuffer;
use crate::executor::{Done, Executor, StoreSizes};
use crate::metrics::Metrics;
use crate::session::{Session, SessionLimits, Step};
use crate::settings::Settings;
use ringkv_core::Instant;
use ringkv_core::node::{Action, ClientId, Input, Node, NodeIdentity};
use ringkv_core::resp::{self, Command, RespLimits};
use ringkv_core::version::NodeId;
use ringkv_core::wire::{self, FrameError, Message, WireLimits};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// What the shared half needs from an event loop's sockets.
pub trait Transport {
    /// A connection's socket as the loop holds it.
    type Stream: std::fmt::Debug;
    /// Starts watching `stream` as connection `index`.
    fn register(&mut self, stream: &mut Self::Stream, index: usize) -> io::Result<()>;
    /// Stops watching `stream` and closes it (once nothing of it is in flight).
    fn deregister(&mut self, stream: Self::Stream);
    /// Starts a non-blocking connect (no-delay set); completion is reported through
    /// [`Frontend::peer_connected`] or [`Frontend::close`].
    fn connect(&mut self, address: SocketAddr) -> io::Result<Self::Stream>;
    /// Writes (or submits) what `out` holds. `Ok(true)`: everything is out;
    /// `Ok(false)`: the rest goes when the socket can take it.
    fn flush(&mut self, stream: &mut Self::Stream, out: &mut OutBuffer) -> io::Result<bool>;
    /// A wakeup's flush of `connections` connections begins (a transport may batch
    /// its writes).
    fn flush_started(&mut self, connections: usize) {
        let _ = connections;
    }
    /// The wakeup's flush is over.
    fn flush_finished(&mut self) {}
    /// Appends the transport's INFO section, if it has one (`# Transport`).
    fn write_info(&self, text: &mut String) {
        let _ = text;
    }
    /// True while bytes handed over by `flush` may still be unsent.
    fn sending(&self, stream: &Self::Stream) -> bool {
        let _ = stream;
        false
    }
}

/// See [`Frontend::reader`].
#[derive(Debug)]
pub struct Reader<'a, T: Transport> {
    pub stream: &'a mut T::Stream,
    pub buffer: &'a mut Vec<u8>,
    /// Bytes the buffer may hold.
    pub limit: usize,
    pub transport: &'a mut T,
}

/// How long a node waits for its addresses to be free at start.
pub const BIND_WAIT_MS: u64 = 5_000;

/// Binds a listener on `address`, waiting up to [`BIND_WAIT_MS`] while the address is
/// in use: a node restarted right after it was killed may find its old sockets still
/// listening for a moment (the kernel tears a killed process's io_uring down after the
/// process is gone, and with it the listeners its armed accepts hold).
pub fn bind_listener(address: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(BIND_WAIT_MS);
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(error)
                if error.kind() == io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !logged {
                    log::info!("{address} is in use; waiting up to {BIND_WAIT_MS} ms for it");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => return Err(ServerError::Bind { address, error }),
        }
    }
}

/// Which kind of connection a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    Client,
    /// This node's outbound connection to a peer (it only sends on it).
    Peer,
    /// A connection a peer opened (this node only receives on it).
    Inbound,
    Introduction,
}

/// What a client past `connections_max` is told before its connection is closed.
pub const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";
/// Storage completions handed to the core per wakeup.
pub const COMPLETIONS_PER_WAKEUP: usize = 4096;
/// Peer frames decoded from one connection per wakeup.
pub const FRAMES_PER_WAKEUP: usize = 1024;
/// Bytes a client may leave unread before it is closed as too slow.
pub const CLIENT_WRITE_BUFFER_MAX: usize = 64 << 20;
/// Bytes queued to one peer; past it frames are dropped.
pub const PEER_WRITE_BUFFER_MAX: usize = 64 << 20;
/// Inbound peer connections at once.
pub const INBOUND_PEERS_MAX: usize = 1024;
/// Introductions (seed connections) at once.
pub const INTRODUCTIONS_MAX: usize = 16;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// Bytes one read may add to a connection's buffer, beyond its largest request.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Entries of `Io::again` for work that is not one connection's: more completions, or
/// more connections to accept, than one wakeup handles.
pub const AGAIN_COMPLETIONS: usize = usize::MAX;
pub const AGAIN_CLIENT_ACCEPTS: usize = usize::MAX - 1;
pub const AGAIN_PEER_ACCEPTS: usize = usize::MAX - 2;
/// A peer connection not established by then is abandoned (and retried later).
const CONNECT_TIMEOUT_MS: u64 = 1_000;
const RECONNECT_INITIAL_MS: u64 = 100;
const RECONNECT_MAX_MS: u64 = 5_000;
/// Data-store compaction: one slice of this many bytes per tick.
const COMPACTION_SLICE_BYTES: u64 = 4 << 20;
/// The period of [`Frontend::tick`].
pub const TICK_MS: u64 = 100;

/// Why the node could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    Bind {
        address: SocketAddr,
        error: io::Error,
    },
    Io(io::Error),
    Storage(crate::executor::OpenError),
    Config(ringkv_core::node::ConfigError),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind { address, error } => {
                write!(f, "cannot listen on {address}: {error}")
            }
            ServerError::Io(error) => write!(f, "event loop: {error}"),
            ServerError::Storage(error) => write!(f, "{error}"),
            ServerError::Config(error) => write!(f, "configuration: {error}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<io::Error> for ServerError {
    fn from(error: io::Error) -> ServerError {
        ServerError::Io(error)
    }
}

#[derive(Debug)]
struct ClientConnection<S> {
    stream: S,
    generation: u32,
    read: Vec<u8>,
    out: OutBuffer,
    session: Session,
    /// Close once `out` is written (QUIT, a protocol error).
    closing: bool,
}

#[derive(Debug)]
enum PeerState {
    /// Not connected; frames are queued and a connection is opened at the end of the
    /// wakeup.
    Idle,
    /// Since this instant; past [`CONNECT_TIMEOUT_MS`] the attempt is abandoned.
    Connecting {
        since: Instant,
    },
    Connected,
    /// Broke; frames are dropped until `retry_at`.
    Down {
        retry_at: Instant,
    },
}

#[derive(Debug)]
struct PeerConnection<S> {
    peer: NodeId,
    stream: Option<S>,
    state: PeerState,
    out: OutBuffer,
    backoff_ms: u64,
}

#[derive(Debug)]
struct InboundPeer<S> {
    stream: S,
    address: SocketAddr,
    read: Vec<u8>,
    /// From its `Hello`.
    peer: Option<NodeId>,
}

#[derive(Debug)]
struct Introduction<S> {
    stream: S,
    out: OutBuffer,
}

#[derive(Debug)]
enum Connection<S> {
    Client(ClientConnection<S>),
    Peer(PeerConnection<S>),
    Inbound(InboundPeer<S>),
    Introduction(Introduction<S>),
}

/// What became of an outbound peer connection, for the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up,
    /// It was up and broke: frames sent on it may have arrived.
    Broke,
    /// It never came up: nothing queued for it was delivered.
    Unreachable,
}

/// Everything but the node, so actions can be performed while the node is borrowed.
/// Everything but the node, so actions can be performed while the node is borrowed.
struct Io<T: Transport> {
    transport: T,
    clock: Clock,
    executor: Executor,
    settings: Settings,
    node_id: NodeId,
    cluster_id: u64,
    wire_limits: WireLimits,
    resp_limits: RespLimits,
    /// The node's value bound, for the error an oversize request gets.
    value_size_bytes_max: usize,
    connections: Vec<Option<Connection<T::Stream>>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    peers: HashMap<NodeId, usize>,
    addresses: HashMap<NodeId, SocketAddr>,
    clients: usize,
    inbound: usize,
    introductions: usize,
    /// Connections with bytes to write at the end of the wakeup.
    dirty: Vec<usize>,
    /// Connections to read again without waiting for an event.
    again: Vec<usize>,
    /// Peers to connect at the end of the wakeup.
    to_connect: Vec<NodeId>,
    /// Peer links that came up or went down, for the core after the drain.
    link_events: Vec<(NodeId, Link)>,
    metrics: Metrics,
    /// Scratch for replies made here (errors, INFO).
    scratch: Vec<u8>,
    compaction_busy: bool,
    /// The last slice copied records: the next one follows at the next tick.
    compaction_active: bool,
    compaction_note: String,
}

impl<T: Transport> std::fmt::Debug for Io<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("node_id", &self.node_id)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

/// The node and everything around it but the event loop.
pub struct Frontend<T: Transport> {
    node: Node,
    io: Io<T>,
    shutdown_at: Option<Instant>,
    /// When the next interval sync is due (interval durability only).
    sync_at: Option<Instant>,
}

impl<T: Transport> std::fmt::Debug for Frontend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("node", &self.node.id())
            .field("shutdown_at", &self.shutdown_at)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Frontend<T> {
    /// Opens the stores and builds the node. `wake` is called from storage threads
    /// when completions are waiting (the loop's waker).
    pub fn new(
        settings: Settings,
        node_id: NodeId,
        seed: u64,
        transport: T,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Result<Frontend<T>, ServerError> {
        let clock = Clock::start();
        let mut config = settings.core_config(node_id);
        config.validate(node_id).map_err(ServerError::Config)?;
        let executor = start_storage(&settings, &config, wake)?;
        config.requests_max = config.requests_max.max(1);
        let now = clock.now();
        let mut node = Node::new(config, NodeIdentity { id: node_id }, seed, now)
            .map_err(ServerError::Config)?;
        let corrupt = executor.data_stats().corrupt_records;
        if corrupt > 0 {
            log::warn!(
                "the data store skipped {corrupt} damaged records at open; anti-entropy will restore them from replicas"
            );
            node.storage_damaged();
        }
        let io = Io::new(transport, clock, executor, settings, &node);
        let sync_at = sync_interval(&io.settings).map(|interval| io.clock.now() + interval);
        let mut frontend = Frontend {
            node,
            io,
            shutdown_at: None,
            sync_at,
        };
        frontend.drain();
        Ok(frontend)
    }

    /// Logs where the node serves; the loop calls it once its listeners are bound.
    pub fn log_serving(&self) {
        let settings = &self.io.settings;
        let advertised = if settings.peer_advertise_address == settings.peer_address {
            String::new()
        } else {
            format!(", advertised as {}", settings.peer_advertise_address)
        };
        log::info!(
            "node {} serving clients on {} and peers on {}{advertised} (data in {})",
            self.io.node_id.0,
            settings.client_address,
            settings.peer_address,
            settings.data_dir().display()
        );
    }

    pub fn settings(&self) -> &Settings {
        &self.io.settings
    }

    pub fn now(&self) -> Instant {
        self.io.clock.now()
    }

    pub fn executor(&self) -> &Executor {
        &self.io.executor
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.io.transport
    }

    /// When the core (or the interval sync) next wants [`Frontend::timeouts`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.node.poll_timeout(), self.sync_at) {
            (Some(node), Some(sync)) => Some(node.min(sync)),
            (node, sync) => node.or(sync),
        }
    }

    /// Work left for the next iteration, which must then not sleep.
    pub fn has_again(&self) -> bool {
        !self.io.again.is_empty()
    }

    /// Takes the connections (and `AGAIN_*` markers) to handle again.
    pub fn take_again(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.io.again)
    }

    pub fn push_again(&mut self, index: usize) {
        self.io.again.push(index);
    }

    /// Hands the core its expired deadlines, and starts the interval sync when due:
    /// buffered writes (`--sync-writes one`, see `ringkv_core::quorum::SyncWrites`)
    /// reach the disk at most `--sync-interval-ms` after they were written, plus the
    /// sync's own time (with `--durability interval:<ms>`, every write, at that
    /// interval). A sync with nothing written since the last one costs nothing.
    pub fn timeouts(&mut self) {
        let now = self.io.clock.now();
        if let (Some(at), Some(interval)) = (self.sync_at, sync_interval(&self.io.settings)) {
            if now >= at {
                self.io.executor.sync();
                self.sync_at = Some(now + interval);
            }
        }
        if self
            .node
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            self.node.handle(now, Input::Timeout);
            self.drain();
        }
    }

    /// Writes what the wakeup buffered, and reports links that changed meanwhile.
    pub fn flush(&mut self) {
        self.io.flush();
        if !self.io.link_events.is_empty() {
            self.drain();
            self.io.flush();
        }
    }

    /// A shutdown signal: stop reading requests, let in-flight ones finish (at most
    /// [`SHUTDOWN_GRACE_MS`]). True when a shutdown was already under way: the caller
    /// exits at once.
    pub fn begin_shutdown(&mut self) -> bool {
        if self.shutdown_at.is_some() {
            log::warn!("second signal: exiting without waiting");
            return true;
        }
        log::info!("signal received: finishing in-flight requests, then stopping");
        self.shutdown_at = Some(self.io.clock.now() + Duration::from_millis(SHUTDOWN_GRACE_MS));
        false
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown_at.is_some()
    }

    /// True once a shutdown may finish: nothing in flight and every reply written, or
    /// the grace period is over.
    pub fn ready_to_stop(&self) -> bool {
        let Some(deadline) = self.shutdown_at else {
            return false;
        };
        let idle = self.node.requests_in_flight() == 0
            && self.node.storage_operations_in_flight() == 0
            && self.io.clients_flushed();
        idle || self.io.clock.now() >= deadline
    }

    /// Writes what is buffered and syncs the stores; hands the transport back (a
    /// ring must see its operations complete before it goes).
    pub fn finish(self) -> (T, Result<(), ServerError>) {
        let Frontend { mut io, .. } = self;
        io.flush();
        let result = match io.executor.shutdown() {
            Ok(()) => {
                log::info!("stores synced; stopped");
                Ok(())
            }
            Err(error) => {
                log::error!("syncing the stores at shutdown failed: {error}");
                Err(ServerError::Io(io::Error::other(error.to_string())))
            }
        };
        (io.transport, result)
    }

    /// Performs every action the node has queued, then connects peers it sent to and
    /// reports links that changed (which may queue more).
    pub fn drain(&mut self) {
        for _ in 0..64 {
            while let Some(action) = self.node.poll_action() {
                self.io.perform(action);
            }
            self.io.connect_pending(&self.node);
            let events = std::mem::take(&mut self.io.link_events);
            if events.is_empty() {
                return;
            }
            let now = self.io.clock.now();
            for (peer, event) in events {
                let input = match event {
                    Link::Up => Input::PeerUp { peer },
                    Link::Broke => Input::PeerDown { peer },
                    Link::Unreachable => Input::PeerUnreachable { peer },
                };
                self.node.handle(now, input);
            }
        }
    }

    /// Hands waiting storage completions to the core (at most
    /// [`COMPLETIONS_PER_WAKEUP`]; more are picked up without sleeping).
    pub fn completions(&mut self) {
        for _ in 0..COMPLETIONS_PER_WAKEUP {
            let Some(done) = self.io.executor.try_done() else {
                return;
            };
            match done {
                Done::Storage(completion) => {
                    let now = self.io.clock.now();
                    self.node.handle(now, Input::Storage(completion));
                    self.drain();
                }
                Done::Compacted(result) => self.io.compacted(result),
            }
        }
        // More are waiting: come back without sleeping.
        self.io.again.push(AGAIN_COMPLETIONS);
    }

    /// Every 100 ms: the next compaction slice while one is under way; every second:
    /// operations per second, the interval-mode sync, and a look for compaction work.
    pub fn tick(&mut self, ticks: u64) {
        let second = ticks % (1_000 / TICK_MS) == 0;
        if second {
            self.io.metrics.tick_second();
        }
        self.io.abandon_slow_connects();
        let wanted = second || self.io.compaction_active;
        if wanted && !self.io.compaction_busy && self.shutdown_at.is_none() {
            self.io.compaction_busy = self.io.executor.compact(COMPACTION_SLICE_BYTES);
        }
    }

    /// A new client connection; handed back when past `connections_max` (the loop
    /// refuses it with [`REFUSAL`]).
    pub fn add_client(&mut self, stream: T::Stream, address: SocketAddr) -> Result<(), T::Stream> {
        let io = &mut self.io;
        if io.clients >= io.settings.connections_max as usize {
            io.metrics.clients_refused += 1;
            log::debug!("refusing client {address}: connection limit reached");
            return Err(stream);
        }
        let connection = Connection::Client(ClientConnection {
            stream,
            generation: 0, // set by `insert`
            read: Vec::new(),
            out: OutBuffer::default(),
            // The id HELLO reports is set by `insert`, with the generation.
            session: Session::new(0, io.settings.requirepass.is_none()),
            closing: false,
        });
        if io.insert(connection).is_some() {
            io.clients += 1;
            io.metrics.clients_connected = io.clients as u64;
        }
        Ok(())
    }

    /// A connection a peer opened.
    pub fn add_inbound(&mut self, stream: T::Stream, address: SocketAddr) {
        let io = &mut self.io;
        if io.inbound >= INBOUND_PEERS_MAX {
            log::warn!("refusing peer connection from {address}: {INBOUND_PEERS_MAX} open");
            io.transport.deregister(stream);
            return;
        }
        let connection = Connection::Inbound(InboundPeer {
            stream,
            address,
            read: Vec::new(),
            peer: None,
        });
        if io.insert(connection).is_some() {
            io.inbound += 1;
        }
    }

    pub fn kind(&self, index: usize) -> Option<ConnectionKind> {
        Some(match self.io.connections.get(index)? {
            Some(Connection::Client(_)) => ConnectionKind::Client,
            Some(Connection::Peer(_)) => ConnectionKind::Peer,
            Some(Connection::Inbound(_)) => ConnectionKind::Inbound,
            Some(Connection::Introduction(_)) => ConnectionKind::Introduction,
            None => return None,
        })
    }

    /// What a loop needs to read into a client or inbound peer connection: its
    /// socket, its read buffer and the buffer's bound, and the transport (a
    /// completion-based loop copies received bytes out of the transport's memory).
    /// `None` for other connections and for a client that is not read any more
    /// (closing, or the node shutting down).
    pub fn reader(&mut self, index: usize) -> Option<Reader<'_, T>> {
        let client_limit = self.io.resp_limits.bulk_size_bytes_max + READ_CHUNK_BYTES;
        let frame_limit = self.io.wire_limits.frame_size_bytes_max + READ_CHUNK_BYTES;
        let shutting_down = self.shutdown_at.is_some();
        let transport = &mut self.io.transport;
        let (stream, buffer, limit) = match self.io.connections.get_mut(index)? {
            Some(Connection::Client(c)) if !c.closing && !shutting_down => {
                (&mut c.stream, &mut c.read, client_limit)
            }
            Some(Connection::Inbound(i)) => (&mut i.stream, &mut i.read, frame_limit),
            _ => return None,
        };
        Some(Reader {
            stream,
            buffer,
            limit,
            transport,
        })
    }

    /// The socket of an outbound peer connection, and whether it is still connecting.
    pub fn peer_stream(&mut self, index: usize) -> Option<(&mut T::Stream, bool)> {
        match self.io.connections.get_mut(index)? {
            Some(Connection::Peer(p)) => {
                let connecting = matches!(p.state, PeerState::Connecting { .. });
                p.stream.as_mut().map(|s| (s, connecting))
            }
            _ => None,
        }
    }

    /// An outbound peer connection finished connecting.
    pub fn peer_connected(&mut self, index: usize) {
        let io = &mut self.io;
        let Some(Some(Connection::Peer(connection))) = io.connections.get_mut(index) else {
            return;
        };
        connection.state = PeerState::Connected;
        connection.backoff_ms = RECONNECT_INITIAL_MS;
        log::debug!("connected to peer {}", connection.peer.0);
        io.link_events.push((connection.peer, Link::Up));
        io.dirty.push(index);
        self.drain();
    }

    /// The peer this outbound connection goes to.
    pub fn peer_of(&self, index: usize) -> Option<NodeId> {
        match self.io.connections.get(index)? {
            Some(Connection::Peer(p)) => Some(p.peer),
            _ => None,
        }
    }

    /// Closes connection `index` (an outbound peer connection keeps its slot, down).
    pub fn close(&mut self, index: usize) {
        self.io.close(index);
        if !self.io.link_events.is_empty() {
            self.drain();
        }
    }

    /// Connection `index` can take bytes again (or has some to write).
    pub fn mark_dirty(&mut self, index: usize) {
        self.io.mark_dirty(index);
    }

    /// Handles what a client's read buffer holds, after a read that saw the end of
    /// stream (`closed`) or stopped at a bound with more to read (`more`).
    pub fn client_input(&mut self, index: usize, closed: bool, more: bool) {
        self.parse_requests(index);
        let paused = matches!(
            self.io.connections.get(index),
            Some(Some(Connection::Client(c))) if c.session.is_paused()
        );
        if closed {
            let done = matches!(
                self.io.connections.get(index),
                Some(Some(Connection::Client(c))) if c.session.is_idle() && c.out.is_empty()
            );
            if done {
                self.io.close(index);
            } else if let Some(Some(Connection::Client(c))) = self.io.connections.get_mut(index) {
                c.closing = true;
            }
        } else if more && !paused {
            self.io.again.push(index);
        }
    }

    fn parse_requests(&mut self, index: usize) {
        let Some(Some(Connection::Client(client))) = self.io.connections.get_mut(index) else {
            return;
        };
        let mut buffer = std::mem::take(&mut client.read);
        let id = client_id(index, client.generation);
        let mut reply = std::mem::take(&mut self.io.scratch);
        let mut consumed = 0;
        // Until the session waits, or the connection was closed meanwhile.
        while let Some(Some(Connection::Client(client))) = self.io.connections.get_mut(index) {
            let now = self.io.clock.now();
            let limits = SessionLimits {
                resp: self.io.resp_limits,
                read_buffer_bytes_max: self.io.resp_limits.bulk_size_bytes_max + READ_CHUNK_BYTES,
                value_size_bytes_max: self.io.value_size_bytes_max,
                password: self.io.settings.requirepass.as_deref(),
            };
            let (used, step) = client
                .session
                .next(&buffer[consumed..], now, limits, &mut reply);
            consumed += used;
            match step {
                Step::Wait => break,
                Step::Replied { tag } => self.io.deliver(id, tag, &reply, false),
                Step::Refused { tag } => {
                    self.io.metrics.protocol_errors += 1;
                    self.io.deliver(id, tag, &reply, true);
                }
                Step::Run {
                    tag,
                    command: Command::Info { section },
                } => {
                    let text = self.info(section);
                    reply.clear();
                    resp::write_bulk(&mut reply, text.as_bytes());
                    self.io.deliver(id, tag, &reply, false);
                }
                Step::Run { tag, command } => {
                    self.node.handle(
                        now,
                        Input::Client {
                            client: id,
                            tag,
                            timestamp_ms: wall_clock_ms(),
                            command,
                        },
                    );
                    self.drain();
                }
            }
        }
        self.io.scratch = reply;
        buffer.drain(..consumed);
        if let Some(Some(Connection::Client(client))) = self.io.connections.get_mut(index) {
            client.read = buffer;
        }
    }

    fn info(&self, section: Option<&[u8]>) -> String {
        let wants = |name: &str| {
            section.is_none_or(|s| {
                s.eq_ignore_ascii_case(name.as_bytes()) || s.eq_ignore_ascii_case(b"all")
            })
        };
        let mut text = self.node.info(section);
        if let Some(name) = &self.io.settings.node_name {
            if wants("server") {
                let _ = write!(text, "# Node\r\nnode_name:{name}\r\n\r\n");
            }
        }
        self.io.metrics.write_info(&mut text, wants);
        if wants("peers") {
            let links_up = self
                .io
                .connections
                .iter()
                .filter(|slot| {
                    matches!(
                        slot,
                        Some(Connection::Peer(PeerConnection {
                            state: PeerState::Connected,
                            ..
                        }))
                    )
                })
                .count();
            let _ = write!(text, "# Peers\r\npeer_links_up:{links_up}\r\n\r\n");
        }
        if wants("transport") {
            self.io.transport.write_info(&mut text);
        }
        if wants("storage") {
            let stats = self.io.executor.data_stats();
            let rounds = self.io.executor.write_rounds();
            let (reads_inline, reads_deferred) = self.io.executor.reads();
            let _ = write!(
                text,
                "# Storage\r\ndurability:{}\r\nkeys:{}\r\nsegments:{}\r\ndata_size_bytes:{}\r\nsyncs:{}\r\ncheckpoints:{}\r\ncompactions:{}\r\ncompaction:{}\r\ncorrupt_records:{}\r\nreplayed_records:{}\r\nwrite_rounds:{}\r\nwrite_round_operations_avg:{:.1}\r\nwrite_round_us_avg:{}\r\nwrite_round_us_max:{}\r\nwrite_batches_disk_full:{}\r\nwrite_batches_failed:{}\r\nreads_inline:{}\r\nreads_deferred:{}\r\n\r\n",
                self.io.settings.durability,
                stats.keys,
                stats.segments,
                directory_size_bytes(&self.io.settings.data_dir().join("data")),
                stats.syncs,
                stats.checkpoints,
                stats.compactions,
                self.io.compaction_note,
                stats.corrupt_records,
                stats.replayed_records,
                rounds.rounds,
                rounds.operations as f64 / rounds.rounds.max(1) as f64,
                rounds.round_us_total / rounds.rounds.max(1),
                rounds.round_us_max,
                rounds.batches_disk_full,
                rounds.batches_failed,
                reads_inline,
                reads_deferred,
            );
        }
        if wants("recovery") {
            // What each store's open found at this start (also logged at info).
            text.push_str("# Recovery\r\n");
            for (store, recovery) in self.io.executor.recoveries() {
                let (checkpoint_segment, checkpoint_offset) = recovery.checkpoint.unwrap_or((0, 0));
                let (torn_segment, torn_offset) = recovery.torn_tail.unwrap_or((0, 0));
                let _ = write!(
                    text,
                    "{store}_segments:{}\r\n{store}_checkpoint_used:{}\r\n{store}_checkpoint_segment:{checkpoint_segment}\r\n{store}_checkpoint_offset:{checkpoint_offset}\r\n{store}_index_rebuilt:{}\r\n{store}_replayed_records:{}\r\n{store}_torn_tail_cut:{}\r\n{store}_torn_tail_segment:{torn_segment}\r\n{store}_torn_tail_offset:{torn_offset}\r\n{store}_corrupt_records:{}\r\n{store}_open_ms:{}\r\n",
                    recovery.segments,
                    u8::from(recovery.checkpoint.is_some()),
                    u8::from(recovery.index_rebuilt),
                    recovery.replayed_records,
                    u8::from(recovery.torn_tail.is_some()),
                    recovery.corrupt_records,
                    recovery.duration_ms,
                );
            }
            text.push_str("\r\n");
        }
        text
    }

    /// Decodes the frames an inbound peer connection's buffer holds and hands each to
    /// the node, after a read that saw the end of stream (`closed`) or stopped at a
    /// bound with more to read (`more`).
    pub fn inbound_input(&mut self, index: usize, closed: bool, more: bool) {
        let Some(Some(Connection::Inbound(inbound))) = self.io.connections.get_mut(index) else {
            return;
        };
        let mut buffer = std::mem::take(&mut inbound.read);
        let mut peer = inbound.peer;
        let address = inbound.address;
        let mut consumed = 0;
        let mut frames = 0;
        let mut broken = false;
        for _ in 0..FRAMES_PER_WAKEUP {
            match wire::decode_frame(&buffer[consumed..], self.io.cluster_id, self.io.wire_limits) {
                Err(FrameError::Incomplete { .. }) => break,
                Err(FrameError::Foreign {
                    version,
                    cluster_id,
                }) => {
                    self.io.metrics.peers_refused += 1;
                    log::warn!(
                        "refusing peer at {address}: it speaks protocol {version} of cluster {cluster_id}; this node speaks protocol {} of cluster {}",
                        wire::PROTOCOL_VERSION,
                        self.io.cluster_id
                    );
                    broken = true;
                    break;
                }
                Err(FrameError::Invalid(reason)) => {
                    log::warn!("closing peer connection from {address}: {reason}");
                    broken = true;
                    break;
                }
                Ok((message, size)) => {
                    consumed += size;
                    frames += 1;
                    match (peer, message) {
                        (None, Message::Hello { node, proof }) => {
                            let secret = self.io.settings.peer_secret.as_deref().unwrap_or("");
                            let expected =
                                wire::hello_proof(secret.as_bytes(), self.io.cluster_id, node);
                            if !secret.is_empty() && proof != expected {
                                self.io.metrics.peers_refused += 1;
                                log::warn!(
                                    "refusing peer {} at {address}: its hello does not prove this cluster's peer secret",
                                    node.0
                                );
                                broken = true;
                                break;
                            }
                            peer = Some(node);
                        }
                        (None, _) => {
                            log::warn!("closing peer connection from {address}: no hello first");
                            broken = true;
                            break;
                        }
                        (Some(from), message) => {
                            let now = self.io.clock.now();
                            self.node.handle(now, Input::Peer { from, message });
                            self.drain();
                        }
                    }
                }
            }
        }
        if broken {
            self.io.close(index);
            return;
        }
        buffer.drain(..consumed);
        if let Some(Some(Connection::Inbound(inbound))) = self.io.connections.get_mut(index) {
            inbound.read = buffer;
            inbound.peer = peer;
            // Come back next turn only for what this one left: bytes in the socket past
            // the read's bound, or frames in the buffer past the per-wakeup bound. A
            // read that drained the socket needs no second look (the next bytes raise a
            // new event): coming back after every frame cost each peer message a read
            // that found nothing, 40% of a node's reads at 2,000 requests a second.
            if closed {
                self.io.close(index);
            } else if more || frames == FRAMES_PER_WAKEUP {
                self.io.again.push(index);
            }
        }
    }
}

fn client_id(index: usize, generation: u32) -> ClientId {
    ClientId((u64::from(generation) << 32) | index as u64)
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn directory_size_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn parse_address(bytes: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// How often the stores are synced for writes acknowledged before their sync: the
/// durability mode's interval, else `--sync-interval-ms` for buffered writes; None
/// with durability `none` (tests), which never syncs.
fn sync_interval(settings: &Settings) -> Option<Duration> {
    let interval_ms = match settings.durability {
        ringkv_storage::Durability::Interval { interval_ms } => interval_ms,
        ringkv_storage::Durability::None => return None,
        _ => settings.sync_interval_ms,
    };
    Some(Duration::from_millis(u64::from(interval_ms)))
}

impl<T: Transport> Io<T> {
    fn insert(&mut self, mut connection: Connection<T::Stream>) -> Option<usize> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.connections.push(None);
                self.generations.push(0);
                self.connections.len() - 1
            }
        };
        self.generations[index] = self.generations[index].wrapping_add(1);
        let transport = &mut self.transport;
        let registered = match &mut connection {
            Connection::Client(c) => {
                c.generation = self.generations[index];
                c.session.set_id(client_id(index, c.generation).0);
                transport.register(&mut c.stream, index)
            }
            Connection::Peer(p) => match &mut p.stream {
                Some(stream) => transport.register(stream, index),
                None => Ok(()),
            },
            Connection::Inbound(i) => transport.register(&mut i.stream, index),
            Connection::Introduction(i) => transport.register(&mut i.stream, index),
        };
        if let Err(error) = registered {
            log::warn!("cannot register a connection: {error}");
            self.free.push(index);
            match connection {
                Connection::Client(c) => self.transport.deregister(c.stream),
                Connection::Peer(p) => {
                    if let Some(stream) = p.stream {
                        self.transport.deregister(stream);
                    }
                }
                Connection::Inbound(i) => self.transport.deregister(i.stream),
                Connection::Introduction(i) => self.transport.deregister(i.stream),
            }
            return None;
        }
        self.connections[index] = Some(connection);
        Some(index)
    }

    /// Closes connection `index` (peer connections keep their slot, marked down).
    fn close(&mut self, index: usize) {
        let Some(slot) = self.connections.get_mut(index) else {
            return;
        };
        if let Some(Connection::Peer(peer)) = slot {
            if let Some(stream) = peer.stream.take() {
                self.transport.deregister(stream);
            }
            // A connection that never came up carried nothing: what was queued for it
            // was never delivered, and the core may send it elsewhere.
            let event = match peer.state {
                PeerState::Connected => Some(Link::Broke),
                PeerState::Connecting { .. } => Some(Link::Unreachable),
                _ => None,
            };
            let now = self.clock.now();
            peer.state = PeerState::Down {
                retry_at: now + Duration::from_millis(peer.backoff_ms),
            };
            peer.backoff_ms = (peer.backoff_ms * 2).min(RECONNECT_MAX_MS);
            peer.out.clear();
            if let Some(event) = event {
                self.link_events.push((peer.peer, event));
            }
            return;
        }
        match slot.take() {
            Some(Connection::Client(c)) => {
                self.transport.deregister(c.stream);
                self.clients -= 1;
                self.metrics.clients_connected = self.clients as u64;
            }
            Some(Connection::Inbound(i)) => {
                self.transport.deregister(i.stream);
                self.inbound -= 1;
            }
            Some(Connection::Introduction(i)) => {
                self.transport.deregister(i.stream);
                self.introductions -= 1;
            }
            Some(Connection::Peer(_)) | None => return,
        }
        self.free.push(index);
    }

    fn mark_dirty(&mut self, index: usize) {
        self.dirty.push(index);
    }

    fn perform(&mut self, action: Action<'_>) {
        match action {
            Action::Send { to, frame } => self.send(to, frame),
            Action::Reply {
                client,
                tag,
                bytes,
                close,
            } => self.deliver(client, tag, bytes, close),
            Action::Storage(operation) => self.executor.submit(operation),
            Action::Connect { peer, address } => {
                if let Some(address) = parse_address(address) {
                    self.addresses.insert(peer, address);
                }
                let index = self.peer_slot(peer);
                if let Some(Some(Connection::Peer(connection))) = self.connections.get_mut(index) {
                    if matches!(connection.state, PeerState::Down { .. } | PeerState::Idle) {
                        connection.state = PeerState::Idle;
                        self.to_connect.push(peer);
                    }
                }
            }
            Action::Introduce { address, frame } => self.introduce(address, frame),
        }
    }

    /// The slot of the outbound connection to `peer`, made on first use.
    fn peer_slot(&mut self, peer: NodeId) -> usize {
        if let Some(&index) = self.peers.get(&peer) {
            return index;
        }
        let connection = Connection::Peer(PeerConnection {
            peer,
            stream: None,
            state: PeerState::Idle,
            out: OutBuffer::default(),
            backoff_ms: RECONNECT_INITIAL_MS,
        });
        match self.insert(connection) {
            Some(index) => {
                self.peers.insert(peer, index);
                index
            }
            None => usize::MAX,
        }
    }

    fn send(&mut self, to: NodeId, frame: &[u8]) {
        let index = self.peer_slot(to);
        let now = self.clock.now();
        let Some(Some(Connection::Peer(connection))) = self.connections.get_mut(index) else {
            self.metrics.peer_frames_dropped += 1;
            return;
        };
        match connection.state {
            PeerState::Down { retry_at } if now < retry_at => {
                self.metrics.peer_frames_dropped += 1;
                return;
            }
            PeerState::Down { .. } => {
                connection.state = PeerState::Idle;
                self.to_connect.push(to);
            }
            PeerState::Idle => self.to_connect.push(to),
            PeerState::Connecting { .. } | PeerState::Connected => {}
        }
        if connection.out.push(frame, PEER_WRITE_BUFFER_MAX).is_err() {
            self.metrics.peer_frames_dropped += 1;
            return;
        }
        self.metrics.peer_frames_sent += 1;
        if matches!(connection.state, PeerState::Connected) {
            self.dirty.push(index);
        }
    }

    /// Opens the connections `send` and `Connect` asked for. Addresses come from the
    /// initial member list, `Connect` actions and the node's membership view.
    fn connect_pending(&mut self, node: &Node) {
        let pending = std::mem::take(&mut self.to_connect);
        let hello = if pending.is_empty() {
            None
        } else {
            self.hello_frame()
        };
        for peer in pending {
            let Some(&index) = self.peers.get(&peer) else {
                continue;
            };
            let address = node
                .membership()
                .get(peer)
                .and_then(|m| parse_address(&m.peer_address))
                .or_else(|| self.addresses.get(&peer).copied());
            let Some(Some(Connection::Peer(connection))) = self.connections.get_mut(index) else {
                continue;
            };
            if !matches!(connection.state, PeerState::Idle) {
                continue;
            }
            let Some(address) = address else {
                log::debug!("no address known for peer {}", peer.0);
                connection.out.clear();
                continue;
            };
            let mut stream = match self.transport.connect(address) {
                Ok(stream) => stream,
                Err(error) => {
                    log::debug!("connecting to peer {} at {address}: {error}", peer.0);
                    self.close(index);
                    continue;
                }
            };
            if let Err(error) = self.transport.register(&mut stream, index) {
                log::warn!("cannot register a peer connection: {error}");
                self.transport.deregister(stream);
                continue;
            }
            // The hello goes first, before frames queued while idle.
            let Some(hello) = &hello else {
                continue;
            };
            let mut out = OutBuffer::default();
            let _ = out.push(hello, usize::MAX);
            let _ = out.push(connection.out.bytes(), usize::MAX);
            connection.out = out;
            connection.stream = Some(stream);
            connection.state = PeerState::Connecting {
                since: self.clock.now(),
            };
        }
    }

    /// Closes peer connections still connecting after [`CONNECT_TIMEOUT_MS`] (a host
    /// that drops SYNs would otherwise hold frames for the OS's minutes-long timeout).
    fn abandon_slow_connects(&mut self) {
        let now = self.clock.now();
        let slow: Vec<usize> = self
            .peers
            .values()
            .copied()
            .filter(|&index| {
                matches!(
                    self.connections.get(index),
                    Some(Some(Connection::Peer(PeerConnection {
                        state: PeerState::Connecting { since },
                        ..
                    }))) if now.saturating_duration_since(*since)
                        >= Duration::from_millis(CONNECT_TIMEOUT_MS)
                )
            })
            .collect();
        for index in slow {
            self.close(index);
        }
    }

    /// The `Hello` naming this node that starts every connection it opens.
    fn hello_frame(&self) -> Option<Vec<u8>> {
        let mut hello = Vec::new();
        let secret = self.settings.peer_secret.as_deref().unwrap_or("");
        let message = Message::Hello {
            node: self.node_id,
            proof: wire::hello_proof(secret.as_bytes(), self.cluster_id, self.node_id),
        };
        wire::encode_frame(&mut hello, self.cluster_id, &message).ok()?;
        Some(hello)
    }

    fn introduce(&mut self, address: &[u8], frame: &[u8]) {
        let Some(address) = parse_address(address) else {
            log::warn!(
                "seed address {:?} is not ip:port",
                String::from_utf8_lossy(address)
            );
            return;
        };
        if self.introductions >= INTRODUCTIONS_MAX {
            return;
        }
        let stream = match self.transport.connect(address) {
            Ok(stream) => stream,
            Err(error) => {
                log::debug!("seed {address} unreachable: {error}");
                return;
            }
        };
        let mut out = OutBuffer::default();
        let Some(hello) = self.hello_frame() else {
            return;
        };
        let _ = out.push(&hello, usize::MAX);
        let _ = out.push(frame, PEER_WRITE_BUFFER_MAX);
        if self
            .insert(Connection::Introduction(Introduction { stream, out }))
            .is_some()
        {
            self.introductions += 1;
        }
    }

    /// Files a reply in its connection's pipeline and releases what is in order.
    fn deliver(&mut self, client: ClientId, tag: u64, bytes: &[u8], close: bool) {
        let index = (client.0 & 0xffff_ffff) as usize;
        let generation = (client.0 >> 32) as u32;
        let now = self.clock.now();
        let Some(Some(Connection::Client(connection))) = self.connections.get_mut(index) else {
            return; // the client went away
        };
        if connection.generation != generation {
            return;
        }
        // RESP3's null is `_`; RESP2's `$-1` only ever comes as a whole reply (a GET
        // that found nothing), so the swap is exact.
        let bytes = if connection.session.resp3() && bytes == b"$-1\r\n" {
            b"_\r\n"
        } else {
            bytes
        };
        let mut overflow = false;
        let out = &mut connection.out;
        let filed = connection.session.finish(tag, bytes, close, |reply| {
            overflow |= out.push(reply, CLIENT_WRITE_BUFFER_MAX).is_err();
        });
        let Some(finished) = filed else {
            return;
        };
        let latency_us = now.saturating_duration_since(finished.started).as_micros();
        self.metrics
            .record(finished.kind, u64::try_from(latency_us).unwrap_or(u64::MAX));
        if overflow {
            log::warn!("closing a client that does not read its replies");
            connection.out.clear();
            connection.closing = true;
        }
        connection.closing |= finished.closing;
        if finished.resume {
            self.again.push(index);
        }
        self.dirty.push(index);
    }

    fn clients_flushed(&self) -> bool {
        self.connections.iter().flatten().all(|c| match c {
            Connection::Client(c) => c.out.is_empty() && !self.transport.sending(&c.stream),
            _ => true,
        })
    }

    /// Writes every connection that has bytes waiting.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.transport.flush_started(dirty.len());
        for &index in &dirty {
            let Some(Some(connection)) = self.connections.get_mut(index) else {
                continue;
            };
            let transport = &mut self.transport;
            let close = match connection {
                Connection::Client(c) => match transport.flush(&mut c.stream, &mut c.out) {
                    Ok(true) => c.closing && c.session.is_idle(),
                    Ok(false) => false,
                    Err(_) => true,
                },
                Connection::Peer(p) => match (&p.state, p.stream.as_mut()) {
                    (PeerState::Connected, Some(stream)) => {
                        let before = p.out.write_calls;
                        let flushed = transport.flush(stream, &mut p.out);
                        self.metrics.peer_write_calls += p.out.write_calls - before;
                        if let Err(error) = &flushed {
                            log::info!("connection to peer {} lost: {error}", p.peer.0);
                        }
                        flushed.is_err()
                    }
                    _ => false,
                },
                Connection::Introduction(i) => {
                    !matches!(transport.flush(&mut i.stream, &mut i.out), Ok(false))
                }
                Connection::Inbound(_) => false,
            };
            if close {
                self.close(index);
            }
        }
        self.transport.flush_finished();
        dirty.clear();
        self.dirty = dirty;
    }

    fn compacted(&mut self, result: Result<ringkv_storage::CompactionProgress, String>) {
        self.compaction_busy = false;
        self.compaction_active = matches!(
            result,
            Ok(ringkv_storage::CompactionProgress::Copied { .. })
        );
        self.compaction_note = match result {
            Ok(ringkv_storage::CompactionProgress::Idle) => "idle".to_owned(),
            Ok(ringkv_storage::CompactionProgress::Copied { bytes }) => {
                format!("copying ({bytes} bytes this slice)")
            }
            Ok(ringkv_storage::CompactionProgress::Finished {
                sources,
                reclaimed_bytes,
            }) => format!("finished {sources} segments, reclaimed {reclaimed_bytes} bytes"),
            Err(error) => {
                log::warn!("compaction failed: {error}");
                format!("failed: {error}")
            }
        };
    }
}

/// Opens the data store the executor serves, as the settings size it.
fn start_storage(
    settings: &Settings,
    config: &ringkv_core::node::Config,
    wake: impl Fn() + Send + Sync + 'static,
) -> Result<Executor, ServerError> {
    let sizes = StoreSizes {
        durability: settings.durability,
        data_segment_size_bytes: settings.segment_size_bytes,
        checkpoint_interval_bytes: settings.checkpoint_interval_bytes,
        record_size_bytes_max: config.wire_limits.versions_size_bytes_max,
    };
    let executor = Executor::start(
        settings.data_dir(),
        sizes,
        config.storage_operations_max as usize,
        wake,
    )
    .map_err(ServerError::Storage)?;
    if !settings.durability.acknowledges_after_sync() {
        log::warn!(
            "durability {}: acknowledged writes can be lost on power failure",
            settings.durability
        );
    }
    Ok(executor)
}

impl<T: Transport> Io<T> {
    /// The shell's side of `node`: no connections yet.
    fn new(
        transport: T,
        clock: Clock,
        executor: Executor,
        settings: Settings,
        node: &Node,
    ) -> Io<T> {
        let addresses = settings
            .members
            .iter()
            .map(|m| (m.id, m.peer_address))
            .collect();
        Io {
            transport,
            clock,
            executor,
            node_id: node.id(),
            cluster_id: node.config().cluster_id,
            wire_limits: node.wire_limits(),
            resp_limits: RespLimits::default(),
            value_size_bytes_max: node.config().value_size_bytes_max,
            connections: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            peers: HashMap::new(),
            addresses,
            clients: 0,
            inbound: 0,
            introductions: 0,
            dirty: Vec::new(),
            again: Vec::new(),
            to_connect: Vec::new(),
            link_events: Vec::new(),
            metrics: Metrics::default(),
            scratch: Vec::new(),
            compaction_busy: false,
            compaction_active: false,
            compaction_note: "idle".to_owned(),
            settings,
        }
    }
}
