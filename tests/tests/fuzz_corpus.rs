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

#[test]
fn a_node_survives_its_fuzz_corpus() {
    replay("node_events", |input| {
        ringkv_core::node::fuzz::fuzz_node(input);
        true
    });
}

#[test]
fn store_recovery_survives_its_fuzz_corpus() {
    replay("storage_recovery", |input| {
        ringkv_storage::store::fuzz_recover(input);
        true
    });
}

/// Writes the seed inputs of the node and recovery targets (run once with
/// `cargo test -p ringkv-tests --test fuzz_corpus -- --ignored`; the fuzzer grows
/// the corpora from them).
#[test]
#[ignore]
fn write_seed_corpora() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let node = corpus.join("node_events");
    std::fs::create_dir_all(&node).unwrap();
    // client SET k v; all storage completes; time on; client GET k; peer up/down.
    let set_get: Vec<u8> = [
        &[0u8, 2, 3, b'S', b'E', b'T', 1, b'k', 1, b'v', 0][..],
        &[6],
        &[3, 0xe8, 0x03],
        &[6],
        &[0, 1, 3, b'G', b'E', b'T', 1, b'k', 1],
        &[5, 0, 0, 5, 1, 1],
        &[4, 0, 1, 4, 0, 2, 4, 0, 3],
        &[2, 0, 2, 4, 0, 1, 2, 3, 4],
        &[3, 0x10, 0x27, 6],
    ]
    .concat();
    std::fs::write(node.join("set-get-faults"), set_get).unwrap();
    std::fs::write(
        node.join("timers"),
        [3u8, 0xff, 0xff, 3, 0xff, 0xff, 6, 3, 0x88, 0x13],
    )
    .unwrap();

    let recovery = corpus.join("storage_recovery");
    std::fs::create_dir_all(&recovery).unwrap();
    let mut log = Vec::new();
    for (sequence, key, value) in [
        (1, &b"a"[..], &b"1"[..]),
        (2, b"b", b"22"),
        (3, b"a", b"333"),
    ] {
        ringkv_storage::record::encode(&mut log, sequence, key, value, false).unwrap();
    }
    ringkv_storage::record::encode(&mut log, 4, b"b", b"", true).unwrap();
    for layout in 0..3u8 {
        let mut input = vec![layout];
        input.extend_from_slice(&log);
        std::fs::write(recovery.join(format!("log-layout-{layout}")), &input).unwrap();
        input.truncate(input.len() - 5);
        std::fs::write(recovery.join(format!("torn-layout-{layout}")), &input).unwrap();
    }
}
