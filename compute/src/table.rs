//! The placement table: per function, atomic counters of every invocation on each side, the
//! function's storage share, and the reason the controller last gave for it.
//!
//! One [`Slot`] per registered function, indexed like the registry. The invocation path touches
//! only relaxed atomics and takes no lock:
//!
//! - [`Table::choose`] takes a ticket and splits tickets between the sides by the share, so a
//!   share of 0.3 sends exactly 3 of every 10 consecutive invocations storage-side;
//! - [`Table::record`] adds what the invocation cost to the side it ended on.
//!
//! The controller ([`crate::placement::Controller`]) reads [`SideSnapshot`]s, differences two of
//! them into a window, and writes shares and [`Reason`]s back with [`Table::set_share`] and
//! [`Table::set_reason`].
//!
//! # Memory ordering
//!
//! Every counter is an independent tally: nothing is published through it, so `Relaxed` is
//! enough, and a snapshot is a set of loads that may straddle a concurrent record (a window may
//! see an invocation's count before its CPU time; the next window sees the rest). The share is a
//! hint read once per invocation: `Relaxed` again, and a new share takes effect within the
//! invocations already in flight. The ticket counter is one atomic whose `fetch_add`s form a
//! single modification order, so every invocation gets a distinct ticket whatever the ordering,
//! and the split over any run of consecutive tickets read under one share is exact.
//!
//! # Cache lines
//!
//! Each [`Slot`] keeps what different threads write apart, every part on cache lines of its
//! own (`CachePadded`): the ticket (every `choose` writes it), the share (every `choose` reads
//! it; only the controller writes it), the storage side's counters and the compute side's
//! (every `record` writes one of them). So a thread recording a compute-side invocation does
//! not invalidate the line another thread takes its ticket from, and threads invoking different
//! functions touch no common line at all. A slot is 640 bytes; the table's 64 are 40 KiB.

use std::fmt;
use std::ops::Deref;

use autoloc_functions::Registry;

use crate::placement::{Costs, Reason};
use crate::side::Side;
pub use crate::side::{Record, SideSnapshot};

/// Atomics of the share/ticket logic: std's, or loom's model checker under
/// `RUSTFLAGS="--cfg loom" cargo test -p autoloc --lib loom`.
mod sync {
    #[cfg(all(loom, test))]
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
    #[cfg(not(all(loom, test)))]
    pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};
}

use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering::Relaxed};

/// A value on cache lines of its own: aligned, and so sized, to 128 bytes. Two 64-byte lines,
/// not one, because Intel's spatial prefetcher fetches lines in adjacent pairs, so a neighbour
/// on the pair's other line still ping-pongs (crossbeam's `CachePadded` pads to 128 on x86_64
/// and aarch64 for this reason).
#[derive(Debug, Default)]
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The fixed-point unit of a share: a share is stored as parts per million, so decimal shares
/// such as 0.3 are exact and `(t + 1) * s` never overflows.
pub const SHARE_ONE: u32 = 1_000_000;

/// A share in [0, 1] as parts per [`SHARE_ONE`], rounded to nearest; NaN counts as 0.
pub fn share_to_fixed(share: f64) -> u32 {
    if share.is_nan() {
        return 0;
    }
    (share.clamp(0.0, 1.0) * f64::from(SHARE_ONE)).round() as u32
}

/// Whether ticket `t` goes storage-side under a share of `parts` per [`SHARE_ONE`]:
/// `floor((t+1)s) - floor(ts)`, a low-discrepancy split. Over any `n` consecutive tickets the
/// storage count is `floor(n s)` or `ceil(n s)`; over any [`SHARE_ONE`] of them it is exactly
/// `parts`.
pub fn split(ticket: u64, parts: u32) -> bool {
    let one = u64::from(SHARE_ONE);
    let parts = u64::from(parts.min(SHARE_ONE));
    // The split is periodic in SHARE_ONE, so reduce first: (r + 1) * parts < 2^40.
    let r = ticket % one;
    (r + 1) * parts / one != r * parts / one
}

/// The share and ticket of one function: which side its next invocation runs on.
#[derive(Debug)]
pub struct Splitter {
    /// Parts per [`SHARE_ONE`] of invocations to send storage-side; always `<= SHARE_ONE`.
    /// Read by every `choose`, written by the controller: apart from the ticket, so the
    /// choosers' ticket writes do not evict it from the cores that read it.
    share: CachePadded<sync::AtomicU32>,
    /// Invocations chosen so far (wraps after 2^64, which does not disturb the split). Written
    /// by every `choose`.
    ticket: CachePadded<sync::AtomicU64>,
}

