//! A single-producer single-consumer ring of fixed-size slots over a raw memory region.
//!
//! The ring knows nothing about who shares the memory: a heap block ([`HeapRegion`], tests and
//! in-process use), a shared-memory segment ([`crate::shm`]), or later RDMA-registered memory.
//! Everything it needs lives inside the region, so two processes that map the same bytes can each
//! attach one end.
//!
//! # Layout
//!
//! ```text
//! offset   size  field                                   written by
//!      0     64  config: magic u32, version u32,         init (then read-only);
//!                slot_count u32, slot_size u32,          claims: each end at attach/detach
//!                producer_claim u32, consumer_claim u32
//!     64     64  producer index (u64, free-running)      producer only
//!    128     64  consumer index (u64, free-running)      consumer only
//!    192     64  doorbell (u32 futex word)               consumer sleeps on it, producer wakes
//!    256      -  slot_count slots of slot_size bytes:
//!                len u32 | reserved u32 | message bytes
//! ```
//!
//! Producer and consumer indices sit on separate cache lines, so the two ends never write the same
//! line on the hot path. Indices count messages since the ring was created and never wrap in
//! practice (2^64); slot `i` lives at `i & (slot_count - 1)`. Invariant: `0 <= producer - consumer
//! <= slot_count`; slots in `[consumer, producer)` hold published messages and belong to the
//! consumer, all others belong to the producer.
//!
//! # Trust
//!
//! The peer may be another process, so everything read from the region is treated as input:
//! geometry is read once at attach and validated, a peer index that breaks the invariant is
//! [`RingError::Corrupt`], and a slot length prefix larger than the slot is rejected, so a broken
//! peer can make us read garbage message bytes (which the wire decoder rejects) but never read or
//! write outside the region.
//!
//! # Bursts
//!
//! [`Producer::push_burst`] writes several slots and publishes them with one store;
//! [`Consumer::pop_burst`] hands out several messages and frees them with one store when the
//! [`Burst`] drops. [`SlotMut::stage`] plus [`Producer::flush`] do the same for messages encoded in
//! place (e.g. by [`crate::wire::encode_into`]).

use std::alloc::Layout;
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backoff::{Backoff, Doorbell, Phase};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// `"RING"` little-endian: marks an initialised ring header.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"RING");
/// Layout version; bumped on any change to the header or slot format.
pub const RING_VERSION: u32 = 1;
/// Bytes before the first slot.
#[cfg(not(loom))]
pub const RING_HEADER_LEN: usize = 256;
/// Bytes before the first slot (loom's atomics are bigger than std's).
#[cfg(loom)]
pub const RING_HEADER_LEN: usize = std::mem::size_of::<RingHeader>().next_multiple_of(64);
/// Bytes of length prefix at the start of each slot (kept at 8 so messages stay 8-aligned).
pub const SLOT_PREFIX: usize = 8;
/// Alignment the region and every ring in it must have (one cache line).
pub const RING_ALIGN: usize = 64;
/// Most slots a ring may have.
pub const MAX_SLOTS: u32 = 1 << 24;
/// Largest slot.
pub const MAX_SLOT_SIZE: u32 = 1 << 30;
/// Loom's shadow cells cover at most this many slots.
#[cfg(loom)]
pub const LOOM_MAX_SLOTS: usize = 4;

/// Errors of ring operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Every slot holds an unconsumed message: try again after the consumer catches up.
    #[error("ring is full")]
    Full,
    /// A message larger than a slot's capacity; it can never be sent through this ring.
    #[error("message of {len} bytes does not fit a slot of {capacity}")]
    TooLarge { len: usize, capacity: usize },
    /// The peer broke the ring protocol (an index or slot length that cannot be).
    #[error("ring corrupted by its peer: {0}")]
    Corrupt(&'static str),
    /// The region does not hold a valid ring, or the requested geometry is invalid.
    #[error("bad ring layout: {0}")]
    Layout(&'static str),
    /// This end of the ring already has a handle attached.
    #[error("the {0} end of this ring is already attached")]
    AlreadyAttached(&'static str),
}

/// Memory a ring can live in.
///
/// # Safety
///
/// [`Region::as_ptr`] must return the same pointer for the life of the value, valid for reads and
/// writes of [`Region::size`] bytes and aligned to [`RING_ALIGN`], and the memory must stay mapped
/// until the value drops. The memory may be shared with other processes; the ring never trusts
/// what they write there.
pub unsafe trait Region: Send + Sync + 'static {
    /// Start of the region.
    fn as_ptr(&self) -> *mut u8;
    /// Length of the region in bytes.
    fn size(&self) -> usize;
}

/// A zeroed, cache-line-aligned heap block: a [`Region`] for rings within one process.
pub struct HeapRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl HeapRegion {
    /// Allocates `len` zeroed bytes (at least one cache line) aligned to [`RING_ALIGN`].
    pub fn new(len: usize) -> Self {
        let layout = match Layout::from_size_align(len.max(RING_ALIGN), RING_ALIGN) {
            Ok(layout) => layout,
            Err(_) => panic!("heap region of {len} bytes is too large"),
        };
        // SAFETY: `layout` has a non-zero size (at least RING_ALIGN bytes).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout }
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl fmt::Debug for HeapRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapRegion")
            .field("ptr", &self.ptr)
            .field("len", &self.layout.size())
            .finish()
    }
}

// SAFETY: the block is plain bytes owned by this value; all access goes through raw pointers and
// the ring protocol, so moving or sharing the owner between threads is fine.
unsafe impl Send for HeapRegion {}
// SAFETY: as above; `&HeapRegion` only exposes the pointer and length.
unsafe impl Sync for HeapRegion {}

// SAFETY: the pointer is fixed, valid for `layout.size()` bytes, aligned to RING_ALIGN, and freed
// only on drop.
unsafe impl Region for HeapRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn size(&self) -> usize {
        self.layout.size()
    }
}

