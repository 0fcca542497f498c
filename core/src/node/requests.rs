//! The requests a node coordinates, in flight: what each is waiting for, and the table
//! that holds them under a bound with their deadlines (one per request, re-armed from
//! its state).

use super::RequestError;
use super::actions::ClientId;
use super::read_reply::ReadKind;
use crate::deadline::Deadlines;
use crate::quorum::{ReadQuorum, SyncWrites, WriteQuorum};
use crate::slab::{Slab, SlotId};
use crate::time::Instant;
use crate::version::{Dot, NodeId, Value, VersionVector};
use smallvec::SmallVec;

/// Where the outcome of a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    Client {
        client: ClientId,
        tag: u64,
        /// When the command arrived, for the foreground latency admission watches.
        received_at: Instant,
    },
    /// A peer forwarded this write here.
    Peer { peer: NodeId, request: u64 },
    /// One key of a DEL or EXISTS.
    Batch { parent: SlotId },
}

/// What to write, before a replica mints it.
#[derive(Clone, Debug)]
pub(crate) struct WriteSpec {
    /// `None`: a plain SET or DEL, superseding what the minting replica holds.
    pub(crate) context: Option<VersionVector>,
    pub(crate) value: Value,
    pub(crate) write_quorum: u8,
    /// Which replicas sync the write before acknowledging.
    pub(crate) sync: SyncWrites,
    /// A forwarded write an earlier attempt may have minted (see `coordinator::forward`).
    pub(crate) retry: Option<Retry>,
}

/// A forwarded write's attempt after one that may have been minted.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    /// This attempt's one-shot id: the write is minted as the dot `(id, 1)`.
    pub(crate) id: NodeId,
    /// The earlier attempts' ids, the first attempt's (its value's alias) first.
    pub(crate) earlier: AttemptIds,
}

/// The ids of a forwarded write's attempts that may have been minted; at most
/// `coordinator::forward::ATTEMPTS_MAX`.
pub(crate) type AttemptIds = SmallVec<[NodeId; 4]>;

#[derive(Debug)]
pub(crate) struct ReadRequest {
    pub(crate) reply: ReplyTo,
    pub(crate) kind: ReadKind,
    pub(crate) key: Vec<u8>,
    pub(crate) partition: usize,
    pub(crate) quorum: ReadQuorum,
    pub(crate) required: u8,
    /// How many of `quorum.targets()` were asked at the start (their answer times feed
    /// `coordinator::speculation`).
    pub(crate) first_asked: u8,
    /// Healthy targets not asked yet (a read asks R of its N; see `coordinator::read`).
    pub(crate) spare: SmallVec<[NodeId; 8]>,
    pub(crate) started_at: Instant,
    pub(crate) replied: bool,
    /// When the spare targets are asked, the next replica timeout, or after the reply
    /// the end of the read-repair window.
    pub(crate) attempt_at: Instant,
    pub(crate) final_at: Instant,
}

#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) reply: ReplyTo,
    pub(crate) reply_context: bool,
    pub(crate) key: Vec<u8>,
    pub(crate) partition: usize,
    /// Whose dot the write gets: this node, or a fresh stand-in writer id.
    pub(crate) writer: NodeId,
    /// Some(owner): this node keeps its copy as a hint for `owner`.
    pub(crate) local_owner: Option<NodeId>,
    /// The client's write; once minted its value lives in `versions` (and this holds a
    /// tombstone in its place), the context and quorum stay for handing it on.
    pub(crate) spec: WriteSpec,
    /// The dot this node minted the write under, once it did.
    pub(crate) minted: Option<Dot>,
    /// The minted versions, encoded.
    pub(crate) versions: Vec<u8>,
    pub(crate) context: VersionVector,
    pub(crate) write_quorum: u8,
    pub(crate) quorum: Option<WriteQuorum>,
    /// (stand-in, the owner it stands in for).
    pub(crate) stand_ins: SmallVec<[(NodeId, NodeId); 4]>,
    pub(crate) replied: bool,
    /// A replica that took the write held a value before it (a DEL's count).
    pub(crate) existed: bool,
    pub(crate) attempt_at: Instant,
    pub(crate) final_at: Instant,
}

#[derive(Debug)]
pub(crate) struct ForwardRequest {
    pub(crate) reply: ReplyTo,
    pub(crate) reply_context: bool,
    pub(crate) key: Vec<u8>,
    pub(crate) partition: usize,
    pub(crate) spec: WriteSpec,
    pub(crate) to: NodeId,
    /// `to`'s link generation when the forward was sent (`Peers::link_generation`).
    pub(crate) link_generation: u64,
    pub(crate) tried: SmallVec<[NodeId; 4]>,
    /// The current attempt's one-shot id (a first attempt's is its value's alias).
    pub(crate) attempt: NodeId,
    /// The ids of the earlier attempts that may have been minted: when there are any,
    /// the current attempt is a retry.
    pub(crate) earlier: AttemptIds,
    /// The current attempt may be minted (it was sent, and not refused unwritten).
    pub(crate) may_be_minted: bool,
    /// When the current attempt was sent.
    pub(crate) sent_at: Instant,
    pub(crate) attempt_at: Instant,
    pub(crate) final_at: Instant,
}

