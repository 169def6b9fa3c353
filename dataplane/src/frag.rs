//! Link-level fragmentation for the ring transports (shm and rdma): a frame larger than a ring
//! slot travels as a run of fragment slots and is put back together by the receiving end of the
//! link, so no caller of a [`ClientLink`](crate::link::ClientLink) or
//! [`ServerLink`](crate::link::ServerLink) ever meets the slot size. Both transports run the
//! same [`crate::ring`] code over their own memory, so this module serves both.
//!
//! # Format
//!
//! A fragment is one ring slot holding a wire [`Header`] marked with [`FLAG_FRAGMENT`], then two
//! words and a chunk of the whole frame's bytes:
//!
//! ```text
//! offset  size  field
//!      0    16  header: magic, version, kind = the whole frame's kind, flags = FLAG_FRAGMENT,
//!               payload_len = 16 + n, request_id = the whole frame's request id
//!     16     8  total: bytes of the whole frame, header included (u64)
//!     24     8  offset: where this chunk starts in the whole frame (u64)
//!     32     n  chunk: n >= 1 bytes of the whole frame
//! ```
//!
//! The sender encodes the frame as usual ([`wire::encode`]) and, only if it does not fit a slot,
//! writes it as fragments of at most `slot capacity - 32` bytes each, offsets 0, n1, n1 + n2, ...
//! up to `total`. A ring has one producer and a sender writes one frame's fragments back to back,
//! so a receiver sees them contiguous and in order; anything else (a first fragment that does not
//! start at 0, a gap, a change of request id, kind or total, a plain frame before the last
//! fragment) is a broken peer. The decoder rejects every nonzero flag, so a fragment can never be
//! taken for a frame. Once the last fragment arrived, the bytes are decoded as one ordinary frame.
//!
//! # Bounds
//!
//! A frame's `total` must be at most `HEADER_LEN + Limits::max_payload` (64 MiB by default), which
//! is checked on the first fragment before anything is allocated; a receiver reassembles one frame
//! at a time into a buffer that grows with the chunks received, so one link holds at most one
//! such buffer. A sender refuses a larger frame up front ([`max_frame`]) and holds at most one
//! encoded frame. Buffers above [`RETAIN`] bytes are freed once their frame is done.
//!
//! # Flow
//!
//! Senders never need the whole ring for one frame: the fragments go in as slots free up.
//! A server reply waits for room slot by slot (the wait for each slot is bounded, so what ends a
//! reply is a client that stops draining, not a large reply), while its request burst is held.
//! A client keeps the fragments not written yet in its [`Outbox`] and writes more on every
//! `queue`, `flush`, `poll` and `wait`; requests queued meanwhile are refused with
//! `RingError::Full`, as for a full ring, so they go after it and memory stays bounded.

use std::fmt;

use crate::link::{serve_raw, Replier};
use crate::ring::{Producer, RingError};
use crate::wire::{
    self, ErrorCode, Frame, Header, Limits, Message, DEFAULT_MAX_PAYLOAD, FLAG_FRAGMENT,
    HEADER_LEN, MAGIC, VERSION,
};
use crate::{Error, Result};

/// Bytes of a fragment before its chunk: the header, `total` and `offset`.
pub const FRAGMENT_PREFIX: usize = HEADER_LEN + 16;
/// Buffers (of an [`Outbox`] or a [`Reassembly`]) up to this capacity are kept for the next large
/// frame; larger ones are freed when their frame is done.
pub const RETAIN: usize = 1 << 20;

/// The largest frame a ring link whose slots hold `slot_capacity` bytes carries: the wire limit
/// (`HEADER_LEN + DEFAULT_MAX_PAYLOAD`) when a slot can hold a fragment, else what fits one slot.
pub fn max_frame(slot_capacity: usize) -> usize {
    let wire_max = HEADER_LEN + DEFAULT_MAX_PAYLOAD;
    if slot_capacity > FRAGMENT_PREFIX {
        wire_max
    } else {
        slot_capacity.min(wire_max)
    }
}

/// Whether a received slot holds a fragment (rather than a frame, valid or not).
pub fn is_fragment(raw: &[u8]) -> bool {
    raw.len() >= HEADER_LEN && raw[0] == MAGIC && raw[1] == VERSION && raw[3] == FLAG_FRAGMENT
}

