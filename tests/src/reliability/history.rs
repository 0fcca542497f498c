//! A client-observed history of a real cluster, the workload that makes it, and the
//! checker that judges it against every node's disk once the cluster is quiet.
//!
//! # The workload
//!
//! Clients run Dynamo's read-merge-write over a small key space: `VGET` a key, then
//! `VSET` it with the context read and a value that names a new write and carries the
//! elements of every sibling read (an add-only set, as the shopping cart of the paper);
//! now and then a blind `VSET` with the empty context (a concurrent writer, so siblings
//! happen) or a `VDEL` with the context read. After a read-merge-write, a client often
//! writes again at once with the token that `VSET` returned (as a client that keeps
//! the token instead of reading again), carrying the same elements plus its own: the
//! token names only what the first write's context named and the first write, so a
//! node whose token also named a concurrent sibling would lose that sibling's
//! elements, which property 1 catches.
//!
//! Clients use the API as Redis clients do, not only request by request: a quarter of
//! the read-merge-writes send their `VSET` (or `VDEL`) through the `redis` crate (a
//! client nobody here wrote) pipelined with a `VGET` of the same key and one of
//! another key, in one batch on one connection; a few send their `VSET` inside
//! `MULTI` ... `EXEC` (the crate's atomic pipeline), which ringkv must refuse.
//! Every value is `w<id>:<e1>,<e2>,...`:
//! its own write id, then the elements it carries, its own id among them. Every
//! operation is recorded with its client, start and end (milliseconds since the run
//! began), outcome and, for a write, the write ids of the siblings its context's read
//! returned.
//!
//! # The checker
//!
//! After the faults are healed and the cluster went quiet, the test stops every node
//! and hands the checker what each node's disk holds ([`DiskState`], read with the
//! storage engine itself). Per key, on every node of its preference list:
//!
//! 1. **No acknowledged write is lost**: the element of every acknowledged `VSET` is in
//!    a live sibling there, unless a `VDEL` whose read returned a sibling carrying it
//!    was attempted (a delete may remove it; any attempted delete counts, acknowledged
//!    or not, because an unacknowledged one may still have been applied). Causally
//!    superseded writes are covered by the merge: a write that read a sibling carries
//!    its elements forward.
//! 2. **Replicas converge**: every replica of a key holds the same version set, and no
//!    node holds a hint.
//! 3. **Superseded stays superseded** (deleted values stay deleted): no live sibling's
//!    dot is covered by the context of an acknowledged `VSET` or `VDEL`; a value that
//!    an acknowledged write superseded never comes back. (By dot, not by write id: a
//!    write retried after a lost reply may be minted twice, and the copy its successor
//!    did not see is rightly still there.)
//!
//! 7. **A connection observes its own commands**: a `VGET` pipelined behind an
//!    acknowledged `VSET` or `VDEL` of its key returns a context that descends from
//!    the token that write returned, and a written element (unless a delete may have
//!    removed it); judged only outside the fault windows the scenario records (from
//!    the fault's start until every node sees every member again), since a sloppy
//!    quorum rightly reads around a stand-in it cannot see. And a write sent inside
//!    `MULTI` is refused, held by no replica and returned by no read. (Numbered as
//!    the simulator's checker 7.)
//!
//! Plain `SET`/`GET` (last write wins) are not part of it: LWW may drop a concurrent
//! write by design. Tombstones are not judged by identity (the disk does not name the
//! delete that made one); what a delete promises is checked by property 3.

use crate::sim::history::covers;
use ringkv_client::{Client, ClientOptions};
use ringkv_core::VersionSet;
use ringkv_core::node::STAND_IN_WRITER_BIT;
use ringkv_core::placement::{Member, PARTITION_BITS_DEFAULT, Ring};
use ringkv_core::random::Rng;
use ringkv_core::version::{NodeId, VersionVector};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A write's identity: `client << 32 | sequence`, never 0.
pub type WriteId = u64;

/// What a client did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Delete,
    /// A `VSET` queued after `MULTI` (the `redis` crate's atomic pipeline): ringkv has
    /// no transactions, so it must be refused and never applied.
    Transaction,
}

/// How it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// An error reply or a connection failure: the write may or may not have been
    /// applied (a node may have stored it before the quorum failed).
    Failed(String),
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: u32,
    pub kind: Kind,
    pub key: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    /// A write's own id (its element).
    pub write: Option<WriteId>,
    /// Reads: the write ids of the siblings returned. Writes and deletes: those of the
    /// read whose context they carried (empty for a blind write).
    pub siblings: Vec<WriteId>,
    /// Writes and deletes: the elements of the siblings the read returned.
    pub elements_read: BTreeSet<WriteId>,
    /// The context token the operation carried (writes) or got (reads).
    pub context: Vec<u8>,
    /// A read pipelined on one connection right behind an acknowledged write or
    /// delete of its key: what it must observe.
    pub observes: Option<Observed>,
}

/// The acknowledged write or delete a pipelined read follows on its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The token the write or delete returned: the read's context must descend from it.
    pub token: Vec<u8>,
    /// A write's id: the read must return its element (unless a delete may have
    /// removed it).
    pub write: Option<WriteId>,
}

/// A stretch of a run during which a fault was active or its effects (failure
/// detectors, stand-ins) had not yet settled: milliseconds since the run began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    pub begin_ms: u64,
    /// `u64::MAX` while (or if never) settled.
    pub end_ms: u64,
}

/// A value as the workload writes it: `w<id>:<elements>`, then optionally `|` and
/// padding (to fill disks faster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadValue {
    pub write: WriteId,
    pub elements: BTreeSet<WriteId>,
}

