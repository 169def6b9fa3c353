//! What bounds the guests running in the process: the epoch ticker ([`Ticker`]), which
//! interrupts a guest at its deadline and otherwise sleeps until the earliest one, and the pool's
//! permits ([`Slots`]), handed in order to the invocations waiting for an instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// How often the epoch ticker interrupts guests past their deadlines, until they stop.
const TICK: Duration = Duration::from_micros(100);

/// The epoch ticker: a thread that increments the engine's epoch when a running invocation is
/// past its deadline (its guest then checks its deadline and suspends for a checkpoint), and
/// otherwise sleeps until the earliest deadline. A ticker waking every 100 us whatever ran took
/// a tenth of a core under a steady stream of guests; this one wakes about once per deadline.
pub(super) struct Ticker {
    /// The deadline of each running invocation, by slot.
    deadlines: Mutex<Deadlines>,
    /// When the ticker wakes next, in ns after `base` (`u64::MAX`: not until it is unparked).
    /// Written under `deadlines`, so a deadline set earlier than it always unparks the ticker.
    wake_at: AtomicU64,
    base: Instant,
    thread: OnceLock<std::thread::Thread>,
}

#[derive(Default)]
struct Deadlines {
    at: Vec<Option<Instant>>,
    free: Vec<usize>,
}

impl Ticker {
    pub(super) fn start(engine: Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker {
            deadlines: Mutex::new(Deadlines::default()),
            wake_at: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            thread: OnceLock::new(),
        });
        let t = ticker.clone();
        let thread = std::thread::Builder::new()
            .name("autoloc-wasm-epoch".into())
            .spawn(move || t.run(&engine))?;
        let _ = ticker.thread.set(thread.thread().clone());
        Ok(ticker)
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, engine: &Engine) {
        loop {
            let now = Instant::now();
            let sleep = {
                let d = self.lock();
                let earliest = d.at.iter().flatten().min().copied();
                let (wake, sleep) = match earliest {
                    None => (u64::MAX, None),
                    Some(at) if at > now => (self.ns(at), Some(at - now)),
                    Some(_) => (self.ns(now + TICK), Some(TICK)),
                };
                self.wake_at.store(wake, Ordering::SeqCst);
                if earliest.is_some_and(|at| at <= now) {
                    engine.increment_epoch();
                }
                sleep
            };
            match sleep {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        }
    }

    /// Sets slot `i`'s deadline, waking the ticker if it would sleep past it.
    pub(super) fn set(&self, i: usize, at: Instant) {
        let wake = {
            let mut d = self.lock();
            d.at[i] = Some(at);
            self.ns(at) < self.wake_at.load(Ordering::SeqCst)
        };
        if wake {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    pub(super) fn add(&self, at: Instant) -> usize {
        let i = {
            let mut d = self.lock();
            match d.free.pop() {
                Some(i) => i,
                None => {
                    d.at.push(None);
                    d.at.len() - 1
                }
            }
        };
        self.set(i, at);
        i
    }

    pub(super) fn remove(&self, i: usize) {
        let mut d = self.lock();
        d.at[i] = None;
        d.free.push(i);
    }
}

/// The invocations that may hold a pooled instance at once, and those waiting for one, in
/// order: a permit is handed from the invocation that ends to the next waiting one.
pub(super) struct Slots(Mutex<SlotsInner>);

pub(super) struct SlotsInner {
    pub(super) free: usize,
    pub(super) next_ticket: u64,
    pub(super) queue: std::collections::VecDeque<u64>,
    pub(super) waiting: HashMap<u64, Waiter>,
}

pub(super) enum Waiter {
    Waiting(std::task::Waker),
    /// Handed a permit, not yet polled to take it.
    Granted,
}

impl Slots {
    pub(super) fn new(n: usize) -> Slots {
        Slots(Mutex::new(SlotsInner {
            free: n,
            next_ticket: 0,
            queue: Default::default(),
            waiting: HashMap::new(),
        }))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit, now or once one is handed over.
    pub(super) fn acquire(&self) -> Acquire<'_> {
        Acquire {
            slots: self,
            ticket: None,
            done: false,
        }
    }

    /// Hands a permit to the first invocation waiting, or frees it.
    fn release(&self) {
        let wake = {
            let mut s = self.lock();
            let mut wake = None;
            while let Some(t) = s.queue.pop_front() {
                if let Some(w) = s.waiting.get_mut(&t) {
                    if let Waiter::Waiting(waker) = std::mem::replace(w, Waiter::Granted) {
                        wake = Some(waker);
                        break;
                    }
                }
            }
            if wake.is_none() {
                s.free += 1;
            }
            wake
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

pub(super) struct Acquire<'a> {
    slots: &'a Slots,
    ticket: Option<u64>,
    done: bool,
}

/// Holds one of [`Slots`]'s permits.
pub(super) struct Permit<'a>(&'a Slots);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> std::future::Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Permit<'a>> {
        let slots = self.slots;
        let mut s = slots.lock();
        let granted = match self.ticket {
            None if s.free > 0 && s.queue.is_empty() => {
                s.free -= 1;
                true
            }
            None => {
                let t = s.next_ticket;
                s.next_ticket += 1;
                s.queue.push_back(t);
                s.waiting.insert(t, Waiter::Waiting(cx.waker().clone()));
                drop(s);
                self.ticket = Some(t);
                return std::task::Poll::Pending;
            }
            Some(t) => match s.waiting.get_mut(&t) {
                Some(Waiter::Granted) => {
                    s.waiting.remove(&t);
                    true
                }
                Some(Waiter::Waiting(w)) => {
                    w.clone_from(cx.waker());
                    false
                }
                None => unreachable!("a ticket leaves the map only when its permit is taken"),
            },
        };
        drop(s);
        if granted {
            self.done = true;
            std::task::Poll::Ready(Permit(slots))
        } else {
            std::task::Poll::Pending
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let (Some(t), false) = (self.ticket, self.done) else {
            return;
        };
        let granted = {
            let mut s = self.slots.lock();
            s.queue.retain(|&q| q != t);
            matches!(s.waiting.remove(&t), Some(Waiter::Granted))
        };
        if granted {
            // Dropped after a permit was handed to it: pass the permit on.
            self.slots.release();
        }
    }
}
