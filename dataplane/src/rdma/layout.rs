//! The registered region of one connection end, and what to copy to the peer: device-free logic.
//!
//! # Layout
//!
//! Each end registers one region with this layout (identical on both ends, so an offset names the
//! same field locally and remotely):
//!
//! ```text
//! offset               size                   field                       written by
//!      0                 64                   control line: peer state    the peer (RDMA WRITE)
//!     64    requests.region_len()             request ring  (client -> server), crate::ring layout
//!  64 + R  responses.region_len()             response ring (server -> client), crate::ring layout
//! ```
//!
//! # Mirrored rings
//!
//! Every ring exists twice: the producer's copy in the producer's region and the consumer's copy
//! in the consumer's region. Each end runs the unchanged [`crate::ring`] code on its own copy, the
//! producer a [`ring::Producer`] and the consumer a
//! [`ring::Consumer`], and [`Mirror::plan`] says what to copy so that the
//! other copy catches up:
//!
//! - producer -> consumer: the bytes of every slot published since the last plan (length prefix
//!   and message only, not the unused tail of the slot), then the producer index;
//! - consumer -> producer: the consumer index ("credit"), once it moved.
//!
//! Each field has one writer (the ring's invariant), so the copies never conflict: the consumer
//! copy's slots and producer index are written only by the producer's RDMA WRITEs, the producer
//! copy's consumer index only by the consumer's. The claim words and the doorbell stay local.
//!
//! Why the order of the plan is the publication protocol: the slot bytes come before the index
//! that publishes them, and [`super::datapath`] posts the plan's operations in order on one RC
//! queue pair, whose writes the responder executes in order. So when the consumer's Acquire load
//! sees the new producer index, the slot bytes have landed. Symmetrically, the consumer stores its
//! index (Release) only after reading the slots it frees, and the credit is copied after that
//! store, so the producer never overwrites a slot the consumer still reads. The producer's local
//! copy of a slot, the source of the WRITE, is reused only when the credit shows the consumer
//! passed it, which implies the WRITE has executed: the source bytes outlive the DMA.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ring::{self, Region, RingConfig, RingError, RING_HEADER_LEN, SLOT_PREFIX};

/// Bytes of the control line at the start of the region.
pub const CONTROL_LEN: usize = 64;
/// Offset of the peer-state word in the control line.
pub const PEER_STATE_OFFSET: usize = 0;
/// Peer-state value while the peer is attached (the region starts zeroed).
pub const PEER_ATTACHED: u64 = 0;
/// Peer-state value the peer writes when it detaches cleanly.
pub const PEER_DETACHED: u64 = 1;
/// Offset of the producer index within a ring (see [`crate::ring`]'s layout).
pub const PRODUCER_INDEX: usize = 64;
/// Offset of the consumer index within a ring.
pub const CONSUMER_INDEX: usize = 128;

// The ring layout this module mirrors; `ring.rs` asserts the same offsets.
const _: () = {
    assert!(RING_HEADER_LEN == 256);
    assert!(CONTROL_LEN & (ring::RING_ALIGN - 1) == 0);
    assert!(PRODUCER_INDEX & 7 == 0 && CONSUMER_INDEX & 7 == 0);
    // Index words are copied as native bytes: both ends must be little-endian.
    assert!(cfg!(target_endian = "little"));
};

/// Where the rings of one connection live in a region laid out as in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    pub requests: RingConfig,
    pub responses: RingConfig,
}

impl RegionLayout {
    /// Checks both geometries.
    pub fn validate(&self) -> Result<(), RingError> {
        self.requests.validate()?;
        self.responses.validate()
    }

    /// Offset of the request ring.
    pub fn request_offset(&self) -> usize {
        CONTROL_LEN
    }

    /// Offset of the response ring.
    pub fn response_offset(&self) -> usize {
        CONTROL_LEN + self.requests.region_len()
    }

