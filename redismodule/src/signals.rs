//! Redis's crash handler and wasmtime's trap handler in one process.
//!
//! With `wasm-traps signals`, a user function's stray memory access, `unreachable`
//! or division by zero is a hardware fault that wasmtime's signal handler turns into a trap, and
//! the compiled guest needs no bounds checks. Redis installed its own handlers for the same
//! signals before any module loaded, as one-shot handlers (`SA_RESETHAND`): a second fault inside
//! its crash report (its memory test reads every mapping) then kills the process instead of
//! entering the report again.
//!
//! wasmtime passes a fault that is not a guest's to the handler it found installed by *calling*
//! it, and a handler called as a function never gets the kernel's one-shot reset: with Redis's
//! handler there, a fault inside the report entered the report again, forever. So the handler
//! wasmtime finds is [`fall_through`]. It puts Redis's disposition back and returns; the faulting
//! instruction runs again and the kernel delivers its fault to Redis as if wasmtime were not
//! there. A signal that was sent (`kill`) rather than caused is raised again instead, since
//! returning would not repeat it.
//!
//! `CONFIG SET crash-log-enabled` makes Redis install (or remove) its handlers again, over
//! wasmtime's: [`on_config`] takes what Redis installed as the new fall-through disposition and
//! puts wasmtime's handlers back in front. Both run on the main thread under Redis's lock, and
//! guests run only under that lock, so no guest runs in between.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use redis_module::raw;

/// The signals wasmtime handles on x86-64 Linux.
const SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGILL, libc::SIGFPE];

type Actions = [libc::sigaction; SIGNALS.len()];

/// What a fault that is not a guest's gets: Redis's handlers (or the default), per signal.
/// Read by [`fall_through`] inside a signal handler, so published by pointer, never locked. A
/// replaced table is leaked, not freed: a handler may still be reading it (one per
/// `CONFIG SET crash-log-enabled`, 456 bytes).
static REDIS: AtomicPtr<Actions> = AtomicPtr::new(ptr::null_mut());

/// wasmtime's handlers, once it installed them (`None` if its engine installed none).
static WASMTIME: Mutex<Option<Actions>> = Mutex::new(None);

fn current(signal: libc::c_int) -> io::Result<libc::sigaction> {
    // SAFETY: a zeroed sigaction is a valid value of the type; with a null new action,
    // sigaction only writes the current disposition into `now`.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `now` is valid for writes.
    if unsafe { libc::sigaction(signal, ptr::null(), &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(now)
}

fn all_current() -> io::Result<Actions> {
    Ok([
        current(SIGNALS[0])?,
        current(SIGNALS[1])?,
        current(SIGNALS[2])?,
    ])
}

fn set(signal: libc::c_int, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a complete disposition read from the kernel or built by `ours`; its
    // handler (Redis's, wasmtime's, `fall_through`, or SIG_DFL) lives as long as the process:
    // the module cannot be unloaded (it exports a data type).
    if unsafe { libc::sigaction(signal, action, ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn publish(redis: Actions) {
    REDIS.store(Box::into_raw(Box::new(redis)), Ordering::Release);
}

/// Puts [`fall_through`] in front of Redis's handlers, then runs `start`, which starts the
/// WebAssembly host (wasmtime installs its handlers then, and chains to whatever it finds).
/// Called once, when the module loads, on the main thread.
pub fn around_host<T>(start: impl FnOnce() -> T) -> io::Result<T> {
    let redis = all_current()?;
    publish(redis);
    // SAFETY: a zeroed sigaction is valid; every field that matters is set below.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = fall_through as *const () as usize;
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is a valid sigset_t to clear.
    unsafe { libc::sigemptyset(&mut ours.sa_mask) };
    for (i, &signal) in SIGNALS.iter().enumerate() {
        if let Err(e) = set(signal, &ours) {
            for (j, &undo) in SIGNALS.iter().enumerate().take(i) {
                let _ = set(undo, &redis[j]);
            }
            return Err(e);
        }
    }
    let started = start();
    let now = all_current()?;
    let installed = now
        .iter()
        .all(|a| a.sa_sigaction != fall_through as *const () as usize);
    *WASMTIME.lock().unwrap_or_else(|e| e.into_inner()) = installed.then_some(now);
    Ok(started)
}

/// After a configuration change: if Redis put its handlers back in front of wasmtime's (it
/// does on `CONFIG SET crash-log-enabled`), they become the fall-through disposition and
/// wasmtime's handlers go back in front. Returns whether it had to.
pub fn on_config() -> io::Result<bool> {
    let Some(wasmtime) = *WASMTIME.lock().unwrap_or_else(|e| e.into_inner()) else {
        return Ok(false);
    };
    let now = all_current()?;
    if now
        .iter()
        .zip(&wasmtime)
        .all(|(n, w)| n.sa_sigaction == w.sa_sigaction)
    {
        return Ok(false);
    }
    let mut redis = redis_now();
    for (i, n) in now.iter().enumerate() {
        if n.sa_sigaction != wasmtime[i].sa_sigaction {
            redis[i] = *n;
        }
    }
    publish(redis);
    for (signal, action) in SIGNALS.iter().zip(&wasmtime) {
        set(*signal, action)?;
    }
    Ok(true)
}

fn redis_now() -> Actions {
    // SAFETY: published before any reader can run (`around_host` stores it before installing
    // `fall_through`, and `on_config` runs only after `around_host`), and never freed.
    unsafe { *REDIS.load(Ordering::Acquire) }
}

/// wasmtime's fallback for a fault that is not a guest's: hands the signal back to Redis.
extern "C" fn fall_through(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let Some(i) = SIGNALS.iter().position(|&s| s == signal) else {
        return;
    };
    let redis = redis_now()[i];
    // SAFETY: sigaction and raise are async-signal-safe; `info` is the kernel's siginfo for
    // this delivery.
    unsafe {
        libc::sigaction(signal, &redis, ptr::null_mut());
        if (*info).si_code <= 0 {
            // Sent by kill, tkill or sigqueue: returning would not bring it back.
            libc::raise(signal);
        }
    }
}

/// Subscribes [`on_config`] to Redis's configuration changes (called once, at load).
pub fn watch_config(ctx: &redis_module::Context) -> Result<(), String> {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_CONFIG,
        dataver: 1,
    };
    match raw::subscribe_to_server_event(ctx.ctx, event, Some(config_changed)) {
        raw::Status::Ok => Ok(()),
        raw::Status::Err => Err("cannot subscribe to configuration changes".into()),
    }
}

extern "C" fn config_changed(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut std::ffi::c_void,
) {
    // No panic may cross into C.
    let _ = std::panic::catch_unwind(|| {
        if let Err(e) = on_config() {
            redis_module::Context::new(ctx).log_warning(&format!(
                "autoloc: cannot put the WebAssembly trap handlers back: {e}"
            ));
        }
    });
}
