//! An emulated network delay: a [`ClientLink`] that holds every frame, for measuring how a
//! placement behaves over a longer round trip than this host's links have.
//!
//! [`DelayLink`] wraps any client link and adds a fixed round trip to it, the way propagation
//! delay would: each request is held half the round trip after it is queued before the inner
//! link gets it, and each reply is held half the round trip after it came out of the inner link
//! before [`poll`](ClientLink::poll) delivers it. Frames are held side by side, not one after
//! another (a pipe, not a queue): requests queued at the same instant all reach the inner link
//! half a round trip later. Each direction keeps its order. Bandwidth, jitter and loss are not
//! emulated; a round trip of zero makes the link a pass-through.
//!
//! It stands in for `tc qdisc ... netem delay`, which the kernel here does not have. The delay
//! is emulated, not measured: every figure taken through a `DelayLink` must say so, and give
//! the round trip it added.
//!
//! # Accuracy
//!
//! A frame leaves the hold when the link is next driven at or after its due time, so callers
//! drive it as they drive any link (queue, flush, poll, wait). [`wait`](ClientLink::wait) ends
//! at the next due time: it sleeps while the inner link has nothing outstanding, and otherwise
//! waits on the inner link (so a reply ends the wait and is stamped as it arrives), ending the
//! last [`SPIN_BELOW`] in a yielding spin, since a sleep overshoots by the timer slack. Over shm
//! a round trip measured the added `rtt` plus 5 to 180 us on the busy 2-core host here (bare:
//! 3 us), with rare outliers near 1 ms when the thread was not scheduled in time.
//!
//! A frame can leave late by as much as the inner link's `wait` overruns the timeout it is
//! given. [`ShmClientLink`](crate::link::ShmClientLink)'s `wait` ignores its timeout: once its
//! backoff reaches the park phase it sleeps until a reply comes or its park time passes (5 ms
//! by default). So with requests outstanding on a slow server, a held frame can leave up to
//! that much late; the tcp link honours the timeout.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::link::ClientLink;
use crate::ring::RingError;
use crate::wire::{self, Frame, Limits, Message};
use crate::{Error, Result};

/// Holds that end sooner than this end in a yielding spin instead of a sleep or an inner wait:
/// `thread::sleep` overshoots by the timer slack (50 us by default on Linux) plus the wakeup,
/// some 70 us in all at the median and 90 us at the 90th percentile on the 2-core host here.
pub const SPIN_BELOW: Duration = Duration::from_micros(100);

/// Limits for decoding frames this link encoded itself: the inner link or `queue` already
/// bounded them.
const OWN_FRAMES: Limits = Limits {
    max_payload: usize::MAX,
};

/// One frame on hold: its wire bytes and when it may go on.
struct Held {
    due: Instant,
    bytes: Vec<u8>,
}

/// A [`ClientLink`] that adds a fixed round trip to an inner link (see the module docs).
pub struct DelayLink {
    inner: Box<dyn ClientLink>,
    rtt: Duration,
    /// Half of `rtt`: the hold in each direction. Zero makes every method a pass-through.
    half: Duration,
    /// Requests queued and not yet taken by `inner`, in queue order, hence in `due` order.
    requests: VecDeque<Held>,
    /// Replies taken from `inner` and not yet delivered, in arrival order, hence in `due` order.
    replies: VecDeque<Held>,
    /// Requests `inner` took whose replies have not come out of it yet (at least 0 even if it
    /// answers more than asked): whether a reply can arrive while we wait.
    in_flight: usize,
    /// Whether `inner` refused the head of `requests` as full when it was last offered. Cleared
    /// when it takes one again.
    refused: bool,
}

