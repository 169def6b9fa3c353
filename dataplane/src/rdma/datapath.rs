//! The data path: connection set-up from a peer's [`QpInfo`], then rings mirrored by RDMA WRITE,
//! in bursts.
//!
//! A connection end owns one registered region ([`RegionLayout`]), a ring consumer over its
//! receive ring, a ring producer over its local copy of the send ring, and a `Sender` that
//! copies what [`Mirror::plan`] says to the peer: one chain of RDMA WRITEs per flush, posted with
//! one doorbell, the last work request signaled only every [`SIGNAL_INTERVAL`] work requests or
//! so (selective signaling). Slot bytes go as WRITEs from the registered copy; index words go
//! inline, so the value posted is the value planned even if the local index moves on before the
//! NIC reads it. The provider's `ibv_post_send` puts a store barrier before the doorbell, so the
//! NIC's DMA reads see the slot bytes our producer wrote before the post.
//!
//! # Send-queue accounting
//!
//! Work requests get consecutive ids (`posted` counts them). A successful signaled completion with
//! id `s` means every work request up to `s` completed (RC completes in order), so
//! `completed = s`. Before posting a chain of `k <= MAX_CHAIN` requests we need
//! `posted - completed + k <= SEND_DEPTH`; a chain's last request is signaled whenever that
//! leaves more than `SIGNAL_INTERVAL` unsignaled requests behind, so at most `SIGNAL_INTERVAL`
//! requests are ever unsignaled. With `SIGNAL_INTERVAL + MAX_CHAIN <= SEND_DEPTH`, a full queue
//! always has a signaled request outstanding, and polling for it (under a deadline) makes room.
//!
//! # Waiting
//!
//! The NIC cannot ring a futex, so an RDMA end never parks on the ring's doorbell: its waits spin,
//! then yield, then sleep in short naps, and always under a deadline.
//!
//! # Large frames
//!
//! A frame larger than a slot goes as fragments ([`crate::frag`], shared with shm): a reply waits
//! for credit slot by slot, a request's remaining fragments wait in the client's outbox and go as
//! credit arrives. A client's `queue` therefore never waits: on a full ring it fails with
//! `RingError::Full` and the caller drains replies before trying again, since the server may be
//! waiting for exactly that while it streams a reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::QpInfo;
use super::device::{
    CompletionQueue, Context, MemoryRegion, PreparedQueuePair, ProtectionDomain, QpCaps,
    QpSettings, QueuePair, WorkCompletion,
};
use super::gid;
use super::layout::{
    word, Mirror, Op, RegionLayout, PEER_ATTACHED, PEER_DETACHED, PEER_STATE_OFFSET,
};
use crate::frag::{self, Outbox, Reassembly, Room};
use crate::link::{ClientLink, Replier, ServerLink};
use crate::ring::{Consumer, Producer, RingConfig, RingError};
use crate::wire::{Frame, Limits, Message};
use crate::{Error, Result};

/// Send-queue depth of every queue pair.
pub const SEND_DEPTH: u32 = 256;
/// Most work requests posted with one doorbell.
pub const MAX_CHAIN: usize = 64;
/// Most unsignaled work requests left behind a chain.
pub const SIGNAL_INTERVAL: u64 = 64;
/// Completion-queue entries: every signaled request fits, with room to spare.
pub const CQ_ENTRIES: u32 = SEND_DEPTH + 16;
/// Inline bytes asked for (index words need 8).
pub const INLINE_BYTES: u32 = 64;
/// Completions taken per poll.
const POLL_BATCH: usize = 16;
/// Spins before a wait starts yielding, and yields before it naps.
const WAIT_SPINS: u32 = 1_000;
const WAIT_YIELDS: u32 = 100;
/// One nap of a long wait.
const WAIT_NAP: Duration = Duration::from_micros(50);
/// How long a dropping end waits for its goodbye write to complete.
const DETACH_GRACE: Duration = Duration::from_millis(100);

