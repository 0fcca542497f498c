//! The frontend's sockets over the ring: a receive armed per connection, sends that
//! own the bytes they carry, connects submitted as ring operations.
//!
//! Per connection slot the transport keeps a generation (bumped when the slot is
//! registered or released, so a completion for a connection that is gone is told
//! apart from one for the connection now in its slot) and the operations in flight.
//! Releasing a connection cancels its operations; the socket closes once the last of
//! them has completed, since each holds a reference to it.
//!
//! Receives are multishot into the provided buffer ring ([`crate::buffers`]) where the
//! kernel has one (5.19+): one submission serves every arrival until it is cancelled
//! (the connection's read buffer reached its bound, or the connection closed) or ends
//! (`ENOBUFS`). Otherwise they are single-shot, each into the connection's own buffer
//! of [`RECEIVE_BUFFER_BYTES`], re-armed after its completion was handed to the
//! frontend. At most one receive and one send are in flight per connection.

use crate::ring::{Operation, Ring, SocketAddress};
use ringkv_frontend::connection::OutBuffer;
use ringkv_frontend::frontend::Transport;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;

/// Bytes one receive may bring in.
pub const RECEIVE_BUFFER_BYTES: usize = 16 << 10;
/// Bytes a receive on an outbound peer connection may bring in (peers never send on
/// it; the receive is there to learn that it closed).
const PEER_RECEIVE_BUFFER_BYTES: usize = 64;

/// A connection's socket.
#[derive(Debug)]
pub struct UringStream {
    socket: Rc<TcpStream>,
    /// Where to connect, until the connect is submitted (at registration).
    connect_to: Option<SocketAddr>,
    /// The frontend slot, once registered.
    slot: Option<usize>,
}

impl UringStream {
    /// A connection the kernel accepted.
    pub fn accepted(socket: TcpStream) -> UringStream {
        let _ = socket.set_nodelay(true);
        UringStream {
            socket: Rc::new(socket),
            connect_to: None,
            slot: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    receive: Option<u64>,
    send: Option<u64>,
    connect: Option<u64>,
    /// The last send's buffer, kept for the next one.
    spare: Vec<u8>,
    /// A receive buffer waiting to be armed again.
    receive_buffer: Option<Vec<u8>>,
    socket: Option<Rc<TcpStream>>,
}

/// The transport: the ring and the per-slot state.
#[derive(Debug)]
pub struct UringTransport {
    pub ring: Ring,
    slots: Vec<Slot>,
    /// Receives are multishot into the provided buffer ring.
    multishot: bool,
}

/// What a completion of a connection's operation means for the loop.
#[derive(Debug)]
pub enum Event {
    /// `length` bytes arrived at the front of `buffer` (none: the peer ended its
    /// stream); hand the buffer back with [`UringTransport::receive_again`].
    Received {
        slot: usize,
        buffer: Vec<u8>,
        length: usize,
    },
    /// A send finished; the slot can take the next.
    Sent {
        slot: usize,
    },
    Connected {
        slot: usize,
    },
    Failed {
        slot: usize,
        error: io::Error,
    },
    /// The completion was for a connection that is gone, or a cancellation.
    Stale,
}

impl UringTransport {
    /// `single_shot`: never use multishot receives (see [`crate::server::FALLBACK_VARIABLE`]).
    pub fn new(mut ring: Ring, single_shot: bool) -> UringTransport {
        let multishot = !single_shot && ring.enable_buffers();
        UringTransport {
            ring,
            slots: Vec::new(),
            multishot,
        }
    }

    /// True when `generation` is the connection now in `slot`.
    pub fn is_current(&self, slot: usize, generation: u32) -> bool {
        self.slots
            .get(slot)
            .is_some_and(|state| state.generation == generation && state.socket.is_some())
    }

    /// The multishot receive of `slot` ended (its last completion came).
    pub fn receive_ended(&mut self, slot: usize) {
        if let Some(state) = self.slots.get_mut(slot) {
            state.receive = None;
        }
    }

    /// Stops a multishot receive (the read buffer is full); [`Self::arm_receive`]
    /// starts it again. A single-shot receive simply is not re-armed.
    pub fn pause_receive(&mut self, slot: usize) {
        if !self.multishot {
            return;
        }
        if let Some(user_data) = self.slots.get(slot).and_then(|state| state.receive) {
            self.ring.cancel(user_data);
        }
    }

    fn slot(&mut self, index: usize) -> &mut Slot {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Slot::default);
        }
        &mut self.slots[index]
    }

