//! The fault proxy: a small TCP forwarder in front of every node's peer port, which a
//! test tells to cut, delay or drop what one node sends another, and to heal.
//!
//! Every node advertises its proxy's address (`--peer-advertise-address`) instead of
//! its own peer port, so every frame between two nodes crosses the proxy of the node
//! it is sent to. Peer connections are one-way (a node sends on the connections it
//! opened and receives on those others opened, design.md section 5), and each starts
//! with a `Hello` naming its sender: so the proxy of node B learns, per connection,
//! that it carries A's frames to B, and a rule for the link A -> B applies to exactly
//! those connections. Cutting A -> B leaves B -> A alone; cutting both is two rules.
//!
//! Rules act on whole frames (the proxy splits the stream by the frame length prefix),
//! so the stream stays well formed whatever is dropped, and the nodes see what a lossy
//! network shows them: frames that never arrive, or arrive late. A connection stays
//! open through a cut, so a node learns of it only from its own timeouts and probes,
//! as it would from a silent network.
//!
//! - `Open`: forwarded as it comes.
//! - `Cut`: every frame discarded.
//! - `Drop(p)`: each frame discarded with probability `p`, drawn from the network's
//!   seed (the test prints it), per connection.
//! - `Delay(ms)`: each frame forwarded `ms` after it arrived, in order.
//!
//! Bytes the other way (a node never sends on a connection it accepted, but a proxy is
//! a forwarder) are copied as they are. A stream that does not start with a frame of
//! this cluster (another cluster, garbage) is forwarded raw, whatever the rules.
//!
//! Bounds: each connection holds at most [`QUEUED_FRAMES_MAX`] frames between its
//! reader and its writer; a full queue makes the reader wait (backpressure, as TCP
//! would). Threads stop within [`POLL_MS`] of [`ProxyNetwork::stop`] or drop.

use ringkv_core::random::Rng;
use ringkv_core::version::NodeId;
use ringkv_core::wire::{Message, WireLimits, decode_frame};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a blocked thread looks at the stop flag.
pub const POLL_MS: u64 = 50;
/// Frames queued per connection between reading and writing.
pub const QUEUED_FRAMES_MAX: usize = 1024;
/// Bytes read at once.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// What happens to the frames one node sends another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Open,
    Cut,
    /// Each frame lost with this probability (0 to 1).
    Drop(f64),
    /// Each frame held this long.
    Delay(Duration),
}

/// Frames seen on one link (sender -> receiver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    pub forwarded: u64,
    pub discarded: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// (from, to) -> rule; absent is `Open`.
    rules: BTreeMap<(NodeId, NodeId), Rule>,
    counts: BTreeMap<(NodeId, NodeId), LinkCounts>,
}

/// The proxies of one cluster, and the rules they follow.
#[derive(Debug)]
pub struct ProxyNetwork {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    addresses: BTreeMap<NodeId, SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

/// One proxy to start: for node `node`, listening on `listen`, forwarding to `target`
/// (the node's own peer address).
#[derive(Clone, Copy, Debug)]
pub struct ProxySpec {
    pub node: NodeId,
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

impl ProxyNetwork {
    /// Starts one proxy per spec. Frames are read as the peer protocol of
    /// `cluster_id`; `seed` draws the `Drop` losses.
    pub fn start(cluster_id: u64, specs: &[ProxySpec], seed: u64) -> io::Result<ProxyNetwork> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut addresses = BTreeMap::new();
        for spec in specs {
            let listener = TcpListener::bind(spec.listen)?;
            listener.set_nonblocking(true)?;
            addresses.insert(spec.node, listener.local_addr()?);
            let context = Context {
                cluster_id,
                to: spec.node,
                target: spec.target,
                shared: Arc::clone(&shared),
                stop: Arc::clone(&stop),
                seed,
                connections: Arc::clone(&connections),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{}", spec.node.0))
                    .spawn(move || accept_loop(listener, context))?,
            );
        }
        Ok(ProxyNetwork {
            shared,
            stop,
            seed,
            addresses,
            threads,
        })
    }

