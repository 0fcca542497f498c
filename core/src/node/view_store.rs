//! Membership survives restarts: the node keeps its view (every member's record, `Left`
//! ones and a leave in progress included) in one `Meta` record, reads it back at start
//! and merges it like a peer's gossip. The merge rules make this node's own stored
//! status win over the one it started with: a node that was leaving still is, one that
//! left stays out, one that joined through seeds is `Up` without hearing them again.
//!
//! The record is a gossip frame (the wire's own encoding, with its cluster id: a record
//! of another cluster is not merged). It is written whenever the view changed in
//! anything but heartbeats ([`Membership::view_digest`]), one write at a time, and only
//! after the stored one was read (else a start could overwrite a leave with the
//! configured view). A read that fails is tried again every gossip round; a record
//! that does not decode is ignored with a warning (the configured members and gossip
//! rebuild the view) and replaced by the next write.
//!
//! [`Membership::view_digest`]: crate::membership::Membership::view_digest

use super::gossip::View;
use super::shared::Shared;
use super::storage::{Space, StorageFailure};
use super::tasks::Task;
use crate::wire::{MemberRecord, Message, encode_frame};

/// The `Meta` key of the membership record.
pub(crate) const VIEW_KEY: &[u8] = b"membership";

#[derive(Debug, Default)]
pub(crate) struct ViewStore {
    /// The stored record was read (or there was none).
    loaded: bool,
    loading: bool,
    /// The digest of the view being written.
    storing: Option<u64>,
    /// The digest of the view last made durable.
    stored: Option<u64>,
}

impl ViewStore {
    /// Reads the stored view (at start, and every gossip round until it succeeds).
    pub(crate) fn load(&mut self, shared: &mut Shared) {
        if self.loaded || self.loading {
            return;
        }
        let started = shared
            .tasks
            .start(Task::LoadView, &mut shared.actions, |actions, token| {
                actions.read(token, Space::Meta, VIEW_KEY)
            });
        self.loading = started.is_some();
    }

    /// The read of the stored view ended (`read`: it succeeded, whether or not a
    /// record was found); from then on the view is written.
    pub(crate) fn loaded(&mut self, read: bool) {
        self.loading = false;
        self.loaded = read;
    }

    /// Writes the view if it changed since the last write (and none is in flight).
    pub(crate) fn store(&mut self, shared: &mut Shared, view: &View) {
        if !self.loaded || self.storing.is_some() {
            return;
        }
        let digest = view.membership.view_digest();
        if self.stored == Some(digest) {
            return;
        }
        let members: Vec<MemberRecord<'_>> = view.membership.records().collect();
        let mut bytes = Vec::new();
        let message = Message::Gossip { members };
        if encode_frame(&mut bytes, shared.config.cluster_id, &message).is_err() {
            debug_assert!(false, "a view within its bounds encodes");
            return;
        }
        let started = shared
            .tasks
            .start(Task::StoreView, &mut shared.actions, |actions, token| {
                actions.write(token, Space::Meta, (VIEW_KEY, &bytes), true)
            });
        if started.is_some() {
            self.storing = Some(digest);
        }
    }

    /// The write in flight ended: true when it is durable (the caller stores again,
    /// as the view may have changed meanwhile; a failed write waits for the next
    /// gossip round).
    pub(crate) fn stored(&mut self, result: Result<(), StorageFailure>) -> bool {
        let digest = self.storing.take();
        debug_assert!(digest.is_some(), "a view stored that was not being stored");
        if result.is_ok() {
            self.stored = digest;
        }
        result.is_ok()
    }
}
