//! Coordinating a read: R of the first N healthy nodes, stand-ins for the silent,
//! the reply at R, and read repair of the stale replicas once the rest answered or the
//! repair window closed.
//!
//! A read asks R of its N targets, this node first when it is one (its read is a
//! local one), then the others in preference-list order; the rest are spares. It asks
//! the spares when one it asked fails, and all of them when the ones it asked have
//! not answered by the slowest of the recent answer times (`speculation`). One read in
//! `full_read_one_in` asks all N at once, as every read in the Dynamo paper does. The
//! paper's coordinator asks N and waits for R; asking R costs each read N - R
//! requests, answers and loop wakeups (a third of a GET's messages at N=3, R=2) and
//! changes what read repair reaches: a replica a read did not ask is repaired by the
//! sampled full reads, by hints and by anti-entropy, as in Cassandra (which asks its
//! consistency level's count and repairs the rest in the background). R + W > N still
//! makes every read meet every acknowledged write: the R it hears from are distinct
//! replicas or stand-ins, as before.

use super::{Coordination, Coordinator};
use crate::node::RequestError;
use crate::node::read_reply::{ReadKind, write_read};
use crate::node::request_id::{self, NO_REQUEST};
use crate::node::requests::{ReadRequest, ReplyTo, Request};
use crate::node::storage::Space;
use crate::node::tasks::Task;
use crate::quorum::{Progress, ReadQuorum};
use crate::slab::SlotId;
use crate::version::{NodeId, VersionSet};
use crate::wire::Message;
use core::time::Duration;
use smallvec::SmallVec;

impl Coordinator {
    pub(crate) fn start_read(
        &mut self,
        cx: &mut Coordination<'_>,
        reply: ReplyTo,
        kind: ReadKind,
        key: &[u8],
        read_quorum: u8,
    ) {
        cx.shared.stats.reads_coordinated += 1;
        let partition = cx.view.ring.partition_of(key);
        let mut targets = cx.read_targets(partition);
        let required = usize::from(read_quorum);
        let full_read_one_in = u64::from(cx.shared.config.full_read_one_in);
        let spare: SmallVec<[NodeId; 8]> =
            if targets.len() <= required || cx.shared.rng.below(full_read_one_in) == 0 {
                SmallVec::new()
            } else {
                // This node first (its answer is a local read, not a message), then the
                // ones answering before one waited on in silence (frozen or dead, not
                // yet marked down), each in preference order.
                let own = cx.shared.id;
                targets.sort_by_key(|&node| (node != own, !cx.answering(node)));
                targets.drain(required..).collect()
            };
        let wait = if spare.is_empty() {
            Duration::from_millis(cx.shared.config.replica_timeout_ms)
        } else {
            self.answer_times.speculate_after(
                cx.shared.config.read_speculation_min_ms,
                cx.shared.config.replica_timeout_ms,
            )
        };
        let quorum = match ReadQuorum::new(targets.iter().copied(), required) {
            Ok(quorum) => quorum,
            Err(_) => {
                return self.finish_read(
                    cx,
                    reply,
                    kind,
                    Err(RequestError::QuorumUnreachable {
                        operation: "read",
                        required: read_quorum,
                    }),
                );
            }
        };
        let request = Request::Read(ReadRequest {
            reply,
            kind,
            key: key.to_vec(),
            partition,
            quorum,
            required: read_quorum,
            first_asked: u8::try_from(targets.len()).unwrap_or(u8::MAX),
            spare,
            started_at: cx.shared.now,
            replied: false,
            attempt_at: cx.shared.now + wait,
            final_at: cx.deadline_after(cx.shared.config.request_timeout_ms),
        });
        let id = match self.insert_request(cx, request) {
            Ok(id) => id,
            Err(error) => return self.finish_read(cx, reply, kind, Err(error)),
        };
        for target in targets {
            self.ask_for_read(cx, id, target);
        }
        self.read_progress(cx, id);
    }

