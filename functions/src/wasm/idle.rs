//! Instances kept between invocations, per thread, by function version and principal.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::instance::Ready;

/// Pooled instances beyond the invocations' and the descriptions', kept idle between
/// invocations, in the process.
pub(super) const IDLE_SLOTS: u32 = 64;

/// Idle instances one thread keeps; past it the one used least recently is dropped.
const IDLE_PER_THREAD: usize = 8;

/// A kept instance unused this long is dropped, not handed out (at its thread's next call).
const IDLE_AGE: Duration = Duration::from_secs(10);

/// Idle instances in the process (each holds a pooled slot of the [`IDLE_SLOTS`]).
static COUNT: AtomicU32 = AtomicU32::new(0);

/// Bumped by [`forget`]: an instance kept before is dropped, not handed out.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One idle instance.
struct Kept {
    hash: [u8; 32],
    principal: Box<str>,
    generation: u64,
    since: Instant,
    ready: Ready,
    counted: Counted,
}

impl Kept {
    fn stale(&self, now: Instant, generation: u64) -> bool {
        self.generation != generation || now.duration_since(self.since) > IDLE_AGE
    }
}

/// One of the process's [`IDLE_SLOTS`] places, given back when dropped.
struct Counted;

impl Counted {
    fn new() -> Option<Counted> {
        COUNT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < IDLE_SLOTS).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        COUNT.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Least recently kept first.
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// The instance this thread kept last for `hash` and `principal`, if it is not stale at
/// `now` (when the invocation started), with the principal's name it was kept under (for
/// [`keep`], which then allocates nothing).
pub(super) fn take(hash: &[u8; 32], principal: &str, now: Instant) -> Option<(Ready, Box<str>)> {
    let kept = KEPT
        .try_with(|kept| {
            let mut kept = kept.borrow_mut();
            let at = kept
                .iter()
                .rposition(|k| k.hash == *hash && *k.principal == *principal)?;
            Some(kept.remove(at))
        })
        .ok()
        .flatten()?;
    // A stale one is dropped here, outside the borrow.
    (!kept.stale(now, GENERATION.load(Ordering::Relaxed))).then_some((kept.ready, kept.principal))
}

/// Keeps `ready` for the next invocation of `hash` for `principal` on this thread, as of
/// `now` (when its invocation started: no clock read here). Stale instances are dropped
/// first; past [`IDLE_PER_THREAD`] here, or [`IDLE_SLOTS`] in the process, this thread's
/// oldest makes room (with none here, `ready` is dropped).
pub(super) fn keep(hash: [u8; 32], principal: Box<str>, ready: Ready, now: Instant) {
    let generation = GENERATION.load(Ordering::Relaxed);
    let mut dropped: Vec<Ready> = Vec::new();
    // Past the thread's end (its locals gone), nothing is kept: `ready` drops with the
    // closure.
    let _ = KEPT.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        let mut i = 0;
        while i < kept.len() {
            if kept[i].stale(now, generation) {
                dropped.push(kept.remove(i).ready);
            } else {
                i += 1;
            }
        }
        let mut oldest = |kept: &mut Vec<Kept>| {
            let Kept { ready, counted, .. } = kept.remove(0);
            dropped.push(ready);
            counted
        };
        let counted = if kept.len() >= IDLE_PER_THREAD {
            Some(oldest(&mut kept))
        } else if let Some(c) = Counted::new() {
            Some(c)
        } else if !kept.is_empty() {
            Some(oldest(&mut kept))
        } else {
            None
        };
        match counted {
            Some(counted) => kept.push(Kept {
                hash,
                principal,
                generation,
                since: now,
                ready,
                counted,
            }),
            None => dropped.push(ready),
        }
    });
    // Dropped outside the borrow.
    drop(dropped);
}

/// Drops every kept instance, at each thread's next call.
pub(super) fn forget() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}
