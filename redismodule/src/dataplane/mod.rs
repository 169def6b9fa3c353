//! The module's data-plane threads: they poll the fast links (shm rings, the io_uring TCP
//! server, RDMA queue pairs), serve each burst of requests under one acquisition of Redis's
//! lock, and back off when idle.
//!
//! Threads start at the first `AUTOLOC.CONNECT`, one per core of the `cores` module argument
//! (pinned), or one unpinned thread. A new link goes to the thread with the fewest links.
//!
//! The loop of one thread:
//! 1. take new links from its inbox;
//! 2. if a deferred command ([`defer`]) or any link has a request waiting: note the time, take
//!    Redis's lock, run the deferred commands, then serve bursts of up to [`BURST`] requests
//!    link by link until none is waiting or the lock has been held for `lock-us`, release it
//!    (and yield if the bound was hit, so Redis's main thread gets it). A long invocation gives
//!    the lock back every `lock-us` while it runs, and a write is acknowledged once it is in the
//!    AOF ([`crate::lock::Hold`]);
//! 3. else back off: spin, then yield, then park (on the link's own doorbell or io_uring when it
//!    serves one link, else naps growing from 250 us to 4 ms), so an idle server burns almost
//!    no CPU; the price is up to one nap of latency for the first request after a long idle;
//! 4. every 100 ms, drop links whose peer is gone (their segment is unmapped and removed) or
//!    that were never attached.
//!
//! Serving one request (a read, a write, an invocation) is [`serve`]'s business.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use autoloc_dataplane::link::ServerLink;
use autoloc_dataplane::secret::Secret;
use autoloc_dataplane::shm::{PeerState, ShmConfig, ShmServer};
use autoloc_dataplane::tcp::TcpServer;
use redis_module::{BlockedClient, Context, RedisError, RedisResult, ThreadSafeContext};

use crate::acl::{self, Caller, LockScope, Standing};
use crate::invoke::{self, Request, Thread};
use crate::lock::{Hold, ThreadContext};

mod serve;
mod stats;

use stats::STATS;
pub use stats::{stats, Stats};

/// Requests taken from one link per serve call.
pub const BURST: usize = 32;
/// Empty polls spent spinning before yielding (a few microseconds), then yielding before
/// parking (a millisecond or two). A yield gives the core to a thread that is ready and returns
/// at once when none is, so polling by yields costs the serving thread nothing when cores are
/// free and takes nothing from others when they are not: on a machine with fewer cores than busy
/// threads (3 shards of a cluster and their client on 2 cores), spinning idle shards took the
/// cores from the one serving. `bench-cluster --shards 1,3 --ks 2 --scale 12` (social k=2,
/// storage per hop), and `bench-dataplane`'s shm rows alike:
///
/// | spins / yields | 3 shards | 1 shard | shm get p50 |
/// |---|---|---|---|
/// | 20,000 / 200 (first) | 540 us per round trip | | |
/// | 2,000 / 20 | 4,427/s | 15,090/s | 0.81 us |
/// | 200 / 2,000 | 7,026/s | 14,575/s | 0.73 us |
const SPINS: u32 = 200;
/// Empty polls spent yielding before parking.
const YIELDS: u32 = 2_000;
/// Longest park.
const PARK: Duration = Duration::from_millis(2);
/// First and longest sleep of an idle thread that serves several links: it cannot wait on all
/// their doorbells at once, so it naps, longer the longer it stays idle.
const NAP_MIN: Duration = Duration::from_micros(250);
const NAP_MAX: Duration = Duration::from_millis(4);
/// How long a new shm segment may wait for its client to attach.
const ATTACH_DEADLINE: Duration = Duration::from_secs(10);

/// How busy a data-plane thread is: the share of the last window it held Redis's lock. Above
/// [`OVERLOAD`], invocations run with the short overload budget, so costly ones are pushed back
/// to their callers with their read sets (ASFP) while cheap ones keep running inside.
#[derive(Debug)]
struct Load {
    window_start: Instant,
    busy: Duration,
    overloaded: bool,
}

/// Busy fraction above which a data-plane thread counts as overloaded.
const OVERLOAD: f64 = 0.9;
/// Length of the window the busy fraction is measured over.
const LOAD_WINDOW: Duration = Duration::from_millis(100);

impl Default for Load {
    fn default() -> Self {
        Load {
            window_start: Instant::now(),
            busy: Duration::ZERO,
            overloaded: false,
        }
    }
}