impl Splitter {
    /// A splitter sending `share` of invocations storage-side.
    pub fn new(share: f64) -> Splitter {
        Splitter {
            share: CachePadded(sync::AtomicU32::new(share_to_fixed(share))),
            ticket: CachePadded(sync::AtomicU64::new(0)),
        }
    }

    /// The side of the next invocation.
    pub fn choose(&self) -> Side {
        let t = self.ticket.fetch_add(1, Relaxed);
        if split(t, self.share.load(Relaxed)) {
            Side::Storage
        } else {
            Side::Compute
        }
    }

    /// The current share.
    pub fn share(&self) -> f64 {
        f64::from(self.share.load(Relaxed)) / f64::from(SHARE_ONE)
    }

    /// Sets the share, clamped to [0, 1] (NaN is 0).
    pub fn set_share(&self, share: f64) {
        self.share.store(share_to_fixed(share), Relaxed);
    }

    /// Tickets taken so far.
    pub fn tickets(&self) -> u64 {
        self.ticket.load(Relaxed)
    }
}

/// Counters of one function on one side.
#[derive(Debug, Default)]
pub struct SideCounters {
    invocations: StdAtomicU64,
    errors: StdAtomicU64,
    pushbacks: StdAtomicU64,
    wall_ns: StdAtomicU64,
    cpu_ns: StdAtomicU64,
    storage_cpu_ns: StdAtomicU64,
    queue_ns: StdAtomicU64,
    round_trips: StdAtomicU64,
    bytes: StdAtomicU64,
    keys_read: StdAtomicU64,
    bytes_read: StdAtomicU64,
    reads: StdAtomicU64,
}

