//! Requests over a data-plane link: request ids, replies by id, deadlines, and the
//! [`LinkStore`] through which compute-side functions read over the fast data plane.
//!
//! A [`Session`] owns one [`ClientLink`]. Requests are queued with an id; the link is flushed
//! once per step, so many requests in flight leave in one burst; replies are copied out of the
//! ring (they arrive on the compute node anyway) and kept by id until taken.
//!
//! Functions are resumable at every store access: a [`LinkStore`] read queues its request and
//! returns `Pending` until the reply is there, so [`run_all`] can keep many invocations in
//! flight on one link from one thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use autoloc_dataplane::clock::thread_cpu_ns;
use autoloc_dataplane::link::ClientLink;
use autoloc_dataplane::ring::RingError;
use autoloc_dataplane::wire::{InvokeCost, List, Message};
use autoloc_functions::{Error as FnError, ErrorCode, Store, StoreFuture, Visit};

/// A reply, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To `Get`.
    Value(Option<Vec<u8>>),
    /// To `MultiGet`.
    Values(Vec<Option<Vec<u8>>>),
    /// To `Set`.
    Ok,
    /// To `Invoke`: the encoded result and what it cost storage-side.
    Invoked { result: Vec<u8>, cost: InvokeCost },
    /// To `Invoke`: declined by the storage side, with what it had read and spent, and the keys
    /// of another shard it met (none if its budget was spent).
    Pushback {
        read_set: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        elsewhere: Vec<Vec<u8>>,
        cost: InvokeCost,
    },
    /// A failure, with its code.
    Error(FnError),
}

impl Reply {
    fn from_message(m: &Message<'_>) -> Reply {
        let own = |v: Option<&[u8]>| v.map(<[u8]>::to_vec);
        match *m {
            Message::Value { value } => Reply::Value(own(value)),
            Message::Values { values } => Reply::Values(values.iter().map(own).collect()),
            Message::Ok => Reply::Ok,
            Message::InvokeReply { result, cost } => Reply::Invoked {
                result: result.to_vec(),
                cost,
            },
            Message::Pushback {
                read_set,
                elsewhere,
                cost,
            } => Reply::Pushback {
                read_set: read_set.iter().map(|(k, v)| (k.to_vec(), own(v))).collect(),
                elsewhere: elsewhere.iter().map(<[u8]>::to_vec).collect(),
                cost,
            },
            Message::Error { code, message } => Reply::Error(FnError::remote(code, message)),
            ref other => Reply::Error(FnError::Malformed(format!(
                "unexpected {:?} from the server",
                other.kind()
            ))),
        }
    }

    /// The error this reply stands for: its own, or an unexpected reply to `what`.
    pub fn into_error(self, what: &str) -> FnError {
        match self {
            Reply::Error(e) => e,
            other => FnError::Malformed(format!("unexpected reply to {what}: {other:?}")),
        }
    }
}

/// A reply and the bytes its request and it took on the link.
#[derive(Debug)]
pub struct Response {
    /// The reply.
    pub reply: Reply,
    /// Bytes of the request frame and the reply frame.
    pub bytes: u64,
}

