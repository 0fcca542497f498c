#![no_main]
//! Operator text never panics the durability parser; what parses prints back to itself.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringkv_storage::durability::fuzz_parse(data);
});
