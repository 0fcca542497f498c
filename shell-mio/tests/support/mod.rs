//! Real node processes on 127.0.0.1 for tests: a [`ProcessCluster`] (the one
//! `ringkv-node dev` uses) in a temporary directory, on ports checked free, with the
//! tail of every node's log printed when a test panics. Every wait is bounded.
//!
//! Every test runs against both binaries, `ringkv-node` (mio) and `ringkv-node-uring`
//! (also on its single-shot fallbacks): a test is a function of the [`Binary`], and
//! [`both_binaries!`] declares the `#[test]`s (`<test>::mio`, `<test>::uring`,
//! `<test>::uring_fallback`). The uring binary is a sibling of
//! `ringkv-node` in the target directory; `cargo test --workspace` builds it (the
//! ringkv-uring package has integration tests of its own).
#![allow(dead_code)] // each test file uses a different part

use ringkv_client::{Client, Reply};
use ringkv_core::version::NodeId;
use ringkv_frontend::dev::{self, LaunchOptions, ProcessCluster};
use ringkv_tests::reliability::proxy::{ProxyNetwork, ProxySpec};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const MIO_BINARY: &str = env!("CARGO_BIN_EXE_ringkv-node");

/// Which node binary a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Mio,
    Uring,
    /// `ringkv-node-uring` on its single-shot fallbacks (`RINGKV_URING_FALLBACK=1`),
    /// as on a kernel without multishot accepts, receives and buffer rings.
    UringFallback,
}

impl Binary {
    pub fn path(self) -> PathBuf {
        let mio = PathBuf::from(MIO_BINARY);
        match self {
            Binary::Mio => mio,
            Binary::Uring | Binary::UringFallback => {
                let uring = mio.with_file_name("ringkv-node-uring");
                assert!(
                    uring.exists(),
                    "{} is not built: run `cargo test --workspace` or `cargo build -p ringkv-uring` first",
                    uring.display()
                );
                uring
            }
        }
    }
}

/// Declares, for each named test function taking a [`Binary`], a module of that name
/// with one `#[test]` per binary (and the uring binary's fallback mode).
#[macro_export]
macro_rules! both_binaries {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn mio() {
                    super::$name($crate::support::Binary::Mio)
                }
                #[test]
                fn uring() {
                    super::$name($crate::support::Binary::Uring)
                }
                #[test]
                fn uring_fallback() {
                    super::$name($crate::support::Binary::UringFallback)
                }
            }
        )*
    };
}
/// Ports come in slots of [`SLOT_PORTS`] from [`FIRST_PORT`]. A cluster holds its
/// slot for its whole life through an exclusive lock on a file named after the slot,
/// so concurrent test processes (nextest runs each test in its own) never share ports,
/// also while one of them has a node down (its ports look free then). Each process
/// starts looking at a slot that depends on its pid.
const SLOT_PORTS: u16 = 24;
const FIRST_PORT: u16 = 20_000;
/// Every slot lies below 32768, where Linux's ephemeral ports start
/// (`net.ipv4.ip_local_port_range`): an outgoing connection (a node to a peer, a proxy
/// to a node) can never take a port a cluster of another test is about to bind, or
/// one a killed node must bind again on restart.
const SLOTS: u16 = 500;
static NEXT_SLOT: AtomicU16 = AtomicU16::new(u16::MAX);

/// A slot of ports held for a cluster's life.
pub struct PortSlot {
    pub base: u16,
    _lock: std::fs::File,
}