/// A ring's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Number of slots: a power of two, at most [`MAX_SLOTS`].
    pub slot_count: u32,
    /// Bytes per slot including the [`SLOT_PREFIX`]: a multiple of 8, more than the prefix, at most
    /// [`MAX_SLOT_SIZE`].
    pub slot_size: u32,
}

impl RingConfig {
    /// Checks the geometry.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.slot_count == 0 || !self.slot_count.is_power_of_two() {
            return Err(RingError::Layout("slot count is not a power of two"));
        }
        if self.slot_count > MAX_SLOTS {
            return Err(RingError::Layout("too many slots"));
        }
        if self.slot_size as usize <= SLOT_PREFIX || self.slot_size & 7 != 0 {
            return Err(RingError::Layout(
                "slot size is not a multiple of 8 above the prefix",
            ));
        }
        if self.slot_size > MAX_SLOT_SIZE {
            return Err(RingError::Layout("slot too large"));
        }
        Ok(())
    }

    /// Bytes of region the ring takes (header plus slots), rounded up to [`RING_ALIGN`].
    pub fn region_len(&self) -> usize {
        // Cannot overflow on 64-bit targets: at most 2^24 slots of 2^30 bytes.
        (RING_HEADER_LEN + self.slot_count as usize * self.slot_size as usize)
            .next_multiple_of(RING_ALIGN)
    }

    /// The largest message a slot holds.
    pub fn max_message(&self) -> usize {
        self.slot_size as usize - SLOT_PREFIX
    }
}

/// One cache line holding `T`, so that fields written by different ends never share a line.
#[repr(C, align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// Immutable after [`init`], except the two claim words.
#[repr(C)]
struct Config {
    magic: u32,
    version: u32,
    slot_count: u32,
    slot_size: u32,
    /// 1 while a [`Producer`] is attached. CAS 0 -> 1 on attach (Acquire), store 0 on drop (Release).
    producer_claim: AtomicU32,
    /// 1 while a [`Consumer`] is attached; as `producer_claim`.
    consumer_claim: AtomicU32,
}

#[repr(C)]
struct RingHeader {
    config: CachePadded<Config>,
    /// Messages published so far. Stored only by the producer, with Release, after the slot bytes.
    producer: CachePadded<AtomicU64>,
    /// Messages consumed so far. Stored only by the consumer, with Release, after it has finished
    /// reading the slots it frees.
    consumer: CachePadded<AtomicU64>,
    /// The consumer's futex word: nonzero while it is (about to be) parked on an empty ring.
    doorbell: CachePadded<Doorbell>,
    /// Loom cannot see plain memory, so each slot access is mirrored on a loom cell; loom then
    /// reports a producer write racing a consumer read if the index orderings were too weak.
    #[cfg(loom)]
    shadow: [loom::cell::UnsafeCell<()>; LOOM_MAX_SLOTS],
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<RingHeader>() == RING_HEADER_LEN);
    assert!(std::mem::offset_of!(RingHeader, producer) == 64);
    assert!(std::mem::offset_of!(RingHeader, consumer) == 128);
    assert!(std::mem::offset_of!(RingHeader, doorbell) == 192);
    assert!(std::mem::size_of::<Config>() <= 64);
    assert!(RING_HEADER_LEN & (RING_ALIGN - 1) == 0 && SLOT_PREFIX & 7 == 0);
};

