//! The mio loop's transport, with a sender thread that writes a busy wakeup's
//! replies while the loop goes on reading.
//!
//! Where one node's time went (BENCHMARKS.md, "Where one node's throughput goes"):
//! its event loop was busy about 87% of the time, and 37% of that was sending
//! replies, most of it the kernel delivering them over loopback in the sender's
//! context, while the machine's other core sat a quarter idle. So while the loop is
//! saturated (it worked at least 75% of its last quarter second, see
//! [`crate::load::LoopLoad`]), a wakeup that flushes at least
//! [`OFFLOAD_CONNECTIONS_MIN`] connections hands their bytes to one sender thread,
//! in one batch (one channel send per wakeup), and the loop goes back to epoll.
//! Otherwise the loop writes inline as before: a lone request pays no thread hop,
//! an idle node's CPU stays what it was, and a loop that is not the bottleneck (a
//! node sharing its cores with others, as the 3-node cluster on one machine does)
//! does not pay for hand-offs that buy nothing. `--reply-sender always|never`
//! overrides the choice.
//!
//! Order on a connection is kept by never having two writes of it in flight: while
//! the sender holds a connection's bytes, what the loop produces for it waits in
//! the connection's buffer, and goes once the sender reports back. The sender makes
//! one attempt per connection: what a full socket does not take comes back to the
//! loop, which writes it inline from then on and waits for the socket's writable
//! edge as it always did (the sender's `WouldBlock` armed that edge). A failed write
//! comes back as the connection's error, and the loop closes it.
//!
//! The sender wakes the loop only when the loop waits on it: when a job came back
//! short or failed, or when the loop goes to sleep with output deferred behind a
//! connection in flight (it counts those connections, and before it sleeps it
//! raises the shared `loop_waits` flag and then looks for reports; the sender files
//! its reports and then looks at the flag, so one of the two always sees the
//! other). Otherwise a busy loop picks the reports up at its next wakeup.
//!
//! Bounds: at most [`BATCHES_IN_FLIGHT_MAX`] batches are out at once (a wakeup past
//! it writes inline), and each batch holds at most one job per connection, so both
//! channels are bounded and never full. A socket stays open while the sender holds
//! it (each job keeps a reference), so a connection closed meanwhile never has its
//! descriptor reused under a write.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use ringkv_frontend::connection::OutBuffer;
use ringkv_frontend::frontend::Transport;
use ringkv_frontend::settings::ReplySender;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::thread::JoinHandle;

/// A saturated loop's wakeup flushing at least this many connections hands them to
/// the sender (a lone reply never pays the hop).
pub const OFFLOAD_CONNECTIONS_MIN: usize = 2;
/// A connection keeps an emptied job buffer up to this size for its next job (a
/// larger one, from a burst of big replies, is freed).
pub const SPARE_BYTES_MAX: usize = 64 << 10;
/// Batches handed to the sender and not yet reported back.
pub const BATCHES_IN_FLIGHT_MAX: usize = 64;

/// A connection's socket as the mio loop holds it: shared with the sender thread
/// while a write of it is in flight.
#[derive(Debug)]
pub struct MioStream {
    socket: Arc<TcpStream>,
    /// The transport's slot, once registered.
    slot: Option<usize>,
}