#[derive(Debug)]
pub(crate) struct BatchRequest {
    pub(crate) client: ClientId,
    pub(crate) tag: u64,
    pub(crate) remaining: u32,
    pub(crate) count: i64,
    pub(crate) error: Option<RequestError>,
}

#[derive(Debug)]
pub(crate) struct DeliveryRequest {
    pub(crate) owner: NodeId,
    pub(crate) key: Vec<u8>,
    pub(crate) generation: u64,
    pub(crate) sent: bool,
    pub(crate) attempt_at: Instant,
}

#[derive(Debug)]
pub(crate) enum Request {
    Read(ReadRequest),
    Write(WriteRequest),
    Forward(ForwardRequest),
    Batch(BatchRequest),
    Delivery(DeliveryRequest),
}

impl Request {
    /// When this request next needs attention (`Instant::MAX`: never by itself).
    fn next_deadline(&self) -> Instant {
        match self {
            Request::Read(read) => read.attempt_at.min(read.final_at),
            Request::Write(write) => write.attempt_at.min(write.final_at),
            Request::Forward(forward) => forward.attempt_at.min(forward.final_at),
            Request::Batch(_) => Instant::MAX,
            Request::Delivery(delivery) => delivery.attempt_at,
        }
    }
}

/// The table was at its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// Every request in flight, its deadline, and the hint deliveries among them.
#[derive(Debug)]
pub(crate) struct Requests {
    slab: Slab<Request>,
    deadlines: Deadlines,
    /// Most requests in flight at once.
    pub(crate) peak: usize,
    /// Hint deliveries in flight (bounded by `hint_deliveries_max`), and their peak.
    pub(crate) deliveries: u32,
    pub(crate) deliveries_peak: u32,
}

impl Requests {
    pub(crate) fn new(capacity: u32) -> Requests {
        Requests {
            slab: Slab::with_capacity(capacity),
            deadlines: Deadlines::with_capacity(capacity),
            peak: 0,
            deliveries: 0,
            deliveries_peak: 0,
        }
    }

    /// Adds `request` (refused at `max` requests in flight) and arms its deadline.
    pub(crate) fn insert(&mut self, request: Request, max: usize) -> Result<SlotId, Full> {
        if self.slab.len() >= max {
            return Err(Full);
        }
        let delivery = matches!(request, Request::Delivery(_));
        let id = self.slab.insert(request).map_err(|_| Full)?;
        self.peak = self.peak.max(self.slab.len());
        if delivery {
            self.deliveries += 1;
            self.deliveries_peak = self.deliveries_peak.max(self.deliveries);
        }
        self.arm(id);
        Ok(id)
    }

    /// Re-arms `id`'s deadline from its state.
    pub(crate) fn arm(&mut self, id: SlotId) {
        match self.slab.get(id).map(Request::next_deadline) {
            Some(Instant::MAX) | None => self.deadlines.clear(id.index()),
            Some(at) => self.deadlines.set(id.index(), at),
        }
    }

    /// Takes `id` out with its deadline.
    pub(crate) fn remove(&mut self, id: SlotId) -> Option<Request> {
        self.deadlines.clear(id.index());
        let request = self.slab.remove(id)?;
        if matches!(request, Request::Delivery(_)) {
            self.deliveries = self.deliveries.saturating_sub(1);
        }
        Some(request)
    }

    /// Request `id`, if still in flight (an answer or a completion may come after
    /// its request ended).
    pub(crate) fn get(&self, id: SlotId) -> Option<&Request> {
        self.slab.get(id)
    }

    /// Request `id`, which the caller knows is in flight: a debug build stops here
    /// when it is not (the simulator fails at the first wrong step), a release build
    /// answers `None` and the caller does nothing.
    pub(crate) fn held(&self, id: SlotId) -> Option<&Request> {
        let request = self.slab.get(id);
        debug_assert!(request.is_some(), "request {id:?} is not in flight");
        request
    }

    /// [`Requests::held`], mutable.
    pub(crate) fn held_mut(&mut self, id: SlotId) -> Option<&mut Request> {
        let request = self.slab.get_mut(id);
        debug_assert!(request.is_some(), "request {id:?} is not in flight");
        request
    }

    pub(crate) fn get_mut(&mut self, id: SlotId) -> Option<&mut Request> {
        self.slab.get_mut(id)
    }

    /// Requests in flight.
    /// Forwards sent to `peer`, each with whether it was sent in link generation
    /// `generation`, and writes that wait for `peer`'s acknowledgement.
    pub(crate) fn waiting_on(
        &self,
        peer: NodeId,
        generation: u64,
    ) -> (Vec<(SlotId, bool)>, Vec<SlotId>) {
        let (mut forwards, mut writes) = (Vec::new(), Vec::new());
        for (id, request) in self.slab.iter() {
            match request {
                Request::Forward(forward) if forward.to == peer => {
                    forwards.push((id, forward.link_generation == generation))
                }
                Request::Write(write)
                    if write
                        .quorum
                        .as_ref()
                        .is_some_and(|quorum| quorum.is_pending(peer)) =>
                {
                    writes.push(id)
                }
                _ => {}
            }
        }
        (forwards, writes)
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next_deadline()
    }

    /// A request whose deadline passed by `now` (its deadline disarmed), if any.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<SlotId> {
        loop {
            let index = self.deadlines.pop_expired(now)?;
            if let Some(id) = self.slab.id_at(index) {
                return Some(id);
            }
        }
    }
}
