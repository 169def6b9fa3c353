//! `AUTOLOC.FUNCTION LOAD` compiled off Redis's main thread.
//!
//! Compiling a module takes time in proportion to its size (wasmtime compiles on one thread): a
//! 7.4 MiB module took 3.7 s, all of it on the main thread, which answered nothing meanwhile (a
//! cluster node silent past `cluster-node-timeout` is failed over). So a LOAD whose client may
//! block goes to the loader thread ([`defer`]): the client is blocked, the thread compiles the
//! module without Redis's lock, then takes the lock and installs the function
//! ([`crate::userfn::install`]: the registry and the table of loaded modules), propagates the
//! LOAD, releases the lock, and answers and unblocks the client.
//!
//! **Installed under Redis's lock, from the loader thread.** Not from a reply callback of the
//! blocked client on the main thread, because:
//! - holding the lock is what the main thread does while it runs a command: nothing else of
//!   Redis runs meanwhile, and Redis forks (BGSAVE, a full sync, an AOF rewrite) only on its
//!   main thread holding the lock, so a fork never catches the table of loaded modules locked;
//! - a LOAD takes effect whether or not its client is still connected, as does any command Redis
//!   has begun; Redis calls no reply callback for a client that disconnected;
//! - a command propagated under a thread-safe context goes to the replicas and the AOF when the
//!   lock is released (Redis 7.0's `moduleGILBeforeUnlock`), as the data plane's writes do. The
//!   LOAD is propagated, with its arguments as sent, only once it is installed, so replicas and
//!   the AOF get exactly one per successful LOAD and none for a failed one, and before its client
//!   is answered.
//!
//! What may have changed while it compiled is checked at install: REPLACE (of two LOADs of one
//! name, the second to be installed sees the first), whether the server has become a replica
//! (`READONLY`, as a LOAD sent to a replica gets), and whether writes are paused
//! ([`crate::pause`]: Redis aborts if anything is propagated during a pause): the thread then
//! gives the lock back and waits for the pause to end, as Redis holds its own clients' writes.
//!
//! One thread compiles every LOAD, in the order they came: a burst of LOADs costs one core, not
//! one per LOAD. Where a client cannot block (`MULTI`, a script, a context that denies
//! blocking), or where the LOAD comes from the master or the AOF (a replica applies its stream in
//! order), it compiles on the main thread, as before.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis_module::{BlockedClient, Context, ContextFlags, RedisError, RedisString, RedisValue};

use crate::guard::guard;
use crate::lock::ThreadContext;

/// How often the loader thread looks again whether writes are still paused.
const PAUSE_POLL: Duration = Duration::from_millis(10);

/// What the loader thread is handed: one LOAD.
struct Job {
    /// The blocked client, answered when the LOAD ends (with an error if the job is dropped
    /// unanswered: a client never stays blocked).
    client: Option<BlockedClient>,
    /// The command's arguments as sent, between its name and the module: `LOAD [REPLACE]`.
    args: Vec<Vec<u8>>,
    /// The module.
    bytes: Arc<[u8]>,
    replace: bool,
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            crate::dataplane::reply_blocked(
                client,
                Err(RedisError::Str(
                    "ERR internal error in AUTOLOC.FUNCTION LOAD: the loader thread stopped; nothing was loaded",
                )),
            );
        }
    }
}

/// The loader thread's queue; `None` if the thread could not be started.
static LOADER: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// The loader thread's queue, starting the thread on first use.
fn loader() -> Option<&'static Sender<Job>> {
    LOADER
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("autoloc-load".into())
                .spawn(move || run(rx))
                .ok()?;
            Some(tx)
        })
        .as_ref()
}

/// Whether a command run with `flags` may block its client and compile off the main thread: not
/// inside `MULTI` or a script, nor where blocking is denied, nor for the master's stream or the
/// AOF, which are applied in order.
fn may_block(flags: ContextFlags) -> bool {
    !flags.intersects(
        ContextFlags::MULTI
            | ContextFlags::LUA
            | ContextFlags::DENY_BLOCKING
            | ContextFlags::REPLICATED
            | ContextFlags::LOADING,
    )
}

/// Hands the LOAD `args` (the whole command line; `bytes` its module) to the loader thread and
/// blocks its client, which the thread answers. `false`, with nothing done, where the client
/// cannot block or there is no loader thread: the caller then loads on the main thread.
pub fn defer(ctx: &Context, args: &[RedisString], bytes: &RedisString, replace: bool) -> bool {
    if !may_block(ctx.get_flags()) {
        return false;
    }
    let Some(loader) = loader() else {
        return false;
    };
    // `AUTOLOC.FUNCTION LOAD [REPLACE] <bytes>`: what lies between the name and the module.
    let middle = args.get(1..args.len().saturating_sub(1)).unwrap_or(&[]);
    let job = Job {
        client: Some(ctx.block_client()),
        args: middle.iter().map(|a| a.as_slice().to_vec()).collect(),
        bytes: bytes.as_slice().into(),
        replace,
    };
    // A job that cannot be sent (the thread is gone) answers its client as it is dropped.
    let _ = loader.send(job);
    true
}

/// The loader thread: serves one LOAD after another. A panic ends that LOAD with an error, not
/// the thread.
fn run(jobs: Receiver<Job>) {
    // Without a context, the queue is dropped with the thread: every LOAD sent to it then
    // answers its client with an error.
    let Ok(tsc) = ThreadContext::new() else {
        return;
    };
    for job in jobs {
        // `serve` answers the client whatever happens, and a job dropped by a panic answers
        // it with an error; nothing here is left half-done by an unwind (the lock is released
        // by its guard).
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| serve(&tsc, job)));
    }
}

/// Compiles `job`'s module, installs and propagates it under Redis's lock, then answers.
fn serve(tsc: &ThreadContext, mut job: Job) {
    let Some(client) = job.client.take() else {
        return;
    };
    let result = guard("AUTOLOC.FUNCTION LOAD", || {
        let f = autoloc_functions::wasm::host()
            .compile(&job.bytes)
            .map_err(|e| crate::userfn::err(&e))?;
        let ctx = loop {
            let ctx = tsc.lock();
            let replica = ctx.get_flags().contains(ContextFlags::SLAVE);
            if replica || !crate::pause::writes_paused() {
                break ctx;
            }
            drop(ctx);
            std::thread::sleep(PAUSE_POLL);
        };
        if ctx.get_flags().contains(ContextFlags::SLAVE) {
            return Err(RedisError::Str(crate::userfn::READONLY));
        }
        let name = crate::userfn::install(f, job.bytes.clone(), job.replace)
            .map_err(|e| crate::userfn::err(&e))?;
        let mut args: Vec<&[u8]> = job.args.iter().map(Vec::as_slice).collect();
        args.push(&job.bytes);
        // Queued for the replicas and the AOF; sent when `ctx` releases the lock, below.
        ctx.replicate("AUTOLOC.FUNCTION", &args[..]);
        Ok(RedisValue::BulkString(name))
    });
    crate::dataplane::reply_blocked(client, result);
}