    /// Arms a receive on `index` unless one is in flight or the connection is gone.
    pub fn arm_receive(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.receive.is_some() || slot.connect.is_some() {
            return;
        }
        let Some(socket) = slot.socket.clone() else {
            return;
        };
        if self.multishot {
            let generation = slot.generation;
            match self.ring.start(Operation::ReceiveMulti {
                slot: index,
                generation,
                socket,
            }) {
                Ok(user_data) => self.slots[index].receive = Some(user_data),
                Err(_) => log::warn!("ring full: connection {index} is not read for now"),
            }
            return;
        }
        let buffer = slot
            .receive_buffer
            .take()
            .unwrap_or_else(|| vec![0u8; RECEIVE_BUFFER_BYTES]);
        let generation = slot.generation;
        match self.ring.start(Operation::Recv {
            slot: index,
            generation,
            socket,
            buffer,
        }) {
            Ok(user_data) => self.slots[index].receive = Some(user_data),
            Err(_) => log::warn!("ring full: connection {index} is not read for now"),
        }
    }

    /// Takes back a receive buffer, and arms the next receive when `arm`.
    pub fn receive_again(&mut self, index: usize, buffer: Vec<u8>, arm: bool) {
        if let Some(state) = self.slots.get_mut(index) {
            if state.socket.is_some() {
                state.receive_buffer = Some(buffer);
                if arm {
                    self.arm_receive(index);
                }
            }
        }
    }

    /// Turns a connection operation's completion into an event, re-arming what
    /// continues by itself (the rest of a short send).
    pub fn complete(&mut self, result: i32, operation: Operation) -> Event {
        match operation {
            Operation::Recv {
                slot,
                generation,
                buffer,
                ..
            } => {
                let Some(state) = self.current(slot, generation) else {
                    return Event::Stale;
                };
                state.receive = None;
                if result < 0 {
                    return failed(slot, result);
                }
                Event::Received {
                    slot,
                    buffer,
                    length: result as usize,
                }
            }
            Operation::Send {
                slot,
                generation,
                socket,
                buffer,
                sent,
            } => self.sent(result, slot, generation, socket, buffer, sent),
            Operation::Connect {
                slot, generation, ..
            } => {
                let multishot = self.multishot;
                let Some(state) = self.current(slot, generation) else {
                    return Event::Stale;
                };
                state.connect = None;
                if result < 0 {
                    return failed(slot, result);
                }
                if !multishot {
                    state.receive_buffer = Some(vec![0u8; PEER_RECEIVE_BUFFER_BYTES]);
                }
                self.arm_receive(slot);
                Event::Connected { slot }
            }
            _ => Event::Stale,
        }
    }

    /// A send of `buffer` from byte `sent` on completed with `result`: done, or the
    /// rest sent again (a short send), or failed.
    fn sent(
        &mut self,
        result: i32,
        slot: usize,
        generation: u32,
        socket: Rc<TcpStream>,
        buffer: Vec<u8>,
        sent: usize,
    ) -> Event {
        let Some(state) = self.current(slot, generation) else {
            return Event::Stale;
        };
        state.send = None;
        if result < 0 {
            return failed(slot, result);
        }
        let sent = sent + result as usize;
        if sent < buffer.len() && result > 0 {
            let rest = Operation::Send {
                slot,
                generation,
                socket,
                buffer,
                sent,
            };
            return match self.ring.restart(rest) {
                Ok(user_data) => {
                    if let Some(state) = self.slots.get_mut(slot) {
                        state.send = Some(user_data);
                    }
                    Event::Stale
                }
                Err(_) => Event::Failed {
                    slot,
                    error: io::Error::other("ring full"),
                },
            };
        }
        if sent < buffer.len() {
            return Event::Failed {
                slot,
                error: io::ErrorKind::WriteZero.into(),
            };
        }
        state.spare = buffer;
        Event::Sent { slot }
    }

    fn current(&mut self, slot: usize, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot)
            .filter(|state| state.generation == generation && state.socket.is_some())
    }
}

impl Transport for UringTransport {
    type Stream = UringStream;

    fn register(&mut self, stream: &mut UringStream, index: usize) -> io::Result<()> {
        stream.slot = Some(index);
        let socket = Rc::clone(&stream.socket);
        let connect_to = stream.connect_to.take();
        let state = self.slot(index);
        state.generation = state.generation.wrapping_add(1);
        state.receive = None;
        state.send = None;
        state.connect = None;
        state.socket = Some(Rc::clone(&socket));
        let generation = state.generation;
        match connect_to {
            Some(address) => {
                let operation = Operation::Connect {
                    slot: index,
                    generation,
                    socket,
                    address: Box::new(SocketAddress::new(address)),
                };
                let user_data = self
                    .ring
                    .start(operation)
                    .map_err(|_| io::Error::other("ring full"))?;
                self.slots[index].connect = Some(user_data);
            }
            None => self.arm_receive(index),
        }
        Ok(())
    }

