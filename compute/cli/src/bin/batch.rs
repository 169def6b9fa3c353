//! `batch <function> <rounds> <count>`: AutoLoc's compute-node CLI.

use autoloc::cli::{run_batch, BatchArgs, PlacementChoice};
use autoloc::ReadMode;
use clap::Parser;

/// Runs ROUNDS rounds of COUNT invocations of FUNCTION; invocation i takes i as its first
/// argument (start vertex or key). Without --redis, starts a private redis-server with the
/// module and a default R-MAT graph (the embedded default).
#[derive(Debug, Parser)]
// name: `batch --version` prints `autoloc 0.1.0`, as before the binaries left the library.
#[command(
    name = "autoloc",
    version,
    about,
    after_help = "Example: batch khop 1 1000 --placement compute --json"
)]
struct Cli {
    #[command(flatten)]
    batch: BatchArgs,
    /// Where invocations run: storage (always inside Redis), compute (always here), or a policy
    /// that moves each function's share as it measures: adaptive, autoloc2021, kayak,
    /// oracle(khop=1,digest=0,*=0.5).
    #[arg(long, default_value = "adaptive")]
    placement: PlacementChoice,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    autoloc::cli::exit_with(run_batch(cli.batch, cli.placement, ReadMode::Batched))
}