impl Load {
    fn busy(&mut self, d: Duration) {
        self.busy += d;
    }

    fn tick(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= LOAD_WINDOW {
            let frac = self.busy.as_secs_f64() / elapsed.as_secs_f64();
            self.overloaded = frac > OVERLOAD;
            STATS.busy_permille.store((frac * 1000.0) as u64, Relaxed);
            self.window_start = now;
            self.busy = Duration::ZERO;
        }
    }
}

/// An `AUTOLOC.CALL` or `AUTOLOC.INVOKE` that ran past `lock-us` on Redis's main thread: its
/// client is blocked until a data-plane thread has run it again and answered.
pub struct Deferred {
    /// The blocked client, answered and unblocked when the run ends (or with an error if the
    /// command is dropped unanswered: a client never stays blocked).
    pub client: Option<BlockedClient>,
    /// Its ACL user and database.
    pub caller: Caller,
    /// The function and its arguments.
    pub function: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    /// Whether to answer as `AUTOLOC.INVOKE` (a wire frame) rather than `AUTOLOC.CALL`.
    pub frame: bool,
    /// When it was deferred.
    pub seen: Instant,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("caller", &self.caller)
            .field("function", &String::from_utf8_lossy(&self.function))
            .field("frame", &self.frame)
            .finish_non_exhaustive()
    }
}

/// What a data-plane thread shares with the threads that hand it work.
#[derive(Default)]
struct Inbox {
    /// New links.
    links: Mutex<Vec<Entry>>,
    /// Deferred commands to run.
    deferred: Mutex<Vec<Deferred>>,
    /// Set after anything is put in either: the thread looks at them only then, so a polling
    /// turn costs no lock.
    news: std::sync::atomic::AtomicBool,
    /// Set if the thread stopped (it panicked): it is handed nothing more.
    dead: std::sync::atomic::AtomicBool,
    /// Links it serves.
    count: AtomicU64,
}

