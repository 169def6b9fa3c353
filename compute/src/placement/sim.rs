//! A small closed-loop throughput model of one storage and its compute clients, to test
//! placement policies without Redis (and for the bench to sanity-check them).
//!
//! `clients` threads each run one invocation after another, picking function `f` with
//! probability `weight[f]`. A storage-side call takes one round trip, the function's storage CPU
//! and the storage queue's wait; a compute-side run takes `round_trips` round trips (each paying
//! the queue's wait and a read's storage CPU), the transfer of its bytes and its compute CPU.
//! Storage has `storage_cores` cores; its wait per visit is `rho / (1 - rho)` x mean service / cores
//! (an M/M/c-like curve that grows without bound as utilisation `rho` nears 1); compute cores
//! likewise. Throughput X solves `X x latency(X) = clients` (Little's law).

use crate::table::{Record, SideSnapshot};

use super::model::Costs;
use super::window::{FnWindow, Window};

/// What one function costs.
#[derive(Debug, Clone, PartialEq)]
pub struct FnProfile {
    /// Name.
    pub name: String,
    /// Its fraction of invocations (normalised over all functions).
    pub weight: f64,
    /// Storage CPU of a storage-side run, ns.
    pub storage_cpu_ns: f64,
    /// Compute CPU of a compute-side run, ns.
    pub compute_cpu_ns: f64,
    /// Round trips of a compute-side run (store accesses).
    pub round_trips: f64,
    /// Bytes a compute-side run moves.
    pub bytes: f64,
    /// Storage CPU to serve one compute-side round trip, ns.
    pub read_cpu_ns: f64,
    /// Keys read per run.
    pub keys: f64,
}

impl FnProfile {
    /// A profile with `weight` and the given costs.
    pub fn new(name: &str, weight: f64, cpu_ns: f64, round_trips: f64, bytes: f64) -> FnProfile {
        FnProfile {
            name: name.to_string(),
            weight,
            storage_cpu_ns: cpu_ns,
            compute_cpu_ns: cpu_ns,
            round_trips,
            bytes,
            read_cpu_ns: 3_000.0,
            keys: round_trips,
        }
    }

    /// khop-like: 12 round trips, 2 KB, 20 us CPU.
    pub fn khop(weight: f64) -> FnProfile {
        FnProfile {
            keys: 60.0,
            ..FnProfile::new("khop", weight, 20_000.0, 12.0, 2_048.0)
        }
    }

    /// digest-like: 1 round trip, 64 KB, 5 ms CPU.
    pub fn digest(weight: f64) -> FnProfile {
        FnProfile {
            read_cpu_ns: 5_000.0,
            ..FnProfile::new("digest", weight, 5_000_000.0, 1.0, 65_536.0)
        }
    }

    /// pagerank-like: 4 round trips, 8 KB, 300 us CPU.
    pub fn pagerank(weight: f64) -> FnProfile {
        FnProfile {
            keys: 100.0,
            read_cpu_ns: 4_000.0,
            ..FnProfile::new("pagerank", weight, 300_000.0, 4.0, 8_192.0)
        }
    }

    /// get-like: 1 round trip, 100 B, 1 us CPU.
    pub fn get(weight: f64) -> FnProfile {
        FnProfile {
            read_cpu_ns: 1_000.0,
            ..FnProfile::new("get", weight, 1_000.0, 1.0, 100.0)
        }
    }
}

/// Bytes of a storage-side call's request and reply.
const CALL_BYTES: f64 = 200.0;

/// The modelled system.
#[derive(Debug, Clone, PartialEq)]
pub struct System {
    /// Closed-loop client threads.
    pub clients: f64,
    /// Storage cores.
    pub storage_cores: f64,
    /// Compute cores.
    pub compute_cores: f64,
    /// Round trip, ns.
    pub rtt_ns: f64,
    /// Bytes per second.
    pub bandwidth: f64,
    /// The functions.
    pub functions: Vec<FnProfile>,
}

