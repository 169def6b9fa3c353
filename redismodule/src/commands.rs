//! The module's commands. Each one runs behind [`guard`], which turns a panic into an error reply.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use autoloc_dataplane::clock::thread_cpu_ns;
use autoloc_functions::exec::block_on;
use autoloc_functions::{Error, Output, Registry, Reply};
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

/// What one storage-side invocation did.
#[derive(Debug)]
pub struct StorageRun {
    /// Its result.
    pub result: Result<Output, Error>,
    /// CPU time it took, ns.
    pub cpu_ns: u64,
    /// Keys it read.
    pub keys_read: u64,
    /// Value bytes it read.
    pub bytes_read: u64,
    /// Store accesses it made (each a round trip had it run compute-side).
    pub reads: u64,
    /// The keys it read, if asked for.
    pub read_keys: Vec<Vec<u8>>,
}

/// Runs the function called `name` storage-side with `args` against the keyspace of `ctx`
/// under `budget`, and records it in the counters. With `remember_reads`, the run also keeps
/// the names of the keys it read (for a pushback's read set). Shared by `AUTOLOC.CALL` and the
/// data-plane threads.
pub fn invoke(
    ctx: &Context,
    name: &[u8],
    args: &[Vec<u8>],
    budget: std::time::Duration,
    remember_reads: bool,
) -> StorageRun {
    let (index, function) = match registry().resolve(name) {
        Ok(f) => f,
        Err(e) => {
            return StorageRun {
                result: Err(e),
                cpu_ns: 0,
                keys_read: 0,
                bytes_read: 0,
                reads: 0,
                read_keys: Vec::new(),
            }
        }
    };
    let mut store = KeyspaceStore::new(ctx, budget);
    if remember_reads {
        store = store.remembering_reads();
    }
    let cpu = thread_cpu_ns();
    let result = block_on(function.call(&store, args));
    let cpu_ns = thread_cpu_ns().saturating_sub(cpu);
    let (keys_read, bytes_read) = store.reads();
    counters::record(
        index,
        Sample {
            error: result.is_err(),
            pushback: result.as_ref().is_err_and(Error::is_pushback),
            cpu_ns,
            keys_read,
            bytes_read,
        },
    );
    StorageRun {
        result,
        cpu_ns,
        keys_read,
        bytes_read,
        reads: store.accesses(),
        read_keys: store.read_keys(),
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

/// `AUTOLOC.CONNECT <transport> [options]`: sets up a fast data-plane link for the calling
/// client and replies with what it needs to attach:
/// - `shm`: the path of a new shared-memory segment (mode 0600) to map;
/// - `tcp`: the port of the io_uring TCP data path;
/// - `rdma <client QpInfo>`: the server's `QpInfo` (queue pair, ring address and rkey).
///
/// It runs on an ordinary Redis connection, so AUTH and ACLs apply: a client that may not run
/// this command gets no link.
pub fn connect(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.CONNECT", || {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let transport = String::from_utf8_lossy(args[1].as_slice()).to_ascii_lowercase();
        let fail = |e: String| RedisError::String(format!("ERR AUTOLOC.CONNECT {transport}: {e}"));
        match (transport.as_str(), args.len()) {
            ("shm", 2) => crate::dataplane::connect_shm()
                .map(RedisValue::BulkString)
                .map_err(fail),
            ("tcp", 2) => crate::dataplane::connect_tcp()
                .map(|p| RedisValue::Integer(p.into()))
                .map_err(fail),
            ("rdma", 3) => connect_rdma(args[2].as_slice())
                .map(RedisValue::BulkString)
                .map_err(fail),
            ("shm" | "tcp" | "rdma", _) => Err(RedisError::WrongArity),
            _ => Err(RedisError::String(format!(
                "ERR unknown transport '{}' (shm, tcp, rdma)",
                transport.escape_debug()
            ))),
        }
    })
}

#[cfg(feature = "rdma")]
fn connect_rdma(client: &[u8]) -> Result<String, String> {
    crate::dataplane::connect_rdma(client)
}

#[cfg(not(feature = "rdma"))]
fn connect_rdma(_client: &[u8]) -> Result<String, String> {
    Err("this build of the module has no RDMA support (build it with --features rdma)".into())
}

/// `AUTOLOC.REPORT <node> <json>`: a compute node's placement table (see [`crate::placement`]).
pub fn report(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.REPORT", || {
        if args.len() != 3 {
            return Err(RedisError::WrongArity);
        }
        let node = String::from_utf8_lossy(args[1].as_slice());
        let json = std::str::from_utf8(args[2].as_slice())
            .map_err(|_| RedisError::Str("ERR report is not UTF-8"))?;
        crate::placement::report(&node, json)
            .map_err(|e| RedisError::String(format!("ERR {e}")))?;
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

/// `AUTOLOC.PLACEMENT`: `[node, age_ms, json]` for every node that reported in the last 10 s.
pub fn placement(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.PLACEMENT", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        Ok(RedisValue::Array(
            crate::placement::reports()
                .into_iter()
                .map(|(node, age, json)| {
                    RedisValue::Array(vec![
                        RedisValue::BulkString(node),
                        RedisValue::Integer(age.as_millis() as i64),
                        RedisValue::BulkString(json),
                    ])
                })
                .collect(),
        ))
    })
}