impl MioStream {
    pub fn new(socket: TcpStream) -> MioStream {
        MioStream {
            socket: Arc::new(socket),
            slot: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

/// One connection's bytes for the sender.
#[derive(Debug)]
struct Job {
    slot: usize,
    generation: u32,
    socket: Arc<TcpStream>,
    bytes: Vec<u8>,
}

/// What became of a job.
#[derive(Debug)]
struct Report {
    slot: usize,
    generation: u32,
    /// Emptied for reuse when everything went; otherwise what is left to write.
    bytes: Vec<u8>,
    sent_all: bool,
    error: Option<io::Error>,
}

/// A wakeup's jobs going out and their reports coming back (both vectors travel
/// back and forth, so a busy node allocates none per wakeup).
#[derive(Debug, Default)]
struct Batch {
    jobs: Vec<Job>,
    reports: Vec<Report>,
}

/// Per connection: what the loop knows of its writes.
#[derive(Debug, Default)]
struct SlotState {
    generation: u32,
    /// The sender holds this connection's bytes.
    sending: bool,
    /// Output came meanwhile and waits for the report (counted in
    /// `deferred_connections`).
    deferred: bool,
    /// What the sender could not write, to go first (inline) at the next flush.
    rest: Option<Vec<u8>>,
    error: Option<io::Error>,
    /// An emptied buffer for the next job.
    spare: Vec<u8>,
}

/// The loop's side of the sender thread.
#[derive(Debug)]
struct SenderHandle {
    jobs: Sender<Batch>,
    reports: Receiver<Batch>,
    /// Raised by the loop before it sleeps with output deferred behind a connection
    /// in flight; the sender lowers it and wakes the loop.
    loop_waits: Arc<AtomicBool>,
    /// Connections whose output waits for their job's report.
    deferred_connections: usize,
    thread: Option<JoinHandle<()>>,
    batches_in_flight: usize,
    /// This wakeup's jobs, filled by `flush` between `flush_started` and
    /// `flush_finished`.
    batch: Batch,
    /// Emptied batches for reuse.
    spare_batches: Vec<Batch>,
    /// This wakeup hands its writes to the sender.
    offloading: bool,
    /// The loop was saturated over its last window (see
    /// [`crate::load::LoopLoad`]).
    saturated: bool,
    mode: ReplySender,
    /// Batches handed over, connections in them, and jobs that came back short.
    batches: u64,
    jobs_sent: u64,
    jobs_short: u64,
}

/// The frontend's sockets are mio streams registered with this registry, edge
/// triggered, readable and writable, under token `index + first_token`.
#[derive(Debug)]
pub struct MioTransport {
    registry: Registry,
    first_token: usize,
    slots: Vec<SlotState>,
    sender: Option<SenderHandle>,
}

impl MioTransport {
    /// A transport writing as `mode` says, its sender thread (unless `Never`)
    /// waking the loop through `waker` when it must.
    pub fn new(
        registry: Registry,
        first_token: usize,
        waker: Arc<Waker>,
        mode: ReplySender,
    ) -> io::Result<MioTransport> {
        let sender = match mode {
            ReplySender::Never => None,
            ReplySender::Auto | ReplySender::Always => Some(SenderHandle::start(waker, mode)?),
        };
        Ok(MioTransport {
            registry,
            first_token,
            slots: Vec::new(),
            sender,
        })
    }

    /// Called last before the loop sleeps: true when reports wait to be taken (the
    /// loop must not sleep). With output deferred, asks the sender to wake the loop
    /// (see the module docs on waking).
    pub fn before_sleep(&self) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        sender
            .loop_waits
            .store(sender.deferred_connections > 0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !sender.reports.is_empty()
    }

    /// Takes what the sender reported and calls `ready` with each connection that
    /// must be flushed again.
    pub fn take_reports(&mut self, mut ready: impl FnMut(usize)) {
        let Some(sender) = &mut self.sender else {
            return;
        };
        loop {
            let mut batch = match sender.reports.try_recv() {
                Ok(batch) => batch,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            sender.batches_in_flight -= 1;
            for report in batch.reports.drain(..) {
                let Some(state) = self.slots.get_mut(report.slot) else {
                    continue;
                };
                if state.generation != report.generation {
                    continue; // closed meanwhile
                }
                state.sending = false;
                if std::mem::take(&mut state.deferred) {
                    sender.deferred_connections -= 1;
                }
                if let Some(error) = report.error {
                    state.error = Some(error);
                } else if report.sent_all {
                    if report.bytes.capacity() <= SPARE_BYTES_MAX {
                        state.spare = report.bytes;
                    }
                } else {
                    sender.jobs_short += 1;
                    state.rest = Some(report.bytes);
                }
                ready(report.slot);
            }
            sender.spare_batches.push(batch);
        }
    }

    /// Whether the loop is saturated (see [`crate::load::LoopLoad`]): only a
    /// saturated loop hands its writes over.
    pub fn set_saturated(&mut self, saturated: bool) {
        if let Some(sender) = &mut self.sender
            && sender.saturated != saturated
        {
            log::debug!(
                "event loop {}: replies {}",
                if saturated {
                    "saturated"
                } else {
                    "not saturated"
                },
                if saturated {
                    "go through the sender thread"
                } else {
                    "are written inline"
                }
            );
            sender.saturated = saturated;
        }
    }

    /// Stops the sender thread once it wrote what it holds.
    pub fn shutdown(&mut self) {
        if let Some(mut sender) = self.sender.take() {
            drop(sender.jobs);
            if let Some(thread) = sender.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A slot's connection is gone (or new): a report of its old jobs is ignored.
    fn forget(&mut self, index: usize) {
        let state = self.slot(index);
        state.generation = state.generation.wrapping_add(1);
        state.sending = false;
        state.rest = None;
        state.error = None;
        let deferred = std::mem::take(&mut state.deferred);
        if deferred && let Some(sender) = &mut self.sender {
            sender.deferred_connections -= 1;
        }
    }

    fn slot(&mut self, index: usize) -> &mut SlotState {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, SlotState::default);
        }
        &mut self.slots[index]
    }
}

impl Drop for MioTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for MioTransport {
    type Stream = MioStream;

    fn register(&mut self, stream: &mut MioStream, index: usize) -> io::Result<()> {
        let fd = stream.socket.as_raw_fd();
        self.registry.register(
            &mut SourceFd(&fd),
            Token(index + self.first_token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.forget(index);
        stream.slot = Some(index);
        Ok(())
    }

    fn deregister(&mut self, stream: MioStream) {
        let fd = stream.socket.as_raw_fd();
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        if let Some(index) = stream.slot {
            self.forget(index);
        }
        // The socket closes when the sender lets go of it too.
    }

    fn connect(&mut self, address: SocketAddr) -> io::Result<MioStream> {
        let stream = TcpStream::connect(address)?;
        let _ = stream.set_nodelay(true);
        Ok(MioStream::new(stream))
    }

    fn flush_started(&mut self, connections: usize) {
        if let Some(sender) = &mut self.sender {
            sender.offloading = (sender.saturated || sender.mode == ReplySender::Always)
                && connections >= OFFLOAD_CONNECTIONS_MIN
                && sender.batches_in_flight < BATCHES_IN_FLIGHT_MAX;
        }
    }

    fn flush(&mut self, stream: &mut MioStream, out: &mut OutBuffer) -> io::Result<bool> {
        let Some(index) = stream.slot else {
            return out.flush(&mut &*stream.socket);
        };
        self.slot(index);
        let state = &mut self.slots[index];
        if let Some(error) = state.error.take() {
            return Err(error);
        }
        if state.sending {
            if !out.is_empty()
                && !state.deferred
                && let Some(sender) = &mut self.sender
            {
                state.deferred = true;
                sender.deferred_connections += 1;
            }
            return Ok(false);
        }
        if let Some(rest) = state.rest.take() {
            // The socket was full for the sender: from here on, inline until the
            // writable edge.
            out.put_back(rest);
            return out.flush(&mut &*stream.socket);
        }
        if out.is_empty() {
            return Ok(true);
        }
        let generation = state.generation;
        match &mut self.sender {
            Some(sender) if sender.offloading => {
                let spare = std::mem::take(&mut self.slots[index].spare);
                let bytes = out.take_pending(spare);
                sender.batch.jobs.push(Job {
                    slot: index,
                    generation,
                    socket: Arc::clone(&stream.socket),
                    bytes,
                });
                self.slots[index].sending = true;
                Ok(false)
            }
            _ => out.flush(&mut &*stream.socket),
        }
    }

    fn flush_finished(&mut self) {
        let Some(sender) = &mut self.sender else {
            return;
        };
        sender.offloading = false;
        if sender.batch.jobs.is_empty() {
            return;
        }
        let next = sender.spare_batches.pop().unwrap_or_default();
        let batch = std::mem::replace(&mut sender.batch, next);
        let jobs = batch.jobs.len() as u64;
        match sender.jobs.try_send(batch) {
            Ok(()) => {
                sender.batches_in_flight += 1;
                sender.batches += 1;
                sender.jobs_sent += jobs;
            }
            Err(refused) => {
                // Never full (at most BATCHES_IN_FLIGHT_MAX batches are out, and the
                // channel holds that many), so the thread is gone, and with it the
                // bytes of the batches it held: write this one here, fail the
                // connections whose bytes went with the thread (their streams have a
                // hole), and write inline from now on. A short write here waits for
                // the writable edge its `WouldBlock` armed.
                log::error!("the sender thread stopped; writing replies inline");
                let mut batch = refused.into_inner();
                write_batch(&mut batch);
                for report in batch.reports.drain(..) {
                    if let Some(state) = self.slots.get_mut(report.slot)
                        && state.generation == report.generation
                    {
                        state.sending = false;
                        if let Some(error) = report.error {
                            state.error = Some(error);
                        } else if !report.sent_all {
                            state.rest = Some(report.bytes);
                        }
                    }
                }
                for state in &mut self.slots {
                    state.deferred = false;
                    if std::mem::take(&mut state.sending) {
                        state.error = Some(io::Error::other("the sender thread stopped"));
                    }
                }
                self.sender = None;
            }
        }
    }

    fn write_info(&self, text: &mut String) {
        use std::fmt::Write as _;
        let (mode, saturated, batches, jobs, short) = match &self.sender {
            Some(sender) => (
                match sender.mode {
                    ReplySender::Always => "always",
                    _ => "auto",
                },
                sender.saturated,
                sender.batches,
                sender.jobs_sent,
                sender.jobs_short,
            ),
            None => ("never", false, 0, 0, 0),
        };
        let _ = write!(
            text,
            "# Transport\r\nreply_sender:{mode}\r\nloop_saturated:{}\r\nsender_batches:{batches}\r\nsender_connections:{jobs}\r\nsender_short_writes:{short}\r\n\r\n",
            u8::from(saturated)
        );
    }

    fn sending(&self, stream: &MioStream) -> bool {
        stream
            .slot
            .and_then(|index| self.slots.get(index))
            .is_some_and(|state| state.sending || state.rest.is_some())
    }
}

impl SenderHandle {
    fn start(waker: Arc<Waker>, mode: ReplySender) -> io::Result<SenderHandle> {
        let (jobs, jobs_received) = crossbeam_channel::bounded::<Batch>(BATCHES_IN_FLIGHT_MAX);
        let (reports_sent, reports) = crossbeam_channel::bounded::<Batch>(BATCHES_IN_FLIGHT_MAX);
        let loop_waits = Arc::new(AtomicBool::new(false));
        let thread = {
            let loop_waits = Arc::clone(&loop_waits);
            std::thread::Builder::new()
                .name("ringkv-sender".to_owned())
                .spawn(move || {
                    while let Ok(mut batch) = jobs_received.recv() {
                        write_batch(&mut batch);
                        let must_wake = batch
                            .reports
                            .iter()
                            .any(|report| !report.sent_all || report.error.is_some());
                        if reports_sent.send(batch).is_err() {
                            return;
                        }
                        fence(Ordering::SeqCst);
                        if loop_waits.swap(false, Ordering::SeqCst) || must_wake {
                            let _ = waker.wake();
                        }
                    }
                })?
        };
        Ok(SenderHandle {
            jobs,
            reports,
            loop_waits,
            deferred_connections: 0,
            thread: Some(thread),
            batches_in_flight: 0,
            batch: Batch::default(),
            spare_batches: Vec::new(),
            offloading: false,
            saturated: false,
            mode,
            batches: 0,
            jobs_sent: 0,
            jobs_short: 0,
        })
    }
}

/// Writes each job's bytes once (until done or the socket is full) and files its
/// report.
fn write_batch(batch: &mut Batch) {
    for job in batch.jobs.drain(..) {
        let mut out = OutBuffer::from_bytes(job.bytes);
        let (sent_all, error) = match out.flush(&mut &*job.socket) {
            Ok(sent_all) => (sent_all, None),
            Err(error) => (false, Some(error)),
        };
        batch.reports.push(Report {
            slot: job.slot,
            generation: job.generation,
            bytes: out.into_pending(),
            sent_all,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::io::Read;
    use std::time::{Duration, Instant};

    const WAKER: Token = Token(0);
    const FIRST: usize = 16;

    struct Rig {
        poll: Poll,
        events: Events,
        transport: MioTransport,
        stream: MioStream,
        out: OutBuffer,
        /// The client's end.
        client: std::net::TcpStream,
    }

    fn rig(mode: ReplySender) -> Rig {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let mut transport =
            MioTransport::new(poll.registry().try_clone().unwrap(), FIRST, waker, mode).unwrap();
        let mut stream = MioStream::new(TcpStream::from_std(server));
        transport.register(&mut stream, 0).unwrap();
        Rig {
            poll,
            events: Events::with_capacity(64),
            transport,
            stream,
            out: OutBuffer::default(),
            client,
        }
    }

    impl Rig {
        /// One wakeup's flush as the frontend does it, claiming `connections`.
        fn flush(&mut self, connections: usize) -> io::Result<bool> {
            self.transport.flush_started(connections);
            let flushed = self.transport.flush(&mut self.stream, &mut self.out);
            self.transport.flush_finished();
            flushed
        }

        /// Waits (briefly, unless `busy`) as the loop does and takes the sender's
        /// reports; true when the connection must be flushed again.
        fn wait(&mut self, busy: bool) -> bool {
            let timeout = if self.transport.before_sleep() || busy {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
            let mut again = self.events.iter().any(|event| event.token() != WAKER);
            self.transport.take_reports(|slot| again |= slot == 0);
            again
        }
    }

    /// Bytes far larger than the socket takes, produced while earlier ones are still
    /// with the sender, arrive whole and in order: short sends come back to the loop
    /// and go on from where they stopped.
    #[test]
    fn replies_arrive_in_order_through_the_sender_and_back() {
        let mut rig = rig(ReplySender::Always);
        let total = 32 << 20;
        let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut client = rig.client.try_clone().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut received = Vec::with_capacity(total);
            let mut chunk = vec![0u8; 1 << 16];
            // A late reader: the socket fills and sends come back short.
            std::thread::sleep(Duration::from_millis(500));
            while received.len() < total {
                match client.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // closed, or bytes went missing
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                }
            }
            received
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pushed = 0;
        let mut offloaded = 0;
        let mut came_back_short = 0;
        while Instant::now() < deadline {
            if pushed < total {
                let end = (pushed + (1 << 20)).min(total);
                rig.out.push(&expected[pushed..end], usize::MAX).unwrap();
                pushed = end;
            }
            let before = rig.transport.sending(&rig.stream);
            let done = rig.flush(2).unwrap();
            offloaded += usize::from(!before && rig.transport.sending(&rig.stream));
            if done && pushed == total && !rig.transport.sending(&rig.stream) {
                break;
            }
            // A busy loop while it produces: it comes back before the sender reports.
            rig.wait(pushed < total);
            came_back_short += usize::from(rig.transport.slots[0].rest.is_some());
        }
        assert!(rig.out.is_empty(), "gave up with bytes left");
        assert!(offloaded > 1, "the sender never took the bytes");
        assert!(came_back_short > 0, "no send came back short");
        let received = reader.join().unwrap();
        assert_eq!(received.len(), total, "bytes went missing");
        assert!(received == expected, "bytes arrived out of order");
    }

    /// A write the sender finds failing comes back as the connection's error.
    #[test]
    fn a_failed_write_comes_back_as_the_connections_error() {
        let mut rig = rig(ReplySender::Always);
        rig.client.shutdown(std::net::Shutdown::Both).unwrap();
        let mut failed = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !failed {
            rig.out.push(&[7u8; 4096], usize::MAX).unwrap();
            failed = rig.flush(2).is_err();
            rig.wait(false);
        }
        assert!(failed, "writes to a closed peer never failed");
    }

    /// A lone connection's bytes go inline: nothing is handed to the sender.
    #[test]
    fn one_connection_is_written_inline() {
        let mut rig = rig(ReplySender::Always);
        rig.out.push(b"+OK\r\n", usize::MAX).unwrap();
        assert!(rig.flush(1).unwrap());
        assert!(!rig.transport.sending(&rig.stream));
        let mut reply = [0u8; 5];
        rig.client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }
}