/// Writes an empty ring with geometry `cfg` at `offset` into `region`.
///
/// # Safety
///
/// No handle may be attached to this ring (in any process) and nobody else may access
/// `offset..offset + cfg.region_len()` while this runs.
pub unsafe fn init<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    cfg: RingConfig,
) -> Result<(), RingError> {
    cfg.validate()?;
    check_bounds(region, offset, cfg.region_len())?;
    let header = RingHeader {
        config: CachePadded(Config {
            magic: RING_MAGIC,
            version: RING_VERSION,
            slot_count: cfg.slot_count,
            slot_size: cfg.slot_size,
            producer_claim: AtomicU32::new(0),
            consumer_claim: AtomicU32::new(0),
        }),
        producer: CachePadded(AtomicU64::new(0)),
        consumer: CachePadded(AtomicU64::new(0)),
        doorbell: CachePadded(Doorbell::new()),
        #[cfg(loom)]
        shadow: std::array::from_fn(|_| loom::cell::UnsafeCell::new(())),
    };
    // SAFETY: check_bounds proved `offset + RING_HEADER_LEN <= size` and 64-byte alignment, which
    // covers RingHeader's size and alignment; the caller guarantees exclusive access. `write` does
    // not drop the old bytes, which were never a RingHeader.
    unsafe {
        region
            .as_ptr()
            .add(offset)
            .cast::<RingHeader>()
            .write(header)
    };
    Ok(())
}

fn check_bounds<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    len: usize,
) -> Result<(), RingError> {
    if (region.as_ptr() as usize | offset) & (RING_ALIGN - 1) != 0 {
        return Err(RingError::Layout("ring is not 64-byte aligned"));
    }
    if len < RING_HEADER_LEN
        || offset
            .checked_add(len)
            .is_none_or(|end| end > region.size())
    {
        return Err(RingError::Layout("ring does not fit the region"));
    }
    Ok(())
}

/// What both ends know about an attached ring; read once at attach and never from the region again.
struct Shared {
    /// Keeps the memory mapped while this end is attached.
    _region: Arc<dyn Region>,
    header: NonNull<RingHeader>,
    slots: NonNull<u8>,
    slot_count: u64,
    slot_size: usize,
}

impl Shared {
    fn attach(region: Arc<dyn Region>, offset: usize) -> Result<Self, RingError> {
        check_bounds(&*region, offset, RING_HEADER_LEN)?;
        // SAFETY: check_bounds proved the header lies inside the region and is aligned.
        let header =
            unsafe { NonNull::new_unchecked(region.as_ptr().add(offset)) }.cast::<RingHeader>();
        // SAFETY: the header bytes are inside the region; the geometry words are written once by
        // `init` before any handle can attach and are plain integers (any bit pattern is valid), so
        // reading them cannot be undefined; a peer that changes them later is ignored because we
        // keep our own copy.
        let (magic, version, slot_count, slot_size) = unsafe {
            let c = std::ptr::addr_of!((*header.as_ptr()).config.0);
            (
                std::ptr::addr_of!((*c).magic).read_volatile(),
                std::ptr::addr_of!((*c).version).read_volatile(),
                std::ptr::addr_of!((*c).slot_count).read_volatile(),
                std::ptr::addr_of!((*c).slot_size).read_volatile(),
            )
        };
        if magic != RING_MAGIC {
            return Err(RingError::Layout("no ring at this offset (bad magic)"));
        }
        if version != RING_VERSION {
            return Err(RingError::Layout("unsupported ring version"));
        }
        let cfg = RingConfig {
            slot_count,
            slot_size,
        };
        cfg.validate()?;
        check_bounds(&*region, offset, cfg.region_len())?;
        #[cfg(loom)]
        assert!(
            slot_count as usize <= LOOM_MAX_SLOTS,
            "loom rings have at most {LOOM_MAX_SLOTS} slots"
        );
        // SAFETY: the slots start RING_HEADER_LEN bytes into a ring that check_bounds proved fits.
        let slots =
            unsafe { NonNull::new_unchecked(header.as_ptr().cast::<u8>().add(RING_HEADER_LEN)) };
        Ok(Self {
            _region: region,
            header,
            slots,
            slot_count: u64::from(slot_count),
            slot_size: slot_size as usize,
        })
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: the header was initialised by `init` (magic checked) and stays mapped while
        // `_region` lives; all fields we touch through `&` after attach are atomics.
        unsafe { self.header.as_ref() }
    }

    fn capacity(&self) -> usize {
        self.slot_size - SLOT_PREFIX
    }

    /// Start of the slot that message index `index` uses.
    fn slot(&self, index: u64) -> *mut u8 {
        let i = (index & (self.slot_count - 1)) as usize;
        // SAFETY: `i < slot_count`, and the ring (slot_count * slot_size bytes of slots) lies inside
        // the region as checked at attach.
        unsafe { self.slots.as_ptr().add(i * self.slot_size) }
    }

    /// Length prefix of a published slot, validated against the slot capacity.
    fn read_len(&self, index: u64) -> Result<usize, RingError> {
        let mut prefix = [0u8; 4];
        // SAFETY: the slot is inside the region and owned by the consumer (the caller only reads
        // published slots), so no write of an honest producer races this read.
        unsafe { std::ptr::copy_nonoverlapping(self.slot(index), prefix.as_mut_ptr(), 4) };
        let len = u32::from_le_bytes(prefix) as usize;
        if len > self.capacity() {
            return Err(RingError::Corrupt("slot length exceeds the slot size"));
        }
        Ok(len)
    }

