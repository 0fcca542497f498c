//! How busy the event loop is, for the choices only a saturated loop should make
//! (the sender thread, [`crate::sender`]).

use std::time::{Duration, Instant};

/// A loop's load is judged over windows this long.
pub const LOAD_WINDOW_MS: u64 = 250;
/// A loop working (not waiting for events) at least this share of a window is
/// saturated.
pub const SATURATED_BUSY_SHARE: f64 = 0.75;

/// How busy the event loop is: its share of wall time spent working rather than
/// waiting in epoll, over windows of [`LOAD_WINDOW_MS`].
///
/// The sender thread pays only when the loop is the bottleneck and a core has room
/// for the sender. Measured (BENCHMARKS.md, "Replies off the loop"): one node under a
/// closed loop works 80-89% of the time and gains 15-19% throughput from the sender;
/// each node of a 3-node cluster sharing the machine's two cores works about 60% of
/// the time (the machine is the bottleneck, not its loop), and there the hand-off
/// only added CPU (12% fewer requests). At 2,000 requests a second a loop works a
/// few percent of the time.
#[derive(Debug)]
pub struct LoopLoad {
    window_started: Instant,
    poll_started: Instant,
    waited: Duration,
}

impl Default for LoopLoad {
    fn default() -> Self {
        LoopLoad::new()
    }
}

impl LoopLoad {
    pub fn new() -> LoopLoad {
        let now = Instant::now();
        LoopLoad {
            window_started: now,
            poll_started: now,
            waited: Duration::ZERO,
        }
    }

    /// The loop is about to wait.
    pub fn poll_starts(&mut self) {
        self.poll_started = Instant::now();
    }

    /// The wait is over; at the end of a window, whether the loop was saturated.
    pub fn poll_ended(&mut self) -> Option<bool> {
        let now = Instant::now();
        self.waited += now.saturating_duration_since(self.poll_started);
        let wall = now.saturating_duration_since(self.window_started);
        if wall < Duration::from_millis(LOAD_WINDOW_MS) {
            return None;
        }
        let busy_share = 1.0 - self.waited.as_secs_f64() / wall.as_secs_f64();
        self.window_started = now;
        self.waited = Duration::ZERO;
        Some(busy_share >= SATURATED_BUSY_SHARE)
    }
}
