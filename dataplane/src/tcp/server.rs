//! The server: a listener, one io_uring, and every connection accepted on it, served as one
//! [`ServerLink`] in bursts.
//!
//! # Connection states
//!
//! ```text
//! Open --bad frame--> Closing --replies sent--> (half-closed) --peer EOF or linger--> Dead
//! Open --peer EOF, buffered frames answered--> Closing
//! any  --reset, send/recv error--> Dead --nothing in flight--> freed
//! ```
//!
//! An `Open` connection always has a RECV posted (unless its unsent replies passed
//! [`TcpConfig::send_high_water`], which is the backpressure on a client that does not read). A
//! `Closing` one serves nothing more and discards input. A `Dead` one has its socket shut down and
//! its operations cancelled; its slot is freed once their completions are reaped.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::stream::{self, Scan, Stream, TcpReplier};
use super::uring::Uring;
use super::{set_dead_peer_timeout, Op, TcpConfig};
use crate::link::{Replier, ServerLink};
use crate::wire::{self, Frame, Message, WireError};
use crate::{Error, Result};

/// The slot number the listener's ACCEPT uses in its `user_data`.
const LISTENER_SLOT: u32 = u32::MAX;
/// How long dropping a server waits for the kernel to hand back its operations.
const TEARDOWN: Duration = Duration::from_secs(2);
/// The largest `Hello` payload an authenticating server waits for: a secret is far smaller.
const MAX_HELLO_PAYLOAD: usize = 1024;
/// How often every authenticated connection's identity is looked at again (besides before each
/// of its bursts), while the server serves.
const REVOCATION_SWEEP: Duration = Duration::from_millis(100);

/// Counters of a [`TcpServer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections held now (in any state).
    pub connections: usize,
    /// Connections accepted since the server started.
    pub accepted: u64,
    /// Connections closed and freed.
    pub closed: u64,
    /// Frames rejected as malformed or oversized (each closes its connection).
    pub rejected_frames: u64,
    /// Connections closed, without a reply, because their first frame was no `Hello` with a
    /// secret the authenticator accepted.
    pub rejected_unauthenticated: u64,
    /// Authenticated connections closed, without a reply, because their identity was revoked
    /// ([`TcpServer::with_revocation`]).
    pub revoked: u64,
    /// Bytes allocated for receive buffers now.
    pub recv_buffer_bytes: usize,
    /// Largest receive buffer any connection ever had.
    pub largest_recv_buffer: usize,
    /// Bytes of replies queued or in flight, not yet taken by the kernel's socket buffers.
    pub unsent_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Serves nothing more: sends what is queued, half-closes, discards input until the peer's
    /// EOF or `deadline`.
    Closing {
        deadline: Instant,
        fin_sent: bool,
    },
    /// Shut down and cancelled; freed once nothing is in flight.
    Dead,
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    peer: SocketAddr,
    state: State,
    /// Whether a whole (or bad) frame is buffered and the connection may be served.
    ready: bool,
    /// Who the connection authenticated as (its `Hello`), where the server asks.
    identity: Option<u64>,
    /// When it was accepted: an authenticating server closes it at
    /// [`TcpConfig::auth_deadline`] after this unless it presented its secret.
    accepted: Instant,
}

/// Before its secret, what the front of a connection's input can still become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeforeSecret {
    /// Part of a small `Hello`, or nothing yet.
    Wait,
    /// A whole `Hello`.
    Hello,
    /// Anything else: no `Hello`, or one larger than any secret.
    Refuse,
}

/// Judges the front of `buf` from its header alone, so that nothing announced by a peer that
/// has not authenticated is buffered.
fn before_secret(buf: &[u8]) -> BeforeSecret {
    if buf.is_empty() {
        return BeforeSecret::Wait;
    }
    if buf[0] != wire::MAGIC {
        return BeforeSecret::Refuse;
    }
    let Some(header) = buf.first_chunk::<{ wire::HEADER_LEN }>() else {
        return BeforeSecret::Wait;
    };
    let header = wire::Header::from_bytes(header);
    let payload = header.payload_len as usize;
    if header.kind != wire::Kind::Hello as u8 || payload > MAX_HELLO_PAYLOAD {
        BeforeSecret::Refuse
    } else if buf.len() < wire::HEADER_LEN + payload {
        BeforeSecret::Wait
    } else {
        BeforeSecret::Hello
    }
}

/// Decides who presents a secret: the identity it stands for, or `None` to refuse it. Called
/// on the serving thread with the token of a connection's first frame (a `Hello`).
pub type Authenticator = Box<dyn FnMut(&[u8]) -> Option<u64> + Send>;

