//! The one invoke path of the module: `AUTOLOC.CALL`, `AUTOLOC.INVOKE` and the data plane's
//! `Invoke` all resolve the function, check its arguments, run it under a budget against the
//! keyspace, count it and encode its outcome here.
//!
//! Two encodings of one [`StorageRun`]: [`to_resp`] for people (`AUTOLOC.CALL`: the result as
//! RESP, an error as `-CODE message`), and [`reply`] for compute nodes (a wire frame:
//! `InvokeReply` with what the run cost, `Pushback` with its read set, or `Error` with its code),
//! which the data plane sends on a link and `AUTOLOC.INVOKE` returns as one bulk string.

use std::time::{Duration, Instant};

use autoloc_dataplane::clock::thread_cpu_ns;
use autoloc_dataplane::link::Replier;
use autoloc_dataplane::wire::{self, InvokeCost, List, Message};
use autoloc_functions::exec::block_on;
use autoloc_functions::{Error, Output, Reply};
use redis_module::{Context, RedisError, RedisResult, RedisValue};

use crate::acl::Caller;
use crate::counters::{self, Sample};
use crate::frames::error_frame;
use crate::lock::Hold;
use crate::registry::registry;
use crate::store::{read_keys, KeyspaceStore};

/// How an invocation reached the module, which sets its budget and what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Whose ACL its key accesses answer to.
    pub caller: &'a Caller,
    /// When the request was seen (its queueing delay is measured from here).
    pub seen: Instant,
    /// Whether the data-plane thread serving it is saturated: then the short overload budget
    /// applies, so costly invocations are pushed back to their callers (ASFP).
    pub overloaded: bool,
    /// Whether to remember the keys read, to hand them back with a pushback.
    pub keep_read_set: bool,
    /// Where it runs: on Redis's main thread (a command), or on a data-plane thread, which
    /// gives the lock back between store accesses while it runs.
    pub on: Thread<'a>,
    /// What the shard that forwarded it read, for keys of its own (`InvokeWith`); `None` for an
    /// invocation sent here first.
    pub seeded: Option<wire::ReadSet<'a>>,
}

/// The thread an invocation runs on, which decides how long it may keep Redis's lock.
#[derive(Debug, Clone, Copy)]
pub enum Thread<'a> {
    /// Redis's main thread, in a command that may block its client: the run stops once it has
    /// held the lock for `lock-us` and is [`StorageRun::deferred`], to be finished by a
    /// data-plane thread ([`crate::dataplane::defer`]).
    MainMayDefer,
    /// Redis's main thread, in a command that cannot block (inside `MULTI`, a script): it runs
    /// to its budget, as a script would.
    Main,
    /// A data-plane thread, under `hold`.
    DataPlane(&'a Hold),
}

impl<'a> Request<'a> {
    /// A request of `caller` seen now on `on`, at the normal budget.
    pub fn now(caller: &'a Caller, keep_read_set: bool, on: Thread<'a>) -> Request<'a> {
        Request {
            caller,
            seen: Instant::now(),
            overloaded: false,
            keep_read_set,
            on,
            seeded: None,
        }
    }

    /// Its budget, and whether the run is cut short to be deferred rather than pushed back.
    fn budget(&self) -> (Duration, bool) {
        let cfg = crate::config::get();
        let budget = if self.overloaded {
            cfg.overload_budget.min(cfg.budget)
        } else {
            cfg.budget
        };
        match self.on {
            Thread::MainMayDefer if cfg.lock_bound < budget => (cfg.lock_bound, true),
            _ => (budget, false),
        }
    }
}

/// What one storage-side invocation did.
#[derive(Debug)]
pub struct StorageRun {
    /// Its result; [`Error::Pushback`] if it ran past its budget.
    pub result: Result<Output, Error>,
    /// What it cost and read.
    pub cost: InvokeCost,
    /// The keys it read, if asked for (the read set of a pushback), each with the value the
    /// shard that forwarded it read, for a key of that shard's (`None`: read here).
    pub read_set: Vec<crate::store::Remembered>,
    /// The keys of another shard it met, if that pushed it back: where to forward it.
    pub elsewhere: Vec<Vec<u8>>,
    /// Stopped on the main thread at `lock-us`, before its budget, with nothing written and
    /// nothing counted: to be run again by a data-plane thread.
    pub deferred: bool,
}

