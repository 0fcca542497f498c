//! The deterministic cluster simulator (issue 5), built up piece by piece. Everything
//! random draws from one seed, so a printed seed replays a run exactly.

pub mod disk;
pub mod network;
