//! Membership only, at scale: many [`Membership`] views gossiping in rounds, no data and
//! no node state machine, to measure how many rounds a join and a failure take to reach
//! every view (the target is O(log n) rounds).
//!
//! A round follows what `Node::gossip_round` does once per `gossip_interval_ms`: every
//! live node, in a seeded random order, beats its heartbeat, picks a partner with
//! [`Membership::gossip_target`] (a live member it does not suspect, or one round in
//! `seed_one_in` a seed) and does a push-pull exchange with it at once. A node suspects
//! a member whose heartbeat has been still for `silence_rounds` rounds, the rule
//! `Node` applies with `gossip_silence_ms`. Message loss and latency are the full
//! simulator's business; here a round is one interval and every exchange arrives.

use ringkv_core::membership::{GossipTarget, LocalMember, MemberState, Membership};
use ringkv_core::placement::Member;
use ringkv_core::random::Rng;
use ringkv_core::time::Instant;
use ringkv_core::version::NodeId;
use ringkv_core::wire::{MemberRecord, MemberStatus};
use std::collections::BTreeSet;

const ROUND_MS: u64 = 1_000;
const SEED_ONE_IN: u32 = 10;

fn address(id: u64) -> Vec<u8> {
    format!("gossip-{id}").into_bytes()
}

/// A set of views gossiping in rounds.
#[derive(Debug)]
pub struct GossipSim {
    views: Vec<Membership>,
    alive: Vec<bool>,
    rng: Rng,
    round: u64,
    silence_rounds: u64,
}

impl GossipSim {
    /// `nodes` views that all start with the same initial member list (ids 1..=nodes),
    /// node 1 as every node's seed.
    pub fn new(nodes: usize, seed: u64, silence_rounds: u64) -> GossipSim {
        let initial: Vec<Member> = (1..=nodes as u64)
            .map(|id| Member::equal(NodeId(id)))
            .collect();
        let views = (1..=nodes as u64)
            .map(|id| view(id, &initial, MemberStatus::Up, nodes + 1))
            .collect();
        GossipSim {
            views,
            alive: vec![true; nodes],
            rng: Rng::new(seed),
            round: 0,
            silence_rounds,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.round * ROUND_MS)
    }

    /// Starts a node outside the initial list, `Joining` with node 1 as its seed.
    pub fn add_joining(&mut self) -> NodeId {
        let id = self.views.len() as u64 + 1;
        let mut joining = view(id, &[], MemberStatus::Joining, self.views.len() + 1);
        joining.add_seed(&address(1));
        self.views.push(joining);
        self.alive.push(true);
        NodeId(id)
    }

    /// Node `id` stops: no more beats, exchanges with it fail.
    pub fn crash(&mut self, id: NodeId) {
        self.alive[id.0 as usize - 1] = false;
    }

    fn suspects(&self, index: usize, member: NodeId) -> bool {
        self.views[index]
            .silent_members(self.now(), self.silence_rounds * ROUND_MS)
            .any(|id| id == member)
    }

    /// One round: every live node gossips once.
    pub fn round(&mut self) {
        self.round += 1;
        let now = self.now();
        let mut order: Vec<usize> = (0..self.views.len()).filter(|&i| self.alive[i]).collect();
        // Fisher-Yates with the run's generator: a seeded order per round.
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for index in order {
            self.views[index].beat(now);
            let suspected: BTreeSet<NodeId> = self.views[index]
                .silent_members(now, self.silence_rounds * ROUND_MS)
                .collect();
            let target = self.views[index]
                .gossip_target(&mut self.rng, SEED_ONE_IN, |id| !suspected.contains(&id));
            let partner = match target {
                Some(GossipTarget::Member(id)) => id.0 as usize - 1,
                Some(GossipTarget::Seed(_)) => 0,
                None => continue,
            };
            if partner == index || !self.alive[partner] {
                continue;
            }
            let sent = records(&self.views[index]);
            self.views[partner].merge(&borrowed(&sent), now);
            let answer = records(&self.views[partner]);
            self.views[index].merge(&borrowed(&answer), now);
        }
    }

    /// True when every live view has the same placement digest.
    pub fn placement_agrees(&self) -> bool {
        let mut digests = (0..self.views.len())
            .filter(|&i| self.alive[i])
            .map(|i| self.views[i].placement_digest());
        let first = digests.next();
        digests.all(|digest| Some(digest) == first)
    }