    /// Message bytes of a published slot whose length was validated.
    ///
    /// # Safety
    ///
    /// `index` must be a slot owned by the consumer for the returned lifetime, and
    /// `len <= capacity`.
    unsafe fn message<'a>(&self, index: u64, len: usize) -> &'a [u8] {
        // SAFETY: per the contract the slot is ours and `SLOT_PREFIX + len <= slot_size`; the
        // region outlives every borrow of this handle.
        unsafe { std::slice::from_raw_parts(self.slot(index).add(SLOT_PREFIX), len) }
    }

    #[cfg(loom)]
    fn shadow_write(&self, index: u64) {
        let i = (index & (self.slot_count - 1)) as usize;
        self.header().shadow[i].with_mut(|_| ());
    }
    #[cfg(loom)]
    fn shadow_read(&self, index: u64) {
        let i = (index & (self.slot_count - 1)) as usize;
        self.header().shadow[i].with(|_| ());
    }
    #[cfg(not(loom))]
    fn shadow_write(&self, _index: u64) {}
    #[cfg(not(loom))]
    fn shadow_read(&self, _index: u64) {}
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("header", &self.header)
            .field("slot_count", &self.slot_count)
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

/// Creates a ring in a fresh [`HeapRegion`] and attaches both ends.
pub fn channel(cfg: RingConfig) -> Result<(Producer, Consumer), RingError> {
    cfg.validate()?;
    let region = Arc::new(HeapRegion::new(cfg.region_len()));
    // SAFETY: the region is brand new and no handle is attached yet.
    unsafe { init(&*region, 0, cfg)? };
    let producer = Producer::attach(region.clone(), 0)?;
    let consumer = Consumer::attach(region, 0)?;
    Ok((producer, consumer))
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct Producer {
    ring: Shared,
    /// Index of the next slot to fill. Only this handle stores the shared producer index, so this
    /// copy is authoritative; it may run ahead of the shared index by the staged messages.
    tail: u64,
    /// The value of the shared producer index (our own last store): `published..tail` is staged.
    published: u64,
    /// The consumer index as last read. It only grows, so a stale value makes the ring look fuller
    /// than it is, never emptier: safe, and re-read only when the ring looks full.
    cached_head: u64,
}

// SAFETY: the handle owns its end of the ring exclusively (the claim word enforces one producer);
// the raw pointers point into a region kept alive by the Arc, which is Send + Sync.
unsafe impl Send for Producer {}

impl Producer {
    /// Attaches the producer end of the ring at `offset` in `region`.
    pub fn attach<R: Region>(region: Arc<R>, offset: usize) -> Result<Self, RingError> {
        let ring = Shared::attach(region, offset)?;
        let h = ring.header();
        // Acquire pairs with the previous producer's Release in Drop: its last index store is
        // visible before we read the index below.
        if h.config
            .0
            .producer_claim
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(RingError::AlreadyAttached("producer"));
        }
        let tail = h.producer.0.load(Ordering::Relaxed);
        // Acquire: the consumer's reads of the slots it freed happen before we reuse them.
        let head = h.consumer.0.load(Ordering::Acquire);
        let this = Self {
            ring,
            tail,
            published: tail,
            cached_head: head,
        };
        if tail.wrapping_sub(head) > this.ring.slot_count {
            return Err(RingError::Corrupt("consumer index ahead of the producer"));
        }
        Ok(this)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.ring.slot_count as usize
    }

    /// The largest message a slot holds.
    pub fn max_message(&self) -> usize {
        self.ring.capacity()
    }

    /// Whether one more slot is free, re-reading the consumer index only if the cached one says
    /// the ring is full.
    fn has_room(&mut self) -> Result<bool, RingError> {
        if self.tail.wrapping_sub(self.cached_head) < self.ring.slot_count {
            return Ok(true);
        }
        // Acquire pairs with the Release store in `Consumer::release_to`: the consumer finished
        // reading every slot below `head` before it published `head`, so once we see it, our
        // upcoming writes into those slots cannot race its reads (write-after-read hazard).
        let head = self.ring.header().consumer.0.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.ring.slot_count {
            return Err(RingError::Corrupt("consumer index ahead of the producer"));
        }
        self.cached_head = head;
        Ok(used < self.ring.slot_count)
    }

    /// Reserves the next free slot for writing in place; nothing is visible to the consumer until
    /// [`SlotMut::commit`] (or [`SlotMut::stage`] and [`Producer::flush`]).
    pub fn try_reserve(&mut self) -> Result<SlotMut<'_>, RingError> {
        if !self.has_room()? {
            return Err(RingError::Full);
        }
        self.ring.shadow_write(self.tail);
        Ok(SlotMut { producer: self })
    }

