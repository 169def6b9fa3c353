//! Data path of one TCP connection: its receive and send buffers, the RECV and SEND in flight on
//! them, and the frame scanner. Shared by server connections and the client link.
//!
//! # Buffer ownership
//!
//! - [`RecvBuf`]: a `Vec<u8>` whose initialised part `[0, len)` holds received bytes and whose
//!   spare capacity `[len, capacity)` is the target of the RECV in flight. Rust code only ever
//!   forms slices of `[start, len)`, which the kernel does not touch; the `Vec` is compacted,
//!   grown or shrunk only while no RECV is posted ([`RecvBuf::posted`] is `None`).
//! - [`SendBuf`]: frames are appended to `queued`; a SEND covers `flight[sent..]`, and `flight` is
//!   neither written, swapped nor freed while that SEND is posted. When it completes, `queued`
//!   becomes the next `flight`: one SEND per burst of replies (or of requests).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};

use super::uring::Uring;
use super::{Op, MIN_RECV_SPACE};
use crate::link::Replier;
use crate::wire::{self, ErrorCode, Limits, Message, WireError, HEADER_LEN, MAGIC};
use crate::Result;

/// Received bytes of one connection.
#[derive(Debug)]
pub(super) struct RecvBuf {
    /// `[start, len)`: received, not yet consumed. `[len, capacity)`: the kernel's while a RECV is
    /// posted.
    data: Vec<u8>,
    /// Bytes at the front already consumed (served frames); dropped at the next compaction.
    start: usize,
    /// Length of the RECV in flight into the spare capacity; `None` when none is.
    posted: Option<usize>,
    /// Size the buffer starts with and shrinks back to.
    resting: usize,
}

impl RecvBuf {
    pub(super) fn new(resting: usize) -> Self {
        let resting = resting.clamp(2 * MIN_RECV_SPACE, u32::MAX as usize);
        Self {
            data: Vec::with_capacity(resting),
            start: 0,
            posted: None,
            resting,
        }
    }

    /// The received bytes not yet consumed.
    pub(super) fn filled(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Marks `n` bytes at the front of [`RecvBuf::filled`] as consumed.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
    }

    /// Drops everything received (a closing connection discarding input).
    pub(super) fn discard(&mut self) {
        self.start = self.data.len();
    }

    /// Allocated bytes.
    pub(super) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    pub(super) fn posted(&self) -> bool {
        self.posted.is_some()
    }

    /// Gets the buffer ready for the next RECV: moves unconsumed bytes to the front, makes room
    /// for a frame of `frame_len` bytes whose start is buffered, and shrinks a buffer that grew for
    /// an earlier large frame. Does nothing while a RECV is posted (the kernel owns the spare
    /// capacity then, and reallocating would pull it away).
    pub(super) fn make_room(&mut self, frame_len: Option<usize>) {
        if self.posted.is_some() {
            return;
        }
        if self.start > 0 {
            let pending = self.data.len() - self.start;
            self.data.copy_within(self.start.., 0);
            self.data.truncate(pending);
            self.start = 0;
        }
        let target = frame_len.unwrap_or(0).max(self.resting);
        let len = self.data.len();
        if self.data.capacity() > 4 * target && len <= target {
            // Back to the resting size (or the current frame's) after a large frame.
            let mut smaller = Vec::with_capacity(target);
            smaller.extend_from_slice(&self.data);
            self.data = smaller;
        }
        if self.data.capacity() < target {
            self.data.reserve_exact(target - len);
        }
        if self.data.capacity() - len < MIN_RECV_SPACE {
            // Whole frames are waiting to be served and fill the buffer: room for more.
            self.data.reserve(self.resting);
        }
    }

    /// Posts a RECV into the spare capacity, unless one is posted already or there is no room.
    pub(super) fn post(&mut self, uring: &mut Uring, socket: &TcpStream, slot: u32) -> Result<()> {
        if self.posted.is_some() {
            return Ok(());
        }
        let spare = self.data.spare_capacity_mut();
        let len = spare.len().min(u32::MAX as usize);
        if len == 0 {
            return Ok(());
        }
        let entry = opcode::Recv::new(
            types::Fd(socket.as_raw_fd()),
            spare.as_mut_ptr().cast::<u8>(),
            len as u32,
        )
        .build()
        .user_data(Op::Recv.user_data(slot));
        // SAFETY: the RECV writes into the spare capacity `[len, len + posted)` of `self.data`.
        // From here until its completion is reaped (`on_recv`/`on_failed` clear `posted`), that
        // memory is neither read nor written by Rust code (slices cover `[start, len)` only, and
        // `make_room`, the only code that reallocates or moves bytes, returns early while
        // `posted` is set), and the allocation is not freed: the connection that owns this buffer
        // is freed only once nothing of it is in flight, and teardown leaks the buffer if the
        // operation cannot be reaped.
        unsafe { uring.push(&entry)? };
        self.posted = Some(len);
        Ok(())
    }

