//! The module's commands. Each one runs behind [`guard`], which turns a panic into an error reply.

use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::acl::Caller;
use crate::api::module_api;
use crate::guard::guard;
use crate::invoke::{self, Request, Thread};
use crate::registry::registry;
use crate::store::read_keys;

/// Refuses with `NOPERM` if the calling client's user may not run `command`, which this command
/// stands for.
fn may_run(ctx: &Context, command: &[&[u8]]) -> Result<(), RedisError> {
    Caller::of_client(ctx)
        .and_then(|caller| caller.may_run(ctx, command))
        .map_err(|e| invoke::error(&e))
}

/// `AUTOLOC.CALL <function> [NUMKEYS <n> <key>...] <args...>`: runs the function
/// storage-side and replies with its result as RESP (the keys form names the keys it starts
/// from, for Redis to route by: [`split_keys_form`]); `-PUSHBACK ...` if it ran past the budget (the caller should run it
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
    if ctx.is_keys_position_request() {
        // Redis asks where the keys are (the command is flagged `getkeys-api`): Redis 7.0's
        // cluster routing reads a module command's keys here, not from its keyword key spec.
        if let [_, _, rest @ ..] = args {
            let rest: Vec<&[u8]> = rest.iter().map(RedisString::as_slice).collect();
            if let Ok(Some(n)) = keys_form(&rest) {
                // `NUMKEYS <n>` then the keys, from argument 4 of the command.
                for pos in 4..4 + n {
                    ctx.key_at_pos(pos as i32);
                }
            }
        }
        return Ok(RedisValue::NoReply);
    }
    let [_, function, fargs @ ..] = args else {
        return Err(RedisError::WrongArity);
    };
    let fargs: Vec<&[u8]> = fargs.iter().map(RedisString::as_slice).collect();
    let fargs = split_keys_form(&fargs).map_err(RedisError::String)?;
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
        fargs,
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
/// Its keys are declared read-only by [`declare_key_specs`], as `MGET`'s are.
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

