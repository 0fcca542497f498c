#![no_main]
//! Arbitrary bytes never panic the peer frame decoder; decoded frames re-encode exactly.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_core::wire::fuzz_frame(data));
