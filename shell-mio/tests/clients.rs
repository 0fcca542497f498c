//! A 3-node cluster of real `ringkv-node` processes on 127.0.0.1, used by clients none
//! of us wrote (redis-cli, redis-py) and by our own, and fed bad input.

mod support;

use ringkv_client::Reply;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{Binary, LocalCluster};

/// Whether an external client is installed. Under CI (`CI` set, as when `.ci/run`
/// runs, which installs them) a missing one fails the test; elsewhere the test says
/// what to install and skips that part, so `cargo test` passes on a machine with only
/// the Rust toolchain (the `redis` crate tests cover the contract there).
fn installed(what: &str, found: bool, install: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing under CI: {install}"
        );
        eprintln!("skipping the {what} part: it is not installed ({install}; .ci/run does)");
    }
    found
}

fn have_redis_cli() -> bool {
    let found = Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    installed("redis-cli", found, "apt-get install redis-tools")
}

/// A Python interpreter with redis-py (`RINGKV_PYTHON`, else `python3`), if any.
fn python_with_redis() -> Option<String> {
    let python = std::env::var("RINGKV_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let found = Command::new(&python)
        .args(["-c", "import redis"])
        .output()
        .is_ok_and(|output| output.status.success());
    installed("redis-py", found, "pip install redis").then_some(python)
}

fn redis_cli(port: u16, arguments: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(arguments)
        .output()
        .expect("redis-cli runs (install redis-tools; .ci/run does)");
    assert!(
        output.status.success(),
        "redis-cli {arguments:?}: {output:?}"
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn redis_cli_sets_gets_and_deletes_across_nodes(binary: Binary) {
    if !have_redis_cli() {
        return;
    }
    let cluster = LocalCluster::start(binary, 3, &[]);
    let ports: Vec<u16> = (0..3).map(|i| cluster.client_address(i).port()).collect();
    assert_eq!(
        redis_cli(ports[0], &["SET", "greeting", "hello world"]),
        "OK"
    );
    assert_eq!(redis_cli(ports[2], &["GET", "greeting"]), "hello world");
    assert_eq!(redis_cli(ports[1], &["EXISTS", "greeting"]), "1");
    assert_eq!(redis_cli(ports[1], &["DEL", "greeting"]), "1");
    assert_eq!(redis_cli(ports[0], &["GET", "greeting"]), "");
    assert_eq!(redis_cli(ports[2], &["EXISTS", "greeting"]), "0");
    let members = redis_cli(ports[0], &["RINGKV.MEMBERS"]);
    assert_eq!(members.matches("status=up").count(), 3, "{members}");
}

fn the_python_redis_client_round_trips(binary: Binary) {
    let Some(python) = python_with_redis() else {
        return;
    };
    let cluster = LocalCluster::start(binary, 3, &[]);
    let script = r#"
import sys, redis
ports = [int(p) for p in sys.argv[1:]]
# redis-py's default protocol (RESP3 from version 8 on, through HELLO 3), and RESP2.
first = redis.Redis(host="127.0.0.1", port=ports[0])
last = redis.Redis(host="127.0.0.1", port=ports[-1], protocol=2)
assert first.ping()
assert first.set("py:key", b"\x00binary\xffvalue") is True
assert last.get("py:key") == b"\x00binary\xffvalue", last.get("py:key")
pipe = first.pipeline(transaction=False)
for i in range(50):
    pipe.set(f"py:{i}", str(i))
assert all(pipe.execute())
assert [last.get(f"py:{i}") for i in range(50)] == [str(i).encode() for i in range(50)]
assert first.delete("py:key") == 1
assert last.get("py:key") is None
assert first.get("py:key") is None
assert first.exists("py:0") == 1
assert first.delete("py:never:a", "py:never:b") == 0
# A pipeline without a transaction reads its own writes, in order.
pipe = last.pipeline(transaction=False)
for i in range(100):
    pipe.set(f"py:ryw:{i}", "new").get(f"py:ryw:{i}").delete(f"py:ryw:{i}").get(f"py:ryw:{i}")
replies = pipe.execute()
for i in range(100):
    assert replies[4 * i : 4 * i + 4] == [True, b"new", 1, None], (i, replies[4 * i : 4 * i + 4])
# redis-py's default pipeline is a MULTI ... EXEC transaction: refused whole.
try:
    with first.pipeline() as transaction:
        transaction.set("py:tx", "1").get("py:tx").execute()
    raise SystemExit("a transaction was accepted")
except redis.exceptions.ResponseError as error:
    assert "no transactions" in str(error), error
assert last.get("py:tx") is None
assert first.ping()
# The token a VSET returns, reused for the next write, erases no unseen sibling.
start = first.execute_command("VGET", "py:cart")[0]
first.execute_command("VSET", "py:cart", start, "from-A")
token_b = last.execute_command("VSET", "py:cart", start, "from-B")
last.execute_command("VSET", "py:cart", token_b, "from-B-2")
siblings = sorted(first.execute_command("VGET", "py:cart", "R", "3")[1])
assert siblings == [b"from-A", b"from-B-2"], siblings
# An oversize value is refused and the connection serves on.
try:
    first.set("py:big", b"x" * 1_200_000)
    raise SystemExit("an oversize value was accepted")
except redis.exceptions.ResponseError as error:
    assert "value too large" in str(error), error
assert first.set("py:small", b"y") is True and first.get("py:small") == b"y"
print("python ok")
"#;
    let mut command = Command::new(&python);
    command.arg("-c").arg(script);
    for index in 0..3 {
        command.arg(cluster.client_address(index).port().to_string());
    }
    let output = command
        .output()
        .expect("python3 runs (with redis from PyPI; .ci/run installs it)");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("python ok"),
        "python redis client: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn concurrent_puts_become_siblings_and_an_update_merges_them(binary: Binary) {
    let cluster = LocalCluster::start(binary, 3, &[]);
    let mut phone = cluster.client(0);
    let mut laptop = cluster.client(2);
    let start = phone.get(b"cart").unwrap();
    assert!(start.siblings.is_empty());
    phone.put(b"cart", &start.context, b"book").unwrap();
    laptop.put(b"cart", &start.context, b"pen").unwrap();
    let both = phone.get_with(b"cart", Some(3)).unwrap();
    let mut siblings = both.siblings.clone();
    siblings.sort();
    assert_eq!(siblings, vec![b"book".to_vec(), b"pen".to_vec()]);
    let merged = laptop
        .update(b"cart", |siblings| siblings.join(&b","[..]))
        .unwrap();
    let after = phone.get_with(b"cart", Some(3)).unwrap();
    assert_eq!(after.siblings, vec![merged], "one value supersedes both");
    phone.delete_with(b"cart", &after.context, Some(3)).unwrap();
    assert!(laptop.get(b"cart").unwrap().siblings.is_empty(), "deleted");
}

/// Sends `request` on a new connection (then ends its side of the stream when
/// `half_close`) and reads until the node closes it or stays silent for 3 s: (what it
/// said, whether it closed).
fn raw_exchange(
    address: std::net::SocketAddr,
    request: &[u8],
    half_close: bool,
) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = stream.write_all(request);
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false, // silent: still open
        }
    };
    (reply, closed)
}

