//! `ringkv-placement-report`: balance and movement of placement for a few cluster
//! sizes, as a Markdown table for BENCHMARKS.md. Deterministic: no clock, no randomness.
//! The member lists are built here and always valid, so `Ring::new` cannot fail (the
//! `expect`s state that invariant).

use ringkv_core::NodeId;
use ringkv_core::placement::{Member, PARTITION_BITS_DEFAULT, Ring, moved_share};

fn members(count: u64) -> Vec<Member> {
    (1..=count)
        .map(|i| Member::equal(NodeId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
        .collect()
}

fn main() {
    let replicas = 3;
    println!("Q = 1024 partitions, N = {replicas}");
    println!();
    println!(
        "| members | balance max/min | join moves | ideal 1/(n+1) | leave moves | ideal 1/n |"
    );
    println!("|---|---|---|---|---|---|");
    for count in [3u64, 4, 8, 16, 32, 64] {
        let view = members(count);
        let ring = Ring::new(&view, PARTITION_BITS_DEFAULT, replicas).expect("ring");
        let mut joined = view.clone();
        joined.push(Member::equal(NodeId(0xABCD_EF01)));
        let after_join = Ring::new(&joined, PARTITION_BITS_DEFAULT, replicas).expect("ring");
        let leave = match Ring::new(&view[1..], PARTITION_BITS_DEFAULT, replicas) {
            Ok(after_leave) => format!("{:.3}", moved_share(&ring, &after_leave)),
            Err(_) => "n/a (fewer than N left)".to_owned(),
        };
        println!(
            "| {count} | {:.2} | {:.3} | {:.3} | {leave} | {:.3} |",
            ring.balance(),
            moved_share(&ring, &after_join),
            1.0 / (count + 1) as f64,
            1.0 / count as f64,
        );
    }
    let mut weighted = members(8);
    weighted[0].weight = 3;
    weighted[1].weight = 2;
    let ring = Ring::new(&weighted, PARTITION_BITS_DEFAULT, replicas).expect("ring");
    println!();
    println!(
        "8 members with weights 3, 2, 1 x6: replica slots per unit of weight, max/min {:.2}",
        ring.balance()
    );
}