/// One data-plane link with request ids and a deadline on every wait.
pub struct Session {
    link: Box<dyn ClientLink>,
    next_id: u64,
    /// Replies that arrived and are not taken yet, with the bytes of their request and theirs.
    replies: HashMap<u64, Response, IdHash>,
    /// Bytes of each request in flight, by request id.
    sent: InFlight,
    /// Set once the link failed: every wait then fails with it.
    failed: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("next_id", &self.next_id)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Session {
    /// A session over `link`; a wait longer than `timeout` fails.
    pub fn new(link: Box<dyn ClientLink>, timeout: Duration) -> Session {
        Session {
            link,
            next_id: 1,
            replies: HashMap::default(),
            sent: InFlight::default(),
            failed: None,
            timeout,
        }
    }

    /// Whether the link has failed (the session should be replaced).
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn failure(&self) -> Option<FnError> {
        self.failed.clone().map(FnError::Io)
    }

    /// Queues `message`; returns its request id.
    pub fn send(&mut self, message: &Message<'_>) -> Result<u64, FnError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let len = message
            .frame_len()
            .map_err(|e| FnError::Malformed(format!("encode: {e}")))?;
        let max = self.link.max_frame();
        if len > max {
            return Err(FnError::TooLarge { len, max });
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.link.queue(id, message) {
                Ok(()) => break,
                Err(autoloc_dataplane::Error::Ring(RingError::Full)) => {
                    // No room for the request: send what is queued and drain replies meanwhile.
                    self.pump()?;
                    self.idle(deadline)?;
                }
                Err(e) => return Err(self.fail(format!("send: {e}"))),
            }
        }
        self.sent.push(id, len as u64);
        Ok(id)
    }

    fn fail(&mut self, why: String) -> FnError {
        self.failed.get_or_insert(why);
        self.failure().unwrap_or_else(|| FnError::Io(String::new()))
    }

    /// Sends what is queued (a failure fails the session, seen at the next pump).
    pub fn flush(&mut self) {
        if self.failure().is_none() {
            if let Err(e) = self.link.flush() {
                self.fail(format!("flush: {e}"));
            }
        }
    }

    /// Sends what is queued and collects what has arrived; returns how many replies arrived.
    pub fn pump(&mut self) -> Result<usize, FnError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if let Err(e) = self.link.flush() {
            return Err(self.fail(format!("flush: {e}")));
        }
        let (replies, sent) = (&mut self.replies, &mut self.sent);
        match self.link.poll(&mut |frame| {
            let reply_len = frame.message.frame_len().unwrap_or(0) as u64;
            let request_len = sent.take(frame.request_id);
            replies.insert(
                frame.request_id,
                Response {
                    reply: Reply::from_message(&frame.message),
                    bytes: request_len + reply_len,
                },
            );
        }) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(format!("receive: {e}"))),
        }
    }

    /// Waits a little for replies (the link's backoff), failing the session past `deadline`.
    pub fn idle(&mut self, deadline: Instant) -> Result<(), FnError> {
        self.past(deadline)?;
        if let Err(e) = self.link.wait(Duration::from_millis(1)) {
            return Err(self.fail(format!("wait: {e}")));
        }
        Ok(())
    }

    /// Fails the session if `deadline` has passed (its waiting requests then fail).
    pub fn past(&mut self, deadline: Instant) -> Result<(), FnError> {
        if Instant::now() > deadline {
            return Err(self.fail(format!("no reply within {:?}", self.timeout)));
        }
        Ok(())
    }

    /// Whether it has requests whose replies have not come.
    pub fn waiting(&self) -> bool {
        !self.sent.is_empty()
    }

    /// Takes the reply to `id`, if it has arrived.
    pub fn take(&mut self, id: u64) -> Option<Response> {
        self.replies.remove(&id)
    }

    /// Sends `message` and waits for its reply.
    pub fn call(&mut self, message: &Message<'_>) -> Result<Response, FnError> {
        let id = self.send(message)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            self.pump()?;
            if let Some(r) = self.take(id) {
                return Ok(r);
            }
            self.idle(deadline)?;
        }
    }

    /// The session's wait limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Hashes request ids (sequential numbers this session made, never chosen by a peer) with one
/// multiplication, where the default SipHash costs more than the rest of a map lookup.
#[derive(Debug, Default, Clone, Copy)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// See [`IdHash`].
#[derive(Debug)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits the table looks at.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A value per request in flight, by request id. Ids are handed out in order, so this is a
/// window over consecutive ids (no hashing on the request path); replies may come in any order.
#[derive(Debug, Default)]
struct InFlight {
    /// The id of `slots[0]`.
    base: u64,
    /// `None` once taken.
    slots: std::collections::VecDeque<Option<u64>>,
}

