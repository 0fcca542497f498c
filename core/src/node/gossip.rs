//! The node's side of membership: gossip rounds, merging what peers say, keeping the
//! ring and the peer table in step with the view, and the admin commands that change
//! this node's own entry (see `crate::membership` for the view and its merge rules).
//!
//! - Every `gossip_interval_ms` the node beats its heartbeat and sends its whole view
//!   to one random live member, or (one round in `gossip_seed_one_in`, and whenever it
//!   knows no live member) to a seed by address. The receiver merges and answers with
//!   its own view. Full views keep the protocol stateless; at 1,000 members a view is
//!   about 50 KB per round.
//! - When a merge changes the placement, the ring is recomputed at once; requests in
//!   flight keep their partition (partitions never change, only their lists).
//! - A member whose heartbeat has been still for `gossip_silence_ms`, and that this
//!   node has not heard from directly in that time, is marked down locally, which
//!   starts probes; any message brings it back (idle peers are noticed this way).

use super::{Config, ConfigError, Node};
use crate::membership::{GossipTarget, Membership, Merged};
use crate::placement::{Member, Ring};
use crate::version::NodeId;
use crate::wire::{MemberRecord, MemberStatus, Message};

/// This node's view of the cluster: the gossiped membership and the placement built
/// from its `Up` members.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) membership: Membership,
    /// Placement from the view's `Up` members.
    pub(crate) ring: Ring,
    /// False while the view has no `Up` member: `ring` is then a placeholder and
    /// client requests are refused.
    pub(crate) ready: bool,
}

impl View {
    pub(crate) fn new(membership: Membership, config: &Config) -> Result<View, ConfigError> {
        let (ring, ready) = placement_ring(&membership, config)?;
        Ok(View {
            membership,
            ring,
            ready,
        })
    }

    /// True when node `id` is in `partition`'s preference list.
    pub(crate) fn replicates(&self, id: NodeId, partition: usize) -> bool {
        self.ready && self.ring.preference_list(partition).any(|node| node == id)
    }

    /// Rebuilds the placement after the membership changed it; on error the old one
    /// stays.
    fn rebuild(&mut self, config: &Config) -> Result<(), ConfigError> {
        (self.ring, self.ready) = placement_ring(&self.membership, config)?;
        Ok(())
    }
}

/// The ring of `membership`'s `Up` members with N capped at their count; a one-node
/// placeholder (and `false`) while none is `Up`.
fn placement_ring(membership: &Membership, config: &Config) -> Result<(Ring, bool), ConfigError> {
    let placed = membership.placement();
    let (members, ready) = if placed.is_empty() {
        let local = membership.local();
        let placeholder = Member {
            id: local.id,
            weight: local.weight,
            zone: local.zone,
        };
        (vec![placeholder], false)
    } else {
        (placed, true)
    };
    let replicas = usize::from(config.replicas).min(members.len());
    let ring =
        Ring::new(&members, config.partition_bits, replicas).map_err(ConfigError::Placement)?;
    Ok((ring, ready))
}

impl Node {
    /// True when this node is in `partition`'s preference list.
    pub(crate) fn replicates(&self, partition: usize) -> bool {
        self.view.replicates(self.shared.id, partition)
    }

    /// One gossip round (the timer in `run_timers` calls it).
    pub(crate) fn gossip_round(&mut self) {
        let now = self.shared.now;
        self.view.membership.beat(now);
        self.suspect_silent_members();
        let peers = &self.peers;
        let target = self.view.membership.gossip_target(
            &mut self.shared.rng,
            self.shared.config.gossip_seed_one_in,
            |id| peers.is_up(id),
        );
        let members: Vec<MemberRecord<'_>> = self.view.membership.records().collect();
        let message = Message::Gossip { members };
        // A refused gossip frame is counted in `actions_refused`; the next round retries.
        let _ = match target {
            Some(GossipTarget::Member(to)) => {
                self.shared
                    .actions
                    .send(to, self.shared.config.cluster_id, &message)
            }
            Some(GossipTarget::Seed(address)) => {
                self.shared
                    .actions
                    .introduce(address, self.shared.config.cluster_id, &message)
            }
            None => Ok(()),
        };
    }

