//! Safe handles over libibverbs: the only file of the transport that calls `rdma-sys`.
//!
//! Every handle owns one verbs object, frees it in `Drop` (never panicking: a failed free is
//! ignored, or the memory leaked where freeing it could be unsound), and keeps its parent alive
//! through an `Arc`, so a child can never outlive the object it was created from:
//!
//! ```text
//! Context ── ProtectionDomain ── MemoryRegion (owns a page-aligned buffer)
//!        └── CompletionQueue ─┴─ PreparedQueuePair --handshake(remote)--> QueuePair
//! ```
//!
//! A queue pair is created in RESET as a [`PreparedQueuePair`], which can only tell its
//! [`QpEndpoint`]; it becomes a [`QueuePair`] that can post work only through
//! [`PreparedQueuePair::handshake`] (RESET -> INIT -> RTR -> RTS). Work is posted in batches: a
//! [`WriteBatch`] borrows the queue pair `&mut` until its `unsafe` [`WriteBatch::submit`], one
//! doorbell for the whole chain.
//!
//! Verbs are thread-safe (libibverbs locks where a provider needs it), so the handles are `Send`
//! and `Sync`.

use std::ffi::{c_int, CStr};
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rdma_sys as ffi;

use super::control::{QpEndpoint, QpInfo, MAX_24, MTU_CODES};
use crate::ring::{Region, RING_ALIGN};
use crate::{Error, Result};

/// `IBV_LINK_LAYER_ETHERNET` (an anonymous enum in verbs.h, so bindgen has no name for it).
const LINK_LAYER_ETHERNET: u8 = 2;
/// Page size the registered buffers are aligned to.
pub const PAGE_SIZE: usize = 4096;

/// The calling thread's errno.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of the errno values verbs commonly return.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ENOSYS => "ENOSYS",
        libc::ENODEV => "ENODEV",
        libc::ENOENT => "ENOENT",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EIO => "EIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EFAULT => "EFAULT",
        _ => "unknown errno",
    }
}

/// `strerror(errno)`, without std's " (os error N)" suffix.
fn describe_errno(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// The error of a verb that failed with `errno`.
pub(crate) fn verb_error(op: &'static str, errno: i32) -> Error {
    Error::Rdma {
        op,
        errno,
        message: format!("{}, {}", describe_errno(errno), errno_name(errno)),
    }
}

/// The one-line error for "this host cannot do RDMA", from `ibv_get_device_list`'s errno
/// (`None`: it returned an empty list).
pub fn no_device_error(errno: Option<i32>) -> Error {
    let message = match errno {
        Some(libc::ENOSYS) => format!(
            "no RDMA support in this kernel (ibv_get_device_list: errno {}, ENOSYS); load \
             rdma_rxe / set up Soft-RoCE with ci/rxe-testbed",
            libc::ENOSYS
        ),
        Some(e) => format!(
            "cannot list RDMA devices (ibv_get_device_list: errno {e}, {}: {})",
            errno_name(e),
            describe_errno(e)
        ),
        None => "no RDMA device found (ibv_get_device_list returned an empty list); set up \
                 Soft-RoCE with ci/rxe-testbed"
            .to_string(),
    };
    Error::NoRdmaDevice { errno, message }
}

/// One RDMA device of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name, e.g. `mlx5_0` or `rxe0`.
    pub name: String,
    /// Node GUID (host byte order).
    pub guid: u64,
}

/// The list `ibv_get_device_list` returns, freed on drop.
struct DeviceList {
    raw: NonNull<*mut ffi::ibv_device>,
    len: usize,
}

impl DeviceList {
    /// Lists the devices; a NULL list or an empty one is [`Error::NoRdmaDevice`].
    fn get() -> Result<Self> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the function has no other preconditions.
        let raw = unsafe { ffi::ibv_get_device_list(&mut n) };
        let Some(raw) = NonNull::new(raw) else {
            return Err(no_device_error(Some(errno())));
        };
        let list = Self {
            raw,
            len: usize::try_from(n).unwrap_or(0),
        };
        if list.len == 0 {
            return Err(no_device_error(None));
        }
        Ok(list)
    }

    fn iter(&self) -> impl Iterator<Item = *mut ffi::ibv_device> + '_ {
        // SAFETY: the list holds `len` valid device pointers (then a NULL) until it is freed in
        // Drop, which cannot happen while `self` is borrowed.
        (0..self.len).map(move |i| unsafe { *self.raw.as_ptr().add(i) })
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed exactly once, here.
        unsafe { ffi::ibv_free_device_list(self.raw.as_ptr()) }
    }
}