const _: () = {
    assert!(SIGNAL_INTERVAL + MAX_CHAIN as u64 <= SEND_DEPTH as u64);
    assert!(CQ_ENTRIES >= SEND_DEPTH);
    assert!(INLINE_BYTES >= 8);
};

/// Which device, port and GID to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Device name (e.g. `rxe0`); `None` takes the first device.
    pub name: Option<String>,
    /// Port number, from 1.
    pub port: u8,
    /// GID index; `None` chooses one ([`RdmaDevice::open`]): on RoCE a RoCE v2 GID whose
    /// netdev is up, the IPv4-mapped one first (see [`super::gid`]); on InfiniBand index 0.
    pub gid_index: Option<u8>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            name: None,
            port: 1,
            gid_index: None,
        }
    }
}

/// Environment variable naming the device ([`DeviceConfig::from_env`]).
pub const DEVICE_ENV: &str = "AUTOLOC_RDMA_DEVICE";
/// Environment variable with the port number.
pub const PORT_ENV: &str = "AUTOLOC_RDMA_PORT";
/// Environment variable with the GID index (overrides the choice [`RdmaDevice::open`] makes).
pub const GID_INDEX_ENV: &str = "AUTOLOC_RDMA_GID_INDEX";

impl DeviceConfig {
    /// The configuration from [`DEVICE_ENV`], [`PORT_ENV`] and [`GID_INDEX_ENV`], each falling
    /// back to the default when unset or unparsable.
    pub fn from_env() -> Self {
        let d = Self::default();
        let num = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u8>().ok())
        };
        Self {
            name: std::env::var(DEVICE_ENV).ok().filter(|s| !s.is_empty()),
            port: num(PORT_ENV).unwrap_or(d.port),
            gid_index: num(GID_INDEX_ENV).or(d.gid_index),
        }
    }
}

/// An open device with a protection domain, shared by all connections of a process.
#[derive(Debug, Clone)]
pub struct RdmaDevice {
    ctx: Context,
    pd: ProtectionDomain,
    settings: QpSettings,
}

