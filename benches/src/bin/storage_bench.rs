//! `ringkv-storage-bench`: ringkv-storage against fjall, same workload, same run.
//!
//! For each value size: load the keys (no fsync per write, one at the end, then a
//! clean shutdown); time the reopen; random puts from several writer threads with every
//! write durable before it returns (ringkv `group`, fjall `insert` + `persist(SyncData)`);
//! an unmeasured warm-up of random gets; then measured random gets of data in the page
//! cache (ringkv through `get_into` with one reused buffer per reader thread, fjall
//! through its `get`). Latencies go into HdrHistograms; the output is a Markdown table
//! for BENCHMARKS.md. Bounded by op counts; it stops by itself.
//!
//! A storage error aborts the run with `expect` on purpose: a benchmark whose writes
//! failed measured nothing, and must not print a table as if it had.

use clap::Parser;
use hdrhistogram::Histogram;
use ringkv_core::Rng;
use ringkv_storage::{Config, Durability, Store, WriteBatch};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Compare ringkv-storage with fjall on one machine, in one run")]
struct Arguments {
    /// Value sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,4096,102400")]
    value_sizes: Vec<usize>,
    /// Keys loaded per value size (capped so one size loads at most --load-bytes-max).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Upper bound on bytes loaded per value size.
    #[arg(long, default_value_t = 2 << 30)]
    load_bytes_max: u64,
    /// Durable random puts measured per engine and size.
    #[arg(long, default_value_t = 20_000)]
    put_ops: u64,
    /// When above 0: the put phase runs this long instead of --put-ops operations
    /// (the storage target: 10 minutes of durable puts from 2 writers).
    #[arg(long, default_value_t = 0)]
    put_seconds: u64,
    /// Random gets measured per engine and size.
    #[arg(long, default_value_t = 200_000)]
    get_ops: u64,
    /// Unmeasured random gets before the measured ones (another seed, so they warm the
    /// page cache in general rather than the exact keys measured). The first reads of
    /// pages that aged during the put phase pay a one-time kernel cost; see
    /// BENCHMARKS.md. 0 measures that first pass instead.
    #[arg(long, default_value_t = 200_000)]
    warmup_gets: u64,
    /// Concurrent writer threads in the put phase (group commit needs company).
    #[arg(long, default_value_t = 4)]
    writers: u64,
    /// Directory for the data (a fresh subdirectory per run); default: a temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Engines to run, in this order for each value size.
    #[arg(long, value_delimiter = ',', default_value = "ringkv,fjall")]
    engines: Vec<String>,
    /// Pause between the put and the get phase, to let background work the puts set off
    /// (the filesystem journal, page writeback) settle before reads are measured.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// ringkv: log written between index checkpoints, in MiB (0: the engine default).
    #[arg(long, default_value_t = 0)]
    checkpoint_interval_mib: u64,
    /// Puts slower than this are listed after the table with when they started, next
    /// to the background steps (checkpoints, compaction slices) that ran over 1 ms.
    #[arg(long, default_value_t = 20)]
    slow_put_ms: u64,
    /// ringkv: segment size in MiB (0: the engine default).
    #[arg(long, default_value_t = 0)]
    segment_size_mib: u32,
    /// Seed for values and key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The operations the benchmark needs from an engine.
trait Engine: Send + Sync {
    fn load(&self, keys: &[Vec<u8>], value: &[u8]);
    fn put_durable(&self, key: &[u8], value: &[u8]);
    fn get_length(&self, key: &[u8]) -> Option<usize>;
    /// Background work the engine leaves to its owner, done from a thread of its own
    /// while the puts run (ringkv: checkpoints and compaction slices, as a node's
    /// executor runs them on a reader thread; fjall runs its own threads).
    fn maintain(&self, _steps: &mut dyn FnMut(&'static str, &dyn Fn())) {}
}

struct Ringkv(Store);

impl Engine for Ringkv {
    fn load(&self, keys: &[Vec<u8>], value: &[u8]) {
        let mut batch = WriteBatch::new();
        for chunk in keys.chunks(256) {
            batch.clear();
            for key in chunk {
                batch.put(key, value);
            }
            self.0.write(&batch).expect("ringkv load");
        }
        // A clean shutdown: sync and checkpoint the index (fjall persists on drop).
        self.0.sync().expect("ringkv sync");
        self.0.checkpoint().expect("ringkv checkpoint");
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) {
        self.0.put(key, value).expect("ringkv put");
    }
    fn maintain(&self, steps: &mut dyn FnMut(&'static str, &dyn Fn())) {
        steps("checkpoint", &|| self.0.checkpoint_if_due());
        // A node's compaction slice (frontend's COMPACTION_SLICE_BYTES).
        steps("compaction slice", &|| {
            // A benchmark, not a node: a storage error ends the run loudly.
            self.0.compact_step(4 << 20).expect("ringkv compaction");
        });
    }
    fn get_length(&self, key: &[u8]) -> Option<usize> {
        // One reused buffer per reader thread, as a node's storage thread keeps one.
        thread_local! {
            static VALUE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        VALUE.with_borrow_mut(|value| {
            let found = self.0.get_into(key, value).expect("ringkv get");
            found.then_some(value.len())
        })
    }
}

struct Fjall {
    database: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Fjall {
    fn open(path: &Path) -> Fjall {
        let database = fjall::Database::builder(path).open().expect("fjall open");
        let keyspace = database
            .keyspace("bench", fjall::KeyspaceCreateOptions::default)
            .expect("fjall keyspace");
        Fjall { database, keyspace }
    }
}

impl Engine for Fjall {
    fn load(&self, keys: &[Vec<u8>], value: &[u8]) {
        for key in keys {
            self.keyspace.insert(key, value).expect("fjall load");
        }
        self.database
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) {
        self.keyspace.insert(key, value).expect("fjall put");
        self.database
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
    fn get_length(&self, key: &[u8]) -> Option<usize> {
        self.keyspace.get(key).expect("fjall get").map(|v| v.len())
    }
}

fn ringkv_store(
    path: &Path,
    durability: Durability,
    keys: u64,
    checkpoint_interval_mib: u64,
    segment_size_mib: u32,
) -> Store {
    let mut config = Config {
        durability,
        keys_expected: keys,
        ..Config::default()
    };
    if checkpoint_interval_mib > 0 {
        config.checkpoint_interval_bytes = checkpoint_interval_mib << 20;
    }
    if segment_size_mib > 0 {
        config.segment_size_bytes = segment_size_mib << 20;
    }
    Store::open(path, config).expect("ringkv open")
}

/// Opens an engine; ringkv loads with durability `none` and one sync at the end, as
/// fjall's load persists once at the end.
fn open_engine(
    name: &str,
    path: &Path,
    keys: u64,
    loading: bool,
    checkpoint_interval_mib: u64,
    segment_size_mib: u32,
) -> Arc<dyn Engine> {
    let durability = if loading {
        Durability::None
    } else {
        Durability::Group
    };
    match name {
        "ringkv" => Arc::new(Ringkv(ringkv_store(
            path,
            durability,
            keys,
            checkpoint_interval_mib,
            segment_size_mib,
        ))),
        "fjall" => Arc::new(Fjall::open(path)),
        other => panic!("unknown engine {other}: use ringkv or fjall"),
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

struct Phase {
    ops_per_second: f64,
    latency: Histogram<u64>,
    /// (ms since the phase began, latency in us) of the slow operations, at most
    /// [`SLOW_LISTED_MAX`] per thread.
    slow: Vec<(u64, u64)>,
    /// (ms since the phase began, what, duration in us) of background steps over 1 ms.
    background: Vec<(u64, &'static str, u64)>,
}

/// Slow operations (and background steps) listed at most, per thread.
const SLOW_LISTED_MAX: usize = 1_000;

/// 1 ns .. 60 s at 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

struct Workload {
    threads: u64,
    /// Operations at least this slow are listed.
    slow_us: u64,
    ops: u64,
    /// When set, each thread runs until then instead of for its share of `ops`.
    until: Option<Instant>,
    keys: u64,
    seed: u64,
    write: bool,
}

fn run_phase(engine: &Arc<dyn Engine>, value: &Arc<Vec<u8>>, workload: Workload) -> Phase {
    let started = Instant::now();
    if workload.slow_us < u64::MAX {
        // Wall-clock time, to line slow operations up with traces of the process.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        eprintln!("phase began at unix ms {unix_ms}");
    }
    let workers: Vec<_> = (0..workload.threads)
        .map(|thread| {
            let (engine, value) = (Arc::clone(engine), Arc::clone(value));
            let mut rng = Rng::new(workload.seed ^ (thread + 1).wrapping_mul(0x9E37_79B9));
            let (ops, until, keys, write) = (
                workload.ops / workload.threads,
                workload.until,
                workload.keys,
                workload.write,
            );
            let slow_us = workload.slow_us;
            std::thread::spawn(move || {
                let mut latency = latency_histogram();
                let mut slow = Vec::new();
                let mut done = 0;
                while until.map_or(done < ops, |until| Instant::now() < until) {
                    done += 1;
                    let k = key(rng.below(keys));
                    let start = Instant::now();
                    if write {
                        engine.put_durable(&k, &value);
                    } else {
                        let length = engine.get_length(&k);
                        assert_eq!(length, Some(value.len()), "a loaded key read back wrong");
                    }
                    let nanos = (start.elapsed().as_nanos() as u64).max(1);
                    latency.saturating_record(nanos);
                    if nanos / 1_000 >= slow_us && slow.len() < SLOW_LISTED_MAX {
                        let at = start.duration_since(started).as_millis() as u64;
                        slow.push((at, nanos / 1_000));
                    }
                }
                (latency, slow)
            })
        })
        .collect();
    // Background work, as a node runs it: every 100 ms while the workers run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let maintainer = {
        let (engine, stop) = (Arc::clone(engine), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut background = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                engine.maintain(&mut |what, step| {
                    let start = Instant::now();
                    step();
                    let micros = start.elapsed().as_micros() as u64;
                    if micros >= 1_000 && background.len() < SLOW_LISTED_MAX {
                        let at = start.duration_since(started).as_millis() as u64;
                        background.push((at, what, micros));
                    }
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            background
        })
    };
    let mut latency = latency_histogram();
    let mut slow = Vec::new();
    for worker in workers {
        // Fails only if the worker panicked, which already failed the run.
        let (thread_latency, thread_slow) = worker.join().expect("worker");
        // Both histograms come from latency_histogram(), so their bounds match.
        latency.add(thread_latency).expect("histogram add");
        slow.extend(thread_slow);
    }
    let ops_per_second = latency.len() as f64 / started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Fails only if the maintainer panicked, which already failed the run.
    let background = maintainer.join().expect("maintainer");
    slow.sort_unstable();
    Phase {
        ops_per_second,
        latency,
        slow,
        background,
    }
}

fn main() {
    let arguments = Arguments::parse();
    let scratch = tempfile::Builder::new()
        .prefix("ringkv-storage-bench")
        .tempdir_in(arguments.dir.clone().unwrap_or_else(std::env::temp_dir))
        .expect("scratch directory");
    println!(
        "| engine | value | keys | load s | reopen ms | put ops/s | put p50 us | put p99 us | put p99.9 us | put p99.99 us | put max us | get ops/s | get p50 us | get p99 us | get p99.9 us |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &value_size in &arguments.value_sizes {
        let keys = arguments
            .keys
            .min(arguments.load_bytes_max / value_size.max(1) as u64)
            .max(1);
        let mut value = vec![0u8; value_size];
        Rng::new(arguments.seed).fill_bytes(&mut value);
        let value = Arc::new(value);
        let all_keys: Vec<Vec<u8>> = (0..keys).map(key).collect();
        for name in &arguments.engines {
            let path = scratch.path().join(format!("{name}-{value_size}"));
            let load_started = Instant::now();
            open_engine(name, &path, keys, true, 0, arguments.segment_size_mib)
                .load(&all_keys, &value);
            let load_seconds = load_started.elapsed().as_secs_f64();
            let reopen_started = Instant::now();
            let engine = open_engine(
                name,
                &path,
                keys,
                false,
                arguments.checkpoint_interval_mib,
                arguments.segment_size_mib,
            );
            let reopen = reopen_started.elapsed();
            let puts = run_phase(
                &engine,
                &value,
                Workload {
                    threads: arguments.writers,
                    slow_us: arguments.slow_put_ms * 1_000,
                    ops: arguments.put_ops,
                    until: (arguments.put_seconds > 0)
                        .then(|| Instant::now() + Duration::from_secs(arguments.put_seconds)),
                    keys,
                    seed: arguments.seed,
                    write: true,
                },
            );
            std::thread::sleep(Duration::from_millis(arguments.pause_ms));
            if arguments.warmup_gets > 0 {
                run_phase(
                    &engine,
                    &value,
                    Workload {
                        threads: 1,
                        slow_us: u64::MAX,
                        ops: arguments.warmup_gets,
                        until: None,
                        keys,
                        seed: arguments.seed + 2,
                        write: false,
                    },
                );
            }
            let gets = run_phase(
                &engine,
                &value,
                Workload {
                    threads: 1,
                    slow_us: u64::MAX,
                    ops: arguments.get_ops,
                    until: None,
                    keys,
                    seed: arguments.seed + 1,
                    write: false,
                },
            );
            println!(
                "| {name} | {value_size} B | {keys} | {load_seconds:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} |",
                reopen.as_secs_f64() * 1e3,
                puts.ops_per_second,
                micros(&puts.latency, 0.5),
                micros(&puts.latency, 0.99),
                micros(&puts.latency, 0.999),
                micros(&puts.latency, 0.9999),
                puts.latency.max() as f64 / 1_000.0,
                gets.ops_per_second,
                micros(&gets.latency, 0.5),
                micros(&gets.latency, 0.99),
                micros(&gets.latency, 0.999),
            );
            if !puts.slow.is_empty() || !puts.background.is_empty() {
                eprintln!(
                    "{name} {value_size} B: {} puts of at least {} ms (at ms since the put phase began: us): {:?}",
                    puts.slow.len(),
                    arguments.slow_put_ms,
                    puts.slow
                );
                eprintln!(
                    "{name} {value_size} B: background steps over 1 ms (at ms, step, us): {:?}",
                    puts.background
                );
            }
            drop(engine);
            let _ = std::fs::remove_dir_all(&path);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
