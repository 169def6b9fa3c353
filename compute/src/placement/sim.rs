//! A small closed-loop throughput model of one storage and its compute clients, to test
//! placement policies without Redis, and to sweep them past what one machine can run
//! (`bench-sim`: RTT, compute nodes, storage cores, from costs `bench-placement` measured).
//!
//! `clients` threads each run one invocation after another, picking function `f` with
//! probability `weight[f]`. A storage-side call takes one round trip, the function's storage CPU
//! and the storage queue's wait; a compute-side run takes `round_trips` round trips (each paying
//! the queue's wait and a read's storage CPU), the transfer of its bytes and its compute CPU.
//! Storage has `storage_cores` cores; its wait per visit is `rho / (1 - rho)` x mean service / cores
//! (an M/M/c-like curve that grows without bound as utilisation `rho` nears 1); compute cores
//! likewise. Throughput X solves `X x latency(X) = clients` (Little's law).
//!
//! Beyond one node: [`System::scaled`] models a [`Scale`] (N compute nodes alike, each with its
//! cores and calls in flight) as one system with N times the clients and the compute cores (the
//! nodes' cores are pooled into one queue: see [`System::scaled`]). [`steady_state`] runs a
//! [`Policy`] against it in closed loop (window under the shares, `Policy::step`, new shares)
//! and scores the last quarter of its epochs; [`compare`] does so for several policies and the
//! best fixed assignment ([`System::best`]) at one [`Scale`], [`sweep`] over a [`Grid`].

use serde::{Deserialize, Serialize};

use crate::table::{Record, SideSnapshot};

use super::forecast::storage_cpu_allowance;
use super::model::Costs;
use super::policy::{ParsePolicyError, Policy};
use super::window::{Decision, FnWindow, Window};

/// What one function costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Costs measured by `bench-placement` (the `calibration` object of its `--json`), to run the model with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Where it was measured, e.g. "netns tcp, emulated rtt 0 us".
    pub source: String,
    /// Round trip of the measured link, ns.
    pub rtt_ns: f64,
    /// Bytes per second of the measured link.
    pub bandwidth: f64,
    /// Each function's measured costs (`weight` is the weight it had in the measured mix).
    pub functions: Vec<FnProfile>,
}

impl Calibration {
    /// The built-in profiles ([`FnProfile::khop`], [`FnProfile::digest`],
    /// [`FnProfile::pagerank`], [`FnProfile::get`]) in `bench-placement`'s mix proportions
    /// (40% khop, 20% each of the others; `get` stands in for `aggregate`), 50 us RTT, 1 GB/s.
    pub fn builtin() -> Calibration {
        Calibration {
            source: "built-in profiles (FnProfile::khop/digest/pagerank/get), not measured".into(),
            rtt_ns: 50_000.0,
            bandwidth: 1e9,
            functions: vec![
                FnProfile::khop(0.4),
                FnProfile::digest(0.2),
                FnProfile::pagerank(0.2),
                FnProfile::get(0.2),
            ],
        }
    }

    /// Reads a calibration from JSON: either a document with a top-level `"calibration"` key
    /// (`bench-placement --json`) or a bare calibration object.
    pub fn from_json(text: &str) -> Result<Calibration, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        match value {
            serde_json::Value::Object(mut o) if o.contains_key("calibration") => {
                serde_json::from_value(o.remove("calibration").unwrap_or_default())
            }
            v => serde_json::from_value(v),
        }
    }
}

/// Bytes of a storage-side call's request and reply.
const CALL_BYTES: f64 = 200.0;