impl RdmaDevice {
    /// Opens the device, checks the port is up, chooses the GID index unless `cfg` names one
    /// (on RoCE: a RoCE v2 GID whose netdev is up, the IPv4-mapped one first; an error naming
    /// every candidate if there is none), checks it exists, allocates a PD. Without any device
    /// this is [`Error::NoRdmaDevice`] with a one-line message.
    pub fn open(cfg: &DeviceConfig) -> Result<Self> {
        let ctx = Context::open(cfg.name.as_deref())?;
        let port = ctx.query_port(cfg.port)?;
        if !port.is_active() {
            return Err(Error::Rdma {
                op: "open rdma device",
                errno: libc::ENETDOWN,
                message: format!(
                    "port {} of {} is not active (state {})",
                    cfg.port,
                    ctx.name(),
                    port.state
                ),
            });
        }
        let gid_index = match cfg.gid_index {
            Some(i) => i,
            // InfiniBand addresses by LID; its GID 0 is the port's own.
            None if !port.is_ethernet() => 0,
            None => {
                let table = gid::read_gid_table(std::path::Path::new("/sys"), ctx.name(), cfg.port)
                    .and_then(|t| gid::choose_gid(&t));
                table.map_err(|why| Error::Rdma {
                    op: "choose a GID",
                    errno: libc::EADDRNOTAVAIL,
                    message: format!(
                        "port {} of {}: {why}; set {GID_INDEX_ENV} to choose one",
                        cfg.port,
                        ctx.name()
                    ),
                })?
            }
        };
        ctx.gid(cfg.port, gid_index)?;
        let pd = ctx.alloc_pd()?;
        Ok(Self {
            ctx,
            pd,
            settings: QpSettings {
                port: cfg.port,
                gid_index,
            },
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.ctx.name()
    }

    /// The GID index its queue pairs use (chosen by [`open`](Self::open) or configured).
    pub fn gid_index(&self) -> u8 {
        self.settings.gid_index
    }
}

/// Ring geometry and timeouts of one connection, chosen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    pub requests: RingConfig,
    pub responses: RingConfig,
    /// Longest a send waits for ring space or send-queue room before failing.
    pub timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        let ring = RingConfig {
            slot_count: 256,
            slot_size: 4096,
        };
        Self {
            requests: ring,
            responses: ring,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a server accepts from a client's [`QpInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest region (both rings) a client may make the server register.
    pub max_region_len: usize,
    /// Longest a reply waits for ring space or send-queue room before failing.
    pub timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_region_len: 64 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A region with both rings initialised, and a queue pair ready to connect.
struct Prepared {
    layout: RegionLayout,
    mr: Arc<MemoryRegion>,
    cq: CompletionQueue,
    qp: PreparedQueuePair,
}

impl Prepared {
    fn new(dev: &RdmaDevice, layout: RegionLayout) -> Result<Self> {
        layout.validate()?;
        let mr = Arc::new(dev.pd.register(layout.len())?);
        // SAFETY: the region is brand new; no handle is attached and no peer knows its rkey yet.
        unsafe { layout.init(&*mr)? };
        let cq = dev.ctx.create_cq(CQ_ENTRIES)?;
        let qp = dev.pd.create_qp(
            &cq,
            QpCaps {
                send_wr: SEND_DEPTH,
                recv_wr: 1,
                inline_data: INLINE_BYTES,
            },
            dev.settings,
        )?;
        if qp.caps().inline_data < 8 {
            return Err(Error::Rdma {
                op: "ibv_create_qp",
                errno: libc::EOPNOTSUPP,
                message: "the device grants no inline data; index words need 8 bytes".into(),
            });
        }
        Ok(Self { layout, mr, cq, qp })
    }

    fn info(&self) -> QpInfo {
        QpInfo {
            endpoint: self.qp.endpoint(),
            addr: self.mr.addr(),
            rkey: self.mr.rkey(),
            requests: self.layout.requests,
            responses: self.layout.responses,
        }
    }

    /// Connects and attaches the ring ends of `mirror`'s side.
    fn connect(self, remote: QpInfo, mirror: Mirror, timeout: Duration) -> Result<Endpoint> {
        let rx = Consumer::attach(self.mr.clone(), mirror.rx_offset())?;
        let tx = Producer::attach(self.mr.clone(), mirror.tx_offset())?;
        let qp = self.qp.handshake(remote)?;
        Ok(Endpoint {
            rx,
            sender: Sender {
                tx,
                mirror,
                ops: Vec::new(),
                qp,
                cq: self.cq,
                mr: self.mr,
                remote_addr: remote.addr,
                rkey: remote.rkey,
                posted: 0,
                completed: 0,
                last_signaled: 0,
                probe_mark: 0,
                failure: None,
                timeout,
                wcs: std::array::from_fn(|_| WorkCompletion::default()),
            },
        })
    }
}

/// The sending half of an end: the local send ring and everything that copies it to the peer.
struct Sender {
    tx: Producer,
    mirror: Mirror,
    /// The plan being posted (kept to reuse its allocation).
    ops: Vec<Op>,
    /// Declared before `mr`: the queue pair goes first on drop, so no work request outlives the
    /// memory it reads.
    qp: QueuePair,
    cq: CompletionQueue,
    mr: Arc<MemoryRegion>,
    remote_addr: u64,
    rkey: u32,
    /// Work requests posted so far (the id of the last one).
    posted: u64,
    /// Every work request with an id up to this one has completed.
    completed: u64,
    /// Id of the last signaled work request.
    last_signaled: u64,
    /// `posted` at the last [`probe`](Self::probe).
    probe_mark: u64,
    /// Why the queue pair is unusable, once it is.
    failure: Option<String>,
    timeout: Duration,
    wcs: [WorkCompletion; POLL_BATCH],
}

impl Sender {
    fn check(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(why) => Err(Error::Rdma {
                op: "rdma link",
                errno: libc::EIO,
                message: why.clone(),
            }),
        }
    }

    /// Takes completions without blocking; a failed one breaks the link.
    fn reap(&mut self) -> Result<()> {
        loop {
            let done = self.cq.poll(&mut self.wcs)?;
            let n = done.len();
            for wc in done {
                if wc.is_ok() {
                    self.completed = self.completed.max(wc.wr_id());
                } else if self.failure.is_none() {
                    self.failure = Some(format!(
                        "rdma write {} failed: {} (status {})",
                        wc.wr_id(),
                        wc.status_str(),
                        wc.status()
                    ));
                }
            }
            if n < POLL_BATCH {
                return self.check();
            }
        }
    }

    /// Publishes staged messages locally, then copies everything the peer lacks (messages,
    /// producer index, credit) in chains of RDMA WRITEs.
    fn flush(&mut self) -> Result<()> {
        self.check()?;
        self.tx.flush();
        self.reap()?;
        let mut ops = std::mem::take(&mut self.ops);
        ops.clear();
        let planned = self.mirror.plan(&*self.mr, &mut ops);
        let result = planned
            .map_err(Error::from)
            .and_then(|()| ops.chunks(MAX_CHAIN).try_for_each(|c| self.post(c)));
        self.ops = ops;
        if let Err(e) = &result {
            // A partly copied plan cannot be resumed: the link is over.
            self.failure.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// Posts one chain, after making room in the send queue.
    fn post(&mut self, chain: &[Op]) -> Result<()> {
        let k = chain.len() as u64;
        let deadline = Instant::now() + self.timeout;
        let mut waits = 0u32;
        while self.posted - self.completed + k > u64::from(SEND_DEPTH) {
            self.reap()?;
            pause(&mut waits, deadline, "wait for send-queue room")?;
        }
        let signal = self.posted + k - self.last_signaled >= SIGNAL_INTERVAL;
        let first_id = self.posted + 1;
        let mut batch = self.qp.batch();
        for op in chain {
            match *op {
                Op::Bytes { offset, len } => batch.write(
                    &self.mr,
                    offset..offset + len,
                    self.remote_addr + offset as u64,
                    self.rkey,
                )?,
                Op::Word { offset, value } => {
                    batch.write_u64(value, self.remote_addr + offset as u64, self.rkey)?
                }
            }
        }
        // SAFETY: the WRITEs read only slots of our send ring in `self.mr`. The MR is kept alive
        // by `self.mr` (and every ring handle) and is dropped after the queue pair (field order),
        // so it stays registered while any request can run. The slot bytes stay unchanged until
        // the WRITE has executed: our producer reuses a slot only after the peer's credit shows
        // the peer consumed it, which it can do only after the WRITE (and the index WRITE behind
        // it on this RC queue pair) landed.
        unsafe { batch.submit(first_id, signal)? };
        self.posted += k;
        if signal {
            self.last_signaled = self.posted;
        }
        Ok(())
    }

    /// Waits for ring space after the producer found the ring full.
    fn wait_for_room(&mut self, peer_gone: impl Fn(&Self) -> bool) -> Result<()> {
        self.flush()?;
        let deadline = Instant::now() + self.timeout;
        let mut waits = 0u32;
        loop {
            match self.tx.try_reserve() {
                Ok(_) => return Ok(()), // dropping the reservation leaves the ring unchanged
                Err(RingError::Full) => {}
                Err(e) => return Err(e.into()),
            }
            if peer_gone(self) {
                return Err(Error::Closed);
            }
            self.reap()?;
            pause(&mut waits, deadline, "wait for ring space")?;
        }
    }

    /// Tells the peer we are leaving, and waits briefly for the write to complete.
    fn say_goodbye(&mut self) {
        // A broken queue pair cannot send, and a peer that left has nobody to tell.
        if self.failure.is_some() || self.peer_detached() {
            return;
        }
        let Some(id) = self.write_peer_state(PEER_DETACHED) else {
            return;
        };
        let deadline = Instant::now() + DETACH_GRACE;
        while self.completed < id && self.reap().is_ok() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// Finds out whether the peer's queue pair is still there when no traffic would: if nothing
    /// was posted since the last probe, posts one signaled inline WRITE of [`PEER_ATTACHED`]
    /// into the peer's state word, the value it holds while we are attached (we write
    /// [`PEER_DETACHED`] there only in [`say_goodbye`](Self::say_goodbye), after which nothing is
    /// posted; RC keeps the order), so the peer sees no change. A peer that died without a
    /// goodbye (killed, crashed: its queue pair destroyed with its process) never acknowledges
    /// it; the WRITE then completes with an error once its retries are spent (about half a
    /// second: the queue pair's ACK timeout times its retry count), and a later reap marks the
    /// link failed, so `peer_gone` says so.
    fn probe(&mut self) {
        if self.failure.is_some() || self.reap().is_err() || self.peer_detached() {
            return;
        }
        if self.posted != self.probe_mark {
            // Traffic since the last probe: its completions tell, errors included.
            self.probe_mark = self.posted;
            return;
        }
        if self.posted - self.completed + 1 > u64::from(SEND_DEPTH) {
            return;
        }
        if let Some(id) = self.write_peer_state(PEER_ATTACHED) {
            self.probe_mark = id;
        }
    }

    /// Posts one signaled inline WRITE of `value` into the peer's state word; its work request
    /// id, or `None` if it could not be posted.
    fn write_peer_state(&mut self, value: u64) -> Option<u64> {
        let remote = self.remote_addr + PEER_STATE_OFFSET as u64;
        let id = self.posted + 1;
        let mut batch = self.qp.batch();
        batch.write_u64(value, remote, self.rkey).ok()?;
        // SAFETY: an inline write names no local memory.
        unsafe { batch.submit(id, true) }.ok()?;
        self.posted = id;
        self.last_signaled = id;
        Some(id)
    }

    fn peer_detached(&self) -> bool {
        // SAFETY: the control line is the first 64 bytes of the region laid out by RegionLayout.
        let state = unsafe { word(&*self.mr, PEER_STATE_OFFSET) };
        state.load(std::sync::atomic::Ordering::Acquire) == PEER_DETACHED
    }
}

/// One idle step of a wait with a deadline: spin, yield, then nap.
fn pause(waits: &mut u32, deadline: Instant, op: &'static str) -> Result<()> {
    if Instant::now() >= deadline {
        return Err(Error::Rdma {
            op,
            errno: libc::ETIMEDOUT,
            message: "timed out: the peer made no progress".into(),
        });
    }
    *waits = waits.saturating_add(1);
    if *waits < WAIT_SPINS {
        std::hint::spin_loop();
    } else if *waits < WAIT_SPINS + WAIT_YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(WAIT_NAP);
    }
    Ok(())
}

/// One end of a connection.
struct Endpoint {
    rx: Consumer,
    sender: Sender,
}

impl Endpoint {
    fn peer_gone(&self) -> bool {
        self.sender.failure.is_some() || self.sender.peer_detached()
    }

    fn describe(&self) -> String {
        let qp = &self.sender.qp;
        format!(
            "rdma {} qpn {} -> qpn {}",
            qp.device_name(),
            qp.qpn(),
            qp.remote().endpoint.qpn
        )
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.sender.say_goodbye();
    }
}

/// The server end of one RDMA connection (runs on the module's data-plane thread).
pub struct RdmaServerConn {
    end: Endpoint,
    /// The request being reassembled from fragments.
    reassembly: Reassembly,
    /// The reply being cut into fragments.
    outbox: Outbox,
}

impl std::fmt::Debug for RdmaServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.end.describe())
    }
}

impl RdmaServerConn {
    /// Accepts a client: registers a region with the client's geometry (within `limits`),
    /// connects a queue pair to the client's, and returns the connection and the [`QpInfo`] to
    /// answer `AUTOLOC.CONNECT rdma` with.
    pub fn accept(
        dev: &RdmaDevice,
        client: &QpInfo,
        limits: &ServerLimits,
    ) -> Result<(Self, QpInfo)> {
        let layout = RegionLayout {
            requests: client.requests,
            responses: client.responses,
        };
        layout.validate()?;
        if layout.len() > limits.max_region_len {
            return Err(Error::Protocol(format!(
                "rdma rings of {} bytes exceed the server's limit of {}",
                layout.len(),
                limits.max_region_len
            )));
        }
        let prepared = Prepared::new(dev, layout)?;
        let info = prepared.info();
        let end = prepared.connect(*client, Mirror::server(&layout), limits.timeout)?;
        let conn = Self {
            end,
            reassembly: Reassembly::new(),
            outbox: Outbox::new(),
        };
        Ok((conn, info))
    }
}

/// Replies go into the local copy of the response ring (as fragments if they are larger than a
/// slot) and reach the client at the end of the burst (or earlier, when the ring fills).
struct RdmaReplier<'a> {
    room: RdmaRoom<'a>,
    outbox: &'a mut Outbox,
}

