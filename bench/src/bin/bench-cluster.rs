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
//! of the shards' Redis main threads (which serve the per-key client's GETs); and each start's
//! vertices at each distance below k. Those calibrate the shard model of
//! `autoloc::placement::shards`, which projects to more shards: `bench-sim --cluster` on this
//! program's `--json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context as _};
use autoloc::hops::HopSide;
use autoloc::load::{load_autoloc_json, write_graph, Graph};
use autoloc::placement::shards::Workload;
use autoloc::server::cluster::RedisCluster;
use autoloc::{Output, Placement, ReadMode, Runtime, Side, Transport};
use autoloc_bench::args::{CellArgs, JsonArgs, PlotArgs};
use autoloc_bench::harness::{self, load_average, progress, record, Machine, PALETTE};
use autoloc_bench::table::Table;
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
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    parameters: BTreeMap<String, String>,
    rows: Vec<Row>,
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
                let mut runtimes: Vec<(&str, Runtime, Placement)> = MODES
                    .iter()
                    .map(|&mode| -> anyhow::Result<_> {
                        let rt = Runtime::connect(&cluster.url())?;
                        Ok(match mode {
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
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                check_equal(&mut runtimes, &starts, k)?;
                for (mode, rt, placement) in runtimes.iter_mut() {
                    let cell = Cell {
                        graph,
                        shards: n,
                        k,
                        mode,
                    };
                    rows.push(measure(&cell, rt, *placement, &starts, &mains, plan)?);
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
    print!("{}", table(&rows));
    println!();
    print!("{}", cpu_table(&rows));
    println!();
    for line in ratios(&rows) {
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

/// CPU time a thread of another process has run, ns (`/proc/<pid>/task/<tid>/schedstat`'s
/// first field); 0 where it cannot be read.
fn thread_cpu_ns(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU of the main threads of `pids` (a Redis server's main thread has its process's id), ns.
fn main_threads_cpu_ns(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| thread_cpu_ns(p, p)).sum()
}

fn measure(
    cell: &Cell<'_>,
    rt: &mut Runtime,
    placement: Placement,
    starts: &[String],
    mains: &[u32],
    plan: harness::Plan,
) -> anyhow::Result<Row> {
    let k_text = cell.k.to_string();
    let (mut invocations, mut round_trips, mut bytes) = (0u64, 0u64, 0u64);
    let (mut hops, mut hop_shards, mut storage_parts, mut parts) = (0u64, 0u64, 0u64, 0u64);
    let mut client_cpu_ns = 0u64;
    let mut next = 0usize;
    let (khop, _) = rt.resolve("khop")?;
    let storage_before = rt.table().slot(khop).snapshot(Side::Storage);
    let main_before = main_threads_cpu_ns(mains);
    let m = harness::measure(plan, |h| {
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
    let main_cpu_ns = main_threads_cpu_ns(mains).saturating_sub(main_before);
    let storage = rt
        .table()
        .slot(khop)
        .snapshot(Side::Storage)
        .since(&storage_before);
    let per = |x: u64| x as f64 / invocations.max(1) as f64;
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
        main_cpu_ns_per_inv: per(main_cpu_ns),
    })
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
        .right("main threads", 12);
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
            &harness::format_ns(r.main_cpu_ns_per_inv),
        ]);
    }
    format!("CPU per invocation:\n{t}")
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
    }
}
