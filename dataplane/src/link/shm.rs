//! The shm transport's endpoints: [`ServerLink`] for [`ShmServer`] (replies straight into the
//! response ring's slots, a few published at a time) and [`ShmClientLink`], the client side with
//! its idle backoff. Frames larger than a slot go as fragments ([`crate::frag`]).

use std::time::{Duration, Instant};

use super::{ClientLink, Replier, ServerLink};
use crate::backoff::{Backoff, BackoffConfig, Phase};
use crate::frag::{self, Outbox, Reassembly, Room};
use crate::ring::{Producer, RingError};
use crate::shm::{PeerState, ServeParts, ShmClient, ShmServer};
use crate::wire::{Frame, Limits, Message};
use crate::{Error, Result};

fn ring_error(e: RingError) -> Error {
    Error::Ring(e)
}

/// Replies go straight into the response ring's slots (as fragments if they are larger than a
/// slot), published every [`PUBLISH_EVERY`] replies, at the end of the burst and whenever the ring fills.
struct ShmReplier<'a> {
    room: ShmRoom<'a>,
    outbox: &'a mut Outbox,
}

impl Replier for ShmReplier<'_> {
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        frag::reply(&mut self.room, self.outbox, request_id, message)
    }
}

/// Replies an shm server publishes at once within a burst. Publishing each would cost a fence
/// per reply (the doorbell check); publishing only at the end of a burst of 16 kept the client
/// idle while the server served them, and the server idle while the client answered: 1.6 M GETs/s
/// with 16 in flight where either side alone does more than 2.5 M.
const PUBLISH_EVERY: usize = 4;

/// The response ring of an shm server, which waits for room by yielding until its deadline.
struct ShmRoom<'a> {
    tx: &'a mut Producer,
    deadline: Duration,
}

impl Room for ShmRoom<'_> {
    fn producer(&mut self) -> &mut Producer {
        self.tx
    }

    fn wait_for_room(&mut self) -> Result<()> {
        // The client is slow to drain: publish what is staged and let it catch up.
        self.tx.flush();
        let deadline = Instant::now() + self.deadline;
        loop {
            match self.tx.try_reserve() {
                // Dropping the reservation leaves the ring unchanged.
                Ok(_) => return Ok(()),
                Err(RingError::Full) => {}
                Err(e) => return Err(ring_error(e)),
            }
            if Instant::now() > deadline {
                return Err(ring_error(RingError::Full));
            }
            std::thread::yield_now();
        }
    }
}

impl ServerLink for ShmServer {
    fn serve(
        &mut self,
        max: usize,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> Result<usize> {
        // Nothing is served to a client that did not present the segment's secret.
        if !self.admitted()? {
            return Ok(0);
        }
        let limits = Limits::default();
        let ServeParts {
            rx,
            tx,
            reassembly,
            outbox,
            reply_room_deadline,
        } = self.serve_parts();
        if outbox.is_cut_short() {
            return Err(frag::cut_short(outbox));
        }
        let burst = rx.pop_burst(max).map_err(ring_error)?;
        let mut replier = ShmReplier {
            room: ShmRoom {
                tx,
                deadline: reply_room_deadline,
            },
            outbox,
        };
        let mut served = 0;
        for raw in burst.iter() {
            served += usize::from(frag::serve_slot(
                reassembly,
                raw,
                &limits,
                &mut replier,
                handle,
            )?);
            // Replies are published a few at a time, not only when the burst ends: the client
            // works on the first ones (and sends the next requests) while the rest are served.
            if served.is_multiple_of(PUBLISH_EVERY) {
                replier.room.tx.flush();
            }
        }
        drop(burst);
        replier.room.tx.flush();
        if replier.outbox.is_cut_short() {
            // A reply stopped halfway (the client stopped draining): the client holds part of a
            // frame, so nothing more can be sent on this link.
            return Err(frag::cut_short(replier.outbox));
        }
        Ok(served)
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
    /// The fragments of a large request not written yet.
    outbox: Outbox,
    /// The large reply being put back together.
    reassembly: Reassembly,
}

/// Waits between two checks that the server is still alive.
const LIVENESS_EVERY: u32 = 256;
/// Most spinning steps one [`ShmClientLink::wait`] takes before returning to its caller.
const SPIN_BATCH: u32 = 32;

impl ShmClientLink {
    /// Wraps an attached client; `backoff` says how it waits for replies.
    pub fn new(client: ShmClient, backoff: BackoffConfig) -> Self {
        ShmClientLink {
            client,
            backoff: Backoff::new(backoff),
            waits: 0,
            outbox: Outbox::new(),
            reassembly: Reassembly::new(),
        }
    }

    /// Writes what fits of a large request's remaining fragments and publishes them.
    fn pump(&mut self) -> Result<()> {
        let (_, tx) = self.client.split();
        if self.outbox.pump(tx).map_err(ring_error)? > 0 {
            tx.flush();
        }
        Ok(())
    }
}

impl ClientLink for ShmClientLink {
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        // A full ring is reported, not waited on: the caller must keep draining replies while
        // it waits for room, or client and server could each wait for the other. A request
        // larger than a slot is taken whole and its fragments written as room appears (here and
        // in flush, poll and wait); requests queued meanwhile are refused as Full.
        let (_, tx) = self.client.split();
        frag::queue(tx, &mut self.outbox, request_id, message)
    }

    fn flush(&mut self) -> Result<()> {
        let (_, tx) = self.client.split();
        self.outbox.pump(tx).map_err(ring_error)?;
        tx.flush();
        Ok(())
    }

    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        let limits = Limits::default();
        let (rx, _) = self.client.split();
        let burst = rx.pop_burst(usize::MAX).map_err(ring_error)?;
        let slots = burst.len();
        let mut delivered = 0;
        for raw in burst.iter() {
            delivered += usize::from(frag::receive(&mut self.reassembly, raw, &limits, f)?);
        }
        drop(burst);
        if slots > 0 {
            self.backoff.reset();
        }
        // The slots just freed may be what the server waits for; ours may have room now too.
        self.pump()?;
        Ok(delivered)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        let _ = timeout; // each backoff step is bounded by the park timeout of its config
        self.waits += 1;
        if self.waits >= LIVENESS_EVERY || self.backoff.phase() == Phase::Park {
            self.waits = 0;
            if self.peer_gone() {
                return Err(Error::Closed);
            }
        }
        self.pump()?;
        if !self.outbox.is_empty() {
            // Waiting for room in the request ring, which rings no doorbell of ours: poll.
            std::thread::yield_now();
            return Ok(());
        }
        // While spinning, spin here until a reply is in, up to a batch of steps: the caller's
        // turn around its wait loop (a clock read for its deadline, a poll) costs more than a
        // step, and would otherwise be paid between every two looks at the ring.
        for _ in 0..SPIN_BATCH {
            if self.client.wait(&mut self.backoff) != Phase::Spin || self.client.has_pending() {
                break;
            }
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        matches!(
            self.client.server(),
            PeerState::Dead { .. } | PeerState::Detached
        )
    }

    fn doorbell(&self) -> Option<&crate::backoff::Doorbell> {
        Some(self.client.receive_doorbell())
    }

    fn reply_pending(&self) -> bool {
        self.client.has_pending()
    }

    fn max_frame(&self) -> usize {
        frag::max_frame(self.client.max_frame())
    }
}
