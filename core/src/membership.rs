//! Membership: each node's gossiped view of who is in the cluster (design.md section 6).
//!
//! A view holds one entry per node that ever announced itself: its id, the addresses
//! peers and clients reach it at, its weight and zone, its lifecycle status, a
//! `version` and a `heartbeat`. No node is special: every node keeps a full view, and
//! views converge by push-pull gossip (every gossip interval a node sends its view to
//! one random live member, now and then to a seed instead, and the receiver answers
//! with its own view; both merge).
//!
//! # Who changes what
//!
//! A member's entry is written only by that member (its status, addresses, weight and
//! zone, bumping `version`; its `heartbeat`, every round). Entries merge field by field
//! without coordination:
//! - `Left` is final: once a view holds a member as `Left`, no record brings it back.
//!   A node that left can never rejoin under the same id (its old dots live on in the
//!   cluster's clocks; a new incarnation must have a new id).
//! - Otherwise the record with the larger `version` wins; at equal versions the later
//!   status (`Joining < Up < Leaving < Left`) wins, so every view picks the same one.
//! - Heartbeats take the maximum, and a member whose heartbeat advanced was alive
//!   recently; one whose heartbeat stops advancing is suspected by everyone within a
//!   few rounds, even by nodes that never talk to it (gossip-style failure detection
//!   after van Renesse et al., 1998). Suspicion only starts probes; requests still use
//!   local evidence (see `node::peers`).
//! - A record about this node itself that is newer than its own entry (it restarted and
//!   forgot its version, say) is answered by taking the larger status and bumping past
//!   it, so the node's own word is always the newest. Its heartbeat jumps past any
//!   heartbeat the cluster remembers for it.
//!
//! # Joining
//!
//! A node outside the initial cluster starts `Joining` with seeds. The first merge
//! that shows it an `Up` member (it has heard the cluster) turns it `Up`, and from then
//! on its entry spreads like any other.
//!
//! # Placement
//!
//! Placement ([`crate::placement::Ring`]) is computed from the members that are `Up`:
//! a `Joining` node has announced itself but not yet heard the cluster's view; a
//! `Leaving` node is out of every preference list and hands its data to the new
//! owners before it marks itself `Left`. Every node whose view agrees on the `Up`
//! members, weights and zones computes the same preference lists;
//! [`Membership::placement_digest`] summarises exactly that part of a view.
//!
//! # Bounds
//!
//! At most `members_max` entries (`Left` ones included, so ids are never reused);
//! records past it are refused and counted. Addresses are bounded by the wire's key
//! limit.

use crate::placement::Member;
use crate::random::Rng;
use crate::time::Instant;
use crate::version::NodeId;
use crate::wire::{MemberRecord, MemberStatus};
use xxhash_rust::xxh3::Xxh3;

/// Longest peer or client address kept in a view.
pub const ADDRESS_SIZE_BYTES_MAX: usize = 256;

/// One member as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub id: NodeId,
    pub peer_address: Vec<u8>,
    pub client_address: Vec<u8>,
    pub weight: u32,
    pub zone: Option<u32>,
    pub status: MemberStatus,
    pub version: u64,
    pub heartbeat: u64,
    /// When this node last saw the heartbeat advance (local time, never gossiped).
    pub heartbeat_seen_at: Instant,
}

impl MemberState {
    /// An entry from a gossiped record, first heard at `now`.
    fn from_record(record: &MemberRecord<'_>, now: Instant) -> MemberState {
        MemberState {
            id: record.id,
            peer_address: record.peer_address.to_vec(),
            client_address: record.client_address.to_vec(),
            weight: record.weight,
            zone: (record.zone != u32::MAX).then_some(record.zone),
            status: record.status,
            version: record.version,
            heartbeat: record.heartbeat,
            heartbeat_seen_at: now,
        }
    }

    /// The entry as gossip carries it.
    pub fn record(&self) -> MemberRecord<'_> {
        MemberRecord {
            id: self.id,
            peer_address: &self.peer_address,
            client_address: &self.client_address,
            weight: self.weight,
            zone: self.zone.unwrap_or(u32::MAX),
            status: self.status,
            version: self.version,
            heartbeat: self.heartbeat,
        }
    }

    /// True while the member takes part in placement.
    pub fn is_placed(&self) -> bool {
        self.status == MemberStatus::Up
    }
}

