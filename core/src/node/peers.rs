//! Local failure detection (design.md section 5): what this node believes about each
//! peer, from its own evidence only.
//!
//! - A peer is down after `failure_timeouts` consecutive request timeouts, or at once
//!   when the shell reports its link down. A down peer is skipped when choosing
//!   replicas, so requests go to stand-ins instead of waiting on it.
//! - A down peer is probed (connect, then ping) after `probe_interval_initial_ms`,
//!   doubling to `probe_interval_max_ms`. Any message from a peer, a pong included,
//!   brings it back up and resets its backoff.
//! - Requests outstanding to one peer are counted and bounded (`peer_requests_max`):
//!   past the bound the peer is treated as overloaded for that request, so a slow peer
//!   cannot make the node hold an unbounded backlog for it.
//! - Hint delivery to a peer backs off separately (`hint_interval_ms` doubling to
//!   `hint_backoff_max_ms`), so a peer that refuses hints is not hammered.

use super::config::Config;
use crate::time::Instant;
use crate::version::NodeId;
use core::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) up: bool,
    timeouts: u32,
    probe_backoff_ms: u64,
    pub(crate) next_probe_at: Instant,
    pub(crate) requests: u32,
    hint_backoff_ms: u64,
    pub(crate) hints_next_at: Instant,
    /// When the peer last showed life to this node directly.
    heard_at: Instant,
    /// When the peer last answered a request of this node's (so this node's frames
    /// reach it: a peer heard from across a one-way partition answers nothing).
    answered_at: Option<Instant>,
    /// When a forward to the peer was retried elsewhere after a silence: the peer is
    /// passed over as a forward's target until it is heard from again.
    suspected_at: Instant,
    /// A forward to the peer was retried elsewhere because it was slow: it is passed
    /// over as a forward's target until then.
    slow_until: Instant,
    /// When this node began waiting on the peer (its first request in flight since it
    /// had none); see [`Peers::is_silent`].
    waiting_since: Instant,
    /// Connections to the peer that broke (`PeerDown`): a frame sent in the current
    /// generation was never delivered if the next connection attempt fails.
    pub(crate) link_generation: u64,
}

#[derive(Debug)]
pub(crate) struct Peers {
    /// Every member but this node, sorted by id.
    peers: Vec<Peer>,
    failure_timeouts: u32,
    probe_initial_ms: u64,
    probe_max_ms: u64,
    hint_initial_ms: u64,
    hint_max_ms: u64,
    requests_max: u32,
    pub(crate) requests_peak: u32,
    pub(crate) marked_down: u64,
}

impl Peers {
    pub(crate) fn new(config: &Config, me: NodeId) -> Peers {
        let mut peers = Peers {
            peers: Vec::new(),
            failure_timeouts: config.failure_timeouts,
            probe_initial_ms: config.probe_interval_initial_ms,
            probe_max_ms: config
                .probe_interval_max_ms
                .max(config.probe_interval_initial_ms),
            hint_initial_ms: config.hint_interval_ms,
            hint_max_ms: config.hint_backoff_max_ms.max(config.hint_interval_ms),
            requests_max: config.peer_requests_max,
            requests_peak: 0,
            marked_down: 0,
        };
        for member in config.members.iter().filter(|member| member.id != me) {
            peers.add(member.id, Instant::ZERO);
        }
        peers
    }

    /// Starts tracking a member learnt from gossip, believed up until evidence says
    /// otherwise (as the initial members are). The caller bounds how many there are.
    pub(crate) fn add(&mut self, id: NodeId, now: Instant) {
        let Err(at) = self.peers.binary_search_by_key(&id, |peer| peer.id) else {
            return;
        };
        self.peers.insert(
            at,
            Peer {
                id,
                up: true,
                timeouts: 0,
                probe_backoff_ms: self.probe_initial_ms,
                next_probe_at: Instant::MAX,
                requests: 0,
                hint_backoff_ms: self.hint_initial_ms,
                hints_next_at: Instant::ZERO,
                heard_at: now,
                answered_at: None,
                suspected_at: Instant::ZERO,
                slow_until: Instant::ZERO,
                waiting_since: now,
                link_generation: 0,
            },
        );
    }

    /// The peer answered a request of this node's.
    pub(crate) fn answered(&mut self, id: NodeId, now: Instant) {
        if let Some(peer) = self.get_mut(id) {
            peer.answered_at = peer.answered_at.max(Some(now));
        }
    }

    /// True when the peer answered a request of this node's within `window_ms`
    /// before `now`.
    pub(crate) fn answered_within(&self, id: NodeId, now: Instant, window_ms: u64) -> bool {
        let answered_at = self.get(id).and_then(|peer| peer.answered_at);
        answered_at
            .is_some_and(|at| now.saturating_duration_since(at).as_millis() < u128::from(window_ms))
    }

