//! Which seeds a randomized test runs, chosen from the environment.
//!
//! - `RINGKV_SEED=<n>` replays exactly one run.
//! - otherwise `RINGKV_SIM_RUNS=<n>` runs (default given by the test) with seeds
//!   `RINGKV_SIM_SEED_BASE` (default 0), base+1, ...
//!
//! Seeds are decimal or `0x` hexadecimal. A malformed variable is an error naming it,
//! never a silent fallback: a replay that quietly ran another seed would prove nothing.

use core::fmt;

/// The seeds one randomized test will run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    /// First seed.
    pub base: u64,
    /// How many consecutive seeds from `base`.
    pub runs: u64,
    /// True when `RINGKV_SEED` asked for one exact replay.
    pub replay: bool,
}

/// An environment variable that does not hold a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSeedVariable {
    /// The variable's name.
    pub name: &'static str,
    /// Its text.
    pub value: String,
}

impl fmt::Display for BadSeedVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not a number (decimal or 0x hex)",
            self.name, self.value
        )
    }
}

impl std::error::Error for BadSeedVariable {}

impl SeedPlan {
    /// The plan from the process environment.
    pub fn from_env(default_runs: u64) -> Result<SeedPlan, BadSeedVariable> {
        SeedPlan::from_lookup(default_runs, |name| std::env::var(name).ok())
    }

    /// The plan from the process environment, starting at `default_base` unless
    /// `RINGKV_SIM_SEED_BASE` says otherwise (suites whose fixed seeds start at 1).
    pub fn from_env_at(default_base: u64, default_runs: u64) -> Result<SeedPlan, BadSeedVariable> {
        SeedPlan::from_lookup_at(default_base, default_runs, |name| std::env::var(name).ok())
    }

    /// The plan from any variable lookup (tests pass a closure over a map).
    pub fn from_lookup(
        default_runs: u64,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SeedPlan, BadSeedVariable> {
        SeedPlan::from_lookup_at(0, default_runs, lookup)
    }

    /// [`SeedPlan::from_lookup`] with a default base.
    pub fn from_lookup_at(
        default_base: u64,
        default_runs: u64,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SeedPlan, BadSeedVariable> {
        let read = |name: &'static str| -> Result<Option<u64>, BadSeedVariable> {
            match lookup(name) {
                None => Ok(None),
                Some(value) => parse_number(&value)
                    .map(Some)
                    .ok_or(BadSeedVariable { name, value }),
            }
        };
        if let Some(seed) = read("RINGKV_SEED")? {
            return Ok(SeedPlan {
                base: seed,
                runs: 1,
                replay: true,
            });
        }
        Ok(SeedPlan {
            base: read("RINGKV_SIM_SEED_BASE")?.unwrap_or(default_base),
            runs: read("RINGKV_SIM_RUNS")?.unwrap_or(default_runs),
            replay: false,
        })
    }

    /// The seeds, in order.
    pub fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.runs).map(|offset| self.base.wrapping_add(offset))
    }
}

/// A proptest runner whose every random choice comes from `seed` (no persistence
/// files: the printed seed is the replay).
pub fn proptest_runner(seed: u64, cases: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    )
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn plan(default_runs: u64, variables: &[(&str, &str)]) -> Result<SeedPlan, BadSeedVariable> {
        let map: BTreeMap<String, String> = variables
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SeedPlan::from_lookup(default_runs, |name| map.get(name).cloned())
    }

    #[test]
    fn without_variables_the_default_number_of_runs_starts_at_zero() {
        let plan = plan(3, &[]).unwrap();
        assert_eq!(plan.seeds().collect::<Vec<_>>(), [0, 1, 2]);
        assert!(!plan.replay);
    }

    #[test]
    fn a_suite_may_start_its_fixed_seeds_elsewhere_and_the_base_variable_still_moves_it() {
        let at = |variables: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            SeedPlan::from_lookup_at(1, 3, |name| map.get(name).cloned()).unwrap()
        };
        assert_eq!(at(&[]).seeds().collect::<Vec<_>>(), [1, 2, 3]);
        let moved = at(&[("RINGKV_SIM_SEED_BASE", "70")]);
        assert_eq!(moved.seeds().collect::<Vec<_>>(), [70, 71, 72]);
    }

    #[test]
    fn ringkv_seed_replays_exactly_one_run_and_wins_over_the_others() {
        let plan = plan(200, &[("RINGKV_SEED", "0xff"), ("RINGKV_SIM_RUNS", "9")]).unwrap();
        assert_eq!(plan.seeds().collect::<Vec<_>>(), [255]);
        assert!(plan.replay);
    }

    #[test]
    fn runs_and_base_move_the_window_of_fresh_seeds() {
        let plan = plan(
            200,
            &[("RINGKV_SIM_RUNS", "2"), ("RINGKV_SIM_SEED_BASE", "1000")],
        );
        assert_eq!(plan.unwrap().seeds().collect::<Vec<_>>(), [1000, 1001]);
    }

    #[test]
    fn a_malformed_variable_is_an_error_that_names_it() {
        let error = plan(1, &[("RINGKV_SIM_RUNS", "many")]).unwrap_err();
        assert_eq!(error.name, "RINGKV_SIM_RUNS");
        assert!(error.to_string().contains("RINGKV_SIM_RUNS=\"many\""));
    }
}