impl InFlight {
    /// Whether no request is in flight.
    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Records `value` for `id`, an id above every one pushed before (ids of requests that were
    /// never sent leave gaps).
    fn push(&mut self, id: u64, value: u64) {
        if self.slots.is_empty() {
            self.base = id;
        }
        while self.base + (self.slots.len() as u64) < id {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(value));
    }

    /// Takes the value of `id`; 0 for an id not in flight.
    fn take(&mut self, id: u64) -> u64 {
        let value = id
            .checked_sub(self.base)
            .and_then(|i| self.slots.get_mut(usize::try_from(i).ok()?))
            .and_then(Option::take)
            .unwrap_or(0);
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        value
    }
}

/// Waits for the reply to one request of a session shared by many tasks.
struct ReplyFuture<'s> {
    session: &'s RefCell<Session>,
    id: u64,
}

impl Future for ReplyFuture<'_> {
    type Output = Result<Response, FnError>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.session.borrow_mut();
        if let Some(r) = s.take(self.id) {
            return Poll::Ready(Ok(r));
        }
        match s.failure() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}

/// Sends `message` on the shared session and waits (as a future) for its reply.
pub async fn request(
    session: &RefCell<Session>,
    message: &Message<'_>,
) -> Result<Response, FnError> {
    let id = session.borrow_mut().send(message)?;
    ReplyFuture { session, id }.await
}

/// What a compute-side store sent for one invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCost {
    /// Store accesses (reads and writes).
    pub accesses: u64,
    /// Requests sent: round trips.
    pub requests: u64,
    /// Keys read.
    pub keys: u64,
    /// Bytes of the requests and their replies.
    pub bytes: u64,
}

impl std::ops::Add for StoreCost {
    type Output = StoreCost;
    fn add(self, o: StoreCost) -> StoreCost {
        StoreCost {
            accesses: self.accesses + o.accesses,
            requests: self.requests + o.requests,
            keys: self.keys + o.keys,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// The compute-side `Store` over a data-plane session: one request per read (a `Get` for one
/// key, a `MultiGet` for several), each a suspension point. It counts what its invocation sent.
#[derive(Debug)]
pub struct LinkStore<'s> {
    session: &'s RefCell<Session>,
    per_key: bool,
    /// Store accesses (reads and writes).
    pub accesses: Cell<u64>,
    /// Requests sent: round trips (a per-key read is one per key).
    pub requests: Cell<u64>,
    /// Keys read.
    pub keys: Cell<u64>,
    /// Bytes of the requests and their replies.
    pub bytes: Cell<u64>,
    /// Writes made so far, sent together by [`LinkStore::commit`] (one atomic `MultiSet`) when
    /// the function succeeds; later reads of the invocation see them.
    writes: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl<'s> LinkStore<'s> {
    /// A store over `session`.
    pub fn new(session: &'s RefCell<Session>) -> Self {
        LinkStore {
            session,
            per_key: false,
            accesses: Cell::new(0),
            requests: Cell::new(0),
            keys: Cell::new(0),
            bytes: Cell::new(0),
            writes: RefCell::new(Vec::new()),
        }
    }

    /// What it sent so far.
    pub fn cost(&self) -> StoreCost {
        StoreCost {
            accesses: self.accesses.get(),
            requests: self.requests.get(),
            keys: self.keys.get(),
            bytes: self.bytes.get(),
        }
    }

    /// Sends the invocation's writes in one atomic step: all of them are applied, or none.
    pub async fn commit(&self) -> Result<(), FnError> {
        let writes = self.writes.take();
        if writes.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(&[u8], &[u8])> = writes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        self.accesses.set(self.accesses.get() + 1);
        match self
            .request(&Message::MultiSet {
                pairs: List::new(&pairs),
            })
            .await?
        {
            Reply::Ok => Ok(()),
            other => Err(other.into_error("MultiSet")),
        }
    }

    /// Reads one key per request, one after another (what AutoLoc's redisclient did).
    pub fn per_key(mut self, per_key: bool) -> Self {
        self.per_key = per_key;
        self
    }

    async fn request(&self, message: &Message<'_>) -> Result<Reply, FnError> {
        self.requests.set(self.requests.get() + 1);
        let r = request(self.session, message).await?;
        self.bytes.set(self.bytes.get() + r.bytes);
        Ok(r.reply)
    }

    /// One key per `Get`. Every value is fetched before any is visited, so an error of the read
    /// rule (`WRONGTYPE`) wins over what the function would make of an earlier value, as it
    /// does when the whole read is one request.
    async fn read_per_key(&self, keys: &[Vec<u8>], visit: Visit<'_>) -> Result<(), FnError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            match self.request(&Message::Get { key }).await? {
                Reply::Value(v) => values.push(v),
                other => return Err(other.into_error("Get")),
            }
        }
        for (i, v) in values.iter().enumerate() {
            visit(i, v.as_deref())?;
        }
        Ok(())
    }

    /// All keys in one `MultiGet`; a request or reply over the link's limit is read in halves.
    fn read_many<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let reply = match self
                .request(&Message::MultiGet {
                    keys: List::new(&slices),
                })
                .await
            {
                Err(e) if e.code() == ErrorCode::TooLarge => Reply::Error(e),
                other => other?,
            };
            match reply {
                Reply::Values(values) if values.len() == keys.len() => {
                    for (i, v) in values.iter().enumerate() {
                        visit(i, v.as_deref())?;
                    }
                    Ok(())
                }
                Reply::Error(e) if e.code() == ErrorCode::TooLarge && keys.len() > 1 => {
                    let (a, b) = keys.split_at(keys.len() / 2);
                    self.read_many(a, &mut *visit).await?;
                    self.read_many(b, &mut |i, v| visit(a.len() + i, v)).await
                }
                Reply::Values(values) => Err(FnError::Malformed(format!(
                    "{} values for {} keys",
                    values.len(),
                    keys.len()
                ))),
                other => Err(other.into_error("MultiGet")),
            }
        })
    }
}

