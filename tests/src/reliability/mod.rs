//! The reliability suite's machinery for real clusters: the fault proxy between nodes,
//! the workload that records a client-observed history, and the checker that reads
//! every node's disk after the run and counts what was lost.

pub mod history;
pub mod proxy;
