//! Transport-neutral endpoints, in bursts (eRPC's `Transport` shape).
//!
//! The module's data-plane threads see every connection as a [`ServerLink`]; the compute
//! library sees one as a [`ClientLink`]. Each transport (shm, tcp over io_uring, rdma) implements
//! both; frames are [`wire`](crate::wire) frames on every transport.

use std::time::Duration;

use crate::backoff::{Backoff, BackoffConfig};
use crate::ring::RingError;
use crate::shm::{PeerState, ShmClient, ShmServer};
use crate::wire::{self, ErrorCode, Frame, Limits, Message};
use crate::{Error, Result};

/// Sends a reply while a burst of requests is being served.
pub trait Replier {
    /// Queues a reply to `request_id`; replies are published when the burst ends.
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()>;
}

/// The server end of one data-plane connection.
pub trait ServerLink: Send {
    /// Serves up to `max` waiting requests: `handle` gets each decoded request and a [`Replier`].
    /// A frame that does not decode gets an `Error` reply (or, where the stream cannot be
    /// resynchronised, closes the link). Returns how many requests were taken; never blocks.
    fn serve(
        &mut self,
        max: usize,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> Result<usize>;
    /// Whether a request is waiting (a cheap check, for the poll loop).
    fn has_pending(&self) -> bool;
    /// Whether the peer is gone for good, so the link can be dropped and its resources reclaimed.
    fn peer_gone(&self) -> bool;
    /// A short name for logs, e.g. `shm /dev/shm/autoloc-12-3`.
    fn describe(&self) -> String;
    /// Sleeps until a request may be waiting, or at most `timeout`: the idle step of a thread
    /// that serves only this link. The default just sleeps.
    fn park(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}

/// The client end of one data-plane connection.
pub trait ClientLink: Send {
    /// Queues a request; it is sent by [`flush`](ClientLink::flush) at the latest. A transport
    /// with bounded room fails with `Error::Ring(RingError::Full)` instead of waiting: the caller
    /// flushes, drains replies with [`poll`](ClientLink::poll), and tries again.
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()>;
    /// Sends everything queued.
    fn flush(&mut self) -> Result<()>;
    /// Calls `f` with every reply that has arrived; returns how many. Never blocks.
    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize>;
    /// Waits a little for a reply (spins, yields, then parks), at most `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<()>;
    /// Whether the server is gone for good.
    fn peer_gone(&self) -> bool;
    /// The largest frame this link carries.
    fn max_frame(&self) -> usize;
}

fn ring_error(e: RingError) -> Error {
    Error::Ring(e)
}

/// Serves one request frame taken from a ring: decodes it and hands it to `handle`, or, if it
/// does not decode (or has bytes after the frame), replies `MALFORMED` to the request id in its
/// header. Every ring-based transport serves its bursts through this.
pub fn serve_raw(
    raw: &[u8],
    limits: &Limits,
    replier: &mut dyn Replier,
    handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
) -> Result<()> {
    match wire::decode(raw, limits) {
        Ok((frame, used)) if used == raw.len() => {
            handle(frame, replier);
            Ok(())
        }
        Ok(_) => replier.reply(
            wire::request_id_of(raw),
            &Message::Error {
                code: ErrorCode::Malformed,
                message: "trailing bytes after frame",
            },
        ),
        Err(e) => {
            let message = format!("bad frame: {e}");
            replier.reply(
                wire::request_id_of(raw),
                &Message::Error {
                    code: e.code(),
                    message: &message,
                },
            )
        }
    }
}

/// Replies go straight into the response ring's slots, published at the end of the burst.
struct ShmReplier<'a>(&'a mut crate::ring::Producer);

impl Replier for ShmReplier<'_> {
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        let capacity = self.0.max_message();
        let len = message.frame_len()?;
        if len > capacity {
            // Too large for one slot: say so instead of the value.
            let msg = format!("reply of {len} bytes exceeds the ring slot of {capacity} bytes");
            let err = Message::Error {
                code: ErrorCode::TooLarge,
                message: &msg,
            };
            return self.stage(request_id, &err);
        }
        self.stage(request_id, message)
    }
}

