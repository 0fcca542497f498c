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

use super::peers::Peers;
use super::shared::Shared;
use super::{Config, ConfigError, Node, StorageFailure};
use crate::membership::{GossipTarget, Membership, Merged};
use crate::placement::{Member, Ring};
use crate::version::NodeId;
use crate::wire::{MemberRecord, MemberStatus, Message, decode_frame};
use core::time::Duration;

/// Gossip rounds after a placement change by which every node has heard of it
/// (a bound on epidemic spread with room; see `placement_changed`).
const SETTLE_ROUNDS: u64 = 5;

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

    /// True once this node has left the cluster (`Left` is final): it coordinates,
    /// stores and answers nothing more (`Node::peer_message`, `Node::client_command`)
    /// and holds no hint, so that shutting it down loses nothing.
    pub(crate) fn has_left(&self) -> bool {
        self.membership.local().status == MemberStatus::Left
    }

    /// True when node `id` is in `partition`'s preference list.
    pub(crate) fn replicates(&self, id: NodeId, partition: usize) -> bool {
        self.ready && self.ring.preference_list(partition).any(|node| node == id)
    }

    /// True when nodes `id` and `peer` both replicate `partition` in this view.
    pub(crate) fn shares_partition(&self, id: NodeId, peer: NodeId, partition: u32) -> bool {
        let partition = partition as usize;
        if partition >= self.ring.partition_count() {
            return false;
        }
        let (mut me, mut them) = (false, false);
        for node in self.ring.preference_list(partition) {
            me |= node == id;
            them |= node == peer;
        }
        me && them
    }

    /// Rebuilds the placement after the membership changed it; on error the old one
    /// stays.
    fn rebuild(&mut self, config: &Config) -> Result<Ring, ConfigError> {
        let (ring, ready) = placement_ring(&self.membership, config)?;
        self.ready = ready;
        Ok(core::mem::replace(&mut self.ring, ring))
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

/// The membership concern's surface: the node hands it the shared piece and the peer
/// table (which follows the view); a method that changes the placement says so, and
/// the node tells the concerns that depend on it.
impl View {
    /// One gossip round (the gossip timer calls it).
    pub(crate) fn gossip_round(&mut self, shared: &mut Shared, peers: &mut Peers) {
        let now = shared.now;
        self.membership.beat(now);
        self.suspect_silent_members(shared, peers);
        let target = self.membership.gossip_target(
            &mut shared.rng,
            shared.config.gossip_seed_one_in,
            |id| peers.is_up(id),
        );
        let members: Vec<MemberRecord<'_>> = self.membership.records().collect();
        let message = Message::Gossip { members };
        let cluster_id = shared.config.cluster_id;
        // A refused gossip frame is counted in `actions_refused`; the next round retries.
        let _ = match target {
            Some(GossipTarget::Member(to)) => shared.actions.send(to, cluster_id, &message),
            Some(GossipTarget::Seed(address)) => {
                shared.actions.introduce(address, cluster_id, &message)
            }
            None => Ok(()),
        };
    }

    fn suspect_silent_members(&self, shared: &Shared, peers: &mut Peers) {
        let now = shared.now;
        let silence_ms = shared.config.gossip_silence_ms;
        let silent: Vec<NodeId> = self
            .membership
            .silent_members(now, silence_ms)
            .filter(|&id| peers.is_up(id) && !peers.heard_within(id, now, silence_ms))
            .collect();
        for id in silent {
            log::warn!(
                "node {}: member {} silent in gossip for {silence_ms} ms, marking it down",
                shared.id.0,
                id.0
            );
            peers.mark_down(id, now);
        }
    }

    /// A peer's view arrived: merge it; the placement before, when it changed.
    pub(crate) fn merge(
        &mut self,
        shared: &Shared,
        peers: &mut Peers,
        members: &[MemberRecord<'_>],
    ) -> Option<Ring> {
        let merged = self.membership.merge(members, shared.now);
        self.apply(shared, peers, merged)
    }

    /// After merging `from`'s view: it is alive, and a `Gossip` (`answer`) gets this
    /// node's view back.
    pub(crate) fn acknowledge(
        &self,
        shared: &mut Shared,
        peers: &mut Peers,
        from: NodeId,
        answer: bool,
    ) {
        if peers.get(from).is_some() {
            peers.alive(from, shared.now);
        }
        if answer {
            let members: Vec<MemberRecord<'_>> = self.membership.records().collect();
            let message = Message::GossipReply { members };
            shared.send(from, &message);
        }
    }

    /// Brings the peer table and the ring in line with the view after a change; the
    /// placement before, when it changed.
    pub(crate) fn apply(
        &mut self,
        shared: &Shared,
        peers: &mut Peers,
        merged: Merged,
    ) -> Option<Ring> {
        let id = shared.id;
        if merged.refused > 0 {
            log::warn!(
                "node {}: refused {} membership records (view full or malformed)",
                id.0,
                merged.refused
            );
        }
        if !merged.changed {
            return None;
        }
        if merged.joined {
            log::info!("node {}: heard the cluster, now up", id.0);
        }
        for member in self.membership.members() {
            if member.id != id && member.status != MemberStatus::Left {
                peers.add(member.id, shared.now);
            }
        }
        if !merged.placement_changed {
            return None;
        }
        match self.rebuild(&shared.config) {
            Ok(old) => {
                log::info!(
                    "node {}: placement changed: {} members placed, digest {:016x}",
                    id.0,
                    self.ring.members().len(),
                    self.membership.placement_digest()
                );
                Some(old)
            }
            // Merge refuses zero weights and bounds the member count, so the ring can
            // always be built; keep the old one if that ever stops holding.
            Err(error) => {
                log::warn!("node {}: placement not rebuilt: {error}", id.0);
                None
            }
        }
    }

    /// `RINGKV.JOIN <seed>`: gossip with `seed` now (and as a seed from then on).
    pub(crate) fn join(&mut self, shared: &mut Shared, seed: &[u8]) -> Result<(), &'static str> {
        if self.has_left() {
            return Err("this node has left the cluster; start it under a new id");
        }
        if !self.membership.add_seed(seed) && !self.membership.seeds().iter().any(|s| s == seed) {
            return Err("seed address is empty, too long or one too many");
        }
        let members: Vec<MemberRecord<'_>> = self.membership.records().collect();
        let message = Message::Gossip { members };
        shared
            .actions
            .introduce(seed, shared.config.cluster_id, &message)
            .map_err(|_| "the node is overloaded, retry later")
    }

    /// `RINGKV.REMOVE <id>`: member `id` will never return; take it out of the view.
    /// Refused for this node (`RINGKV.LEAVE` is its way out), an unknown member, and a
    /// member this node can reach or heard from within `gossip_silence_ms`.
    pub(crate) fn remove(
        &mut self,
        shared: &Shared,
        peers: &Peers,
        id: NodeId,
    ) -> Result<Merged, &'static str> {
        if id == shared.id {
            return Err("this is the node itself; use RINGKV.LEAVE on it");
        }
        if self.membership.get(id).is_none() {
            return Err("no such member in this node's view");
        }
        if peers.is_up(id) {
            return Err("the member is up: only a member that will never return can be removed");
        }
        if peers.heard_within(id, shared.now, shared.config.gossip_silence_ms) {
            return Err(
                "the member was heard from lately; retry once it has been silent for the gossip silence period",
            );
        }
        log::warn!("node {}: removing member {} for good", shared.id.0, id.0);
        self.membership
            .remove_member(id)
            .ok_or("no such member in this node's view")
    }

    /// `RINGKV.LEAVE`: this node stops taking part in placement; its partitions move
    /// to the next members and it hands its data over before it marks itself `Left`.
    /// The view change to apply, if any.
    pub(crate) fn leave(&mut self, id: NodeId) -> Result<Option<Merged>, &'static str> {
        match self.membership.local().status {
            MemberStatus::Left => Err("this node has already left"),
            MemberStatus::Leaving => Ok(None),
            MemberStatus::Joining | MemberStatus::Up => {
                if self.membership.placement().len() <= 1 {
                    return Err("the last member cannot leave");
                }
                log::info!("node {}: leaving the cluster", id.0);
                Ok(Some(
                    self.membership.set_local_status(MemberStatus::Leaving),
                ))
            }
        }
    }
}

