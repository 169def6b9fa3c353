//! Redis's lock as the data-plane threads hold it: each takes it through its one
//! [`ThreadContext`], [`Hold`] gives it back while a long invocation runs, and waits for the AOF
//! before a write is acknowledged.
//!
//! **Giving the lock back.** A data-plane thread serves requests under Redis's lock (the module
//! GIL), so while it holds it Redis's own clients wait. [`Hold::breathe`], called by a
//! storage-side function's store at every access and checkpoint (where the function holds no
//! key open), gives the lock back once it has been held for `lock-us`: the main thread then
//! serves its clients, and the function goes on with whatever changed meanwhile (as it would
//! compute-side, across round trips). Its writes stay all-or-nothing: they are buffered and
//! applied when it finishes, under one hold.
//!
//! **Durable acknowledgements.** A write made under a thread-safe context reaches the AOF buffer
//! when the lock is released, and the file when the main thread next runs `beforeSleep`
//! (`flushAppendOnlyFile`, which also fsyncs under `appendfsync always`), which it does holding
//! the lock. Redis answers its own clients only after that flush; [`Hold::settle`] makes the
//! data plane answer the same way: with the AOF on, it numbers the writes, gives the lock back,
//! wakes the main thread, and takes the lock again only after a `beforeSleep` that began after
//! them (the main thread holds the lock from that event until the flush is done).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_module::{raw, Context};

use crate::{acl, api};

/// Writes made by data-plane threads, numbered in the order they were made (under the lock).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// The number of writes the main thread's last `beforeSleep` found made: once it releases the
/// lock, they are in the AOF (and fsync'd, under `appendfsync always`).
static FLUSHING: AtomicU64 = AtomicU64::new(0);
/// Whether the AOF is on, as of the main thread's last `beforeSleep`.
static AOF_ON: AtomicBool = AtomicBool::new(false);
/// Times the main thread has taken the lock (in `afterSleep`, when it wakes with work to do).
static MAIN_TURNS: AtomicU64 = AtomicU64::new(0);
/// How long a data-plane thread that gives the lock back waits for the main thread to take it
/// before taking it again: long enough for a woken thread to run, short enough to cost little
/// when the main thread sleeps with nothing to do (the lock is a plain mutex, so without this
/// wait the thread that releases it usually takes it again before a waiter wakes).
const HANDOFF: Duration = Duration::from_micros(30);

/// Subscribes to the main thread's event loop (called once, when the module loads).
pub fn subscribe(ctx: &Context) -> Result<(), String> {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    match raw::subscribe_to_server_event(ctx.ctx, event, Some(on_event_loop)) {
        raw::Status::Ok => Ok(()),
        raw::Status::Err => Err("cannot subscribe to the event loop (Redis 7 needed)".into()),
    }
}

/// Runs on Redis's main thread, which holds the lock: at the start of every `beforeSleep`, and
/// in `afterSleep` right after it took the lock.
extern "C" fn on_event_loop(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut std::ffi::c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_EVENTLOOP_AFTER_SLEEP {
        MAIN_TURNS.fetch_add(1, Ordering::Release);
        return;
    }
    // No panic may cross into C; nothing here can panic but the API lookup, which cannot fail
    // once the module loaded (the subscription itself used the same table).
    let _ = std::panic::catch_unwind(|| {
        if let Ok(flags) = api::module_api!(RedisModule_GetContextFlags) {
            // SAFETY: `ctx` is the context Redis passed to this callback, alive during it.
            let f = unsafe { flags(ctx) };
            AOF_ON.store(
                f & raw::REDISMODULE_CTX_FLAGS_AOF as i32 != 0,
                Ordering::Relaxed,
            );
        }
        FLUSHING.store(WRITTEN.load(Ordering::Acquire), Ordering::Release);
        crate::pause::before_sleep(&Context::new(ctx));
    });
}

