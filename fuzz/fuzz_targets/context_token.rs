#![no_main]
//! Any context token text is refused or round-trips exactly.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_core::version::fuzz_context_token(data));