impl SideCounters {
    fn add(&self, r: &Record) {
        self.invocations.fetch_add(1, Relaxed);
        self.errors.fetch_add(u64::from(r.error), Relaxed);
        self.pushbacks.fetch_add(u64::from(r.pushback), Relaxed);
        self.wall_ns.fetch_add(r.wall_ns, Relaxed);
        self.cpu_ns.fetch_add(r.cpu_ns, Relaxed);
        self.round_trips.fetch_add(r.round_trips, Relaxed);
        self.bytes.fetch_add(r.bytes, Relaxed);
        // Often zero: skip the read-modify-write then.
        for (counter, v) in [
            (&self.storage_cpu_ns, r.storage_cpu_ns),
            (&self.queue_ns, r.queue_ns),
            (&self.keys_read, r.keys_read),
            (&self.bytes_read, r.bytes_read),
            (&self.reads, r.reads),
        ] {
            if v != 0 {
                counter.fetch_add(v, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> SideSnapshot {
        SideSnapshot {
            invocations: self.invocations.load(Relaxed),
            errors: self.errors.load(Relaxed),
            pushbacks: self.pushbacks.load(Relaxed),
            wall_ns: self.wall_ns.load(Relaxed),
            cpu_ns: self.cpu_ns.load(Relaxed),
            storage_cpu_ns: self.storage_cpu_ns.load(Relaxed),
            queue_ns: self.queue_ns.load(Relaxed),
            round_trips: self.round_trips.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            keys_read: self.keys_read.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            reads: self.reads.load(Relaxed),
        }
    }
}

/// One function's slot. Each part that threads write is on cache lines of its own (see the
/// module docs); the reason, written once a window, takes the remaining 128 bytes.
#[derive(Debug)]
pub struct Slot {
    /// Written by every invocation that ends storage-side.
    storage: CachePadded<SideCounters>,
    /// Written by every invocation that ends compute-side.
    compute: CachePadded<SideCounters>,
    splitter: Splitter,
    /// A [`Reason`] packed by [`Reason::pack`]: one word, so it is never read torn.
    reason: StdAtomicU64,
}

impl Default for Slot {
    /// Share 1: like AutoLoc, a function starts storage-side, where one run reveals the keys and
    /// bytes it reads, so both sides can be estimated.
    fn default() -> Slot {
        Slot {
            storage: CachePadded::default(),
            compute: CachePadded::default(),
            splitter: Splitter::new(1.0),
            reason: StdAtomicU64::new(Reason::default().pack()),
        }
    }
}

impl Slot {
    /// The counters of `side`.
    pub fn snapshot(&self, side: Side) -> SideSnapshot {
        match side {
            Side::Storage => self.storage.snapshot(),
            Side::Compute => self.compute.snapshot(),
        }
    }

    /// The side of this function's next invocation.
    pub fn choose(&self) -> Side {
        self.splitter.choose()
    }

    /// The fraction of invocations sent storage-side.
    pub fn share(&self) -> f64 {
        self.splitter.share()
    }

    /// Why the share is what it is.
    pub fn reason(&self) -> Reason {
        Reason::unpack(self.reason.load(Relaxed))
    }
}

/// One function's row of [`Table::snapshot_all`] (`autoloc placement --json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionSnapshot {
    /// Index in the registry.
    pub index: usize,
    /// Function name.
    pub name: String,
    /// Fraction of invocations sent storage-side.
    pub share: f64,
    /// Why, as the controller last said.
    pub reason: String,
    /// Counters of invocations that ended storage-side.
    pub storage: SideSnapshot,
    /// Counters of invocations that ended compute-side.
    pub compute: SideSnapshot,
}

/// The table: one slot per function of the registry, plus the costs the controller plans with.
#[derive(Debug)]
pub struct Table {
    slots: Box<[Slot]>,
    /// [`Costs::rtt_ns`] as f64 bits.
    rtt_ns: StdAtomicU64,
    /// [`Costs::bandwidth`] as f64 bits.
    bandwidth: StdAtomicU64,
    /// Storage CPU busy with other work than functions, in cores, as f64 bits.
    background: StdAtomicU64,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// A table with room for every function a registry can hold, every share 1 and the default
    /// [`Costs`].
    pub fn new() -> Table {
        let costs = Costs::default();
        Table {
            slots: (0..Registry::CAPACITY).map(|_| Slot::default()).collect(),
            rtt_ns: StdAtomicU64::new(costs.rtt_ns.to_bits()),
            bandwidth: StdAtomicU64::new(costs.bandwidth.to_bits()),
            background: StdAtomicU64::new(0f64.to_bits()),
        }
    }

    /// Slots (= [`Registry::CAPACITY`]).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never: a table always has its slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds one invocation of function `index` that ended on `side`.
    pub fn record(&self, index: usize, side: Side, r: &Record) {
        let slot = self.slot(index);
        match side {
            Side::Storage => slot.storage.add(r),
            Side::Compute => slot.compute.add(r),
        }
    }

    /// The slot of function `index`.
    pub fn slot(&self, index: usize) -> &Slot {
        &self.slots[index.min(self.slots.len() - 1)]
    }

    /// The side the next invocation of function `index` runs on. Lock-free: one ticket
    /// `fetch_add` and one load.
    pub fn choose(&self, index: usize) -> Side {
        self.slot(index).choose()
    }

    /// Function `index`'s storage share.
    pub fn share(&self, index: usize) -> f64 {
        self.slot(index).share()
    }

    /// Sets function `index`'s storage share, clamped to [0, 1].
    pub fn set_share(&self, index: usize, share: f64) {
        self.slot(index).splitter.set_share(share);
    }

    /// Why function `index` has its share.
    pub fn reason(&self, index: usize) -> Reason {
        self.slot(index).reason()
    }

    /// Records why function `index` has its share.
    pub fn set_reason(&self, index: usize, reason: Reason) {
        self.slot(index).reason.store(reason.pack(), Relaxed);
    }

    /// The measured costs the controller plans with.
    pub fn costs(&self) -> Costs {
        Costs {
            rtt_ns: f64::from_bits(self.rtt_ns.load(Relaxed)),
            bandwidth: f64::from_bits(self.bandwidth.load(Relaxed)),
        }
    }

    /// Sets the measured costs (non-finite or non-positive values are ignored).
    pub fn set_costs(&self, costs: &Costs) {
        if costs.rtt_ns.is_finite() && costs.rtt_ns > 0.0 {
            self.rtt_ns.store(costs.rtt_ns.to_bits(), Relaxed);
        }
        if costs.bandwidth.is_finite() && costs.bandwidth > 0.0 {
            self.bandwidth.store(costs.bandwidth.to_bits(), Relaxed);
        }
    }

    /// Storage CPU busy with other work than function execution (plain GET/SET traffic, other
    /// clients), in cores; what the forecaster predicts.
    pub fn storage_background(&self) -> f64 {
        f64::from_bits(self.background.load(Relaxed))
    }

    /// Reports the storage CPU busy with other work than functions, in cores.
    pub fn set_storage_background(&self, cores: f64) {
        if cores.is_finite() && cores >= 0.0 {
            self.background.store(cores.to_bits(), Relaxed);
        }
    }

    /// One row per name, function `i` named `names[i]`.
    pub fn snapshot_all<S: AsRef<str>>(&self, names: &[S]) -> Vec<FunctionSnapshot> {
        names
            .iter()
            .take(self.slots.len())
            .enumerate()
            .map(|(index, name)| {
                let slot = &self.slots[index];
                FunctionSnapshot {
                    index,
                    name: name.as_ref().to_string(),
                    share: slot.share(),
                    reason: slot.reason().to_string(),
                    storage: slot.snapshot(Side::Storage),
                    compute: slot.snapshot(Side::Compute),
                }
            })
            .collect()
    }
}

impl fmt::Display for FunctionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} share {:>5.3}  storage {:>8}  compute {:>8}  {}",
            self.name, self.share, self.storage.invocations, self.compute.invocations, self.reason
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The parts threads write each start their own 128-byte block and fit in it, and the
    /// reason has a block of its own too: no two share a cache line or a prefetched pair.
    #[test]
    fn hot_fields_have_cache_lines_of_their_own() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Slot>(), 128);
        assert_eq!(size_of::<Slot>(), 640);
        assert_eq!(size_of::<CachePadded<SideCounters>>(), 128);
        let splitter = offset_of!(Slot, splitter);
        let hot = [
            offset_of!(Slot, storage),
            offset_of!(Slot, compute),
            splitter + offset_of!(Splitter, share),
            splitter + offset_of!(Splitter, ticket),
        ];
        assert!(hot.iter().all(|o| o % 128 == 0), "{hot:?}");
        let mut blocks: Vec<usize> = hot.iter().map(|o| o / 128).collect();
        blocks.push(offset_of!(Slot, reason) / 128);
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(blocks.len(), 5, "{hot:?}");
    }

    #[test]
    fn concurrent_records_all_count() {
        let t = Arc::new(Table::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        t.record(
                            1,
                            Side::Compute,
                            &Record {
                                round_trips: 2,
                                bytes: 10,
                                ..Record::default()
                            },
                        );
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|h| h.join().unwrap());
        let s = t.slot(1).snapshot(Side::Compute);
        assert_eq!(
            (s.invocations, s.round_trips, s.bytes),
            (40_000, 80_000, 400_000)
        );
        assert_eq!(t.slot(1).snapshot(Side::Storage), SideSnapshot::default());
    }

    fn storage_count(s: &Splitter, n: usize) -> usize {
        (0..n).filter(|_| s.choose() == Side::Storage).count()
    }

    #[test]
    fn split_is_exact_per_window() {
        let s = Splitter::new(0.3);
        for _ in 0..1000 {
            assert_eq!(storage_count(&s, 10), 3);
        }
        let s = Splitter::new(0.25);
        for _ in 0..100 {
            assert_eq!(storage_count(&s, 4), 1);
        }
        // Any run of n consecutive tickets: floor or ceil of n * share.
        let s = Splitter::new(0.123_457);
        let _ = storage_count(&s, 17);
        let c = storage_count(&s, 1000) as f64;
        assert!((c - 123.457).abs() < 1.0, "{c}");
    }

    #[test]
    fn extreme_shares() {
        let s = Splitter::new(1.0);
        assert_eq!(storage_count(&s, 1000), 1000);
        s.set_share(0.0);
        assert_eq!(storage_count(&s, 1000), 0);
        s.set_share(7.0);
        assert_eq!(s.share(), 1.0);
        s.set_share(-1.0);
        assert_eq!(s.share(), 0.0);
        s.set_share(f64::NAN);
        assert_eq!(s.share(), 0.0);
        // The split is periodic, so a wrapped ticket changes nothing.
        assert!(split(u64::MAX, SHARE_ONE));
        assert!(!split(u64::MAX, 0));
    }

    #[test]
    fn reason_and_costs_round_trip() {
        let t = Table::new();
        assert_eq!(t.share(3), 1.0);
        t.set_share(3, 0.4);
        assert_eq!(t.share(3), 0.4);
        let r = Reason::gradient(0.05);
        t.set_reason(3, r);
        assert_eq!(t.reason(3).to_string(), "gradient: +0.05");
        t.set_costs(&Costs {
            rtt_ns: 7_500.0,
            bandwidth: f64::NAN,
        });
        assert_eq!(t.costs().rtt_ns, 7_500.0);
        assert_eq!(t.costs().bandwidth, Costs::default().bandwidth);
        t.set_storage_background(0.5);
        assert_eq!(t.storage_background(), 0.5);
    }

    #[test]
    fn snapshot_all_names_rows_and_serializes() {
        let t = Table::new();
        t.record(
            1,
            Side::Storage,
            &Record {
                storage_cpu_ns: 5,
                queue_ns: 7,
                ..Record::default()
            },
        );
        t.set_share(1, 0.5);
        let rows = t.snapshot_all(&["khop", "digest"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].name, "digest");
        assert_eq!(rows[1].share, 0.5);
        assert_eq!(rows[1].storage.storage_cpu_ns, 5);
        assert_eq!(rows[1].storage.queue_ns, 7);
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[1]["storage"]["queue_ns"], 7);
        assert_eq!(json[0]["reason"], "no samples yet");
    }

    /// Threads record, choose and set shares at once: no count is lost, and while a share
    /// holds, the split matches it (within 1 per 1000, in fact within 1).
    #[test]
    fn concurrent_choose_record_set_share() {
        const THREADS: usize = 4;
        const N: usize = 25_000;
        let t = Arc::new(Table::new());
        t.set_share(2, 0.3);
        let storage = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|s| {
            for i in 0..THREADS {
                let (t, storage) = (&t, &storage);
                s.spawn(move || {
                    let mut mine = 0;
                    for k in 0..N {
                        // Slot 2: fixed share, counted.
                        if t.choose(2) == Side::Storage {
                            mine += 1;
                        }
                        // Slot 4: share moving under the choosers' feet.
                        let side = t.choose(4);
                        t.record(
                            4,
                            side,
                            &Record {
                                wall_ns: 3,
                                storage_cpu_ns: 2,
                                ..Record::default()
                            },
                        );
                        if i == 0 && k % 100 == 0 {
                            t.set_share(4, (k % 1000) as f64 / 1000.0);
                        }
                    }
                    storage.fetch_add(mine, Relaxed);
                });
            }
        });
        let total = THREADS * N;
        let got = storage.load(Relaxed);
        assert_eq!(got, total * 3 / 10, "storage count under share 0.3");
        let (s, c) = (
            t.slot(4).snapshot(Side::Storage),
            t.slot(4).snapshot(Side::Compute),
        );
        assert_eq!(s.invocations + c.invocations, total as u64);
        assert_eq!(s.wall_ns + c.wall_ns, 3 * total as u64);
        assert_eq!(s.storage_cpu_ns + c.storage_cpu_ns, 2 * total as u64);
        assert_eq!(t.slot(4).splitter.tickets(), total as u64);
    }
}