impl Replier for RdmaReplier<'_> {
    fn reply(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        frag::reply(&mut self.room, self.outbox, request_id, message)
    }
}

/// The send ring of an end that waits for room: copies what is staged to the peer, then waits
/// for credit under the link's timeout (per slot, so a reply larger than the ring streams).
struct RdmaRoom<'a>(&'a mut Sender);

impl Room for RdmaRoom<'_> {
    fn producer(&mut self) -> &mut Producer {
        &mut self.0.tx
    }

    fn wait_for_room(&mut self) -> Result<()> {
        self.0.wait_for_room(Sender::peer_detached)
    }
}

impl ServerLink for RdmaServerConn {
    fn serve(
        &mut self,
        max: usize,
        handle: &mut dyn FnMut(Frame<'_>, &mut dyn Replier),
    ) -> Result<usize> {
        let limits = Limits::default();
        let RdmaServerConn {
            end: Endpoint { rx, sender },
            reassembly,
            outbox,
        } = self;
        sender.check()?;
        if outbox.is_cut_short() {
            return Err(frag::cut_short(outbox));
        }
        let burst = rx.pop_burst(max)?;
        let slots = burst.len();
        let mut replier = RdmaReplier {
            room: RdmaRoom(sender),
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
        }
        drop(burst);
        // One chain: the replies, the response index, and the credit for the slots taken
        // (fragments too: a client streaming a large request waits for that credit).
        if slots > 0 {
            replier.room.0.flush()?;
        }
        if replier.outbox.is_cut_short() {
            return Err(frag::cut_short(replier.outbox));
        }
        Ok(served)
    }

    fn has_pending(&self) -> bool {
        self.end.rx.has_pending()
    }

    fn peer_gone(&self) -> bool {
        self.end.peer_gone()
    }

    fn probe_peer(&mut self) {
        self.end.sender.probe();
    }

    fn describe(&self) -> String {
        self.end.describe()
    }
}

/// A client end whose queue pair is not connected yet: send [`PendingClient::info`] over the
/// control path, then [`PendingClient::connect`] with the server's answer.
pub struct PendingClient {
    prepared: Prepared,
    timeout: Duration,
}

impl std::fmt::Debug for PendingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingClient")
            .field("info", &self.info())
            .finish()
    }
}

