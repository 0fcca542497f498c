//! Writer epochs: which id this node's dots carry, so that a dot is never minted twice.
//!
//! A node mints a key's next dot from its own stored versions of the key (see
//! `crate::version`). That is safe only while its copy remembers every dot it minted
//! for the key. Handoff deletes copies: a node that handed a partition to its new
//! replicas and later regains it (another node left) would mint from an empty or stale
//! copy and could reuse a dot its peers hold for another value, silently losing one of
//! the two writes. So dots are minted under a *writer epoch*:
//!
//! - The node's first epoch is 0, whose writer id is the node id itself. A later epoch
//!   is a random 62-bit number and its writer id a hash of (node id, epoch) with
//!   [`EPOCH_WRITER_BIT`] set (member ids never use that bit).
//! - Before handoff deletes any key of a partition, the partition is marked *dropped*
//!   in the current epoch, durably (one small record in the `Meta` space).
//! - A partition dropped in the current epoch never gets a dot of the current writer
//!   id again. A write minted for it asks for a new epoch (random, so it was never used
//!   before; partitions still being handed off stay marked in it) and, until that is
//!   durable, is minted under a one-shot writer id like a stand-in's (one extra clock
//!   entry on that key; never a refusal). The same happens before the record has been
//!   read at start.
//!
//! Epoch changes follow membership changes that give a partition back to a node that
//! handed it off, so they are rare; each adds one entry to the clocks of keys written
//! afterwards in partitions that had been dropped. A record that fails to decode is
//! replaced by a fresh epoch (always safe: a new epoch has minted nothing).
//!
//! The record also holds the *counter floor* reaping needs (`node::reap`): removing a
//! key's last record makes this node forget which counters its writer id used for the
//! key, while a replica that has not reaped yet still holds a clock naming them. Before
//! reaping a record, the node makes sure the durable floor is at least its writer's
//! counter in that record (raising it by a large step when not), and a dot minted for a
//! key whose record holds no live value of the writer gets a counter above the floor
//! (`VersionSet::update_above`), so it is never one an old clock or an old client
//! context already covers.
//!
//! Damage works like a drop of every partition: when the shell says the data store lost
//! records it had made durable (`Node::storage_damaged`, from the engine's corruption
//! count at open), or a read of a record fails its checksum, this node may have minted
//! dots it no longer remembers, so the current epoch mints nothing more: writes get
//! one-shot ids until a new epoch is durable.
//!
//! # Lanes: the token a write returns names only what its writer saw
//!
//! A write's reply token is its context plus its own dot (`VersionVector::with_dot`).
//! A version vector names a prefix of each writer's dots, so when the writer's entry
//! already holds a live sibling the context did not cover (a concurrent write this
//! node minted for another client), a token naming the new dot would name that
//! sibling too, and the next write with the token would erase it unseen. So each
//! writer id has [`WRITER_LANES`] lanes: lane 0 is the writer id itself, the others
//! ids derived from it (with [`EPOCH_WRITER_BIT`] set, so never a member's), minted
//! only by this node, under the same epoch rules. A write takes the first lane whose
//! live values its context all covers; in the usual case (no unseen concurrent
//! sibling) that is lane 0 and the clock gains nothing. When every lane holds an
//! unseen sibling the write takes a one-shot id, like a stand-in's. The counter floor
//! covers every lane.
//!
//! Deletes queued before an epoch change stay safe: a handoff deletes a key only if its
//! record is still the one its new replicas confirmed, and any dot minted since changed
//! that record.

use super::config::{EPOCH_WRITER_BIT, STAND_IN_WRITER_BIT};
use super::gossip::View;
use super::shared::Shared;
use super::tasks::Task;
use super::{Space, StorageFailure};
use crate::bytes::{PutBytes, Reader};
use crate::random::Rng;

use crate::version::{NodeId, VersionSet, VersionVector};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The `Meta` key of the writer epoch record.
pub(crate) const WRITER_KEY: &[u8] = b"writer-epoch";

/// The stored record: the epoch, the partitions dropped in it, and the counter floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EpochRecord {
    epoch: u64,
    /// At least every counter of this epoch's writer id in a record reaping removed.
    counter_floor: u64,
    dropped: Vec<u64>,
}

/// How far past a reaped record's counter the floor is raised, so that one raise
/// covers many reaps (a dot's counter is a u64: the headroom is never missed).
const FLOOR_STEP: u64 = 1 << 16;