    /// The posted RECV wrote `n` bytes.
    fn on_recv(&mut self, n: usize) {
        let Some(posted) = self.posted.take() else {
            return;
        };
        let n = n.min(posted);
        // SAFETY: the kernel wrote `n` bytes (the completion's result) at the start of the spare
        // capacity, so `[len, len + n)` is initialised, and `n <= posted <= capacity - len`.
        unsafe { self.data.set_len(self.data.len() + n) };
    }

    /// The posted RECV ended without data.
    fn on_failed(&mut self) {
        self.posted = None;
    }

    /// Gives up the buffer without freeing it: teardown could not reap the RECV in flight.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.data));
    }
}

/// Bytes to send on one connection.
#[derive(Debug, Default)]
pub(super) struct SendBuf {
    /// Frames gathered since `flight` was posted.
    queued: Vec<u8>,
    /// Bytes of the current SEND; the kernel reads `flight[sent..]` while `posted` is set.
    flight: Vec<u8>,
    /// Bytes of `flight` already sent.
    sent: usize,
    /// Length of the SEND in flight; `None` when none is.
    posted: Option<usize>,
}

/// A send buffer that grew past this is freed once drained, not kept.
const SEND_KEEP: usize = 1 << 20;

impl SendBuf {
    /// Where to append frames.
    pub(super) fn queued(&mut self) -> &mut Vec<u8> {
        &mut self.queued
    }

    /// Bytes queued or in flight, not yet sent.
    pub(super) fn unsent(&self) -> usize {
        self.queued.len() + self.flight.len() - self.sent
    }

    /// Nothing to send and nothing in flight.
    pub(super) fn idle(&self) -> bool {
        self.posted.is_none() && self.unsent() == 0
    }

    pub(super) fn posted(&self) -> bool {
        self.posted.is_some()
    }

    /// Posts one SEND of everything unsent, unless one is in flight (its completion posts the
    /// rest) or there is nothing to send.
    pub(super) fn post(&mut self, uring: &mut Uring, socket: &TcpStream, slot: u32) -> Result<()> {
        if self.posted.is_some() {
            return Ok(());
        }
        if self.sent == self.flight.len() {
            if self.queued.is_empty() {
                return Ok(());
            }
            self.flight.clear();
            if self.flight.capacity() > SEND_KEEP {
                self.flight = Vec::new();
            }
            self.sent = 0;
            std::mem::swap(&mut self.flight, &mut self.queued);
        }
        let rest = &self.flight[self.sent..];
        let len = rest.len().min(u32::MAX as usize);
        let entry = opcode::Send::new(types::Fd(socket.as_raw_fd()), rest.as_ptr(), len as u32)
            // A peer that closed must give EPIPE, not a SIGPIPE that kills redis-server.
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::Send.user_data(slot));
        // SAFETY: the SEND reads `flight[sent..sent + len]`. Until its completion is reaped
        // (`on_send`/`on_failed` clear `posted`), `flight` is not written, swapped, cleared or
        // freed: `post` returns early while `posted` is set, and every other method touches only
        // `queued`. The connection owning it is freed only once nothing of it is in flight, and
        // teardown leaks the buffer if the operation cannot be reaped.
        unsafe { uring.push(&entry)? };
        self.posted = Some(len);
        Ok(())
    }

    fn on_send(&mut self, n: usize) {
        let Some(posted) = self.posted.take() else {
            return;
        };
        self.sent += n.min(posted);
    }

    fn on_failed(&mut self) {
        self.posted = None;
    }

    /// Gives up the buffer without freeing it: teardown could not reap the SEND in flight.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.flight));
    }
}

/// One TCP connection on a ring: the socket, its buffers, and what the peer did.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) socket: TcpStream,
    pub(super) rx: RecvBuf,
    pub(super) tx: SendBuf,
    /// Cancellations in flight (each completes once).
    cancels: usize,
    /// Whether the operations in flight were cancelled and the socket shut down.
    cancelled: bool,
    /// The peer finished sending (a RECV returned 0).
    pub(super) eof: bool,
    /// A RECV or SEND failed for good (reset, broken pipe, timeout).
    pub(super) error: Option<io::Error>,
}

