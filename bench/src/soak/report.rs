//! The soak's report: what it ran, what it counted, what it found, and whether every check
//! held (`--json` writes it, [`Report::summary`] prints it).

use std::collections::BTreeMap;

use serde::Serialize;

use super::faults::FaultKind;
use super::ledger::Check;
use super::probe::{PingSecond, RssSample};
use crate::harness::Machine;

/// A transport left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub transport: String,
    pub reason: String,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Seconds into the run.
    pub t: f64,
    pub kind: FaultKind,
    /// Whether everything happened as it must (a turned-away peer was closed and counted, an
    /// ACL command succeeded, a restarted server kept every acknowledged write).
    pub ok: bool,
    pub detail: String,
}

/// Acknowledged writes checked against a server.
#[derive(Debug, Clone, Serialize)]
pub struct CheckAt {
    /// Seconds into the run.
    pub t: f64,
    /// After what.
    pub after: String,
    #[serde(flatten)]
    pub check: Check,
}

/// One process of redis-server during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Incarnation {
    pub pid: u32,
    /// Seconds into the run it started.
    pub t: f64,
    /// Why it started.
    pub reason: String,
}

/// Operations and their errors.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Operations {
    pub ok: u64,
    pub failed: u64,
    /// Failed operations by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Per operation: successes and errors by code.
    pub by_op: BTreeMap<String, OpCounts>,
    /// Examples of each code's messages.
    pub error_examples: BTreeMap<String, Vec<String>>,
}

/// One operation's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

/// What became of acknowledged writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Writes {
    /// Acknowledgements received.
    pub acknowledged: u64,
    /// Keys written (each checked at its highest acknowledged value).
    pub keys: u64,
    /// Acknowledged writes lost, over every check.
    pub lost: u64,
    /// Keys holding what no worker wrote, over every check.
    pub corrupt: u64,
    /// Reads of a worker's own key that returned less than it had been acknowledged.
    pub stale_reads: u64,
    pub stale_examples: Vec<String>,
    /// Every check: after each injected kill -9 and the last one.
    pub checks: Vec<CheckAt>,
}

/// What was left once every client was gone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leaks {
    /// Segment files in /dev/shm named after the server that served the run.
    pub shm_segments_named: Vec<String>,
    /// Segments that server still had mapped.
    pub shm_segments_mapped: u64,
    /// Segment files named after any redis-server of the run, after the last restart (the
    /// module removes those of dead processes when it loads).
    pub shm_segments_after_restart: Vec<String>,
    /// `dataplane_links_opened - dataplane_links_closed`, and what it must be (the TCP server
    /// is one link while it runs).
    pub links_open: i64,
    pub links_expected: i64,
    /// Open descriptors of the server by kind: after the warm-up (no worker connected yet) and
    /// at the end.
    pub fds_baseline: BTreeMap<String, u64>,
    pub fds_end: BTreeMap<String, u64>,
    /// How long the server took to get there, seconds.
    pub settled_s: f64,
    /// Totals: segments named or mapped, links over the expected, descriptors over the baseline.
    pub shm_segments: u64,
    pub links: u64,
    pub fds: u64,
}

/// redis-server during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisReport {
    pub incarnations: Vec<Incarnation>,
    pub injected_kills: u64,
    /// Exits nobody caused, with the log's last lines.
    pub unexpected_exits: Vec<String>,
    /// Lines of its log and stderr that tell of a crash (a panic, a bug report).
    pub log_problems: Vec<String>,
    /// Redis's bug reports (signal, stack trace), and the end of its stderr (a module's panic).
    pub crash_reports: Vec<String>,
    pub stderr_tail: String,
    /// `AUTOLOC.STATS` of the server that served the end of the run, before the last restart.
    pub stats_at_end: BTreeMap<String, u64>,
    pub rss_first_kib: u64,
    pub rss_last_kib: u64,
    pub rss_max_kib: u64,
}

/// The worker processes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkersReport {
    /// Processes started, replacements included.
    pub started: u64,
    /// Killed by the injector.
    pub killed: u64,
    /// Exits nobody caused, with their stderr's last lines.
    pub unexpected_exits: Vec<String>,
    /// Stopped at the end by closing their stdin, and of those, killed for not stopping.
    pub stopped: u64,
    pub killed_at_stop: u64,
    /// Per worker slot, the longest time, seconds, it went without a successful operation
    /// (every fault must be over within seconds: a slot that stalls longer never recovered).
    pub longest_stall_s: BTreeMap<usize, f64>,
}

/// PING over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PingReport {
    pub answered: u64,
    pub failed: u64,
    /// Slowest answer under load, microseconds.
    pub max_us: u64,
    /// The slowest second's p99 under load, microseconds.
    pub worst_p99_us: u64,
    /// The same before the workers started: the idle server, the baseline.
    pub idle_max_us: u64,
    pub idle_p99_us: u64,
    /// Per second.
    pub seconds: Vec<PingSecond>,
}

