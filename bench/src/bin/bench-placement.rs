//! `bench-placement`: throughput of every placement policy on the same workloads, in one run.
//!
//! A private redis-server is started with the module argument `cores <server-core>` (its
//! data-plane thread, which runs storage-side functions, pinned to one core) and an R-MAT graph
//! (Graph500 parameters) is loaded, with the `md5` blob and the `n:` keys.
//!
//! Workloads: `khop2`, `khop3`, `digest` (the 64 KiB `md5` blob, `--digest-rounds` rounds),
//! `pagerank` (20 iterations), `aggregate` (64 keys), `mix` (40% khop k=2, 20% each of the
//! others, interleaved) and `shift` (khop-heavy, then digest-heavy, then khop-heavy again,
//! switched abruptly, like Kayak's bimodal workload). On request only (`--workloads userfn`):
//! `userfn`, user functions in WebAssembly beside a built-in (1/3 khop k=2, 1/3 `khop_wasm` k=2,
//! 1/6 each of `digest_wasm` and `friends_wasm` top 10), the example guests loaded first.
//!
//! Each (workload, policy) cell gets a fresh `Runtime` (so a fresh placement table) and a
//! `Controller` running the policy; `--threads` compute threads, each on its own
//! `try_clone()`d runtime, keep `--in-flight` invocations in flight with `invoke_many`
//! (`Placement::Auto`: each invocation's side follows the table's share). A cell warms up (not
//! counted), then measures for a fixed time: a shared counter of completed invocations is
//! sampled every 100 ms by the main thread, latency goes into a histogram, and the final share of
//! each function is read from the table.
//!
//! The oracle is the best fixed per-function assignment (each function at 0 or 1) measured on
//! the same workload in the same run: for a single-function workload the two assignments are the
//! `storage` and `compute` cells; for `mix` the 14 other assignments are screened in short cells
//! and the best two are measured again at full length; for `shift` (khop and digest) the two
//! mixed assignments are measured at full length.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use autoloc::load::{write_graph, Graph, LoadReport};
use autoloc::placement::model::{READ_CPU_NS, READ_KEY_CPU_NS};
use autoloc::placement::sim::{Calibration, FnProfile};
use autoloc::placement::{evaluate, Controller, ControllerConfig, Evaluation, Policy};
use autoloc::server::RedisServer;
use autoloc::table::SideSnapshot;
use autoloc::{Placement, Runtime, Side, Transport};
use autoloc_bench::args::{GraphArgs, JsonArgs, PlotArgs, ServerCoreArgs};
use autoloc_bench::harness::{self, load_average, Bound, Check, JsonCheck, Machine, PALETTE};
use autoloc_bench::netns::Netns;
use autoloc_bench::placement_bench::{
    assignments, convergence_ms, median, oracle_string, ratio_ci, shares_text, stays_within_ms,
    CiVerdict, FnCost, PlacementRow, RatioCi, SeriesPoint, ShiftSeries, Tally, BOOTSTRAP_RESAMPLES,
};
use autoloc_bench::table::Table;
use autoloc_dataplane::Connection;
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Throughput bucket, ms.
const BUCKET_MS: u64 = 100;
/// Seed of the R-MAT graph and the blob.
const SEED: u64 = 1;
/// Every workload, in report order.
const WORKLOADS: [&str; 8] = [
    "khop2",
    "khop3",
    "digest",
    "pagerank",
    "aggregate",
    "contrast",
    "mix",
    "shift",
];

/// Where the compute threads run relative to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// The same network namespace: the data plane crosses loopback (or shared memory).
    Local,
    /// A network namespace of their own, joined to Redis's by a veth pair: a remote compute
    /// node on one machine.
    Netns,
}

impl std::str::FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Topology, String> {
        match s {
            "local" => Ok(Topology::Local),
            "netns" => Ok(Topology::Netns),
            _ => Err(format!("unknown topology '{s}' (local or netns)")),
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::Local => "local",
            Topology::Netns => "netns",
        })
    }
}
/// The policies run on every workload (the oracle comes from fixed assignments).
const POLICIES: [&str; 5] = ["storage", "compute", "autoloc2021", "kayak", "adaptive"];

#[derive(Debug, Parser)]
#[command(
    about = "Throughput of each placement policy (storage, compute, autoloc2021, kayak, \
             adaptive, oracle) on khop, digest, pagerank, aggregate, a mix and a shifting mix, \
             with PASS/FAIL against the targets"
)]
#[command(mut_arg("json", |a| a.help(
    "Write the rows, checks and the shift's time series as JSON to this file"
)))]
#[command(mut_arg("plot", |a| a.help(
    "Draw throughput and storage share over time across the shift as an SVG to this file"
)))]
struct Args {
    /// Workloads to run, comma-separated (khop2, khop3, digest, pagerank, aggregate, mix, shift;
    /// default all of these), and userfn (user functions in WebAssembly, only when named).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Data plane: shm, tcp, rdma or resp (shm and rdma only with `--topology local`).
    #[arg(long, default_value = "shm")]
    transport: Transport,
    /// `local`: compute threads beside Redis, over loopback or shared memory. `netns`: the
    /// compute threads in a network namespace of their own, reaching Redis through a veth pair
    /// (link-local addresses, created and removed by the bench; needs root, skips otherwise).
    #[arg(long, default_value = "local")]
    topology: Topology,
    /// Emulated round trip added to every data-plane exchange, us: each request and each reply
    /// is held for half of it (a DelayLink). Every figure it produces is labelled emulated.
    #[arg(long, default_value_t = 0)]
    rtt_us: u64,
    /// Offered load of the open-loop cells, as a fraction of the lower of the storage and
    /// compute saturation throughputs measured in this run (0: no open-loop cells).
    #[arg(long, default_value_t = 0.5)]
    open_load: f64,
    /// Threads of an open-loop cell; each collects its Poisson arrivals and submits all that
    /// arrived since its last submission as one batch.
    #[arg(long, default_value_t = 2)]
    open_threads: usize,
    /// Measured time per cell, ms (a multiple of 100).
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Warm-up per cell, ms (not counted).
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Length of each of the three phases of `shift`, ms (a multiple of 100).
    #[arg(long, default_value_t = 2000)]
    phase_ms: u64,
    /// Measured time of a screening cell of the oracle search on `mix`, ms.
    #[arg(long, default_value_t = 700)]
    search_ms: u64,
    /// Runs of each cell, interleaved; a row is the run of median throughput (every run's
    /// throughput is in the JSON as `throughput_runs`, and the confidence intervals of the
    /// ratios are bootstrapped from them).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// A smoke run of about 40 s: short cells, short phases, one run each.
    #[arg(long)]
    quick: bool,
    /// Compute threads per cell.
    #[arg(long, default_value_t = 3)]
    threads: usize,
    /// Invocations each compute thread keeps in flight.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Cores the compute threads are pinned to, round-robin (default: every core but the
    /// server's, so that the compute node and the storage each have their own cores).
    #[arg(long, value_delimiter = ',', conflicts_with = "unpinned")]
    client_cores: Vec<usize>,
    /// Leave the compute threads unpinned (they then share the server's core too).
    #[arg(long)]
    unpinned: bool,
    #[command(flatten)]
    server: ServerCoreArgs,
    #[command(flatten)]
    graph: GraphArgs,
    /// Rounds of `digest` over the 64 KiB blob.
    #[arg(long, default_value_t = 20)]
    digest_rounds: u32,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    plot: PlotArgs,
}

/// One kind of invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Khop(u32),
    Digest,
    PageRank,
    Aggregate,
    /// The example guests (user functions in WebAssembly).
    KhopWasm(u32),
    DigestWasm,
    Friends,
}

impl Call {
    fn function(self) -> &'static str {
        match self {
            Call::Khop(_) => "khop",
            Call::Digest => "digest",
            Call::PageRank => "pagerank",
            Call::Aggregate => "aggregate",
            Call::KhopWasm(_) => "khop_wasm",
            Call::DigestWasm => "digest_wasm",
            Call::Friends => "friends_wasm",
        }
    }

    /// Whether it is a user function (a guest to load before the cells).
    fn is_guest(self) -> bool {
        matches!(self, Call::KhopWasm(_) | Call::DigestWasm | Call::Friends)
    }

    fn args(self, vertex: &str, digest_rounds: &str) -> Vec<String> {
        match self {
            Call::Khop(k) | Call::KhopWasm(k) => vec![vertex.to_string(), k.to_string()],
            Call::Digest | Call::DigestWasm => vec!["md5".into(), digest_rounds.to_string()],
            Call::Friends => vec![vertex.to_string(), "10".into()],
            Call::PageRank => vec![vertex.to_string(), "20".into()],
            Call::Aggregate => vec![vertex.to_string(), "64".into()],
        }
    }
}

/// A workload: the call pattern of each phase (cycled), and its functions.
#[derive(Debug, Clone)]
struct Workload {
    name: &'static str,
    /// Phases; all but `shift` have one. The warm-up runs phase 0.
    phases: Vec<Vec<Call>>,
    /// Distinct functions, in first-seen order.
    functions: Vec<&'static str>,
}