/// Errors of a socket operation that mean "post it again".
fn is_retry(errno: i32) -> bool {
    matches!(errno, libc::EINTR | libc::EAGAIN | libc::ENOBUFS)
}

impl Stream {
    pub(super) fn new(socket: TcpStream, recv_buf: usize) -> Self {
        Self {
            socket,
            rx: RecvBuf::new(recv_buf),
            tx: SendBuf::default(),
            cancels: 0,
            cancelled: false,
            eof: false,
            error: None,
        }
    }

    /// Whether the kernel may still touch this stream's buffers.
    pub(super) fn in_flight(&self) -> bool {
        self.rx.posted() || self.tx.posted() || self.cancels > 0
    }

    /// Whether the stream is unusable: the peer closed or it failed.
    pub(super) fn broken(&self) -> bool {
        self.eof || self.error.is_some() || self.cancelled
    }

    /// Applies one completion of this stream's operations.
    pub(super) fn on_completion(&mut self, op: Op, result: i32) {
        match op {
            Op::Recv if result > 0 => self.rx.on_recv(result as usize),
            Op::Recv => {
                self.rx.on_failed();
                if result == 0 {
                    self.eof = true;
                } else if !is_retry(-result) {
                    self.fail(-result);
                }
            }
            Op::Send if result >= 0 => self.tx.on_send(result as usize),
            Op::Send => {
                self.tx.on_failed();
                if !is_retry(-result) {
                    self.fail(-result);
                }
            }
            Op::Cancel => self.cancels = self.cancels.saturating_sub(1),
            Op::Accept => {}
        }
    }

    fn fail(&mut self, errno: i32) {
        if self.error.is_none() && !self.cancelled {
            self.error = Some(io::Error::from_raw_os_error(errno));
        }
    }

    /// Ends the stream: shuts the socket down (which ends a posted RECV or SEND on its own) and
    /// cancels whatever is in flight. The buffers stay until [`Stream::in_flight`] is false.
    pub(super) fn cancel(&mut self, uring: &mut Uring, slot: u32) -> Result<()> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        let _ = self.socket.shutdown(Shutdown::Both);
        for (posted, op) in [(self.rx.posted(), Op::Recv), (self.tx.posted(), Op::Send)] {
            if posted {
                let entry = opcode::AsyncCancel::new(op.user_data(slot))
                    .build()
                    .user_data(Op::Cancel.user_data(slot));
                // SAFETY: a cancellation points at no buffer; it names its target by user_data.
                unsafe { uring.push(&entry)? };
                self.cancels += 1;
            }
        }
        Ok(())
    }

    /// Teardown could not reap this stream's operations: leak its buffers instead of freeing
    /// memory the kernel may still write.
    pub(super) fn leak(&mut self) {
        self.rx.leak();
        self.tx.leak();
    }
}

/// What the front of a receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// Nothing.
    Empty,
    /// The start of a frame; `frame_len` once its header is in.
    Partial { frame_len: Option<usize> },
    /// A whole frame, or bytes that can never be one (both are for [`decode`]; the latter gets an
    /// error reply).
    Ready,
}

/// Looks at the header only (cheap): whether a whole frame or a bad one is at the front of `buf`.
pub(super) fn scan(buf: &[u8], limits: &Limits) -> Scan {
    if buf.is_empty() {
        return Scan::Empty;
    }
    if buf[0] != MAGIC {
        // Bad already, no need to wait for the rest of a header.
        return Scan::Ready;
    }
    let header = &buf[..buf.len().min(HEADER_LEN)];
    match wire::check(header, limits) {
        Err(WireError::Incomplete { .. }) if buf.len() < HEADER_LEN => {
            Scan::Partial { frame_len: None }
        }
        Err(WireError::Incomplete { needed }) => {
            // `header` is exactly a header, so what it misses is the payload.
            let frame_len = HEADER_LEN + needed;
            if buf.len() >= frame_len {
                Scan::Ready
            } else {
                Scan::Partial {
                    frame_len: Some(frame_len),
                }
            }
        }
        // A header-only frame, or a header that is bad or oversized.
        _ => Scan::Ready,
    }
}

