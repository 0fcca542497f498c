//! When a write counts as durable, and how the mode is spelled in configuration.
//!
//! Spellings (CLI flag and TOML): `always`, `group` (the default), `interval:<ms>`,
//! `none`. `none` is for tests and benchmarks of the CPU path only: an acknowledged
//! write can be lost on power failure, which breaks ringkv's promise, so the node logs
//! a warning when it starts with it.

use core::fmt;
use core::str::FromStr;

/// How the log reaches stable storage before a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// One fsync per write, before its acknowledgement.
    Always,
    /// Concurrent writes share one fsync; each is acknowledged after the fsync that
    /// covers it. Same guarantee as `Always`, far fewer syncs under load.
    #[default]
    Group,
    /// Acknowledge at once; fsync at most `interval_ms` later. A crash loses up to that
    /// window of acknowledged writes.
    Interval { interval_ms: u32 },
    /// Never fsync (tests and benchmarks).
    None,
}

impl Durability {
    /// True when an acknowledgement waits for an fsync covering the write.
    pub fn acknowledges_after_sync(self) -> bool {
        matches!(self, Durability::Always | Durability::Group)
    }
}

/// A durability spelling that is not one of the documented forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDurabilityError {
    input: String,
}

impl fmt::Display for ParseDurabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown durability mode {:?}: expected always, group, interval:<ms> (1..=60000) or none",
            self.input
        )
    }
}

impl std::error::Error for ParseDurabilityError {}

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(input: &str) -> Result<Durability, ParseDurabilityError> {
        let error = || ParseDurabilityError {
            input: input.to_owned(),
        };
        match input.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Durability::Always),
            "group" => Ok(Durability::Group),
            "none" => Ok(Durability::None),
            other => {
                let millis = other.strip_prefix("interval:").ok_or_else(error)?;
                let millis = millis.trim_end_matches("ms");
                let interval_ms: u32 = millis.parse().map_err(|_| error())?;
                if !(1..=60_000).contains(&interval_ms) {
                    return Err(error());
                }
                Ok(Durability::Interval { interval_ms })
            }
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Group => f.write_str("group"),
            Durability::Interval { interval_ms } => write!(f, "interval:{interval_ms}"),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Fuzz entry point: operator text never panics the parser, and whatever parses prints
/// back to a spelling that parses to the same mode. Returns whether it parsed.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(data: &[u8]) -> bool {
    let Ok(text) = core::str::from_utf8(data) else {
        return false;
    };
    let Ok(mode) = text.parse::<Durability>() else {
        return false;
    };
    assert_eq!(mode.to_string().parse::<Durability>(), Ok(mode));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_spelling_parses_and_prints_back() {
        for (text, mode) in [
            ("always", Durability::Always),
            ("group", Durability::Group),
            ("none", Durability::None),
            ("interval:25", Durability::Interval { interval_ms: 25 }),
        ] {
            assert_eq!(text.parse::<Durability>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
        }
        assert_eq!(
            "Interval:10ms".parse(),
            Ok(Durability::Interval { interval_ms: 10 })
        );
    }

    #[test]
    fn unknown_or_out_of_range_spellings_are_refused_with_the_valid_forms() {
        for bad in [
            "",
            "sometimes",
            "interval:",
            "interval:0",
            "interval:99999",
            "interval:-1",
        ] {
            let error = bad.parse::<Durability>().unwrap_err();
            assert!(error.to_string().contains("interval:<ms>"), "{error}");
        }
    }

    #[test]
    fn only_always_and_group_wait_for_a_sync() {
        assert!(Durability::Always.acknowledges_after_sync());
        assert!(Durability::Group.acknowledges_after_sync());
        assert!(!Durability::Interval { interval_ms: 5 }.acknowledges_after_sync());
        assert!(!Durability::None.acknowledges_after_sync());
        assert_eq!(Durability::default(), Durability::Group);
    }
}
