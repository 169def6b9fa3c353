//! The driver behind `batch` and `redisclient`: `rounds` rounds of `count` invocations.
//!
//! Invocation `i` (1-based within a round) takes `i` as its first argument (start vertex or key)
//! (`i mod n` with [`BatchConfig::first_modulo`] `n`) unless [`BatchConfig::first`] fixes it; the
//! other arguments are [`BatchConfig::args`]. Threads
//! take invocations from a shared counter, each over its own connection. A failed invocation is
//! counted, the first failure is kept, and the run goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use autoloc_functions::function::Fnv;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{Placement, ReadMode, Result, Runtime, Side};

/// What to run.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Function name.
    pub function: String,
    /// Rounds.
    pub rounds: u64,
    /// Invocations per round.
    pub count: u64,
    /// Where to run them.
    pub placement: Placement,
    /// How compute-side reads reach Redis.
    pub read_mode: ReadMode,
    /// Threads, each with its own connection.
    pub threads: usize,
    /// Invocations each thread keeps in flight on its link (1: one at a time).
    pub in_flight: usize,
    /// Cores to pin the threads to, round-robin (empty: not pinned).
    pub cores: Vec<usize>,
    /// A fixed first argument instead of the invocation number.
    pub first: Option<String>,
    /// If set, invocation `i` takes `i mod first_modulo` as its first argument (the vertices of
    /// a graph of that many).
    pub first_modulo: Option<u64>,
    /// The arguments after the first.
    pub args: Vec<String>,
}

/// The arguments after the first that `function` takes by default (`k` for khop); an example
/// guest (`khop_wasm`, ...) takes its native twin's, `friends_wasm` the 10 best.
pub fn default_args(function: &str, k: u32) -> Vec<String> {
    match function.strip_suffix("_wasm").unwrap_or(function) {
        "friends" => vec!["10".into()],
        "khop" => vec![k.to_string()],
        "digest" => vec!["10".into()],
        "pagerank" => vec!["20".into()],
        "aggregate" => vec!["64".into()],
        _ => Vec::new(),
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Mean.
    pub mean: f64,
    /// Maximum.
    pub max: f64,
}

/// What a run measured (the `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Function name.
    pub function: String,
    /// `storage`, `compute`, or `redisclient` (compute-side, one GET per key).
    pub placement: String,
    /// How requests reached Redis.
    pub transport: crate::Transport,
    /// Threads.
    pub threads: usize,
    /// Invocations in flight per thread.
    pub in_flight: usize,
    /// Invocations run.
    pub invocations: u64,
    /// Of those, failed.
    pub errors: u64,
    /// The first failure, with its arguments.
    pub first_error: Option<String>,
    /// Invocations that ran storage-side / compute-side.
    pub storage_side: u64,
    /// See `storage_side`.
    pub compute_side: u64,
    /// Invocations the storage side pushed back (then run compute-side).
    pub pushed_back: u64,
    /// Times a storage-side invocation was forwarded to another shard.
    pub forwarded: u64,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Invocations per second.
    pub throughput_per_s: f64,
    /// Latency of successful invocations.
    pub latency_us: Latency,
    /// Round trips to Redis, all invocations.
    pub round_trips: u64,
    /// Bytes sent and received, all invocations.
    pub bytes: u64,
    /// Order-independent checksum of every (invocation, result): equal for equal results
    /// whatever the placement.
    pub results_checksum: String,
    /// Each function's storage share in the placement table at the end of the run.
    pub storage_share_final: std::collections::BTreeMap<String, f64>,
}

#[derive(Default)]
struct Totals {
    errors: u64,
    first_error: Option<(u64, String)>,
    storage: u64,
    compute: u64,
    pushed_back: u64,
    forwarded: u64,
    round_trips: u64,
    bytes: u64,
    checksum: u64,
}