/// The node's glue: a changed placement is news for the writer epochs.
impl Node {
    /// True when this node is in `partition`'s preference list.
    pub(crate) fn replicates(&self, partition: usize) -> bool {
        self.view.replicates(self.shared.id, partition)
    }

    /// Applies a change of this node's own view entry.
    pub(crate) fn view_changed(&mut self, merged: Merged) {
        if let Some(old) = self.view.apply(&self.shared, &mut self.peers, merged) {
            self.placement_changed(&old);
        }
        self.view_store.store(&mut self.shared, &self.view);
    }

    /// The placement changed from `old`: the writer epochs hear of it, and when a
    /// member dropped out of it (it left, or was removed), this node owes every other
    /// replica of each partition it replicates whose replicas changed an exchange of
    /// that partition (nobody hands off what a removed member held): at once, and
    /// again once writes coordinated under the old placement have ended. Until every
    /// node has heard of the change, writes go to the old replicas and a stand-in for
    /// the departed one, whose hint is then dropped; such a write reaches a new
    /// replica only through the second round. The wait: `request_timeout_ms` plus
    /// `SETTLE_ROUNDS` gossip rounds.
    fn placement_changed(&mut self, old: &Ring) {
        self.writer.check_regained(&mut self.shared, &self.view);
        let ring = &self.view.ring;
        let dropped = old
            .members()
            .iter()
            .any(|member| !ring.members().iter().any(|now| now.id == member.id));
        if !dropped || old.partition_count() != ring.partition_count() {
            return;
        }
        let config = &self.shared.config;
        let settled = self.shared.now
            + Duration::from_millis(
                config.request_timeout_ms + SETTLE_ROUNDS * config.gossip_interval_ms,
            );
        let own = self.shared.id;
        for partition in 0..ring.partition_count() {
            if !self.view.replicates(own, partition) {
                continue;
            }
            let changed = ring
                .preference_list(partition)
                .any(|node| !old.preference_list(partition).any(|was| was == node));
            if !changed {
                continue;
            }
            for node in ring.preference_list(partition) {
                if node != own {
                    self.owed.owe(node, partition);
                    self.owed.owe_later(node, partition, settled);
                }
            }
        }
    }