impl WorkloadValue {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_padded(0)
    }

    /// The value followed by `padding_bytes` bytes of padding.
    pub fn encode_padded(&self, padding_bytes: usize) -> Vec<u8> {
        let elements: Vec<String> = self.elements.iter().map(u64::to_string).collect();
        let mut bytes = format!("w{}:{}", self.write, elements.join(",")).into_bytes();
        if padding_bytes > 0 {
            bytes.push(b'|');
            bytes.resize(bytes.len() + padding_bytes, b'.');
        }
        bytes
    }

    /// `None` for bytes the workload did not write.
    pub fn decode(bytes: &[u8]) -> Option<WorkloadValue> {
        let end = bytes.iter().position(|&b| b == b'|').unwrap_or(bytes.len());
        let text = std::str::from_utf8(&bytes[..end]).ok()?;
        let (write, elements) = text.strip_prefix('w')?.split_once(':')?;
        let elements = if elements.is_empty() {
            BTreeSet::new()
        } else {
            elements
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?
        };
        Some(WorkloadValue {
            write: write.parse().ok()?,
            elements,
        })
    }
}

/// The shared, append-only history of a run.
#[derive(Clone, Debug)]
pub struct Recorder {
    started: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
    faults: Arc<Mutex<Vec<FaultWindow>>>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            operations: Arc::new(Mutex::new(Vec::new())),
            faults: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn record(&self, operation: Operation) {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(operation);
    }

    /// A fault begins now (a window that stays open until [`Recorder::fault_settled`]).
    pub fn fault_begins(&self) {
        let begin_ms = self.now_ms();
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(FaultWindow {
                begin_ms,
                end_ms: u64::MAX,
            });
    }

    /// The last fault is healed and its effects settled (every node sees every
    /// member reachable again).
    pub fn fault_settled(&self) {
        let end_ms = self.now_ms();
        if let Some(window) = self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_mut()
        {
            window.end_ms = end_ms;
        }
    }

    /// The fault windows so far.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every operation so far, in the order they ended.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// How the workload runs.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Keys `key-0 .. key-<keys>`.
    pub keys: u32,
    /// Share of operations that are a blind `VSET` (empty context).
    pub blind_share: f64,
    /// Share of operations that are a `VDEL` after a read.
    pub delete_share: f64,
    /// Share of read-merge-writes followed by a write with the token the write
    /// returned.
    pub token_share: f64,
    /// Share of read-merge-writes whose write (or delete) goes through the `redis`
    /// crate pipelined with a `VGET` of its key and one of another key.
    pub pipeline_share: f64,
    /// Share of read-merge-writes whose write is sent inside `MULTI` ... `EXEC` (the
    /// `redis` crate's atomic pipeline), which must be refused.
    pub transaction_share: f64,
    /// Most operations per client (a bound besides the stop flag).
    pub operations_max: u32,
    /// Pause between one client's operations.
    pub pause: Duration,
    /// Per-request wait for a reply.
    pub reply_timeout: Duration,
    /// Bytes of padding after each value.
    pub padding_bytes: usize,
}

impl Default for WorkloadSpec {
    fn default() -> WorkloadSpec {
        WorkloadSpec {
            keys: 40,
            blind_share: 0.15,
            delete_share: 0.08,
            token_share: 0.4,
            pipeline_share: 0.25,
            transaction_share: 0.03,
            operations_max: 5_000,
            pause: Duration::from_millis(2),
            reply_timeout: Duration::from_secs(3),
            padding_bytes: 0,
        }
    }
}

