//! Admission control for background work (design.md section 5): anti-entropy,
//! handoff and reaping run only while foreground work leaves room for them; and what
//! a handoff or reaping step is handed besides its own state.

use super::Node;
use super::entropy::HashTrees;
use super::gossip::View;
use super::hints::Hints;
use super::peers::Peers;
use super::shared::Shared;
use super::writer::Writer;
use crate::time::Instant;
use core::time::Duration;

/// The mean latency of client requests this node coordinated lately: over the current
/// one-second window and the one before it, whichever is higher (an idle node's drops
/// to zero within two windows, so background work is never held back by old news).
#[derive(Debug, Default)]
pub(crate) struct ForegroundLatency {
    window_start: Instant,
    sum_us: u64,
    count: u64,
    previous_mean_us: u64,
}

const LATENCY_WINDOW: Duration = Duration::from_secs(1);

impl ForegroundLatency {
    fn roll(&mut self, now: Instant) {
        if now < self.window_start + LATENCY_WINDOW {
            return;
        }
        let two_windows_ago =
            now.saturating_duration_since(self.window_start) >= LATENCY_WINDOW * 2;
        self.previous_mean_us = if two_windows_ago {
            0
        } else {
            self.sum_us.checked_div(self.count).unwrap_or(0)
        };
        self.window_start = now;
        self.sum_us = 0;
        self.count = 0;
    }

    /// A client request that arrived at `received_at` is answered at `now`.
    pub(crate) fn record(&mut self, now: Instant, received_at: Instant) {
        self.roll(now);
        let latency_us = now.saturating_duration_since(received_at).as_micros() as u64;
        self.sum_us = self.sum_us.saturating_add(latency_us);
        self.count += 1;
    }

    /// The recent mean, in microseconds.
    pub(crate) fn mean_us(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.window_start);
        let current = self.sum_us.checked_div(self.count).unwrap_or(0);
        if elapsed >= LATENCY_WINDOW * 2 {
            0
        } else if elapsed >= LATENCY_WINDOW {
            current
        } else {
            current.max(self.previous_mean_us)
        }
    }
}

/// Whether background work may run: the part foreground work decides (recent client
/// latency, requests in flight), taken when a background step starts, checked with the
/// part the step itself changes as it goes (storage tasks and queued actions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    foreground_calm: bool,
}

impl Admission {
    /// True while foreground work leaves room for background work: its queues are at
    /// most a quarter full, and client requests finished lately took at most
    /// `background_latency_max_ms` on average.
    pub(crate) fn admits(self, shared: &Shared) -> bool {
        let config = &shared.config;
        self.foreground_calm
            && shared.tasks.len() <= quarter(config.storage_operations_max)
            && shared.actions.has_room(config.actions_max as usize * 3 / 4)
    }
}

fn quarter(max: u32) -> usize {
    (max as usize).div_ceil(4)
}

impl Node {
    /// The admission decision's foreground part, now.
    pub(crate) fn admission(&self) -> Admission {
        let config = &self.shared.config;
        let latency_ms = self.foreground.mean_us(self.shared.now) / 1_000;
        Admission {
            foreground_calm: latency_ms <= config.background_latency_max_ms
                && self.coordinator.requests.len() <= quarter(config.requests_max),
        }
    }

    /// True while background work may run (see [`Admission::admits`]).
    pub(crate) fn background_admitted(&self) -> bool {
        self.admission().admits(&self.shared)
    }
}

/// What a background step (handoff, reaping) uses besides its own state.
pub(crate) struct BackgroundContext<'a> {
    pub(crate) shared: &'a mut Shared,
    pub(crate) view: &'a View,
    pub(crate) peers: &'a Peers,
    pub(crate) trees: &'a HashTrees,
    pub(crate) hints: &'a Hints,
    pub(crate) writer: &'a mut Writer,
    pub(crate) admission: Admission,
}

impl BackgroundContext<'_> {
    /// True while background work may run now.
    pub(crate) fn admits(&self) -> bool {
        self.admission.admits(self.shared)
    }
}

/// The [`BackgroundContext`] of a node, with `admission` taken beforehand (borrowing
/// the node's fields one by one, so the stepping concern's own state stays free).
macro_rules! background_context {
    ($node:ident, $admission:expr) => {
        $crate::node::admission::BackgroundContext {
            shared: &mut $node.shared,
            view: &$node.view,
            peers: &$node.peers,
            trees: &$node.entropy.trees,
            hints: &$node.hints,
            writer: &mut $node.writer,
            admission: $admission,
        }
    };
}
pub(crate) use background_context;
