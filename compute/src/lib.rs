//! AutoLoc for compute nodes: invoke functions storage-side or compute-side, and measure both.
//!
//! ```no_run
//! use autoloc::{Placement, Runtime};
//!
//! # fn main() -> Result<(), autoloc::Error> {
//! let mut rt = Runtime::connect("redis://127.0.0.1:6379")?;
//! // The 2-hop neighbourhood of vertex 1, computed inside Redis...
//! let inside = rt.invoke("khop", &["1", "2"], Placement::Storage)?;
//! // ...and on this node, fetching one BFS level per round trip.
//! let here = rt.invoke("khop", &["1", "2"], Placement::Compute)?;
//! assert_eq!(inside.output, here.output);
//! println!("{} vertices, {} round trips compute-side", inside.output, here.round_trips);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`runtime`]: [`Runtime`], one connection to Redis and the process-wide counter table;
//!   [`Placement`] says where an invocation runs.
//! - [`cluster`]: Redis Cluster: the slot map ([`cluster::Topology`], `CLUSTER SHARDS`) and the
//!   store that reads each key on its shard ([`cluster::ClusterStore`]).
//! - [`hops`]: `khop` on a cluster hop by hop, each part of a hop expanded on its shard or
//!   fetched here, as its [`hops::HopTable`] says.
//! - `node`: one Redis node as a runtime reaches it: control connection and data-plane session.
//! - [`table`]: the per-function table of atomic counters every invocation records into.
//! - [`side`]: [`Side`] and what invocations cost on one side ([`side::SideSnapshot`],
//!   [`side::Record`]), shared by the table, the runtime and the placement model.
//! - [`placement`]: shares per function from those counters: policies, controller, forecast.
//! - [`transport`]: [`Transport`] (shm, tcp, rdma, resp) and link setup via `AUTOLOC.CONNECT`.
//! - [`session`]: request ids and replies over a data-plane link, the [`session::LinkStore`]
//!   compute-side functions read through, and [`session::run_all`], which keeps many
//!   invocations in flight on one link.
//! - [`stats`]: the storage side's counters as data (`AUTOLOC.STATS`), and the one `INFO` reader.
//! - [`guests`]: the example user functions of `functions/guest`, as `ci/guests` builds them.
//! - [`load`]: loaders for R-MAT graphs, SNAP edge lists and AutoLoc's `social.json`.
//!
//! Behind features, off by default so an app linking the library does not build the
//! binaries' dependencies (clap, indicatif, hdrhistogram, core_affinity, tempfile):
//! - `server` (feature `server`): starts a private redis-server with the module loaded
//!   (tests, the embedded default).
//! - `cli` (feature `cli`, which implies `server`): what the binaries in `compute/cli` share:
//!   `--redis` or the embedded default; it also gives the loaders their progress bar.
//! - `batch` (feature `cli`): the `batch`/`redisclient` driver: rounds of invocations over
//!   threads, latency histogram, checksum, JSON report.
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod batch;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod guests;
pub mod hops;
pub mod load;
mod node;
pub mod placement;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod side;
pub mod stats;
pub mod table;
pub mod transport;

use std::path::PathBuf;

pub use autoloc_functions::{Output, Registry};
pub use load::LoadError;
pub use runtime::{FunctionInfo, Invocation, OtherShard, Placement, ReadMode, Runtime, Side};
pub use transport::Transport;

