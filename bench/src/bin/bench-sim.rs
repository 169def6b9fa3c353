//! `bench-sim`: every placement policy in the closed-loop model (`autoloc::placement::sim`) at
//! scales this machine cannot run: RTT 1 to 200 us, 1 to 64 compute nodes, 1 to 16 storage
//! cores.
//!
//! The model runs with costs `bench-placement` measured (`--calibration`: its `--json`, whose
//! `calibration` object holds each function's CPU per side, round trips, bytes and read CPU),
//! or with the built-in profiles, and says which. At each point of the grid each policy
//! (`storage`, `compute`, `autoloc2021`, `kayak`, `adaptive`) runs in closed loop against the
//! model, one `Policy::step` per 50 ms epoch from every function storage-side, for 200 epochs;
//! its score is the mean throughput over the last quarter (probes included). The reference is
//! the best fixed assignment of shares (`System::best`: a grid, then a pattern search). Every
//! number is the model's, not a measurement: the model's own limits are in `sim.rs`.
//!
//! Workloads: `mix` (the calibrated functions in their measured proportions), `contrast` (the
//! function with the most round trips and the CPU-heaviest one per round trip, half of the
//! compute CPU each), or any calibrated function alone by name.
//!
//! `--cluster` (a `bench-cluster --json`) runs the shard model instead
//! (`autoloc::placement::shards`): `khop` storage-side per hop, compute-side per hop and with a
//! per-key client on a Redis Cluster, calibrated from that run, checked against its measured
//! 1-3 shard cells (in sample, and the largest size held out of the calibration), then projected
//! to `--shards` at the measured loopback round trip and `--cluster-rtt-us`, for `--clients`
//! clients of `--cores-per-node` cores with `--in-flight-per-node` invocations each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use autoloc::placement::sim::{sweep, Calibration, FnProfile, Grid, PointResult, Settle};
use autoloc_bench::args::{JsonArgs, PlotArgs};
use autoloc_bench::harness::{print_header, Machine, PALETTE};
use autoloc_bench::placement_bench;
use autoloc_bench::table::Table;
use clap::Parser;
use serde::Serialize;

/// The policies compared, in column order.
const POLICIES: [&str; 5] = ["storage", "compute", "autoloc2021", "kayak", "adaptive"];
/// One letter per policy, for the text maps and the plot.
const LETTERS: [char; 5] = ['s', 'c', '2', 'k', 'a'];
/// Throughputs within this fraction of the best tie.
const TIE: f64 = 0.01;
/// A policy "matches the oracle" within this fraction.
const NEAR_ORACLE: f64 = 0.05;

#[derive(Debug, Parser)]
#[command(
    about = "Each placement policy (storage, compute, autoloc2021, kayak, adaptive) against the \
             best fixed assignment in the closed-loop model, over RTT x compute nodes x storage \
             cores, from bench-placement's measured costs"
)]
#[command(mut_arg("json", |a| a.help(
    "Write the grid, every policy's steady state and the summary as JSON here"
)))]
#[command(mut_arg("plot", |a| a.help(
    "Write an SVG heat map here: the winning policy per (RTT, nodes), a panel per storage core \
     count and workload"
)))]
struct Args {
    /// `bench-placement --json` output (its `calibration` object is used) or a bare
    /// calibration object; without it, the built-in profiles.
    #[arg(long)]
    calibration: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    plot: PlotArgs,
    /// Workloads, comma-separated: mix, contrast, or a calibrated function's name.
    #[arg(long, value_delimiter = ',', default_value = "mix,contrast")]
    workload: Vec<String>,
    /// Round trips to sweep, us.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,50,100,200")]
    rtt_us: Vec<f64>,
    /// Compute node counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    nodes: Vec<u32>,
    /// Storage core counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    storage_cores: Vec<f64>,
    /// Cores of each compute node.
    #[arg(long, default_value_t = 4.0)]
    cores_per_node: f64,
    /// Invocations each compute node keeps in flight.
    #[arg(long, default_value_t = 16.0)]
    in_flight_per_node: f64,
    /// Epochs each policy runs.
    #[arg(long, default_value_t = 200)]
    epochs: u64,
    /// Length of an epoch, ms.
    #[arg(long, default_value_t = 50)]
    epoch_ms: u64,
    /// A controller per compute node, seeing its own counters and the others' storage load as
    /// background (default: one controller seeing the whole system).
    #[arg(long)]
    per_node: bool,
    /// Threads (default: every core this process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// `bench-cluster --json` output: run the shard model, calibrated from it, instead of the
    /// placement sweep.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Shard model: cluster sizes (masters) to project to.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,8,16,32,64")]
    shards: Vec<u32>,
    /// Shard model: client (compute node) counts.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<u32>,
    /// Shard model: cores each shard runs functions and reads on (Redis: one lock).
    #[arg(long, default_value_t = 1.0)]
    shard_cores: f64,
    /// Shard model: round trips to project at besides the measured loopback one, us.
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    cluster_rtt_us: Vec<f64>,
    /// Shard model: the cores the measured shards and their client shared (default: the cores
    /// of the machine `bench-cluster` ran on; 0: each had its own). Calibration and validation
    /// then add a delay per round trip for each polling thread beyond them; the projection
    /// gives every shard and client cores of their own.
    #[arg(long)]
    shared_cores: Option<f64>,
}

/// A workload: a name, what it is, its functions with their weights.
#[derive(Debug, Clone, Serialize)]
struct Workload {
    name: String,
    description: String,
    functions: Vec<FnProfile>,
}

