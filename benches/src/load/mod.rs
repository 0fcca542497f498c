//! `ringkv-bench`'s load generator: RESP over TCP, so one run can target ringkv or
//! Redis. [`workload`] says what to send, [`run`] sends it (closed or open loop) and
//! [`report`] says how it went.

pub mod etcd;
pub mod report;
pub mod run;
pub mod workload;