    /// Copies `msg` into the next slot and publishes it.
    pub fn try_push(&mut self, msg: &[u8]) -> Result<(), RingError> {
        self.check_len(msg.len())?;
        let mut slot = self.try_reserve()?;
        slot.buf()[..msg.len()].copy_from_slice(msg);
        slot.commit(msg.len())
    }

    /// Copies as many of `msgs` as there are free slots, in order, and publishes them with one
    /// store. Returns how many were pushed (0 if the ring is full). Fails with
    /// [`RingError::TooLarge`], pushing nothing, if any message exceeds a slot.
    pub fn push_burst<M: AsRef<[u8]>>(&mut self, msgs: &[M]) -> Result<usize, RingError> {
        for m in msgs {
            self.check_len(m.as_ref().len())?;
        }
        let mut pushed = 0;
        for m in msgs {
            let m = m.as_ref();
            let mut slot = match self.try_reserve() {
                Ok(slot) => slot,
                Err(RingError::Full) => break,
                Err(e) => {
                    self.flush();
                    return Err(e);
                }
            };
            slot.buf()[..m.len()].copy_from_slice(m);
            slot.stage(m.len())?;
            pushed += 1;
        }
        self.flush();
        Ok(pushed)
    }

    fn check_len(&self, len: usize) -> Result<(), RingError> {
        if len > self.ring.capacity() {
            return Err(RingError::TooLarge {
                len,
                capacity: self.ring.capacity(),
            });
        }
        Ok(())
    }

    /// Publishes every staged message, then wakes the consumer if it is parked.
    pub fn flush(&mut self) {
        if self.published == self.tail {
            return;
        }
        // Release pairs with the consumer's Acquire load of the producer index: the slot bytes we
        // wrote (length prefix and message) happen before any read of them by a consumer that sees
        // the new index.
        self.ring
            .header()
            .producer
            .0
            .store(self.tail, Ordering::Release);
        self.published = self.tail;
        self.notify();
    }

    /// The consumer's doorbell (e.g. to see whether it is parked).
    pub fn doorbell(&self) -> &Doorbell {
        &self.ring.header().doorbell.0
    }

    /// Wakes the consumer if it is parked on the doorbell. [`Producer::flush`] and
    /// [`SlotMut::commit`] do this already; call it directly to nudge a consumer to re-check
    /// something outside the ring (e.g. a detach flag).
    pub fn notify(&self) {
        self.ring.header().doorbell.0.notify();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Staged messages are published rather than lost.
        self.flush();
        // Release pairs with the next producer's Acquire claim.
        self.ring
            .header()
            .config
            .0
            .producer_claim
            .store(0, Ordering::Release);
    }
}

/// A reserved slot, writable in place. Dropping it without committing leaves the ring unchanged.
#[derive(Debug)]
pub struct SlotMut<'a> {
    producer: &'a mut Producer,
}

impl<'a> SlotMut<'a> {
    /// The slot's message area ([`Producer::max_message`] bytes; contents unspecified).
    pub fn buf(&mut self) -> &mut [u8] {
        let ring = &self.producer.ring;
        // SAFETY: the slot at `tail` is free (has_room said so), hence owned by the producer, which
        // `self` borrows mutably; the area is `capacity` bytes inside the slot.
        unsafe {
            std::slice::from_raw_parts_mut(
                ring.slot(self.producer.tail).add(SLOT_PREFIX),
                ring.capacity(),
            )
        }
    }

    /// Records a `len`-byte message in the slot and publishes it (and any staged before it).
    pub fn commit(self, len: usize) -> Result<(), RingError> {
        let producer = self.stage_inner(len)?;
        producer.flush();
        Ok(())
    }

    /// Records a `len`-byte message without publishing it: it becomes visible on the next
    /// [`Producer::flush`] (or commit, or push), so a burst costs one publication.
    pub fn stage(self, len: usize) -> Result<(), RingError> {
        self.stage_inner(len).map(|_| ())
    }

    fn stage_inner(self, len: usize) -> Result<&'a mut Producer, RingError> {
        let producer = self.producer;
        producer.check_len(len)?;
        let prefix = (len as u32).to_le_bytes();
        // SAFETY: the slot is owned by the producer (see `buf`); the prefix is its first 4 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), producer.ring.slot(producer.tail), 4)
        };
        producer.ring.shadow_write(producer.tail);
        producer.tail = producer.tail.wrapping_add(1);
        Ok(producer)
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer {
    ring: Shared,
    /// Index of the next message to read. Only this handle stores the shared consumer index, so
    /// this copy is authoritative.
    head: u64,
    /// The producer index as last read. It only grows, so a stale value makes the ring look
    /// emptier than it is, never fuller: safe, and re-read only when the ring looks empty.
    cached_tail: u64,
}

