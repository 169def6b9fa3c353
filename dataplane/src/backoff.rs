//! Idle backoff for polling threads: spin, then yield, then park on a futex doorbell.
//!
//! A polling thread that finds its ring empty calls [`Backoff::snooze`] once per empty poll. The
//! first [`BackoffConfig::spins`] calls spin (lowest latency), the next [`BackoffConfig::yields`]
//! give the core away with `sched_yield`, and after that each call parks on the ring's
//! [`Doorbell`] for at most [`BackoffConfig::park`], so an idle system burns (almost) no CPU and a
//! lost wakeup could cost at most one park timeout, never a hang.
//!
//! # The doorbell
//!
//! A [`Doorbell`] is a `u32` futex word in the ring header, in the shared segment: 0 = the consumer
//! is awake, 1 = it is parked or about to park. The consumer announces sleep, re-checks the ring,
//! and sleeps with `FUTEX_WAIT(word, 1)`; the producer, after publishing, checks the word and, if
//! set, clears it and calls `FUTEX_WAKE`. The futex is not `FUTEX_PRIVATE_FLAG`: the two sides may
//! be different processes, and a shared futex is keyed by the page of the mapping, not the address.
//!
//! This is the store-buffer (Dekker) pattern: the consumer stores the word then loads the producer
//! index; the producer stores the producer index then loads the word. With only Acquire/Release
//! both loads may read the old values (the stores sit in the store buffers, even on x86), and then
//! the consumer sleeps on a message nobody will wake it for. A SeqCst fence between the store and
//! the load on *both* sides forbids that outcome: the fences are totally ordered, and whichever
//! comes second is guaranteed to see the other side's store. Either the consumer sees the message
//! and does not sleep, or the producer sees the sleeper and wakes it. The kernel closes the last
//! gap: `FUTEX_WAIT` sleeps only if the word still holds 1, so a wake that lands between the
//! consumer's check and its syscall turns the wait into an immediate return.

use std::time::Duration;

use crate::sync::{fence, AtomicU32, Ordering};

/// Tunables of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Empty polls answered with a spin-loop hint.
    pub spins: u32,
    /// Further empty polls answered with `thread::yield_now`.
    pub yields: u32,
    /// Longest single park on the doorbell; bounds the cost of any lost wakeup.
    pub park: Duration,
}

/// Default spins before yielding: a few microseconds of polling. Then yields, a millisecond or
/// two of them: a yield returns at once when no other thread wants the core, and hands it over
/// when one does, so a waiting client takes nothing from the servers it waits for on a machine
/// with fewer cores than busy threads. With 2,000 spins and 64 yields, `bench-cluster --shards
/// 1,3 --ks 2` (social k=2, storage per hop, 2 cores) ran 7,300-7,900 invocations/s on 3 shards
/// and 14,400-17,000 on 1; with these, 9,500-10,700 and 15,900-17,900, and `bench-dataplane`'s shm
/// p99s fell (a 64-byte GET 4.2 -> 1.2 us).
pub const DEFAULT_SPINS: u32 = 200;
/// Default yields before parking.
pub const DEFAULT_YIELDS: u32 = 2_000;
/// Default park timeout.
pub const DEFAULT_PARK: Duration = Duration::from_millis(5);

const _: () = assert!(DEFAULT_PARK.as_millis() >= 1 && DEFAULT_PARK.as_millis() <= 10);

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            spins: DEFAULT_SPINS,
            yields: DEFAULT_YIELDS,
            park: DEFAULT_PARK,
        }
    }
}

/// What one [`Backoff::snooze`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Spun once.
    Spin,
    /// Yielded the core.
    Yield,
    /// Parked on the doorbell (woken, timed out, or the re-check found work).
    Park,
}

/// Idle state of one polling thread.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    idle: u64,
}

impl Backoff {
    /// A backoff at the start of an idle period.
    pub fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, idle: 0 }
    }

    /// Call when a poll found work: the next idle period starts with spinning again.
    pub fn reset(&mut self) {
        self.idle = 0;
    }

    /// The phase the next [`Backoff::snooze`] will take.
    pub fn phase(&self) -> Phase {
        if self.idle < u64::from(self.cfg.spins) {
            Phase::Spin
        } else if self.idle < u64::from(self.cfg.spins) + u64::from(self.cfg.yields) {
            Phase::Yield
        } else {
            Phase::Park
        }
    }

    /// One idle step after an empty poll. In the park phase it sleeps on `doorbell` unless
    /// `still_idle` (evaluated after announcing the sleep) says work arrived.
    pub fn snooze(&mut self, doorbell: &Doorbell, still_idle: impl FnOnce() -> bool) -> Phase {
        let phase = self.phase();
        self.idle = self.idle.saturating_add(1);
        match phase {
            Phase::Spin => std::hint::spin_loop(),
            Phase::Yield => yield_now(),
            Phase::Park => {
                doorbell.wait(still_idle, self.cfg.park);
            }
        }
        phase
    }
}

