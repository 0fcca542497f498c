//! What every concern of the node uses while it handles an event: the configuration,
//! the node's id, the time, randomness, and the outputs (the action queue, the storage
//! task registry, the counters). Each concern owns its own state; this is the one
//! piece they share, handed to them by the node.

use super::actions::ActionQueue;
use super::tasks::{Task, Tasks};
use super::{Config, Stats};
use crate::random::Rng;
use crate::time::Instant;
use crate::version::NodeId;
use crate::wire::Message;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) id: NodeId,
    /// The latest `now` handed in (never goes back).
    pub(crate) now: Instant,
    pub(crate) rng: Rng,
    /// What the shell is asked to do, until polled.
    pub(crate) actions: ActionQueue,
    /// Storage operations in flight, by what each is for.
    pub(crate) tasks: Tasks,
    pub(crate) stats: Stats,
    /// Reused for storage keys of hints and encoded versions.
    pub(crate) scratch: Vec<u8>,
}

impl Shared {
    /// Queues a frame to `to`; false when the action queue refused it.
    pub(crate) fn send(&mut self, to: NodeId, message: &Message<'_>) -> bool {
        self.actions
            .send(to, self.config.cluster_id, message)
            .is_ok()
    }

    /// Queues a scan for `task`; its token, or None when the task table or the action
    /// queue is full (nothing is left behind). `durable`: the page holds only records
    /// a power cut keeps (see [`super::StorageOp::Scan`]); for a scan whose answer lets
    /// a peer delete its own copy.
    pub(crate) fn start_scan(
        &mut self,
        task: Task,
        range: (u64, u64),
        (after, limit): (Option<u64>, u32),
        durable: bool,
    ) -> Option<u64> {
        self.tasks.start(task, &mut self.actions, |actions, token| {
            actions.scan(token, range, (after, limit), durable)
        })
    }

    /// The deliberate faults this node runs with (all off unless built with the
    /// `sabotage` feature and configured so).
    pub(crate) fn sabotage(&self) -> super::config::Sabotage {
        #[cfg(feature = "sabotage")]
        return self.config.sabotage;
        #[cfg(not(feature = "sabotage"))]
        super::config::Sabotage::default()
    }
}