impl Store for LinkStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            self.accesses.set(self.accesses.get() + 1);
            self.keys.set(self.keys.get() + keys.len() as u64);
            // The invocation's own writes, not sent yet, read as written.
            let writes = &self.writes;
            let mut visit = |i: usize, v: Option<&[u8]>| {
                let writes = writes.borrow();
                match writes.iter().rev().find(|(k, _)| *k == keys[i]) {
                    Some((_, written)) => visit(i, Some(written)),
                    None => visit(i, v),
                }
            };
            match keys {
                [key] => match self.request(&Message::Get { key }).await? {
                    Reply::Value(v) => visit(0, v.as_deref()),
                    other => Err(other.into_error("Get")),
                },
                _ if self.per_key => self.read_per_key(keys, &mut visit).await,
                _ => self.read_many(keys, &mut visit).await,
            }
        })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.writes
                .borrow_mut()
                .push((key.to_vec(), value.to_vec()));
            Ok(())
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// With several sessions, idle rounds [`run_all_timed`] only yields the core in (as a link's own
/// wait does, [`autoloc_dataplane::backoff::DEFAULT_YIELDS`]; 64 made social k=2 on 3 shards
/// 9,500-10,700/s where this makes 10,600-12,000)...
const MULTI_YIELDS: u32 = 2_000;
/// ...before it sleeps this long, and up to 8 times longer as the idle rounds go on (links
/// without a doorbell)...
const MULTI_NAP: Duration = Duration::from_micros(20);
/// ...or parks on every link's doorbell at once, this long at most.
const MULTI_PARK: Duration = Duration::from_millis(1);

/// A task for [`run_all`].
pub type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Polls every task until all are done, pumping `session` between rounds: the requests of all
/// tasks that are waiting leave in one burst. A task whose reply does not come within the
/// session's timeout fails (its reads fail, and it finishes with that error).
pub fn run_all<'a, T>(session: &RefCell<Session>, tasks: Vec<Task<'a, T>>) -> Vec<T> {
    run_all_timed(&[session], tasks).0
}