    /// Sends (or, for this node, reads locally) one replica's part of read `id`.
    pub(super) fn ask_for_read(&mut self, cx: &mut Coordination<'_>, id: SlotId, target: NodeId) {
        let Some(Request::Read(read)) = self.requests.held(id) else {
            return;
        };
        if target == cx.shared.id {
            let task = Task::LocalRead { request: id };
            let started = cx
                .shared
                .tasks
                .start(task, &mut cx.shared.actions, |actions, token| {
                    actions.read(token, Space::Data, &read.key)
                });
            if started.is_none() {
                self.read_failed(cx, id, target);
            }
            return;
        }
        if !cx.peers.begin_request(target, cx.shared.now) {
            return self.read_failed(cx, id, target);
        }
        let sent = cx.shared.actions.send(
            target,
            cx.shared.config.cluster_id,
            &Message::ReplicaGet {
                request: request_id::coordinator(id),
                key: &read.key,
            },
        );
        if sent.is_err() {
            cx.peers.end_request(target);
            self.read_failed(cx, id, target);
        }
    }

    /// `node` will not answer read `id`: count it failed and ask a spare target in its
    /// place (the next in preference order), if one is left.
    pub(super) fn read_failed(&mut self, cx: &mut Coordination<'_>, id: SlotId, node: NodeId) {
        let Some(Request::Read(read)) = self.requests.get_mut(id) else {
            return;
        };
        read.quorum.record_failure(node);
        if read.spare.is_empty() {
            return;
        }
        let spare = read.spare.remove(0);
        read.quorum.add(spare);
        cx.shared.stats.reads_speculated += 1;
        self.ask_for_read(cx, id, spare);
    }