    /// Bytes the region needs.
    pub fn len(&self) -> usize {
        self.response_offset() + self.responses.region_len()
    }

    /// Never empty (a control line at least); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the control line and both (empty) rings.
    ///
    /// # Safety
    ///
    /// Nobody else (no ring handle, no peer, no NIC) may access the region while this runs.
    pub unsafe fn init<R: Region + ?Sized>(&self, region: &R) -> Result<(), RingError> {
        self.validate()?;
        if region.size() < self.len() {
            return Err(RingError::Layout("region too small for both rings"));
        }
        // SAFETY: the control line lies inside the region (len() includes it) at a 64-aligned
        // offset, and the caller guarantees exclusive access.
        unsafe {
            word(region, PEER_STATE_OFFSET).store(PEER_ATTACHED, Ordering::Relaxed);
            ring::init(region, self.request_offset(), self.requests)?;
            ring::init(region, self.response_offset(), self.responses)?;
        }
        Ok(())
    }
}

/// The 8-byte word at `offset` of `region`, as an atomic.
///
/// # Safety
///
/// `offset + 8 <= region.size()` and `offset` is a multiple of 8. Every other access to the word
/// must be atomic too (or be the NIC's DMA, which writes aligned words whole).
pub(crate) unsafe fn word<R: Region + ?Sized>(region: &R, offset: usize) -> &AtomicU64 {
    debug_assert!(offset + 8 <= region.size() && offset & 7 == 0);
    // SAFETY: per the contract the word is in bounds and aligned (the region is 64-aligned);
    // AtomicU64 has the size and alignment of u64; the region outlives the borrow.
    unsafe { &*region.as_ptr().add(offset).cast::<AtomicU64>() }
}

/// One step of bringing the peer's copy up to date. Offsets are the same locally and remotely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Copy `len` bytes at `offset` of the local region to the same offset of the peer's.
    Bytes { offset: usize, len: usize },
    /// Store `value` in the 8-byte word at `offset` of the peer's region (a snapshot taken when
    /// planned: the local word may have moved on since).
    Word { offset: usize, value: u64 },
}

/// What one end has already copied to its peer.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Offset of the ring this end produces into (its local copy).
    tx_offset: usize,
    tx: RingConfig,
    /// Offset of the ring this end consumes from.
    rx_offset: usize,
    rx: RingConfig,
    /// Producer index of the tx ring as last copied to the peer.
    replicated: u64,
    /// Consumer index of the rx ring as last copied to the peer.
    credited: u64,
}

impl Mirror {
    /// The client's view: it produces requests and consumes responses.
    pub fn client(layout: &RegionLayout) -> Self {
        Self::new(
            layout.request_offset(),
            layout.requests,
            layout.response_offset(),
            layout.responses,
        )
    }

    /// The server's view: it produces responses and consumes requests.
    pub fn server(layout: &RegionLayout) -> Self {
        Self::new(
            layout.response_offset(),
            layout.responses,
            layout.request_offset(),
            layout.requests,
        )
    }

    fn new(tx_offset: usize, tx: RingConfig, rx_offset: usize, rx: RingConfig) -> Self {
        Self {
            tx_offset,
            tx,
            rx_offset,
            rx,
            replicated: 0,
            credited: 0,
        }
    }

    /// Offset of the ring this end produces into.
    pub fn tx_offset(&self) -> usize {
        self.tx_offset
    }

    /// Offset of the ring this end consumes from.
    pub fn rx_offset(&self) -> usize {
        self.rx_offset
    }

    /// Messages this end consumed but has not credited to the peer yet.
    pub fn uncredited<R: Region + ?Sized>(&self, region: &R) -> u64 {
        self.rx_consumer(region).wrapping_sub(self.credited)
    }

    /// Messages this end published locally but has not copied to the peer yet.
    pub fn unreplicated<R: Region + ?Sized>(&self, region: &R) -> u64 {
        self.tx_producer(region).wrapping_sub(self.replicated)
    }

