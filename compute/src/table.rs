//! The per-function table of atomic counters that every invocation records into.
//!
//! One slot per registered function, indexed like the registry, each with counters per side.
//! Recording is a handful of relaxed `fetch_add`s: no lock on the invocation path. Readers take
//! a [`SideSnapshot`] and difference two of them to get a window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use autoloc_functions::Registry;

use crate::Side;

/// Counters of one function on one side.
#[derive(Debug, Default)]
pub struct SideCounters {
    invocations: AtomicU64,
    errors: AtomicU64,
    pushbacks: AtomicU64,
    wall_ns: AtomicU64,
    cpu_ns: AtomicU64,
    round_trips: AtomicU64,
    bytes: AtomicU64,
}

/// A copy of one side's counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SideSnapshot {
    /// Invocations that ended on this side.
    pub invocations: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Invocations sent storage-side that were pushed back (counted on the storage side).
    pub pushbacks: u64,
    /// Wall time seen by the caller, ns.
    pub wall_ns: u64,
    /// Compute node CPU time, ns.
    pub cpu_ns: u64,
    /// Round trips to Redis.
    pub round_trips: u64,
    /// Bytes sent and received.
    pub bytes: u64,
}

/// What one invocation adds to its side.
#[derive(Debug, Default, Clone, Copy)]
pub struct Record {
    /// It failed.
    pub error: bool,
    /// It was pushed back by the storage side.
    pub pushback: bool,
    /// Wall time, ns.
    pub wall_ns: u64,
    /// Compute CPU time, ns.
    pub cpu_ns: u64,
    /// Round trips.
    pub round_trips: u64,
    /// Bytes moved.
    pub bytes: u64,
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
    }

    fn snapshot(&self) -> SideSnapshot {
        SideSnapshot {
            invocations: self.invocations.load(Relaxed),
            errors: self.errors.load(Relaxed),
            pushbacks: self.pushbacks.load(Relaxed),
            wall_ns: self.wall_ns.load(Relaxed),
            cpu_ns: self.cpu_ns.load(Relaxed),
            round_trips: self.round_trips.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

/// One function's slot.
#[derive(Debug, Default)]
pub struct Slot {
    storage: SideCounters,
    compute: SideCounters,
}

impl Slot {
    /// The counters of `side`.
    pub fn snapshot(&self, side: Side) -> SideSnapshot {
        match side {
            Side::Storage => self.storage.snapshot(),
            Side::Compute => self.compute.snapshot(),
        }
    }
}

/// The table: one slot per function of the registry.
#[derive(Debug)]
pub struct Table {
    slots: Box<[Slot]>,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    /// A table with room for every function a registry can hold.
    pub fn new() -> Table {
        Table {
            slots: (0..Registry::CAPACITY).map(|_| Slot::default()).collect(),
        }
    }

    /// Adds one invocation of function `index` that ended on `side`.
    pub fn record(&self, index: usize, side: Side, r: &Record) {
        let slot = &self.slots[index.min(self.slots.len() - 1)];
        match side {
            Side::Storage => slot.storage.add(r),
            Side::Compute => slot.compute.add(r),
        }
    }

    /// The slot of function `index`.
    pub fn slot(&self, index: usize) -> &Slot {
        &self.slots[index.min(self.slots.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
}
