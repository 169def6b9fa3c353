//! AutoLoc's function API and built-in functions.
//!
//! A function is written once against a [`Store`] and runs unchanged on either side: storage-side
//! inside the Redis module (the store reads keys in place, no copy, no network) or compute-side on
//! the compute node (the store turns each access into a data-plane request and batches the
//! independent keys of one step into one round trip).
//!
//! # Layout
//! - [`store`]: the [`Store`] trait every function reads and writes through, and its future type.
//! - [`function`]: the [`Function`] trait, argument parsing ([`Args`]) and results ([`Output`]).
//! - [`registry`]: the table of functions by name ([`Registry`]).
//! - [`graph`]: vertex value layouts: AutoLoc's JSON and the compact binary adjacency.
//! - [`hex`]: lowercase hex for digests, module versions and secrets.
//! - [`exec`]: the small executor that polls a function to completion, and [`exec::yield_now`].
//! - [`builtins`]: `khop`, `digest`, `pagerank`, `aggregate`, `get`.
//! - [`error`]: [`Error`], one variant per way an invocation can fail, each with a wire code.
//! - `wasm` (feature `wasm`): user functions in WebAssembly on `wasmtime`, one host for both
//!   sides ([`wasm::WasmFunction`]); `wasm/abi_v1.rs` holds the guest ABI's constants, the one
//!   definition the guest SDK compiles too.
//!
//! Functions are `async`: every store access is a point where the invocation can be suspended,
//! which lets the storage side bound how long it holds Redis's lock, a compute thread keep many
//! invocations in flight, and an overloaded storage side push an invocation back to its caller.
#![forbid(unsafe_code)]

pub mod builtins;
pub mod error;
pub mod exec;
pub mod function;
pub mod graph;
pub mod hex;
pub mod registry;
pub mod store;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use error::{Error, ErrorCode};
pub use function::{Args, Function, Output, OutputKind, Reply};
pub use registry::Registry;
pub use store::{MemStore, NeighbourVisit, Store, StoreExt, StoreFuture, Visit};

/// Result of a function or store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
