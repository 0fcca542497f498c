//! The peer side of real nodes: peers of another cluster and peers that send garbage
//! are refused without harm, and a node started with seeds joins a running cluster.

mod support;

use ringkv_client::Reply;
use ringkv_core::version::NodeId;
use ringkv_core::wire::{Message, encode_frame};
use ringkv_frontend::dev;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{Binary, LocalCluster, eventually};

/// Writes `bytes` to node 1's peer port; true when the node then closes the connection
/// (within 5 s).
fn closes_after(cluster: &LocalCluster, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(dev::peer_address(cluster.base_port(), 0)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut scratch = [0u8; 64];
    match stream.read(&mut scratch) {
        Ok(0) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false, // peers never answer on a connection they did not open
    }
}

fn a_peer_of_another_cluster_is_refused_and_the_node_serves_on(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &[]);
    // Control: a hello of this cluster keeps the connection open.
    let mut own = Vec::new();
    encode_frame(
        &mut own,
        cluster.cluster_id(),
        &Message::Hello {
            node: NodeId(7),
            proof: 0,
        },
    )
    .unwrap();
    assert!(
        !closes_after(&cluster, &own),
        "a peer of this cluster is kept"
    );
    let mut frame = Vec::new();
    let hello = Message::Hello {
        node: NodeId(7),
        proof: 0,
    };
    encode_frame(&mut frame, 99, &hello).unwrap();
    assert!(
        closes_after(&cluster, &frame),
        "a foreign hello closes the connection"
    );
    assert!(eventually(Duration::from_secs(5), || {
        cluster.info_field(0, "peers_refused").as_deref() == Some("1")
    }));
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    let names_both = format!(
        "of cluster 99; this node speaks protocol {} of cluster {}",
        ringkv_core::wire::PROTOCOL_VERSION,
        cluster.cluster_id()
    );
    assert!(log.contains(&names_both), "the log names both clusters");
    assert!(
        closes_after(&cluster, b"\x05\x00\x00\x00garbage-bytes"),
        "garbage too"
    );
    let mut client = cluster.client_of(0);
    assert_eq!(
        client.command(&[b"SET", b"k", b"v"]).unwrap(),
        Reply::Simple("OK".into())
    );
}

fn a_peer_without_the_cluster_secret_is_refused(binary: Binary) {
    let cluster = LocalCluster::start(
        binary,
        2,
        &[
            "--peer-secret",
            "alpha",
            "--replicas",
            "2",
            "--write-quorum",
            "2",
        ],
    );
    // Nodes started with the secret work together: a write reaches both.
    let mut client = cluster.client_of(0);
    assert_eq!(
        client.command(&[b"SET", b"k", b"v"]).unwrap(),
        Reply::Simple("OK".into())
    );
    let hello = |secret: &str| {
        let node = NodeId(7);
        let proof = ringkv_core::wire::hello_proof(secret.as_bytes(), cluster.cluster_id(), node);
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            cluster.cluster_id(),
            &Message::Hello { node, proof },
        )
        .unwrap();
        frame
    };
    assert!(
        !closes_after(&cluster, &hello("alpha")),
        "the secret is kept"
    );
    assert!(
        closes_after(&cluster, &hello("beta")),
        "another secret is refused"
    );
    assert!(closes_after(&cluster, &hello("")), "no secret is refused");
    assert!(eventually(Duration::from_secs(5), || {
        cluster.info_field(0, "peers_refused").as_deref() == Some("2")
    }));
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(log.contains("refusing peer 7 at"), "the log names the peer");
    assert!(log.contains("does not prove this cluster's peer secret"));
}

fn a_node_started_with_seeds_joins_a_running_cluster(binary: Binary) {
    let mut cluster = LocalCluster::start(binary, 3, &[]);
    let joiner = cluster.add_joiner(&["--replicas", "3"]);
    let all_up = |cluster: &LocalCluster, node: u16| {
        let mut client = cluster.client_of(node);
        match client.command(&[b"RINGKV.MEMBERS"]) {
            Ok(Reply::Array(Some(lines))) => {
                let up = lines.iter().filter(|line| {
                    matches!(line, Reply::Bulk(Some(text)) if text.windows(9).any(|w| w == b"status=up"))
                });
                up.count() == 4
            }
            _ => false,
        }
    };
    assert!(
        eventually(Duration::from_secs(30), || (0..4)
            .all(|n| all_up(&cluster, n))),
        "every view shows four members up"
    );
    // The newcomer coordinates requests for the whole cluster.
    let mut client = cluster.client_of(joiner);
    assert!(eventually(Duration::from_secs(10), || {
        matches!(client.command(&[b"SET", b"joined", b"yes"]), Ok(Reply::Simple(ok)) if ok == "OK")
    }));
    let mut other = cluster.client_of(0);
    assert_eq!(
        other.command(&[b"GET", b"joined"]).unwrap(),
        Reply::Bulk(Some(b"yes".to_vec()))
    );
}

both_binaries!(
    a_peer_without_the_cluster_secret_is_refused,
    a_peer_of_another_cluster_is_refused_and_the_node_serves_on,
    a_node_started_with_seeds_joins_a_running_cluster,
);