/// Clients running the workload on their own threads until told to stop.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    /// One client thread per entry of `clients`: the nodes (client addresses) it may
    /// use, first preferred. `seed` draws keys and operation kinds (client i uses
    /// `seed + i`).
    pub fn start(
        recorder: &Recorder,
        clients: &[Vec<SocketAddr>],
        spec: &WorkloadSpec,
        seed: u64,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = clients
            .iter()
            .enumerate()
            .map(|(index, addresses)| {
                let recorder = recorder.clone();
                let addresses = addresses.clone();
                let spec = spec.clone();
                let stop = Arc::clone(&stop);
                let client = index as u32 + 1;
                std::thread::spawn(move || {
                    run_client(
                        client,
                        &addresses,
                        &spec,
                        seed.wrapping_add(u64::from(client)),
                        &recorder,
                        &stop,
                    );
                })
            })
            .collect();
        Workload { stop, threads }
    }

    /// Stops every client after its current operation and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run_client(
    client_number: u32,
    addresses: &[SocketAddr],
    spec: &WorkloadSpec,
    seed: u64,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    // One node at a time and no retries inside the client: each write is sent once (a
    // retried write may be applied twice), and after a failure the next operation goes
    // to the next node of the list, on both connections.
    let options = ClientOptions {
        reply_timeout: spec.reply_timeout,
        retry_unavailable: false,
        ..ClientOptions::default()
    };
    let connect = |index: usize| {
        Client::with_options(addresses.get(index).copied(), options)
            .map_err(|_| "no address".to_owned())
    };
    let mut current = 0;
    let Ok(mut client) = connect(current) else {
        return;
    };
    let mut pipes = RedisConnection::new(spec.reply_timeout);
    let mut rng = Rng::new(seed);
    let mut sequence: u64 = 0;
    let empty = VersionVector::new().to_token().into_bytes();
    let writer = RecordedWriter {
        client_number,
        recorder,
        padding_bytes: spec.padding_bytes,
    };
    for _ in 0..spec.operations_max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let keys = u64::from(spec.keys.max(1));
        let key = format!("key-{}", rng.below(keys));
        let draw = rng.next_f64();
        let mut failed = false;
        sequence += 1;
        let write = (u64::from(client_number) << 32) | sequence;
        if draw < spec.blind_share {
            let shown = (Vec::new(), BTreeSet::new());
            writer.put(&mut client, &mut failed, key, empty.clone(), write, shown);
        } else {
            let start_ms = recorder.now_ms();
            let (context, read, result) = match client.get(key.as_bytes()) {
                Ok(versions) => (versions.context, Read::of(&versions.siblings), Ok(())),
                Err(error) => (Vec::new(), Read::default(), Err(error)),
            };
            let read_ok = result.is_ok();
            recorder.record(Operation {
                client: client_number,
                kind: Kind::Read,
                key: key.clone(),
                start_ms,
                end_ms: recorder.now_ms(),
                outcome: outcome(result, &mut failed),
                write: None,
                siblings: read.siblings.clone(),
                elements_read: read.elements.clone(),
                context: context.clone(),
                observes: None,
            });
            if read_ok && !stop.load(Ordering::Relaxed) {
                let delete =
                    draw < spec.blind_share + spec.delete_share && !read.siblings.is_empty();
                let route = if rng.chance(spec.pipeline_share) {
                    Route::Pipelined
                } else if !delete && rng.chance(spec.transaction_share) {
                    Route::Transaction
                } else {
                    Route::Client
                };
                let connection = match route {
                    Route::Client => None,
                    _ => pipes.connection(addresses.get(current).copied()),
                };
                let mut elements = read.elements.clone();
                elements.insert(write);
                let value = WorkloadValue {
                    write,
                    elements: elements.clone(),
                };
                let shown = (read.siblings.clone(), read.elements.clone());
                let token = match (route, connection) {
                    (Route::Transaction, Some(connection)) => {
                        writer.in_transaction(connection, &mut failed, &key, context, value);
                        None
                    }
                    (Route::Pipelined, Some(connection)) => {
                        let other = format!("key-{}", rng.below(keys));
                        let pipeline = Pipeline {
                            key: &key,
                            other_key: &other,
                            context,
                            value: (!delete).then_some(value),
                            shown,
                        };
                        writer.pipelined(connection, &mut failed, pipeline)
                    }
                    _ => {
                        let start_ms = recorder.now_ms();
                        let (kind, result, written) = if delete {
                            (Kind::Delete, client.delete(key.as_bytes(), &context), None)
                        } else {
                            let bytes = value.encode_padded(spec.padding_bytes);
                            let result = client.put(key.as_bytes(), &context, &bytes);
                            (Kind::Write, result, Some(write))
                        };
                        let token = result.as_ref().ok().filter(|_| written.is_some()).cloned();
                        recorder.record(Operation {
                            client: client_number,
                            kind,
                            key: key.clone(),
                            start_ms,
                            end_ms: recorder.now_ms(),
                            outcome: outcome(result.map(|_| ()), &mut failed),
                            write: written,
                            siblings: read.siblings.clone(),
                            elements_read: read.elements.clone(),
                            context,
                            observes: None,
                        });
                        token
                    }
                };
                let again = token.filter(|_| rng.chance(spec.token_share));
                if let (Some(token), false) = (again, stop.load(Ordering::Relaxed)) {
                    // The same client writes again with the token it was given: what
                    // it was shown is what the first write's context showed and the
                    // first write itself.
                    sequence += 1;
                    let second = (u64::from(client_number) << 32) | sequence;
                    let mut shown = read.siblings;
                    shown.push(write);
                    let shown = (shown, elements);
                    writer.put(&mut client, &mut failed, key, token, second, shown);
                }
            }
        }
        if failed {
            current = (current + 1) % addresses.len().max(1);
            if let Ok(next) = connect(current) {
                client = next;
            }
            pipes.drop_connection();
        }
        std::thread::sleep(spec.pause);
    }
}

/// How a read-merge-write sends its write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Through ringkv's own client, request by request.
    Client,
    /// Through the `redis` crate, pipelined with reads.
    Pipelined,
    /// Through the `redis` crate, inside `MULTI` ... `EXEC`.
    Transaction,
}

/// What a read returned, in workload terms.
#[derive(Clone, Debug, Default)]
struct Read {
    /// The write ids of the siblings.
    siblings: Vec<WriteId>,
    /// The elements the siblings carry.
    elements: BTreeSet<WriteId>,
}

impl Read {
    fn of<T: AsRef<[u8]>>(values: &[T]) -> Read {
        let values: Vec<WorkloadValue> = values
            .iter()
            .filter_map(|bytes| WorkloadValue::decode(bytes.as_ref()))
            .collect();
        Read {
            siblings: values.iter().map(|v| v.write).collect(),
            elements: values
                .iter()
                .flat_map(|v| v.elements.iter().copied())
                .collect(),
        }
    }
}

/// A client's `redis` crate connection to its current node, made when first needed.
struct RedisConnection {
    timeout: Duration,
    connection: Option<redis::Connection>,
}

impl RedisConnection {
    fn new(timeout: Duration) -> RedisConnection {
        RedisConnection {
            timeout,
            connection: None,
        }
    }

    /// The connection to `address`, connecting if there is none; `None` when the
    /// node cannot be reached (the caller uses its own client instead).
    fn connection(&mut self, address: Option<SocketAddr>) -> Option<&mut redis::Connection> {
        if self.connection.is_none() {
            let client = redis::Client::open(format!("redis://{}/", address?)).ok()?;
            let connection = client.get_connection_with_timeout(self.timeout).ok()?;
            connection.set_read_timeout(Some(self.timeout)).ok()?;
            connection.set_write_timeout(Some(self.timeout)).ok()?;
            self.connection = Some(connection);
        }
        self.connection.as_mut()
    }

    /// Forgets the connection (after a failure or a move to another node).
    fn drop_connection(&mut self) {
        self.connection = None;
    }
}

/// A write or delete pipelined with a `VGET` of its key and one of another key.
struct Pipeline<'a> {
    key: &'a str,
    other_key: &'a str,
    /// The context the write or delete carries.
    context: Vec<u8>,
    /// The value written; `None` for a delete.
    value: Option<WorkloadValue>,
    /// The siblings and elements the context's read returned.
    shown: (Vec<WriteId>, BTreeSet<WriteId>),
}