/// Runs the function `name` with `args` storage-side, against the keyspace of `ctx`, and counts
/// it. Never panics out of a function: the callers run behind `catch_unwind`.
pub fn invoke<A: AsRef<[u8]>>(
    ctx: &Context,
    name: &[u8],
    args: &[A],
    req: Request<'_>,
) -> StorageRun {
    let queue_ns = req.seen.elapsed().as_nanos() as u64;
    // `name@<version prefix>`: a compute node names the version of a user function it has.
    let (name, version) = match name.iter().position(|&b| b == b'@') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    };
    let resolved = match registry().resolve(name) {
        Ok((i, f)) => crate::userfn::check_version(&*f, version).map(|()| (i, f)),
        // The caller runs a version of a user function this node does not have at all (deleted
        // here, or never loaded on this shard of a cluster): its copy is stale for this node.
        Err(Error::UnknownFunction(n)) if version.is_some() => Err(Error::Stale(format!(
            "function '{n}' is not loaded on this node; fetch it again"
        ))),
        Err(e) => Err(e),
    };
    let (index, function) = match resolved {
        Ok(f) => f,
        Err(e) => {
            return StorageRun {
                result: Err(e),
                cost: InvokeCost {
                    queue_ns,
                    ..InvokeCost::default()
                },
                read_set: Vec::new(),
                elsewhere: Vec::new(),
                deferred: false,
            }
        }
    };
    let (budget, may_defer) = req.budget();
    let deferred = || StorageRun {
        result: Err(Error::Pushback {
            budget_us: budget.as_micros() as u64,
            spent_us: 0,
        }),
        cost: InvokeCost::default(),
        read_set: Vec::new(),
        elsewhere: Vec::new(),
        deferred: true,
    };
    if may_defer && counters::usually_longer(index, budget) {
        // Its recent runs took longer than the main thread may hold the lock: do not start it
        // there only to stop it.
        return deferred();
    }
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_ref().to_vec()).collect();
    let mut store = KeyspaceStore::new(ctx, req.caller, budget);
    if let Thread::DataPlane(hold) = req.on {
        store = store.holding(hold);
    }
    if req.keep_read_set {
        store = store.remembering_reads();
    }
    if let Some(seeded) = req.seeded {
        store = store.seeded(seeded.iter());
    }
    let cpu = thread_cpu_ns();
    let mut result = block_on(function.call(&store, &args));
    // Past the main thread's budget: a data-plane thread runs it again with its own. (A pushback
    // for a key of another shard would come back the same.)
    if may_defer && matches!(result, Err(Error::Pushback { .. })) {
        return deferred();
    }
    if result.is_ok() {
        // Its writes, all together, only now that it succeeded.
        if let Err(e) = store.commit() {
            result = Err(e);
        }
    }
    let storage_cpu_ns = thread_cpu_ns().saturating_sub(cpu);
    if let Thread::DataPlane(hold) = req.on {
        // Its writes are acknowledged only once they are in the AOF.
        hold.settle();
    }
    let (keys_read, bytes_read) = store.reads();
    counters::record(
        index,
        Sample {
            error: result.is_err(),
            pushback: result.as_ref().is_err_and(Error::is_pushback),
            cpu_ns: storage_cpu_ns,
            keys_read,
            bytes_read,
        },
    );
    let (read_set, elsewhere) = if result.as_ref().is_err_and(Error::is_pushback) {
        let mut keys = store.remembered();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        (keys, store.elsewhere())
    } else {
        (Vec::new(), Vec::new())
    };
    StorageRun {
        result,
        cost: InvokeCost {
            storage_cpu_ns,
            queue_ns,
            keys_read,
            bytes_read,
            reads: store.accesses(),
        },
        read_set,
        elsewhere,
        deferred: false,
    }
}

