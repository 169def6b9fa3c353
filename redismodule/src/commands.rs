//! The module's commands. Each one runs behind [`guard`], which turns a panic into an error reply.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::acl::Caller;
use crate::invoke::{self, registry, Request, Thread};
use crate::store::read_keys;

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

/// `AUTOLOC.CALL <function> <args...>`: runs the function storage-side and replies with its
/// result as RESP; `-PUSHBACK ...` if it ran past the budget (the caller should run it
/// compute-side), `-CODE message` if it failed.
pub fn call(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.CALL", || run_for_client(ctx, &args, false))
}

/// `AUTOLOC.INVOKE <function> <args...>`: `AUTOLOC.CALL` for compute nodes over RESP. The
/// reply is one bulk string holding the wire frame the data plane would send (`InvokeReply`
/// with the run's cost, `Pushback` with its read set, or `Error` with its code), so every
/// transport hands the runtime the same outcome.
pub fn invoke_frame(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.INVOKE", || run_for_client(ctx, &args, true))
}

/// Runs `<function> <args...>` (after the command's name in `args`) for the calling client:
/// its ACL user, on its database; replies as `AUTOLOC.INVOKE` if `frame`, else as
/// `AUTOLOC.CALL`.
///
/// It starts on Redis's main thread, which cannot give the lock back while it runs. A run that
/// is still going after `lock-us` stops there (having written nothing), the client is blocked,
/// and a data-plane thread runs it again from the start with its whole budget, giving the lock
/// back every `lock-us` ([`crate::lock`]), then answers and unblocks the client. A function
/// whose recent runs took longer than `lock-us` goes to the data-plane thread at once. Inside
/// `MULTI` or a script, where a client cannot block, it runs to its budget on the main thread.
fn run_for_client(ctx: &Context, args: &[RedisString], frame: bool) -> RedisResult {
    let [_, function, fargs @ ..] = args else {
        return Err(RedisError::WrongArity);
    };
    let fargs: Vec<&[u8]> = fargs.iter().map(RedisString::as_slice).collect();
    let caller = Caller::of_client(ctx).map_err(|e| invoke::error(&e))?;
    let may_block = !ctx
        .get_flags()
        .intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING);
    let on = if may_block {
        Thread::MainMayDefer
    } else {
        Thread::Main
    };
    let run = invoke::invoke(
        ctx,
        function.as_slice(),
        &fargs,
        Request::now(&caller, frame, on),
    );
    if !run.deferred {
        return invoke::answer(ctx, &caller, run, frame);
    }
    crate::dataplane::defer(crate::dataplane::Deferred {
        client: Some(ctx.block_client()),
        caller,
        function: function.as_slice().to_vec(),
        args: fargs.iter().map(|a| a.to_vec()).collect(),
        frame,
        seen: std::time::Instant::now(),
    });
    Ok(RedisValue::NoReply)
}

/// `AUTOLOC.MGET <key> [key ...]`: `MGET` under the module's read rule (a key of another type
/// fails the whole read with `-WRONGTYPE` naming it, where `MGET` reads it as nil): how
/// compute-side functions read many keys over RESP.
///
/// Its keys are declared read-only by [`declare_mget_keys`], as `MGET`'s are.
pub fn mget(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.MGET", || {
        let [_, keys @ ..] = args.as_slice() else {
            return Err(RedisError::WrongArity);
        };
        if keys.is_empty() {
            return Err(RedisError::WrongArity);
        }
        let names: Vec<&[u8]> = keys.iter().map(RedisString::as_slice).collect();
        let caller = Caller::of_client(ctx).map_err(|e| invoke::error(&e))?;
        let mut opened = Vec::new();
        let values = read_keys(ctx, &caller, &names, &mut opened).map_err(|e| invoke::error(&e))?;
        Ok(RedisValue::Array(
            values
                .iter()
                .map(|v| v.map_or(RedisValue::Null, |v| RedisValue::StringBuffer(v.to_vec())))
                .collect(),
        ))
    })
}

