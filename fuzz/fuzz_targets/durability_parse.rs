#![no_main]
//! Configuration text from an operator never panics the parser, and whatever parses
//! prints back to a spelling that parses to the same mode.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mode) = text.parse::<ringkv_storage::Durability>() {
            assert_eq!(mode.to_string().parse::<ringkv_storage::Durability>(), Ok(mode));
        }
    }
});
