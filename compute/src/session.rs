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

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use autoloc_dataplane::link::ClientLink;
use autoloc_dataplane::wire::{InvokeCost, List, Message};
use autoloc_functions::{Error as FnError, Store, StoreFuture, Visit};

/// The code of a reply (or request) too large for the link: the caller splits the request or
/// falls back to RESP. It never fails the session.
pub const TOO_LARGE: &str = "TOOLARGE";

/// Whether `e` says a message was too large for the link.
pub fn is_too_large(e: &FnError) -> bool {
    matches!(e, FnError::Store(m) if m.starts_with(TOO_LARGE))
}

/// A reply, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To `Get`.
    Value(Option<Vec<u8>>),
    /// To `MultiGet`.
    Values(Vec<Option<Vec<u8>>>),
    /// To `Set`.
    Ok,
    /// To `Invoke`: the RESP-encoded result and what it cost storage-side.
    Invoked { result: Vec<u8>, cost: InvokeCost },
    /// To `Invoke`: declined by the storage side, with what it had read.
    Pushback {
        read_set: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        storage_cpu_ns: u64,
        queue_ns: u64,
    },
    /// A failure, `CODE message`.
    Error(String),
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
                storage_cpu_ns,
                queue_ns,
            } => Reply::Pushback {
                read_set: read_set.iter().map(|(k, v)| (k.to_vec(), own(v))).collect(),
                storage_cpu_ns,
                queue_ns,
            },
            Message::Error { code, message } => Reply::Error(format!("{code} {message}")),
            ref other => Reply::Error(format!("ERR unexpected {:?} from the server", other.kind())),
        }
    }
}

/// One data-plane link with request ids and a deadline on every wait.
pub struct Session {
    link: Box<dyn ClientLink>,
    next_id: u64,
    replies: HashMap<u64, Reply>,
    /// Set once the link failed: every wait then fails with it.
    failed: Option<String>,
    timeout: Duration,
    round_trips: u64,
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
            replies: HashMap::new(),
            failed: None,
            timeout,
            round_trips: 0,
        }
    }

    /// Whether the link has failed (the session should be replaced).
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Requests sent so far (each is one round trip).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Queues `message`; returns its request id.
    pub fn send(&mut self, message: &Message<'_>) -> Result<u64, FnError> {
        if let Some(f) = &self.failed {
            return Err(FnError::Store(f.clone()));
        }
        let len = message
            .frame_len()
            .map_err(|e| FnError::Store(format!("encode: {e}")))?;
        let max = self.link.max_frame();
        if len > max {
            return Err(FnError::Store(format!(
                "{TOO_LARGE} request of {len} bytes exceeds the link's {max}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.link.queue(id, message) {
                Ok(()) => break,
                Err(autoloc_dataplane::Error::Ring(autoloc_dataplane::ring::RingError::Full)) => {
                    // No room for the request: send what is queued and drain replies meanwhile.
                    self.pump()?;
                    self.idle(deadline)?;
                }
                Err(e) => return Err(self.fail(format!("send: {e}"))),
            }
        }
        self.round_trips += 1;
        Ok(id)
    }

    fn fail(&mut self, why: String) -> FnError {
        self.failed.get_or_insert(why);
        FnError::Store(self.failed.clone().unwrap_or_default())
    }

    /// Sends what is queued and collects what has arrived; returns how many replies arrived.
    pub fn pump(&mut self) -> Result<usize, FnError> {
        if let Some(f) = &self.failed {
            return Err(FnError::Store(f.clone()));
        }
        if let Err(e) = self.link.flush() {
            return Err(self.fail(format!("flush: {e}")));
        }
        let replies = &mut self.replies;
        match self.link.poll(&mut |frame| {
            replies.insert(frame.request_id, Reply::from_message(&frame.message));
        }) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(format!("receive: {e}"))),
        }
    }

    /// Waits a little for replies (the link's backoff), failing the session past `deadline`.
    pub fn idle(&mut self, deadline: Instant) -> Result<(), FnError> {
        if Instant::now() > deadline {
            return Err(self.fail(format!("no reply within {:?}", self.timeout)));
        }
        if let Err(e) = self.link.wait(Duration::from_millis(1)) {
            return Err(self.fail(format!("wait: {e}")));
        }
        Ok(())
    }

    /// Takes the reply to `id`, if it has arrived.
    pub fn take(&mut self, id: u64) -> Option<Reply> {
        self.replies.remove(&id)
    }

    /// Sends `message` and waits for its reply.
    pub fn call(&mut self, message: &Message<'_>) -> Result<Reply, FnError> {
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

/// Waits for the reply to one request of a session shared by many tasks.
struct ReplyFuture<'s> {
    session: &'s RefCell<Session>,
    id: u64,
}

impl Future for ReplyFuture<'_> {
    type Output = Result<Reply, FnError>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.session.borrow_mut();
        if let Some(r) = s.take(self.id) {
            return Poll::Ready(Ok(r));
        }
        match s.failed() {
            Some(f) => Poll::Ready(Err(FnError::Store(f.to_string()))),
            None => Poll::Pending,
        }
    }
}

/// Sends `message` on the shared session and waits (as a future) for its reply.
pub async fn request(session: &RefCell<Session>, message: &Message<'_>) -> Result<Reply, FnError> {
    let id = session.borrow_mut().send(message)?;
    ReplyFuture { session, id }.await
}

/// Turns an error reply into the error it stands for.
pub fn reply_error(reply: Reply) -> FnError {
    match reply {
        Reply::Error(e) => FnError::from_wire(&e),
        other => FnError::Store(format!("unexpected reply {other:?}")),
    }
}

