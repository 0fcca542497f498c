#![no_main]
//! Arbitrary bytes never panic the record decoder; what decodes re-encodes identically.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringkv_storage::record::fuzz_decode(data);
});
