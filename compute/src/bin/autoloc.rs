//! `autoloc`: load data, call one function, inspect the module's counters.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use autoloc::cli::Target;
use autoloc::load::{load_autoloc_json, write_graph, Graph, LoadReport};
use autoloc::{Placement, Runtime};
use autoloc_dataplane::Frame;
use clap::{Parser, Subcommand};

/// Load data into Redis, call one AutoLoc function, show the module's counters. Without
/// --redis, a private redis-server with the module and a default R-MAT graph is started for
/// the command and stopped after it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Redis URL (redis://[[user]:password@]host[:port][/db]); accepted before or after the
    /// subcommand; default: the embedded default.
    #[arg(long, global = true)]
    redis: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a graph.
    #[command(subcommand)]
    Load(Load),
    /// Call one function and print its result.
    Call {
        /// Function name.
        function: String,
        /// Its arguments.
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// Where it runs: storage or compute.
        #[arg(long, default_value = "storage")]
        placement: Placement,
        /// Print {"function", "placement", "result"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the module's per-function counters (INFO autoloc).
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the functions the module runs.
    Functions,
}

#[derive(Debug, Subcommand)]
enum Load {
    /// A generated R-MAT graph (Graph500 parameters A=0.57, B=0.19, C=0.19), undirected.
    Rmat {
        /// log2 of the number of vertices.
        #[arg(long)]
        scale: u32,
        /// Generated edges per vertex.
        #[arg(long, default_value_t = 16)]
        edge_factor: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A SNAP edge list (`from to` per line, `#` comments).
    Snap {
        /// The file.
        file: PathBuf,
        /// Add the reverse of every edge.
        #[arg(long)]
        undirected: bool,
    },
    /// AutoLoc's social.json, stored as AutoLoc did (JSON per vertex).
    AutoLocJson {
        /// The file.
        file: PathBuf,
        /// Store the compact binary adjacency instead of JSON.
        #[arg(long)]
        binary: bool,
    },
}

fn print_load(r: &LoadReport) {
    println!(
        "loaded {} vertices, {} arcs: {} keys, {} bytes in {:.2} s",
        r.vertices, r.arcs, r.keys, r.bytes, r.seconds
    );
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Call { json: true, .. } | Command::Stats { json: true }
    );
    if cli.redis.is_none() && matches!(cli.command, Command::Load(_)) {
        eprintln!("note: no --redis given: loading into a private server that stops when this command ends");
    }
    let target = Target::open(cli.redis.as_deref(), quiet)?;
    let mut rt =
        Runtime::connect(&target.url).with_context(|| format!("connect to {}", target.url))?;
    match cli.command {
        Command::Load(load) => {
            let conn = rt.connection()?;
            let report = match load {
                Load::Rmat {
                    scale,
                    edge_factor,
                    seed,
                } => {
                    let g = Graph::rmat(scale, edge_factor, seed)?;
                    write_graph(conn, &g, seed, true)?
                }
                Load::Snap { file, undirected } => {
                    let f = std::fs::File::open(&file)
                        .with_context(|| format!("open {}", file.display()))?;
                    let g = Graph::from_snap(BufReader::new(f), undirected)?;
                    write_graph(conn, &g, 1, true)?
                }
                Load::AutoLocJson { file, binary } => load_autoloc_json(conn, &file, binary, true)?,
            };
            print_load(&report);
        }
        Command::Call {
            function,
            args,
            placement,
            json,
        } => {
            let inv = rt.invoke(&function, &args, placement)?;
            let name = rt.registry().resolve(function.as_bytes())?.1.name();
            if json {
                let v = serde_json::json!({
                    "function": name,
                    "placement": inv.side,
                    "pushed_back": inv.pushed_back,
                    "result": inv.output.to_json(),
                });
                println!("{v}");
            } else {
                println!("{}", inv.output);
                eprintln!(
                    "({} ran {}-side{} in {:.1} us, {} round trips, {} bytes)",
                    name,
                    inv.side,
                    if inv.pushed_back {
                        " after a pushback"
                    } else {
                        ""
                    },
                    inv.wall.as_secs_f64() * 1e6,
                    inv.round_trips,
                    inv.bytes
                );
            }
        }
        Command::Stats { json } => {
            let Frame::Bulk(Some(info)) = rt.command(&["INFO", "autoloc"])? else {
                bail!("INFO autoloc gave no text: is the AutoLoc module loaded?");
            };
            let info = String::from_utf8_lossy(&info);
            let mut table: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
            let mut budget = None;
            for line in info.lines() {
                let Some((name, value)) = line
                    .trim()
                    .strip_prefix("autoloc_")
                    .and_then(|l| l.split_once(':'))
                else {
                    continue;
                };
                let Ok(value) = value.parse::<u64>() else {
                    continue;
                };
                if name == "budget_us" {
                    budget = Some(value);
                    continue;
                }
                for f in rt.registry().iter() {
                    if let Some(counter) = name
                        .strip_prefix(f.name())
                        .and_then(|c| c.strip_prefix('_'))
                    {
                        table
                            .entry(f.name().to_string())
                            .or_default()
                            .insert(counter.to_string(), value);
                    }
                }
            }
            if table.is_empty() {
                bail!("INFO autoloc has no AutoLoc counters: is the AutoLoc module loaded?");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "budget_us": budget, "functions": table })
                );
            } else {
                println!("storage-side budget: {} us", budget.unwrap_or(0));
                println!(
                    "{:<10} {:>10} {:>8} {:>9} {:>12} {:>11} {:>12}",
                    "function", "calls", "errors", "pushbacks", "cpu_us", "keys_read", "bytes_read"
                );
                for (f, c) in &table {
                    let g = |k: &str| c.get(k).copied().unwrap_or(0);
                    println!(
                        "{f:<10} {:>10} {:>8} {:>9} {:>12} {:>11} {:>12}",
                        g("calls"),
                        g("errors"),
                        g("pushbacks"),
                        g("cpu_us"),
                        g("keys_read"),
                        g("bytes_read")
                    );
                }
            }
        }
        Command::Functions => {
            for f in rt.registry().iter() {
                println!("{:<10} {}", f.name(), f.usage());
            }
        }
    }
    drop(target);
    Ok(())
}
