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
// name: `autoloc --version` prints `autoloc 0.1.0`, as before the binaries left the library.
#[command(name = "autoloc", version, about)]
struct Cli {
    /// Redis URL (redis://[[user]:password@]host[:port][/db]); accepted before or after the
    /// subcommand; default: the embedded default.
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Run on a private Redis Cluster of this many masters (the module on each, made with
    /// redis-cli --cluster create, torn down after) instead of the embedded single server.
    #[arg(long, global = true, conflicts_with = "redis")]
    cluster: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Start a Redis Cluster on loopback that outlives this command: redis-server daemons with
    /// the module, on ports PORT.., each in DIR/<port>, joined by redis-cli --cluster create.
    Up {
        /// Masters.
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// Replicas per master.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The first node's port.
        #[arg(long, default_value_t = 7000)]
        port: u16,
        /// Where the nodes keep their files.
        #[arg(long, default_value = "autoloc-cluster")]
        dir: PathBuf,
    },
    /// Stop the cluster started in DIR by `cluster up`.
    Down {
        /// Where the nodes keep their files.
        #[arg(long, default_value = "autoloc-cluster")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum FunctionCmd {
    /// Load a user function from a .wasm file (AUTOLOC.FUNCTION LOAD); prints its name.
    Load {
        file: std::path::PathBuf,
        /// Replace a loaded function of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List the functions the module runs: name, output kind, version (SHA-256 or builtin),
    /// module size, usage.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user function.
    Delete { name: String },
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
    /// Show the live placement tables of the compute nodes running a placement policy (share,
    /// invocations/s per side, round trips, CPU per side, the controller's last reason),
    /// refreshing like top.
    Placement {
        /// Print the tables once as JSON.
        #[arg(long)]
        json: bool,
        /// Refresh interval.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// List the functions the module runs.
    Functions,
    /// Load, list or delete user functions (WebAssembly modules; see functions/guest).
    #[command(subcommand)]
    Function(FunctionCmd),
    /// Start or stop a Redis Cluster on loopback with the module on every node.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print the value of a key (nothing and exit 1 if it does not exist).
    Get {
        key: String,
        /// Data plane: shm, tcp, rdma or resp (default: shm when Redis is on this host).
        #[arg(long)]
        transport: Option<autoloc::Transport>,
    },
    /// Set a key.
    Set {
        key: String,
        value: String,
        /// Data plane: shm, tcp, rdma or resp (default: shm when Redis is on this host).
        #[arg(long)]
        transport: Option<autoloc::Transport>,
    },
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
    #[command(name = "autoloc-json", alias = "auto-loc-json")]
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

fn main() -> std::process::ExitCode {
    autoloc::cli::exit_with(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let quiet = matches!(
        cli.command,
        Command::Call { json: true, .. } | Command::Stats { json: true }
    );
    if cli.redis.is_none() && matches!(cli.command, Command::Load(_)) {
        eprintln!("note: no --redis given: loading into a private server that stops when this command ends");
    }
    if let Command::Cluster(c) = &cli.command {
        return cluster(c);
    }
    let target = Target::open(cli.redis.as_deref(), cli.cluster, quiet)?;
    let mut rt = Runtime::connect(&target.url)?;
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
            let name = rt.resolve(&function)?.1.name().to_string();
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
            let functions = rt.functions()?;
            let shards = rt.shard_stats()?;
            let cluster = rt.topology().is_some();
            let mut reports = serde_json::Map::new();
            for (node, stats) in &shards {
                let budget = stats.get("budget_us");
                let table: BTreeMap<String, BTreeMap<String, u64>> = functions
                    .iter()
                    .map(|f| (f.name.clone(), stats.function(&f.name)))
                    .collect();
                if json {
                    let report = serde_json::json!({ "budget_us": budget, "functions": table });
                    if !cluster {
                        println!("{report}");
                    }
                    reports.insert(node.clone(), report);
                    continue;
                }
                if cluster {
                    println!("shard {node}:");
                }
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
            if json && cluster {
                // On a cluster, one report per shard, by master.
                println!("{}", serde_json::json!({ "shards": reports }));
            }
        }
        Command::Placement {
            json,
            interval_ms,
            count,
        } => placement(&mut rt, json, interval_ms, count)?,
        Command::Function(FunctionCmd::Load { file, replace }) => {
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            println!("{}", rt.load_function(&bytes, replace)?);
        }
        Command::Function(FunctionCmd::List { json }) => {
            let list = rt.functions()?;
            let shards = rt.functions_per_shard()?;
            // Per function, the version each shard has, where the shards disagree.
            let disagree = |name: &str| -> Option<Vec<(String, String)>> {
                let versions: Vec<(String, String)> = shards
                    .iter()
                    .map(|(node, fs)| {
                        let v = fs.iter().find(|f| f.name == name);
                        (
                            node.clone(),
                            v.map_or("missing".into(), |f| f.version.clone()),
                        )
                    })
                    .collect();
                let first = &versions.first()?.1;
                versions.iter().any(|(_, v)| v != first).then_some(versions)
            };
            if json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|f| {
                        let mut row = serde_json::to_value(f).unwrap_or_default();
                        if let Some(versions) = disagree(&f.name) {
                            row["shards"] =
                                serde_json::json!(versions.into_iter().collect::<BTreeMap<_, _>>());
                        }
                        row
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                let short = |v: &str| v.get(..16).unwrap_or(v).to_string();
                for f in &list {
                    println!(
                        "{:<16} {:<7} {:<16} {:>8}  {}",
                        f.name,
                        f.output,
                        short(&f.version),
                        f.size,
                        f.usage
                    );
                    if let Some(versions) = disagree(&f.name) {
                        for (node, v) in versions {
                            println!("  shards disagree: {node} has {}", short(&v));
                        }
                    }
                }
            }
        }
        Command::Function(FunctionCmd::Delete { name }) => {
            rt.delete_function(&name)?;
            println!("OK");
        }
        Command::Cluster(_) => unreachable!("handled above"),
        Command::Functions => {
            for f in rt.functions()? {
                println!("{:<14} {}", f.name, f.usage);
            }
        }
        Command::Get { key, transport } => {
            let t = transport.unwrap_or_else(|| autoloc::Transport::default_for(rt.url()));
            let mut rt = rt.with_transport(t)?;
            match rt.get(key.as_bytes())? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v)),
                None => bail!("no such key '{key}'"),
            }
        }
        Command::Set {
            key,
            value,
            transport,
        } => {
            let t = transport.unwrap_or_else(|| autoloc::Transport::default_for(rt.url()));
            let mut rt = rt.with_transport(t)?;
            rt.set(key.as_bytes(), value.as_bytes())?;
            println!("OK");
        }
    }
    drop(target);
    Ok(())
}

/// `autoloc cluster up | down`.
fn cluster(c: &ClusterCmd) -> anyhow::Result<()> {
    use autoloc::server::cluster::{down, up, ClusterSpec};
    match c {
        ClusterCmd::Up {
            masters,
            replicas,
            port,
            dir,
        } => {
            let ports = up(&ClusterSpec::new(*masters, *replicas), *port, dir)?;
            println!(
                "cluster up: {masters} masters, {replicas} replicas each, ports {}-{}, in {}; use --redis redis://127.0.0.1:{}",
                ports[0],
                ports[ports.len() - 1],
                dir.display(),
                ports[0]
            );
        }
        ClusterCmd::Down { dir } => {
            let n = down(dir)?;
            println!("cluster down: {n} nodes stopped");
        }
    }
    Ok(())
}

/// One node's report: `(node, age in ms, function snapshots)`.
type Report = (String, i64, Vec<serde_json::Value>);

fn fetch_reports(rt: &mut Runtime) -> anyhow::Result<Vec<Report>> {
    let Frame::Array(Some(items)) = rt.command(&["AUTOLOC.PLACEMENT"])? else {
        bail!("AUTOLOC.PLACEMENT gave no list: is the AutoLoc module loaded?");
    };
    let mut out = Vec::new();
    for item in items {
        let Frame::Array(Some(f)) = item else {
            continue;
        };
        let (Some(Frame::Bulk(Some(node))), Some(Frame::Int(age)), Some(Frame::Bulk(Some(json)))) =
            (f.first(), f.get(1), f.get(2))
        else {
            continue;
        };
        let fns: Vec<serde_json::Value> = serde_json::from_slice(json).unwrap_or_default();
        out.push((String::from_utf8_lossy(node).into_owned(), *age, fns));
    }
    Ok(out)
}

fn placement(
    rt: &mut Runtime,
    json: bool,
    interval_ms: u64,
    count: Option<u64>,
) -> anyhow::Result<()> {
    if json {
        let reports = fetch_reports(rt)?;
        let v: Vec<_> = reports
            .into_iter()
            .map(|(node, age, fns)| serde_json::json!({ "node": node, "age_ms": age, "functions": fns }))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    let interval = std::time::Duration::from_millis(interval_ms.max(100));
    let mut previous: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut shown = 0;
    loop {
        let reports = fetch_reports(rt)?;
        let mut screen = String::from("\x1b[2J\x1b[H");
        screen += &format!(
            "AutoLoc placement at {} (refresh {} ms)\n",
            rt.url(),
            interval.as_millis()
        );
        if reports.is_empty() {
            screen += "no compute node is reporting (run batch with a placement policy, e.g. --placement adaptive)\n";
        }
        for (node, age, fns) in &reports {
            screen += &format!("\nnode {node} (reported {age} ms ago)\n");
            screen += &format!(
                "{:<10} {:>6} {:>10} {:>10} {:>8} {:>13} {:>13}  {}\n",
                "function",
                "share",
                "stor/s",
                "comp/s",
                "rt/inv",
                "stor cpu/inv",
                "comp cpu/inv",
                "reason"
            );
            for f in fns {
                let name = f["name"].as_str().unwrap_or("?").to_string();
                let n = |side: &str, k: &str| f[side][k].as_u64().unwrap_or(0);
                let (si, ci) = (n("storage", "invocations"), n("compute", "invocations"));
                if si + ci == 0 {
                    continue;
                }
                let (ps, pc) = previous
                    .insert((node.clone(), name.clone()), (si, ci))
                    .unwrap_or((si, ci));
                let per_s = |now: u64, before: u64| {
                    (now.saturating_sub(before)) as f64 / interval.as_secs_f64()
                };
                let rt_per = (n("storage", "round_trips") + n("compute", "round_trips")) as f64
                    / (si + ci) as f64;
                let cpu = |side: &str, inv: u64, key: &str| {
                    if inv == 0 {
                        0.0
                    } else {
                        n(side, key) as f64 / inv as f64 / 1000.0
                    }
                };
                screen += &format!(
                    "{:<10} {:>6.3} {:>10.0} {:>10.0} {:>8.1} {:>10.1} us {:>10.1} us  {}\n",
                    name,
                    f["share"].as_f64().unwrap_or(0.0),
                    per_s(si, ps),
                    per_s(ci, pc),
                    rt_per,
                    cpu("storage", si, "storage_cpu_ns"),
                    cpu("compute", ci, "cpu_ns"),
                    f["reason"].as_str().unwrap_or("")
                );
            }
        }
        print!("{screen}");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
