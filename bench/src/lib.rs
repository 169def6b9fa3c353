//! AutoLoc's benchmarks and their harness.
//!
//! # Layout
//! - [`harness`]: what the benchmark binaries share: the warm-up-then-measure loop, latency
//!   histograms in ns, result rows and their table, the machine, checks against targets, the
//!   JSON report, the plots' colours and the SVG latency plot.
//! - [`args`]: the command-line options two or more binaries take (the graph, the cell's
//!   timing, the cores, the module, `--json`, `--plot`), declared once.
//! - [`table`]: the text table every binary prints its results in.
//! - `src/bin/bench-dataplane.rs`: latency and throughput of each data plane (shm, tcp, rdma,
//!   resp) for GET and storage-side khop, against the raw shared-memory ring ping-pong.
//! - `src/bin/bench-wasm.rs`: user functions (WebAssembly guests) against their native twins
//!   storage-side, the per-invocation cost of an empty guest, LOAD of 1 MiB modules, and khop as
//!   a Lua script through `EVALSHA`.
//! - `src/bin/bench-responsiveness.rs`: PING latency of Redis's own clients beside storage-side
//!   and compute-side load, with the module's lock counters.
//! - [`netns`]: a remote compute node on one machine (a network namespace and a veth pair).
//! - [`placement_bench`]: the pure parts of `bench-placement` (workloads, assignments,
//!   convergence, report rows, bootstrap intervals and verdicts); `src/bin/bench-placement.rs`
//!   measures every placement policy, locally or from a network namespace, at saturation and
//!   at a fixed offered load.
//! - `src/bin/bench-sim.rs`: the placement simulator calibrated from `bench-placement`'s
//!   measured costs, swept over round trip, compute nodes and storage cores.
//! - `src/bin/demo-table.rs`: the comparison table `ci/demo` prints from `batch --json` reports.
//! - [`soak`]: the soak under faults; `src/bin/soak.rs` runs it (60 s in `ci/test`).
//!
//! Every benchmark states the machine and its parameters with its numbers, and compares against
//! its baseline in the same run.
#![forbid(unsafe_code)]

pub mod args;
pub mod harness;
pub mod netns;
pub mod placement_bench;
pub mod soak;
pub mod table;
