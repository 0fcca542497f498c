#![no_main]
//! Any bytes are refused or decode to a version set that re-encodes exactly.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_core::version::fuzz_version_set(data));