/// Declares `AUTOLOC.MGET`'s arguments as keys it only reads (`RO ACCESS`, like `MGET`'s). Redis
/// checks a command's declared keys against the caller's ACL before the command runs, and the
/// keys of a legacy key range (`firstkey, lastkey, step` at registration) count as read and
/// written: a user who may only read (`%R~`) would be refused every compute-side read over
/// RESP. So the command is registered without keys and gets this key spec at load. A server
/// without `RedisModule_SetCommandInfo` (before Redis 7) keeps it without: the module's own
/// per-key check ([`read_keys`]) applies either way.
pub fn declare_mget_keys(ctx: &Context) -> Result<(), String> {
    use redis_module::commands::{
        get_redis_key_spec, BeginSearch, FindKeys, KeySpec, KeySpecFlags,
    };
    use redis_module::raw;
    static VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    // SAFETY: the module API's function pointers are filled in by RedisModule_Init, before this
    // runs at load, and never change after; they are read by value.
    let (get_command, set_info) =
        unsafe { (raw::RedisModule_GetCommand, raw::RedisModule_SetCommandInfo) };
    let (Some(get_command), Some(set_info)) = (get_command, set_info) else {
        return Ok(());
    };
    // SAFETY: `ctx` is the module's load context and the name is NUL-terminated.
    let command = unsafe { get_command(ctx.ctx, c"autoloc.mget".as_ptr()) };
    if command.is_null() {
        return Err("AUTOLOC.MGET is not registered".into());
    }
    // Every argument from the first on is a key; the list ends with a zeroed spec.
    let mut specs = get_redis_key_spec(vec![KeySpec::new(
        None,
        KeySpecFlags::READ_ONLY | KeySpecFlags::ACCESS,
        BeginSearch::new_index(1),
        FindKeys::new_range(-1, 1, 0),
    )]);
    let info = raw::RedisModuleCommandInfo {
        version: &VERSION,
        summary: std::ptr::null(),
        complexity: std::ptr::null(),
        since: std::ptr::null(),
        history: std::ptr::null_mut(),
        tips: std::ptr::null(),
        arity: -2,
        key_specs: specs.as_mut_ptr(),
        args: std::ptr::null_mut(),
    };
    // SAFETY: `command` is the handle Redis just returned for a command of this module, at load;
    // `info` and `specs` (without notes, so nothing to free) live across the call, which copies
    // what it keeps.
    let status = unsafe { set_info(command, &info) };
    if status == raw::Status::Err as std::os::raw::c_int {
        return Err("RedisModule_SetCommandInfo refused AUTOLOC.MGET's key spec".into());
    }
    Ok(())
}

/// `AUTOLOC.STATS`: the module's counters as `name value` pairs (the fields of `INFO autoloc`,
/// typed): what a compute node's placement controller reads the storage side's load from.
pub fn stats(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.STATS", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        Ok(RedisValue::Array(
            crate::counters::fields()
                .into_iter()
                .flat_map(|(name, value)| {
                    [
                        RedisValue::BulkString(name),
                        RedisValue::Integer(i64::try_from(value).unwrap_or(i64::MAX)),
                    ]
                })
                .collect(),
        ))
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
                .all()
                .into_iter()
                .map(|(_, f)| {
                    RedisValue::Array(vec![
                        RedisValue::BulkString(f.name().into()),
                        RedisValue::BulkString(f.usage().into()),
                    ])
                })
                .collect(),
        ))
    })
}

/// `AUTOLOC.FUNCTION LOAD [REPLACE] <bytes> | LIST | DELETE <name> | DUMP <name>`: user
/// functions ([`crate::userfn`]).
pub fn function(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.FUNCTION", || crate::userfn::function(ctx, args))
}

/// `AUTOLOC.CONNECT <transport> [options]`: sets up a fast data-plane link for the calling
/// client and replies with what it needs to attach:
/// - `shm`: `[path, secret]`: a new shared-memory segment (mode 0600) to map, and the secret the
///   client presents when it attaches;
/// - `tcp`: `[port, secret]`: the port of the io_uring TCP data path, and a one-time secret the
///   connection must present first (a `Hello` frame), good for 10 s;
/// - `rdma <client QpInfo>`: the server's `QpInfo` (queue pair, ring address and rkey).
///
/// It runs on an ordinary Redis connection, so AUTH and ACLs apply: a client that may not run
/// this command gets no link, and the link serves the client's ACL user on its database.
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.CONNECT", || {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let transport = String::from_utf8_lossy(args[1].as_slice()).to_ascii_lowercase();
        let fail = |e: String| RedisError::String(format!("ERR AUTOLOC.CONNECT {transport}: {e}"));
        let caller = Caller::of_client(ctx).map_err(|e| invoke::error(&e))?;
        match (transport.as_str(), args.len()) {
            ("shm", 2) => crate::dataplane::connect_shm(caller)
                .map(|(path, secret)| {
                    RedisValue::Array(vec![
                        RedisValue::BulkString(path),
                        RedisValue::BulkString(secret),
                    ])
                })
                .map_err(fail),
            ("tcp", 2) => crate::dataplane::connect_tcp(caller)
                .map(|(port, token)| {
                    RedisValue::Array(vec![
                        RedisValue::Integer(port.into()),
                        RedisValue::StringBuffer(token),
                    ])
                })
                .map_err(fail),
            ("rdma", 3) => connect_rdma(args[2].as_slice(), caller)
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
fn connect_rdma(client: &[u8], caller: Caller) -> Result<String, String> {
    crate::dataplane::connect_rdma(client, caller)
}

#[cfg(not(feature = "rdma"))]
fn connect_rdma(_client: &[u8], _caller: Caller) -> Result<String, String> {
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