/// The storage utilisation a controller aims at (`ControllerConfig::target_util`'s default):
/// the allowance of a window.
const TARGET_UTIL: f64 = 0.85;

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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
        self.window_from(shares, &o, epoch, seconds, View::Cluster, None)
    }

    /// The window one of `nodes` compute nodes alike sees in an epoch of `seconds` under
    /// `shares`, all nodes running the same shares: its own counters (1/`nodes` of the
    /// invocations), its own cores (`compute_cores / nodes`) and utilisation, and an allowance
    /// net of the storage load it does not cause, as its controller computes it from the
    /// publisher's background load (here: the storage CPU of the other nodes' calls and reads).
    pub fn node_window(&self, shares: &[f64], epoch: u64, seconds: f64, nodes: u32) -> Window {
        self.window_from(
            shares,
            &self.outcome(shares),
            epoch,
            seconds,
            View::Node { nodes },
            None,
        )
    }

    /// The window of an epoch whose steady state `o` is already known. Each function's calls
    /// per side are whole: rounded, or with `carry` (per function, the fractions of a call left
    /// over by earlier epochs on each side) rounded down with the rest carried, so that a few
    /// calls per epoch still add up over epochs.
    fn window_from(
        &self,
        shares: &[f64],
        o: &Outcome,
        epoch: u64,
        seconds: f64,
        view: View,
        mut carry: Option<&mut [[f64; 2]]>,
    ) -> Window {
        let nodes = match view {
            View::Cluster => 1.0,
            View::Node { nodes } => f64::from(nodes.max(1)),
        };
        let mut count = |i: usize, side: usize, calls: f64| -> u64 {
            match carry.as_deref_mut().and_then(|c| c.get_mut(i)) {
                Some(c) => {
                    let total = calls + c[side];
                    c[side] = total - total.floor();
                    total.floor() as u64
                }
                None => calls.round() as u64,
            }
        };
        let functions: Vec<FnWindow> = self
            .functions
            .iter()
            .zip(self.mix())
            .zip(shares)
            .enumerate()
            .map(|(i, ((f, m), &s))| {
                let s = s.clamp(0.0, 1.0);
                let arrivals = o.throughput * m * seconds / nodes;
                let n_s = count(i, 0, arrivals * s);
                let n_c = count(i, 1, arrivals * (1.0 - s));
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
        let mut w = Window {
            epoch,
            seconds,
            storage_cores: self.storage_cores,
            allowance: TARGET_UTIL,
            compute_cores: self.compute_cores / nodes,
            compute_util: o.compute_util,
            functions,
        };
        if let View::Node { .. } = view {
            // The storage side's busy cores, less what this node's own counters report.
            let busy = o.storage_util * self.storage_cores;
            let own = w.storage_cpu_ns() as f64 / (seconds.max(1e-9) * 1e9);
            w.allowance =
                storage_cpu_allowance((busy - own).max(0.0), self.storage_cores, TARGET_UTIL);
        }
        w
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

/// A deployment beyond one machine: `nodes` compute nodes alike and one storage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    /// Compute nodes.
    pub nodes: u32,
    /// Cores of each compute node.
    pub cores_per_node: f64,
    /// Invocations each compute node keeps in flight (its closed-loop clients).
    pub in_flight_per_node: f64,
    /// Storage cores that run functions.
    pub storage_cores: f64,
    /// Round trip between a compute node and the storage, ns.
    pub rtt_ns: f64,
    /// Bytes per second of each node's link.
    pub bandwidth: f64,
}

impl System {
    /// `scale`'s deployment running `functions`: clients = nodes x in flight per node, compute
    /// cores = nodes x cores per node.
    ///
    /// The nodes' cores are pooled: compute-side runs queue for all `nodes x cores_per_node`
    /// cores at once, so at a given compute utilisation their wait is 1/`nodes` of what N
    /// separate nodes would see (optimistic for the compute side when its cores are busy).
    /// Links are not a shared resource either: a transfer takes bytes / `bandwidth` whatever
    /// the load.
    pub fn scaled(scale: &Scale, functions: Vec<FnProfile>) -> System {
        let nodes = f64::from(scale.nodes.max(1));
        System {
            clients: nodes * scale.in_flight_per_node,
            storage_cores: scale.storage_cores,
            compute_cores: nodes * scale.cores_per_node,
            rtt_ns: scale.rtt_ns,
            bandwidth: scale.bandwidth,
            functions,
        }
    }

    /// The best fixed assignment, searched more finely than [`System::best_fixed`] can afford
    /// with several functions: a grid of at most ~4,096 points, then a pattern search from its
    /// best (each share up or down, and each pair of shares traded one for the other, by a step
    /// halved from the grid's down to 1/1,000 once no move gains). Returns the shares and their
    /// throughput.
    pub fn best(&self) -> (Vec<f64>, f64) {
        let n = self.functions.len() as u32;
        let mut steps = 1usize;
        while steps < 20 && (steps as f64 + 2.0).powi(n as i32) <= 4096.0 {
            steps += 1;
        }
        let (mut best, mut x) = self.best_fixed(steps);
        let n = best.len();
        let mut h = 1.0 / steps as f64;
        while h > 1e-3 {
            h /= 2.0;
            loop {
                let mut improved = false;
                for i in 0..n {
                    for j in 0..=n {
                        // j == n: move share i alone; otherwise trade it against share j.
                        if i == j {
                            continue;
                        }
                        for sign in [1.0, -1.0] {
                            let mut c = best.clone();
                            c[i] = (c[i] + sign * h).clamp(0.0, 1.0);
                            if j < n {
                                c[j] = (c[j] - sign * h).clamp(0.0, 1.0);
                            }
                            if c == best {
                                continue;
                            }
                            let y = self.outcome(&c).throughput;
                            if y > x * (1.0 + 1e-9) {
                                (best, x) = (c, y);
                                improved = true;
                            }
                        }
                    }
                }
                if !improved {
                    break;
                }
            }
        }
        (best, x)
    }
}

/// What a policy's controller sees each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The whole system's counters, the allowance at the target: one controller for every
    /// node ([`System::window`]).
    Cluster,
    /// One node's counters, with the allowance net of the other nodes' storage load: a
    /// controller per node, every node running the same policy in step
    /// ([`System::node_window`]).
    Node {
        /// Compute nodes.
        nodes: u32,
    },
}

/// How [`steady_state`] runs a policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settle {
    /// Epochs run.
    pub epochs: u64,
    /// Length of one epoch, seconds.
    pub epoch_s: f64,
    /// Every function's share before the first epoch (a fresh table starts at 1).
    pub start_share: f64,
    /// Per-node controllers ([`View::Node`]) or one for the whole system.
    pub per_node: bool,
}

