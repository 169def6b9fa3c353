//! `bench-responsiveness`: how long Redis's own clients wait while functions run inside.
//!
//! A private redis-server with the module (`cores <server-core>`: one pinned data-plane thread)
//! holds a 64 KiB blob and an R-MAT graph. For each scenario, a load runs beside a probe that
//! sends `PING` on a plain RESP connection, one at a time, and records each reply's latency:
//! - `idle`: no load;
//! - `<placement>/<transport>`: `--threads` threads, each keeping `--in-flight` `digest`
//!   invocations (`--rounds` rounds of MD5 over the blob) in flight at that placement over that
//!   transport, and one thread running `khop` (k=2) invocations one at a time beside them.
//!
//! Every row gives the PING percentiles and maximum, the load's throughput, and what the module
//! counted meanwhile: how often an invocation gave Redis's lock back, how often the main thread
//! took it then, how many `AUTOLOC.CALL`/`AUTOLOC.INVOKE` runs moved off the main thread, and
//! Redis's own `module-acquire-GIL` latency event (the longest wait of its main thread for the
//! lock, in ms, with `latency-monitor-threshold 1`).
//!
//! `--module PATH` measures another build of the module (e.g. an older commit's) the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use autoloc::load::{write_graph, Graph};
use autoloc::server::RedisServer;
use autoloc::stats::StorageStats;
use autoloc::{Placement, Runtime, Transport};
use autoloc_bench::args::{GraphArgs, JsonArgs, ModuleArgs, ServerCoreArgs};
use autoloc_bench::harness::{self, histogram, record, Machine};
use autoloc_dataplane::{Connection, Frame};
use clap::Parser;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "PING latency of Redis's own clients under storage-side and compute-side load")]
#[command(mut_arg("server_core", |a| a.help("The core the module's data-plane thread is pinned to")))]
#[command(mut_arg("json", |a| a.help("Write the rows as JSON here")))]
struct Args {
    #[command(flatten)]
    server: ServerCoreArgs,
    /// Load threads running digest.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// digest invocations each load thread keeps in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// digest's rounds of MD5 over the 64 KiB blob.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// PINGs per scenario.
    #[arg(long, default_value_t = 20_000)]
    pings: u64,
    /// The module's `lock-us` (how long a data-plane thread holds Redis's lock at a time).
    #[arg(long)]
    lock_us: Option<u64>,
    /// Transports of the loaded scenarios (comma-separated).
    #[arg(long, default_value = "shm,resp", value_delimiter = ',')]
    transports: Vec<Transport>,
    #[command(flatten)]
    module: ModuleArgs,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    graph: GraphArgs,
}

/// One scenario's measurements.
#[derive(Debug, Clone, Serialize)]
struct Row {
    scenario: String,
    pings: u64,
    ping_p50_us: f64,
    ping_p99_us: f64,
    ping_max_us: f64,
    /// Load invocations completed per second (digest and khop together).
    load_per_s: f64,
    /// Load invocations that failed.
    load_errors: u64,
    lock_yields: u64,
    lock_handoffs: u64,
    deferred: u64,
    lock_bound_hits: u64,
    /// Redis's `module-acquire-GIL` latency event, max ms (0: never above 1 ms).
    gil_wait_max_ms: u64,
}

const BLOB: &str = "blob";
const BLOB_BYTES: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = Machine::detect();
    let module = args.module.resolve()?;
    let core = args.server.core.to_string();
    let lock_us = args.lock_us.map(|l| l.to_string());
    let mut module_args = vec!["cores", core.as_str()];
    if let Some(l) = &lock_us {
        module_args.extend(["lock-us", l.as_str()]);
    }
    harness::print_header(
        &machine,
        [
            ("module", format!("{} {}", module.display(), module_args.join(" "))),
            (
                "load",
                format!(
                    "{} threads x {} digest ({} rounds over 64 KiB) in flight, 1 thread of khop k=2",
                    args.threads, args.in_flight, args.rounds
                ),
            ),
            ("probe", format!("{} PINGs, one at a time", args.pings)),
        ],
    );
    let server = RedisServer::start_with(&module, &module_args, &[])?;
    let mut admin = connect(&server)?;
    let blob: Vec<u8> = (0..BLOB_BYTES).map(|i| (i * 131 % 251) as u8).collect();
    admin.call(&[b"SET".as_slice(), BLOB.as_bytes(), &blob])?;
    let graph = Graph::rmat(args.graph.scale, args.graph.edge_factor, 1)?;
    write_graph(&mut admin, &graph, 1, false)?;
    admin.call(&["CONFIG", "SET", "latency-monitor-threshold", "1"])?;

    let mut scenarios: Vec<Option<(Placement, Transport)>> = vec![None];
    for &t in &args.transports {
        for p in [Placement::Compute, Placement::Storage] {
            scenarios.push(Some((p, t)));
        }
    }
    let mut rows = Vec::new();
    for scenario in scenarios {
        let row = run(
            &args,
            &server,
            &mut admin,
            scenario,
            graph.adjacency.len() as u32,
        )?;
        println!(
            "{:<16} PING p50 {:>7.1} us  p99 {:>8.1} us  max {:>9.1} us | load {:>7.0}/s ({} errors) | yields {} handoffs {} deferred {} bound hits {} | GIL wait max {} ms",
            row.scenario,
            row.ping_p50_us,
            row.ping_p99_us,
            row.ping_max_us,
            row.load_per_s,
            row.load_errors,
            row.lock_yields,
            row.lock_handoffs,
            row.deferred,
            row.lock_bound_hits,
            row.gil_wait_max_ms
        );
        rows.push(row);
    }
    if let Some(path) = &args.json.path {
        let mut params = BTreeMap::new();
        params.insert("module_args", module_args.join(" "));
        params.insert("threads", args.threads.to_string());
        params.insert("in_flight", args.in_flight.to_string());
        params.insert("rounds", args.rounds.to_string());
        let report = serde_json::json!({
            "machine": machine,
            "parameters": params,
            "rows": rows,
        });
        harness::write_json(path, &report)?;
    }
    Ok(())
}

