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
//! - [`table`]: the per-function table of atomic counters every invocation records into.
//! - [`placement`]: shares per function from those counters: policies, controller, forecast.
//! - [`transport`]: [`Transport`] (shm, tcp, rdma, resp) and link setup via `AUTOLOC.CONNECT`.
//! - [`session`]: request ids and replies over a data-plane link, the [`session::LinkStore`]
//!   compute-side functions read through, and [`session::run_all`], which keeps many
//!   invocations in flight on one link.
//! - [`stats`]: the storage side's counters as data (`AUTOLOC.STATS`), and the one `INFO` reader.
//! - [`guests`]: the example user functions of `functions/guest`, built on demand.
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
pub mod guests;
pub mod load;
pub mod placement;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod stats;
pub mod table;
pub mod transport;

pub use autoloc_functions::{Output, Registry};
pub use runtime::{FunctionInfo, Invocation, Placement, ReadMode, Runtime, Side};
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
        url: String,
        // Shown in the message, so not also a `source()`: a report names each cause once.
        source: autoloc_dataplane::Error,
    },
    /// A private redis-server could not be started.
    #[error("{0}")]
    Server(String),
    /// Loading data failed.
    #[error("load: {0}")]
    Load(String),
    /// A data-plane link could not be set up or broke.
    #[error("{transport} transport: {message}")]
    Transport { transport: String, message: String },
    /// The server answers, but has no AutoLoc module loaded.
    #[error("redis at {url} has no AutoLoc module: start it with --loadmodule <path>/libautoloc_redismodule.so (cargo build --release puts it in target/release)")]
    NoModule { url: String },
    /// A command-line value out of range.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The code this error travels as (see [`autoloc_functions::ErrorCode`]): a function's own,
    /// the server's for a refused AUTH or SELECT (`NOPERM` for `WRONGPASS`), `IOERR` for a
    /// connection or link that could not be set up or broke, `ERR` for the rest
    /// (bad usage, a server that could not be started, no module, a failed load).
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
            Error::Server(_) | Error::Load(_) | Error::NoModule { .. } | Error::Usage(_) => {
                ErrorCode::Err
            }
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
                    transport: "shm".into(),
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
}
