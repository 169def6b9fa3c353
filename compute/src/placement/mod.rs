//! Placement: where each function's next invocation runs, decided from measurements.
//!
//! The Runtime asks [`crate::table::Table::choose`] for every invocation's side and records
//! what it cost into the table; a [`Controller`] thread turns windows of those counters into
//! each function's storage share, by a [`Policy`].
//!
//! # Layout
//! - [`model`]: [`Costs`] (measured RTT and bandwidth) and the per-side cost [`Estimate`].
//! - [`window`]: a [`Window`] of counters over one epoch (with the compute node's measured CPU
//!   utilisation), and a policy's [`Decision`].
//! - [`policy`]: the policies (`adaptive`, `storage`, `compute`, `autoloc2021`, `kayak`,
//!   `oracle(...)`), each a pure [`Policy::step`].
//! - [`controller`]: the epoch thread ([`Controller::spawn`]) and its history;
//!   `AUTOLOC_TRACE_PLACEMENT=1` prints each epoch's window and decisions to stderr.
//! - [`forecast`]: Holt, EWMA and naive forecasts of storage load, evaluated out of sample, and
//!   the storage CPU allowance.
//! - [`publisher`]: the [`Publisher`] thread beside a controller: the storage side's measured
//!   load (`AUTOLOC.STATS`) into the table, the table to the module (`AUTOLOC.REPORT`).
//! - [`reason`]: why a share is what it is, packed into one atomic word.
//! - [`sim`]: a closed-loop throughput model to test policies without Redis.
//! - [`shards`]: a closed-loop model of `khop` hop by hop on a Redis Cluster of S shards,
//!   calibrated from `bench-cluster` (`bench-sim --cluster`).

pub mod controller;
pub mod forecast;
pub mod model;
pub mod policy;
pub mod publisher;
pub mod reason;
pub mod shards;
pub mod sim;
pub mod window;

pub use controller::{Controller, ControllerConfig, ControllerCore, ControllerHandle, EpochRecord};
pub use forecast::{evaluate, storage_cpu_allowance, Evaluation, Forecaster, Model};
pub use model::{Costs, Estimate};
pub use policy::{Adaptive, AdaptiveConfig, AutoLoc2021, Kayak, Oracle, ParsePolicyError, Policy};
pub use publisher::Publisher;
pub use reason::{Reason, ReasonKind};
pub use window::{Decision, FnWindow, Window};
