//! A fixed-capacity table of in-flight entries (requests, transfers) addressed by
//! generation-tagged ids.
//!
//! Capacity is set once, from configuration; a full slab refuses an insert
//! ([`SlabFull`]) instead of growing, and the node turns that into an "overloaded" reply.
//! Ids carry the slot's generation, so a reply that arrives after its request finished
//! and its slot was reused is recognised as stale and finds nothing, rather than
//! completing the wrong request. After construction nothing here allocates.

/// Generations wrap below 2^29, so an id leaves the top three bits of its `u64` clear
/// (the node's request ids use them to tell owners apart: `node::request_id`).
const GENERATION_MASK: u32 = (1 << 29) - 1;

/// Identifies one occupant of one slot. Fits a `u64` for the wire (`request` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    index: u32,
    generation: u32,
}

impl SlotId {
    /// The id as one number (for peer messages).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The slot's index in its slab (for per-slot side tables such as deadlines).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The id from a number a peer sent back (any value is safe: a wrong one finds
    /// nothing).
    pub fn from_u64(value: u64) -> SlotId {
        SlotId {
            index: value as u32,
            generation: (value >> 32) as u32,
        }
    }
}

/// The slab is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabFull;

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A bounded table of `T` addressed by [`SlotId`].
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Indices of empty slots, used last-in first-out.
    free: Vec<u32>,
}

impl<T> Slab<T> {
    /// A slab of exactly `capacity` slots (at most `u32::MAX`).
    pub fn with_capacity(capacity: u32) -> Slab<T> {
        Slab {
            slots: (0..capacity)
                .map(|_| Slot {
                    generation: 0,
                    value: None,
                })
                .collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    /// Stores `value` and returns its id, or refuses when full.
    pub fn insert(&mut self, value: T) -> Result<SlotId, SlabFull> {
        let index = self.free.pop().ok_or(SlabFull)?;
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        Ok(SlotId {
            index,
            generation: slot.generation,
        })
    }

    fn slot(&self, id: SlotId) -> Option<&Slot<T>> {
        self.slots
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
    }

    /// The entry with this id, if it is still there.
    pub fn get(&self, id: SlotId) -> Option<&T> {
        self.slot(id).and_then(|slot| slot.value.as_ref())
    }

    /// The entry with this id, mutably.
    pub fn get_mut(&mut self, id: SlotId) -> Option<&mut T> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.value.as_mut())
    }

    /// Takes the entry out; its slot's next occupant gets a new generation, so this id
    /// never matches again.
    pub fn remove(&mut self, id: SlotId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)?;
        let value = slot.value.take()?;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.free.push(id.index);
        Some(value)
    }

    /// The id of the entry now in slot `index`, if the slot is occupied.
    pub fn id_at(&self, index: u32) -> Option<SlotId> {
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref().map(|_| SlotId {
            index,
            generation: slot.generation,
        })
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Every stored entry with its id.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &T)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            slot.value.as_ref().map(|value| {
                (
                    SlotId {
                        index: index as u32,
                        generation: slot.generation,
                    },
                    value,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_slab_refuses_instead_of_growing() {
        let mut slab = Slab::with_capacity(2);
        let a = slab.insert("a").unwrap();
        let _b = slab.insert("b").unwrap();
        assert_eq!(slab.insert("c"), Err(SlabFull));
        assert_eq!(slab.capacity(), 2);
        assert_eq!(slab.remove(a), Some("a"));
        assert!(slab.insert("c").is_ok(), "a freed slot is reused");
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn a_stale_id_never_reaches_the_slots_next_occupant() {
        let mut slab = Slab::with_capacity(1);
        let first = slab.insert(1).unwrap();
        assert_eq!(slab.remove(first), Some(1));
        let second = slab.insert(2).unwrap();
        assert_ne!(first, second);
        assert_eq!(slab.get(first), None, "a late reply to the first request");
        assert_eq!(slab.remove(first), None);
        assert_eq!(slab.get(second), Some(&2));
        *slab.get_mut(second).unwrap() = 3;
        assert_eq!(slab.iter().collect::<Vec<_>>(), [(second, &3)]);
    }

    #[test]
    fn ids_survive_the_wire_and_garbage_ids_find_nothing() {
        let mut slab = Slab::with_capacity(4);
        let id = slab.insert('x').unwrap();
        assert_eq!(SlotId::from_u64(id.to_u64()), id);
        for garbage in [0u64, u64::MAX, 1 << 40, 17] {
            let found = slab.get(SlotId::from_u64(garbage));
            assert!(found.is_none() || SlotId::from_u64(garbage) == id);
        }
    }
}
