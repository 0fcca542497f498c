//! Per-key serialisation of read-modify-writes.
//!
//! Every change a node makes to a stored key is read, merge, write: a coordinator mints
//! a dot against what it holds, a replica syncs incoming versions into what it holds, a
//! stand-in merges a hint. Two of those interleaving on one key (read A, read B, write
//! A, write B) would lose A, so each key has at most one in progress and the rest wait
//! in arrival order behind it. A key's lock is held from the read until the write is
//! durable, which is also what lets a replica acknowledge only durable writes.
//! A merge nobody waits for (a read repair, an anti-entropy push) folds into the merge
//! already waiting last on its key instead of queueing (`last_waiting_mut`; the
//! replica's `merge_locally`): repairs of a hot key then cost one storage round trip,
//! not one each ahead of the key's writes.
//!
//! Bounds: `locked_keys_max` keys at once and `waiting_operations_max` operations
//! waiting in total; past either, `enqueue` refuses and the caller answers overloaded.
//! Slots keep their key buffer and queue when released, so steady state does not
//! allocate.

use super::storage::Space;
use crate::placement::key_hash;
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct LockSlot<Op> {
    pub(crate) space: Space,
    pub(crate) key: Vec<u8>,
    hash: u64,
    /// The running operation first, then the waiting ones.
    pub(crate) queue: VecDeque<Op>,
}

/// The lock table is at a bound; the refused operation comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LocksFull<Op>(pub(crate) Op);

/// What became of an enqueued operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// The key was free: the operation runs now, under lock `0`.
    Started(u32),
    /// It waits behind the key's running operation.
    Waiting,
}

#[derive(Debug)]
pub(crate) struct KeyLocks<Op> {
    slots: Vec<LockSlot<Op>>,
    free: Vec<u32>,
    /// (hash, slot) of every held lock, sorted.
    index: Vec<(u64, u32)>,
    waiting: usize,
    waiting_max: usize,
    pub(crate) locked_peak: usize,
    pub(crate) waiting_peak: usize,
}

fn lock_hash(space: Space, key: &[u8]) -> u64 {
    match space {
        Space::Data => key_hash(key),
        Space::Hints => !key_hash(key),
        Space::Meta => key_hash(key).rotate_left(32),
    }
}

impl<Op> KeyLocks<Op> {
    pub(crate) fn new(locked_keys_max: u32, waiting_max: u32) -> KeyLocks<Op> {
        KeyLocks {
            slots: Vec::with_capacity(locked_keys_max as usize),
            free: Vec::new(),
            index: Vec::with_capacity(locked_keys_max as usize),
            waiting: 0,
            waiting_max: waiting_max as usize,
            locked_peak: 0,
            waiting_peak: 0,
        }
    }