impl EpochRecord {
    fn new(epoch: u64, partitions: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            counter_floor: 0,
            dropped: vec![0; partitions.div_ceil(64)],
        }
    }

    fn is_dropped(&self, partition: usize) -> bool {
        self.dropped
            .get(partition / 64)
            .is_some_and(|word| word & (1 << (partition % 64)) != 0)
    }

    fn set_dropped(&mut self, partition: usize, dropped: bool) {
        if let Some(word) = self.dropped.get_mut(partition / 64) {
            let bit = 1 << (partition % 64);
            if dropped {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.epoch);
        out.put_u64(self.counter_floor);
        out.put_u32(self.dropped.len() as u32);
        for word in &self.dropped {
            out.put_u64(*word);
        }
    }

    fn decode(bytes: &[u8], partitions: usize) -> Option<EpochRecord> {
        let mut reader = Reader::new(bytes);
        let epoch = reader.u64().ok()?;
        let counter_floor = reader.u64().ok()?;
        let words = reader.u32().ok()? as usize;
        if words != partitions.div_ceil(64) {
            return None;
        }
        let dropped = (0..words)
            .map(|_| reader.u64().ok())
            .collect::<Option<Vec<u64>>>()?;
        reader.finish("writer epoch record").ok()?;
        Some(EpochRecord {
            epoch,
            counter_floor,
            dropped,
        })
    }
}

/// The writer id of `node` in `epoch`.
pub(crate) fn epoch_writer(node: NodeId, epoch: u64) -> NodeId {
    if epoch == 0 {
        return node;
    }
    NodeId(EPOCH_WRITER_BIT | (xxh3_64_with_seed(&node.0.to_le_bytes(), epoch) >> 2))
}

/// Ids per writer that a write may be minted under (see the module docs).
pub(crate) const WRITER_LANES: u64 = 4;

/// Lane `lane` of `writer`: lane 0 is the writer itself.
pub(crate) fn writer_lane(writer: NodeId, lane: u64) -> NodeId {
    if lane == 0 {
        return writer;
    }
    const LANE_SEED: u64 = 0x6c61_6e65_0000_0000; // "lane"
    NodeId(EPOCH_WRITER_BIT | (xxh3_64_with_seed(&writer.0.to_le_bytes(), LANE_SEED | lane) >> 2))
}

/// The highest counter any lane of `writer` has in `versions`: what a reap of the
/// record makes this node forget, so what the counter floor must cover.
pub(crate) fn lanes_counter(versions: &VersionSet, writer: NodeId) -> u64 {
    (0..WRITER_LANES)
        .map(|lane| versions.counter_of(writer_lane(writer, lane)))
        .max()
        .unwrap_or(0)
}

/// The node's writer epoch state.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// What storage holds; `None` until it was read at start.
    durable: Option<EpochRecord>,
    /// The write in flight.
    storing: Option<EpochRecord>,
    /// The next record to write, when it differs from the others.
    wanted: Option<EpochRecord>,
    loading: bool,
    /// The epoch that must not mint again: the data store lost records minted in it.
    damaged_epoch: Option<u64>,
    /// Damage reported before the record was read at start.
    damage_pending: bool,
    pub(crate) one_shot_writes: u64,
    pub(crate) epochs_started: u64,
}

impl Writer {
    /// The newest record this node means to hold.
    fn intended(&self) -> Option<&EpochRecord> {
        self.wanted
            .as_ref()
            .or(self.storing.as_ref())
            .or(self.durable.as_ref())
    }

    /// The floor a mint by the epoch writer must stay above, for keys it holds no
    /// entry of (`VersionSet::update_above`).
    pub(crate) fn counter_floor(&self) -> u64 {
        self.intended().map_or(0, |record| record.counter_floor)
    }

    /// True when `partition`'s drop in the current epoch is durable.
    pub(crate) fn is_dropped_durably(&self, partition: usize) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|record| record.is_dropped(partition))
    }
}

/// The writer epochs' surface: the node hands each method the shared piece and, where
/// placement matters, its view.
impl Writer {
    /// Reads the epoch record (at start, and again after a failed read).
    pub(crate) fn load(&mut self, shared: &mut Shared) {
        if self.durable.is_some() || self.loading {
            return;
        }
        let started =
            shared
                .tasks
                .start(Task::LoadWriter, &mut shared.actions, |actions, token| {
                    actions.read(token, Space::Meta, WRITER_KEY)
                });
        self.loading = started.is_some();
    }

