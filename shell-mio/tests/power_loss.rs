//! Power loss under load, on real node processes (both binaries): the node keeps its
//! data on a filesystem that forgets everything not fsynced, file data and directory
//! entries alike (`ringkv_tests::forgetful_fs`), and goes through round after round of
//! kill -9 plus a power cut while clients write through the `redis` crate. Every round
//! restarts the node and reads back every write acknowledged in every round so far;
//! the node's id (minted at random by its first start, no `--node-id`) must be the
//! same at every start.
//!
//! The rounds: the fresh node's first write; steady writes in `group` and `always`
//! modes; a torn cut (half the unsynced pages and directory entries survive); cuts
//! stopped by a trap at a segment rotation (the new segment's first write), in the
//! middle of an index checkpoint (a page write to `index.1`), at a checkpoint file's
//! fsync before its header is written (torn: some of its pages survive), at a
//! directory fsync, at a group commit's fsync (its bytes written, not synced); a
//! second cut during the recovery from the first; 64 KiB values; and a graceful stop
//! at the end. Each round prints what the cut forgot.
//!
//! Needs root and /dev/fuse (FUSE mounted without fusermount); elsewhere it says what
//! is missing and passes without running. Bounded: every wait has a timeout and every
//! round a write budget. `RINGKV_SEED=<n>` replays the tears (default: printed seed).

mod support;

use ringkv_tests::forgetful_fs::{CutReport, ForgetfulFs, Operation, Trap};
use ringkv_tests::seeds::SeedPlan;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{Binary, port_slot};

/// Bound on each wait: a node start, a trap, a round's writes.
const WAIT: Duration = Duration::from_secs(60);
/// The data directory, relative to the mountpoint (missing before the first start).
const DATA_DIR: &str = "node";
const SMALL_BYTES: usize = 100;
const LARGE_BYTES: usize = 64 << 10;

/// One node process with its data on the forgetful filesystem.
struct Node {
    binary: Binary,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, durability: &str) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(self.binary.path());
        command
            .args([
                "--client-address",
                &format!("127.0.0.1:{}", self.client_port),
            ])
            .args([
                "--peer-address",
                &format!("127.0.0.1:{}", self.client_port + 1),
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--durability", durability])
            .args(["--segment-size-mib", "16", "--checkpoint-interval-mib", "1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .env("RUST_LOG", "info");
        if self.binary == Binary::UringFallback {
            command.env("RINGKV_URING_FALLBACK", "1");
        }
        self.child = Some(command.spawn().map_err(|e| e.to_string())?);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let deadline = Instant::now() + WAIT;
        while !ringkv_frontend::dev::answers_ping(address) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("the node exited ({status}) before it served"));
            }
            if Instant::now() >= deadline {
                return Err("the node did not serve in time".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sends SIGKILL without waiting: a process stopped by a trap in the middle of a
    /// FUSE request cannot finish dying until the trap lets the request go.
    fn signal_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; true when it exited 0.
    fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => ringkv_frontend::dev::stop_gracefully(&mut child, WAIT),
            None => false,
        }
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.client_port))?;
        let connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
        connection.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(connection)
    }

    fn info_field(&self, field: &str) -> Option<String> {
        let mut connection = self.connection().ok()?;
        let info: String = redis::cmd("INFO").query(&mut connection).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|value| value.trim().to_owned())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value written under `key`: the key's bytes over and over, `size_bytes` long.
fn value_of(key: &str, size_bytes: usize) -> Vec<u8> {
    key.bytes().cycle().take(size_bytes).collect()
}

