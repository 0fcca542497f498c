//! What a run measured: an HdrHistogram of latency per operation (microseconds, 1 us to
//! 60 s, 3 significant digits), errors by kind, throughput, and p99.9 per second of
//! the run; printed as a table, written as JSON and drawn as SVG.

use super::run::{Length, Plan};
use super::workload::Operation;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const LATENCY_MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    // 1 us..60 s at 3 digits is a valid configuration: this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Collects latencies while a run goes.
#[derive(Debug)]
pub struct Recorder {
    measure_from: Instant,
    stopped_at: Option<Instant>,
    per_operation: Vec<Histogram<u64>>,
    errors: BTreeMap<(Operation, String), u64>,
    other_errors: BTreeMap<String, u64>,
    /// p99.9 over time: one histogram (all operations) per second since `measure_from`.
    per_second: Vec<Histogram<u64>>,
    /// Latencies of requests started before `measure_from` (warm-up), not recorded.
    pub warmup_requests: u64,
    /// The window reported on its own: its bounds, its latencies, and its requests
    /// that failed, in all and writes only.
    window: Option<(Instant, Instant)>,
    window_latency: Histogram<u64>,
    window_failed: u64,
    window_writes: u64,
    window_writes_failed: u64,
    /// The same for the connections that started on hosts the scenario left alone,
    /// and their latencies outside the window (the steady state to compare with).
    healthy_window_latency: Histogram<u64>,
    healthy_window_failed: u64,
    healthy_steady_latency: Histogram<u64>,
    healthy_after_latency: Histogram<u64>,
    /// Client timeouts on healthy hosts' connections, and on the faulted host's.
    client_timeouts: [u64; 2],
}

impl Recorder {
    pub fn new(measure_from: Instant, window: Option<(Duration, Duration)>) -> Recorder {
        Recorder {
            window: window.map(|(from, to)| (measure_from + from, measure_from + to)),
            window_latency: histogram(),
            window_failed: 0,
            window_writes: 0,
            window_writes_failed: 0,
            healthy_window_latency: histogram(),
            healthy_window_failed: 0,
            healthy_steady_latency: histogram(),
            healthy_after_latency: histogram(),
            client_timeouts: [0; 2],
            measure_from,
            stopped_at: None,
            per_operation: Operation::ALL.iter().map(|_| histogram()).collect(),
            errors: BTreeMap::new(),
            other_errors: BTreeMap::new(),
            per_second: Vec::new(),
            warmup_requests: 0,
        }
    }

    /// A reply for a request that started at `started`.
    /// `healthy`: the connection started on a host the scenario left alone.
    pub fn record(
        &mut self,
        operation: Operation,
        started: Instant,
        finished: Instant,
        healthy: bool,
    ) {
        if started < self.measure_from {
            self.warmup_requests += 1;
            return;
        }
        let latency_us = u64::try_from(finished.saturating_duration_since(started).as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_MAX_US);
        self.per_operation[operation.index()].saturating_record(latency_us);
        if self.in_window(started) {
            self.window_latency.saturating_record(latency_us);
            self.window_writes += u64::from(operation.is_write());
            if healthy {
                self.healthy_window_latency.saturating_record(latency_us);
            }
        } else if healthy && self.window.is_some_and(|(from, _)| started < from) {
            self.healthy_steady_latency.saturating_record(latency_us);
        } else if healthy {
            self.healthy_after_latency.saturating_record(latency_us);
        }
        let second = started
            .saturating_duration_since(self.measure_from)
            .as_secs() as usize;
        if second < 24 * 3600 {
            while self.per_second.len() <= second {
                self.per_second.push(histogram());
            }
            self.per_second[second].saturating_record(latency_us);
        }
    }

    /// A request that failed: `text` is the RESP error, or the generator's own kind.
    pub fn error(&mut self, operation: Operation, started: Instant, text: &str, healthy: bool) {
        if started < self.measure_from {
            self.warmup_requests += 1;
            return;
        }
        if self.in_window(started) {
            self.window_failed += 1;
            self.window_writes += u64::from(operation.is_write());
            self.window_writes_failed += u64::from(operation.is_write());
            self.healthy_window_failed += u64::from(healthy);
        }
        // The error's first 60 characters: its kind and what failed
        // (`UNAVAILABLE write cannot reach 2 replicas`).
        let kind: String = text.chars().take(60).collect();
        *self.errors.entry((operation, kind)).or_default() += 1;
    }