/// One second of operations.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpsSecond {
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
}

/// The soak's report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether every check held.
    pub passed: bool,
    /// What did not.
    pub failures: Vec<String>,
    pub machine: Machine,
    pub parameters: BTreeMap<String, String>,
    /// Transports the workers used, and those left out.
    pub transports: Vec<String>,
    pub skipped_transports: Vec<Skipped>,
    /// When the workers started, seconds into the run (the time axis of every series; before
    /// it the server idles, the baseline).
    pub load_started_s: f64,
    /// Seconds the workers ran.
    pub seconds: f64,
    pub operations: Operations,
    pub writes: Writes,
    pub leaks: Leaks,
    pub redis: RedisReport,
    pub workers: WorkersReport,
    pub faults: Vec<FaultRecord>,
    pub ping: PingReport,
    pub rss: Vec<RssSample>,
    pub ops_per_s: Vec<OpsSecond>,
}

impl Report {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut out = Vec::new();
        let workers: Vec<String> = (0..self.parameters["workers"].parse::<usize>().unwrap_or(0))
            .map(|i| self.transports[i % self.transports.len().max(1)].clone())
            .collect();
        out.push(format!(
            "soak: {:.0} s, {} workers ({}), seed {}, {} ops/s per worker at most",
            self.seconds,
            workers.len(),
            workers.join(", "),
            self.parameters["seed"],
            self.parameters["rate_per_worker"]
        ));
        for s in &self.skipped_transports {
            out.push(format!("  {} skipped: {}", s.transport, s.reason));
        }
        let codes: Vec<String> = self
            .operations
            .errors_by_code
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        out.push(format!(
            "operations: {} ok, {} failed ({})",
            self.operations.ok,
            self.operations.failed,
            if codes.is_empty() {
                "none".into()
            } else {
                codes.join(", ")
            }
        ));
        let mut kinds: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for f in &self.faults {
            let e = kinds.entry(f.kind.as_str()).or_default();
            e.0 += 1;
            e.1 += u64::from(!f.ok);
        }
        let kinds: Vec<String> = kinds
            .iter()
            .map(|(k, (n, bad))| {
                if *bad > 0 {
                    format!("{k} {n} ({bad} wrong)")
                } else {
                    format!("{k} {n}")
                }
            })
            .collect();
        out.push(format!(
            "faults: {} ({})",
            self.faults.len(),
            kinds.join(", ")
        ));
        out.push(format!(
            "acknowledged writes: {} on {} keys; lost {}, corrupt {} (checked after each of {} kill -9s, the last at the end); stale reads {}",
            self.writes.acknowledged,
            self.writes.keys,
            self.writes.lost,
            self.writes.corrupt,
            self.writes.checks.len(),
            self.writes.stale_reads
        ));
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        out.push(format!(
            "leaks: shm segments {}, links {} (open {}, expected {}), fds {} (baseline {}, end {}); settled in {:.1} s",
            self.leaks.shm_segments,
            self.leaks.links,
            self.leaks.links_open,
            self.leaks.links_expected,
            self.leaks.fds,
            total(&self.leaks.fds_baseline),
            total(&self.leaks.fds_end),
            self.leaks.settled_s
        ));
        out.push(format!(
            "redis-server: RSS {:.1} -> {:.1} MiB (max {:.1}); {} processes, {} injected kill -9s, {} exits nobody caused, {} crash lines in its log",
            self.redis.rss_first_kib as f64 / 1024.0,
            self.redis.rss_last_kib as f64 / 1024.0,
            self.redis.rss_max_kib as f64 / 1024.0,
            self.redis.incarnations.len(),
            self.redis.injected_kills,
            self.redis.unexpected_exits.len(),
            self.redis.log_problems.len()
        ));
        out.push(format!(
            "PING under load: {} answered, {} failed (server down or restarting); max {:.2} ms, worst per-second p99 {:.2} ms (idle before the load: max {:.2} ms, p99 {:.2} ms)",
            self.ping.answered,
            self.ping.failed,
            self.ping.max_us as f64 / 1000.0,
            self.ping.worst_p99_us as f64 / 1000.0,
            self.ping.idle_max_us as f64 / 1000.0,
            self.ping.idle_p99_us as f64 / 1000.0
        ));
        let (stall_slot, stall) = self
            .workers
            .longest_stall_s
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or((0, 0.0), |(s, t)| (*s, *t));
        out.push(format!(
            "workers: {} started, {} killed, {} died by themselves, {} killed at stop; longest without a successful operation {stall:.1} s (worker {stall_slot})",
            self.workers.started,
            self.workers.killed,
            self.workers.unexpected_exits.len(),
            self.workers.killed_at_stop
        ));
        if self.passed {
            out.push("verdict: PASS".into());
        } else {
            out.push(format!("verdict: FAIL: {}", self.failures.join("; ")));
        }
        out.join("\n")
    }
}
