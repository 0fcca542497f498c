//! The simulated stores of one node: the in-memory kit every driver uses
//! ([`MemoryDisk`], so the simulator answers storage operations exactly as the core's
//! tests and the fuzz driver do) behind seeded faults.
//!
//! An operation takes effect when its completion is delivered, after a seeded latency;
//! a crash drops every operation still in flight (its completion belongs to the boot
//! that died), which is what a power cut does to a write not yet fsynced: the node
//! never heard it was durable. Writes and deletes fail at a seeded rate, or always while
//! the disk is set to failing (a dead or full disk); reads, lists and scans do not fail.
//!
//! Buffered writes (`StorageOp::Write` with `durable` false) are what a power cut
//! takes back even after they completed: each space keeps the writes it has not synced
//! yet, in order, with what each replaced. A durable write or delete of the space, a
//! durable scan (the data space) or [`SimDisk::sync`] (the shell's interval sync)
//! syncs the space, as ringkv-storage's log is durable as a prefix; a crash
//! ([`SimDisk::power_cut`]) undoes what is left, newest first.

use ringkv_core::Rng;
use ringkv_core::node::memory::MemoryDisk;
use ringkv_core::node::{Completion, Space, StorageFailure, StorageOp};
use std::time::Duration;

/// The disk's fault knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskConfig {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Probability that one write fails.
    pub failure: f64,
}

impl DiskConfig {
    /// No faults, 1 ms per operation.
    pub fn reliable() -> DiskConfig {
        DiskConfig {
            latency_min_ms: 1,
            latency_max_ms: 1,
            failure: 0.0,
        }
    }
}

/// A buffered write not synced yet: its key and the record it replaced.
type Unsynced = (Vec<u8>, Option<Vec<u8>>);

/// One node's three stores.
#[derive(Debug)]
pub struct SimDisk {
    config: DiskConfig,
    /// Each space draws its write failures from its own seed; the data space's also
    /// draws every operation's latency.
    rngs: [Rng; 3],
    stores: MemoryDisk,
    failing: bool,
    /// Per space, the buffered writes not synced yet: (key, the record it replaced).
    unsynced: [Vec<Unsynced>; 3],
    /// Buffered writes undone by power cuts so far.
    pub buffered_writes_lost: u64,
}

fn index(space: Space) -> usize {
    match space {
        Space::Data => 0,
        Space::Hints => 1,
        Space::Meta => 2,
    }
}

impl SimDisk {
    /// Empty stores whose random choices come from `seeds` (one per space).
    pub fn new(config: DiskConfig, seeds: [u64; 3]) -> SimDisk {
        SimDisk {
            config,
            rngs: seeds.map(Rng::new),
            stores: MemoryDisk::new(),
            failing: false,
            unsynced: Default::default(),
            buffered_writes_lost: 0,
        }
    }

    /// Changes the fault knobs.
    pub fn set_config(&mut self, config: DiskConfig) {
        self.config = config;
    }

    /// While `failing`, every write fails as on a full disk.
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// How long the next operation takes.
    pub fn latency(&mut self) -> Duration {
        let span = self
            .config
            .latency_max_ms
            .saturating_sub(self.config.latency_min_ms);
        Duration::from_millis(self.config.latency_min_ms + self.rngs[0].below(span + 1))
    }

    /// Performs `operation` now; a write or delete may fail (changing nothing): as
    /// full while the disk is failing, else now and then with an I/O error.
    pub fn perform(&mut self, operation: &StorageOp) -> Completion {
        let failure = if !operation.is_write() {
            None
        } else if self.failing {
            Some(StorageFailure::DiskFull)
        } else {
            self.rngs[index(operation.space())]
                .chance(self.config.failure)
                .then_some(StorageFailure::Io)
        };
        if failure.is_none() {
            match operation {
                StorageOp::Write {
                    space,
                    key,
                    durable: false,
                    ..
                } => {
                    let replaced = self.stores.get(*space, key).map(<[u8]>::to_vec);
                    self.unsynced[index(*space)].push((key.clone(), replaced));
                }
                StorageOp::Scan { durable: true, .. } => self.unsynced[0].clear(),
                _ if operation.is_durable_write() => {
                    self.unsynced[index(operation.space())].clear();
                }
                _ => {}
            }
        }
        self.stores.perform(operation, failure)
    }

    /// Syncs every space: what is written now survives a power cut.
    pub fn sync(&mut self) {
        for unsynced in &mut self.unsynced {
            unsynced.clear();
        }
    }

    /// A power cut: every buffered write not synced yet is undone, newest first.
    pub fn power_cut(&mut self) {
        for space in [Space::Data, Space::Hints, Space::Meta] {
            let undo = std::mem::take(&mut self.unsynced[index(space)]);
            self.buffered_writes_lost += undo.len() as u64;
            for (key, replaced) in undo.into_iter().rev() {
                let operation = match replaced {
                    Some(record) => StorageOp::Write {
                        token: 0,
                        space,
                        key,
                        record,
                        durable: true,
                    },
                    None => StorageOp::Delete {
                        token: 0,
                        space,
                        key,
                    },
                };
                self.stores.perform(&operation, None);
            }
        }
    }