impl Default for Settle {
    /// 200 epochs of 50 ms from every function storage-side, one controller for the system.
    fn default() -> Settle {
        Settle {
            epochs: 200,
            epoch_s: 0.05,
            start_share: 1.0,
            per_node: false,
        }
    }
}

/// A policy's steady state: the last quarter of its epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steady {
    /// Mean throughput over the last quarter of the epochs (probes included), per second.
    pub throughput: f64,
    /// The lowest throughput of an epoch in that quarter, per second.
    pub min_throughput: f64,
    /// Each function's share after the last epoch.
    pub shares: Vec<f64>,
    /// The steady state under those shares.
    pub outcome: Outcome,
}

/// Runs `policy` against `sys` for `settle.epochs` epochs in closed loop (the window under the
/// current shares, one `Policy::step`, the shares it decides) and scores the throughput under
/// the shares decided at each epoch of the last quarter. A window's calls are whole, the
/// fractions carried to the next epoch. `nodes` is the number of compute nodes
/// `sys` models (it matters only with `settle.per_node`).
pub fn steady_state(sys: &System, nodes: u32, policy: &mut Policy, settle: &Settle) -> Steady {
    let n = sys.functions.len();
    let epochs = settle.epochs.max(1);
    let scored_from = epochs - (epochs / 4).max(1) + 1;
    let view = if settle.per_node {
        View::Node { nodes }
    } else {
        View::Cluster
    };
    let costs = sys.costs();
    let mut out: Vec<Decision> = (0..n)
        .map(|_| Decision {
            share: settle.start_share.clamp(0.0, 1.0),
            ..Decision::default()
        })
        .collect();
    let mut shares: Vec<f64> = out.iter().map(|d| d.share).collect();
    let mut o = sys.outcome(&shares);
    let mut carry = vec![[0.0; 2]; n];
    let (mut sum, mut scored, mut min) = (0.0, 0u64, f64::INFINITY);
    for e in 1..=epochs {
        let w = sys.window_from(&shares, &o, e, settle.epoch_s, view, Some(&mut carry));
        policy.step(&w, &costs, &mut out);
        for (s, d) in shares.iter_mut().zip(&out) {
            *s = d.share.clamp(0.0, 1.0);
        }
        o = sys.outcome(&shares);
        if e >= scored_from {
            sum += o.throughput;
            scored += 1;
            min = min.min(o.throughput);
        }
    }
    Steady {
        throughput: sum / scored.max(1) as f64,
        min_throughput: min,
        shares,
        outcome: o,
    }
}

/// One policy's result at one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResult {
    /// The policy's name.
    pub policy: String,
    /// Its steady state.
    pub steady: Steady,
}

/// Every policy and the oracle at one [`Scale`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// The deployment.
    pub scale: Scale,
    /// The best fixed assignment ([`System::best`]).
    pub oracle_shares: Vec<f64>,
    /// Its steady state.
    pub oracle: Outcome,
    /// Each policy, in the order given.
    pub policies: Vec<PolicyResult>,
}

impl PointResult {
    /// `policy`'s throughput over the oracle's.
    pub fn relative(&self, policy: &str) -> Option<f64> {
        let r = self.policies.iter().find(|r| r.policy == policy)?;
        Some(r.steady.throughput / self.oracle.throughput.max(1e-12))
    }

