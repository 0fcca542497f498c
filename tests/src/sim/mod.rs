//! The deterministic cluster simulator (design.md section 9). Everything random draws
//! from one seed, so a printed seed replays a run exactly.
//!
//! | module | what it is |
//! |---|---|
//! | [`network`], [`disk`] | the simulated network and disks, with their faults |
//! | [`swarm`] | a run's parameters, drawn from its seed |
//! | [`cluster`] | nodes, clients and faults in one event loop |
//! | [`history`] | what clients did and which dots writes got |
//! | [`gossip`] | membership views alone, at scale: rounds to converge |
//! | [`entropy_bytes`] | two replicas, anti-entropy only: bytes to repair k keys |
//! | [`checkers`] | the seven properties, checked after quiescence |

pub mod checkers;
pub mod cluster;
pub mod disk;
pub mod entropy_bytes;
pub mod gossip;
pub mod history;
pub mod network;
pub mod swarm;

/// Runs the simulation for `seed` and returns its violations (empty: all held).
pub fn run_seed(parameters: swarm::Parameters) -> (cluster::Cluster, Vec<checkers::Violation>) {
    let mut cluster = cluster::Cluster::new(parameters);
    cluster.run();
    let violations = checkers::check_all(&cluster);
    (cluster, violations)
}