// SAFETY: as for Producer: exclusive end (claim word), region kept alive by the Arc.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Attaches the consumer end of the ring at `offset` in `region`.
    pub fn attach<R: Region>(region: Arc<R>, offset: usize) -> Result<Self, RingError> {
        let ring = Shared::attach(region, offset)?;
        let h = ring.header();
        // Acquire pairs with the previous consumer's Release in Drop.
        if h.config
            .0
            .consumer_claim
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(RingError::AlreadyAttached("consumer"));
        }
        let head = h.consumer.0.load(Ordering::Relaxed);
        let mut this = Self {
            ring,
            head,
            cached_tail: head,
        };
        this.available(1)?;
        Ok(this)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.ring.slot_count as usize
    }

    /// The largest message a slot holds.
    pub fn max_message(&self) -> usize {
        self.ring.capacity()
    }

    /// Messages ready to read, re-reading the producer index only if the cached one shows fewer
    /// than `want`.
    fn available(&mut self, want: u64) -> Result<u64, RingError> {
        let n = self.cached_tail.wrapping_sub(self.head);
        if n >= want.max(1) {
            return Ok(n);
        }
        // Acquire pairs with the Release store in `Producer::flush`: the producer wrote the slot
        // bytes before publishing the index, so once we see the index the bytes are visible.
        let tail = self.ring.header().producer.0.load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        if n > self.ring.slot_count {
            return Err(RingError::Corrupt("producer index more than a ring ahead"));
        }
        self.cached_tail = tail;
        Ok(n)
    }

    /// Whether the producer has published messages we have not taken (always re-reads).
    pub fn has_pending(&self) -> bool {
        // Acquire for the same reason as in `available`; used after announcing sleep on the
        // doorbell, where the SeqCst fence in `Doorbell::wait` orders it after the announcement.
        self.ring.header().producer.0.load(Ordering::Acquire) != self.head
    }

    /// Takes the oldest message, if any. The slot stays ours until the returned guard drops.
    pub fn try_pop(&mut self) -> Result<Option<Slot<'_>>, RingError> {
        if self.available(1)? == 0 {
            return Ok(None);
        }
        let len = self.ring.read_len(self.head)?;
        self.ring.shadow_read(self.head);
        Ok(Some(Slot {
            consumer: self,
            len,
        }))
    }

    /// Takes up to `max` messages at once; they are freed together when the burst drops.
    pub fn pop_burst(&mut self, max: usize) -> Result<Burst<'_>, RingError> {
        let n = self.available(max as u64)?.min(max as u64);
        for i in 0..n {
            let index = self.head.wrapping_add(i);
            self.ring.read_len(index)?;
            self.ring.shadow_read(index);
        }
        Ok(Burst {
            consumer: self,
            count: n as usize,
        })
    }

    /// One idle step: spin, yield, or park on the doorbell until the producer publishes.
    pub fn wait(&mut self, backoff: &mut Backoff) -> Phase {
        let this = &*self;
        backoff.snooze(this.doorbell(), || !this.has_pending())
    }

    /// This ring's doorbell, for callers that run their own idle loop.
    pub fn doorbell(&self) -> &Doorbell {
        &self.ring.header().doorbell.0
    }

    /// Frees every slot below `new_head`.
    fn release_to(&mut self, new_head: u64) {
        let mut i = self.head;
        while i != new_head {
            self.ring.shadow_read(i);
            i = i.wrapping_add(1);
        }
        self.head = new_head;
        // Release pairs with the producer's Acquire load in `has_room`: our reads of the freed
        // slots happen before the producer, seeing this index, overwrites them.
        self.ring
            .header()
            .consumer
            .0
            .store(new_head, Ordering::Release);
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Release pairs with the next consumer's Acquire claim.
        self.ring
            .header()
            .config
            .0
            .consumer_claim
            .store(0, Ordering::Release);
    }
}

/// One received message, borrowed from its slot; the slot is freed when this drops.
#[derive(Debug)]
pub struct Slot<'a> {
    consumer: &'a mut Consumer,
    len: usize,
}

impl Slot<'_> {
    /// Frees the slot now (same as dropping the guard).
    pub fn release(self) {}
}

impl Deref for Slot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot at `head` is published and not yet released (we hold the consumer
        // `&mut` until drop), and `len` was validated against the capacity in `try_pop`.
        unsafe { self.consumer.ring.message(self.consumer.head, self.len) }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let next = self.consumer.head.wrapping_add(1);
        self.consumer.release_to(next);
    }
}

/// Several received messages, borrowed from their slots; all are freed when this drops.
#[derive(Debug)]
pub struct Burst<'a> {
    consumer: &'a mut Consumer,
    count: usize,
}