    fn suspect_silent_members(&mut self) {
        let now = self.shared.now;
        let silence_ms = self.shared.config.gossip_silence_ms;
        let silent: Vec<NodeId> = self
            .view
            .membership
            .silent_members(now, silence_ms)
            .filter(|&id| self.peers.is_up(id) && !self.peers.heard_within(id, now, silence_ms))
            .collect();
        for id in silent {
            log::warn!(
                "node {}: member {} silent in gossip for {silence_ms} ms, marking it down",
                self.shared.id.0,
                id.0
            );
            self.peers.mark_down(id, now);
        }
    }

    /// A peer's view arrived: merge it, answer a `Gossip` with this node's view.
    pub(crate) fn gossip_received(
        &mut self,
        from: NodeId,
        members: &[MemberRecord<'_>],
        answer: bool,
    ) {
        let merged = self.view.membership.merge(members, self.shared.now);
        self.view_changed(merged);
        if self.peers.get(from).is_some() {
            self.peers.alive(from, self.shared.now);
        }
        if answer {
            let members: Vec<MemberRecord<'_>> = self.view.membership.records().collect();
            let message = Message::GossipReply { members };
            let _ = self
                .shared
                .actions
                .send(from, self.shared.config.cluster_id, &message);
        }
    }

    /// The shell connected to `peer` (or it connected to us).
    pub(crate) fn peer_up(&mut self, peer: NodeId) {
        self.peers.alive(peer, self.shared.now);
    }

    /// Brings the peer table and the ring in line with the view after a change.
    pub(crate) fn view_changed(&mut self, merged: Merged) {
        if merged.refused > 0 {
            log::warn!(
                "node {}: refused {} membership records (view full or malformed)",
                self.shared.id.0,
                merged.refused
            );
        }
        if !merged.changed {
            return;
        }
        if merged.joined {
            log::info!("node {}: heard the cluster, now up", self.shared.id.0);
        }
        let now = self.shared.now;
        for member in self.view.membership.members() {
            if member.id != self.shared.id && member.status != MemberStatus::Left {
                self.peers.add(member.id, now);
            }
        }
        if merged.placement_changed {
            self.rebuild_ring();
        }
    }

    fn rebuild_ring(&mut self) {
        match self.view.rebuild(&self.shared.config) {
            Ok(()) => {
                log::info!(
                    "node {}: placement changed: {} members placed, digest {:016x}",
                    self.shared.id.0,
                    self.view.ring.members().len(),
                    self.view.membership.placement_digest()
                );
                self.writer.check_regained(&mut self.shared, &self.view);
            }
            // Merge refuses zero weights and bounds the member count, so the ring can
            // always be built; keep the old one if that ever stops holding.
            Err(error) => log::warn!("node {}: placement not rebuilt: {error}", self.shared.id.0),
        }
    }

    /// `RINGKV.JOIN <seed>`: gossip with `seed` now (and as a seed from then on).
    pub(crate) fn admin_join(&mut self, seed: &[u8]) -> Result<(), &'static str> {
        if self.view.membership.local().status == MemberStatus::Left {
            return Err("this node has left the cluster; start it under a new id");
        }
        if !self.view.membership.add_seed(seed)
            && !self.view.membership.seeds().iter().any(|s| s == seed)
        {
            return Err("seed address is empty, too long or one too many");
        }
        let members: Vec<MemberRecord<'_>> = self.view.membership.records().collect();
        let message = Message::Gossip { members };
        self.shared
            .actions
            .introduce(seed, self.shared.config.cluster_id, &message)
            .map_err(|_| "the node is overloaded, retry later")
    }

    /// `RINGKV.LEAVE`: this node stops taking part in placement; its partitions move
    /// to the next members and it hands its data over before it marks itself `Left`.
    pub(crate) fn admin_leave(&mut self) -> Result<(), &'static str> {
        match self.view.membership.local().status {
            MemberStatus::Left => Err("this node has already left"),
            MemberStatus::Leaving => Ok(()),
            MemberStatus::Joining | MemberStatus::Up => {
                if self.view.membership.placement().len() <= 1 {
                    return Err("the last member cannot leave");
                }
                log::info!("node {}: leaving the cluster", self.shared.id.0);
                let merged = self.view.membership.set_local_status(MemberStatus::Leaving);
                self.view_changed(merged);
                Ok(())
            }
        }
    }
}
