//! A shard model: `khop` on a Redis Cluster of S masters, in closed loop, to project what
//! `bench-cluster` measures on 1 to 3 shards of one machine to 64 shards and a datacenter's round
//! trips (`bench-sim --cluster`). Every number it gives is the model's, not a measurement.
//!
//! # The traversal
//! A traversal is the number of vertices at each distance d < k from its start
//! ([`Traversal::levels`], `levels[0] = 1`): what hop d reads, whatever the cluster. Vertices
//! live on shards uniformly by hash slot, so a hop whose frontier has f vertices touches, in
//! expectation, [`touched`]`(S, f) = S (1 - (1 - 1/S)^f)` shards: one part, one request and
//! one round trip per shard touched, every part of a hop in flight together. The ways compared,
//! as `bench-cluster` runs them ([`Way`]):
//! - **storage** per hop: each part is expanded on its shard (`expand`, or `neighbours` at the
//!   last hop). A shard also expands the vertices of the next hop it serves (`expand` goes on),
//!   so those are not sent again: a vertex at distance d is expanded ahead with probability
//!   `a_d = (1 - a_{d-1}) / S` (it lives on its parent's shard, and its parent was sent rather
//!   than expanded ahead itself; one parent assumed), `a_0 = 0`. Every vertex is still expanded
//!   once, so the shards' vertex work is the same on any S; the parts and round trips are not
//!   (on one shard, k = 2 takes one round trip). The second hop's vertices left to send are on
//!   the S - 1 shards other than the start's: it touches `(S - 1)(1 - (1 - 1/S)^f)`; later
//!   hops, whose parents are spread over the shards, `S (1 - (1 - (1 - a_d)/S)^f)`.
//! - **compute** per hop: a multi-get per shard touched, the expansion on the client.
//! - **per-key**: one key per round trip, sequential, every vertex of every level read once.
//!
//! # Costs
//! A part of n vertices costs its shard `shard_ns + n * shard_vertex_ns` of CPU and its client
//! `client_ns + n * client_vertex_ns` ([`PartCost`]; per way, calibrated by
//! [`calibrate`]). A hop waits one round trip (if it sends anything), the client's work on all
//! its parts (one thread runs an invocation), and its slowest part on the shards: the part with
//! the most vertices, `n/t + sqrt(2 (n/t) ln t)` of n vertices over t parts (the Gaussian bound
//! on the largest of t near-Poisson counts, never above n). Per-key is one "hop" of `keys`
//! sequential round trips.
//!
//! # The closed loop
//! N clients, each with `client_cores` cores and `in_flight` invocations outstanding (a
//! population of N x in_flight), S shards with `shard_cores` cores each (1: Redis runs a
//! function, or serves a read, under its one lock), and a round trip of `rtt_ns` (a delay, no
//! queue). Throughput comes from mean value analysis ([`solve`]): for n = 1 ... population, the
//! latency R(n) is the round trips plus the client's residence plus the slowest parts'
//! residence, each inflated by the queue an arrival finds there (1 + Q(n-1)); X(n) = n / R(n)
//! (Little's law); Q(n) = X(n) x the residence per invocation at one station. Stations of c
//! cores are Seidmann's: a queue with demand D/c and a delay of D (c-1)/c. Two departures from
//! exact MVA, both argued:
//! - a hop's parts run in parallel, so the latency counts the slowest part's residence, while
//!   each shard's queue counts every part's (Little's law holds per station whatever the
//!   fork-join); the tasks of one invocation may sit at several shards at once;
//! - X(n) is clamped to the bottleneck bound `min(S c_s / D_s, N c_c / D_c)` (D_s the shard CPU
//!   of an invocation over all shards, D_c its client CPU): no closed network runs faster than
//!   its busiest station allows, and the clamp keeps the fork-join approximation from
//!   overshooting on the way there.
//!
//! With one client, one invocation in flight and the measured round trip, the model is the
//! setting `bench-cluster` measures: R(1) = round trips x RTT + client CPU + slowest parts, which
//! is what [`validate`] compares with the measured throughput (1 / mean latency). There the
//! shards and the client share the machine's few cores, and their threads poll while waiting:
//! a round trip also waits for its shard's thread, and the reply for the client's, to get a
//! core. Calibrated with `shared_cores`, RTT there is the round trip plus
//! [`WayCost::contention_ns`] for each of the S + 1 polling threads beyond the cores
//! ([`excess_pollers`]); the projection gives every shard and client cores of their own.
//!
//! What it leaves out: replicas, hot shards and skew (the hop table moves a hot shard's parts
//! out; here shards are alike), the bytes on the wire (in the calibrated per-vertex costs and
//! round trip), a client's connections to S shards (its memory and polling grow with S; the
//! calibration saw at most 3), and cross-slot moves.

use serde::{Deserialize, Serialize};

/// A way of running `khop` on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Way {
    /// Hop by hop, every part expanded on its shard.
    Storage,
    /// Hop by hop, one multi-get per shard, expanded on the client.
    Compute,
    /// One key per round trip.
    PerKey,
}

impl Way {
    /// Every way, in report order.
    pub const ALL: [Way; 3] = [Way::Storage, Way::Compute, Way::PerKey];

    /// `storage`, `compute`, `per-key`: `bench-cluster`'s mode names.
    pub fn name(self) -> &'static str {
        match self {
            Way::Storage => "storage",
            Way::Compute => "compute",
            Way::PerKey => "per-key",
        }
    }

    /// The way of a `bench-cluster` mode name.
    pub fn from_name(name: &str) -> Option<Way> {
        Way::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// What one part of a hop costs, ns: fixed and per vertex, on its shard and on the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PartCost {
    /// Shard CPU per part (request).
    pub shard_ns: f64,
    /// Shard CPU per vertex of a part.
    pub shard_vertex_ns: f64,
    /// Client CPU per part.
    pub client_ns: f64,
    /// Client CPU per vertex of a part.
    pub client_vertex_ns: f64,
}