impl Inbox {
    fn put_link(&self, e: Entry) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        self.news.store(true, std::sync::atomic::Ordering::Release);
    }

    fn put_deferred(&self, d: Deferred) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d);
        self.news.store(true, std::sync::atomic::Ordering::Release);
    }

    fn deferred_waiting(&self) -> usize {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

struct Worker {
    inbox: Arc<Inbox>,
    thread: std::thread::Thread,
}

/// One link of a thread, and whom it serves. Shared-memory links stay concrete so their segment
/// can be unlinked once the client has mapped it, and reclaimed if no client ever does.
struct Entry {
    link: Link,
    /// The ACL user and database of the client that opened it (shm, rdma); `None` for the TCP
    /// server, whose connections each authenticate ([`tcp_caller`]).
    caller: Option<Caller>,
}

enum Link {
    Shm {
        // Boxed: a segment's link state (fragment outbox, reassembly) is large.
        server: Box<ShmServer>,
        opened: Instant,
        unlinked: bool,
    },
    /// The TCP server: every TCP connection, each authenticated on its own.
    Tcp(Box<TcpServer>),
    /// Any other link (RDMA, with the `rdma` feature).
    #[cfg_attr(not(feature = "rdma"), allow(dead_code))]
    Other(Box<dyn ServerLink>),
}

impl Link {
    fn server(&mut self) -> &mut dyn ServerLink {
        match self {
            Link::Shm { server, .. } => server.as_mut(),
            Link::Tcp(server) => server.as_mut(),
            Link::Other(l) => l.as_mut(),
        }
    }
}

impl Entry {
    /// The doorbell its client rings when this thread sleeps on it (shared memory only).
    fn doorbell(&self) -> Option<&autoloc_dataplane::backoff::Doorbell> {
        match &self.link {
            Link::Shm { server, .. } => Some(server.receive_doorbell()),
            _ => None,
        }
    }

    fn has_pending(&self) -> bool {
        match &self.link {
            Link::Shm { server, .. } => server.has_pending(),
            Link::Tcp(server) => server.has_pending(),
            Link::Other(l) => l.has_pending(),
        }
    }
}

/// How long a secret handed out by `AUTOLOC.CONNECT tcp` may wait for its connection.
const TOKEN_TTL: Duration = Duration::from_secs(10);

/// The secrets handed out and not used yet, and the callers of authenticated TCP connections.
#[derive(Default)]
struct TcpIdentities {
    tokens: std::collections::HashMap<Vec<u8>, (Caller, Instant)>,
    peers: std::collections::HashMap<u64, Caller>,
    next_peer: u64,
}

static TCP_IDENTITIES: Mutex<Option<TcpIdentities>> = Mutex::new(None);

fn tcp_identities() -> std::sync::MutexGuard<'static, Option<TcpIdentities>> {
    TCP_IDENTITIES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The TCP server's authenticator: a secret is good once, for `TOKEN_TTL`; its connection then
/// serves the caller it was handed to.
fn authenticate(token: &[u8]) -> Option<u64> {
    let mut ids = tcp_identities();
    let ids = ids.get_or_insert_with(TcpIdentities::default);
    ids.tokens.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
    let (caller, _) = ids.tokens.remove(token)?;
    ids.next_peer += 1;
    let peer = ids.next_peer;
    ids.peers.insert(peer, caller);
    Some(peer)
}

/// The caller of the authenticated TCP connection `peer`.
fn tcp_caller(peer: u64) -> Option<Caller> {
    tcp_identities().as_ref()?.peers.get(&peer).cloned()
}

struct DataPlane {
    workers: Vec<Worker>,
    tcp_port: Mutex<Option<u16>>,
}

static DATAPLANE: OnceLock<DataPlane> = OnceLock::new();
/// Whether the data-plane threads have been started.
pub fn started() -> bool {
    DATAPLANE.get().is_some()
}

fn dataplane() -> &'static DataPlane {
    DATAPLANE.get_or_init(|| {
        let cfg = crate::config::get();
        let pins: Vec<Option<usize>> = if cfg.cores.is_empty() {
            vec![None]
        } else {
            cfg.cores.iter().map(|&c| Some(c)).collect()
        };
        let workers = pins
            .into_iter()
            .enumerate()
            .filter_map(|(i, core)| {
                let inbox = Arc::new(Inbox::default());
                let inbox2 = inbox.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("autoloc-dp{i}"))
                    .spawn(move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core_affinity::CoreId { id: core });
                        }
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&inbox2)));
                        // Stopped: take nothing more, and answer what was handed over (each
                        // deferred command answers its client with an error when dropped).
                        inbox2.dead.store(true, Relaxed);
                        drop(std::mem::take(
                            &mut *inbox2.deferred.lock().unwrap_or_else(|p| p.into_inner()),
                        ));
                    })
                    // A thread that cannot be started is left out; with none, CONNECT says so.
                    .ok()?;
                Some(Worker {
                    inbox,
                    thread: handle.thread().clone(),
                })
            })
            .collect();
        DataPlane {
            workers,
            tcp_port: Mutex::new(None),
        }
    })
}

fn hand_over(entry: Entry) -> Result<(), String> {
    let dp = dataplane();
    let Some(w) = dp
        .workers
        .iter()
        .filter(|w| !w.inbox.dead.load(Relaxed))
        .min_by_key(|w| w.inbox.count.load(Relaxed))
    else {
        return Err("no data-plane thread could be started".into());
    };
    w.inbox.count.fetch_add(1, Relaxed);
    STATS.links_opened.fetch_add(1, Relaxed);
    w.inbox.put_link(entry);
    w.thread.unpark();
    Ok(())
}

/// Hands a deferred command to the data-plane thread with the fewest deferred commands waiting
/// (starting the threads if need be). Without any thread, answers with an error.
pub fn defer(d: Deferred) {
    STATS.deferred.fetch_add(1, Relaxed);
    let dp = dataplane();
    let Some(w) = dp
        .workers
        .iter()
        .filter(|w| !w.inbox.dead.load(Relaxed))
        .min_by_key(|w| w.inbox.deferred_waiting())
    else {
        // Dropping it answers its client with an error.
        drop(d);
        return;
    };
    w.inbox.put_deferred(d);
    w.thread.unpark();
}

/// Answers a blocked client and unblocks it (the reply API needs no lock).
pub(crate) fn reply_blocked(client: BlockedClient, result: RedisResult) {
    let tsc = ThreadSafeContext::with_blocked_client(client);
    tsc.reply(result);
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            reply_blocked(
                client,
                Err(RedisError::Str(
                    "BUSY the data-plane thread that was to run this call stopped; nothing was written",
                )),
            );
        }
    }
}

