//! The io_uring event loop of `ringkv-node-uring`: one thread, one ring, driving the
//! same [`Frontend`] as `ringkv-node` (the core node, the storage executor, every
//! connection's protocol state) through completions instead of readiness.
//!
//! Per iteration: submit what is queued and wait for at least one completion (or not
//! at all when work is left over), reap at most [`COMPLETIONS_PER_WAKEUP`]
//! completions and hand each to the frontend, then the frontend's own work (storage
//! completions, the core's deadlines, the tick, writing what was buffered), then the
//! storage rounds.
//!
//! - **Accepts** are multishot where the kernel has it (one submission per listener);
//!   a kernel that refuses it gets single-shot accepts, re-armed after each
//!   completion.
//! - **Receives** are multishot into a provided buffer ring where the kernel has one,
//!   single-shot into per-connection buffers otherwise; **sends** own the bytes they
//!   carry ([`crate::transport`], [`crate::buffers`]).
//! - **Storage writes** are the loop's own, with plain syscalls, as in `ringkv-node`:
//!   at the end of each iteration, once this iteration's sends are submitted, every
//!   store's waiting writes are written and synced as one round per store
//!   ([`ringkv_frontend::executor::Executor::run_rounds`]: group commit). When that
//!   submit posted completions (requests that arrived while this iteration ran, or
//!   the sends it just made, which finish inline), the rounds wait for the next
//!   iteration, up to [`ROUNDS_DEFERRED_MAX`] in a row, so that requests already
//!   here join the same round and its one `fdatasync`; the extra iteration costs no
//!   system call when nothing new came. At 2,000 requests a second one node synced
//!   9,422 rounds in 10 s for 10,000 writes where `ringkv-node`, whose receives read
//!   everything that arrived by then, synced 7,850; now 7,122 (BENCHMARKS.md). They went
//!   through the ring once, a write and a linked `fdatasync` per round; the kernel
//!   ran both on io-wq worker threads (a third of the node's CPU at 2,000 requests a
//!   second), and at that load the loop's own syscalls cost 27% less CPU per request
//!   with the same closed-loop throughput (BENCHMARKS.md). Point reads the page cache
//!   or the store's memory holds run inline; the rest, scans, compaction and the
//!   interval-mode sync stay on the executor's reader threads.
//! - **Time** is a ring timeout armed for the next deadline (the core's, or the
//!   100 ms tick); at most [`TIMEOUTS_MAX`] are outstanding.
//! - **Storage threads** wake the loop through an eventfd read on the ring; **SIGINT
//!   and SIGTERM** arrive through signal-hook's pipe, read on the ring too.
//!
//! Shutdown is the frontend's (finish in-flight requests, write, sync the stores);
//! then every ring operation is cancelled and its completion awaited before the
//! buffers go ([`Ring::shutdown`]).

use crate::ring::{Completed, Listener, Operation, Ring};
use crate::transport::{Event, UringStream, UringTransport};
use ringkv_core::Instant;
use ringkv_core::version::NodeId;
use ringkv_frontend::frontend::{
    AGAIN_CLIENT_ACCEPTS, AGAIN_COMPLETIONS, AGAIN_PEER_ACCEPTS, COMPLETIONS_PER_WAKEUP,
    ConnectionKind, Frontend, REFUSAL, ServerError, TICK_MS, bind_listener,
};
use ringkv_frontend::settings::Settings;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Set to `1`, the node uses its single-shot fallbacks (one accept and one receive
/// per submission, a receive buffer per connection) as it does on a kernel without
/// multishot operations or buffer rings: a switch for tests and diagnosis.
pub const FALLBACK_VARIABLE: &str = "RINGKV_URING_FALLBACK";

/// Submission queue entries of the ring.
pub const RING_ENTRIES: u32 = 4096;
/// Ring timeouts outstanding at most.
pub const TIMEOUTS_MAX: usize = 8;
/// Iterations in a row that may leave the storage rounds for the next one because
/// completions are already posted (see the module docs).
pub const ROUNDS_DEFERRED_MAX: u32 = 4;

/// A running node over io_uring.
pub struct Server {
    frontend: Frontend<UringTransport>,
    listeners: [Option<Rc<TcpListener>>; 2],
    /// Each listener's armed accept.
    accepts: [Option<u64>; 2],
    multishot_accept: bool,
    wake: Arc<std::fs::File>,
    signals: Rc<UnixStream>,
    timeouts: usize,
    /// The earliest outstanding timeout's deadline.
    timeout_at: Option<Instant>,
    completed: Vec<Completed>,
    /// Connections whose next receive waits for room in their read buffer.
    paused: Vec<usize>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("frontend", &self.frontend)
            .finish_non_exhaustive()
    }
}

