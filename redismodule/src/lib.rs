//! AutoLoc's Redis module: runs functions storage-side, next to the data.
//!
//! Loaded with `redis-server --loadmodule libautoloc_redismodule.so [budget-us N]`.
//!
//! # Layout
//! - [`config`]: module arguments (the storage-side budget).
//! - [`store`]: [`store::KeyspaceStore`], the `Store` over Redis's own keyspace: values are read
//!   in place (string DMA, no copy), and every access checks the invocation's budget.
//! - [`counters`]: per-function atomic counters and the `INFO autoloc` section.
//! - [`commands`]: `AUTOLOC.CALL`, `AUTOLOC.FUNCTIONS`; every entry point catches panics and
//!   replies with an error, since a panic inside redis-server would abort it.

pub mod commands;
pub mod config;
pub mod counters;
pub mod store;

use redis_module::{redis_module, Context, RedisString, Status};

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    match config::Config::parse(&args) {
        Ok(c) => {
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

redis_module! {
    name: "autoloc",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    commands: [
        ["autoloc.call", commands::call, "write deny-oom", 0, 0, 0, ""],
        ["autoloc.functions", commands::functions, "readonly fast", 0, 0, 0, ""],
    ],
}