/// Writes one fragment (header, `total`, `offset`, `chunk`) at the start of `out`; returns its
/// length, or `None` if `out` is too small or `chunk` is empty. Senders use [`Outbox`]; this is
/// public for tests that need to write broken sequences.
pub fn encode_fragment(
    request_id: u64,
    kind: u8,
    total: u64,
    offset: u64,
    chunk: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let len = FRAGMENT_PREFIX.checked_add(chunk.len())?;
    if chunk.is_empty() || out.len() < len {
        return None;
    }
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        kind,
        flags: FLAG_FRAGMENT,
        payload_len: u32::try_from(len - HEADER_LEN).ok()?,
        request_id,
    };
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&total.to_le_bytes());
    out[HEADER_LEN + 8..FRAGMENT_PREFIX].copy_from_slice(&offset.to_le_bytes());
    out[FRAGMENT_PREFIX..len].copy_from_slice(chunk);
    Some(len)
}

/// A fragment sequence that cannot be reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The fragments of `request_id` do not form a frame.
    #[error("fragmented frame {request_id}: {reason}")]
    Malformed {
        request_id: u64,
        reason: &'static str,
    },
    /// The fragments of `request_id` announce a frame over the wire limit.
    #[error("fragmented frame {request_id} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        request_id: u64,
        len: u64,
        max: usize,
    },
}

impl FragmentError {
    /// The request the broken sequence belonged to.
    pub fn request_id(&self) -> u64 {
        match *self {
            FragmentError::Malformed { request_id, .. }
            | FragmentError::TooLarge { request_id, .. } => request_id,
        }
    }

    /// The code of the error reply a server answers the request with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FragmentError::Malformed { .. } => ErrorCode::Malformed,
            FragmentError::TooLarge { .. } => ErrorCode::TooLarge,
        }
    }
}

/// One fragment's fields, borrowed from its slot.
struct Fragment<'a> {
    request_id: u64,
    kind: u8,
    total: u64,
    offset: u64,
    chunk: &'a [u8],
}

