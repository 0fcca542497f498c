//! Local clusters of real `ringkv-node` processes on 127.0.0.1: `ringkv-node dev`, and
//! [`ProcessCluster`], which the dev command, the real-process tests and the
//! benchmark scenarios all start their clusters with.
//!
//! Node i (counted from zero, id i + 1) serves clients on `base_port + 2i` and peers on
//! `base_port + 2i + 1`; every node gets the same initial member list, so they form one
//! cluster at once. Data lives in `dir/node-<id>`, logs in `dir/node-<id>.log`.
//!
//! `ringkv-node dev` uses `--dir` (kept) or a new temporary directory (removed at exit).
//! Once every node answers PING it prints how to reach the cluster with redis-cli, then
//! waits: Ctrl-C (or SIGTERM) stops every node gracefully. A node that dies meanwhile is
//! reported.

use crate::settings::DevFlags;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a node has to answer PING after it starts.
pub const START_TIMEOUT_MS: u64 = 20_000;
/// How long a node has to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT_MS: u64 = 10_000;

/// The client address of node `index` of a local cluster.
pub fn client_address(base_port: u16, index: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], base_port + 2 * index))
}

/// The peer address of node `index` of a local cluster.
pub fn peer_address(base_port: u16, index: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], base_port + 2 * index + 1))
}

/// Where node `id`'s data lives.
pub fn data_dir(dir: &Path, id: u16) -> PathBuf {
    dir.join(format!("node-{id}"))
}

/// Where node `id`'s log goes.
pub fn log_path(dir: &Path, id: u16) -> PathBuf {
    dir.join(format!("node-{id}.log"))
}

/// The flags that start node `index` (id `index + 1`) of a local cluster of `nodes`:
/// its addresses, data directory and the shared member list. With `advertised` (one
/// address per node, say a proxy in front of each), nodes are told to reach node i at
/// `advertised[i]` instead of its own peer port.
pub fn node_arguments(
    index: u16,
    nodes: u16,
    base_port: u16,
    dir: &Path,
    advertised: &[SocketAddr],
) -> Vec<String> {
    let reach = |i: u16| {
        advertised
            .get(usize::from(i))
            .copied()
            .unwrap_or(peer_address(base_port, i))
    };
    let members: Vec<String> = (0..nodes)
        .map(|i| format!("{}@{}", i + 1, reach(i)))
        .collect();
    let mut arguments = own_arguments(index, base_port, dir);
    arguments.extend(["--members".to_owned(), members.join(",")]);
    if let Some(address) = advertised.get(usize::from(index)) {
        arguments.extend(["--peer-advertise-address".to_owned(), address.to_string()]);
    }
    arguments
}

/// The flags of node `index` that join a running cluster through node 1 as a seed.
pub fn joiner_arguments(index: u16, base_port: u16, dir: &Path) -> Vec<String> {
    let mut arguments = own_arguments(index, base_port, dir);
    arguments.extend(["--seeds".to_owned(), peer_address(base_port, 0).to_string()]);
    arguments
}

fn own_arguments(index: u16, base_port: u16, dir: &Path) -> Vec<String> {
    vec![
        "--node-id".to_owned(),
        (index + 1).to_string(),
        "--client-address".to_owned(),
        client_address(base_port, index).to_string(),
        "--peer-address".to_owned(),
        peer_address(base_port, index).to_string(),
        "--data-dir".to_owned(),
        data_dir(dir, index + 1).to_string_lossy().into_owned(),
    ]
}

/// True once the node at `address` answers PING: with PONG, or with NOAUTH when it
/// wants a password first (it serves either way).
pub fn answers_ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}

/// Sends SIGTERM, waits up to `timeout`, then kills. Returns whether it stopped by
/// itself with status 0.
pub fn stop_gracefully(child: &mut Child, timeout: Duration) -> bool {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!("process {} exited with {status} after SIGTERM", child.id());
                }
                return status.success();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// How [`ProcessCluster::launch`] starts the nodes.
#[derive(Clone, Debug, Default)]
pub struct LaunchOptions {
    /// Flags every node gets after its own (durability, N/R/W, limits).
    pub extra: Vec<String>,
    /// Environment variables every node gets.
    pub environment: Vec<(String, String)>,
    /// Where the other nodes reach node i (`--peer-advertise-address`), when not at its
    /// own peer port: a proxy in front of each node, for fault injection. Empty: every
    /// node at its own.
    pub advertised_peer_addresses: Vec<SocketAddr>,
    /// Node index -> a command that runs the node: the node's binary and arguments
    /// are appended to it (`unshare ... sh -c '...' sh`, to give one node a
    /// filesystem of its own). The wrapper must pass SIGTERM on to the node.
    pub wrappers: Vec<(u16, Vec<String>)>,
}

