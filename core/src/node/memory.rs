//! One in-memory stand-in for a node's stores, for everything that drives a node
//! without ringkv-storage: the core's tests, the fuzz driver and the tests crate. It is
//! the one place that turns a [`StorageJob`] into its completion, lists and scans
//! included, so no driver answers them its own way. Keys are kept as the store keeps
//! them, by (partition hash, key), so a scan is a range and pages like
//! [`scan_in_memory`] (the same rules: hash order, never splitting a hash). A job
//! either fails untouched or takes effect at once; what survives a crash is the
//! driver's business (the simulator keeps its own durable overlay).

#[cfg(doc)]
use super::scan_in_memory;
use super::{Answer, KeyRecord, Space, StorageFailure, StorageJob, list_in_memory};
use crate::placement::key_hash;
use std::collections::BTreeMap;
use std::ops::Bound;

/// One space: (key hash, key) -> record.
type Records = BTreeMap<(u64, Vec<u8>), Vec<u8>>;

/// A node's three stores in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryDisk {
    spaces: [Records; 3],
}

fn index(space: Space) -> usize {
    match space {
        Space::Data => 0,
        Space::Hints => 1,
        Space::Meta => 2,
    }
}

impl MemoryDisk {
    pub fn new() -> MemoryDisk {
        MemoryDisk::default()
    }

    /// The record stored under `key` in `space`.
    pub fn get(&self, space: Space, key: &[u8]) -> Option<&[u8]> {
        self.spaces[index(space)]
            .get(&(key_hash(key), key.to_vec()))
            .map(Vec::as_slice)
    }

    /// Stores `record` under `key` (None: removes the key).
    pub fn set(&mut self, space: Space, key: &[u8], record: Option<&[u8]>) {
        let map = &mut self.spaces[index(space)];
        let stored = (key_hash(key), key.to_vec());
        match record {
            Some(record) => map.insert(stored, record.to_vec()),
            None => map.remove(&stored),
        };
    }

    /// Every (key, record) of `space`, in hash order.
    pub fn records(&self, space: Space) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spaces[index(space)]
            .iter()
            .map(|((_, key), record)| (key.as_slice(), record.as_slice()))
    }

    /// A page of the data space's keys with `first <= hash <= last`, above `after`:
    /// at least `limit` (one at least) unless fewer remain, never splitting keys that
    /// share a hash, and the cursor of the next page.
    pub fn scan(
        &self,
        (first, last): (u64, u64),
        after: Option<u64>,
        limit: u32,
    ) -> (Vec<KeyRecord>, Option<u64>) {
        let start = match after {
            Some(after) if after >= last => return (Vec::new(), None),
            Some(after) => after.max(first.saturating_sub(1)) + 1,
            None => first,
        };
        let limit = (limit as usize).max(1);
        let mut items: Vec<KeyRecord> = Vec::new();
        let range = (Bound::Included((start, Vec::new())), Bound::Unbounded);
        let mut previous = None;
        for ((hash, key), record) in self.spaces[index(Space::Data)].range(range) {
            if *hash > last {
                break;
            }
            if items.len() >= limit && previous != Some(*hash) {
                return (items, previous);
            }
            previous = Some(*hash);
            items.push((key.clone(), record.clone()));
        }
        (items, None)
    }

    /// True when no space holds anything.
    pub fn is_empty(&self) -> bool {
        self.spaces.iter().all(BTreeMap::is_empty)
    }

    /// Performs `job` and returns its answer; with `failure`, the job fails and changes
    /// nothing.
    pub fn perform(&mut self, job: &StorageJob, failure: Option<StorageFailure>) -> Answer {
        let fail = |token| failure.map(|failure| (token, failure));
        match job {
            StorageJob::Read { token, space, key } => Answer::Read {
                token: *token,
                result: match fail(*token) {
                    Some((_, failure)) => Err(failure),
                    None => Ok(self.get(*space, key).map(<[u8]>::to_vec)),
                },
            },
            StorageJob::Write {
                token,
                space,
                key,
                record,
            } => {
                if failure.is_none() {
                    self.set(*space, key, Some(record));
                }
                Answer::Written {
                    token: *token,
                    result: failure.map_or(Ok(()), Err),
                }
            }
            StorageJob::Delete { token, space, key } => {
                if failure.is_none() {
                    self.set(*space, key, None);
                }
                Answer::Written {
                    token: *token,
                    result: failure.map_or(Ok(()), Err),
                }
            }
            StorageJob::List {
                token,
                space,
                after,
                limit,
            } => Answer::Listed {
                token: *token,
                result: match failure {
                    Some(failure) => Err(failure),
                    None => Ok(list_in_memory(
                        self.records(*space).map(|(key, _)| key),
                        after,
                        *limit,
                    )),
                },
            },
            StorageJob::Scan {
                token,
                first,
                last,
                after,
                limit,
            } => Answer::Scanned {
                token: *token,
                result: match failure {
                    Some(failure) => Err(failure),
                    None => Ok(self.scan((*first, *last), *after, *limit)),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_take_effect_or_fail_untouched_and_lists_page_in_key_order() {
        let mut disk = MemoryDisk::new();
        let write = |token, key: &[u8]| StorageJob::Write {
            token,
            space: Space::Hints,
            key: key.to_vec(),
            record: b"r".to_vec(),
        };
        for (token, key) in [b"c", b"a", b"b"].into_iter().enumerate() {
            assert_eq!(
                disk.perform(&write(token as u64, key), None),
                Answer::Written {
                    token: token as u64,
                    result: Ok(())
                }
            );
        }
        let failed = disk.perform(&write(9, b"d"), Some(StorageFailure::DiskFull));
        assert!(matches!(
            failed,
            Answer::Written {
                result: Err(StorageFailure::DiskFull),
                ..
            }
        ));
        assert_eq!(
            disk.get(Space::Hints, b"d"),
            None,
            "a failed write changes nothing"
        );
        let list = |after: &[u8]| StorageJob::List {
            token: 1,
            space: Space::Hints,
            after: after.to_vec(),
            limit: 2,
        };
        assert_eq!(
            disk.perform(&list(b""), None),
            Answer::Listed {
                token: 1,
                result: Ok((vec![b"a".to_vec(), b"b".to_vec()], false))
            }
        );
        assert_eq!(
            disk.perform(&list(b"b"), None),
            Answer::Listed {
                token: 1,
                result: Ok((vec![b"c".to_vec()], true))
            }
        );
        assert_eq!(disk.get(Space::Data, b"a"), None, "spaces are apart");
    }

    #[test]
    fn a_scan_pages_like_scan_in_memory() {
        let mut disk = MemoryDisk::new();
        for n in 0..200u32 {
            disk.set(
                Space::Data,
                format!("key-{n}").as_bytes(),
                Some(&n.to_le_bytes()),
            );
        }
        let ranges = [(0, u64::MAX), (u64::MAX / 4, u64::MAX / 2), (5, 5)];
        for range in ranges {
            for limit in [0, 1, 7, 64, 500] {
                let mut after = None;
                loop {
                    let expected = super::super::scan_in_memory(
                        disk.records(Space::Data),
                        range,
                        after,
                        limit,
                    );
                    let page = disk.scan(range, after, limit);
                    assert_eq!(page, expected, "{range:?} after {after:?} limit {limit}");
                    match page.1 {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
        }
    }
}
