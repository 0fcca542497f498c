//! Node tests: a small in-memory harness.
