//! What a load run does: the operation mix, the value sizes, the keys, and how each
//! operation is spelled in RESP.

use crate::keys::{KeyChooser, KeyDistribution};
use core::fmt;
use ringkv_core::Rng;

/// One kind of operation the generator issues and reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Get,
    Set,
    Del,
    /// Dynamo's read: context and siblings.
    VGet,
    /// A write with the context of the VGET just before it (read-modify-write).
    VSet,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Get,
        Operation::Set,
        Operation::Del,
        Operation::VGet,
        Operation::VSet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Set => "set",
            Operation::Del => "del",
            Operation::VGet => "vget",
            Operation::VSet => "vset",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Writes and deletes (what "always writable" is about).
    pub fn is_write(self) -> bool {
        matches!(self, Operation::Set | Operation::Del | Operation::VSet)
    }
}

/// The share of reads, writes and deletes, in percent (they add up to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub read_percent: u32,
    pub write_percent: u32,
    pub delete_percent: u32,
}

/// A setting that cannot be used, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadError(pub String);

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorkloadError {}

impl Mix {
    /// `read:80,write:20` (any of read, write, delete; missing ones are 0).
    pub fn parse(text: &str) -> Result<Mix, WorkloadError> {
        let mut mix = Mix {
            read_percent: 0,
            write_percent: 0,
            delete_percent: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| WorkloadError(format!("mix part {part:?} is not name:percent")))?;
            let value: u32 = value
                .trim()
                .parse()
                .map_err(|_| WorkloadError(format!("mix part {part:?} has no number")))?;
            match name.trim() {
                "read" | "get" => mix.read_percent = value,
                "write" | "set" => mix.write_percent = value,
                "delete" | "del" => mix.delete_percent = value,
                other => return Err(WorkloadError(format!("unknown mix part {other:?}"))),
            }
        }
        if mix.read_percent + mix.write_percent + mix.delete_percent != 100 {
            return Err(WorkloadError(format!(
                "the mix must add up to 100, not {}",
                mix.read_percent + mix.write_percent + mix.delete_percent
            )));
        }
        Ok(mix)
    }
}

/// Value sizes: one size, or uniform over a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSize {
    Fixed(usize),
    Uniform { min: usize, max: usize },
}

impl ValueSize {
    /// `100` or `100..4096` (bytes, at most 1 MiB).
    pub fn parse(text: &str) -> Result<ValueSize, WorkloadError> {
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| WorkloadError(format!("value size {text:?} is not bytes or a..b")))
        };
        let size = match text.split_once("..") {
            Some((min, max)) => {
                let (min, max) = (number(min)?, number(max)?);
                if min > max {
                    return Err(WorkloadError(format!("value size {text:?}: min above max")));
                }
                ValueSize::Uniform { min, max }
            }
            None => ValueSize::Fixed(number(text)?),
        };
        if size.max() > ringkv_core::limits::VALUE_SIZE_BYTES_MAX {
            return Err(WorkloadError(
                "values are at most 1 MiB (1048576 bytes)".to_owned(),
            ));
        }
        Ok(size)
    }

    pub fn max(self) -> usize {
        match self {
            ValueSize::Fixed(size) => size,
            ValueSize::Uniform { max, .. } => max,
        }
    }

    pub fn draw(self, rng: &mut Rng) -> usize {
        match self {
            ValueSize::Fixed(size) => size,
            ValueSize::Uniform { min, max } => min + rng.below((max - min + 1) as u64) as usize,
        }
    }
}

/// `uniform`, `zipfian:<theta>` or `latest:<theta>`.
pub fn parse_distribution(text: &str) -> Result<KeyDistribution, WorkloadError> {
    let theta = |t: &str| {
        t.parse::<f64>()
            .map_err(|_| WorkloadError(format!("{text:?}: theta is not a number")))
    };
    match text.split_once(':') {
        None if text == "uniform" => Ok(KeyDistribution::Uniform),
        None if text == "zipfian" => Ok(KeyDistribution::Zipfian { theta: 0.99 }),
        None if text == "latest" => Ok(KeyDistribution::Latest { theta: 0.99 }),
        Some(("zipfian", t)) => Ok(KeyDistribution::Zipfian { theta: theta(t)? }),
        Some(("latest", t)) => Ok(KeyDistribution::Latest { theta: theta(t)? }),
        _ => Err(WorkloadError(format!(
            "unknown key distribution {text:?}: uniform, zipfian[:theta] or latest[:theta]"
        ))),
    }
}

/// Everything that decides the requests of a run.
#[derive(Clone, Debug)]
pub struct Workload {
    pub mix: Mix,
    pub keys: KeyChooser,
    pub key_count: u64,
    pub key_prefix: String,
    pub value_size: ValueSize,
    /// VGET/VSET/VDEL (Dynamo's interface) instead of GET/SET/DEL.
    pub versioned: bool,
    pub read_quorum: Option<u8>,
    pub write_quorum: Option<u8>,
}

/// What to send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Read(u64),
    Write(u64),
    Delete(u64),
}

impl Workload {
    /// The next step, drawn from the mix and the key distribution. `newest` is the
    /// highest key index written so far (for the `latest` distribution).
    pub fn next(&self, rng: &mut Rng, newest: u64) -> Step {
        let key = self.keys.next(rng, newest);
        let roll = rng.below(100) as u32;
        if roll < self.mix.read_percent {
            Step::Read(key)
        } else if roll < self.mix.read_percent + self.mix.write_percent {
            Step::Write(key)
        } else {
            Step::Delete(key)
        }
    }

    /// The key of index `index`.
    pub fn key(&self, index: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.key_prefix.as_bytes());
        out.extend_from_slice(format!("{index:012}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_must_add_up() {
        assert_eq!(
            Mix::parse("read:80,write:20").unwrap(),
            Mix {
                read_percent: 80,
                write_percent: 20,
                delete_percent: 0
            }
        );
        assert!(Mix::parse("read:80").is_err());
        assert!(Mix::parse("read:50,scan:50").is_err());
    }

    #[test]
    fn value_sizes_parse_and_draw_within_their_range() {
        assert_eq!(ValueSize::parse("100").unwrap(), ValueSize::Fixed(100));
        let range = ValueSize::parse("10..20").unwrap();
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let size = range.draw(&mut rng);
            assert!((10..=20).contains(&size));
        }
        assert!(ValueSize::parse("2000000").is_err());
        assert!(ValueSize::parse("20..10").is_err());
    }

    #[test]
    fn distributions_parse() {
        assert_eq!(
            parse_distribution("uniform").unwrap(),
            KeyDistribution::Uniform
        );
        assert_eq!(
            parse_distribution("zipfian:0.9").unwrap(),
            KeyDistribution::Zipfian { theta: 0.9 }
        );
        assert!(parse_distribution("pareto").is_err());
    }
}