impl Burst<'_> {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the burst is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`-th message, oldest first.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        let index = self.consumer.head.wrapping_add(i as u64);
        // Validated in pop_burst; re-read and clamp in case a broken peer rewrote the prefix since.
        let len = self.consumer.ring.read_len(index).unwrap_or(0);
        // SAFETY: slots `head..head + count` are published and unreleased while the burst lives;
        // `len` is at most the capacity.
        Some(unsafe { self.consumer.ring.message(index, len) })
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.count).filter_map(move |i| self.get(i))
    }

    /// Frees all slots now (same as dropping the burst).
    pub fn release(self) {}
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        if self.count > 0 {
            let next = self.consumer.head.wrapping_add(self.count as u64);
            self.consumer.release_to(next);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn cfg(slot_count: u32, slot_size: u32) -> RingConfig {
        RingConfig {
            slot_count,
            slot_size,
        }
    }

    #[test]
    fn header_layout() {
        assert_eq!(std::mem::size_of::<RingHeader>(), RING_HEADER_LEN);
        assert_eq!(std::mem::align_of::<RingHeader>(), 64);
        assert_eq!(std::mem::offset_of!(RingHeader, config), 0);
        assert_eq!(std::mem::offset_of!(RingHeader, producer), 64);
        assert_eq!(std::mem::offset_of!(RingHeader, consumer), 128);
        assert_eq!(std::mem::offset_of!(RingHeader, doorbell), 192);
        assert_eq!(cfg(4, 64).region_len(), 256 + 4 * 64);
        assert_eq!(cfg(4, 64).max_message(), 56);
    }

    #[test]
    fn push_pop_fifo_and_full() {
        let (mut tx, mut rx) = channel(cfg(4, 32)).unwrap();
        assert!(rx.try_pop().unwrap().is_none());
        for i in 0..4u8 {
            tx.try_push(&[i; 5]).unwrap();
        }
        assert_eq!(tx.try_push(b"x"), Err(RingError::Full));
        assert_eq!(&*rx.try_pop().unwrap().unwrap(), &[0u8; 5]);
        tx.try_push(b"x").unwrap();
        for i in 1..4u8 {
            let slot = rx.try_pop().unwrap().unwrap();
            assert_eq!(&*slot, &[i; 5]);
        }
        assert_eq!(&*rx.try_pop().unwrap().unwrap(), b"x");
        assert!(rx.try_pop().unwrap().is_none());
    }

    #[test]
    fn slot_is_held_until_guard_drops() {
        let (mut tx, mut rx) = channel(cfg(1, 16)).unwrap();
        tx.try_push(b"a").unwrap();
        let slot = rx.try_pop().unwrap().unwrap();
        assert_eq!(tx.try_push(b"b"), Err(RingError::Full));
        assert_eq!(&*slot, b"a");
        slot.release();
        tx.try_push(b"b").unwrap();
    }

    #[test]
    fn oversized_message_is_rejected() {
        let (mut tx, mut rx) = channel(cfg(2, 16)).unwrap();
        assert_eq!(tx.max_message(), 8);
        tx.try_push(&[7; 8]).unwrap();
        assert_eq!(
            tx.try_push(&[7; 9]),
            Err(RingError::TooLarge {
                len: 9,
                capacity: 8
            })
        );
        assert_eq!(
            tx.push_burst(&[&[1u8][..], &[2; 9]]),
            Err(RingError::TooLarge {
                len: 9,
                capacity: 8
            })
        );
        let mut slot = tx.try_reserve().unwrap();
        slot.buf().fill(3);
        assert_eq!(
            slot.commit(9),
            Err(RingError::TooLarge {
                len: 9,
                capacity: 8
            })
        );
        assert_eq!(&*rx.try_pop().unwrap().unwrap(), &[7; 8]);
        assert!(rx.try_pop().unwrap().is_none());
    }

    #[test]
    fn bursts_and_staging() {
        let (mut tx, mut rx) = channel(cfg(8, 16)).unwrap();
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize % 8]).collect();
        assert_eq!(tx.push_burst(&msgs).unwrap(), 8);
        {
            let burst = rx.pop_burst(5).unwrap();
            assert_eq!(burst.len(), 5);
            let got: Vec<&[u8]> = burst.iter().collect();
            assert_eq!(got, msgs[..5].iter().map(|m| &m[..]).collect::<Vec<_>>());
            assert!(burst.get(5).is_none());
        }
        assert_eq!(tx.push_burst(&msgs[8..]).unwrap(), 2);
        let mut slot = tx.try_reserve().unwrap();
        slot.buf()[..3].copy_from_slice(b"abc");
        slot.stage(3).unwrap();
        // Staged but not flushed: invisible.
        assert_eq!(rx.pop_burst(100).unwrap().len(), 5);
        assert!(rx.try_pop().unwrap().is_none());
        tx.flush();
        assert_eq!(&*rx.try_pop().unwrap().unwrap(), b"abc");
        assert!(rx.pop_burst(100).unwrap().is_empty());
    }

    #[test]
    fn wraparound_across_threads() {
        const N: u64 = 200_000;
        let (mut tx, mut rx) = channel(cfg(8, 32)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let producer = std::thread::spawn(move || {
            let mut i = 0u64;
            while i < N {
                assert!(Instant::now() < deadline, "producer timed out");
                let burst: Vec<[u8; 8]> = (i..(i + 3).min(N)).map(u64::to_le_bytes).collect();
                let n = tx.push_burst(&burst).unwrap();
                if n == 0 {
                    std::thread::yield_now();
                }
                i += n as u64;
            }
        });
        let mut expect = 0u64;
        let mut backoff = Backoff::new(Default::default());
        while expect < N {
            assert!(Instant::now() < deadline, "consumer timed out at {expect}");
            let burst = rx.pop_burst(4).unwrap();
            if burst.is_empty() {
                drop(burst);
                rx.wait(&mut backoff);
                continue;
            }
            backoff.reset();
            for m in burst.iter() {
                assert_eq!(m, expect.to_le_bytes());
                expect += 1;
            }
        }
        producer.join().unwrap();
        assert!(rx.try_pop().unwrap().is_none());
    }

    #[test]
    fn attach_validates_the_header() {
        let c = cfg(4, 64);
        let region = Arc::new(HeapRegion::new(c.region_len() + 64));
        // Nothing initialised yet.
        assert_eq!(
            Producer::attach(region.clone(), 0).unwrap_err(),
            RingError::Layout("no ring at this offset (bad magic)")
        );
        // SAFETY: no handles attached.
        unsafe { init(&*region, 0, c).unwrap() };
        assert!(matches!(
            Producer::attach(region.clone(), 8),
            Err(RingError::Layout(_))
        ));
        let p = Producer::attach(region.clone(), 0).unwrap();
        assert_eq!(
            Producer::attach(region.clone(), 0).unwrap_err(),
            RingError::AlreadyAttached("producer")
        );
        drop(p);
        Producer::attach(region.clone(), 0).unwrap();

        let poke = |at: usize, v: u32| {
            // SAFETY: test-only write into the header of a ring with no consumer attached.
            unsafe { region.as_ptr().add(at).cast::<u32>().write(v) };
        };
        poke(8, 3); // slot count not a power of two
        assert_eq!(
            Consumer::attach(region.clone(), 0).unwrap_err(),
            RingError::Layout("slot count is not a power of two")
        );
        poke(8, 1024); // ring larger than the region
        assert_eq!(
            Consumer::attach(region.clone(), 0).unwrap_err(),
            RingError::Layout("ring does not fit the region")
        );
        poke(8, 4);
        poke(12, 12); // slot size not a multiple of 8
        assert!(matches!(
            Consumer::attach(region.clone(), 0),
            Err(RingError::Layout(_))
        ));
        poke(12, 64);
        poke(4, 99);
        assert_eq!(
            Consumer::attach(region.clone(), 0).unwrap_err(),
            RingError::Layout("unsupported ring version")
        );
        poke(4, RING_VERSION);
        Consumer::attach(region.clone(), 0).unwrap();

        // A heap region too small for any ring.
        let tiny = Arc::new(HeapRegion::new(64));
        // SAFETY: fresh region, nothing attached.
        let res = unsafe { init(&*tiny, 0, c) };
        assert_eq!(res, Err(RingError::Layout("ring does not fit the region")));
        assert!(matches!(
            RingConfig {
                slot_count: 0,
                slot_size: 64
            }
            .validate(),
            Err(RingError::Layout(_))
        ));
    }

    #[test]
    fn corrupt_peer_is_detected() {
        let c = cfg(4, 32);
        let region = Arc::new(HeapRegion::new(c.region_len()));
        // SAFETY: fresh region.
        unsafe { init(&*region, 0, c).unwrap() };
        let mut tx = Producer::attach(region.clone(), 0).unwrap();
        let mut rx = Consumer::attach(region.clone(), 0).unwrap();
        tx.try_push(b"hello").unwrap();
        // A peer that writes a length larger than the slot.
        // SAFETY: test-only write into the first slot's prefix.
        unsafe {
            region
                .as_ptr()
                .add(RING_HEADER_LEN)
                .cast::<u32>()
                .write(1000)
        };
        assert!(matches!(rx.try_pop(), Err(RingError::Corrupt(_))));
        assert!(matches!(rx.pop_burst(4), Err(RingError::Corrupt(_))));
        // A producer index far ahead.
        // SAFETY: test-only write to the producer index line.
        unsafe { region.as_ptr().add(64).cast::<u64>().write(1 << 40) };
        assert!(matches!(rx.try_pop(), Err(RingError::Corrupt(_))));
        // A consumer index ahead of the producer, seen when the ring looks full.
        for _ in 0..3 {
            tx.try_push(b"x").unwrap();
        }
        // SAFETY: test-only write to the consumer index line.
        unsafe { region.as_ptr().add(128).cast::<u64>().write(1 << 40) };
        assert!(matches!(tx.try_push(b"y"), Err(RingError::Corrupt(_))));
    }
}