#[cfg(not(loom))]
fn yield_now() {
    std::thread::yield_now();
}
#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}

/// A futex word a consumer parks on and its producer rings. Lives in shared memory (the ring
/// header); see the module docs for the protocol.
#[repr(transparent)]
#[derive(Debug)]
pub struct Doorbell {
    /// 0: consumer awake. 1: consumer parked, or about to park.
    word: AtomicU32,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    /// An unrung doorbell.
    pub fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
        }
    }

    /// Whether the consumer has announced that it is parking.
    pub fn is_sleeping(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// Producer side, called after publishing with Release: wakes the consumer if it announced
    /// sleep. Returns whether it issued a wake.
    pub fn notify(&self) -> bool {
        // SeqCst fence between our publication (a store) and the load of the word: see the module
        // docs. Without it the load could be satisfied before the publication is visible to the
        // consumer's re-check, and both sides would miss each other.
        fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // Only the swap that takes 1 -> 0 issues the syscall, so a burst of pushes to a sleeping
        // consumer costs one wake. The futex syscall itself orders the word with the waiter.
        if self.word.swap(0, Ordering::Relaxed) == 1 {
            futex_wake(&self.word);
            return true;
        }
        false
    }

    /// Consumer side: announces sleep, re-checks with `still_idle` (which must re-read the
    /// producer's index), and parks for at most `timeout` unless work arrived or the producer rang.
    /// Returns whether it parked.
    pub fn wait(&self, still_idle: impl FnOnce() -> bool, timeout: Duration) -> bool {
        self.word.store(1, Ordering::Relaxed);
        // SeqCst fence between the announcement (a store) and the re-check (a load of the producer
        // index): pairs with the fence in `notify`; see the module docs.
        fence(Ordering::SeqCst);
        if !still_idle() {
            self.word.store(0, Ordering::Relaxed);
            return false;
        }
        futex_wait(&self.word, 1, timeout);
        self.word.store(0, Ordering::Relaxed);
        true
    }
}

/// Parks on several doorbells at once, for a consumer of several rings (a data-plane thread
/// serving many links): announces sleep on each, re-checks with `still_idle` (which must
/// re-read every producer index), and parks until any of them is rung, for at most `timeout`.
/// Returns whether it parked. On a kernel without `futex_waitv` (before Linux 5.16) it parks on
/// the first doorbell alone, which the others' producers do not ring: bounded by `timeout`.
pub fn wait_any(bells: &[&Doorbell], still_idle: impl FnOnce() -> bool, timeout: Duration) -> bool {
    for bell in bells {
        bell.word.store(1, Ordering::Relaxed);
    }
    // As in `Doorbell::wait`: pairs with the fence in `notify`.
    fence(Ordering::SeqCst);
    let parked = still_idle();
    if parked {
        let words: Vec<&AtomicU32> = bells.iter().map(|b| &b.word).collect();
        if !futex_wait_any(&words, 1, timeout) {
            if let Some(first) = words.first() {
                futex_wait(first, 1, timeout);
            }
        }
    }
    for bell in bells {
        bell.word.store(0, Ordering::Relaxed);
    }
    parked
}