/// One traversal: vertices at each distance below k, and its weight in the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traversal {
    /// `levels[d]`: vertices at distance d from the start (`levels[0] = 1`), d < k.
    pub levels: Vec<f64>,
    /// How often it runs, relative to the others.
    pub weight: f64,
}

/// What an invocation asks of the cluster, on average over a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Round trips waited for one after another (hops that send anything; per-key: keys).
    pub waits: f64,
    /// Requests (parts), all shards.
    pub parts: f64,
    /// Vertices expanded or read.
    pub vertices: f64,
    /// Shard CPU, all shards, ns.
    pub shard_ns: f64,
    /// Shard CPU on the latency's path: each hop's slowest part, ns.
    pub critical_ns: f64,
    /// Client CPU, ns.
    pub client_ns: f64,
}

impl Load {
    fn add(&mut self, o: &Load, w: f64) {
        self.waits += w * o.waits;
        self.parts += w * o.parts;
        self.vertices += w * o.vertices;
        self.shard_ns += w * o.shard_ns;
        self.critical_ns += w * o.critical_ns;
        self.client_ns += w * o.client_ns;
    }
}

/// Expected shards a frontier of `f` vertices touches on `shards` shards, each vertex on a
/// uniformly random one: `S (1 - (1 - 1/S)^f)`.
pub fn touched(shards: f64, f: f64) -> f64 {
    touched_sent(shards, f, 1.0)
}

/// Expected shards touched by those of `f` vertices that are sent, each with probability `p`.
fn touched_sent(shards: f64, f: f64, p: f64) -> f64 {
    if f <= 0.0 || p <= 0.0 {
        return 0.0;
    }
    let s = shards.max(1.0);
    s * (1.0 - (1.0 - p / s).powf(f))
}

/// The vertices of the largest of `parts` parts holding `n` vertices in all: the mean plus the
/// Gaussian bound on the largest of `parts` near-Poisson counts, at most `n`.
pub fn largest_part(n: f64, parts: f64) -> f64 {
    if parts <= 1.0 || n <= 0.0 {
        return n.max(0.0);
    }
    let mean = n / parts;
    (mean + (2.0 * mean * parts.ln()).sqrt()).min(n)
}

/// Probability that a vertex at each distance is expanded ahead (storage way) on `shards`.
fn ahead(levels: usize, shards: f64) -> Vec<f64> {
    let mut a = vec![0.0; levels];
    for d in 1..levels {
        a[d] = (1.0 - a[d - 1]) / shards.max(1.0);
    }
    a
}

/// What one traversal asks of `shards` shards run `way`, at `cost`.
pub fn traversal_load(way: Way, t: &Traversal, shards: f64, cost: &PartCost) -> Load {
    let mut load = Load::default();
    let levels = &t.levels;
    match way {
        Way::PerKey => {
            let keys: f64 = levels.iter().sum();
            let shard = cost.shard_ns + cost.shard_vertex_ns;
            load.waits = keys;
            load.parts = keys;
            load.vertices = keys;
            load.shard_ns = keys * shard;
            load.critical_ns = keys * shard;
            load.client_ns = keys * (cost.client_ns + cost.client_vertex_ns);
        }
        Way::Storage | Way::Compute => {
            let a = match way {
                Way::Storage => ahead(levels.len(), shards),
                _ => vec![0.0; levels.len()],
            };
            for (d, &l) in levels.iter().enumerate() {
                let sent = l * (1.0 - a[d]);
                let parts = if way == Way::Storage && d == 1 {
                    // The start's shard expanded those it serves: the rest are on the others.
                    (shards - 1.0).max(0.0) * (1.0 - (1.0 - 1.0 / shards.max(1.0)).powf(l))
                } else {
                    touched_sent(shards, l, 1.0 - a[d])
                };
                if parts <= 0.0 {
                    continue;
                }
                // The part's shard also expands the next level's vertices it serves.
                let work = sent + levels.get(d + 1).map_or(0.0, |&next| next * a[d + 1]);
                // The hop waits unless every vertex was expanded ahead.
                load.waits += 1.0 - a[d].powf(l);
                load.parts += parts;
                load.vertices += work;
                load.shard_ns += parts * cost.shard_ns + work * cost.shard_vertex_ns;
                load.critical_ns += (1.0 - a[d].powf(l)) * cost.shard_ns
                    + largest_part(work, parts) * cost.shard_vertex_ns;
                load.client_ns += parts * cost.client_ns + work * cost.client_vertex_ns;
            }
        }
    }
    load
}

/// What an invocation of the workload `traversals` asks of `shards` shards, on average.
pub fn load(way: Way, traversals: &[Traversal], shards: f64, cost: &PartCost) -> Load {
    let total: f64 = traversals.iter().map(|t| t.weight.max(0.0)).sum();
    let mut out = Load::default();
    if total <= 0.0 {
        return out;
    }
    for t in traversals {
        out.add(
            &traversal_load(way, t, shards, cost),
            t.weight.max(0.0) / total,
        );
    }
    out
}

/// A cluster and its clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Masters.
    pub shards: u32,
    /// Cores each shard runs functions and reads on.
    pub shard_cores: f64,
    /// Clients (compute nodes).
    pub clients: u32,
    /// Cores of each client.
    pub client_cores: f64,
    /// Invocations each client keeps in flight.
    pub in_flight: u32,
    /// Round trip, ns.
    pub rtt_ns: f64,
}

/// What limits the throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The shards' cores (utilisation 90% or more).
    Shards,
    /// The clients' cores.
    Clients,
    /// Neither: the invocations in flight wait on round trips and latency.
    Latency,
}

