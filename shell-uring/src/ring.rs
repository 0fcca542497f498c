//! The ring and everything the kernel is working on.
//!
//! Every submission is an [`Operation`] kept in a bounded slab until its completion is
//! reaped; the entry's `user_data` is the operation's slot. An entry only ever points
//! into heap memory the operation owns (a `Vec`'s or a `Box`'s contents), so the slab
//! may move the operations themselves. A completion hands the operation back, and
//! with it its buffers: nothing is freed while the kernel may still write into it,
//! also when an operation is cancelled (its completion still comes) and at shutdown
//! ([`Ring::shutdown`] cancels everything and waits for the completions; what does not
//! complete in time is leaked rather than freed).
//!
//! When the submission queue is full, entries wait in a bounded backlog and go in at
//! the next submit; a submit that fails with `EBUSY` (the completion queue is full)
//! is retried after the caller reaped completions.
#![allow(unsafe_code)]

use crate::buffers::{BUFFER_GROUP, BufferRing};
use io_uring::{IoUring, opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

/// Operations in flight at most.
pub const OPERATIONS_MAX: usize = 1 << 16;
/// Entries waiting for room in the submission queue at most.
pub const BACKLOG_MAX: usize = 1 << 16;
/// How long [`Ring::shutdown`] waits for cancelled operations to complete.
const SHUTDOWN_WAIT_MS: u64 = 1_000;

/// A socket address the kernel reads from while a connect runs.
#[derive(Debug)]
pub enum SocketAddress {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SocketAddress {
    pub fn new(address: std::net::SocketAddr) -> SocketAddress {
        match address {
            std::net::SocketAddr::V4(v4) => SocketAddress::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            std::net::SocketAddr::V6(v6) => SocketAddress::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            }),
        }
    }

    fn raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            SocketAddress::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SocketAddress::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// Which listener an accept belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Client,
    Peer,
}

/// Something the kernel is working on, with everything its entry points into.
#[derive(Debug)]
pub enum Operation {
    /// `multishot`: one submission, a completion per connection.
    Accept {
        listener: Listener,
        socket: Rc<std::net::TcpListener>,
        multishot: bool,
    },
    Connect {
        slot: usize,
        generation: u32,
        socket: Rc<TcpStream>,
        address: Box<SocketAddress>,
    },
    Recv {
        slot: usize,
        generation: u32,
        socket: Rc<TcpStream>,
        buffer: Vec<u8>,
    },
    /// A multishot receive into the provided buffer ring: a completion per arrival.
    ReceiveMulti {
        slot: usize,
        generation: u32,
        socket: Rc<TcpStream>,
    },
    Send {
        slot: usize,
        generation: u32,
        socket: Rc<TcpStream>,
        buffer: Vec<u8>,
        sent: usize,
    },
    /// Reads the eventfd storage threads write to when completions wait.
    Wake {
        file: std::sync::Arc<std::fs::File>,
        buffer: Box<[u8; 8]>,
    },
    /// Reads signal numbers from signal-hook's pipe.
    Signal {
        pipe: Rc<std::os::unix::net::UnixStream>,
        buffer: Box<[u8; 16]>,
    },
    Timeout {
        timespec: Box<types::Timespec>,
    },
    /// Cancels the operation `target`.
    Cancel {
        target: u64,
    },
}

/// The slab is full, or the backlog is: the operation was not started.
#[derive(Debug)]
pub struct RingFull(pub Operation);

/// One io_uring instance and its operations.
pub struct Ring {
    ring: IoUring,
    operations: Vec<Option<Operation>>,
    free: Vec<usize>,
    in_flight: usize,
    /// Entries waiting for room, each with the length of the linked chain it heads
    /// (1 for a lone entry, 0 for the rest of a chain).
    backlog: VecDeque<(squeue::Entry, usize)>,
    /// Provided buffers for multishot receives, when the kernel takes them.
    buffers: Option<BufferRing>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

/// A reaped completion: the operation's slot, its result and flags.
#[derive(Clone, Copy, Debug)]
pub struct Completed {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completed {
    /// A multishot operation that stays armed after this completion.
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }
}

impl Ring {
    pub fn new(entries: u32) -> io::Result<Ring> {
        // One thread submits and reaps: completions' task work runs only when that
        // thread enters the kernel for events (DEFER_TASKRUN, 6.1+; TASKRUN_FLAG tells
        // a submit that work is waiting), with no interrupt. Older kernels get
        // cooperative task work (5.19+), then a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries)
            .or_else(|_| {
                IoUring::builder()
                    .setup_coop_taskrun()
                    .setup_single_issuer()
                    .build(entries)
            })
            .or_else(|_| IoUring::new(entries))?;
        Ok(Ring {
            ring,
            operations: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            backlog: VecDeque::new(),
            buffers: None,
        })
    }

