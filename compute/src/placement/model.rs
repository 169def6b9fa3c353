//! The cost model: what one invocation of a function costs on each side, estimated from its
//! counters, including the side it has not run on yet.

use crate::side::SideSnapshot;

/// Measured costs of the transport in use. The Runtime sets them in the table
/// ([`crate::table::Table::set_costs`]) and updates them as it measures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// One round trip to storage for a minimal request, ns (PING over the data plane, or the
    /// wall time of a storage-side call less its reported storage CPU and queueing).
    pub rtt_ns: f64,
    /// Bytes per second the transport moves between compute node and storage.
    pub bandwidth: f64,
}

impl Default for Costs {
    /// Loopback RESP on a small VM (see DESIGN.md): 50 us a round trip, 1 GB/s.
    fn default() -> Costs {
        Costs {
            rtt_ns: 50_000.0,
            bandwidth: 1e9,
        }
    }
}

impl Costs {
    /// Folds one RTT sample into `rtt_ns` with weight `w` in (0, 1] (an EWMA).
    pub fn observe_rtt(&mut self, sample_ns: f64, w: f64) {
        if sample_ns.is_finite() && sample_ns > 0.0 {
            let w = w.clamp(f64::MIN_POSITIVE, 1.0);
            self.rtt_ns = (1.0 - w) * self.rtt_ns + w * sample_ns;
        }
    }

    /// Ns to move `bytes`.
    pub fn transfer_ns(&self, bytes: f64) -> f64 {
        bytes / self.bandwidth.max(1.0) * 1e9
    }
}

/// Counters of one side as floats, decayed so that old epochs weigh less (means are ratios of
/// two decayed sums, so they follow a shift of the workload within a few epochs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Acc {
    /// Invocations.
    pub invocations: f64,
    /// Failures.
    pub errors: f64,
    /// Pushbacks.
    pub pushbacks: f64,
    /// Wall ns.
    pub wall_ns: f64,
    /// Compute CPU ns.
    pub cpu_ns: f64,
    /// Storage CPU ns.
    pub storage_cpu_ns: f64,
    /// Storage queueing ns.
    pub queue_ns: f64,
    /// Round trips.
    pub round_trips: f64,
    /// Bytes moved.
    pub bytes: f64,
    /// Keys read.
    pub keys_read: f64,
    /// Value bytes read.
    pub bytes_read: f64,
    /// Store accesses.
    pub reads: f64,
}

impl Acc {
    /// Multiplies every sum by `k`; a side left with less than half an invocation is forgotten,
    /// so a side a function has left long ago stops speaking for it.
    pub fn decay(&mut self, k: f64) {
        if self.invocations * k < 0.5 {
            *self = Acc::default();
            return;
        }
        for v in self.fields_mut() {
            *v *= k;
        }
    }

    /// Adds a window.
    pub fn add(&mut self, s: &SideSnapshot) {
        let vals = [
            s.invocations,
            s.errors,
            s.pushbacks,
            s.wall_ns,
            s.cpu_ns,
            s.storage_cpu_ns,
            s.queue_ns,
            s.round_trips,
            s.bytes,
            s.keys_read,
            s.bytes_read,
            s.reads,
        ];
        for (acc, v) in self.fields_mut().into_iter().zip(vals) {
            *acc += v as f64;
        }
    }

    fn fields_mut(&mut self) -> [&mut f64; 12] {
        [
            &mut self.invocations,
            &mut self.errors,
            &mut self.pushbacks,
            &mut self.wall_ns,
            &mut self.cpu_ns,
            &mut self.storage_cpu_ns,
            &mut self.queue_ns,
            &mut self.round_trips,
            &mut self.bytes,
            &mut self.keys_read,
            &mut self.bytes_read,
            &mut self.reads,
        ]
    }

    /// `sum / invocations`, 0 with no invocations.
    pub fn per_call(&self, sum: f64) -> f64 {
        if self.invocations > 0.0 {
            sum / self.invocations
        } else {
            0.0
        }
    }
}

