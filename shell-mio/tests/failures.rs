//! Real processes failing: kill -9 under a W=2 writer, restart, a full-cluster restart,
//! and a graceful stop.

mod support;

use ringkv_client::Reply;
use ringkv_core::placement::{Member, PARTITION_BITS_DEFAULT, Ring};
use ringkv_core::version::NodeId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WRITES: u32 = 1_500;
use support::{Binary, LocalCluster, eventually};

/// How many of `keys` node `id` replicates in a cluster of nodes 1..=`nodes`, N = 3:
/// computed with the same placement the nodes use.
fn keys_replicated_by(id: u64, nodes: u64, keys: &[Vec<u8>]) -> usize {
    let members: Vec<Member> = (1..=nodes).map(|id| Member::equal(NodeId(id))).collect();
    let ring = Ring::new(&members, PARTITION_BITS_DEFAULT, 3).expect("ring");
    keys.iter()
        .filter(|key| {
            ring.preference_list(ring.partition_of(key))
                .any(|node| node == NodeId(id))
        })
        .count()
}

fn write(client: &mut ringkv_client::Client, key: &[u8], value: &[u8]) -> Result<(), String> {
    match client.command(&[b"SET", key, value]) {
        Ok(Reply::Simple(ok)) if ok == "OK" => Ok(()),
        Ok(other) => Err(format!("{other:?}")),
        Err(error) => Err(error.to_string()),
    }
}

fn a_killed_node_misses_no_write_and_a_full_restart_keeps_every_acknowledged_one(binary: Binary) {
    // Four nodes, N = 3, W = 2: a killed replica's writes go to a stand-in as hints.
    let mut cluster = LocalCluster::start(binary, 4, &["--replicas", "3", "--write-quorum", "2"]);
    // A writer runs through node 1; node 3 dies without warning while it runs.
    let mut writer = cluster.client(0);
    let progress = Arc::new(AtomicU32::new(0));
    let writing = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let mut acknowledged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for i in 0..WRITES {
                let key = format!("key-{i}").into_bytes();
                let value = format!("value-{i}").into_bytes();
                if let Err(error) = write(&mut writer, &key, &value) {
                    return Err(format!("write {i} failed: {error}"));
                }
                acknowledged.push((key, value));
                progress.store(i + 1, Ordering::Relaxed);
            }
            Ok(acknowledged)
        })
    };
    assert!(eventually(Duration::from_secs(30), || {
        progress.load(Ordering::Relaxed) >= WRITES / 5
    }));
    cluster.kill(2);
    let killed_at = progress.load(Ordering::Relaxed);
    let started = Instant::now();
    let acknowledged = writing
        .join()
        .expect("writer thread")
        .expect("every write succeeds");
    println!(
        "node 3 killed after write {killed_at}; {} more writes in {:?}",
        WRITES - killed_at,
        started.elapsed()
    );
    assert!(killed_at < WRITES, "the kill came while the writer ran");
    let held_for_3: u64 = (0..4)
        .filter(|&i| i != 2)
        .filter_map(|i| cluster.info_field(i, "hints_held"))
        .filter_map(|h| h.parse::<u64>().ok())
        .sum();
    assert!(held_for_3 > 0, "stand-ins hold hints for node 3");

    // Back: hints and anti-entropy bring it up to date.
    cluster.restart(2);
    let keys: Vec<Vec<u8>> = acknowledged.iter().map(|(k, _)| k.clone()).collect();
    let expected = keys_replicated_by(3, 4, &keys);
    let converged = eventually(Duration::from_secs(60), || {
        let hints: u64 = (0..4)
            .filter_map(|i| cluster.info_field(i, "hints_held"))
            .filter_map(|h| h.parse::<u64>().ok())
            .sum();
        let held = cluster
            .info_field(2, "keys")
            .and_then(|k| k.parse::<usize>().ok());
        hints == 0 && held == Some(expected)
    });
    assert!(
        converged,
        "node 3 holds {:?} of its {expected} keys; hints left {:?}",
        cluster.info_field(2, "keys"),
        (0..4)
            .map(|i| cluster.info_field(i, "hints_held"))
            .collect::<Vec<_>>()
    );

    // Every node killed at once, then all back: every acknowledged write is there.
    for index in 0..4 {
        cluster.kill(index);
    }
    for index in 0..4 {
        cluster.restart(index);
    }
    let replayed: u64 = (0..4)
        .filter_map(|i| cluster.info_field(i, "data_replayed_records"))
        .filter_map(|text| text.parse::<u64>().ok())
        .sum();
    assert!(
        replayed > 0,
        "after kill -9 the nodes replayed their logs past the checkpoints, and INFO says so"
    );
    let mut reader = cluster.client(1);
    for (key, value) in &acknowledged {
        let read = eventually(
            Duration::from_secs(10),
            || matches!(reader.command(&[b"GET", key]), Ok(Reply::Bulk(Some(v))) if &v == value),
        );
        assert!(
            read,
            "{} lost after the full restart",
            String::from_utf8_lossy(key)
        );
    }
}

fn sigterm_stops_a_node_cleanly_and_it_keeps_its_identity(binary: Binary) {
    let mut cluster = LocalCluster::start(binary, 1, &[]);
    let mut client = cluster.client_of(0);
    assert_eq!(
        client.command(&[b"SET", b"k", b"v"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert!(cluster.stop(0), "exit status 0 after SIGTERM");
    let identity = std::fs::read_to_string(cluster.data_dir(0).join("identity")).unwrap();
    assert!(identity.contains("node_id = 1"), "{identity}");
    cluster.restart(0);
    assert_eq!(
        cluster.info_field(0, "ringkv_node_id").as_deref(),
        Some("1")
    );
    // Recovery speaks: the open started from a checkpoint, replayed the SET written
    // after it, and found no torn tail.
    for (field, expected) in [
        ("data_checkpoint_used", "1"),
        ("data_replayed_records", "1"),
        ("data_torn_tail_cut", "0"),
    ] {
        assert_eq!(
            cluster.info_field(0, field).as_deref(),
            Some(expected),
            "INFO {field}"
        );
    }
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains("data: opened:") && line.contains(" 1 records replayed")),
        "the open is logged at info:\n{log}"
    );
    let mut client = cluster.client_of(0);
    assert_eq!(
        client.command(&[b"GET", b"k"]).unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}

fn the_client_fails_over_when_its_node_dies(binary: Binary) {
    let mut cluster = LocalCluster::start(binary, 3, &[]);
    let mut client = cluster.client(0);
    let first = client.get(b"counter").unwrap();
    let context = client.put(b"counter", &first.context, b"1").unwrap();
    assert_eq!(client.connected_to(), Some(cluster.client_address(0)));
    cluster.kill(0);
    let context = client.put(b"counter", &context, b"2").unwrap();
    assert_ne!(client.connected_to(), Some(cluster.client_address(0)));
    let read = client.get(b"counter").unwrap();
    assert_eq!(
        read.siblings,
        vec![b"2".to_vec()],
        "the second put superseded the first"
    );
    assert!(!context.is_empty());
}

both_binaries!(
    a_killed_node_misses_no_write_and_a_full_restart_keeps_every_acknowledged_one,
    sigterm_stops_a_node_cleanly_and_it_keeps_its_identity,
    the_client_fails_over_when_its_node_dies,
);