fn connect(s: &RedisServer) -> anyhow::Result<Connection> {
    Ok(Connection::connect(
        &s.url().parse()?,
        Duration::from_secs(30),
    )?)
}

/// The module's counters named `field`, from `AUTOLOC.STATS`.
fn counter(stats: &StorageStats, field: &str) -> u64 {
    stats.get(field).unwrap_or(0)
}

fn run(
    args: &Args,
    server: &RedisServer,
    admin: &mut Connection,
    scenario: Option<(Placement, Transport)>,
    vertices: u32,
) -> anyhow::Result<Row> {
    let name = scenario.map_or("idle".to_string(), |(p, t)| format!("{p}/{t}"));
    let stats_before = Runtime::connect(&server.url())?.storage_stats()?;
    admin.call(&["LATENCY", "RESET"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    if let Some((placement, transport)) = scenario {
        for thread in 0..=args.threads {
            let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
            let url = server.url();
            let rounds = args.rounds.to_string();
            let in_flight = args.in_flight;
            load.push(std::thread::spawn(move || -> anyhow::Result<()> {
                let mut rt = Runtime::connect(&url)?.with_transport(transport)?;
                let mut next = thread as u32;
                while !stop.load(Ordering::Relaxed) {
                    // The last thread runs khop, the others digest.
                    let calls: Vec<(&str, Vec<String>)> = if thread == 0 {
                        next = (next + 7919) % vertices;
                        vec![("khop", vec![next.to_string(), "2".into()])]
                    } else {
                        (0..in_flight)
                            .map(|_| ("digest", vec![BLOB.to_string(), rounds.clone()]))
                            .collect()
                    };
                    for r in rt.invoke_many(&calls, placement) {
                        match r {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
                Ok(())
            }));
        }
        // Let the load reach its steady state before probing.
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut probe = connect(server)?;
    let mut h = histogram();
    let done_before = done.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..args.pings {
        let t = Instant::now();
        match probe.call(&["PING"])? {
            Frame::Simple(s) if s == "PONG" => {}
            other => bail!("PING answered {other:?}"),
        }
        record(&mut h, t.elapsed());
    }
    let elapsed = start.elapsed();
    let completed = done.load(Ordering::Relaxed) - done_before;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().expect("load thread")?;
    }
    let gil_wait_max_ms = match admin.call(&["LATENCY", "LATEST"])? {
        Frame::Array(Some(events)) => events
            .iter()
            .filter_map(|e| match e {
                Frame::Array(Some(f))
                    if f.first() == Some(&Frame::Bulk(Some(b"module-acquire-GIL".to_vec()))) =>
                {
                    match f.get(3) {
                        Some(Frame::Int(ms)) => Some(*ms as u64),
                        _ => None,
                    }
                }
                _ => None,
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    let stats = Runtime::connect(&server.url())?.storage_stats()?;
    let delta = |f: &str| counter(&stats, f).saturating_sub(counter(&stats_before, f));
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(Row {
        scenario: name,
        pings: h.len(),
        ping_p50_us: us(h.value_at_quantile(0.5)),
        ping_p99_us: us(h.value_at_quantile(0.99)),
        ping_max_us: us(h.max()),
        load_per_s: completed as f64 / elapsed.as_secs_f64(),
        load_errors: errors.load(Ordering::Relaxed),
        lock_yields: delta("dataplane_lock_yields"),
        lock_handoffs: delta("dataplane_lock_handoffs"),
        deferred: delta("dataplane_deferred"),
        lock_bound_hits: delta("dataplane_lock_bound_hits"),
        gil_wait_max_ms,
    })
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_invocations_parse() {
        let a: Args = parse_line("bench-responsiveness --json r.json");
        assert!(a.json.path.is_some() && a.server.core == 1);
    }
}
