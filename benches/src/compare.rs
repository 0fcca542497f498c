//! `ringkv-bench compare`: the side-by-side. In one run on one machine, the same
//! workload (by default 50% GET / 50% SET of 100-byte values over 100,000 keys)
//! against Redis without persistence, Redis with `appendfsync always`, a 3-node etcd
//! cluster, one ringkv node (N=1) of each binary (`ringkv-node`, `ringkv-node-uring`)
//! and a 3-node cluster (N=3 R=2 W=2) of each, every target measured twice with
//! ringkv-bench's own loop: closed loop (50 connections by default) and open loop at a
//! fixed rate (2,000 requests a second by default, each request timed from when it
//! was due). Besides throughput and latency, each phase reports the CPU time the
//! target's server processes spent per request (utime + stime from `/proc`, over the
//! measured phase only): it does not depend on how the two cores are shared. With
//! `--runs N` every target is measured N times, targets taking turns within each run so
//! drift spreads over all of them, and the table shows medians.
//!
//! It needs `redis-server` and `etcd` on the PATH and both ringkv binaries; it says
//! which are missing and stops rather than installing. Every server runs on 127.0.0.1
//! with its data in a temporary directory and is stopped before the next starts, so
//! targets never share the two cores.

use crate::load::report::{Percentiles, Results};
use crate::load::run::{Length, Plan, Protocol, run};
use crate::load::workload::Workload;
use ringkv_frontend::dev::{self, ProcessCluster};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One comparison's settings.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Seconds of each measured phase (after a warm-up of its own).
    pub seconds: f64,
    /// Connections of the closed loop (the open loop uses as many).
    pub connections: usize,
    /// Requests a second of the open-loop phase.
    pub open_loop_rate: f64,
    /// Times every target is measured; the table shows medians.
    pub runs: usize,
    pub workload: Workload,
    pub node_binary: PathBuf,
    pub uring_binary: PathBuf,
    pub base_port: u16,
}

/// What one phase (closed or open loop) of one target measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Phase {
    pub throughput_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The server processes' CPU time (user + system) per successful request.
    pub cpu_us_per_request: f64,
    pub errors: u64,
}

/// One target measured once: both phases.
#[derive(Clone, Debug)]
pub struct Sample {
    pub target: &'static str,
    pub closed: Phase,
    pub open: Phase,
}

/// The tools the comparison needs that this machine lacks.
pub fn missing_tools(comparison: &Comparison) -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, package) in [("redis-server", "redis-server"), ("etcd", "etcd-server")] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            missing.push(format!("{tool} (apt install {package})"));
        }
    }
    for binary in [&comparison.node_binary, &comparison.uring_binary] {
        if !binary.exists() {
            missing.push(format!(
                "{} (cargo build --release -p ringkv-mio -p ringkv-uring)",
                binary.display()
            ));
        }
    }
    missing
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Redis,
    RedisAlways,
    Etcd,
    RingkvSingle,
    RingkvUringSingle,
    RingkvCluster,
    RingkvUringCluster,
}

impl Target {
    const ALL: [Target; 7] = [
        Target::Redis,
        Target::RedisAlways,
        Target::Etcd,
        Target::RingkvSingle,
        Target::RingkvUringSingle,
        Target::RingkvCluster,
        Target::RingkvUringCluster,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Redis => "Redis, no persistence",
            Target::RedisAlways => "Redis, appendfsync always",
            Target::Etcd => "etcd, 3-node cluster",
            Target::RingkvSingle => "ringkv-node, 1 node",
            Target::RingkvUringSingle => "ringkv-node-uring, 1 node",
            Target::RingkvCluster => "ringkv-node, 3 nodes N=3 R=2 W=2",
            Target::RingkvUringCluster => "ringkv-node-uring, 3 nodes",
        }
    }
}

/// A running target: what stops it.
enum Running {
    Processes(Vec<Child>),
    Cluster(ProcessCluster),
}

impl Running {
    fn stop(self) {
        match self {
            Running::Processes(children) => {
                for mut child in children {
                    dev::stop_gracefully(&mut child, Duration::from_secs(10));
                }
            }
            Running::Cluster(mut cluster) => cluster.stop_all(),
        }
    }

    /// The server processes' ids (their CPU time is the target's).
    fn pids(&self) -> Vec<u32> {
        match self {
            Running::Processes(children) => children.iter().map(Child::id).collect(),
            Running::Cluster(cluster) => (0..cluster.nodes())
                .filter_map(|index| cluster.pid(index))
                .collect(),
        }
    }
}

fn wait_for_port(address: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on {address}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A listening socket may come before the server is ready; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// The etcd cluster's client address of member `index` (its peer port is the next).
fn etcd_address(base_port: u16, index: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], base_port + 2 * index))
}

