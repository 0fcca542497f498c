//! ringkv-tests: the deterministic cluster simulator and the real-process cluster tests.
//!
//! Single responsibility: prove that ringkv keeps its promises (design.md section 9).
//! The library holds the machinery (seed handling, and later the simulated network,
//! disk and history checkers); the test files under `tests/` use it.

pub mod forgetful_fs;
pub mod reliability;
pub mod seeds;
pub mod sim;
pub mod storage_model;