/// Per-invocation costs of one function on each side; where a side has no samples, estimated
/// from the other.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    /// Storage-side samples behind it (decayed).
    pub storage_samples: f64,
    /// Compute-side samples behind it (decayed).
    pub compute_samples: f64,
    /// Compute side: round trips per invocation.
    pub round_trips: f64,
    /// Compute side: bytes moved per invocation.
    pub bytes: f64,
    /// Compute side: compute CPU ns per invocation.
    pub compute_cpu_ns: f64,
    /// Compute side: storage CPU ns spent serving its reads.
    pub read_cpu_ns: f64,
    /// Compute side: storage queueing ns of its reads.
    pub read_queue_ns: f64,
    /// Storage side: storage CPU ns per invocation.
    pub storage_cpu_ns: f64,
    /// Storage side: queueing ns per invocation.
    pub queue_ns: f64,
    /// Storage side: bytes of request and reply.
    pub storage_bytes: f64,
    /// Storage side: fraction of invocations pushed back.
    pub pushback_rate: f64,
    /// Storage side: compute CPU ns a call costs its caller (sending it, reading the reply).
    pub call_cpu_ns: f64,
}

/// Bytes of framing a compute-side read adds per key (RESP bulk header and key name).
const PER_KEY_BYTES: f64 = 32.0;
/// Storage CPU to serve one read request, ns, where no reply reports it (`bench-dataplane`: the
/// module's path is about 0.9 us a request with its lock, more with the ring's wake-ups).
pub const READ_CPU_NS: f64 = 2_000.0;
/// Storage CPU to look up and copy out one key of a read, ns, where no reply reports it
/// (`bench/results/bench-dataplane.txt`: a MultiGet of 16 keys of 64 B costs 154 ns per key
/// more than a GET; this was 300 ns, from an older build, and priced serving aggregate's 64 keys
/// above running it inside, so its reads could never free storage CPU).
pub const READ_KEY_CPU_NS: f64 = 150.0;

impl Estimate {
    /// The estimate from the decayed counters of each side; `None` with no samples at all.
    ///
    /// A storage-side run reveals the keys, bytes and store accesses it read, which are what a
    /// compute-side run would fetch; its storage CPU stands in for the compute CPU. A
    /// compute-side run's compute CPU stands in for the storage CPU it would take inside.
    pub fn from_sides(storage: &Acc, compute: &Acc) -> Option<Estimate> {
        let (s, c) = (storage, compute);
        let (has_s, has_c) = (s.invocations > 0.0, c.invocations > 0.0);
        if !has_s && !has_c {
            return None;
        }
        let mut e = Estimate {
            storage_samples: s.invocations,
            compute_samples: c.invocations,
            ..Estimate::default()
        };
        if has_s {
            e.storage_cpu_ns = s.per_call(s.storage_cpu_ns);
            e.queue_ns = s.per_call(s.queue_ns);
            e.storage_bytes = s.per_call(s.bytes);
            e.pushback_rate = s.per_call(s.pushbacks);
            e.call_cpu_ns = s.per_call(s.cpu_ns);
        }
        if has_c {
            e.round_trips = c.per_call(c.round_trips).max(1.0);
            e.bytes = c.per_call(c.bytes);
            e.compute_cpu_ns = c.per_call(c.cpu_ns);
            e.read_cpu_ns = c.per_call(c.storage_cpu_ns);
            if e.read_cpu_ns <= 0.0 {
                // The data plane's read replies carry no CPU figure (timing each read would cost
                // more than many reads do): model serving them from the requests and keys.
                e.read_cpu_ns =
                    c.per_call(c.reads) * READ_CPU_NS + c.per_call(c.keys_read) * READ_KEY_CPU_NS;
            }
            e.read_queue_ns = c.per_call(c.queue_ns);
        } else {
            let reads = s.per_call(s.reads);
            let keys = s.per_call(s.keys_read);
            e.round_trips = if reads > 0.0 { reads } else { keys }.max(1.0);
            e.bytes = s.per_call(s.bytes_read) + keys * PER_KEY_BYTES;
            e.compute_cpu_ns = e.storage_cpu_ns;
            // Serving the reads costs storage CPU per request and per key, but no more than
            // reading the same keys inside did (a function that reads thousands of keys frees
            // little storage CPU by running outside).
            e.read_cpu_ns =
                (e.round_trips * READ_CPU_NS + keys * READ_KEY_CPU_NS).min(e.storage_cpu_ns);
            // Each round trip would wait in the same storage queue as a call does.
            e.read_queue_ns = e.round_trips * e.queue_ns;
        }
        if !has_s {
            e.storage_cpu_ns = e.compute_cpu_ns;
            e.queue_ns = e.read_queue_ns / e.round_trips;
        }
        Some(e)
    }

