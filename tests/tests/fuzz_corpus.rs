//! Replays the committed cargo-fuzz corpora of the storage targets on stable Rust, so
//! every `cargo test` runs each fuzz entry point over its seed inputs (and over any
//! crash reproducer added to the corpus).

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|item| {
            let path = item.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "corpus {target} is empty");
    inputs
}

#[test]
fn the_record_decoder_survives_its_fuzz_corpus() {
    for (name, input) in corpus("storage_record_decode") {
        println!("replaying {name}");
        ringkv_storage::record::fuzz_decode(&input);
    }
}

#[test]
fn the_durability_parser_survives_its_fuzz_corpus() {
    let mut parsed = 0;
    for (name, input) in corpus("durability_parse") {
        println!("replaying {name}");
        if let Ok(text) = std::str::from_utf8(&input) {
            if let Ok(mode) = text.parse::<ringkv_storage::Durability>() {
                assert_eq!(
                    mode.to_string().parse::<ringkv_storage::Durability>(),
                    Ok(mode)
                );
                parsed += 1;
            }
        }
    }
    assert!(parsed >= 4, "the corpus should hold the valid spellings");
}

#[test]
fn the_peer_frame_decoder_survives_its_fuzz_corpus() {
    for (name, input) in corpus("peer_frame_decode") {
        println!("replaying {name}");
        ringkv_core::wire::fuzz_frame(&input);
    }
}

#[test]
fn the_resp_parser_survives_its_fuzz_corpus() {
    for (name, input) in corpus("resp_requests") {
        println!("replaying {name}");
        ringkv_core::resp::fuzz_requests(&input);
    }
}

#[test]
fn the_context_token_decoder_survives_its_fuzz_corpus() {
    let mut valid = 0;
    for (name, input) in corpus("context_token") {
        println!("replaying {name}");
        ringkv_core::version::fuzz_context_token(&input);
        let text = String::from_utf8_lossy(&input);
        valid += usize::from(ringkv_core::VersionVector::from_token(&text).is_ok());
    }
    assert!(valid >= 2, "the corpus should hold real tokens");
}

#[test]
fn the_version_set_decoder_survives_its_fuzz_corpus() {
    for (name, input) in corpus("version_set_decode") {
        println!("replaying {name}");
        ringkv_core::version::fuzz_version_set(&input);
    }
}
