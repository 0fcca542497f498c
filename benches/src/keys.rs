//! Which key a load generator touches next.
//!
//! - `Uniform`: every key equally likely.
//! - `Zipfian { theta }`: key `i` (0-based rank) has weight `1 / (i + 1)^theta`, the
//!   skewed popularity of real traffic. Drawn with the constant-time method of Gray et
//!   al., "Quickly Generating Billion-Record Synthetic Databases" (SIGMOD 1994), as YCSB
//!   does; theta must lie in (0, 1).
//! - `Latest`: Zipfian over recency: the most recently inserted keys are the hottest.
//!
//! All draws come from the project's seeded [`Rng`], so a run replays from its seed.

use core::fmt;
use ringkv_core::Rng;

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    Uniform,
    Zipfian { theta: f64 },
    Latest { theta: f64 },
}

/// A distribution that cannot be drawn from.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDistributionError {
    NoKeys,
    ThetaOutOfRange(f64),
}

impl fmt::Display for KeyDistributionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistributionError::NoKeys => f.write_str("the key count must be at least 1"),
            KeyDistributionError::ThetaOutOfRange(theta) => {
                write!(
                    f,
                    "zipfian theta must lie strictly between 0 and 1, got {theta}"
                )
            }
        }
    }
}

impl std::error::Error for KeyDistributionError {}

/// Draws key indices in `0..key_count` from a [`KeyDistribution`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    distribution: KeyDistribution,
    key_count: u64,
    zipf: Option<Zipf>,
}

#[derive(Clone, Debug)]
struct Zipf {
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipf {
    fn new(key_count: u64, theta: f64) -> Result<Zipf, KeyDistributionError> {
        if !(theta > 0.0 && theta < 1.0) {
            return Err(KeyDistributionError::ThetaOutOfRange(theta));
        }
        let zeta_n = zeta(key_count, theta);
        let zeta_2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / key_count as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Ok(Zipf {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        })
    }

    fn rank(&self, key_count: u64, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(key_count - 1);
        }
        let rank = (key_count as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(key_count - 1)
    }
}

fn zeta(count: u64, theta: f64) -> f64 {
    (1..=count).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl KeyChooser {
    /// A chooser over `key_count` keys. Zipfian set-up is O(key_count), done once.
    pub fn new(
        distribution: KeyDistribution,
        key_count: u64,
    ) -> Result<KeyChooser, KeyDistributionError> {
        if key_count == 0 {
            return Err(KeyDistributionError::NoKeys);
        }
        let zipf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipfian { theta } | KeyDistribution::Latest { theta } => {
                Some(Zipf::new(key_count, theta)?)
            }
        };
        Ok(KeyChooser {
            distribution,
            key_count,
            zipf,
        })
    }

    /// The next key index. For `Latest`, `newest` is the index most recently inserted.
    pub fn next(&self, rng: &mut Rng, newest: u64) -> u64 {
        match (&self.distribution, &self.zipf) {
            (KeyDistribution::Zipfian { .. }, Some(zipf)) => zipf.rank(self.key_count, rng),
            (KeyDistribution::Latest { .. }, Some(zipf)) => {
                let back = zipf.rank(self.key_count, rng);
                (newest % self.key_count + self.key_count - back) % self.key_count
            }
            _ => rng.below(self.key_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(chooser: &KeyChooser, draws: u32, newest: u64) -> Vec<u32> {
        let mut rng = Rng::new(11);
        let mut counts = vec![0u32; chooser.key_count as usize];
        for _ in 0..draws {
            counts[chooser.next(&mut rng, newest) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipfian_rank_frequencies_follow_the_power_law() {
        let theta = 0.99;
        let chooser = KeyChooser::new(KeyDistribution::Zipfian { theta }, 1_000).unwrap();
        let draws = 200_000;
        let counts = histogram(&chooser, draws, 0);
        let zeta_n = zeta(1_000, theta);
        for rank in [0usize, 1, 9] {
            let expected = draws as f64 / ((rank + 1) as f64).powf(theta) / zeta_n;
            let observed = counts[rank] as f64;
            assert!(
                (observed - expected).abs() < expected * 0.1,
                "rank {rank}: observed {observed}, expected {expected:.0}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[500]);
    }

    #[test]
    fn uniform_touches_every_key_about_equally() {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 100).unwrap();
        let counts = histogram(&chooser, 100_000, 0);
        assert!(
            counts.iter().all(|&c| (800..=1_200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn latest_makes_the_newest_key_the_hottest() {
        let chooser = KeyChooser::new(KeyDistribution::Latest { theta: 0.9 }, 100).unwrap();
        let counts = histogram(&chooser, 50_000, 41);
        let hottest = (0..100).max_by_key(|&i| counts[i]).unwrap();
        assert_eq!(hottest, 41);
        assert!(counts[40] > counts[10]);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        assert_eq!(
            KeyChooser::new(KeyDistribution::Uniform, 0).unwrap_err(),
            KeyDistributionError::NoKeys
        );
        for theta in [0.0, 1.0, 1.5, f64::NAN] {
            assert!(KeyChooser::new(KeyDistribution::Zipfian { theta }, 10).is_err());
        }
    }
}