/// A `VGET` reply as the `redis` crate hands it: the context and the sibling values.
fn versions_of(reply: &redis::Value) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let redis::Value::Array(parts) = reply else {
        return None;
    };
    let [
        redis::Value::BulkString(context),
        redis::Value::Array(values),
    ] = parts.as_slice()
    else {
        return None;
    };
    let values = values
        .iter()
        .map(|value| match value {
            redis::Value::BulkString(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((context.clone(), values))
}

/// The error a reply stands for, if it is not what the command answers.
fn reply_error(reply: Option<&redis::Value>, lost: Option<&str>) -> Option<String> {
    match reply {
        None => Some(lost.unwrap_or("no reply").to_owned()),
        Some(redis::Value::ServerError(error)) => Some(format!("{error:?}")),
        Some(_) => None,
    }
}

/// One client's recorded `VSET`s of workload values.
struct RecordedWriter<'a> {
    client_number: u32,
    recorder: &'a Recorder,
    padding_bytes: usize,
}

impl RecordedWriter<'_> {
    /// Writes `write` to `key` with `context` through `client`, carrying the elements
    /// read plus its own, and records it with what its writer was `shown` (siblings,
    /// elements); sets `failed` when it fails.
    fn put(
        &self,
        client: &mut Client,
        failed: &mut bool,
        key: String,
        context: Vec<u8>,
        write: WriteId,
        shown: (Vec<WriteId>, BTreeSet<WriteId>),
    ) {
        let (siblings, elements_read) = shown;
        let mut elements = elements_read.clone();
        elements.insert(write);
        let value = WorkloadValue { write, elements };
        let start_ms = self.recorder.now_ms();
        let result = client.put(
            key.as_bytes(),
            &context,
            &value.encode_padded(self.padding_bytes),
        );
        self.recorder.record(Operation {
            client: self.client_number,
            kind: Kind::Write,
            key,
            start_ms,
            end_ms: self.recorder.now_ms(),
            outcome: outcome(result.map(|_| ()), failed),
            write: Some(write),
            siblings,
            elements_read,
            context,
            observes: None,
        });
    }

    /// Sends `pipeline` as one batch on `connection` (`VSET` or `VDEL`, `VGET` of the
    /// key, `VGET` of the other key) and records the three operations. Returns the
    /// token an acknowledged write returned.
    fn pipelined(
        &self,
        connection: &mut redis::Connection,
        failed: &mut bool,
        pipeline: Pipeline<'_>,
    ) -> Option<Vec<u8>> {
        let Pipeline {
            key,
            other_key,
            context,
            value,
            shown,
        } = pipeline;
        let mut batch = redis::pipe();
        batch.ignore_errors();
        match &value {
            Some(value) => batch
                .cmd("VSET")
                .arg(key)
                .arg(&context)
                .arg(value.encode_padded(self.padding_bytes)),
            None => batch.cmd("VDEL").arg(key).arg(&context),
        };
        batch.cmd("VGET").arg(key).cmd("VGET").arg(other_key);
        let start_ms = self.recorder.now_ms();
        // A connection error leaves nothing known of any of the three (the write may
        // be applied): each is recorded failed with it.
        let (replies, lost): (Vec<redis::Value>, Option<String>) = match batch.query(connection) {
            Ok(replies) => (replies, None),
            Err(error) => (Vec::new(), Some(error.to_string())),
        };
        let reply_error = |reply| reply_error(reply, lost.as_deref());
        let end_ms = self.recorder.now_ms();
        let (siblings, elements_read) = shown;
        let write = value.as_ref().map(|v| v.write);
        let written = match reply_error(replies.first()) {
            Some(error) => {
                *failed = true;
                (Outcome::Failed(error), None)
            }
            None => match &replies[0] {
                redis::Value::BulkString(token) => (Outcome::Ok, Some(token.clone())),
                other => {
                    *failed = true;
                    (Outcome::Failed(format!("not a token: {other:?}")), None)
                }
            },
        };
        self.recorder.record(Operation {
            client: self.client_number,
            kind: if write.is_some() {
                Kind::Write
            } else {
                Kind::Delete
            },
            key: key.to_owned(),
            start_ms,
            end_ms,
            outcome: written.0,
            write,
            siblings,
            elements_read,
            context,
            observes: None,
        });
        let observes = written.1.clone().map(|token| Observed { token, write });
        for (index, read_key, observes) in [(1, key, observes), (2, other_key, None)] {
            let reply = replies.get(index);
            let versions = match reply_error(reply) {
                Some(error) => Err(error),
                None => reply
                    .and_then(versions_of)
                    .ok_or_else(|| format!("not a VGET reply: {reply:?}")),
            };
            let (outcome, context, read) = match versions {
                Ok((context, values)) => (Outcome::Ok, context, Read::of(&values)),
                Err(error) => {
                    *failed = true;
                    (Outcome::Failed(error), Vec::new(), Read::default())
                }
            };
            self.recorder.record(Operation {
                client: self.client_number,
                kind: Kind::Read,
                key: read_key.to_owned(),
                start_ms,
                end_ms,
                outcome,
                write: None,
                siblings: read.siblings,
                elements_read: read.elements,
                context,
                observes,
            });
        }
        written.1.filter(|_| write.is_some())
    }

    /// Sends `MULTI`, a `VSET` of `value`, `EXEC` on `connection` (the `redis`
    /// crate's atomic pipeline) and records the write as [`Kind::Transaction`]: its
    /// outcome is `Ok` only if the transaction was (wrongly) accepted.
    fn in_transaction(
        &self,
        connection: &mut redis::Connection,
        failed: &mut bool,
        key: &str,
        context: Vec<u8>,
        value: WorkloadValue,
    ) {
        let start_ms = self.recorder.now_ms();
        let result: redis::RedisResult<redis::Value> = redis::pipe()
            .atomic()
            .cmd("VSET")
            .arg(key)
            .arg(&context)
            .arg(value.encode_padded(self.padding_bytes))
            .query(connection);
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(error) => {
                let text = error.to_string();
                // A refusal leaves the connection usable; anything else is a failure
                // of the connection, after which the client moves on.
                if !text.contains("no transactions") {
                    *failed = true;
                }
                Outcome::Failed(text)
            }
        };
        self.recorder.record(Operation {
            client: self.client_number,
            kind: Kind::Transaction,
            key: key.to_owned(),
            start_ms,
            end_ms: self.recorder.now_ms(),
            outcome,
            write: Some(value.write),
            siblings: Vec::new(),
            elements_read: value
                .elements
                .into_iter()
                .filter(|&e| e != value.write)
                .collect(),
            context,
            observes: None,
        });
    }
}

