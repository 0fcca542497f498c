//! The load generator against a stand-in RESP server on 127.0.0.1 that answers every
//! request with +OK and stalls once for a known time: the open loop must show the
//! stall in the latency of every request that was due during it (no coordinated
//! omission), while the closed loop, by its nature, hides it in a few slow requests.

use ringkv_bench::keys::{KeyChooser, KeyDistribution};
use ringkv_bench::load::run::{Length, Plan, Protocol, run};
use ringkv_bench::load::workload::{Mix, ValueSize, Workload};
use ringkv_core::resp::{Parsed, RespLimits, parse_request};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const STALL: Duration = Duration::from_millis(400);
const STALL_AFTER: Duration = Duration::from_millis(800);

/// A server answering +OK (or a null for GET), which sleeps `STALL` once, `STALL_AFTER`
/// after it started. Returns its address; it stops with the process.
fn stalling_server() -> SocketAddr {
    server(STALL)
}

/// A server that stalls for `stall` once, `STALL_AFTER` after it started (zero: never).
fn server(stall: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let started = Instant::now();
    let stalled = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let stalled = Arc::clone(&stalled);
            std::thread::spawn(move || serve(stream, started, stall, &stalled));
        }
    });
    address
}

fn serve(mut stream: TcpStream, started: Instant, stall: Duration, stalled: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if started.elapsed() >= STALL_AFTER && !stalled.swap(true, Ordering::SeqCst) {
            std::thread::sleep(stall); // the whole server stops: every connection waits
        }
        while stalled.load(Ordering::SeqCst) && started.elapsed() < STALL_AFTER + stall {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut replies = Vec::new();
        let mut used = 0;
        while let Parsed::Request { consumed, .. } =
            parse_request(&buffer[used..], RespLimits::default())
        {
            used += consumed;
            replies.extend_from_slice(b"+OK\r\n");
        }
        buffer.drain(..used);
        if stream.write_all(&replies).is_err() {
            return;
        }
    }
}

fn plan(host: SocketAddr, rate: Option<f64>) -> Plan {
    Plan {
        hosts: vec![host],
        connections: 4,
        pipeline: 1,
        rate,
        length: Length::Duration(Duration::from_millis(2_000)),
        warmup: Duration::ZERO,
        workload: Workload {
            mix: Mix::parse("read:0,write:100").unwrap(),
            keys: KeyChooser::new(KeyDistribution::Uniform, 1000).unwrap(),
            key_count: 1000,
            key_prefix: "k:".to_owned(),
            value_size: ValueSize::Fixed(16),
            versioned: false,
            read_quorum: None,
            write_quorum: None,
        },
        seed: 7,
        window: None,
        protocol: Protocol::Resp,
        client_timeout: None,
        faulted_host: None,
    }
}

#[test]
fn the_open_loop_shows_a_stall_in_every_request_due_during_it() {
    let host = stalling_server();
    let rate = 1_000.0;
    let results = run(&plan(host, Some(rate)), |_| {}).unwrap();
    println!("{}", results.table());
    // About rate * STALL = 400 of the 2,000 requests were due during the stall; each
    // waited for its end, so their latencies spread evenly from ~STALL down to ~0.
    // The slowest 1% (20 requests) all waited more than STALL / 2; the median did not.
    let set = &results.operations[0];
    assert!(set.count >= 1_800, "the schedule was kept: {}", set.count);
    assert!(
        set.latency_us.p99 >= (STALL.as_micros() as u64) / 2,
        "p99 shows the stall: {:?}",
        set.latency_us
    );
    assert!(
        set.latency_us.p50 < 50_000,
        "but not the median: {:?}",
        set.latency_us
    );
}

#[test]
fn the_closed_loop_hides_the_stall_in_a_few_requests() {
    // The control: the same server and stall measured the coordinated-omission way.
    let host = stalling_server();
    let results = run(&plan(host, None), |_| {}).unwrap();
    let set = &results.operations[0];
    assert!(
        set.latency_us.max >= (STALL.as_micros() as u64) / 2,
        "the stalled requests themselves were slow: {:?}",
        set.latency_us
    );
    assert!(
        set.latency_us.p99 < (STALL.as_micros() as u64) / 4,
        "yet p99 looks fine, as a closed loop reports it: {:?}",
        set.latency_us
    );
}

#[test]
fn a_client_timeout_fails_over_and_the_healthy_hosts_are_reported_apart() {
    // Host 0 stalls for 400 ms; host 1 never does. With a 100 ms client timeout the
    // stalled host's connections fail over to host 1 instead of waiting out the stall.
    let hosts = vec![stalling_server(), server(Duration::ZERO)];
    let mut plan = plan(hosts[0], Some(1_000.0));
    plan.hosts = hosts;
    plan.client_timeout = Some(Duration::from_millis(100));
    plan.faulted_host = Some(0);
    plan.window = Some((Duration::from_millis(700), Duration::from_millis(1_300)));
    let results = run(&plan, |_| {}).unwrap();
    println!("{}", results.table());
    let window = results.window.expect("a window");
    let healthy = &window.healthy;
    assert!(healthy.faulted_host_client_timeouts >= 1, "{healthy:?}");
    assert_eq!(healthy.client_timeouts, 0, "{healthy:?}");
    assert_eq!(healthy.failed, 0, "{healthy:?}");
    assert!(healthy.requests >= 200, "{healthy:?}");
    assert!(healthy.latency_us.p999 < 50_000, "{healthy:?}");
    assert!(
        results.latency_us.max < STALL.as_micros() as u64,
        "failed over before the stall ended: {:?}",
        results.latency_us
    );
}