/// `futex_waitv` on `words` (each expected to hold `expected`), for at most `timeout`; false if
/// the kernel lacks the call (or there are more words than it takes), so the caller falls back.
#[cfg(all(not(loom), target_os = "linux"))]
fn futex_wait_any(words: &[&AtomicU32], expected: u32, timeout: Duration) -> bool {
    /// `struct futex_waitv` of linux/futex.h.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    /// A 32-bit futex, shared across processes (no FUTEX2_PRIVATE).
    const FUTEX2_SIZE_U32: u32 = 0x02;
    /// The kernel's limit on one wait.
    const FUTEX_WAITV_MAX: usize = 128;
    /// `__NR_futex_waitv`: the same on every architecture (a syscall added after the tables
    /// were unified).
    const SYS_FUTEX_WAITV: libc::c_long = 449;
    if words.is_empty() || words.len() > FUTEX_WAITV_MAX {
        return false;
    }
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|w| FutexWaitv {
            val: u64::from(expected),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let total = now.tv_nsec as u128 + timeout.subsec_nanos() as u128;
    let deadline = libc::timespec {
        tv_sec: now.tv_sec
            + timeout.as_secs().min(i64::MAX as u64 / 2) as libc::time_t
            + (total / 1_000_000_000) as libc::time_t,
        tv_nsec: (total % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `waiters` is a live array of `words.len()` futex_waitv entries, each naming a live,
    // 4-byte-aligned u32 (the AtomicU32s, which outlive the call) that the kernel only reads and
    // compares; `deadline` is a valid timespec. The result is ignored as in `futex_wait` (a
    // wake, EAGAIN, EINTR, ETIMEDOUT all mean "poll again"), except ENOSYS: no such call.
    let r = unsafe {
        libc::syscall(
            SYS_FUTEX_WAITV,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0u32,
            &deadline as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Without `futex_waitv` (loom, other systems): the caller falls back to one doorbell.
#[cfg(any(loom, not(target_os = "linux")))]
fn futex_wait_any(_words: &[&AtomicU32], _expected: u32, _timeout: Duration) -> bool {
    false
}

#[cfg(not(loom))]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, 4-byte-aligned u32 (AtomicU32 has u32's layout) for the whole call;
    // FUTEX_WAIT only reads it and compares with `expected`; `ts` is a valid relative timeout. The
    // result is ignored on purpose: EAGAIN (word already changed), EINTR, ETIMEDOUT and a wake all
    // mean "go and poll again".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(not(loom))]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory beyond looking up
    // waiters keyed by this address (shared futex: by the mapping's page, across processes).
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1i32);
    }
}

/// Under loom there is no kernel: parking spins (with loom's yield) until the word is cleared, so
/// a lost wakeup shows up as a model that never finishes instead of a 5 ms stall.
#[cfg(loom)]
fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Duration) {
    while word.load(Ordering::Relaxed) == expected {
        loom::thread::yield_now();
    }
}

#[cfg(loom)]
fn futex_wake(_word: &AtomicU32) {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ring::{channel, RingConfig};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn phases_progress_and_reset() {
        let bell = Doorbell::new();
        let mut b = Backoff::new(BackoffConfig {
            spins: 2,
            yields: 1,
            park: Duration::from_millis(1),
        });
        assert_eq!(b.snooze(&bell, || true), Phase::Spin);
        assert_eq!(b.snooze(&bell, || true), Phase::Spin);
        assert_eq!(b.snooze(&bell, || true), Phase::Yield);
        let t = Instant::now();
        assert_eq!(b.snooze(&bell, || true), Phase::Park);
        assert!(t.elapsed() >= Duration::from_millis(1));
        // Work found on the re-check: no sleep, and the doorbell is not left announcing one.
        assert_eq!(b.snooze(&bell, || false), Phase::Park);
        assert!(!bell.is_sleeping());
        b.reset();
        assert_eq!(b.phase(), Phase::Spin);
    }

    #[test]
    fn notify_without_sleeper_is_cheap() {
        let bell = Doorbell::new();
        assert!(!bell.notify());
    }

    #[test]
    fn parked_consumer_is_woken_by_producer() {
        // The park is 60 s: a wake that took less than 30 s was a real wake, on any machine.
        let (mut tx, mut rx) = channel(RingConfig {
            slot_count: 4,
            slot_size: 64,
        })
        .unwrap();
        // A long park, so only a real wake (not the timeout) can deliver the message quickly.
        let cfg = BackoffConfig {
            spins: 0,
            yields: 0,
            park: Duration::from_secs(60),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let consumer = std::thread::spawn(move || {
            let mut backoff = Backoff::new(cfg);
            ready_tx.send(()).unwrap();
            loop {
                if let Some(slot) = rx.try_pop().unwrap() {
                    return (slot.to_vec(), Instant::now());
                }
                rx.wait(&mut backoff);
            }
        });
        ready_rx.recv().unwrap();
        // Give it time to park, then check it announced sleep.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(10));
            if tx_sleeping(&tx) || Instant::now() > deadline {
                break;
            }
        }
        assert!(tx_sleeping(&tx), "consumer never parked");
        let sent = Instant::now();
        tx.try_push(b"wake up").unwrap();
        let (msg, got) = consumer.join().unwrap();
        assert_eq!(msg, b"wake up");
        assert!(
            got.duration_since(sent) < Duration::from_secs(30),
            "woken only by the park timeout"
        );
    }

    fn tx_sleeping(tx: &crate::ring::Producer) -> bool {
        tx.doorbell().is_sleeping()
    }

    #[test]
    fn idle_consumer_uses_little_cpu() {
        let (tx, mut rx) = channel(RingConfig {
            slot_count: 4,
            slot_size: 64,
        })
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let consumer = std::thread::spawn(move || {
            let mut backoff = Backoff::new(BackoffConfig::default());
            // Get through the spin and yield phases first, then measure steady idling.
            let warm = Instant::now() + Duration::from_millis(50);
            while Instant::now() < warm {
                assert!(rx.try_pop().unwrap().is_none());
                rx.wait(&mut backoff);
            }
            let cpu0 = crate::clock::thread_cpu_ns();
            let t0 = Instant::now();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(rx.try_pop().unwrap().is_none());
                rx.wait(&mut backoff);
            }
            (crate::clock::thread_cpu_ns() - cpu0, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(250));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (cpu_ns, wall) = consumer.join().unwrap();
        drop(tx);
        let share = cpu_ns as f64 / wall.as_nanos() as f64;
        assert!(wall >= Duration::from_millis(150));
        assert!(
            share < 0.05,
            "idle consumer used {:.1}% of a core",
            share * 100.0
        );
    }
}
