#![no_main]
//! Arbitrary inputs with time deltas into a `Node` never panic, never loop without new
//! input, and keep every bounded structure within its bound.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_core::node::fuzz::fuzz_node(data));
