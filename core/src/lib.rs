//! ringkv-core: the whole ringkv protocol as pure state machines and codecs.
//!
//! Single responsibility: decide. The core consumes events (client commands, peer
//! messages, storage completions, timeouts) and emits actions (replies, peer sends,
//! storage operations); it never touches the OS. No sockets, files, threads, clock reads
//! or global randomness: time comes in as [`Instant`] arguments and randomness from a
//! seed given to the node. `core/clippy.toml` makes clippy reject the OS calls, so a
//! shell, the simulator and a fuzzer can all drive exactly the same code.
//!
//! | module | what it is |
//! |---|---|
//! | [`version`] | dotted version vector sets, contexts and their printable tokens |
//! | [`placement`] | partitions, weighted rendezvous preference lists, zones |
//! | [`resp`] | the client protocol (RESP2): streaming parser, command table, replies |
//! | [`wire`] | the peer protocol: versioned, cluster-tagged, length-prefixed frames |
//! | [`bytes`] | the bounded fixed-width reader and writer every codec uses |
//! | [`slab`], [`deadline`] | bounded in-flight tables with generation-tagged ids, and one deadline per slot |
//! | [`node`] | the Dynamo node: coordinates gets and puts, replicas, hinted handoff, failure detection |
//! | [`quorum`] | per-request quorum bookkeeping: W acks, R answers merged, read-repair targets |
//! | [`time`], [`random`], [`limits`] | the core's clock type, seeded generator and size limits |
//!
//! Invariants this crate keeps everywhere:
//! - `now` given to any entry point never goes backwards (callers guarantee it; the
//!   core treats a backwards step as "no time passed").
//! - every queue, table and buffer has a bound from configuration; reaching it is an
//!   error result, never growth.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bytes;
pub mod deadline;
pub mod limits;
pub mod membership;
pub mod node;
pub mod placement;
pub mod quorum;
pub mod random;
pub mod resp;
pub mod slab;
pub mod time;
pub mod version;
pub mod wire;

pub use random::Rng;
pub use time::Instant;
pub use version::{NodeId, Value, VersionSet, VersionVector};