/// `name`'s functions from `cal`.
fn workload(name: &str, cal: &Calibration) -> anyhow::Result<Workload> {
    let fs = &cal.functions;
    anyhow::ensure!(!fs.is_empty(), "the calibration has no functions");
    let percent = |fs: &[FnProfile]| {
        let total: f64 = fs.iter().map(|f| f.weight.max(0.0)).sum();
        fs.iter()
            .map(|f| format!("{} {:.1}%", f.name, 100.0 * f.weight.max(0.0) / total))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        "mix" => {
            anyhow::ensure!(
                fs.iter().map(|f| f.weight.max(0.0)).sum::<f64>() > 0.0,
                "the calibration's functions all have weight 0: no mix"
            );
            Ok(Workload {
                name: name.into(),
                description: format!("the calibrated mix: {}", percent(fs)),
                functions: fs.clone(),
            })
        }
        "contrast" => {
            // The most round trips (the least CPU among equals), and of the rest the most
            // compute CPU per round trip.
            let fanout = fs
                .iter()
                .max_by(|a, b| {
                    a.round_trips
                        .total_cmp(&b.round_trips)
                        .then(b.compute_cpu_ns.total_cmp(&a.compute_cpu_ns))
                })
                .expect("not empty");
            let heavy = fs
                .iter()
                .filter(|f| f.name != fanout.name)
                .max_by(|a, b| {
                    (a.compute_cpu_ns / a.round_trips.max(1.0))
                        .total_cmp(&(b.compute_cpu_ns / b.round_trips.max(1.0)))
                })
                .context("contrast needs two calibrated functions")?;
            anyhow::ensure!(
                fanout.round_trips > heavy.round_trips,
                "contrast: no function has more round trips than {} ({})",
                heavy.name,
                heavy.round_trips
            );
            // Half of the compute CPU each: weights inversely proportional to CPU per call.
            let inv = |f: &FnProfile| 1.0 / f.compute_cpu_ns.max(1.0);
            let total = inv(fanout) + inv(heavy);
            let functions = vec![
                FnProfile {
                    weight: inv(fanout) / total,
                    ..fanout.clone()
                },
                FnProfile {
                    weight: inv(heavy) / total,
                    ..heavy.clone()
                },
            ];
            Ok(Workload {
                name: name.into(),
                description: format!(
                    "{} ({} round trips, {} CPU) and {} ({} round trips, {} CPU), half of the \
                     compute CPU each: {}",
                    fanout.name,
                    fanout.round_trips,
                    us(fanout.compute_cpu_ns),
                    heavy.name,
                    heavy.round_trips,
                    us(heavy.compute_cpu_ns),
                    percent(&functions)
                ),
                functions,
            })
        }
        one => {
            let f = fs.iter().find(|f| f.name == one).with_context(|| {
                let names: Vec<&str> = fs.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "unknown workload '{one}' (mix, contrast, or a calibrated function: {})",
                    names.join(", ")
                )
            })?;
            Ok(Workload {
                name: one.into(),
                description: format!("{one} alone"),
                functions: vec![FnProfile {
                    weight: 1.0,
                    ..f.clone()
                }],
            })
        }
    }
}

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

/// The calibration to run with, and whether it was measured.
fn calibration(path: Option<&Path>) -> anyhow::Result<(Calibration, bool)> {
    let Some(path) = path else {
        return Ok((Calibration::builtin(), false));
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let cal = Calibration::from_json(&text)
        .with_context(|| format!("{}: no calibration object", path.display()))?;
    anyhow::ensure!(
        cal.bandwidth > 0.0 && cal.rtt_ns >= 0.0,
        "{}: bandwidth must be positive and rtt_ns not negative",
        path.display()
    );
    for f in &cal.functions {
        anyhow::ensure!(
            [
                f.weight,
                f.storage_cpu_ns,
                f.compute_cpu_ns,
                f.round_trips,
                f.bytes,
                f.read_cpu_ns,
                f.keys
            ]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0),
            "{}: function {} has a negative or non-finite cost",
            path.display(),
            f.name
        );
    }
    Ok((cal, true))
}

/// One workload's sweep and what it says.
#[derive(Debug)]
struct WorkloadResult {
    workload: Workload,
    points: Vec<PointResult>,
    summary: Summary,
}

impl WorkloadResult {
    /// The workload's functions, in order.
    fn function_names(&self) -> Vec<String> {
        self.workload
            .functions
            .iter()
            .map(|f| f.name.clone())
            .collect()
    }
}