/// The steady state of one assignment of shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Invocations per second.
    pub throughput: f64,
    /// Storage CPU utilisation.
    pub storage_util: f64,
    /// Compute CPU utilisation.
    pub compute_util: f64,
    /// Mean latency, ns.
    pub latency_ns: f64,
    /// Wait per storage visit, ns.
    pub storage_wait_ns: f64,
}

impl System {
    /// The costs a Runtime would measure.
    pub fn costs(&self) -> Costs {
        Costs {
            rtt_ns: self.rtt_ns,
            bandwidth: self.bandwidth,
        }
    }

    fn mix(&self) -> Vec<f64> {
        let total: f64 = self.functions.iter().map(|f| f.weight.max(0.0)).sum();
        self.functions
            .iter()
            .map(|f| f.weight.max(0.0) / total.max(1e-12))
            .collect()
    }

    fn transfer(&self, bytes: f64) -> f64 {
        bytes / self.bandwidth.max(1.0) * 1e9
    }

    /// Per invocation: storage CPU ns, storage visits, compute CPU ns, and latency without waits
    /// as (fixed ns, storage visits that wait, compute runs that wait).
    fn demands(&self, shares: &[f64]) -> [f64; 6] {
        let mut d = [0.0; 6];
        for ((f, m), s) in self.functions.iter().zip(self.mix()).zip(shares) {
            let (s, c) = (s.clamp(0.0, 1.0), 1.0 - s.clamp(0.0, 1.0));
            d[0] += m * (s * f.storage_cpu_ns + c * f.round_trips * f.read_cpu_ns);
            d[1] += m * (s + c * f.round_trips);
            d[2] += m * c * f.compute_cpu_ns;
            d[3] += m
                * (s * (self.rtt_ns + self.transfer(CALL_BYTES) + f.storage_cpu_ns)
                    + c * (f.round_trips * (self.rtt_ns + f.read_cpu_ns)
                        + self.transfer(f.bytes)
                        + f.compute_cpu_ns));
            d[4] += m * (s + c * f.round_trips);
            d[5] += m * c;
        }
        d
    }

    /// Wait per visit of a queue with `cores` at utilisation `rho`, mean service `service` ns.
    fn wait(rho: f64, service: f64, cores: f64) -> f64 {
        if rho >= 1.0 {
            f64::INFINITY
        } else {
            rho / (1.0 - rho) * service / cores.max(1e-9)
        }
    }