/// Name and GUID of a listed device.
///
/// # Safety
///
/// `dev` must be an entry of a device list that is still allocated.
unsafe fn device_info(dev: *mut ffi::ibv_device) -> DeviceInfo {
    // SAFETY: per the contract `dev` is valid; the name is a NUL-terminated string inside the
    // device struct, valid as long as the list is.
    let name = unsafe { CStr::from_ptr(ffi::ibv_get_device_name(dev)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above.
    let guid = u64::from_be(unsafe { ffi::ibv_get_device_guid(dev) });
    DeviceInfo { name, guid }
}

/// The RDMA devices of this host. Errors with [`Error::NoRdmaDevice`], whose message is one line
/// saying why, if there are none or the kernel has no RDMA support at all.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    let list = DeviceList::get()?;
    // SAFETY: every entry comes from the live list.
    Ok(list.iter().map(|d| unsafe { device_info(d) }).collect())
}

struct ContextInner {
    raw: NonNull<ffi::ibv_context>,
    name: String,
}

// SAFETY: an ibv_context may be used from any thread; verbs on it are thread-safe.
unsafe impl Send for ContextInner {}
// SAFETY: as above.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // SAFETY: every child holds an Arc to this value, so none is left; closed once, here.
        unsafe { ffi::ibv_close_device(self.raw.as_ptr()) };
    }
}

/// An open device.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// State of a port, as far as connecting a queue pair cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// Port number (from 1).
    pub port: u8,
    /// `ibv_port_state` code (4 = active).
    pub state: u32,
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Active MTU as an `ibv_mtu` code.
    pub active_mtu: u8,
    /// `IBV_LINK_LAYER_*` code (1 = InfiniBand, 2 = Ethernet).
    pub link_layer: u8,
}

impl PortInfo {
    /// Whether the port is up.
    pub fn is_active(&self) -> bool {
        self.state == ffi::ibv_port_state::IBV_PORT_ACTIVE
    }

    /// Whether this is RoCE (Ethernet link layer): addressing needs a GID.
    pub fn is_ethernet(&self) -> bool {
        self.link_layer == LINK_LAYER_ETHERNET
    }
}