/// Runs a deferred command under `hold` and answers its client; a panic becomes an error.
fn run_deferred(ctx: &Context, hold: &Hold, mut d: Deferred) {
    let Some(client) = d.client.take() else {
        return;
    };
    let Deferred {
        caller,
        function,
        args,
        frame,
        seen,
        ..
    } = &d;
    let (frame, seen) = (*frame, *seen);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve::select_db(ctx, caller.db).map_err(|e| invoke::error(&e))?;
        let req = Request {
            caller,
            seen,
            overloaded: false,
            keep_read_set: frame,
            on: Thread::DataPlane(hold),
            seeded: None,
        };
        let run = invoke::invoke(ctx, function, args, req);
        invoke::answer(ctx, caller, run, frame)
    }))
    .unwrap_or_else(|_| {
        Err(RedisError::Str(
            "ERR internal error (panic) in a deferred invocation",
        ))
    });
    reply_blocked(client, result);
}

/// `AUTOLOC.CONNECT shm`: a new segment for `caller`; returns the path it maps and the secret
/// it must present when it attaches (the segment serves no other process).
pub fn connect_shm(caller: Caller) -> Result<(String, String), String> {
    let server = ShmServer::create(&ShmConfig::default())
        .map_err(|e| format!("create shared segment: {e}"))?;
    let path = server.path().display().to_string();
    let secret = server.secret().to_hex();
    hand_over(Entry {
        link: Link::Shm {
            server: Box::new(server),
            opened: Instant::now(),
            unlinked: false,
        },
        caller: Some(caller),
    })?;
    Ok((path, secret))
}

/// `AUTOLOC.CONNECT tcp`: the port of the io_uring TCP data path (started on first use) and a
/// secret for `caller`: random, good for one connection, for 10 s. A connection is served only
/// once its first frame presents one; anything else is closed without a reply.
pub fn connect_tcp(caller: Caller) -> Result<(u16, Vec<u8>), String> {
    let token = Secret::random()
        .map_err(|e| e.to_string())?
        .to_hex()
        .into_bytes();
    {
        let mut ids = tcp_identities();
        let ids = ids.get_or_insert_with(TcpIdentities::default);
        ids.tokens.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        ids.tokens.insert(token.clone(), (caller, Instant::now()));
    }
    let dp = dataplane();
    let mut port = dp.tcp_port.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = *port {
        return Ok((p, token));
    }
    let cfg = crate::config::get();
    let server = TcpServer::bind((cfg.tcp_bind.as_str(), cfg.tcp_port))
        .map_err(|e| format!("start the TCP data path: {e}"))?
        .with_authenticator(Box::new(authenticate))
        .with_revocation(Box::new(|peer| tcp_caller(peer).is_none()));
    let p = server.local_addr().port();
    hand_over(Entry {
        link: Link::Tcp(Box::new(server)),
        caller: None,
    })?;
    *port = Some(p);
    Ok((p, token))
}

