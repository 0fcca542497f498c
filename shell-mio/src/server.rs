//! The mio event loop of `ringkv-node`: one thread waits on epoll (through mio) and
//! moves bytes between the sockets and the [`Frontend`], which owns the core node,
//! the storage executor and every connection's protocol state.
//!
//! Readiness in, bytes out: a readable client or inbound peer connection is read into
//! its buffer (at most [`READS_PER_WAKEUP`] reads per connection per wakeup, through
//! one zeroed chunk), then the frontend parses what arrived; listeners accept at most
//! [`ACCEPTS_PER_WAKEUP`] connections per wakeup; an outbound peer connection turning
//! writable finishes its connect. What is left over is picked up by the next iteration
//! without sleeping. Storage threads wake the loop through a mio `Waker`; SIGINT and
//! SIGTERM arrive through signal-hook's mio source. Output is written inline, or by
//! the sender thread while the loop is saturated ([`crate::sender`]); the loop takes
//! the sender's reports after each wait.

use crate::load::LoopLoad;
use crate::sender::{MioStream, MioTransport};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use ringkv_core::version::NodeId;
use ringkv_frontend::frontend::{
    AGAIN_CLIENT_ACCEPTS, AGAIN_COMPLETIONS, AGAIN_PEER_ACCEPTS, ConnectionKind, Frontend,
    READ_CHUNK_BYTES, REFUSAL, TICK_MS,
};
use ringkv_frontend::settings::Settings;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use ringkv_frontend::frontend::ServerError;

const CLIENT_LISTENER: Token = Token(0);
const PEER_LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
const SIGNALS: Token = Token(3);
const FIRST_CONNECTION: usize = 16;

/// Reads from one connection per wakeup before others get a turn.
pub const READS_PER_WAKEUP: usize = 16;
/// Connections accepted per listener per wakeup.
pub const ACCEPTS_PER_WAKEUP: usize = 256;

/// What the poller reported for a connection.
#[derive(Clone, Copy, Debug)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// See [`read_some`].
    short_read_drains: bool,
}

/// A running node.
pub struct Server {
    frontend: Frontend<MioTransport>,
    poll: Poll,
    client_listener: Option<TcpListener>,
    peer_listener: Option<TcpListener>,
    signals: Signals,
    _waker: Arc<Waker>,
    /// Every socket read lands here first ([`READ_CHUNK_BYTES`], zeroed once).
    read_chunk: Box<[u8]>,
    /// Connections the sender thread reported on this wakeup (kept for reuse).
    sent: Vec<usize>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("frontend", &self.frontend)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the stores, binds both addresses and builds the node.
    pub fn start(settings: Settings, node_id: NodeId, seed: u64) -> Result<Server, ServerError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = {
            let waker = Arc::clone(&waker);
            move || {
                let _ = waker.wake();
            }
        };
        let bind = |address: SocketAddr| -> Result<TcpListener, ServerError> {
            let listener = ringkv_frontend::frontend::bind_listener(address)?;
            listener.set_nonblocking(true)?;
            Ok(TcpListener::from_std(listener))
        };
        let mut client_listener = bind(settings.client_address)?;
        let mut peer_listener = bind(settings.peer_address)?;
        poll.registry()
            .register(&mut client_listener, CLIENT_LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let transport = MioTransport::new(
            poll.registry().try_clone()?,
            FIRST_CONNECTION,
            Arc::clone(&waker),
            settings.reply_sender,
        )?;
        let frontend = Frontend::new(settings, node_id, seed, transport, wake)?;
        frontend.log_serving();
        Ok(Server {
            frontend,
            poll,
            client_listener: Some(client_listener),
            peer_listener: Some(peer_listener),
            signals,
            _waker: waker,
            read_chunk: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            sent: Vec::new(),
        })
    }