    fn deregister(&mut self, stream: UringStream) {
        let Some(index) = stream.slot else {
            return;
        };
        let Some(state) = self.slots.get_mut(index) else {
            return;
        };
        state.generation = state.generation.wrapping_add(1);
        state.socket = None;
        let in_flight = [
            state.receive.take(),
            state.send.take(),
            state.connect.take(),
        ];
        for user_data in in_flight.into_iter().flatten() {
            self.ring.cancel(user_data);
        }
        // The socket closes when the last operation holding it completes.
    }

    fn connect(&mut self, address: SocketAddr) -> io::Result<UringStream> {
        let domain = match address {
            SocketAddr::V4(_) => rustix::net::AddressFamily::INET,
            SocketAddr::V6(_) => rustix::net::AddressFamily::INET6,
        };
        let owned = rustix::net::socket_with(
            domain,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let socket = TcpStream::from(owned);
        let _ = socket.set_nodelay(true);
        Ok(UringStream {
            socket: Rc::new(socket),
            connect_to: Some(address),
            slot: None,
        })
    }

    fn flush(&mut self, stream: &mut UringStream, out: &mut OutBuffer) -> io::Result<bool> {
        let Some(index) = stream.slot else {
            return Ok(false);
        };
        let state = self.slot(index);
        if state.send.is_some() || state.connect.is_some() {
            return Ok(false);
        }
        if out.is_empty() {
            return Ok(true);
        }
        let buffer = out.take_pending(std::mem::take(&mut state.spare));
        let generation = state.generation;
        let operation = Operation::Send {
            slot: index,
            generation,
            socket: Rc::clone(&stream.socket),
            buffer,
            sent: 0,
        };
        match self.ring.start(operation) {
            Ok(user_data) => {
                self.slots[index].send = Some(user_data);
                Ok(false)
            }
            Err(_) => Err(io::Error::other("ring full")),
        }
    }

    fn sending(&self, stream: &UringStream) -> bool {
        stream
            .slot
            .and_then(|index| self.slots.get(index))
            .is_some_and(|state| state.send.is_some())
    }
}

/// A connection operation's failure from its negative `result`.
fn failed(slot: usize, result: i32) -> Event {
    Event::Failed {
        slot,
        error: io::Error::from_raw_os_error(-result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A send larger than the socket takes at once comes back short and goes on from
    /// where it stopped, in order, while other operations take the slots it frees.
    #[test]
    fn short_sends_go_on_from_where_they_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut transport = UringTransport::new(Ring::new(64).unwrap(), true);
        let mut stream = UringStream::accepted(server);
        transport.register(&mut stream, 0).unwrap();
        let total = 8 << 20;
        let bytes: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut out = OutBuffer::default();
        out.push(&bytes, usize::MAX).unwrap();
        assert!(
            !transport.flush(&mut stream, &mut out).unwrap(),
            "in flight"
        );
        let reader = std::thread::spawn(move || {
            // Start late, so the socket buffers fill and the send comes back short.
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut received = Vec::with_capacity(total);
            let mut chunk = [0u8; 65536];
            while received.len() < total {
                let n = client.read(&mut chunk).unwrap();
                assert!(n > 0, "closed early");
                received.extend_from_slice(&chunk[..n]);
            }
            received
        });
        let mut completions = Vec::new();
        let mut short = 0;
        let mut sent = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !sent && std::time::Instant::now() < deadline {
            transport.ring.submit(true).unwrap();
            completions.clear();
            transport.ring.reap(&mut completions, 64);
            for done in &completions {
                let Some(operation) = transport.ring.finish(done.user_data) else {
                    continue;
                };
                match transport.complete(done.result, operation) {
                    Event::Sent { slot: 0 } => sent = true,
                    Event::Stale => short += 1,
                    other => panic!("{other:?}"),
                }
                // Take the slot the completion freed with something long-lived.
                let timespec = io_uring::types::Timespec::new().sec(60);
                transport
                    .ring
                    .start(Operation::Timeout {
                        timespec: Box::new(timespec),
                    })
                    .unwrap();
            }
        }
        assert!(sent, "the send finished");
        assert!(short > 0, "the send came back short at least once");
        assert!(
            transport.flush(&mut stream, &mut out).unwrap(),
            "nothing left"
        );
        assert_eq!(reader.join().unwrap(), bytes, "every byte, in order");
        transport.deregister(stream);
        transport.ring.shutdown();
    }
}
