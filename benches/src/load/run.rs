//! The load loop: one thread, one mio poll, C connections spread over the hosts.
//!
//! - **Closed loop** (no rate): each connection keeps `pipeline` requests in flight and
//!   sends the next as soon as a reply comes back. Latency is reply time minus send
//!   time.
//! - **Open loop** (`rate` ops/s): requests are due on a fixed schedule (each connection
//!   every `connections / rate` seconds, staggered) whatever the replies do, and each
//!   latency is measured from the request's *intended* send time. A server that stalls
//!   therefore shows the whole stall in every request scheduled during it: no
//!   coordinated omission (Gil Tene's term; wrk2 measures the same way).
//! - A connection that breaks (a node killed) is reopened to the next host at once; requests
//!   that were in flight on it are sent again there, up to [`ATTEMPTS_MAX`] times,
//!   keeping their original start, so a failover shows as latency, and only a request
//!   that fails every attempt counts as an error (`disconnected`).
//! - With a client timeout, a connection whose oldest request has waited that long since
//!   it was sent counts a client timeout and fails over the same way (a redis-py client
//!   with `socket_timeout` and a retry on the next node).
//! - With a faulted host (a scenario's killed or paused node), the requests of the
//!   connections that started on the other hosts are also reported on their own.
//! - Replies that are RESP errors count by their first word (`TIMEOUT`, `UNAVAILABLE`,
//!   `OVERLOADED`, `ERR`...). Requests started during the warm-up are not recorded.
//! - A versioned write is a VGET and then a VSET with the context it returned; both are
//!   recorded (`vget`, `vset`). Versioned deletes are VDELs with that context too and
//!   record as `del`.

use super::etcd;
use super::report::{Recorder, Results};
use super::workload::{Operation, Step, Workload};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use ringkv_client::reply::{Decimal, Reply, ReplyLimits, parse_reply, write_request};
use ringkv_core::Rng;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sends of one request before it counts as failed.
pub const ATTEMPTS_MAX: u8 = 3;
/// Requests in flight on one connection, at most (open loop: past it, due requests
/// wait and their latency grows, as it should).
pub const IN_FLIGHT_MAX: usize = 4096;
/// How long the run waits for replies after the last request was due.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// How long or how much to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    Duration(Duration),
    Requests(u64),
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Plan {
    pub hosts: Vec<SocketAddr>,
    pub connections: usize,
    pub pipeline: usize,
    /// Open loop at this many operations per second; `None`: closed loop.
    pub rate: Option<f64>,
    pub length: Length,
    pub warmup: Duration,
    pub workload: Workload,
    pub seed: u64,
    /// A window of the measured time (offsets from its start) reported on its own:
    /// the failure window of a scenario.
    pub window: Option<(Duration, Duration)>,
    pub protocol: Protocol,
    /// A request unanswered this long after it was sent fails its connection over.
    pub client_timeout: Option<Duration>,
    /// The host a scenario kills or pauses (an index into `hosts`).
    pub faulted_host: Option<usize>,
}

/// How requests are spelled on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP: ringkv, Redis.
    #[default]
    Resp,
    /// etcd's HTTP gateway (GET/SET/DEL map to range/put/deleterange).
    EtcdHttp,
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    operation: Operation,
    step: Step,
    /// When it was due (open loop) or first sent (closed loop).
    started: Instant,
    /// When this attempt was sent.
    sent: Instant,
    attempts: u8,
}

#[derive(Debug)]
struct Connection {
    host: usize,
    /// The connection's requests count as a healthy host's (see the module docs).
    healthy: bool,
    stream: Option<TcpStream>,
    connected: bool,
    reconnect_at: Option<Instant>,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    in_flight: VecDeque<Pending>,
    /// Requests to send again after a reconnect.
    retry: VecDeque<Pending>,
    /// Open loop: when the next request is due.
    next_due: Instant,
    rng: Rng,
}

