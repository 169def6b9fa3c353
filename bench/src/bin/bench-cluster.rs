//! `bench-cluster`: `khop` on a Redis Cluster of 1, 2 and 3 shards (private clusters on loopback,
//! the module on every master), for AutoLoc's `social.json` and an R-MAT graph, k = 2 and 3:
//! - `storage`: hop by hop, every part of a hop expanded storage-side on its shard
//!   (`Placement::Storage`, [`autoloc::hops`]);
//! - `compute`: every hop fetched compute-side, one multi-get per shard (`Placement::Compute`);
//! - `auto`: each part of each hop where the hop table says (`Placement::Auto`);
//! - `per-key`: what a Redis Cluster user has today: a cluster client reading one key per round
//!   trip (RESP `GET`, as `redisclient` does on one node), compute-side.
//!
//! Per cell: invocations per second and p50/p99 from one client thread, one invocation at a
//! time, cycling over the same start vertices (each start's result is checked equal across the
//! four before anything is timed); round trips and bytes per invocation and per hop, and the
//! shards each hop touched; the client's CPU, the storage CPU the shards reported, and the CPU
//! the masters' processes used, measured from outside (every thread of every `redis-server`,
//! from `/proc/<pid>/task/*/schedstat`: the main threads, which serve the per-key client's GETs,
//! and the module's data-plane threads, which serve multi-gets and invocations, their polling
//! between requests included), less what they use idle; the time the data-plane threads spent
//! serving under Redis's lock (`AUTOLOC.STATS`' busy share, sampled; polling excluded) and the
//! requests they served; and each start's vertices at each distance below k. Those calibrate
//! the shard model of `autoloc::placement::shards`, which projects to more shards: `bench-sim
//! --cluster` on this program's `--json`.
//!
//! Then, on `social.json` over the largest cluster: what becomes of a storage-side invocation
//! that meets a key of another shard, for functions that are not run by parts (the example
//! guests `khop_wasm` and `pagerank_wasm`, and `aggregate` of 300 keys): `finish` (pushed back
//! with its read set, finished compute-side: the default), `forward` (forwarded with it to the
//! shard serving the key it met, `OtherShard::Forward`), and `compute` outright; and the
//! built-in `pagerank`, by parts storage-side against compute-side. The three ways take turns
//! of 100 ms ([`harness::measure_interleaved`]), so that a drift of the machine's speed weighs on
//! each alike.
//!
//! `--rtt-us N` adds an emulated round trip of N us to every data-plane round trip of all four
//! ways (a `DelayLink` on each runtime's links, the per-key client's RESP link included; not a
//! measured network): whether `auto` moves parts storage-side when round trips are long.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use autoloc::hops::HopSide;
use autoloc::load::{load_autoloc_json, write_graph, Graph};
use autoloc::placement::shards::Workload;
use autoloc::server::cluster::RedisCluster;
use autoloc::stats::StorageStats;
use autoloc::{OtherShard, Output, Placement, ReadMode, Runtime, Side, Transport};
use autoloc_bench::args::{CellArgs, JsonArgs, PlotArgs};
use autoloc_bench::harness::{self, load_average, progress, record, Machine, PALETTE};
use autoloc_bench::table::Table;
use autoloc_dataplane::Connection;
use autoloc_functions::graph::vertex_key;
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "bench-cluster",
    about = "khop on Redis Cluster: per-hop storage-side, compute-side, adaptive, and a per-key cluster client"
)]
struct Args {
    /// Cluster sizes (masters) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    shards: Vec<usize>,
    /// khop's k values.
    #[arg(long, value_delimiter = ',', default_value = "2,3")]
    ks: Vec<u32>,
    /// R-MAT scale of the second graph.
    #[arg(long, default_value_t = 16)]
    scale: u32,
    /// R-MAT edge factor.
    #[arg(long, default_value_t = 8)]
    edge_factor: u32,
    /// Start vertices cycled over (drawn among those with a key).
    #[arg(long, default_value_t = 64)]
    starts: usize,
    /// The data plane of the AutoLoc runs (the per-key client is RESP).
    #[arg(long, default_value = "shm")]
    transport: Transport,
    /// An emulated round trip added to every data-plane round trip of every way (a `DelayLink`
    /// on the runtimes' links, the per-key client's included), us; 0: none.
    #[arg(long, default_value_t = 0)]
    rtt_us: u64,
    #[command(flatten)]
    cell: CellArgs,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    plot: PlotArgs,
}

