//! When a read that asked only R replicas asks the rest of its N.
//!
//! A read asks R of its N healthy targets (see `read`). If they have not all answered
//! by the slowest of the last [`SAMPLES`] answer times this node saw (about their
//! 99th percentile, as Cassandra's `speculative_retry = 99p`), it asks the others too
//! and takes the first R answers. The wait is never shorter than
//! `read_speculation_min_ms` (below it, loop wakeups and timer granularity would make
//! every read speculate) and never longer than half the replica timeout (by then the
//! silent ones are replaced anyway).

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
        let minimum = Duration::from_millis(minimum_ms);
        let maximum = Duration::from_millis(replica_timeout_ms / 2).max(minimum);
        Duration::from_micros(u64::from(self.slowest_us)).clamp(minimum, maximum)
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
