//! A provided buffer ring: memory the kernel picks receive buffers from, so a
//! multishot receive needs no buffer of its own per connection.
//!
//! [`BUFFERS`] buffers of [`BUFFER_BYTES`] each, registered as group
//! [`BUFFER_GROUP`]. A receive completion names the buffer it filled; the loop copies
//! the bytes into the connection's read buffer at once and gives the buffer back, so
//! the ring runs dry only when more completions than buffers arrive between two
//! reaps (the receive then ends with `ENOBUFS` and is armed again). The ring and the
//! buffers must outlive every receive that may use them: they are dropped with the
//! [`crate::ring::Ring`] that owns them, after its operations completed (or leaked
//! with them).
#![allow(unsafe_code)]

use io_uring::types::BufRingEntry;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group multishot receives select from.
pub const BUFFER_GROUP: u16 = 1;
/// Buffers in the ring (a power of two).
pub const BUFFERS: u16 = 256;
/// Bytes per buffer.
pub const BUFFER_BYTES: usize = 16 << 10;

/// The registered ring of buffer descriptors and the buffers.
pub struct BufferRing {
    /// `BUFFERS` descriptors, page aligned as the kernel requires (an anonymous map).
    entries: memmap2::MmapMut,
    memory: Box<[u8]>,
    tail: u16,
}

impl std::fmt::Debug for BufferRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferRing")
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl BufferRing {
    /// Registers a ring with `submitter`, every buffer in it.
    pub fn register(submitter: &io_uring::Submitter<'_>) -> io::Result<BufferRing> {
        let entries =
            memmap2::MmapMut::map_anon(usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>())?;
        let memory = vec![0u8; usize::from(BUFFERS) * BUFFER_BYTES].into_boxed_slice();
        let mut ring = BufferRing {
            entries,
            memory,
            tail: 0,
        };
        // SAFETY: `entries` is page aligned (a fresh anonymous map), holds `BUFFERS`
        // descriptors, and lives in `ring` as long as receives can use it (see the
        // module docs); `BUFFERS` is a power of two.
        unsafe {
            submitter.register_buf_ring_with_flags(
                ring.entries.as_ptr() as u64,
                BUFFERS,
                BUFFER_GROUP,
                0,
            )?;
        }
        for id in 0..BUFFERS {
            ring.push(id);
        }
        ring.publish();
        Ok(ring)
    }

    /// The `length` bytes the kernel put in buffer `id`.
    pub fn bytes(&self, id: u16, length: usize) -> &[u8] {
        let start = usize::from(id % BUFFERS) * BUFFER_BYTES;
        &self.memory[start..start + length.min(BUFFER_BYTES)]
    }

    /// Gives buffer `id` back to the kernel.
    pub fn give_back(&mut self, id: u16) {
        self.push(id % BUFFERS);
        self.publish();
    }

    fn push(&mut self, id: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        let address = self.memory.as_ptr() as u64 + (usize::from(id) * BUFFER_BYTES) as u64;
        // SAFETY: `index < BUFFERS` and the map holds `BUFFERS` descriptors laid out as
        // `BufRingEntry` (16 bytes, 8-aligned; the map is page aligned). The setters
        // leave the first descriptor's last field alone: it is the ring's tail.
        let entry = unsafe { &mut *self.entries.as_mut_ptr().cast::<BufRingEntry>().add(index) };
        entry.set_addr(address);
        entry.set_len(BUFFER_BYTES as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed descriptors visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field of the first descriptor, inside the map; the kernel
        // reads it concurrently, so it is stored atomically, after the descriptors.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr().cast::<BufRingEntry>()) };
        // SAFETY: `tail` points at a u16 in the map, 2-aligned; AtomicU16 has its layout.
        let tail = unsafe { &*tail.cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}
