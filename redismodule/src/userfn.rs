//! User functions: `AUTOLOC.FUNCTION LOAD [REPLACE] | LIST | DELETE | DUMP`, kept like Redis
//! keeps its own `FUNCTION` libraries.
//!
//! - LOAD validates and compiles the module ([`autoloc_functions::wasm::Host::compile`]) before
//!   it changes anything, then registers it in [`crate::registry::registry`], where every path
//!   (commands, every data-plane transport, deferred runs) finds it as it finds a built-in. A
//!   client that may block waits while the loader thread compiles ([`crate::loader`]), so the
//!   main thread keeps serving; the function is installed under Redis's lock.
//! - LOAD and DELETE are propagated verbatim, once they succeeded: replicas and the AOF see them
//!   as commands.
//! - The modules' bytes are saved in the RDB as auxiliary data of the module type
//!   [`FUNCTIONS_TYPE`] (before the keyspace), so a restart, a full resync and an AOF with its
//!   RDB preamble bring them back.
//! - The table of loaded bytes ([`LOADED`]) is touched only under Redis's lock: on the main
//!   thread (commands, RDB save and load) or by the loader thread holding it, never by a
//!   data-plane thread. Redis forks only on its main thread holding the lock, so a fork cannot
//!   catch the table's own lock held.

use std::collections::BTreeMap;
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Mutex};

use autoloc_functions::hex;
use autoloc_functions::wasm;
use autoloc_functions::{Error, Function};
use redis_module::native_types::RedisType;
use redis_module::{raw, Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::acl::Caller;
use crate::registry::registry;

/// A loaded module's bytes and version.
struct Loaded {
    bytes: Arc<[u8]>,
    hash: [u8; 32],
}

/// Loaded modules by function name (under Redis's lock only: see the module docs).
static LOADED: Mutex<BTreeMap<String, Loaded>> = Mutex::new(BTreeMap::new());

fn loaded() -> std::sync::MutexGuard<'static, BTreeMap<String, Loaded>> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles `bytes` and registers the function (in place of one of the same name if
/// `replace`), on the calling thread. Nothing changes on an error.
pub fn load(bytes: &[u8], replace: bool) -> Result<String, Error> {
    let f = wasm::host().compile(bytes)?;
    install(f, bytes.into(), replace)
}

/// Registers `f`, compiled from `bytes`, in place of one of the same name if `replace` (which
/// is checked here: of two LOADs of one name, the second to be installed sees the first).
/// Nothing changes on an error. Only under Redis's lock: see the module docs.
pub(crate) fn install(
    f: Arc<wasm::WasmFunction>,
    bytes: Arc<[u8]>,
    replace: bool,
) -> Result<String, Error> {
    let name = f.name().to_string();
    let hash = f.hash();
    let existed = registry().lookup(&name).is_some();
    let index = registry().put(f, replace)?;
    if !existed {
        // A slot freed by a delete starts over.
        crate::counters::reset(index);
    }
    loaded().insert(name.clone(), Loaded { bytes, hash });
    Ok(name)
}

pub(crate) fn err(e: &Error) -> RedisError {
    RedisError::String(e.to_resp())
}

/// The error of a LOAD or DELETE on a replica.
pub(crate) const READONLY: &str =
    "READONLY You can't load or delete functions on a read only replica.";

/// `AUTOLOC.FUNCTION <subcommand> ...`.
///
/// A LOAD is first offered to `defer` (the loader thread, [`crate::loader::defer`], passed in
/// by the command so that this module does not depend on the loader, which installs through
/// it): `true` if it took the LOAD and will answer the blocked client.
pub fn function(
    ctx: &Context,
    args: Vec<RedisString>,
    defer: impl FnOnce(&Context, &[RedisString], &RedisString, bool) -> bool,
) -> RedisResult {
    let sub = args
        .get(1)
        .map(|a| a.as_slice().to_ascii_uppercase())
        .unwrap_or_default();
    let changes = matches!(sub.as_slice(), b"LOAD" | b"DELETE");
    let flags = ctx.get_flags();
    if changes && flags.contains(ContextFlags::SLAVE) && !flags.contains(ContextFlags::REPLICATED) {
        return Err(RedisError::Str(READONLY));
    }
    // The `FUNCTION` subcommand each stands for (CHECK tells what LIST shows).
    let stands_for: Option<&[u8]> = match sub.as_slice() {
        b"LOAD" | b"DELETE" | b"DUMP" | b"LIST" => Some(&sub),
        b"CHECK" => Some(b"LIST"),
        _ => None,
    };
    // As `FUNCTION <sub>` would: what the master or the AOF sends was checked where it began.
    if let Some(stands_for) = stands_for {
        if !flags.intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
            Caller::of_client(ctx)
                .and_then(|caller| caller.may_run(ctx, &[b"FUNCTION", stands_for]))
                .map_err(|e| err(&e))?;
        }
    }
    match (sub.as_slice(), &args[2.min(args.len())..]) {
        (b"LOAD", rest) => {
            let (replace, bytes) = match rest {
                [bytes] => (false, bytes),
                [flag, bytes] if flag.as_slice().eq_ignore_ascii_case(b"REPLACE") => (true, bytes),
                _ => {
                    return Err(RedisError::Str(
                        "ERR usage: AUTOLOC.FUNCTION LOAD [REPLACE] <wasm module bytes>",
                    ))
                }
            };
            // Compiled by the loader thread, which answers the blocked client, where it can
            // block; else here, on the main thread.
            if defer(ctx, &args, bytes, replace) {
                return Ok(RedisValue::NoReply);
            }
            let name = load(bytes.as_slice(), replace).map_err(|e| err(&e))?;
            ctx.replicate_verbatim();
            Ok(RedisValue::BulkString(name))
        }
        (b"DELETE", [name]) => {
            let name = name.try_as_str().map_err(|_| RedisError::Str("ERR bad name"))?;
            registry().remove(name).map_err(|e| err(&e))?;
            loaded().remove(&name.to_ascii_lowercase());
            ctx.replicate_verbatim();
            Ok(RedisValue::SimpleStringStatic("OK"))
        }
        (b"CHECK", [name, version]) => {
            check(name.as_slice(), version.as_slice()).map_err(|e| err(&e))?;
            Ok(RedisValue::SimpleStringStatic("OK"))
        }
        (b"DUMP", [name]) => {
            let name = String::from_utf8_lossy(name.as_slice()).to_ascii_lowercase();
            match loaded().get(&name) {
                Some(l) => Ok(RedisValue::StringBuffer(l.bytes.to_vec())),
                None => Err(err(&Error::UnknownFunction(name))),
            }
        }
        (b"LIST", []) => {
            let loaded = loaded();
            Ok(RedisValue::Array(
                registry()
                    .all()
                    .into_iter()
                    .map(|(_, f)| {
                        let size = loaded.get(f.name()).map_or(0, |l| l.bytes.len());
                        RedisValue::Array(vec![
                            RedisValue::BulkString(f.name().into()),
                            RedisValue::BulkString(f.usage().into()),
                            RedisValue::BulkString(f.output_kind().as_str().into()),
                            RedisValue::BulkString(match f.version() {
                                Some(h) => hex::encode(&h),
                                None => "builtin".into(),
                            }),
                            RedisValue::Integer(size as i64),
                        ])
                    })
                    .collect(),
            ))
        }
        _ => Err(RedisError::Str(
            "ERR usage: AUTOLOC.FUNCTION LOAD [REPLACE] <bytes> | LIST | DELETE <name> | DUMP <name> | CHECK <name> <version>",
        )),
    }
}