/// The closed loop's steady state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Invocations per second, all clients.
    pub throughput: f64,
    /// Mean latency, ns.
    pub latency_ns: f64,
    /// Utilisation of each shard's cores.
    pub shard_util: f64,
    /// Utilisation of each client's cores.
    pub client_util: f64,
    /// What limits it.
    pub limit: Limit,
}

/// The steady state of `cluster` running invocations that each ask `load` of it (mean value
/// analysis; see the module's doc).
pub fn solve(cluster: &Cluster, load: &Load) -> Outcome {
    let s = f64::from(cluster.shards.max(1));
    let nc = f64::from(cluster.clients.max(1));
    let (cs, cc) = (
        cluster.shard_cores.max(1e-9),
        cluster.client_cores.max(1e-9),
    );
    let population = cluster.clients.max(1) * cluster.in_flight.max(1);
    // Demand per invocation at one shard (by symmetry, 1/S of all) and at its own client.
    let ds = load.shard_ns / s;
    let dc = load.client_ns;
    let mut bound = f64::INFINITY;
    if ds > 0.0 {
        bound = bound.min(cs / ds);
    }
    if dc > 0.0 {
        bound = bound.min(nc * cc / dc);
    }
    // Residence on the latency's path for a queue of q (Seidmann: D/c queued, D (c-1)/c delay).
    let residence = |d: f64, c: f64, q: f64| d / c * (1.0 + q) + d * (c - 1.0).max(0.0) / c;
    let (mut qs, mut qc) = (0.0f64, 0.0f64);
    let (mut x, mut r) = (0.0, 0.0);
    for n in 1..=population {
        r = load.waits * cluster.rtt_ns
            + residence(load.critical_ns, cs, qs)
            + residence(load.client_ns, cc, qc);
        x = (f64::from(n) / r.max(1e-9)).min(bound);
        qs = x * ds / cs * (1.0 + qs);
        qc = x / nc * dc / cc * (1.0 + qc);
    }
    let shard_util = x * ds / cs;
    let client_util = x / nc * dc / cc;
    let limit = if shard_util >= 0.9 && shard_util >= client_util {
        Limit::Shards
    } else if client_util >= 0.9 {
        Limit::Clients
    } else {
        Limit::Latency
    };
    Outcome {
        throughput: x * 1e9,
        latency_ns: if x > 0.0 {
            f64::from(population) / x
        } else {
            r
        },
        shard_util,
        client_util,
        limit,
    }
}

/// One cell `bench-cluster` measured (one client thread, one invocation in flight), per
/// invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Graph.
    pub graph: String,
    /// khop's k.
    pub k: u32,
    /// Masters.
    pub shards: u32,
    /// Way.
    pub way: Way,
    /// Invocations per second.
    pub ops_per_s: f64,
    /// Client CPU per invocation, ns.
    pub client_cpu_ns: f64,
    /// Storage CPU the shards reported per invocation (storage way), ns.
    pub storage_cpu_ns: f64,
    /// Time its requests queued on the shards, ns.
    pub queue_ns: f64,
    /// CPU of the shards' Redis main threads per invocation (per-key: serving its GETs), ns.
    pub main_cpu_ns: f64,
    /// CPU of the shards' processes per invocation, every thread, less their idle rate, ns
    /// (measured from `/proc`; the data-plane threads' polling between requests included, so on
    /// a machine whose cores the shards share it is an upper bound on what serving costs).
    #[serde(default)]
    pub server_cpu_ns: f64,
    /// Time the shards' data-plane threads held Redis's lock serving requests, per invocation,
    /// all shards, ns (measured: their busy share times the wall time; polling excluded). 0:
    /// not measured.
    #[serde(default)]
    pub shard_busy_ns: f64,
    /// Round trips per invocation.
    pub round_trips: f64,
    /// Invocations run (warm-up included), cycling over the workload's starts from the first:
    /// the weights of its traversals.
    pub runs: u64,
}

/// The traversals of one graph and k, one per start, in the order the starts are cycled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Graph.
    pub graph: String,
    /// khop's k.
    pub k: u32,
    /// Per start, vertices at each distance below k.
    pub levels: Vec<Vec<f64>>,
}

impl Workload {
    /// Its traversals weighted as `runs` invocations cycling over them from the first ran them.
    pub fn traversals(&self, runs: u64) -> Vec<Traversal> {
        let n = self.levels.len().max(1) as u64;
        self.levels
            .iter()
            .enumerate()
            .map(|(i, l)| Traversal {
                levels: l.clone(),
                weight: if runs == 0 {
                    1.0
                } else {
                    (runs / n + u64::from((i as u64) < runs % n)) as f64
                },
            })
            .collect()
    }
}

/// What a way's shard cost was calibrated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShardMeter {
    /// The data-plane threads' time serving requests under Redis's lock, measured
    /// ([`Measured::shard_busy_ns`]).
    Serving,
    /// The storage CPU the shards reported for their invocations ([`Measured::storage_cpu_ns`]):
    /// a `bench-cluster --json` without the serving time.
    Reported,
    /// The Redis main threads' CPU ([`Measured::main_cpu_ns`]: per-key's GETs).
    MainThreads,
}

/// A way's calibrated costs on one graph: per part, and the round trip it was measured over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WayCost {
    /// Way.
    pub way: Way,
    /// Per part.
    pub part: PartCost,
    /// What the shard's costs were fitted to.
    pub shard_meter: ShardMeter,
    /// The measured run's round trip (loopback; what the CPU counters do not explain), ns.
    pub rtt_ns: f64,
    /// Added to each round trip in the measured setting for each polling thread beyond the
    /// cores they shared ([`excess_pollers`]), ns; 0 where not modelled. Not projected: the
    /// projection gives every shard and client cores of their own.
    #[serde(default)]
    pub contention_ns: f64,
}