fn malformed_resp_gets_an_error_and_the_connection_closes(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &[]);
    let address = cluster.client_address(0);
    let (reply, closed) = raw_exchange(address, b"*2\r\n$3\r\nGET\r\n:oops\r\n", false);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("-ERR Protocol error"), "{text}");
    assert!(closed, "the connection is closed after a protocol error");
    // The node keeps serving others.
    let mut client = cluster.client_of(0);
    assert_eq!(
        client.command(&[b"PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert_eq!(
        cluster.info_field(0, "protocol_errors").as_deref(),
        Some("1")
    );
}

fn a_client_that_ends_its_stream_after_requests_is_answered_then_closed(binary: Binary) {
    // The request and the end of stream arrive together: the node must not take the
    // short read for a drained socket and miss the end of stream (the connection
    // would linger half-closed).
    let cluster = LocalCluster::start(binary, 1, &[]);
    let address = cluster.client_address(0);
    for round in 0..20 {
        let (reply, closed) = raw_exchange(address, b"PING\r\nPING\r\n", true);
        assert_eq!(reply, b"+PONG\r\n+PONG\r\n", "round {round}");
        assert!(closed, "round {round}: the node closes after answering");
    }
}

fn a_value_over_one_mebibyte_is_refused_and_the_connection_stays(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &[]);
    let mut client = cluster.client_of(0);
    let too_large = vec![b'x'; (1 << 20) + 1];
    match client.command(&[b"SET", b"big", &too_large]).unwrap() {
        Reply::Error(text) => assert!(text.starts_with("ERR value too large"), "{text}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let at_limit = vec![b'y'; 1 << 20];
    assert_eq!(
        client.command(&[b"SET", b"big", &at_limit]).unwrap(),
        Reply::Simple("OK".into()),
        "the same connection still works, and 1 MiB exactly is accepted"
    );
    assert_eq!(
        client.command(&[b"GET", b"big"]).unwrap(),
        Reply::Bulk(Some(at_limit))
    );
}

fn past_the_connection_limit_new_connections_are_refused_cleanly(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &["--connections-max", "4"]);
    let address = cluster.client_address(0);
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut pong = [0u8; 7];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
        held.push(stream);
    }
    let (reply, closed) = raw_exchange(address, b"PING\r\n", false);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed);
    // Those within the limit are still served.
    held[0].write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    held[0].read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    drop(held);
    // And once they leave, new clients get in again.
    assert!(support::eventually(Duration::from_secs(5), || {
        ringkv_frontend::dev::answers_ping(address)
    }));
}