/// Per policy: points within 5% of the oracle, points won alone, points won in a tie; and every
/// point where adaptive loses to a baseline by more than the tie margin.
#[derive(Debug, Serialize)]
struct Summary {
    points: usize,
    policies: Vec<PolicySummary>,
    adaptive_losses: Vec<Loss>,
    /// Points where a policy beat the oracle by more than the tie margin (the oracle's search
    /// missed the optimum there): should be empty.
    oracle_beaten: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PolicySummary {
    policy: String,
    near_oracle: usize,
    wins_alone: usize,
    wins_tied: usize,
    worst_relative: f64,
}

#[derive(Debug, Serialize)]
struct Loss {
    storage_cores: f64,
    nodes: u32,
    rtt_us: f64,
    adaptive: f64,
    baseline: String,
    baseline_relative: f64,
    adaptive_shares: Vec<f64>,
    baseline_shares: Vec<f64>,
    oracle_shares: Vec<f64>,
}

fn summarise(points: &[PointResult]) -> Summary {
    let policies = POLICIES
        .iter()
        .map(|&p| {
            let rel: Vec<f64> = points.iter().filter_map(|r| r.relative(p)).collect();
            let alone = points.iter().filter(|r| r.winners(TIE) == [p]).count();
            let tied = points
                .iter()
                .filter(|r| {
                    let w = r.winners(TIE);
                    w.len() > 1 && w.contains(&p)
                })
                .count();
            PolicySummary {
                policy: p.to_string(),
                near_oracle: rel.iter().filter(|&&x| x >= 1.0 - NEAR_ORACLE).count(),
                wins_alone: alone,
                wins_tied: tied,
                worst_relative: rel.iter().copied().fold(f64::INFINITY, f64::min),
            }
        })
        .collect();
    let mut adaptive_losses = Vec::new();
    let mut oracle_beaten = Vec::new();
    for r in points {
        let shares = |p: &str| {
            r.policies
                .iter()
                .find(|x| x.policy == p)
                .map(|x| x.steady.shares.clone())
                .unwrap_or_default()
        };
        let a = r.relative("adaptive").unwrap_or(0.0);
        // The baseline that beats adaptive by the most, if any does by more than the margin.
        let best = POLICIES[..4]
            .iter()
            .filter_map(|&b| r.relative(b).map(|x| (b, x)))
            .filter(|&(_, x)| a < x * (1.0 - TIE))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some((b, x)) = best {
            adaptive_losses.push(Loss {
                storage_cores: r.scale.storage_cores,
                nodes: r.scale.nodes,
                rtt_us: r.scale.rtt_ns / 1e3,
                adaptive: a,
                baseline: b.to_string(),
                baseline_relative: x,
                adaptive_shares: shares("adaptive"),
                baseline_shares: shares(b),
                oracle_shares: r.oracle_shares.clone(),
            });
        }
        for p in &r.policies {
            if p.steady.throughput > r.oracle.throughput * (1.0 + TIE) {
                oracle_beaten.push(format!(
                    "{} at {} storage cores, {} nodes, {} us: {:.3}",
                    p.policy,
                    r.scale.storage_cores,
                    r.scale.nodes,
                    r.scale.rtt_ns / 1e3,
                    p.steady.throughput / r.oracle.throughput
                ));
            }
        }
    }
    Summary {
        points: points.len(),
        policies,
        adaptive_losses,
        oracle_beaten,
    }
}

fn letters(winners: &[&str]) -> String {
    winners
        .iter()
        .filter_map(|w| POLICIES.iter().position(|p| p == w).map(|i| LETTERS[i]))
        .collect()
}

fn shares_text(names: &[String], shares: &[f64]) -> String {
    placement_bench::shares_text(names.iter().map(String::as_str).zip(shares.iter().copied()))
}

/// Every point as a table row.
fn table(w: &WorkloadResult) -> String {
    let names = w.function_names();
    let mut t = Table::new()
        .right("storage", 7)
        .right("nodes", 5)
        .right("rtt_us", 6)
        .right("oracle/s", 11)
        .gap(2)
        .right("storage", 7)
        .right("compute", 7)
        .right("autoloc2021", 11)
        .right("kayak", 7)
        .right("adaptive", 8)
        .gap(2)
        .left("winner", 24)
        .left("oracle shares", 0);
    for r in &w.points {
        let rel = |p: &str| format!("{:.3}", r.relative(p).unwrap_or(f64::NAN));
        t.row(&[
            &r.scale.storage_cores,
            &r.scale.nodes,
            &(r.scale.rtt_ns / 1e3),
            &format!("{:.0}", r.oracle.throughput),
            &rel("storage"),
            &rel("compute"),
            &rel("autoloc2021"),
            &rel("kayak"),
            &rel("adaptive"),
            &r.winners(TIE).join("="),
            &shares_text(&names, &r.oracle_shares),
        ]);
    }
    t.to_string()
}

/// Per storage core count, a map of the winners' letters: rows = nodes, columns = RTT.
fn maps(w: &WorkloadResult, grid: &Grid) -> String {
    let mut out = String::new();
    for &sc in &grid.storage_cores {
        let _ = writeln!(
            out,
            "{sc} storage cores (rows: compute nodes; columns: rtt us)"
        );
        let mut t = Table::new().right("", 6);
        for &rtt in &grid.rtt_ns {
            t = t.right((rtt / 1e3).to_string(), 6);
        }
        for &n in grid.nodes.iter().rev() {
            let cells: Vec<String> = grid
                .rtt_ns
                .iter()
                .map(|&rtt| {
                    w.points
                        .iter()
                        .find(|r| {
                            r.scale.storage_cores == sc
                                && r.scale.nodes == n
                                && r.scale.rtt_ns == rtt
                        })
                        .map_or_else(|| "?".to_string(), |r| letters(&r.winners(TIE)))
                })
                .collect();
            let mut row: Vec<&dyn std::fmt::Display> = vec![&n];
            row.extend(cells.iter().map(|c| c as &dyn std::fmt::Display));
            t.row(&row);
        }
        out.push_str(&t.to_string());
    }
    out
}

fn print_summary(w: &WorkloadResult) {
    let s = &w.summary;
    println!(
        "summary ({}, {} points; a tie is within {:.0}%):",
        w.workload.name,
        s.points,
        100.0 * TIE
    );
    let mut t = Table::new()
        .gap(2)
        .left("policy", 12)
        .right(format!("within {:.0}% of oracle", 100.0 * NEAR_ORACLE), 18)
        .right("wins alone", 10)
        .right("wins tied", 10)
        .right("worst / oracle", 14);
    for p in &s.policies {
        t.row(&[
            &p.policy,
            &format!("{} / {}", p.near_oracle, s.points),
            &p.wins_alone,
            &p.wins_tied,
            &format!("{:.3}", p.worst_relative),
        ]);
    }
    print!("{t}");
    let names = w.function_names();
    println!(
        "  adaptive loses to a baseline by more than {:.0}% at {} of {} points{}",
        100.0 * TIE,
        s.adaptive_losses.len(),
        s.points,
        if s.adaptive_losses.is_empty() {
            ""
        } else {
            ":"
        }
    );
    for l in &s.adaptive_losses {
        println!(
            "    {:>2} storage cores, {:>2} nodes, {:>3} us: adaptive {:.3} < {} {:.3}  \
             (adaptive {} | {} {} | oracle {})",
            l.storage_cores,
            l.nodes,
            l.rtt_us,
            l.adaptive,
            l.baseline,
            l.baseline_relative,
            shares_text(&names, &l.adaptive_shares),
            l.baseline,
            shares_text(&names, &l.baseline_shares),
            shares_text(&names, &l.oracle_shares)
        );
    }
    if !s.oracle_beaten.is_empty() {
        println!("  the oracle's search missed the optimum (a policy beat it):");
        for b in &s.oracle_beaten {
            println!("    {b}");
        }
    }
}

/// One grid point in the `--json` report (rounded: shares to 0.001, ratios to 0.0001).
#[derive(Debug, Serialize)]
struct PointRow {
    storage_cores: f64,
    nodes: u32,
    rtt_us: f64,
    oracle_per_s: f64,
    oracle_shares: Vec<f64>,
    oracle_storage_util: f64,
    oracle_compute_util: f64,
    winners: Vec<String>,
    /// Per policy: steady throughput per second, it over the oracle's, its worst scored epoch
    /// over the oracle's, its final shares, and storage and compute utilisation under them.
    policies: BTreeMap<String, PolicyRow>,
}

#[derive(Debug, Serialize)]
struct PolicyRow {
    per_s: f64,
    relative: f64,
    min_relative: f64,
    shares: Vec<f64>,
    storage_util: f64,
    compute_util: f64,
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

fn point_row(r: &PointResult) -> PointRow {
    let oracle = r.oracle.throughput.max(1e-12);
    PointRow {
        storage_cores: r.scale.storage_cores,
        nodes: r.scale.nodes,
        rtt_us: r.scale.rtt_ns / 1e3,
        oracle_per_s: round(r.oracle.throughput, 1),
        oracle_shares: r.oracle_shares.iter().map(|&s| round(s, 3)).collect(),
        oracle_storage_util: round(r.oracle.storage_util, 3),
        oracle_compute_util: round(r.oracle.compute_util, 3),
        winners: r.winners(TIE).into_iter().map(String::from).collect(),
        policies: r
            .policies
            .iter()
            .map(|p| {
                let s = &p.steady;
                let row = PolicyRow {
                    per_s: round(s.throughput, 1),
                    relative: round(s.throughput / oracle, 4),
                    min_relative: round(s.min_throughput / oracle, 4),
                    shares: s.shares.iter().map(|&x| round(x, 3)).collect(),
                    storage_util: round(s.outcome.storage_util, 3),
                    compute_util: round(s.outcome.compute_util, 3),
                };
                (p.policy.clone(), row)
            })
            .collect(),
    }
}

/// The `--json` report: pretty, except one line per grid point.
fn json_report(
    machine: &Machine,
    params: &BTreeMap<String, String>,
    cal: &Calibration,
    measured: bool,
    grid: &Grid,
    settle: &Settle,
    results: &[WorkloadResult],
) -> anyhow::Result<String> {
    use serde_json::{to_string, to_string_pretty};
    let indent = |text: String, by: &str| text.replace('\n', &format!("\n{by}"));
    let mut out = String::from("{\n");
    let _ = writeln!(
        out,
        "  \"machine\": {},",
        indent(to_string_pretty(machine)?, "  ")
    );
    let _ = writeln!(
        out,
        "  \"parameters\": {},",
        indent(to_string_pretty(params)?, "  ")
    );
    let _ = writeln!(
        out,
        "  \"calibration\": {},",
        indent(to_string_pretty(cal)?, "  ")
    );
    let _ = writeln!(out, "  \"measured\": {measured},");
    let _ = writeln!(out, "  \"grid\": {},", to_string(grid)?);
    let _ = writeln!(out, "  \"settle\": {},", to_string(settle)?);
    out.push_str("  \"workloads\": [\n");
    for (i, w) in results.iter().enumerate() {
        out.push_str("    {\n");
        let _ = writeln!(out, "      \"workload\": {},", to_string(&w.workload)?);
        let _ = writeln!(
            out,
            "      \"summary\": {},",
            indent(to_string_pretty(&w.summary)?, "      ")
        );
        out.push_str("      \"points\": [\n");
        for (j, r) in w.points.iter().enumerate() {
            let sep = if j + 1 < w.points.len() { "," } else { "" };
            let _ = writeln!(out, "        {}{sep}", to_string(&point_row(r))?);
        }
        out.push_str("      ]\n");
        let sep = if i + 1 < results.len() { "," } else { "" };
        let _ = writeln!(out, "    }}{sep}");
    }
    out.push_str("  ]\n}\n");
    // What was written parses back.
    serde_json::from_str::<serde_json::Value>(&out).context("the JSON report does not parse")?;
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.cluster {
        return cluster::run(&args, path);
    }
    anyhow::ensure!(args.epochs >= 4, "--epochs must be at least 4");
    anyhow::ensure!(args.epoch_ms > 0, "--epoch-ms must be at least 1");
    anyhow::ensure!(
        args.cores_per_node > 0.0 && args.in_flight_per_node > 0.0,
        "--cores-per-node and --in-flight-per-node must be positive"
    );
    anyhow::ensure!(
        args.rtt_us.iter().all(|&r| r > 0.0 && r.is_finite())
            && args.storage_cores.iter().all(|&c| c > 0.0 && c.is_finite())
            && args.nodes.iter().all(|&n| n > 0),
        "--rtt-us, --nodes and --storage-cores must be positive"
    );
    let (cal, measured) = calibration(args.calibration.as_deref())?;
    let workloads: Vec<Workload> = args
        .workload
        .iter()
        .map(|n| workload(n.trim(), &cal))
        .collect::<anyhow::Result<_>>()?;
    let grid = Grid {
        rtt_ns: args.rtt_us.iter().map(|us| us * 1e3).collect(),
        nodes: args.nodes.clone(),
        storage_cores: args.storage_cores.clone(),
        cores_per_node: args.cores_per_node,
        in_flight_per_node: args.in_flight_per_node,
        bandwidth: cal.bandwidth,
    };
    let settle = Settle {
        epochs: args.epochs,
        epoch_s: args.epoch_ms as f64 / 1e3,
        start_share: 1.0,
        per_node: args.per_node,
    };
    let machine = Machine::detect();
    let threads = args.threads.unwrap_or(machine.cores).max(1);
    let source = if measured {
        format!(
            "{} (from {}; measured at rtt {:.1} us)",
            cal.source,
            args.calibration
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display(),
            cal.rtt_ns / 1e3
        )
    } else {
        format!("{} (no --calibration given)", cal.source)
    };
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    params.insert("calibration".into(), source.clone());
    params.insert(
        "model".into(),
        "autoloc::placement::sim (closed loop, Little's law, M/M/c-like waits); every number \
         below is simulated, none measured"
            .into(),
    );
    params.insert(
        "grid".into(),
        format!(
            "rtt {:?} us x nodes {:?} x storage cores {:?}",
            args.rtt_us, args.nodes, args.storage_cores
        ),
    );
    params.insert(
        "node".into(),
        format!(
            "{} cores, {} invocations in flight, {:.2} GB/s link (the calibration's)",
            args.cores_per_node,
            args.in_flight_per_node,
            cal.bandwidth / 1e9
        ),
    );
    params.insert(
        "run".into(),
        format!(
            "each policy {} epochs of {} ms from every share at 1, scored by the mean throughput \
             of the last quarter; {}",
            args.epochs,
            args.epoch_ms,
            if args.per_node {
                "a controller per node (own counters, others' storage load as background)"
            } else {
                "one controller seeing the whole system"
            }
        ),
    );
    params.insert(
        "oracle".into(),
        "best fixed shares (System::best: grid, then pattern search to 1/1000)".into(),
    );
    params.insert(
        "winner".into(),
        format!(
            "highest steady throughput; within {:.0}% is a tie (letters: s storage, c compute, \
             2 autoloc2021, k kayak, a adaptive)",
            100.0 * TIE
        ),
    );
    params.insert("threads".into(), threads.to_string());
    print_header(&machine, &params);

    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for w in workloads {
        let points = sweep(&grid, &w.functions, &POLICIES, &settle, threads)?;
        let summary = summarise(&points);
        results.push(WorkloadResult {
            workload: w,
            points,
            summary,
        });
    }
    for w in &results {
        println!("workload {}: {}", w.workload.name, w.workload.description);
        println!("throughput of each policy / the oracle's, and the winner:");
        print!("{}", table(w));
        println!();
        println!("winners ({}):", w.workload.name);
        print!("{}", maps(w, &grid));
        println!();
    }
    for w in &results {
        print_summary(w);
        println!();
    }
    eprintln!("swept in {:.1} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.json.path {
        let text = json_report(&machine, &params, &cal, measured, &grid, &settle, &results)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot.path {
        let footnote = format!(
            "Simulated (autoloc::placement::sim), not measured, from: {source}. Nodes of {} \
             cores, {} in flight; {} epochs of {} ms, last quarter. Cell colour: the winning \
             policy (grey: a tie within {:.0}%, letters below); number: adaptive / oracle.",
            args.cores_per_node,
            args.in_flight_per_node,
            args.epochs,
            args.epoch_ms,
            100.0 * TIE
        );
        plot(path, &results, &grid, &footnote)?;
        eprintln!("wrote {}", path.display());
    }
    if results.is_empty() {
        bail!("no workload");
    }
    Ok(())
}

/// One heat-map panel per (workload, storage core count): x = RTT, y = compute nodes (both
/// log-spaced, one cell per grid value), each cell coloured by its winner.
fn plot(
    path: &Path,
    results: &[WorkloadResult],
    grid: &Grid,
    footnote: &str,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    const TIE_COLOUR: RGBColor = RGBColor(200, 200, 200);
    let cols = grid.storage_cores.len().max(1);
    let rows = results.len().max(1);
    let (panel_w, panel_h) = (330u32, 320u32);
    let width = panel_w * cols as u32 + 20;
    let height = 40 + panel_h * rows as u32 + 50;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, rest) = root.split_vertically(40);
    let (body, foot) = rest.split_vertically(panel_h * rows as u32);
    // Legend: a swatch per policy, then the tie colour.
    let mut x = 10;
    let entries = POLICIES
        .iter()
        .zip(LETTERS)
        .zip(PALETTE)
        .map(|((p, l), c)| (format!("{p} ({l})"), c))
        .chain(std::iter::once(("tie".to_string(), TIE_COLOUR)));
    for (label, c) in entries {
        legend.draw(&Rectangle::new([(x, 12), (x + 16, 28)], c.filled()))?;
        legend.draw(&Text::new(
            label.clone(),
            (x + 22, 14),
            ("sans-serif", 14).into_font(),
        ))?;
        x += 40 + 8 * label.len() as i32;
    }
    // The footnote, wrapped at about 200 characters a line.
    let mut lines = vec![String::new()];
    for word in footnote.split(' ') {
        if lines.last().is_some_and(|l| l.len() + word.len() > 200) {
            lines.push(String::new());
        }
        let l = lines.last_mut().expect("one line");
        if !l.is_empty() {
            l.push(' ');
        }
        l.push_str(word);
    }
    for (i, line) in lines.iter().enumerate() {
        foot.draw(&Text::new(
            line.clone(),
            (10, 8 + 16 * i as i32),
            ("sans-serif", 12).into_font().color(&BLACK.mix(0.8)),
        ))?;
    }

    let panels = body.split_evenly((rows, cols));
    let (nx, ny) = (grid.rtt_ns.len(), grid.nodes.len());
    let rtt_labels: Vec<String> = grid.rtt_ns.iter().map(|r| format!("{}", r / 1e3)).collect();
    let node_labels: Vec<String> = grid.nodes.iter().map(|n| n.to_string()).collect();
    let at = |labels: &[String], v: f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    for (wi, w) in results.iter().enumerate() {
        for (ci, &sc) in grid.storage_cores.iter().enumerate() {
            let area = &panels[wi * cols + ci];
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{}: {} storage core{}",
                        w.workload.name,
                        sc,
                        if sc == 1.0 { "" } else { "s" }
                    ),
                    ("sans-serif", 15),
                )
                .margin(6)
                .x_label_area_size(34)
                .y_label_area_size(40)
                .build_cartesian_2d(-0.5..(nx as f64 - 0.5), -0.5..(ny as f64 - 0.5))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(nx)
                .y_labels(ny)
                .x_label_formatter(&|v| at(&rtt_labels, *v))
                .y_label_formatter(&|v| at(&node_labels, *v))
                .x_desc("RTT, us (log)")
                .y_desc("compute nodes (log)")
                .label_style(("sans-serif", 11))
                .draw()?;
            for r in w.points.iter().filter(|r| r.scale.storage_cores == sc) {
                let (Some(xi), Some(yi)) = (
                    grid.rtt_ns.iter().position(|&v| v == r.scale.rtt_ns),
                    grid.nodes.iter().position(|&v| v == r.scale.nodes),
                ) else {
                    continue;
                };
                let (x, y) = (xi as f64, yi as f64);
                let winners = r.winners(TIE);
                let colour = match winners.as_slice() {
                    [one] => POLICIES
                        .iter()
                        .position(|p| p == one)
                        .map_or(TIE_COLOUR, |i| PALETTE[i]),
                    _ => TIE_COLOUR,
                };
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    colour.mix(0.75).filled(),
                )))?;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    WHITE.stroke_width(1),
                )))?;
                let centre = Pos::new(HPos::Center, VPos::Center);
                let adaptive = r.relative("adaptive").unwrap_or(f64::NAN);
                chart.draw_series(std::iter::once(Text::new(
                    format!("{adaptive:.2}"),
                    (x, y + 0.17),
                    ("sans-serif", 11).into_font().color(&BLACK).pos(centre),
                )))?;
                if winners.len() > 1 {
                    chart.draw_series(std::iter::once(Text::new(
                        letters(&winners),
                        (x, y - 0.22),
                        ("sans-serif", 9)
                            .into_font()
                            .color(&BLACK.mix(0.8))
                            .pos(centre),
                    )))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_invocations_parse() {
        // ci/test's smoke run, and the README's.
        let a: Args = parse_line(
            "bench-sim --calibration c.json --rtt-us 1,200 --nodes 1,64 --storage-cores 1,16 \
             --epochs 60",
        );
        assert_eq!(a.rtt_us, [1.0, 200.0]);
        let a: Args = parse_line("bench-sim --calibration c.json --json s.json --plot s.svg");
        assert!(a.json.path.is_some() && a.plot.path.is_some());
        let a: Args = parse_line(
            "bench-sim --cluster bench/results/bench-cluster.json --json bench/results/bench-sim-cluster.json --plot bench/results/bench-sim-cluster.svg",
        );
        assert!(a.cluster.is_some());
        assert_eq!(a.shards, [1, 2, 3, 8, 16, 32, 64]);
        assert_eq!(a.cluster_rtt_us, [20.0, 100.0]);
        assert_eq!(a.shared_cores, None);
        let a: Args = parse_line("bench-sim --cluster c.json --shared-cores 0");
        assert_eq!(a.shared_cores, Some(0.0));
    }
}