/// Between releasing Redis's lock and taking it again: waits up to [`HANDOFF`] for the main
/// thread to take it (it does when it woke with work), so that its clients are served rather
/// than left waiting for the next release. Counts the handoffs that happened.
pub fn let_main_in() {
    let turn = MAIN_TURNS.load(Ordering::Acquire);
    let start = Instant::now();
    while start.elapsed() < HANDOFF {
        if MAIN_TURNS.load(Ordering::Acquire) != turn {
            crate::dataplane::stats()
                .lock_handoffs
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Yield rather than spin: the main thread may be waiting for this very core.
        std::thread::yield_now();
    }
}

/// Does nothing on the main thread: queued only to wake it, so that it runs `beforeSleep`.
extern "C" fn wake(_data: *mut std::ffi::c_void) {}

/// A data-plane thread's own thread-safe context, made once and used for every hold of the lock.
/// (The `redis-module` crate's `ThreadSafeContext::lock` makes a fresh context, with a fresh
/// Redis client, at every acquisition and frees it at every release: a client's allocation and
/// teardown per burst of requests.)
#[derive(Debug)]
pub struct ThreadContext(*mut raw::RedisModuleCtx);

impl ThreadContext {
    /// A context detached from any client, for the calling thread.
    pub fn new() -> Result<ThreadContext, String> {
        let get = api::module_api!(RedisModule_GetThreadSafeContext).map_err(|e| e.to_string())?;
        // SAFETY: a null blocked client asks for a detached context; Redis allows this from any
        // thread, without the lock.
        let ctx = unsafe { get(std::ptr::null_mut()) };
        if ctx.is_null() {
            return Err("Redis gave no thread-safe context".into());
        }
        Ok(ThreadContext(ctx))
    }

    /// Takes Redis's lock until the returned guard is dropped.
    pub fn lock(&self) -> Locked<'_> {
        if let Ok(lock) = api::module_api!(RedisModule_ThreadSafeContextLock) {
            // SAFETY: `self.0` is a live thread-safe context; the guard unlocks exactly once.
            unsafe { lock(self.0) };
        }
        Locked {
            ctx: Context::new(self.0),
            _owner: std::marker::PhantomData,
        }
    }

    /// Takes Redis's lock if no one holds it; `None` (nothing taken) if someone does.
    pub fn try_lock(&self) -> Option<Locked<'_>> {
        let try_lock = api::module_api!(RedisModule_ThreadSafeContextTryLock).ok()?;
        // SAFETY: `self.0` is a live thread-safe context; on success (REDISMODULE_OK) the lock is
        // held and the guard unlocks it exactly once; on failure nothing was taken.
        if unsafe { try_lock(self.0) } != raw::REDISMODULE_OK as i32 {
            return None;
        }
        Some(Locked {
            ctx: Context::new(self.0),
            _owner: std::marker::PhantomData,
        })
    }
}

impl Drop for ThreadContext {
    fn drop(&mut self) {
        if let Ok(free) = api::module_api!(RedisModule_FreeThreadSafeContext) {
            // SAFETY: made by `new`, freed once, with no guard alive (guards borrow it).
            unsafe { free(self.0) };
        }
    }
}

/// Redis's lock, held through a [`ThreadContext`]; derefs to its [`Context`].
#[derive(Debug)]
pub struct Locked<'t> {
    ctx: Context,
    _owner: std::marker::PhantomData<&'t ThreadContext>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Ok(unlock) = api::module_api!(RedisModule_ThreadSafeContextUnlock) {
            // SAFETY: taken by `ThreadContext::lock` through the same context, released once.
            unsafe { unlock(self.ctx.ctx) };
        }
    }
}

/// One hold of Redis's lock by a data-plane thread, which may be given back and taken again
/// between store accesses. Created right after the thread takes the lock, dropped before it
/// releases it.
#[derive(Debug)]
pub struct Hold {
    ctx: *mut raw::RedisModuleCtx,
    bound: Duration,
    /// When the lock was last taken.
    since: Cell<Instant>,
    /// How long it has been given back in all, since the hold began.
    given_back: Cell<Duration>,
    /// The number of the last write made under this hold that is not acknowledged yet.
    unsettled: Cell<Option<u64>>,
}

impl Hold {
    /// A hold of the lock taken through `ctx` (asked for at `since`), to be given back once held
    /// for `bound`.
    pub fn new(ctx: &Context, bound: Duration, since: Instant) -> Hold {
        Hold {
            ctx: ctx.ctx,
            bound,
            since: Cell::new(since),
            given_back: Cell::new(Duration::ZERO),
            unsettled: Cell::new(None),
        }
    }