fn start(
    target: Target,
    comparison: &Comparison,
    dir: &Path,
) -> Result<(Running, Vec<SocketAddr>), String> {
    let port = comparison.base_port;
    let data = dir.join(format!("{target:?}"));
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(data.join("server.log")).map_err(|e| e.to_string())?;
    let spawn = |program: &str, arguments: &[String]| -> Result<Child, String> {
        Command::new(program)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))
    };
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (running, addresses) = match target {
        Target::Redis | Target::RedisAlways => {
            let mut arguments = strings(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            arguments.extend(strings(&["--dir", &data.to_string_lossy(), "--save", ""]));
            if target == Target::RedisAlways {
                arguments.extend(strings(&["--appendonly", "yes", "--appendfsync", "always"]));
            } else {
                arguments.extend(strings(&["--appendonly", "no"]));
            }
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            (
                Running::Processes(vec![spawn("redis-server", &arguments)?]),
                vec![address],
            )
        }
        Target::Etcd => {
            let members = 3u16;
            let peer = |index: u16| format!("http://127.0.0.1:{}", port + 2 * index + 1);
            let cluster = (0..members)
                .map(|index| format!("e{index}={}", peer(index)))
                .collect::<Vec<_>>()
                .join(",");
            let mut children = Vec::new();
            for index in 0..members {
                let client = format!("http://{}", etcd_address(port, index));
                let member_data = data.join(format!("e{index}"));
                let started = spawn(
                    "etcd",
                    &strings(&[
                        "--name",
                        &format!("e{index}"),
                        "--data-dir",
                        &member_data.to_string_lossy(),
                        "--listen-client-urls",
                        &client,
                        "--advertise-client-urls",
                        &client,
                        "--listen-peer-urls",
                        &peer(index),
                        "--initial-advertise-peer-urls",
                        &peer(index),
                        "--initial-cluster",
                        &cluster,
                        "--initial-cluster-state",
                        "new",
                    ]),
                );
                match started {
                    Ok(child) => children.push(child),
                    Err(error) => {
                        Running::Processes(children).stop();
                        return Err(error);
                    }
                }
            }
            let addresses = (0..members).map(|i| etcd_address(port, i)).collect();
            (Running::Processes(children), addresses)
        }
        Target::RingkvSingle
        | Target::RingkvUringSingle
        | Target::RingkvCluster
        | Target::RingkvUringCluster => {
            let nodes = match target {
                Target::RingkvSingle | Target::RingkvUringSingle => 1,
                _ => 3,
            };
            let binary = match target {
                Target::RingkvSingle | Target::RingkvCluster => &comparison.node_binary,
                _ => &comparison.uring_binary,
            };
            let extra = strings(&["--replicas", if nodes == 1 { "1" } else { "3" }]);
            let cluster = ProcessCluster::start(binary, nodes, port, &data, &extra)?;
            let addresses = cluster.client_addresses();
            return Ok((Running::Cluster(cluster), addresses));
        }
    };
    for &address in &addresses {
        if let Err(error) = wait_for_port(address) {
            running.stop();
            return Err(error);
        }
    }
    Ok((running, addresses))
}

/// The CPU time (user + system, every thread) `pids` have used, in seconds.
fn cpu_seconds(pids: &[u32]) -> Result<f64, String> {
    let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        ticks += process_cpu_ticks(&stat).ok_or_else(|| format!("{path}: unreadable"))?;
    }
    Ok(ticks as f64 / ticks_per_second)
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line: the 14th and 15th fields,
/// counted after the command name, which is in parentheses and may hold spaces.
pub fn process_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Measures one phase: a warm-up of its own, then `seconds` of load with the server
/// processes' CPU time read before and after.
fn measure(
    target: Target,
    comparison: &Comparison,
    hosts: &[SocketAddr],
    pids: &[u32],
    rate: Option<f64>,
) -> Result<Phase, String> {
    let plan = |seconds: f64, seed: u64| Plan {
        hosts: hosts.to_vec(),
        connections: comparison.connections,
        pipeline: 1,
        rate,
        length: Length::Duration(Duration::from_secs_f64(seconds)),
        warmup: Duration::ZERO,
        workload: comparison.workload.clone(),
        seed,
        window: None,
        protocol: if target == Target::Etcd {
            Protocol::EtcdHttp
        } else {
            Protocol::Resp
        },
        client_timeout: None,
        faulted_host: None,
    };
    run(&plan(1.0, 2), |_| {}).map_err(|e| e.to_string())?;
    let before = cpu_seconds(pids)?;
    let results: Results = run(&plan(comparison.seconds, 1), |_| {}).map_err(|e| e.to_string())?;
    let cpu = cpu_seconds(pids)? - before;
    let latency: Percentiles = results.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Phase {
        throughput_per_second: results.throughput_per_second,
        p50_ms: ms(latency.p50),
        p99_ms: ms(latency.p99),
        p999_ms: ms(latency.p999),
        cpu_us_per_request: cpu * 1e6 / results.requests.max(1) as f64,
        errors: results.errors.values().sum(),
    })
}