    fn tx_producer<R: Region + ?Sized>(&self, region: &R) -> u64 {
        // SAFETY: the index word lies in the tx ring's header, inside a region laid out by
        // RegionLayout (the caller passes the region this mirror was built for), 8-aligned.
        // Acquire: a no-op for our own Producer's stores on this thread, and orders the slot reads
        // below after the index if another thread of this process published.
        unsafe { word(region, self.tx_offset + PRODUCER_INDEX) }.load(Ordering::Acquire)
    }

    fn rx_consumer<R: Region + ?Sized>(&self, region: &R) -> u64 {
        // SAFETY: as in tx_producer, for the rx ring's consumer index. Acquire pairs with the
        // Consumer's Release store after it finished reading the slots it frees, so the credit we
        // send never runs ahead of those reads.
        unsafe { word(region, self.rx_offset + CONSUMER_INDEX) }.load(Ordering::Acquire)
    }

    /// Appends to `ops`, in the order they must reach the peer, the copies that bring the peer's
    /// copies of both rings up to date, and records them as done. Reads only this end's own
    /// fields (its tx slots and producer index, its rx consumer index).
    pub fn plan<R: Region + ?Sized>(
        &mut self,
        region: &R,
        ops: &mut Vec<Op>,
    ) -> Result<(), RingError> {
        let produced = self.tx_producer(region);
        let fresh = produced.wrapping_sub(self.replicated);
        if fresh > u64::from(self.tx.slot_count) {
            return Err(RingError::Corrupt(
                "local producer index moved by more than a ring",
            ));
        }
        let slots = self.tx_offset + RING_HEADER_LEN;
        let mask = u64::from(self.tx.slot_count) - 1;
        let slot_size = self.tx.slot_size as usize;
        let mut index = self.replicated;
        while index != produced {
            let offset = slots + (index & mask) as usize * slot_size;
            let mut prefix = [0u8; 4];
            // SAFETY: the slot lies inside the tx ring (index masked to the slot count), which
            // lies inside the region; slots below the producer index are published and will not
            // be rewritten until the peer credits them, so no write races this read.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    region.as_ptr().add(offset),
                    prefix.as_mut_ptr(),
                    prefix.len(),
                )
            };
            let len = u32::from_le_bytes(prefix) as usize;
            if len > slot_size - SLOT_PREFIX {
                return Err(RingError::Corrupt(
                    "local slot length exceeds the slot size",
                ));
            }
            ops.push(Op::Bytes {
                offset,
                len: SLOT_PREFIX + len,
            });
            index = index.wrapping_add(1);
        }
        if fresh > 0 {
            ops.push(Op::Word {
                offset: self.tx_offset + PRODUCER_INDEX,
                value: produced,
            });
            self.replicated = produced;
        }
        let consumed = self.rx_consumer(region);
        if consumed != self.credited {
            if consumed.wrapping_sub(self.credited) > u64::from(self.rx.slot_count) {
                return Err(RingError::Corrupt(
                    "local consumer index moved by more than a ring",
                ));
            }
            ops.push(Op::Word {
                offset: self.rx_offset + CONSUMER_INDEX,
                value: consumed,
            });
            self.credited = consumed;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ring::{Consumer, HeapRegion, Producer};

    fn layout() -> RegionLayout {
        RegionLayout {
            requests: RingConfig {
                slot_count: 4,
                slot_size: 64,
            },
            responses: RingConfig {
                slot_count: 2,
                slot_size: 128,
            },
        }
    }

    fn region(layout: &RegionLayout) -> Arc<HeapRegion> {
        let r = Arc::new(HeapRegion::new(layout.len()));
        // SAFETY: a fresh region nobody else sees.
        unsafe { layout.init(&*r).unwrap() };
        r
    }

    /// What the NIC does for an RDMA WRITE: the op applied to the peer's region.
    fn apply(ops: &[Op], from: &HeapRegion, to: &HeapRegion) {
        for op in ops {
            match *op {
                Op::Bytes { offset, len } => {
                    assert!(offset + len <= from.size() && offset + len <= to.size());
                    // SAFETY: in bounds of both (checked above); test-only, single-threaded.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            from.as_ptr().add(offset),
                            to.as_ptr().add(offset),
                            len,
                        )
                    }
                }
                Op::Word { offset, value } => {
                    assert!(offset + 8 <= to.size() && offset & 7 == 0);
                    // SAFETY: in bounds and aligned (checked above).
                    unsafe { word(to, offset) }.store(value, Ordering::Release);
                }
            }
        }
    }

    #[test]
    fn layout_offsets() {
        let l = layout();
        assert_eq!(l.request_offset(), 64);
        assert_eq!(l.response_offset(), 64 + 256 + 4 * 64);
        assert_eq!(l.len(), l.response_offset() + 256 + 2 * 128);
        assert!(!l.is_empty());
        let tiny = HeapRegion::new(l.len() - 64);
        // SAFETY: fresh region.
        assert!(unsafe { l.init(&tiny) }.is_err());
    }

    #[test]
    fn ring_index_offsets_match_ring_rs() {
        // Publish on a heap ring and watch where the indices land.
        let cfg = RingConfig {
            slot_count: 4,
            slot_size: 32,
        };
        let r = Arc::new(HeapRegion::new(cfg.region_len()));
        // SAFETY: fresh region.
        unsafe { ring::init(&*r, 0, cfg).unwrap() };
        let mut tx = Producer::attach(r.clone(), 0).unwrap();
        let mut rx = Consumer::attach(r.clone(), 0).unwrap();
        tx.push_burst(&[b"a", b"b", b"c"]).unwrap();
        // SAFETY: in bounds and aligned.
        let index = unsafe { word(&*r, PRODUCER_INDEX) };
        assert_eq!(index.load(Ordering::Relaxed), 3);
        rx.pop_burst(2).unwrap().release();
        // SAFETY: in bounds and aligned.
        let index = unsafe { word(&*r, CONSUMER_INDEX) };
        assert_eq!(index.load(Ordering::Relaxed), 2);
        // The first slot: prefix then message.
        // SAFETY: in bounds.
        let first = unsafe { std::slice::from_raw_parts(r.as_ptr().add(RING_HEADER_LEN), 9) };
        assert_eq!(first, &[1, 0, 0, 0, 0, 0, 0, 0, b'a']);
    }

    #[test]
    fn plan_orders_slots_before_the_index() {
        let l = layout();
        let client = region(&l);
        let mut mirror = Mirror::client(&l);
        let mut tx = Producer::attach(client.clone(), l.request_offset()).unwrap();
        let mut ops = Vec::new();
        mirror.plan(&*client, &mut ops).unwrap();
        assert!(ops.is_empty(), "nothing to copy yet");

        tx.push_burst(&[&b"hello"[..], b"", b"abc"]).unwrap();
        mirror.plan(&*client, &mut ops).unwrap();
        let slots = l.request_offset() + RING_HEADER_LEN;
        assert_eq!(
            ops,
            [
                Op::Bytes {
                    offset: slots,
                    len: 8 + 5
                },
                Op::Bytes {
                    offset: slots + 64,
                    len: 8
                },
                Op::Bytes {
                    offset: slots + 128,
                    len: 8 + 3
                },
                Op::Word {
                    offset: l.request_offset() + PRODUCER_INDEX,
                    value: 3
                },
            ]
        );
        ops.clear();
        mirror.plan(&*client, &mut ops).unwrap();
        assert!(ops.is_empty(), "already copied");
        assert_eq!(mirror.unreplicated(&*client), 0);
    }

    /// Both ends over two heap regions, with `apply` standing in for the NIC: many messages each
    /// way through tiny rings, so indices wrap many times and credits gate the producers.
    #[test]
    fn mirrored_rings_carry_messages_both_ways() {
        let l = layout();
        let (client, server) = (region(&l), region(&l));
        let mut client_mirror = Mirror::client(&l);
        let mut server_mirror = Mirror::server(&l);
        let mut c_tx = Producer::attach(client.clone(), l.request_offset()).unwrap();
        let mut c_rx = Consumer::attach(client.clone(), l.response_offset()).unwrap();
        let mut s_rx = Consumer::attach(server.clone(), l.request_offset()).unwrap();
        let mut s_tx = Producer::attach(server.clone(), l.response_offset()).unwrap();
        let mut ops = Vec::new();
        let (mut sent, mut served, mut answered) = (0u32, 0u32, 0u32);
        const N: u32 = 1000;
        for _round in 0..10 * N {
            if answered == N {
                break;
            }
            // Client: send what fits (the credit gates it), then copy to the server.
            while sent < N {
                match c_tx.try_push(&sent.to_le_bytes()) {
                    Ok(()) => sent += 1,
                    Err(RingError::Full) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            ops.clear();
            client_mirror.plan(&*client, &mut ops).unwrap();
            apply(&ops, &client, &server);
            // Server: answer each request while the response ring has room.
            while let Ok(mut slot) = s_tx.try_reserve() {
                let Some(req) = s_rx.try_pop().unwrap() else {
                    break;
                };
                let n = u32::from_le_bytes(req[..4].try_into().unwrap());
                assert_eq!(n, served);
                slot.buf()[..8].copy_from_slice(&u64::from(n * 2).to_le_bytes());
                slot.commit(8).unwrap();
                served += 1;
            }
            ops.clear();
            server_mirror.plan(&*server, &mut ops).unwrap();
            apply(&ops, &server, &client);
            // Client: read the replies; the credit goes back with the next plan.
            for reply in c_rx.pop_burst(usize::MAX).unwrap().iter() {
                let v = u64::from_le_bytes(reply.try_into().unwrap());
                assert_eq!(v, u64::from(answered) * 2);
                answered += 1;
            }
        }
        assert_eq!((sent, served, answered), (N, N, N));
        // Final credit exchange leaves both sides with nothing outstanding.
        ops.clear();
        client_mirror.plan(&*client, &mut ops).unwrap();
        assert_eq!(
            ops,
            [Op::Word {
                offset: l.response_offset() + CONSUMER_INDEX,
                value: u64::from(N)
            }]
        );
        assert_eq!(client_mirror.uncredited(&*client), 0);
        assert_eq!(server_mirror.uncredited(&*server), 0);
    }

    /// Frames larger than a slot, and larger than the whole ring, both ways through mirrored
    /// rings with `apply` standing in for the NIC: the link's fragments ([`crate::frag`]) gated by
    /// credit exactly as the datapath's are.
    #[test]
    fn mirrored_rings_carry_fragmented_frames() {
        use std::collections::VecDeque;

        use crate::frag::{self, Outbox, Reassembly};
        use crate::link::Replier;
        use crate::wire::{Limits, Message};

        /// Collects replies to send as room appears.
        struct Pending(VecDeque<(u64, Vec<u8>)>);
        impl Replier for Pending {
            fn reply(&mut self, request_id: u64, message: &Message<'_>) -> crate::Result<()> {
                let Message::Value { value: Some(v) } = message else {
                    panic!("unexpected {message:?}")
                };
                self.0.push_back((request_id, v.to_vec()));
                Ok(())
            }
        }

        // Request slots hold 56 bytes (24 of chunk), response slots 120 (88 of chunk).
        let l = layout();
        let (client, server) = (region(&l), region(&l));
        let mut client_mirror = Mirror::client(&l);
        let mut server_mirror = Mirror::server(&l);
        let mut c_tx = Producer::attach(client.clone(), l.request_offset()).unwrap();
        let mut c_rx = Consumer::attach(client.clone(), l.response_offset()).unwrap();
        let mut s_rx = Consumer::attach(server.clone(), l.request_offset()).unwrap();
        let mut s_tx = Producer::attach(server.clone(), l.response_offset()).unwrap();
        let (mut c_out, mut c_in) = (Outbox::new(), Reassembly::new());
        let (mut s_out, mut s_in) = (Outbox::new(), Reassembly::new());
        let mut pending = Pending(VecDeque::new());
        let limits = Limits::default();
        // Sizes from one byte to ten times the response ring (256 bytes of slots).
        let value = |i: u64| -> Vec<u8> {
            let n = [1, 20, 40, 100, 119, 120, 121, 600, 2560][(i % 9) as usize];
            (0..n).map(|j| (j as u64 * 7 + i) as u8).collect()
        };
        let mut ops = Vec::new();
        const N: u64 = 200;
        let (mut sent, mut answered) = (0u64, 0u64);
        for _round in 0..100 * N {
            if answered == N {
                break;
            }
            // Client: queue what the ring and outbox take, then copy to the server.
            while sent < N {
                let key = value(sent);
                match frag::queue(&mut c_tx, &mut c_out, sent, &Message::Get { key: &key }) {
                    Ok(()) => sent += 1,
                    Err(crate::Error::Ring(RingError::Full)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            c_out.pump(&mut c_tx).unwrap();
            c_tx.flush();
            ops.clear();
            client_mirror.plan(&*client, &mut ops).unwrap();
            apply(&ops, &client, &server);
            // Server: reassemble requests, echo each key as the value, send as room allows.
            {
                let burst = s_rx.pop_burst(usize::MAX).unwrap();
                for raw in burst.iter() {
                    frag::serve_slot(&mut s_in, raw, &limits, &mut pending, &mut |f, r| {
                        let Message::Get { key } = f.message else {
                            panic!("unexpected {f:?}")
                        };
                        r.reply(f.request_id, &Message::Value { value: Some(key) })
                            .unwrap();
                    })
                    .unwrap();
                }
            }
            s_out.pump(&mut s_tx).unwrap();
            while let Some((id, v)) = pending.0.front() {
                let m = Message::Value { value: Some(v) };
                match frag::queue(&mut s_tx, &mut s_out, *id, &m) {
                    Ok(()) => {
                        pending.0.pop_front();
                    }
                    Err(crate::Error::Ring(RingError::Full)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            s_tx.flush();
            ops.clear();
            server_mirror.plan(&*server, &mut ops).unwrap();
            apply(&ops, &server, &client);
            // Client: reassemble replies; the credit goes back with the next plan.
            let burst = c_rx.pop_burst(usize::MAX).unwrap();
            for raw in burst.iter() {
                frag::receive(&mut c_in, raw, &limits, &mut |f| {
                    assert_eq!(f.request_id, answered, "replies arrive in order");
                    let want = value(answered);
                    assert_eq!(f.message, Message::Value { value: Some(&want) });
                    answered += 1;
                })
                .unwrap();
            }
        }
        assert_eq!((sent, answered), (N, N));
        assert!(c_out.is_empty() && s_out.is_empty() && pending.0.is_empty());
        assert!(c_in.is_idle() && s_in.is_idle());
    }

    #[test]
    fn corrupt_local_slot_is_reported() {
        let l = layout();
        let client = region(&l);
        let mut mirror = Mirror::client(&l);
        let mut tx = Producer::attach(client.clone(), l.request_offset()).unwrap();
        tx.try_push(b"x").unwrap();
        // A peer with write access scribbles over our copy of the slot's length prefix.
        let prefix = l.request_offset() + RING_HEADER_LEN;
        // SAFETY: test-only write inside the region.
        unsafe { client.as_ptr().add(prefix).cast::<u32>().write(1000) };
        let mut ops = Vec::new();
        assert!(matches!(
            mirror.plan(&*client, &mut ops),
            Err(RingError::Corrupt(_))
        ));
    }
}