/// Runs `plan`; `progress` is called about once a second with the results so far.
pub fn run(plan: &Plan, mut progress: impl FnMut(&Results)) -> io::Result<Results> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let mut recorder = Recorder::new(measure_from, plan.window);
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate.max(0.001)));
    let mut connections: Vec<Connection> = (0..plan.connections)
        .map(|index| Connection {
            host: index % plan.hosts.len(),
            healthy: plan.faulted_host != Some(index % plan.hosts.len()),
            stream: None,
            connected: false,
            reconnect_at: Some(start),
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            in_flight: VecDeque::new(),
            retry: VecDeque::new(),
            // Stagger the schedules so the connections do not fire together.
            next_due: start
                + interval.map_or(Duration::ZERO, |i| {
                    i.mul_f64(index as f64 / plan.connections as f64)
                }),
            rng: Rng::new(plan.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        })
        .collect();
    let mut issued: u64 = 0;
    let mut newest: u64 = 0;
    let mut scratch = Vec::new();
    let mut key = Vec::new();
    let mut value = Vec::new();
    let mut next_progress = start + Duration::from_secs(1);
    let end_of_issuing = |now: Instant, issued: u64| match plan.length {
        Length::Duration(duration) => now >= start + plan.warmup + duration,
        Length::Requests(count) => issued >= count,
    };
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let issuing = !end_of_issuing(now, issued);
        if !issuing && drain_deadline.is_none() {
            drain_deadline = Some(now + DRAIN_TIMEOUT);
            recorder.stop(now);
        }
        let in_flight: usize = connections
            .iter()
            .map(|c| c.in_flight.len() + c.retry.len())
            .sum();
        if !issuing && (in_flight == 0 || drain_deadline.is_some_and(|d| now >= d)) {
            for connection in &connections {
                for _ in connection.in_flight.iter().chain(connection.retry.iter()) {
                    recorder.error_named("unanswered");
                }
            }
            return Ok(recorder.finish(plan));
        }
        for (index, connection) in connections.iter_mut().enumerate() {
            if connection.reconnect_at.is_some_and(|at| now >= at) {
                connection.reconnect_at = None;
                match TcpStream::connect(plan.hosts[connection.host]) {
                    Ok(mut stream) => {
                        poll.registry().register(
                            &mut stream,
                            Token(index),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        connection.stream = Some(stream);
                    }
                    Err(_) => fail_connection(connection, &mut recorder, plan, now),
                }
            }
        }
        // Issue what is due.
        for connection in connections.iter_mut() {
            if !connection.connected {
                continue;
            }
            while let Some(pending) = connection.retry.pop_front() {
                send(
                    connection,
                    plan,
                    pending,
                    &mut key,
                    &mut value,
                    &mut scratch,
                    None,
                );
            }
            loop {
                if !issuing || connection.in_flight.len() >= IN_FLIGHT_MAX {
                    break;
                }
                let started = match interval {
                    Some(interval) => {
                        if connection.next_due > now {
                            break;
                        }
                        let due = connection.next_due;
                        connection.next_due += interval;
                        due
                    }
                    None => {
                        if connection.in_flight.len() >= plan.pipeline {
                            break;
                        }
                        now
                    }
                };
                if end_of_issuing(now, issued) {
                    break;
                }
                issued += 1;
                let step = plan.workload.next(&mut connection.rng, newest);
                if let Step::Write(index) = step {
                    newest = newest.max(index);
                }
                let operation = match (step, plan.workload.versioned) {
                    (Step::Read(_), false) => Operation::Get,
                    (Step::Write(_), false) => Operation::Set,
                    (Step::Delete(_), false) => Operation::Del,
                    (Step::Read(_), true) => Operation::VGet,
                    // A versioned write or delete starts with the read of its context.
                    (Step::Write(_) | Step::Delete(_), true) => Operation::VGet,
                };
                let pending = Pending {
                    operation,
                    step,
                    started,
                    sent: started,
                    attempts: 0,
                };
                send(
                    connection,
                    plan,
                    pending,
                    &mut key,
                    &mut value,
                    &mut scratch,
                    None,
                );
            }
        }
        flush_all(&mut connections, &mut recorder, plan, now);
        let mut timeout = Duration::from_millis(100);
        if let Some(interval) = interval {
            let next = connections
                .iter()
                .filter(|c| c.connected)
                .map(|c| c.next_due)
                .min()
                .unwrap_or(now + interval);
            timeout = timeout.min(next.saturating_duration_since(Instant::now()));
        }
        poll.poll(&mut events, Some(timeout))?;
        let now = Instant::now();
        if let Some(client_timeout) = plan.client_timeout {
            for connection in connections.iter_mut() {
                let expired = connection
                    .in_flight
                    .front()
                    .is_some_and(|oldest| now >= oldest.sent + client_timeout);
                if connection.connected && expired {
                    recorder.client_timeout(connection.healthy);
                    fail_connection(connection, &mut recorder, plan, now);
                }
            }
        }
        for event in &events {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if !connection.connected && event.is_writable() {
                let ok = connection.stream.as_ref().is_some_and(|s| {
                    s.take_error().ok().flatten().is_none() && s.peer_addr().is_ok()
                });
                if ok {
                    connection.connected = true;
                    if let Some(stream) = &connection.stream {
                        let _ = stream.set_nodelay(true);
                    }
                } else if connection
                    .stream
                    .as_ref()
                    .is_some_and(|s| s.peer_addr().is_err())
                {
                    fail_connection(connection, &mut recorder, plan, now);
                    continue;
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read_replies(
                    connection,
                    plan,
                    &mut recorder,
                    now,
                    &mut key,
                    &mut value,
                    &mut scratch,
                );
            }
        }
        if now >= next_progress {
            next_progress = now + Duration::from_secs(1);
            progress(&recorder.snapshot(plan, now));
        }
    }
}

/// Appends `pending`'s request to the connection. `context` is the VGET's answer for the
/// VSET of a versioned write.
#[allow(clippy::too_many_arguments)]
fn send(
    connection: &mut Connection,
    plan: &Plan,
    mut pending: Pending,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    context: Option<&[u8]>,
) {
    let workload = &plan.workload;
    let index = match pending.step {
        Step::Read(i) | Step::Write(i) | Step::Delete(i) => i,
    };
    workload.key(index, key);
    if plan.protocol == Protocol::EtcdHttp {
        let host = plan.hosts[connection.host].to_string();
        let request = match pending.operation {
            Operation::Set | Operation::VSet => {
                fill_value(value, workload, &mut connection.rng);
                etcd::Request::Put { key, value }
            }
            Operation::Del => etcd::Request::DeleteRange { key },
            Operation::Get | Operation::VGet => etcd::Request::Range { key },
        };
        etcd::write_request(&mut connection.out, &host, request);
        pending.attempts += 1;
        pending.sent = Instant::now();
        connection.in_flight.push_back(pending);
        return;
    }
    let read_quorum = workload.read_quorum.map(|r| Decimal::of(u64::from(r)));
    let write_quorum = workload.write_quorum.map(|w| Decimal::of(u64::from(w)));
    let mut arguments: smallvec::SmallVec<[&[u8]; 6]> = smallvec::SmallVec::new();
    match pending.operation {
        Operation::Get => arguments.extend_from_slice(&[b"GET", key]),
        Operation::Set => {
            fill_value(value, workload, &mut connection.rng);
            arguments.extend_from_slice(&[b"SET", key, value]);
        }
        Operation::Del if workload.versioned => {
            arguments.extend_from_slice(&[b"VDEL", key, context.unwrap_or(b"")]);
            if let Some(w) = &write_quorum {
                arguments.extend_from_slice(&[b"W", w.bytes()]);
            }
        }
        Operation::Del => arguments.extend_from_slice(&[b"DEL", key]),
        Operation::VGet => {
            arguments.extend_from_slice(&[b"VGET", key]);
            if let Some(r) = &read_quorum {
                arguments.extend_from_slice(&[b"R", r.bytes()]);
            }
        }
        Operation::VSet => {
            fill_value(value, workload, &mut connection.rng);
            arguments.extend_from_slice(&[b"VSET", key, context.unwrap_or(b""), value]);
            if let Some(w) = &write_quorum {
                arguments.extend_from_slice(&[b"W", w.bytes()]);
            }
        }
    }
    scratch.clear();
    write_request(scratch, &arguments);
    connection.out.extend_from_slice(scratch);
    pending.attempts += 1;
    pending.sent = Instant::now();
    connection.in_flight.push_back(pending);
}

fn fill_value(value: &mut Vec<u8>, workload: &Workload, rng: &mut Rng) {
    let size = workload.value_size.draw(rng);
    value.clear();
    value.resize(size, b'v');
    if let Some(first) = value.first_mut() {
        *first = b'a' + (rng.below(26) as u8);
    }
}

fn flush_all(connections: &mut [Connection], recorder: &mut Recorder, plan: &Plan, now: Instant) {
    for connection in connections.iter_mut() {
        if !connection.connected || connection.written >= connection.out.len() {
            continue;
        }
        let Some(stream) = connection.stream.as_mut() else {
            continue;
        };
        let mut failed = false;
        while connection.written < connection.out.len() {
            match stream.write(&connection.out[connection.written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => connection.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if connection.written == connection.out.len() {
            connection.out.clear();
            connection.written = 0;
        }
        if failed {
            fail_connection(connection, recorder, plan, now);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read_replies(
    connection: &mut Connection,
    plan: &Plan,
    recorder: &mut Recorder,
    now: Instant,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) {
    let Some(stream) = connection.stream.as_mut() else {
        return;
    };
    let mut chunk = [0u8; 64 << 10];
    let mut closed = false;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => connection.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let mut used = 0;
    loop {
        let parsed = match plan.protocol {
            Protocol::Resp => {
                parse_reply(&connection.input[used..], ReplyLimits::default()).map_err(|_| ())
            }
            Protocol::EtcdHttp => etcd::parse_response(&connection.input[used..]).map_err(|_| ()),
        };
        let (reply, size) = match parsed {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(_) => {
                closed = true;
                break;
            }
        };
        used += size;
        let Some(pending) = connection.in_flight.pop_front() else {
            closed = true; // a reply nobody asked for
            break;
        };
        let finished_at = now;
        match &reply {
            Reply::Error(text) => {
                recorder.error(pending.operation, pending.started, text, connection.healthy);
            }
            _ => recorder.record(
                pending.operation,
                pending.started,
                finished_at,
                connection.healthy,
            ),
        }
        // A versioned write or delete goes on with the context its VGET returned.
        let follow_up = match (pending.operation, pending.step, &reply) {
            (Operation::VGet, Step::Write(_), Reply::Array(Some(items))) => {
                Some((Operation::VSet, items.first()))
            }
            (Operation::VGet, Step::Delete(_), Reply::Array(Some(items))) => {
                Some((Operation::Del, items.first()))
            }
            _ => None,
        };
        if let Some((operation, Some(Reply::Bulk(Some(context))))) = follow_up {
            let next = Pending {
                operation,
                step: pending.step,
                started: now,
                sent: now,
                attempts: 0,
            };
            let context = context.clone();
            send(connection, plan, next, key, value, scratch, Some(&context));
        }
    }
    connection.input.drain(..used);
    if closed {
        fail_connection(connection, recorder, plan, now);
    }
}

/// The connection broke: resend what was in flight elsewhere (or count it failed),
/// and reconnect to the next host shortly.
fn fail_connection(
    connection: &mut Connection,
    recorder: &mut Recorder,
    plan: &Plan,
    now: Instant,
) {
    let was_connected = connection.connected;
    connection.stream = None;
    connection.connected = false;
    connection.out.clear();
    connection.written = 0;
    connection.input.clear();
    for mut pending in connection.in_flight.drain(..) {
        if pending.attempts >= ATTEMPTS_MAX {
            let healthy = connection.healthy;
            recorder.error(pending.operation, pending.started, "disconnected", healthy);
        } else {
            // A versioned write lost its context with the connection: read it again.
            if plan.workload.versioned && pending.operation != Operation::VGet {
                pending.operation = Operation::VGet;
            }
            connection.retry.push_back(pending);
        }
    }
    connection.host = (connection.host + 1) % plan.hosts.len();
    // A connection that worked fails over to the next host at once; one that could not
    // even connect waits a little before the next try.
    let delay = if was_connected {
        Duration::ZERO
    } else {
        RECONNECT_DELAY
    };
    connection.reconnect_at = Some(now + delay);
}