/// The ways of running khop compared.
const MODES: [&str; 4] = ["storage", "compute", "auto", "per-key"];

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
struct Row {
    graph: String,
    shards: usize,
    k: u32,
    mode: String,
    ops_per_s: f64,
    p50_ns: u64,
    p99_ns: u64,
    round_trips_per_inv: f64,
    bytes_per_inv: f64,
    /// Round trips per hop (a hop by hop run: its invocations and multi-gets, per hop).
    round_trips_per_hop: f64,
    /// Shards a hop's frontier touched, on average (hop by hop runs only; else 0).
    shards_per_hop: f64,
    /// The share of hop parts expanded storage-side (hop by hop runs).
    storage_share: f64,
    /// Invocations run, warm-up included, cycling over the starts from the first.
    runs: u64,
    /// The client thread's CPU per invocation (`Invocation::cpu`: polling it and moving its
    /// frames, waits excluded), ns.
    client_cpu_ns_per_inv: f64,
    /// Storage CPU the shards reported per invocation (storage-side parts), ns.
    storage_cpu_ns_per_inv: f64,
    /// Time its storage-side requests queued on the shards, per invocation, ns.
    queue_ns_per_inv: f64,
    /// CPU of the masters' Redis main threads per invocation, all masters, ns (what serves the
    /// per-key client's GETs; from /proc's schedstat).
    main_cpu_ns_per_inv: f64,
    /// CPU of the masters' processes per invocation, every thread of every master, ns
    /// (`ProcCpu::total_ns`), less what they use idle over as long (`server_idle_cpu_ns_per_s`).
    server_cpu_ns_per_inv: f64,
    /// Of which the module's data-plane threads, which serve multi-gets and invocations (their
    /// polling between requests included), idle share not taken off, ns.
    dataplane_cpu_ns_per_inv: f64,
    /// CPU the masters' processes used per second with nothing asked of them (the runtimes
    /// connected), measured before the cells of each cluster and k, ns.
    server_idle_cpu_ns_per_s: f64,
    /// Wall time per invocation, warm-up included (what the idle share is taken over), ns.
    wall_ns_per_inv: f64,
    /// Time the masters' data-plane threads held Redis's lock serving requests, per
    /// invocation, all masters, ns: each master's `AUTOLOC.STATS` `dataplane_busy_permille` (its
    /// share of the last 100 ms window), sampled every 50 ms from 250 ms into the cell on (the
    /// windows wholly in it) and averaged, times the wall time per invocation. What serving
    /// multi-gets and invocations costs a shard, framing and lock included, polling between
    /// requests not.
    shard_busy_ns_per_inv: f64,
    /// Requests the masters' data planes served per invocation (`dataplane_requests`).
    shard_requests_per_inv: f64,
}

/// One way of running a function that reads keys of several shards.
#[derive(Debug, Clone, Serialize)]
struct OtherRow {
    function: String,
    shards: usize,
    /// `finish`, `forward`, `by parts` or `compute`.
    way: String,
    ops_per_s: f64,
    p50_ns: u64,
    p99_ns: u64,
    round_trips_per_inv: f64,
    bytes_per_inv: f64,
    /// Shards an invocation was forwarded to, on average.
    forwarded_per_inv: f64,
    /// The share of invocations pushed back and finished compute-side.
    pushed_back_share: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    parameters: BTreeMap<String, String>,
    rows: Vec<Row>,
    /// Pushed back and finished, forwarded, or compute-side ([`other_shard`]).
    other_shard: Vec<OtherRow>,
    /// Per graph and k, each start's vertices at each distance below k, in the order cycled.
    workloads: Vec<Workload>,
}

fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if a.cell.quick {
        a.shards = vec![1, 3];
        a.ks = vec![2];
        a.scale = a.scale.min(12);
        a.starts = a.starts.min(16);
        a.cell.duration_ms = a.cell.duration_ms.min(200);
    }
    ensure!(
        !a.shards.is_empty() && !a.ks.is_empty(),
        "nothing to measure"
    );
    let plan = a.cell.plan()?;
    let machine = Machine::detect();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    params.insert("shards".into(), format!("{:?}", a.shards));
    params.insert("ks".into(), format!("{:?}", a.ks));
    params.insert(
        "rmat".into(),
        format!("scale {} edge factor {}", a.scale, a.edge_factor),
    );
    params.insert("starts".into(), a.starts.to_string());
    params.insert("transport".into(), a.transport.to_string());
    params.insert("duration_ms".into(), a.cell.duration_ms.to_string());
    params.insert("replicas".into(), "0 (masters only)".into());
    params.insert(
        "rtt".into(),
        if a.rtt_us == 0 {
            "loopback (none emulated)".to_string()
        } else {
            format!(
                "EMULATED: {} us added to every data-plane round trip of every way (a DelayLink on \
                 the client's links, the per-key client's RESP link included), on top of loopback; \
                 not a measured network",
                a.rtt_us
            )
        },
    );
    params.insert(
        "server cpu".into(),
        "every thread of every master process (/proc/<pid>/task/*/schedstat), less its idle rate"
            .into(),
    );
    params.insert("load_average_before".into(), load_average());
    harness::print_header(&machine, &params);

    let social = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/autoloc/social.json");
    let rmat = Graph::rmat(a.scale, a.edge_factor, 1)?;
    let mut rows = Vec::new();
    let mut workloads: Vec<Workload> = Vec::new();
    for graph in ["social", "rmat"] {
        for &n in &a.shards {
            progress(&format!("{graph} on a cluster of {n}"));
            let cluster = RedisCluster::start(n, 0, &[])?;
            let mut conn = harness::connect(&cluster.url())?;
            let loaded = match graph {
                "social" => load_autoloc_json(&mut conn, &social, true, false)?,
                _ => write_graph(&mut conn, &rmat, 1, false)?,
            };
            eprintln!(
                "  loaded {} vertices, {} keys in {:.2} s",
                loaded.vertices, loaded.keys, loaded.seconds
            );
            let bound = match graph {
                "social" => 4096,
                _ => 1u32 << a.scale,
            };
            let starts = pick_starts(&cluster.url(), a.starts, bound)?;
            let mains: Vec<u32> = cluster
                .nodes()
                .iter()
                .map(autoloc::server::RedisServer::pid)
                .collect();
            for &k in &a.ks {
                let rtt = Duration::from_micros(a.rtt_us);
                let mut runtimes: Vec<(&str, Runtime, Placement)> = MODES
                    .iter()
                    .map(|&mode| -> anyhow::Result<_> {
                        let rt = Runtime::connect(&cluster.url())?;
                        let (mode, rt, placement) = match mode {
                            "per-key" => (
                                mode,
                                rt.with_read_mode(ReadMode::PerKey)
                                    .with_transport(Transport::Resp)?,
                                Placement::Compute,
                            ),
                            "storage" => {
                                (mode, rt.with_transport(a.transport)?, Placement::Storage)
                            }
                            "compute" => {
                                (mode, rt.with_transport(a.transport)?, Placement::Compute)
                            }
                            _ => (mode, rt.with_transport(a.transport)?, Placement::Auto),
                        };
                        Ok((mode, rt.with_emulated_rtt(rtt)?, placement))
                    })
                    .collect::<anyhow::Result<_>>()?;
                check_equal(&mut runtimes, &starts, k)?;
                let mut masters = Masters {
                    pids: &mains,
                    stats: cluster
                        .nodes()
                        .iter()
                        .map(|n| harness::connect(&n.url()))
                        .collect::<anyhow::Result<_>>()?,
                    idle_per_s: idle_cpu_per_s(&mains),
                };
                for (mode, rt, placement) in runtimes.iter_mut() {
                    let cell = Cell {
                        graph,
                        shards: n,
                        k,
                        mode,
                    };
                    rows.push(measure(&cell, rt, *placement, &starts, &mut masters, plan)?);
                }
                if !workloads.iter().any(|w| w.graph == graph && w.k == k) {
                    let rt = &mut runtimes[0].1;
                    let levels = starts
                        .iter()
                        .map(|s| levels(rt, s, k))
                        .collect::<anyhow::Result<_>>()?;
                    workloads.push(Workload {
                        graph: graph.to_string(),
                        k,
                        levels,
                    });
                }
            }
        }
    }
    let other = match a.shards.iter().max() {
        Some(&n) if n > 1 => other_shard(n, &social, a.transport, a.rtt_us, a.starts, plan)?,
        _ => Vec::new(),
    };
    print!("{}", table(&rows));
    println!();
    if !other.is_empty() {
        println!("a storage-side invocation meeting a key of another shard, social.json:");
        print!("{}", other_table(&other));
        println!();
    }
    print!("{}", cpu_table(&rows));
    println!();
    for line in ratios(&rows) {
        println!("{line}");
    }
    println!();
    for line in reported_against_measured(&rows) {
        println!("{line}");
    }
    println!();
    for line in auto_shares(&rows, a.rtt_us) {
        println!("{line}");
    }
    println!();
    println!(
        "projection to more shards: bench-sim --cluster on this run's --json (simulated, not measured)"
    );
    if let Some(path) = &a.json.path {
        params.insert("load_average_after".into(), load_average());
        let report = Report {
            machine: machine.clone(),
            parameters: params,
            rows: rows.clone(),
            other_shard: other,
            workloads,
        };
        harness::write_json(path, &report)?;
    }
    if let Some(path) = &a.plot.path {
        plot(path, &rows, &machine)?;
    }
    Ok(())
}

/// `count` start vertices below `bound` with a key, drawn with a fixed seed.
fn pick_starts(url: &str, count: usize, bound: u32) -> anyhow::Result<Vec<String>> {
    let mut rt = Runtime::connect(url)?;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut starts = Vec::new();
    let mut tries = 0;
    while starts.len() < count && tries < count * 50 {
        tries += 1;
        let v: u32 = rng.gen_range(0..bound);
        if rt.get(&vertex_key(v))?.is_some() {
            starts.push(v.to_string());
        }
    }
    ensure!(!starts.is_empty(), "no start vertex has a key");
    Ok(starts)
}

/// Each start's result is the same whichever way it runs.
fn check_equal(
    runtimes: &mut [(&str, Runtime, Placement)],
    starts: &[String],
    k: u32,
) -> anyhow::Result<()> {
    let k = k.to_string();
    for start in starts {
        let mut first: Option<(&str, Output)> = None;
        for (mode, rt, placement) in runtimes.iter_mut() {
            let out = rt
                .invoke("khop", &[start.as_str(), k.as_str()], *placement)
                .with_context(|| format!("khop {start} {k} {mode}"))?
                .output;
            match &first {
                None => first = Some((mode, out)),
                Some((m, o)) => ensure!(*o == out, "khop {start} {k}: {mode} differs from {m}"),
            }
        }
    }
    Ok(())
}

