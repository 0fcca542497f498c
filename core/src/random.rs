//! The one seeded pseudo-random generator of ringkv.
//!
//! The core may not use global randomness, so every random choice (which peer to gossip
//! with, retry jitter, the simulator's faults, the load generator's keys) draws from an
//! [`Rng`] built from an explicit seed. Same seed, same sequence, on every platform:
//! that is what lets a simulator run replay from its printed seed.
//!
//! The generator is xoshiro256++ (Blackman and Vigna), seeded through SplitMix64 so that
//! nearby seeds give unrelated streams. It is not cryptographic and is never used where
//! an attacker could profit from predicting it.

/// A small, fast, seeded generator (xoshiro256++).
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut splitmix = seed;
        let mut state = [0u64; 4];
        for word in &mut state {
            *word = splitmix64(&mut splitmix);
        }
        // SplitMix64 never yields four zero words in a row, and all-zero is the one state
        // xoshiro cannot leave; keep the guard anyway so the invariant is local.
        if state == [0; 4] {
            state[0] = 1;
        }
        Rng { state }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// A uniform integer in `0..bound`, without modulo bias (Lemire's method).
    /// Returns 0 when `bound` is 0 so that callers never panic on an empty range.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            // Truncation keeps the low 64 bits on purpose: they decide rejection.
            let low = product as u64;
            if low >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `probability` (clamped to `[0, 1]`).
    pub fn chance(&mut self, probability: f64) -> bool {
        self.next_f64() < probability
    }

    /// Fills `buffer` with random bytes.
    pub fn fill_bytes(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_stream() {
        let mut first = Rng::new(42);
        let mut second = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(first.next_u64(), second.next_u64());
        }
    }

    #[test]
    fn nearby_seeds_give_unrelated_streams() {
        let a: Vec<u64> = {
            let mut rng = Rng::new(1);
            (0..8).map(|_| rng.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut rng = Rng::new(2);
            (0..8).map(|_| rng.next_u64()).collect()
        };
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }

    #[test]
    fn the_stream_is_fixed_across_platforms_and_releases() {
        // A changed generator silently invalidates every recorded simulator seed, so the
        // first outputs for seed 0 are pinned here.
        let mut rng = Rng::new(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(0);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first, PINNED_SEED_ZERO);
    }

    const PINNED_SEED_ZERO: [u64; 3] = [
        5987356902031041503,
        7051070477665621255,
        6633766593972829180,
    ];

    #[test]
    fn seeding_uses_the_reference_splitmix64() {
        // First SplitMix64 output for state 0, from the reference implementation.
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
        assert_eq!(Rng::new(0).state[0], 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_stays_in_range_and_covers_it_evenly() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let value = rng.below(10);
            assert!(value < 10);
            counts[value as usize] += 1;
        }
        // Each bucket expects 10_000; 5 standard deviations is about 475.
        for count in counts {
            assert!(
                (9_500..=10_500).contains(&count),
                "uneven buckets: {counts:?}"
            );
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_chance_follows_probability() {
        let mut rng = Rng::new(9);
        let mut hits = 0;
        for _ in 0..100_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if rng.chance(0.25) {
                hits += 1;
            }
        }
        assert!((24_000..=26_000).contains(&hits), "hits {hits}");
    }

    #[test]
    fn fill_bytes_handles_lengths_that_are_not_multiples_of_eight() {
        let mut rng = Rng::new(3);
        let mut buffer = [0u8; 13];
        rng.fill_bytes(&mut buffer);
        assert!(buffer.iter().any(|&b| b != 0));
    }
}