    /// The targets read `id` asked have not all answered in the time recent answers
    /// took: ask every spare too, and take the first R answers.
    fn ask_spares(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Read(read)) = self.requests.get_mut(id) else {
            return;
        };
        let spare = core::mem::take(&mut read.spare);
        let replica_timeout = Duration::from_millis(cx.shared.config.replica_timeout_ms);
        read.attempt_at = (read.started_at + replica_timeout).max(cx.shared.now);
        for &node in &spare {
            read.quorum.add(node);
        }
        cx.shared.stats.reads_speculated += 1;
        for node in spare {
            self.ask_for_read(cx, id, node);
        }
        self.arm(id);
        self.read_progress(cx, id);
    }

    /// `node` answered read `id` (`None` versions: it has nothing; `Err`: it failed).
    pub(crate) fn read_answer(
        &mut self,
        cx: &mut Coordination<'_>,
        id: SlotId,
        node: NodeId,
        answer: Result<Option<VersionSet>, ()>,
    ) {
        let Some(Request::Read(read)) = self.requests.get_mut(id) else {
            return;
        };
        if !read.quorum.is_pending(node) {
            return;
        }
        if node != cx.shared.id {
            cx.peers.end_request(node);
        }
        // Only targets asked at the start time the answer (a spare's answer time counts
        // the wait before it was asked).
        let mut asked_at_start = read.quorum.targets().iter().take(read.first_asked.into());
        if asked_at_start.any(|&target| target == node) {
            self.answer_times
                .record(cx.shared.now.saturating_duration_since(read.started_at));
        }
        match answer {
            Ok(versions) => {
                read.quorum.record_answer(node, versions);
            }
            Err(()) => self.read_failed(cx, id, node),
        }
        self.read_progress(cx, id);
    }

    pub(super) fn read_progress(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Read(read)) = self.requests.held_mut(id) else {
            return;
        };
        let progress = read.quorum.progress();
        let settled = read.quorum.pending().next().is_none();
        match progress {
            Progress::Reached if !read.replied => {
                read.replied = true;
                read.attempt_at =
                    cx.shared.now + Duration::from_millis(cx.shared.config.read_repair_window_ms);
                match read.reply {
                    // Written straight from the quorum's merge: no copy of the versions.
                    ReplyTo::Client {
                        client,
                        tag,
                        received_at,
                    } => {
                        cx.foreground.record(cx.shared.now, received_at);
                        let (kind, merged) = (read.kind, read.quorum.merged());
                        let _ = cx
                            .shared
                            .actions
                            .reply(client, tag, false, |out| write_read(out, kind, merged));
                    }
                    reply => {
                        let (kind, merged) = (read.kind, read.quorum.merged().clone());
                        self.finish_read(cx, reply, kind, Ok(&merged));
                    }
                }
                if settled {
                    self.end_read(cx, id);
                } else {
                    self.arm(id);
                }
            }
            Progress::Reached if settled => self.end_read(cx, id),
            Progress::Unreachable => {
                if !read.replied {
                    let (reply, kind, required) = (read.reply, read.kind, read.required);
                    self.finish_read(
                        cx,
                        reply,
                        kind,
                        Err(RequestError::QuorumUnreachable {
                            operation: "read",
                            required,
                        }),
                    );
                }
                self.end_read(cx, id);
            }
            _ => {}
        }
    }

    /// Ends read `id`, sending read repair to the replicas that answered with less.
    pub(super) fn end_read(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let Some(Request::Read(read)) = self.remove_request(cx, id) else {
            debug_assert!(false, "read {id:?} ended twice");
            return;
        };
        if !read.replied || cx.shared.sabotage().skip_repair {
            return;
        }
        let merged = read.quorum.merged();
        let stale: SmallVec<[NodeId; 8]> = read
            .quorum
            .stale_replicas()
            .filter(|&node| {
                cx.view
                    .ring
                    .preference_list(read.partition)
                    .any(|replica| replica == node)
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        cx.shared.scratch.clear();
        merged.encode(&mut cx.shared.scratch);
        let versions = std::mem::take(&mut cx.shared.scratch);
        for node in stale {
            cx.shared.stats.read_repairs_sent += 1;
            if node == cx.shared.id {
                // Refused when this key's lock queue is full: the next read repairs it.
                let merge =
                    cx.replica
                        .merge(cx.shared, &read.key, merged.clone(), None, None, false);
                if let Ok(Some(lock)) = merge {
                    self.run_own_lock(cx, lock);
                }
                continue;
            }
            cx.shared.send(
                node,
                &Message::ReplicaPut {
                    request: NO_REQUEST,
                    key: &read.key,
                    versions: &versions,
                    hint: None,
                    durable: false,
                },
            );
        }
        cx.shared.scratch = versions;
    }

    pub(super) fn read_deadline(&mut self, cx: &mut Coordination<'_>, id: SlotId) {
        let now = cx.shared.now;
        let Some(Request::Read(read)) = self.requests.held_mut(id) else {
            return;
        };
        if read.replied {
            // The read-repair window is over.
            return self.end_read(cx, id);
        }
        if now >= read.final_at {
            cx.shared.stats.requests_timed_out += 1;
            let (reply, kind, required) = (read.reply, read.kind, read.required);
            self.finish_read(
                cx,
                reply,
                kind,
                Err(RequestError::QuorumTimeout {
                    operation: "read",
                    required,
                }),
            );
            self.remove_request(cx, id);
            return;
        }
        if !read.spare.is_empty() {
            return self.ask_spares(cx, id);
        }
        // Replica timeout: suspect the silent ones and ask the next healthy nodes.
        let partition = read.partition;
        let silent: SmallVec<[NodeId; 8]> = read.quorum.pending().collect();
        read.attempt_at = now + Duration::from_millis(cx.shared.config.replica_timeout_ms);
        for node in silent {
            cx.peers.timed_out(node, now);
            cx.peers.end_request(node);
            let Some(Request::Read(read)) = self.requests.held(id) else {
                return;
            };
            match cx.next_stand_in(partition, read.quorum.targets()) {
                Some(stand_in) => {
                    if let Some(Request::Read(read)) = self.requests.get_mut(id) {
                        read.quorum.replace(node, stand_in);
                    }
                    self.ask_for_read(cx, id, stand_in);
                }
                None => self.read_failed(cx, id, node),
            }
        }
        self.arm(id);
        self.read_progress(cx, id);
    }
}