    /// The policies with the highest throughput: the best one and every one within `tie`
    /// (a fraction, e.g. 0.01) of it, in the order given.
    pub fn winners(&self, tie: f64) -> Vec<&str> {
        let top = self
            .policies
            .iter()
            .map(|r| r.steady.throughput)
            .fold(f64::NEG_INFINITY, f64::max);
        self.policies
            .iter()
            .filter(|r| r.steady.throughput >= top * (1.0 - tie))
            .map(|r| r.policy.as_str())
            .collect()
    }
}

/// Runs each of `policies` (fresh from its state given) to its steady state at `scale` with
/// `functions`, beside the best fixed assignment.
pub fn compare(
    scale: &Scale,
    functions: &[FnProfile],
    policies: &[Policy],
    settle: &Settle,
) -> PointResult {
    let sys = System::scaled(scale, functions.to_vec());
    let (oracle_shares, _) = sys.best();
    let oracle = sys.outcome(&oracle_shares);
    let policies = policies
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let steady = steady_state(&sys, scale.nodes, &mut p, settle);
            PolicyResult {
                policy: p.to_string(),
                steady,
            }
        })
        .collect();
    PointResult {
        scale: *scale,
        oracle_shares,
        oracle,
        policies,
    }
}

/// The points of a sweep: every combination of RTT, compute nodes and storage cores, with the
/// rest of a [`Scale`] fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Round trips, ns.
    pub rtt_ns: Vec<f64>,
    /// Compute node counts.
    pub nodes: Vec<u32>,
    /// Storage core counts.
    pub storage_cores: Vec<f64>,
    /// Cores of each compute node.
    pub cores_per_node: f64,
    /// Invocations each node keeps in flight.
    pub in_flight_per_node: f64,
    /// Bytes per second of each node's link.
    pub bandwidth: f64,
}

impl Default for Grid {
    /// RTT 1 to 200 us, 1 to 64 nodes, 1 to 16 storage cores (log-spaced); nodes of 4 cores
    /// with 16 invocations in flight; 1 GB/s links.
    fn default() -> Grid {
        Grid {
            rtt_ns: [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0]
                .map(|us| us * 1e3)
                .to_vec(),
            nodes: vec![1, 2, 4, 8, 16, 32, 64],
            storage_cores: vec![1.0, 2.0, 4.0, 8.0, 16.0],
            cores_per_node: 4.0,
            in_flight_per_node: 16.0,
            bandwidth: 1e9,
        }
    }
}

impl Grid {
    /// Every point, storage cores outermost, then nodes, then RTT.
    pub fn scales(&self) -> Vec<Scale> {
        let mut out = Vec::new();
        for &storage_cores in &self.storage_cores {
            for &nodes in &self.nodes {
                for &rtt_ns in &self.rtt_ns {
                    out.push(Scale {
                        nodes,
                        cores_per_node: self.cores_per_node,
                        in_flight_per_node: self.in_flight_per_node,
                        storage_cores,
                        rtt_ns,
                        bandwidth: self.bandwidth,
                    });
                }
            }
        }
        out
    }
}