    /// Round trips a storage-side run saves.
    pub fn round_trips_saved(&self) -> f64 {
        (self.round_trips - 1.0).max(0.0)
    }

    /// Storage CPU ns per round trip saved: the order in which a saturated storage sheds
    /// functions (highest first). Infinite when nothing is saved.
    pub fn cpu_per_round_trip_saved(&self) -> f64 {
        let saved = self.round_trips_saved();
        if saved > 0.0 {
            self.storage_cpu_ns / saved
        } else {
            f64::INFINITY
        }
    }

    /// AutoLoc's modelled data-transfer cost: bytes moved x per-byte cost + round trips x RTT.
    pub fn data_cost_ns(&self, costs: &Costs) -> f64 {
        self.round_trips * costs.rtt_ns + costs.transfer_ns(self.bytes)
    }

    /// Compute-side cost: round trips x RTT + bytes / bandwidth + compute CPU (+ its reads'
    /// storage queueing).
    pub fn compute_cost_ns(&self, costs: &Costs) -> f64 {
        self.data_cost_ns(costs) + self.compute_cpu_ns + self.read_queue_ns
    }

    /// Storage-side cost: one round trip + storage CPU x `cpu_price` + queueing; a pushed-back
    /// fraction pays the compute-side cost on top.
    pub fn storage_cost_ns(&self, costs: &Costs, cpu_price: f64) -> f64 {
        costs.rtt_ns
            + costs.transfer_ns(self.storage_bytes)
            + cpu_price * self.storage_cpu_ns
            + self.queue_ns
            + self.pushback_rate * self.compute_cost_ns(costs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(n: u64, f: impl Fn(&mut SideSnapshot)) -> Acc {
        let mut s = SideSnapshot {
            invocations: n,
            ..SideSnapshot::default()
        };
        f(&mut s);
        let mut a = Acc::default();
        a.add(&s);
        a
    }

    #[test]
    fn storage_only_estimates_compute_side_from_reads() {
        let s = acc(10, |s| {
            s.storage_cpu_ns = 10 * 20_000;
            s.reads = 10 * 12;
            s.keys_read = 10 * 60;
            s.bytes_read = 10 * 2_000;
            s.queue_ns = 10 * 1_000;
        });
        let e = Estimate::from_sides(&s, &Acc::default()).unwrap();
        assert_eq!(e.round_trips, 12.0);
        assert_eq!(e.compute_cpu_ns, 20_000.0);
        assert_eq!(e.bytes, 2_000.0 + 60.0 * PER_KEY_BYTES);
        assert_eq!(e.round_trips_saved(), 11.0);
        let c = Costs::default();
        assert!(e.compute_cost_ns(&c) > e.storage_cost_ns(&c, 2.0));
    }

    #[test]
    fn compute_only_estimates_storage_cpu_from_compute_cpu() {
        let c = acc(4, |s| {
            s.cpu_ns = 4 * 5_000_000;
            s.round_trips = 4;
            s.bytes = 4 * 65_536;
        });
        let e = Estimate::from_sides(&Acc::default(), &c).unwrap();
        assert_eq!(e.storage_cpu_ns, 5_000_000.0);
        assert!(e.cpu_per_round_trip_saved().is_infinite());
        assert!(Estimate::from_sides(&Acc::default(), &Acc::default()).is_none());
    }

    #[test]
    fn rtt_ewma_ignores_garbage() {
        let mut c = Costs::default();
        c.observe_rtt(10_000.0, 0.5);
        assert_eq!(c.rtt_ns, 30_000.0);
        c.observe_rtt(f64::NAN, 0.5);
        c.observe_rtt(-1.0, 0.5);
        assert_eq!(c.rtt_ns, 30_000.0);
    }
}