/// The outcome of `result`; sets `failed` when it is an error.
fn outcome<E: std::fmt::Display>(result: Result<(), E>, failed: &mut bool) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(error) => {
            *failed = true;
            Outcome::Failed(error.to_string())
        }
    }
}

/// What one node's disk holds once it is stopped: its data by key, and how many
/// hints it still holds.
#[derive(Clone, Debug, Default)]
pub struct DiskState {
    pub data: BTreeMap<Vec<u8>, VersionSet>,
    pub hints: usize,
    /// Records the storage engine could not read (counted, skipped).
    pub unreadable: u64,
}

impl DiskState {
    /// Reads the data and hints stores of the node whose data directory is `dir`
    /// (the node must be stopped).
    pub fn read(dir: &Path) -> Result<DiskState, String> {
        let data = read_store(&dir.join("data"))?;
        let hints = read_store(&dir.join("hints"))?;
        let mut state = DiskState {
            hints: hints.0.len(),
            unreadable: data.1 + hints.1,
            ..DiskState::default()
        };
        for (key, record) in data.0 {
            let versions = VersionSet::decode(&record, Default::default())
                .map_err(|e| format!("{}: key {key:?}: {e:?}", dir.display()))?;
            state.data.insert(key, versions);
        }
        Ok(state)
    }
}

/// Every (key, record) of a store, and how many records could not be read.
type StoreContents = (Vec<(Vec<u8>, Vec<u8>)>, u64);

fn read_store(dir: &Path) -> Result<StoreContents, String> {
    let store = ringkv_storage::Store::open(dir, ringkv_storage::Config::default())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let chunk = store
            .scan(0, u64::MAX, after, 1024)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        items.extend(chunk.items);
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unreadable = store.stats().corrupt_records;
    Ok((items, unreadable))
}

/// One broken promise: the simulator's type, numbered as design.md section 9 numbers
/// the properties (1 a lost write, 2 replicas differ or hints left, 3 a superseded
/// value back).
pub use crate::sim::checkers::Violation;

/// The numbers a scenario reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Writes and deletes attempted.
    pub writes_attempted: usize,
    pub writes_acknowledged: usize,
    /// Acknowledged writes missing from a replica (property 1).
    pub writes_lost: usize,
    pub reads: usize,
    pub reads_ok: usize,
    /// Pipelined reads judged for read-your-writes (property 7): acknowledged, behind
    /// an acknowledged write or delete, outside every fault window.
    pub pipelined_reads_judged: usize,
    /// Transactions attempted (each must be refused and never applied).
    pub transactions: usize,
    /// Failed operations by the start of their error (60 characters).
    pub errors: BTreeMap<String, usize>,
    pub violations: Vec<Violation>,
}

/// The cluster's shape, for the preference lists.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Nodes 1..=nodes, weight 1 each.
    pub nodes: u64,
    pub replicas: u8,
}

impl Placement {
    /// The node ids of `key`'s preference list.
    fn replicas_of(&self, ring: &Ring, key: &[u8]) -> Vec<NodeId> {
        ring.preference_list(ring.partition_of(key)).collect()
    }

    fn ring(&self) -> Result<Ring, String> {
        let members: Vec<Member> = (1..=self.nodes)
            .map(|id| Member::equal(NodeId(id)))
            .collect();
        Ring::new(&members, PARTITION_BITS_DEFAULT, usize::from(self.replicas))
            .map_err(|e| format!("{e:?}"))
    }
}

