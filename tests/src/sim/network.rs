//! The simulated network: messages between nodes with latency, loss, duplication,
//! reordering and partitions, every choice drawn from one seeded [`Rng`].
//!
//! - Latency is uniform in `latency_min_ms..=latency_max_ms` per message, so messages
//!   between the same two nodes overtake each other (reordering) whenever the range is
//!   wider than their spacing.
//! - A partition blocks directed links; a symmetric partition blocks both directions.
//!   It is checked when a message is sent and again when it would be delivered, so
//!   messages in flight when a partition starts are lost, as on a real network.
//! - The queue of messages in flight is bounded; a send past the bound is dropped and
//!   counted, which the bounds checker reads.
//! - Equal delivery times are delivered in send order: a run is a pure function of its
//!   seed.

use ringkv_core::{Instant, NodeId, Rng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

/// The network's fault knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkConfig {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a delivered message is delivered twice.
    pub duplication: f64,
    /// Messages in flight at most.
    pub in_flight_max: usize,
}

impl NetworkConfig {
    /// No faults, fixed 1 ms latency.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            latency_min_ms: 1,
            latency_max_ms: 1,
            loss: 0.0,
            duplication: 0.0,
            in_flight_max: 100_000,
        }
    }
}

/// What became of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    Lost,
    Blocked,
    QueueFull,
}

/// Counters for the checkers and the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub blocked: u64,
    pub duplicated: u64,
    pub queue_full: u64,
    pub in_flight_peak: usize,
}

/// One message on its way.
#[derive(Debug)]
struct InFlight<M> {
    from: NodeId,
    to: NodeId,
    message: M,
}

// Ordering for the heap: by (deliver_at, sequence) only.
#[derive(Debug)]
struct Scheduled<M>(Instant, u64, InFlight<M>);

impl<M> PartialEq for Scheduled<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl<M> Eq for Scheduled<M> {}
impl<M> PartialOrd for Scheduled<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Scheduled<M> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// The network between simulated nodes.
#[derive(Debug)]
pub struct Network<M> {
    config: NetworkConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<Scheduled<M>>>,
    sequence: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    stats: NetworkStats,
}

impl<M: Clone> Network<M> {
    /// A network whose random choices all come from `seed`.
    pub fn new(config: NetworkConfig, seed: u64) -> Network<M> {
        Network {
            config,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            sequence: 0,
            blocked: BTreeSet::new(),
            stats: NetworkStats::default(),
        }
    }

    /// Changes the fault knobs (for example to stop faults before the checkers run).
    pub fn set_config(&mut self, config: NetworkConfig) {
        self.config = config;
    }

    fn latency(&mut self) -> Duration {
        let span = self
            .config
            .latency_max_ms
            .saturating_sub(self.config.latency_min_ms);
        Duration::from_millis(self.config.latency_min_ms + self.rng.below(span + 1))
    }