pub fn port_slot(ports: u16) -> PortSlot {
    assert!(ports <= SLOT_PORTS, "{ports} ports do not fit a slot");
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    let _ = NEXT_SLOT.compare_exchange(u16::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    let locks = std::env::temp_dir().join("ringkv-test-ports");
    std::fs::create_dir_all(&locks).expect("port lock directory");
    for _ in 0..SLOTS {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
        let file = std::fs::File::create(locks.join(format!("slot-{slot}"))).expect("lock file");
        let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        if locked.is_err() {
            continue; // another process's cluster
        }
        let base = FIRST_PORT + slot * SLOT_PORTS;
        let all_free = (base..base + ports)
            .all(|port| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
        if all_free {
            return PortSlot { base, _lock: file };
        }
    }
    panic!("no free port range on 127.0.0.1");
}

/// A local cluster of real processes in a temporary directory.
pub struct LocalCluster {
    pub cluster: ProcessCluster,
    /// The fault proxies in front of every node's peer port, when started with them.
    pub proxies: Option<ProxyNetwork>,
    _dir: tempfile::TempDir,
    _ports: PortSlot,
}

impl LocalCluster {
    /// Starts `nodes` nodes of `binary` with `extra` flags each and waits until all
    /// answer PING.
    pub fn start(binary: Binary, nodes: u16, extra: &[&str]) -> LocalCluster {
        LocalCluster::start_with(binary, nodes, extra, None, Vec::new())
    }

    /// Like [`LocalCluster::start`], with a fault proxy in front of every node's peer
    /// port: every frame between two nodes crosses the receiver's proxy, which the test
    /// controls through [`LocalCluster::proxies`]. `seed` draws the proxies' losses.
    pub fn start_behind_proxies(
        binary: Binary,
        nodes: u16,
        extra: &[&str],
        seed: u64,
    ) -> LocalCluster {
        LocalCluster::start_with(binary, nodes, extra, Some(seed), Vec::new())
    }

    /// Like [`LocalCluster::start_behind_proxies`], some nodes run under a wrapper
    /// command (see `LaunchOptions::wrappers`).
    pub fn start_wrapped(
        binary: Binary,
        nodes: u16,
        extra: &[&str],
        seed: u64,
        wrappers: Vec<(u16, Vec<String>)>,
    ) -> LocalCluster {
        LocalCluster::start_with(binary, nodes, extra, Some(seed), wrappers)
    }

    fn start_with(
        binary: Binary,
        nodes: u16,
        extra: &[&str],
        proxy_seed: Option<u64>,
        wrappers: Vec<(u16, Vec<String>)>,
    ) -> LocalCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Room for two more nodes than it starts with (joiners), and a proxy per node.
        let ports = port_slot(3 * nodes + 4);
        let base_port = ports.base;
        // A cluster id of its own: nodes of another test's cluster that happen to land
        // on a neighbouring port are refused as foreign, never taken for members.
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        extra.extend(["--cluster-id".to_owned(), base_port.to_string()]);
        let password = extra.iter().any(|flag| flag == "--requirepass");
        let environment = match binary {
            Binary::UringFallback => vec![("RINGKV_URING_FALLBACK".to_owned(), "1".to_owned())],
            _ => Vec::new(),
        };
        let cluster_id = u64::from(base_port);
        let proxies = proxy_seed.map(|seed| {
            let specs: Vec<ProxySpec> = (0..nodes)
                .map(|index| ProxySpec {
                    node: NodeId(u64::from(index) + 1),
                    listen: SocketAddr::from(([127, 0, 0, 1], base_port + 2 * nodes + 4 + index)),
                    target: dev::peer_address(base_port, index),
                })
                .collect();
            ProxyNetwork::start(cluster_id, &specs, seed).expect("fault proxies")
        });
        let options = LaunchOptions {
            extra,
            environment,
            advertised_peer_addresses: proxies.as_ref().map_or_else(Vec::new, |proxies| {
                (0..nodes)
                    .filter_map(|index| proxies.address(NodeId(u64::from(index) + 1)))
                    .collect()
            }),
            wrappers,
        };
        let cluster =
            ProcessCluster::launch(&binary.path(), nodes, base_port, dir.path(), &options)
                .unwrap_or_else(|error| panic!("cluster start: {error}"));
        let local = LocalCluster {
            cluster,
            proxies,
            _dir: dir,
            _ports: ports,
        };
        // A node answers PING before it has heard from its peers; a test that reads at
        // R=N right away would be refused as if a replica were down (CI saw "read
        // cannot reach 3 replicas" on a fresh cluster). A password keeps INFO out, and
        // the only such cluster has one node.
        if nodes > 1
            && !password
            && !local.all_reachable(Duration::from_millis(dev::START_TIMEOUT_MS))
        {
            panic!("cluster start: not every node sees every member reachable");
        }
        local
    }

    /// Waits (at most `timeout`) until every node reports in INFO every member
    /// reachable and a link up to each of the others; false if one never did. (A node
    /// believes a peer up until a connection to it fails, so the count of reachable
    /// members alone passes before the first connections were even tried.)
    pub fn all_reachable(&self, timeout: Duration) -> bool {
        let nodes = self.nodes();
        eventually(timeout, || {
            (0..nodes).all(|index| {
                self.info_field(index, "members_reachable").as_deref()
                    == Some(nodes.to_string().as_str())
                    && self.info_field(index, "peer_links_up").as_deref()
                        == Some((nodes - 1).to_string().as_str())
            })
        })
    }

    pub fn nodes(&self) -> u16 {
        self.cluster.nodes()
    }

    /// The cluster id its nodes were started with.
    pub fn cluster_id(&self) -> u64 {
        u64::from(self.base_port())
    }

    pub fn base_port(&self) -> u16 {
        self.cluster.base_port()
    }

    pub fn log_path(&self, index: u16) -> PathBuf {
        self.cluster.log_path(index)
    }

    pub fn data_dir(&self, index: u16) -> PathBuf {
        dev::data_dir(self.cluster.dir(), index + 1)
    }

    pub fn client_address(&self, index: u16) -> SocketAddr {
        self.cluster.client_address(index)
    }

    pub fn kill(&mut self, index: u16) {
        self.cluster.kill(index);
    }

    /// SIGTERM; returns whether the node exited 0 within 10 s.
    pub fn stop(&mut self, index: u16) -> bool {
        self.cluster.stop(index)
    }

    pub fn restart(&mut self, index: u16) {
        self.cluster
            .restart(index)
            .unwrap_or_else(|error| panic!("restart: {error}"));
    }

    /// Adds a node that joins through node 1 as its seed.
    pub fn add_joiner(&mut self, extra: &[&str]) -> u16 {
        let index = self.nodes();
        let mut arguments = dev::joiner_arguments(index, self.base_port(), self.cluster.dir());
        arguments.extend(extra.iter().map(|s| (*s).to_owned()));
        self.cluster
            .add_node(arguments)
            .unwrap_or_else(|error| panic!("add node: {error}"))
    }

    /// A client that talks to every node, node `first` first.
    pub fn client(&self, first: u16) -> Client {
        let mut addresses = self.cluster.client_addresses();
        addresses.rotate_left(usize::from(first));
        Client::new(addresses).expect("addresses")
    }

    /// A client of node `index` alone (no failover).
    pub fn client_of(&self, index: u16) -> Client {
        Client::new([self.client_address(index)]).expect("address")
    }

    /// One field of node `index`'s INFO.
    pub fn info_field(&self, index: u16, field: &str) -> Option<String> {
        let reply = self.client_of(index).command(&[b"INFO"]).ok()?;
        let Reply::Bulk(Some(text)) = reply else {
            return None;
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(str::to_owned)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for index in 0..self.nodes() {
                let log = std::fs::read_to_string(self.log_path(index)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!("--- node {} log (last lines) ---", index + 1);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Waits until `condition` holds, at most `timeout`; false when it never did.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
