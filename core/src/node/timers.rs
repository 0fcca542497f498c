//! The node's periodic timers by name, in one table (the shape of quinn-proto's
//! `timer.rs`): each concern's next round is an entry here, so [`Node::poll_timeout`]
//! and the timer run read one place. Request deadlines and peer probes, of which there
//! are many at once, keep their own queues (`Deadlines`, `Peers`).
//!
//! [`Node::poll_timeout`]: super::Node::poll_timeout

use crate::time::Instant;

/// A periodic timer of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Deliver held hints (only while some are held).
    HintRound,
    /// Gossip with a random peer.
    Gossip,
    /// Start or continue an anti-entropy exchange.
    Entropy,
    /// Hand off a partition this node no longer replicates.
    Handoff,
    /// Take a step of tombstone reaping.
    Reap,
}

impl Timer {
    const COUNT: usize = 5;
    const ALL: [Timer; Timer::COUNT] = [
        Timer::HintRound,
        Timer::Gossip,
        Timer::Entropy,
        Timer::Handoff,
        Timer::Reap,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// When each [`Timer`] fires next.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable {
    at: [Instant; Timer::COUNT],
}

impl TimerTable {
    /// Every timer set by `first`.
    pub(crate) fn new(first: impl Fn(Timer) -> Instant) -> TimerTable {
        TimerTable {
            at: Timer::ALL.map(first),
        }
    }

    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = at;
    }

    pub(crate) fn get(&self, timer: Timer) -> Instant {
        self.at[timer.index()]
    }

    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        now >= self.get(timer)
    }

    /// The earliest timer among those `armed` says count.
    pub(crate) fn next(&self, armed: impl Fn(Timer) -> bool) -> Option<Instant> {
        Timer::ALL
            .into_iter()
            .filter(|&timer| armed(timer))
            .map(|timer| self.get(timer))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_timer_is_the_earliest_armed_one() {
        let mut table = TimerTable::new(|timer| Instant::from_millis(100 + timer as u64));
        assert_eq!(table.next(|_| true), Some(Instant::from_millis(100)));
        assert_eq!(
            table.next(|timer| timer != Timer::HintRound),
            Some(Instant::from_millis(101))
        );
        table.set(Timer::Reap, Instant::from_millis(5));
        assert_eq!(table.next(|_| true), Some(Instant::from_millis(5)));
        assert!(table.is_due(Timer::Reap, Instant::from_millis(5)));
        assert!(!table.is_due(Timer::Gossip, Instant::from_millis(100)));
    }
}