/// The error reply to bytes at the front of a stream that do not decode: its request id (from
/// the header if a whole one is there, else 0), code and message.
pub(super) fn error_reply(buf: &[u8], e: &WireError) -> (u64, ErrorCode, String) {
    let id = wire::request_id_of(buf);
    (
        id,
        e.code(),
        format!("bad frame: {e}; closing the connection"),
    )
}

/// Encodes replies at the end of a connection's send buffer.
pub(super) struct TcpReplier<'a> {
    pub(super) out: &'a mut Vec<u8>,
    /// Largest reply payload sent; a larger reply becomes a `TOOLARGE` error.
    pub(super) max_payload: usize,
    /// Who the connection authenticated as.
    pub(super) peer: Option<u64>,
}

impl Replier for TcpReplier<'_> {
    fn peer(&self) -> Option<u64> {
        self.peer
    }

    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        let len = message.payload_len()?;
        if len > self.max_payload {
            let text = format!(
                "reply of {len} bytes exceeds the limit of {} bytes",
                self.max_payload
            );
            let error = Message::Error {
                code: ErrorCode::TooLarge,
                message: &text,
            };
            wire::encode(request_id, &error, self.out)?;
            return Ok(());
        }
        wire::encode(request_id, message, self.out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64, m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(id, m, &mut out).unwrap();
        out
    }

    #[test]
    fn scan_reads_headers_only() {
        let limits = Limits { max_payload: 100 };
        let f = frame(3, &Message::Get { key: b"key" });
        assert_eq!(scan(&[], &limits), Scan::Empty);
        assert_eq!(scan(&f[..5], &limits), Scan::Partial { frame_len: None });
        assert_eq!(
            scan(&f[..HEADER_LEN + 1], &limits),
            Scan::Partial {
                frame_len: Some(f.len())
            }
        );
        assert_eq!(scan(&f, &limits), Scan::Ready);
        assert_eq!(scan(&frame(4, &Message::Ok), &limits), Scan::Ready);
        // Junk is ready (to be rejected) from its first byte.
        assert_eq!(scan(b"x", &limits), Scan::Ready);
        // An oversized header is ready (to be rejected) without its payload.
        let big = frame(
            5,
            &Message::Set {
                key: b"k",
                value: &[0; 200],
            },
        );
        assert_eq!(scan(&big[..HEADER_LEN], &limits), Scan::Ready);
        let (id, code, _) = error_reply(
            &big[..HEADER_LEN],
            &wire::check(&big[..HEADER_LEN], &limits).unwrap_err(),
        );
        assert_eq!((id, code), (5, ErrorCode::TooLarge));
    }

    #[test]
    fn recv_buf_compacts_grows_and_shrinks() {
        let mut b = RecvBuf::new(MIN_RECV_SPACE * 2);
        let resting = b.capacity();
        b.data.extend_from_slice(&[1, 2, 3, 4]);
        b.consume(3);
        b.make_room(None);
        assert_eq!(b.filled(), &[4]);
        assert_eq!(b.start, 0);
        b.make_room(Some(1 << 20));
        assert!(b.capacity() >= 1 << 20);
        assert_eq!(b.filled(), &[4]);
        b.consume(1);
        b.make_room(None);
        assert!(b.capacity() < 4 * resting, "did not shrink back");
        // While a RECV is posted nothing moves.
        b.data.extend_from_slice(&[9, 9]);
        b.consume(1);
        b.posted = Some(1);
        let ptr = b.data.as_ptr();
        b.make_room(Some(1 << 20));
        assert_eq!((b.data.as_ptr(), b.start), (ptr, 1));
    }

    #[test]
    fn replies_over_the_limit_become_errors() {
        let mut out = Vec::new();
        let mut r = TcpReplier {
            out: &mut out,
            max_payload: 10,
            peer: None,
        };
        r.reply(1, &Message::Value { value: Some(b"ok") }).unwrap();
        r.reply(
            2,
            &Message::Value {
                value: Some(&[0; 64]),
            },
        )
        .unwrap();
        let limits = Limits::default();
        let (first, n) = wire::decode(&out, &limits).unwrap();
        assert_eq!(first.message, Message::Value { value: Some(b"ok") });
        let (second, _) = wire::decode(&out[n..], &limits).unwrap();
        assert!(matches!(
            second.message,
            Message::Error {
                code: ErrorCode::TooLarge,
                ..
            }
        ));
        assert_eq!(second.request_id, 2);
    }
}
