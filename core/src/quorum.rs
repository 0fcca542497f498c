//! Quorum bookkeeping for one coordinated request: who was asked, who answered, when
//! the request can reply, when it can no longer succeed, and, for reads, the merged
//! versions and the replicas that answered with less (the read-repair targets).
//!
//! Answers from a node that was not asked, and second answers from a node that already
//! answered (a duplicated message), change nothing: progress depends only on the set of
//! distinct replicas heard from. A request becomes [`Progress::Unreachable`] as soon as
//! the replicas still pending cannot make up the quorum, so the node can fail it at
//! once instead of waiting for its timeout.

use crate::version::{NodeId, VersionSet};
use smallvec::SmallVec;

/// Which of a write's replicas sync it before they acknowledge: the paper's buffered
/// writes (section 6.1), as Riak's `sync_on_write`. Per cluster (`Config`) and per
/// request (`VSET ... SYNC one|all`), as W is.
///
/// - `One` (the default): the node that mints the write syncs its record before it
///   sends the write on; the other replicas acknowledge once the write is in their log
///   and sync it within their sync interval. A power cut loses no acknowledged write
///   (the minting node's copy is on its disk); losing the minting node's disk within a
///   sync interval of the write, together with a power cut of the other replicas that
///   took it, can.
/// - `All`: every replica syncs before it acknowledges.
///
/// See `node::replica` ("Buffered writes") for which records are always durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncWrites {
    #[default]
    One,
    All,
}

impl SyncWrites {
    /// `one` or `all`, in any case.
    pub fn parse(text: &[u8]) -> Option<SyncWrites> {
        if text.eq_ignore_ascii_case(b"one") {
            Some(SyncWrites::One)
        } else if text.eq_ignore_ascii_case(b"all") {
            Some(SyncWrites::All)
        } else {
            None
        }
    }

    /// Its name as `parse` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SyncWrites::One => "one",
            SyncWrites::All => "all",
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not enough answers yet, but enough replicas still pending.
    Waiting,
    /// The quorum is met: reply to the client.
    Reached,
    /// Too many replicas failed for the quorum to be met.
    Unreachable,
}

/// A quorum that can never be met by its targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumError {
    pub required: usize,
    pub targets: usize,
}

impl core::fmt::Display for QuorumError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "quorum of {} needs 1..={} replicas",
            self.required, self.targets
        )
    }
}

impl std::error::Error for QuorumError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Pending,
    Acknowledged,
    Found(VersionSet),
    NotFound,
    Failed,
}

/// Tracks the answers of distinct targets against a required count.
#[derive(Clone, Debug)]
struct Tally {
    targets: SmallVec<[NodeId; 8]>,
    answers: SmallVec<[Answer; 8]>,
    required: usize,
}

impl Tally {
    fn new(
        targets: impl IntoIterator<Item = NodeId>,
        required: usize,
    ) -> Result<Tally, QuorumError> {
        let mut unique: SmallVec<[NodeId; 8]> = SmallVec::new();
        for target in targets {
            if !unique.contains(&target) {
                unique.push(target);
            }
        }
        if required == 0 || required > unique.len() {
            return Err(QuorumError {
                required,
                targets: unique.len(),
            });
        }
        let answers = unique.iter().map(|_| Answer::Pending).collect();
        Ok(Tally {
            targets: unique,
            answers,
            required,
        })
    }

    /// Records `answer` from `node` if it was asked and has not answered yet.
    fn record(&mut self, node: NodeId, answer: Answer) -> Progress {
        if let Some(index) = self.targets.iter().position(|&t| t == node) {
            if self.answers[index] == Answer::Pending {
                self.answers[index] = answer;
            }
        }
        self.progress()
    }

    fn progress(&self) -> Progress {
        let (mut good, mut pending) = (0, 0);
        for answer in &self.answers {
            match answer {
                Answer::Pending => pending += 1,
                Answer::Failed => {}
                _ => good += 1,
            }
        }
        if good >= self.required {
            Progress::Reached
        } else if good + pending < self.required {
            Progress::Unreachable
        } else {
            Progress::Waiting
        }
    }

    /// `failed` timed out: count it as failed and ask `stand_in` too (sloppy quorum). A
    /// stand-in that is already a target is not added twice.
    fn replace(&mut self, failed: NodeId, stand_in: NodeId) -> Progress {
        self.record(failed, Answer::Failed);
        self.add(stand_in)
    }

    /// `node` is a target too (once: a node already a target is not added twice).
    fn add(&mut self, node: NodeId) -> Progress {
        if !self.targets.contains(&node) {
            self.targets.push(node);
            self.answers.push(Answer::Pending);
        }
        self.progress()
    }