/// Every way's costs on one graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphCost {
    /// Graph.
    pub graph: String,
    /// The cores the measured shards and client shared (`None`: each had its own).
    #[serde(default)]
    pub shared_cores: Option<f64>,
    /// Per way.
    pub ways: Vec<WayCost>,
}

impl GraphCost {
    /// The costs of `way`.
    pub fn way(&self, way: Way) -> Option<&WayCost> {
        self.ways.iter().find(|w| w.way == way)
    }
}

/// Least squares of `y ~ a f1 + b f2` over rows `(f1, f2, y)`, each row weighted by 1/y (so
/// every cell counts by its relative error), a and b not negative (if one would be, it is 0
/// and the other is fitted alone).
fn fit2(rows: &[(f64, f64, f64)]) -> (f64, f64) {
    let weighted: Vec<[f64; 4]> = rows
        .iter()
        .map(|&(f1, f2, y)| [f1, f2, y, 1.0 / y.abs().max(1.0)])
        .collect();
    fit2_weighted(&weighted)
}

/// Least squares of `y ~ a f1 + b f2` over rows `[f1, f2, y, weight]` (each residual times its
/// weight), a and b not negative (if one would be, it is 0 and the other is fitted alone).
fn fit2_weighted(rows: &[[f64; 4]]) -> (f64, f64) {
    let (mut aa, mut ab, mut bb, mut ay, mut by) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &[f1, f2, y, w] in rows {
        let (f1, f2, y) = (f1 * w, f2 * w, y * w);
        aa += f1 * f1;
        ab += f1 * f2;
        bb += f2 * f2;
        ay += f1 * y;
        by += f2 * y;
    }
    let det = aa * bb - ab * ab;
    if det.abs() > 1e-12 * (aa * bb).max(1e-300) {
        let (a, b) = ((ay * bb - by * ab) / det, (aa * by - ab * ay) / det);
        if a >= 0.0 && b >= 0.0 {
            return (a, b);
        }
    }
    let a = if aa > 0.0 { (ay / aa).max(0.0) } else { 0.0 };
    let b = if bb > 0.0 { (by / bb).max(0.0) } else { 0.0 };
    // The one of the two single fits that leaves the smaller squared error.
    let err = |a: f64, b: f64| -> f64 {
        rows.iter()
            .map(|&[f1, f2, y, w]| ((a * f1 + b * f2 - y) * w).powi(2))
            .sum()
    };
    if err(a, 0.0) <= err(0.0, b) {
        (a, 0.0)
    } else {
        (0.0, b)
    }
}

/// Polling threads beyond the cores they share: the shards' data-plane threads and the client
/// thread (S + 1) on `shared_cores` cores, 0 where each has a core of its own (`None`).
pub fn excess_pollers(shards: u32, shared_cores: Option<f64>) -> f64 {
    shared_cores.map_or(0.0, |c| (f64::from(shards) + 1.0 - c).max(0.0))
}

/// The model's features of one cell: its load under unit costs of each kind.
struct Features {
    load: [Load; 4],
}

impl Features {
    fn of(way: Way, traversals: &[Traversal], shards: f64) -> Features {
        let unit = |i: usize| {
            let mut c = [0.0; 4];
            c[i] = 1.0;
            PartCost {
                shard_ns: c[0],
                shard_vertex_ns: c[1],
                client_ns: c[2],
                client_vertex_ns: c[3],
            }
        };
        Features {
            load: [0, 1, 2, 3].map(|i| load(way, traversals, shards, &unit(i))),
        }
    }
}

