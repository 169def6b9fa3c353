//! The client end: one TCP connection on its own io_uring, as a [`ClientLink`].
//!
//! `queue` encodes requests into the send buffer; `flush` posts them as one SEND (while a SEND
//! is in flight, what is queued goes out as the next one when it completes). A RECV is always
//! posted; `poll` reaps completions and hands out every whole reply frame; `wait` sleeps in
//! `io_uring_enter` with a timeout.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::stream::{self, Scan, Stream};
use super::uring::Uring;
use super::{set_dead_peer_timeout, Op, TcpConfig};
use crate::link::ClientLink;
use crate::wire::{self, Frame, Message, WireError};
use crate::{Error, Result};

/// The client's only connection uses slot 0 in its `user_data`.
const SLOT: u32 = 0;
/// How long dropping a link waits for the kernel to hand back its operations.
const TEARDOWN: Duration = Duration::from_secs(2);

/// The client end of a TCP data-plane connection.
#[derive(Debug)]
pub struct TcpClientLink {
    uring: Uring,
    stream: Stream,
    peer: SocketAddr,
    config: TcpConfig,
    /// The server sent a frame that does not decode; the link was closed after reporting it.
    protocol_error: bool,
}

impl TcpClientLink {
    /// Connects to `addr` (trying each address it resolves to, each for at most `timeout`) with
    /// default tunables. Fails with op `"io_uring setup"` where io_uring is not available.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Self> {
        Self::connect_with(addr, timeout, TcpConfig::default())
    }

    /// Connects with `config`.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        timeout: Duration,
        config: TcpConfig,
    ) -> Result<Self> {
        let uring = Uring::new(config.ring_entries)?;
        let addrs = addr.to_socket_addrs().map_err(|source| Error::Io {
            op: "resolve",
            source,
        })?;
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        let mut socket = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let socket = socket.ok_or(Error::Io {
            op: "connect",
            source: last,
        })?;
        socket.set_nodelay(true).map_err(|source| Error::Io {
            op: "set TCP_NODELAY",
            source,
        })?;
        set_dead_peer_timeout(&socket, config.dead_peer)?;
        let peer = socket.peer_addr().map_err(|source| Error::Io {
            op: "peer_addr",
            source,
        })?;
        let mut link = Self {
            uring,
            stream: Stream::new(socket, config.recv_buf),
            peer,
            config,
            protocol_error: false,
        };
        link.rearm()?;
        Ok(link)
    }

    /// Presents `token` (the secret `AUTOLOC.CONNECT tcp` handed out) as the connection's first
    /// frame, a `Hello`, and sends it now: an authenticating server closes a connection that has
    /// not presented one within [`TcpConfig::auth_deadline`], however long the client then
    /// waits before its first request.
    pub fn authenticate(&mut self, token: &[u8]) -> Result<()> {
        self.queue(0, &Message::Hello { token })?;
        self.flush()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Applies every completion waiting, without blocking.
    fn reap(&mut self) -> Result<()> {
        self.uring.submit()?;
        while let Some((user_data, result)) = self.uring.next_completion() {
            if let Some((op, _)) = Op::decode(user_data) {
                self.stream.on_completion(op, result);
            }
        }
        Ok(())
    }

    /// Keeps a RECV posted and the send buffer moving; one kernel entry for both.
    fn rearm(&mut self) -> Result<()> {
        if !self.stream.broken() && !self.stream.rx.posted() {
            let frame_len = match stream::scan(self.stream.rx.filled(), &self.config.limits) {
                Scan::Partial { frame_len } => frame_len,
                _ => None,
            };
            self.stream.rx.make_room(frame_len);
            self.stream
                .rx
                .post(&mut self.uring, &self.stream.socket, SLOT)?;
        }
        if !self.stream.broken() {
            self.stream
                .tx
                .post(&mut self.uring, &self.stream.socket, SLOT)?;
        }
        self.uring.submit()
    }

    /// Whether a whole (or undecodable) frame is buffered.
    fn frame_ready(&self) -> bool {
        stream::scan(self.stream.rx.filled(), &self.config.limits) == Scan::Ready
    }

    /// The error a broken link reports.
    fn broken_error(&self) -> Error {
        match &self.stream.error {
            Some(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Error::Io {
                    op: "tcp data path",
                    source: e
                        .raw_os_error()
                        .map_or_else(|| io::Error::from(e.kind()), io::Error::from_raw_os_error),
                }
            }
            _ => Error::Closed,
        }
    }
}

impl ClientLink for TcpClientLink {
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        if self.stream.broken() {
            return Err(Error::Closed);
        }
        let len = message.payload_len()?;
        let max = self.config.limits.max_payload;
        if len > max {
            return Err(WireError::Oversized { len, max }.into());
        }
        wire::encode(request_id, message, self.stream.tx.queued())?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.stream.broken() {
            return Err(self.broken_error());
        }
        // A SEND that already finished frees the way for the next one.
        self.reap()?;
        self.rearm()
    }

    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        self.reap()?;
        let limits = self.config.limits;
        let mut n = 0;
        while self.frame_ready() {
            let buf = self.stream.rx.filled();
            match wire::decode(buf, &limits) {
                Ok((frame, len)) => {
                    f(frame);
                    self.stream.rx.consume(len);
                    n += 1;
                }
                Err(WireError::Incomplete { .. }) => break,
                Err(e) => {
                    // A stream cannot be resynchronised: report this once, then the link is
                    // closed.
                    self.protocol_error = true;
                    self.stream.cancel(&mut self.uring, SLOT)?;
                    self.uring.submit()?;
                    return Err(e.into());
                }
            }
        }
        self.rearm()?;
        if n == 0 && self.peer_gone() {
            return Err(self.broken_error());
        }
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.reap()?;
        if self.frame_ready() {
            return Ok(());
        }
        if self.peer_gone() {
            return Err(self.broken_error());
        }
        self.rearm()?;
        self.uring.wait(timeout)?;
        self.reap()?;
        if !self.frame_ready() && self.peer_gone() {
            return Err(self.broken_error());
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        self.stream.broken() || self.protocol_error
    }

    fn max_frame(&self) -> usize {
        self.config.max_frame()
    }
}

impl Drop for TcpClientLink {
    fn drop(&mut self) {
        let _ = self.stream.socket.shutdown(Shutdown::Both);
        let cancelled = self.stream.cancel(&mut self.uring, SLOT).is_ok();
        let _ = self.uring.submit();
        let stream = &mut self.stream;
        let drained = self
            .uring
            .drain(Instant::now() + TEARDOWN, |user_data, result| {
                if let Some((op, _)) = Op::decode(user_data) {
                    stream.on_completion(op, result);
                }
            });
        if !drained || !cancelled || self.stream.in_flight() {
            // The kernel may still use these buffers: leak them rather than free them.
            self.stream.leak();
        }
    }
}