/// Judges `operations` against `disks` (node id -> what its disk holds); pipelined
/// reads are judged outside the `faults` windows only.
pub fn check(
    operations: &[Operation],
    faults: &[FaultWindow],
    disks: &BTreeMap<NodeId, DiskState>,
    placement: Placement,
) -> Summary {
    let mut summary = Summary::default();
    let ring = match placement.ring() {
        Ok(ring) => ring,
        Err(error) => {
            summary.violations.push(Violation {
                property: 2,
                detail: format!("no ring: {error}"),
            });
            return summary;
        }
    };
    let empty = DiskState::default();
    // Per key: the elements a delete (any outcome) may have removed.
    let mut deletable: BTreeMap<&str, BTreeSet<WriteId>> = BTreeMap::new();
    for operation in operations {
        // (A refused transaction is counted in `transactions`, not as an error.)
        if let (Outcome::Failed(error), false) =
            (&operation.outcome, operation.kind == Kind::Transaction)
        {
            let kind: String = error.chars().take(60).collect();
            *summary.errors.entry(kind).or_default() += 1;
        }
        match operation.kind {
            Kind::Read => {
                summary.reads += 1;
                summary.reads_ok += usize::from(operation.outcome == Outcome::Ok);
            }
            Kind::Write | Kind::Delete => {
                summary.writes_attempted += 1;
                summary.writes_acknowledged += usize::from(operation.outcome == Outcome::Ok);
            }
            Kind::Transaction => {
                summary.transactions += 1;
                if operation.outcome == Outcome::Ok {
                    summary.violations.push(Violation {
                        property: 7,
                        detail: format!(
                            "{}: a write inside MULTI ... EXEC (client {}, {} ms) was accepted; ringkv has no transactions",
                            operation.key, operation.client, operation.start_ms
                        ),
                    });
                }
            }
        }
        if operation.kind == Kind::Delete {
            deletable
                .entry(operation.key.as_str())
                .or_default()
                .extend(operation.elements_read.iter().copied());
        }
    }
    let live = |versions: &VersionSet| -> Vec<WorkloadValue> {
        versions
            .siblings()
            .filter_map(|sibling| sibling.value.data.as_deref())
            .filter_map(WorkloadValue::decode)
            .collect()
    };
    let keys: BTreeSet<&str> = operations.iter().map(|op| op.key.as_str()).collect();
    for key in keys {
        let replicas = placement.replicas_of(&ring, key.as_bytes());
        let states: Vec<(NodeId, VersionSet)> = replicas
            .iter()
            .map(|&id| {
                let disk = disks.get(&id).unwrap_or(&empty);
                (
                    id,
                    disk.data.get(key.as_bytes()).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let no_deletes = BTreeSet::new();
        let may_be_deleted = deletable.get(key).unwrap_or(&no_deletes);
        let of_key = || operations.iter().filter(move |op| op.key == key);
        let refused: BTreeSet<WriteId> = of_key()
            .filter(|op| op.kind == Kind::Transaction)
            .filter_map(|op| op.write)
            .collect();
        for operation in of_key() {
            if operation.kind == Kind::Read && operation.outcome == Outcome::Ok {
                if let Some(write) = operation.elements_read.intersection(&refused).next() {
                    summary.violations.push(Violation {
                        property: 7,
                        detail: format!(
                            "{key}: a read by client {} at {} ms returned write {write}, sent inside a refused transaction",
                            operation.client, operation.end_ms
                        ),
                    });
                }
            }
            let Some(observed) = &operation.observes else {
                continue;
            };
            let quiet = faults
                .iter()
                .all(|w| operation.end_ms < w.begin_ms || operation.start_ms > w.end_ms);
            if operation.outcome != Outcome::Ok || !quiet {
                continue;
            }
            summary.pipelined_reads_judged += 1;
            let vector = |bytes: &[u8]| {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|token| VersionVector::from_token(token).ok())
            };
            let element_missing = observed.write.is_some_and(|write| {
                !operation.elements_read.contains(&write) && !may_be_deleted.contains(&write)
            });
            // A retried forward's token names its attempts' dots (`(id, 1)` of one-shot
            // ids); a read that returned the write may have met another copy of it
            // (the documented at-least-once case of `coordinator::forward`).
            let read_the_write = observed
                .write
                .is_some_and(|write| operation.elements_read.contains(&write));
            let descends = match (vector(&operation.context), vector(&observed.token)) {
                (Some(read), Some(token)) => token.entries().iter().all(|&(node, counter)| {
                    let attempt = counter == 1 && node.0 & STAND_IN_WRITER_BIT != 0;
                    read.counter_of(node) >= counter || (attempt && read_the_write)
                }),
                _ => false,
            };
            if !descends || element_missing {
                summary.violations.push(Violation {
                    property: 7,
                    detail: format!(
                        "{key}: a VGET pipelined by client {} ({}..{} ms) behind its acknowledged {} did not observe it (context {}, siblings {:?})",
                        operation.client,
                        operation.start_ms,
                        operation.end_ms,
                        observed
                            .write
                            .map_or_else(|| "delete".to_owned(), |w| format!("write {w}")),
                        String::from_utf8_lossy(&operation.context),
                        operation.siblings
                    ),
                });
            }
        }
        for (id, versions) in &states {
            let values = live(versions);
            let held: BTreeSet<WriteId> = values
                .iter()
                .flat_map(|v| v.elements.iter().copied())
                .collect();
            if let Some(write) = held.intersection(&refused).next() {
                summary.violations.push(Violation {
                    property: 7,
                    detail: format!(
                        "{key}: node {} holds write {write}, sent inside a refused transaction",
                        id.0
                    ),
                });
            }
            for operation in operations.iter().filter(|op| op.key == key) {
                if operation.outcome != Outcome::Ok {
                    continue;
                }
                if let (Kind::Write, Some(write)) = (operation.kind, operation.write) {
                    if !held.contains(&write) && !may_be_deleted.contains(&write) {
                        summary.writes_lost += 1;
                        summary.violations.push(Violation {
                            property: 1,
                            detail: format!(
                                "{key}: acknowledged write {write} (client {}, {}..{} ms) is on no live sibling of node {} ({} siblings)",
                                operation.client,
                                operation.start_ms,
                                operation.end_ms,
                                id.0,
                                versions.sibling_count()
                            ),
                        });
                    }
                }
                if matches!(operation.kind, Kind::Read | Kind::Transaction) {
                    continue;
                }
                let Some(context) = std::str::from_utf8(&operation.context)
                    .ok()
                    .and_then(|token| VersionVector::from_token(token).ok())
                else {
                    continue;
                };
                for sibling in versions.siblings() {
                    let (Some(dot), Some(value)) = (
                        sibling.dot,
                        sibling
                            .value
                            .data
                            .as_deref()
                            .and_then(WorkloadValue::decode),
                    ) else {
                        continue;
                    };
                    if covers(&context, dot) {
                        summary.violations.push(Violation {
                            property: 3,
                            detail: format!(
                                "{key}: value of write {} is live on node {} though acknowledged {} by client {} at {} ms superseded it",
                                value.write,
                                id.0,
                                if operation.kind == Kind::Delete { "delete" } else { "write" },
                                operation.client,
                                operation.end_ms
                            ),
                        });
                    }
                }
            }
        }
        if let Some((first_id, first)) = states.first() {
            for (id, versions) in &states[1..] {
                if versions != first {
                    summary.violations.push(Violation {
                        property: 2,
                        detail: format!(
                            "{key}: node {} holds {} siblings (clock {:?}), node {} holds {} (clock {:?})",
                            first_id.0,
                            first.sibling_count(),
                            first.join().entries(),
                            id.0,
                            versions.sibling_count(),
                            versions.join().entries()
                        ),
                    });
                }
            }
        }
    }
    for (id, disk) in disks {
        if disk.hints > 0 {
            summary.violations.push(Violation {
                property: 2,
                detail: format!("node {} still holds {} hints", id.0, disk.hints),
            });
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::version::Value;

    const PLACEMENT: Placement = Placement {
        nodes: 3,
        replicas: 3,
    };

    fn value(write: WriteId, elements: &[WriteId]) -> Value {
        let value = WorkloadValue {
            write,
            elements: elements.iter().copied().collect(),
        };
        Value::new(value.encode(), 0)
    }

    /// `current` after a write of `value` with `context`, minted by node 1.
    fn written(current: &VersionSet, context: &VersionVector, value: Value) -> VersionSet {
        VersionSet::update(VersionSet::from_context(context, value), current, NodeId(1))
    }

    fn operation(kind: Kind, write: Option<WriteId>, context: &VersionVector) -> Operation {
        Operation {
            client: 1,
            kind,
            key: "k".to_owned(),
            start_ms: 0,
            end_ms: 1,
            outcome: Outcome::Ok,
            write,
            siblings: Vec::new(),
            elements_read: BTreeSet::new(),
            context: context.to_token().into_bytes(),
            observes: None,
        }
    }

    /// Every node's disk holding `versions` for "k".
    fn disks(versions: &[&VersionSet]) -> BTreeMap<NodeId, DiskState> {
        versions
            .iter()
            .enumerate()
            .map(|(index, versions)| {
                let mut disk = DiskState::default();
                disk.data.insert(b"k".to_vec(), (*versions).clone());
                (NodeId(index as u64 + 1), disk)
            })
            .collect()
    }

    fn properties(summary: &Summary) -> Vec<u8> {
        summary.violations.iter().map(|v| v.property).collect()
    }

    #[test]
    fn a_token_write_that_erased_a_sibling_its_writer_never_saw_is_caught() {
        // A and B write concurrently from the empty context; B writes again with the
        // token its first write returned. An honest token names B's write only, so
        // A's value stays; a token naming the merged clock erases it. (The minting
        // replica puts B on a second writer lane, 11 here: lane 1 holds A unseen.)
        let empty = VersionVector::new();
        let a = written(&VersionSet::new(), &empty, value(1, &[1]));
        let lane = NodeId(11);
        let both = VersionSet::update(VersionSet::from_context(&empty, value(2, &[2])), &a, lane);
        let b_dot = ringkv_core::version::Dot {
            node: lane,
            counter: both.counter_of(lane),
        };
        let mut history = vec![
            operation(Kind::Write, Some(1), &empty),
            operation(Kind::Write, Some(2), &empty),
            operation(Kind::Write, Some(3), &empty),
        ];
        history[2].siblings = vec![2];
        history[2].elements_read = BTreeSet::from([2]);
        // The merged clock covers A too: B's next write erases A.
        let merged_token = both.join();
        history[2].context = merged_token.to_token().into_bytes();
        let next = |token: &VersionVector| {
            VersionSet::update(
                VersionSet::from_context(token, value(3, &[2, 3])),
                &both,
                lane,
            )
        };
        let erased = next(&merged_token);
        let caught = check(
            &history,
            &[],
            &disks(&[&erased, &erased, &erased]),
            PLACEMENT,
        );
        assert!(properties(&caught).contains(&1), "{:?}", caught.violations);
        // The honest token (the empty context plus B's dot) keeps A beside B's write.
        let token = empty.clone().with_dot(b_dot);
        history[2].context = token.to_token().into_bytes();
        let kept = next(&token);
        assert_eq!(
            kept.sibling_count(),
            2,
            "A stays a sibling of B's next write"
        );
        let fine = check(&history, &[], &disks(&[&kept, &kept, &kept]), PLACEMENT);
        assert_eq!(fine.violations, Vec::new());
    }

    #[test]
    fn values_round_trip_and_foreign_bytes_are_not_values() {
        let value = WorkloadValue {
            write: 7,
            elements: BTreeSet::from([3, 7]),
        };
        assert_eq!(WorkloadValue::decode(&value.encode()), Some(value.clone()));
        let padded = value.encode_padded(100);
        assert_eq!(padded.len(), value.encode().len() + 101);
        assert_eq!(WorkloadValue::decode(&padded), Some(value));
        assert_eq!(WorkloadValue::decode(b"hello"), None);
    }

    #[test]
    fn a_read_merge_write_history_on_converged_disks_passes_and_a_lost_write_is_caught() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let read = first.join();
        let second = written(&first, &read, value(2, &[1, 2]));
        let mut history = vec![
            operation(Kind::Write, Some(1), &empty),
            operation(Kind::Write, Some(2), &read),
        ];
        history[1].siblings = vec![1];
        history[1].elements_read = BTreeSet::from([1]);
        let good = check(
            &history,
            &[],
            &disks(&[&second, &second, &second]),
            PLACEMENT,
        );
        assert_eq!(good.violations, Vec::new());
        assert_eq!((good.writes_attempted, good.writes_acknowledged), (2, 2));

        // Node 2 never got the second write: it is lost there, and node 2 still holds
        // the value it superseded; the replicas differ.
        let broken = check(
            &history,
            &[],
            &disks(&[&second, &first, &second]),
            PLACEMENT,
        );
        assert_eq!(broken.writes_lost, 1);
        assert_eq!(
            properties(&broken),
            vec![1, 3, 2],
            "{:?}",
            broken.violations
        );
        assert!(broken.violations[0].detail.contains("write 2"));
        assert!(
            broken.violations[1]
                .detail
                .contains("write 1 is live on node 2")
        );
    }

    #[test]
    fn a_deleted_value_may_be_gone_but_must_not_come_back() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let read = first.join();
        let deleted = written(&first, &read, Value::tombstone(0));
        let mut delete = operation(Kind::Delete, None, &read);
        delete.siblings = vec![1];
        delete.elements_read = BTreeSet::from([1]);
        let history = vec![operation(Kind::Write, Some(1), &empty), delete];
        let good = check(
            &history,
            &[],
            &disks(&[&deleted, &deleted, &deleted]),
            PLACEMENT,
        );
        assert_eq!(good.violations, Vec::new());

        // The value is back on every replica: the acknowledged delete is undone.
        let back = check(&history, &[], &disks(&[&first, &first, &first]), PLACEMENT);
        assert_eq!(properties(&back), vec![3, 3, 3], "{:?}", back.violations);
    }

    #[test]
    fn a_concurrent_blind_write_survives_a_delete_and_its_loss_is_caught() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let read = first.join();
        // Write 2 is blind (concurrent with the delete), so it must stay.
        let both = written(&first, &empty, value(2, &[2]));
        let deleted = written(&both, &read, Value::tombstone(0));
        let mut delete = operation(Kind::Delete, None, &read);
        delete.elements_read = BTreeSet::from([1]);
        let history = vec![
            operation(Kind::Write, Some(1), &empty),
            operation(Kind::Write, Some(2), &empty),
            delete,
        ];
        let good = check(
            &history,
            &[],
            &disks(&[&deleted, &deleted, &deleted]),
            PLACEMENT,
        );
        assert_eq!(good.violations, Vec::new());
        let only_tombstone = written(&first, &read, Value::tombstone(0));
        let lost = check(
            &history,
            &[],
            &disks(&[&only_tombstone, &only_tombstone, &only_tombstone]),
            PLACEMENT,
        );
        assert_eq!(lost.writes_lost, 3, "write 2 is missing on all three");
    }

    #[test]
    fn a_hint_left_behind_is_caught() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let history = vec![operation(Kind::Write, Some(1), &empty)];
        let mut disks = disks(&[&first, &first, &first]);
        disks.get_mut(&NodeId(2)).unwrap().hints = 4;
        let summary = check(&history, &[], &disks, PLACEMENT);
        assert_eq!(properties(&summary), vec![2]);
        assert!(
            summary.violations[0]
                .detail
                .contains("node 2 still holds 4 hints")
        );
    }

    /// A VGET pipelined behind write 2 on its connection, answering `read`.
    fn pipelined_read(
        read: &VersionSet,
        token: &VersionVector,
        write: Option<WriteId>,
    ) -> Operation {
        let mut operation = operation(Kind::Read, None, &read.join());
        operation.start_ms = 100;
        operation.end_ms = 110;
        let values: Vec<Vec<u8>> = read
            .siblings()
            .filter_map(|sibling| sibling.value.data.clone())
            .collect();
        let read = Read::of(&values);
        operation.siblings = read.siblings;
        operation.elements_read = read.elements;
        operation.observes = Some(Observed {
            token: token.to_token().into_bytes(),
            write,
        });
        operation
    }

    #[test]
    fn a_pipelined_read_that_missed_the_write_before_it_is_caught_outside_faults() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let read = first.join();
        let second = written(&first, &read, value(2, &[1, 2]));
        let token = second.join();
        let mut write = operation(Kind::Write, Some(2), &read);
        write.elements_read = BTreeSet::from([1]);
        let base = vec![operation(Kind::Write, Some(1), &empty), write];
        let disks = disks(&[&second, &second, &second]);

        // The read saw the write: fine.
        let mut history = base.clone();
        history.push(pipelined_read(&second, &token, Some(2)));
        let good = check(&history, &[], &disks, PLACEMENT);
        assert_eq!(good.violations, Vec::new());
        assert_eq!(good.pipelined_reads_judged, 1);

        // A node that answered the read before the write completed: stale.
        let mut history = base.clone();
        history.push(pipelined_read(&first, &token, Some(2)));
        let stale = check(&history, &[], &disks, PLACEMENT);
        assert_eq!(properties(&stale), vec![7], "{:?}", stale.violations);

        // The same inside a fault window is not judged.
        let window = FaultWindow {
            begin_ms: 50,
            end_ms: 105,
        };
        let excused = check(&history, &[window], &disks, PLACEMENT);
        assert_eq!(excused.violations, Vec::new());
        assert_eq!(excused.pipelined_reads_judged, 0);

        // A read behind a delete must descend from the delete's token.
        let deleted = written(&second, &token, Value::tombstone(0));
        let mut delete = operation(Kind::Delete, None, &token);
        delete.elements_read = BTreeSet::from([1, 2]);
        let mut history = base;
        history.push(delete);
        history.push(pipelined_read(&second, &deleted.join(), None));
        let disks = super::tests::disks(&[&deleted, &deleted, &deleted]);
        let undeleted = check(&history, &[], &disks, PLACEMENT);
        assert_eq!(
            properties(&undeleted),
            vec![7],
            "{:?}",
            undeleted.violations
        );
        history.pop();
        history.push(pipelined_read(&deleted, &deleted.join(), None));
        assert_eq!(
            check(&history, &[], &disks, PLACEMENT).violations,
            Vec::new()
        );
    }

    #[test]
    fn a_transaction_accepted_or_applied_is_caught() {
        let empty = VersionVector::new();
        let first = written(&VersionSet::new(), &empty, value(1, &[1]));
        let mut refused = operation(Kind::Transaction, Some(2), &first.join());
        refused.outcome = Outcome::Failed("EXECABORT ... no transactions".to_owned());
        let history = vec![operation(Kind::Write, Some(1), &empty), refused.clone()];
        let good = check(&history, &[], &disks(&[&first, &first, &first]), PLACEMENT);
        assert_eq!(good.violations, Vec::new());
        assert_eq!(good.transactions, 1);

        // Refused, yet applied on every replica.
        let applied = written(&first, &first.join(), value(2, &[1, 2]));
        let caught = check(
            &history,
            &[],
            &disks(&[&applied, &first, &first]),
            PLACEMENT,
        );
        assert!(properties(&caught).contains(&7), "{:?}", caught.violations);

        // Accepted.
        let mut accepted = refused;
        accepted.outcome = Outcome::Ok;
        let history = vec![operation(Kind::Write, Some(1), &empty), accepted];
        let caught = check(&history, &[], &disks(&[&first, &first, &first]), PLACEMENT);
        assert_eq!(properties(&caught), vec![7], "{:?}", caught.violations);
    }
}
