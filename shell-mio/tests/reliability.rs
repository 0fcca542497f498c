//! The reliability scenarios: real node processes behind fault proxies, a recorded
//! client workload, faults, heal, and the history checker over every node's disk
//! (`ringkv_tests::reliability`). Each scenario runs against both binaries.
//!
//! Every scenario: 5 nodes, N=3 R=2 W=2, a tombstone grace longer than the run (so
//! the checker sees every delete's tombstone), anti-entropy every 20 ms (a replica a
//! fault left behind is repaired in seconds, not in the default's minutes). Four
//! clients run the read-merge-write workload (`history` module docs: pipelines and
//! refused transactions through the `redis` crate among them) for the whole
//! fault; then every link heals, every paused node resumes, the workload stops, and
//! the test waits until every replica of every partition reports the same
//! anti-entropy root (`RINGKV.DIGEST`) and no node holds a hint: the time from heal
//! to then is the scenario's convergence time. Then every node is stopped (SIGTERM,
//! each must exit 0), and the checker reads the disks.
//!
//! Each scenario prints one line for RELIABILITY.md: operations attempted,
//! acknowledged, lost, convergence time. The workload's draws come from the seed the
//! test prints (`RINGKV_SEED` replays it; the nodes' timing is real, so a replay
//! repeats the workload, not every interleaving).

mod support;

use ringkv_client::Reply;
use ringkv_core::version::NodeId;
use ringkv_tests::reliability::history::{
    DiskState, Placement, Recorder, Summary, Workload, WorkloadSpec, check,
};
use ringkv_tests::reliability::proxy::ProxyNetwork;
use ringkv_tests::seeds::SeedPlan;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{Binary, LocalCluster};

const NODES: u16 = 5;
const FLAGS: &[&str] = &[
    "--replicas",
    "3",
    "--read-quorum",
    "2",
    "--write-quorum",
    "2",
    "--tombstone-grace-ms",
    "3600000",
];
/// How long the workload runs before the fault, and after the heal.
const STEADY: Duration = Duration::from_millis(1_500);
/// The most a cluster may take to converge after the heal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// Node ids of indices.
fn ids(indices: &[u16]) -> Vec<NodeId> {
    indices.iter().map(|&i| NodeId(u64::from(i) + 1)).collect()
}

fn proxies(cluster: &LocalCluster) -> &ProxyNetwork {
    cluster.proxies.as_ref().expect("started behind proxies")
}

/// What a scenario does between the steady phases; it gets the cluster.
type Fault<'a> = &'a mut dyn FnMut(&mut LocalCluster);

/// Whether the fault goes through the proxies (a partition must discard frames, or
/// it did not happen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Through {
    Proxies,
    Processes,
}

/// What a scenario changes beyond its fault.
#[derive(Default)]
struct Setup {
    /// This node runs on a small filesystem of its own ([`TINY_FILESYSTEM`]); its disk
    /// is read from the copy the wrapper leaves after the node exits.
    tiny_filesystem: Option<u16>,
    workload: WorkloadSpec,
    /// Flags every node gets besides [`FLAGS`].
    flags: Vec<&'static str>,
}

/// Runs node `$@` with its data directory on an 80 MiB tmpfs (about 42 MiB of it
/// taken at start with 16 MiB segments) in a private user and
/// mount namespace (no root needed where user namespaces are allowed, nothing mounted
/// on the host), passes SIGTERM on, and once the node exited copies the data to
/// `<data dir>.after` (the tmpfs goes with the namespace).
const TINY_FILESYSTEM: &str = r#"
data=""; previous=""
for argument in "$@"; do
    if [ "$previous" = "--data-dir" ]; then data="$argument"; fi
    previous="$argument"
done
mkdir -p "$data" && mount -t tmpfs -o size=80m ringkv-tiny "$data" || exit 97
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
    wait "$child"; status=$?
    kill -0 "$child" 2>/dev/null || break
done
# A wait the TERM trap interrupted returns 143 even when the node then exited 0 (dash
# may reap it before kill -0 looks); the shell keeps the job's own status for a wait.
if [ "$status" -gt 128 ]; then wait "$child"; status=$?; fi
mkdir -p "$data.after" && cp -a "$data/." "$data.after/"
exit "$status"
"#;

