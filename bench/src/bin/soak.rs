//! `soak`: AutoLoc under faults for a bounded time (60 s in `ci/test`, 30 min by hand).
//!
//! ```text
//! soak [--duration-s 60] [--workers 4] [--seed 1] [--json FILE] [--plot FILE]
//! ```
//!
//! Exits 1 if an acknowledged write was lost, anything leaked, redis-server crashed by itself,
//! a worker died by itself, or a peer that must be turned away was not. See
//! `autoloc_bench::soak`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use autoloc::Transport;
use autoloc_bench::soak::{conductor, plot, worker};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "AutoLoc under faults: workers on every transport, kills, restarts, ACL changes, junk; checks for lost writes and leaks"
)]
struct Cli {
    #[command(subcommand)]
    worker: Option<Sub>,
    /// Seconds the workers run under faults.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Worker processes (they take the usable transports in turn).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seed of every random choice (the schedule, the workers' operations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Operations per second per worker at most (0: as fast as they go).
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Keys each worker process writes in turn.
    #[arg(long, default_value_t = 128)]
    keys: usize,
    /// R-MAT scale of the graph the invocations read (edge factor 8).
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Transports to use (rdma is left out, with the reason, where no device works).
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp,resp,rdma")]
    transports: Vec<Transport>,
    /// A module argument (repeatable), e.g. --module-arg lock-us --module-arg 200.
    #[arg(long = "module-arg", allow_hyphen_values = true)]
    module_args: Vec<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Keep the workers' stderr files here (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// One worker process (the soak starts these itself).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Some(Sub::Worker(args)) = &cli.worker {
        worker::run(args)?;
        return Ok(true);
    }
    let cfg = conductor::Config {
        duration: Duration::from_secs(cli.duration_s),
        workers: cli.workers,
        seed: cli.seed,
        rate: cli.rate,
        keys: cli.keys,
        scale: cli.scale,
        transports: cli.transports,
        module_args: cli.module_args,
        dir: cli.dir,
    };
    eprintln!(
        "soak: {} s, {} workers, seed {}: starting redis-server with the module (AOF, appendfsync always)",
        cli.duration_s, cfg.workers, cfg.seed
    );
    let report = conductor::run(&cfg)?;
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &cli.plot {
        plot::write(path, &report)?;
    }
    println!("{}", report.summary());
    Ok(report.passed)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