/// Which cell is measured.
struct Cell<'a> {
    graph: &'a str,
    shards: usize,
    k: u32,
    mode: &'a str,
}

/// CPU a process's threads have run, ns (each thread's `/proc/<pid>/task/<tid>/schedstat`
/// first field: ns resolution), as bench-cluster splits it. Threads that exited are not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ProcCpu {
    /// Every thread alive when read.
    total_ns: u64,
    /// The main thread (whose id is the process's: Redis's event loop).
    main_ns: u64,
    /// The module's data-plane threads (named `autoloc-dp<i>`).
    dataplane_ns: u64,
    /// Threads read.
    threads: usize,
}

impl ProcCpu {
    fn add(&mut self, o: &ProcCpu) {
        self.total_ns += o.total_ns;
        self.main_ns += o.main_ns;
        self.dataplane_ns += o.dataplane_ns;
        self.threads += o.threads;
    }

    /// What ran between `before` and this reading (0 where a counter went back: a thread gone).
    fn since(&self, before: &ProcCpu) -> ProcCpu {
        ProcCpu {
            total_ns: self.total_ns.saturating_sub(before.total_ns),
            main_ns: self.main_ns.saturating_sub(before.main_ns),
            dataplane_ns: self.dataplane_ns.saturating_sub(before.dataplane_ns),
            threads: self.threads,
        }
    }
}

/// The CPU of every thread of process `pid` so far; `None` if its task list cannot be read.
fn process_cpu(pid: u32) -> Option<ProcCpu> {
    let mut out = ProcCpu::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let dir = entry.path();
        // A thread that exits between the listing and the read is skipped.
        let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        out.total_ns += ns;
        out.threads += 1;
        if entry.file_name().to_str() == Some(pid.to_string().as_str()) {
            out.main_ns += ns;
        } else if std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with("autoloc-dp"))
        {
            out.dataplane_ns += ns;
        }
    }
    Some(out)
}

/// The CPU of every thread of the processes `pids` so far, summed (one unreadable counts 0).
fn servers_cpu(pids: &[u32]) -> ProcCpu {
    let mut out = ProcCpu::default();
    for &p in pids {
        if let Some(c) = process_cpu(p) {
            out.add(&c);
        }
    }
    out
}

/// CPU per second the processes `pids` use with nothing asked of them, ns: over 300 ms, after
/// 50 ms for the data-plane threads to stop polling and park.
fn idle_cpu_per_s(pids: &[u32]) -> f64 {
    std::thread::sleep(Duration::from_millis(50));
    let before = servers_cpu(pids);
    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let used = servers_cpu(pids).since(&before);
    used.total_ns as f64 / began.elapsed().as_secs_f64().max(f64::EPSILON)
}

/// How often a cell samples the masters' data-plane busy share.
const BUSY_SAMPLE: Duration = Duration::from_millis(50);
/// The window the data-plane threads' busy share is over (the module's `LOAD_WINDOW`).
const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// A counter of `AUTOLOC.STATS` (the `dataplane_*` ones), summed over the masters `infos`.
fn dataplane_field(infos: &mut [Connection], field: &str) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for conn in infos.iter_mut() {
        let stats = StorageStats::read(conn)?;
        sum += stats
            .get(field)
            .with_context(|| format!("AUTOLOC.STATS has no {field}"))? as f64;
    }
    Ok(sum)
}

/// The masters of the cluster measured: their processes, a connection to each for its
/// counters, and the CPU they use per second with nothing asked, ns.
struct Masters<'a> {
    pids: &'a [u32],
    stats: Vec<Connection>,
    idle_per_s: f64,
}

