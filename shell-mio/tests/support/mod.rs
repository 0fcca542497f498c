//! Real `ringkv-node` processes on 127.0.0.1 for tests: start, kill -9, stop
//! gracefully, restart, and talk to them. Nodes are started exactly as
//! `ringkv-node dev` starts them (`ringkv_mio::dev::node_arguments`). Ports come from a
//! per-process range checked free before use. Every wait is bounded; when a test
//! panics, the tail of each node's log is printed.
#![allow(dead_code)] // each test file uses a different part

use ringkv_client::{Client, ClientOptions, Reply};
use ringkv_mio::dev;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ringkv-node");
/// Ports for this test process: 40 per cluster, from a base that depends on the pid so
/// two test processes rarely collide (and free ports are checked anyway).
static NEXT_BASE: AtomicU16 = AtomicU16::new(0);

fn free_base(ports: u16) -> u16 {
    if NEXT_BASE.load(Ordering::Relaxed) == 0 {
        let start = 20_000 + (std::process::id() % 400) as u16 * 50;
        let _ = NEXT_BASE.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..200 {
        let base = NEXT_BASE.fetch_add(ports, Ordering::Relaxed);
        let all_free = (base..base + ports)
            .all(|port| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range on 127.0.0.1");
}

/// A local cluster of real processes.
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub base_port: u16,
    pub nodes: u16,
    extra: Vec<String>,
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// Starts `nodes` nodes with `extra` flags each and waits until all answer PING.
    pub fn start(nodes: u16, extra: &[&str]) -> LocalCluster {
        let mut cluster = LocalCluster {
            dir: tempfile::tempdir().expect("temporary directory"),
            // Room for two more nodes than it starts with (joiners).
            base_port: free_base(2 * nodes + 4),
            nodes,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            children: (0..nodes).map(|_| None).collect(),
        };
        for index in 0..nodes {
            cluster.spawn(index);
        }
        for index in 0..nodes {
            cluster.wait_ready(index);
        }
        cluster
    }

    fn spawn(&mut self, index: u16) {
        let arguments = dev::node_arguments(index, self.nodes, self.base_port, self.dir.path());
        self.spawn_with(index, arguments);
    }

    /// Adds node `index` (id `index + 1`, the next one) started with `arguments`
    /// instead of the cluster's member list (for a node that joins through seeds).
    pub fn add_node(&mut self, arguments: Vec<String>) -> u16 {
        let index = self.nodes;
        self.nodes += 1;
        self.children.push(None);
        self.spawn_with(index, arguments);
        self.wait_ready(index);
        index
    }

    fn spawn_with(&mut self, index: u16, arguments: Vec<String>) {
        let log_path = self.log_path(index);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("node log");
        let child = Command::new(BINARY)
            .args(arguments)
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start ringkv-node");
        self.children[usize::from(index)] = Some(child);
    }

    pub fn log_path(&self, index: u16) -> PathBuf {
        dev::log_path(self.dir.path(), index + 1)
    }

    pub fn client_address(&self, index: u16) -> SocketAddr {
        dev::client_address(self.base_port, index)
    }

    /// Waits (at most 20 s) until node `index` answers PING.
    pub fn wait_ready(&mut self, index: u16) {
        let address = self.client_address(index);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dev::answers_ping(address) {
            if let Some(Some(child)) = self.children.get_mut(usize::from(index)) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("node {} exited with {status} before serving", index + 1);
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not start",
                index + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn kill(&mut self, index: u16) {
        if let Some(mut child) = self.children[usize::from(index)].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns whether the node exited 0 within 10 s.
    pub fn stop(&mut self, index: u16) -> bool {
        match self.children[usize::from(index)].take() {
            Some(mut child) => dev::stop_gracefully(&mut child, Duration::from_secs(10)),
            None => false,
        }
    }

    /// Starts node `index` again on its data directory and waits until it serves.
    pub fn restart(&mut self, index: u16) {
        self.spawn(index);
        self.wait_ready(index);
    }

    /// A client that talks to every node, node `first` first.
    pub fn client(&self, first: u16) -> Client {
        let mut addresses: Vec<SocketAddr> =
            (0..self.nodes).map(|i| self.client_address(i)).collect();
        addresses.rotate_left(usize::from(first));
        Client::with_options(addresses, ClientOptions::default()).expect("addresses")
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

    pub fn data_dir(&self, index: u16) -> PathBuf {
        self.dir.path().join(format!("node-{}", index + 1))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes {
            self.kill(index);
        }
        if std::thread::panicking() {
            for index in 0..self.nodes {
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