/// `--cluster`: the shard model, calibrated from `bench-cluster`, checked, projected.
mod cluster {
    use std::collections::BTreeMap;
    use std::path::Path;

    use anyhow::Context as _;
    use autoloc::placement::shards::{
        calibrate, load, solve, validate, Check, Cluster, GraphCost, Limit, Measured, ShardMeter,
        Way, Workload,
    };
    use autoloc_bench::harness::{format_ns, print_header, Machine, PALETTE};
    use autoloc_bench::table::Table;
    use serde::Serialize;

    use super::Args;

    /// One projected point.
    #[derive(Debug, Clone, Serialize)]
    struct Point {
        graph: String,
        k: u32,
        shards: u32,
        clients: u32,
        /// The round trip, us; `loopback` points use each way's measured one.
        rtt_us: Option<f64>,
        way: Way,
        per_s: f64,
        latency_ns: f64,
        shard_util: f64,
        client_util: f64,
        limit: Limit,
        round_trips: f64,
    }

    #[derive(Debug, Serialize)]
    struct Report {
        machine: Machine,
        parameters: BTreeMap<String, String>,
        calibration: Vec<GraphCost>,
        validation: Vec<Check>,
        held_out_shards: Option<u32>,
        held_out: Vec<Check>,
        points: Vec<Point>,
    }

