//! The module's commands. Each one runs behind [`guard`], which turns a panic into an error reply.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use autoloc_dataplane::clock::thread_cpu_ns;
use autoloc_functions::exec::block_on;
use autoloc_functions::{Error, Registry, Reply};
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::counters::{self, Sample};
use crate::store::KeyspaceStore;

/// The functions this module runs.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

/// Runs `f`, replying with an error instead of unwinding into redis-server if it panics.
fn guard(command: &str, f: impl FnOnce() -> RedisResult) -> RedisResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(RedisError::String(format!(
            "ERR internal error in {command}: {what}"
        )))
    })
}

fn to_redis(reply: Reply) -> RedisValue {
    match reply {
        Reply::Nil => RedisValue::Null,
        Reply::Int(n) => RedisValue::Integer(n),
        Reply::Bulk(b) => RedisValue::StringBuffer(b),
        Reply::Array(items) => RedisValue::Array(items.into_iter().map(to_redis).collect()),
    }
}

fn to_error(e: &Error) -> RedisError {
    RedisError::String(e.to_wire())
}

/// `AUTOLOC.CALL <function> <args...>`: runs the function storage-side and replies with its
/// result; `PUSHBACK ...` if it ran past the budget (the caller should run it compute-side).
pub fn call(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.CALL", || {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let (index, function) = registry()
            .resolve(args[1].as_slice())
            .map_err(|e| to_error(&e))?;
        let fargs: Vec<Vec<u8>> = args[2..].iter().map(|a| a.as_slice().to_vec()).collect();
        let store = KeyspaceStore::new(ctx, crate::config::budget());
        let cpu = thread_cpu_ns();
        let result = block_on(function.call(&store, &fargs));
        let (keys_read, bytes_read) = store.reads();
        counters::record(
            index,
            Sample {
                error: result.is_err(),
                pushback: result.as_ref().is_err_and(Error::is_pushback),
                cpu_ns: thread_cpu_ns().saturating_sub(cpu),
                keys_read,
                bytes_read,
            },
        );
        match result {
            Ok(out) => Ok(to_redis(out.to_reply())),
            Err(e) => Err(to_error(&e)),
        }
    })
}

/// `AUTOLOC.FUNCTIONS`: `[name, usage]` for every function.
pub fn functions(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.FUNCTIONS", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        Ok(RedisValue::Array(
            registry()
                .iter()
                .map(|f| {
                    RedisValue::Array(vec![
                        RedisValue::BulkString(f.name().into()),
                        RedisValue::BulkString(f.usage().into()),
                    ])
                })
                .collect(),
        ))
    })
}