    /// Registers the provided buffer ring; false when the kernel has none (before
    /// 5.19), and receives stay single-shot.
    pub fn enable_buffers(&mut self) -> bool {
        match BufferRing::register(&self.ring.submitter()) {
            Ok(buffers) => {
                self.buffers = Some(buffers);
                true
            }
            Err(error) => {
                log::info!("no provided buffer ring ({error}); receiving one read at a time");
                false
            }
        }
    }

    pub fn buffers(&mut self) -> Option<&mut BufferRing> {
        self.buffers.as_mut()
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Starts `operation`; returns its `user_data`.
    pub fn start(&mut self, mut operation: Operation) -> Result<u64, RingFull> {
        if self.in_flight >= OPERATIONS_MAX || self.backlog.len() >= BACKLOG_MAX {
            return Err(RingFull(operation));
        }
        let built = entry(&mut operation);
        let user_data = self.insert(operation);
        self.push(built.user_data(user_data));
        Ok(user_data)
    }

    fn insert(&mut self, operation: Operation) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.operations.push(None);
                self.operations.len() - 1
            }
        };
        self.operations[index] = Some(operation);
        self.in_flight += 1;
        index as u64
    }

    fn room(&mut self) -> usize {
        let queue = self.ring.submission();
        queue.capacity() - queue.len()
    }

    /// Resubmits an operation that came back unfinished (the rest of a short send)
    /// under a new `user_data`, which it returns (its old slot was freed when its
    /// completion was finished, and may already hold another operation).
    pub fn restart(&mut self, operation: Operation) -> Result<u64, RingFull> {
        self.start(operation)
    }

    /// Asks the kernel to cancel operation `user_data` (its completion still comes).
    pub fn cancel(&mut self, user_data: u64) {
        if self.start(Operation::Cancel { target: user_data }).is_err() {
            log::warn!("ring full: cannot cancel operation {user_data}");
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() {
            self.backlog.push_back((entry, 1));
            return;
        }
        // SAFETY: every pointer in `entry` goes into heap memory owned by an operation
        // in `self.operations`, which stays there until its completion is reaped.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            let _ = self.ring.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.backlog.push_back((entry, 1));
            }
        }
    }

    /// Moves backlogged entries into the submission queue while there is room,
    /// keeping a linked pair together.
    fn drain_backlog(&mut self) {
        while let Some(&(_, chain)) = self.backlog.front() {
            let take = chain.max(1);
            if self.room() < take {
                return;
            }
            for _ in 0..take {
                if let Some((entry, _)) = self.backlog.pop_front() {
                    // SAFETY: as in `push`; the room was checked above.
                    let _ = unsafe { self.ring.submission().push(&entry) };
                }
            }
        }
    }

    /// Submits what is queued and, when `wait`, sleeps until a completion arrives.
    ///
    /// No system call when it would do nothing: nothing queued, no completion to wait
    /// for (one is posted already: a send that finished inline at the last submit),
    /// no deferred task work and no overflowed completions to flush. At 2,000
    /// requests a second every send's completion cost the loop an iteration of two
    /// empty `io_uring_enter`s (68,757 calls in 10 s against ringkv-node's 23,499
    /// `epoll_wait`s, `benches/scripts/syscalls-per-request.sh`).
    pub fn submit(&mut self, wait: bool) -> io::Result<()> {
        self.drain_backlog();
        let want = usize::from(wait && self.in_flight > 0 && !self.has_completions());
        let idle = {
            let submission = self.ring.submission();
            submission.is_empty() && !submission.taskrun() && !submission.cq_overflow()
        };
        if want == 0 && idle {
            return Ok(());
        }
        match self.ring.submitter().submit_and_wait(want) {
            Ok(_) => Ok(()),
            // Interrupted, or the completion queue is full: reap, then come back.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// True when completions are posted and not reaped yet (sends that finished
    /// inline, input whose task work an enter ran).
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Reaps up to `max` completions into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completed>, max: usize) {
        for entry in self.ring.completion().take(max) {
            out.push(Completed {
                user_data: entry.user_data(),
                result: entry.result(),
                flags: entry.flags(),
            });
        }
    }

    /// The operation a final completion finished, handed back with its buffers.
    pub fn finish(&mut self, user_data: u64) -> Option<Operation> {
        let index = user_data as usize;
        let operation = self.operations.get_mut(index)?.take()?;
        self.free.push(index);
        self.in_flight -= 1;
        Some(operation)
    }

    /// The operation a multishot completion belongs to (still in flight).
    pub fn get(&self, user_data: u64) -> Option<&Operation> {
        self.operations.get(user_data as usize)?.as_ref()
    }

    /// Takes ownership of a socket an accept completion returned.
    pub fn accepted(result: i32) -> Option<TcpStream> {
        if result < 0 {
            return None;
        }
        // SAFETY: a successful accept completion's result is a new descriptor that
        // nothing else owns; the returned stream closes it.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(result) };
        Some(TcpStream::from(owned))
    }

    /// Cancels every operation and waits (at most [`SHUTDOWN_WAIT_MS`]) for their
    /// completions; buffers of operations still not complete are leaked, never freed
    /// under the kernel.
    pub fn shutdown(mut self) {
        let targets: Vec<u64> = self
            .operations
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.as_ref()
                    .is_some_and(|o| !matches!(o, Operation::Cancel { .. }))
            })
            .map(|(i, _)| i as u64)
            .collect();
        for target in targets {
            self.cancel(target);
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(SHUTDOWN_WAIT_MS);
        let mut done = Vec::new();
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            let timespec = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&timespec);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            done.clear();
            self.reap(&mut done, usize::MAX);
            for completed in &done {
                if !completed.more() {
                    self.finish(completed.user_data);
                }
            }
        }
        if self.in_flight > 0 {
            log::warn!(
                "{} ring operations did not complete at shutdown; their buffers are leaked",
                self.in_flight
            );
            std::mem::forget(std::mem::take(&mut self.operations));
            std::mem::forget(self.buffers.take());
        }
    }
}

