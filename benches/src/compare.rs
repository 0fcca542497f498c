//! `ringkv-bench compare`: the side-by-side. In one run on one machine, the same
//! workload (SET then GET, 100-byte values by default, 50 connections, closed loop)
//! against Redis without persistence, Redis with `appendfsync always`, a single etcd
//! node, a single ringkv node (N=1) and a 3-node ringkv cluster (N=3 R=2 W=2), each
//! measured with redis-benchmark (RESP targets) and with ringkv-bench's own loop; one
//! table of throughput and p50/p99/p99.9 with the ratio to Redis without persistence
//! under the same tool.
//!
//! It needs `redis-server`, `redis-benchmark` and `etcd` on the PATH and the
//! `ringkv-node` binary; it says which are missing and stops rather than installing.
//! Every server runs on 127.0.0.1 with its data in a temporary directory and is stopped
//! before the next starts, so targets never share the two cores.

use crate::load::report::Percentiles;
use crate::load::run::{Length, Plan, Protocol, run};
use crate::load::workload::{Mix, Workload};
use ringkv_frontend::dev::{self, ProcessCluster};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One comparison's settings.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Seconds of each ringkv-bench phase (SET, then GET).
    pub seconds: f64,
    /// Requests of each redis-benchmark test (`-n`).
    pub redis_benchmark_requests: u64,
    pub connections: usize,
    pub workload: Workload,
    pub node_binary: PathBuf,
    pub base_port: u16,
}

/// One measured line of the table.
#[derive(Clone, Debug)]
pub struct Line {
    pub target: &'static str,
    pub tool: &'static str,
    pub operation: &'static str,
    pub throughput_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
}

/// The tools the comparison needs that this machine lacks.
pub fn missing_tools(node_binary: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, package) in [
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
        ("etcd", "etcd-server"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} (Debian: apt-get install {package})"));
        }
    }
    if !node_binary.exists() {
        missing.push(format!(
            "{} (cargo build --release -p ringkv-mio)",
            node_binary.display()
        ));
    }
    missing
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Redis,
    RedisAlways,
    Etcd,
    RingkvSingle,
    RingkvCluster,
}

impl Target {
    const ALL: [Target; 5] = [
        Target::Redis,
        Target::RedisAlways,
        Target::Etcd,
        Target::RingkvSingle,
        Target::RingkvCluster,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Redis => "redis (no persistence)",
            Target::RedisAlways => "redis (appendfsync always)",
            Target::Etcd => "etcd (1 node)",
            Target::RingkvSingle => "ringkv (1 node, N=1)",
            Target::RingkvCluster => "ringkv (3 nodes, N=3 R=2 W=2)",
        }
    }
}

/// A running target: its client addresses and what stops it.
enum Running {
    Process(Child),
    Cluster(ProcessCluster),
}

impl Running {
    fn stop(self) {
        match self {
            Running::Process(mut child) => {
                dev::stop_gracefully(&mut child, Duration::from_secs(10));
            }
            Running::Cluster(mut cluster) => cluster.stop_all(),
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

fn start(
    target: Target,
    comparison: &Comparison,
    dir: &Path,
) -> Result<(Running, Vec<SocketAddr>), String> {
    let port = comparison.base_port;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
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
    let data_text = data.to_string_lossy().into_owned();
    let port_text = port.to_string();
    let running = match target {
        Target::Redis | Target::RedisAlways => {
            let mut arguments = strings(&[
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--dir",
                &data_text,
                "--save",
                "",
            ]);
            if target == Target::RedisAlways {
                arguments.extend(strings(&["--appendonly", "yes", "--appendfsync", "always"]));
            } else {
                arguments.extend(strings(&["--appendonly", "no"]));
            }
            Running::Process(spawn("redis-server", &arguments)?)
        }
        Target::Etcd => {
            let client = format!("http://127.0.0.1:{port}");
            let peer = format!("http://127.0.0.1:{}", port + 1);
            Running::Process(spawn(
                "etcd",
                &strings(&[
                    "--data-dir",
                    &data_text,
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster",
                    &format!("default={peer}"),
                ]),
            )?)
        }
        Target::RingkvSingle | Target::RingkvCluster => {
            let nodes = if target == Target::RingkvSingle { 1 } else { 3 };
            let extra = strings(&["--replicas", if nodes == 1 { "1" } else { "3" }]);
            let cluster =
                ProcessCluster::start(&comparison.node_binary, nodes, port, &data, &extra)?;
            let addresses = cluster.client_addresses();
            return Ok((Running::Cluster(cluster), addresses));
        }
    };
    if let Err(error) = wait_for_port(address) {
        running.stop();
        return Err(error);
    }
    Ok((running, vec![address]))
}

/// Runs redis-benchmark's SET and GET tests against `address` and reads its report.
fn redis_benchmark(
    target: Target,
    comparison: &Comparison,
    address: SocketAddr,
) -> Result<Vec<Line>, String> {
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &address.port().to_string(),
            "-t",
            "set,get",
            "-n",
            &comparison.redis_benchmark_requests.to_string(),
            "-c",
            &comparison.connections.to_string(),
            "-d",
            &comparison.workload.value_size.max().to_string(),
            "-r",
            &comparison.workload.key_count.to_string(),
        ])
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    let lines = parse_redis_benchmark(&text)
        .into_iter()
        .map(|(operation, throughput, p50, p99, p999)| Line {
            target: target.name(),
            tool: "redis-benchmark",
            operation,
            throughput_per_second: throughput,
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p999,
            errors: 0,
        })
        .collect::<Vec<_>>();
    if lines.is_empty() {
        return Err(format!("redis-benchmark printed no results:\n{text}"));
    }
    Ok(lines)
}

/// (operation, requests/s, p50, p99, p99.9 in ms) per test of a redis-benchmark report.
pub fn parse_redis_benchmark(text: &str) -> Vec<(&'static str, f64, f64, f64, f64)> {
    let mut results = Vec::new();
    for section in text.split("====== ").skip(1) {
        let operation = if section.starts_with("SET") {
            "set"
        } else if section.starts_with("GET") {
            "get"
        } else {
            continue;
        };
        let mut throughput = None;
        let mut p999 = None;
        let mut summary = None;
        let mut lines = section.lines();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("throughput summary:") {
                throughput = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok());
            }
            if p999.is_none() {
                // "99.902% <= 13.231 milliseconds (cumulative count 49952)"
                if let Some((percent, rest)) = line.split_once("% <= ") {
                    let percent = percent.trim().parse::<f64>().unwrap_or(0.0);
                    if percent >= 99.9 {
                        p999 = rest
                            .split_whitespace()
                            .next()
                            .and_then(|v| v.parse::<f64>().ok());
                    }
                }
            }
            if line.starts_with("avg") && line.contains("p50") {
                let header: Vec<&str> = line.split_whitespace().collect();
                let values: Vec<f64> = lines
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                let at = |name: &str| {
                    header
                        .iter()
                        .position(|h| *h == name)
                        .and_then(|i| values.get(i).copied())
                };
                summary = at("p50").zip(at("p99"));
            }
        }
        if let (Some(throughput), Some((p50, p99)), Some(p999)) = (throughput, summary, p999) {
            results.push((operation, throughput, p50, p99, p999));
        }
    }
    results
}

