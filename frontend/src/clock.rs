//! The bridge from the OS monotonic clock to the core's [`Instant`].
//!
//! The core never reads a clock; a shell reads this one once per loop iteration and
//! passes the value in. Readings never go backwards, because `std::time::Instant` is
//! monotonic and the origin is fixed when the clock is made.

use core::time::Duration;
use ringkv_core::Instant;

/// A monotonic clock whose origin is the moment it was created.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock reading zero now.
    pub fn start() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current time on the core's scale.
    pub fn now(&self) -> Instant {
        self.instant_at(std::time::Instant::now())
    }

    /// Converts an OS instant to the core's scale (before the origin reads as zero).
    pub fn instant_at(&self, at: std::time::Instant) -> Instant {
        let since_origin = at.saturating_duration_since(self.origin);
        Instant::from_nanos(u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX))
    }

    /// How long a poll may sleep before `deadline` (from the core's `poll_timeout`).
    /// `None` in, `None` out: sleep until an event arrives.
    pub fn time_until(&self, deadline: Option<Instant>) -> Option<Duration> {
        deadline.map(|deadline| deadline.saturating_duration_since(self.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_never_go_backwards() {
        let clock = Clock::start();
        let mut previous = clock.now();
        for _ in 0..10_000 {
            let reading = clock.now();
            assert!(reading >= previous);
            previous = reading;
        }
    }

    #[test]
    fn os_instants_map_to_offsets_from_the_origin() {
        let clock = Clock::start();
        let later = clock.origin + Duration::from_millis(1_250);
        assert_eq!(clock.instant_at(later), Instant::from_millis(1_250));
        assert_eq!(clock.instant_at(clock.origin), Instant::ZERO);
    }

    #[test]
    fn a_deadline_in_the_past_means_do_not_sleep() {
        let clock = Clock::start();
        assert_eq!(clock.time_until(Some(Instant::ZERO)), Some(Duration::ZERO));
        assert_eq!(clock.time_until(None), None);
        let far = clock
            .time_until(Some(Instant::from_millis(3_600_000)))
            .unwrap();
        assert!(far > Duration::from_secs(3_500));
    }
}
