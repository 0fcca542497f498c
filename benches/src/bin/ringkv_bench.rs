//! `ringkv-bench`: the load generator that reports p99.9. It speaks RESP, so the same
//! run can target ringkv or Redis. `ringkv-bench --help` explains every flag.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_bench::keys::KeyChooser;
use ringkv_bench::load::report::Results;
use ringkv_bench::load::run::{Length, Plan, run};
use ringkv_bench::load::workload::{Mix, ValueSize, Workload, parse_distribution};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load a RESP server (ringkv or Redis) and report latency percentiles to p99.99.
#[derive(Debug, Parser)]
#[command(name = "ringkv-bench", version, about)]
struct Flags {
    /// Servers to load, comma separated; connections are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7379")]
    hosts: Vec<SocketAddr>,
    /// Connections (C).
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection in the closed loop (P).
    #[arg(long, short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Open loop: this many requests per second in all, each timed from when it was
    /// due (no coordinated omission). Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Run this many seconds after the warm-up.
    #[arg(long, default_value_t = 10.0, conflicts_with = "requests")]
    duration_seconds: f64,
    /// Or: run this many requests (warm-up included).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// Operation mix in percent, e.g. read:80,write:20 or read:50,write:40,delete:10.
    #[arg(long, default_value = "read:50,write:50")]
    mix: String,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Key distribution: uniform, zipfian[:theta], latest[:theta].
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Value size in bytes, fixed (100) or uniform over a range (100..4096), at most 1 MiB.
    #[arg(long, default_value = "100")]
    value_size: String,
    /// Use Dynamo's VGET/VSET/VDEL (a write reads its context first) instead of GET/SET/DEL.
    #[arg(long)]
    versioned: bool,
    /// R for each VGET (versioned only).
    #[arg(long)]
    read_quorum: Option<u8>,
    /// W for each VSET/VDEL (versioned only).
    #[arg(long)]
    write_quorum: Option<u8>,
    /// Key prefix.
    #[arg(long, default_value = "key:")]
    key_prefix: String,
    /// Seed of every random choice (keys, mix, sizes); printed, so a run replays.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot (p99.9 over time, latency by percentile) here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No live progress line even on a terminal.
    #[arg(long)]
    quiet: bool,
}

fn plan(flags: &Flags) -> Result<Plan, String> {
    if flags.connections == 0 || flags.pipeline == 0 {
        return Err("--connections and --pipeline must be at least 1".to_owned());
    }
    if !flags.versioned && (flags.read_quorum.is_some() || flags.write_quorum.is_some()) {
        return Err("--read-quorum and --write-quorum need --versioned".to_owned());
    }
    let distribution = parse_distribution(&flags.distribution).map_err(|e| e.to_string())?;
    let keys = KeyChooser::new(distribution, flags.keys).map_err(|e| e.to_string())?;
    let workload = Workload {
        mix: Mix::parse(&flags.mix).map_err(|e| e.to_string())?,
        keys,
        key_count: flags.keys,
        key_prefix: flags.key_prefix.clone(),
        value_size: ValueSize::parse(&flags.value_size).map_err(|e| e.to_string())?,
        versioned: flags.versioned,
        read_quorum: flags.read_quorum,
        write_quorum: flags.write_quorum,
    };
    let positive = flags.duration_seconds.is_finite() && flags.duration_seconds > 0.0;
    let warmup_valid = flags.warmup_seconds.is_finite() && flags.warmup_seconds >= 0.0;
    if !positive || !warmup_valid {
        return Err(
            "--duration-seconds must be above 0 and --warmup-seconds at least 0".to_owned(),
        );
    }
    if flags
        .rate
        .is_some_and(|rate| !rate.is_finite() || rate <= 0.0)
    {
        return Err("--rate must be above 0".to_owned());
    }
    Ok(Plan {
        hosts: flags.hosts.clone(),
        connections: flags.connections,
        pipeline: flags.pipeline,
        rate: flags.rate,
        length: match flags.requests {
            Some(count) => Length::Requests(count),
            None => Length::Duration(Duration::from_secs_f64(flags.duration_seconds)),
        },
        warmup: Duration::from_secs_f64(flags.warmup_seconds),
        workload,
        seed: flags.seed,
    })
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let plan = match plan(&flags) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("ringkv-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let bar = (!flags.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    println!(
        "ringkv-bench: {} connections x pipeline {} to {} ({}), mix {}, {} keys {}, values {} B, seed {}",
        plan.connections,
        plan.pipeline,
        flags
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        plan.rate.map_or("closed loop".to_owned(), |r| format!(
            "open loop at {r} req/s"
        )),
        flags.mix,
        flags.keys,
        flags.distribution,
        flags.value_size,
        flags.seed
    );
    let progress = |results: &Results| {
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{:.0} req/s, p99.9 {:.3} ms, {} errors",
                results.throughput_per_second,
                results.latency_us.p999 as f64 / 1000.0,
                results.errors.values().sum::<u64>()
            ));
            bar.tick();
        }
    };
    let results = match run(&plan, progress) {
        Ok(results) => results,
        Err(error) => {
            eprintln!("ringkv-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    print!("{}", results.table());
    for (path, text) in [(&flags.json, results.json()), (&flags.svg, results.svg())] {
        if let Some(path) = path {
            if let Err(error) = std::fs::write(path, text) {
                eprintln!("ringkv-bench: {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
