//! When a read that asked only R replicas asks the rest of its N, and how long a
//! forwarded write waits on a silent replica before it is retried elsewhere.
//!
//! A read asks R of its N healthy targets (see `read`). If they have not all answered
//! by the slowest of the last [`SAMPLES`] answer times this node saw (about their
//! 99th percentile, as Cassandra's `speculative_retry = 99p`), it asks the others too
//! and takes the first R answers. The wait is never shorter than
//! `read_speculation_min_ms` (below it, loop wakeups and timer granularity would make
//! every read speculate) and never longer than half the replica timeout (by then the
//! silent ones are replaced anyway).
//!
//! Forwards keep their own [`AnswerTimes`] (from sending an attempt to its replica's
//! answer, late answers of the last [`RETRIED_MAX`] attempts already retried
//! included, see [`RetriedAttempts`]): a forward waits on a
//! replica that sends nothing for at least `forward_silence_ms`, and on one heard from
//! for at least `forward_retry_ms`, but never less than the slowest recent forward
//! took, up to the replica timeout. With fixed windows a network slower than they
//! allow (a storm of 60 ms hops) had every forward retried at each replica in turn,
//! and every retried attempt costs its key a clock entry until reaping: one hot key's
//! clock reached its bound in nine seconds (simulator seed 4357959284).

use crate::slab::SlotId;
use crate::time::Instant;
use crate::version::NodeId;
use core::time::Duration;

/// Answer times kept: the slowest of this many is about their 99th percentile.
pub(crate) const SAMPLES: usize = 128;

/// The last [`SAMPLES`] times from a read's start to a replica's answer.
#[derive(Debug)]
pub(crate) struct AnswerTimes {
    samples_us: [u32; SAMPLES],
    next: usize,
    /// The largest of `samples_us` (kept so that a read does not scan them).
    slowest_us: u32,
}

impl AnswerTimes {
    pub(crate) fn new() -> AnswerTimes {
        AnswerTimes {
            samples_us: [0; SAMPLES],
            next: 0,
            slowest_us: 0,
        }
    }

    /// A replica answered `took` after its read started.
    pub(crate) fn record(&mut self, took: Duration) {
        let sample_us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let overwritten = core::mem::replace(&mut self.samples_us[self.next], sample_us);
        self.next = (self.next + 1) % SAMPLES;
        if sample_us >= self.slowest_us {
            self.slowest_us = sample_us;
        } else if overwritten == self.slowest_us {
            self.slowest_us = self.samples_us.iter().copied().max().unwrap_or(0);
        }
    }

    /// How long a read waits for the replicas it asked before it asks the rest.
    pub(crate) fn speculate_after(&self, minimum_ms: u64, replica_timeout_ms: u64) -> Duration {
        self.slowest_within(minimum_ms, replica_timeout_ms / 2)
    }

    /// The slowest recent answer, at least `minimum_ms` and at most `maximum_ms` (or
    /// `minimum_ms` when that is larger).
    pub(crate) fn slowest_within(&self, minimum_ms: u64, maximum_ms: u64) -> Duration {
        let minimum = Duration::from_millis(minimum_ms);
        let maximum = Duration::from_millis(maximum_ms).max(minimum);
        Duration::from_micros(u64::from(self.slowest_us)).clamp(minimum, maximum)
    }
}

/// Retried forward attempts remembered for their late answers.
pub(crate) const RETRIED_MAX: usize = 32;

/// The last [`RETRIED_MAX`] forward attempts retried elsewhere while their replica
/// had yet to answer: when each was sent, so that a late answer (which may come after
/// the forward ended) still times its attempt. Without them a network slower than
/// the window is never learned: every slow attempt is retried before it answers.
#[derive(Debug, Default)]
pub(crate) struct RetriedAttempts {
    attempts: [Option<(SlotId, NodeId, Instant)>; RETRIED_MAX],
    next: usize,
}

impl RetriedAttempts {
    /// Forward `id`'s attempt sent to `to` at `sent_at` was retried elsewhere.
    pub(crate) fn remember(&mut self, id: SlotId, to: NodeId, sent_at: Instant) {
        self.attempts[self.next] = Some((id, to, sent_at));
        self.next = (self.next + 1) % RETRIED_MAX;
    }

    /// When forward `id`'s attempt at `from` was sent, if it was retried and is
    /// remembered; forgotten once taken (a duplicate answer times nothing).
    pub(crate) fn take(&mut self, id: SlotId, from: NodeId) -> Option<Instant> {
        let slot = self
            .attempts
            .iter_mut()
            .find(|slot| slot.is_some_and(|(held, to, _)| held == id && to == from))?;
        slot.take().map(|(_, _, sent_at)| sent_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_slowest_recent_answer_within_its_bounds() {
        let mut times = AnswerTimes::new();
        assert_eq!(times.speculate_after(1, 300), Duration::from_millis(1));
        times.record(Duration::from_micros(4_500));
        for _ in 0..SAMPLES - 1 {
            times.record(Duration::from_micros(200));
        }
        assert_eq!(times.speculate_after(1, 300), Duration::from_micros(4_500));
        // The slow answer leaves the window: the wait falls to the floor.
        times.record(Duration::from_micros(300));
        assert_eq!(times.speculate_after(1, 300), Duration::from_millis(1));
        times.record(Duration::from_secs(10));
        assert_eq!(times.speculate_after(1, 300), Duration::from_millis(150));
    }
}
