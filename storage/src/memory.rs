//! Anonymous memory for the engine's big random-access tables: the index
//! (`index::Table`) and the in-memory copies of the newest log segments
//! (`Segment::keep_in_memory`).
//!
//! Both are probed at random, a few bytes per key, over tens of MiB: with 4 KiB pages
//! nearly every probe also missed the TLB, and on a virtual machine a TLB miss walks
//! two sets of page tables. A closed-loop profile of a 3-node cluster put 11% of a
//! node's CPU in one read's index probe and record copy (BENCHMARKS.md, "Huge pages
//! for the index and the in-memory segments"). So the memory is mapped anonymously
//! and advised `MADV_HUGEPAGE`: the kernel backs it with 2 MiB pages where it can
//! (transparent huge pages in `madvise` or `always` mode) and with 4 KiB pages
//! otherwise; the advice failing (THP off, an old kernel) changes nothing else.
//!
//! A huge page is zeroed whole at its first touch, so memory first touched on the
//! write path (a segment copy filling as records are appended) would stall a put for
//! each 2 MiB: the segment copies are touched in full when the store opens
//! (`populate`), and the store reuses them from then on.

use memmap2::{Advice, MmapMut};

/// A transparent huge page on x86-64.
pub(crate) const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Bytes between two touches when populating: the smallest page size.
const TOUCH_STEP_BYTES: usize = 4096;

/// `size_bytes` of zeroed anonymous memory, advised to use huge pages; with
/// `populate`, every page is touched now rather than on the first write to it.
pub(crate) fn huge_page_memory(size_bytes: usize, populate: bool) -> std::io::Result<MmapMut> {
    let mut memory = MmapMut::map_anon(size_bytes)?;
    // Advice only: without huge pages the memory works the same, a little slower.
    if size_bytes >= HUGE_PAGE_BYTES {
        let _ = memory.advise(Advice::HugePage);
    }
    if populate {
        for offset in (0..size_bytes).step_by(TOUCH_STEP_BYTES) {
            memory[offset] = 0;
        }
    }
    Ok(memory)
}