/// Phase one of reading a fragment: its fields, or why they cannot be.
fn parse(raw: &[u8]) -> Result<Fragment<'_>, &'static str> {
    let Some(prefix) = raw.first_chunk::<FRAGMENT_PREFIX>() else {
        return Err("fragment shorter than its header");
    };
    let Some(header) = prefix.first_chunk::<HEADER_LEN>() else {
        return Err("fragment shorter than its header");
    };
    let header = Header::from_bytes(header);
    if header.payload_len as usize != raw.len() - HEADER_LEN {
        return Err("fragment length disagrees with its header");
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&prefix[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (total, offset) = (word(HEADER_LEN), word(HEADER_LEN + 8));
    let chunk = &raw[FRAGMENT_PREFIX..];
    if chunk.is_empty() {
        return Err("empty fragment");
    }
    if offset
        .checked_add(chunk.len() as u64)
        .is_none_or(|end| end > total)
    {
        return Err("fragment runs past the end of its frame");
    }
    Ok(Fragment {
        request_id: header.request_id,
        kind: header.kind,
        total,
        offset,
        chunk,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// No frame in progress.
    #[default]
    Idle,
    /// `buf` holds the first bytes of a `total`-byte frame.
    Assembling {
        request_id: u64,
        kind: u8,
        total: usize,
    },
    /// `buf` holds a whole frame, handed out by the last `push`.
    Complete,
    /// A sequence of `request_id` broke and was reported: its remaining fragments are dropped
    /// quietly, so a broken frame costs one error, not one per fragment.
    Discarding { request_id: u64 },
}

/// The receiving end's state: the frame being put back together from its fragments.
#[derive(Default)]
pub struct Reassembly {
    state: State,
    buf: Vec<u8>,
}

impl fmt::Debug for Reassembly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes may be megabytes: show how many.
        f.debug_struct("Reassembly")
            .field("state", &self.state)
            .field("received", &self.buf.len())
            .finish()
    }
}

impl Reassembly {
    /// A reassembly with nothing in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no frame is in progress.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle | State::Discarding { .. })
    }

    /// Takes one fragment (a slot for which [`is_fragment`] holds). Returns the whole frame's
    /// bytes once its last fragment arrived (they stay valid until the next call), `None` while
    /// more are to come or when a fragment of an already reported broken frame was dropped.
    /// On error the frame in progress is dropped and its remaining fragments will be too.
    pub fn push(&mut self, raw: &[u8], limits: &Limits) -> Result<Option<&[u8]>, FragmentError> {
        self.finish();
        let parsed = parse(raw);
        if let State::Discarding { request_id } = self.state {
            let restart = matches!(&parsed, Ok(f) if f.offset == 0);
            if wire::request_id_of(raw) == request_id && !restart {
                return Ok(None);
            }
            self.state = State::Idle;
        }
        let f = match parsed {
            Ok(f) => f,
            Err(reason) => {
                let request_id = match self.state {
                    State::Assembling { request_id, .. } => request_id,
                    _ => wire::request_id_of(raw),
                };
                return Err(self.fail(FragmentError::Malformed { request_id, reason }));
            }
        };
        match self.state {
            State::Assembling {
                request_id,
                kind,
                total,
            } => {
                if f.request_id != request_id
                    || f.kind != kind
                    || f.total != total as u64
                    || f.offset != self.buf.len() as u64
                {
                    return Err(self.fail(FragmentError::Malformed {
                        request_id,
                        reason: "fragment out of sequence",
                    }));
                }
            }
            _ => {
                if f.offset != 0 {
                    return Err(self.fail(FragmentError::Malformed {
                        request_id: f.request_id,
                        reason: "fragment without the start of its frame",
                    }));
                }
                let max = HEADER_LEN.saturating_add(limits.max_payload);
                let total = match usize::try_from(f.total) {
                    Ok(total) if total <= max => total,
                    _ => {
                        return Err(self.fail(FragmentError::TooLarge {
                            request_id: f.request_id,
                            len: f.total,
                            max,
                        }))
                    }
                };
                if total < HEADER_LEN {
                    return Err(self.fail(FragmentError::Malformed {
                        request_id: f.request_id,
                        reason: "fragmented frame shorter than a header",
                    }));
                }
                // Grown as chunks arrive, so a peer that announces a large frame and stalls
                // costs what it sent, not what it announced.
                self.buf.clear();
                self.buf.reserve(total.min(RETAIN));
                self.state = State::Assembling {
                    request_id: f.request_id,
                    kind: f.kind,
                    total,
                };
            }
        }
        // parse() checked offset + chunk <= total, and offset == buf.len() here.
        self.buf.extend_from_slice(f.chunk);
        if self.buf.len() as u64 != f.total {
            return Ok(None);
        }
        // The frame's own header must agree with its fragments'.
        if self.buf[2] != f.kind || wire::request_id_of(&self.buf) != f.request_id {
            return Err(self.fail(FragmentError::Malformed {
                request_id: f.request_id,
                reason: "frame header disagrees with its fragments",
            }));
        }
        self.state = State::Complete;
        Ok(Some(&self.buf))
    }

    /// A plain frame arrived: ends the frame in progress, if any, and returns its request id (its
    /// fragments were cut short, so the peer is broken).
    pub fn interrupt(&mut self) -> Option<u64> {
        self.finish();
        let cut = match self.state {
            State::Assembling { request_id, .. } => Some(request_id),
            _ => None,
        };
        self.state = State::Idle;
        if cut.is_some() {
            self.clear();
        }
        cut
    }

    /// Drops the frame last handed out by [`push`](Self::push) (also done by the next call).
    pub fn finish(&mut self) {
        if self.state == State::Complete {
            self.state = State::Idle;
            self.clear();
        }
    }

    fn fail(&mut self, e: FragmentError) -> FragmentError {
        self.state = State::Discarding {
            request_id: e.request_id(),
        };
        self.clear();
        e
    }

    fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > RETAIN {
            self.buf = Vec::new();
        }
    }
}

/// The sending end's state: one encoded frame too large for a slot, and how much of it has been
/// written as fragments.
#[derive(Default)]
pub struct Outbox {
    /// The whole encoded frame; empty when idle.
    frame: Vec<u8>,
    /// Bytes of `frame` already written into fragments.
    sent: usize,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.frame.len())
            .field("sent", &self.sent)
            .finish()
    }
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every fragment has been written (or nothing was loaded).
    pub fn is_empty(&self) -> bool {
        self.sent == self.frame.len()
    }

    /// Whether some but not all fragments have been written: the peer holds part of a frame.
    pub fn is_cut_short(&self) -> bool {
        self.sent > 0 && !self.is_empty()
    }

    /// Bytes of the loaded frame not written yet.
    pub fn pending(&self) -> usize {
        self.frame.len() - self.sent
    }

    /// Encodes `message` to be written as fragments by [`pump`](Self::pump). The outbox must be
    /// empty.
    pub fn load(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        if !self.is_empty() {
            return Err(Error::Ring(RingError::Full));
        }
        self.reset();
        wire::encode(request_id, message, &mut self.frame)?;
        Ok(())
    }

    /// Writes as many fragments as `tx` has free slots, staged (the caller publishes them with
    /// `flush`); returns how many.
    pub fn pump(&mut self, tx: &mut Producer) -> Result<usize, RingError> {
        if self.is_empty() {
            return Ok(0);
        }
        let capacity = tx.max_message();
        let Some(room) = capacity.checked_sub(FRAGMENT_PREFIX).filter(|&n| n > 0) else {
            return Err(RingError::TooLarge {
                len: self.frame.len(),
                capacity,
            });
        };
        let (kind, request_id) = (self.frame[2], wire::request_id_of(&self.frame));
        let total = self.frame.len() as u64;
        let mut written = 0;
        while !self.is_empty() {
            let mut slot = match tx.try_reserve() {
                Ok(slot) => slot,
                Err(RingError::Full) => break,
                Err(e) => return Err(e),
            };
            let n = room.min(self.pending());
            let chunk = &self.frame[self.sent..self.sent + n];
            let len = encode_fragment(request_id, kind, total, self.sent as u64, chunk, slot.buf())
                .ok_or(RingError::Corrupt("fragment does not fit its slot"))?;
            slot.stage(len)?;
            self.sent += n;
            written += 1;
        }
        if self.is_empty() {
            self.reset();
        }
        Ok(written)
    }

    /// Forgets the loaded frame.
    pub fn reset(&mut self) {
        self.frame.clear();
        self.sent = 0;
        if self.frame.capacity() > RETAIN {
            self.frame = Vec::new();
        }
    }
}

