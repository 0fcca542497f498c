//! Delivering the hints this node holds (`hints.rs`) to their owners once they are
//! reachable: a delivery is one of the coordinator's requests. A round every
//! `hint_interval_ms` fills the deliveries up to `hint_deliveries_max`; while background
//! work is admitted (`admission.rs`), each delivered hint's delete starts the next
//! delivery at once, so a returning owner gets a backlog at the pace it acknowledges
//! (and a hint whose delete fails waits for the next round). A refused
//! delivery backs its owner off (`Peers::hints_refused`).

use super::coordinator::{Coordination, Coordinator};
use super::hints::hint_key;
use super::key_ops::KeyOp;
use super::request_id;
use super::requests::{DeliveryRequest, Request};
use super::storage::Space;
use crate::slab::SlotId;
use crate::version::NodeId;
use crate::wire::{MemberStatus, Message, ReplicaStatus};
use core::time::Duration;

/// Delivering hints is coordination: each delivery is a request (bounded by
/// `hint_deliveries_max`) that reads the hint under its key lock, sends it to its
/// owner, and deletes it once the owner acknowledged it durable, unless a write merged
/// into it meanwhile.
impl Coordinator {
    /// Offers hints to owners that are up, within the delivery bound.
    pub(crate) fn deliver_hints(&mut self, cx: &mut Coordination<'_>) {
        if cx.shared.sabotage().skip_repair {
            return;
        }
        let now = cx.shared.now;
        while self.requests.deliveries < cx.shared.config.hint_deliveries_max
            && cx.shared.actions.has_room(4)
        {
            let peers = &*cx.peers;
            let Some((owner, key)) = cx.hints.next_deliverable(|owner| {
                peers
                    .get(owner)
                    .is_some_and(|peer| peer.up && peer.hints_next_at <= now)
            }) else {
                return;
            };
            let generation = cx.hints.generation(owner, &key).unwrap_or(0);
            let request = Request::Delivery(DeliveryRequest {
                owner,
                key,
                generation,
                sent: false,
                attempt_at: now + Duration::from_millis(cx.shared.config.replica_timeout_ms),
            });
            let id = match self.insert_request(cx, request) {
                Ok(id) => id,
                Err(_) => return,
            };
            let Some(Request::Delivery(delivery)) = self.requests.held(id) else {
                return;
            };
            let mut stored = Vec::new();
            hint_key(delivery.owner, &delivery.key, &mut stored);
            if self
                .enqueue_own(cx, Space::Hints, &stored, KeyOp::ReadHint { delivery: id })
                .is_err()
            {
                self.remove_request(cx, id);
                return;
            }
        }
    }

    /// Hints for a member that left the cluster or was removed (`Left` is final) can
    /// never be delivered: delete them, at most `hint_deliveries_max` per round.
    pub(crate) fn drop_departed_hints(&mut self, cx: &mut Coordination<'_>) {
        let mut stored = Vec::new();
        for _ in 0..cx.shared.config.hint_deliveries_max {
            if !cx.shared.actions.has_room(4) {
                return;
            }
            let view = cx.view;
            let departed = |owner| {
                view.membership
                    .get(owner)
                    .is_some_and(|member| member.status == MemberStatus::Left)
            };
            let Some((owner, key)) = cx.hints.next_deliverable(departed) else {
                return;
            };
            let generation = cx.hints.generation(owner, &key).unwrap_or(0);
            // The delete removes the entry; until then a later round may queue it again,
            // which finds it gone.
            cx.hints.delivery_ended(owner, &key);
            hint_key(owner, &key, &mut stored);
            let op = KeyOp::DeleteHint { owner, generation };
            if self.enqueue_own(cx, Space::Hints, &stored, op).is_err() {
                return;
            }
            cx.shared.stats.hints_dropped += 1;
        }
    }

    /// The hint of `id` was read (under its lock): send it to its owner.
    pub(crate) fn send_delivery(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        record: Option<&[u8]>,
    ) {
        let Some(Request::Delivery(delivery)) = self.requests.get_mut(id) else {
            return;
        };
        let Some(record) = record else {
            // Gone already (delivered by an earlier round): forget it.
            let (owner, generation) = (delivery.owner, delivery.generation);
            let key = delivery.key.clone();
            cx.hints.remove_if_unchanged(owner, &key, generation);
            self.remove_request(cx, id);
            return;
        };
        let owner = delivery.owner;
        if !cx.peers.begin_request(owner, cx.shared.now) {
            self.remove_request(cx, id);
            return;
        }
        delivery.sent = true;
        // The generation now: every merge before this read is in `record`.
        delivery.generation = cx.hints.generation(owner, &delivery.key).unwrap_or(0);
        let sent = cx.shared.actions.send(
            owner,
            cx.shared.config.cluster_id,
            &Message::ReplicaPut {
                request: request_id::coordinator(id),
                key: &delivery.key,
                versions: record,
                hint: None,
                // The stand-in deletes its hint once the owner acknowledged.
                durable: true,
            },
        );
        if sent.is_err() {
            self.remove_request(cx, id);
        }
    }

    pub(crate) fn delivery_answer(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        from: NodeId,
        status: ReplicaStatus,
    ) {
        let Some(Request::Delivery(delivery)) = self.requests.get(id) else {
            return;
        };
        if delivery.owner != from || !delivery.sent {
            return;
        }
        let Some(Request::Delivery(delivery)) = self.remove_request(cx, id) else {
            return;
        };
        if status != ReplicaStatus::Ok {
            cx.peers.hints_refused(from, cx.shared.now);
            return;
        }
        cx.shared.stats.hints_delivered += 1;
        cx.peers.hints_delivered(from);
        let mut stored = Vec::new();
        hint_key(delivery.owner, &delivery.key, &mut stored);
        let op = KeyOp::DeleteHint {
            owner: delivery.owner,
            generation: delivery.generation,
        };
        // Refused: the hint stays and is delivered again later (the owner merges it
        // idempotently).
        let _ = self.enqueue_own(cx, Space::Hints, &stored, op);
    }

    pub(crate) fn delivery_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Delivery(delivery)) = self.remove_request(cx, id) else {
            return;
        };
        cx.peers.timed_out(delivery.owner, cx.shared.now);
        cx.peers.hints_refused(delivery.owner, cx.shared.now);
    }
}