fn ringkv_bench(
    target: Target,
    comparison: &Comparison,
    hosts: Vec<SocketAddr>,
) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for (operation, mix) in [("set", "write:100"), ("get", "read:100")] {
        let mut workload = comparison.workload.clone();
        workload.mix = Mix::parse(mix).map_err(|e| e.to_string())?;
        let plan = Plan {
            hosts: hosts.clone(),
            connections: comparison.connections,
            pipeline: 1,
            rate: None,
            length: Length::Duration(Duration::from_secs_f64(comparison.seconds)),
            warmup: Duration::from_secs(1),
            workload,
            seed: 1,
            window: None,
            protocol: if target == Target::Etcd {
                Protocol::EtcdHttp
            } else {
                Protocol::Resp
            },
            client_timeout: None,
            faulted_host: None,
        };
        let results = run(&plan, |_| {}).map_err(|e| e.to_string())?;
        let latency: Percentiles = results.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        lines.push(Line {
            target: target.name(),
            tool: "ringkv-bench",
            operation,
            throughput_per_second: results.throughput_per_second,
            p50_ms: ms(latency.p50),
            p99_ms: ms(latency.p99),
            p999_ms: ms(latency.p999),
            errors: results.errors.values().sum(),
        });
    }
    Ok(lines)
}

/// Runs the comparison; `say` reports progress.
pub fn compare(comparison: &Comparison, mut say: impl FnMut(&str)) -> Result<Vec<Line>, String> {
    let dir = tempfile::Builder::new()
        .prefix("ringkv-compare-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for target in Target::ALL {
        say(&format!("{}: starting", target.name()));
        let (running, hosts) = start(target, comparison, dir.path())?;
        let measured = (|| -> Result<Vec<Line>, String> {
            let mut measured = Vec::new();
            if target != Target::Etcd {
                say(&format!("{}: redis-benchmark", target.name()));
                measured.extend(redis_benchmark(target, comparison, hosts[0])?);
            }
            say(&format!("{}: ringkv-bench", target.name()));
            measured.extend(ringkv_bench(target, comparison, hosts.clone())?);
            Ok(measured)
        })();
        running.stop();
        lines.extend(measured?);
    }
    Ok(lines)
}

/// The side-by-side table, ratios against Redis without persistence (same tool and
/// operation).
pub fn table(lines: &[Line]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| target | tool | op | req/s | p50 ms | p99 ms | p99.9 ms | req/s vs Redis | p99.9 vs Redis | errors |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for line in lines {
        let redis = lines.iter().find(|l| {
            l.target == Target::Redis.name() && l.tool == line.tool && l.operation == line.operation
        });
        let (throughput_ratio, latency_ratio) = match redis {
            Some(redis) => (
                format!(
                    "{:.2}x",
                    line.throughput_per_second / redis.throughput_per_second.max(1e-9)
                ),
                format!("{:.2}x", line.p999_ms / redis.p999_ms.max(1e-9)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            line.target,
            line.tool,
            line.operation,
            line.throughput_per_second,
            line.p50_ms,
            line.p99_ms,
            line.p999_ms,
            throughput_ratio,
            latency_ratio,
            line.errors
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_benchmark_report_is_read() {
        let report = "====== SET ======\n  50000 requests completed in 1.00 seconds\nLatency by percentile distribution:\n0.000% <= 0.191 milliseconds (cumulative count 1)\n99.800% <= 2.000 milliseconds (cumulative count 49900)\n99.902% <= 13.231 milliseconds (cumulative count 49952)\n100.000% <= 13.911 milliseconds (cumulative count 50000)\nSummary:\n  throughput summary: 23640.66 requests per second\n  latency summary (msec):\n          avg       min       p50       p95       p99       max\n        1.978     0.752     1.791     2.567     9.183    13.911\n====== GET ======\nSummary:\n  throughput summary: 10.0 requests per second\n";
        let results = parse_redis_benchmark(report);
        assert_eq!(
            results,
            vec![("set", 23640.66, 1.791, 9.183, 13.231)],
            "GET is incomplete and left out"
        );
    }
}
