//! Whether Redis has paused writes (`CLIENT PAUSE`, `FAILOVER`, `SHUTDOWN` waiting for its
//! replicas), so that the data plane writes nothing meanwhile.
//!
//! Redis holds its own clients' write commands back while writes are paused, and asserts that
//! nothing is propagated then: a write a data-plane thread propagated during a pause aborted
//! redis-server. Redis 7.0 tells a module nothing of pauses, so the module watches for them:
//! a command filter notes every `CLIENT PAUSE`, `CLIENT UNPAUSE`, `FAILOVER` and `SHUTDOWN`
//! with what it would do, and the main thread's next `beforeSleep` (before which no data-plane
//! thread can take the lock) applies it if `INFO commandstats` shows that it ran (so a command
//! that was refused, by the ACL or for a bad argument, pauses nothing). While writes are
//! paused, [`crate::store::write_keys`] refuses with `BUSY`, writing nothing.
//!
//! The module's pause ends later than Redis's, never sooner: a `CLIENT PAUSE` for `t` ms counts
//! from before Redis ran it, plus [`MARGIN`]; a `FAILOVER` lasts until its `TIMEOUT` (else
//! [`OPEN_ENDED`]) or a `FAILOVER ABORT`; a `SHUTDOWN` until `SHUTDOWN ABORT` or
//! [`OPEN_ENDED`] (a server that shuts down exits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis_module::{raw, Context, RedisValue};

use crate::api;

/// Added to the end of a pause, so that the module's ends after Redis's.
const MARGIN: Duration = Duration::from_secs(1);
/// How long a pause without an end of its own lasts for the module.
const OPEN_ENDED: Duration = Duration::from_secs(60);

/// Until when writes are paused, in ms since the Unix epoch (0: not paused).
static PAUSED_UNTIL_MS: AtomicU64 = AtomicU64::new(0);

/// What a noted command would do if it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Pause writes until this time (ms since the epoch).
    PauseUntil(u64),
    /// End the pause.
    Unpause,
}

/// A command the filter saw, to be applied once `INFO commandstats` shows it ran.
#[derive(Debug, Clone, Copy)]
struct Noted {
    /// Its `cmdstat_` name.
    stat: &'static str,
    effect: Effect,
}

/// Commands seen since the last `beforeSleep`.
static NOTED: Mutex<Vec<Noted>> = Mutex::new(Vec::new());
/// Successful runs of each watched command, as of the last look.
static RUNS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether writes are paused now (data-plane writes are then refused).
pub fn writes_paused() -> bool {
    now_ms() < PAUSED_UNTIL_MS.load(Ordering::Acquire)
}

/// Registers the command filter (when the module loads).
pub fn watch(ctx: &Context) -> Result<(), String> {
    let register =
        api::module_api!(RedisModule_RegisterCommandFilter).map_err(|e| e.to_string())?;
    // NOSELF: not the commands this module calls itself (its writes' `SET`, the cluster view's
    // `CLUSTER NODES`, which would otherwise mark the view stale as it is read).
    let noself = redis_module::raw::REDISMODULE_CMDFILTER_NOSELF as std::os::raw::c_int;
    // SAFETY: called once from the module's init with its context; `on_command` lives for the
    // life of the process.
    let filter = unsafe { register(ctx.ctx, Some(on_command), noself) };
    if filter.is_null() {
        return Err("cannot register the command filter".into());
    }
    Ok(())
}

/// The effect `args` (a command and its arguments, lower-cased) would have on pauses.
fn effect_of(args: &[String], now: u64) -> Option<Noted> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    let until = |d: Duration| Effect::PauseUntil(now + (d + MARGIN).as_millis() as u64);
    match (arg(0)?, arg(1)) {
        ("client", Some("pause")) => {
            let ms: u64 = arg(2)?.parse().ok()?;
            Some(Noted {
                stat: "client|pause",
                effect: until(Duration::from_millis(ms)),
            })
        }
        ("client", Some("unpause")) => Some(Noted {
            stat: "client|unpause",
            effect: Effect::Unpause,
        }),
        ("failover", Some("abort")) | ("shutdown", Some("abort")) => Some(Noted {
            stat: if args[0] == "failover" {
                "failover"
            } else {
                "shutdown"
            },
            effect: Effect::Unpause,
        }),
        ("failover", _) => {
            let timeout = args
                .iter()
                .position(|a| a == "timeout")
                .and_then(|i| arg(i + 1)?.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map_or(OPEN_ENDED, Duration::from_millis);
            Some(Noted {
                stat: "failover",
                effect: until(timeout),
            })
        }
        ("shutdown", _) => Some(Noted {
            stat: "shutdown",
            effect: until(OPEN_ENDED),
        }),
        _ => None,
    }
}