/// The compute-side `Store` over a data-plane session: one request per read (a `Get` for one
/// key, a `MultiGet` for several), each a suspension point.
#[derive(Debug)]
pub struct LinkStore<'s> {
    session: &'s RefCell<Session>,
    per_key: bool,
}

impl<'s> LinkStore<'s> {
    /// A store over `session`.
    pub fn new(session: &'s RefCell<Session>) -> Self {
        LinkStore {
            session,
            per_key: false,
        }
    }

    /// Reads one key per request, one after another (what AutoLoc's redisclient did).
    pub fn per_key(mut self, per_key: bool) -> Self {
        self.per_key = per_key;
        self
    }
}

impl Store for LinkStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.per_key && keys.len() > 1 {
                for (i, key) in keys.iter().enumerate() {
                    match request(self.session, &Message::Get { key }).await? {
                        Reply::Value(v) => visit(i, v.as_deref())?,
                        other => return Err(reply_error(other)),
                    }
                }
                return Ok(());
            }
            match keys {
                [] => Ok(()),
                [key] => match request(self.session, &Message::Get { key }).await? {
                    Reply::Value(v) => visit(0, v.as_deref()),
                    other => Err(reply_error(other)),
                },
                _ => {
                    let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                    let reply = match request(
                        self.session,
                        &Message::MultiGet {
                            keys: List::new(&slices),
                        },
                    )
                    .await
                    {
                        Err(e) if is_too_large(&e) => Reply::Error(e.to_string()),
                        other => other?,
                    };
                    match reply {
                        Reply::Values(values) if values.len() == keys.len() => {
                            for (i, v) in values.iter().enumerate() {
                                visit(i, v.as_deref())?;
                            }
                            Ok(())
                        }
                        // Too large for one frame: read each half on its own.
                        Reply::Error(e) if e.starts_with(TOO_LARGE) => {
                            let (a, b) = keys.split_at(keys.len() / 2);
                            self.read(a, &mut *visit).await?;
                            self.read(b, &mut |i, v| visit(a.len() + i, v)).await
                        }
                        Reply::Values(values) => Err(FnError::Store(format!(
                            "{} values for {} keys",
                            values.len(),
                            keys.len()
                        ))),
                        other => Err(reply_error(other)),
                    }
                }
            }
        })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match request(self.session, &Message::Set { key, value }).await? {
                Reply::Ok => Ok(()),
                other => Err(reply_error(other)),
            }
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A task for [`run_all`].
pub type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Polls every task until all are done, pumping `session` between rounds: the requests of all
/// tasks that are waiting leave in one burst. A task whose reply does not come within the
/// session's timeout fails (its reads fail, and it finishes with that error).
pub fn run_all<'a, T>(session: &RefCell<Session>, tasks: Vec<Task<'a, T>>) -> Vec<T> {
    run_all_timed(session, tasks).0
}

/// [`run_all`], also returning the compute-node time each task took, ns: the time spent polling
/// it (running the function, encoding its requests, decoding its replies), plus an even part of
/// each pump (moving the burst of requests and replies) among the tasks still running then.
/// Time spent waiting for replies is nobody's: it is idle time, not work (a spinning wait burns
/// CPU only because nothing else is runnable). Wall time inside a poll stands for CPU time: a
/// poll never blocks, and a thread CPU clock costs a system call per read.
pub fn run_all_timed<'a, T>(
    session: &RefCell<Session>,
    tasks: Vec<Task<'a, T>>,
) -> (Vec<T>, Vec<u64>) {
    let mut tasks: Vec<Option<Task<'a, T>>> = tasks.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = (0..tasks.len()).map(|_| None).collect();
    let mut busy = vec![0u64; tasks.len()];
    let mut cx = Context::from_waker(Waker::noop());
    let mut left = tasks.len();
    let mut deadline = Instant::now() + session.borrow().timeout();
    while left > 0 {
        for ((slot, out), spent) in tasks.iter_mut().zip(results.iter_mut()).zip(&mut busy) {
            if let Some(task) = slot {
                let started = Instant::now();
                let poll = task.as_mut().poll(&mut cx);
                *spent += started.elapsed().as_nanos() as u64;
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
        let mut s = session.borrow_mut();
        let started = Instant::now();
        match s.pump() {
            Ok(0) => {
                // Nothing arrived: back off, or fail every waiting read past the deadline (the
                // tasks then see the failure on their next poll).
                let _ = s.idle(deadline);
            }
            Ok(_) => {
                let share = started.elapsed().as_nanos() as u64 / left as u64;
                for (slot, spent) in tasks.iter().zip(&mut busy) {
                    if slot.is_some() {
                        *spent += share;
                    }
                }
                deadline = Instant::now() + s.timeout();
            }
            Err(_) => {}
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every task finished"))
        .collect();
    (results, busy)
}

/// A store that answers from a read set handed back by a pushback (ASFP) and asks `inner` only
/// for the keys not in it, so a pushed-back invocation fetches nothing twice.
pub struct ReadSetStore<S> {
    cache: HashMap<Vec<u8>, Option<Vec<u8>>>,
    inner: S,
    /// Keys served from the read set.
    pub hits: std::cell::Cell<u64>,
}

impl<S> std::fmt::Debug for ReadSetStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSetStore")
            .field("cached", &self.cache.len())
            .field("hits", &self.hits.get())
            .finish()
    }
}

impl<S: Store> ReadSetStore<S> {
    /// A store over `inner` that knows `read_set` already.
    pub fn new(read_set: Vec<(Vec<u8>, Option<Vec<u8>>)>, inner: S) -> Self {
        ReadSetStore {
            cache: read_set.into_iter().collect(),
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
                .filter(|k| !self.cache.contains_key(*k))
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
            for (i, k) in keys.iter().enumerate() {
                match self.cache.get(k) {
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
        self.inner.write(key, value)
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        self.inner.checkpoint()
    }
}
