#![no_main]
//! Arbitrary client bytes, parsed as pipelined RESP requests, never panic the parser.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_core::resp::fuzz_requests(data));