/// Runs `cfg` with `rt` (cloned once per thread).
pub fn run(rt: &Runtime, cfg: &BatchConfig) -> Result<BatchReport> {
    let threads = cfg.threads.max(1);
    let mut runtimes = Vec::with_capacity(threads);
    for _ in 0..threads {
        runtimes.push(rt.try_clone()?.with_read_mode(cfg.read_mode));
    }
    // A fixed placement is a share too: the table (and so `storage_share_final`, `autoloc
    // placement`, INFO) says where this run sends invocations.
    let fixed = match cfg.placement {
        Placement::Storage => Some(1.0),
        Placement::Compute => Some(0.0),
        Placement::Auto => None,
    };
    if let Some(share) = fixed {
        (0..rt.registry().slots()).for_each(|i| rt.table().set_share(i, share));
    }
    let total = cfg.rounds * cfg.count;
    let next = AtomicU64::new(0);
    let merged = Mutex::new((
        Histogram::<u64>::new(3).expect("3 significant figures is valid"),
        Totals::default(),
    ));
    let started = Instant::now();
    std::thread::scope(|s| {
        for (t, mut rt) in runtimes.into_iter().enumerate() {
            let (next, merged) = (&next, &merged);
            let core = (!cfg.cores.is_empty()).then(|| cfg.cores[t % cfg.cores.len()]);
            s.spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                }
                let mut hist = Histogram::<u64>::new(3).expect("valid");
                let mut t = Totals::default();
                let width = cfg.in_flight.max(1) as u64;
                loop {
                    let first = next.fetch_add(width, Ordering::Relaxed);
                    if first >= total {
                        break;
                    }
                    let ns: Vec<u64> = (first..(first + width).min(total)).collect();
                    let calls: Vec<(&str, Vec<String>)> = ns
                        .iter()
                        .map(|&n| {
                            let mut i = n % cfg.count.max(1) + 1;
                            if let Some(m) = cfg.first_modulo.filter(|&m| m > 0) {
                                i %= m;
                            }
                            let mut args = Vec::with_capacity(cfg.args.len() + 1);
                            args.push(cfg.first.clone().unwrap_or_else(|| i.to_string()));
                            args.extend(cfg.args.iter().cloned());
                            (cfg.function.as_str(), args)
                        })
                        .collect();
                    let results = if calls.len() == 1 {
                        vec![rt.invoke(calls[0].0, &calls[0].1, cfg.placement)]
                    } else {
                        rt.invoke_many(&calls, cfg.placement)
                    };
                    for ((&n, (_, args)), result) in ns.iter().zip(&calls).zip(results) {
                        let i = n % cfg.count.max(1) + 1;
                        match result {
                            Ok(inv) => {
                                let _ = hist.record(inv.wall.as_nanos() as u64);
                                match inv.side {
                                    Side::Storage => t.storage += 1,
                                    Side::Compute => t.compute += 1,
                                }
                                t.pushed_back += u64::from(inv.pushed_back);
                                t.forwarded += u64::from(inv.forwarded);
                                t.round_trips += inv.round_trips;
                                t.bytes += inv.bytes;
                                let mut h = Fnv::new();
                                h.write(&i.to_le_bytes());
                                h.write(&inv.output.canonical_hash().to_le_bytes());
                                t.checksum = t.checksum.wrapping_add(h.finish());
                            }
                            Err(e) => {
                                t.errors += 1;
                                if t.first_error.as_ref().is_none_or(|(at, _)| n < *at) {
                                    t.first_error = Some((
                                        n,
                                        format!("{} {}: {e}", cfg.function, args.join(" ")),
                                    ));
                                }
                            }
                        }
                    }
                }
                let mut m = merged.lock().unwrap_or_else(|p| p.into_inner());
                let _ = m.0.add(&hist);
                let acc = &mut m.1;
                acc.errors += t.errors;
                if let Some((at, e)) = t.first_error {
                    if acc.first_error.as_ref().is_none_or(|(a, _)| at < *a) {
                        acc.first_error = Some((at, e));
                    }
                }
                acc.storage += t.storage;
                acc.compute += t.compute;
                acc.pushed_back += t.pushed_back;
                acc.forwarded += t.forwarded;
                acc.round_trips += t.round_trips;
                acc.bytes += t.bytes;
                acc.checksum = acc.checksum.wrapping_add(t.checksum);
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let (hist, t) = merged.into_inner().unwrap_or_else(|p| p.into_inner());
    let us = |ns: u64| ns as f64 / 1000.0;
    let placement = match (cfg.placement, cfg.read_mode) {
        (Placement::Compute, ReadMode::PerKey) => "redisclient".to_string(),
        (p, _) => p.to_string(),
    };
    Ok(BatchReport {
        function: cfg.function.clone(),
        placement,
        transport: rt.transport(),
        threads,
        in_flight: cfg.in_flight.max(1),
        invocations: total,
        errors: t.errors,
        first_error: t.first_error.map(|(_, e)| e),
        storage_side: t.storage,
        compute_side: t.compute,
        pushed_back: t.pushed_back,
        forwarded: t.forwarded,
        seconds,
        throughput_per_s: if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        },
        latency_us: Latency {
            p50: us(hist.value_at_quantile(0.5)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            mean: hist.mean() / 1000.0,
            max: us(hist.max()),
        },
        round_trips: t.round_trips,
        bytes: t.bytes,
        results_checksum: format!("{:016x}", t.checksum),
        storage_share_final: rt
            .registry()
            .all()
            .into_iter()
            .map(|(i, f)| (f.name().to_string(), rt.table().share(i)))
            .collect(),
    })
}

impl BatchReport {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{}: {} invocations, {} placement over {}, {} thread(s), {} in flight each\n",
            self.function,
            self.invocations,
            self.placement,
            self.transport,
            self.threads,
            self.in_flight
        );
        s += &format!(
            "  throughput {:.0}/s in {:.3} s   latency p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us\n",
            self.throughput_per_s, self.seconds, self.latency_us.p50, self.latency_us.p99, self.latency_us.p999
        );
        s += &format!(
            "  ran storage-side {}, compute-side {} (pushed back {}), {} round trips, {} bytes\n",
            self.storage_side, self.compute_side, self.pushed_back, self.round_trips, self.bytes
        );
        if self.forwarded > 0 {
            s += &format!("  forwarded to another shard {} times\n", self.forwarded);
        }
        s += &format!("  errors {}", self.errors);
        if let Some(e) = &self.first_error {
            s += &format!(" (first: {e})");
        }
        s += &format!("\n  results checksum {}", self.results_checksum);
        s
    }
}
