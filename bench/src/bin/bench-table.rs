//! `bench-table`: throughput of the placement table's invocation path under threads.
//!
//! Every invocation of the compute library does one [`Table::choose`] (a ticket `fetch_add` and
//! a share load) and one [`Table::record`] (relaxed `fetch_add`s on the counters of the side it
//! ended on). Here N threads do only that, back to back, for a fixed time, in two scenarios:
//! - `shared`: every thread invokes function 0 (one slot, share 0.5): the threads really share
//!   the ticket and each side's counters, so this measures contention the layout cannot remove,
//!   plus whatever false sharing it adds;
//! - `own`: thread i invokes function i (neighbouring slots): nothing is shared, so any slowdown
//!   over one thread is false sharing between neighbouring slots' cache lines.
//!
//! Each thread is pinned to a core (round-robin over the cores this process may use). Every
//! (scenario, threads) cell runs `--runs` times, interleaved, and the median is reported with
//! the minimum and maximum. The baseline is the 1-thread row of each scenario.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use autoloc::table::{Record, Slot, Table};
use autoloc::Side;
use autoloc_bench::harness::{print_header, Machine};
use autoloc_bench::placement_bench::median;
use autoloc_bench::table;
use clap::Parser;

/// Operations (one choose and one record each) between two looks at the stop flag.
const BATCH: u64 = 256;

#[derive(Debug, Parser)]
#[command(
    about = "Throughput of the placement table's choose + record under 1, 2, 4 threads, on one \
             shared slot and on one slot per thread"
)]
struct Args {
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    threads: Vec<usize>,
    /// Measured time per run, in milliseconds.
    #[arg(long, default_value_t = 500)]
    duration_ms: u64,
    /// Runs per cell (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Do not pin the threads to cores.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// All threads on function 0.
    Shared,
    /// Thread i on function i.
    Own,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Shared => "shared",
            Scenario::Own => "own",
        }
    }

    fn function(self, thread: usize) -> usize {
        match self {
            Scenario::Shared => 0,
            Scenario::Own => thread,
        }
    }
}

/// What an invocation adds, per side: every counter a real invocation writes.
fn record_of(side: Side) -> Record {
    match side {
        Side::Storage => Record {
            wall_ns: 20_000,
            cpu_ns: 1_000,
            round_trips: 1,
            bytes: 128,
            storage_cpu_ns: 15_000,
            queue_ns: 500,
            keys_read: 10,
            bytes_read: 1_000,
            ..Record::default()
        },
        Side::Compute => Record {
            wall_ns: 40_000,
            cpu_ns: 30_000,
            round_trips: 3,
            bytes: 4_096,
            storage_cpu_ns: 2_000,
            keys_read: 10,
            bytes_read: 1_000,
            reads: 3,
            ..Record::default()
        },
    }
}

/// One run: `threads` threads doing choose + record for `duration`; total operations per second.
fn run(
    scenario: Scenario,
    threads: usize,
    duration: Duration,
    cores: &[core_affinity::CoreId],
) -> f64 {
    let table = Table::new();
    for i in 0..table.len() {
        table.set_share(i, 0.5);
    }
    let (storage, compute) = (record_of(Side::Storage), record_of(Side::Compute));
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let (ops, secs) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (table, stop, start) = (&table, &stop, &start);
                let core = (!cores.is_empty()).then(|| cores[t % cores.len()]);
                s.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let f = scenario.function(t);
                    let mut ops = 0u64;
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BATCH {
                            let side = table.choose(f);
                            let r = match side {
                                Side::Storage => &storage,
                                Side::Compute => &compute,
                            };
                            table.record(f, side, r);
                        }
                        ops += BATCH;
                    }
                    ops
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (ops, began.elapsed().as_secs_f64())
    });
    // Every operation was counted in the table too.
    let counted: u64 = (0..threads)
        .map(|t| scenario.function(t))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|f| {
            let slot = table.slot(f);
            slot.snapshot(Side::Storage).invocations + slot.snapshot(Side::Compute).invocations
        })
        .sum();
    assert_eq!(counted, ops, "the table lost invocations");
    ops as f64 / secs
}

fn mops(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.duration_ms > 0, "--duration-ms must be at least 1");
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(
        args.threads.iter().all(|&t| (1..=64).contains(&t)),
        "--threads must be in 1..=64 (one function each in the `own` scenario)"
    );
    let cores = if args.no_pin {
        Vec::new()
    } else {
        core_affinity::get_core_ids().unwrap_or_default()
    };
    let machine = Machine::detect();
    print_header(
        &machine,
        [
            ("duration_ms", args.duration_ms.to_string()),
            ("runs", args.runs.to_string()),
            ("share", "0.5".to_string()),
            ("pinned", (!cores.is_empty()).to_string()),
            (
                "slot",
                format!(
                    "{} bytes, aligned to {}",
                    std::mem::size_of::<Slot>(),
                    std::mem::align_of::<Slot>()
                ),
            ),
        ],
    );

    let duration = Duration::from_millis(args.duration_ms);
    let cells: Vec<(Scenario, usize)> = [Scenario::Shared, Scenario::Own]
        .into_iter()
        .flat_map(|s| args.threads.iter().map(move |&t| (s, t)))
        .collect();
    // Runs interleaved across cells, so drift on a shared machine hits every cell alike.
    let mut results = vec![Vec::with_capacity(args.runs); cells.len()];
    for _ in 0..args.runs {
        for (cell, out) in cells.iter().zip(&mut results) {
            out.push(run(cell.0, cell.1, duration, &cores));
        }
    }

    let mut t = table::Table::new()
        .left("scenario", 8)
        .right("threads", 7)
        .right("Mops/s median", 14)
        .right("per thread", 16)
        .right("min", 10)
        .right("max", 10);
    for ((scenario, threads), v) in cells.into_iter().zip(results) {
        let m = median(&v).expect("--runs is at least 1");
        let (min, max) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        t.row(&[
            &scenario.name(),
            &threads,
            &mops(m),
            &mops(m / threads as f64),
            &mops(min),
            &mops(max),
        ]);
    }
    print!("{t}");
    Ok(())
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_invocations_parse() {
        let a: Args = parse_line("bench-table --runs 11 --duration-ms 300");
        assert_eq!((a.runs, a.duration_ms), (11, 300));
    }
}