/// Writers of fresh keys (`<round>-<writer>-<n>`), each on its own connection, until
/// stopped, out of budget, or the node is gone; every acknowledged key is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, usize)>>>,
    writers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(
        node: &Node,
        round: &str,
        writers: usize,
        value_bytes: usize,
        writes_max: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let writers = (0..writers)
            .map(|writer| {
                let connection = node.connection();
                let stop = Arc::clone(&stop);
                let acknowledged = Arc::clone(&acknowledged);
                let round = round.to_owned();
                std::thread::spawn(move || {
                    let Ok(mut connection) = connection else {
                        return;
                    };
                    for n in 0..writes_max {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let key = format!("{round}-{writer}-{n}");
                        let written: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(&key)
                            .arg(value_of(&key, value_bytes))
                            .query(&mut connection);
                        if written.is_err() {
                            return; // killed (or refused): not acknowledged
                        }
                        acknowledged.lock().unwrap().push((key, value_bytes));
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            writers,
        }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits (at most [`WAIT`]) until `count` writes were acknowledged.
    fn wait_for(&self, count: usize, round: &str) {
        let deadline = Instant::now() + WAIT;
        while self.acknowledged_count() < count {
            assert!(
                Instant::now() < deadline,
                "round {round}: {count} writes not acknowledged in time"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn finish(self) -> Vec<(String, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.join().unwrap();
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

/// When a round kills the node.
enum Kill {
    /// Once this many writes were acknowledged.
    AfterWrites(usize),
    /// When the filesystem stops this request (the path under the mountpoint).
    AtTrap(Operation, String),
    /// When the filesystem stops this request on the data store's newest segment
    /// (`after` 0) or on the one after it (`after` 1), once `writes` were acknowledged.
    AtSegmentTrap {
        operation: Operation,
        after: u32,
        writes: usize,
    },
}

struct Round {
    name: &'static str,
    durability: &'static str,
    value_bytes: usize,
    writers: usize,
    writes_max: usize,
    kill: Kill,
    tear: bool,
    /// Cut a second time, stopped in the middle of the restart's recovery.
    cut_during_recovery: bool,
}

/// The path under the mountpoint of the data store's newest segment (`after` 0) or
/// of the one after it (`after` 1).
fn data_segment(mountpoint: &Path, after: u32) -> String {
    let data = mountpoint.join(DATA_DIR).join("data");
    let last = std::fs::read_dir(&data)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name();
                    ringkv_storage::segment::parse_file_name(name.to_str()?)
                        .filter(|(_, temporary)| !temporary)
                        .map(|(id, _)| id)
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    format!(
        "{DATA_DIR}/data/{}",
        ringkv_storage::segment::file_name(last + after)
    )
}

/// Reads back every acknowledged write; returns the keys lost or changed.
fn lost_writes(node: &Node, acknowledged: &[(String, usize)]) -> Result<Vec<String>, String> {
    let mut connection = node.connection().map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    for chunk in acknowledged.chunks(64) {
        let mut pipe = redis::pipe();
        for (key, _) in chunk {
            pipe.cmd("GET").arg(key);
        }
        let values: Vec<Option<Vec<u8>>> =
            pipe.query(&mut connection).map_err(|e| e.to_string())?;
        for ((key, size), value) in chunk.iter().zip(values) {
            if value.as_deref() != Some(&value_of(key, *size)[..]) {
                lost.push(key.clone());
            }
        }
    }
    Ok(lost)
}

/// Starts the node and checks its id (the first start's, kept in `node_id`) and
/// every acknowledged write so far.
fn start_and_check(
    node: &mut Node,
    durability: &str,
    after: &str,
    acknowledged: &[(String, usize)],
    node_id: &mut Option<String>,
) -> Result<(), String> {
    node.start(durability)?;
    node.wait_ready()
        .map_err(|error| format!("after {after}: {error}\n{}", node.log_tail()))?;
    let id = node
        .info_field("ringkv_node_id")
        .ok_or("INFO names no node id")?;
    match node_id {
        None => *node_id = Some(id),
        Some(first) if *first == id => {}
        Some(first) => {
            return Err(format!(
                "after {after} the node came back as {id}, not {first}"
            ));
        }
    }
    let lost = lost_writes(node, acknowledged)?;
    if !lost.is_empty() {
        return Err(format!(
            "after {after}: {} of {} acknowledged writes lost or changed, first {:?}\n{}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(5)],
            node.log_tail()
        ));
    }
    Ok(())
}

fn power_loss(binary: Binary) {
    if !ForgetfulFs::available_for(&format!("power loss ({binary:?})")) {
        return;
    }
    let plan = SeedPlan::from_env(1).unwrap();
    let seed = plan.base ^ 0x5eed;
    println!(
        "power loss ({binary:?}): tear seed {seed} (replay with RINGKV_SEED={})",
        plan.base
    );
    let ports = port_slot(2);
    let logs = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let mut disk = ForgetfulFs::mount(mountpoint.path()).unwrap();
    let mut node = Node {
        binary,
        client_port: ports.base,
        data_dir: mountpoint.path().join(DATA_DIR),
        log: logs.path().join("node.log"),
        child: None,
    };
    let rounds = [
        Round {
            name: "fresh node, first write",
            durability: "group",
            value_bytes: SMALL_BYTES,
            writers: 1,
            writes_max: 1,
            kill: Kill::AfterWrites(1),
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "steady, group",
            durability: "group",
            value_bytes: SMALL_BYTES,
            writers: 4,
            writes_max: 2_000,
            kill: Kill::AfterWrites(1_500),
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "steady, always",
            durability: "always",
            value_bytes: SMALL_BYTES,
            writers: 2,
            writes_max: 1_000,
            kill: Kill::AfterWrites(400),
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "steady, torn cut",
            durability: "group",
            value_bytes: SMALL_BYTES,
            writers: 4,
            writes_max: 2_000,
            kill: Kill::AfterWrites(1_000),
            tear: true,
            cut_during_recovery: false,
        },
        Round {
            name: "segment rotation (new segment's first write)",
            durability: "group",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AtSegmentTrap {
                operation: Operation::Write,
                after: 1,
                writes: 0,
            },
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "mid-checkpoint (index.1 page write)",
            durability: "group",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AtTrap(Operation::Write, format!("{DATA_DIR}/data/index.1")),
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "checkpoint file fsync before its header (torn)",
            durability: "group",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AtTrap(Operation::FileSync, format!("{DATA_DIR}/data/index.0")),
            tear: true,
            cut_during_recovery: false,
        },
        Round {
            name: "data directory fsync",
            durability: "group",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AtTrap(Operation::DirectorySync, format!("{DATA_DIR}/data")),
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "group commit written, its fsync not done",
            durability: "group",
            value_bytes: SMALL_BYTES,
            writers: 4,
            writes_max: 2_000,
            kill: Kill::AtSegmentTrap {
                operation: Operation::FileSync,
                after: 0,
                writes: 200,
            },
            tear: false,
            cut_during_recovery: false,
        },
        Round {
            name: "second cut during recovery",
            durability: "group",
            value_bytes: SMALL_BYTES,
            writers: 4,
            writes_max: 2_000,
            kill: Kill::AfterWrites(800),
            tear: false,
            cut_during_recovery: true,
        },
        Round {
            name: "64 KiB values, torn cut",
            durability: "group",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AfterWrites(150),
            tear: true,
            cut_during_recovery: false,
        },
        Round {
            name: "64 KiB values, always",
            durability: "always",
            value_bytes: LARGE_BYTES,
            writers: 2,
            writes_max: 400,
            kill: Kill::AfterWrites(100),
            tear: false,
            cut_during_recovery: false,
        },
    ];

    let mut acknowledged: Vec<(String, usize)> = Vec::new();
    let mut node_id: Option<String> = None;
    let mut table = String::new();
    let mut forgotten = CutReport::default();
    for (index, round) in rounds.iter().enumerate() {
        let started = Instant::now();
        start_and_check(
            &mut node,
            round.durability,
            "the previous round",
            &acknowledged,
            &mut node_id,
        )
        .unwrap();
        let checked = started.elapsed();
        let mut trap: Option<Trap> = match &round.kill {
            Kill::AtTrap(operation, path) => Some(disk.trap(*operation, path.clone())),
            Kill::AfterWrites(_) | Kill::AtSegmentTrap { .. } => None,
        };
        let load = Load::start(
            &node,
            &format!("r{index}"),
            round.writers,
            round.value_bytes,
            round.writes_max,
        );
        let trap_fired = |trap: &Trap, what: String| {
            assert!(
                trap.wait(WAIT),
                "round {}: the trap ({what}) never fired; {} writes acknowledged\n{}",
                round.name,
                load.acknowledged_count(),
                node.log_tail()
            );
        };
        match &round.kill {
            Kill::AfterWrites(count) => load.wait_for(*count, round.name),
            Kill::AtTrap(operation, path) => {
                if let Some(trap) = &trap {
                    trap_fired(trap, format!("{operation:?} {path}"));
                }
            }
            Kill::AtSegmentTrap {
                operation,
                after,
                writes,
            } => {
                load.wait_for(*writes, round.name);
                let path = data_segment(mountpoint.path(), *after);
                let armed = disk.trap(*operation, path.clone());
                trap_fired(&armed, format!("{operation:?} {path}"));
                trap = Some(armed);
            }
        }
        let loaded = started.elapsed();
        node.signal_kill();
        drop(trap);
        node.kill();
        let written = load.finish();
        let tear = round.tear.then_some(seed.wrapping_add(index as u64));
        let report = disk.power_cut(tear).unwrap();
        acknowledged.extend(written.iter().cloned());
        let mut recovery_note = String::new();
        if round.cut_during_recovery {
            // The restart is stopped when it opens the hints store: the data store's
            // recovery is done, the node serves nothing yet. Then a second cut.
            let trap = disk.trap(Operation::Open, format!("{DATA_DIR}/hints/LOCK"));
            node.start(round.durability).unwrap();
            assert!(
                trap.wait(WAIT),
                "the restart never opened the hints store\n{}",
                node.log_tail()
            );
            node.signal_kill();
            drop(trap);
            node.kill();
            let second = disk.power_cut(None).unwrap();
            recovery_note = format!("; then a cut during recovery: {second}");
        }
        forgotten.pages_forgotten += report.pages_forgotten;
        forgotten.entries_forgotten += report.entries_forgotten;
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {report}{recovery_note} |",
            index + 1,
            round.name,
            round.durability,
            written.len()
        );
        println!(
            "round {} ({}): {} writes acknowledged; cut: {report}{recovery_note} (start and check {checked:?}, load {:?}, cut {:?})",
            index + 1,
            round.name,
            written.len(),
            loaded - checked,
            started.elapsed() - loaded
        );
    }
    start_and_check(
        &mut node,
        "group",
        "the last round",
        &acknowledged,
        &mut node_id,
    )
    .unwrap();
    assert!(
        node.stop(),
        "the node did not stop cleanly on SIGTERM\n{}",
        node.log_tail()
    );
    start_and_check(
        &mut node,
        "group",
        "a graceful stop",
        &acknowledged,
        &mut node_id,
    )
    .unwrap();
    node.kill();
    println!(
        "| round | what | durability | acknowledged | what the cut forgot |\n|---|---|---|---|---|\n{table}"
    );
    println!(
        "power loss ({binary:?}): {} rounds, {} acknowledged writes, 0 lost, node id {} kept; the cuts forgot {} unsynced pages and {} directory entries",
        rounds.len(),
        acknowledged.len(),
        node_id.unwrap_or_default(),
        forgotten.pages_forgotten,
        forgotten.entries_forgotten
    );
    // The cuts must have had something to forget, or they proved nothing.
    assert!(
        forgotten.pages_forgotten > 0,
        "no cut forgot an unsynced page"
    );
    assert!(rounds.len() >= 10);
}

/// The suite can fail: with directory fsyncs ignored by the filesystem (a node that
/// never calls them, as ringkv did before), the fresh node's first write and its id
/// must be reported lost after the first cut.
#[test]
fn power_loss_catches_a_node_without_directory_fsyncs() {
    if !ForgetfulFs::available_for("power loss sabotage") {
        return;
    }
    let ports = port_slot(2);
    let logs = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let mut disk = ForgetfulFs::mount(mountpoint.path()).unwrap();
    disk.ignore_directory_syncs();
    let mut node = Node {
        binary: Binary::Mio,
        client_port: ports.base,
        data_dir: mountpoint.path().join(DATA_DIR),
        log: logs.path().join("node.log"),
        child: None,
    };
    let mut node_id = None;
    start_and_check(&mut node, "group", "the first start", &[], &mut node_id).unwrap();
    let load = Load::start(&node, "sabotage", 1, SMALL_BYTES, 1);
    load.wait_for(1, "sabotage");
    let acknowledged = load.finish();
    assert_eq!(acknowledged.len(), 1, "the first write was acknowledged");
    node.kill();
    let report = disk.power_cut(None).unwrap();
    println!("cut: {report}");
    let failure = start_and_check(&mut node, "group", "the cut", &acknowledged, &mut node_id)
        .expect_err("the suite missed a fresh node that lost its first write");
    println!("caught as expected: {failure}");
    assert!(
        failure.contains("came back as") || failure.contains("lost"),
        "{failure}"
    );
}

#[test]
fn power_loss_mio() {
    power_loss(Binary::Mio);
}

#[test]
fn power_loss_uring() {
    power_loss(Binary::Uring);
}
