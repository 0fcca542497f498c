//! How long the index's slowest insert takes while it fills, the doublings included
//! (BENCHMARKS.md, "Index growth"). Inserts random hashes into an empty table up to
//! each size given (default 98,304, 786,432 and 6,291,456 entries: three quarters of
//! 2^17, 2^20 and 2^23 home slots) and prints the slowest insert, the median of the
//! 1,000 slowest, and the total time. Bounded by the sizes; it stops by itself. A
//! failure (a size that is not a number, a table that cannot be mapped) ends the run
//! with the error.
//!
//! `cargo run --release -p ringkv-storage --example index_growth [entries...]`

use ringkv_storage::index::{Entry, InsertError, Table};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes = std::env::args()
        .skip(1)
        .map(|size| size.parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![98_304, 786_432, 6_291_456]
    } else {
        sizes
    };
    for entries in sizes {
        let mut table = Table::with_bits(10)?;
        let mut hash = 0x9E37_79B9_7F4A_7C15u64;
        let mut slowest: Vec<Duration> = Vec::with_capacity(entries as usize);
        let started = Instant::now();
        for sequence in 1..=entries {
            hash = hash
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let entry = Entry {
                hash,
                sequence,
                segment_id: 1,
                offset: 0,
                size_bytes: 100,
                tombstone: false,
            };
            let insert_started = Instant::now();
            if let Err(InsertError::NeedsGrowth) = table.insert(entry) {
                // What the store does with no growth under way: double in one go.
                table = table.grown()?;
                table
                    .insert(entry)
                    .map_err(|_| "no room for an entry right after a doubling")?;
            }
            slowest.push(insert_started.elapsed());
        }
        let total = started.elapsed();
        slowest.sort_unstable();
        let max = slowest.last().copied().unwrap_or_default();
        let tail = &slowest[slowest.len().saturating_sub(1_000)..];
        println!(
            "{entries} entries: slowest insert {max:?}, median of the 1,000 slowest {:?}, total {total:?}",
            tail.get(tail.len() / 2).copied().unwrap_or_default()
        );
    }
    Ok(())
}