impl Context {
    /// Opens the device called `name`, or the first device if `None`.
    pub fn open(name: Option<&str>) -> Result<Self> {
        let list = DeviceList::get()?;
        let mut names = Vec::new();
        for dev in list.iter() {
            // SAFETY: `dev` comes from the live list.
            let info = unsafe { device_info(dev) };
            if name.is_none_or(|n| n == info.name) {
                // SAFETY: `dev` is valid while the list lives; the context stays valid after the
                // list is freed (documented by ibv_get_device_list(3)).
                let raw = unsafe { ffi::ibv_open_device(dev) };
                let raw =
                    NonNull::new(raw).ok_or_else(|| verb_error("ibv_open_device", errno()))?;
                return Ok(Self {
                    inner: Arc::new(ContextInner {
                        raw,
                        name: info.name,
                    }),
                });
            }
            names.push(info.name);
        }
        Err(Error::NoRdmaDevice {
            errno: None,
            message: format!(
                "no RDMA device named '{}' (this host has: {})",
                name.unwrap_or_default(),
                names.join(", ")
            ),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Queries port `port` (from 1).
    pub fn query_port(&self, port: u8) -> Result<PortInfo> {
        // SAFETY: ibv_port_attr is plain integers; all zeroes is a valid value.
        let mut attr: ffi::ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open; `attr` is a valid out-pointer of the size the inline
        // wrapper passes to the provider.
        let rc = unsafe { ffi::___ibv_query_port(self.inner.raw.as_ptr(), port, &mut attr) };
        if rc != 0 {
            return Err(verb_error("ibv_query_port", rc));
        }
        Ok(PortInfo {
            port,
            state: attr.state,
            lid: attr.lid,
            active_mtu: attr.active_mtu as u8,
            link_layer: attr.link_layer,
        })
    }

    /// The GID at `index` of port `port`, in network byte order.
    pub fn gid(&self, port: u8, index: u8) -> Result<[u8; 16]> {
        let mut gid = ffi::ibv_gid { raw: [0; 16] };
        // SAFETY: the context is open; `gid` is a valid out-pointer.
        let rc = unsafe {
            ffi::ibv_query_gid(self.inner.raw.as_ptr(), port, c_int::from(index), &mut gid)
        };
        if rc != 0 {
            return Err(verb_error("ibv_query_gid", errno()));
        }
        // SAFETY: every bit pattern of the union is a valid [u8; 16].
        Ok(unsafe { gid.raw })
    }

    /// Allocates a protection domain.
    pub fn alloc_pd(&self) -> Result<ProtectionDomain> {
        // SAFETY: the context is open.
        let raw = unsafe { ffi::ibv_alloc_pd(self.inner.raw.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_alloc_pd", errno()))?;
        Ok(ProtectionDomain {
            inner: Arc::new(PdInner {
                _ctx: self.inner.clone(),
                raw,
            }),
        })
    }

    /// Creates a completion queue of at least `entries` entries.
    pub fn create_cq(&self, entries: u32) -> Result<CompletionQueue> {
        let cqe =
            c_int::try_from(entries).map_err(|_| verb_error("ibv_create_cq", libc::EINVAL))?;
        // SAFETY: the context is open; no completion channel, no user context.
        let raw = unsafe {
            ffi::ibv_create_cq(
                self.inner.raw.as_ptr(),
                cqe,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_create_cq", errno()))?;
        Ok(CompletionQueue {
            inner: Arc::new(CqInner {
                _ctx: self.inner.clone(),
                raw,
            }),
        })
    }
}

struct PdInner {
    _ctx: Arc<ContextInner>,
    raw: NonNull<ffi::ibv_pd>,
}

// SAFETY: protection domains are usable from any thread.
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: every MR and QP of this PD holds an Arc to it, so none is left; freed once.
        unsafe { ffi::ibv_dealloc_pd(self.raw.as_ptr()) };
    }
}

/// A protection domain: memory regions and queue pairs of one PD may work together.
#[derive(Clone)]
pub struct ProtectionDomain {
    inner: Arc<PdInner>,
}

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("raw", &self.inner.raw)
            .finish()
    }
}

/// Capacities of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Send queue depth (work requests in flight).
    pub send_wr: u32,
    /// Receive queue depth (this transport posts no receives; keep it small).
    pub recv_wr: u32,
    /// Bytes that can be posted inline (copied at post time).
    pub inline_data: u32,
}

/// Queue-pair settings of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpSettings {
    /// Port the queue pair uses (from 1).
    pub port: u8,
    /// GID index used for RoCE (and for InfiniBand across subnets).
    pub gid_index: u8,
}

impl ProtectionDomain {
    /// Registers a new zeroed, page-aligned buffer of at least `len` bytes for local writes and
    /// remote RDMA WRITE.
    pub fn register(&self, len: usize) -> Result<MemoryRegion> {
        let buf = PageBuffer::new(len)?;
        let access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        // SAFETY: the PD is alive; the buffer is `buf.len` bytes, owned by the MemoryRegion we
        // return, and freed only after deregistration.
        let raw = unsafe {
            ffi::ibv_reg_mr(
                self.inner.raw.as_ptr(),
                buf.ptr.as_ptr().cast(),
                buf.len,
                access.0 as c_int,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_reg_mr", errno()))?;
        Ok(MemoryRegion {
            raw,
            buf,
            _pd: self.inner.clone(),
        })
    }

    /// Creates an RC queue pair (in RESET) whose sends and receives complete on `cq`.
    pub fn create_qp(
        &self,
        cq: &CompletionQueue,
        caps: QpCaps,
        settings: QpSettings,
    ) -> Result<PreparedQueuePair> {
        // SAFETY: ibv_qp_init_attr is pointers and integers; all zeroes (NULL, 0) is valid.
        let mut init: ffi::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq.inner.raw.as_ptr();
        init.recv_cq = cq.inner.raw.as_ptr();
        init.cap.max_send_wr = caps.send_wr;
        init.cap.max_recv_wr = caps.recv_wr;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        init.cap.max_inline_data = caps.inline_data;
        init.qp_type = ffi::ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        // SAFETY: the PD and CQ are alive (and kept alive by the QP's Arcs); `init` is valid.
        let raw = unsafe { ffi::ibv_create_qp(self.inner.raw.as_ptr(), &mut init) };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_create_qp", errno()))?;
        let inner = QpInner {
            raw,
            _pd: self.inner.clone(),
            _cq: cq.inner.clone(),
            ctx: self.inner._ctx.clone(),
            settings,
            // ibv_create_qp writes back the capacities it granted.
            caps: QpCaps {
                send_wr: init.cap.max_send_wr,
                recv_wr: init.cap.max_recv_wr,
                inline_data: init.cap.max_inline_data,
            },
        };
        let ctx = Context {
            inner: self.inner._ctx.clone(),
        };
        let port = ctx.query_port(settings.port)?;
        if !port.is_active() {
            return Err(Error::Rdma {
                op: "ibv_query_port",
                errno: libc::ENETDOWN,
                message: format!(
                    "port {} of {} is not active (state {})",
                    settings.port,
                    ctx.name(),
                    port.state
                ),
            });
        }
        let gid = ctx.gid(settings.port, settings.gid_index)?;
        // SAFETY: the QP is alive; qp_num is written once at creation.
        let qpn = unsafe { (*raw.as_ptr()).qp_num };
        let endpoint = QpEndpoint {
            lid: port.lid,
            qpn,
            psn: fresh_psn(),
            gid,
            mtu: port.active_mtu,
        };
        Ok(PreparedQueuePair {
            inner,
            endpoint,
            port,
        })
    }
}

/// A fresh 24-bit initial packet sequence number (unpredictable enough to tell connections apart).
fn fresh_psn() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed =
        nanos ^ std::process::id().rotate_left(12) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed);
    mixed.wrapping_mul(0x2545_f491) & MAX_24
}

struct CqInner {
    _ctx: Arc<ContextInner>,
    raw: NonNull<ffi::ibv_cq>,
}

// SAFETY: CQs may be polled from any thread (providers lock as needed).
unsafe impl Send for CqInner {}
// SAFETY: as above.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: every QP using this CQ holds an Arc to it, so none is left; destroyed once.
        unsafe { ffi::ibv_destroy_cq(self.raw.as_ptr()) };
    }
}