/// Errors of the compute library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The function failed (bad input, missing key, ...), on whichever side it ran.
    #[error(transparent)]
    Function(#[from] autoloc_functions::Error),
    /// Reaching Redis failed.
    #[error("redis at {url}: {source}")]
    Connection {
        /// The URL as given.
        url: String,
        /// What failed: connecting, a refused AUTH or SELECT, a URL that does not parse, ...
        /// Shown in the message and also the `source()` (thiserror makes a field named
        /// `source` one): `cli::report` names each cause once.
        source: autoloc_dataplane::Error,
    },
    /// A private redis-server could not be started.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Loading data failed.
    #[error("load: {0}")]
    Load(#[from] LoadError),
    /// A data-plane link could not be set up or broke.
    #[error("{transport} transport: {message}")]
    Transport {
        /// The link's transport.
        transport: Transport,
        /// What went wrong: the server's refusal of `AUTOLOC.CONNECT`, an attach that failed, ...
        message: String,
    },
    /// The server answers, but has no AutoLoc module loaded.
    #[error("redis at {url} has no AutoLoc module: start it with --loadmodule <path>/libautoloc_redismodule.so (cargo build --release puts it in target/release)")]
    NoModule {
        /// The server's URL.
        url: String,
    },
    /// An example guest of `functions/guest` is not built (see [`guests::path`]).
    #[error("no example guest '{name}' at {path}: build the guests with ci/guests")]
    GuestMissing {
        /// The guest's name, e.g. `khop_wasm`.
        name: String,
        /// Where its `.wasm` file should be.
        path: PathBuf,
    },
    /// An example guest's `.wasm` file is there but cannot be read.
    #[error("{path}: {source}")]
    GuestRead {
        /// The `.wasm` file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// More invocations of a batch failed than `--max-errors` allows.
    #[error(
        "{errors} of {invocations} invocations failed (--max-errors {max_errors}){}",
        .first_error.as_deref().map(|e| format!("; first: {e}")).unwrap_or_default()
    )]
    TooManyErrors {
        /// Invocations that failed.
        errors: u64,
        /// Invocations in all.
        invocations: u64,
        /// The most failures allowed.
        max_errors: u64,
        /// The first failure's message, if one was kept.
        first_error: Option<String>,
    },
    /// A report could not be written as JSON.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// A command-line value out of range.
    #[error("{0}")]
    Usage(String),
}