/// How a frame of `len` bytes goes onto a ring whose slots hold `capacity` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// In one slot, encoded in place.
    Slot,
    /// As fragments.
    Fragments,
    /// Not at all: over [`max_frame`].
    TooLarge,
}

fn route(len: usize, capacity: usize) -> Route {
    if len <= capacity {
        Route::Slot
    } else if len <= max_frame(capacity) {
        Route::Fragments
    } else {
        Route::TooLarge
    }
}

/// Encodes `message` into the next free slot of `tx`, staged.
fn stage_slot(tx: &mut Producer, request_id: u64, message: &Message<'_>) -> Result<()> {
    let mut slot = tx.try_reserve()?;
    let n = wire::encode_into(request_id, message, slot.buf())?;
    slot.stage(n)?;
    Ok(())
}

/// Queues a request on a client's ring without waiting: in one slot if it fits, else into the
/// (empty) `outbox` with as many fragments written as fit. Fails with `RingError::Full` while
/// the outbox still holds fragments of an earlier frame or the ring is full, and with
/// `RingError::TooLarge` for a frame over [`max_frame`]. The caller publishes with `flush`.
pub(crate) fn queue(
    tx: &mut Producer,
    outbox: &mut Outbox,
    request_id: u64,
    message: &Message<'_>,
) -> Result<()> {
    outbox.pump(tx)?;
    if !outbox.is_empty() {
        return Err(Error::Ring(RingError::Full));
    }
    let capacity = tx.max_message();
    let len = message.frame_len()?;
    match route(len, capacity) {
        Route::Slot => stage_slot(tx, request_id, message),
        Route::Fragments => {
            outbox.load(request_id, message)?;
            outbox.pump(tx)?;
            Ok(())
        }
        Route::TooLarge => Err(Error::Ring(RingError::TooLarge {
            len,
            capacity: max_frame(capacity),
        })),
    }
}

/// A sender that may wait for room: a server's response ring while it replies.
pub(crate) trait Room {
    /// The ring's producer.
    fn producer(&mut self) -> &mut Producer;
    /// Publishes what is staged (so the peer can drain it) and waits until a slot is free, or
    /// fails once the peer made no progress for the transport's deadline.
    fn wait_for_room(&mut self) -> Result<()>;
}

/// Sends a reply, waiting for room as needed: in one slot if it fits, as fragments if it does
/// not, and as a `TOOLARGE` error reply if it is over [`max_frame`]. Staged; the caller
/// publishes. If the wait fails after some fragments were written, the outbox keeps the rest
/// ([`Outbox::is_cut_short`]): the peer holds part of a frame and the link is over.
pub(crate) fn reply(
    room: &mut dyn Room,
    outbox: &mut Outbox,
    request_id: u64,
    message: &Message<'_>,
) -> Result<()> {
    if !outbox.is_empty() {
        return Err(cut_short(outbox));
    }
    let capacity = room.producer().max_message();
    let len = message.frame_len()?;
    match route(len, capacity) {
        Route::Slot => reply_in_slot(room, request_id, message),
        Route::Fragments => {
            outbox.load(request_id, message)?;
            loop {
                let pumped = outbox.pump(room.producer()).map_err(Error::from);
                let result = match pumped {
                    Ok(_) if outbox.is_empty() => return Ok(()),
                    Ok(_) => room.wait_for_room(),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    if !outbox.is_cut_short() {
                        // Nothing reached the ring: the reply is lost, the link is fine.
                        outbox.reset();
                    }
                    return Err(e);
                }
            }
        }
        Route::TooLarge => {
            let max = max_frame(capacity);
            let text = format!("reply of {len} bytes exceeds the link's limit of {max} bytes");
            let error = Message::Error {
                code: FragmentError::TooLarge {
                    request_id,
                    len: len as u64,
                    max,
                }
                .code(),
                message: &text,
            };
            reply_in_slot(room, request_id, &error)
        }
    }
}

