//! The RESP surface as users of the `redis` crate (a widely used Rust Redis client
//! nobody here wrote) touch it, against real node processes on 127.0.0.1, on both
//! binaries. It needs nothing installed beyond the Rust toolchain. Each test is a
//! regression test of a contract a real client once found broken: pipelined
//! read-your-writes, refused transactions, the token a write returns, oversize values,
//! the interval durability, DEL's count.

mod support;

use redis::{Connection, Value};
use std::time::{Duration, Instant};
use support::{Binary, LocalCluster};

fn connect(cluster: &LocalCluster, index: u16) -> Connection {
    let address = cluster.client_address(index);
    let client = redis::Client::open(format!("redis://{address}/")).expect("a redis URL");
    let connection = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("the redis crate connects");
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    connection
}

fn vset(connection: &mut Connection, key: &str, context: &str, value: &str) -> String {
    redis::cmd("VSET")
        .arg(key)
        .arg(context)
        .arg(value)
        .query(connection)
        .expect("VSET answers a token")
}

/// The live siblings of `key`, read at R=3, sorted.
fn siblings(connection: &mut Connection, key: &str) -> Vec<String> {
    let (_context, mut values): (String, Vec<String>) = redis::cmd("VGET")
        .arg(key)
        .arg("R")
        .arg(3)
        .query(connection)
        .expect("VGET answers [context, values]");
    values.sort();
    values
}

fn pipelined_commands_observe_the_earlier_commands_of_their_connection(binary: Binary) {
    let cluster = LocalCluster::start(binary, 3, &[]);
    for index in 0..3 {
        let mut connection = connect(&cluster, index);
        let mut pipe = redis::pipe();
        for i in 0..300 {
            let key = format!("ryw:{index}:{i}");
            pipe.set(&key, "new")
                .get(&key)
                .del(&key)
                .get(&key)
                .exists(&key);
        }
        let replies: Vec<Value> = pipe.query(&mut connection).expect("the pipeline runs");
        for (i, chunk) in replies.chunks(5).enumerate() {
            assert_eq!(chunk[0], Value::Okay, "node {index} key {i}: SET");
            assert_eq!(
                chunk[1],
                Value::BulkString(b"new".to_vec()),
                "node {index} key {i}: a GET pipelined behind a SET of its key sees it"
            );
            assert_eq!(chunk[3], Value::Nil, "node {index} key {i}: GET after DEL");
            assert_eq!(
                chunk[4],
                Value::Int(0),
                "node {index} key {i}: EXISTS after DEL"
            );
        }
        // An overwrite in the same pipeline, read back in it.
        let (first, second): (String, String) = redis::pipe()
            .set("ryw:shared", "old")
            .ignore()
            .get("ryw:shared")
            .set("ryw:shared", "newer")
            .ignore()
            .get("ryw:shared")
            .query(&mut connection)
            .expect("the pipeline runs");
        assert_eq!((first.as_str(), second.as_str()), ("old", "newer"));
    }
}

fn a_transaction_is_refused_and_nothing_queued_in_it_is_applied(binary: Binary) {
    let cluster = LocalCluster::start(binary, 3, &[]);
    let mut connection = connect(&cluster, 0);
    let result: redis::RedisResult<Vec<Value>> = redis::pipe()
        .atomic()
        .set("tx:a", "1")
        .set("tx:b", "2")
        .query(&mut connection);
    let error = result.expect_err("MULTI ... EXEC must fail");
    assert!(
        error.to_string().contains("no transactions"),
        "the error names the reason: {error}"
    );
    let mut other = connect(&cluster, 1);
    for key in ["tx:a", "tx:b"] {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut other).unwrap();
        assert_eq!(
            value, None,
            "{key} was queued after MULTI and must not be applied"
        );
    }
    // The connection works on.
    let () = redis::cmd("SET")
        .arg("tx:a")
        .arg("3")
        .query(&mut connection)
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("tx:a")
        .query(&mut connection)
        .unwrap();
    assert_eq!(value, "3");
}

fn the_token_a_write_returns_never_erases_a_sibling_its_writer_was_not_shown(binary: Binary) {
    let cluster = LocalCluster::start(binary, 3, &[]);
    let (mut a, mut b, mut reader) = (
        connect(&cluster, 0),
        connect(&cluster, 2),
        connect(&cluster, 1),
    );
    for round in 0..10 {
        let key = format!("cart:{round}");
        let (start, _): (String, Vec<String>) = redis::cmd("VGET").arg(&key).query(&mut a).unwrap();
        let token_a = vset(&mut a, &key, &start, "from-A");
        let token_b = vset(&mut b, &key, &start, "from-B");
        assert_eq!(siblings(&mut reader, &key), ["from-A", "from-B"]);
        let token_b = vset(&mut b, &key, &token_b, "from-B-2");
        assert_eq!(
            siblings(&mut reader, &key),
            ["from-A", "from-B-2"],
            "round {round}: from-A was acknowledged and B never saw it"
        );
        vset(&mut a, &key, &token_a, "from-A-2");
        vset(&mut b, &key, &token_b, "from-B-3");
        assert_eq!(siblings(&mut reader, &key), ["from-A-2", "from-B-3"]);
    }
}

