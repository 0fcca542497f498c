//! The core's notion of time: a monotonic nanosecond count with no `now()`.
//!
//! Shells convert from the OS monotonic clock (see `ringkv_frontend::clock`), the simulator
//! invents it. The origin is arbitrary and private to one process: an `Instant` is never
//! put on the wire or on disk. Arithmetic saturates, so a bad duration from
//! configuration can delay a timer to "never" but can never panic the node.

use core::fmt;
use core::ops::{Add, AddAssign};
use core::time::Duration;

/// A point on a monotonic clock, in nanoseconds since an arbitrary per-process origin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant { nanos: 0 };
    /// The far future: a timer set here never fires.
    pub const MAX: Instant = Instant { nanos: u64::MAX };

    /// Builds an instant `nanos` after the origin.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant { nanos }
    }

    /// Builds an instant `millis` after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Time elapsed from `earlier` to `self`, or zero when `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// `self + duration`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, duration: Duration) -> Instant {
        let add_nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_add(add_nanos),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, duration: Duration) -> Instant {
        self.saturating_add(duration)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, duration: Duration) {
        *self = self.saturating_add(duration);
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Instant({}.{:09}s)",
            self.nanos / 1_000_000_000,
            self.nanos % 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_duration_moves_forward_by_exactly_that_many_nanoseconds() {
        let start = Instant::from_millis(1_500);
        let later = start + Duration::from_micros(250);
        assert_eq!(later.as_nanos(), 1_500_250_000);
        assert_eq!(
            later.saturating_duration_since(start),
            Duration::from_micros(250)
        );
    }

    #[test]
    fn duration_since_a_later_instant_is_zero_not_a_panic() {
        let early = Instant::from_nanos(10);
        let late = Instant::from_nanos(20);
        assert_eq!(early.saturating_duration_since(late), Duration::ZERO);
    }

    #[test]
    fn huge_durations_saturate_at_max_instead_of_wrapping() {
        let near_end = Instant::from_nanos(u64::MAX - 5);
        assert_eq!(near_end + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
    }

    #[test]
    fn debug_shows_seconds_and_nanoseconds() {
        assert_eq!(
            format!("{:?}", Instant::from_nanos(3_000_000_007)),
            "Instant(3.000000007s)"
        );
    }
}