/// Says whether the identity of an authenticated connection is no longer good (its user was
/// deleted, say). Called on the serving thread.
pub type Revocation = Box<dyn FnMut(u64) -> bool + Send>;

impl Conn {
    /// Serves up to `budget` frames from the receive buffer.
    fn serve(
        &mut self,
        budget: usize,
        config: &TcpConfig,
        stats: &mut TcpStats,
        auth: Option<&mut Authenticator>,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> usize {
        if self.state != State::Open {
            return 0;
        }
        if let (Some(auth), None) = (auth, self.identity) {
            // Nothing is served before the connection presents a secret its authenticator
            // accepts; anything else closes it without a reply, judged from its header.
            let buf = self.stream.rx.filled();
            let accepted = match before_secret(buf) {
                BeforeSecret::Wait => return 0,
                BeforeSecret::Refuse => None,
                BeforeSecret::Hello => match wire::decode(buf, &config.limits) {
                    Ok((
                        Frame {
                            message: Message::Hello { token },
                            ..
                        },
                        len,
                    )) => auth(token).map(|id| (id, len)),
                    _ => None,
                },
            };
            match accepted {
                Some((id, len)) => {
                    self.identity = Some(id);
                    self.stream.rx.consume(len);
                }
                None => {
                    stats.rejected_unauthenticated += 1;
                    self.begin_close(config);
                    return 1;
                }
            }
        }
        let limits = &config.limits;
        let mut served = 0;
        while served < budget && self.stream.tx.unsent() < config.send_high_water {
            let buf = self.stream.rx.filled();
            if !matches!(stream::scan(buf, limits), Scan::Ready) {
                break;
            }
            match wire::decode(buf, limits) {
                Ok((frame, len)) => {
                    let mut replier = TcpReplier {
                        out: self.stream.tx.queued(),
                        max_payload: limits.max_payload,
                        peer: self.identity,
                    };
                    handle(frame, &mut replier);
                    self.stream.rx.consume(len);
                }
                Err(WireError::Incomplete { .. }) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: say why, then close.
                    let (id, code, message) = stream::error_reply(buf, &e);
                    let reply = Message::Error {
                        code,
                        message: &message,
                    };
                    // Encoding a short error into a Vec cannot fail; if it did, the close alone
                    // still tells the client.
                    let _ = wire::encode(id, &reply, self.stream.tx.queued());
                    stats.rejected_frames += 1;
                    self.begin_close(config);
                    served += 1;
                    break;
                }
            }
            served += 1;
        }
        served
    }

    fn begin_close(&mut self, config: &TcpConfig) {
        if self.state == State::Open {
            self.stream.rx.discard();
            self.state = State::Closing {
                deadline: Instant::now() + config.linger,
                fin_sent: false,
            };
        }
    }

    /// After a burst: moves the state machine on and posts what the connection needs. Returns
    /// whether the connection can be freed.
    /// `awaiting_secret`: the server authenticates and this connection has not yet; its receive
    /// buffer then does not grow for a frame its header announces.
    fn step(
        &mut self,
        uring: &mut Uring,
        slot: u32,
        config: &TcpConfig,
        awaiting_secret: bool,
    ) -> Result<bool> {
        if self.stream.error.is_some() {
            self.state = State::Dead;
        }
        let scan = stream::scan(self.stream.rx.filled(), &config.limits);
        if self.state == State::Open && self.stream.eof && scan != Scan::Ready {
            // The peer finished sending and every whole frame is answered: close after the
            // replies (a trailing partial frame is dropped).
            self.begin_close(config);
        }
        self.ready = false;
        match self.state {
            State::Open => {
                let throttled = self.stream.tx.unsent() >= config.send_high_water;
                self.ready = scan == Scan::Ready && !throttled;
                if !throttled && !self.stream.eof && !self.stream.rx.posted() {
                    let frame_len = match scan {
                        Scan::Partial { frame_len } if !awaiting_secret => frame_len,
                        _ => None,
                    };
                    self.stream.rx.make_room(frame_len);
                    self.stream.rx.post(uring, &self.stream.socket, slot)?;
                }
                self.stream.tx.post(uring, &self.stream.socket, slot)?;
            }
            State::Closing { deadline, fin_sent } => {
                // Discard input, so that closing does not reset the stream and lose the replies.
                self.stream.rx.discard();
                if !self.stream.eof && !self.stream.rx.posted() {
                    self.stream.rx.make_room(None);
                    self.stream.rx.post(uring, &self.stream.socket, slot)?;
                }
                self.stream.tx.post(uring, &self.stream.socket, slot)?;
                let mut fin_sent = fin_sent;
                if !fin_sent && self.stream.tx.idle() {
                    let _ = self.stream.socket.shutdown(std::net::Shutdown::Write);
                    fin_sent = true;
                }
                self.state = if (fin_sent && self.stream.eof) || Instant::now() >= deadline {
                    State::Dead
                } else {
                    State::Closing { deadline, fin_sent }
                };
            }
            State::Dead => {}
        }
        if self.state == State::Dead {
            self.stream.cancel(uring, slot)?;
            return Ok(!self.stream.in_flight());
        }
        Ok(false)
    }
}