impl fmt::Debug for DelayLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayLink")
            .field("rtt", &self.rtt)
            .field("held_requests", &self.requests.len())
            .field("held_replies", &self.replies.len())
            .field("in_flight", &self.in_flight)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl DelayLink {
    /// Wraps `inner`, adding `rtt` to every round trip: `rtt / 2` on the way out and on the way
    /// back. A zero `rtt` holds nothing: the link then behaves exactly as `inner`.
    pub fn new(inner: Box<dyn ClientLink>, rtt: Duration) -> DelayLink {
        DelayLink {
            inner,
            rtt,
            half: rtt / 2,
            requests: VecDeque::new(),
            replies: VecDeque::new(),
            in_flight: 0,
            refused: false,
        }
    }

    /// The round trip this link adds.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    fn passes_through(&self) -> bool {
        self.half.is_zero()
    }

    /// Offers `inner` every request that is due, in order, then flushes it. A request `inner`
    /// refuses as full stays held, with all after it; one it fails otherwise is dropped and the
    /// error returned, as its own `queue` would have returned it.
    fn send_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let DelayLink {
            inner,
            requests,
            in_flight,
            refused,
            ..
        } = self;
        while let Some(head) = requests.front() {
            if head.due > now {
                break;
            }
            let queued = match wire::decode(&head.bytes, &OWN_FRAMES) {
                Ok((frame, _)) => inner.queue(frame.request_id, &frame.message),
                Err(e) => Err(e.into()),
            };
            match queued {
                Ok(()) => {
                    requests.pop_front();
                    *in_flight += 1;
                    *refused = false;
                }
                Err(Error::Ring(RingError::Full)) => {
                    *refused = true;
                    break;
                }
                Err(e) => {
                    requests.pop_front();
                    return Err(e);
                }
            }
        }
        inner.flush()
    }

    /// Copies every reply `inner` has into `replies`, due half a round trip from now; returns
    /// how many came.
    fn take_arrivals(&mut self) -> Result<usize> {
        let half = self.half;
        let replies = &mut self.replies;
        let mut failed = None;
        let n = self.inner.poll(&mut |frame| {
            let due = Instant::now() + half;
            let mut bytes = Vec::new();
            // A frame the inner link decoded encodes again; keep the first failure if not.
            match wire::encode(frame.request_id, &frame.message, &mut bytes) {
                Ok(_) => replies.push_back(Held { due, bytes }),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        })?;
        self.in_flight = self.in_flight.saturating_sub(n);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(n),
        }
    }

    /// When the link next has something to do on its own: the earliest due time of what it
    /// holds. A held request already due is one the inner link refused: it waits on the inner
    /// link, not on the clock.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        let request = self.requests.front().map(|h| h.due).filter(|&d| d > now);
        let reply = self.replies.front().map(|h| h.due);
        request.into_iter().chain(reply).min()
    }

    /// Waits until `until` with nothing to watch but the clock: sleeps, then spins the last
    /// [`SPIN_BELOW`].
    fn sleep_until(until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        if left > SPIN_BELOW {
            std::thread::sleep(left - SPIN_BELOW);
        }
        while Instant::now() < until {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }

    /// Waits until `until` while replies may come from the inner link, stamping each as it
    /// arrives: waits on the inner link until [`SPIN_BELOW`] before `until` (returning early if
    /// a reply ends that wait), then polls it in a yielding spin.
    fn watch_until(&mut self, until: Instant) -> Result<()> {
        let left = until.saturating_duration_since(Instant::now());
        if left > SPIN_BELOW {
            self.inner.wait(left - SPIN_BELOW)?;
            self.take_arrivals()?;
            return Ok(());
        }
        while Instant::now() < until {
            self.take_arrivals()?;
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        Ok(())
    }
}

impl ClientLink for DelayLink {
    /// Holds the request for half the round trip. Refuses a frame over the inner link's
    /// [`max_frame`](ClientLink::max_frame) with `RingError::TooLarge`, and fails with
    /// `RingError::Full` while the inner link refuses requests that are due (its backpressure,
    /// passed on): flush, drain replies with `poll`, and try again.
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        if self.passes_through() {
            return self.inner.queue(request_id, message);
        }
        let len = message.frame_len()?;
        let capacity = self.inner.max_frame();
        if len > capacity {
            return Err(Error::Ring(RingError::TooLarge { len, capacity }));
        }
        if self.refused {
            return Err(Error::Ring(RingError::Full));
        }
        let due = Instant::now() + self.half;
        let mut bytes = Vec::with_capacity(len);
        wire::encode(request_id, message, &mut bytes)?;
        self.requests.push_back(Held { due, bytes });
        Ok(())
    }

    /// Hands the inner link every held request that is due and flushes it. What it refuses as
    /// full stays held, in order, and is offered again by the next `flush`, `poll` or `wait`.
    fn flush(&mut self) -> Result<()> {
        if self.passes_through() {
            return self.inner.flush();
        }
        self.send_due()
    }

    /// Sends the requests that are due, takes in the replies that arrived (held from now on),
    /// then calls `f` with every held reply that is due; returns how many. Never blocks.
    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        if self.passes_through() {
            return self.inner.poll(f);
        }
        self.send_due()?;
        if self.take_arrivals()? > 0 && self.refused {
            // Draining replies may be what frees room for what the inner link refused.
            self.send_due()?;
        }
        let now = Instant::now();
        let mut delivered = 0;
        while let Some(head) = self.replies.front() {
            if head.due > now {
                break;
            }
            let (frame, _) = wire::decode(&head.bytes, &OWN_FRAMES)?;
            f(frame);
            self.replies.pop_front();
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Waits at most `timeout`, and no later than the next held frame falls due. With nothing
    /// held it is the inner link's wait.
    fn wait(&mut self, timeout: Duration) -> Result<()> {
        if self.passes_through() {
            return self.inner.wait(timeout);
        }
        self.send_due()?;
        if self.requests.is_empty() && self.replies.is_empty() {
            self.inner.wait(timeout)?;
            // Stamp what arrived now rather than at the caller's next poll.
            self.take_arrivals()?;
            return Ok(());
        }
        let now = Instant::now();
        let watch = self.in_flight > 0 || self.refused;
        match self.next_due(now) {
            // Wake for the due time, and not late.
            Some(due) if due <= now + timeout => {
                if watch {
                    self.watch_until(due)?;
                } else {
                    Self::sleep_until(due);
                }
            }
            // Nothing falls due within `timeout`: wait it out, as loosely as the inner link.
            _ if watch => {
                self.inner.wait(timeout)?;
                self.take_arrivals()?;
            }
            _ => std::thread::sleep(timeout),
        }
        if self.refused {
            self.send_due()?;
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        self.inner.peer_gone()
    }

    fn max_frame(&self) -> usize {
        self.inner.max_frame()
    }
}

#[cfg(test)]
mod tests {
    //! Over a real shared-memory link: an `ShmServer` served on a thread that answers
    //! `Get { key }` with `Value { key }`, and can be paused to fill the request ring.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use super::*;
    use crate::backoff::BackoffConfig;
    use crate::link::{Replier, ServerLink, ShmClientLink};
    use crate::ring::RingConfig;
    use crate::shm::{Backing, ShmClient, ShmConfig, ShmServer};

    /// Bounds every loop of these tests.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// An echo server on its own thread; stops (and frees the segment) when dropped.
    struct Echo {
        stop: Arc<AtomicBool>,
        paused: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Echo {
        fn resume(&self) {
            self.paused.store(false, Ordering::Release);
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// An shm link with `slots` request slots of 256 bytes, and its echo server (paused or not).
    fn echo_link(slots: u32, paused: bool) -> (Box<dyn ClientLink>, Echo) {
        let ring = RingConfig {
            slot_count: slots,
            slot_size: 256,
        };
        let mut server = ShmServer::create(&ShmConfig {
            requests: ring,
            responses: ring,
            backing: Backing::Auto,
        })
        .unwrap();
        let client = ShmClient::attach(server.path(), &server.secret()).unwrap();
        let link = ShmClientLink::new(client, BackoffConfig::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(paused));
        let (s, p) = (stop.clone(), pause.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + DEADLINE;
            let mut echo = |f: Frame<'_>, r: &mut dyn Replier| {
                let Message::Get { key } = f.message else {
                    panic!("unexpected {f:?}")
                };
                r.reply(f.request_id, &Message::Value { value: Some(key) })
                    .unwrap();
            };
            while !s.load(Ordering::Acquire) && Instant::now() < deadline {
                let served = if p.load(Ordering::Acquire) {
                    0
                } else {
                    server.serve(32, &mut echo).unwrap()
                };
                if served == 0 {
                    server.park(Duration::from_millis(1));
                }
            }
        });
        let echo = Echo {
            stop,
            paused: pause,
            thread: Some(thread),
        };
        (Box::new(link), echo)
    }

    fn key(i: u64) -> Vec<u8> {
        // Some keys are larger than a 256-byte slot, so they travel as fragments.
        let len = if i % 7 == 3 {
            700
        } else {
            1 + (i as usize * 13) % 90
        };
        (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
    }

    /// Flushes `link` and adds the replies `poll` delivers to `got`, as `(request id, value)`.
    fn pump(link: &mut DelayLink, got: &mut Vec<(u64, Vec<u8>)>) {
        link.flush().unwrap();
        link.poll(&mut |f| {
            let Message::Value { value: Some(v) } = f.message else {
                panic!("unexpected {f:?}")
            };
            got.push((f.request_id, v.to_vec()));
        })
        .unwrap();
    }

    /// Queues `Get { key(id) }` for each id the way `compute`'s session does: a full link is
    /// flushed, drained (into `got`) and tried again.
    fn queue_all(link: &mut DelayLink, ids: &[u64], got: &mut Vec<(u64, Vec<u8>)>) {
        let deadline = Instant::now() + DEADLINE;
        for &id in ids {
            loop {
                match link.queue(id, &Message::Get { key: &key(id) }) {
                    Ok(()) => break,
                    Err(Error::Ring(RingError::Full)) => {
                        pump(link, got);
                        link.wait(Duration::from_millis(1)).unwrap();
                    }
                    Err(e) => panic!("queue {id}: {e}"),
                }
                assert!(Instant::now() < deadline, "queue timed out");
            }
        }
    }

    /// Drives `link` until `got` holds `n` replies.
    fn collect(link: &mut DelayLink, n: usize, got: &mut Vec<(u64, Vec<u8>)>) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            pump(link, got);
            if got.len() >= n {
                return;
            }
            link.wait(Duration::from_millis(1)).unwrap();
            assert!(Instant::now() < deadline, "{} of {n} replies", got.len());
        }
    }

    /// Sends `Get { key(id) }` for each id and waits for every reply; returns the replies in
    /// the order they were delivered.
    fn round_trips(link: &mut DelayLink, ids: &[u64]) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        queue_all(link, ids, &mut got);
        collect(link, ids.len(), &mut got);
        got
    }

    fn expected(ids: &[u64]) -> Vec<(u64, Vec<u8>)> {
        ids.iter().map(|&id| (id, key(id))).collect()
    }

    #[test]
    fn frames_come_back_intact_and_in_order() {
        let (inner, _echo) = echo_link(64, false);
        let mut link = DelayLink::new(inner, Duration::from_millis(1));
        let ids: Vec<u64> = (1..=40).map(|i| i * 1_000_003).collect();
        assert_eq!(round_trips(&mut link, &ids), expected(&ids));
        assert!(link.requests.is_empty() && link.replies.is_empty());
        assert_eq!(link.in_flight, 0);
    }

    #[test]
    fn a_round_trip_takes_at_least_the_rtt() {
        let (inner, _echo) = echo_link(64, false);
        let rtt = Duration::from_millis(2);
        let mut link = DelayLink::new(inner, rtt);
        for id in 1..=5 {
            let started = Instant::now();
            assert_eq!(round_trips(&mut link, &[id]), expected(&[id]));
            let took = started.elapsed();
            eprintln!("round trip {id} with {rtt:?} added: {took:?}");
            assert!(took >= rtt && took < Duration::from_secs(2), "{took:?}");
        }
    }

    #[test]
    fn requests_are_held_in_parallel() {
        let (inner, _echo) = echo_link(64, false);
        let rtt = Duration::from_millis(20);
        let mut link = DelayLink::new(inner, rtt);
        let ids: Vec<u64> = (1..=32).collect();
        let started = Instant::now();
        assert_eq!(round_trips(&mut link, &ids), expected(&ids));
        let took = started.elapsed();
        eprintln!("32 round trips with {rtt:?} added: {took:?}");
        // One after another would take 32 x 20 ms.
        assert!(took >= rtt && took < Duration::from_millis(300), "{took:?}");
    }

    #[test]
    fn zero_rtt_passes_frames_straight_through() {
        // Paused, the 4-slot ring fills at the 5th request, as the bare link's would: nothing
        // is held on the way.
        let (inner, echo) = echo_link(4, true);
        let mut link = DelayLink::new(inner, Duration::ZERO);
        for id in 1..=4 {
            link.queue(id, &Message::Get { key: &key(1) }).unwrap();
        }
        assert!(matches!(
            link.queue(5, &Message::Get { key: &key(1) }),
            Err(Error::Ring(RingError::Full))
        ));
        assert!(link.requests.is_empty());
        echo.resume();
        let mut got = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while got.len() < 4 {
            link.flush().unwrap();
            link.poll(&mut |f| got.push(f.request_id)).unwrap();
            assert!(link.replies.is_empty());
            link.wait(Duration::from_millis(1)).unwrap();
            assert!(Instant::now() < deadline, "timed out");
        }
        assert_eq!(got, [1, 2, 3, 4]);
        let ids: Vec<u64> = (10..30).collect();
        assert_eq!(round_trips(&mut link, &ids), expected(&ids));
    }

    #[test]
    fn an_inner_full_keeps_what_is_held_in_order() {
        let (inner, echo) = echo_link(4, true);
        let rtt = Duration::from_millis(2);
        let mut link = DelayLink::new(inner, rtt);
        let ids: Vec<u64> = (1..=12).collect();
        for &id in &ids {
            link.queue(id, &Message::Get { key: &key(id) }).unwrap();
        }
        std::thread::sleep(rtt);
        // The server is paused: the ring takes what fits (id 3 is fragmented, so fewer than 4
        // requests), the rest stays held, in order, and new requests are refused as full.
        link.flush().unwrap();
        let held: Vec<u64> = link
            .requests
            .iter()
            .map(|h| wire::request_id_of(&h.bytes))
            .collect();
        assert!(link.refused);
        assert!(!held.is_empty() && held.len() < ids.len(), "{held:?}");
        assert_eq!(held, ids[ids.len() - held.len()..]);
        assert!(matches!(
            link.queue(13, &Message::Get { key: &key(13) }),
            Err(Error::Ring(RingError::Full))
        ));
        assert_eq!(link.poll(&mut |f| panic!("delivered {f:?}")).unwrap(), 0);
        echo.resume();
        let mut got = Vec::new();
        queue_all(&mut link, &[13], &mut got);
        collect(&mut link, 13, &mut got);
        let all: Vec<u64> = (1..=13).collect();
        assert_eq!(got, expected(&all));
    }

    #[test]
    fn a_frame_over_the_inner_limit_is_refused() {
        let (inner, _echo) = echo_link(4, false);
        let mut link = DelayLink::new(inner, Duration::from_millis(2));
        let max = link.max_frame();
        let key = vec![0u8; max];
        let err = link.queue(1, &Message::Get { key: &key }).unwrap_err();
        assert!(
            matches!(err, Error::Ring(RingError::TooLarge { len, capacity })
                if len > max && capacity == max),
            "{err:?}"
        );
        assert!(link.requests.is_empty());
    }
}
