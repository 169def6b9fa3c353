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

use autoloc::Transport;
use autoloc_bench::args::{JsonArgs, PlotArgs};
use autoloc_bench::harness;
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
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    plot: PlotArgs,
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
    if let Some(path) = &cli.json.path {
        harness::write_json(path, &report)?;
    }
    if let Some(path) = &cli.plot.path {
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

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn the_documented_invocations_parse() {
        // ci/test's run.
        let a: Cli = parse_line(
            "soak --duration-s 60 --json target/soak/soak.json --plot target/soak/soak.svg \
             --dir target/soak/logs",
        );
        assert!(a.json.path.is_some() && a.plot.path.is_some() && a.duration_s == 60);
    }
}