/// What this node says about itself when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    pub id: NodeId,
    pub peer_address: Vec<u8>,
    pub client_address: Vec<u8>,
    pub weight: u32,
    pub zone: Option<u32>,
    /// `Up` for a member of the initial cluster, `Joining` for a node joining one.
    pub status: MemberStatus,
}

/// Why a view refused something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The view is full; the record was dropped.
    TooManyMembers {
        max: usize,
    },
    ZeroWeight(NodeId),
    AddressTooLong {
        size: usize,
        max: usize,
    },
}

impl core::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MembershipError::TooManyMembers { max } => {
                write!(f, "the membership view is full ({max} members)")
            }
            MembershipError::ZeroWeight(id) => write!(f, "member {} has weight 0", id.0),
            MembershipError::AddressTooLong { size, max } => {
                write!(f, "address of {size} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for MembershipError {}

/// What a merge changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Some entry other than heartbeats changed.
    pub changed: bool,
    /// The placement (members `Up`, their weights and zones) changed.
    pub placement_changed: bool,
    /// Records dropped because the view was full or they were malformed.
    pub refused: u32,
    /// This node was `Joining` and, having heard of an `Up` member, is now `Up`.
    pub joined: bool,
}

/// Where the next gossip round goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipTarget<'a> {
    Member(NodeId),
    /// A seed known only by its peer address.
    Seed(&'a [u8]),
}

/// One node's view of the cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    local: NodeId,
    /// Sorted by id; `local` is always present.
    members: Vec<MemberState>,
    members_max: usize,
    seeds: Vec<Vec<u8>>,
    placement_digest: u64,
    /// Records refused so far (view full, malformed).
    pub refused: u64,
}

fn status_rank(status: MemberStatus) -> u8 {
    match status {
        MemberStatus::Joining => 0,
        MemberStatus::Up => 1,
        MemberStatus::Leaving => 2,
        MemberStatus::Left => 3,
    }
}

/// True when `record` should replace `current` (see the module docs).
fn supersedes(record: &MemberRecord<'_>, current: &MemberState) -> bool {
    if current.status == MemberStatus::Left {
        return false;
    }
    if record.status == MemberStatus::Left {
        return true;
    }
    (record.version, status_rank(record.status)) > (current.version, status_rank(current.status))
}

fn check_record(record: &MemberRecord<'_>) -> Result<(), MembershipError> {
    if record.weight == 0 {
        return Err(MembershipError::ZeroWeight(record.id));
    }
    for address in [record.peer_address, record.client_address] {
        if address.len() > ADDRESS_SIZE_BYTES_MAX {
            return Err(MembershipError::AddressTooLong {
                size: address.len(),
                max: ADDRESS_SIZE_BYTES_MAX,
            });
        }
    }
    Ok(())
}