fn measure(
    cell: &Cell<'_>,
    rt: &mut Runtime,
    placement: Placement,
    starts: &[String],
    masters: &mut Masters<'_>,
    plan: harness::Plan,
) -> anyhow::Result<Row> {
    let k_text = cell.k.to_string();
    let (mut invocations, mut round_trips, mut bytes) = (0u64, 0u64, 0u64);
    let (mut hops, mut hop_shards, mut storage_parts, mut parts) = (0u64, 0u64, 0u64, 0u64);
    let mut client_cpu_ns = 0u64;
    let mut next = 0usize;
    let (khop, _) = rt.resolve("khop")?;
    let storage_before = rt.table().slot(khop).snapshot(Side::Storage);
    let Masters {
        pids: servers,
        stats: infos,
        idle_per_s,
    } = masters;
    let idle_per_s = *idle_per_s;
    let requests_before = dataplane_field(infos, "dataplane_requests")?;
    let (mut busy_samples, mut busy_sum) = (0u32, 0.0f64);
    // A reading is of the last window to end, which began up to two windows (and an idle
    // thread's nap) before: from then on, the windows read lie wholly in the cell.
    let mut next_sample = Instant::now() + 2 * BUSY_WINDOW + BUSY_SAMPLE;
    let cpu_before = servers_cpu(servers);
    let wall = Instant::now();
    let m = harness::measure(plan, |h| {
        if Instant::now() >= next_sample {
            busy_sum += dataplane_field(infos, "dataplane_busy_permille")? / 1000.0;
            busy_samples += 1;
            next_sample += BUSY_SAMPLE;
        }
        let start = &starts[next % starts.len()];
        next += 1;
        let began = Instant::now();
        let inv = rt.invoke("khop", &[start.as_str(), k_text.as_str()], placement)?;
        record(h, began.elapsed());
        invocations += 1;
        round_trips += inv.round_trips;
        bytes += inv.bytes;
        client_cpu_ns += inv.cpu.as_nanos() as u64;
        hops += inv.hops.len() as u64;
        for hop in &inv.hops {
            hop_shards += hop.shards() as u64;
            storage_parts += hop.parts_on(HopSide::Storage) as u64;
            parts += hop.shards() as u64;
        }
        Ok(1)
    })?;
    let wall_ns = wall.elapsed().as_nanos() as f64;
    let cpu_after = servers_cpu(servers);
    if cpu_after.threads < cpu_before.threads {
        eprintln!(
            "  {} {} k={} {}: {} server thread(s) exited during the cell; their CPU is not counted",
            cell.graph,
            cell.shards,
            cell.k,
            cell.mode,
            cpu_before.threads - cpu_after.threads
        );
    }
    let cpu = cpu_after.since(&cpu_before);
    let requests = dataplane_field(infos, "dataplane_requests")? - requests_before;
    // Cores' worth of serving, all masters, over the cell.
    if busy_samples == 0 {
        // A cell shorter than the first sample: its last window.
        busy_sum = dataplane_field(infos, "dataplane_busy_permille")? / 1000.0;
        busy_samples = 1;
    }
    let busy = busy_sum / f64::from(busy_samples);
    let storage = rt
        .table()
        .slot(khop)
        .snapshot(Side::Storage)
        .since(&storage_before);
    let per = |x: u64| x as f64 / invocations.max(1) as f64;
    let wall_per_inv = wall_ns / invocations.max(1) as f64;
    let hops_per_inv = if hops > 0 {
        per(hops)
    } else {
        f64::from(cell.k)
    };
    let secs = m.elapsed.as_secs_f64();
    Ok(Row {
        graph: cell.graph.to_string(),
        shards: cell.shards,
        k: cell.k,
        mode: cell.mode.to_string(),
        ops_per_s: m.ops as f64 / secs.max(f64::EPSILON),
        p50_ns: m.latency.value_at_quantile(0.5),
        p99_ns: m.latency.value_at_quantile(0.99),
        round_trips_per_inv: per(round_trips),
        bytes_per_inv: per(bytes),
        round_trips_per_hop: per(round_trips) / hops_per_inv,
        shards_per_hop: if hops > 0 {
            hop_shards as f64 / hops as f64
        } else {
            0.0
        },
        storage_share: if parts > 0 {
            storage_parts as f64 / parts as f64
        } else {
            0.0
        },
        runs: invocations,
        client_cpu_ns_per_inv: per(client_cpu_ns),
        storage_cpu_ns_per_inv: per(storage.storage_cpu_ns),
        queue_ns_per_inv: per(storage.queue_ns),
        main_cpu_ns_per_inv: per(cpu.main_ns),
        server_cpu_ns_per_inv: (per(cpu.total_ns) - idle_per_s * wall_per_inv / 1e9).max(0.0),
        dataplane_cpu_ns_per_inv: per(cpu.dataplane_ns),
        server_idle_cpu_ns_per_s: idle_per_s,
        wall_ns_per_inv: wall_per_inv,
        shard_busy_ns_per_inv: busy * wall_per_inv,
        shard_requests_per_inv: requests / invocations.max(1) as f64,
    })
}

/// A way's step in [`other_shard`], owned.
type StepFn<'a> = Box<dyn FnMut(&mut hdrhistogram::Histogram<u64>) -> anyhow::Result<u64> + 'a>;

/// How long each way takes its turn in [`other_shard`].
const TURN: Duration = Duration::from_millis(100);