/// How long a server waits for room in a client's response ring before giving the link up.
/// It may hold Redis's lock meanwhile, so this is short: a live client drains its replies
/// continuously (it keeps at most as many requests in flight as the ring has slots).
pub const REPLY_ROOM_DEADLINE: Duration = Duration::from_millis(20);

impl ShmReplier<'_> {
    fn stage(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        let mut deadline = None;
        let mut slot = loop {
            match self.0.try_reserve() {
                Ok(s) => break s,
                // The client is slow to drain: publish what is staged and let it catch up.
                Err(RingError::Full) => {
                    self.0.flush();
                    let d = *deadline
                        .get_or_insert_with(|| std::time::Instant::now() + REPLY_ROOM_DEADLINE);
                    if std::time::Instant::now() > d {
                        return Err(ring_error(RingError::Full));
                    }
                    std::thread::yield_now();
                }
                Err(e) => return Err(ring_error(e)),
            }
        };
        let n = wire::encode_into(request_id, message, slot.buf())?;
        slot.stage(n).map_err(ring_error)
    }
}

impl ServerLink for ShmServer {
    fn serve(
        &mut self,
        max: usize,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> Result<usize> {
        let limits = Limits::default();
        let (rx, tx) = self.split();
        let burst = rx.pop_burst(max).map_err(ring_error)?;
        let n = burst.len();
        let mut replier = ShmReplier(tx);
        for raw in burst.iter() {
            serve_raw(raw, &limits, &mut replier, handle)?;
        }
        drop(burst);
        tx.flush();
        Ok(n)
    }

    fn has_pending(&self) -> bool {
        ShmServer::has_pending(self)
    }

    fn peer_gone(&self) -> bool {
        matches!(self.client(), PeerState::Dead { .. } | PeerState::Detached)
    }

    fn describe(&self) -> String {
        format!("shm {}", self.path().display())
    }

    fn park(&mut self, timeout: Duration) {
        // The client rings the request ring's doorbell after publishing if we announced sleep.
        let (rx, _) = self.split();
        let rx = &*rx;
        rx.doorbell().wait(|| !rx.has_pending(), timeout);
    }
}

/// The client side of an shm link, with its idle backoff.
#[derive(Debug)]
pub struct ShmClientLink {
    client: ShmClient,
    backoff: Backoff,
    /// Waits since the server's liveness was last checked (a `kill(pid, 0)` syscall, ~1 us:
    /// too dear for every idle step of a sub-microsecond round trip).
    waits: u32,
}

/// Idle steps between two checks that the server is still alive.
const LIVENESS_EVERY: u32 = 256;

impl ShmClientLink {
    /// Wraps an attached client; `backoff` says how it waits for replies.
    pub fn new(client: ShmClient, backoff: BackoffConfig) -> Self {
        ShmClientLink {
            client,
            backoff: Backoff::new(backoff),
            waits: 0,
        }
    }
}

impl ClientLink for ShmClientLink {
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        // A full ring is reported, not waited on: the caller must keep draining replies while
        // it waits for room, or client and server could each wait for the other.
        self.client.queue(request_id, message).map_err(ring_error)
    }

    fn flush(&mut self) -> Result<()> {
        self.client.flush();
        Ok(())
    }

    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        let limits = Limits::default();
        let burst = self.client.recv_burst(usize::MAX).map_err(ring_error)?;
        let n = burst.len();
        for raw in burst.iter() {
            let (frame, _) = wire::decode(raw, &limits)?;
            f(frame);
        }
        if n > 0 {
            self.backoff.reset();
        }
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        let _ = timeout; // each backoff step is bounded by the park timeout of its config
        self.waits += 1;
        if self.waits >= LIVENESS_EVERY || self.backoff.phase() == crate::backoff::Phase::Park {
            self.waits = 0;
            if self.peer_gone() {
                return Err(Error::Closed);
            }
        }
        self.client.wait(&mut self.backoff);
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        matches!(
            self.client.server(),
            PeerState::Dead { .. } | PeerState::Detached
        )
    }

    fn max_frame(&self) -> usize {
        self.client.max_frame()
    }
}