fn a_password_keeps_out_clients_until_they_authenticate(binary: Binary) {
    let cluster = LocalCluster::start(binary, 1, &["--requirepass", "s3cret"]);
    let address = cluster.client_address(0);
    let port = address.port().to_string();
    let (reply, closed) = raw_exchange(address, b"PING\r\nGET k\r\n", true);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n"
    );
    assert!(closed);
    let (reply, _) = raw_exchange(address, b"AUTH wrong\r\nGET k\r\n", true);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-WRONGPASS"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let (reply, _) = raw_exchange(address, b"AUTH s3cret\r\nSET k v\r\n", true);
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n+OK\r\n");
    // redis-cli's -a, and redis-py with a password over RESP3 (HELLO 3 AUTH ...) and
    // RESP2 (AUTH); without one redis-py is refused.
    if !have_redis_cli() {
        return;
    }
    assert_eq!(
        redis_cli(
            address.port(),
            &["-a", "s3cret", "--no-auth-warning", "GET", "k"]
        ),
        "v"
    );
    let Some(python) = python_with_redis() else {
        return;
    };
    let script = r#"
import sys, redis
port = int(sys.argv[1])
for protocol in (3, 2):
    client = redis.Redis(host="127.0.0.1", port=port, password="s3cret", protocol=protocol)
    assert client.set(f"py{protocol}", b"x") is True
    assert client.get(f"py{protocol}") == b"x"
try:
    redis.Redis(host="127.0.0.1", port=port, protocol=2).get("k")
    raise SystemExit("a client without the password was served")
except redis.exceptions.AuthenticationError:
    pass
print("python auth ok")
"#;
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&port)
        .output()
        .expect("python3 runs");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("python auth ok"),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

both_binaries!(
    a_password_keeps_out_clients_until_they_authenticate,
    redis_cli_sets_gets_and_deletes_across_nodes,
    the_python_redis_client_round_trips,
    concurrent_puts_become_siblings_and_an_update_merges_them,
    malformed_resp_gets_an_error_and_the_connection_closes,
    a_client_that_ends_its_stream_after_requests_is_answered_then_closed,
    a_value_over_one_mebibyte_is_refused_and_the_connection_stays,
    past_the_connection_limit_new_connections_are_refused_cleanly,
);