impl PendingClient {
    /// What to send as `AUTOLOC.CONNECT rdma <info.to_text()>`.
    pub fn info(&self) -> QpInfo {
        self.prepared.info()
    }

    /// Connects to the server that answered with `server`; its geometry must match ours.
    pub fn connect(self, server: &QpInfo) -> Result<RdmaClientLink> {
        let layout = self.prepared.layout;
        if server.requests != layout.requests || server.responses != layout.responses {
            return Err(Error::Protocol(
                "rdma server answered with a different ring geometry".into(),
            ));
        }
        let end = self
            .prepared
            .connect(*server, Mirror::client(&layout), self.timeout)?;
        Ok(RdmaClientLink {
            end,
            outbox: Outbox::new(),
            reassembly: Reassembly::new(),
        })
    }
}

/// The client end of one RDMA connection.
pub struct RdmaClientLink {
    end: Endpoint,
    /// The fragments of a large request not written yet.
    outbox: Outbox,
    /// The large reply being put back together.
    reassembly: Reassembly,
}

impl std::fmt::Debug for RdmaClientLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.end.describe())
    }
}

impl RdmaClientLink {
    /// Registers the client's rings and creates its queue pair (step one of connecting).
    pub fn prepare(dev: &RdmaDevice, cfg: &LinkConfig) -> Result<PendingClient> {
        let layout = RegionLayout {
            requests: cfg.requests,
            responses: cfg.responses,
        };
        Ok(PendingClient {
            prepared: Prepared::new(dev, layout)?,
            timeout: cfg.timeout,
        })
    }
}