    /// How long the lock has been held since it was last taken.
    pub fn held(&self) -> Duration {
        self.since.get().elapsed()
    }

    /// How long the lock has been given back in all during this hold.
    pub fn given_back(&self) -> Duration {
        self.given_back.get()
    }

    /// Whether the lock has been held for its bound.
    pub fn due(&self) -> bool {
        self.held() >= self.bound
    }

    /// Gives the lock back if it has been held for its bound, letting Redis's main thread in
    /// if it wants the lock ([`let_main_in`]). The caller holds no key open and keeps no value
    /// borrowed from Redis across this call.
    pub fn breathe(&self) {
        if self.due() {
            crate::dataplane::stats()
                .lock_yields
                .fetch_add(1, Ordering::Relaxed);
            self.give_back(let_main_in);
        }
    }

    /// Notes a write just made under this hold: its acknowledgement waits for [`Hold::settle`].
    pub fn wrote(&self) {
        let n = WRITTEN.fetch_add(1, Ordering::AcqRel) + 1;
        self.unsettled.set(Some(n));
    }

    /// Before acknowledging writes made under this hold: with the AOF on, waits until they are
    /// in it (see the module docs); the lock is held again when this returns.
    pub fn settle(&self) {
        let Some(n) = self.unsettled.take() else {
            return;
        };
        if !AOF_ON.load(Ordering::Relaxed) {
            return;
        }
        crate::dataplane::stats()
            .settled_writes
            .fetch_add(1, Ordering::Relaxed);
        self.wait_flushed(n);
    }

    /// Before answering anything: with the AOF on, waits until every write a data-plane thread
    /// has made is in it, so that no answer shows a value that a crash could still lose (another
    /// data-plane thread may have written it and be waiting in [`Hold::settle`]). Costs two
    /// atomic loads when nothing is pending; `before_release` runs first if the lock is to be
    /// given back (to close the keys the caller holds open).
    pub fn settle_others(&self, before_release: impl FnOnce()) {
        let written = WRITTEN.load(Ordering::Acquire);
        if FLUSHING.load(Ordering::Acquire) < written && AOF_ON.load(Ordering::Relaxed) {
            before_release();
            self.wait_flushed(written);
        }
    }

    /// Gives the lock back until the main thread's `beforeSleep` has taken the first `n` writes
    /// into the AOF.
    fn wait_flushed(&self, n: u64) {
        self.give_back(|| {
            let mut naps = 0u32;
            while FLUSHING.load(Ordering::Acquire) < n {
                // Wake the main thread (through its module pipe) so that it goes round its
                // loop now rather than at its next timer, then wait for its `beforeSleep`.
                if naps.is_multiple_of(64) {
                    if let Ok(add) = api::module_api!(RedisModule_EventLoopAddOneShot) {
                        // SAFETY: thread-safe by Redis's contract; `wake` ignores its argument.
                        unsafe { add(Some(wake), std::ptr::null_mut()) };
                    }
                }
                naps += 1;
                if naps < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
    }

    /// Releases the lock, runs `meanwhile` without it, and takes it again.
    fn give_back(&self, meanwhile: impl FnOnce()) {
        // Users looked up under this hold are freed while it is still held.
        acl::LockScope::renew();
        let start = Instant::now();
        let (Ok(unlock), Ok(lock)) = (
            api::module_api!(RedisModule_ThreadSafeContextUnlock),
            api::module_api!(RedisModule_ThreadSafeContextLock),
        ) else {
            // Unreachable once the module loaded (the data plane took the lock with them).
            return;
        };
        // SAFETY: this thread holds Redis's lock, taken through a thread-safe context (the
        // data-plane loop's, whose pointer `self.ctx` is and which outlives the hold), and no
        // key or value of Redis is in use across the release (the callers' contract). Unlock
        // and lock come in pairs, so the loop's guard still releases exactly once.
        unsafe { unlock(self.ctx) };
        meanwhile();
        // SAFETY: as above; the same context takes the lock back before anything else is done.
        unsafe { lock(self.ctx) };
        let now = Instant::now();
        self.given_back.set(self.given_back.get() + (now - start));
        self.since.set(now);
    }
}