/// Loom explores every interleaving of the share/ticket logic of one slot:
/// `RUSTFLAGS="--cfg loom" cargo test -p autoloc --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two choosers under a fixed share of 0.5 take tickets 0..4 between them, whichever
    /// interleaving: exactly two go storage-side.
    #[test]
    fn loom_tickets_split_exactly() {
        loom::model(|| {
            let s = Arc::new(Splitter::new(0.5));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let s = s.clone();
                    thread::spawn(move || (0..2).filter(|_| s.choose() == Side::Storage).count())
                })
                .collect();
            let n: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(n, 2);
            assert_eq!(s.tickets(), 4);
        });
    }

    /// A share written while a chooser runs is seen whole: the chooser's invocations split
    /// under the old share, the new one, or one then the other, never anything else.
    #[test]
    fn loom_set_share_races_choose() {
        loom::model(|| {
            let s = Arc::new(Splitter::new(1.0));
            let chooser = {
                let s = s.clone();
                thread::spawn(move || [s.choose(), s.choose()])
            };
            s.set_share(0.0);
            let sides = chooser.join().unwrap();
            // Storage, then compute is allowed; compute then storage is not (the share only
            // goes down, and loads of one atomic never go back in its modification order).
            assert_ne!(sides, [Side::Compute, Side::Storage]);
            assert_eq!(s.share(), 0.0);
            assert_eq!(s.tickets(), 2);
        });
    }
}