/// On a cluster of `n` masters holding `social`: the example guests `khop_wasm` (k=2) and
/// `pagerank_wasm` (5 iterations) and `aggregate` (300 keys from the start) storage-side,
/// pushed back and finished here or forwarded from shard to shard, and compute-side; and the
/// built-in `pagerank` by parts storage-side and compute-side. Each function's results are
/// checked equal across its ways first.
fn other_shard(
    n: usize,
    social: &Path,
    transport: Transport,
    rtt_us: u64,
    starts: usize,
    plan: harness::Plan,
) -> anyhow::Result<Vec<OtherRow>> {
    progress(&format!("pushed back or forwarded, on a cluster of {n}"));
    let cluster = RedisCluster::start(n, 0, &[])?;
    let mut conn = harness::connect(&cluster.url())?;
    load_autoloc_json(&mut conn, social, true, false)?;
    let starts = pick_starts(&cluster.url(), starts, 4096)?;
    let rtt = Duration::from_micros(rtt_us);
    let runtime = |other: OtherShard| -> anyhow::Result<Runtime> {
        Ok(Runtime::connect(&cluster.url())?
            .with_transport(transport)?
            .with_other_shard(other)
            .with_emulated_rtt(rtt)?)
    };
    runtime(OtherShard::Finish)?.load_function(&autoloc::guests::bytes("khop_wasm")?, true)?;
    runtime(OtherShard::Finish)?.load_function(&autoloc::guests::bytes("pagerank_wasm")?, true)?;
    let mut rows = Vec::new();
    for (function, rest) in [
        ("khop_wasm", "2"),
        ("pagerank_wasm", "5"),
        ("aggregate", "300"),
        ("pagerank", "5"),
    ] {
        let ways: Vec<(&str, OtherShard, Placement)> = match function {
            "pagerank" => vec![
                ("by parts", OtherShard::Finish, Placement::Storage),
                ("compute", OtherShard::Finish, Placement::Compute),
            ],
            _ => vec![
                ("finish", OtherShard::Finish, Placement::Storage),
                ("forward", OtherShard::Forward, Placement::Storage),
                ("compute", OtherShard::Finish, Placement::Compute),
            ],
        };
        let mut rts: Vec<Runtime> = ways
            .iter()
            .map(|&(_, other, _)| runtime(other))
            .collect::<anyhow::Result<_>>()?;
        // The same result every way, before anything is timed.
        for start in &starts {
            let args = [start.as_str(), rest];
            let mut outputs = Vec::new();
            for (rt, &(way, _, placement)) in rts.iter_mut().zip(&ways) {
                let out = rt
                    .invoke(function, &args, placement)
                    .with_context(|| format!("{function} {args:?} {way}"))?
                    .output;
                outputs.push(out);
            }
            ensure!(
                outputs.windows(2).all(|w| w[0] == w[1]),
                "{function} {args:?}: the ways differ"
            );
        }
        // (round trips, bytes, forwarded, pushed back, invocations) per way.
        let mut counts = vec![[0u64; 5]; ways.len()];
        let mut steps: Vec<StepFn<'_>> = rts
            .iter_mut()
            .zip(&ways)
            .zip(counts.iter_mut())
            .map(|((rt, &(_, _, placement)), count)| {
                let starts = &starts;
                let mut next = 0usize;
                Box::new(move |h: &mut hdrhistogram::Histogram<u64>| {
                    let start = &starts[next % starts.len()];
                    next += 1;
                    let began = Instant::now();
                    let inv = rt.invoke(function, &[start.as_str(), rest], placement)?;
                    record(h, began.elapsed());
                    count[0] += inv.round_trips;
                    count[1] += inv.bytes;
                    count[2] += u64::from(inv.forwarded);
                    count[3] += u64::from(inv.pushed_back);
                    count[4] += 1;
                    Ok(1u64)
                }) as StepFn<'_>
            })
            .collect();
        let mut step_refs: Vec<harness::Step<'_>> = steps
            .iter_mut()
            .map(|s| &mut **s as harness::Step<'_>)
            .collect();
        let measured = harness::measure_interleaved(plan, TURN, &mut step_refs)?;
        drop(step_refs);
        drop(steps);
        for ((&(way, _, _), m), c) in ways.iter().zip(measured).zip(&counts) {
            let per = |x: u64| x as f64 / c[4].max(1) as f64;
            rows.push(OtherRow {
                function: function.to_string(),
                shards: n,
                way: way.to_string(),
                ops_per_s: m.ops as f64 / m.elapsed.as_secs_f64().max(f64::EPSILON),
                p50_ns: m.latency.value_at_quantile(0.5),
                p99_ns: m.latency.value_at_quantile(0.99),
                round_trips_per_inv: per(c[0]),
                bytes_per_inv: per(c[1]),
                forwarded_per_inv: per(c[2]),
                pushed_back_share: per(c[3]),
            });
        }
    }
    Ok(rows)
}

/// The rows of [`other_shard`], as text, with each way's throughput against `finish` (or, for
/// pagerank, `by parts`).
fn other_table(rows: &[OtherRow]) -> String {
    let mut t = Table::new()
        .left("function", 13)
        .right("shards", 6)
        .left("way", 8)
        .right("ops/s", 9)
        .right("p50", 10)
        .right("p99", 10)
        .right("rt/inv", 7)
        .right("bytes/inv", 10)
        .right("fwd/inv", 7)
        .right("pushed%", 7)
        .right("vs first", 8);
    for r in rows {
        let first = rows
            .iter()
            .find(|f| f.function == r.function)
            .map_or(r.ops_per_s, |f| f.ops_per_s);
        t.row(&[
            &r.function,
            &r.shards,
            &r.way,
            &format!("{:.0}", r.ops_per_s),
            &harness::format_ns(r.p50_ns as f64),
            &harness::format_ns(r.p99_ns as f64),
            &format!("{:.2}", r.round_trips_per_inv),
            &format!("{:.0}", r.bytes_per_inv),
            &format!("{:.2}", r.forwarded_per_inv),
            &format!("{:.0}", 100.0 * r.pushed_back_share),
            &format!("{:.2}x", r.ops_per_s / first.max(f64::EPSILON)),
        ]);
    }
    t.to_string()
}

/// The vertices at each distance below k from `start`: 1, then the sizes of the levels of
/// `khop start d` for each d < k (its result less the vertices within d-1).
fn levels(rt: &mut Runtime, start: &str, k: u32) -> anyhow::Result<Vec<f64>> {
    let mut out = vec![1.0];
    let mut within = 0usize;
    for d in 1..k {
        let Output::Ids(ids) = rt
            .invoke("khop", &[start, &d.to_string()], Placement::Compute)?
            .output
        else {
            anyhow::bail!("khop gave no ids");
        };
        out.push((ids.len() - within) as f64);
        within = ids.len();
    }
    Ok(out)
}

fn table(rows: &[Row]) -> String {
    let mut t = Table::new()
        .left("graph", 7)
        .right("shards", 6)
        .right("k", 2)
        .left("mode", 8)
        .right("ops/s", 9)
        .right("p50", 10)
        .right("p99", 10)
        .right("rt/inv", 7)
        .right("bytes/inv", 10)
        .right("rt/hop", 7)
        .right("shards/hop", 10)
        .right("storage%", 8);
    for r in rows {
        t.row(&[
            &r.graph,
            &r.shards,
            &r.k,
            &r.mode,
            &format!("{:.0}", r.ops_per_s),
            &harness::format_ns(r.p50_ns as f64),
            &harness::format_ns(r.p99_ns as f64),
            &format!("{:.2}", r.round_trips_per_inv),
            &format!("{:.0}", r.bytes_per_inv),
            &format!("{:.2}", r.round_trips_per_hop),
            &format!("{:.2}", r.shards_per_hop),
            &format!("{:.0}", 100.0 * r.storage_share),
        ]);
    }
    t.to_string()
}

/// The CPU per invocation each cell measured: what calibrates the shard model.
fn cpu_table(rows: &[Row]) -> String {
    let mut t = Table::new()
        .left("graph", 7)
        .right("shards", 6)
        .right("k", 2)
        .left("mode", 8)
        .right("runs", 7)
        .right("client cpu", 10)
        .right("storage cpu", 11)
        .right("queued", 9)
        .right("servers", 9)
        .right("data plane", 10)
        .right("dp serving", 10)
        .right("dp req", 6)
        .right("main threads", 12)
        .right("idle/s", 9);
    for r in rows {
        t.row(&[
            &r.graph,
            &r.shards,
            &r.k,
            &r.mode,
            &r.runs,
            &harness::format_ns(r.client_cpu_ns_per_inv),
            &harness::format_ns(r.storage_cpu_ns_per_inv),
            &harness::format_ns(r.queue_ns_per_inv),
            &harness::format_ns(r.server_cpu_ns_per_inv),
            &harness::format_ns(r.dataplane_cpu_ns_per_inv),
            &harness::format_ns(r.shard_busy_ns_per_inv),
            &format!("{:.2}", r.shard_requests_per_inv),
            &harness::format_ns(r.main_cpu_ns_per_inv),
            &harness::format_ns(r.server_idle_cpu_ns_per_s),
        ]);
    }
    format!(
        "CPU per invocation (client: its thread; storage cpu: what the shards reported; servers: \
         every thread of the masters' processes, measured, less their idle rate (idle/s: CPU per \
         second with nothing asked); of which the data-plane threads (polling included) and the \
         Redis main threads; dp serving: the data-plane threads' time holding Redis's lock \
         serving, from AUTOLOC.STATS, polling excluded; dp req: requests they served):\n{t}"
    )
}

/// Per storage cell: the storage CPU the shards reported against the CPU their processes used,
/// measured (the rest: framing, the lock, polling between requests, the data plane's own work).
fn reported_against_measured(rows: &[Row]) -> Vec<String> {
    let mut lines = vec![
        "reported storage CPU against the masters' measured process CPU, per invocation:".into(),
    ];
    for r in rows.iter().filter(|r| r.mode == "storage") {
        lines.push(format!(
            "  {} k={} on {} shard(s): reported {} = {:.0}% of the processes' measured {} \
             (data-plane threads {} for {} of wall: polling fills the free cores), {:.0}% of the \
             data-plane threads' serving time {}",
            r.graph,
            r.k,
            r.shards,
            harness::format_ns(r.storage_cpu_ns_per_inv),
            100.0 * r.storage_cpu_ns_per_inv / r.server_cpu_ns_per_inv.max(f64::EPSILON),
            harness::format_ns(r.server_cpu_ns_per_inv),
            harness::format_ns(r.dataplane_cpu_ns_per_inv),
            harness::format_ns(r.wall_ns_per_inv),
            100.0 * r.storage_cpu_ns_per_inv / r.shard_busy_ns_per_inv.max(f64::EPSILON),
            harness::format_ns(r.shard_busy_ns_per_inv),
        ));
    }
    lines
}

/// Per graph and k: the share of parts `auto` put storage-side, by cluster size.
fn auto_shares(rows: &[Row], rtt_us: u64) -> Vec<String> {
    let rtt = if rtt_us == 0 {
        "loopback".to_string()
    } else {
        format!("{rtt_us} us emulated round trip")
    };
    let mut lines = Vec::new();
    let mut keys: Vec<(&str, u32)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.graph.as_str(), r.k)) {
            keys.push((r.graph.as_str(), r.k));
        }
    }
    for (graph, k) in keys {
        let shares: Vec<String> = rows
            .iter()
            .filter(|r| r.mode == "auto" && r.graph == graph && r.k == k)
            .map(|r| format!("{} shard(s) {:.0}%", r.shards, 100.0 * r.storage_share))
            .collect();
        if !shares.is_empty() {
            lines.push(format!(
                "auto, {graph} k={k} ({rtt}): parts storage-side {}",
                shares.join(", ")
            ));
        }
    }
    lines
}

