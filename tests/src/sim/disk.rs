//! The simulated disk of one node: what survives a crash and what does not.
//!
//! Writes land in an unsynced overlay; [`SimDisk::sync`] makes them durable; a crash
//! throws the overlay away, as a power cut loses what the page cache had not written.
//! Reads see the overlay first (the process reads its own writes). Writes fail at a
//! seeded rate, or always while the disk is set to failing, and completions take a
//! seeded latency, so the node under test meets slow and failing disks.

use ringkv_core::Rng;
use std::collections::BTreeMap;
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

/// A write the disk refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteFailed;

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub failed_writes: u64,
    pub syncs: u64,
    pub crashes: u64,
    pub lost_on_crash: u64,
}

/// One node's disk.
#[derive(Debug)]
pub struct SimDisk {
    config: DiskConfig,
    rng: Rng,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `None` marks a delete not yet synced.
    unsynced: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    failing: bool,
    stats: DiskStats,
}

impl SimDisk {
    /// A disk whose random choices all come from `seed`.
    pub fn new(config: DiskConfig, seed: u64) -> SimDisk {
        SimDisk {
            config,
            rng: Rng::new(seed),
            durable: BTreeMap::new(),
            unsynced: BTreeMap::new(),
            failing: false,
            stats: DiskStats::default(),
        }
    }

    /// Changes the fault knobs.
    pub fn set_config(&mut self, config: DiskConfig) {
        self.config = config;
    }

    /// While `failing`, every write fails (a dead or full disk).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// How long the next operation takes.
    pub fn latency(&mut self) -> Duration {
        let span = self
            .config
            .latency_max_ms
            .saturating_sub(self.config.latency_min_ms);
        Duration::from_millis(self.config.latency_min_ms + self.rng.below(span + 1))
    }

    /// Writes (or, with `None`, deletes) `key`, unsynced.
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), WriteFailed> {
        self.stats.writes += 1;
        if self.failing || self.rng.chance(self.config.failure) {
            self.stats.failed_writes += 1;
            return Err(WriteFailed);
        }
        self.unsynced
            .insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        self.stats.syncs += 1;
        for (key, value) in std::mem::take(&mut self.unsynced) {
            match value {
                Some(value) => self.durable.insert(key, value),
                None => self.durable.remove(&key),
            };
        }
    }

    /// What the node reads for `key`.
    pub fn read(&self, key: &[u8]) -> Option<&[u8]> {
        match self.unsynced.get(key) {
            Some(value) => value.as_deref(),
            None => self.durable.get(key).map(Vec::as_slice),
        }
    }

    /// Power loss: unsynced writes are gone.
    pub fn crash(&mut self) {
        self.stats.crashes += 1;
        self.stats.lost_on_crash += self.unsynced.len() as u64;
        self.unsynced.clear();
    }

    /// Every durable and unsynced key with its current value (for the checkers).
    pub fn contents(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let unsynced = self
            .unsynced
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)));
        let durable = self
            .durable
            .iter()
            .filter(|(k, _)| !self.unsynced.contains_key(*k))
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        unsynced.chain(durable)
    }

    /// Counters so far.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loses_exactly_the_unsynced_writes() {
        let mut disk = SimDisk::new(DiskConfig::reliable(), 1);
        disk.write(b"kept", Some(b"1")).unwrap();
        disk.write(b"deleted", Some(b"x")).unwrap();
        disk.sync();
        disk.write(b"deleted", None).unwrap();
        disk.write(b"lost", Some(b"2")).unwrap();
        disk.write(b"kept", Some(b"overwritten")).unwrap();
        assert_eq!(
            disk.read(b"lost"),
            Some(&b"2"[..]),
            "a process reads its own writes"
        );
        assert_eq!(disk.read(b"deleted"), None);
        disk.crash();
        assert_eq!(disk.read(b"kept"), Some(&b"1"[..]));
        assert_eq!(
            disk.read(b"deleted"),
            Some(&b"x"[..]),
            "the unsynced delete was lost"
        );
        assert_eq!(disk.read(b"lost"), None);
        assert_eq!(disk.stats().lost_on_crash, 3);
        assert_eq!(disk.contents().count(), 2);
    }

    #[test]
    fn a_failing_disk_refuses_every_write_until_it_recovers() {
        let mut disk = SimDisk::new(DiskConfig::reliable(), 1);
        disk.set_failing(true);
        assert_eq!(disk.write(b"k", Some(b"v")), Err(WriteFailed));
        assert_eq!(disk.read(b"k"), None);
        disk.set_failing(false);
        assert_eq!(disk.write(b"k", Some(b"v")), Ok(()));
        assert_eq!(disk.stats().failed_writes, 1);
    }

    #[test]
    fn failures_and_latencies_follow_the_seed() {
        let config = DiskConfig {
            latency_min_ms: 1,
            latency_max_ms: 20,
            failure: 0.3,
        };
        let run = |seed| {
            let mut disk = SimDisk::new(config, seed);
            (0..100)
                .map(|i: u32| {
                    (
                        disk.write(&i.to_le_bytes(), Some(b"v")).is_ok(),
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