/// Whether the function `name` loaded now is the version `version` (a hex prefix of its
/// module's SHA-256): a compute node running its copy asks, over a link (the `CheckVersion`
/// message) or over RESP (`AUTOLOC.FUNCTION CHECK <name> <version>`). [`Error::Stale`] for
/// another version, [`Error::UnknownFunction`] for none.
pub fn check(name: &[u8], version: &[u8]) -> Result<(), Error> {
    registry()
        .resolve(name)
        .and_then(|(_, f)| check_version(&*f, Some(version)))
}

/// The version a caller names with `name@<hex prefix>` is the one loaded now, or
/// [`Error::Stale`].
pub fn check_version(f: &dyn Function, wanted: Option<&[u8]>) -> Result<(), Error> {
    match (f.version(), wanted) {
        (Some(have), Some(want)) if !hex::has_prefix(&have, want) => Err(Error::Stale(format!(
            "function '{}' was replaced (now version {}); fetch it again",
            f.name(),
            &hex::encode(&have[..8])
        ))),
        _ => Ok(()),
    }
}

/// The module type whose auxiliary RDB data holds the loaded modules. It never holds a key.
pub static FUNCTIONS_TYPE: RedisType = RedisType::new(
    "AutoLocFn",
    1,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: None,
        rdb_save: None,
        aof_rewrite: None,
        free: Some(free),
        mem_usage: None,
        digest: None,
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::Aux::Before as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// Never called: the type holds no keys.
unsafe extern "C" fn free(_value: *mut c_void) {}

/// Saves every loaded module: a count, then each module's bytes.
///
/// # Safety
/// Called by Redis with a valid `RedisModuleIO` while it writes an RDB.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    let _ = std::panic::catch_unwind(|| {
        let loaded = loaded();
        raw::save_unsigned(rdb, loaded.len() as u64);
        for l in loaded.values() {
            raw::save_slice(rdb, &l.bytes);
        }
    });
}

/// Loads what [`aux_save`] saved, compiling and registering each module again.
///
/// # Safety
/// Called by Redis with a valid `RedisModuleIO` while it reads an RDB.
unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, _encver: c_int, _when: c_int) -> c_int {
    let ok = std::panic::catch_unwind(|| -> Result<(), String> {
        let n = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        for _ in 0..n {
            let bytes = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            load(bytes.as_ref(), true).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    match ok {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(e)) => {
            raw::redis_log(
                std::ptr::null_mut(),
                &format!("autoloc: cannot load user functions from the RDB: {e}"),
            );
            raw::REDISMODULE_ERR as c_int
        }
        Err(_) => raw::REDISMODULE_ERR as c_int,
    }
}

/// The loaded hash of `name`, for tests and `LIST`.
pub fn loaded_hash(name: &str) -> Option<[u8; 32]> {
    loaded().get(name).map(|l| l.hash)
}