    /// A peer's view arrived (`answer`: it expects this node's in return).
    pub(crate) fn gossip_received(
        &mut self,
        from: NodeId,
        members: &[MemberRecord<'_>],
        answer: bool,
    ) {
        if let Some(old) = self.view.merge(&self.shared, &mut self.peers, members) {
            self.placement_changed(&old);
        }
        self.view
            .acknowledge(&mut self.shared, &mut self.peers, from, answer);
        self.view_store.store(&mut self.shared, &self.view);
    }

    /// The stored view was read at start: merge it as a peer's (see `view_store`).
    pub(crate) fn view_loaded(&mut self, result: Result<Option<&[u8]>, StorageFailure>) {
        self.view_store.loaded(result.is_ok());
        if let Ok(Some(record)) = result {
            let limits = self.shared.config.wire_limits;
            match decode_frame(record, self.shared.config.cluster_id, limits) {
                Ok((Message::Gossip { members }, _)) => {
                    log::info!(
                        "node {}: membership of {} members read back from disk",
                        self.shared.id.0,
                        members.len()
                    );
                    if let Some(old) = self.view.merge(&self.shared, &mut self.peers, &members) {
                        self.placement_changed(&old);
                    }
                }
                other => log::warn!(
                    "node {}: the stored membership record is unreadable ({:?}); starting from the configured members",
                    self.shared.id.0,
                    other.err()
                ),
            }
        }
        self.view_store.store(&mut self.shared, &self.view);
    }

    /// `RINGKV.REMOVE` (see [`View::remove`]).
    pub(crate) fn admin_remove(&mut self, id: NodeId) -> Result<(), &'static str> {
        let merged = self.view.remove(&self.shared, &self.peers, id)?;
        self.view_changed(merged);
        Ok(())
    }

    /// `RINGKV.LEAVE` (see [`View::leave`]).
    pub(crate) fn admin_leave(&mut self) -> Result<(), &'static str> {
        if let Some(merged) = self.view.leave(self.shared.id)? {
            self.view_changed(merged);
        }
        Ok(())
    }
}