    /// True when the peer showed life directly within `window_ms` before `now`.
    pub(crate) fn heard_within(&self, id: NodeId, now: Instant, window_ms: u64) -> bool {
        self.get(id).is_some_and(|peer| {
            now.saturating_duration_since(peer.heard_at).as_millis() < u128::from(window_ms)
        })
    }

    /// True when this node has waited on the peer for more than `window_ms` and heard
    /// nothing from it in that time: it may be frozen or dead before anything marked it
    /// down. (A peer this node does not wait on is never silent: an idle link says
    /// nothing.)
    pub(crate) fn is_silent(&self, id: NodeId, now: Instant, window_ms: u64) -> bool {
        self.get(id).is_some_and(|peer| {
            let since = peer.waiting_since.max(peer.heard_at);
            peer.requests > 0
                && now.saturating_duration_since(since).as_millis() > u128::from(window_ms)
        })
    }

    /// A forward to the peer was retried elsewhere after a silence (see
    /// [`Peers::is_silent`]): pass it over as a forward's target until it is heard from.
    pub(crate) fn suspect(&mut self, id: NodeId, now: Instant) {
        if let Some(peer) = self.get_mut(id) {
            peer.suspected_at = peer.suspected_at.max(now);
        }
    }

    /// True when the peer was suspected ([`Peers::suspect`]) and has not been heard
    /// from since.
    pub(crate) fn is_suspected(&self, id: NodeId) -> bool {
        self.get(id)
            .is_some_and(|peer| peer.suspected_at > peer.heard_at)
    }

    /// A forward to the peer was retried elsewhere because the peer, though heard from,
    /// did not answer it in time: pass it over as a forward's target until `until`.
    pub(crate) fn mark_slow(&mut self, id: NodeId, until: Instant) {
        if let Some(peer) = self.get_mut(id) {
            peer.slow_until = peer.slow_until.max(until);
        }
    }

    /// True while the peer is marked slow ([`Peers::mark_slow`]).
    pub(crate) fn is_slow(&self, id: NodeId, now: Instant) -> bool {
        self.get(id).is_some_and(|peer| peer.slow_until > now)
    }

