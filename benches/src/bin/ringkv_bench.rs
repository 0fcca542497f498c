//! `ringkv-bench`: the load generator that reports p99.9. It speaks RESP, so the same
//! run can target ringkv or Redis. `ringkv-bench --help` explains every flag.

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_bench::compare;
use ringkv_bench::keys::KeyChooser;
use ringkv_bench::load::report::Results;
use ringkv_bench::load::run::{Length, Plan, Protocol, run};
use ringkv_bench::load::workload::{Mix, ValueSize, Workload, parse_distribution};
use ringkv_frontend::dev::{self, ProcessCluster};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Load a RESP server (ringkv or Redis) and report latency percentiles to p99.99.
#[derive(Debug, Parser)]
#[command(
    name = "ringkv-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<CliCommand>,
    #[command(flatten)]
    load: Flags,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// The side-by-side: the load's workload (by default 50% GET / 50% SET, 100-byte
    /// values, 100,000 keys) in a closed loop and in an open loop at a fixed rate
    /// against Redis (no persistence; appendfsync always), a 3-node etcd cluster, and
    /// one node and a 3-node cluster (N=3 R=2 W=2) of both ringkv binaries, with the
    /// servers' CPU time per request; medians of --runs runs. Needs redis-server, etcd
    /// and both ringkv binaries; says so when one is missing.
    Compare(CompareFlags),
    /// Start a local ringkv cluster, run the load against it while the scenario
    /// happens, report (the failure window on its own), and stop the cluster.
    Scenario(ScenarioFlags),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    /// Steady load, nothing happens.
    Steady,
    /// The last node is killed (kill -9) a third into the run and restarted at two
    /// thirds; the window is the time it is down.
    NodeKilled,
    /// The last node is paused (SIGSTOP) a third into the run and resumed (SIGCONT) at
    /// two thirds; the window is the time it is frozen.
    NodePaused,
    /// A node joins through a seed a third into the run; the window is the rest.
    NodeJoins,
}

#[derive(Debug, Args)]
struct ScenarioFlags {
    name: ScenarioName,
    /// Nodes the cluster starts with.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// N, R and W of the cluster.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    #[arg(long, default_value_t = 2)]
    read_quorum: u8,
    #[arg(long, default_value_t = 2)]
    write_quorum: u8,
    /// Durability of every node (always, group, interval:<ms>, none).
    #[arg(long, default_value = "group")]
    durability: String,
    /// The ringkv-node binary (default: next to this one).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// First port of the cluster (node i: base + 2i for clients, + 1 for peers).
    #[arg(long, default_value_t = 27379)]
    base_port: u16,
    /// Where the nodes keep data and logs (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    load: Flags,
}

#[derive(Debug, Args)]
struct CompareFlags {
    /// Times every target is measured (they take turns); the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Requests a second of each target's open-loop phase.
    #[arg(long, default_value_t = 2_000.0)]
    open_loop_rate: f64,
    /// The ringkv-node binary (default: next to this one).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// The ringkv-node-uring binary (default: next to this one).
    #[arg(long)]
    uring_binary: Option<PathBuf>,
    /// Port of each server in turn (a cluster uses the ports above it too).
    #[arg(long, default_value_t = 27379)]
    base_port: u16,
    #[command(flatten)]
    load: Flags,
}

#[derive(Debug, Args)]
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
    /// resp (ringkv, Redis) or etcd (its HTTP gateway; GET/SET/DEL only).
    #[arg(long, value_enum, default_value_t = ProtocolName::Resp)]
    protocol: ProtocolName,
    /// A request unanswered this long after it was sent counts a client timeout and
    /// fails its connection over to the next host (and is sent again there).
    #[arg(long)]
    client_timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProtocolName {
    Resp,
    Etcd,
}

fn plan(flags: &Flags) -> Result<Plan, String> {
    if flags.connections == 0 || flags.pipeline == 0 {
        return Err("--connections and --pipeline must be at least 1".to_owned());
    }
    if flags.versioned && flags.protocol == ProtocolName::Etcd {
        return Err("etcd has no versioned reads and writes: drop --versioned".to_owned());
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
        window: None,
        protocol: match flags.protocol {
            ProtocolName::Resp => Protocol::Resp,
            ProtocolName::Etcd => Protocol::EtcdHttp,
        },
        client_timeout: flags.client_timeout_ms.map(Duration::from_millis),
        faulted_host: None,
    })
}

/// The scenario's moments, as offsets from the start of measuring: (first, second).
fn moments(plan: &Plan) -> Result<(Duration, Duration), String> {
    match plan.length {
        Length::Duration(duration) => Ok((duration / 3, duration * 2 / 3)),
        Length::Requests(_) => {
            Err("a scenario runs for a duration, not a request count".to_owned())
        }
    }
}