/// A completion queue.
#[derive(Clone)]
pub struct CompletionQueue {
    inner: Arc<CqInner>,
}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("raw", &self.inner.raw)
            .finish()
    }
}

/// One work completion.
#[repr(transparent)]
pub struct WorkCompletion(ffi::ibv_wc);

impl Default for WorkCompletion {
    fn default() -> Self {
        // SAFETY: ibv_wc is integers and a union of integers; all zeroes is valid.
        Self(unsafe { std::mem::zeroed() })
    }
}

impl WorkCompletion {
    /// The id the work request was posted with.
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }

    /// Whether the work request succeeded.
    pub fn is_ok(&self) -> bool {
        self.0.status == ffi::ibv_wc_status::IBV_WC_SUCCESS
    }

    /// The `ibv_wc_status` code.
    pub fn status(&self) -> u32 {
        self.0.status
    }

    /// The status in words, e.g. "transport retry counter exceeded".
    pub fn status_str(&self) -> String {
        // SAFETY: ibv_wc_status_str accepts any value and returns a static string.
        unsafe { CStr::from_ptr(ffi::ibv_wc_status_str(self.0.status)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The `ibv_wc_opcode` code.
    pub fn opcode(&self) -> u32 {
        self.0.opcode
    }
}

impl fmt::Debug for WorkCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkCompletion")
            .field("wr_id", &self.0.wr_id)
            .field("status", &self.0.status)
            .field("opcode", &self.0.opcode)
            .finish()
    }
}

impl CompletionQueue {
    /// Takes up to `buf.len()` completions without blocking; returns the filled prefix.
    pub fn poll<'a>(&self, buf: &'a mut [WorkCompletion]) -> Result<&'a [WorkCompletion]> {
        let n = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: the CQ is alive; `buf` has room for `n` completions, and WorkCompletion is a
        // transparent wrapper of ibv_wc.
        let got = unsafe { ffi::ibv_poll_cq(self.inner.raw.as_ptr(), n, buf.as_mut_ptr().cast()) };
        if got < 0 {
            return Err(verb_error("ibv_poll_cq", libc::EIO));
        }
        Ok(&buf[..got as usize])
    }
}

/// A zeroed, page-aligned heap buffer.
struct PageBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl PageBuffer {
    fn new(len: usize) -> Result<Self> {
        let len = len.max(1).next_multiple_of(PAGE_SIZE);
        let layout = std::alloc::Layout::from_size_align(len, PAGE_SIZE)
            .map_err(|_| verb_error("allocate registered buffer", libc::ENOMEM))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| verb_error("allocate registered buffer", libc::ENOMEM))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this size and alignment (which `new` validated); freed
        // once, here.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                std::alloc::Layout::from_size_align_unchecked(self.len, PAGE_SIZE),
            )
        }
    }
}