impl Membership {
    /// A view holding `local` and the members of the initial cluster (`Up`, version 1,
    /// addresses unknown until they gossip), with `seeds` to ask when alone.
    pub fn new(
        local: LocalMember,
        initial: &[Member],
        seeds: Vec<Vec<u8>>,
        members_max: usize,
        now: Instant,
    ) -> Result<Membership, MembershipError> {
        let own = MemberRecord {
            id: local.id,
            peer_address: &local.peer_address,
            client_address: &local.client_address,
            weight: local.weight,
            zone: local.zone.unwrap_or(u32::MAX),
            status: local.status,
            version: 1,
            heartbeat: 0,
        };
        check_record(&own)?;
        let mut members = vec![MemberState::from_record(&own, now)];
        for member in initial.iter().filter(|member| member.id != local.id) {
            if member.weight == 0 {
                return Err(MembershipError::ZeroWeight(member.id));
            }
            members.push(MemberState {
                id: member.id,
                peer_address: Vec::new(),
                client_address: Vec::new(),
                weight: member.weight,
                zone: member.zone,
                status: MemberStatus::Up,
                version: 1,
                heartbeat: 0,
                heartbeat_seen_at: now,
            });
        }
        if members.len() > members_max.max(1) {
            return Err(MembershipError::TooManyMembers { max: members_max });
        }
        members.sort_by_key(|member| member.id);
        members.dedup_by_key(|member| member.id);
        let mut view = Membership {
            local: local.id,
            members,
            members_max: members_max.max(1),
            seeds,
            placement_digest: 0,
            refused: 0,
        };
        view.refresh_placement_digest();
        Ok(view)
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// This node's own entry.
    pub fn local(&self) -> &MemberState {
        // The local entry is inserted by `new` and never removed.
        let index = self.index_of(self.local).unwrap_or(0);
        &self.members[index]
    }

    /// Every entry, sorted by id.
    pub fn members(&self) -> &[MemberState] {
        &self.members
    }

    /// The entry for `id`.
    pub fn get(&self, id: NodeId) -> Option<&MemberState> {
        self.index_of(id).map(|index| &self.members[index])
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.members
            .binary_search_by_key(&id, |member| member.id)
            .ok()
    }

    /// The members placement is computed from (those `Up`), sorted by id.
    pub fn placement(&self) -> Vec<Member> {
        self.members
            .iter()
            .filter(|member| member.is_placed())
            .map(|member| Member {
                id: member.id,
                weight: member.weight,
                zone: member.zone,
            })
            .collect()
    }

    /// A hash of the placement-relevant part of the view: two views with the same
    /// digest compute the same preference lists.
    pub fn placement_digest(&self) -> u64 {
        self.placement_digest
    }

    fn compute_placement_digest(&self) -> u64 {
        let mut hasher = Xxh3::new();
        for member in self.members.iter().filter(|member| member.is_placed()) {
            hasher.update(&member.id.0.to_le_bytes());
            hasher.update(&member.weight.to_le_bytes());
            hasher.update(&member.zone.unwrap_or(u32::MAX).to_le_bytes());
        }
        hasher.digest()
    }

    /// A digest of every entry but heartbeats: two views that agree on it agree on
    /// every member's status, version, addresses, weight and zone.
    pub fn view_digest(&self) -> u64 {
        let mut hasher = Xxh3::new();
        for member in &self.members {
            hasher.update(&member.id.0.to_le_bytes());
            hasher.update(&member.version.to_le_bytes());
            hasher.update(&[status_rank(member.status)]);
            hasher.update(&member.weight.to_le_bytes());
            hasher.update(&member.zone.unwrap_or(u32::MAX).to_le_bytes());
            hasher.update(&(member.peer_address.len() as u64).to_le_bytes());
            hasher.update(&member.peer_address);
            hasher.update(&member.client_address);
        }
        hasher.digest()
    }

    /// The entries as gossip carries them.
    pub fn records(&self) -> impl Iterator<Item = MemberRecord<'_>> + '_ {
        self.members.iter().map(MemberState::record)
    }

    /// Merges a peer's view at `now`.
    pub fn merge(&mut self, records: &[MemberRecord<'_>], now: Instant) -> Merged {
        let mut merged = Merged::default();
        for record in records {
            match self.merge_one(record, now) {
                Ok(changed) => merged.changed |= changed,
                Err(_) => merged.refused += 1,
            }
        }
        self.refused += u64::from(merged.refused);
        // A joining node that has heard the cluster announces itself Up: from now on
        // its own entry spreads with every round.
        if self.local().status == MemberStatus::Joining
            && self
                .members
                .iter()
                .any(|member| member.id != self.local && member.is_placed())
        {
            merged.joined = self.change_own_status(MemberStatus::Up);
            merged.changed |= merged.joined;
        }
        if merged.changed {
            merged.placement_changed = self.refresh_placement_digest();
        }
        merged
    }

    /// Sets this node's own status, bumping its version; false when nothing changed
    /// (`Left` is final).
    fn change_own_status(&mut self, status: MemberStatus) -> bool {
        let Some(index) = self.index_of(self.local) else {
            return false;
        };
        let own = &mut self.members[index];
        if own.status == status || own.status == MemberStatus::Left {
            return false;
        }
        own.status = status;
        own.version += 1;
        true
    }

    /// Recomputes the placement digest; true when it changed.
    fn refresh_placement_digest(&mut self) -> bool {
        let digest = self.compute_placement_digest();
        let changed = digest != self.placement_digest;
        self.placement_digest = digest;
        changed
    }

    fn merge_one(
        &mut self,
        record: &MemberRecord<'_>,
        now: Instant,
    ) -> Result<bool, MembershipError> {
        check_record(record)?;
        if record.id == self.local {
            return Ok(self.merge_about_self(record));
        }
        let Some(index) = self.index_of(record.id) else {
            if self.members.len() >= self.members_max {
                return Err(MembershipError::TooManyMembers {
                    max: self.members_max,
                });
            }
            let state = MemberState::from_record(record, now);
            let at = self.members.partition_point(|member| member.id < record.id);
            self.members.insert(at, state);
            return Ok(true);
        };
        let member = &mut self.members[index];
        if record.heartbeat > member.heartbeat {
            member.heartbeat = record.heartbeat;
            member.heartbeat_seen_at = now;
        }
        // The initial cluster's entries start without addresses: take them from any
        // record of the same version, which only their owner can have written.
        let fills_addresses = record.version == member.version
            && member.peer_address.is_empty()
            && !record.peer_address.is_empty();
        if !supersedes(record, member) && !fills_addresses {
            return Ok(false);
        }
        if supersedes(record, member) {
            member.weight = record.weight;
            member.zone = (record.zone != u32::MAX).then_some(record.zone);
            member.status = record.status;
            member.version = record.version;
        }
        member.peer_address.clear();
        member.peer_address.extend_from_slice(record.peer_address);
        member.client_address.clear();
        member
            .client_address
            .extend_from_slice(record.client_address);
        Ok(true)
    }

    fn merge_about_self(&mut self, record: &MemberRecord<'_>) -> bool {
        let Some(index) = self.index_of(self.local) else {
            return false;
        };
        let own = &mut self.members[index];
        if record.heartbeat >= own.heartbeat {
            own.heartbeat = record.heartbeat + 1;
        }
        if own.status == MemberStatus::Left || !supersedes(record, own) {
            return false;
        }
        // Someone remembers a newer word from this node (it restarted and forgot, or an
        // operator removed it): keep the later status and speak last.
        if status_rank(record.status) > status_rank(own.status) {
            own.status = record.status;
        }
        own.version = record.version + 1;
        true
    }

    /// Advances this node's heartbeat (once per gossip round).
    pub fn beat(&mut self, now: Instant) {
        if let Some(index) = self.index_of(self.local) {
            let own = &mut self.members[index];
            own.heartbeat += 1;
            own.heartbeat_seen_at = now;
        }
    }

    /// Changes this node's own status; returns what changed. `Left` is final.
    pub fn set_local_status(&mut self, status: MemberStatus) -> Merged {
        if !self.change_own_status(status) {
            return Merged::default();
        }
        Merged {
            changed: true,
            placement_changed: self.refresh_placement_digest(),
            ..Merged::default()
        }
    }

    /// Marks member `id` (not this node) `Left` on its behalf (`RINGKV.REMOVE`): the
    /// one entry another node writes. `Left` is final, so the member stays out even if
    /// it comes back (it must start under a new id). None: no such member, or it is
    /// this node.
    pub fn remove_member(&mut self, id: NodeId) -> Option<Merged> {
        if id == self.local {
            return None;
        }
        let index = self.index_of(id)?;
        let member = &mut self.members[index];
        if member.status == MemberStatus::Left {
            return Some(Merged::default());
        }
        member.status = MemberStatus::Left;
        member.version += 1;
        Some(Merged {
            changed: true,
            placement_changed: self.refresh_placement_digest(),
            ..Merged::default()
        })
    }

    /// Adds a seed address (`RINGKV.JOIN`); false when it is already known or too long.
    pub fn add_seed(&mut self, address: &[u8]) -> bool {
        if address.is_empty()
            || address.len() > ADDRESS_SIZE_BYTES_MAX
            || self.seeds.iter().any(|seed| seed == address)
            || self.seeds.len() >= self.members_max
        {
            return false;
        }
        self.seeds.push(address.to_vec());
        true
    }

    /// The seeds' peer addresses.
    pub fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    /// Picks the next gossip partner: a uniformly random member that is not `Left` and
    /// that `reachable` accepts, or a seed one round in `seed_one_in` (and whenever no
    /// member qualifies).
    pub fn gossip_target(
        &self,
        rng: &mut Rng,
        seed_one_in: u32,
        reachable: impl Fn(NodeId) -> bool,
    ) -> Option<GossipTarget<'_>> {
        let candidate = |member: &&MemberState| {
            member.id != self.local && member.status != MemberStatus::Left && reachable(member.id)
        };
        let count = self.members.iter().filter(candidate).count();
        let use_seed =
            !self.seeds.is_empty() && (count == 0 || rng.below(u64::from(seed_one_in.max(1))) == 0);
        if use_seed {
            let index = rng.below(self.seeds.len() as u64) as usize;
            return self.seeds.get(index).map(|seed| GossipTarget::Seed(seed));
        }
        if count == 0 {
            return None;
        }
        let pick = rng.below(count as u64) as usize;
        self.members
            .iter()
            .filter(candidate)
            .nth(pick)
            .map(|member| GossipTarget::Member(member.id))
    }

    /// Members (not this node, not `Left`) whose heartbeat has not advanced for
    /// `silence_ms` up to `now`.
    pub fn silent_members(
        &self,
        now: Instant,
        silence_ms: u64,
    ) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(move |member| {
                member.id != self.local
                    && member.status != MemberStatus::Left
                    && now
                        .saturating_duration_since(member.heartbeat_seen_at)
                        .as_millis()
                        >= u128::from(silence_ms)
            })
            .map(|member| member.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn local(id: u64, status: MemberStatus) -> LocalMember {
        LocalMember {
            id: NodeId(id),
            peer_address: format!("127.0.0.1:{}", 7000 + id).into_bytes(),
            client_address: format!("127.0.0.1:{}", 8000 + id).into_bytes(),
            weight: 1,
            zone: None,
            status,
        }
    }

    fn initial(ids: &[u64]) -> Vec<Member> {
        ids.iter().map(|&id| Member::equal(NodeId(id))).collect()
    }

    fn view(id: u64, cluster: &[u64]) -> Membership {
        Membership::new(
            local(id, MemberStatus::Up),
            &initial(cluster),
            Vec::new(),
            64,
            Instant::ZERO,
        )
        .unwrap()
    }

    /// One push-pull round: `a` sends its view to `b`, `b` answers with its own.
    fn exchange(a: &mut Membership, b: &mut Membership, now: Instant) {
        let sent: Vec<MemberState> = a.members().to_vec();
        b.merge(
            &sent.iter().map(MemberState::record).collect::<Vec<_>>(),
            now,
        );
        let answer: Vec<MemberState> = b.members().to_vec();
        a.merge(
            &answer.iter().map(MemberState::record).collect::<Vec<_>>(),
            now,
        );
    }

    #[test]
    fn a_joining_node_learns_the_cluster_and_the_cluster_learns_it() {
        let mut a = view(1, &[1, 2, 3]);
        let mut joining = Membership::new(
            local(9, MemberStatus::Joining),
            &[],
            vec![b"127.0.0.1:7001".to_vec()],
            64,
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(joining.placement(), Vec::new());
        let before = a.placement_digest();
        // The seed learns of a Joining node: not placed yet.
        let sent: Vec<MemberState> = joining.members().to_vec();
        a.merge(
            &sent.iter().map(MemberState::record).collect::<Vec<_>>(),
            Instant::ZERO,
        );
        assert_eq!(a.get(NodeId(9)).unwrap().status, MemberStatus::Joining);
        assert_eq!(a.placement_digest(), before);
        // Its answer shows the joiner Up members, so the joiner turns Up.
        let answer: Vec<MemberState> = a.members().to_vec();
        let merged = joining.merge(
            &answer.iter().map(MemberState::record).collect::<Vec<_>>(),
            Instant::ZERO,
        );
        assert!(merged.joined && merged.placement_changed);
        assert_eq!(joining.members().len(), 4);
        exchange(&mut joining, &mut a, Instant::ZERO);
        assert_ne!(a.placement_digest(), before);
        assert_eq!(a.placement_digest(), joining.placement_digest());
        assert_eq!(a.placement().len(), 4);
    }

    #[test]
    fn left_is_final_and_later_versions_win() {
        let mut a = view(1, &[1, 2]);
        let mut b = view(2, &[1, 2]);
        b.set_local_status(MemberStatus::Leaving);
        exchange(&mut a, &mut b, Instant::ZERO);
        assert_eq!(a.get(NodeId(2)).unwrap().status, MemberStatus::Leaving);
        b.set_local_status(MemberStatus::Left);
        exchange(&mut a, &mut b, Instant::ZERO);
        assert_eq!(a.get(NodeId(2)).unwrap().status, MemberStatus::Left);
        // A stale record claiming Up at a far larger version changes nothing.
        let mut stale = b.get(NodeId(2)).unwrap().clone();
        stale.status = MemberStatus::Up;
        stale.version = 1_000;
        assert!(!a.merge(&[stale.record()], Instant::ZERO).changed);
        assert_eq!(a.get(NodeId(2)).unwrap().status, MemberStatus::Left);
        // And the node itself cannot undo it.
        assert!(!b.set_local_status(MemberStatus::Up).changed);
    }

    #[test]
    fn a_restarted_node_speaks_past_what_the_cluster_remembers_of_it() {
        let mut a = view(1, &[1, 2]);
        let mut b = view(2, &[1, 2]);
        for _ in 0..5 {
            b.beat(Instant::ZERO);
        }
        b.set_local_status(MemberStatus::Leaving);
        exchange(&mut a, &mut b, Instant::ZERO);
        // Node 2 restarts and forgets: it comes back Up at version 1, heartbeat 0.
        let mut restarted = view(2, &[1, 2]);
        exchange(&mut restarted, &mut a, Instant::ZERO);
        let own = restarted.local();
        assert_eq!(
            own.status,
            MemberStatus::Leaving,
            "the later status is kept"
        );
        assert!(own.version > 2 && own.heartbeat > 5);
        exchange(&mut restarted, &mut a, Instant::ZERO);
        assert_eq!(a.get(NodeId(2)).unwrap().version, restarted.local().version);
    }

    #[test]
    fn merging_is_order_independent() {
        let mut seed_rng = Rng::new(7);
        let mut views: Vec<Membership> = (1..=6).map(|id| view(id, &[1, 2, 3])).collect();
        views[3].set_local_status(MemberStatus::Joining);
        views[4].set_local_status(MemberStatus::Up);
        views[5].set_local_status(MemberStatus::Leaving);
        views[1].set_local_status(MemberStatus::Leaving);
        for _ in 0..200 {
            let a = seed_rng.below(6) as usize;
            let b = seed_rng.below(6) as usize;
            if a != b {
                let (low, high) = (a.min(b), a.max(b));
                let (left, right) = views.split_at_mut(high);
                exchange(&mut left[low], &mut right[0], Instant::ZERO);
            }
        }
        let digest = views[0].view_digest();
        assert!(views.iter().all(|v| v.view_digest() == digest));
    }

    #[test]
    fn a_silent_member_is_suspected_and_a_beating_one_is_not() {
        let mut a = view(1, &[1, 2, 3]);
        let mut b = view(2, &[1, 2, 3]);
        let later = Instant::ZERO + Duration::from_millis(5_000);
        b.beat(later);
        exchange(&mut a, &mut b, later);
        let silent: Vec<NodeId> = a.silent_members(later, 3_000).collect();
        assert_eq!(silent, vec![NodeId(3)]);
    }

    #[test]
    fn a_full_view_refuses_new_members_and_bad_records() {
        let mut a = Membership::new(
            local(1, MemberStatus::Up),
            &initial(&[1, 2]),
            Vec::new(),
            2,
            Instant::ZERO,
        )
        .unwrap();
        let mut stranger = view(3, &[3]).local().clone();
        stranger.version = 1;
        let merged = a.merge(&[stranger.record()], Instant::ZERO);
        assert_eq!((merged.changed, merged.refused), (false, 1));
        let mut weightless = a.get(NodeId(2)).unwrap().clone();
        weightless.weight = 0;
        weightless.version = 9;
        assert_eq!(a.merge(&[weightless.record()], Instant::ZERO).refused, 1);
        assert_eq!(a.get(NodeId(2)).unwrap().version, 1);
    }

    #[test]
    fn gossip_picks_live_members_and_falls_back_to_seeds() {
        let mut rng = Rng::new(3);
        let alone = Membership::new(
            local(9, MemberStatus::Joining),
            &[],
            vec![b"seed".to_vec()],
            64,
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(
            alone.gossip_target(&mut rng, 10, |_| true),
            Some(GossipTarget::Seed(b"seed"))
        );
        let a = view(1, &[1, 2, 3]);
        let mut seen = [0u32; 4];
        for _ in 0..300 {
            match a.gossip_target(&mut rng, 10, |id| id != NodeId(3)) {
                Some(GossipTarget::Member(id)) => seen[id.0 as usize] += 1,
                other => panic!("unexpected target {other:?}"),
            }
        }
        assert_eq!((seen[1], seen[3]), (0, 0));
        assert_eq!(seen[2], 300);
    }
}