    /// The steady state under `shares` (one per function, storage fraction).
    pub fn outcome(&self, shares: &[f64]) -> Outcome {
        let [ds, visits, dc, fixed, waits_s, waits_c] = self.demands(shares);
        // x is in invocations per ns: utilisation = x * demand (ns) / cores.
        let (cs, cc) = (self.storage_cores, self.compute_cores);
        let service_s = if visits > 0.0 { ds / visits } else { 0.0 };
        let service_c = if waits_c > 0.0 { dc / waits_c } else { 0.0 };
        let at = |x: f64| {
            let (rs, rc) = (x * ds / cs, x * dc / cc);
            let (ws, wc) = (
                Self::wait(rs, service_s, self.storage_cores),
                Self::wait(rc, service_c, self.compute_cores),
            );
            (fixed + waits_s * ws + waits_c * wc, rs, rc, ws)
        };
        let mut hi = self.clients / fixed.max(1.0);
        if ds > 0.0 {
            hi = hi.min(cs / ds);
        }
        if dc > 0.0 {
            hi = hi.min(cc / dc);
        }
        let mut lo = 0.0;
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid * at(mid).0 < self.clients {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (latency_ns, storage_util, compute_util, storage_wait_ns) = at(lo);
        Outcome {
            throughput: lo * 1e9,
            storage_util,
            compute_util,
            latency_ns,
            storage_wait_ns,
        }
    }

    /// The counters an epoch of `seconds` under `shares` produces.
    pub fn window(&self, shares: &[f64], epoch: u64, seconds: f64) -> Window {
        let o = self.outcome(shares);
        let functions = self
            .functions
            .iter()
            .zip(self.mix())
            .zip(shares)
            .map(|((f, m), &s)| {
                let s = s.clamp(0.0, 1.0);
                let arrivals = o.throughput * m * seconds;
                let n_s = (arrivals * s).round() as u64;
                let n_c = (arrivals * (1.0 - s)).round() as u64;
                let w = o.storage_wait_ns;
                let mut storage = SideSnapshot::default();
                storage.add(
                    n_s,
                    &Record {
                        wall_ns: (self.rtt_ns + f.storage_cpu_ns + w) as u64,
                        cpu_ns: 1_000,
                        round_trips: 1,
                        bytes: CALL_BYTES as u64,
                        storage_cpu_ns: f.storage_cpu_ns as u64,
                        queue_ns: w as u64,
                        keys_read: f.keys as u64,
                        bytes_read: f.bytes as u64,
                        reads: f.round_trips as u64,
                        ..Record::default()
                    },
                );
                let mut compute = SideSnapshot::default();
                compute.add(
                    n_c,
                    &Record {
                        wall_ns: (f.round_trips * (self.rtt_ns + w + f.read_cpu_ns)
                            + self.transfer(f.bytes)
                            + f.compute_cpu_ns) as u64,
                        cpu_ns: f.compute_cpu_ns as u64,
                        round_trips: f.round_trips as u64,
                        bytes: f.bytes as u64,
                        storage_cpu_ns: (f.round_trips * f.read_cpu_ns) as u64,
                        queue_ns: (f.round_trips * w) as u64,
                        keys_read: f.keys as u64,
                        bytes_read: f.bytes as u64,
                        reads: f.round_trips as u64,
                        ..Record::default()
                    },
                );
                FnWindow {
                    name: f.name.clone(),
                    share: s,
                    storage,
                    compute,
                }
            })
            .collect();
        Window {
            epoch,
            seconds,
            storage_cores: self.storage_cores,
            allowance: 0.85,
            compute_cores: self.compute_cores,
            compute_util: o.compute_util,
            functions,
        }
    }

    /// The best fixed assignment on a grid of `steps + 1` shares per function (brute force),
    /// and its throughput.
    pub fn best_fixed(&self, steps: usize) -> (Vec<f64>, f64) {
        let n = self.functions.len();
        let steps = steps.max(1);
        let mut idx = vec![0usize; n];
        let mut best = (vec![0.0; n], f64::NEG_INFINITY);
        loop {
            let shares: Vec<f64> = idx.iter().map(|&i| i as f64 / steps as f64).collect();
            let x = self.outcome(&shares).throughput;
            if x > best.1 {
                best = (shares, x);
            }
            // Next grid point, odometer style.
            let mut k = 0;
            loop {
                if k == n {
                    return best;
                }
                idx[k] += 1;
                if idx[k] <= steps {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system() -> System {
        System {
            clients: 32.0,
            storage_cores: 2.0,
            compute_cores: 32.0,
            rtt_ns: 50_000.0,
            bandwidth: 1e9,
            functions: vec![FnProfile::khop(0.5), FnProfile::digest(0.05)],
        }
    }

    #[test]
    fn littles_law_holds_and_storage_saturates() {
        let s = system();
        let all_in = s.outcome(&[1.0, 1.0]);
        let x = all_in.throughput;
        assert!(
            (x * all_in.latency_ns / 1e9 - s.clients).abs() < 1e-3,
            "{all_in:?}"
        );
        assert!(all_in.storage_util > 0.9, "{all_in:?}");
        let digest_out = s.outcome(&[1.0, 0.0]);
        assert!(digest_out.throughput > 2.0 * x, "{digest_out:?}");
        let w = s.window(&[1.0, 0.0], 1, 0.05);
        assert!((w.throughput() - digest_out.throughput).abs() / digest_out.throughput < 0.01);
        assert!(
            (w.storage_util() - digest_out.storage_util).abs() < 0.02,
            "{w:?}"
        );
    }

    #[test]
    fn brute_force_finds_the_grid_optimum() {
        let s = system();
        let (best, x) = s.best_fixed(10);
        assert_eq!(best, vec![1.0, 0.0]);
        assert!(x >= s.outcome(&[0.5, 0.5]).throughput);
    }
}
