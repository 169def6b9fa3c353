//! `redisclient <function> <rounds> <count>`: the baseline AutoLoc measured against.

use autoloc::cli::{run_batch, BatchArgs, PlacementChoice};
use autoloc::{Placement, ReadMode};
use clap::Parser;

/// Runs ROUNDS rounds of COUNT invocations of FUNCTION on this node over plain RESP, reading
/// every key with its own GET (one round trip per key access), as AutoLoc's redisclient did.
/// Without --redis, starts the embedded default.
#[derive(Debug, Parser)]
// name: `redisclient --version` prints `autoloc 0.1.0`, as before the binaries left the library.
#[command(
    name = "autoloc",
    version,
    about,
    after_help = "Example: redisclient khop 1 1000 --json"
)]
struct Cli {
    #[command(flatten)]
    batch: BatchArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    autoloc::cli::exit_with(run_batch(
        cli.batch,
        PlacementChoice::Fixed(Placement::Compute),
        ReadMode::PerKey,
    ))
}