/// A finished run as a command replies: `AUTOLOC.CALL` as RESP ([`to_resp`]), `AUTOLOC.INVOKE`
/// as one bulk string holding its wire frame ([`reply`]).
pub fn answer(ctx: &Context, caller: &Caller, run: StorageRun, frame: bool) -> RedisResult {
    if !frame {
        return to_resp(run);
    }
    let mut buf = FrameBuf::default();
    reply(ctx, caller, 0, run, &mut buf)
        .map_err(|e| RedisError::String(format!("TOOLARGE reply not sent: {e}")))?;
    Ok(RedisValue::StringBuffer(buf.0))
}

/// A run as `AUTOLOC.CALL` replies: the result as RESP, or `-CODE message`.
pub fn to_resp(run: StorageRun) -> RedisResult {
    match run.result {
        Ok(out) => Ok(to_redis(out.to_reply())),
        Err(e) => Err(error(&e)),
    }
}

/// An error as a Redis error reply.
pub fn error(e: &Error) -> RedisError {
    RedisError::String(e.to_resp())
}

fn to_redis(reply: Reply) -> RedisValue {
    match reply {
        Reply::Nil => RedisValue::Null,
        Reply::Int(n) => RedisValue::Integer(n),
        Reply::Bulk(b) => RedisValue::StringBuffer(b),
        Reply::Array(items) => RedisValue::Array(items.into_iter().map(to_redis).collect()),
    }
}

/// Sends a run to request `id` as a wire frame. A pushback carries the values of its read set,
/// read anew under the lock the run still holds (the run kept names only); a read set too large
/// for any frame is left out (the caller then fetches everything itself).
pub fn reply(
    ctx: &Context,
    caller: &Caller,
    id: u64,
    run: StorageRun,
    out: &mut dyn Replier,
) -> autoloc_dataplane::Result<()> {
    let cost = run.cost;
    match run.result {
        Ok(output) => {
            let mut result = Vec::new();
            output.encode(&mut result);
            out.reply(
                id,
                &Message::InvokeReply {
                    result: &result,
                    cost,
                },
            )
        }
        Err(e) if e.is_pushback() => {
            crate::dataplane::stats()
                .pushbacks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The keys read here, read again; those another shard read, with what it read.
            let here: Vec<&[u8]> = run
                .read_set
                .iter()
                .filter(|(_, seed)| seed.is_none())
                .map(|(k, _)| k.as_slice())
                .collect();
            let mut opened = Vec::new();
            let values = read_keys(ctx, caller, &here, &mut opened);
            let pairs: Vec<(&[u8], Option<&[u8]>)> = match values.as_deref() {
                Ok(values) => {
                    let mut values = values.iter().copied();
                    run.read_set
                        .iter()
                        .map(|(k, seed)| match seed {
                            Some(seed) => Some((k.as_slice(), seed.as_deref())),
                            None => values.next().map(|v| (k.as_slice(), v)),
                        })
                        .collect::<Option<_>>()
                        .unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            let elsewhere: Vec<&[u8]> = run.elsewhere.iter().map(Vec::as_slice).collect();
            let full = Message::Pushback {
                read_set: List::new(&pairs),
                elsewhere: List::new(&elsewhere),
                cost,
            };
            out.reply(id, &full).or_else(|_| {
                let bare = Message::Pushback {
                    read_set: List::new(&[]),
                    elsewhere: List::new(&[]),
                    cost,
                };
                out.reply(id, &bare)
            })
        }
        Err(e) => error_frame(out, id, &e),
    }
}

/// Collects one reply frame in memory: what `AUTOLOC.INVOKE` returns over RESP.
#[derive(Debug, Default)]
pub struct FrameBuf(pub Vec<u8>);

impl Replier for FrameBuf {
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> autoloc_dataplane::Result<()> {
        self.0.clear();
        wire::encode(request_id, message, &mut self.0)?;
        Ok(())
    }
}