fn an_oversize_value_is_refused_and_the_connection_stays_usable(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &[]);
    let mut connection = connect(&cluster, 0);
    for size in [(1 << 20) + 1, 1_200_000, 2 << 20, 16 << 20] {
        let value = vec![b'x'; size];
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg("big")
            .arg(&value)
            .query(&mut connection);
        let error = result.expect_err("over the limit");
        assert!(
            error.to_string().contains("value too large"),
            "{size} bytes: {error}"
        );
        let () = redis::cmd("SET")
            .arg("small")
            .arg(size)
            .query(&mut connection)
            .unwrap();
        let back: usize = redis::cmd("GET")
            .arg("small")
            .query(&mut connection)
            .unwrap();
        assert_eq!(
            back, size,
            "the same connection serves on after {size} bytes"
        );
    }
    let big: Option<Vec<u8>> = redis::cmd("GET").arg("big").query(&mut connection).unwrap();
    assert_eq!(big, None, "nothing oversize was stored");
}

fn the_durability_interval_is_honoured(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &["--durability", "interval:50"]);
    let mut connection = connect(&cluster, 0);
    let syncs = |cluster: &LocalCluster| -> u64 {
        cluster
            .info_field(0, "syncs")
            .and_then(|text| text.parse().ok())
            .expect("INFO reports syncs")
    };
    // A write, then silence: it must reach the disk about 50 ms later, not at the next
    // once-a-second timer. Eight rounds of a write and 200 ms of silence take 1.6 s;
    // a once-a-second sync would make at most 2 or 3 of them.
    let before = syncs(&cluster);
    for round in 0..8 {
        let () = redis::cmd("SET")
            .arg("tick")
            .arg(round)
            .query(&mut connection)
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let synced = syncs(&cluster) - before;
    assert!(
        synced >= 6,
        "{synced} syncs for 8 writes 200 ms apart at interval:50"
    );
    // Under a steady stream of writes it syncs about every 50 ms, not per write.
    let before = syncs(&cluster);
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_millis(1_000) {
        let () = redis::cmd("SET")
            .arg("tick")
            .arg(written)
            .query(&mut connection)
            .unwrap();
        written += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let synced = syncs(&cluster) - before;
    assert!(
        (5..=60).contains(&synced) && synced < written,
        "{synced} syncs for {written} writes in 1 s at interval:50"
    );
}

fn del_answers_how_many_keys_existed(binary: Binary) {
    let cluster = LocalCluster::start(binary, 3, &[]);
    let mut connection = connect(&cluster, 0);
    let mut other = connect(&cluster, 2);
    for i in 0..20 {
        let key = format!("del:{i}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query(&mut connection)
            .unwrap();
        let none: i64 = redis::cmd("DEL")
            .arg(format!("never:{i}:a"))
            .arg(format!("never:{i}:b"))
            .query(&mut other)
            .unwrap();
        assert_eq!(none, 0, "DEL of keys never written");
        let one: i64 = redis::cmd("DEL")
            .arg(&key)
            .arg("never")
            .query(&mut other)
            .unwrap();
        assert_eq!(one, 1, "{key} existed, 'never' did not");
        let again: i64 = redis::cmd("DEL").arg(&key).query(&mut connection).unwrap();
        assert_eq!(again, 0, "{key} is deleted already");
    }
}

/// `ringkv-node --reply-sender always`: replies (and peer frames) go through the
/// sender thread whenever a wakeup writes two or more connections. Concurrent
/// pipelines of values up to 20 KB (the sender's short writes are the unit tests'), each
/// read back whole and in order.
#[test]
fn replies_through_the_sender_thread_arrive_whole_and_in_order() {
    let cluster = LocalCluster::start(Binary::Mio, 3, &["--reply-sender", "always"]);
    let value_of = |key: &str, size: usize| -> Vec<u8> {
        let seed = key
            .bytes()
            .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        (0..size).map(|i| seed.wrapping_add(i as u8)).collect()
    };
    std::thread::scope(|scope| {
        for worker in 0..6u16 {
            let cluster = &cluster;
            scope.spawn(move || {
                let mut connection = connect(cluster, worker % 3);
                for round in 0..4 {
                    let keys: Vec<(String, usize)> = (0..40)
                        .map(|i| {
                            let key = format!("sender:{worker}:{round}:{i}");
                            (key, (i * 7_919 + round * 104_729) % 20_000)
                        })
                        .collect();
                    let mut writes = redis::pipe();
                    for (key, size) in &keys {
                        writes.set(key, value_of(key, *size)).ignore();
                    }
                    let () = writes.query(&mut connection).expect("the SETs run");
                    let mut reads = redis::pipe();
                    for (key, _) in &keys {
                        reads.get(key);
                    }
                    let values: Vec<Vec<u8>> = reads.query(&mut connection).expect("the GETs run");
                    for ((key, size), value) in keys.iter().zip(&values) {
                        assert!(value == &value_of(key, *size), "{key} came back wrong");
                    }
                }
            });
        }
    });
    let handed_over: u64 = (0..3)
        .map(|index| {
            cluster
                .info_field(index, "sender_connections")
                .and_then(|field| field.trim().parse::<u64>().ok())
                .expect("INFO reports sender_connections")
        })
        .sum();
    assert!(handed_over > 0, "nothing went through the sender thread");
}

both_binaries!(
    del_answers_how_many_keys_existed,
    pipelined_commands_observe_the_earlier_commands_of_their_connection,
    a_transaction_is_refused_and_nothing_queued_in_it_is_applied,
    the_token_a_write_returns_never_erases_a_sibling_its_writer_was_not_shown,
    an_oversize_value_is_refused_and_the_connection_stays_usable,
    the_durability_interval_is_honoured,
);