    fn find(&self, space: Space, key: &[u8], hash: u64) -> Option<u32> {
        let start = self.index.partition_point(|&(h, _)| h < hash);
        self.index[start..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, slot)| slot)
            .find(|&slot| {
                let lock = &self.slots[slot as usize];
                lock.space == space && lock.key == key
            })
    }

    /// Queues `op` on `(space, key)`.
    pub(crate) fn enqueue(
        &mut self,
        space: Space,
        key: &[u8],
        op: Op,
    ) -> Result<Enqueued, LocksFull<Op>> {
        let hash = lock_hash(space, key);
        if let Some(slot) = self.find(space, key, hash) {
            if self.waiting >= self.waiting_max {
                return Err(LocksFull(op));
            }
            self.waiting += 1;
            self.waiting_peak = self.waiting_peak.max(self.waiting);
            self.slots[slot as usize].queue.push_back(op);
            return Ok(Enqueued::Waiting);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < self.slots.capacity() => {
                self.slots.push(LockSlot {
                    space,
                    key: Vec::new(),
                    hash,
                    queue: VecDeque::new(),
                });
                (self.slots.len() - 1) as u32
            }
            None => return Err(LocksFull(op)),
        };
        let lock = &mut self.slots[slot as usize];
        lock.space = space;
        lock.hash = hash;
        lock.key.clear();
        lock.key.extend_from_slice(key);
        lock.queue.push_back(op);
        let position = self.index.partition_point(|&entry| entry < (hash, slot));
        self.index.insert(position, (hash, slot));
        self.locked_peak = self.locked_peak.max(self.index.len());
        Ok(Enqueued::Started(slot))
    }

    pub(crate) fn get(&self, lock: u32) -> Option<&LockSlot<Op>> {
        self.slots
            .get(lock as usize)
            .filter(|slot| !slot.queue.is_empty())
    }

    /// The slot of a lock whose operation the caller is running, so it must be held:
    /// a missing one is a broken invariant, which debug builds (the tests and the
    /// simulator's `cargo test` seeds) stop at instead of answering on as if done.
    pub(crate) fn held(&self, lock: u32) -> Option<&LockSlot<Op>> {
        let slot = self.get(lock);
        debug_assert!(
            slot.is_some(),
            "lock {lock} is not held by its running operation"
        );
        slot
    }

    /// The key of `lock`'s slot, running or just finished (until the slot is reused).
    pub(crate) fn slot_key(&self, lock: u32) -> Option<(Space, &[u8])> {
        self.slots
            .get(lock as usize)
            .map(|slot| (slot.space, slot.key.as_slice()))
    }

    /// The running operation of `lock`.
    pub(crate) fn running_mut(&mut self, lock: u32) -> Option<&mut Op> {
        self.slots.get_mut(lock as usize)?.queue.front_mut()
    }

    /// The last operation waiting behind `key`'s running one, if any: a caller may
    /// fold a new operation into it instead of queueing one more.
    pub(crate) fn last_waiting_mut(&mut self, space: Space, key: &[u8]) -> Option<&mut Op> {
        let slot = self.find(space, key, lock_hash(space, key))?;
        let queue = &mut self.slots.get_mut(slot as usize)?.queue;
        if queue.len() < 2 {
            return None;
        }
        queue.back_mut()
    }

    /// Ends the running operation: returns it, and whether another now runs.
    pub(crate) fn finish(&mut self, lock: u32) -> Option<(Op, bool)> {
        let slot = self.slots.get_mut(lock as usize)?;
        let op = slot.queue.pop_front()?;
        if !slot.queue.is_empty() {
            self.waiting -= 1;
            return Some((op, true));
        }
        let entry = (slot.hash, lock);
        if let Ok(position) = self.index.binary_search(&entry) {
            self.index.remove(position);
        }
        self.free.push(lock);
        Some((op, false))
    }

    #[cfg(test)]
    pub(crate) fn locked(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_on_one_key_run_one_at_a_time_in_arrival_order() {
        let mut locks = KeyLocks::new(4, 4);
        let Ok(Enqueued::Started(a)) = locks.enqueue(Space::Data, b"k", 1) else {
            panic!("a free key starts at once");
        };
        assert_eq!(locks.enqueue(Space::Data, b"k", 2), Ok(Enqueued::Waiting));
        assert_eq!(locks.enqueue(Space::Data, b"k", 3), Ok(Enqueued::Waiting));
        assert!(
            matches!(
                locks.enqueue(Space::Hints, b"k", 9),
                Ok(Enqueued::Started(_))
            ),
            "another space, another lock"
        );
        assert!(matches!(
            locks.enqueue(Space::Data, b"other", 8),
            Ok(Enqueued::Started(_))
        ));
        assert_eq!(locks.finish(a), Some((1, true)));
        assert_eq!(locks.running_mut(a), Some(&mut 2));
        assert_eq!(locks.finish(a), Some((2, true)));
        assert_eq!(locks.finish(a), Some((3, false)));
        assert_eq!(locks.finish(a), None);
        assert_eq!(locks.locked(), 2);
    }

    #[test]
    fn the_lock_table_and_the_wait_queue_are_bounded() {
        let mut locks = KeyLocks::new(2, 1);
        locks.enqueue(Space::Data, b"a", 1).unwrap();
        locks.enqueue(Space::Data, b"b", 2).unwrap();
        assert_eq!(locks.enqueue(Space::Data, b"c", 3), Err(LocksFull(3)));
        assert_eq!(locks.enqueue(Space::Data, b"a", 4), Ok(Enqueued::Waiting));
        assert_eq!(locks.enqueue(Space::Data, b"a", 5), Err(LocksFull(5)));
        assert_eq!((locks.locked_peak, locks.waiting_peak), (2, 1));
    }

    #[test]
    fn a_released_slot_is_reused_for_another_key() {
        let mut locks = KeyLocks::new(1, 1);
        let Ok(Enqueued::Started(slot)) = locks.enqueue(Space::Data, b"first", 1) else {
            panic!("free");
        };
        locks.finish(slot);
        assert_eq!(
            locks.enqueue(Space::Data, b"second", 2),
            Ok(Enqueued::Started(slot))
        );
        assert_eq!(locks.get(slot).unwrap().key, b"second");
    }
}
