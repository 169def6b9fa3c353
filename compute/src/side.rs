//! The two sides an invocation runs on, and what one invocation, or a window of them, cost on
//! one side: the types the table ([`crate::table`]), the runtime ([`crate::runtime`]) and the
//! placement model share, at the bottom of the crate.

use std::fmt;

/// The side an invocation finally ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Inside Redis.
    Storage,
    /// On the compute node.
    Compute,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Storage => "storage",
            Side::Compute => "compute",
        })
    }
}

/// A copy of one side's counters at one moment (or, after [`SideSnapshot::since`], over a
/// window).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SideSnapshot {
    /// Invocations that ended on this side (storage: pushed-back ones included).
    pub invocations: u64,
    /// Of those, failed (pushbacks included).
    pub errors: u64,
    /// Invocations sent storage-side that were pushed back (counted on the storage side).
    pub pushbacks: u64,
    /// Wall time seen by the caller, ns.
    pub wall_ns: u64,
    /// Compute node CPU time, ns.
    pub cpu_ns: u64,
    /// Storage CPU time, ns, as the storage side reported it: running the function (storage
    /// side) or serving its reads (compute side).
    pub storage_cpu_ns: u64,
    /// Time requests waited in storage-side queues before being served, ns.
    pub queue_ns: u64,
    /// Round trips to Redis.
    pub round_trips: u64,
    /// Bytes sent and received.
    pub bytes: u64,
    /// Keys the function read.
    pub keys_read: u64,
    /// Value bytes the function read.
    pub bytes_read: u64,
    /// Store accesses (each `Store::read` or `Store::write`): the round trips the function takes
    /// compute-side; 0 where not reported.
    pub reads: u64,
}

impl SideSnapshot {
    /// The counts from `earlier` to `self` (saturating, so a reset table gives zeros).
    pub fn since(&self, earlier: &SideSnapshot) -> SideSnapshot {
        SideSnapshot {
            invocations: self.invocations.saturating_sub(earlier.invocations),
            errors: self.errors.saturating_sub(earlier.errors),
            pushbacks: self.pushbacks.saturating_sub(earlier.pushbacks),
            wall_ns: self.wall_ns.saturating_sub(earlier.wall_ns),
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            storage_cpu_ns: self.storage_cpu_ns.saturating_sub(earlier.storage_cpu_ns),
            queue_ns: self.queue_ns.saturating_sub(earlier.queue_ns),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            keys_read: self.keys_read.saturating_sub(earlier.keys_read),
            bytes_read: self.bytes_read.saturating_sub(earlier.bytes_read),
            reads: self.reads.saturating_sub(earlier.reads),
        }
    }

    /// Adds the counts of `other` (two windows of the same side, back to back).
    pub fn merge(&mut self, other: &SideSnapshot) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.pushbacks += other.pushbacks;
        self.wall_ns += other.wall_ns;
        self.cpu_ns += other.cpu_ns;
        self.storage_cpu_ns += other.storage_cpu_ns;
        self.queue_ns += other.queue_ns;
        self.round_trips += other.round_trips;
        self.bytes += other.bytes;
        self.keys_read += other.keys_read;
        self.bytes_read += other.bytes_read;
        self.reads += other.reads;
    }

    /// Adds `n` invocations that each cost `r` (the simulator and tests build windows so).
    pub fn add(&mut self, n: u64, r: &Record) {
        self.invocations += n;
        self.errors += n * u64::from(r.error);
        self.pushbacks += n * u64::from(r.pushback);
        self.wall_ns += n * r.wall_ns;
        self.cpu_ns += n * r.cpu_ns;
        self.storage_cpu_ns += n * r.storage_cpu_ns;
        self.queue_ns += n * r.queue_ns;
        self.round_trips += n * r.round_trips;
        self.bytes += n * r.bytes;
        self.keys_read += n * r.keys_read;
        self.bytes_read += n * r.bytes_read;
        self.reads += n * r.reads;
    }
}

/// What one invocation adds to its side. Fields a transport cannot measure stay 0.
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
    /// Storage CPU ns the storage side reported in its response(s).
    pub storage_cpu_ns: u64,
    /// Storage-side queueing ns reported in the response(s).
    pub queue_ns: u64,
    /// Keys read (storage side reports it; compute side knows it).
    pub keys_read: u64,
    /// Value bytes read.
    pub bytes_read: u64,
    /// Store accesses (`Store::read`/`Store::write` calls) the function made.
    pub reads: u64,
}