/// Runs the comparison; `say` reports progress.
pub fn compare(comparison: &Comparison, mut say: impl FnMut(&str)) -> Result<Vec<Sample>, String> {
    let dir = tempfile::Builder::new()
        .prefix("ringkv-compare-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for round in 1..=comparison.runs.max(1) {
        for target in Target::ALL {
            let name = target.name();
            say(&format!("run {round}: {name}: starting"));
            let round_dir = dir.path().join(format!("run-{round}"));
            let (running, hosts) = start(target, comparison, &round_dir)?;
            let pids = running.pids();
            let measured = (|| -> Result<Sample, String> {
                say(&format!("run {round}: {name}: closed loop"));
                let closed = measure(target, comparison, &hosts, &pids, None)?;
                let rate = comparison.open_loop_rate;
                say(&format!("run {round}: {name}: open loop at {rate}/s"));
                let open = measure(target, comparison, &hosts, &pids, Some(rate))?;
                Ok(Sample {
                    target: name,
                    closed,
                    open,
                })
            })();
            running.stop();
            samples.push(measured?);
        }
    }
    Ok(samples)
}

/// The median of `values` (the mean of the middle two when even).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Each target's medians over its samples, in the order targets were first measured.
pub fn medians(samples: &[Sample]) -> Vec<Sample> {
    let mut targets: Vec<&'static str> = Vec::new();
    for sample in samples {
        if !targets.contains(&sample.target) {
            targets.push(sample.target);
        }
    }
    let phase_median = |phases: &[Phase]| {
        let of = |field: fn(&Phase) -> f64| median(phases.iter().map(field).collect());
        Phase {
            throughput_per_second: of(|p| p.throughput_per_second),
            p50_ms: of(|p| p.p50_ms),
            p99_ms: of(|p| p.p99_ms),
            p999_ms: of(|p| p.p999_ms),
            cpu_us_per_request: of(|p| p.cpu_us_per_request),
            errors: phases.iter().map(|p| p.errors).sum(),
        }
    };
    targets
        .into_iter()
        .map(|target| {
            let own: Vec<&Sample> = samples.iter().filter(|s| s.target == target).collect();
            let closed: Vec<Phase> = own.iter().map(|s| s.closed).collect();
            let open: Vec<Phase> = own.iter().map(|s| s.open).collect();
            Sample {
                target,
                closed: phase_median(&closed),
                open: phase_median(&open),
            }
        })
        .collect()
}

/// The side-by-side table of medians, with ratios against Redis without persistence
/// (closed-loop throughput and p99.9) and Redis with `appendfsync always` (open-loop
/// CPU per request and p99.9), and the errors of every run.
pub fn table(samples: &[Sample], open_loop_rate: f64) -> String {
    let rows = medians(samples);
    let find = |name: &str| rows.iter().find(|row| row.target == name);
    let redis = find(Target::Redis.name());
    let always = find(Target::RedisAlways.name());
    let ratio = |value: f64, base: Option<f64>| match base {
        Some(base) if base > 0.0 => format!("{:.2}x", value / base),
        _ => "-".to_owned(),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| target | closed req/s | closed p99.9 ms | CPU us/req closed | open p99.9 ms at {open_loop_rate:.0}/s | CPU us/req at {open_loop_rate:.0}/s | req/s vs Redis | closed p99.9 vs Redis | open CPU vs Redis-always | open p99.9 vs Redis-always | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &rows {
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.1} | {} | {} | {} | {} | {} |",
            row.target,
            row.closed.throughput_per_second,
            row.closed.p999_ms,
            row.closed.cpu_us_per_request,
            row.open.p999_ms,
            row.open.cpu_us_per_request,
            ratio(
                row.closed.throughput_per_second,
                redis.map(|r| r.closed.throughput_per_second)
            ),
            ratio(row.closed.p999_ms, redis.map(|r| r.closed.p999_ms)),
            ratio(
                row.open.cpu_us_per_request,
                always.map(|r| r.open.cpu_us_per_request)
            ),
            ratio(row.open.p999_ms, always.map(|r| r.open.p999_ms)),
            row.closed.errors + row.open.errors,
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (ringkv node) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(process_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(process_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn medians_take_the_middle_run_per_field_and_sum_errors() {
        let phase = |throughput: f64, cpu: f64, errors: u64| Phase {
            throughput_per_second: throughput,
            cpu_us_per_request: cpu,
            errors,
            ..Phase::default()
        };
        let samples: Vec<Sample> = [(100.0, 9.0, 0), (300.0, 7.0, 1), (200.0, 8.0, 0)]
            .into_iter()
            .map(|(throughput, cpu, errors)| Sample {
                target: "a",
                closed: phase(throughput, cpu, errors),
                open: phase(throughput, cpu, 0),
            })
            .collect();
        let rows = medians(&samples);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].closed.throughput_per_second, 200.0);
        assert_eq!(rows[0].closed.cpu_us_per_request, 8.0);
        assert_eq!(rows[0].closed.errors, 1);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