/// Polls `futures` together until all are done: inside a task of [`run_all`], requests to
/// several shards in flight at once.
pub async fn join_all<'a, T>(futures: Vec<Task<'a, T>>) -> Vec<T> {
    let mut futures: Vec<Option<Task<'a, T>>> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = (0..futures.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

/// [`run_all`], also returning the compute-node time each task took, ns: the time spent polling
/// it (running the function, encoding its requests, decoding its replies), plus an even part of
/// each pump (moving the burst of requests and replies) among the tasks still running then.
/// Time spent waiting for replies is nobody's: it is idle time, not work (a spinning wait burns
/// CPU only because nothing else is runnable). The clock is the thread's CPU clock, not the wall
/// clock: with more compute threads than cores, a poll's wall time also holds the time the thread
/// was preempted, which made a digest look 2.8 times dearer compute-side than it was with three
/// threads on one core (`bench-placement --topology netns`). A read of it is a system call (about
/// 250 ns here), so consecutive polls share one read between them.
///
/// With several sessions (one per shard of a cluster), each is pumped in turn, and the wait for
/// replies is shared among the sessions with requests in flight.
pub fn run_all_timed<'a, T>(
    sessions: &[&RefCell<Session>],
    tasks: Vec<Task<'a, T>>,
) -> (Vec<T>, Vec<u64>) {
    let mut tasks: Vec<Option<Task<'a, T>>> = tasks.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = (0..tasks.len()).map(|_| None).collect();
    let mut busy = vec![0u64; tasks.len()];
    let mut cx = Context::from_waker(Waker::noop());
    let mut left = tasks.len();
    let timeout = sessions
        .iter()
        .map(|s| s.borrow().timeout())
        .max()
        .unwrap_or_default();
    let mut deadline = Instant::now() + timeout;
    let mut idle_rounds = 0u32;
    while left > 0 {
        let mut clock = thread_cpu_ns();
        for ((slot, out), spent) in tasks.iter_mut().zip(results.iter_mut()).zip(&mut busy) {
            if let Some(task) = slot {
                let poll = task.as_mut().poll(&mut cx);
                let now = thread_cpu_ns();
                *spent += now.saturating_sub(clock);
                clock = now;
                if let Poll::Ready(v) = poll {
                    *out = Some(v);
                    *slot = None;
                    left -= 1;
                }
            }
        }
        if left == 0 {
            break;
        }
        // Every session's requests leave before any reply is waited for (a RESP link's poll
        // reads its replies, blocking): the shards work on them at once.
        if sessions.len() > 1 {
            for session in sessions {
                session.borrow_mut().flush();
            }
        }
        let mut arrived = 0;
        for session in sessions {
            arrived += session.borrow_mut().pump().unwrap_or(0);
        }
        if arrived > 0 {
            idle_rounds = 0;
            let share = thread_cpu_ns().saturating_sub(clock) / left as u64;
            for (slot, spent) in tasks.iter().zip(&mut busy) {
                if slot.is_some() {
                    *spent += share;
                }
            }
            deadline = Instant::now() + timeout;
            continue;
        }
        // Nothing arrived: back off, or fail every waiting read past the deadline (the tasks
        // then see the failure on their next poll).
        let waiting: Vec<&RefCell<Session>> = sessions
            .iter()
            .copied()
            .filter(|s| s.borrow().waiting())
            .collect();
        match (waiting.as_slice(), sessions.first()) {
            // One session to hear from: its link's own wait (spin, yield, park on its doorbell).
            ([one], _) | ([], Some(one)) => {
                let _ = one.borrow_mut().idle(deadline);
            }
            (several, _) => wait_several(several, deadline, &mut idle_rounds),
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every task finished"))
        .collect();
    (results, busy)
}

/// Waits for a reply on any of `several` sessions: parked on all their doorbells at once where
/// every link has one (after [`MULTI_YIELDS`] idle rounds of yielding), else polled, sleeping a
/// little longer each idle round. A link's own wait would park on its doorbell through replies
/// arriving on the others.
fn wait_several(several: &[&RefCell<Session>], deadline: Instant, idle_rounds: &mut u32) {
    for session in several {
        let _ = session.borrow_mut().past(deadline);
    }
    if *idle_rounds >= MULTI_YIELDS {
        let guards: Vec<_> = several.iter().map(|s| s.borrow()).collect();
        let bells: Vec<_> = guards.iter().filter_map(|s| s.link.doorbell()).collect();
        if bells.len() == guards.len() {
            autoloc_dataplane::backoff::wait_any(
                &bells,
                || !guards.iter().any(|s| s.link.reply_pending()),
                MULTI_PARK,
            );
            return;
        }
    }
    *idle_rounds += 1;
    if *idle_rounds < MULTI_YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(MULTI_NAP * (*idle_rounds - MULTI_YIELDS + 1).min(8));
    }
}

/// A store that answers from a read set handed back by a pushback (ASFP) and asks `inner` only
/// for the keys not in it, so a pushed-back invocation fetches nothing twice.
pub struct ReadSetStore<S> {
    /// The read set, and the invocation's own writes since (so a later read sees them).
    cache: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    inner: S,
    /// Keys served from the read set.
    pub hits: std::cell::Cell<u64>,
}

impl<S> std::fmt::Debug for ReadSetStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSetStore")
            .field("cached", &self.cache.borrow().len())
            .field("hits", &self.hits.get())
            .finish()
    }
}