/// Where the disk of node `index` is read after the stop.
fn disk_dir(cluster: &LocalCluster, setup: &Setup, index: u16) -> std::path::PathBuf {
    let dir = cluster.data_dir(index);
    if setup.tiny_filesystem == Some(index) {
        std::path::PathBuf::from(format!("{}.after", dir.display()))
    } else {
        dir
    }
}

/// Runs one scenario: start, load, `fault`, heal, converge, stop, check. `clients`
/// names, per client, the node indices it may use (first preferred).
fn scenario(
    binary: Binary,
    name: &str,
    clients: &[&[u16]],
    through: Through,
    fault: Fault<'_>,
) -> Summary {
    scenario_with(binary, name, clients, through, &Setup::default(), fault)
}

fn scenario_with(
    binary: Binary,
    name: &str,
    clients: &[&[u16]],
    through: Through,
    setup: &Setup,
    fault: Fault<'_>,
) -> Summary {
    let plan = SeedPlan::from_env(1).expect("seed variables");
    // Each scenario draws its own numbers from the one seed.
    let seed = plan.base ^ ringkv_core::placement::key_hash(name.as_bytes());
    println!(
        "scenario {name} ({binary:?}): RINGKV_SEED={} replays its draws",
        plan.base
    );
    let wrappers = setup.tiny_filesystem.map_or_else(Vec::new, |index| {
        let script = ["unshare", "-rm", "sh", "-c", TINY_FILESYSTEM, "sh"];
        vec![(index, script.iter().map(|s| (*s).to_owned()).collect())]
    });
    let flags: Vec<&str> = FLAGS.iter().chain(&setup.flags).copied().collect();
    let mut cluster = LocalCluster::start_wrapped(binary, NODES, &flags, seed, wrappers);
    let recorder = Recorder::new();
    let client_addresses: Vec<Vec<_>> = clients
        .iter()
        .map(|nodes| nodes.iter().map(|&i| cluster.client_address(i)).collect())
        .collect();
    // Before the fault every node must see every member (the pipelined reads of the
    // steady phase are judged for read-your-writes).
    if !all_reachable(&cluster) {
        recorder.fault_begins();
    }
    let workload = Workload::start(&recorder, &client_addresses, &setup.workload, seed);
    std::thread::sleep(STEADY);
    recorder.fault_begins();
    fault(&mut cluster);
    let discarded = proxies(&cluster).discarded_total();
    if through == Through::Proxies {
        assert!(discarded > 0, "{name}: the proxies discarded no frame");
    }
    proxies(&cluster).heal();
    for index in 0..NODES {
        cluster.cluster.resume(index);
    }
    let healed = Instant::now();
    if all_reachable(&cluster) {
        recorder.fault_settled();
    }
    std::thread::sleep(STEADY);
    workload.stop();
    let converged = wait_converged(&cluster);
    let converge_ms = healed.elapsed().as_millis();
    for index in 0..NODES {
        assert!(
            cluster.stop(index),
            "node {} exits 0 after SIGTERM",
            index + 1
        );
    }
    let disks: BTreeMap<NodeId, DiskState> = (0..NODES)
        .map(|index| {
            let state = DiskState::read(&disk_dir(&cluster, setup, index))
                .unwrap_or_else(|error| panic!("node {} disk: {error}", index + 1));
            (NodeId(u64::from(index) + 1), state)
        })
        .collect();
    let operations = recorder.operations();
    let faults = recorder.fault_windows();
    let summary = check(
        &operations,
        &faults,
        &disks,
        Placement {
            nodes: u64::from(NODES),
            replicas: 3,
        },
    );
    println!(
        "| {name} | {binary:?} | {} | {} | {} | {} of {} | {discarded} | {} |",
        summary.writes_attempted,
        summary.writes_acknowledged,
        summary.writes_lost,
        summary.reads_ok,
        summary.reads,
        converged.map_or_else(
            || "did not".to_owned(),
            |_| format!("{:.1} s", converge_ms as f64 / 1000.0)
        ),
    );
    println!(
        "  {} pipelined reads judged for read-your-writes, {} transactions refused; fault windows {faults:?}",
        summary.pipelined_reads_judged, summary.transactions
    );
    for (error, count) in &summary.errors {
        println!("  {count} failed: {error}");
    }
    for violation in summary.violations.iter().take(20) {
        println!("  {violation}");
    }
    if !summary.violations.is_empty() {
        // The nodes' warnings and errors, to start debugging from.
        for index in 0..NODES {
            let log = std::fs::read_to_string(cluster.log_path(index)).unwrap_or_default();
            let notable: Vec<&str> = log
                .lines()
                .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                .collect();
            println!("--- node {} warnings ({}) ---", index + 1, notable.len());
            for line in notable.iter().take(30) {
                println!("{line}");
            }
        }
    }
    assert!(
        summary.violations.is_empty(),
        "{name}: {} violations (first above); RINGKV_SEED={}",
        summary.violations.len(),
        plan.base
    );
    assert!(
        converged.is_some(),
        "{name}: replicas did not converge in {CONVERGE_TIMEOUT:?}"
    );
    assert!(
        summary.writes_acknowledged > 0,
        "{name}: no write was acknowledged"
    );
    assert!(
        summary.pipelined_reads_judged > 0 && summary.transactions > 0,
        "{name}: the workload pipelined no judged read or sent no transaction: {summary:?}"
    );
    summary
}

