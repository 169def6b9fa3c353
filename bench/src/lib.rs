//! AutoLoc's benchmarks and their harness.
//!
//! # Layout
//! - `src/bin/demo-table.rs`: the comparison table `ci/demo` prints from `batch --json` reports.
//!
//! Every benchmark states the machine and its parameters with its numbers, and compares against
//! its baseline in the same run.
#![forbid(unsafe_code)]