impl<S: Store> ReadSetStore<S> {
    /// A store over `inner` that knows `read_set` already.
    pub fn new(read_set: Vec<(Vec<u8>, Option<Vec<u8>>)>, inner: S) -> Self {
        ReadSetStore {
            cache: RefCell::new(read_set.into_iter().collect()),
            inner,
            hits: std::cell::Cell::new(0),
        }
    }

    /// The store it asks for the rest.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for ReadSetStore<S> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let missing: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| !self.cache.borrow().contains_key(*k))
                .cloned()
                .collect();
            let mut fetched: Vec<Option<Vec<u8>>> = Vec::with_capacity(missing.len());
            if !missing.is_empty() {
                self.inner
                    .read(&missing, &mut |_, v| {
                        fetched.push(v.map(<[u8]>::to_vec));
                        Ok(())
                    })
                    .await?;
            }
            let mut fetched = fetched.into_iter();
            let cache = self.cache.borrow();
            for (i, k) in keys.iter().enumerate() {
                match cache.get(k) {
                    Some(v) => {
                        self.hits.set(self.hits.get() + 1);
                        visit(i, v.as_deref())?
                    }
                    None => visit(i, fetched.next().flatten().as_deref())?,
                }
            }
            Ok(())
        })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        self.cache
            .borrow_mut()
            .insert(key.to_vec(), Some(value.to_vec()));
        self.inner.write(key, value)
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        self.inner.checkpoint()
    }

    fn principal(&self) -> &str {
        self.inner.principal()
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn in_flight_takes_by_id_in_any_order() {
        let mut f = InFlight::default();
        for id in 5..10 {
            f.push(id, id * 10);
        }
        assert_eq!(f.take(7), 70);
        assert_eq!(f.take(7), 0, "taken once");
        assert_eq!(f.take(5), 50);
        assert_eq!(f.take(6), 60);
        assert_eq!(f.slots.len(), 2, "the taken front is dropped");
        assert_eq!(f.take(4), 0);
        assert_eq!(f.take(99), 0);
        f.push(10, 100);
        assert_eq!((f.take(9), f.take(8), f.take(10)), (90, 80, 100));
        assert!(f.slots.is_empty());
        f.push(11, 110);
        assert_eq!(f.take(11), 110);
        // A request that failed to send leaves a gap.
        f.push(12, 120);
        f.push(14, 140);
        assert_eq!((f.take(14), f.take(12)), (140, 120));
        assert!(f.slots.is_empty());
    }
}
