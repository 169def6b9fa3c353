//! Per-function counters of the storage side, and the `INFO autoloc` section that shows them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use autoloc_functions::Registry;
use redis_module::{InfoContext, RedisResult};
use redis_module_macros::info_command_handler;

/// The counters of one function. Relaxed atomics: each is an independent tally.
#[derive(Debug, Default)]
pub struct FunctionCounters {
    /// Invocations started.
    pub calls: AtomicU64,
    /// Invocations that failed (pushbacks included).
    pub errors: AtomicU64,
    /// Invocations stopped by the budget and handed back to the caller.
    pub pushbacks: AtomicU64,
    /// CPU time spent running the function, ns.
    pub cpu_ns: AtomicU64,
    /// Keys read.
    pub keys_read: AtomicU64,
    /// Value bytes read.
    pub bytes_read: AtomicU64,
    /// CPU ns of its recent invocations: a moving average (each new one weighs 1/8), which
    /// decides whether an `AUTOLOC.CALL` of it starts on Redis's main thread at all.
    pub recent_cpu_ns: AtomicU64,
}

/// What one invocation adds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sample {
    /// It failed.
    pub error: bool,
    /// It was pushed back.
    pub pushback: bool,
    /// CPU ns it took.
    pub cpu_ns: u64,
    /// Keys it read.
    pub keys_read: u64,
    /// Bytes it read.
    pub bytes_read: u64,
}

static COUNTERS: [FunctionCounters; Registry::CAPACITY] = [const {
    FunctionCounters {
        calls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        pushbacks: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        keys_read: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        recent_cpu_ns: AtomicU64::new(0),
    }
}; Registry::CAPACITY];

/// The counters of the function at `index` in the registry.
pub fn of(index: usize) -> &'static FunctionCounters {
    &COUNTERS[index.min(Registry::CAPACITY - 1)]
}

/// Zeroes the counters at `index`, for a function new to that slot.
pub fn reset(index: usize) {
    let c = of(index);
    for a in [
        &c.calls,
        &c.errors,
        &c.pushbacks,
        &c.cpu_ns,
        &c.keys_read,
        &c.bytes_read,
        &c.recent_cpu_ns,
    ] {
        a.store(0, Relaxed);
    }
}

/// Adds one invocation of the function at `index`.
pub fn record(index: usize, s: Sample) {
    let c = of(index);
    c.calls.fetch_add(1, Relaxed);
    c.errors.fetch_add(u64::from(s.error), Relaxed);
    c.pushbacks.fetch_add(u64::from(s.pushback), Relaxed);
    c.cpu_ns.fetch_add(s.cpu_ns, Relaxed);
    c.keys_read.fetch_add(s.keys_read, Relaxed);
    c.bytes_read.fetch_add(s.bytes_read, Relaxed);
    // Not atomic as a whole: a concurrent update may be lost, which an estimate can afford.
    let old = c.recent_cpu_ns.load(Relaxed);
    c.recent_cpu_ns.store(old - old / 8 + s.cpu_ns / 8, Relaxed);
}

/// Whether the recent invocations of the function at `index` took longer than `d` on average.
pub fn usually_longer(index: usize, d: std::time::Duration) -> bool {
    of(index).recent_cpu_ns.load(Relaxed) > d.as_nanos() as u64
}

/// Every counter of the module as `(name, value)`: per function `<function>_<counter>` (e.g.
/// `khop_calls`), then the data plane's `dataplane_*`. `INFO autoloc` shows them as text,
/// `AUTOLOC.STATS` as a typed reply.
pub fn fields() -> Vec<(String, u64)> {
    let registry = crate::registry::registry();
    let mut out = vec![(
        "budget_us".to_string(),
        crate::config::budget().as_micros() as u64,
    )];
    for (i, f) in registry.all() {
        let c = of(i);
        let name = f.name();
        for (counter, value) in [
            ("calls", c.calls.load(Relaxed)),
            ("errors", c.errors.load(Relaxed)),
            ("pushbacks", c.pushbacks.load(Relaxed)),
            ("cpu_us", c.cpu_ns.load(Relaxed) / 1000),
            ("keys_read", c.keys_read.load(Relaxed)),
            ("bytes_read", c.bytes_read.load(Relaxed)),
        ] {
            out.push((format!("{name}_{counter}"), value));
        }
    }
    out.push((
        "cluster_view_reads".to_string(),
        crate::cluster::view_reads(),
    ));
    let dp = crate::dataplane::stats();
    for (name, value) in [
        ("dataplane_links_opened", &dp.links_opened),
        ("dataplane_links_closed", &dp.links_closed),
        ("dataplane_requests", &dp.requests),
        ("dataplane_lock_acquisitions", &dp.lock_acquisitions),
        ("dataplane_lock_bound_hits", &dp.lock_bound_hits),
        ("dataplane_lock_yields", &dp.lock_yields),
        ("dataplane_lock_handoffs", &dp.lock_handoffs),
        ("dataplane_settled_writes", &dp.settled_writes),
        ("dataplane_deferred", &dp.deferred),
        ("dataplane_pushbacks", &dp.pushbacks),
        ("dataplane_tcp_rejected", &dp.tcp_rejected),
        ("dataplane_tcp_identities", &dp.tcp_identities),
        ("dataplane_busy_permille", &dp.busy_permille),
    ] {
        out.push((name.to_string(), value.load(Relaxed)));
    }
    out
}

/// `INFO autoloc`: section `autoloc_functions`, one line per counter of [`fields`], then each
/// function's latest `storage_share` as reported by compute nodes.
#[info_command_handler]
fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let mut section = ctx.builder().add_section("functions");
    for (name, value) in fields() {
        section = section.field(&name, value.to_string())?;
    }
    for (name, share) in crate::placement::latest_shares() {
        section = section.field(&format!("{name}_storage_share"), format!("{share:.3}"))?;
    }
    section.build_section()?.build_info().map(|_| ())
}