/// A TCP data-plane server: a listener, one io_uring, and all the connections accepted on it.
/// Implements [`ServerLink`] over all of them; see the [module docs](super) for the loop that
/// drives it.
#[derive(Debug)]
pub struct TcpServer {
    uring: Uring,
    listener: TcpListener,
    local: SocketAddr,
    config: TcpConfig,
    /// Connections by slot (the slot is in each operation's `user_data`). A slot is reused only
    /// after its connection is freed, which waits for all of its completions, so a completion
    /// always finds the connection it belongs to.
    conns: Vec<Option<Conn>>,
    /// Free slots in `conns`.
    free: Vec<u32>,
    /// Whether an ACCEPT is posted.
    accept_posted: bool,
    /// The listener failed for good (e.g. `EINVAL`); the server accepts nothing more.
    listener_broken: bool,
    /// Where the next burst starts, so no connection is always served last.
    cursor: usize,
    /// Connections with a frame ready, as of the last burst.
    ready: usize,
    stats: TcpStats,
    /// If set, every connection must authenticate first ([`TcpServer::with_authenticator`]).
    auth: Option<AuthSlot>,
    /// The earliest [`TcpConfig::auth_deadline`] of a connection that has not authenticated, as
    /// of the last burst: the server has work then even if no byte arrives.
    auth_due: Option<Instant>,
    /// If set, connections whose identity it revokes are closed ([`TcpServer::with_revocation`]).
    revocation: Option<RevocationSlot>,
    /// When every authenticated connection was last looked at.
    revocation_sweep: Instant,
}

/// The revocation check, shown in `Debug` by presence only.
struct RevocationSlot(Revocation);

impl std::fmt::Debug for RevocationSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revocation")
    }
}

/// The authenticator, shown in `Debug` by presence only.
struct AuthSlot(Authenticator);

impl std::fmt::Debug for AuthSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