    fn get_mut(&mut self, id: NodeId) -> Option<&mut Peer> {
        let index = self.peers.binary_search_by_key(&id, |peer| peer.id).ok()?;
        self.peers.get_mut(index)
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&Peer> {
        let index = self.peers.binary_search_by_key(&id, |peer| peer.id).ok()?;
        self.peers.get(index)
    }

    /// True when `id` is a peer believed up (unknown ids are not).
    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|peer| peer.up)
    }

    /// Evidence of life: any message from the peer.
    pub(crate) fn alive(&mut self, id: NodeId, now: Instant) {
        let initial = self.probe_initial_ms;
        if let Some(peer) = self.get_mut(id) {
            peer.heard_at = peer.heard_at.max(now);
            peer.timeouts = 0;
            peer.up = true;
            peer.probe_backoff_ms = initial;
            peer.next_probe_at = Instant::MAX;
        }
    }

    /// A request to the peer timed out.
    pub(crate) fn timed_out(&mut self, id: NodeId, now: Instant) {
        let threshold = self.failure_timeouts;
        let Some(peer) = self.get_mut(id) else {
            return;
        };
        peer.timeouts = peer.timeouts.saturating_add(1);
        if peer.timeouts >= threshold {
            self.mark_down(id, now);
        }
    }

    /// The link to the peer is down (or it failed badly enough to stop asking it).
    pub(crate) fn mark_down(&mut self, id: NodeId, now: Instant) {
        let initial = self.probe_initial_ms;
        let Some(peer) = self.get_mut(id) else {
            return;
        };
        if peer.up {
            peer.up = false;
            peer.probe_backoff_ms = initial;
            peer.next_probe_at = now + Duration::from_millis(initial);
            self.marked_down += 1;
        }
    }

    /// The connection to the peer broke: what was sent on it may have arrived.
    pub(crate) fn link_broke(&mut self, id: NodeId, now: Instant) {
        self.mark_down(id, now);
        if let Some(peer) = self.get_mut(id) {
            peer.link_generation += 1;
        }
    }

    /// The peer's current link generation (0 for an unknown peer).
    pub(crate) fn link_generation(&self, id: NodeId) -> u64 {
        self.get(id).map_or(0, |peer| peer.link_generation)
    }

    /// The earliest probe due.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter(|peer| !peer.up)
            .map(|peer| peer.next_probe_at)
            .min()
    }

    /// The next down peer whose probe is due at `now`, with its backoff advanced.
    pub(crate) fn take_due_probe(&mut self, now: Instant) -> Option<NodeId> {
        let max = self.probe_max_ms;
        let peer = self
            .peers
            .iter_mut()
            .find(|peer| !peer.up && peer.next_probe_at <= now)?;
        peer.next_probe_at = now + Duration::from_millis(peer.probe_backoff_ms);
        peer.probe_backoff_ms = peer.probe_backoff_ms.saturating_mul(2).min(max);
        Some(peer.id)
    }

    /// Counts a request sent to `id` at `now`; false when the peer is at its bound (or
    /// unknown).
    pub(crate) fn begin_request(&mut self, id: NodeId, now: Instant) -> bool {
        let max = self.requests_max;
        let Some(peer) = self.get_mut(id) else {
            return false;
        };
        if peer.requests >= max {
            return false;
        }
        if peer.requests == 0 {
            peer.waiting_since = now;
        }
        peer.requests += 1;
        let requests = peer.requests;
        self.requests_peak = self.requests_peak.max(requests);
        true
    }

    /// A request to `id` was answered, timed out or abandoned.
    pub(crate) fn end_request(&mut self, id: NodeId) {
        if let Some(peer) = self.get_mut(id) {
            peer.requests = peer.requests.saturating_sub(1);
        }
    }

    /// Hint delivery to `id` worked: offer the next ones at once.
    pub(crate) fn hints_delivered(&mut self, id: NodeId) {
        let initial = self.hint_initial_ms;
        if let Some(peer) = self.get_mut(id) {
            peer.hint_backoff_ms = initial;
            peer.hints_next_at = Instant::ZERO;
        }
    }

    /// Hint delivery to `id` failed: wait, and wait longer next time.
    pub(crate) fn hints_refused(&mut self, id: NodeId, now: Instant) {
        let max = self.hint_max_ms;
        if let Some(peer) = self.get_mut(id) {
            peer.hints_next_at = now + Duration::from_millis(peer.hint_backoff_ms);
            peer.hint_backoff_ms = peer.hint_backoff_ms.saturating_mul(2).min(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Member;

    fn peers() -> Peers {
        let members = (1..=3).map(|id| Member::equal(NodeId(id))).collect();
        let mut config = Config::new(1, members);
        config.failure_timeouts = 2;
        config.peer_requests_max = 2;
        Peers::new(&config, NodeId(1))
    }

    #[test]
    fn consecutive_timeouts_mark_a_peer_down_and_any_message_brings_it_back() {
        let mut peers = peers();
        let now = Instant::from_millis(1_000);
        peers.timed_out(NodeId(2), now);
        assert!(peers.is_up(NodeId(2)), "one timeout is not enough");
        peers.alive(NodeId(2), now);
        peers.timed_out(NodeId(2), now);
        assert!(peers.is_up(NodeId(2)), "a message reset the count");
        peers.timed_out(NodeId(2), now);
        assert!(!peers.is_up(NodeId(2)));
        assert!(!peers.is_up(NodeId(1)), "this node is not its own peer");
        peers.alive(NodeId(2), now);
        assert!(peers.is_up(NodeId(2)));
    }

    #[test]
    fn probes_of_a_down_peer_back_off_exponentially_to_the_maximum() {
        let mut peers = peers();
        let mut now = Instant::from_millis(0);
        peers.mark_down(NodeId(3), now);
        let mut gaps = Vec::new();
        for _ in 0..10 {
            let due = peers.next_probe().unwrap();
            assert_eq!(
                peers.take_due_probe(Instant::from_nanos(due.as_nanos() - 1)),
                None
            );
            assert_eq!(peers.take_due_probe(due), Some(NodeId(3)));
            gaps.push(due.saturating_duration_since(now).as_millis() as u64);
            now = due;
        }
        assert_eq!(&gaps[..7], &[100, 100, 200, 400, 800, 1600, 3200]);
        assert!(gaps[7..].iter().all(|&gap| gap == 5_000));
    }

    #[test]
    fn requests_to_one_peer_are_bounded() {
        let mut peers = peers();
        assert!(peers.begin_request(NodeId(2), Instant::ZERO));
        assert!(peers.begin_request(NodeId(2), Instant::ZERO));
        assert!(!peers.begin_request(NodeId(2), Instant::ZERO));
        peers.end_request(NodeId(2));
        assert!(peers.begin_request(NodeId(2), Instant::ZERO));
        assert!(
            !peers.begin_request(NodeId(9), Instant::ZERO),
            "strangers are refused"
        );
        assert_eq!(peers.requests_peak, 2);
    }
}