/// Calibrates every way on every graph from `cells` (`bench-cluster`'s measured cells) and
/// `workloads` (their traversals):
/// - storage and compute per hop: the shard's per part and per vertex cost from the time the
///   shards' data-plane threads spent serving (least squares over the cells' modelled parts and
///   vertices, each cell by its relative error), the same meter for both ways
///   ([`ShardMeter::Serving`]); the client's likewise from the client CPU. The round trip is
///   what those leave of the measured latency, per round trip waited (compute takes the
///   storage way's: same transport). Where the cells have no serving time (an older
///   `bench-cluster --json`), storage falls back to the storage CPU the shards reported
///   ([`ShardMeter::Reported`]) and compute, which the shards report nothing for, is an error.
///   The processes' whole CPU ([`Measured::server_cpu_ns`]) is not fitted: on the 2-core
///   calibration machine the data-plane threads' polling between requests fills whatever cores
///   are free, so it follows the wall time, not the work;
/// - per-key: per key, the client's CPU and the Redis main threads' (which serve RESP GETs);
///   the round trip is the rest.
///
/// `shared_cores`: the cores the measured shards and their client shared (the calibration
/// machine's), which adds [`WayCost::contention_ns`] to the fit; `None`: each had its own.
pub fn calibrate(
    cells: &[Measured],
    workloads: &[Workload],
    shared_cores: Option<f64>,
) -> Result<Vec<GraphCost>, String> {
    let mut graphs: Vec<&str> = cells.iter().map(|c| c.graph.as_str()).collect();
    graphs.sort_unstable();
    graphs.dedup();
    let mut out = Vec::new();
    for graph in graphs {
        // Per cell of this graph: it, its features, its latency.
        let mut rows: Vec<(&Measured, Features, f64)> = Vec::new();
        for c in cells
            .iter()
            .filter(|c| c.graph == graph && c.ops_per_s > 0.0)
        {
            let w = workloads
                .iter()
                .find(|w| w.graph == c.graph && w.k == c.k)
                .ok_or_else(|| format!("no traversals for {} k={}", c.graph, c.k))?;
            let t = w.traversals(c.runs);
            rows.push((
                c,
                Features::of(c.way, &t, f64::from(c.shards)),
                1e9 / c.ops_per_s,
            ));
        }
        let of = |way: Way| rows.iter().filter(move |r| r.0.way == way);
        let client = |way: Way| {
            fit2(
                &of(way)
                    .map(|(c, f, _)| (f.load[2].client_ns, f.load[3].client_ns, c.client_cpu_ns))
                    .collect::<Vec<_>>(),
            )
        };
        let mut ways = Vec::new();
        // The shard's costs of a hop by hop way: from the serving time if every cell has one.
        let shard = |way: Way| -> Option<(f64, f64, ShardMeter)> {
            let serving = of(way).all(|(c, _, _)| c.shard_busy_ns > 0.0);
            let meter = match (serving, way) {
                (true, _) => ShardMeter::Serving,
                (false, Way::Storage) => ShardMeter::Reported,
                _ => return None,
            };
            let (a, b) = fit2(
                &of(way)
                    .map(|(c, f, _)| {
                        let y = match meter {
                            ShardMeter::Serving => c.shard_busy_ns,
                            _ => c.storage_cpu_ns,
                        };
                        (f.load[0].shard_ns, f.load[1].shard_ns, y)
                    })
                    .collect::<Vec<_>>(),
            );
            Some((a, b, meter))
        };
        // Storage.
        let (s0, s1, storage_meter) =
            shard(Way::Storage).unwrap_or((0.0, 0.0, ShardMeter::Reported));
        let (c0, c1) = client(Way::Storage);
        let storage = PartCost {
            shard_ns: s0,
            shard_vertex_ns: s1,
            client_ns: c0,
            client_vertex_ns: c1,
        };
        // The round trip of the hop by hop ways (one transport), from both ways' cells: what
        // their costs leave of the latency, per round trip waited; with `shared_cores`, plus a
        // delay per round trip for each polling thread beyond the cores (a request waits for its
        // shard's thread, or the reply for the client's, to get a core). Each cell by its
        // relative error.
        let transport = |parts: &[(Way, &PartCost)]| -> (f64, f64) {
            let mut fit = Vec::new();
            for &(way, part) in parts {
                for (c, f, lat) in of(way) {
                    let l = load(
                        way,
                        &workloads
                            .iter()
                            .find(|w| w.graph == c.graph && w.k == c.k)
                            .map(|w| w.traversals(c.runs))
                            .unwrap_or_default(),
                        f64::from(c.shards),
                        part,
                    );
                    let rest = lat - l.critical_ns - l.client_ns - c.queue_ns;
                    let waits = f.load[0].waits;
                    let excess = excess_pollers(c.shards, shared_cores);
                    fit.push([waits, waits * excess, rest, 1.0 / lat]);
                }
            }
            fit2_weighted(&fit)
        };
        // Compute: a multi-get per part, at the serving time measured.
        let compute = match of(Way::Compute).next() {
            None => None,
            Some(_) => {
                let (m0, m1, meter) = shard(Way::Compute).ok_or_else(|| {
                    format!(
                        "{graph}: the compute cells have no shard serving time \
                         (shard_busy_ns_per_inv): rerun bench-cluster"
                    )
                })?;
                let (c0, c1) = client(Way::Compute);
                let part = PartCost {
                    shard_ns: m0,
                    shard_vertex_ns: m1,
                    client_ns: c0,
                    client_vertex_ns: c1,
                };
                Some((part, meter))
            }
        };
        let mut hop_ways: Vec<(Way, &PartCost)> = Vec::new();
        if of(Way::Storage).next().is_some() {
            hop_ways.push((Way::Storage, &storage));
        }
        if let Some((part, _)) = &compute {
            hop_ways.push((Way::Compute, part));
        }
        let (rtt_ns, contention_ns) = transport(&hop_ways);
        if of(Way::Storage).next().is_some() {
            ways.push(WayCost {
                way: Way::Storage,
                part: storage,
                shard_meter: storage_meter,
                rtt_ns,
                contention_ns,
            });
        }
        if let Some((part, meter)) = compute {
            ways.push(WayCost {
                way: Way::Compute,
                part,
                shard_meter: meter,
                rtt_ns,
                contention_ns,
            });
        }
        // Per-key: per key, each cell by its relative error.
        if of(Way::PerKey).next().is_some() {
            let per_key = |y: &dyn Fn(&Measured, f64) -> f64| -> f64 {
                let (mut ff, mut fy) = (0.0, 0.0);
                for (c, f, lat) in of(Way::PerKey) {
                    let keys = f.load[0].parts;
                    ff += (keys / lat).powi(2);
                    fy += (keys / lat) * (y(c, *lat) / lat);
                }
                if ff > 0.0 {
                    (fy / ff).max(0.0)
                } else {
                    0.0
                }
            };
            let client = per_key(&|c, _| c.client_cpu_ns);
            let shard = per_key(&|c, _| c.main_cpu_ns);
            let total = per_key(&|_, lat| lat);
            ways.push(WayCost {
                way: Way::PerKey,
                part: PartCost {
                    shard_ns: shard,
                    client_ns: client,
                    ..PartCost::default()
                },
                shard_meter: ShardMeter::MainThreads,
                rtt_ns: (total - client - shard).max(0.0),
                contention_ns: 0.0,
            });
        }
        out.push(GraphCost {
            graph: graph.to_string(),
            shared_cores,
            ways,
        });
    }
    Ok(out)
}

/// The model against one measured cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Graph.
    pub graph: String,
    /// k.
    pub k: u32,
    /// Masters.
    pub shards: u32,
    /// Way.
    pub way: Way,
    /// Measured invocations per second.
    pub measured_per_s: f64,
    /// The model's, with one client, one invocation in flight and the measured round trip.
    pub model_per_s: f64,
    /// Measured round trips per invocation.
    pub measured_round_trips: f64,
    /// The model's requests per invocation.
    pub model_round_trips: f64,
}

