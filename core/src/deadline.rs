//! Per-request deadlines: at most one per slot of a fixed table, in an indexed min-heap.
//!
//! The node keeps a handful of named timers (probes, hint delivery) in fixed fields, and
//! every per-request timeout here. Each in-flight request owns one slot index (its
//! [`Slab`](crate::slab::Slab) index) and at most one armed deadline: the earliest of
//! its attempt timeout, its overall timeout and its read-repair window. Re-arming moves
//! the entry, and ending a request removes it, so the heap never holds stale entries
//! and never outgrows the slab. (A lazily cancelled heap would keep one entry per
//! finished request until its timeout passed: at high request rates, far more than the
//! requests in flight.)
//!
//! Ties fire in the order they were armed, so runs are deterministic. Nothing here
//! allocates after construction.

use crate::time::Instant;

const NOT_QUEUED: u32 = u32::MAX;

/// Deadlines for slots `0..capacity`, earliest first.
#[derive(Debug)]
pub struct Deadlines {
    /// Slot indices in heap order.
    heap: Vec<u32>,
    /// Per slot: when, and the arming sequence that breaks ties.
    due: Vec<(Instant, u64)>,
    /// Per slot: where it sits in `heap`, or `NOT_QUEUED`.
    position: Vec<u32>,
    armed: u64,
}

impl Deadlines {
    /// Room for one deadline per slot of `capacity` slots.
    pub fn with_capacity(capacity: u32) -> Deadlines {
        let capacity = capacity as usize;
        Deadlines {
            heap: Vec::with_capacity(capacity),
            due: vec![(Instant::MAX, 0); capacity],
            position: vec![NOT_QUEUED; capacity],
            armed: 0,
        }
    }

    /// Arms (or moves) `slot`'s deadline to `at`. A slot outside the capacity is ignored:
    /// slots come from a slab of the same capacity.
    pub fn set(&mut self, slot: u32, at: Instant) {
        let index = slot as usize;
        if index >= self.due.len() {
            return;
        }
        self.armed += 1;
        self.due[index] = (at, self.armed);
        match self.position[index] {
            NOT_QUEUED => {
                self.heap.push(slot);
                let last = self.heap.len() - 1;
                self.position[index] = last as u32;
                self.sift_up(last);
            }
            position => {
                let position = position as usize;
                self.sift_up(position);
                self.sift_down(self.position[index] as usize);
            }
        }
    }

    /// Disarms `slot`'s deadline, if it has one.
    pub fn clear(&mut self, slot: u32) {
        let index = slot as usize;
        let Some(&position) = self.position.get(index) else {
            return;
        };
        if position == NOT_QUEUED {
            return;
        }
        self.remove_at(position as usize);
    }

    /// When the earliest deadline is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|&slot| self.due[slot as usize].0)
    }

    /// The slot of the earliest deadline at or before `now`, disarmed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<u32> {
        let &slot = self.heap.first()?;
        if self.due[slot as usize].0 > now {
            return None;
        }
        self.remove_at(0);
        Some(slot)
    }

    /// Deadlines armed.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when none is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn remove_at(&mut self, position: usize) {
        let removed = self.heap.swap_remove(position);
        self.position[removed as usize] = NOT_QUEUED;
        if position < self.heap.len() {
            let moved = self.heap[position];
            self.position[moved as usize] = position as u32;
            self.sift_up(position);
            self.sift_down(self.position[moved as usize] as usize);
        }
    }

    fn earlier(&self, a: usize, b: usize) -> bool {
        self.due[self.heap[a] as usize] < self.due[self.heap[b] as usize]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.position[self.heap[a] as usize] = a as u32;
        self.position[self.heap[b] as usize] = b as u32;
    }

    fn sift_up(&mut self, mut position: usize) {
        while position > 0 {
            let parent = (position - 1) / 2;
            if !self.earlier(position, parent) {
                break;
            }
            self.swap(position, parent);
            position = parent;
        }
    }

    fn sift_down(&mut self, mut position: usize) {
        loop {
            let (left, right) = (2 * position + 1, 2 * position + 2);
            let mut smallest = position;
            if left < self.heap.len() && self.earlier(left, smallest) {
                smallest = left;
            }
            if right < self.heap.len() && self.earlier(right, smallest) {
                smallest = right;
            }
            if smallest == position {
                return;
            }
            self.swap(position, smallest);
            position = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Rng;

    #[test]
    fn deadlines_fire_in_time_order_and_ties_in_arming_order() {
        let mut deadlines = Deadlines::with_capacity(8);
        deadlines.set(3, Instant::from_millis(30));
        deadlines.set(1, Instant::from_millis(10));
        deadlines.set(5, Instant::from_millis(20));
        deadlines.set(2, Instant::from_millis(20));
        assert_eq!(deadlines.next_deadline(), Some(Instant::from_millis(10)));
        assert_eq!(deadlines.pop_expired(Instant::from_millis(5)), None);
        let fired: Vec<_> =
            std::iter::from_fn(|| deadlines.pop_expired(Instant::from_millis(25))).collect();
        assert_eq!(fired, [1, 5, 2]);
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines.pop_expired(Instant::MAX), Some(3));
        assert!(deadlines.is_empty());
        assert_eq!(deadlines.next_deadline(), None);
    }

    #[test]
    fn rearming_moves_a_deadline_and_clearing_removes_it() {
        let mut deadlines = Deadlines::with_capacity(4);
        deadlines.set(0, Instant::from_millis(10));
        deadlines.set(1, Instant::from_millis(20));
        deadlines.set(0, Instant::from_millis(30));
        assert_eq!(deadlines.len(), 2, "a slot holds one deadline");
        deadlines.clear(1);
        deadlines.clear(1);
        deadlines.clear(99);
        deadlines.set(99, Instant::ZERO);
        assert_eq!(deadlines.pop_expired(Instant::from_millis(29)), None);
        assert_eq!(deadlines.pop_expired(Instant::from_millis(30)), Some(0));
        assert!(deadlines.is_empty());
    }

    #[test]
    fn random_arming_and_clearing_matches_a_sorted_model() {
        let seed = 0x5eed_dead_11e5;
        println!("seed {seed}");
        let mut rng = Rng::new(seed);
        let mut deadlines = Deadlines::with_capacity(64);
        let mut model: Vec<Option<(Instant, u64)>> = vec![None; 64];
        let mut armed = 0u64;
        let mut now = Instant::ZERO;
        for _ in 0..20_000 {
            let slot = rng.below(64) as u32;
            match rng.below(4) {
                0 | 1 => {
                    let at = Instant::from_millis(now.as_nanos() / 1_000_000 + rng.below(50));
                    armed += 1;
                    deadlines.set(slot, at);
                    model[slot as usize] = Some((at, armed));
                }
                2 => {
                    deadlines.clear(slot);
                    model[slot as usize] = None;
                }
                _ => {
                    now = Instant::from_millis(now.as_nanos() / 1_000_000 + rng.below(5));
                    while let Some(fired) = deadlines.pop_expired(now) {
                        let earliest = model
                            .iter()
                            .enumerate()
                            .filter_map(|(i, due)| due.map(|due| (due, i)))
                            .min()
                            .unwrap();
                        assert_eq!(fired as usize, earliest.1, "seed {seed}");
                        assert!(earliest.0.0 <= now);
                        model[fired as usize] = None;
                    }
                    let next = model.iter().flatten().min().map(|due| due.0);
                    assert_eq!(deadlines.next_deadline(), next, "seed {seed}");
                }
            }
            assert_eq!(deadlines.len(), model.iter().flatten().count());
        }
    }
}
