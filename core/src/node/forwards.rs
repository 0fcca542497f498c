//! Recently accepted forwarded writes, so a duplicated ForwardPut is not minted twice.
//!
//! Every other peer message is idempotent (merges, reads, replies matched against
//! pending quorums), but a forwarded write mints a new dot each time it is applied:
//! applied twice, one client write becomes two siblings, and a later write that
//! supersedes one copy leaves the other. A replica therefore remembers each forward it
//! accepted, by sender, request id, timestamp and key hash (so a forwarder that
//! restarted and reuses a request id is not mistaken for a duplicate), for twice the
//! request timeout, and drops repeats. The table is bounded; when full, the oldest entry
//! goes first.

use crate::placement::key_hash;
use crate::time::Instant;
use crate::version::NodeId;
use std::collections::{BTreeSet, VecDeque};

type ForwardId = (NodeId, u64, u64, u64);

#[derive(Debug)]
pub(crate) struct RecentForwards {
    seen: BTreeSet<ForwardId>,
    order: VecDeque<(Instant, ForwardId)>,
    max: usize,
}

impl RecentForwards {
    pub(crate) fn new(max: u32) -> RecentForwards {
        RecentForwards {
            seen: BTreeSet::new(),
            order: VecDeque::new(),
            max: max as usize,
        }
    }

    /// Records a forward arriving at `now`, to be remembered until `expires`: false if
    /// it is a repeat.
    pub(crate) fn first_time(
        &mut self,
        now: Instant,
        expires: Instant,
        from: NodeId,
        request: u64,
        timestamp_ms: u64,
        key: &[u8],
    ) -> bool {
        while let Some(&(expiry, id)) = self.order.front() {
            if expiry > now && self.order.len() < self.max {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
        let id = (from, request, timestamp_ms, key_hash(key));
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back((expires, id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_refused_and_forgotten_after_it() {
        let mut recent = RecentForwards::new(8);
        let (now, later) = (Instant::from_millis(0), Instant::from_millis(100));
        assert!(recent.first_time(now, later, NodeId(1), 7, 5, b"k"));
        assert!(!recent.first_time(now, later, NodeId(1), 7, 5, b"k"));
        assert!(
            recent.first_time(now, later, NodeId(2), 7, 5, b"k"),
            "another sender"
        );
        assert!(
            recent.first_time(now, later, NodeId(1), 7, 6, b"k"),
            "a restarted forwarder"
        );
        assert!(
            recent.first_time(later, later, NodeId(1), 7, 5, b"k"),
            "expired"
        );
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_oldest() {
        let mut recent = RecentForwards::new(2);
        let far = Instant::from_millis(1_000);
        for request in 0..3 {
            assert!(recent.first_time(Instant::ZERO, far, NodeId(1), request, 0, b"k"));
        }
        assert!(recent.seen.len() <= 2);
        assert!(
            recent.first_time(Instant::ZERO, far, NodeId(1), 0, 0, b"k"),
            "evicted"
        );
    }
}