    fn is_pending(&self, node: NodeId) -> bool {
        self.pending().any(|pending| pending == node)
    }

    fn pending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.targets
            .iter()
            .zip(&self.answers)
            .filter(|(_, answer)| **answer == Answer::Pending)
            .map(|(node, _)| *node)
    }
}

/// A write waiting for W durable acknowledgements.
#[derive(Clone, Debug)]
pub struct WriteQuorum {
    tally: Tally,
}

impl WriteQuorum {
    /// Waits for `required` (W) of `targets`.
    pub fn new(
        targets: impl IntoIterator<Item = NodeId>,
        required: usize,
    ) -> Result<WriteQuorum, QuorumError> {
        Ok(WriteQuorum {
            tally: Tally::new(targets, required)?,
        })
    }

    /// `node` made the write durable.
    pub fn record_ack(&mut self, node: NodeId) -> Progress {
        self.tally.record(node, Answer::Acknowledged)
    }

    /// `node` refused, failed or timed out.
    pub fn record_failure(&mut self, node: NodeId) -> Progress {
        self.tally.record(node, Answer::Failed)
    }

    /// Where the write stands.
    pub fn progress(&self) -> Progress {
        self.tally.progress()
    }

    /// Targets that have not answered (to time out, or to replace with stand-ins).
    pub fn pending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.tally.pending()
    }

    /// True while `node` was asked and has not answered.
    pub fn is_pending(&self, node: NodeId) -> bool {
        self.tally.is_pending(node)
    }

    /// `failed` timed out; `stand_in` is asked in its place.
    pub fn replace(&mut self, failed: NodeId, stand_in: NodeId) -> Progress {
        self.tally.replace(failed, stand_in)
    }

    /// Every target, stand-ins included.
    pub fn targets(&self) -> &[NodeId] {
        &self.tally.targets
    }
}

/// A read waiting for R answers, merging what it hears.
#[derive(Clone, Debug)]
pub struct ReadQuorum {
    tally: Tally,
    merged: VersionSet,
}

impl ReadQuorum {
    /// Waits for `required` (R) of `targets`.
    pub fn new(
        targets: impl IntoIterator<Item = NodeId>,
        required: usize,
    ) -> Result<ReadQuorum, QuorumError> {
        Ok(ReadQuorum {
            tally: Tally::new(targets, required)?,
            merged: VersionSet::new(),
        })
    }

    /// `node` answered with its versions (`None`: it has nothing for the key).
    pub fn record_answer(&mut self, node: NodeId, versions: Option<VersionSet>) -> Progress {
        let asked_and_pending = self.tally.pending().any(|pending| pending == node);
        if asked_and_pending {
            if let Some(versions) = &versions {
                self.merged = self.merged.sync(versions);
            }
        }
        let answer = match versions {
            Some(versions) => Answer::Found(versions),
            None => Answer::NotFound,
        };
        self.tally.record(node, answer)
    }

    /// `node` failed or timed out.
    pub fn record_failure(&mut self, node: NodeId) -> Progress {
        self.tally.record(node, Answer::Failed)
    }

    /// Where the read stands.
    pub fn progress(&self) -> Progress {
        self.tally.progress()
    }

    /// Everything heard so far, merged: what the client gets.
    pub fn merged(&self) -> &VersionSet {
        &self.merged
    }