/// A registered memory region over a buffer it owns.
pub struct MemoryRegion {
    raw: NonNull<ffi::ibv_mr>,
    buf: PageBuffer,
    _pd: Arc<PdInner>,
}

// SAFETY: the MR handle is usable from any thread; the buffer is plain bytes accessed through raw
// pointers (by the ring protocol or the NIC), never through references to the whole.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered in ProtectionDomain::register, deregistered once, here.
        let rc = unsafe { ffi::ibv_dereg_mr(self.raw.as_ptr()) };
        if rc != 0 {
            // Still registered: the NIC may still write into the buffer, so freeing it could
            // hand live DMA memory to the allocator. Leak it instead.
            let buf = std::mem::replace(
                &mut self.buf,
                PageBuffer {
                    ptr: NonNull::dangling(),
                    len: 0,
                },
            );
            std::mem::forget(buf);
        }
    }
}

impl MemoryRegion {
    /// Local key (for work requests of this process).
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is registered; lkey is written once at registration.
        unsafe { (*self.raw.as_ptr()).lkey }
    }

    /// Remote key (what the peer names this region with).
    pub fn rkey(&self) -> u32 {
        // SAFETY: as in lkey.
        unsafe { (*self.raw.as_ptr()).rkey }
    }

    /// Address of the first byte (what the peer's RDMA WRITEs target).
    pub fn addr(&self) -> u64 {
        self.buf.ptr.as_ptr() as u64
    }

    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    pub fn len(&self) -> usize {
        self.buf.len
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.buf.len == 0
    }
}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &self.buf.ptr)
            .field("len", &self.buf.len)
            .field("lkey", &self.lkey())
            .field("rkey", &self.rkey())
            .finish()
    }
}

// SAFETY: the buffer is fixed for the life of the MR, page-aligned (so RING_ALIGN-aligned),
// `len` bytes long, and freed only when the MR drops.
unsafe impl Region for MemoryRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.buf.ptr.as_ptr()
    }
    fn size(&self) -> usize {
        self.buf.len
    }
}

const _: () = assert!(PAGE_SIZE & (RING_ALIGN - 1) == 0);

struct QpInner {
    raw: NonNull<ffi::ibv_qp>,
    /// Dropped after the QP (field order): the QP must go before the CQ it completes on.
    _cq: Arc<CqInner>,
    _pd: Arc<PdInner>,
    ctx: Arc<ContextInner>,
    settings: QpSettings,
    caps: QpCaps,
}

// SAFETY: QPs are usable from any thread; posting is serialised by `&mut` on QueuePair anyway.
unsafe impl Send for QpInner {}
// SAFETY: as above.
unsafe impl Sync for QpInner {}

impl Drop for QpInner {
    fn drop(&mut self) {
        // SAFETY: created in ProtectionDomain::create_qp, destroyed once, here. Outstanding work
        // requests are flushed by the provider; the memory they name belongs to MemoryRegions
        // whose owners keep them alive at least as long as this QP.
        unsafe { ffi::ibv_destroy_qp(self.raw.as_ptr()) };
    }
}

impl QpInner {
    fn modify(
        &self,
        attr: &mut ffi::ibv_qp_attr,
        mask: ffi::ibv_qp_attr_mask,
        op: &'static str,
    ) -> Result<()> {
        // SAFETY: the QP is alive; `attr` is a valid attribute struct with the fields `mask`
        // names filled in.
        let rc = unsafe { ffi::ibv_modify_qp(self.raw.as_ptr(), attr, mask.0 as c_int) };
        if rc != 0 {
            return Err(verb_error(op, rc));
        }
        Ok(())
    }
}

/// A queue pair that exists but is not connected: it can only say how to reach it.
pub struct PreparedQueuePair {
    inner: QpInner,
    endpoint: QpEndpoint,
    port: PortInfo,
}

impl fmt::Debug for PreparedQueuePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedQueuePair")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// RC timing: local ACK timeout 4.096 us * 2^14 (~67 ms), 6 retries, infinite RNR retries.
/// Not 7 retries: Soft-RoCE (rxe) takes a retry count of 7 as "retry forever", like the RNR
/// retry count, so a write to a peer that died would never fail and the death never be found
/// (seen in ci/rxe-vm: hundreds of retries, no error). With 6, a dead peer costs ~0.5 s.
const ACK_TIMEOUT: u8 = 14;
const RETRY_COUNT: u8 = 6;
const RNR_RETRY: u8 = 7;
const MIN_RNR_TIMER: u8 = 12;

