//! Replays the committed cargo-fuzz corpora on stable Rust, so every `cargo test` runs
//! each fuzz entry point over its seed inputs (and over any crash reproducer added to a
//! corpus directory).

use std::path::Path;

/// Runs `entry` over every input of `target`'s corpus; returns how many it accepted
/// (entries that say nothing return `true`).
fn replay(target: &str, entry: impl Fn(&[u8]) -> bool) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|item| item.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "corpus {target} is empty");
    inputs
        .iter()
        .filter(|path| {
            println!("replaying {}", path.display());
            entry(&std::fs::read(path).unwrap())
        })
        .count()
}

#[test]
fn the_record_decoder_survives_its_fuzz_corpus() {
    replay("storage_record_decode", |input| {
        ringkv_storage::record::fuzz_decode(input);
        true
    });
}

#[test]
fn the_durability_parser_survives_its_fuzz_corpus() {
    let parsed = replay("durability_parse", ringkv_storage::durability::fuzz_parse);
    assert!(parsed >= 4, "the corpus should hold the valid spellings");
}

#[test]
fn the_peer_frame_decoder_survives_its_fuzz_corpus() {
    replay("peer_frame_decode", |input| {
        ringkv_core::wire::fuzz_frame(input);
        true
    });
}

#[test]
fn the_resp_parser_survives_its_fuzz_corpus() {
    replay("resp_requests", |input| {
        ringkv_core::resp::fuzz_requests(input);
        true
    });
}

#[test]
fn the_context_token_decoder_survives_its_fuzz_corpus() {
    let valid = replay("context_token", |input| {
        ringkv_core::version::fuzz_context_token(input);
        ringkv_core::VersionVector::from_token(&String::from_utf8_lossy(input)).is_ok()
    });
    assert!(valid >= 2, "the corpus should hold real tokens");
}

#[test]
fn the_version_set_decoder_survives_its_fuzz_corpus() {
    replay("version_set_decode", |input| {
        ringkv_core::version::fuzz_version_set(input);
        true
    });
}
