//! What the binaries share: where Redis is, or the embedded default.

use autoloc_dataplane::Connection;

use crate::load::{write_graph, Graph, LoadReport};
use crate::server::RedisServer;
use crate::{Error, Result};

/// The embedded default graph: R-MAT (Graph500 parameters) of this scale...
pub const DEFAULT_SCALE: u32 = 12;
/// ...this edge factor...
pub const DEFAULT_EDGE_FACTOR: u32 = 8;
/// ...and this seed.
pub const DEFAULT_SEED: u64 = 1;

/// The Redis a command talks to: one given by `--redis` (a node of a cluster finds the rest), a
/// private cluster of `--cluster N` masters, or a private server; the private ones have the
/// module loaded and the default graph in them, and stop when this drops.
#[derive(Debug)]
pub struct Target {
    /// The private server, if this is the embedded default.
    pub server: Option<RedisServer>,
    /// The private cluster, with `--cluster N`.
    pub cluster: Option<crate::server::cluster::RedisCluster>,
    /// Its URL.
    pub url: String,
    /// What was loaded into the private server.
    pub loaded: Option<LoadReport>,
}

impl Target {
    /// `--redis URL` if given; otherwise starts the embedded default (a private cluster of
    /// `cluster` masters if given), saying so on stderr unless `quiet`.
    pub fn open(redis: Option<&str>, cluster: Option<usize>, quiet: bool) -> Result<Target> {
        if let Some(url) = redis {
            return Ok(Target {
                server: None,
                cluster: None,
                url: url.to_string(),
                loaded: None,
            });
        }
        let (server, cluster) = match cluster {
            Some(masters) => (
                None,
                Some(crate::server::cluster::RedisCluster::start(
                    masters,
                    0,
                    &[],
                )?),
            ),
            None => (Some(RedisServer::start(&[])?), None),
        };
        let url = match (&server, &cluster) {
            (Some(s), _) => s.url(),
            (_, Some(c)) => c.url(),
            _ => unreachable!("one of them was started"),
        };
        let mut conn = Connection::connect(
            &url.parse().map_err(|source| Error::Connection {
                url: url.clone(),
                source,
            })?,
            autoloc_dataplane::resp::DEFAULT_TIMEOUT,
        )
        .map_err(|source| Error::Connection {
            url: url.clone(),
            source,
        })?;
        let graph = Graph::rmat(DEFAULT_SCALE, DEFAULT_EDGE_FACTOR, DEFAULT_SEED)?;
        let report = write_graph(&mut conn, &graph, DEFAULT_SEED, !quiet)?;
        if !quiet {
            let what = match &cluster {
                Some(c) => format!(
                    "private Redis Cluster of {} masters from {url}",
                    c.masters()
                ),
                None => format!("private redis-server at {url}"),
            };
            eprintln!(
                "embedded default: {what} with the AutoLoc module; loaded R-MAT scale {DEFAULT_SCALE} edge factor {DEFAULT_EDGE_FACTOR} ({} vertices, {} arcs) in {:.2} s",
                report.vertices, report.arcs, report.seconds
            );
        }
        Ok(Target {
            server,
            cluster,
            url,
            loaded: Some(report),
        })
    }
}

/// The arguments `batch` and `redisclient` share.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// Function: khop, digest, pagerank, aggregate, get.
    pub function: String,
    /// Rounds.
    pub rounds: u64,
    /// Invocations per round.
    pub count: u64,
    /// Redis URL (redis://[[user]:password@]host[:port][/db]); any node of a Redis Cluster will
    /// do; default: the embedded default.
    #[arg(long)]
    pub redis: Option<String>,
    /// Run on a private Redis Cluster of this many masters (the module on each, made with
    /// redis-cli --cluster create, torn down after) instead of the embedded single server.
    #[arg(long, conflicts_with = "redis")]
    pub cluster: Option<usize>,
    /// Threads, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Invocations each thread keeps in flight on its data-plane link.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Data plane: shm, tcp, rdma or resp (default: shm when Redis is on this host, else tcp;
    /// resp for redisclient).
    #[arg(long)]
    pub transport: Option<crate::Transport>,
    /// Cores to pin the threads to, e.g. 0 or 0,1 (round-robin).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// khop's k.
    #[arg(long, default_value_t = 2)]
    pub k: u32,
    /// A fixed first argument instead of the invocation number (e.g. --first md5 for digest).
    #[arg(long)]
    pub first: Option<String>,
    /// The arguments after the first (repeatable); default per function (khop: k, digest: 10
    /// rounds, pagerank: 20 iterations, aggregate: 64 keys).
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Failed invocations allowed before the run exits non-zero (the report is printed anyway).
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// On a cluster, what becomes of a storage-side invocation that meets a key of another
    /// shard: finish (pushed back, finished here) or forward (to that shard, with what it read).
    #[arg(long, default_value = "finish")]
    pub other_shard: crate::runtime::OtherShard,
}

