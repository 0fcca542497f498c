//! One in-memory stand-in for a node's stores, for everything that drives a node
//! without ringkv-storage: the core's tests, the fuzz driver, the simulator and the
//! tests crate. It is the one place that turns a [`StorageOp`] into its
//! [`Completion`], lists and scans included, so no driver answers them its own way.
//! Keys are kept as the store keeps them, by (partition hash, key), so a scan is a
//! range and pages as ringkv-storage's `Store::scan` does (hash order, never splitting
//! a hash). An operation either fails untouched or takes effect at once; what survives
//! a crash is the driver's business (the simulator drops operations still in flight).

use super::{
    Completion, KeyRecord, ListedKey, Listing, ScanPage, Space, StorageFailure, StorageOp,
};
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
    pub fn scan(&self, (first, last): (u64, u64), after: Option<u64>, limit: u32) -> ScanPage {
        let start = match after {
            Some(after) if after >= last => return ScanPage::default(),
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
                return ScanPage {
                    items,
                    next: previous,
                };
            }
            previous = Some(*hash);
            items.push((key.clone(), record.clone()));
        }
        ScanPage { items, next: None }
    }

    /// Up to `limit` (one at least, as the store lists) keys of `space` after `after` (from the first when empty), in byte
    /// order, and whether they were the last.
    pub fn list(&self, space: Space, after: &[u8], limit: u32) -> Listing {
        let mut keys: Vec<ListedKey> = self
            .records(space)
            .filter(|(key, _)| after.is_empty() || *key > after)
            .map(|(key, record)| ListedKey::new(key.to_vec(), record.len()))
            .collect();
        keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let limit = (limit as usize).max(1);
        let complete = keys.len() <= limit;
        keys.truncate(limit);
        Listing { keys, complete }
    }

    /// True when no space holds anything.
    pub fn is_empty(&self) -> bool {
        self.spaces.iter().all(BTreeMap::is_empty)
    }

    /// Performs `operation` and returns its completion; with `failure`, the operation
    /// fails and changes nothing.
    pub fn perform<Bytes: AsRef<[u8]>>(
        &mut self,
        operation: &StorageOp<Bytes>,
        failure: Option<StorageFailure>,
    ) -> Completion {
        if let Some(failure) = failure {
            return Completion::failed(operation, failure);
        }
        let token = operation.token();
        match operation {
            StorageOp::Read { space, key, .. } => Completion::Read {
                token,
                result: Ok(self.get(*space, key.as_ref()).map(<[u8]>::to_vec)),
            },
            StorageOp::Write {
                space, key, record, ..
            } => {
                self.set(*space, key.as_ref(), Some(record.as_ref()));
                Completion::Written {
                    token,
                    result: Ok(()),
                }
            }
            StorageOp::Delete { space, key, .. } => {
                self.set(*space, key.as_ref(), None);
                Completion::Written {
                    token,
                    result: Ok(()),
                }
            }
            StorageOp::List {
                space,
                after,
                limit,
                ..
            } => Completion::Listed {
                token,
                result: Ok(self.list(*space, after.as_ref(), *limit)),
            },
            StorageOp::Scan {
                first,
                last,
                after,
                limit,
                ..
            } => Completion::Scanned {
                token,
                result: Ok(self.scan((*first, *last), *after, *limit)),
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
        let write = |token, key: &[u8]| StorageOp::Write {
            token,
            space: Space::Hints,
            key: key.to_vec(),
            record: b"r".to_vec(),
            durable: true,
        };
        // One byte of key and one of record each.
        let listed = |key: &[u8]| ListedKey {
            key: key.to_vec(),
            stored_bytes: 2,
        };
        for (token, key) in [b"c", b"a", b"b"].into_iter().enumerate() {
            assert_eq!(
                disk.perform(&write(token as u64, key), None),
                Completion::Written {
                    token: token as u64,
                    result: Ok(())
                }
            );
        }
        let failed = disk.perform(&write(9, b"d"), Some(StorageFailure::DiskFull));
        assert!(matches!(
            failed,
            Completion::Written {
                result: Err(StorageFailure::DiskFull),
                ..
            }
        ));
        assert_eq!(
            disk.get(Space::Hints, b"d"),
            None,
            "a failed write changes nothing"
        );
        let list = |after: &[u8]| StorageOp::List {
            token: 1,
            space: Space::Hints,
            after: after.to_vec(),
            limit: 2,
        };
        assert_eq!(
            disk.perform(&list(b""), None),
            Completion::Listed {
                token: 1,
                result: Ok(Listing {
                    keys: vec![listed(b"a"), listed(b"b")],
                    complete: false
                })
            }
        );
        assert_eq!(
            disk.perform(&list(b"b"), None),
            Completion::Listed {
                token: 1,
                result: Ok(Listing {
                    keys: vec![listed(b"c")],
                    complete: true
                })
            }
        );
        assert_eq!(disk.get(Space::Data, b"a"), None, "spaces are apart");
    }

    #[test]
    fn scans_page_through_their_range_in_hash_order_without_splitting_a_hash() {
        let mut disk = MemoryDisk::new();
        for n in 0..200u32 {
            disk.set(
                Space::Data,
                format!("key-{n}").as_bytes(),
                Some(&n.to_le_bytes()),
            );
        }
        // Two keys sharing a hash cannot be made up here, so pages are checked against
        // the brute-force answer: every key in range, once, in (hash, key) order.
        let ranges = [(0, u64::MAX), (u64::MAX / 4, u64::MAX / 2), (5, 5)];
        for (first, last) in ranges {
            let mut expected: Vec<(u64, Vec<u8>)> = disk
                .records(Space::Data)
                .map(|(key, _)| (key_hash(key), key.to_vec()))
                .filter(|(hash, _)| (first..=last).contains(hash))
                .collect();
            expected.sort();
            for limit in [0, 1, 7, 64, 500] {
                let mut after = None;
                let mut seen = Vec::new();
                loop {
                    let page = disk.scan((first, last), after, limit);
                    if page.next.is_some() {
                        assert_eq!(page.items.len(), (limit as usize).max(1), "a full page");
                    }
                    seen.extend(
                        page.items
                            .iter()
                            .map(|(key, _)| (key_hash(key), key.clone())),
                    );
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                assert_eq!(seen, expected, "{first}..={last} limit {limit}");
            }
        }
    }
}
