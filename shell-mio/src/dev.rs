//! `ringkv-node dev`: a local cluster in one command.
//!
//! Starts `--nodes` processes of this same binary on 127.0.0.1 (node i, counted from
//! zero, serves clients on `base_port + 2i` and peers on `base_port + 2i + 1`), all
//! with the same initial member list, so they form one cluster at once. Data lives in
//! `--dir` (one subdirectory per node, kept) or a new temporary directory (removed at
//! exit). Each node logs to `node-<id>.log` there. Once every node answers PING it
//! prints how to reach the cluster with redis-cli, then waits: Ctrl-C (or SIGTERM)
//! stops every node gracefully. A node that dies meanwhile is reported.
//!
//! [`node_arguments`] is the one place that says how node i of a local cluster is
//! started; the real-process tests start their clusters with it too.

use crate::settings::DevFlags;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the nodes have to answer PING after they start.
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

/// The flags that start node `index` (id `index + 1`) of a local cluster of `nodes`
/// with its data under `dir/node-<id>`.
pub fn node_arguments(index: u16, nodes: u16, base_port: u16, dir: &Path) -> Vec<String> {
    let members: Vec<String> = (0..nodes)
        .map(|i| format!("{}@{}", i + 1, peer_address(base_port, i)))
        .collect();
    vec![
        "--node-id".to_owned(),
        (index + 1).to_string(),
        "--client-address".to_owned(),
        client_address(base_port, index).to_string(),
        "--peer-address".to_owned(),
        peer_address(base_port, index).to_string(),
        "--data-dir".to_owned(),
        dir.join(format!("node-{}", index + 1))
            .to_string_lossy()
            .into_owned(),
        "--members".to_owned(),
        members.join(","),
    ]
}

/// True once the node at `address` answers PING with PONG.
pub fn answers_ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Sends SIGTERM, waits up to `timeout`, then kills. Returns whether it stopped by
/// itself with status 0.
pub fn stop_gracefully(child: &mut Child, timeout: Duration) -> bool {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
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
    if flags.nodes == 0 || flags.nodes > 64 {
        return Err("--nodes must lie in 1..=64".to_owned());
    }
    if u32::from(flags.base_port) + 2 * u32::from(flags.nodes) > u32::from(u16::MAX) {
        return Err("--base-port leaves no room for every node's two ports".to_owned());
    }
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
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let binary = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let mut children: Vec<Child> = Vec::new();
    let started = start_nodes(&binary, &flags, &dir, &mut children);
    let result = started.and_then(|()| wait_ready(&flags, &mut children, &stop));
    if result.is_ok() {
        print_welcome(&flags, &dir, temporary.is_some());
        watch(&mut children, &stop);
    }
    println!("stopping {} nodes...", children.len());
    for child in &mut children {
        stop_gracefully(child, Duration::from_millis(STOP_TIMEOUT_MS));
    }
    drop(temporary);
    result
}

fn start_nodes(
    binary: &Path,
    flags: &DevFlags,
    dir: &Path,
    children: &mut Vec<Child>,
) -> Result<(), String> {
    for index in 0..flags.nodes {
        let log_path = log_path(dir, index + 1);
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut command = Command::new(binary);
        command
            .args(node_arguments(index, flags.nodes, flags.base_port, dir))
            .args(["--durability", &flags.durability])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", index + 1))?;
        children.push(child);
    }
    Ok(())
}

fn wait_ready(flags: &DevFlags, children: &mut [Child], stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    for index in 0..flags.nodes {
        let address = client_address(flags.base_port, index);
        while !answers_ping(address) {
            if let Some(child) = children.get_mut(usize::from(index)) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "node {} exited ({status}) before it served; see its log",
                        index + 1
                    ));
                }
            }
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                return Err(format!(
                    "node {} did not answer on {address} in time",
                    index + 1
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn print_welcome(flags: &DevFlags, dir: &Path, temporary: bool) {
    println!(
        "ringkv dev cluster: {} nodes on 127.0.0.1, N={} (data in {}{})",
        flags.nodes,
        flags.nodes.min(3),
        dir.display(),
        if temporary { ", removed at exit" } else { "" }
    );
    for index in 0..flags.nodes {
        println!(
            "  node {}: redis-cli -p {}    (peers on {}, log {})",
            index + 1,
            client_address(flags.base_port, index).port(),
            peer_address(flags.base_port, index),
            log_path(dir, index + 1).display()
        );
    }
    let first = client_address(flags.base_port, 0).port();
    let last = client_address(flags.base_port, flags.nodes - 1).port();
    println!("try:");
    println!("  redis-cli -p {first} SET greeting hello");
    println!("  redis-cli -p {last} GET greeting");
    println!("  redis-cli -p {first} VGET greeting");
    println!("  redis-cli -p {first} RINGKV.MEMBERS");
    println!("Ctrl-C stops the cluster.");
}

fn watch(children: &mut [Child], stop: &AtomicBool) {
    let mut reported = vec![false; children.len()];
    while !stop.load(Ordering::Relaxed) {
        for (index, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                if !reported[index] {
                    eprintln!("node {} exited ({status}); see its log", index + 1);
                    reported[index] = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where `ringkv-node dev` keeps node `id`'s log.
pub fn log_path(dir: &Path, id: u16) -> PathBuf {
    dir.join(format!("node-{id}.log"))
}