impl PreparedQueuePair {
    /// How the peer reaches this queue pair (goes into [`QpInfo::endpoint`]).
    pub fn endpoint(&self) -> QpEndpoint {
        self.endpoint
    }

    /// What the queue pair was granted.
    pub fn caps(&self) -> QpCaps {
        self.inner.caps
    }

    /// Connects to the peer described by `remote`: RESET -> INIT -> RTR -> RTS. Remote RDMA
    /// WRITE into this side's registered memory is enabled from INIT on.
    pub fn handshake(self, remote: QpInfo) -> Result<QueuePair> {
        let r = remote.endpoint;
        if !MTU_CODES.contains(&r.mtu) {
            return Err(verb_error("ibv_modify_qp(RTR)", libc::EINVAL));
        }
        let s = self.inner.settings;
        // SAFETY: ibv_qp_attr is integers and unions of integers; all zeroes is valid.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num = s.port;
        attr.qp_access_flags = (ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
            .0;
        use ffi::ibv_qp_attr_mask as M;
        self.inner.modify(
            &mut attr,
            M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS,
            "ibv_modify_qp(INIT)",
        )?;

        // SAFETY: as above.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_RTR;
        attr.path_mtu = ffi::ibv_mtu::Type::from(self.endpoint.mtu.min(r.mtu));
        attr.dest_qp_num = r.qpn & MAX_24;
        attr.rq_psn = r.psn & MAX_24;
        attr.max_dest_rd_atomic = 1;
        attr.min_rnr_timer = MIN_RNR_TIMER;
        attr.ah_attr.dlid = r.lid;
        attr.ah_attr.sl = 0;
        attr.ah_attr.src_path_bits = 0;
        attr.ah_attr.port_num = s.port;
        // RoCE always routes on the GID; InfiniBand does when the peer has no LID.
        if self.port.is_ethernet() || r.lid == 0 {
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh.dgid = ffi::ibv_gid { raw: r.gid };
            attr.ah_attr.grh.sgid_index = s.gid_index;
            attr.ah_attr.grh.hop_limit = 64;
            attr.ah_attr.grh.flow_label = 0;
            attr.ah_attr.grh.traffic_class = 0;
        }
        self.inner.modify(
            &mut attr,
            M::IBV_QP_STATE
                | M::IBV_QP_AV
                | M::IBV_QP_PATH_MTU
                | M::IBV_QP_DEST_QPN
                | M::IBV_QP_RQ_PSN
                | M::IBV_QP_MAX_DEST_RD_ATOMIC
                | M::IBV_QP_MIN_RNR_TIMER,
            "ibv_modify_qp(RTR)",
        )?;

        // SAFETY: as above.
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_RTS;
        attr.sq_psn = self.endpoint.psn & MAX_24;
        attr.timeout = ACK_TIMEOUT;
        attr.retry_cnt = RETRY_COUNT;
        attr.rnr_retry = RNR_RETRY;
        attr.max_rd_atomic = 1;
        self.inner.modify(
            &mut attr,
            M::IBV_QP_STATE
                | M::IBV_QP_SQ_PSN
                | M::IBV_QP_TIMEOUT
                | M::IBV_QP_RETRY_CNT
                | M::IBV_QP_RNR_RETRY
                | M::IBV_QP_MAX_QP_RD_ATOMIC,
            "ibv_modify_qp(RTS)",
        )?;
        Ok(QueuePair {
            inner: self.inner,
            local: self.endpoint,
            remote,
            scratch: Scratch::default(),
        })
    }
}

/// Reused buffers for building work-request chains without allocating per post.
#[derive(Default)]
struct Scratch {
    ops: Vec<WriteOp>,
    /// Values of the inline writes of the batch being submitted.
    inline: Vec<u64>,
    sges: Vec<ffi::ibv_sge>,
    wrs: Vec<ffi::ibv_send_wr>,
}

// SAFETY: the raw pointers in `sges`/`wrs` only ever point into `Scratch`'s own vectors (or the
// registered buffers of live MemoryRegions) and are rebuilt on every submit.
unsafe impl Send for Scratch {}
// SAFETY: as above; `&Scratch` exposes nothing.
unsafe impl Sync for Scratch {}

/// Where the bytes of one RDMA WRITE come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Registered memory: address, length, local key.
    Registered { addr: u64, len: u32, lkey: u32 },
    /// An 8-byte value copied into the work request at post time.
    Inline(u64),
}