fn pattern(items: &[(Call, u32)]) -> Vec<Call> {
    let weights: Vec<u32> = items.iter().map(|(_, w)| *w).collect();
    autoloc_bench::placement_bench::interleave(&weights)
        .into_iter()
        .map(|i| items[i].0)
        .collect()
}

fn workload(name: &str) -> anyhow::Result<Workload> {
    let single = |c: Call| vec![vec![c]];
    let mix = [
        (Call::Khop(2), 2),
        (Call::Digest, 1),
        (Call::PageRank, 1),
        (Call::Aggregate, 1),
    ];
    // Heavy in CPU, not only in calls: one digest costs the CPU of about 6 khops of k=3 (of 50
    // of k=2), so a phase of 9 khops to 1 digest would still spend most of its CPU on digest;
    // and k=3 keeps the two phases' call rates within 3x of each other, so that both weigh in
    // the throughput of the whole run.
    let khop_heavy = [(Call::Khop(3), 49), (Call::Digest, 1)];
    // The two ends at once: khop k=3 (dozens of reads, little CPU) and digest (one read, milliseconds
    // of CPU), about half of the CPU each.
    let contrast = [(Call::Khop(3), 6), (Call::Digest, 1)];
    let digest_heavy = [(Call::Khop(3), 1), (Call::Digest, 9)];
    let userfn = [
        (Call::Khop(2), 2),
        (Call::KhopWasm(2), 2),
        (Call::DigestWasm, 1),
        (Call::Friends, 1),
    ];
    let (name, phases) = match name {
        "khop2" => ("khop2", single(Call::Khop(2))),
        "khop3" => ("khop3", single(Call::Khop(3))),
        "digest" => ("digest", single(Call::Digest)),
        "pagerank" => ("pagerank", single(Call::PageRank)),
        "aggregate" => ("aggregate", single(Call::Aggregate)),
        "mix" => ("mix", vec![pattern(&mix)]),
        "contrast" => ("contrast", vec![pattern(&contrast)]),
        "userfn" => ("userfn", vec![pattern(&userfn)]),
        "shift" => (
            "shift",
            vec![
                pattern(&khop_heavy),
                pattern(&digest_heavy),
                pattern(&khop_heavy),
            ],
        ),
        other => bail!(
            "unknown workload '{other}' (khop2, khop3, digest, pagerank, aggregate, contrast, mix, \
             shift, userfn)"
        ),
    };
    let mut functions = Vec::new();
    for c in phases.iter().flatten() {
        if !functions.contains(&c.function()) {
            functions.push(c.function());
        }
    }
    Ok(Workload {
        name,
        phases,
        functions,
    })
}

/// How one cell runs.
#[derive(Debug, Clone)]
struct CellConfig {
    threads: usize,
    in_flight: usize,
    warmup: Duration,
    /// Measured time; for `shift` the three phases together.
    duration: Duration,
    /// Pause between a thread's batches (light load), if any.
    think: Option<Duration>,
    /// Open loop: Poisson arrivals at this many invocations per second over all threads
    /// (`in_flight` is then ignored); `None`: closed loop.
    open_rate: Option<f64>,
}

/// What a policy is in a cell: its name in the report, and its policy string.
#[derive(Debug, Clone)]
struct PolicySpec {
    /// `storage`, `adaptive`, ..., or `oracle`.
    label: String,
    /// The policy to parse (`oracle(khop=1,...)` for fixed assignments).
    policy: String,
    /// Shares to write into the table before the cell starts (fixed assignments).
    preset: Vec<(String, f64)>,
}

impl PolicySpec {
    fn named(name: &str, functions: &[&str]) -> PolicySpec {
        let preset = match name {
            "compute" => functions.iter().map(|f| (f.to_string(), 0.0)).collect(),
            _ => Vec::new(),
        };
        PolicySpec {
            label: name.to_string(),
            policy: name.to_string(),
            preset,
        }
    }

    fn fixed(functions: &[&str], shares: &[f64]) -> PolicySpec {
        PolicySpec {
            label: "oracle".into(),
            policy: oracle_string(functions, shares),
            preset: functions
                .iter()
                .zip(shares)
                .map(|(f, s)| (f.to_string(), *s))
                .collect(),
        }
    }
}

/// What one cell measured.
#[derive(Debug, Clone)]
struct Measured {
    row: PlacementRow,
    /// Throughput per bucket over the measured time, per second.
    buckets: Vec<f64>,
    /// Shares of the workload's functions sampled at the end of each bucket.
    shares: Vec<Vec<f64>>,
    /// The storage side's other load (cores) as the controller received it, one value per
    /// sample of the publisher: the trace its forecaster predicts.
    background: Vec<f64>,
}

/// How the forecasts of storage load did on one recorded trace.
#[derive(Debug, Clone, Serialize)]
struct ForecastRow {
    /// The workload the trace was recorded under (adaptive's cell).
    workload: String,
    /// One-step-ahead errors of the fitted models and of the naive last-value forecast, on the
    /// trace's second half, and the model the rule picks.
    evaluation: Evaluation,
    /// The trace, cores of other load per publisher sample.
    trace: Vec<f64>,
}

/// Everything the threads of a cell share.
struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    phase: AtomicUsize,
    completed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    totals: Mutex<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    errors: u64,
    first_error: Option<String>,
    pushed_back: u64,
    storage: u64,
    compute: u64,
}

impl Totals {
    /// Counts one batch's results: failures always; while `hist` is given (measuring), each
    /// success's side, pushback and latency (`latency(i, invocation)` for the `i`th call).
    /// Returns how many succeeded.
    fn count(
        &mut self,
        calls: &[(&str, Vec<String>)],
        results: Vec<autoloc::Result<autoloc::Invocation>>,
        mut hist: Option<&mut Histogram<u64>>,
        latency: impl Fn(usize, &autoloc::Invocation) -> Duration,
    ) -> u64 {
        let mut ok = 0;
        for (i, ((name, args), r)) in calls.iter().zip(results).enumerate() {
            match r {
                Ok(inv) => {
                    ok += 1;
                    if let Some(hist) = hist.as_deref_mut() {
                        harness::record(hist, latency(i, &inv));
                        self.pushed_back += u64::from(inv.pushed_back);
                        match inv.side {
                            Side::Storage => self.storage += 1,
                            Side::Compute => self.compute += 1,
                        }
                    }
                }
                Err(e) => {
                    self.errors += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(format!("{name} {}: {e}", args.join(" ")));
                    }
                }
            }
        }
        ok
    }
}

/// The environment every cell runs in.
struct Bench {
    url: String,
    transport: Transport,
    vertices: Vec<String>,
    digest_rounds: String,
    client_cores: Vec<usize>,
    storage_cores: f64,
    /// Cores of the compute node the controller measures its CPU over.
    compute_cores: f64,
    /// Added to every data-plane round trip (a DelayLink); zero: none.
    emulated_rtt: Duration,
}