/// Runs a scenario; the load runs on this thread while another one acts on the cluster.
fn scenario(
    flags: &ScenarioFlags,
    mut plan: Plan,
    progress: impl FnMut(&Results),
) -> Result<Results, String> {
    let binary = sibling_binary(flags.node_binary.as_ref(), "ringkv-node")?;
    if !binary.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release -p ringkv-mio) or pass --node-binary",
            binary.display()
        ));
    }
    let temporary = tempfile::Builder::new()
        .prefix("ringkv-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = flags
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let extra: Vec<String> = [
        "--replicas",
        &flags.replicas.to_string(),
        "--read-quorum",
        &flags.read_quorum.to_string(),
        "--write-quorum",
        &flags.write_quorum.to_string(),
        "--durability",
        &flags.durability,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut cluster = ProcessCluster::start(&binary, flags.nodes, flags.base_port, &dir, &extra)?;
    plan.hosts = cluster.client_addresses();
    let (first, second) = moments(&plan)?;
    let start = Instant::now() + plan.warmup;
    plan.window = match flags.name {
        ScenarioName::Steady => None,
        ScenarioName::NodeKilled | ScenarioName::NodePaused => Some((first, second)),
        ScenarioName::NodeJoins => Some((first, second + first)),
    };
    if matches!(
        flags.name,
        ScenarioName::NodeKilled | ScenarioName::NodePaused
    ) {
        plan.faulted_host = Some(usize::from(flags.nodes) - 1);
    }
    let name = flags.name;
    let nodes = flags.nodes;
    let actor = std::thread::spawn(move || -> Result<ProcessCluster, String> {
        let sleep_until =
            |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
        match name {
            ScenarioName::Steady => {}
            ScenarioName::NodeKilled => {
                sleep_until(start + first);
                println!("scenario: kill -9 node {nodes}");
                cluster.kill(nodes - 1);
                sleep_until(start + second);
                println!("scenario: restarting node {nodes}");
                cluster.restart(nodes - 1)?;
            }
            ScenarioName::NodePaused => {
                sleep_until(start + first);
                println!("scenario: SIGSTOP node {nodes}");
                cluster.pause(nodes - 1);
                sleep_until(start + second);
                println!("scenario: SIGCONT node {nodes}");
                cluster.resume(nodes - 1);
            }
            ScenarioName::NodeJoins => {
                sleep_until(start + first);
                println!("scenario: node {} joins", nodes + 1);
                let arguments = dev::joiner_arguments(nodes, cluster.base_port(), cluster.dir());
                cluster.add_node(arguments)?;
            }
        }
        Ok(cluster)
    });
    let results = run(&plan, progress).map_err(|e| e.to_string())?;
    let mut cluster = actor
        .join()
        .map_err(|_| "the scenario thread panicked".to_owned())??;
    cluster.stop_all();
    drop(temporary);
    Ok(results)
}

/// `given`, else the binary `name` next to this one.
fn sibling_binary(given: Option<&PathBuf>, name: &str) -> Result<PathBuf, String> {
    match given {
        Some(path) => Ok(path.clone()),
        None => Ok(std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name(name)),
    }
}

fn run_comparison(flags: &CompareFlags, plan: Plan) -> ExitCode {
    let binaries = sibling_binary(flags.node_binary.as_ref(), "ringkv-node").and_then(|node| {
        Ok((
            node,
            sibling_binary(flags.uring_binary.as_ref(), "ringkv-node-uring")?,
        ))
    });
    let (node_binary, uring_binary) = match binaries {
        Ok(binaries) => binaries,
        Err(error) => {
            eprintln!("ringkv-bench compare: {error}");
            return ExitCode::FAILURE;
        }
    };
    let seconds = match plan.length {
        Length::Duration(duration) => duration.as_secs_f64(),
        Length::Requests(_) => {
            eprintln!("ringkv-bench compare: give --duration-seconds, not --requests");
            return ExitCode::FAILURE;
        }
    };
    if !(flags.open_loop_rate.is_finite() && flags.open_loop_rate > 0.0) || flags.runs == 0 {
        eprintln!("ringkv-bench compare: --open-loop-rate and --runs must be positive");
        return ExitCode::FAILURE;
    }
    let comparison = compare::Comparison {
        seconds,
        connections: plan.connections,
        open_loop_rate: flags.open_loop_rate,
        runs: flags.runs,
        workload: plan.workload,
        node_binary,
        uring_binary,
        base_port: flags.base_port,
    };
    let missing = compare::missing_tools(&comparison);
    if !missing.is_empty() {
        eprintln!("ringkv-bench compare needs, and will not install:");
        for tool in missing {
            eprintln!("  {tool}");
        }
        return ExitCode::from(2);
    }
    println!(
        "compare: mix {}, values {} B, {} keys; closed loop {} connections, open loop {}/s over as many; {seconds} s per phase after 1 s of warm-up; {} runs, medians",
        flags.load.mix,
        comparison.workload.value_size.max(),
        comparison.workload.key_count,
        comparison.connections,
        comparison.open_loop_rate,
        comparison.runs
    );
    match compare::compare(&comparison, |step| eprintln!("compare: {step}")) {
        Ok(samples) => {
            for sample in &samples {
                eprintln!("compare: {sample:?}");
            }
            print!("{}", compare::table(&samples, comparison.open_loop_rate));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ringkv-bench compare: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = match &cli.command {
        Some(CliCommand::Scenario(scenario)) => &scenario.load,
        Some(CliCommand::Compare(compare)) => &compare.load,
        None => &cli.load,
    };
    let plan = match plan(flags) {
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
    if let Some(CliCommand::Compare(compare_flags)) = &cli.command {
        return run_comparison(compare_flags, plan);
    }
    let target = match &cli.command {
        Some(CliCommand::Scenario(scenario)) => format!(
            "a local {}-node cluster (scenario {:?}, N={} R={} W={})",
            scenario.nodes,
            scenario.name,
            scenario.replicas,
            scenario.read_quorum,
            scenario.write_quorum
        ),
        _ => flags
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    println!(
        "ringkv-bench: {} connections x pipeline {} to {} ({}), mix {}, {} keys {}, values {} B, seed {}",
        plan.connections,
        plan.pipeline,
        target,
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
    let outcome = match &cli.command {
        Some(CliCommand::Scenario(scenario_flags)) => scenario(scenario_flags, plan, progress),
        _ => run(&plan, progress).map_err(|e| e.to_string()),
    };
    let results = match outcome {
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
