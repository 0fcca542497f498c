//! A bounded queue of per-request deadlines.
//!
//! The node keeps a handful of named timers (gossip, anti-entropy, hint retry) in fixed
//! fields, and every per-request timeout in one [`DeadlineQueue`]: a min-heap of
//! `(deadline, token)`. Cancelling is lazy: the node removes a finished request from its
//! slab and simply ignores the token when it expires, so no search is ever needed. The
//! heap is bounded; since each in-flight request holds at most a fixed number of
//! entries, its bound follows from the slab's, and reaching it is an error, not growth.
//! Pushing the same deadline twice keeps both; ties pop in insertion order, so runs are
//! deterministic.

use crate::time::Instant;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// The queue is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlinesFull;

/// A bounded min-heap of deadlines carrying a token each.
#[derive(Debug)]
pub struct DeadlineQueue<T: Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, T)>>,
    capacity: usize,
    /// Insertion counter: breaks ties between equal deadlines in insertion order.
    pushed: u64,
}

impl<T: Ord> DeadlineQueue<T> {
    /// A queue that holds at most `capacity` deadlines (allocated up front).
    pub fn with_capacity(capacity: usize) -> DeadlineQueue<T> {
        DeadlineQueue {
            heap: BinaryHeap::with_capacity(capacity),
            capacity,
            pushed: 0,
        }
    }

    /// Adds `token` to fire at `deadline`.
    pub fn push(&mut self, deadline: Instant, token: T) -> Result<(), DeadlinesFull> {
        if self.heap.len() >= self.capacity {
            return Err(DeadlinesFull);
        }
        self.pushed += 1;
        self.heap.push(Reverse((deadline, self.pushed, token)));
        Ok(())
    }

    /// The earliest deadline, for `poll_timeout`.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Removes and returns the earliest token whose deadline is at or before `now`.
    /// Call until `None` (with a bound on how many per wake-up, as every loop has).
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        match self.heap.peek() {
            Some(Reverse((deadline, _, _))) if *deadline <= now => {
                self.heap.pop().map(|Reverse((_, _, token))| token)
            }
            _ => None,
        }
    }

    /// Deadlines queued (live and lazily cancelled).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_in_time_order_and_ties_in_insertion_order() {
        let mut queue = DeadlineQueue::with_capacity(8);
        queue.push(Instant::from_millis(30), "late").unwrap();
        queue.push(Instant::from_millis(10), "first").unwrap();
        queue.push(Instant::from_millis(20), "tie one").unwrap();
        queue.push(Instant::from_millis(20), "tie two").unwrap();
        assert_eq!(queue.next_deadline(), Some(Instant::from_millis(10)));
        assert_eq!(
            queue.pop_expired(Instant::from_millis(5)),
            None,
            "nothing is due yet"
        );
        let fired: Vec<_> =
            std::iter::from_fn(|| queue.pop_expired(Instant::from_millis(25))).collect();
        assert_eq!(fired, ["first", "tie one", "tie two"]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop_expired(Instant::MAX), Some("late"));
        assert!(queue.is_empty());
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let mut queue = DeadlineQueue::with_capacity(2);
        queue.push(Instant::ZERO, 1).unwrap();
        queue.push(Instant::ZERO, 2).unwrap();
        assert_eq!(queue.push(Instant::ZERO, 3), Err(DeadlinesFull));
        assert_eq!(queue.pop_expired(Instant::ZERO), Some(1));
        assert!(queue.push(Instant::ZERO, 3).is_ok());
    }
}
