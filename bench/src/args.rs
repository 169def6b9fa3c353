//! The command-line options two or more benchmark binaries take, each declared once and
//! flattened into a binary's arguments (`#[command(flatten)]`).
//!
//! Where a binary says more in an option's help, or has another default, it keeps its own with
//! `#[command(mut_arg("id", |a| a.help("...")))]` on its arguments (the ids are the flags' names
//! with underscores). Such a help string has no final full stop: clap drops it from a doc comment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::harness::{self, Plan};

/// Parses `line` (words split at spaces, the binary's name first) as `P`'s command line, after
/// clap's own consistency checks of `P`'s arguments; panics on an error. What the binaries' tests
/// use to show that the invocations in the docs and `ci/` still parse.
pub fn parse_line<P: clap::Parser>(line: &str) -> P {
    P::command().debug_assert();
    P::try_parse_from(line.split_whitespace()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The generated R-MAT graph a benchmark loads.
#[derive(Debug, Clone, clap::Args)]
pub struct GraphArgs {
    /// R-MAT scale of the graph (2^scale vertices).
    #[arg(long, default_value_t = 12)]
    pub scale: u32,
    /// R-MAT edge factor of the graph.
    #[arg(long, default_value_t = 8)]
    pub edge_factor: u32,
}

/// How long each cell measures and warms up, and `--quick` (each binary says in its help what a
/// quick run shortens, and sets its own `--duration-ms` default).
#[derive(Debug, Clone, clap::Args)]
pub struct CellArgs {
    /// Measured time per cell, in milliseconds.
    #[arg(long, default_value_t = 700)]
    pub duration_ms: u64,
    /// Warm-up per cell, in milliseconds (default: a fifth of the duration).
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// A fast smoke run.
    #[arg(long)]
    pub quick: bool,
}

impl CellArgs {
    /// The cell's plan: `--warmup-ms` (a fifth of the duration if not given), then
    /// `--duration-ms`, which must be at least 1.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        anyhow::ensure!(self.duration_ms > 0, "--duration-ms must be at least 1");
        Ok(Plan {
            warmup: std::time::Duration::from_millis(
                self.warmup_ms.unwrap_or(self.duration_ms / 5),
            ),
            duration: std::time::Duration::from_millis(self.duration_ms),
        })
    }
}

/// `--client-core`: where the client thread runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientCoreArgs {
    /// Core the client thread is pinned to.
    #[arg(
        id = "client_core",
        long = "client-core",
        value_name = "CLIENT_CORE",
        default_value_t = 0
    )]
    pub core: usize,
}

impl ClientCoreArgs {
    /// Pins the calling thread to the core and states it in `params` as `client_core` (with
    /// the failure, if pinning failed).
    pub fn pin(&self, params: &mut BTreeMap<String, String>) {
        let value = if harness::pin(self.core) {
            self.core.to_string()
        } else {
            format!("{} (pinning failed: unpinned)", self.core)
        };
        params.insert("client_core".into(), value);
    }
}

/// `--server-core`: the core of the module's data-plane thread (module argument `cores`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerCoreArgs {
    /// Core of the module's data-plane thread (module argument `cores`).
    #[arg(
        id = "server_core",
        long = "server-core",
        value_name = "SERVER_CORE",
        default_value_t = 1
    )]
    pub core: usize,
}

/// `--module`: another build of the module to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct ModuleArgs {
    /// The module to load (default: this build's).
    #[arg(id = "module", long = "module", value_name = "MODULE")]
    pub path: Option<PathBuf>,
}

impl ModuleArgs {
    /// `--module`, else this build's module.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.path {
            Some(p) => Ok(p.clone()),
            None => Ok(autoloc::server::find_module()?),
        }
    }
}

/// `--json FILE`: where the report goes (each binary says in its help what it holds).
#[derive(Debug, Clone, clap::Args)]
pub struct JsonArgs {
    /// Write the report as JSON here.
    #[arg(id = "json", long = "json", value_name = "JSON")]
    pub path: Option<PathBuf>,
}

/// `--plot FILE`: where the SVG goes (each binary says in its help what it draws).
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Write the plot (SVG) here.
    #[arg(id = "plot", long = "plot", value_name = "PLOT")]
    pub path: Option<PathBuf>,
}