impl RdmaClientLink {
    /// Writes `slot` into the request ring as one raw message, unframed, and copies it to the
    /// server: what a broken or hostile client can do, for tests of the server's input checks
    /// (as `ShmClient::try_send` is for shm). A full ring is `RingError::Full`.
    pub fn send_raw(&mut self, slot: &[u8]) -> Result<()> {
        let sender = &mut self.end.sender;
        sender.check()?;
        sender.tx.try_push(slot)?;
        sender.flush()
    }

    /// Writes what fits of a large request's remaining fragments and copies them to the server.
    fn pump(&mut self) -> Result<()> {
        let sender = &mut self.end.sender;
        if self.outbox.pump(&mut sender.tx)? > 0 {
            sender.flush()?;
        }
        Ok(())
    }
}

impl ClientLink for RdmaClientLink {
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        // As on shm: a full ring is reported, not waited on (the server may be waiting for us to
        // drain its replies), and a request larger than a slot is taken whole and its fragments
        // written as credit arrives (here and in flush, poll and wait).
        let sender = &mut self.end.sender;
        sender.check()?;
        frag::queue(&mut sender.tx, &mut self.outbox, request_id, message)
    }

    fn flush(&mut self) -> Result<()> {
        let sender = &mut self.end.sender;
        self.outbox.pump(&mut sender.tx)?;
        sender.flush()
    }

    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        let limits = Limits::default();
        let Endpoint { rx, sender } = &mut self.end;
        let burst = rx.pop_burst(usize::MAX)?;
        let n = burst.len();
        let mut delivered = 0;
        for raw in burst.iter() {
            delivered += usize::from(frag::receive(&mut self.reassembly, raw, &limits, f)?);
        }
        drop(burst);
        // Credit the server once a quarter of the ring is consumed (and in `wait`), so a server
        // with replies to send never waits on a credit we are sitting on.
        if n > 0 && sender.mirror.uncredited(&*sender.mr) >= u64::from(rx.slots() as u32 / 4).max(1)
        {
            sender.flush()?;
        }
        self.pump()?;
        Ok(delivered)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        // Send whatever the server may be waiting for (queued requests, credit) before waiting:
        // cheap when there is nothing, as the plan is then empty.
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let mut waits = 0u32;
        while !self.end.rx.has_pending() {
            let sender = &mut self.end.sender;
            if sender.failure.is_some() || sender.peer_detached() {
                return Err(Error::Closed);
            }
            sender.reap()?;
            if !self.outbox.is_empty() {
                // Credit for the rest of a large request may have arrived.
                self.pump()?;
            }
            if pause(&mut waits, deadline, "wait for reply").is_err() {
                break; // the caller's timeout: not an error, like the shm link
            }
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        self.end.peer_gone()
    }

    fn max_frame(&self) -> usize {
        frag::max_frame(self.end.sender.tx.max_message())
    }
}