    /// The record was read (`None`: there is none yet).
    pub(crate) fn loaded(
        &mut self,
        shared: &mut Shared,
        view: &View,
        result: Result<Option<&[u8]>, StorageFailure>,
    ) {
        self.loading = false;
        let partitions = view.ring.partition_count();
        match result {
            Ok(None) => self.durable = Some(EpochRecord::new(0, partitions)),
            Ok(Some(bytes)) => match EpochRecord::decode(bytes, partitions) {
                Some(record) => self.durable = Some(record),
                None => {
                    log::error!("writer epoch record does not decode; starting a new epoch");
                    let epoch = self.fresh_epoch(&mut shared.rng);
                    self.wanted = Some(EpochRecord::new(epoch, partitions));
                    self.store(shared);
                }
            },
            Err(failure) => log::warn!("reading the writer epoch failed ({failure:?}); retrying"),
        }
        if self.durable.is_some() && std::mem::take(&mut self.damage_pending) {
            self.damaged(shared, view);
        }
    }

    fn fresh_epoch(&mut self, rng: &mut Rng) -> u64 {
        self.epochs_started += 1;
        (rng.next_u64() >> 2).max(1)
    }

    /// The writer id for a dot this node mints as a replica of `partition`.
    pub(crate) fn writer_for(
        &mut self,
        shared: &mut Shared,
        view: &View,
        partition: usize,
    ) -> NodeId {
        if shared.sabotage().ignore_writer_epoch {
            return shared.id;
        }
        match &self.durable {
            Some(record)
                if !record.is_dropped(partition) && self.damaged_epoch != Some(record.epoch) =>
            {
                epoch_writer(shared.id, record.epoch)
            }
            durable => {
                if durable.is_some() {
                    self.start_new_epoch(shared, view);
                }
                self.one_shot(&mut shared.rng)
            }
        }
    }

    /// A fresh one-shot writer id, like a stand-in's.
    fn one_shot(&mut self, rng: &mut Rng) -> NodeId {
        self.one_shot_writes += 1;
        one_shot_id(rng)
    }

    /// The id a write made with `context` is minted under against `current`, given
    /// `writer` from [`Writer::writer_for`]: its first lane holding no live value the
    /// context did not cover, else a one-shot id (see the module docs). A one-shot or
    /// stand-in id is its own only lane: used as it is unless `current` holds a live
    /// value of it the context did not cover (a stand-in reusing its id for a hint,
    /// see `node::hints`).
    pub(crate) fn lane_for(
        &mut self,
        rng: &mut Rng,
        writer: NodeId,
        context: &VersionVector,
        current: &VersionSet,
    ) -> NodeId {
        if is_one_shot(writer) {
            if current.has_unseen_values(writer, context) {
                return self.one_shot(rng);
            }
            return writer;
        }
        let lane = (0..WRITER_LANES)
            .map(|lane| writer_lane(writer, lane))
            .find(|&id| !current.has_unseen_values(id, context));
        lane.unwrap_or_else(|| self.one_shot(rng))
    }

    /// The data store lost records this node made durable: the current epoch mints no
    /// more dots (see the module docs).
    pub(crate) fn damaged(&mut self, shared: &mut Shared, view: &View) {
        let Some(durable) = &self.durable else {
            self.damage_pending = true;
            return;
        };
        if self.damaged_epoch == Some(durable.epoch) {
            return;
        }
        log::warn!(
            "local data lost records: writer epoch {} mints no more dots",
            durable.epoch
        );
        self.damaged_epoch = Some(durable.epoch);
        self.start_new_epoch(shared, view);
    }

    /// Asks for a new epoch unless one is already on its way. Partitions this node
    /// does not replicate stay marked (their handoff may still be deleting).
    fn start_new_epoch(&mut self, shared: &mut Shared, view: &View) {
        let (Some(durable), Some(intended)) = (&self.durable, self.intended()) else {
            return;
        };
        if intended.epoch != durable.epoch {
            return;
        }
        let mut record = intended.clone();
        record.epoch = self.fresh_epoch(&mut shared.rng);
        for partition in 0..view.ring.partition_count() {
            if view.replicates(shared.id, partition) {
                record.set_dropped(partition, false);
            }
        }
        self.wanted = Some(record);
        self.store(shared);
    }

    /// After a placement change: a new epoch when a partition dropped in this one came
    /// back, so writes to it need no one-shot ids for long.
    pub(crate) fn check_regained(&mut self, shared: &mut Shared, view: &View) {
        let regained = match &self.durable {
            Some(record) => (0..view.ring.partition_count())
                .any(|p| record.is_dropped(p) && view.replicates(shared.id, p)),
            None => false,
        };
        if regained {
            self.start_new_epoch(shared, view);
        }
    }

    /// Marks `partition` dropped; true once that is durable (handoff may then delete).
    pub(crate) fn mark_dropped(&mut self, shared: &mut Shared, partition: usize) -> bool {
        if self.is_dropped_durably(partition) {
            return true;
        }
        let Some(intended) = self.intended() else {
            return false;
        };
        if !intended.is_dropped(partition) {
            let mut record = intended.clone();
            record.set_dropped(partition, true);
            self.wanted = Some(record);
        }
        self.store(shared);
        false
    }