fn reply_in_slot(room: &mut dyn Room, request_id: u64, message: &Message<'_>) -> Result<()> {
    loop {
        match stage_slot(room.producer(), request_id, message) {
            Err(Error::Ring(RingError::Full)) => room.wait_for_room()?,
            other => return other,
        }
    }
}

/// The error of a link whose outbox holds the rest of a reply that could not be sent.
pub(crate) fn cut_short(outbox: &Outbox) -> Error {
    Error::Protocol(format!(
        "a fragmented reply was cut short with {} bytes unsent: the client stopped draining",
        outbox.pending()
    ))
}

/// Serves one slot taken from a server's request ring: a frame goes to [`serve_raw`]; a fragment
/// goes into `reassembly`, and the frame it completes to [`serve_raw`]. A broken sequence gets
/// one error reply (`MALFORMED` or `TOOLARGE`) to its request id. Returns whether a request was
/// answered (a fragment that does not complete its frame is not one).
pub(crate) fn serve_slot(
    reassembly: &mut Reassembly,
    raw: &[u8],
    limits: &Limits,
    replier: &mut dyn Replier,
    handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
) -> Result<bool> {
    if !is_fragment(raw) {
        if let Some(request_id) = reassembly.interrupt() {
            refuse(
                replier,
                &FragmentError::Malformed {
                    request_id,
                    reason: "fragments cut short by another frame",
                },
            )?;
        }
        serve_raw(raw, limits, replier, handle)?;
        return Ok(true);
    }
    let served = match reassembly.push(raw, limits) {
        Ok(Some(frame)) => serve_raw(frame, limits, replier, handle).map(|()| true),
        Ok(None) => Ok(false),
        Err(e) => refuse(replier, &e).map(|()| true),
    };
    reassembly.finish();
    served
}

fn refuse(replier: &mut dyn Replier, e: &FragmentError) -> Result<()> {
    let message = e.to_string();
    replier.reply(
        e.request_id(),
        &Message::Error {
            code: e.code(),
            message: &message,
        },
    )
}