    /// Runs until a signal stops the node; returns once the stores are synced.
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = self.frontend.now();
        let mut ticks = 0u64;
        let mut load = LoopLoad::new();
        loop {
            let now = self.frontend.now();
            let mut wake_at = next_tick;
            if let Some(deadline) = self.frontend.poll_timeout() {
                wake_at = wake_at.min(deadline);
            }
            // Work left from the last wakeup, or completions already waiting (an
            // inline read's, queued after this wakeup's completions were handed over).
            let timeout = if !self.frontend.has_again()
                && !self.frontend.executor().has_done()
                && !self.frontend.transport().before_sleep()
            {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            load.poll_starts();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
            let frontend = &mut self.frontend;
            if let Some(saturated) = load.poll_ended() {
                frontend.transport().set_saturated(saturated);
            }
            let mut sent = std::mem::take(&mut self.sent);
            frontend.transport().take_reports(|index| sent.push(index));
            for index in sent.drain(..) {
                frontend.mark_dirty(index);
            }
            self.sent = sent;
            for event in &events {
                match event.token() {
                    CLIENT_LISTENER => self.accept_clients(),
                    PEER_LISTENER => self.accept_peers(),
                    WAKER => {}
                    SIGNALS => {
                        if self.signalled() {
                            return Ok(());
                        }
                    }
                    Token(token) => self.connection_ready(
                        token - FIRST_CONNECTION,
                        Readiness {
                            readable: event.is_readable() || event.is_read_closed(),
                            writable: event.is_writable() || event.is_error(),
                            // An event without the peer's end of stream: a short read
                            // drains the socket (see `read_some`).
                            short_read_drains: !event.is_read_closed(),
                        },
                    ),
                }
            }
            for index in self.frontend.take_again() {
                self.connection_ready(
                    index,
                    Readiness {
                        readable: true,
                        writable: false,
                        short_read_drains: false,
                    },
                );
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
            // The durable writes of this wakeup, written and synced here: one group
            // commit per store and wakeup, after the output went out.
            self.frontend.executor().run_rounds();
            if self.frontend.ready_to_stop() {
                let (mut transport, result) = self.frontend.finish();
                transport.shutdown();
                return result;
            }
        }
    }

    /// Handles a signal; true when the node must exit at once (a second signal).
    fn signalled(&mut self) -> bool {
        if self.signals.pending().count() == 0 {
            return false;
        }
        if self.frontend.begin_shutdown() {
            return true;
        }
        for listener in [self.client_listener.take(), self.peer_listener.take()]
            .into_iter()
            .flatten()
        {
            let mut listener = listener;
            let _ = self.poll.registry().deregister(&mut listener);
        }
        false
    }

    fn accept_clients(&mut self) {
        let frontend = &mut self.frontend;
        let more = accept_some(
            self.client_listener.as_ref(),
            "client",
            |stream, address| {
                if let Err(refused) = frontend.add_client(MioStream::new(stream), address) {
                    use std::io::Write;
                    let _ = refused.socket().write(REFUSAL);
                }
            },
        );
        if more {
            self.frontend.push_again(AGAIN_CLIENT_ACCEPTS);
        }
    }

    fn accept_peers(&mut self) {
        let frontend = &mut self.frontend;
        let more = accept_some(self.peer_listener.as_ref(), "peer", |stream, address| {
            frontend.add_inbound(MioStream::new(stream), address)
        });
        if more {
            self.frontend.push_again(AGAIN_PEER_ACCEPTS);
        }
    }

    fn connection_ready(&mut self, index: usize, ready: Readiness) {
        match index {
            AGAIN_COMPLETIONS => return self.frontend.completions(),
            AGAIN_CLIENT_ACCEPTS => return self.accept_clients(),
            AGAIN_PEER_ACCEPTS => return self.accept_peers(),
            _ => {}
        }
        match self.frontend.kind(index) {
            Some(ConnectionKind::Client) => {
                if ready.writable {
                    self.frontend.mark_dirty(index);
                }
                if ready.readable {
                    self.read(index, ConnectionKind::Client, ready.short_read_drains);
                }
            }
            Some(ConnectionKind::Peer) => self.peer_ready(index, ready),
            Some(ConnectionKind::Inbound) if ready.readable => {
                self.read(index, ConnectionKind::Inbound, ready.short_read_drains)
            }
            Some(ConnectionKind::Introduction) if ready.writable => self.frontend.mark_dirty(index),
            _ => {}
        }
    }

    /// Reads a client's requests or a peer's frames and hands them to the frontend.
    fn read(&mut self, index: usize, kind: ConnectionKind, short_read_drains: bool) {
        let Some(reader) = self.frontend.reader(index) else {
            return;
        };
        match read_some(
            reader.stream.socket(),
            reader.buffer,
            reader.limit,
            &mut self.read_chunk,
            short_read_drains,
        ) {
            Ok((closed, more)) => match kind {
                ConnectionKind::Inbound => self.frontend.inbound_input(index, closed, more),
                _ => self.frontend.client_input(index, closed, more),
            },
            Err(error) => {
                log::debug!("{kind:?} connection failed: {error}");
                self.frontend.close(index);
            }
        }
    }

    /// An outbound peer connection's event: a connect finishing, or the peer closing
    /// it (peers never send on it), or room to write.
    fn peer_ready(&mut self, index: usize, ready: Readiness) {
        let peer = self.frontend.peer_of(index).map_or(0, |p| p.0);
        let Some((stream, connecting)) = self.frontend.peer_stream(index) else {
            return;
        };
        let stream = stream.socket();
        if connecting && ready.writable {
            let failed = match stream.take_error() {
                Ok(Some(error)) | Err(error) => Some(error),
                Ok(None) => stream.peer_addr().err(),
            };
            match failed {
                Some(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Some(error) => {
                    log::debug!("peer {peer} unreachable: {error}");
                    self.frontend.close(index);
                    return;
                }
                None => self.frontend.peer_connected(index),
            }
        }
        if ready.readable {
            let Some((stream, _)) = self.frontend.peer_stream(index) else {
                return;
            };
            let mut stream = stream.socket();
            let mut scratch = [0u8; 512];
            loop {
                match stream.read(&mut scratch) {
                    Ok(0) => {
                        log::info!("peer {peer} closed its connection");
                        self.frontend.close(index);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::info!("connection to peer {peer} lost: {e}");
                        self.frontend.close(index);
                        return;
                    }
                }
            }
        }
        if ready.writable {
            self.frontend.mark_dirty(index);
        }
    }
}

/// Reads until the socket is drained, `limit` bytes are buffered or the per-wakeup
/// bound is reached: `(closed by the peer, more may be waiting)`.
///
/// With `short_read_drains`, a read that returns less than it asked for ends the
/// loop without the extra read that would only say `WouldBlock` (one syscall per
/// request saved at pipeline depth 1). That is safe for a TCP socket under
/// edge-triggered epoll when the event did not report the peer's end of stream: the
/// short read emptied the receive queue, and anything arriving after it raises a new
/// event, a FIN included. When the event did report the end of stream (it may have
/// come with the data), and for work carried over between wakeups, the loop reads on
/// until `WouldBlock` or end of stream.
fn read_some(
    mut stream: &TcpStream,
    buffer: &mut Vec<u8>,
    limit: usize,
    chunk: &mut [u8],
    short_read_drains: bool,
) -> io::Result<(bool, bool)> {
    for _ in 0..READS_PER_WAKEUP {
        if buffer.len() >= limit {
            return Ok((false, true));
        }
        // Read into the loop's one zeroed chunk and copy what came: growing `buffer`
        // by a zero-filled chunk per read would cost a 64 KiB memset per call.
        let room = chunk.len().min(limit - buffer.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok((true, false)),
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                if short_read_drains && n < room {
                    return Ok((false, false));
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok((false, true))
}

/// Accepts up to [`ACCEPTS_PER_WAKEUP`] connections (no-delay set) and hands each to
/// `take`; true when more may be waiting.
fn accept_some(
    listener: Option<&TcpListener>,
    what: &str,
    mut take: impl FnMut(TcpStream, SocketAddr),
) -> bool {
    let Some(listener) = listener else {
        return false;
    };
    for _ in 0..ACCEPTS_PER_WAKEUP {
        match listener.accept() {
            Ok((stream, address)) => {
                let _ = stream.set_nodelay(true);
                take(stream, address);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
            Err(error) => {
                log::warn!("accepting a {what} failed: {error}");
                return false;
            }
        }
    }
    true
}