/// Per graph, k and size: storage-side per hop against the per-key client, and round trips per
/// hop against shards touched.
fn ratios(rows: &[Row]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in rows.iter().filter(|r| r.mode == "storage") {
        let Some(base) = rows.iter().find(|b| {
            b.mode == "per-key" && b.graph == r.graph && b.k == r.k && b.shards == r.shards
        }) else {
            continue;
        };
        lines.push(format!(
            "{} k={} on {} shard(s): storage per hop {:.1}x the per-key client's invocations/s; {:.2} round trips per hop for {:.2} shards touched",
            r.graph,
            r.k,
            r.shards,
            r.ops_per_s / base.ops_per_s.max(f64::EPSILON),
            r.round_trips_per_hop,
            r.shards_per_hop
        ));
    }
    lines
}

/// Invocations per second against cluster size, one line per mode, a panel per graph and k.
fn plot(path: &PathBuf, rows: &[Row], machine: &Machine) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let mut panels: Vec<(String, u32)> = rows.iter().map(|r| (r.graph.clone(), r.k)).collect();
    panels.dedup();
    let width = 460 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (area, foot) = root.split_vertically(490);
    foot.draw(&Text::new(
        format!(
            "bench-cluster: one client thread, one invocation at a time; {} cores, {}",
            machine.cores, machine.cpu
        ),
        (10, 10),
        ("sans-serif", 13).into_font(),
    ))?;
    let max_shards = rows.iter().map(|r| r.shards).max().unwrap_or(1) as f64;
    for (panel, (graph, k)) in area
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(&panels)
    {
        let cells: Vec<&Row> = rows
            .iter()
            .filter(|r| &r.graph == graph && r.k == *k)
            .collect();
        let lo = cells
            .iter()
            .map(|r| r.ops_per_s)
            .fold(f64::MAX, f64::min)
            .max(1.0);
        let hi = cells.iter().map(|r| r.ops_per_s).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{graph}, khop k={k}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..max_shards + 0.5, (lo / 2.0..hi * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("shards (masters)")
            .y_desc("invocations/s (log)")
            .x_labels(max_shards as usize + 1)
            .draw()?;
        for (i, mode) in MODES.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = cells
                .iter()
                .filter(|r| r.mode == *mode)
                .map(|r| (r.shards as f64, r.ops_per_s))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*mode)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_command_parses() {
        let a: Args = parse_line(
            "bench-cluster --json bench/results/bench-cluster.json --plot bench/results/bench-cluster.svg",
        );
        assert_eq!(a.shards, vec![1, 2, 3]);
        assert_eq!(a.ks, vec![2, 3]);
        assert!(a.json.path.is_some() && a.plot.path.is_some());
        assert_eq!(a.rtt_us, 0);
        let a: Args = parse_line("bench-cluster --shards 1,3 --ks 2 --rtt-us 100");
        assert_eq!(a.rtt_us, 100);
    }

    /// This process's own CPU, read as the masters' is: it grows after busy work, and the
    /// main thread's is part of the whole.
    #[test]
    fn process_cpu_reads_this_process_and_grows() {
        let pid = std::process::id();
        let before = process_cpu(pid).expect("own /proc readable");
        assert!(before.threads >= 1);
        assert!(before.main_ns <= before.total_ns);
        let mut x = 0u64;
        let began = Instant::now();
        while began.elapsed() < Duration::from_millis(30) {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
            }
        }
        std::hint::black_box(x);
        let after = process_cpu(pid).expect("own /proc readable");
        assert!(after.total_ns > before.total_ns, "{before:?} {after:?}");
        // Two readings summed: more than one.
        let summed = servers_cpu(&[pid, pid]);
        assert!(summed.threads >= 2 && summed.total_ns > after.total_ns);
        // A process that is not there reads as nothing.
        assert_eq!(process_cpu(u32::MAX), None);
        assert_eq!(servers_cpu(&[u32::MAX]), ProcCpu::default());
    }
}
