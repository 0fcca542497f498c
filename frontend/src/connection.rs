//! Per-connection buffers the event loops share: a byte buffer written out in order
//! with a bound, and a client's pipeline that puts replies back in request order.
//!
//! The core may answer a connection's pipelined requests out of order (a GET that
//! finds a fast quorum overtakes a SET waiting for W); RESP clients match replies to
//! requests by position, so [`Pipeline`] holds each reply until every earlier one was
//! written. It is bounded: past [`PIPELINE_MAX`] requests waiting, the loop stops
//! reading the connection until replies drain.

use std::collections::VecDeque;
use std::io::{self, Write};

/// Requests of one client connection waiting for their replies.
pub const PIPELINE_MAX: usize = 1024;

/// Bytes waiting to go out on one connection, written from the front.
#[derive(Debug, Default)]
pub struct OutBuffer {
    bytes: Vec<u8>,
    written: usize,
    /// Write calls that moved bytes, since the buffer was made.
    pub write_calls: u64,
}

/// The buffer would pass its bound; nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferFull;

impl OutBuffer {
    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The bytes not yet written.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    /// Appends `bytes` unless the pending total would exceed `max`.
    pub fn push(&mut self, bytes: &[u8], max: usize) -> Result<(), BufferFull> {
        if self.pending() + bytes.len() > max {
            return Err(BufferFull);
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes as much as the socket takes. `Ok(true)`: everything went out;
    /// `Ok(false)`: the socket is full, wait for it to be writable.
    pub fn flush(&mut self, out: &mut impl Write) -> io::Result<bool> {
        while self.written < self.bytes.len() {
            match out.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.write_calls += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.bytes.clear();
        self.written = 0;
        Ok(true)
    }

    /// A buffer whose pending bytes are `bytes` (a job handed to another thread,
    /// written there with [`OutBuffer::flush`]).
    pub fn from_bytes(bytes: Vec<u8>) -> OutBuffer {
        OutBuffer {
            bytes,
            written: 0,
            write_calls: 0,
        }
    }

    /// The bytes not yet written, as a vector (its capacity kept for reuse).
    pub fn into_pending(mut self) -> Vec<u8> {
        self.bytes.drain(..self.written);
        self.bytes
    }

    /// Puts `rest`, bytes taken with [`OutBuffer::take_pending`] and not all
    /// written, back in front of what came since.
    pub fn put_back(&mut self, mut rest: Vec<u8>) {
        rest.extend_from_slice(&self.bytes[self.written..]);
        self.bytes = rest;
        self.written = 0;
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.written = 0;
    }

    /// Hands every pending byte over in one buffer (a completion-based loop submits
    /// it and keeps it until the kernel is done with it) and keeps `spare`, emptied,
    /// for what comes next. Counts as one write call.
    pub fn take_pending(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        if self.written > 0 {
            spare.extend_from_slice(&self.bytes[self.written..]);
            self.bytes.clear();
            self.written = 0;
            std::mem::swap(&mut spare, &mut self.bytes);
        }
        self.write_calls += 1;
        std::mem::replace(&mut self.bytes, spare)
    }

    fn compact(&mut self) {
        if self.written > self.bytes.len() / 2 {
            self.bytes.drain(..self.written);
            self.written = 0;
        }
    }
}

/// One request waiting in a client's pipeline.
#[derive(Debug)]
struct Waiting<K> {
    /// Taken when its reply is filed.
    kind: Option<K>,
    reply: Option<Vec<u8>>,
    close: bool,
}

/// A client connection's requests in the order they arrived, with the replies that
/// came back early. Tags are consecutive from zero; `K` is what the caller keeps per
/// request (its command kind and start time, for latency).
#[derive(Debug)]
pub struct Pipeline<K> {
    /// The tag of `waiting[0]`.
    first_tag: u64,
    waiting: VecDeque<Waiting<K>>,
}

impl<K> Default for Pipeline<K> {
    fn default() -> Self {
        Pipeline {
            first_tag: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl<K> Pipeline<K> {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.waiting.len() >= PIPELINE_MAX
    }

    /// Starts a request; returns its tag.
    pub fn start(&mut self, kind: K) -> u64 {
        let tag = self.first_tag + self.waiting.len() as u64;
        self.waiting.push_back(Waiting {
            kind: Some(kind),
            reply: None,
            close: false,
        });
        tag
    }

    /// Files the reply of `tag` and writes, through `out`, every reply that is now next
    /// in order: the reply itself without a copy when it is next (the usual case), else
    /// a copy held until the replies before it arrive. Returns the request's kind and
    /// whether a reply that asked to close the connection went out (nothing after it
    /// does); `None` for a tag that is not waiting (a late or duplicate reply, ignored).
    pub fn finish(
        &mut self,
        tag: u64,
        reply: &[u8],
        close: bool,
        mut out: impl FnMut(&[u8]),
    ) -> Option<(K, bool)> {
        let index = usize::try_from(tag.checked_sub(self.first_tag)?).ok()?;
        let waiting = self.waiting.get_mut(index)?;
        if waiting.reply.is_some() {
            return None;
        }
        let kind = waiting.kind.take()?;
        if index > 0 {
            waiting.reply = Some(reply.to_vec());
            waiting.close = close;
            return Some((kind, false));
        }
        out(reply);
        self.waiting.pop_front();
        self.first_tag += 1;
        if close {
            self.waiting.clear();
            return Some((kind, true));
        }
        Some((kind, self.release(out)))
    }

    /// Moves the held replies that are next in order into `out`; returns true when one
    /// of them asked to close the connection (nothing after it is written).
    fn release(&mut self, mut out: impl FnMut(&[u8])) -> bool {
        while let Some(front) = self.waiting.front() {
            let Some(reply) = &front.reply else { break };
            out(reply);
            let close = front.close;
            self.waiting.pop_front();
            self.first_tag += 1;
            if close {
                self.waiting.clear();
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_the_pending_bytes_leaves_the_buffer_empty_and_counts_a_write() {
        let mut out = OutBuffer::default();
        out.push(b"hello", 100).unwrap();
        assert_eq!(out.take_pending(Vec::with_capacity(8)), b"hello");
        assert!(out.is_empty());
        assert_eq!(out.write_calls, 1);
        // After a partial write (two bytes went out) only what is left is taken.
        out.push(b"abcdef", 100).unwrap();
        out.written = 2;
        assert_eq!(out.take_pending(b"junk".to_vec()), b"cdef");
        assert!(out.is_empty());
        out.push(b"next", 100).unwrap();
        assert_eq!(out.bytes(), b"next", "the spare buffer comes back empty");
    }

    #[test]
    fn replies_go_out_in_request_order() {
        let mut pipeline: Pipeline<&str> = Pipeline::default();
        let first = pipeline.start("set");
        let second = pipeline.start("get");
        let mut out = Vec::new();
        let filed = pipeline.finish(second, b"+second\r\n", false, |r| out.extend_from_slice(r));
        assert_eq!(filed, Some(("get", false)));
        assert!(out.is_empty(), "the first reply is not in yet");
        pipeline.finish(first, b"+first\r\n", false, |r| out.extend_from_slice(r));
        assert_eq!(out, b"+first\r\n+second\r\n");
        assert!(pipeline.is_empty());
        assert_eq!(pipeline.finish(first, b"+again\r\n", false, |_| {}), None);
    }

    #[test]
    fn a_closing_reply_ends_the_pipeline() {
        let mut pipeline: Pipeline<()> = Pipeline::default();
        let quit = pipeline.start(());
        let after = pipeline.start(());
        let mut out = Vec::new();
        pipeline.finish(after, b"+late\r\n", false, |r| out.extend_from_slice(r));
        let filed = pipeline.finish(quit, b"+OK\r\n", true, |r| out.extend_from_slice(r));
        assert_eq!(filed, Some(((), true)));
        assert_eq!(out, b"+OK\r\n");
        assert!(pipeline.is_empty());
    }

    #[test]
    fn an_out_buffer_keeps_its_bound() {
        let mut buffer = OutBuffer::default();
        buffer.push(b"12345", 8).unwrap();
        assert_eq!(buffer.push(b"6789", 8), Err(BufferFull));
        let mut sink = Vec::new();
        assert!(buffer.flush(&mut sink).unwrap());
        assert_eq!(sink, b"12345");
        assert!(buffer.is_empty());
    }
}
