//! AutoLoc's Redis module: runs functions storage-side, next to the data.
//!
//! Loaded with `redis-server --loadmodule libautoloc_redismodule.so [budget-us N]`.
//!
//! # Layout
//! - `api`: `module_api!`, a module API function redis-server handed over at load, or an error
//!   saying this server lacks it.
//! - [`acl`]: [`acl::Caller`], the ACL user and database every key access answers to.
//! - [`cluster`]: the slots this node serves in a Redis Cluster, checked for every key the
//!   module reads or writes (`WRONGSHARD` with slot and node for a key served elsewhere).
//! - [`config`]: module arguments (the storage-side budget).
//! - [`counters`]: per-function atomic counters and the `INFO autoloc` section.
//! - [`open`]: opening keys to read so that a key named twice in one read stays valid.
//! - [`names`]: key names as module strings ([`names::key_name`]), short ones cached per thread.
//! - [`store`]: the read rule and the one read path ([`store::read_keys`]) and write path every
//!   key access goes through, and [`store::KeyspaceStore`], the `Store` storage-side functions
//!   run against: values are read in place (string DMA, no copy), every access checks the budget.
//! - [`lock`]: Redis's lock as a data-plane thread holds it: given back every `lock-us` while
//!   a long invocation runs, and waited on until a write is in the AOF before it is answered.
//! - [`pause`]: whether Redis has paused writes (`CLIENT PAUSE`, `FAILOVER`, `SHUTDOWN`), seen
//!   through a command filter; data-plane writes are refused meanwhile.
//! - [`registry`]: the process's one table of functions ([`registry::registry`]), built-ins and
//!   user functions.
//! - [`frames`]: the `Error` wire frame ([`frames::error_frame`]) the invoke path and the data
//!   plane both answer with.
//! - `guard`: `guard`, which turns a panic at an entry point into an error reply.
//! - [`invoke`]: the one invoke path (resolve, budget, run, count, encode as RESP or a wire frame).
//! - [`commands`]: `AUTOLOC.CALL`, `AUTOLOC.INVOKE`, `AUTOLOC.MGET`, `AUTOLOC.STATS`,
//!   `AUTOLOC.FUNCTIONS`, `AUTOLOC.CONNECT`, `AUTOLOC.FUNCTION`'s subcommands; every entry point
//!   catches panics and replies with an error, since a panic inside redis-server would abort it.
//! - [`userfn`]: user functions in WebAssembly: `AUTOLOC.FUNCTION LOAD | LIST | DELETE | DUMP`,
//!   kept in the RDB and propagated to replicas and the AOF.
//! - [`loader`]: the loader thread, which compiles `AUTOLOC.FUNCTION LOAD`'s modules off the
//!   main thread and installs them under Redis's lock.
//! - [`signals`]: wasmtime's trap handler in front of Redis's crash handler, a fault that is not a
//!   guest's handed back to Redis as if wasmtime were not there.
//! - [`placement`]: placement tables reported by compute nodes (`AUTOLOC.REPORT`,
//!   `AUTOLOC.PLACEMENT`, the shares in `INFO autoloc`).
//! - [`dataplane`]: the data-plane threads: poll shm rings, the io_uring TCP server and RDMA
//!   queue pairs, and serve bursts of requests under one acquisition of Redis's lock; their
//!   counters ([`dataplane::stats`]) in a file of their own, which the lock and the invoke path
//!   count into.

pub mod acl;
mod api;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod counters;
pub mod dataplane;
pub mod frames;
mod guard;
pub mod invoke;
pub mod loader;
pub mod lock;
pub mod names;
pub mod open;
pub mod pause;
pub mod placement;
pub mod registry;
pub mod signals;
pub mod store;
pub mod userfn;