#[derive(Debug, Clone, Copy)]
struct WriteOp {
    source: Source,
    remote_addr: u64,
    rkey: u32,
}

/// A connected RC queue pair.
pub struct QueuePair {
    inner: QpInner,
    local: QpEndpoint,
    remote: QpInfo,
    scratch: Scratch,
}

impl fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePair")
            .field("device", &self.inner.ctx.name)
            .field("local_qpn", &self.local.qpn)
            .field("remote_qpn", &self.remote.endpoint.qpn)
            .finish()
    }
}

impl QueuePair {
    /// This end's queue-pair number.
    pub fn qpn(&self) -> u32 {
        self.local.qpn
    }

    /// What the peer sent at connection time.
    pub fn remote(&self) -> &QpInfo {
        &self.remote
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.inner.ctx.name
    }

    /// What the queue pair was granted.
    pub fn caps(&self) -> QpCaps {
        self.inner.caps
    }

    /// Starts a chain of RDMA WRITEs, posted together by [`WriteBatch::submit`] with one
    /// doorbell. The batch borrows the queue pair until then.
    pub fn batch(&mut self) -> WriteBatch<'_> {
        self.scratch.ops.clear();
        WriteBatch { qp: self }
    }
}

/// A chain of RDMA WRITEs being built.
#[derive(Debug)]
pub struct WriteBatch<'qp> {
    qp: &'qp mut QueuePair,
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scratch")
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl WriteBatch<'_> {
    /// Appends an RDMA WRITE of `range` of `mr` to `remote_addr` in the peer's region `rkey`.
    /// Fails, appending nothing, if the range is outside `mr` or longer than a message may be.
    pub fn write(
        &mut self,
        mr: &MemoryRegion,
        range: Range<usize>,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<()> {
        if range.start > range.end || range.end > mr.len() {
            return Err(verb_error(
                "rdma write: range outside the region",
                libc::EINVAL,
            ));
        }
        let len = u32::try_from(range.len())
            .map_err(|_| verb_error("rdma write: message too long", libc::EINVAL))?;
        self.qp.scratch.ops.push(WriteOp {
            source: Source::Registered {
                addr: mr.addr() + range.start as u64,
                len,
                lkey: mr.lkey(),
            },
            remote_addr,
            rkey,
        });
        Ok(())
    }

    /// Appends an RDMA WRITE of the 8 bytes of `value` (native byte order), sent inline: the
    /// value is copied when the batch is submitted, so no memory has to outlive the post.
    pub fn write_u64(&mut self, value: u64, remote_addr: u64, rkey: u32) -> Result<()> {
        if self.qp.inner.caps.inline_data < 8 {
            return Err(verb_error(
                "rdma write: no inline data on this QP",
                libc::EINVAL,
            ));
        }
        self.qp.scratch.ops.push(WriteOp {
            source: Source::Inline(value),
            remote_addr,
            rkey,
        });
        Ok(())
    }

    /// Work requests in the batch.
    pub fn len(&self) -> usize {
        self.qp.scratch.ops.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.qp.scratch.ops.is_empty()
    }

    /// Posts the batch as one chain (one doorbell). Work request `i` gets id `first_id + i`;
    /// only the last is signaled, and only if `signal_last`. An empty batch posts nothing.
    ///
    /// # Safety
    ///
    /// Every memory region named by a [`WriteBatch::write`] in this batch must stay registered
    /// (not dropped), and the bytes it names must stay allocated and unchanged, until the
    /// completion of this batch's last work request, or of a later signaled one on this queue
    /// pair, has been polled (RC completes work requests in order). Inline writes copy their
    /// value and need nothing.
    pub unsafe fn submit(self, first_id: u64, signal_last: bool) -> Result<()> {
        let Scratch {
            ops,
            inline,
            sges,
            wrs,
        } = &mut self.qp.scratch;
        let n = ops.len();
        if n == 0 {
            return Ok(());
        }
        // Inline values need an address until ibv_post_send returns (it copies them): keep them
        // in `inline`, which is filled completely before any pointer into it is taken.
        inline.clear();
        inline.extend(ops.iter().map(|op| match op.source {
            Source::Inline(v) => v,
            Source::Registered { .. } => 0,
        }));
        sges.clear();
        wrs.clear();
        for (op, value) in ops.iter().zip(inline.iter()) {
            sges.push(match op.source {
                Source::Registered { addr, len, lkey } => ffi::ibv_sge {
                    addr,
                    length: len,
                    lkey,
                },
                Source::Inline(_) => ffi::ibv_sge {
                    addr: value as *const u64 as u64,
                    length: 8,
                    lkey: 0,
                },
            });
        }
        for (i, op) in ops.iter().enumerate() {
            // SAFETY: ibv_send_wr is integers, pointers and unions thereof; all zeroes is valid.
            let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
            wr.wr_id = first_id.wrapping_add(i as u64);
            wr.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
            wr.num_sge = 1;
            let mut flags = ffi::ibv_send_flags(0);
            if matches!(op.source, Source::Inline(_)) {
                flags |= ffi::ibv_send_flags::IBV_SEND_INLINE;
            }
            if signal_last && i + 1 == n {
                flags |= ffi::ibv_send_flags::IBV_SEND_SIGNALED;
            }
            wr.send_flags = flags.0;
            wr.wr.rdma = ffi::rdma_t {
                remote_addr: op.remote_addr,
                rkey: op.rkey,
            };
            wrs.push(wr);
        }
        // Link the chain now that neither vector will reallocate.
        let sge_base = sges.as_mut_ptr();
        let wr_base = wrs.as_mut_ptr();
        for i in 0..n {
            // SAFETY: `i < n` = the length of both vectors, so every pointer is in bounds.
            unsafe {
                let wr = &mut *wr_base.add(i);
                wr.sg_list = sge_base.add(i);
                wr.next = if i + 1 < n {
                    wr_base.add(i + 1)
                } else {
                    std::ptr::null_mut()
                };
            }
        }
        let mut bad: *mut ffi::ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the QP is connected and alive; the chain and its scatter lists are valid until
        // the call returns (inline data, in `inline`, is copied during the call); the registered
        // memory the chain names stays valid until completion per this function's contract.
        let rc = unsafe { ffi::ibv_post_send(self.qp.inner.raw.as_ptr(), wr_base, &mut bad) };
        if rc != 0 {
            return Err(verb_error("ibv_post_send", rc));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_device_messages_are_one_clear_line() {
        let enosys = no_device_error(Some(libc::ENOSYS)).to_string();
        assert_eq!(
            enosys,
            "no RDMA support in this kernel (ibv_get_device_list: errno 38, ENOSYS); load \
             rdma_rxe / set up Soft-RoCE with ci/rxe-testbed"
        );
        let empty = no_device_error(None).to_string();
        assert!(empty.starts_with("no RDMA device found"), "{empty}");
        let other = no_device_error(Some(libc::EACCES)).to_string();
        assert_eq!(
            other,
            "cannot list RDMA devices (ibv_get_device_list: errno 13, EACCES: Permission denied)"
        );
        for msg in [enosys, empty, other] {
            assert!(!msg.contains('\n'), "{msg:?}");
        }
        assert!(matches!(
            no_device_error(Some(libc::ENOSYS)),
            Error::NoRdmaDevice {
                errno: Some(38),
                ..
            }
        ));
    }

    #[test]
    fn verb_errors_name_the_errno() {
        let e = verb_error("ibv_post_send", libc::ENOMEM).to_string();
        assert!(e.starts_with("ibv_post_send: "), "{e}");
        assert_eq!(
            e,
            "ibv_post_send: Cannot allocate memory, ENOMEM (errno 12)"
        );
    }

    #[test]
    fn psns_are_24_bits() {
        for _ in 0..1000 {
            assert!(fresh_psn() <= MAX_24);
        }
    }

    #[test]
    fn page_buffer_is_aligned_and_zeroed() {
        let b = PageBuffer::new(5000).unwrap();
        assert_eq!(b.len, 8192);
        assert_eq!(b.ptr.as_ptr() as usize % PAGE_SIZE, 0);
        // SAFETY: the buffer is `len` bytes, allocated zeroed, and not shared.
        let bytes = unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), b.len) };
        assert!(bytes.iter().all(|&x| x == 0));
    }

    #[test]
    fn work_completions_wrap_ibv_wc() {
        assert_eq!(
            std::mem::size_of::<WorkCompletion>(),
            std::mem::size_of::<ffi::ibv_wc>()
        );
        let wc = WorkCompletion::default();
        assert!(wc.is_ok());
        assert_eq!(wc.wr_id(), 0);
        assert_eq!(wc.status_str(), "success");
    }
}