impl Drop for Ring {
    /// Dropped without [`Ring::shutdown`] (an error path): the kernel may still write
    /// into the buffers of operations in flight, so they are leaked, not freed.
    fn drop(&mut self) {
        if self.in_flight > 0 {
            std::mem::forget(std::mem::take(&mut self.operations));
            std::mem::forget(self.buffers.take());
        }
    }
}

/// The submission entry for `operation`, pointing into its heap buffers.
fn entry(operation: &mut Operation) -> squeue::Entry {
    match operation {
        Operation::Accept {
            socket, multishot, ..
        } => {
            let fd = types::Fd(socket.as_raw_fd());
            if *multishot {
                opcode::AcceptMulti::new(fd).build()
            } else {
                opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).build()
            }
        }
        Operation::Connect {
            socket, address, ..
        } => {
            let (pointer, length) = address.raw();
            opcode::Connect::new(types::Fd(socket.as_raw_fd()), pointer, length).build()
        }
        Operation::Recv { socket, buffer, .. } => opcode::Recv::new(
            types::Fd(socket.as_raw_fd()),
            buffer.as_mut_ptr(),
            buffer.len() as u32,
        )
        .build(),
        Operation::ReceiveMulti { socket, .. } => {
            opcode::RecvMulti::new(types::Fd(socket.as_raw_fd()), BUFFER_GROUP).build()
        }
        Operation::Send {
            socket,
            buffer,
            sent,
            ..
        } => {
            let rest = &buffer[*sent..];
            opcode::Send::new(
                types::Fd(socket.as_raw_fd()),
                rest.as_ptr(),
                rest.len() as u32,
            )
            .build()
        }
        Operation::Wake { file, buffer } => opcode::Read::new(
            types::Fd(file.as_raw_fd()),
            buffer.as_mut_ptr(),
            buffer.len() as u32,
        )
        .build(),
        Operation::Signal { pipe, buffer } => opcode::Read::new(
            types::Fd(pipe.as_raw_fd()),
            buffer.as_mut_ptr(),
            buffer.len() as u32,
        )
        .build(),
        Operation::Timeout { timespec } => {
            opcode::Timeout::new(&**timespec as *const types::Timespec).build()
        }
        Operation::Cancel { target } => opcode::AsyncCancel::new(*target).build(),
    }
}