    fn in_window(&self, started: Instant) -> bool {
        self.window
            .is_some_and(|(from, to)| started >= from && started < to)
    }

    /// A request waited past the client timeout (its connection fails over).
    pub fn client_timeout(&mut self, healthy: bool) {
        self.client_timeouts[usize::from(!healthy)] += 1;
    }

    /// A failure not tied to one operation's start.
    pub fn error_named(&mut self, kind: &str) {
        *self.other_errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// No more requests are issued from `at` on: throughput is counted up to here.
    pub fn stop(&mut self, at: Instant) {
        self.stopped_at.get_or_insert(at);
    }

    pub fn snapshot(&self, plan: &Plan, now: Instant) -> Results {
        self.results(plan, self.stopped_at.unwrap_or(now))
    }

    pub fn finish(&self, plan: &Plan) -> Results {
        self.results(plan, self.stopped_at.unwrap_or_else(Instant::now))
    }

    fn results(&self, plan: &Plan, until: Instant) -> Results {
        let seconds = until
            .saturating_duration_since(self.measure_from)
            .as_secs_f64()
            .max(1e-9);
        let mut operations = Vec::new();
        for operation in Operation::ALL {
            let histogram = &self.per_operation[operation.index()];
            let errors: u64 = self
                .errors
                .iter()
                .filter(|((op, _), _)| *op == operation)
                .map(|(_, n)| n)
                .sum();
            if histogram.is_empty() && errors == 0 {
                continue;
            }
            operations.push(OperationResult {
                operation: operation.name(),
                count: histogram.len(),
                errors,
                throughput_per_second: histogram.len() as f64 / seconds,
                latency_us: Percentiles::of(histogram),
            });
        }
        let mut all = histogram();
        for histogram in &self.per_operation {
            let _ = all.add(histogram);
        }
        let mut errors: BTreeMap<String, u64> = self.other_errors.clone();
        for ((operation, kind), count) in &self.errors {
            *errors
                .entry(format!("{}:{kind}", operation.name()))
                .or_default() += count;
        }
        Results {
            target: plan
                .hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            connections: plan.connections,
            pipeline: plan.pipeline,
            open_loop_rate: plan.rate,
            measured_seconds: seconds,
            requests: all.len(),
            throughput_per_second: all.len() as f64 / seconds,
            latency_us: Percentiles::of(&all),
            operations,
            errors,
            p999_per_second_us: self
                .per_second
                .iter()
                .map(|h| (!h.is_empty()).then(|| h.value_at_quantile(0.999)))
                .collect(),
            window: self.window.map(|(from, to)| {
                let succeeded = self.window_latency.len();
                let total = succeeded + self.window_failed;
                let share = |ok: u64, all: u64| {
                    if all == 0 {
                        100.0
                    } else {
                        ok as f64 * 100.0 / all as f64
                    }
                };
                WindowResult {
                    from_seconds: from
                        .saturating_duration_since(self.measure_from)
                        .as_secs_f64(),
                    to_seconds: to
                        .saturating_duration_since(self.measure_from)
                        .as_secs_f64(),
                    requests: total,
                    success_percent: share(succeeded, total),
                    writes: self.window_writes,
                    writes_success_percent: share(
                        self.window_writes - self.window_writes_failed,
                        self.window_writes,
                    ),
                    latency_us: Percentiles::of(&self.window_latency),
                    healthy: HealthyHosts {
                        requests: self.healthy_window_latency.len() + self.healthy_window_failed,
                        failed: self.healthy_window_failed,
                        client_timeouts: self.client_timeouts[0],
                        faulted_host_client_timeouts: self.client_timeouts[1],
                        latency_us: Percentiles::of(&self.healthy_window_latency),
                        steady_latency_us: Percentiles::of(&self.healthy_steady_latency),
                        after_latency_us: Percentiles::of(&self.healthy_after_latency),
                    },
                }
            }),
            length: match plan.length {
                Length::Duration(d) => format!("{} s", d.as_secs_f64()),
                Length::Requests(n) => format!("{n} requests"),
            },
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OperationResult {
    pub operation: &'static str,
    pub count: u64,
    pub errors: u64,
    pub throughput_per_second: f64,
    pub latency_us: Percentiles,
}

/// A run's results (also the JSON file's shape).
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub target: String,
    pub connections: usize,
    pub pipeline: usize,
    pub open_loop_rate: Option<f64>,
    pub length: String,
    pub measured_seconds: f64,
    /// Successful requests measured (after the warm-up).
    pub requests: u64,
    pub throughput_per_second: f64,
    pub latency_us: Percentiles,
    pub operations: Vec<OperationResult>,
    /// Failed requests by `operation:KIND` (the RESP error's first word, or
    /// `disconnected` after every attempt), plus `unanswered` at the end.
    pub errors: BTreeMap<String, u64>,
    /// p99.9 of the requests started in each second (`null`: none finished).
    pub p999_per_second_us: Vec<Option<u64>>,
    /// The scenario's window (a node down, a node joining), on its own.
    pub window: Option<WindowResult>,
}

/// The requests that started inside a scenario's window.
#[derive(Clone, Debug, Serialize)]
pub struct WindowResult {
    pub from_seconds: f64,
    pub to_seconds: f64,
    pub requests: u64,
    pub success_percent: f64,
    pub writes: u64,
    pub writes_success_percent: f64,
    pub latency_us: Percentiles,
    /// The window's requests on connections that started on hosts the scenario left
    /// alone (all hosts when it faulted none).
    pub healthy: HealthyHosts,
}

/// Requests of the connections to hosts a scenario left alone.
#[derive(Clone, Debug, Serialize)]
pub struct HealthyHosts {
    pub requests: u64,
    pub failed: u64,
    /// Client timeouts over the whole run (each failed a connection over).
    pub client_timeouts: u64,
    pub faulted_host_client_timeouts: u64,
    /// Inside the window.
    pub latency_us: Percentiles,
    /// Before it: the same run's steady state.
    pub steady_latency_us: Percentiles,
    /// After it (a restarted node catching up).
    pub after_latency_us: Percentiles,
}

fn milliseconds(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

impl Results {
    /// The human table: one line per operation and a total.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "op",
            "requests",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "p99.99",
            "max ms",
            "errors"
        );
        let line =
            |text: &mut String, name: &str, count: u64, rate: f64, l: &Percentiles, errors: u64| {
                let _ = writeln!(
                    text,
                    "{:<6} {:>10} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                    name,
                    count,
                    rate,
                    milliseconds(l.p50),
                    milliseconds(l.p90),
                    milliseconds(l.p99),
                    milliseconds(l.p999),
                    milliseconds(l.p9999),
                    milliseconds(l.max),
                    errors
                );
            };
        for operation in &self.operations {
            line(
                &mut text,
                operation.operation,
                operation.count,
                operation.throughput_per_second,
                &operation.latency_us,
                operation.errors,
            );
        }
        let errors: u64 = self.errors.values().sum();
        line(
            &mut text,
            "all",
            self.requests,
            self.throughput_per_second,
            &self.latency_us,
            errors,
        );
        for (kind, count) in &self.errors {
            let _ = writeln!(text, "  error {kind}: {count}");
        }
        if let Some(window) = &self.window {
            let _ = writeln!(
                text,
                "window {:.1}-{:.1} s: {} requests, {:.3}% succeeded (writes: {} of which {:.3}% succeeded), p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
                window.from_seconds,
                window.to_seconds,
                window.requests,
                window.success_percent,
                window.writes,
                window.writes_success_percent,
                milliseconds(window.latency_us.p50),
                milliseconds(window.latency_us.p99),
                milliseconds(window.latency_us.p999),
                milliseconds(window.latency_us.max),
            );
            let healthy = &window.healthy;
            let ratio =
                healthy.latency_us.p999 as f64 / healthy.steady_latency_us.p999.max(1) as f64;
            let _ = writeln!(
                text,
                "window, connections to the hosts left alone: {} requests, {} failed, p99.9 {} ms (before the window {} ms: {ratio:.2}x; after it {} ms), max {} ms; client timeouts {} (the faulted host's connections: {})",
                healthy.requests,
                healthy.failed,
                milliseconds(healthy.latency_us.p999),
                milliseconds(healthy.steady_latency_us.p999),
                milliseconds(healthy.after_latency_us.p999),
                milliseconds(healthy.latency_us.max),
                healthy.client_timeouts,
                healthy.faulted_host_client_timeouts,
            );
        }
        text
    }

    /// The JSON result file.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// An SVG with p99.9 per second of the run (left) and the latency percentile
    /// distribution of all requests (right).
    pub fn svg(&self) -> String {
        let (width, height, margin) = (900.0f64, 360.0f64, 50.0f64);
        let panel = (width - 3.0 * margin) / 2.0;
        let mut svg = String::new();
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let plot_height = height - 2.0 * margin;
        // Left: p99.9 per second.
        let values: Vec<(f64, f64)> = self
            .p999_per_second_us
            .iter()
            .enumerate()
            .filter_map(|(second, v)| v.map(|v| (second as f64, v as f64 / 1000.0)))
            .collect();
        let max_ms = values.iter().map(|v| v.1).fold(0.001f64, f64::max) * 1.1;
        let seconds = (self.p999_per_second_us.len().max(2) - 1) as f64;
        let points: Vec<String> = values
            .iter()
            .map(|(s, v)| {
                format!(
                    "{:.1},{:.1}",
                    margin + s / seconds * panel,
                    margin + plot_height - v / max_ms * plot_height
                )
            })
            .collect();
        axes(
            &mut svg,
            margin,
            margin,
            panel,
            plot_height,
            "p99.9 per second (ms)",
            max_ms,
            "seconds",
            seconds,
        );
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        // Right: latency by percentile (log scale of 1/(1-q)).
        let left = 2.0 * margin + panel;
        let l = &self.latency_us;
        let quantiles = [
            (0.5, l.p50),
            (0.9, l.p90),
            (0.99, l.p99),
            (0.999, l.p999),
            (0.9999, l.p9999),
        ];
        let max_ms = (l.max.max(1) as f64 / 1000.0) * 1.1;
        // x: log10(1 / (1 - q)), from p50 (log10 2) to p99.99 (4).
        let low = std::f64::consts::LOG10_2;
        let x_of = |q: f64| left + ((1.0 / (1.0 - q)).log10() - low) / (4.0 - low) * panel;
        let points: Vec<String> = quantiles
            .iter()
            .map(|&(q, v)| {
                format!(
                    "{:.1},{:.1}",
                    x_of(q),
                    margin + plot_height - (v as f64 / 1000.0) / max_ms * plot_height
                )
            })
            .collect();
        axes(
            &mut svg,
            left,
            margin,
            panel,
            plot_height,
            "latency by percentile (ms)",
            max_ms,
            "p50 .. p99.99",
            0.0,
        );
        for &(q, _) in &quantiles {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x_of(q),
                margin + plot_height + 14.0,
                q * 100.0
            );
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#2c3e50\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            "<text x=\"{margin}\" y=\"20\" font-size=\"13\">ringkv-bench: {} ({:.0} req/s, p99.9 {} ms)</text>\n</svg>",
            self.target,
            self.throughput_per_second,
            milliseconds(self.latency_us.p999)
        );
        svg
    }
}

#[allow(clippy::too_many_arguments)]
fn axes(
    svg: &mut String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    title: &str,
    y_max: f64,
    x_label: &str,
    x_max: f64,
) {
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n<text x=\"{x}\" y=\"{:.1}\">{title}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.2}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}{}</text>",
        y - 6.0,
        x - 4.0,
        y + 10.0,
        y_max,
        x - 4.0,
        y + h,
        x + w / 2.0,
        y + h + 28.0,
        if x_max > 0.0 {
            format!(" (0..{x_max:.0})")
        } else {
            String::new()
        }
    );
}