impl TcpServer {
    /// Listens on `addr` (port 0 picks a free port; see [`TcpServer::local_addr`]) with default
    /// tunables.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Self> {
        Self::bind_with(addr, TcpConfig::default())
    }

    /// Listens on `addr` with `config`. Fails with op `"io_uring setup"` where io_uring is not
    /// available.
    pub fn bind_with(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self> {
        let uring = Uring::new(config.ring_entries)?;
        let listener =
            TcpListener::bind(addr).map_err(|source| Error::Io { op: "bind", source })?;
        let local = listener.local_addr().map_err(|source| Error::Io {
            op: "local_addr",
            source,
        })?;
        let mut server = Self {
            uring,
            listener,
            local,
            config,
            conns: Vec::new(),
            free: Vec::new(),
            accept_posted: false,
            listener_broken: false,
            cursor: 0,
            ready: 0,
            stats: TcpStats::default(),
            auth: None,
            auth_due: None,
            revocation: None,
            revocation_sweep: Instant::now(),
        };
        server.post_accept()?;
        server.uring.submit()?;
        Ok(server)
    }

    /// Serves a connection only once its first frame, a `Hello`, carries a secret `auth`
    /// accepts; a connection that sends anything else is closed without a reply and counted
    /// ([`TcpStats::rejected_unauthenticated`]). Each reply's [`Replier::peer`] is then the
    /// identity `auth` gave its connection.
    pub fn with_authenticator(mut self, auth: Authenticator) -> Self {
        self.auth = Some(AuthSlot(auth));
        self
    }

    /// Closes, without a reply, every authenticated connection whose identity `revoked` says is
    /// no longer good: before serving its next requests, and while the server serves, within
    /// about 100 ms (an idle server closes them at its next burst). Counted in
    /// [`TcpStats::revoked`]. The client sees its connection closed and connects again.
    pub fn with_revocation(mut self, revoked: Revocation) -> Self {
        self.revocation = Some(RevocationSlot(revoked));
        self
    }

    /// The identities (given by the authenticator) of the connections open now.
    pub fn peers(&self) -> impl Iterator<Item = u64> + '_ {
        self.conns.iter().flatten().filter_map(|c| c.identity)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The tunables the server runs with.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }

    /// Counters, and the connections and buffer memory held now.
    pub fn stats(&self) -> TcpStats {
        let mut stats = self.stats;
        stats.connections = self.conns.iter().flatten().count();
        stats.recv_buffer_bytes = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.stream.rx.capacity())
            .sum();
        stats.unsent_bytes = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.stream.tx.unsent())
            .sum();
        stats
    }

    /// Sleeps in the kernel until something happens (a connection, bytes, a finished send) or
    /// `timeout` passes; returns at once if a request is already waiting. The idle step of a
    /// thread that serves only this server; a thread polling many links can use
    /// [`ServerLink::has_pending`] and its own backoff instead.
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        if self.has_pending() {
            return Ok(());
        }
        self.uring.wait(timeout)
    }

    fn post_accept(&mut self) -> Result<()> {
        let live = self.conns.len() - self.free.len();
        if self.accept_posted || self.listener_broken || live >= self.config.max_connections {
            return Ok(());
        }
        let entry = opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(Op::Accept.user_data(LISTENER_SLOT));
        // SAFETY: the ACCEPT is given no address buffer (null address and length), so it points
        // at no memory of ours; the listener it names is owned by `self`, and `Drop` cancels and
        // reaps the ACCEPT before the listener is closed.
        unsafe { self.uring.push(&entry)? };
        self.accept_posted = true;
        Ok(())
    }

    /// Takes a socket the kernel accepted for us.
    fn adopt(&mut self, fd: i32) {
        // SAFETY: a non-negative ACCEPT result is a file descriptor the kernel just installed in
        // this process for us; nothing else owns it, so the TcpStream may own and close it.
        let socket = unsafe { TcpStream::from_raw_fd(fd) };
        let Ok(peer) = socket.peer_addr() else {
            // Reset before we got to it: closing is all there is to do.
            self.stats.accepted += 1;
            self.stats.closed += 1;
            return;
        };
        // Best effort: a connection without these options still works.
        let _ = socket.set_nodelay(true);
        let _ = set_dead_peer_timeout(&socket, self.config.dead_peer);
        let conn = Conn {
            stream: Stream::new(socket, self.config.recv_buf),
            peer,
            identity: None,
            state: State::Open,
            ready: false,
            accepted: Instant::now(),
        };
        self.stats.accepted += 1;
        match self.free.pop() {
            Some(slot) => self.conns[slot as usize] = Some(conn),
            None => self.conns.push(Some(conn)),
        }
    }

    /// Applies every completion waiting, without blocking.
    fn reap(&mut self) -> Result<()> {
        self.uring.submit()?;
        while let Some((user_data, result)) = self.uring.next_completion() {
            self.dispatch(user_data, result);
        }
        Ok(())
    }

    fn dispatch(&mut self, user_data: u64, result: i32) {
        let Some((op, slot)) = Op::decode(user_data) else {
            return;
        };
        if op == Op::Accept {
            self.accept_posted = false;
            if result >= 0 {
                self.adopt(result);
            } else if matches!(-result, libc::EBADF | libc::EINVAL | libc::ENOTSOCK) {
                self.listener_broken = true;
            }
            // Anything else (ECONNABORTED, EMFILE, ENOMEM, EINTR, ...) is retried by the next
            // burst's `post_accept`.
            return;
        }
        if let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) {
            conn.stream.on_completion(op, result);
        }
    }

    /// After a burst: every connection posts what it needs, dead ones are freed, and the
    /// listener is re-armed.
    fn maintain(&mut self) -> Result<()> {
        self.ready = 0;
        self.auth_due = None;
        let now = Instant::now();
        let sweep = self.revocation.is_some() && now >= self.revocation_sweep + REVOCATION_SWEEP;
        if sweep {
            self.revocation_sweep = now;
        }
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if sweep {
                revoke_if(
                    conn,
                    self.revocation.as_mut(),
                    &self.config,
                    &mut self.stats,
                );
            }
            let awaiting_secret = self.auth.is_some() && conn.identity.is_none();
            if awaiting_secret && conn.state == State::Open {
                let due = conn.accepted + self.config.auth_deadline;
                if now >= due {
                    // No secret in time: closed without a reply, like a wrong one.
                    self.stats.rejected_unauthenticated += 1;
                    conn.begin_close(&self.config);
                } else {
                    self.auth_due = Some(self.auth_due.map_or(due, |d| d.min(due)));
                }
            }
            let free = conn.step(&mut self.uring, slot as u32, &self.config, awaiting_secret)?;
            self.stats.largest_recv_buffer = self
                .stats
                .largest_recv_buffer
                .max(conn.stream.rx.capacity());
            if free {
                self.conns[slot] = None;
                self.free.push(slot as u32);
                self.stats.closed += 1;
            } else if conn.ready {
                self.ready += 1;
            }
        }
        self.post_accept()
    }
}