    fn schedule(&mut self, at: Instant, from: NodeId, to: NodeId, message: M) -> Sent {
        if self.queue.len() >= self.config.in_flight_max {
            self.stats.queue_full += 1;
            return Sent::QueueFull;
        }
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled(
            at,
            self.sequence,
            InFlight { from, to, message },
        )));
        self.stats.in_flight_peak = self.stats.in_flight_peak.max(self.queue.len());
        Sent::Queued
    }

    /// Sends `message` from `from` to `to` at `now`.
    pub fn send(&mut self, now: Instant, from: NodeId, to: NodeId, message: M) -> Sent {
        self.stats.sent += 1;
        if self.blocked.contains(&(from, to)) {
            self.stats.blocked += 1;
            return Sent::Blocked;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.lost += 1;
            return Sent::Lost;
        }
        if self.rng.chance(self.config.duplication) {
            let later = now + self.latency();
            if self.schedule(later, from, to, message.clone()) == Sent::Queued {
                self.stats.duplicated += 1;
            }
        }
        let at = now + self.latency();
        self.schedule(at, from, to, message)
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(Scheduled(at, _, _))| *at)
    }

    /// The next message due at or before `now`, as `(from, to, message)`. Messages on
    /// links blocked since they were sent are dropped here.
    pub fn deliver_due(&mut self, now: Instant) -> Option<(NodeId, NodeId, M)> {
        loop {
            match self.queue.peek() {
                Some(Reverse(Scheduled(at, _, _))) if *at <= now => {}
                _ => return None,
            }
            let Reverse(Scheduled(_, _, flight)) = self.queue.pop()?;
            if self.blocked.contains(&(flight.from, flight.to)) {
                self.stats.blocked += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some((flight.from, flight.to, flight.message));
        }
    }

    /// Cuts every link from a node of `side_a` to a node of `side_b`, and back too
    /// unless `one_way`.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId], one_way: bool) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                if !one_way {
                    self.blocked.insert((b, a));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn drain(network: &mut Network<u32>, until: Instant) -> Vec<(NodeId, NodeId, u32)> {
        std::iter::from_fn(|| network.deliver_due(until)).collect()
    }

    #[test]
    fn a_reliable_network_delivers_everything_once_in_send_order_after_the_latency() {
        let mut network = Network::new(NetworkConfig::reliable(), 1);
        for i in 0..5 {
            assert_eq!(network.send(Instant::ZERO, A, B, i), Sent::Queued);
        }
        assert_eq!(network.next_delivery(), Some(Instant::from_millis(1)));
        assert!(
            drain(&mut network, Instant::ZERO).is_empty(),
            "nothing arrives before its latency"
        );
        let delivered: Vec<u32> = drain(&mut network, Instant::from_millis(1))
            .into_iter()
            .map(|d| d.2)
            .collect();
        assert_eq!(delivered, [0, 1, 2, 3, 4]);
        assert_eq!(network.in_flight(), 0);
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_order() {
        let config = NetworkConfig {
            latency_min_ms: 1,
            latency_max_ms: 50,
            loss: 0.2,
            duplication: 0.2,
            in_flight_max: 1_000,
        };
        let run = |seed| {
            let mut network = Network::new(config, seed);
            for i in 0..200 {
                network.send(Instant::from_millis(i as u64), A, B, i);
            }
            drain(&mut network, Instant::MAX)
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        let values: Vec<u32> = first.iter().map(|d| d.2).collect();
        assert!(
            values.windows(2).any(|w| w[0] > w[1]),
            "wide latency reorders messages"
        );
        let mut unique = values.clone();
        unique.sort();
        unique.dedup();
        assert!(unique.len() < 200, "some messages were lost");
        assert!(values.len() > unique.len(), "some messages were duplicated");
    }

    #[test]
    fn partitions_block_both_ways_or_one_way_and_drop_messages_already_in_flight() {
        let mut network = Network::new(NetworkConfig::reliable(), 1);
        network.send(Instant::ZERO, A, B, 1);
        network.partition(&[A], &[B, C], true);
        assert_eq!(network.send(Instant::ZERO, A, C, 2), Sent::Blocked);
        assert_eq!(
            network.send(Instant::ZERO, C, A, 3),
            Sent::Queued,
            "one way only"
        );
        let delivered = drain(&mut network, Instant::MAX);
        assert_eq!(
            delivered,
            [(C, A, 3)],
            "the message in flight to B was lost"
        );
        network.heal();
        network.partition(&[A], &[B], false);
        assert_eq!(network.send(Instant::ZERO, B, A, 4), Sent::Blocked);
        network.heal();
        assert_eq!(network.send(Instant::ZERO, B, A, 5), Sent::Queued);
        assert_eq!(network.stats().blocked, 3);
    }

    #[test]
    fn the_queue_is_bounded_and_overflow_is_counted() {
        let config = NetworkConfig {
            in_flight_max: 3,
            ..NetworkConfig::reliable()
        };
        let mut network = Network::new(config, 1);
        let outcomes: Vec<Sent> = (0..5)
            .map(|i| network.send(Instant::ZERO, A, B, i))
            .collect();
        assert_eq!(outcomes[3], Sent::QueueFull);
        assert_eq!(network.stats().queue_full, 2);
        assert_eq!(network.stats().in_flight_peak, 3);
    }
}