/// `AUTOLOC.CONNECT rdma <client QpInfo>`: a queue pair for one client; returns the server's.
#[cfg(feature = "rdma")]
pub fn connect_rdma(client: &[u8], caller: Caller) -> Result<String, String> {
    use autoloc_dataplane::rdma::{DeviceConfig, QpInfo, RdmaDevice, RdmaServerConn, ServerLimits};
    static DEVICE: OnceLock<Result<RdmaDevice, String>> = OnceLock::new();
    let text =
        std::str::from_utf8(client).map_err(|_| "the client QpInfo is not text".to_string())?;
    let info = QpInfo::from_text(text).map_err(|e| format!("bad client QpInfo: {e}"))?;
    let dev = DEVICE
        .get_or_init(|| RdmaDevice::open(&DeviceConfig::from_env()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)?;
    let (conn, server) =
        RdmaServerConn::accept(dev, &info, &ServerLimits::default()).map_err(|e| e.to_string())?;
    hand_over(Entry {
        link: Link::Other(Box::new(conn)),
        caller: Some(caller),
    })?;
    Ok(server.to_text())
}

fn run(inbox: &Inbox) {
    let count = &inbox.count;
    let tsc = match ThreadContext::new() {
        Ok(t) => t,
        // Without a context this thread cannot serve; its links will find no server.
        Err(_) => return,
    };
    let mut links: Vec<Entry> = Vec::new();
    let mut waiting: std::collections::VecDeque<Deferred> = std::collections::VecDeque::new();
    // The keys a request opens, closed when it has been answered; reused for its room.
    let mut opened = Vec::new();
    let mut idle: u32 = 0;
    let mut last_reap = Instant::now();
    let mut load = Load::default();
    let mut now = Instant::now();
    loop {
        // One clock read per turn of the loop, shared by the load window and the reaper; one
        // every 64 turns while spinning idle; none after serving (the end of the hold was read).
        // A spinning turn is short, so that a request is seen soon after it arrives: no clock
        // arithmetic and no locked instruction unless something is new.
        let mut fresh = false;
        if idle > 0 && (idle.is_multiple_of(64) || idle >= SPINS) {
            now = Instant::now();
            load.tick(now);
            fresh = true;
        }
        if inbox.news.load(Relaxed) && inbox.news.swap(false, std::sync::atomic::Ordering::Acquire)
        {
            links.append(&mut inbox.links.lock().unwrap_or_else(|p| p.into_inner()));
            waiting.extend(
                inbox
                    .deferred
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain(..),
            );
        }
        if !waiting.is_empty() || links.iter().any(Entry::has_pending) {
            idle = 0;
            // When the work was seen and when the lock was taken: one clock read when the lock
            // is free, as it mostly is.
            let (guard, seen, taken) = match tsc.try_lock() {
                Some(guard) => {
                    let at = Instant::now();
                    (guard, at, at)
                }
                None => {
                    let seen = Instant::now();
                    let guard = tsc.lock();
                    (guard, seen, Instant::now())
                }
            };
            // Users looked up once per hold of the lock, released before it is.
            let acl_scope = LockScope::begin();
            STATS.lock_acquisitions.fetch_add(1, Relaxed);
            let bound = crate::config::get().lock_bound;
            // Timed from when the lock was taken: waiting for it does not use up the bound.
            let hold = Hold::new(&guard, bound, taken);
            let mut hit_bound = false;
            let mut broken = Vec::new();
            // One deferred command per hold (each ran past `lock-us` once already), then at
            // least one burst of a link: neither starves the other.
            if let Some(d) = waiting.pop_front() {
                run_deferred(&guard, &hold, d);
            }
            'burst: loop {
                let mut served = 0;
                for (i, e) in links.iter_mut().enumerate() {
                    if broken.contains(&i) {
                        continue;
                    }
                    let ctx: &Context = &guard;
                    let Entry { link, caller } = e;
                    let worked = link.server().serve(BURST, &mut |frame, out| {
                        let peer;
                        let who = match caller {
                            Some(c) => Some(&*c),
                            None => {
                                peer = out.peer().and_then(tcp_caller);
                                peer.as_ref()
                            }
                        };
                        let serving = serve::Serving {
                            ctx,
                            hold: &hold,
                            opened: &mut opened,
                            caller: who,
                            out,
                            seen,
                            overloaded: load.overloaded,
                        };
                        serve::handle(serving, frame)
                    });
                    // The burst's replies are published: close the keys its reads left open
                    // (the vector keeps its room).
                    opened.clear();
                    let worked = match worked {
                        Ok(n) => {
                            served += n;
                            STATS.requests.fetch_add(n as u64, Relaxed);
                            n > 0
                        }
                        // E.g. a client that stopped draining its replies: give the link up
                        // rather than wait for it while holding the lock.
                        Err(_) => {
                            broken.push(i);
                            true
                        }
                    };
                    // Only time spent serving can bring the bound nearer: no clock read after
                    // a link that had nothing.
                    if worked && hold.due() {
                        hit_bound = true;
                        break 'burst;
                    }
                }
                if served == 0 {
                    break;
                }
            }
            let given_back = hold.given_back();
            drop(acl_scope);
            drop(guard);
            now = Instant::now();
            load.busy(now.duration_since(seen).saturating_sub(given_back));
            load.tick(now);
            fresh = true;
            for i in broken.into_iter().rev() {
                drop(links.swap_remove(i));
                count.fetch_sub(1, Relaxed);
                STATS.links_closed.fetch_add(1, Relaxed);
            }
            // Each link is served first in turn, so one busy link cannot keep the others
            // waiting behind the bound.
            if links.len() > 1 {
                links.rotate_left(1);
            }
            if hit_bound {
                STATS.lock_bound_hits.fetch_add(1, Relaxed);
                crate::lock::let_main_in();
            }
        } else {
            idle = idle.saturating_add(1);
            if idle < SPINS {
                std::hint::spin_loop();
            } else if idle < SPINS + YIELDS {
                std::thread::yield_now();
            } else if links.len() == 1 {
                links[0].link.server().park(PARK);
            } else if links.is_empty() {
                std::thread::park_timeout(Duration::from_millis(100));
            } else {
                // Links of shared memory only: parked on all their doorbells at once, so the
                // first request on any of them wakes the thread (a compute node of a cluster
                // sends each shard a request per hop: a nap here was a millisecond per hop).
                let bells: Vec<&autoloc_dataplane::backoff::Doorbell> =
                    links.iter().filter_map(Entry::doorbell).collect();
                if bells.len() == links.len() {
                    autoloc_dataplane::backoff::wait_any(
                        &bells,
                        || !links.iter().any(Entry::has_pending),
                        PARK,
                    );
                } else {
                    let naps = idle - SPINS - YIELDS;
                    // Parked rather than asleep: a new link or a deferred command (both unpark
                    // the thread) ends the nap at once.
                    std::thread::park_timeout((NAP_MIN * (1 << naps.min(4))).min(NAP_MAX));
                }
            }
        }
        if fresh && now.duration_since(last_reap) > Duration::from_millis(100) {
            last_reap = now;
            let before = links.len();
            links.retain_mut(keep);
            forget_gone_users(&tsc, &mut links);
            let closed = (before - links.len()) as u64;
            count.fetch_sub(closed, Relaxed);
            STATS.links_closed.fetch_add(closed, Relaxed);
        }
    }
}