/// The command filter: notes the commands that pause or unpause writes. Runs on the main
/// thread for every command, so it looks at the first argument before copying anything.
extern "C" fn on_command(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let _ = std::panic::catch_unwind(|| {
        let (Ok(count), Ok(get), Ok(ptr_len)) = (
            api::module_api!(RedisModule_CommandFilterArgsCount),
            api::module_api!(RedisModule_CommandFilterArgGet),
            api::module_api!(RedisModule_StringPtrLen),
        ) else {
            return;
        };
        let bytes = |i: i32| -> &[u8] {
            // SAFETY: `fctx` is the filter context Redis passed, alive during this call; an
            // argument index below the count is a valid module string, whose bytes Redis owns
            // for the call (the slice does not outlive it).
            unsafe {
                let s = get(fctx, i);
                if s.is_null() {
                    return &[];
                }
                let mut len = 0usize;
                let p = ptr_len(s, &mut len);
                std::slice::from_raw_parts(p.cast::<u8>(), len)
            }
        };
        // SAFETY: as above.
        let n = unsafe { count(fctx) };
        // Every command passes here: the first argument is compared in place, and only the
        // three commands that can pause writes are copied.
        let first = if n < 1 { &[][..] } else { bytes(0) };
        if first.eq_ignore_ascii_case(b"cluster") {
            // It may change which slots this node serves (crate::cluster), unless it only reads
            // the state: the module's own `CLUSTER NODES` from a data-plane thread passes here
            // too (NOSELF spares only the main thread's), and marked the view stale on every
            // read, so that every read of a key read `CLUSTER NODES` again.
            let sub = if n < 2 { &[][..] } else { bytes(1) };
            if !crate::cluster::READ_ONLY
                .iter()
                .any(|r| sub.eq_ignore_ascii_case(r.as_bytes()))
            {
                crate::cluster::invalidate();
            }
            return;
        }
        if !["client", "failover", "shutdown"]
            .iter()
            .any(|c| first.eq_ignore_ascii_case(c.as_bytes()))
        {
            return;
        }
        let arg = |i: i32| String::from_utf8_lossy(bytes(i)).to_ascii_lowercase();
        let args: Vec<String> = (0..n.min(16)).map(arg).collect();
        if let Some(noted) = effect_of(&args, now_ms()) {
            NOTED.lock().unwrap_or_else(|p| p.into_inner()).push(noted);
        }
    });
}

/// Successful runs (`calls` less `failed_calls`) of each `cmdstat_` name in `stats`.
fn runs_in(stats: &str, names: &[&'static str]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .map(|&name| {
            let prefix = format!("cmdstat_{name}:");
            let runs = stats
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |fields| {
                    let field = |k: &str| {
                        fields
                            .split(',')
                            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    field("calls").saturating_sub(field("failed_calls"))
                });
            (name, runs)
        })
        .collect()
}

/// On the main thread, at the start of `beforeSleep` (holding the lock): applies the noted
/// commands that ran.
pub fn before_sleep(ctx: &Context) {
    let noted: Vec<Noted> = std::mem::take(&mut *NOTED.lock().unwrap_or_else(|p| p.into_inner()));
    if noted.is_empty() {
        return;
    }
    let stats = match ctx.call("INFO", &["commandstats"][..]) {
        Ok(RedisValue::SimpleString(s) | RedisValue::BulkString(s)) => s,
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => {
            // Unknown: assume each ran (a pause that did not happen only delays writes).
            apply(noted.iter().map(|n| n.effect));
            return;
        }
    };
    let mut names: Vec<&'static str> = noted.iter().map(|n| n.stat).collect();
    names.sort_unstable();
    names.dedup();
    let now = runs_in(&stats, &names);
    let mut seen = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    // Per name, how many of the noted commands ran: the last ones of that name (a refused one
    // runs no further, and later ones are the ones in effect).
    let mut ran: Vec<(&'static str, u64)> = Vec::new();
    for (name, runs) in now {
        let before = seen.iter().find(|(n, _)| *n == name).map_or(0, |(_, r)| *r);
        ran.push((name, runs.saturating_sub(before)));
        match seen.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = runs,
            None => seen.push((name, runs)),
        }
    }
    // Walked from the last, so that each name's last `ran` are kept; applied in run order.
    let mut effects: Vec<Effect> = Vec::new();
    for n in noted.iter().rev() {
        if let Some((_, left)) = ran.iter_mut().find(|(name, _)| *name == n.stat) {
            if *left > 0 {
                *left -= 1;
                effects.push(n.effect);
            }
        }
    }
    effects.reverse();
    apply(effects.into_iter());
}

fn apply(effects: impl Iterator<Item = Effect>) {
    for e in effects {
        match e {
            Effect::PauseUntil(t) => {
                PAUSED_UNTIL_MS.fetch_max(t, Ordering::AcqRel);
            }
            Effect::Unpause => PAUSED_UNTIL_MS.store(0, Ordering::Release),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn pausing_commands_are_recognised() {
        let e = |s: &str| effect_of(&args(s), 1_000).map(|n| (n.stat, n.effect));
        assert_eq!(
            e("client pause 500 write"),
            Some(("client|pause", Effect::PauseUntil(2_500)))
        );
        assert_eq!(
            e("client unpause"),
            Some(("client|unpause", Effect::Unpause))
        );
        assert_eq!(e("client pause soon"), None);
        assert_eq!(e("client list"), None);
        assert_eq!(
            e("failover to h 1 timeout 200"),
            Some(("failover", Effect::PauseUntil(2_200)))
        );
        assert_eq!(e("failover abort"), Some(("failover", Effect::Unpause)));
        assert_eq!(
            e("shutdown"),
            Some(("shutdown", Effect::PauseUntil(62_000)))
        );
        assert_eq!(e("get k"), None);
    }

    #[test]
    fn runs_are_calls_that_did_not_fail() {
        let stats = "# Commandstats\r\ncmdstat_client|pause:calls=3,usec=1,usec_per_call=0.3,rejected_calls=2,failed_calls=1\r\ncmdstat_get:calls=9\r\n";
        assert_eq!(
            runs_in(stats, &["client|pause", "failover"]),
            [("client|pause", 2), ("failover", 0)]
        );
    }
}