impl Bench {
    /// The link as a compute thread sees it: the median of 500 data-plane round trips (a
    /// `get` of a missing key), us, and the bandwidth of `get md5` (64 KiB) beyond that round
    /// trip, bytes per second.
    fn probe_link(&self) -> anyhow::Result<(f64, f64)> {
        let mut rt = self.runtime()?;
        let mut timed = |key: &[u8]| -> anyhow::Result<f64> {
            let mut us = Vec::with_capacity(500);
            for _ in 0..500 {
                let t = Instant::now();
                rt.get(key).context("link probe")?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(median(&us).unwrap_or(0.0))
        };
        let rtt = timed(b"autoloc:bench:rtt-probe")?;
        let blob = timed(b"md5")?;
        let bandwidth = 65_536.0 / ((blob - rtt).max(0.1) * 1e-6);
        Ok((rtt, bandwidth))
    }

    /// A runtime on the bench's transport (and emulated round trip).
    fn runtime(&self) -> anyhow::Result<Runtime> {
        let rt = Runtime::connect(&self.url)
            .and_then(|rt| rt.with_transport(self.transport))
            .with_context(|| format!("connect to {} over {}", self.url, self.transport))?;
        if self.emulated_rtt.is_zero() {
            Ok(rt)
        } else {
            rt.with_emulated_rtt(self.emulated_rtt)
                .context("set up the emulated round trip")
        }
    }

    /// Runs `workload` under `spec` with `cfg`.
    fn cell(
        &self,
        workload: &Workload,
        spec: &PolicySpec,
        cfg: &CellConfig,
    ) -> anyhow::Result<Measured> {
        let policy: Policy = spec
            .policy
            .parse()
            .map_err(|e| anyhow::anyhow!("policy {}: {e}", spec.policy))?;
        let mut base = self.runtime()?;
        // User functions join the registry (and so the table and the controller) when fetched.
        for f in &workload.functions {
            if base.registry().lookup(f).is_none() {
                base.fetch(f)
                    .with_context(|| format!("fetch the user function {f}"))?;
            }
        }
        let names: Vec<String> = base.registry().names();
        let index = |f: &str| names.iter().position(|n| n == f);
        let fn_index: Vec<usize> = workload
            .functions
            .iter()
            .map(|f| index(f).with_context(|| format!("function {f} is not registered")))
            .collect::<anyhow::Result<_>>()?;
        for (f, share) in &spec.preset {
            if let Some(i) = index(f) {
                base.table().set_share(i, *share);
            }
        }
        let mut runtimes = Vec::with_capacity(cfg.threads);
        for _ in 0..cfg.threads {
            runtimes.push(base.try_clone().context("clone the runtime")?);
        }
        let table = base.table().clone();
        // As `batch` does: feed the storage side's measured busy time to the controller.
        let _publisher = autoloc::placement::Publisher::start(&base);
        let controller = Controller::spawn(
            table.clone(),
            names.clone(),
            policy,
            ControllerConfig {
                storage_cores: self.storage_cores,
                compute_cores: self.compute_cores,
                ..Default::default()
            },
        );
        let shared = Shared {
            stop: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            latency: Mutex::new(harness::histogram()),
            totals: Mutex::new(Totals::default()),
        };
        let buckets_total = (cfg.duration.as_millis() as u64 / BUCKET_MS).max(1) as usize;
        let phases = workload.phases.len();
        let per_phase = buckets_total / phases;
        let mut buckets = Vec::with_capacity(buckets_total);
        let mut shares = Vec::with_capacity(buckets_total);
        let mut measured_secs = 0.0;
        let mut measured_ops = 0u64;
        let mut measure_start_ms = 0u64;
        let snapshots = || -> Vec<(SideSnapshot, SideSnapshot)> {
            fn_index
                .iter()
                .map(|&i| {
                    let slot = table.slot(i);
                    (slot.snapshot(Side::Storage), slot.snapshot(Side::Compute))
                })
                .collect()
        };
        let mut before = Vec::new();
        let mut after = Vec::new();
        let cell_start = Instant::now();
        std::thread::scope(|s| -> anyhow::Result<()> {
            for (t, rt) in runtimes.into_iter().enumerate() {
                let shared = &shared;
                let core = (!self.client_cores.is_empty())
                    .then(|| self.client_cores[t % self.client_cores.len()]);
                s.spawn(move || self.worker(rt, t, core, workload, cfg, shared));
            }
            std::thread::sleep(cfg.warmup);
            // Measure from here: counter samples every bucket, on deadlines.
            shared.measuring.store(true, Ordering::Relaxed);
            before = snapshots();
            let start = Instant::now();
            measure_start_ms = (start - cell_start).as_millis() as u64;
            let first = shared.completed.load(Ordering::Relaxed);
            let mut last = first;
            let mut last_t = start;
            for b in 0..buckets_total {
                let deadline = start + Duration::from_millis((b as u64 + 1) * BUCKET_MS);
                if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let now_n = shared.completed.load(Ordering::Relaxed);
                let now_t = Instant::now();
                let secs = (now_t - last_t).as_secs_f64().max(1e-6);
                buckets.push((now_n - last) as f64 / secs);
                shares.push(fn_index.iter().map(|&i| table.share(i)).collect());
                (last, last_t) = (now_n, now_t);
                // Shift to the next phase at a bucket boundary.
                if phases > 1 && per_phase > 0 && (b + 1) % per_phase == 0 {
                    let next = ((b + 1) / per_phase).min(phases - 1);
                    shared.phase.store(next, Ordering::Relaxed);
                }
            }
            shared.measuring.store(false, Ordering::Relaxed);
            after = snapshots();
            measured_secs = (last_t - start).as_secs_f64();
            measured_ops = last - first;
            shared.stop.store(true, Ordering::Relaxed);
            Ok(())
        })?;
        let history = controller.history();
        drop(controller);
        let mut background: Vec<f64> = history.iter().map(|r| r.background).collect();
        background.dedup();
        let measured: Vec<_> = history
            .iter()
            .filter(|r| r.t_ms > measure_start_ms)
            .collect();
        let mean = |f: fn(&autoloc::placement::EpochRecord) -> f64| {
            if measured.is_empty() {
                0.0
            } else {
                measured.iter().map(|r| f(r)).sum::<f64>() / measured.len() as f64
            }
        };
        let storage_util = mean(|r| r.storage_util);
        let compute_util = mean(|r| r.compute_util);
        let hist = shared
            .latency
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let totals = shared
            .totals
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let us = |q: f64| {
            if hist.is_empty() {
                0.0
            } else {
                hist.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let per_shift = |f: fn(&[f64], u64) -> Option<u64>| -> Vec<Option<u64>> {
            (1..phases)
                .map(|p| {
                    let phase = &buckets[p * per_phase..((p + 1) * per_phase).min(buckets.len())];
                    f(phase, BUCKET_MS)
                })
                .collect()
        };
        let row = PlacementRow {
            workload: workload.name.to_string(),
            policy: spec.label.clone(),
            assignment: (spec.label == "oracle").then(|| spec.policy.clone()),
            threads: cfg.threads,
            in_flight: cfg.in_flight,
            throughput_per_s: if measured_secs > 0.0 {
                measured_ops as f64 / measured_secs
            } else {
                0.0
            },
            throughput_runs: Vec::new(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            storage_share_final: workload
                .functions
                .iter()
                .zip(&fn_index)
                .map(|(f, &i)| (f.to_string(), table.share(i)))
                .collect(),
            storage_util,
            compute_util,
            errors: totals.errors,
            first_error: totals.first_error,
            pushed_back: totals.pushed_back,
            storage_side: totals.storage,
            compute_side: totals.compute,
            convergence_ms: (phases > 1).then(|| per_shift(convergence_ms)),
            convergence_ms_strict: (phases > 1).then(|| per_shift(stays_within_ms)),
            offered_per_s: cfg.open_rate,
            p50_runs: Vec::new(),
            p99_runs: Vec::new(),
            costs: workload
                .functions
                .iter()
                .zip(before.iter().zip(&after))
                .map(|(f, ((s0, c0), (s1, c1)))| {
                    (
                        f.to_string(),
                        FnCost::from_sides(&s1.since(s0), &c1.since(c0)),
                    )
                })
                .collect(),
        };
        Ok(Measured {
            row,
            buckets,
            shares,
            background,
        })
    }

    /// Runs each of `specs` `reps` times, round-robin with the start rotating each round (so a
    /// drift of the shared machine spreads over all of them), and keeps each spec's run of median
    /// throughput, with every run's throughput in its row.
    fn medians(
        &self,
        workload: &Workload,
        specs: &[PolicySpec],
        cfg: &CellConfig,
        reps: usize,
    ) -> anyhow::Result<Vec<Measured>> {
        let reps = reps.max(1);
        let mut runs: Vec<Vec<Measured>> = specs.iter().map(|_| Vec::new()).collect();
        for r in 0..reps {
            for k in 0..specs.len() {
                let i = (k + r) % specs.len();
                let rep = if reps > 1 {
                    format!(" (run {}/{reps})", r + 1)
                } else {
                    String::new()
                };
                eprintln!("{}: {}{rep}...", workload.name, specs[i].policy);
                runs[i].push(self.cell(workload, &specs[i], cfg)?);
            }
        }
        Ok(runs
            .into_iter()
            .map(|mut ms| {
                let all: Vec<f64> = ms.iter().map(|m| m.row.throughput_per_s).collect();
                let p50s: Vec<f64> = ms.iter().map(|m| m.row.p50_us).collect();
                let p99s: Vec<f64> = ms.iter().map(|m| m.row.p99_us).collect();
                ms.sort_by(|a, b| a.row.throughput_per_s.total_cmp(&b.row.throughput_per_s));
                let mut median = ms.swap_remove(ms.len() / 2);
                median.row.throughput_runs = all;
                if cfg.open_rate.is_some() {
                    // Open loop: latency is the measure; each percentile is the runs' median.
                    median.row.p50_us =
                        autoloc_bench::placement_bench::median(&p50s).unwrap_or(0.0);
                    median.row.p99_us =
                        autoloc_bench::placement_bench::median(&p99s).unwrap_or(0.0);
                    median.row.p50_runs = p50s;
                    median.row.p99_runs = p99s;
                }
                median
            })
            .collect())
    }

    /// One compute thread: batches of `in_flight` invocations until told to stop.
    fn worker(
        &self,
        mut rt: Runtime,
        t: usize,
        core: Option<usize>,
        workload: &Workload,
        cfg: &CellConfig,
        shared: &Shared,
    ) {
        if let Some(core) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        if let Some(rate) = cfg.open_rate {
            return self.open_worker(rt, t, rate / cfg.threads as f64, workload, shared);
        }
        let mut hist = harness::histogram();
        let mut totals = Totals::default();
        // Threads start at different points of the pattern and of the vertices.
        let mut seq = t * 7;
        let mut vertex = t * 1009;
        while !shared.stop.load(Ordering::Relaxed) {
            let phase = &workload.phases[shared.phase.load(Ordering::Relaxed)];
            let calls: Vec<(&str, Vec<String>)> = (0..cfg.in_flight)
                .map(|_| {
                    let c = phase[seq % phase.len()];
                    seq += 1;
                    vertex = (vertex + 7919) % self.vertices.len();
                    (
                        c.function(),
                        c.args(&self.vertices[vertex], &self.digest_rounds),
                    )
                })
                .collect();
            let measuring = shared.measuring.load(Ordering::Relaxed);
            let results = rt.invoke_many(&calls, Placement::Auto);
            let measured = measuring.then_some(&mut hist);
            let ok = totals.count(&calls, results, measured, |_, inv| inv.wall);
            shared.completed.fetch_add(ok, Ordering::Relaxed);
            if let Some(think) = cfg.think {
                std::thread::sleep(think);
            }
        }
        shared.merge(&hist, totals);
    }

    /// One open-loop thread: Poisson arrivals at `rate` per second. Every arrival since the
    /// last submission goes out as one `invoke_many` batch; an invocation's latency counts from
    /// its arrival, so the wait for the previous batch to finish is in it (no coordinated
    /// omission).
    fn open_worker(
        &self,
        mut rt: Runtime,
        t: usize,
        rate: f64,
        workload: &Workload,
        shared: &Shared,
    ) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(SEED + t as u64);
        let mut gap = move || Duration::from_secs_f64(-(1.0 - rng.gen::<f64>()).ln() / rate);
        let mut hist = harness::histogram();
        let mut totals = Totals::default();
        let mut seq = t * 7;
        let mut vertex = t * 1009;
        let mut next = Instant::now() + gap();
        while !shared.stop.load(Ordering::Relaxed) {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
            let phase = &workload.phases[shared.phase.load(Ordering::Relaxed)];
            let now = Instant::now();
            let mut arrivals = Vec::new();
            let mut calls: Vec<(&str, Vec<String>)> = Vec::new();
            while next <= now && calls.len() < 4096 {
                let c = phase[seq % phase.len()];
                seq += 1;
                vertex = (vertex + 7919) % self.vertices.len();
                calls.push((
                    c.function(),
                    c.args(&self.vertices[vertex], &self.digest_rounds),
                ));
                arrivals.push(next);
                next += gap();
            }
            let measuring = shared.measuring.load(Ordering::Relaxed);
            let sent = Instant::now();
            let results = rt.invoke_many(&calls, Placement::Auto);
            let measured = measuring.then_some(&mut hist);
            let ok = totals.count(&calls, results, measured, |i, inv| {
                (sent - arrivals[i]) + inv.wall
            });
            shared.completed.fetch_add(ok, Ordering::Relaxed);
        }
        shared.merge(&hist, totals);
    }
}

impl Shared {
    /// Adds a thread's latencies and totals.
    fn merge(&self, hist: &Histogram<u64>, totals: Totals) {
        let _ = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(hist);
        let mut m = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        m.errors += totals.errors;
        if m.first_error.is_none() {
            m.first_error = totals.first_error;
        }
        m.pushed_back += totals.pushed_back;
        m.storage += totals.storage;
        m.compute += totals.compute;
    }
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    machine: &'a Machine,
    parameters: &'a BTreeMap<String, String>,
    rows: &'a [PlacementRow],
    /// The oracle search's screening cells (mix) and candidates (shift).
    oracle_candidates: &'a [PlacementRow],
    light_load: Option<&'a PlacementRow>,
    /// Open-loop cells at a fixed offered load.
    open_loop: &'a [PlacementRow],
    /// adaptive / each baseline, with intervals.
    verdicts: &'a [VerdictRow],
    /// Wins, ties, losses per baseline.
    tallies: &'a [Tally],
    checks: Vec<JsonCheck>,
    shift_series: &'a [ShiftSeries],
    /// The forecasts of storage load, scored on the traces recorded in adaptive's cells.
    forecasts: &'a [ForecastRow],
    /// The measured costs for `bench-sim --calibration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration: Option<&'a Calibration>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let workloads = prepare(&mut args)?;
    let machine = Machine::detect();
    let started = Instant::now();
    let load_start = load_average();
    let mut setup = match Setup::start(&mut args, &machine) {
        Ok(s) => s,
        Err(e) => match e.downcast_ref::<Skip>() {
            Some(Skip(why)) => {
                println!(
                    "bench-placement --topology netns: skipped: cannot create the compute \
                     node's network namespace: {why}"
                );
                return Ok(());
            }
            None => return Err(e),
        },
    };
    load_guests(&setup.bench.url, &workloads)?;
    let cfgs = CellConfigs::new(&args);
    let mut params = parameters(&args, &mut setup);

    let mut results = Results::default();
    for w in &workloads {
        run_workload(&setup.bench, w, &cfgs, &args, &mut results)?;
    }
    let light = light_load(&setup.bench, &cfgs.full)?;
    let elapsed = started.elapsed();
    drop(setup.server);
    params.insert(
        "load_average".into(),
        format!(
            "{} at the start, {} at the end (/proc/loadavg: other processes share these cores)",
            load_start,
            load_average()
        ),
    );

    let (verdicts, tallies) = verdicts(&results.rows);
    let checks = checks(&results.rows, &verdicts, &light);
    let link = link_label(&args, setup.rtt_us);
    let calibration = calibration(&results.rows, &link, setup.rtt_us, setup.bandwidth);
    let report = Report {
        results: &results,
        light: &light,
        verdicts: &verdicts,
        tallies: &tallies,
        checks: &checks,
        calibration: calibration.as_ref(),
    };
    print_report(&machine, &params, &report, elapsed);
    if let Some(path) = &args.json.path {
        write_json(path, &machine, &params, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot.path {
        if results.series.is_empty() {
            eprintln!("--plot: the shift workload was not run; nothing to plot");
        } else {
            let footnote = format!(
                "{} cores, {}, kernel {}; {link}; {} threads x {} in flight; module on core {}; phases of {} ms",
                machine.cores,
                machine.cpu,
                machine.kernel,
                args.threads,
                args.in_flight,
                args.server.core,
                args.phase_ms
            );
            plot_shift(path, &results.series, &footnote)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// The link the compute threads use, in words, with its measured round trip; an emulated
/// delay is named as such.
fn link_label(args: &Args, rtt_us: f64) -> String {
    let topology = match args.topology {
        Topology::Local => "local (same namespace)",
        Topology::Netns => "netns (compute in its own network namespace, over a veth pair)",
    };
    let emulated = if args.rtt_us > 0 {
        format!(" + EMULATED {} us round trip (DelayLink)", args.rtt_us)
    } else {
        String::new()
    };
    format!(
        "{topology}, {}{emulated}: data-plane round trip {rtt_us:.1} us measured",
        args.transport
    )
}

/// The measured costs in the simulator's terms (`bench-sim --calibration`): each function of
/// `mix` from its own workload's cells, storage-side costs from the `storage` cell and
/// compute-side ones from the `compute` cell, weighted as in `mix`.
fn calibration(
    rows: &[PlacementRow],
    link: &str,
    rtt_us: f64,
    bandwidth: f64,
) -> Option<Calibration> {
    let cost = |w: &str, p: &str, f: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.policy == p)
            .and_then(|r| r.costs.get(f))
    };
    let functions: Vec<FnProfile> = [
        ("khop2", "khop", 0.4),
        ("digest", "digest", 0.2),
        ("pagerank", "pagerank", 0.2),
        ("aggregate", "aggregate", 0.2),
    ]
    .iter()
    .filter_map(|&(w, f, weight)| {
        let (st, cp) = (cost(w, "storage", f)?, cost(w, "compute", f)?);
        Some(FnProfile {
            name: f.to_string(),
            weight,
            storage_cpu_ns: st.storage_cpu_us * 1e3,
            compute_cpu_ns: cp.compute_cpu_us * 1e3,
            round_trips: cp.round_trips,
            bytes: cp.bytes,
            // The module does not report the CPU of a data-plane read: the policy's model of it
            // (per request and per key), so that the simulator and the policy agree.
            read_cpu_ns: (READ_CPU_NS * cp.round_trips.max(1.0) + READ_KEY_CPU_NS * cp.keys)
                / cp.round_trips.max(1.0),
            keys: cp.keys,
        })
    })
    .collect();
    (!functions.is_empty()).then(|| Calibration {
        source: link.to_string(),
        rtt_ns: rtt_us * 1e3,
        bandwidth,
        functions,
    })
}

/// Why the bench cannot run here (printed, and the bench exits successfully).
#[derive(Debug)]
struct Skip(String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// Applies `--quick`, rounds the times to whole buckets, checks the ranges, and returns the
/// workloads to run.
fn prepare(args: &mut Args) -> anyhow::Result<Vec<Workload>> {
    if args.quick {
        args.duration_ms = args.duration_ms.min(500);
        args.warmup_ms = args.warmup_ms.min(200);
        args.phase_ms = args.phase_ms.min(600);
        args.search_ms = args.search_ms.min(200);
        args.reps = 1;
    }
    args.duration_ms = round_to_bucket(args.duration_ms);
    args.phase_ms = round_to_bucket(args.phase_ms);
    args.search_ms = round_to_bucket(args.search_ms);
    anyhow::ensure!(
        (1..=256).contains(&args.threads),
        "--threads must be in 1..=256"
    );
    anyhow::ensure!(
        (1..=4096).contains(&args.in_flight),
        "--in-flight must be in 1..=4096"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.open_load),
        "--open-load must be in [0, 1): a fraction of the saturation throughput"
    );
    anyhow::ensure!(
        (1..=256).contains(&args.open_threads),
        "--open-threads must be in 1..=256"
    );
    anyhow::ensure!(
        args.rtt_us <= 1_000_000,
        "--rtt-us must be at most 1000000 (1 s)"
    );
    if args.topology == Topology::Netns
        && matches!(args.transport, Transport::Shm | Transport::Rdma)
    {
        bail!(
            "--topology netns models a compute node on another host, reached over a network: \
             use --transport tcp or resp ({} needs no network namespace to cross)",
            args.transport
        );
    }
    let names: Vec<String> = if args.workloads.is_empty() {
        WORKLOADS.iter().map(|s| s.to_string()).collect()
    } else {
        args.workloads.clone()
    };
    names.iter().map(|n| workload(n.trim())).collect()
}

/// Loads the example guests the workloads call (built if needed) into the server.
fn load_guests(url: &str, workloads: &[Workload]) -> anyhow::Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for c in workloads.iter().flat_map(|w| w.phases.iter().flatten()) {
        if c.is_guest() && !names.contains(&c.function()) {
            names.push(c.function());
        }
    }
    let mut rt = Runtime::connect(url)?;
    for name in names {
        eprintln!("loading the guest {name}...");
        let bytes = autoloc::guests::bytes(name)?;
        rt.load_function(&bytes, true)
            .with_context(|| format!("AUTOLOC.FUNCTION LOAD {name}"))?;
    }
    Ok(())
}

/// The private redis-server with the graph loaded, and the bench over it.
struct Setup {
    server: RedisServer,
    /// A plain connection to it (loading, `INFO server`), from the storage's namespace.
    control: Connection,
    /// What was loaded.
    load: LoadReport,
    bench: Bench,
    /// Median data-plane round trip (a `get` of a missing key) from a compute thread, us,
    /// emulated part included.
    rtt_us: f64,
    /// Bandwidth of a 64 KiB `get` beyond its round trip, bytes per second.
    bandwidth: f64,
    /// The compute node's namespace (`--topology netns`); dropped last, which deletes it.
    netns: Option<Netns>,
}

impl Setup {
    /// Pins the compute threads to every core but the server's unless told otherwise, starts
    /// the server, loads the R-MAT graph, and picks the start vertices.
    fn start(args: &mut Args, machine: &Machine) -> anyhow::Result<Setup> {
        if args.client_cores.is_empty() && !args.unpinned {
            args.client_cores = (0..machine.cores.max(1))
                .filter(|&c| c != args.server.core || machine.cores <= 1)
                .collect();
        }
        let core = args.server.core.to_string();
        let netns = match args.topology {
            Topology::Local => None,
            Topology::Netns => Some(Netns::create().map_err(Skip)?),
        };
        // Across the veth, Redis asks for a password (as any Redis reachable from another host
        // should) and the tcp data plane listens on the storage's address.
        let password = format!("{:016x}", rand::random::<u64>());
        let (server, url, control_url) = match &netns {
            None => {
                let server = RedisServer::start(&["cores", &core])
                    .context("start a private redis-server with the AutoLoc module")?;
                let url = server.url();
                (server, url.clone(), url)
            }
            Some(ns) => {
                let addr = ns.storage_addr().to_string();
                let bind = format!("127.0.0.1 {addr}");
                let server = RedisServer::start_with(
                    &autoloc::server::find_module()?,
                    &["cores", &core, "tcp-bind", &addr],
                    &[("bind", bind.as_str()), ("requirepass", password.as_str())],
                )
                .context("start a private redis-server with the AutoLoc module")?;
                let port = server.port();
                (
                    server,
                    format!("redis://:{password}@{addr}:{port}"),
                    format!("redis://:{password}@127.0.0.1:{port}"),
                )
            }
        };
        let mut control = harness::connect(&control_url)?;
        eprintln!(
            "loading R-MAT scale {} edge factor {}...",
            args.graph.scale, args.graph.edge_factor
        );
        let graph = Graph::rmat(args.graph.scale, args.graph.edge_factor, SEED)?;
        let load = write_graph(&mut control, &graph, SEED, false)?;
        // Start vertices: every vertex with at least one neighbour.
        let vertices: Vec<String> = graph
            .adjacency
            .iter()
            .enumerate()
            .filter(|(v, adj)| graph.present[*v] && !adj.is_empty())
            .map(|(v, _)| v.to_string())
            .collect();
        anyhow::ensure!(!vertices.is_empty(), "the graph has no edges");

        if let Some(ns) = &netns {
            // From here on this thread, and every thread it starts, is the compute node.
            ns.enter()
                .map_err(|e| anyhow::anyhow!("enter the namespace {}: {e}", ns.name()))?;
        }
        let bench = Bench {
            url: url.clone(),
            transport: args.transport,
            emulated_rtt: Duration::from_micros(args.rtt_us),
            vertices,
            digest_rounds: args.digest_rounds.to_string(),
            client_cores: args.client_cores.clone(),
            storage_cores: 1.0,
            compute_cores: if args.client_cores.is_empty() {
                machine.cores.max(1) as f64
            } else {
                args.client_cores.len() as f64
            },
        };
        let (rtt_us, bandwidth) = bench.probe_link()?;
        Ok(Setup {
            server,
            control,
            load,
            bench,
            rtt_us,
            bandwidth,
            netns,
        })
    }
}

/// The three kinds of cell: full length, the shift's three phases, the oracle's screening.
struct CellConfigs {
    full: CellConfig,
    shift: CellConfig,
    search: CellConfig,
    /// Open loop (its rate set per workload).
    open: CellConfig,
}

impl CellConfigs {
    fn new(args: &Args) -> CellConfigs {
        let full = CellConfig {
            threads: args.threads,
            in_flight: args.in_flight,
            warmup: Duration::from_millis(args.warmup_ms),
            duration: Duration::from_millis(args.duration_ms),
            think: None,
            open_rate: None,
        };
        let open = CellConfig {
            threads: args.open_threads,
            in_flight: 1,
            ..full.clone()
        };
        let shift = CellConfig {
            duration: Duration::from_millis(3 * args.phase_ms),
            ..full.clone()
        };
        let search = CellConfig {
            warmup: Duration::from_millis((args.warmup_ms / 3).max(100)),
            duration: Duration::from_millis(args.search_ms),
            ..full.clone()
        };
        CellConfigs {
            full,
            shift,
            search,
            open,
        }
    }
}

/// The parameters printed with the results (all but the load average, known at the end).
fn parameters(args: &Args, setup: &mut Setup) -> BTreeMap<String, String> {
    let core = args.server.core.to_string();
    let load = &setup.load;
    let mut params = BTreeMap::new();
    params.insert(
        "server".into(),
        format!(
            "private redis-server ({}), module argument `cores {core}` (storage-side functions \
             on core {core}; the controller plans with 1 storage core)",
            redis_version(&mut setup.control)
        ),
    );
    params.insert("transport".into(), args.transport.to_string());
    params.insert("link".into(), link_label(args, setup.rtt_us));
    if let Some(ns) = &setup.netns {
        params.insert(
            "topology".into(),
            format!(
                "netns: compute threads in the network namespace {} ({}), Redis and its data \
                 plane on {} in this one (requirepass set), joined by a veth pair",
                ns.name(),
                ns.compute_addr(),
                ns.storage_addr()
            ),
        );
    }
    if args.open_load > 0.0 {
        params.insert(
            "open loop".into(),
            format!(
                "{} threads, Poisson arrivals at {} x the lower of the storage and compute \
                 saturation throughputs; every arrival since a thread's last submission goes \
                 out as one batch; latency counts from arrival; min({}, 3) runs per cell",
                args.open_threads, args.open_load, args.reps
            ),
        );
    }
    params.insert(
        "graph".into(),
        format!(
            "R-MAT scale {} edge factor {} seed {SEED}: {} vertices, {} arcs; md5 blob 64 KiB",
            args.graph.scale, args.graph.edge_factor, load.vertices, load.arcs
        ),
    );
    params.insert(
        "load".into(),
        format!(
            "{} compute threads x {} invocations in flight (invoke_many, Placement::Auto), \
             threads {}",
            args.threads,
            args.in_flight,
            if args.client_cores.is_empty() {
                "not pinned".to_string()
            } else {
                format!(
                    "pinned to cores {:?} (the compute node; the storage has core {})",
                    args.client_cores, args.server.core
                )
            }
        ),
    );
    params.insert(
        "cell".into(),
        format!(
            "{} ms warm-up (not counted) + {} ms measured, throughput per {BUCKET_MS} ms bucket",
            args.warmup_ms, args.duration_ms
        ),
    );
    params.insert(
        "shift".into(),
        format!(
            "{} ms warm-up + 3 phases of {} ms: 98% khop k=3 / 2% digest (storage-bound), then \
             10% / 90% (compute-bound), then 98% / 2% again",
            args.warmup_ms, args.phase_ms
        ),
    );
    params.insert(
        "workloads".into(),
        format!(
            "khop k=2 and k=3; digest md5 x {} rounds; pagerank 20 iterations; aggregate 64 \
             keys; contrast 6 khop k=3 : 1 digest (high fan-out, little CPU / one read, much \
             CPU); mix 40% khop2 / 20% digest / 20% pagerank / 20% aggregate; userfn (when \
             named) 1/3 khop2 / 1/3 khop_wasm k=2 / 1/6 digest_wasm / 1/6 friends_wasm top 10",
            args.digest_rounds
        ),
    );
    params.insert(
        "oracle".into(),
        format!(
            "best fixed assignment (each function 0 or 1) on the same workload: single \
             functions = best of storage/compute; mix = 14 assignments screened in {} ms cells, \
             best 2 re-measured at full length, against all-storage and all-compute; shift = 4 \
             assignments of khop/digest at full length",
            args.search_ms
        ),
    );
    params.insert("controller".into(), format!("ControllerConfig {{ storage_cores: 1.0, compute_cores: {}, ..Default }} (50 ms epochs), a fresh Runtime and table per cell", setup.bench.compute_cores));
    params
}

/// What the workloads measured, in report order.
#[derive(Debug, Default)]
struct Results {
    rows: Vec<PlacementRow>,
    /// The oracle search's screening cells (mix) and candidates (shift).
    candidates: Vec<PlacementRow>,
    series: Vec<ShiftSeries>,
    forecasts: Vec<ForecastRow>,
    /// Open-loop cells: every policy and the oracle's assignment at one offered load.
    open: Vec<PlacementRow>,
}

/// One workload: every policy's cells, the oracle, the shift's time series, adaptive's
/// forecast trace.
fn run_workload(
    bench: &Bench,
    w: &Workload,
    cfgs: &CellConfigs,
    args: &Args,
    results: &mut Results,
) -> anyhow::Result<()> {
    let is_shift = w.phases.len() > 1;
    let cfg = if is_shift { &cfgs.shift } else { &cfgs.full };
    let specs: Vec<PolicySpec> = POLICIES
        .iter()
        .map(|p| PolicySpec::named(p, &w.functions))
        .collect();
    let mut cells = bench.medians(w, &specs, cfg, args.reps)?;
    let (oracle, oracle_shares) = oracle_search(
        bench,
        w,
        &cells,
        cfg,
        &cfgs.search,
        args.reps,
        &mut results.candidates,
    )?;
    cells.push(oracle);
    if args.open_load > 0.0 && !is_shift {
        // One offered load for every policy: a fraction of the slower static placement's
        // saturation throughput, so that every static placement could carry it.
        let tp = |label: &str| {
            cells
                .iter()
                .find(|c| c.row.policy == label)
                .map_or(0.0, |c| c.row.throughput_per_s)
        };
        let rate = args.open_load * tp("storage").min(tp("compute"));
        if rate > 0.0 {
            let open_cfg = CellConfig {
                open_rate: Some(rate),
                ..cfgs.open.clone()
            };
            let mut open_specs = specs.clone();
            open_specs.push(PolicySpec::fixed(&w.functions, &oracle_shares));
            let open = bench.medians(w, &open_specs, &open_cfg, args.reps.min(3))?;
            results.open.extend(open.into_iter().map(|m| m.row));
        }
    }
    if is_shift {
        results
            .series
            .extend(shift_series(w, &cells, args.phase_ms));
    }
    if let Some(f) = forecast(w, &cells) {
        results.forecasts.push(f);
    }
    results.rows.extend(cells.into_iter().map(|c| c.row));
    Ok(())
}

/// The oracle: the best fixed assignment. All-storage and all-compute are the `storage` and
/// `compute` cells; the mixed assignments are measured at full length (after screening in short
/// cells, the best two, when there are more than two and this is not the shift). Every mixed
/// candidate's row goes into `candidates`.
fn oracle_search(
    bench: &Bench,
    w: &Workload,
    cells: &[Measured],
    cfg: &CellConfig,
    search_cfg: &CellConfig,
    reps: usize,
    candidates: &mut Vec<PlacementRow>,
) -> anyhow::Result<(Measured, Vec<f64>)> {
    let is_shift = w.phases.len() > 1;
    let n = w.functions.len();
    let mut oracle: Option<(Measured, Vec<f64>)> = None;
    let consider = |best: &mut Option<(Measured, Vec<f64>)>, m: Measured, shares: &[f64]| {
        if best
            .as_ref()
            .is_none_or(|b| m.row.throughput_per_s > b.0.row.throughput_per_s)
        {
            *best = Some((m, shares.to_vec()));
        }
    };
    // All-storage and all-compute are the storage and compute cells.
    for (label, shares) in [("storage", vec![1.0; n]), ("compute", vec![0.0; n])] {
        let c = cells
            .iter()
            .find(|c| c.row.policy == label)
            .expect("measured above");
        let mut m = c.clone();
        m.row.policy = "oracle".into();
        m.row.assignment = Some(oracle_string(&w.functions, &shares));
        consider(&mut oracle, m, &shares);
    }
    let mixed: Vec<Vec<f64>> = assignments(n)
        .into_iter()
        .filter(|a| a.iter().any(|&s| s > 0.0) && a.iter().any(|&s| s < 1.0))
        .collect();
    if !mixed.is_empty() {
        let finalists: Vec<Vec<f64>> = if is_shift || mixed.len() <= 2 {
            mixed
        } else {
            let mut screened = Vec::new();
            for a in &mixed {
                let spec = PolicySpec::fixed(&w.functions, a);
                eprintln!("{}: screening {}...", w.name, spec.policy);
                let m = bench.cell(w, &spec, search_cfg)?;
                candidates.push(m.row.clone());
                screened.push((m.row.throughput_per_s, a.clone()));
            }
            screened.sort_by(|a, b| b.0.total_cmp(&a.0));
            screened.into_iter().take(2).map(|(_, a)| a).collect()
        };
        let specs: Vec<PolicySpec> = finalists
            .iter()
            .map(|a| PolicySpec::fixed(&w.functions, a))
            .collect();
        for (m, shares) in bench
            .medians(w, &specs, cfg, reps)?
            .into_iter()
            .zip(&finalists)
        {
            candidates.push(m.row.clone());
            consider(&mut oracle, m, shares);
        }
    }
    Ok(oracle.expect("at least two assignments"))
}

/// The shift's time series: each cell's throughput and shares per bucket.
fn shift_series(w: &Workload, cells: &[Measured], phase_ms: u64) -> Vec<ShiftSeries> {
    let per_phase = (phase_ms / BUCKET_MS) as usize;
    cells
        .iter()
        .map(|c| {
            debug_assert!(c.buckets.len() >= 3 * per_phase);
            ShiftSeries {
                policy: c.row.policy.clone(),
                assignment: c.row.assignment.clone(),
                functions: w.functions.iter().map(|f| f.to_string()).collect(),
                shifts_ms: vec![phase_ms, 2 * phase_ms],
                bucket_ms: BUCKET_MS,
                points: c
                    .buckets
                    .iter()
                    .zip(&c.shares)
                    .enumerate()
                    .map(|(i, (tp, s))| SeriesPoint {
                        t_ms: (i as u64 + 1) * BUCKET_MS,
                        throughput_per_s: *tp,
                        shares: s.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The forecasts of storage load scored on the trace adaptive's cell recorded, if it ran.
fn forecast(w: &Workload, cells: &[Measured]) -> Option<ForecastRow> {
    cells
        .iter()
        .find(|c| c.row.policy == "adaptive")
        .map(|c| ForecastRow {
            workload: w.name.to_string(),
            evaluation: evaluate(&c.background),
            trace: c.background.clone(),
        })
}

/// Light load: one thread, one invocation at a time with a pause, on the mix: khop should end
/// inside storage and digest outside.
fn light_load(bench: &Bench, full: &CellConfig) -> anyhow::Result<PlacementRow> {
    eprintln!("light load: mix, adaptive, 1 thread, 1 in flight...");
    let mix = workload("mix")?;
    let light_cfg = CellConfig {
        threads: 1,
        in_flight: 1,
        think: Some(Duration::from_millis(1)),
        ..full.clone()
    };
    Ok(bench
        .cell(
            &mix,
            &PolicySpec::named("adaptive", &mix.functions),
            &light_cfg,
        )?
        .row)
}

/// Everything a run reports, beside the machine and the parameters.
struct Report<'a> {
    results: &'a Results,
    light: &'a PlacementRow,
    verdicts: &'a [VerdictRow],
    tallies: &'a [Tally],
    checks: &'a [Check],
    calibration: Option<&'a Calibration>,
}

/// The text report on stdout.
fn print_report(
    machine: &Machine,
    params: &BTreeMap<String, String>,
    report: &Report<'_>,
    elapsed: Duration,
) {
    let results = report.results;
    harness::print_header(machine, params);
    println!("saturation (closed loop), the run of median throughput per cell:");
    print!("{}", table(&results.rows));
    println!();
    println!(
        "adaptive / baseline, median throughput ratio [95% bootstrap interval over the \
         interleaved runs]; W, T, L: the interval is above, includes, is below 1:"
    );
    print!("{}", verdict_table(report.verdicts));
    for t in report.tallies {
        println!(
            "adaptive vs {:<12} wins {}  ties {}  losses {}{}",
            t.baseline,
            t.wins,
            t.ties,
            t.losses,
            if t.lost.is_empty() {
                String::new()
            } else {
                format!(" (lost: {})", t.lost.join(", "))
            }
        );
    }
    println!();
    if !results.open.is_empty() {
        println!(
            "open loop (Poisson arrivals at the offered load; latency from arrival; p50/p99 are \
             medians over the runs):"
        );
        print!("{}", open_table(&results.open));
        println!();
    }
    println!(
        "cost per invocation as the placement table measured it (st_: a storage-side run; \
         cp_: a compute-side run, its CPU on the compute node):"
    );
    print!("{}", cost_table(&results.rows));
    println!();
    if !results.candidates.is_empty() {
        println!("oracle candidates (fixed assignments; screening cells are shorter):");
        print!("{}", table(&results.candidates));
        println!();
    }
    println!(
        "light load (1 thread, 1 in flight, 1 ms pause between invocations, storage not saturated):"
    );
    print!("{}", table(std::slice::from_ref(report.light)));
    println!();
    println!(
        "storage load forecasts (other load per publisher sample during adaptive's cells; fitted \
         on the first half, one-step-ahead mean absolute error on the second, in cores):"
    );
    print!("{}", forecast_table(&results.forecasts));
    println!();
    if let Some(c) = report.calibration {
        println!(
            "calibration for bench-sim ({}; bandwidth {:.0} MB/s): {}",
            c.source,
            c.bandwidth / 1e6,
            c.functions
                .iter()
                .map(|f| format!(
                    "{} st {:.0} us, cp {:.0} us, {:.1} rt",
                    f.name,
                    f.storage_cpu_ns / 1e3,
                    f.compute_cpu_ns / 1e3,
                    f.round_trips
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        println!();
    }
    println!("targets:");
    for c in report.checks {
        println!("{}", c.line());
    }
    println!();
    println!("run took {:.1} s", elapsed.as_secs_f64());
}

/// The `--json` report, written to `path`.
fn write_json(
    path: &Path,
    machine: &Machine,
    params: &BTreeMap<String, String>,
    report: &Report<'_>,
) -> anyhow::Result<()> {
    let results = report.results;
    let json = JsonReport {
        machine,
        parameters: params,
        rows: &results.rows,
        oracle_candidates: &results.candidates,
        light_load: Some(report.light),
        open_loop: &results.open,
        verdicts: report.verdicts,
        tallies: report.tallies,
        checks: report.checks.iter().map(JsonCheck::from).collect(),
        shift_series: &results.series,
        forecasts: &results.forecasts,
        calibration: report.calibration,
    };
    harness::write_json(path, &json)
}

/// The forecast evaluations, one line per trace, and the verdict.
fn forecast_table(rows: &[ForecastRow]) -> String {
    let mut t = Table::new()
        .left("workload", 10)
        .right("samples", 8)
        .right("mae_holt", 10)
        .right("mae_ewma", 10)
        .right("mae_naive", 10)
        .right("best/nv", 8)
        .gap(2)
        .left("chosen", 0);
    for r in rows {
        let e = &r.evaluation;
        t.row(&[
            &r.workload,
            &r.trace.len(),
            &format!("{:.4}", e.mae_holt),
            &format!("{:.4}", e.mae_ewma),
            &format!("{:.4}", e.mae_naive),
            &format!("{:.2}", e.mae_holt.min(e.mae_ewma) / e.mae_naive),
            &format!("{:?}", e.chosen),
        ]);
    }
    t.to_string()
}

fn ms_or_inf(v: u64) -> f64 {
    if v == u64::MAX {
        f64::INFINITY
    } else {
        v as f64
    }
}

fn round_to_bucket(ms: u64) -> u64 {
    (ms.div_ceil(BUCKET_MS) * BUCKET_MS).max(BUCKET_MS)
}

fn redis_version(control: &mut Connection) -> String {
    autoloc::stats::info_field(control, "server", "redis_version")
        .map_or_else(|| "redis".into(), |v| format!("redis {v}"))
}

/// The rows as an aligned table.
fn table(rows: &[PlacementRow]) -> String {
    let mut t = Table::new()
        .left("workload", 10)
        .left("policy", 12)
        .right("throughput_per_s", 16)
        .right("p50_us", 9)
        .right("p99_us", 10)
        .right("st_util", 8)
        .right("cp_util", 8)
        .right("pushback", 8)
        .right("errors", 7)
        .gap(2)
        .left("storage_share_final", 44)
        .left("convergence_ms", 0);
    for r in rows {
        let list = |c: &Vec<Option<u64>>| {
            c.iter()
                .map(|v| v.map_or_else(|| "never".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let conv = match (&r.convergence_ms, &r.convergence_ms_strict) {
            (Some(c), Some(s)) => format!("{} (strict {})", list(c), list(s)),
            (Some(c), None) => list(c),
            _ => String::new(),
        };
        t.row(&[
            &r.workload,
            &r.policy,
            &format!("{:.0}", r.throughput_per_s),
            &format!("{:.1}", r.p50_us),
            &format!("{:.1}", r.p99_us),
            &format!("{:.2}", r.storage_util),
            &format!("{:.2}", r.compute_util),
            &r.pushed_back,
            &r.errors,
            &final_shares(r),
            &conv,
        ]);
        if let Some(a) = &r.assignment {
            t.text(format!("{:<10}   = {a}", ""));
        }
        if let Some(e) = &r.first_error {
            t.text(format!("{:<10}   first error: {e}", ""));
        }
    }
    t.to_string()
}

/// A row's final storage share of each function, `khop=0.85 digest=0.00`.
fn final_shares(r: &PlacementRow) -> String {
    shares_text(r.storage_share_final.iter().map(|(f, s)| (f.as_str(), *s)))
}

/// The worst convergence of a list; infinite if a phase never settled.
fn worst(c: &[Option<u64>]) -> Option<u64> {
    if c.is_empty() {
        None
    } else {
        Some(c.iter().map(|v| v.unwrap_or(u64::MAX)).max().unwrap_or(0))
    }
}

/// Baselines adaptive is compared with, in report order.
const BASELINES: [&str; 5] = ["storage", "compute", "autoloc2021", "kayak", "oracle"];

/// Adaptive against one baseline on one workload: the ratio of median throughputs with its
/// bootstrap interval (from every repetition of both cells), and the verdict it supports.
#[derive(Debug, Clone, Serialize)]
struct VerdictRow {
    workload: String,
    /// A baseline of [`BASELINES`], or `best static` (the better of storage and compute).
    baseline: String,
    ci: RatioCi,
    verdict: CiVerdict,
}

/// Every adaptive / baseline ratio with its interval, and per baseline the wins, ties and
/// losses over the workloads.
fn verdicts(rows: &[PlacementRow]) -> (Vec<VerdictRow>, Vec<Tally>) {
    let runs = |w: &str, p: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.policy == p)
            .map(|r| {
                if r.throughput_runs.is_empty() {
                    vec![r.throughput_per_s]
                } else {
                    r.throughput_runs.clone()
                }
            })
    };
    let mut workloads: Vec<&str> = Vec::new();
    for r in rows {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    let mut tallies: Vec<Tally> = BASELINES
        .iter()
        .map(|b| Tally {
            baseline: b.to_string(),
            ..Tally::default()
        })
        .collect();
    let mut out = Vec::new();
    for (wi, &w) in workloads.iter().enumerate() {
        let Some(adaptive) = runs(w, "adaptive") else {
            continue;
        };
        let best_static = match (runs(w, "storage"), runs(w, "compute")) {
            (Some(s), Some(c)) => Some(if median(&s) >= median(&c) { s } else { c }),
            (s, c) => s.or(c),
        };
        let baselines = BASELINES
            .iter()
            .map(|b| (b.to_string(), runs(w, b)))
            .chain(std::iter::once(("best static".to_string(), best_static)));
        for (bi, (baseline, other)) in baselines.enumerate() {
            let Some(other) = other else { continue };
            let seed = SEED ^ ((wi as u64) << 8) ^ bi as u64;
            let Some(ci) = ratio_ci(&adaptive, &other, BOOTSTRAP_RESAMPLES, seed) else {
                continue;
            };
            let verdict = ci.verdict();
            if let Some(t) = tallies.iter_mut().find(|t| t.baseline == baseline) {
                t.count(w, verdict);
            }
            out.push(VerdictRow {
                workload: w.to_string(),
                baseline,
                ci,
                verdict,
            });
        }
    }
    (out, tallies)
}

/// The targets, checked against the rows and the verdicts.
fn checks(rows: &[PlacementRow], verdicts: &[VerdictRow], light: &PlacementRow) -> Vec<Check> {
    let ratio = |w: &str, b: &str| {
        verdicts
            .iter()
            .find(|v| v.workload == w && v.baseline == b)
            .map(|v| v.ci.ratio)
    };
    let mut out = vec![Check {
        name: "adaptive's losses (95% CI below 1) to storage, compute, autoloc2021, kayak, on \
               any workload"
            .into(),
        value: (!verdicts.is_empty()).then(|| {
            verdicts
                .iter()
                .filter(|v| {
                    v.verdict == CiVerdict::Loss
                        && ["storage", "compute", "autoloc2021", "kayak"]
                            .contains(&v.baseline.as_str())
                })
                .count() as f64
        }),
        bound: Bound::AtMost(0.0),
        unit: "",
    }];
    for w in ["mix", "shift"] {
        if !rows.iter().any(|r| r.workload == w) {
            continue;
        }
        out.push(Check {
            name: format!("{w}: adaptive / best static (storage, compute), median ratio"),
            value: ratio(w, "best static"),
            bound: Bound::AtLeast(1.15),
            unit: "x",
        });
        out.push(Check {
            name: format!("{w}: adaptive / oracle (best fixed assignment), median ratio"),
            value: ratio(w, "oracle"),
            bound: Bound::AtLeast(0.95),
            unit: "x",
        });
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.workload == "shift" && r.policy == "adaptive")
    {
        for (name, convergence) in [
            (
                "shift: adaptive convergence after each shift (worst; 300 ms mean within 5%)",
                &r.convergence_ms,
            ),
            (
                "shift: every 100 ms bucket within 5% after (informative)",
                &r.convergence_ms_strict,
            ),
        ] {
            out.push(Check {
                name: name.into(),
                value: convergence.as_ref().and_then(|c| worst(c)).map(ms_or_inf),
                bound: Bound::AtMost(1000.0),
                unit: "ms",
            });
        }
    }
    out.push(Check {
        name: "light load: khop storage share, % (above 90)".into(),
        value: light.storage_share_final.get("khop").map(|s| s * 100.0),
        bound: Bound::AtLeast(90.0 + 1e-9),
        unit: "%",
    });
    out.push(Check {
        name: "light load: digest storage share, % (below 10)".into(),
        value: light.storage_share_final.get("digest").map(|s| s * 100.0),
        bound: Bound::AtMost(10.0 - 1e-9),
        unit: "%",
    });
    out
}

/// The verdict table: one line per workload, adaptive / each baseline as `ratio [lo, hi] W|T|L`.
fn verdict_table(verdicts: &[VerdictRow]) -> String {
    let cols: Vec<&str> = BASELINES
        .iter()
        .copied()
        .chain(std::iter::once("best static"))
        .collect();
    let mut t = Table::new().left("workload", 10);
    for c in &cols {
        t = t.right(format!("/ {c}"), 22);
    }
    let mut workloads: Vec<&str> = Vec::new();
    for v in verdicts {
        if !workloads.contains(&v.workload.as_str()) {
            workloads.push(&v.workload);
        }
    }
    for w in workloads {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                verdicts
                    .iter()
                    .find(|v| v.workload == w && v.baseline == *c)
                    .map_or_else(String::new, |v| {
                        let mark = match v.verdict {
                            CiVerdict::Win => "W",
                            CiVerdict::Tie => "T",
                            CiVerdict::Loss => "L",
                        };
                        format!("{:.2} [{:.2},{:.2}] {mark}", v.ci.ratio, v.ci.lo, v.ci.hi)
                    })
            })
            .collect();
        let mut row: Vec<&dyn std::fmt::Display> = vec![&w];
        row.extend(cells.iter().map(|c| c as &dyn std::fmt::Display));
        t.row(&row);
    }
    t.to_string()
}

/// The open-loop table: per workload and policy, offered and carried load, p50 and p99.
fn open_table(rows: &[PlacementRow]) -> String {
    let mut t = Table::new()
        .left("workload", 10)
        .left("policy", 12)
        .right("offered/s", 10)
        .right("carried/s", 10)
        .right("p50_us", 10)
        .right("p99_us", 10)
        .gap(2)
        .left("storage_share_final", 40);
    for r in rows {
        t.row(&[
            &r.workload,
            &r.policy,
            &format!("{:.0}", r.offered_per_s.unwrap_or(0.0)),
            &format!("{:.0}", r.throughput_per_s),
            &format!("{:.1}", r.p50_us),
            &format!("{:.1}", r.p99_us),
            &final_shares(r),
        ]);
        if let Some(e) = &r.first_error {
            t.text(format!("{:<10}   first error: {e}", ""));
        }
    }
    t.to_string()
}

/// What each function cost per invocation in each policy's cell, from the placement table.
fn cost_table(rows: &[PlacementRow]) -> String {
    let mut t = Table::new()
        .left("workload", 10)
        .left("policy", 12)
        .left("function", 10)
        .right("st_runs", 8)
        .right("st_cpu_us", 10)
        .right("cp_runs", 8)
        .right("cp_cpu_us", 10)
        .right("rtrips", 7)
        .right("bytes", 9);
    for r in rows {
        for (f, c) in &r.costs {
            t.row(&[
                &r.workload,
                &r.policy,
                f,
                &c.storage_runs,
                &format!("{:.1}", c.storage_cpu_us),
                &c.compute_runs,
                &format!("{:.1}", c.compute_cpu_us),
                &format!("{:.1}", c.round_trips),
                &format!("{:.0}", c.bytes),
            ]);
        }
    }
    t.to_string()
}

/// Two panels across the shift: throughput per bucket, and storage share (khop solid, digest
/// thin), one colour per policy; the shifts as vertical lines.
fn plot_shift(path: &Path, series: &[ShiftSeries], footnote: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let t_max = series
        .iter()
        .flat_map(|s| s.points.last())
        .map(|p| p.t_ms)
        .max()
        .unwrap_or(BUCKET_MS) as f64;
    let tp_max = series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.throughput_per_s)
        .fold(1.0, f64::max)
        * 1.1;
    let shifts = series[0].shifts_ms.clone();
    let functions = series[0].functions.clone();
    let root = SVGBackend::new(path, (1100, 880)).into_drawing_area();
    root.fill(&WHITE)?;
    let (body, foot) = root.split_vertically(850);
    foot.draw(&Text::new(
        footnote.to_string(),
        (10, 10),
        ("sans-serif", 13).into_font().color(&BLACK.mix(0.8)),
    ))?;
    let (top, bottom) = body.split_vertically(440);
    let label = |s: &ShiftSeries| match &s.assignment {
        Some(a) => a.clone(),
        None => s.policy.clone(),
    };

    let mut chart = ChartBuilder::on(&top)
        .caption(
            "shift: throughput per 100 ms (khop-heavy | digest-heavy | khop-heavy)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..tp_max)?;
    chart
        .configure_mesh()
        .x_desc("ms since measuring started")
        .y_desc("invocations / s")
        .draw()?;
    for &s in &shifts {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(s as f64, 0.0), (s as f64, tp_max)],
            BLACK.mix(0.3).stroke_width(1),
        )))?;
    }
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.t_ms as f64, p.throughput_per_s))
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(pts, c.stroke_width(2))))?
            .label(label(s))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;

    let caption = format!(
        "storage share over time: {} (thick), {} (thin)",
        functions.first().map_or("", String::as_str),
        functions.get(1).map_or("", String::as_str)
    );
    let mut chart = ChartBuilder::on(&bottom)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, -0.02..1.05)?;
    chart
        .configure_mesh()
        .x_desc("ms since measuring started")
        .y_desc("storage share")
        .draw()?;
    for &s in &shifts {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(s as f64, -0.02), (s as f64, 1.05)],
            BLACK.mix(0.3).stroke_width(1),
        )))?;
    }
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        for f in 0..s.functions.len() {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| (p.t_ms as f64, p.shares.get(f).copied().unwrap_or(0.0)))
                .collect();
            let style = if f == 0 {
                c.stroke_width(3)
            } else {
                c.mix(0.6).stroke_width(1)
            };
            let e = chart.draw_series(std::iter::once(PathElement::new(pts, style)))?;
            if f == 0 {
                e.label(label(s)).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_invocations_parse() {
        // ci/test's smoke run, and the README's.
        let a: Args = parse_line(
            "bench-placement --topology netns --transport tcp --rtt-us 100 --workloads \
             khop2,digest --reps 3 --warmup-ms 200 --duration-ms 300 --search-ms 200 --json p.json",
        );
        assert_eq!(
            (a.server.core, a.graph.scale, a.graph.edge_factor),
            (1, 12, 8)
        );
        let a: Args = parse_line("bench-placement --json p.json --plot p.svg");
        assert!(a.json.path.is_some() && a.plot.path.is_some());
    }
}