/// Declares the keys of the data commands (key specs), so that Redis checks them against the
/// caller's ACL and, in a cluster, routes by them (`MOVED`, `ASK`, `TRYAGAIN`, `CROSSSLOT`, and
/// `redis-cli -c` following them):
/// - `AUTOLOC.MGET`: every argument, read-only (`RO ACCESS`, like `MGET`'s). The keys of a
///   legacy key range (`firstkey, lastkey, step` at registration) count as read and written: a
///   user who may only read (`%R~`) would be refused every compute-side read over RESP.
/// - `AUTOLOC.CALL` and `AUTOLOC.INVOKE`: the keys of the `NUMKEYS <n> <key>...` form (as
///   `FCALL`'s `numkeys`), the keys an invocation starts from ([`split_keys_form`]). They are
///   declared `RO ACCESS`: what a function writes is checked as `SET` on the key it writes, in
///   the one write path, as every read is checked as `GET`.
///
/// A server without `RedisModule_SetCommandInfo` (before Redis 7) keeps them without: the
/// module's own per-key checks ([`read_keys`], [`crate::cluster`]) apply either way.
pub fn declare_key_specs(ctx: &Context) -> Result<(), String> {
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
    let Ok(set_info) = module_api!(RedisModule_SetCommandInfo) else {
        return Ok(());
    };
    let read = || KeySpecFlags::READ_ONLY | KeySpecFlags::ACCESS;
    // Every argument from the first on is a key.
    let mget = || {
        KeySpec::new(
            None,
            read(),
            BeginSearch::new_index(1),
            FindKeys::new_range(-1, 1, 0),
        )
    };
    // After the keyword `NUMKEYS` (searched from the argument after the function's name): a count,
    // then that many keys.
    let keys_form = || {
        KeySpec::new(
            None,
            read(),
            BeginSearch::new_keyword(KEYS_KEYWORD.into(), 2),
            FindKeys::new_keys_num(0, 1, 1),
        )
    };
    let specs: [(&std::ffi::CStr, i32, KeySpec); 3] = [
        (c"autoloc.mget", -2, mget()),
        (c"autoloc.call", -2, keys_form()),
        (c"autoloc.invoke", -2, keys_form()),
    ];
    for (name, arity, spec) in specs {
        let command = command(ctx, name)?;
        // The list ends with a zeroed spec. A keyword's C string is leaked (a few bytes, once).
        let mut specs = get_redis_key_spec(vec![spec]);
        let info = raw::RedisModuleCommandInfo {
            version: &VERSION,
            summary: std::ptr::null(),
            complexity: std::ptr::null(),
            since: std::ptr::null(),
            history: std::ptr::null_mut(),
            tips: std::ptr::null(),
            arity,
            key_specs: specs.as_mut_ptr(),
            args: std::ptr::null_mut(),
        };
        // SAFETY: `command` is the handle Redis just returned for a command of this module, at
        // load; `info` and `specs` (without notes, so nothing to free) live across the call,
        // which copies what it keeps.
        let status = unsafe { set_info(command, &info) };
        if status == raw::Status::Err as std::os::raw::c_int {
            return Err(format!(
                "RedisModule_SetCommandInfo refused the key spec of {}",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// The keyword of the keys form of `AUTOLOC.CALL` and `AUTOLOC.INVOKE`.
pub const KEYS_KEYWORD: &str = "NUMKEYS";

/// The function's arguments of an invocation, `args` as given after the function's name: in the
/// keys form, `NUMKEYS <n> <key>... <arg>...`, the keys then the other arguments (the form
/// only names which arguments are keys, for Redis to route and check by); otherwise `args` as
/// they are.
pub fn split_keys_form<A: AsRef<[u8]>>(args: &[A]) -> Result<&[A], String> {
    Ok(match keys_form(args)? {
        Some(_) => &args[2..],
        None => args,
    })
}

/// How many keys the keys form of `args` names (`None`: not the keys form). An argument list
/// starting with `NUMKEYS` whose count does not fit is a usage error.
pub fn keys_form<A: AsRef<[u8]>>(args: &[A]) -> Result<Option<usize>, String> {
    match args {
        [keyword, count, rest @ ..]
            if keyword
                .as_ref()
                .eq_ignore_ascii_case(KEYS_KEYWORD.as_bytes()) =>
        {
            let n = std::str::from_utf8(count.as_ref())
                .ok()
                .and_then(|c| c.parse::<usize>().ok());
            match n {
                Some(n) if n <= rest.len() => Ok(Some(n)),
                _ => Err(format!(
                    "ERR usage: NUMKEYS <n> <key>... <arg>...: <n> must be a count of at \
                     most the {} arguments after it",
                    rest.len()
                )),
            }
        }
        _ => Ok(None),
    }
}

/// `AUTOLOC.STATS`: the module's counters as `name value` pairs (the fields of `INFO autoloc`,
/// typed): what a compute node's placement controller reads the storage side's load from.
/// As `INFO`, which shows the same counters, it needs the permission to run `INFO`.
pub fn stats(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.STATS", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        may_run(ctx, &[b"INFO"])?;
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

/// `AUTOLOC.FUNCTIONS`: `[name, usage]` for every function; a listing, as `FUNCTION LIST`.
pub fn functions(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.FUNCTIONS", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        may_run(ctx, &[b"FUNCTION", b"LIST"])?;
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

/// `AUTOLOC.FUNCTION LOAD [REPLACE] <bytes> | LIST | DELETE <name> | DUMP <name> | CHECK <name>
/// <version>`: user functions ([`crate::userfn`]).
pub fn function(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.FUNCTION", || {
        crate::userfn::function(ctx, args, crate::loader::defer)
    })
}

/// `AUTOLOC.FUNCTION`'s subcommands and their flags.
const FUNCTION_SUBCOMMANDS: [(&std::ffi::CStr, &std::ffi::CStr); 5] = [
    // On a replica, Redis itself refuses a "write" command unless it comes from the master.
    (c"load", c"write deny-oom"),
    (c"delete", c"write"),
    (c"list", c"readonly"),
    (c"dump", c"readonly"),
    (c"check", c"readonly fast"),
];

/// The ACL categories of each command: those of the Redis command it stands for. A call, like
/// `FCALL`, is `@scripting`: what it reads and writes answers to `GET`, `MGET` and `SET` inside
/// ([`crate::acl`]).
const ACL_CATEGORIES: [(&std::ffi::CStr, &std::ffi::CStr); 13] = [
    (c"autoloc.call", c"slow scripting"),
    (c"autoloc.invoke", c"slow scripting"),
    (c"autoloc.mget", c"read fast"),
    // As INFO.
    (c"autoloc.stats", c"slow dangerous"),
    (c"autoloc.placement", c"slow dangerous"),
    // As FUNCTION LIST.
    (c"autoloc.functions", c"slow scripting"),
    (c"autoloc.connect", c"fast connection"),
    (c"autoloc.report", c"fast"),
    // As FUNCTION's.
    (c"autoloc.function|load", c"write slow scripting"),
    (c"autoloc.function|delete", c"write slow scripting"),
    (c"autoloc.function|list", c"slow scripting"),
    (c"autoloc.function|dump", c"slow scripting"),
    (c"autoloc.function|check", c"fast scripting"),
];

/// This module's command `name` (`parent|sub` for a subcommand), at load.
fn command(
    ctx: &Context,
    name: &std::ffi::CStr,
) -> Result<*mut redis_module::raw::RedisModuleCommand, String> {
    let get = module_api!(RedisModule_GetCommand).map_err(|e| e.to_string())?;
    // SAFETY: `ctx` is the module's load context and `name` is NUL-terminated.
    let command = unsafe { get(ctx.ctx, name.as_ptr()) };
    if command.is_null() {
        return Err(format!("{} is not registered", name.to_string_lossy()));
    }
    Ok(command)
}

/// Gives every command its ACL categories ([`ACL_CATEGORIES`]) where the server can (Redis 7.2
/// and later: `+@read`, `-@write`, `ACL CAT` then reach them); on Redis 7.0 a module command has
/// none, and the check inside ([`crate::acl`]) is what holds.
pub fn declare_acl_categories(ctx: &Context) -> Result<(), String> {
    use redis_module::raw;
    let Ok(set_categories) = module_api!(RedisModule_SetCommandACLCategories) else {
        return Ok(());
    };
    for (name, categories) in ACL_CATEGORIES {
        let command = command(ctx, name)?;
        // SAFETY: `command` is this module's, at load; the categories a static C string.
        let status = unsafe { set_categories(command, categories.as_ptr()) };
        if status != raw::Status::Ok as std::os::raw::c_int {
            return Err(format!(
                "cannot set the ACL categories of {}",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// Registers `AUTOLOC.FUNCTION` as a container of subcommands ([`FUNCTION_SUBCOMMANDS`]), so an
/// ACL can allow or deny each (`+autoloc.function|list -autoloc.function|load`) as it does
/// `FUNCTION`'s. Every subcommand runs [`function`].
pub fn declare_function_subcommands(ctx: &Context) -> Result<(), String> {
    use redis_module::raw;
    let lacks = |e: autoloc_functions::Error| e.to_string();
    let create = module_api!(RedisModule_CreateCommand).map_err(lacks)?;
    let create_sub = module_api!(RedisModule_CreateSubcommand).map_err(lacks)?;
    let ok = raw::Status::Ok as std::os::raw::c_int;
    // SAFETY: `ctx` is the module's load context (the only one commands may be created in);
    // the strings are NUL-terminated and static. A container has no handler of its own.
    let status = unsafe {
        create(
            ctx.ctx,
            c"autoloc.function".as_ptr(),
            None,
            c"".as_ptr(),
            0,
            0,
            0,
        )
    };
    if status != ok {
        return Err("cannot create AUTOLOC.FUNCTION".into());
    }
    let parent = command(ctx, c"autoloc.function")?;
    for (name, flags) in FUNCTION_SUBCOMMANDS {
        // SAFETY: `parent` is the container just registered, at load; static C strings.
        let status = unsafe {
            create_sub(
                parent,
                name.as_ptr(),
                Some(function_subcommand),
                flags.as_ptr(),
                0,
                0,
                0,
            )
        };
        if status != ok {
            return Err(format!(
                "cannot create AUTOLOC.FUNCTION {}",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// Redis's entry into every `AUTOLOC.FUNCTION` subcommand: [`function`], with its reply.
extern "C" fn function_subcommand(
    ctx: *mut redis_module::raw::RedisModuleCtx,
    argv: *mut *mut redis_module::raw::RedisModuleString,
    argc: std::os::raw::c_int,
) -> std::os::raw::c_int {
    let context = Context::new(ctx);
    // The whole command line: `AUTOLOC.FUNCTION <subcommand> ...`, as [`function`] takes it.
    let args = redis_module::decode_args(ctx, argv, argc);
    let response = function(&context, args);
    context.reply(response) as std::os::raw::c_int
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

/// `AUTOLOC.PLACEMENT`: `[node, age_ms, json]` for every node that reported in the last 10 s;
/// the server's state, as `INFO` (whose `autoloc` section shows the shares).
pub fn placement(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("AUTOLOC.PLACEMENT", || {
        if args.len() != 1 {
            return Err(RedisError::WrongArity);
        }
        may_run(ctx, &[b"INFO"])?;
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