    /// True when every live view holds `id` as `Up`.
    pub fn everyone_sees_up(&self, id: NodeId) -> bool {
        (0..self.views.len()).filter(|&i| self.alive[i]).all(|i| {
            self.views[i]
                .get(id)
                .is_some_and(|m| m.status == MemberStatus::Up)
        })
    }

    /// How many live views (other than its own) suspect `id`.
    pub fn suspecting(&self, id: NodeId) -> usize {
        (0..self.views.len())
            .filter(|&i| self.alive[i] && self.views[i].local_id() != id)
            .filter(|&i| self.suspects(i, id))
            .count()
    }

    pub fn live_count(&self) -> usize {
        self.alive.iter().filter(|&&alive| alive).count()
    }
}

fn view(id: u64, initial: &[Member], status: MemberStatus, members_max: usize) -> Membership {
    let local = LocalMember {
        id: NodeId(id),
        peer_address: address(id),
        client_address: Vec::new(),
        weight: 1,
        zone: None,
        status,
    };
    Membership::new(local, initial, Vec::new(), members_max, Instant::ZERO)
        .expect("simulated views are valid")
}

fn records(view: &Membership) -> Vec<MemberState> {
    view.members().to_vec()
}

fn borrowed(states: &[MemberState]) -> Vec<MemberRecord<'_>> {
    states.iter().map(MemberState::record).collect()
}

/// Rounds until a node joining an `nodes`-member cluster is `Up` in every view and all
/// views agree on placement; `None` if not within `rounds_max`.
pub fn join_rounds(nodes: usize, seed: u64, rounds_max: u64) -> Option<u64> {
    let mut sim = GossipSim::new(nodes, seed, u64::MAX / ROUND_MS);
    let joiner = sim.add_joining();
    for round in 1..=rounds_max {
        sim.round();
        if sim.everyone_sees_up(joiner) && sim.placement_agrees() {
            return Some(round);
        }
    }
    None
}

/// After a crash: the round the first live view suspects the dead node and the round
/// all of them do (counted from the crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureSpread {
    pub first: u64,
    pub all: u64,
}

/// Crashes one of `nodes` (after warm-up rounds) and measures the spread of suspicion.
pub fn failure_rounds(
    nodes: usize,
    seed: u64,
    silence_rounds: u64,
    rounds_max: u64,
) -> Option<FailureSpread> {
    let mut sim = GossipSim::new(nodes, seed, silence_rounds);
    // Warm up until every view has seen every heartbeat advance recently.
    for _ in 0..silence_rounds {
        sim.round();
    }
    let victim = NodeId(nodes as u64);
    if sim.suspecting(victim) != 0 {
        return None; // suspected while alive: the warm-up was too short
    }
    sim.crash(victim);
    let live = sim.live_count();
    let mut first = None;
    for round in 1..=rounds_max {
        sim.round();
        let suspecting = sim.suspecting(victim);
        if suspecting > 0 && first.is_none() {
            first = Some(round);
        }
        if suspecting == live {
            return Some(FailureSpread {
                first: first.unwrap_or(round),
                all: round,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_reaches_every_view_in_logarithmic_rounds() {
        for seed in 1..=5 {
            let rounds = join_rounds(100, seed, 100);
            eprintln!("RINGKV_SEED={seed}: join of 1 into 100 took {rounds:?} rounds");
            // log2(100) ~ 6.6; push-pull spreads in about log2(n) + ln(ln(n)) rounds.
            assert!(rounds.is_some_and(|r| r <= 20), "seed {seed}: {rounds:?}");
        }
    }

    #[test]
    fn a_failure_is_suspected_everywhere_within_the_silence_window_plus_log_rounds() {
        for seed in 1..=5 {
            let spread = failure_rounds(100, seed, 10, 100);
            eprintln!("RINGKV_SEED={seed}: failure spread {spread:?}");
            let spread = spread.expect("every view suspects the dead node");
            assert!(
                spread.first >= 9,
                "nobody suspects before the window: {spread:?}"
            );
            assert!(spread.all - spread.first <= 15, "{spread:?}");
        }
    }

    #[test]
    fn a_view_that_never_gossips_is_not_counted_as_converged() {
        // The checker itself: a sim with no rounds has not spread the join.
        let mut sim = GossipSim::new(10, 1, 10);
        let joiner = sim.add_joining();
        assert!(!sim.everyone_sees_up(joiner));
        assert!(!sim.placement_agrees(), "the joiner places nobody yet");
        sim.round();
        sim.round();
        assert!(sim.views[sim.views.len() - 1].get(NodeId(1)).is_some());
    }
}