/// Closes the links of users deleted or disabled since they connected, forgets the TCP
/// connections of such users (their requests are then refused) and every guest instance kept
/// between calls, and notes which users may access every key ([`acl::refresh_standing`]).
fn forget_gone_users(tsc: &ThreadContext, links: &mut Vec<Entry>) {
    let tcp_users: Vec<Caller> = tcp_identities()
        .as_ref()
        .map(|ids| ids.peers.values().cloned().collect())
        .unwrap_or_default();
    if tcp_users.is_empty() && links.iter().all(|e| e.caller.is_none()) {
        return;
    }
    let guard = tsc.lock();
    let ctx: &Context = &guard;
    let mut verdicts: Vec<(std::sync::Arc<str>, Standing)> = Vec::new();
    let mut alive = |c: &Caller| {
        let s = match verdicts.iter().find(|(u, _)| *u == c.user) {
            Some((_, s)) => *s,
            None => {
                let s = c.standing(ctx);
                verdicts.push((c.user.clone(), s));
                s
            }
        };
        s != Standing::Gone
    };
    links.retain(|e| e.caller.as_ref().is_none_or(&mut alive));
    let gone: Vec<std::sync::Arc<str>> = tcp_users
        .iter()
        .filter(|c| !alive(c))
        .map(|c| c.user.clone())
        .collect();
    drop(guard);
    if verdicts.iter().any(|(_, s)| *s == Standing::Gone) {
        // A user created again under the same name must not get the old one's instances.
        autoloc_functions::wasm::forget_kept_instances();
    }
    acl::refresh_standing(&verdicts);
    if !gone.is_empty() {
        if let Some(ids) = tcp_identities().as_mut() {
            ids.peers.retain(|_, c| !gone.contains(&c.user));
        }
    }
}

/// Whether a link stays: not if its peer is gone, nor an shm segment no client attached to in
/// time. A segment's file is removed as soon as its client has mapped it, so nothing is left in
/// /dev/shm whoever crashes later.
fn keep(e: &mut Entry) -> bool {
    match &mut e.link {
        Link::Tcp(server) => {
            let rejected = server.stats().rejected_unauthenticated;
            STATS.tcp_rejected.store(rejected, Relaxed);
            // Forget the callers of connections that closed.
            let open: std::collections::HashSet<u64> = server.peers().collect();
            if let Some(ids) = tcp_identities().as_mut() {
                ids.peers.retain(|peer, _| open.contains(peer));
                STATS.tcp_identities.store(ids.peers.len() as u64, Relaxed);
            }
            !server.peer_gone()
        }
        Link::Other(l) => {
            // An RDMA client that died is found only by writing to it.
            l.probe_peer();
            !l.peer_gone()
        }
        Link::Shm {
            server,
            opened,
            unlinked,
        } => match server.client() {
            PeerState::NotAttached => opened.elapsed() < ATTACH_DEADLINE,
            PeerState::Alive { .. } => {
                if !*unlinked {
                    *unlinked = server.unlink().is_ok();
                }
                true
            }
            PeerState::Detached | PeerState::Dead { .. } => false,
        },
    }
}