/// Nodes of one local cluster, each its own process. Dropping it kills every node.
#[derive(Debug)]
pub struct ProcessCluster {
    binary: PathBuf,
    dir: PathBuf,
    base_port: u16,
    /// Flags every node gets after its own (durability, N/R/W, limits).
    extra: Vec<String>,
    /// Environment variables every node gets.
    environment: Vec<(String, String)>,
    /// Commands some nodes run under (see [`LaunchOptions::wrappers`]).
    wrappers: Vec<(u16, Vec<String>)>,
    children: Vec<Option<Child>>,
    /// Each node's own flags, kept for restarts.
    arguments: Vec<Vec<String>>,
}

impl ProcessCluster {
    /// Starts `nodes` nodes of `binary` with `extra` flags each, and waits until every
    /// one answers PING.
    pub fn start(
        binary: &Path,
        nodes: u16,
        base_port: u16,
        dir: &Path,
        extra: &[String],
    ) -> Result<ProcessCluster, String> {
        let options = LaunchOptions {
            extra: extra.to_vec(),
            ..LaunchOptions::default()
        };
        ProcessCluster::launch(binary, nodes, base_port, dir, &options)
    }

    /// Like [`ProcessCluster::start`], with more options.
    pub fn launch(
        binary: &Path,
        nodes: u16,
        base_port: u16,
        dir: &Path,
        options: &LaunchOptions,
    ) -> Result<ProcessCluster, String> {
        let LaunchOptions {
            extra,
            environment,
            advertised_peer_addresses,
            wrappers,
        } = options;
        if nodes == 0 || nodes > 64 {
            return Err("a local cluster has 1 to 64 nodes".to_owned());
        }
        if u32::from(base_port) + 2 * u32::from(nodes) + 4 > u32::from(u16::MAX) {
            return Err("the base port leaves no room for every node's two ports".to_owned());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cluster = ProcessCluster {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            base_port,
            extra: extra.to_vec(),
            environment: environment.to_vec(),
            wrappers: wrappers.clone(),
            children: Vec::new(),
            arguments: Vec::new(),
        };
        for index in 0..nodes {
            cluster.children.push(None);
            cluster.arguments.push(node_arguments(
                index,
                nodes,
                base_port,
                dir,
                advertised_peer_addresses,
            ));
            cluster.spawn(index)?;
        }
        for index in 0..nodes {
            cluster.wait_ready(index)?;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> u16 {
        self.children.len() as u16
    }

    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn client_address(&self, index: u16) -> SocketAddr {
        client_address(self.base_port, index)
    }

    pub fn client_addresses(&self) -> Vec<SocketAddr> {
        (0..self.nodes()).map(|i| self.client_address(i)).collect()
    }

    pub fn log_path(&self, index: u16) -> PathBuf {
        log_path(&self.dir, index + 1)
    }

    fn spawn(&mut self, index: u16) -> Result<(), String> {
        let slot = usize::from(index);
        let log_path = self.log_path(index);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let wrapper = self
            .wrappers
            .iter()
            .find(|(wrapped, _)| *wrapped == index)
            .and_then(|(_, wrapper)| wrapper.split_first());
        let mut command = match wrapper {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(&self.binary);
                // A group of its own, so a kill reaches the node under the wrapper.
                std::os::unix::process::CommandExt::process_group(&mut command, 0);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .args(&self.arguments[slot])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.envs(self.environment.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", index + 1))?;
        self.children[slot] = Some(child);
        Ok(())
    }

    /// Waits (at most [`START_TIMEOUT_MS`]) until node `index` answers PING.
    pub fn wait_ready(&mut self, index: u16) -> Result<(), String> {
        let address = self.client_address(index);
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        while !answers_ping(address) {
            if let Some(Some(child)) = self.children.get_mut(usize::from(index)) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "node {} exited ({status}) before it served; see {}",
                        index + 1,
                        self.log_path(index).display()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} did not answer on {address} in time",
                    index + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Adds a node started with `arguments` (for example [`joiner_arguments`]) and
    /// waits until it serves; returns its index.
    pub fn add_node(&mut self, arguments: Vec<String>) -> Result<u16, String> {
        let index = self.nodes();
        self.children.push(None);
        self.arguments.push(arguments);
        self.spawn(index)?;
        self.wait_ready(index)?;
        Ok(index)
    }

    /// kill -9 of node `index`.
    pub fn kill(&mut self, index: u16) {
        if let Some(mut child) = self
            .children
            .get_mut(usize::from(index))
            .and_then(Option::take)
        {
            if self.wrappers.iter().any(|(wrapped, _)| *wrapped == index) {
                let group = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP to node `index`: it stays alive but does nothing until resumed (a long
    /// garbage-collection pause, a VM stall).
    pub fn pause(&mut self, index: u16) {
        self.signal(index, rustix::process::Signal::STOP);
    }

    /// SIGCONT to a paused node `index`.
    pub fn resume(&mut self, index: u16) {
        self.signal(index, rustix::process::Signal::CONT);
    }

    fn signal(&mut self, index: u16, signal: rustix::process::Signal) {
        if let Some(Some(child)) = self.children.get(usize::from(index)) {
            let pid = rustix::process::Pid::from_child(child);
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// The process id of node `index`, while it runs.
    pub fn pid(&self, index: u16) -> Option<u32> {
        self.children
            .get(usize::from(index))
            .and_then(Option::as_ref)
            .map(Child::id)
    }

    /// SIGTERM to node `index`; true when it exited 0 within [`STOP_TIMEOUT_MS`].
    pub fn stop(&mut self, index: u16) -> bool {
        match self
            .children
            .get_mut(usize::from(index))
            .and_then(Option::take)
        {
            Some(mut child) => stop_gracefully(&mut child, Duration::from_millis(STOP_TIMEOUT_MS)),
            None => false,
        }
    }

    /// Starts node `index` again on its data and waits until it serves.
    pub fn restart(&mut self, index: u16) -> Result<(), String> {
        self.spawn(index)?;
        self.wait_ready(index)
    }

    /// The nodes that exited by themselves: (index, status).
    pub fn exited(&mut self) -> Vec<(u16, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for (index, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((index as u16, status));
                    *slot = None;
                }
            }
        }
        exited
    }

    /// Stops every node gracefully.
    pub fn stop_all(&mut self) {
        for index in 0..self.nodes() {
            self.stop(index);
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes() {
            self.kill(index);
        }
    }
}

/// Runs `ringkv-node dev`.
pub fn run(flags: DevFlags) -> ExitCode {
    match run_cluster(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringkv-node dev: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_cluster(flags: DevFlags) -> Result<(), String> {
    let (dir, temporary) = match &flags.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("ringkv-dev-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let binary = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let extra = vec!["--durability".to_owned(), flags.durability.clone()];
    let mut cluster = ProcessCluster::start(&binary, flags.nodes, flags.base_port, &dir, &extra)?;
    print_welcome(&cluster, temporary.is_some());
    while !stop.load(Ordering::Relaxed) {
        for (index, status) in cluster.exited() {
            eprintln!(
                "node {} exited ({status}); see {}",
                index + 1,
                cluster.log_path(index).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping {} nodes...", cluster.nodes());
    cluster.stop_all();
    drop(cluster);
    drop(temporary);
    Ok(())
}

fn print_welcome(cluster: &ProcessCluster, temporary: bool) {
    let nodes = cluster.nodes();
    println!(
        "ringkv dev cluster: {nodes} nodes on 127.0.0.1, N={} (data in {}{})",
        nodes.min(3),
        cluster.dir().display(),
        if temporary { ", removed at exit" } else { "" }
    );
    for index in 0..nodes {
        println!(
            "  node {}: redis-cli -p {}    (peers on {}, log {})",
            index + 1,
            cluster.client_address(index).port(),
            peer_address(cluster.base_port(), index),
            cluster.log_path(index).display()
        );
    }
    let first = cluster.client_address(0).port();
    let last = cluster.client_address(nodes - 1).port();
    println!("try:");
    println!("  redis-cli -p {first} SET greeting hello");
    println!("  redis-cli -p {last} GET greeting");
    println!("  redis-cli -p {first} VGET greeting");
    println!("  redis-cli -p {first} RINGKV.MEMBERS");
    println!("Ctrl-C stops the cluster.");
}