/// Closes `conn` if it is open and `revocation` revokes its identity; returns whether it did.
fn revoke_if(
    conn: &mut Conn,
    revocation: Option<&mut RevocationSlot>,
    config: &TcpConfig,
    stats: &mut TcpStats,
) -> bool {
    let (Some(revoked), Some(id)) = (revocation, conn.identity) else {
        return false;
    };
    if conn.state != State::Open || !(revoked.0)(id) {
        return false;
    }
    stats.revoked += 1;
    conn.begin_close(config);
    true
}

impl ServerLink for TcpServer {
    fn serve(
        &mut self,
        max: usize,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> Result<usize> {
        self.reap()?;
        let mut served = 0;
        let n = self.conns.len();
        for k in 0..n {
            if served >= max {
                break;
            }
            let slot = (self.cursor + k) % n;
            if let Some(conn) = self.conns[slot].as_mut() {
                // Looked at before anything it sent is served.
                if !conn.stream.rx.filled().is_empty()
                    && revoke_if(
                        conn,
                        self.revocation.as_mut(),
                        &self.config,
                        &mut self.stats,
                    )
                {
                    continue;
                }
                let auth = self.auth.as_mut().map(|a| &mut a.0);
                served += conn.serve(max - served, &self.config, &mut self.stats, auth, handle);
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        self.maintain()?;
        // One kernel entry for every RECV and SEND of the burst.
        self.uring.submit()?;
        Ok(served)
    }

    fn has_pending(&self) -> bool {
        self.ready > 0
            || self.uring.has_completions()
            || self.auth_due.is_some_and(|due| Instant::now() >= due)
    }

    /// Whether the listener failed for good; the connections are managed inside the server.
    fn peer_gone(&self) -> bool {
        self.listener_broken
    }

    fn describe(&self) -> String {
        let live = self.conns.len() - self.free.len();
        let peers: Vec<String> = self
            .conns
            .iter()
            .flatten()
            .take(4)
            .map(|c| c.peer.to_string())
            .collect();
        let more = if live > peers.len() { ", ..." } else { "" };
        format!(
            "tcp {} ({live} connections: {}{more})",
            self.local,
            peers.join(", ")
        )
    }

    fn park(&mut self, timeout: std::time::Duration) {
        // Sleeps in io_uring_enter until a completion (a new connection, received bytes) arrives.
        let _ = TcpServer::wait(self, timeout);
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        // End every operation, then reap them all before any buffer (or the listener) is freed.
        let mut failed = false;
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].as_mut() {
                conn.state = State::Dead;
                failed |= conn.stream.cancel(&mut self.uring, slot as u32).is_err();
            }
        }
        if self.accept_posted {
            let entry = opcode::AsyncCancel::new(Op::Accept.user_data(LISTENER_SLOT))
                .build()
                .user_data(Op::Cancel.user_data(LISTENER_SLOT));
            // SAFETY: a cancellation points at no buffer.
            failed |= unsafe { self.uring.push(&entry) }.is_err();
        }
        let _ = self.uring.submit();
        let deadline = Instant::now() + TEARDOWN;
        let conns = &mut self.conns;
        let drained = self.uring.drain(deadline, |user_data, result| {
            match Op::decode(user_data) {
                Some((Op::Accept, _)) if result >= 0 => {
                    // SAFETY: as in `adopt`: a fresh descriptor the kernel gave us; closing it
                    // is all that is left to do.
                    drop(unsafe { TcpStream::from_raw_fd(result) });
                }
                Some((op, slot)) if slot != LISTENER_SLOT => {
                    if let Some(conn) = conns.get_mut(slot as usize).and_then(Option::as_mut) {
                        conn.stream.on_completion(op, result);
                    }
                }
                _ => {}
            }
        });
        if !drained || failed {
            // The kernel may still write into these buffers: leak them rather than free them.
            for conn in self.conns.iter_mut().flatten() {
                if conn.stream.in_flight() {
                    conn.stream.leak();
                }
            }
        }
    }
}