/// Why a private redis-server (the `server` feature's `RedisServer`) could not be started.
///
/// Here rather than in `server`, which only the `server` feature builds: [`Error::Server`]
/// exists with or without it.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `redis-server --version` did not run, or failed.
    #[error("redis-server is not installed: install it with `apt-get install redis-server` (or run ci/setup)")]
    NotInstalled,
    /// `AUTOLOC_MODULE` is set, but not to a file.
    #[error("AUTOLOC_MODULE={path} is not a file")]
    ModuleNotAFile {
        /// The value of `AUTOLOC_MODULE`.
        path: PathBuf,
    },
    /// The running executable's path, where the module is looked for, is unknown.
    #[error("current executable: {source}")]
    CurrentExe {
        /// Why.
        source: std::io::Error,
    },
    /// `AUTOLOC_MODULE` is not set and the module is not beside the running executable.
    #[error(
        "the AutoLoc module was not found (looked at {}); build it with `cargo build --release -p autoloc-redismodule` or set AUTOLOC_MODULE",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ModuleNotFound {
        /// The paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// No free loopback port could be found.
    #[error("find a free port: {source}")]
    FreePort {
        /// Why.
        source: std::io::Error,
    },
    /// The server's temporary directory could not be made.
    #[error("temp dir: {source}")]
    TempDir {
        /// Why.
        source: std::io::Error,
    },
    /// The file the server's stderr goes to could not be opened.
    #[error("open {path}: {source}")]
    StderrFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server's URL did not parse (a bug: it is made here).
    #[error("{source}")]
    Url {
        /// Why.
        source: autoloc_dataplane::Error,
    },
    /// `redis-server` could not be spawned.
    #[error("start redis-server: {source}")]
    Spawn {
        /// Why.
        source: std::io::Error,
    },
    /// `redis-server` exited before it answered PING.
    #[error("redis-server exited ({status}) during startup: {stderr}{log}")]
    Exited {
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it wrote to stderr (trimmed): a module's panic message, say.
        stderr: String,
        /// The last lines of its log, joined by ` | `.
        log: String,
    },
    /// `redis-server` runs but did not answer PING in time.
    #[error("redis-server did not answer PING within {waited:?}")]
    Deadline {
        /// How long it was given.
        waited: std::time::Duration,
    },
    /// A cluster of private servers could not be made (`redis-cli --cluster create` failed, or
    /// the cluster did not come up in time).
    #[error("cluster: {step}: {message}")]
    Cluster {
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl ServerError {
    /// Whether the server exited because its port was taken (by another process between
    /// finding the port free and binding it, or a socket of a killed server that lingers).
    pub fn port_in_use(&self) -> bool {
        const IN_USE: &str = "Address already in use";
        match self {
            ServerError::Exited { stderr, log, .. } => {
                stderr.contains(IN_USE) || log.contains(IN_USE)
            }
            _ => false,
        }
    }
}

impl Error {
    /// The code this error travels as (see [`autoloc_functions::ErrorCode`]): a function's own,
    /// the server's for a refused AUTH or SELECT (`NOPERM` for `WRONGPASS`), `IOERR` for a
    /// connection or link that could not be set up or broke, `ERR` for the rest
    /// (bad usage, a server that could not be started, no module, a failed load, a guest not
    /// built, a batch with too many failures, a report that would not serialize).
    pub fn code(&self) -> autoloc_functions::ErrorCode {
        use autoloc_functions::ErrorCode;
        match self {
            Error::Function(e) => e.code(),
            // AUTH or SELECT refused: the server's own word (WRONGPASS is NOPERM).
            Error::Connection {
                source: autoloc_dataplane::Error::Setup { message, .. },
                ..
            } => autoloc_functions::Error::from_resp(message).code(),
            Error::Connection { .. } | Error::Transport { .. } => ErrorCode::Io,
            Error::Server(_)
            | Error::Load(_)
            | Error::NoModule { .. }
            | Error::GuestMissing { .. }
            | Error::GuestRead { .. }
            | Error::TooManyErrors { .. }
            | Error::Json(_)
            | Error::Usage(_) => ErrorCode::Err,
        }
    }
}

/// Result of the compute library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use autoloc_functions::ErrorCode;

    #[test]
    fn every_error_has_a_code() {
        let io = autoloc_dataplane::Error::Io {
            op: "connect",
            source: std::io::Error::other("refused"),
        };
        let cases = [
            (
                Error::Function(autoloc_functions::Error::NoKey("k".into())),
                ErrorCode::NoKey,
            ),
            (
                Error::Function(autoloc_functions::Error::from_resp("WRONGPASS invalid")),
                ErrorCode::NoPerm,
            ),
            (
                Error::Connection {
                    url: "redis://x".into(),
                    source: io,
                },
                ErrorCode::Io,
            ),
            (
                Error::Connection {
                    url: "redis://x".into(),
                    source: autoloc_dataplane::Error::Setup {
                        command: "AUTH",
                        message: "WRONGPASS invalid username-password pair".into(),
                    },
                },
                ErrorCode::NoPerm,
            ),
            (
                Error::Transport {
                    transport: Transport::Shm,
                    message: "attach".into(),
                },
                ErrorCode::Io,
            ),
            (Error::Usage("threads".into()), ErrorCode::Err),
            (Error::NoModule { url: "u".into() }, ErrorCode::Err),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }

    /// A connection to a stand-in server that answers every command with `reply`.
    fn fake_server(reply: &'static str) -> autoloc_dataplane::Connection {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(reply.as_bytes()).unwrap();
            // Drain the request until the client hangs up.
            let mut buf = [0u8; 64 * 1024];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        autoloc_dataplane::Connection::connect(
            &url.parse().unwrap(),
            std::time::Duration::from_secs(10),
        )
        .unwrap()
    }

    #[test]
    fn failures_are_typed() {
        use load::{load_autoloc_json, write_graph, Graph};
        use std::error::Error as _;

        // A file that is not there: its path and the io error, as the source too.
        let mut conn = fake_server("+OK\r\n");
        let missing = std::path::Path::new("/nonexistent/autoloc/social.json");
        let e = load_autoloc_json(&mut conn, missing, false, false).unwrap_err();
        match &e {
            Error::Load(LoadError::Read { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("load: /nonexistent/autoloc/social.json: "),
            "{e}"
        );
        assert!(e.source().is_some_and(|s| s.is::<LoadError>()));
        assert_eq!(e.code(), ErrorCode::Err);

        // A file that is not JSON, and JSON that is not an object of vertices.
        let dir = std::env::temp_dir().join(format!("autoloc-error-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("social.json");
        std::fs::write(&file, "{").unwrap();
        let e = load_autoloc_json(&mut conn, &file, false, false).unwrap_err();
        assert!(
            matches!(&e, Error::Load(LoadError::NotJson { path, .. }) if *path == file),
            "{e:?}"
        );
        std::fs::write(&file, "[1, 2]").unwrap();
        let e = load_autoloc_json(&mut conn, &file, false, false).unwrap_err();
        assert!(
            matches!(&e, Error::Load(LoadError::NotVertices { path }) if *path == file),
            "{e:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // An R-MAT scale out of range.
        let e = Graph::rmat(40, 8, 1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Load(LoadError::OutOfRange {
                    what: "scale",
                    value: 40,
                    min: 1,
                    max: 28
                })
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "load: scale 40 is outside 1..=28");
        let e = Graph::rmat(8, 0, 1).unwrap_err();
        assert_eq!(e.to_string(), "load: edge factor 0 is outside 1..=1024");

        // Edge lists: the line and what is wrong on it.
        let e = Graph::from_snap("0 1\n2 x\n".as_bytes(), false).unwrap_err();
        assert!(
            matches!(&e, Error::Load(LoadError::BadVertex { line: 2, token }) if token == "x"),
            "{e:?}"
        );
        let e = Graph::from_snap("0\n".as_bytes(), false).unwrap_err();
        assert!(
            matches!(e, Error::Load(LoadError::MissingVertex { line: 1 })),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "load: line 1: expected two vertex ids");

        // The server refusing a write: its error reply, as sent (after the loader asked whether
        // it is a cluster).
        let mut conn = fake_server(
            "-ERR This instance has cluster support disabled\r\n\
             -OOM command not allowed when used memory > 'maxmemory'.\r\n",
        );
        let e = write_graph(&mut conn, &Graph::rmat(1, 1, 1).unwrap(), 1, false).unwrap_err();
        match &e {
            Error::Load(LoadError::Refused { message }) => {
                assert!(message.starts_with("OOM "), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("load: MSET: OOM "), "{e}");

        // A guest that is not built.
        let e = guests::path("no_such_guest").unwrap_err();
        assert!(
            matches!(&e, Error::GuestMissing { name, .. } if name == "no_such_guest"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .ends_with("no_such_guest.wasm: build the guests with ci/guests"),
            "{e}"
        );
    }

    /// A module that is not there: the server exits during startup, with its log, or is not
    /// installed at all.
    #[cfg(feature = "server")]
    #[test]
    fn server_failures_are_typed() {
        let e = server::RedisServer::start_with(
            std::path::Path::new("/nonexistent/libautoloc_redismodule.so"),
            &[],
            &[],
        )
        .unwrap_err();
        match &e {
            Error::Server(ServerError::Exited { log, .. }) => {
                assert!(e.to_string().starts_with("redis-server exited ("), "{e}");
                assert!(log.contains("Module"), "{log}");
            }
            Error::Server(ServerError::NotInstalled) => {}
            other => panic!("{other:?}"),
        }
        assert!(!matches!(&e, Error::Server(s) if s.port_in_use()));
        assert_eq!(e.code(), ErrorCode::Err);
    }
}
