//! Transport-neutral endpoints, in bursts (eRPC's `Transport` shape).
//!
//! The module's data-plane threads see every connection as a [`ServerLink`]; the compute
//! library sees one as a [`ClientLink`]. Each transport (shm, tcp over io_uring, rdma) implements
//! both; frames are [`wire`] frames on every transport. On the ring transports
//! (shm, rdma) a frame larger than a slot is cut into fragments and put back together by the link
//! ([`crate::frag`]), so callers see whole frames of any size up to the wire limit.
//!
//! This file holds only what every transport shares: the traits and [`serve_raw`]. The shm
//! transport's endpoints are in `link/shm.rs` ([`ShmClientLink`], and [`ServerLink`] for
//! [`ShmServer`](crate::shm::ShmServer)), the tcp and rdma ones under [`crate::tcp`] and `rdma`.

mod shm;

pub use shm::ShmClientLink;

use std::time::Duration;

use crate::wire::{self, ErrorCode, Frame, Limits, Message};
use crate::Result;

/// Sends a reply while a burst of requests is being served.
pub trait Replier {
    /// Queues a reply to `request_id`; replies are published when the burst ends.
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()>;

    /// The identity the request's connection authenticated as, on a link that serves many
    /// authenticated connections (tcp); `None` where the link itself is the identity.
    fn peer(&self) -> Option<u64> {
        None
    }
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
    /// Checks actively that the peer is still there, where it could vanish without a trace that
    /// [`peer_gone`](ServerLink::peer_gone) sees (an RDMA peer that died: nothing tells its queue
    /// pair's peer until a write to it fails). Cheap, never blocks; a server calls it now and
    /// then (the module: every ~100 ms, before `peer_gone`). The default does nothing.
    fn probe_peer(&mut self) {}
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
    /// The doorbell the server rings when it publishes a reply to a parked client, if the link
    /// has one (shared memory): a client of several links parks on all of theirs at once
    /// ([`crate::backoff::wait_any`]) instead of in one link's [`wait`](ClientLink::wait).
    fn doorbell(&self) -> Option<&crate::backoff::Doorbell> {
        None
    }
    /// Whether a reply is waiting to be polled (the re-check before parking on the doorbell).
    fn reply_pending(&self) -> bool {
        true
    }
    /// The largest frame (header and payload) this link carries. The ring links fragment frames
    /// larger than a slot, so for them this is the wire limit (`HEADER_LEN +
    /// wire::DEFAULT_MAX_PAYLOAD`), not the slot size; [`queue`](ClientLink::queue) refuses a
    /// larger frame with `RingError::TooLarge`.
    fn max_frame(&self) -> usize;
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