    /// Replicas that answered with less than the merge: they get a read repair.
    pub fn stale_replicas(&self) -> impl Iterator<Item = NodeId> + '_ {
        let merged_is_empty = self.merged.sibling_count() == 0 && self.merged.clock_size() == 0;
        self.tally
            .targets
            .iter()
            .zip(&self.tally.answers)
            .filter(move |(_, answer)| match answer {
                Answer::Found(versions) => *versions != self.merged,
                Answer::NotFound => !merged_is_empty,
                _ => false,
            })
            .map(|(node, _)| *node)
    }

    /// Targets that have not answered.
    pub fn pending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.tally.pending()
    }

    /// True while `node` was asked and has not answered.
    pub fn is_pending(&self, node: NodeId) -> bool {
        self.tally.is_pending(node)
    }

    /// `failed` timed out; `stand_in` is asked in its place.
    pub fn replace(&mut self, failed: NodeId, stand_in: NodeId) -> Progress {
        self.tally.replace(failed, stand_in)
    }

    /// `node` is asked too (a target asked later, not in anyone's place).
    pub fn add(&mut self, node: NodeId) -> Progress {
        self.tally.add(node)
    }

    /// Every node asked, answered or not.
    pub fn targets(&self) -> &[NodeId] {
        &self.tally.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Value;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn written(value: &[u8], by: NodeId, on: &VersionSet) -> VersionSet {
        VersionSet::update(
            VersionSet::from_context(&on.join(), Value::new(value.to_vec(), 1)),
            on,
            by,
        )
    }

    #[test]
    fn a_stand_in_replaces_a_timed_out_replica_and_counts_toward_the_quorum() {
        const D: NodeId = NodeId(4);
        let mut write = WriteQuorum::new([A, B, C], 2).unwrap();
        assert_eq!(write.record_ack(A), Progress::Waiting);
        assert_eq!(write.replace(B, D), Progress::Waiting);
        assert!(!write.is_pending(B));
        assert!(write.is_pending(D));
        assert_eq!(
            write.record_ack(B),
            Progress::Waiting,
            "B already counted failed"
        );
        assert_eq!(write.record_ack(D), Progress::Reached);
        assert_eq!(write.targets(), &[A, B, C, D]);
        assert_eq!(
            write.replace(C, D),
            Progress::Reached,
            "D is not added twice"
        );
        assert_eq!(write.targets().len(), 4);
    }

    #[test]
    fn a_write_replies_after_w_distinct_acks_and_ignores_duplicates_and_strangers() {
        let mut write = WriteQuorum::new([A, B, C], 2).unwrap();
        assert_eq!(write.record_ack(A), Progress::Waiting);
        assert_eq!(
            write.record_ack(A),
            Progress::Waiting,
            "a duplicate ack counts once"
        );
        assert_eq!(
            write.record_ack(NodeId(99)),
            Progress::Waiting,
            "nobody asked node 99"
        );
        assert_eq!(write.record_ack(C), Progress::Reached);
        assert_eq!(write.pending().collect::<Vec<_>>(), [B]);
    }

    #[test]
    fn a_write_fails_as_soon_as_the_quorum_is_out_of_reach() {
        let mut write = WriteQuorum::new([A, B, C], 2).unwrap();
        assert_eq!(write.record_failure(A), Progress::Waiting);
        assert_eq!(write.record_failure(B), Progress::Unreachable);
        assert_eq!(
            write.record_ack(B),
            Progress::Unreachable,
            "a late answer does not undo a failure"
        );
    }

    #[test]
    fn impossible_quorums_are_refused_up_front() {
        assert_eq!(
            WriteQuorum::new([A, B], 3).unwrap_err(),
            QuorumError {
                required: 3,
                targets: 2
            }
        );
        assert!(
            ReadQuorum::new([A, A, A], 2).is_err(),
            "targets count once each"
        );
        assert!(ReadQuorum::new([A], 0).is_err());
    }

    #[test]
    fn a_read_merges_concurrent_versions_and_names_the_replicas_to_repair() {
        let base = written(b"v1", A, &VersionSet::new());
        let newer = written(b"v2", B, &base);
        let concurrent = written(b"v3", C, &base);
        let mut read = ReadQuorum::new([A, B, C], 2).unwrap();
        assert_eq!(read.record_answer(A, Some(base.clone())), Progress::Waiting);
        assert_eq!(
            read.record_answer(B, Some(newer.clone())),
            Progress::Reached
        );
        assert_eq!(read.merged(), &newer);
        assert_eq!(read.stale_replicas().collect::<Vec<_>>(), [A]);
        // The third answer, after the reply, still merges and still drives repair.
        read.record_answer(C, Some(concurrent.clone()));
        assert_eq!(read.merged(), &newer.sync(&concurrent));
        assert_eq!(read.merged().sibling_count(), 2);
        assert_eq!(read.stale_replicas().collect::<Vec<_>>(), [A, B, C]);
    }

    #[test]
    fn a_replica_without_the_key_is_repaired_and_a_key_nobody_has_repairs_nobody() {
        let value = written(b"v", A, &VersionSet::new());
        let mut read = ReadQuorum::new([A, B], 2).unwrap();
        read.record_answer(A, Some(value.clone()));
        assert_eq!(read.record_answer(B, None), Progress::Reached);
        assert_eq!(read.stale_replicas().collect::<Vec<_>>(), [B]);

        let mut missing = ReadQuorum::new([A, B], 2).unwrap();
        missing.record_answer(A, None);
        missing.record_answer(B, None);
        assert_eq!(missing.stale_replicas().count(), 0);
        assert_eq!(missing.merged(), &VersionSet::new());
    }

    #[test]
    fn a_duplicated_read_answer_is_not_merged_twice() {
        let value = written(b"v", A, &VersionSet::new());
        let other = written(b"w", B, &VersionSet::new());
        let mut read = ReadQuorum::new([A, B, C], 3).unwrap();
        read.record_answer(A, Some(value.clone()));
        read.record_answer(A, Some(other.clone()));
        assert_eq!(read.merged(), &value, "the second answer from A is ignored");
    }
}