    /// True when reaping a record whose clock gives this node's current writer
    /// `counter` may go ahead: the durable floor covers it. Otherwise asks for a
    /// higher floor (the reap waits for a later pass).
    pub(crate) fn floor_covers(&mut self, shared: &mut Shared, counter: u64) -> bool {
        let Some(durable) = &self.durable else {
            return false;
        };
        if durable.counter_floor >= counter {
            return true;
        }
        let Some(intended) = self.intended() else {
            return false;
        };
        if intended.counter_floor < counter {
            let mut record = intended.clone();
            record.counter_floor = counter.saturating_add(FLOOR_STEP);
            self.wanted = Some(record);
        }
        self.store(shared);
        false
    }

    /// Under the key's lock, with the record about to be reaped: true when the durable
    /// counter floor covers this node's writer in it (else the floor is raised first).
    pub(crate) fn reap_allowed(&mut self, shared: &mut Shared, record: &[u8]) -> bool {
        if shared.sabotage().reap_without_floor {
            return true;
        }
        let Ok(versions) = VersionSet::decode(record, shared.config.version_bounds) else {
            return false;
        };
        let counter = lanes_counter(&versions, self.writer_id(shared.id));
        self.floor_covers(shared, counter)
    }

    /// Node `id`'s current epoch writer id (before the record was read: the node id,
    /// which is epoch 0's; nothing is reaped before then, see `floor_covers`).
    pub(crate) fn writer_id(&self, id: NodeId) -> NodeId {
        let epoch = self.durable.as_ref().map_or(0, |record| record.epoch);
        epoch_writer(id, epoch)
    }

    /// Writes the wanted record unless a write is in flight.
    pub(crate) fn store(&mut self, shared: &mut Shared) {
        if self.storing.is_some() {
            return;
        }
        let Some(record) = self.wanted.take() else {
            return;
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        let started =
            shared
                .tasks
                .start(Task::StoreWriter, &mut shared.actions, |actions, token| {
                    actions.write(token, Space::Meta, (WRITER_KEY, &bytes), true)
                });
        match started {
            Some(_) => self.storing = Some(record),
            None => self.wanted = Some(record),
        }
    }

    /// The record in flight was stored (or not); true when a new record became
    /// durable: handoff may go on, and the caller stores what is wanted next.
    pub(crate) fn stored(&mut self, result: Result<(), StorageFailure>) -> bool {
        let Some(record) = self.storing.take() else {
            debug_assert!(false, "a writer record stored that was not being stored");
            return false;
        };
        match result {
            Ok(()) => {
                self.durable = Some(record);
                true
            }
            Err(failure) => {
                log::warn!("storing the writer epoch failed ({failure:?}); retrying");
                if self.wanted.is_none() {
                    self.wanted = Some(record);
                }
                false // retried by the next handoff tick
            }
        }
    }
}

/// A fresh one-shot writer id (a stand-in's, a forward attempt's, a lane-less
/// write's): random, with [`STAND_IN_WRITER_BIT`] set, so never a member's id.
pub(crate) fn one_shot_id(rng: &mut Rng) -> NodeId {
    NodeId(STAND_IN_WRITER_BIT | (rng.next_u64() >> 1))
}

/// True for an id [`one_shot_id`] could have made.
pub(crate) fn is_one_shot(id: NodeId) -> bool {
    id.0 & STAND_IN_WRITER_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_refuses_a_wrong_size() {
        let mut record = EpochRecord::new(77, 1024);
        record.counter_floor = 1 << 40;
        record.set_dropped(0, true);
        record.set_dropped(1023, true);
        record.set_dropped(64, true);
        record.set_dropped(64, false);
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        let decoded = EpochRecord::decode(&bytes, 1024).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.is_dropped(0) && decoded.is_dropped(1023) && !decoded.is_dropped(64));
        assert_eq!(EpochRecord::decode(&bytes, 2048), None);
        assert_eq!(EpochRecord::decode(&bytes[..bytes.len() - 1], 1024), None);
    }

    #[test]
    fn epoch_writers_are_the_node_first_and_never_a_member_id_later() {
        let node = NodeId(5);
        assert_eq!(epoch_writer(node, 0), node);
        let later = epoch_writer(node, 99);
        assert_ne!(later, node);
        assert_ne!(later.0 & EPOCH_WRITER_BIT, 0);
        assert_eq!(later.0 & super::super::STAND_IN_WRITER_BIT, 0);
        assert_ne!(epoch_writer(node, 100), later);
    }
}
