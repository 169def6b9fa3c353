//! `batch <function> <rounds> <count>`: AutoLoc's compute-node CLI.

use autoloc::cli::{run_batch, BatchArgs};
use autoloc::{Placement, ReadMode};
use clap::Parser;

/// Runs ROUNDS rounds of COUNT invocations of FUNCTION; invocation i takes i as its first
/// argument (start vertex or key). Without --redis, starts a private redis-server with the
/// module and a default R-MAT graph (the embedded default).
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Example: batch khop 1 1000 --placement compute --json"
)]
struct Cli {
    #[command(flatten)]
    batch: BatchArgs,
    /// Where invocations run: storage (inside Redis) or compute (here, one MGET per step).
    #[arg(long, default_value = "storage")]
    placement: Placement,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run_batch(cli.batch, cli.placement, ReadMode::Batched)?;
    Ok(())
}
