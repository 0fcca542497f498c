//! ringkv-bench: the load generator and the micro benchmarks.
//!
//! Single responsibility: measure ringkv where users feel it, at the 99.9th percentile,
//! and measure a peer (Redis, etcd, an embedded engine) with the same workload in the
//! same run so that results are ratios, not numbers from different days.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod compare;
pub mod keys;
pub mod load;