/// Waits (at most 10 s) until every node reports every member reachable and its peer
/// links up (`LocalCluster::all_reachable`); false if one never did.
fn all_reachable(cluster: &LocalCluster) -> bool {
    cluster.all_reachable(Duration::from_secs(10))
}

/// Waits until every node reports, for every partition it replicates, the same
/// anti-entropy root as the other replicas, every partition has its three replicas,
/// and no node holds hints. `Some(elapsed)` when it happened in time.
fn wait_converged(cluster: &LocalCluster) -> Option<Duration> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < CONVERGE_TIMEOUT {
        match divergence(cluster) {
            None => return Some(started.elapsed()),
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("not converged: {last}");
    None
}

/// Why the cluster has not converged yet, or `None` when it has.
fn divergence(cluster: &LocalCluster) -> Option<String> {
    divergence_of(cluster, NODES)
}

fn divergence_of(cluster: &LocalCluster, nodes: u16) -> Option<String> {
    let mut roots: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
    for index in 0..nodes {
        let hints = cluster.info_field(index, "hints_held");
        if hints.as_deref() != Some("0") {
            return Some(format!("node {} holds hints: {hints:?}", index + 1));
        }
        let reply = cluster.client_of(index).command(&[b"RINGKV.DIGEST"]);
        let Ok(Reply::Array(Some(lines))) = reply else {
            return Some(format!("node {}: no digest ({reply:?})", index + 1));
        };
        for line in lines {
            let Reply::Bulk(Some(line)) = line else {
                return Some(format!("node {}: digest line not text", index + 1));
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (partition, root) = line.split_once(' ').unwrap_or((&line, ""));
            if root.starts_with("building") {
                return Some(format!("node {}: {line}", index + 1));
            }
            let root = root.split(' ').next().unwrap_or_default().to_owned();
            roots
                .entry(partition.to_owned())
                .or_default()
                .push((index + 1, root));
        }
    }
    for (partition, reports) in &roots {
        if reports.len() != 3 || reports.iter().any(|(_, root)| *root != reports[0].1) {
            return Some(format!("{partition}: {reports:?}"));
        }
    }
    None
}

/// Nodes 1 and 2 cut off from 3, 4 and 5 (both ways) for 6 s; a client on each side
/// of the cut, and two that may use any node. The minority side stays writable with
/// W=2 through stand-ins (sloppy quorum).
fn minority_partition(binary: Binary) {
    scenario(
        binary,
        "minority partition",
        &[&[0, 1], &[2, 3, 4], &[0, 2, 4], &[1, 3]],
        Through::Proxies,
        &mut |cluster| {
            proxies(cluster).partition(&ids(&[0, 1]), &ids(&[2, 3, 4]));
            std::thread::sleep(Duration::from_secs(6));
        },
    );
}

/// Every node sees a majority, but no two agree on which (Jepsen's "majorities
/// ring"): node i keeps its links to its two neighbours on a ring of five and loses
/// the two others, both ways, for 6 s. Connectivity is not transitive, so a node's
/// view of who is up differs from each neighbour's.
fn majorities_ring_partition(binary: Binary) {
    scenario(
        binary,
        "majorities ring",
        &[&[0, 1], &[1, 2], &[2, 3], &[3, 4]],
        Through::Proxies,
        &mut |cluster| {
            let network = proxies(cluster);
            for node in 0..NODES {
                for far in [2, 3] {
                    let other = (node + far) % NODES;
                    network.cut(ids(&[node])[0], ids(&[other])[0]);
                }
            }
            std::thread::sleep(Duration::from_secs(6));
        },
    );
}

/// Node 3 paused (SIGSTOP) for 5 s under load, then resumed: its clients time out and
/// move on; the others' writes to its partitions go to stand-ins.
fn a_paused_node(binary: Binary) {
    scenario(
        binary,
        "node paused 5 s",
        &[&[2, 0], &[0, 1], &[3, 4], &[4, 2]],
        Through::Processes,
        &mut |cluster| {
            cluster.cluster.pause(2);
            std::thread::sleep(Duration::from_secs(5));
            cluster.cluster.resume(2);
        },
    );
}

/// Every node in turn stopped (SIGTERM), down for a moment and started again, under
/// load.
fn rolling_restart(binary: Binary) {
    scenario(
        binary,
        "rolling restart",
        &[
            &[0, 1, 2, 3, 4],
            &[1, 2, 3, 4, 0],
            &[2, 3, 4, 0, 1],
            &[3, 4, 0, 1, 2],
        ],
        Through::Processes,
        &mut |cluster| {
            for index in 0..NODES {
                assert!(
                    cluster.stop(index),
                    "node {} exits 0 after SIGTERM",
                    index + 1
                );
                std::thread::sleep(Duration::from_millis(500));
                cluster.restart(index);
                std::thread::sleep(Duration::from_millis(1_000));
            }
        },
    );
}

/// The convergence wait and the checker, on a real cluster that is broken on purpose:
/// node 3 hears nothing while node 1 takes writes at W=2, and the cut stays (nothing
/// can repair node 3). The digests must differ, and the checker must find the writes
/// missing on node 3 and its copies unlike the others'.
#[test]
fn the_checks_catch_a_replica_that_missed_writes() {
    let flags = [
        "--replicas",
        "3",
        "--write-quorum",
        "2",
        "--anti-entropy-interval-ms",
        "100",
    ];
    let mut cluster = LocalCluster::start_behind_proxies(Binary::Mio, 3, &flags, 1);
    let agree = support::eventually(Duration::from_secs(20), || {
        divergence_of(&cluster, 3).is_none()
    });
    assert!(
        agree,
        "a fresh cluster agrees once its trees are built: {:?}",
        divergence_of(&cluster, 3)
    );
    let network = proxies(&cluster);
    network.cut(NodeId(1), NodeId(3));
    network.cut(NodeId(2), NodeId(3));
    let recorder = Recorder::new();
    let spec = WorkloadSpec {
        blind_share: 1.0, // no reads: nothing read-repairs node 3
        delete_share: 0.0,
        operations_max: 20,
        ..WorkloadSpec::default()
    };
    let workload = Workload::start(&recorder, &[vec![cluster.client_address(0)]], &spec, 1);
    std::thread::sleep(Duration::from_secs(2));
    workload.stop();
    std::thread::sleep(Duration::from_millis(500));
    let why = divergence_of(&cluster, 3);
    assert!(
        why.is_some(),
        "node 3 missed 20 writes, yet the digests agree"
    );
    cluster.cluster.stop_all();
    let disks: BTreeMap<NodeId, DiskState> = (0..3)
        .map(|index| {
            let state = DiskState::read(&cluster.data_dir(index)).expect("disk");
            (NodeId(u64::from(index) + 1), state)
        })
        .collect();
    let summary = check(
        &recorder.operations(),
        &recorder.fault_windows(),
        &disks,
        Placement {
            nodes: 3,
            replicas: 3,
        },
    );
    assert_eq!(summary.writes_acknowledged, 20, "{summary:?}");
    assert_eq!(summary.writes_lost, 20, "each is missing on node 3");
    assert!(
        summary
            .violations
            .iter()
            .any(|v| v.property == 2 && v.detail.contains("node 3")),
        "{:?}",
        summary.violations
    );
}

/// Node 3's data directory is an 80 MiB filesystem of its own (16 MiB segments); under a load of 16 KiB
/// values, the test fills that filesystem with a ballast file, so node 3's next log
/// segment cannot be allocated: its writes are refused with disk full (its clients get
/// an error saying so, the other replicas take the writes). Then the ballast goes and
/// node 3 must take writes again, catch up, and hold nothing corrupt.
fn disk_full_on_one_node(binary: Binary) {
    let setup = Setup {
        tiny_filesystem: Some(2),
        workload: WorkloadSpec {
            padding_bytes: 16 << 10,
            ..WorkloadSpec::default()
        },
        flags: vec!["--segment-size-mib", "16"],
    };
    scenario_with(
        binary,
        "disk full on one node",
        &[&[2, 0], &[0, 1], &[3, 4], &[4, 2]],
        Through::Processes,
        &setup,
        &mut |cluster| {
            let pid = cluster.cluster.pid(2).expect("node 3 runs");
            let data = cluster.data_dir(2);
            let relative = data.strip_prefix("/").expect("absolute data dir");
            let ballast = std::path::Path::new(&format!("/proc/{pid}/root"))
                .join(relative)
                .join("ballast");
            let filled = fill(&ballast);
            println!("ballast of {} MiB fills node 3's filesystem", filled >> 20);
            let refused = support::eventually(Duration::from_secs(40), || {
                cluster
                    .info_field(2, "write_batches_disk_full")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            });
            assert!(refused, "node 3 never refused a write for a full disk");
            std::thread::sleep(Duration::from_secs(2));
            std::fs::remove_file(&ballast).expect("remove the ballast");
            println!(
                "space back after {} batches refused",
                cluster
                    .info_field(2, "write_batches_disk_full")
                    .unwrap_or_default()
            );
        },
    );
}

/// Node 3 stopped under load, bytes of its data log overwritten in three places, and
/// started again: it must detect the damage (INFO `corrupt_records`), serve, mint under
/// a new writer id, and get every lost record back from the other replicas.
fn a_corrupted_segment_on_restart(binary: Binary) {
    scenario(
        binary,
        "corrupted segment on restart",
        &[&[0, 1], &[1, 3], &[3, 4], &[4, 0]],
        Through::Processes,
        &mut |cluster| {
            assert!(cluster.stop(2), "node 3 exits 0 after SIGTERM");
            let damaged = damage_log(&cluster.data_dir(2).join("data"));
            println!("overwrote {damaged} bytes of node 3's log");
            cluster.restart(2);
            let detected = support::eventually(Duration::from_secs(20), || {
                cluster
                    .info_field(2, "corrupt_records")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            });
            assert!(detected, "node 3 did not report the damage");
            std::thread::sleep(Duration::from_secs(2));
        },
    );
}

/// Overwrites 16 bytes at a quarter, half and near the end of the written part of the
/// newest segment in `dir`; the bytes overwritten.
fn damage_log(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::FileExt;
    let newest = std::fs::read_dir(dir)
        .expect("data directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment");
    let bytes = std::fs::read(&newest).expect("read the segment");
    let written = bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
    assert!(
        written > 4096,
        "the segment holds records ({written} bytes)"
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open the segment");
    let spots = [written / 4, written / 2, written - 300];
    for &spot in &spots {
        file.write_all_at(&[0x5a; 16], spot as u64)
            .expect("overwrite");
    }
    file.sync_all().expect("sync");
    16 * spots.len()
}

/// Writes zeros to `path` until the filesystem is full (at most 1 GiB); the bytes
/// written.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the ballast");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < 1 << 30 {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    written
}

both_binaries!(
    a_corrupted_segment_on_restart,
    disk_full_on_one_node,
    minority_partition,
    majorities_ring_partition,
    a_paused_node,
    rolling_restart,
);