/// Where `batch` runs invocations: a fixed side, or a placement policy that moves them.
#[derive(Debug, Clone)]
pub enum PlacementChoice {
    /// Always this side (`storage`, `compute`).
    Fixed(crate::Placement),
    /// Each function's share set by a controller running this policy (`adaptive`,
    /// `autoloc2021`, `kayak`, `oracle(...)`).
    Policy(Box<crate::placement::Policy>),
}

impl std::str::FromStr for PlacementChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "storage" => Ok(PlacementChoice::Fixed(crate::Placement::Storage)),
            "compute" => Ok(PlacementChoice::Fixed(crate::Placement::Compute)),
            // The policy's own error names the choices.
            _ => s
                .parse()
                .map(|p| PlacementChoice::Policy(Box::new(p)))
                .map_err(|e: crate::placement::ParsePolicyError| e.to_string()),
        }
    }
}

impl std::fmt::Display for PlacementChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlacementChoice::Fixed(p) => write!(f, "{p}"),
            PlacementChoice::Policy(p) => write!(f, "{p}"),
        }
    }
}

/// Runs a batch as `batch`/`redisclient` do and prints its report.
pub fn run_batch(a: BatchArgs, choice: PlacementChoice, read_mode: crate::ReadMode) -> Result<()> {
    use crate::batch::{default_args, run, BatchConfig};
    if a.rounds == 0 || a.count == 0 {
        return Err(Error::Usage("rounds and count must be at least 1".into()));
    }
    if !(1..=256).contains(&a.threads) {
        return Err(Error::Usage(format!(
            "threads must be in 1..=256, got {}",
            a.threads
        )));
    }
    if !(1..=autoloc_functions::builtins::khop::MAX_K as u32).contains(&a.k) {
        return Err(Error::Usage(format!(
            "k must be in 1..={}, got {}",
            autoloc_functions::builtins::khop::MAX_K,
            a.k
        )));
    }
    if !(1..=4096).contains(&a.in_flight) {
        return Err(Error::Usage(format!(
            "in-flight must be in 1..=4096, got {}",
            a.in_flight
        )));
    }
    let target = Target::open(a.redis.as_deref(), a.cluster, a.json)?;
    let rt = crate::Runtime::connect(&target.url)?
        .with_read_mode(read_mode)
        .with_other_shard(a.other_shard);
    let transport = a.transport.unwrap_or(match read_mode {
        crate::ReadMode::PerKey => crate::Transport::Resp,
        crate::ReadMode::Batched => crate::Transport::default_for(rt.url()),
    });
    let mut rt = rt.with_transport(transport)?;
    // A user function is fetched now, so the controller's table knows it.
    let function = rt.resolve(&a.function)?.1.name().to_string();
    let cfg = BatchConfig {
        args: if a.args.is_empty() {
            default_args(&function, a.k)
        } else {
            a.args
        },
        function,
        rounds: a.rounds,
        count: a.count,
        placement: match &choice {
            PlacementChoice::Fixed(p) => *p,
            PlacementChoice::Policy(_) => crate::Placement::Auto,
        },
        read_mode,
        threads: a.threads,
        in_flight: a.in_flight,
        cores: a.cores,
        first: a.first,
        // The embedded default's vertices are 0..n: invocation i starts at i mod n, so any count
        // of invocations finds its start vertex (AutoLoc's `batch` against a graph as large).
        first_modulo: target.loaded.as_ref().map(|l| l.vertices),
    };
    let controller = match &choice {
        PlacementChoice::Fixed(_) => None,
        PlacementChoice::Policy(policy) => {
            let names = rt.registry().names();
            let mut config = crate::placement::ControllerConfig::default();
            if !cfg.cores.is_empty() {
                // Threads pinned to these cores: the compute node is that many cores.
                config.compute_cores = cfg.cores.len() as f64;
            }
            Some(crate::placement::Controller::spawn(
                rt.table().clone(),
                names,
                (**policy).clone(),
                config,
            ))
        }
    };
    let publisher = controller
        .as_ref()
        .map(|_| crate::placement::Publisher::start(&rt));
    let mut report = run(&rt, &cfg)?;
    drop(controller);
    drop(publisher);
    if let PlacementChoice::Policy(p) = &choice {
        report.placement = p.to_string();
    }
    if a.json {
        println!("{}", serde_json::to_string(&report).map_err(Error::Json)?);
    } else {
        println!("{}", report.human());
    }
    if report.errors > a.max_errors {
        return Err(Error::TooManyErrors {
            errors: report.errors,
            invocations: report.invocations,
            max_errors: a.max_errors,
            first_error: report.first_error,
        });
    }
    Ok(())
}

/// Ends a binary: on error, one line `error: ...` on stderr and exit code 1.
pub fn exit_with<E>(r: std::result::Result<(), E>) -> std::process::ExitCode
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
            eprintln!("error: {}", report(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause named once: a cause whose text the message
/// already holds (an error that shows its source in its own message) is not repeated.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}
