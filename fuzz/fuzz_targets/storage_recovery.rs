#![no_main]
//! A store opened over arbitrary log (and index) bytes recovers or refuses, never
//! panics, reads back what it scans, and keeps a write made after recovery.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_storage::store::fuzz_recover(data));