/// Takes one slot from a client's response ring: a frame is decoded and handed to `f`; a fragment
/// goes into `reassembly`, and the frame it completes is decoded and handed to `f`. Returns
/// whether `f` was called. A reply that does not decode, or a broken fragment sequence, is
/// [`Error::Protocol`] or [`Error::Wire`]: the server is broken and so is the link.
pub(crate) fn receive(
    reassembly: &mut Reassembly,
    raw: &[u8],
    limits: &Limits,
    f: &mut dyn FnMut(Frame<'_>),
) -> Result<bool> {
    if !is_fragment(raw) {
        if let Some(id) = reassembly.interrupt() {
            return Err(Error::Protocol(format!(
                "the fragments of reply {id} were cut short by another frame"
            )));
        }
        let (frame, _) = wire::decode(raw, limits)?;
        f(frame);
        return Ok(true);
    }
    let delivered = match reassembly.push(raw, limits) {
        Ok(Some(bytes)) => match wire::decode(bytes, limits) {
            Ok((frame, used)) if used == bytes.len() => {
                f(frame);
                Ok(true)
            }
            Ok(_) => Err(Error::Protocol(
                "trailing bytes after a reassembled reply".into(),
            )),
            Err(e) => Err(Error::Wire(e)),
        },
        Ok(None) => Ok(false),
        Err(e) => Err(Error::Protocol(e.to_string())),
    };
    reassembly.finish();
    delivered
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ring::{channel, Consumer, RingConfig};
    use crate::wire::{List, DEFAULT_MAX_PAYLOAD};

    fn ring(slot_count: u32, slot_size: u32) -> (Producer, Consumer) {
        channel(RingConfig {
            slot_count,
            slot_size,
        })
        .unwrap()
    }

    /// A Set whose frame is exactly `len` bytes (len >= 25).
    fn set_of_len(value: &mut Vec<u8>, len: usize, seed: u8) -> Message<'_> {
        let n = len - HEADER_LEN - 9;
        value.clear();
        value.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        Message::Set {
            key: b"k",
            value: value.as_slice(),
        }
    }

    /// Drains `rx` through a reassembly, collecting (id, frame bytes re-encoded).
    fn drain(rx: &mut Consumer, re: &mut Reassembly, got: &mut Vec<(u64, Vec<u8>)>) -> usize {
        let limits = Limits::default();
        let burst = rx.pop_burst(usize::MAX).unwrap();
        let n = burst.len();
        for raw in burst.iter() {
            receive(re, raw, &limits, &mut |f| {
                let mut out = Vec::new();
                wire::encode(f.request_id, &f.message, &mut out).unwrap();
                got.push((f.request_id, out));
            })
            .unwrap();
        }
        n
    }

    #[test]
    fn max_frame_is_the_wire_limit_when_a_fragment_fits() {
        assert_eq!(max_frame(33), HEADER_LEN + DEFAULT_MAX_PAYLOAD);
        assert_eq!(max_frame(32), 32);
        assert_eq!(max_frame(8), 8);
        assert_eq!(route(100, 100), Route::Slot);
        assert_eq!(route(101, 100), Route::Fragments);
        assert_eq!(
            route(HEADER_LEN + DEFAULT_MAX_PAYLOAD + 1, 100),
            Route::TooLarge
        );
        assert_eq!(route(33, 32), Route::TooLarge);
    }

    #[test]
    fn debug_shows_sizes_not_bytes() {
        let (mut tx, _rx) = ring(2, 64);
        let mut outbox = Outbox::new();
        let value = vec![0xab; 1000];
        queue(
            &mut tx,
            &mut outbox,
            1,
            &Message::Value {
                value: Some(&value),
            },
        )
        .unwrap();
        let text = format!("{outbox:?}");
        // Two slots of 56 bytes: two chunks of 24.
        assert_eq!(text, "Outbox { len: 1020, sent: 48 }");
        assert!(format!("{:?}", Reassembly::new()).len() < 100);
    }

    #[test]
    fn fragment_layout() {
        let mut out = [0u8; 40];
        let n = encode_fragment(7, 0x82, 1000, 64, b"abcd", &mut out).unwrap();
        assert_eq!(n, FRAGMENT_PREFIX + 4);
        assert_eq!(out[..8], [MAGIC, VERSION, 0x82, FLAG_FRAGMENT, 20, 0, 0, 0]);
        assert_eq!(wire::request_id_of(&out), 7);
        assert_eq!(out[16..24], 1000u64.to_le_bytes());
        assert_eq!(out[24..32], 64u64.to_le_bytes());
        assert_eq!(&out[32..36], b"abcd");
        assert!(is_fragment(&out[..n]));
        // The decoder never takes a fragment for a frame.
        assert_eq!(
            wire::decode(&out[..n], &Limits::default()).unwrap_err(),
            wire::WireError::Malformed("unknown flags")
        );
        assert!(encode_fragment(7, 0x82, 1000, 64, b"", &mut out).is_none());
        assert!(encode_fragment(7, 0x82, 1000, 64, &[0; 9], &mut out).is_none());
    }

    /// Frames of every size around the slot capacity, and many times it, through a ring much
    /// smaller than the largest: sent as fragments as room appears, in order with small ones.
    #[test]
    fn frames_of_any_size_round_trip_through_a_small_ring() {
        let (mut tx, mut rx) = ring(4, 128);
        let cap = tx.max_message();
        let sizes = [
            25,
            cap - 1,
            cap,
            cap + 1,
            FRAGMENT_PREFIX + 1,
            2 * cap,
            3 * (cap - FRAGMENT_PREFIX),
            3 * (cap - FRAGMENT_PREFIX) + 1,
            4 * 128 * 10 + 7, // ten times the whole ring
            30,
        ];
        let mut outbox = Outbox::new();
        let mut re = Reassembly::new();
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut value = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let id = 100 + i as u64;
            let m = set_of_len(&mut value, len, i as u8);
            assert_eq!(m.frame_len().unwrap(), len);
            let mut bytes = Vec::new();
            wire::encode(id, &m, &mut bytes).unwrap();
            want.push((id, bytes));
            let mut spins = 0;
            loop {
                match queue(&mut tx, &mut outbox, id, &m) {
                    Ok(()) => break,
                    Err(Error::Ring(RingError::Full)) => {
                        tx.flush();
                        drain(&mut rx, &mut re, &mut got);
                        spins += 1;
                        assert!(spins < 10_000, "no progress");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        while !outbox.is_empty() {
            outbox.pump(&mut tx).unwrap();
            tx.flush();
            drain(&mut rx, &mut re, &mut got);
        }
        tx.flush();
        drain(&mut rx, &mut re, &mut got);
        assert!(re.is_idle());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0);
            assert!(g.1 == w.1, "frame {} differs", w.0);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_anything_is_sent() {
        let (mut tx, mut rx) = ring(4, 128);
        let mut outbox = Outbox::new();
        let big = vec![0u8; DEFAULT_MAX_PAYLOAD];
        let err = queue(
            &mut tx,
            &mut outbox,
            1,
            &Message::Set {
                key: b"k",
                value: &big,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Ring(RingError::TooLarge { capacity, .. })
                if capacity == HEADER_LEN + DEFAULT_MAX_PAYLOAD),
            "{err:?}"
        );
        assert!(outbox.is_empty());
        tx.flush();
        assert!(rx.try_pop().unwrap().is_none());
    }

    /// Slots pushed raw, to play a broken peer.
    fn push_fragment(tx: &mut Producer, id: u64, kind: u8, total: u64, offset: u64, chunk: &[u8]) {
        let mut slot = tx.try_reserve().unwrap();
        let n = encode_fragment(id, kind, total, offset, chunk, slot.buf()).unwrap();
        slot.commit(n).unwrap();
    }

    fn frame_bytes(id: u64, m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(id, m, &mut out).unwrap();
        out
    }

    #[derive(Default)]
    struct Collect(Vec<(u64, Vec<u8>)>);

    impl Replier for Collect {
        fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
            self.0.push((request_id, frame_bytes(request_id, message)));
            Ok(())
        }
    }

    /// Serves every slot in `rx`; returns (served requests' ids, error replies as (id, code)).
    fn serve_all(rx: &mut Consumer, re: &mut Reassembly) -> (Vec<u64>, Vec<(u64, String)>) {
        let limits = Limits::default();
        let mut replier = Collect::default();
        let mut served = Vec::new();
        let burst = rx.pop_burst(usize::MAX).unwrap();
        for raw in burst.iter() {
            serve_slot(re, raw, &limits, &mut replier, &mut |f, _| {
                served.push(f.request_id)
            })
            .unwrap();
        }
        let errors = replier
            .0
            .iter()
            .map(|(id, bytes)| {
                let (f, _) = wire::decode(bytes, &limits).unwrap();
                let Message::Error { code, .. } = f.message else {
                    panic!("not an error: {f:?}")
                };
                (*id, code.to_string())
            })
            .collect();
        (served, errors)
    }

    #[test]
    fn broken_sequences_get_one_error_each_and_the_link_recovers() {
        let (mut tx, mut rx) = ring(64, 64);
        let mut re = Reassembly::new();
        let keys: [&[u8]; 2] = [&[1; 40], &[2; 40]];
        let m = Message::MultiGet {
            keys: List::new(&keys),
        };
        let whole = frame_bytes(5, &m);
        let total = whole.len() as u64;
        let kind = whole[2];
        let chunks: Vec<&[u8]> = whole.chunks(20).collect();
        let good = |tx: &mut Producer, id: u64| {
            let bytes = frame_bytes(id, &m);
            for (i, c) in bytes.chunks(20).enumerate() {
                push_fragment(tx, id, kind, total, (i * 20) as u64, c);
            }
        };

        // 1. A sequence without its first fragment: one error, the rest dropped quietly.
        for (i, c) in chunks.iter().enumerate().skip(1) {
            push_fragment(&mut tx, 5, kind, total, (i * 20) as u64, c);
        }
        // 2. A gap in the middle of request 6.
        push_fragment(&mut tx, 6, kind, total, 0, chunks[0]);
        push_fragment(&mut tx, 6, kind, total, 40, chunks[2]);
        push_fragment(&mut tx, 6, kind, total, 60, chunks[3]);
        // 3. A total over the wire limit, refused from the first fragment.
        push_fragment(&mut tx, 7, kind, 1 << 40, 0, &[0; 8]);
        push_fragment(&mut tx, 7, kind, 1 << 40, 8, &[0; 8]);
        // 4. Request 8's fragments cut short by a plain frame (9), which is still served.
        push_fragment(&mut tx, 8, kind, total, 0, chunks[0]);
        tx.try_push(&frame_bytes(9, &Message::Get { key: b"k" }))
            .unwrap();
        // 5. A total that changes midway.
        push_fragment(&mut tx, 10, kind, total, 0, chunks[0]);
        push_fragment(&mut tx, 10, kind, total + 1, 20, chunks[1]);
        // 6. A fragment whose header length lies.
        {
            let mut slot = tx.try_reserve().unwrap();
            let n = encode_fragment(11, kind, total, 0, chunks[0], slot.buf()).unwrap();
            slot.buf()[4] = 0xff;
            slot.commit(n).unwrap();
        }
        // 7. Fragments that reassemble into a frame that does not decode.
        let mut bad = frame_bytes(12, &m);
        bad[HEADER_LEN] = 0xff; // a key count the payload cannot hold
        for (i, c) in bad.chunks(20).enumerate() {
            push_fragment(&mut tx, 12, kind, total, (i * 20) as u64, c);
        }
        // 8. Whole fragments whose frame header names another request.
        for (i, c) in chunks.iter().enumerate() {
            push_fragment(&mut tx, 13, kind, total, (i * 20) as u64, c);
        }
        // Then a good fragmented request: served as usual.
        good(&mut tx, 14);

        let (served, errors) = serve_all(&mut rx, &mut re);
        assert_eq!(served, [9, 14]);
        let codes: Vec<(u64, &str)> = errors.iter().map(|(id, c)| (*id, c.as_str())).collect();
        assert_eq!(
            codes,
            [
                (5, "MALFORMED"),
                (6, "MALFORMED"),
                (7, "TOOLARGE"),
                (8, "MALFORMED"),
                (10, "MALFORMED"),
                (11, "MALFORMED"),
                // Reassembled, then refused by the decoder as any bad frame is.
                (12, "MALFORMED"),
                (13, "MALFORMED"),
            ]
        );
        assert!(re.is_idle());
    }

    #[test]
    fn a_client_treats_broken_replies_as_a_broken_link() {
        let limits = Limits::default();
        let m = Message::Value {
            value: Some(&[3u8; 100]),
        };
        let whole = frame_bytes(1, &m);
        let mut frag = [0u8; 64];
        let mut re = Reassembly::new();
        let mut calls = 0;
        let mut f = |_: Frame<'_>| calls += 1;
        // A plain reply in the middle of a fragmented one.
        let n =
            encode_fragment(1, whole[2], whole.len() as u64, 0, &whole[..20], &mut frag).unwrap();
        assert!(!receive(&mut re, &frag[..n], &limits, &mut f).unwrap());
        let plain = frame_bytes(2, &Message::Ok);
        let err = receive(&mut re, &plain, &limits, &mut f).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        // A fragment that does not start its frame.
        let n = encode_fragment(
            3,
            whole[2],
            whole.len() as u64,
            20,
            &whole[20..40],
            &mut frag,
        )
        .unwrap();
        let err = receive(&mut re, &frag[..n], &limits, &mut f).unwrap_err();
        assert!(err.to_string().contains("without the start"), "{err}");
        assert_eq!(calls, 0);
    }

    /// Random bit flips and truncations of fragment sequences: never a panic, never more than
    /// one frame per sequence, and the reassembly buffer stays within the limit.
    #[test]
    fn random_corruption_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let limits = Limits {
            max_payload: 1 << 12,
        };
        let mut re = Reassembly::new();
        let mut outcomes = [0usize; 3];
        for round in 0..5_000u64 {
            let m = Message::Value {
                value: Some(&[7u8; 300][..(round % 300) as usize]),
            };
            let whole = frame_bytes(round, &m);
            let mut frags: Vec<Vec<u8>> = whole
                .chunks(1 + (next() % 64) as usize)
                .scan(0usize, |at, c| {
                    let mut out = vec![0u8; FRAGMENT_PREFIX + c.len()];
                    encode_fragment(round, whole[2], whole.len() as u64, *at as u64, c, &mut out)
                        .unwrap();
                    *at += c.len();
                    Some(out)
                })
                .collect();
            for _ in 0..next() % 3 {
                let i = (next() % frags.len() as u64) as usize;
                let at = (next() % frags[i].len() as u64) as usize;
                frags[i][at] ^= 1 << (next() % 8);
            }
            if next() % 5 == 0 {
                let i = (next() % frags.len() as u64) as usize;
                let cut = (next() % (frags[i].len() as u64 + 1)) as usize;
                frags[i].truncate(cut);
            }
            if next() % 7 == 0 {
                frags.remove((next() % frags.len() as u64) as usize);
            }
            let mut frames = 0;
            for raw in &frags {
                if !is_fragment(raw) {
                    re.interrupt();
                    outcomes[2] += 1;
                    continue;
                }
                match re.push(raw, &limits) {
                    Ok(Some(bytes)) => {
                        assert!(bytes.len() <= HEADER_LEN + limits.max_payload);
                        frames += 1;
                        outcomes[0] += 1;
                    }
                    Ok(None) => {}
                    Err(_) => outcomes[1] += 1,
                }
                assert!(re.buf.capacity() <= RETAIN.max(HEADER_LEN + limits.max_payload));
            }
            assert!(frames <= 1, "round {round}: {frames} frames");
            re.interrupt();
        }
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }
}