    /// What `space` holds for `key`.
    pub fn get(&self, space: Space, key: &[u8]) -> Option<&[u8]> {
        self.stores.get(space, key)
    }

    /// Every (key, record) of `space`, for the checkers.
    pub fn records(&self, space: Space) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.stores.records(space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(token: u64, key: &[u8]) -> StorageOp {
        StorageOp::Write {
            token,
            space: Space::Data,
            key: key.to_vec(),
            record: b"v".to_vec(),
            durable: true,
        }
    }

    fn buffered(key: &[u8], record: &[u8]) -> StorageOp {
        StorageOp::Write {
            token: 0,
            space: Space::Data,
            key: key.to_vec(),
            record: record.to_vec(),
            durable: false,
        }
    }

    #[test]
    fn a_power_cut_undoes_the_buffered_writes_since_the_last_sync_and_nothing_else() {
        let mut disk = SimDisk::new(DiskConfig::reliable(), [1, 2, 3]);
        disk.perform(&buffered(b"a", b"a1"));
        disk.perform(&buffered(b"a", b"a2"));
        disk.perform(&buffered(b"b", b"b1"));
        assert_eq!(
            disk.get(Space::Data, b"a"),
            Some(&b"a2"[..]),
            "readable at once"
        );
        disk.power_cut();
        assert_eq!(disk.get(Space::Data, b"a"), None);
        assert_eq!(disk.get(Space::Data, b"b"), None);
        assert_eq!(disk.buffered_writes_lost, 3);

        disk.perform(&buffered(b"a", b"a1"));
        disk.sync();
        disk.perform(&buffered(b"a", b"a2"));
        disk.power_cut();
        assert_eq!(
            disk.get(Space::Data, b"a"),
            Some(&b"a1"[..]),
            "synced stays"
        );

        // A durable write syncs what its space buffered before it (a log's prefix).
        disk.perform(&buffered(b"b", b"b1"));
        disk.perform(&write(1, b"c"));
        disk.perform(&buffered(b"b", b"b2"));
        disk.power_cut();
        assert_eq!(disk.get(Space::Data, b"b"), Some(&b"b1"[..]));
        assert_eq!(disk.get(Space::Data, b"c"), Some(&b"v"[..]));

        // So does a durable scan.
        disk.perform(&buffered(b"d", b"d1"));
        disk.perform(&StorageOp::Scan {
            token: 2,
            first: 0,
            last: u64::MAX,
            after: None,
            limit: 10,
            durable: true,
        });
        disk.power_cut();
        assert_eq!(disk.get(Space::Data, b"d"), Some(&b"d1"[..]));
    }

    #[test]
    fn a_failing_disk_refuses_every_write_until_it_recovers() {
        let mut disk = SimDisk::new(DiskConfig::reliable(), [1, 2, 3]);
        disk.set_failing(true);
        let failed = disk.perform(&write(1, b"k"));
        assert_eq!(
            failed,
            Completion::Written {
                token: 1,
                result: Err(StorageFailure::DiskFull)
            }
        );
        assert_eq!(disk.get(Space::Data, b"k"), None);
        let read = StorageOp::Read {
            token: 2,
            space: Space::Data,
            key: b"k".to_vec(),
        };
        assert_eq!(
            disk.perform(&read),
            Completion::Read {
                token: 2,
                result: Ok(None)
            },
            "reads do not fail"
        );
        disk.set_failing(false);
        assert!(matches!(
            disk.perform(&write(3, b"k")),
            Completion::Written { result: Ok(()), .. }
        ));
        assert_eq!(disk.get(Space::Data, b"k"), Some(&b"v"[..]));
        assert_eq!(disk.get(Space::Hints, b"k"), None, "spaces are apart");
    }

    #[test]
    fn failures_and_latencies_follow_the_seed() {
        let config = DiskConfig {
            latency_min_ms: 1,
            latency_max_ms: 20,
            failure: 0.3,
        };
        let run = |seed| {
            let mut disk = SimDisk::new(config, [seed, seed + 1, seed + 2]);
            (0..100)
                .map(|i: u32| {
                    let done = disk.perform(&write(u64::from(i), &i.to_le_bytes()));
                    (
                        matches!(done, Completion::Written { result: Ok(()), .. }),
                        disk.latency(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let first = run(5);
        assert_eq!(first, run(5));
        let failures = first.iter().filter(|(ok, _)| !ok).count();
        assert!(
            (15..=45).contains(&failures),
            "{failures} failures at a 30% rate"
        );
        assert!(
            first
                .iter()
                .all(|(_, latency)| (1..=20).contains(&(latency.as_millis() as u64)))
        );
    }
}