use redis_module::{redis_module, Context, RedisString, Status};
use userfn::FUNCTIONS_TYPE;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    // Segments that servers killed before their clients attached left behind.
    autoloc_dataplane::shm::remove_stale_segments(autoloc_dataplane::shm::DEFAULT_DIR.as_ref());
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    cluster::init(ctx);
    let declared = commands::declare_key_specs(ctx)
        .and_then(|()| commands::declare_function_subcommands(ctx))
        .and_then(|()| commands::declare_acl_categories(ctx));
    if let Err(e) = declared {
        ctx.log_warning(&format!("autoloc: {e}"));
        return Status::Err;
    }
    match config::Config::parse(&args) {
        Ok(c) => {
            if let Err(e) = lock::subscribe(ctx).and_then(|()| pause::watch(ctx)) {
                ctx.log_warning(&format!("autoloc: {e}"));
                return Status::Err;
            }
            let limits = wasm_limits(&c);
            let configure = || autoloc_functions::wasm::configure(limits).map(drop);
            let started = if limits.signal_traps {
                signals::around_host(configure)
                    .map_err(|e| format!("cannot install the trap handlers: {e}"))
                    .and_then(|started| started.map_err(|e| e.to_string()))
                    .and_then(|()| signals::watch_config(ctx))
            } else {
                configure().map_err(|e| e.to_string())
            };
            if let Err(e) = started {
                ctx.log_warning(&format!("autoloc: {e}"));
                return Status::Err;
            }
            ctx.log_notice(&format!("autoloc: loaded, {c}"));
            config::set(c);
            Status::Ok
        }
        Err(e) => {
            ctx.log_warning(&format!("autoloc: bad module arguments: {e}"));
            Status::Err
        }
    }
}

/// The limits of user functions under the configuration `c`.
fn wasm_limits(c: &config::Config) -> autoloc_functions::wasm::Limits {
    autoloc_functions::wasm::Limits {
        memory: (c.wasm_memory_mb as usize) << 20,
        module: (c.wasm_module_mb as usize) << 20,
        signal_traps: c.wasm_signal_traps,
        ..autoloc_functions::wasm::Limits::default()
    }
}

/// Inside redis-server, memory comes from Redis's allocator (so `INFO memory` counts it); unit
/// tests and fuzz targets run outside Redis, where that allocator does not exist.
#[cfg(not(any(test, fuzzing)))]
type Alloc = redis_module::alloc::RedisAlloc;
#[cfg(not(any(test, fuzzing)))]
const ALLOC: Alloc = redis_module::alloc::RedisAlloc;
#[cfg(any(test, fuzzing))]
type Alloc = std::alloc::System;
#[cfg(any(test, fuzzing))]
const ALLOC: Alloc = std::alloc::System;

redis_module! {
    name: "autoloc",
    version: 1,
    allocator: (Alloc, ALLOC),
    data_types: [FUNCTIONS_TYPE],
    init: init,
    // ACL categories are given at load, where the server can (commands::declare_acl_categories);
    // AUTOLOC.FUNCTION and its subcommands are registered there too
    // (commands::declare_function_subcommands).
    commands: [
        // Keys of their `NUMKEYS <n>` form: a key spec (commands::declare_key_specs) and, for Redis
        // 7.0's cluster routing, the getkeys API (commands::run_for_client).
        ["autoloc.call", commands::call, "write deny-oom getkeys-api", 0, 0, 0, ""],
        ["autoloc.invoke", commands::invoke_frame, "write deny-oom getkeys-api", 0, 0, 0, ""],
        // Keys declared at load (commands::declare_key_specs), for all three data commands.
        ["autoloc.mget", commands::mget, "readonly fast", 0, 0, 0, ""],
        ["autoloc.stats", commands::stats, "readonly fast", 0, 0, 0, ""],
        ["autoloc.functions", commands::functions, "readonly fast", 0, 0, 0, ""],
        ["autoloc.connect", commands::connect, "readonly", 0, 0, 0, ""],
        ["autoloc.report", commands::report, "readonly fast", 0, 0, 0, ""],
        ["autoloc.placement", commands::placement, "readonly fast", 0, 0, 0, ""],
    ],
}