    /// What a `bench-cluster --json` holds for the model.
    struct Run {
        cells: Vec<Measured>,
        workloads: Vec<Workload>,
        /// The machine it ran on, in words.
        machine: String,
        /// Its cores.
        cores: Option<f64>,
    }

    /// The measured cells and traversals of a `bench-cluster --json`.
    fn read(path: &Path) -> anyhow::Result<Run> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let workloads: Vec<Workload> = serde_json::from_value(v["workloads"].clone())
            .with_context(|| {
                format!(
                    "{}: no workloads (a bench-cluster --json from before the shard model?)",
                    path.display()
                )
            })?;
        let num = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
        let mut cells = Vec::new();
        for r in v["rows"].as_array().context("no rows")? {
            let Some(way) = r["mode"].as_str().and_then(Way::from_name) else {
                continue;
            };
            cells.push(Measured {
                graph: r["graph"].as_str().unwrap_or("?").to_string(),
                k: num(r, "k") as u32,
                shards: num(r, "shards") as u32,
                way,
                ops_per_s: num(r, "ops_per_s"),
                client_cpu_ns: num(r, "client_cpu_ns_per_inv"),
                storage_cpu_ns: num(r, "storage_cpu_ns_per_inv"),
                queue_ns: num(r, "queue_ns_per_inv"),
                main_cpu_ns: num(r, "main_cpu_ns_per_inv"),
                server_cpu_ns: num(r, "server_cpu_ns_per_inv"),
                shard_busy_ns: num(r, "shard_busy_ns_per_inv"),
                round_trips: num(r, "round_trips_per_inv"),
                runs: r["runs"].as_u64().unwrap_or(0),
            });
        }
        anyhow::ensure!(!cells.is_empty(), "{}: no cells", path.display());
        let machine = format!(
            "{} cores, {}",
            v["machine"]["cores"],
            v["machine"]["cpu"].as_str().unwrap_or("?")
        );
        Ok(Run {
            cells,
            workloads,
            machine,
            cores: v["machine"]["cores"].as_f64(),
        })
    }

    fn calibration_table(costs: &[GraphCost]) -> String {
        let mut t = Table::new()
            .left("graph", 7)
            .left("way", 8)
            .right("shard/part", 10)
            .right("shard/vertex", 12)
            .right("client/part", 11)
            .right("client/vertex", 13)
            .right("loopback rtt", 12)
            .right("+/poller", 8)
            .gap(2)
            .left("shard cost from", 15);
        for g in costs {
            for w in &g.ways {
                let meter = match w.shard_meter {
                    ShardMeter::Serving => "serving time",
                    ShardMeter::Reported => "reported cpu",
                    ShardMeter::MainThreads => "main threads",
                };
                t.row(&[
                    &g.graph,
                    &w.way.name(),
                    &format_ns(w.part.shard_ns),
                    &format_ns(w.part.shard_vertex_ns),
                    &format_ns(w.part.client_ns),
                    &format_ns(w.part.client_vertex_ns),
                    &format_ns(w.rtt_ns),
                    &format_ns(w.contention_ns),
                    &meter,
                ]);
            }
        }
        t.to_string()
    }

    fn checks_table(checks: &[Check]) -> String {
        let mut t = Table::new()
            .left("graph", 7)
            .right("k", 2)
            .right("shards", 6)
            .left("way", 8)
            .right("measured/s", 10)
            .right("model/s", 9)
            .right("miss", 7)
            .right("rt measured", 11)
            .right("rt model", 8);
        for c in checks {
            t.row(&[
                &c.graph,
                &c.k,
                &c.shards,
                &c.way.name(),
                &format!("{:.0}", c.measured_per_s),
                &format!("{:.0}", c.model_per_s),
                &format!("{:+.0}%", 100.0 * c.miss()),
                &format!("{:.2}", c.measured_round_trips),
                &format!("{:.2}", c.model_round_trips),
            ]);
        }
        t.to_string()
    }

    /// Per way and shard count: the mean and the largest |miss|.
    fn misses(checks: &[Check]) -> Vec<String> {
        let mut keys: Vec<(Way, u32)> = checks.iter().map(|c| (c.way, c.shards)).collect();
        keys.sort();
        keys.dedup();
        keys.iter()
            .map(|&(way, shards)| {
                let m: Vec<f64> = checks
                    .iter()
                    .filter(|c| c.way == way && c.shards == shards)
                    .map(|c| c.miss().abs())
                    .collect();
                format!(
                    "  {:<8} {} shard(s): mean |miss| {:.0}%, largest {:.0}% ({} cells)",
                    way.name(),
                    shards,
                    100.0 * m.iter().sum::<f64>() / m.len().max(1) as f64,
                    100.0 * m.iter().copied().fold(0.0, f64::max),
                    m.len()
                )
            })
            .collect()
    }

    fn rtt_label(rtt_us: Option<f64>) -> String {
        rtt_us.map_or_else(|| "loopback".to_string(), |r| format!("{r} us"))
    }

    fn points_table(points: &[Point]) -> String {
        let mut t = Table::new()
            .left("graph", 7)
            .right("k", 2)
            .left("rtt", 8)
            .right("clients", 7)
            .right("shards", 6)
            .gap(2)
            .right("storage/s", 10)
            .right("compute/s", 10)
            .right("per-key/s", 10)
            .right("st/pk", 6)
            .right("st/cp", 6)
            .gap(2)
            .left("storage limit", 13)
            .right("shard util", 10)
            .right("rt/inv st", 9);
        let mut i = 0;
        while i < points.len() {
            let p = &points[i];
            let same = |q: &&Point| {
                q.graph == p.graph
                    && q.k == p.k
                    && q.shards == p.shards
                    && q.clients == p.clients
                    && q.rtt_us == p.rtt_us
            };
            let group: Vec<&Point> = points[i..].iter().take_while(same).collect();
            i += group.len();
            let of = |w: Way| group.iter().find(|q| q.way == w);
            let per_s = |w: Way| of(w).map_or(f64::NAN, |q| q.per_s);
            let st = of(Way::Storage);
            t.row(&[
                &p.graph,
                &p.k,
                &rtt_label(p.rtt_us),
                &p.clients,
                &p.shards,
                &format!("{:.0}", per_s(Way::Storage)),
                &format!("{:.0}", per_s(Way::Compute)),
                &format!("{:.0}", per_s(Way::PerKey)),
                &format!("{:.1}", per_s(Way::Storage) / per_s(Way::PerKey)),
                &format!("{:.2}", per_s(Way::Storage) / per_s(Way::Compute)),
                &st.map_or("?".into(), |q| format!("{:?}", q.limit).to_lowercase()),
                &st.map_or("?".into(), |q| format!("{:.2}", q.shard_util)),
                &st.map_or("?".into(), |q| format!("{:.1}", q.round_trips)),
            ]);
        }
        t.to_string()
    }

    pub(super) fn run(args: &Args, path: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            args.shards.iter().all(|&s| s > 0)
                && args.clients.iter().all(|&c| c > 0)
                && args.shard_cores > 0.0
                && args.cores_per_node > 0.0
                && args.in_flight_per_node >= 1.0
                && args
                    .cluster_rtt_us
                    .iter()
                    .all(|r| r.is_finite() && *r >= 0.0),
            "--shards, --clients, --shard-cores, --cores-per-node, --in-flight-per-node and \
             --cluster-rtt-us must be positive"
        );
        let Run {
            cells,
            workloads,
            machine: measured_on,
            cores: machine_cores,
        } = read(path)?;
        anyhow::ensure!(
            args.shared_cores.is_none_or(|c| c.is_finite() && c >= 0.0),
            "--shared-cores must be 0 or more"
        );
        let shared_cores = match args.shared_cores {
            Some(c) if c > 0.0 => Some(c),
            Some(_) => None,
            None => machine_cores.filter(|&c| c > 0.0),
        };
        let costs = calibrate(&cells, &workloads, shared_cores).map_err(anyhow::Error::msg)?;
        let checks = validate(&cells, &workloads, &costs);
        // The largest measured size, held out of a second calibration.
        let largest = cells.iter().map(|c| c.shards).max().unwrap_or(1);
        let held_out_shards = (cells.iter().any(|c| c.shards < largest)).then_some(largest);
        let held_out = match held_out_shards {
            Some(h) => {
                let fit: Vec<Measured> = cells.iter().filter(|c| c.shards < h).cloned().collect();
                let test: Vec<Measured> = cells.iter().filter(|c| c.shards == h).cloned().collect();
                let costs =
                    calibrate(&fit, &workloads, shared_cores).map_err(anyhow::Error::msg)?;
                validate(&test, &workloads, &costs)
            }
            None => Vec::new(),
        };
        let in_flight = args.in_flight_per_node.round() as u32;
        let mut rtts: Vec<Option<f64>> = vec![None];
        rtts.extend(args.cluster_rtt_us.iter().map(|&r| Some(r)));
        let mut points = Vec::new();
        for w in &workloads {
            let Some(cost) = costs.iter().find(|g| g.graph == w.graph) else {
                continue;
            };
            // The projection weighs every start alike.
            let traversals = w.traversals(0);
            for &rtt in &rtts {
                for &clients in &args.clients {
                    for &shards in &args.shards {
                        for way in Way::ALL {
                            let Some(wc) = cost.way(way) else { continue };
                            let l = load(way, &traversals, f64::from(shards), &wc.part);
                            let o = solve(
                                &Cluster {
                                    shards,
                                    shard_cores: args.shard_cores,
                                    clients,
                                    client_cores: args.cores_per_node,
                                    in_flight,
                                    rtt_ns: rtt.map_or(wc.rtt_ns, |r| r * 1e3),
                                },
                                &l,
                            );
                            points.push(Point {
                                graph: w.graph.clone(),
                                k: w.k,
                                shards,
                                clients,
                                rtt_us: rtt,
                                way,
                                per_s: o.throughput,
                                latency_ns: o.latency_ns,
                                shard_util: o.shard_util,
                                client_util: o.client_util,
                                limit: o.limit,
                                round_trips: l.parts,
                            });
                        }
                    }
                }
            }
        }

        let machine = Machine::detect();
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        params.insert(
            "calibration".into(),
            format!("{} (measured on {measured_on})", path.display()),
        );
        params.insert(
            "model".into(),
            "autoloc::placement::shards (khop per hop on S shards, closed loop, mean value \
             analysis); every projected number is simulated, none measured"
                .into(),
        );
        params.insert(
            "clients".into(),
            format!(
                "{:?}, {} cores and {} invocations in flight each",
                args.clients, args.cores_per_node, in_flight
            ),
        );
        params.insert(
            "shards".into(),
            format!("{:?}, {} core(s) each", args.shards, args.shard_cores),
        );
        params.insert(
            "rtt".into(),
            format!(
                "loopback (each way's, as calibrated), {:?} us",
                args.cluster_rtt_us
            ),
        );
        params.insert(
            "shared cores".into(),
            match shared_cores {
                Some(c) => format!(
                    "the measured shards and client shared {c} cores: calibration and validation \
                     add +/poller to each round trip per polling thread (S shards' + the client's) \
                     beyond them; the projection gives each its own"
                ),
                None => {
                    "none modelled (each measured shard and client had cores of its own)".into()
                }
            },
        );
        print_header(&machine, &params);
        println!(
            "calibration (per part of a hop; per-key: per key; shard cost from: serving time = the \
             data-plane threads' time serving under Redis's lock, measured; main threads = their \
             CPU, measured; reported cpu = the storage CPU the shards reported):"
        );
        print!("{}", calibration_table(&costs));
        println!();
        println!(
            "validation: the calibrated model in the measured setting (one client thread, one \
             invocation in flight, loopback) against the measured throughput; miss = model / \
             measured - 1"
        );
        print!("{}", checks_table(&checks));
        for line in misses(&checks) {
            println!("{line}");
        }
        if let Some(h) = held_out_shards {
            println!();
            println!("held out: calibrated on the cells below {h} shards only, checked on {h}:");
            print!("{}", checks_table(&held_out));
            for line in misses(&held_out) {
                println!("{line}");
            }
        }
        println!();
        println!(
            "projection (SIMULATED, NOT MEASURED): invocations/s of all clients; st/pk = storage \
             per hop / per-key, st/cp = storage / compute per hop"
        );
        print!("{}", points_table(&points));

        if let Some(out) = &args.json.path {
            params.insert(
                "load_average".into(),
                autoloc_bench::harness::load_average(),
            );
            let report = Report {
                machine: machine.clone(),
                parameters: params,
                calibration: costs.clone(),
                validation: checks.clone(),
                held_out_shards,
                held_out: held_out.clone(),
                points: points.clone(),
            };
            autoloc_bench::harness::write_json(out, &report)?;
            eprintln!("wrote {}", out.display());
        }
        if let Some(out) = &args.plot.path {
            let clients = args.clients.iter().copied().max().unwrap_or(1);
            plot(out, &checks, &points, clients, in_flight)?;
            eprintln!("wrote {}", out.display());
        }
        Ok(())
    }

    /// Top row: per graph and k, measured (dots) and modelled (lines) throughput at the measured
    /// sizes. Bottom row: the projection for `clients` clients, per way and round trip.
    fn plot(
        path: &Path,
        checks: &[Check],
        points: &[Point],
        clients: u32,
        in_flight: u32,
    ) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let mut panels: Vec<(String, u32)> =
            points.iter().map(|p| (p.graph.clone(), p.k)).collect();
        panels.dedup();
        let cols = panels.len().max(1);
        let root = SVGBackend::new(path, (420 * cols as u32, 860)).into_drawing_area();
        root.fill(&WHITE)?;
        let (body, foot) = root.split_vertically(830);
        foot.draw(&Text::new(
            format!(
                "bench-sim --cluster. Top: measured (dots) against the calibrated model (lines), \
                 one client, one invocation in flight, loopback. Bottom: SIMULATED, NOT MEASURED: \
                 {clients} clients x {in_flight} in flight; line width: round trip (thin \
                 loopback, then the --cluster-rtt-us values)."
            ),
            (10, 8),
            ("sans-serif", 12).into_font(),
        ))?;
        let areas = body.split_evenly((2, cols));
        let log_range = |v: &mut dyn Iterator<Item = f64>| {
            let (lo, hi) = v.fold((f64::MAX, 1.0f64), |(l, h), x| (l.min(x), h.max(x)));
            (lo.max(0.1) / 1.5)..(hi * 1.5)
        };
        for (i, (graph, k)) in panels.iter().enumerate() {
            // Validation.
            let cells: Vec<&Check> = checks
                .iter()
                .filter(|c| &c.graph == graph && c.k == *k)
                .collect();
            let max_s = cells.iter().map(|c| c.shards).max().unwrap_or(1) as f64;
            let y = log_range(&mut cells.iter().flat_map(|c| [c.measured_per_s, c.model_per_s]));
            let mut chart = ChartBuilder::on(&areas[i])
                .caption(
                    format!("{graph} k={k}: measured and model"),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(0.5..max_s + 0.5, y.log_scale())?;
            chart
                .configure_mesh()
                .x_desc("shards")
                .y_desc("invocations/s (log)")
                .x_labels(max_s as usize + 1)
                .draw()?;
            for (j, way) in Way::ALL.iter().enumerate() {
                let c = PALETTE[j % PALETTE.len()];
                let mut of: Vec<&&Check> = cells.iter().filter(|x| x.way == *way).collect();
                of.sort_by_key(|x| x.shards);
                chart
                    .draw_series(LineSeries::new(
                        of.iter().map(|x| (f64::from(x.shards), x.model_per_s)),
                        c.stroke_width(2),
                    ))?
                    .label(way.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
                chart.draw_series(of.iter().map(|x| {
                    Circle::new((f64::from(x.shards), x.measured_per_s), 4, c.filled())
                }))?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
            // Projection.
            let ps: Vec<&Point> = points
                .iter()
                .filter(|p| &p.graph == graph && p.k == *k && p.clients == clients)
                .collect();
            let max_s = ps.iter().map(|p| p.shards).max().unwrap_or(1) as f64;
            let y = log_range(&mut ps.iter().map(|p| p.per_s));
            let mut chart = ChartBuilder::on(&areas[cols + i])
                .caption(
                    format!("{graph} k={k}: simulated, {clients} clients"),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d((1.0..max_s * 1.2).log_scale(), y.log_scale())?;
            chart
                .configure_mesh()
                .x_desc("shards (log)")
                .y_desc("invocations/s (log)")
                .draw()?;
            let mut rtts: Vec<Option<f64>> = Vec::new();
            for p in &ps {
                if !rtts.contains(&p.rtt_us) {
                    rtts.push(p.rtt_us);
                }
            }
            for (j, way) in Way::ALL.iter().enumerate() {
                let c = PALETTE[j % PALETTE.len()];
                for (r, rtt) in rtts.iter().enumerate() {
                    let line: Vec<(f64, f64)> = ps
                        .iter()
                        .filter(|p| p.way == *way && p.rtt_us == *rtt)
                        .map(|p| (f64::from(p.shards), p.per_s))
                        .collect();
                    let series = chart.draw_series(LineSeries::new(
                        line,
                        c.mix(1.0 - 0.25 * r as f64).stroke_width(1 + 2 * r as u32),
                    ))?;
                    if r == 0 {
                        series
                            .label(way.name())
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
                    }
                }
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
}