    /// The seed the losses are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Where node `node`'s proxy listens.
    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.addresses.get(&node).copied()
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A proxy thread never panics while holding the lock (it only reads a map).
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the rule of the link `from` -> `to`.
    pub fn set(&self, from: NodeId, to: NodeId, rule: Rule) {
        let mut shared = self.shared();
        if rule == Rule::Open {
            shared.rules.remove(&(from, to));
        } else {
            shared.rules.insert((from, to), rule);
        }
    }

    /// Cuts `from` -> `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.set(from, to, Rule::Cut);
    }

    /// Cuts every link between a node of `side` and a node of `other`, both ways.
    pub fn partition(&self, side: &[NodeId], other: &[NodeId]) {
        for &a in side {
            for &b in other {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    /// Every link open again.
    pub fn heal(&self) {
        self.shared().rules.clear();
    }

    /// What crossed the link `from` -> `to` so far.
    pub fn counts(&self, from: NodeId, to: NodeId) -> LinkCounts {
        self.shared()
            .counts
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Frames discarded on every link so far.
    pub fn discarded_total(&self) -> u64 {
        self.shared().counts.values().map(|c| c.discarded).sum()
    }

    /// Stops every proxy thread (connections are closed).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for ProxyNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Debug)]
struct Context {
    cluster_id: u64,
    to: NodeId,
    target: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    connections: Arc<AtomicU64>,
}

impl Context {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The rule for `from`'s frames, counting the frame as forwarded or not by `keep`.
    fn decide(&self, from: NodeId, rng: &mut Rng) -> (bool, Option<Duration>) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let rule = shared
            .rules
            .get(&(from, self.to))
            .copied()
            .unwrap_or(Rule::Open);
        let (keep, delay) = match rule {
            Rule::Open => (true, None),
            Rule::Cut => (false, None),
            Rule::Drop(probability) => (!rng.chance(probability), None),
            Rule::Delay(delay) => (true, Some(delay)),
        };
        let counts = shared.counts.entry((from, self.to)).or_default();
        if keep {
            counts.forwarded += 1;
        } else {
            counts.discarded += 1;
        }
        (keep, delay)
    }
}

fn accept_loop(listener: TcpListener, context: Context) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !context.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                let context = context.clone();
                if let Ok(handle) = std::thread::Builder::new()
                    .name(format!("proxy-{}-conn", context.to.0))
                    .spawn(move || forward_connection(stream, context))
                {
                    pumps.push(handle);
                }
                pumps.retain(|handle| !handle.is_finished());
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(POLL_MS)),
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// One frame on its way, or raw bytes of a stream that is not ours.
struct Outgoing {
    bytes: Vec<u8>,
    due: Instant,
}

fn forward_connection(source: TcpStream, context: Context) {
    let Ok(target) = TcpStream::connect_timeout(&context.target, Duration::from_secs(1)) else {
        let _ = source.shutdown(Shutdown::Both);
        return;
    };
    let _ = source.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let poll = Some(Duration::from_millis(POLL_MS));
    if source.set_read_timeout(poll).is_err() || target.set_read_timeout(poll).is_err() {
        return;
    }
    let (Ok(source_back), Ok(target_writer)) = (source.try_clone(), target.try_clone()) else {
        return;
    };
    let (sender, receiver) = sync_channel::<Outgoing>(QUEUED_FRAMES_MAX);
    let writer = {
        let stop = Arc::clone(&context.stop);
        std::thread::spawn(move || write_frames(receiver, target_writer, &stop))
    };
    let back = {
        let stop = Arc::clone(&context.stop);
        std::thread::spawn(move || copy_raw(target, source_back, &stop))
    };
    let number = context.connections.fetch_add(1, Ordering::Relaxed);
    let rng = Rng::new(context.seed ^ (number.wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    read_frames(source, &context, sender, rng);
    let _ = writer.join();
    let _ = back.join();
}

/// Reads the sender's stream, splits it into frames and queues those the rules keep.
fn read_frames(
    mut source: TcpStream,
    context: &Context,
    sender: SyncSender<Outgoing>,
    mut rng: Rng,
) {
    let limits = WireLimits::default();
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // None until the first frame named its sender; Err(()) once the stream is not ours.
    let mut from: Option<Result<NodeId, ()>> = None;
    while !context.stopped() {
        let read = match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        buffer.extend_from_slice(&chunk[..read]);
        let now = Instant::now();
        loop {
            if matches!(from, Some(Err(()))) {
                let bytes = std::mem::take(&mut buffer);
                if !bytes.is_empty() && !queue(&sender, bytes, now, context) {
                    return;
                }
                break;
            }
            let length = match frame_length(&buffer, limits) {
                Next::Incomplete => break, // the rest is still on its way
                Next::NotOurs => {
                    from = Some(Err(()));
                    continue;
                }
                Next::Frame(length) => length,
            };
            let frame: Vec<u8> = buffer.drain(..length).collect();
            let sender_id = match from {
                Some(Ok(id)) => id,
                _ => match decode_frame(&frame, context.cluster_id, limits) {
                    Ok((Message::Hello { node, .. }, _)) => {
                        from = Some(Ok(node));
                        node
                    }
                    Ok(_) | Err(_) => {
                        from = Some(Err(()));
                        if !queue(&sender, frame, now, context) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let (keep, delay) = context.decide(sender_id, &mut rng);
            if keep && !queue(&sender, frame, now + delay.unwrap_or_default(), context) {
                return;
            }
        }
    }
}

/// What the start of a stream buffer holds.
enum Next {
    /// Less than one whole frame.
    Incomplete,
    /// A whole frame of this many bytes, its length prefix included.
    Frame(usize),
    /// A length prefix over the frame limit: not the peer protocol.
    NotOurs,
}

fn frame_length(buffer: &[u8], limits: WireLimits) -> Next {
    let Some(prefix) = buffer.get(..4) else {
        return Next::Incomplete;
    };
    let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize + 4;
    if length > limits.frame_size_bytes_max {
        Next::NotOurs
    } else if buffer.len() < length {
        Next::Incomplete
    } else {
        Next::Frame(length)
    }
}

/// Queues bytes for the writer, waiting while the queue is full; false once stopped
/// or the writer is gone.
fn queue(sender: &SyncSender<Outgoing>, bytes: Vec<u8>, due: Instant, context: &Context) -> bool {
    let mut item = Outgoing { bytes, due };
    loop {
        match sender.try_send(item) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                if context.stopped() {
                    return false;
                }
                item = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// Writes queued frames to the receiving node, each not before it is due.
fn write_frames(receiver: Receiver<Outgoing>, mut target: TcpStream, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let item = match receiver.recv_timeout(Duration::from_millis(POLL_MS)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        while let Some(wait) = item.due.checked_duration_since(Instant::now()) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(POLL_MS)));
        }
        if target.write_all(&item.bytes).is_err() {
            break;
        }
    }
    let _ = target.shutdown(Shutdown::Both);
}

/// Copies the receiving node's bytes (if any) back to the sender as they are.
fn copy_raw(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool) {
    let mut chunk = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => {
                if to.write_all(&chunk[..read]).is_err() {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::wire::encode_frame;

    const CLUSTER: u64 = 9;

    fn frame(message: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, CLUSTER, message).unwrap();
        out
    }

    /// A stand-in for node 2's peer port behind a proxy, and a sender that says it is
    /// node 1.
    struct Bench {
        network: ProxyNetwork,
        receiver: TcpStream,
        sender: TcpStream,
    }

    /// A proxy for node 2, in front of a listener that stands in for its peer port.
    fn proxy_to_node_2() -> (TcpListener, ProxyNetwork) {
        let node = TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = ProxySpec {
            node: NodeId(2),
            listen: "127.0.0.1:0".parse().unwrap(),
            target: node.local_addr().unwrap(),
        };
        let network = ProxyNetwork::start(CLUSTER, &[spec], 7).unwrap();
        (node, network)
    }

    fn bench() -> Bench {
        let (node, network) = proxy_to_node_2();
        let mut sender = TcpStream::connect(network.address(NodeId(2)).unwrap()).unwrap();
        let hello = frame(&Message::Hello {
            node: NodeId(1),
            proof: 0,
        });
        sender.write_all(&hello).unwrap();
        let (mut receiver, _) = node.accept().unwrap();
        // The hello is through before any rule is set.
        receiver
            .set_read_timeout(Some(Duration::from_millis(2_000)))
            .unwrap();
        let mut through = vec![0u8; hello.len()];
        receiver.read_exact(&mut through).unwrap();
        assert_eq!(through, hello);
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        Bench {
            network,
            receiver,
            sender,
        }
    }

    /// Every ping nonce that arrives within the read timeout.
    fn received(receiver: &mut TcpStream) -> Vec<u64> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(read) = receiver.read(&mut chunk) {
            if read == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..read]);
        }
        let mut nonces = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (message, used) = decode_frame(rest, CLUSTER, WireLimits::default()).unwrap();
            if let Message::Ping { nonce } = message {
                nonces.push(nonce);
            }
            rest = &rest[used..];
        }
        nonces
    }

    fn ping(sender: &mut TcpStream, nonces: std::ops::Range<u64>) {
        let mut bytes = Vec::new();
        for nonce in nonces {
            bytes.extend(frame(&Message::Ping { nonce }));
        }
        // In odd pieces, so frames arrive split.
        for piece in bytes.chunks(7) {
            sender.write_all(piece).unwrap();
        }
    }

    #[test]
    fn a_cut_link_loses_whole_frames_and_heals() {
        let mut bench = bench();
        ping(&mut bench.sender, 0..10);
        assert_eq!(received(&mut bench.receiver), (0..10).collect::<Vec<_>>());
        bench.network.cut(NodeId(1), NodeId(2));
        ping(&mut bench.sender, 10..20);
        assert_eq!(received(&mut bench.receiver), Vec::<u64>::new());
        // The other direction's rule does not touch this link.
        bench.network.heal();
        bench.network.cut(NodeId(2), NodeId(1));
        ping(&mut bench.sender, 20..30);
        assert_eq!(received(&mut bench.receiver), (20..30).collect::<Vec<_>>());
        let counts = bench.network.counts(NodeId(1), NodeId(2));
        // The hello and 20 pings forwarded, 10 pings discarded.
        assert_eq!((counts.forwarded, counts.discarded), (21, 10));
    }

    #[test]
    fn a_lossy_link_drops_some_frames_and_keeps_the_stream_whole() {
        let mut bench = bench();
        bench.network.set(NodeId(1), NodeId(2), Rule::Drop(0.5));
        ping(&mut bench.sender, 0..400);
        let got = received(&mut bench.receiver); // decodes: no torn frame
        assert!(got.len() > 100 && got.len() < 300, "{} of 400", got.len());
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn a_delayed_link_delivers_late_and_in_order() {
        let mut bench = bench();
        bench.network.set(
            NodeId(1),
            NodeId(2),
            Rule::Delay(Duration::from_millis(400)),
        );
        let sent = Instant::now();
        ping(&mut bench.sender, 0..5);
        bench
            .receiver
            .set_read_timeout(Some(Duration::from_millis(1_000)))
            .unwrap();
        let mut first = [0u8; 1];
        bench.receiver.read_exact(&mut first).unwrap();
        assert!(sent.elapsed() >= Duration::from_millis(400));
    }

    #[test]
    fn a_stream_that_is_not_the_peer_protocol_passes_raw() {
        let (node, network) = proxy_to_node_2();
        network.cut(NodeId(1), NodeId(2));
        let mut sender = TcpStream::connect(network.address(NodeId(2)).unwrap()).unwrap();
        sender.write_all(b"\xff\xff\xff\xffgarbage").unwrap();
        let (mut receiver, _) = node.accept().unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(1_000)))
            .unwrap();
        let mut got = [0u8; 11];
        receiver.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\xff\xff\xff\xffgarbage");
    }
}
