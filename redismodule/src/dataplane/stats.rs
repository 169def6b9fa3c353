//! The data plane's counters ([`Stats`], for `INFO autoloc`): one set per process, counted by the
//! data-plane threads, by the lock (yields, handoffs, settled writes) and by the invoke path
//! (pushbacks).

use std::sync::atomic::AtomicU64;

/// Counters of the data plane, for `INFO autoloc`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Links handed to threads.
    pub links_opened: AtomicU64,
    /// Links dropped (peer gone or never attached).
    pub links_closed: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
    /// Acquisitions of Redis's lock.
    pub lock_acquisitions: AtomicU64,
    /// Bursts cut short by the lock bound.
    pub lock_bound_hits: AtomicU64,
    /// Times an invocation gave the lock back while it ran.
    pub lock_yields: AtomicU64,
    /// Times Redis's main thread took the lock when a data-plane thread gave it back.
    pub lock_handoffs: AtomicU64,
    /// Acknowledgements of writes that waited until the writes were in the AOF.
    pub settled_writes: AtomicU64,
    /// `AUTOLOC.CALL`/`AUTOLOC.INVOKE` runs moved off Redis's main thread at `lock-us`.
    pub deferred: AtomicU64,
    /// Invocations pushed back to their callers (budget or overload).
    pub pushbacks: AtomicU64,
    /// TCP connections closed without a reply: no valid one-time secret first.
    pub tcp_rejected: AtomicU64,
    /// Authenticated TCP connections whose caller the module keeps (open ones, as of the last
    /// reaper turn).
    pub tcp_identities: AtomicU64,
    /// Busy fraction of the last data-plane thread to finish a window, in parts per 1000.
    pub busy_permille: AtomicU64,
}

pub(super) static STATS: Stats = Stats {
    links_opened: AtomicU64::new(0),
    links_closed: AtomicU64::new(0),
    requests: AtomicU64::new(0),
    lock_acquisitions: AtomicU64::new(0),
    lock_bound_hits: AtomicU64::new(0),
    lock_yields: AtomicU64::new(0),
    lock_handoffs: AtomicU64::new(0),
    settled_writes: AtomicU64::new(0),
    deferred: AtomicU64::new(0),
    pushbacks: AtomicU64::new(0),
    tcp_rejected: AtomicU64::new(0),
    tcp_identities: AtomicU64::new(0),
    busy_permille: AtomicU64::new(0),
};

/// The data plane's counters.
pub fn stats() -> &'static Stats {
    &STATS
}