/// [`compare`] at every point of `grid` (in [`Grid::scales`] order), over `threads` threads.
/// Fails on a policy name [`Policy`] does not parse.
pub fn sweep(
    grid: &Grid,
    functions: &[FnProfile],
    policies: &[&str],
    settle: &Settle,
    threads: usize,
) -> Result<Vec<PointResult>, ParsePolicyError> {
    let policies: Vec<Policy> = policies
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let scales = grid.scales();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, PointResult)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, scales.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(scale) = scales.get(i) else {
                            return mine;
                        };
                        mine.push((i, compare(scale, functions, &policies, settle)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a sweep worker panicked"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
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

    const POLICIES: [&str; 5] = ["storage", "compute", "autoloc2021", "kayak", "adaptive"];

    fn scale(nodes: u32, storage_cores: f64, rtt_us: f64) -> Scale {
        Scale {
            nodes,
            rtt_ns: rtt_us * 1e3,
            storage_cores,
            ..Grid::default().scales()[0]
        }
    }

    /// A high-fan-out cheap function and a CPU-heavy single-read one, half of the CPU each.
    fn contrast() -> Vec<FnProfile> {
        let (k, d) = (FnProfile::khop(1.0), FnProfile::digest(1.0));
        let total = 1.0 / k.compute_cpu_ns + 1.0 / d.compute_cpu_ns;
        vec![
            FnProfile::khop(1.0 / k.compute_cpu_ns / total),
            FnProfile::digest(1.0 / d.compute_cpu_ns / total),
        ]
    }

    fn parsed() -> Vec<Policy> {
        POLICIES.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn scaled_multiplies_clients_and_compute_cores_by_nodes() {
        let s = System::scaled(&scale(8, 2.0, 20.0), vec![FnProfile::khop(1.0)]);
        let per_node = Grid::default();
        assert_eq!(s.clients, 8.0 * per_node.in_flight_per_node);
        assert_eq!(s.compute_cores, 8.0 * per_node.cores_per_node);
        assert_eq!((s.storage_cores, s.rtt_ns), (2.0, 20_000.0));
        // Compute-side digest scales with the nodes' cores; storage-side, with storage cores.
        let digest = |nodes, share| {
            System::scaled(&scale(nodes, 1.0, 20.0), vec![FnProfile::digest(1.0)])
                .outcome(&[share])
                .throughput
        };
        let ratio = digest(64, 0.0) / digest(1, 0.0);
        assert!((50.0..=70.0).contains(&ratio), "{ratio}");
        // (1 node's 16 calls in flight already keep the one storage core 94% busy.)
        let inside = digest(64, 1.0) / digest(1, 1.0);
        assert!((1.0..1.1).contains(&inside), "{inside}");
    }

    #[test]
    fn best_refines_the_grid_and_beats_every_corner() {
        let s = System::scaled(&scale(16, 2.0, 20.0), Calibration::builtin().functions);
        let (shares, x) = s.best();
        assert_eq!(x, s.outcome(&shares).throughput);
        let (_, coarse) = s.best_fixed(4);
        assert!(x >= coarse, "{x} < {coarse}");
        for corner in 0..16u32 {
            let c: Vec<f64> = (0..4).map(|i| f64::from((corner >> i) & 1)).collect();
            assert!(x >= s.outcome(&c).throughput, "{c:?} beats {shares:?}");
        }
    }

    #[test]
    fn node_window_is_one_node_of_the_cluster() {
        let s = System::scaled(&scale(4, 2.0, 50.0), contrast());
        let shares = [1.0, 0.5];
        // Long epochs: a node's counts in one are whole calls, rounded.
        let all = s.window(&shares, 1, 10.0);
        let one = s.node_window(&shares, 1, 10.0, 4);
        assert!((one.throughput() * 4.0 - all.throughput()).abs() / all.throughput() < 0.01);
        assert_eq!(one.compute_cores, all.compute_cores / 4.0);
        assert_eq!(one.storage_cores, all.storage_cores);
        // The other three nodes' storage CPU comes off this node's allowance.
        let others = all.storage_util() * 0.75;
        assert!(
            (one.allowance - (TARGET_UTIL - others).max(0.0)).abs() < 0.02,
            "{} vs {others}",
            one.allowance
        );
        assert_eq!(s.node_window(&shares, 1, 10.0, 1).allowance, TARGET_UTIL);
    }

    #[test]
    fn the_oracle_bounds_every_policy() {
        for (functions, sc) in [
            (Calibration::builtin().functions, scale(1, 1.0, 50.0)),
            (Calibration::builtin().functions, scale(16, 4.0, 5.0)),
            (contrast(), scale(64, 1.0, 200.0)),
            (contrast(), scale(2, 16.0, 1.0)),
        ] {
            for per_node in [false, true] {
                let settle = Settle {
                    per_node,
                    ..Settle::default()
                };
                let r = compare(&sc, &functions, &parsed(), &settle);
                for p in &r.policies {
                    assert!(
                        p.steady.throughput <= 1.005 * r.oracle.throughput,
                        "{} {:.0} over the oracle {:.0} at {:?}: {:?} vs {:?}",
                        p.policy,
                        p.steady.throughput,
                        r.oracle.throughput,
                        sc,
                        p.steady.shares,
                        r.oracle_shares
                    );
                }
            }
        }
    }

    #[test]
    fn cpu_heavy_goes_compute_side_with_far_scarce_storage() {
        // 200 us away, one storage core, 64 nodes: digest's 5 ms inside would starve khop.
        let r = compare(
            &scale(64, 1.0, 200.0),
            &contrast(),
            &parsed(),
            &Settle::default(),
        );
        let adaptive = &r.policies[4];
        assert_eq!(adaptive.policy, "adaptive");
        assert!(adaptive.steady.shares[1] <= 0.05, "{r:?}");
        assert!(r.oracle_shares[1] <= 0.05, "{r:?}");
        // And khop, the one that saves 11 round trips of 200 us, stays inside.
        assert!(adaptive.steady.shares[0] >= 0.95, "{r:?}");
    }

    #[test]
    fn fan_out_stays_storage_side_with_near_plentiful_storage() {
        // 1 us away, 16 storage cores: khop's 12 round trips still cost more than running it.
        for nodes in [1, 4, 16] {
            let r = compare(
                &scale(nodes, 16.0, 1.0),
                &contrast(),
                &parsed(),
                &Settle::default(),
            );
            let adaptive = &r.policies[4];
            assert!(adaptive.steady.shares[0] >= 0.95, "{nodes} nodes: {r:?}");
            assert!(r.oracle_shares[0] >= 0.95, "{nodes} nodes: {r:?}");
        }
    }

    #[test]
    fn idle_compute_takes_part_of_a_function_whose_reads_are_cheaper_than_running_it() {
        // aggregate-like: one read of 64 keys (2 us + 64 x 150 ns to serve), 18 us inside, 28 us
        // outside. One storage core at its allowance inside; one node of one core, which idles
        // with everything inside: splitting uses both (`bench-placement --topology netns`).
        let aggregate = FnProfile {
            storage_cpu_ns: 18_000.0,
            compute_cpu_ns: 28_000.0,
            read_cpu_ns: 11_600.0,
            keys: 64.0,
            ..FnProfile::new("aggregate", 1.0, 18_000.0, 1.0, 1_000.0)
        };
        let sc = Scale {
            cores_per_node: 1.0,
            ..scale(1, 1.0, 20.0)
        };
        let r = compare(&sc, &[aggregate], &parsed(), &Settle::default());
        let adaptive = &r.policies[4];
        let storage = &r.policies[0];
        assert!(adaptive.steady.shares[0] < 0.9, "{r:?}");
        assert!(
            adaptive.steady.throughput > 1.1 * storage.steady.throughput,
            "{r:?}"
        );
        assert!(
            adaptive.steady.throughput > 0.95 * r.oracle.throughput,
            "{r:?}"
        );
    }

    #[test]
    fn winners_count_ties_within_the_margin() {
        let r = compare(
            &scale(1, 16.0, 1.0),
            &[FnProfile::khop(1.0)],
            &parsed(),
            &Settle::default(),
        );
        // One function, inside is best: every policy that ends inside ties with storage.
        let w = r.winners(0.01);
        assert!(w.contains(&"storage"), "{w:?}");
        assert!(!w.contains(&"compute"), "{w:?}");
        assert!(r.relative("storage").unwrap() > 0.99);
        assert!(r.relative("compute").unwrap() < 0.99);
        assert_eq!(r.relative("nobody"), None);
    }

    #[test]
    fn sweep_covers_the_grid_in_order_and_rejects_unknown_policies() {
        let grid = Grid {
            rtt_ns: vec![1e3, 100e3],
            nodes: vec![1, 8],
            storage_cores: vec![1.0, 4.0],
            ..Grid::default()
        };
        let settle = Settle {
            epochs: 40,
            ..Settle::default()
        };
        let f = contrast();
        let r = sweep(&grid, &f, &POLICIES, &settle, 3).unwrap();
        assert_eq!(r.len(), 8);
        let scales: Vec<Scale> = r.iter().map(|p| p.scale).collect();
        assert_eq!(scales, grid.scales());
        assert_eq!(r[0], compare(&grid.scales()[0], &f, &parsed(), &settle));
        assert!(sweep(&grid, &f, &["fastest"], &settle, 1).is_err());
    }

    #[test]
    fn calibration_reads_bare_and_wrapped() {
        let c = Calibration::builtin();
        let bare = serde_json::to_string(&c).unwrap();
        assert_eq!(Calibration::from_json(&bare).unwrap(), c);
        let wrapped = format!(r#"{{"rows": [], "calibration": {bare}}}"#);
        assert_eq!(Calibration::from_json(&wrapped).unwrap(), c);
        assert!(Calibration::from_json(r#"{"rows": []}"#).is_err());
    }

    #[test]
    fn brute_force_finds_the_grid_optimum() {
        let s = system();
        let (best, x) = s.best_fixed(10);
        assert_eq!(best, vec![1.0, 0.0]);
        assert!(x >= s.outcome(&[0.5, 0.5]).throughput);
    }
}