impl Check {
    /// The model's throughput over the measured, less 1 (+0.10: the model is 10% faster).
    pub fn miss(&self) -> f64 {
        self.model_per_s / self.measured_per_s.max(1e-12) - 1.0
    }
}

/// The model, calibrated with `costs`, in the measured setting of each of `cells` (one client,
/// one core, one invocation in flight, one core per shard, the way's measured round trip, plus
/// its contention for the cores the shards and client shared where `costs` has it).
pub fn validate(cells: &[Measured], workloads: &[Workload], costs: &[GraphCost]) -> Vec<Check> {
    let mut out = Vec::new();
    for c in cells {
        let (Some(w), Some(graph_cost)) = (
            workloads.iter().find(|w| w.graph == c.graph && w.k == c.k),
            costs.iter().find(|g| g.graph == c.graph),
        ) else {
            continue;
        };
        let Some(cost) = graph_cost.way(c.way) else {
            continue;
        };
        let l = load(
            c.way,
            &w.traversals(c.runs),
            f64::from(c.shards),
            &cost.part,
        );
        let o = solve(
            &Cluster {
                shards: c.shards,
                shard_cores: 1.0,
                clients: 1,
                client_cores: 1.0,
                in_flight: 1,
                rtt_ns: cost.rtt_ns
                    + cost.contention_ns * excess_pollers(c.shards, graph_cost.shared_cores),
            },
            &Load {
                critical_ns: l.critical_ns + c.queue_ns,
                ..l
            },
        );
        out.push(Check {
            graph: c.graph.clone(),
            k: c.k,
            shards: c.shards,
            way: c.way,
            measured_per_s: c.ops_per_s,
            model_per_s: o.throughput,
            measured_round_trips: c.round_trips,
            model_round_trips: l.parts,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost() -> PartCost {
        PartCost {
            shard_ns: 3_000.0,
            shard_vertex_ns: 200.0,
            client_ns: 1_000.0,
            client_vertex_ns: 100.0,
        }
    }

    fn social_like() -> Vec<Traversal> {
        vec![
            Traversal {
                levels: vec![1.0, 20.0, 150.0],
                weight: 3.0,
            },
            Traversal {
                levels: vec![1.0, 5.0, 40.0],
                weight: 1.0,
            },
        ]
    }

    fn cluster(shards: u32, clients: u32, rtt_ns: f64) -> Cluster {
        Cluster {
            shards,
            shard_cores: 1.0,
            clients,
            client_cores: 4.0,
            in_flight: 16,
            rtt_ns,
        }
    }

    #[test]
    fn touched_shards_follow_the_formula_and_its_limits() {
        assert_eq!(touched(1.0, 50.0), 1.0);
        assert_eq!(touched(8.0, 0.0), 0.0);
        assert_eq!(touched(64.0, 1.0), 1.0);
        // Two vertices on 2 shards: 1 + 1/2 expected.
        assert!((touched(2.0, 2.0) - 1.5).abs() < 1e-12);
        assert!((touched(16.0, 20.0) - 16.0 * (1.0 - (15.0f64 / 16.0).powi(20))).abs() < 1e-9);
        // Never more than the shards or the vertices, and growing in both.
        for s in [1.0, 3.0, 64.0] {
            for f in [1.0, 5.0, 100.0, 10_000.0] {
                let t = touched(s, f);
                assert!(t <= s + 1e-9 && t <= f + 1e-9, "{s} {f} {t}");
                assert!(touched(s, f + 1.0) >= t - 1e-9 && touched(s + 1.0, f) >= t - 1e-9);
            }
        }
        // A simulated hash agrees with the formula.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (s, f, trials) = (64u64, 40usize, 4000);
        let mut sum = 0usize;
        for _ in 0..trials {
            let mut hit = vec![false; s as usize];
            for _ in 0..f {
                hit[(next() % s) as usize] = true;
            }
            sum += hit.iter().filter(|&&h| h).count();
        }
        let mean = sum as f64 / trials as f64;
        assert!((mean - touched(64.0, 40.0)).abs() < 0.3, "{mean}");
    }

    #[test]
    fn one_shard_is_the_single_node_case() {
        let t = social_like();
        let c = cost();
        // Storage: one part, everything expanded ahead at the first hop, then the last level
        // by itself: two round trips, every vertex once.
        let s = load(Way::Storage, &t, 1.0, &c);
        assert!((s.parts - 2.0).abs() < 1e-12, "{s:?}");
        assert!((s.waits - 2.0).abs() < 1e-12);
        let vertices = (3.0 * 171.0 + 46.0) / 4.0;
        assert!((s.vertices - vertices).abs() < 1e-9);
        assert!((s.shard_ns - (2.0 * 3_000.0 + vertices * 200.0)).abs() < 1e-6);
        // On one shard the slowest part is the only one.
        assert!((s.critical_ns - s.shard_ns).abs() < 1e-6);
        // Compute: a multi-get per level.
        let m = load(Way::Compute, &t, 1.0, &c);
        assert!((m.parts - 3.0).abs() < 1e-12 && (m.waits - 3.0).abs() < 1e-12);
        // With one client and one call in flight, the latency is the sum of its parts.
        let o = solve(
            &Cluster {
                shards: 1,
                shard_cores: 1.0,
                clients: 1,
                client_cores: 1.0,
                in_flight: 1,
                rtt_ns: 5_000.0,
            },
            &s,
        );
        let latency = 2.0 * 5_000.0 + s.shard_ns + s.client_ns;
        assert!((o.latency_ns - latency).abs() < 1e-6, "{o:?}");
        assert!((o.throughput - 1e9 / latency).abs() < 1e-6);
    }

    #[test]
    fn ahead_expansion_fades_with_shards_and_work_stays() {
        let t = social_like();
        let c = cost();
        let one = load(Way::Storage, &t, 1.0, &c);
        let mut last_parts = 0.0;
        for s in [1.0, 2.0, 3.0, 8.0, 64.0, 1024.0] {
            let l = load(Way::Storage, &t, s, &c);
            assert!((l.vertices - one.vertices).abs() < 1e-6, "{s}");
            assert!(l.parts >= last_parts, "{s}");
            last_parts = l.parts;
        }
        // Many shards: storage sends what compute sends.
        let (s, m) = (
            load(Way::Storage, &t, 1e6, &c),
            load(Way::Compute, &t, 1e6, &c),
        );
        assert!((s.parts - m.parts).abs() / m.parts < 1e-3, "{s:?} {m:?}");
    }

    #[test]
    fn more_shards_never_lower_the_storage_bound_when_clients_have_room() {
        let t = social_like();
        let c = cost();
        let mut last = 0.0;
        for s in [1u32, 2, 3, 4, 8, 16, 32, 64] {
            let l = load(Way::Storage, &t, f64::from(s), &c);
            let bound = f64::from(s) / l.shard_ns;
            assert!(bound >= last, "{s}: {bound} < {last}");
            last = bound;
            // Plenty of clients and cores: the shards limit it, at their bound.
            let o = solve(
                &Cluster {
                    client_cores: 1e6,
                    in_flight: 64,
                    ..cluster(s, 64, 20_000.0)
                },
                &l,
            );
            assert_eq!(o.limit, Limit::Shards, "{s}: {o:?}");
            assert!(o.throughput <= bound * 1e9 * (1.0 + 1e-9));
            assert!(o.throughput >= 0.9 * bound * 1e9, "{s}: {o:?}");
        }
    }

    #[test]
    fn the_closed_loop_obeys_littles_law_and_its_bounds() {
        let t = social_like();
        let l = load(Way::Compute, &t, 16.0, &cost());
        let mut last = 0.0;
        for clients in [1u32, 2, 8, 64, 512] {
            let c = cluster(16, clients, 100_000.0);
            let o = solve(&c, &l);
            let population = f64::from(clients * c.in_flight);
            assert!((o.throughput * o.latency_ns / 1e9 - population).abs() < 1e-6 * population);
            // Never above the bottleneck, nor above the population over the unloaded latency.
            let unloaded = l.waits * c.rtt_ns + l.critical_ns + l.client_ns;
            assert!(o.throughput <= population / unloaded * 1e9 * (1.0 + 1e-9));
            assert!(o.shard_util <= 1.0 + 1e-9 && o.client_util <= 1.0 + 1e-9);
            assert!(o.throughput >= last, "{clients}: {o:?}");
            last = o.throughput;
        }
        // One client's 16 calls are latency-bound at 100 us; 512 clients fill the shards.
        assert_eq!(solve(&cluster(16, 1, 100_000.0), &l).limit, Limit::Latency);
        assert_eq!(solve(&cluster(16, 512, 100_000.0), &l).limit, Limit::Shards);
    }

    #[test]
    fn per_key_pays_a_round_trip_per_key_whatever_the_shards() {
        let t = social_like();
        let c = cost();
        let (one, many) = (
            load(Way::PerKey, &t, 1.0, &c),
            load(Way::PerKey, &t, 64.0, &c),
        );
        assert_eq!(one, many);
        assert!((one.waits - (3.0 * 171.0 + 46.0) / 4.0).abs() < 1e-9);
    }

    #[test]
    fn largest_part_is_between_the_mean_and_the_whole() {
        assert_eq!(largest_part(10.0, 1.0), 10.0);
        assert_eq!(largest_part(0.0, 3.0), 0.0);
        for (n, t) in [(100.0, 4.0), (1000.0, 64.0), (3.0, 2.5)] {
            let m = largest_part(n, t);
            assert!(m >= n / t && m <= n, "{n} {t} {m}");
        }
    }

    /// What a round trip waits per polling thread beyond the shared cores, in
    /// [`calibration_recovers_the_costs_it_was_made_with`].
    const CONTENTION: f64 = 1_500.0;

    /// Cells made by the model itself with known costs (and a machine of 2 cores that the
    /// shards and client share): calibration finds them again, and the calibrated model
    /// reproduces the cells.
    #[test]
    fn calibration_recovers_the_costs_it_was_made_with() {
        let workloads = vec![
            Workload {
                graph: "g".into(),
                k: 2,
                levels: vec![vec![1.0, 12.0], vec![1.0, 30.0], vec![1.0, 3.0]],
            },
            Workload {
                graph: "g".into(),
                k: 3,
                levels: vec![vec![1.0, 12.0, 90.0], vec![1.0, 30.0, 400.0]],
            },
        ];
        let truth = |way: Way| match way {
            Way::Storage => (cost(), 6_000.0),
            Way::Compute => (
                PartCost {
                    shard_ns: 2_700.0,
                    shard_vertex_ns: 140.0,
                    client_ns: 1_500.0,
                    client_vertex_ns: 300.0,
                },
                6_000.0,
            ),
            Way::PerKey => (
                PartCost {
                    shard_ns: 4_000.0,
                    client_ns: 2_000.0,
                    ..PartCost::default()
                },
                20_000.0,
            ),
        };
        let mut cells = Vec::new();
        for w in &workloads {
            for shards in 1..=3u32 {
                for way in Way::ALL {
                    let (part, rtt) = truth(way);
                    // The hop by hop ways' round trips wait for cores: S + 1 pollers on 2.
                    let contention = match way {
                        Way::PerKey => 0.0,
                        _ => CONTENTION * excess_pollers(shards, Some(2.0)),
                    };
                    let runs = 7;
                    let l = load(way, &w.traversals(runs), f64::from(shards), &part);
                    let latency = l.waits * (rtt + contention) + l.critical_ns + l.client_ns;
                    cells.push(Measured {
                        graph: "g".into(),
                        k: w.k,
                        shards,
                        way,
                        ops_per_s: 1e9 / latency,
                        client_cpu_ns: l.client_ns,
                        // The reported CPU leaves out what the serving time has besides the
                        // function: calibration goes by the serving time.
                        storage_cpu_ns: if way == Way::Storage {
                            0.6 * l.shard_ns
                        } else {
                            0.0
                        },
                        queue_ns: 0.0,
                        main_cpu_ns: if way == Way::PerKey { l.shard_ns } else { 0.0 },
                        // Polling fills the cores: the whole process follows the wall time.
                        server_cpu_ns: 1.3 * latency,
                        shard_busy_ns: if way == Way::PerKey { 0.0 } else { l.shard_ns },
                        round_trips: l.parts,
                        runs,
                    });
                }
            }
        }
        let costs = calibrate(&cells, &workloads, Some(2.0)).unwrap();
        assert_eq!(costs.len(), 1);
        for way in Way::ALL {
            let got = costs[0].way(way).unwrap();
            let meter = match way {
                Way::PerKey => ShardMeter::MainThreads,
                _ => ShardMeter::Serving,
            };
            assert_eq!(got.shard_meter, meter);
            let contention = if way == Way::PerKey { 0.0 } else { CONTENTION };
            assert!(
                (got.contention_ns - contention).abs() < 1e-6 * contention.max(1.0),
                "{way:?}: {got:?}"
            );
            let (part, rtt) = truth(way);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
            assert!(close(got.rtt_ns, rtt), "{way:?}: {got:?}");
            assert!(close(got.part.shard_ns, part.shard_ns), "{way:?}: {got:?}");
            assert!(
                close(got.part.client_ns, part.client_ns),
                "{way:?}: {got:?}"
            );
            assert!(
                close(got.part.shard_vertex_ns, part.shard_vertex_ns),
                "{way:?}: {got:?}"
            );
        }
        for check in validate(&cells, &workloads, &costs) {
            assert!(check.miss().abs() < 1e-6, "{check:?}");
        }
    }

    /// Compute-side cells whose shard serving time is made of known costs per multi-get and
    /// per key: the fit finds them, each alone and together; without a serving time compute
    /// cannot be calibrated, and storage falls back to the CPU the shards reported.
    #[test]
    fn multi_get_costs_are_recovered_from_the_serving_time() {
        let workloads = vec![
            Workload {
                graph: "g".into(),
                k: 2,
                levels: vec![vec![1.0, 7.0], vec![1.0, 40.0]],
            },
            Workload {
                graph: "g".into(),
                k: 3,
                levels: vec![vec![1.0, 9.0, 60.0], vec![1.0, 25.0, 300.0]],
            },
        ];
        let cells_of = |per_request: f64, per_key: f64, busy: bool| -> Vec<Measured> {
            let part = PartCost {
                shard_ns: per_request,
                shard_vertex_ns: per_key,
                client_ns: 900.0,
                client_vertex_ns: 80.0,
            };
            let mut cells = Vec::new();
            for w in &workloads {
                for shards in [1u32, 2, 3] {
                    for way in [Way::Storage, Way::Compute] {
                        let runs = 5;
                        let l = load(way, &w.traversals(runs), f64::from(shards), &part);
                        let latency = l.waits * 4_000.0 + l.critical_ns + l.client_ns;
                        cells.push(Measured {
                            graph: "g".into(),
                            k: w.k,
                            shards,
                            way,
                            ops_per_s: 1e9 / latency,
                            client_cpu_ns: l.client_ns,
                            storage_cpu_ns: if way == Way::Storage { l.shard_ns } else { 0.0 },
                            queue_ns: 0.0,
                            main_cpu_ns: 0.0,
                            server_cpu_ns: latency,
                            shard_busy_ns: if busy { l.shard_ns } else { 0.0 },
                            round_trips: l.parts,
                            runs,
                        });
                    }
                }
            }
            cells
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        for (per_request, per_key) in [(2_000.0, 150.0), (5_500.0, 0.0), (0.0, 420.0)] {
            let costs = calibrate(&cells_of(per_request, per_key, true), &workloads, None).unwrap();
            let got = costs[0].way(Way::Compute).unwrap();
            assert_eq!(got.shard_meter, ShardMeter::Serving);
            assert!(close(got.part.shard_ns, per_request), "{got:?}");
            assert!(close(got.part.shard_vertex_ns, per_key), "{got:?}");
            assert!(close(got.rtt_ns, 4_000.0), "{got:?}");
        }
        let unmeasured = cells_of(2_000.0, 150.0, false);
        let err = calibrate(&unmeasured, &workloads, None).unwrap_err();
        assert!(err.contains("serving time"), "{err}");
        let storage_only: Vec<Measured> = unmeasured
            .into_iter()
            .filter(|c| c.way == Way::Storage)
            .collect();
        let costs = calibrate(&storage_only, &workloads, None).unwrap();
        let got = costs[0].way(Way::Storage).unwrap();
        assert_eq!(got.shard_meter, ShardMeter::Reported);
        assert!(close(got.part.shard_ns, 2_000.0) && close(got.part.shard_vertex_ns, 150.0));
    }

    #[test]
    fn traversals_are_weighted_by_the_runs_cycling_over_them() {
        let w = Workload {
            graph: "g".into(),
            k: 2,
            levels: vec![vec![1.0, 2.0]; 4],
        };
        let weights: Vec<f64> = w.traversals(10).iter().map(|t| t.weight).collect();
        assert_eq!(weights, [3.0, 3.0, 2.0, 2.0]);
        assert_eq!(Way::from_name("per-key"), Some(Way::PerKey));
    }
}