/// Why the loop stops.
enum Stop {
    /// A second signal: exit at once.
    Now,
}

impl Server {
    /// Sets up the ring, opens the stores, binds both addresses and builds the node.
    pub fn start(settings: Settings, node_id: NodeId, seed: u64) -> Result<Server, ServerError> {
        let ring = Ring::new(RING_ENTRIES)?;
        let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        let wake = Arc::new(std::fs::File::from(eventfd));
        let waker = {
            let wake = Arc::clone(&wake);
            move || {
                let _ = (&*wake).write(&1u64.to_ne_bytes());
            }
        };
        let (signal_read, signal_write) = UnixStream::pair()?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(signal, signal_write.try_clone()?)?;
        }
        let client_listener = bind_listener(settings.client_address)?;
        let peer_listener = bind_listener(settings.peer_address)?;
        let single_shot = std::env::var_os(FALLBACK_VARIABLE).is_some_and(|v| v == "1");
        if single_shot {
            log::info!("{FALLBACK_VARIABLE}=1: single-shot accepts and receives");
        }
        let transport = UringTransport::new(ring, single_shot);
        let frontend = Frontend::new(settings, node_id, seed, transport, waker)?;
        frontend.log_serving();
        Ok(Server {
            frontend,
            listeners: [Some(Rc::new(client_listener)), Some(Rc::new(peer_listener))],
            accepts: [None, None],
            multishot_accept: !single_shot,
            wake,
            signals: Rc::new(signal_read),
            timeouts: 0,
            timeout_at: None,
            completed: Vec::with_capacity(COMPLETIONS_PER_WAKEUP),
            paused: Vec::new(),
        })
    }

    fn ring(&mut self) -> &mut Ring {
        &mut self.frontend.transport().ring
    }

    /// Runs until a signal stops the node; returns once the stores are synced and
    /// the ring's operations completed.
    pub fn run(mut self) -> Result<(), ServerError> {
        for listener in [Listener::Client, Listener::Peer] {
            self.arm_accept(listener);
        }
        self.arm_wake(Box::new([0u8; 8]));
        self.arm_signals(Box::new([0u8; 16]));
        let mut next_tick = self.frontend.now();
        let mut ticks = 0u64;
        let mut rounds_deferred = 0u32;
        loop {
            let now = self.frontend.now();
            let mut wake_at = next_tick;
            if let Some(deadline) = self.frontend.poll_timeout() {
                wake_at = wake_at.min(deadline);
            }
            let busy = self.frontend.has_again() || self.frontend.executor().has_done();
            if !busy && wake_at > now {
                self.arm_timeout(now, wake_at);
            }
            self.ring().submit(!busy && wake_at > now)?;
            let mut completed = std::mem::take(&mut self.completed);
            completed.clear();
            self.ring().reap(&mut completed, COMPLETIONS_PER_WAKEUP);
            for done in &completed {
                if let Err(Stop::Now) = self.completion(*done) {
                    return Ok(());
                }
            }
            if completed.len() == COMPLETIONS_PER_WAKEUP {
                // More may be waiting: come back without sleeping.
                self.frontend.push_again(AGAIN_COMPLETIONS);
            }
            self.completed = completed;
            for index in self.frontend.take_again() {
                match index {
                    AGAIN_COMPLETIONS => self.frontend.completions(),
                    // Accepts are the ring's: nothing is left over from a wakeup.
                    AGAIN_CLIENT_ACCEPTS | AGAIN_PEER_ACCEPTS => {}
                    _ => {
                        self.input(index, false);
                        self.resume(index);
                    }
                }
            }
            self.frontend.completions();
            self.frontend.timeouts();
            let now = self.frontend.now();
            if now >= next_tick {
                next_tick = now + Duration::from_millis(TICK_MS);
                ticks += 1;
                self.frontend.tick(ticks);
            }
            self.frontend.flush();
            // This wakeup's replies and frames go to the kernel first (submitted, not
            // waited for), then its durable writes are written and synced here, as
            // ringkv-node does (see the module docs).
            self.ring().submit(false)?;
            // Never while stopping: a stop at its deadline leaves no write unwritten.
            let defer = self.ring().has_completions() && !self.frontend.shutting_down();
            if defer && rounds_deferred < ROUNDS_DEFERRED_MAX {
                rounds_deferred += 1;
            } else {
                rounds_deferred = 0;
                self.frontend.executor().run_rounds();
            }
            let paused = std::mem::take(&mut self.paused);
            for index in paused {
                self.resume(index);
            }
            if self.frontend.ready_to_stop() {
                let (transport, result) = self.frontend.finish();
                transport.ring.shutdown();
                return result;
            }
        }
    }

    fn completion(&mut self, done: Completed) -> Result<(), Stop> {
        // A multishot operation that stays armed keeps its place in the slab.
        if done.more() {
            self.armed_completion(done);
            return Ok(());
        }
        let Some(operation) = self.ring().finish(done.user_data) else {
            return Ok(());
        };
        match operation {
            Operation::Accept {
                listener,
                multishot,
                ..
            } => self.accept_ended(listener, multishot, done.result),
            Operation::Wake { buffer, .. } => self.arm_wake(buffer),
            Operation::Signal { buffer, .. } => self.signal_ended(buffer, done.result)?,
            Operation::Timeout { .. } => self.timeout_ended(),
            Operation::Cancel { .. } => {}
            Operation::ReceiveMulti {
                slot, generation, ..
            } => self.received(slot, generation, done, true),
            connection @ (Operation::Recv { .. }
            | Operation::Send { .. }
            | Operation::Connect { .. }) => {
                let event = self.frontend.transport().complete(done.result, connection);
                self.connection_event(event);
            }
        }
        Ok(())
    }

    /// A completion of a multishot operation that stays armed.
    fn armed_completion(&mut self, done: Completed) {
        match self.ring().get(done.user_data) {
            Some(Operation::Accept { listener, .. }) => {
                let listener = *listener;
                self.accepted(listener, done.result);
            }
            Some(Operation::ReceiveMulti {
                slot, generation, ..
            }) => {
                let (slot, generation) = (*slot, *generation);
                self.received(slot, generation, done, false);
            }
            _ => {}
        }
    }

    /// An accept on `listener` is no longer armed: take its connection, and arm the
    /// next (one at a time when this kernel refuses multishot accept).
    fn accept_ended(&mut self, listener: Listener, multishot: bool, result: i32) {
        let which = listener_index(listener);
        self.accepts[which] = None;
        if multishot && result == -libc::EINVAL {
            log::info!("this kernel has no multishot accept; accepting one at a time");
            self.multishot_accept = false;
        } else {
            self.accepted(listener, result);
        }
        if result != -libc::ECANCELED {
            self.arm_accept(listener);
        }
    }

    /// A signal was read (a positive `result`): shut down, then read the next.
    fn signal_ended(&mut self, buffer: Box<[u8; 16]>, result: i32) -> Result<(), Stop> {
        if result > 0 {
            if self.frontend.begin_shutdown() {
                return Err(Stop::Now);
            }
            self.stop_accepting();
        }
        if result != -libc::ECANCELED {
            self.arm_signals(buffer);
        }
        Ok(())
    }

    fn timeout_ended(&mut self) {
        self.timeouts = self.timeouts.saturating_sub(1);
        if self
            .timeout_at
            .is_some_and(|at| at <= self.frontend.now() || self.timeouts == 0)
        {
            self.timeout_at = None;
        }
    }

    fn connection_event(&mut self, event: Event) {
        match event {
            Event::Received {
                slot,
                buffer,
                length,
            } => {
                let kind = self.frontend.kind(slot);
                if kind == Some(ConnectionKind::Peer) {
                    // Peers never send on this node's outbound connection.
                    if length == 0 {
                        let peer = self.frontend.peer_of(slot).map_or(0, |p| p.0);
                        log::info!("peer {peer} closed its connection");
                        self.frontend.close(slot);
                    } else {
                        self.frontend.transport().receive_again(slot, buffer, true);
                    }
                    return;
                }
                if length == 0 {
                    self.frontend.transport().receive_again(slot, buffer, false);
                    self.input(slot, true);
                    return;
                }
                if let Some(reader) = self.frontend.reader(slot) {
                    reader.buffer.extend_from_slice(&buffer[..length]);
                }
                self.frontend.transport().receive_again(slot, buffer, false);
                self.input(slot, false);
                self.resume(slot);
            }
            Event::Sent { slot } => self.frontend.mark_dirty(slot),
            Event::Connected { slot } => match self.frontend.kind(slot) {
                Some(ConnectionKind::Peer) => self.frontend.peer_connected(slot),
                _ => self.frontend.mark_dirty(slot),
            },
            Event::Failed { slot, error } => {
                log::debug!("{:?} connection failed: {error}", self.frontend.kind(slot));
                self.frontend.close(slot);
            }
            Event::Stale => {}
        }
    }

    /// A multishot receive's completion (`last`: the receive ended with it): bytes
    /// are copied out of the provided buffer, which goes back to the kernel at once.
    fn received(&mut self, slot: usize, generation: u32, done: Completed, last: bool) {
        let buffer = io_uring::cqueue::buffer_select(done.flags);
        let transport = self.frontend.transport();
        let current = transport.is_current(slot, generation);
        if last && current {
            transport.receive_ended(slot);
        }
        if !current {
            if let (Some(id), Some(buffers)) = (buffer, transport.ring.buffers()) {
                buffers.give_back(id);
            }
            return;
        }
        if done.result < 0 {
            match -done.result {
                // Cancelled (paused) or out of buffers: armed again when there is room.
                libc::ECANCELED | libc::ENOBUFS => {
                    if !self.paused.contains(&slot) {
                        self.paused.push(slot);
                    }
                }
                error => {
                    log::debug!(
                        "{:?} connection failed: {}",
                        self.frontend.kind(slot),
                        std::io::Error::from_raw_os_error(error)
                    );
                    self.frontend.close(slot);
                }
            }
            return;
        }
        let length = done.result as usize;
        let kind = self.frontend.kind(slot);
        if kind == Some(ConnectionKind::Peer) {
            let transport = self.frontend.transport();
            if let (Some(id), Some(buffers)) = (buffer, transport.ring.buffers()) {
                buffers.give_back(id);
            }
            if length == 0 {
                let peer = self.frontend.peer_of(slot).map_or(0, |p| p.0);
                log::info!("peer {peer} closed its connection");
                self.frontend.close(slot);
            } else if last {
                self.frontend.transport().arm_receive(slot);
            }
            return;
        }
        if length == 0 {
            self.input(slot, true);
            return;
        }
        let mut full = false;
        match self.frontend.reader(slot) {
            Some(reader) => {
                if let (Some(id), Some(buffers)) = (buffer, reader.transport.ring.buffers()) {
                    reader.buffer.extend_from_slice(buffers.bytes(id, length));
                    buffers.give_back(id);
                }
                full = reader.buffer.len() >= reader.limit;
            }
            None => {
                // Not read any more (closing, or shutting down): drop the bytes.
                let transport = self.frontend.transport();
                if let (Some(id), Some(buffers)) = (buffer, transport.ring.buffers()) {
                    buffers.give_back(id);
                }
            }
        }
        self.input(slot, false);
        if full && !last {
            self.frontend.transport().pause_receive(slot);
        } else if last {
            self.resume(slot);
        }
    }

    /// Hands a client's or inbound peer's buffered bytes to the frontend.
    fn input(&mut self, index: usize, closed: bool) {
        match self.frontend.kind(index) {
            Some(ConnectionKind::Client) => self.frontend.client_input(index, closed, false),
            Some(ConnectionKind::Inbound) => self.frontend.inbound_input(index, closed, false),
            _ => {}
        }
    }

    /// Arms the next receive of a client or inbound peer when its buffer has room;
    /// otherwise looks again next iteration.
    fn resume(&mut self, index: usize) {
        let Some(reader) = self.frontend.reader(index) else {
            return;
        };
        if reader.buffer.len() < reader.limit {
            self.frontend.transport().arm_receive(index);
        } else if !self.paused.contains(&index) {
            self.paused.push(index);
        }
    }

    fn accepted(&mut self, listener: Listener, result: i32) {
        let Some(socket) = Ring::accepted(result) else {
            if result != -libc::ECANCELED {
                log::warn!(
                    "accepting a {listener:?} connection failed: {}",
                    std::io::Error::from_raw_os_error(-result)
                );
            }
            return;
        };
        let Ok(address) = socket.peer_addr() else {
            return;
        };
        let stream = UringStream::accepted(socket);
        match listener {
            Listener::Client => {
                if let Err(refused) = self.frontend.add_client(stream, address) {
                    let _ = refused.socket().write(REFUSAL);
                }
            }
            Listener::Peer => self.frontend.add_inbound(stream, address),
        }
    }

    fn arm_accept(&mut self, listener: Listener) {
        let which = listener_index(listener);
        let Some(socket) = self.listeners[which].clone() else {
            return;
        };
        let operation = Operation::Accept {
            listener,
            socket,
            multishot: self.multishot_accept,
        };
        match self.ring().start(operation) {
            Ok(user_data) => self.accepts[which] = Some(user_data),
            Err(_) => log::warn!("ring full: not accepting {listener:?} connections for now"),
        }
    }

    /// Shutdown: close the listeners (once their accepts are cancelled).
    fn stop_accepting(&mut self) {
        self.listeners = [None, None];
        for user_data in self.accepts.iter_mut().filter_map(Option::take) {
            self.frontend.transport().ring.cancel(user_data);
        }
    }

    fn arm_wake(&mut self, buffer: Box<[u8; 8]>) {
        let file = Arc::clone(&self.wake);
        if self.ring().start(Operation::Wake { file, buffer }).is_err() {
            log::error!("ring full: storage completions will only be seen on timeouts");
        }
    }

    fn arm_signals(&mut self, buffer: Box<[u8; 16]>) {
        let pipe = Rc::clone(&self.signals);
        if self
            .ring()
            .start(Operation::Signal { pipe, buffer })
            .is_err()
        {
            log::error!("ring full: signals are not watched");
        }
    }

    /// Arms a ring timeout for `at` unless one fires earlier already.
    fn arm_timeout(&mut self, now: Instant, at: Instant) {
        if self.timeout_at.is_some_and(|armed| armed <= at) || self.timeouts >= TIMEOUTS_MAX {
            return;
        }
        let wait = at.saturating_duration_since(now);
        let timespec = io_uring::types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos());
        let operation = Operation::Timeout {
            timespec: Box::new(timespec),
        };
        if self.ring().start(operation).is_ok() {
            self.timeouts += 1;
            self.timeout_at = Some(at);
        }
    }
}

fn listener_index(listener: Listener) -> usize {
    match listener {
        Listener::Client => 0,
        Listener::Peer => 1,
    }
}
