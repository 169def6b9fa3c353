//! Shared-memory transport: one segment per client holding a request ring and a response ring.
//!
//! # Control path
//!
//! The server (a module thread in redis-server) calls [`ShmServer::create`], which makes a file
//! `/dev/shm/autoloc-<pid>-<n>` with `O_CREAT | O_EXCL` and mode 0600, sizes it, maps it and
//! initialises both rings. It answers `AUTOLOC.CONNECT shm` with [`ShmServer::path`]; Redis replies
//! cannot carry file descriptors, so a path is what travels. The client process (same user: the
//! mode is 0600) calls [`ShmClient::attach`] with that path, and removes the name as soon as it
//! has mapped the segment and presented its secret (the mappings live on), so a crash of either
//! side after that leaks nothing. The server removes it too once it sees the client attached
//! ([`ShmServer::unlink`], content if the client was first), and on drop at the latest. A server
//! killed between `AUTOLOC.CONNECT` and the attach leaves the name behind:
//! [`remove_stale_segments`], run when the module loads, removes the names of processes that are
//! gone. Where /dev/shm is unavailable
//! ([`Backing::Memfd`], or [`Backing::Auto`] as a fallback) the segment is a `memfd_create` file
//! and the path is `/proc/<server pid>/fd/<fd>`, which a process of the same user can open too.
//!
//! # Layout
//!
//! ```text
//! offset  size  field                                           written by
//!      0    64  config: magic u64, version u32, reserved u32,   server at create (magic last)
//!               total_len u64, request ring offset/len u64,
//!               response ring offset/len u64
//!     64    64  server: pid u32, state u32                      server
//!    128    64  client: pid u32, state u32, proof [u64; 2]     client
//!    192     -  request ring (client -> server), then response ring (server -> client); see
//!               [`crate::ring`]
//! ```
//!
//! # Liveness
//!
//! Each side records its pid and a state word (`FREE -> ATTACHING -> ALIVE -> DETACHED`). A clean
//! detach (drop) stores `DETACHED`; a crash leaves `ALIVE` behind, so [`ShmServer::client`] also
//! asks the kernel whether the pid still exists (`kill(pid, 0)` failing with `ESRCH`) and reports
//! [`PeerState::Dead`]. The server then drops its endpoint, which reclaims the segment. Caveats: a
//! zombie (exited, not yet reaped) still counts as alive, pids can be reused, and the check assumes
//! both processes share a pid namespace.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::backoff::Backoff;
use crate::frag::{Outbox, Reassembly};
use crate::ring::{
    self, Burst, CachePadded, Consumer, Producer, Region, RingConfig, RingError, Slot,
};
use crate::secret::Secret;
use crate::wire::{self, Message, WireError};
use crate::{Error, Result};

/// `"ALSHMSEG"` little-endian: marks an initialised segment.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"ALSHMSEG");
/// Segment layout version.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes before the first ring.
pub const SEGMENT_HEADER_LEN: usize = 192;
/// Directory of [`Backing::Auto`]'s segment files.
pub const DEFAULT_DIR: &str = "/dev/shm";

const FREE: u32 = 0;
const ATTACHING: u32 = 1;
const ALIVE: u32 = 2;
const DETACHED: u32 = 3;

#[repr(C)]
struct SegmentConfig {
    /// Stored last at create, with Release; a reader that sees it (Acquire) sees the rest.
    magic: AtomicU64,
    version: u32,
    _reserved: u32,
    total_len: u64,
    request_offset: u64,
    request_len: u64,
    response_offset: u64,
    response_len: u64,
}

/// One side's liveness words.
#[repr(C)]
struct Party {
    /// The side's process id, written before `state` becomes ALIVE.
    pid: AtomicU32,
    /// FREE, ATTACHING, ALIVE or DETACHED.
    state: AtomicU32,
    /// The client's proof that it was handed this segment: the secret `AUTOLOC.CONNECT shm`
    /// gave it (never stored in the segment by the server), written before `state` becomes
    /// ALIVE.
    proof: [AtomicU64; 2],
}

#[repr(C)]
struct SegmentHeader {
    config: CachePadded<SegmentConfig>,
    server: CachePadded<Party>,
    client: CachePadded<Party>,
}

const _: () = {
    assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_LEN);
    assert!(std::mem::offset_of!(SegmentHeader, server) == 64);
    assert!(std::mem::offset_of!(SegmentHeader, client) == 128);
    assert!(SEGMENT_HEADER_LEN & (ring::RING_ALIGN - 1) == 0);
};

/// What backs a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A file in `dir` (normally /dev/shm), created with `O_EXCL` and mode 0600.
    File { dir: PathBuf },
    /// An anonymous `memfd_create` file, opened by the client as `/proc/<pid>/fd/<fd>`.
    Memfd,
    /// A file in [`DEFAULT_DIR`], or a memfd if that fails.
    Auto,
}

/// Geometry and backing of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmConfig {
    /// The client -> server ring.
    pub requests: RingConfig,
    /// The server -> client ring.
    pub responses: RingConfig,
    pub backing: Backing,
}

impl Default for ShmConfig {
    fn default() -> Self {
        // Requests are small (keys, arguments); replies carry values and results. Slots are
        // touched only when used, so the mapping costs memory only as the rings fill.
        Self {
            requests: RingConfig {
                slot_count: 64,
                slot_size: 64 * 1024,
            },
            responses: RingConfig {
                slot_count: 64,
                slot_size: 256 * 1024,
            },
            backing: Backing::Auto,
        }
    }
}

impl ShmConfig {
    /// Offsets of the two rings and the segment's total length.
    fn layout(&self) -> Result<(usize, usize, usize)> {
        self.requests.validate()?;
        self.responses.validate()?;
        let request_offset = SEGMENT_HEADER_LEN;
        let response_offset = request_offset + self.requests.region_len();
        Ok((
            request_offset,
            response_offset,
            response_offset + self.responses.region_len(),
        ))
    }
}

/// What one side knows about the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// The peer has not attached yet.
    NotAttached,
    /// The peer is attached and its process exists.
    Alive { pid: u32 },
    /// The peer detached cleanly.
    Detached,
    /// The peer's state says attached but its process is gone: it crashed or was killed.
    Dead { pid: u32 },
}

/// A mapped segment: the [`Region`] both rings live in.
struct Segment {
    map: MmapRaw,
    _file: File,
}

// SAFETY: the mapping is fixed for the life of `map` (unmapped on its drop), page-aligned (so
// 64-aligned), and `map.len()` bytes long.
unsafe impl Region for Segment {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
    fn size(&self) -> usize {
        self.map.len()
    }
}

impl Segment {
    fn map(file: File, len: usize) -> Result<Self> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|source| Error::Io {
                op: "mmap shared segment",
                source,
            })?;
        Ok(Self { map, _file: file })
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: every segment is at least SEGMENT_HEADER_LEN bytes (checked before mapping) and
        // page-aligned; the fields read through `&` after create are atomics or plain integers
        // validated by the reader.
        unsafe { &*self.map.as_mut_ptr().cast::<SegmentHeader>() }
    }
}

fn segment_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Segment {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn process_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 performs only the existence and permission check; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn peer_state(party: &Party) -> PeerState {
    // Acquire pairs with the Release store of ALIVE, so the pid written before it is visible.
    match party.state.load(Ordering::Acquire) {
        ALIVE => {
            let pid = party.pid.load(Ordering::Relaxed);
            if process_gone(pid) {
                PeerState::Dead { pid }
            } else {
                PeerState::Alive { pid }
            }
        }
        DETACHED => PeerState::Detached,
        FREE | ATTACHING => PeerState::NotAttached,
        // A corrupt word: treat the peer as gone.
        _ => PeerState::Detached,
    }
}

/// The pid in a segment file name, `autoloc-<pid>-<n>` as [`create_file`] makes them.
fn segment_owner(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix("autoloc-")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the segment files in `dir` (normally [`DEFAULT_DIR`]) whose creating process is gone:
/// what servers killed before their clients attached left behind. Returns how many it removed.
/// Names of live processes, of other users' processes and of other patterns are left alone, as
/// is everything when `dir` cannot be read.
pub fn remove_stale_segments(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(segment_owner) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && process_gone(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn create_file(dir: &Path) -> Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(format!(
            "autoloc-{pid}-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // create_new is O_CREAT | O_EXCL: never reuses (or follows a symlink to) an existing file.
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            // A stale file from an earlier process with our pid: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => {
                return Err(Error::Io {
                    op: "create shared segment file",
                    source,
                })
            }
        }
    }
    Err(Error::Io {
        op: "create shared segment file",
        source: last.unwrap_or_else(|| std::io::Error::other("no free name")),
    })
}

fn create_memfd() -> Result<(File, PathBuf)> {
    // SAFETY: the name is a valid NUL-terminated string; MFD_CLOEXEC is a valid flag.
    let fd = unsafe { libc::memfd_create(c"autoloc-shm".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Io {
            op: "memfd_create",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ));
    Ok((file, path))
}

/// Maps a wire encoding failure onto the ring error a sender sees.
fn encode_error(e: WireError, capacity: usize) -> RingError {
    match e {
        WireError::NoRoom { len, .. } | WireError::Oversized { len, .. } => {
            RingError::TooLarge { len, capacity }
        }
        WireError::Incomplete { .. } | WireError::Malformed(_) => {
            RingError::Corrupt("wire encoder failed")
        }
    }
}

/// Encodes a frame straight into the next free slot of `tx`; publishes it now or on flush.
fn send_frame(
    tx: &mut Producer,
    request_id: u64,
    message: &Message<'_>,
    publish: bool,
) -> Result<(), RingError> {
    let capacity = tx.max_message();
    let len = message.frame_len().map_err(|e| encode_error(e, capacity))?;
    if len > capacity {
        return Err(RingError::TooLarge { len, capacity });
    }
    let mut slot = tx.try_reserve()?;
    let written = wire::encode_into(request_id, message, slot.buf())
        .map_err(|e| encode_error(e, capacity))?;
    if publish {
        slot.commit(written)
    } else {
        slot.stage(written)
    }
}

/// The data-path methods both endpoints share: receive on `rx`, send on `tx`, in bursts.
macro_rules! duplex_methods {
    () => {
        /// Takes the oldest message, if any; its slot is freed when the guard drops.
        pub fn try_recv(&mut self) -> Result<Option<Slot<'_>>, RingError> {
            self.rx.try_pop()
        }

        /// Takes up to `max` messages; their slots are freed together when the burst drops.
        pub fn recv_burst(&mut self, max: usize) -> Result<Burst<'_>, RingError> {
            self.rx.pop_burst(max)
        }

        /// Sends one already-encoded frame.
        pub fn try_send(&mut self, frame: &[u8]) -> Result<(), RingError> {
            self.tx.try_push(frame)
        }

        /// Sends as many already-encoded frames as fit, with one publication; returns how many.
        pub fn send_burst<M: AsRef<[u8]>>(&mut self, frames: &[M]) -> Result<usize, RingError> {
            self.tx.push_burst(frames)
        }

        /// Encodes `message` directly into a slot and publishes it.
        pub fn send(&mut self, request_id: u64, message: &Message<'_>) -> Result<(), RingError> {
            send_frame(&mut self.tx, request_id, message, true)
        }

        /// Encodes `message` directly into a slot; it is published by the next
        /// [`flush`](Self::flush) (or send), so a burst of replies costs one publication.
        pub fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<(), RingError> {
            send_frame(&mut self.tx, request_id, message, false)
        }

        /// Publishes queued messages and wakes the peer if it is parked.
        pub fn flush(&mut self) {
            self.tx.flush();
        }

        /// One idle step on the receive ring (spin, yield, or park until the peer sends).
        pub fn wait(&mut self, backoff: &mut Backoff) -> crate::backoff::Phase {
            self.rx.wait(backoff)
        }

        /// The receive and send rings, borrowed together (e.g. to reply while a burst is held).
        pub fn split(&mut self) -> (&mut Consumer, &mut Producer) {
            (&mut self.rx, &mut self.tx)
        }

        /// Whether a message is waiting to be received.
        pub fn has_pending(&self) -> bool {
            self.rx.has_pending()
        }

        /// The receive ring's doorbell, which the peer rings after publishing to a parked
        /// consumer: to park on several endpoints' at once ([`crate::backoff::wait_any`]).
        pub fn receive_doorbell(&self) -> &crate::backoff::Doorbell {
            self.rx.doorbell()
        }

        /// Largest frame one slot holds. Only the link layer ([`crate::link`]) fragments larger
        /// ones; these raw endpoint methods send one frame per slot.
        pub fn max_frame(&self) -> usize {
            self.tx.max_message()
        }
    };
}

/// How long a server waits for room in a client's response ring, per slot, before giving the
/// link up (the default of [`ShmServer::set_reply_room_deadline`]). It may hold Redis's lock meanwhile, so this is short: a live client drains its
/// replies continuously. A reply larger than the ring streams through it as long as the client
/// frees a slot within this time, however long the whole reply takes.
pub const REPLY_ROOM_DEADLINE: Duration = Duration::from_millis(20);

/// The server end of a segment: receives requests, sends responses.
#[derive(Debug)]
pub struct ShmServer {
    rx: Consumer,
    tx: Producer,
    seg: Arc<Segment>,
    path: PathBuf,
    /// The file name to remove, until it is removed.
    unlink: Option<PathBuf>,
    /// The link layer's state ([`ServerLink::serve`](crate::link::ServerLink::serve)): the
    /// request being reassembled from fragments, the reply being cut into them, and how long a
    /// reply waits for each free response slot.
    reassembly: Reassembly,
    outbox: Outbox,
    reply_room_deadline: Duration,
    /// What the client must present; kept here, never in the segment.
    secret: Secret,
    /// Whether the attached client presented it.
    admitted: bool,
}

/// What [`ServerLink::serve`](crate::link::ServerLink::serve) works with, borrowed together.
pub(crate) struct ServeParts<'a> {
    pub rx: &'a mut Consumer,
    pub tx: &'a mut Producer,
    pub reassembly: &'a mut Reassembly,
    pub outbox: &'a mut Outbox,
    pub reply_room_deadline: Duration,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("ptr", &self.map.as_mut_ptr())
            .field("len", &self.map.len())
            .finish()
    }
}

impl ShmServer {
    /// Creates, sizes, maps and initialises a segment.
    pub fn create(cfg: &ShmConfig) -> Result<Self> {
        let (request_offset, response_offset, total) = cfg.layout()?;
        let secret = Secret::random()?;
        let (file, path, unlink) = match &cfg.backing {
            Backing::File { dir } => {
                let (file, path) = create_file(dir)?;
                (file, path.clone(), Some(path))
            }
            Backing::Memfd => {
                let (file, path) = create_memfd()?;
                (file, path, None)
            }
            Backing::Auto => match create_file(Path::new(DEFAULT_DIR)) {
                Ok((file, path)) => (file, path.clone(), Some(path)),
                Err(_) => {
                    let (file, path) = create_memfd()?;
                    (file, path, None)
                }
            },
        };
        let cleanup = |e: Error| {
            if let Some(p) = &unlink {
                let _ = std::fs::remove_file(p);
            }
            e
        };
        file.set_len(total as u64).map_err(|source| {
            cleanup(Error::Io {
                op: "size shared segment",
                source,
            })
        })?;
        let seg = Arc::new(Segment::map(file, total).map_err(cleanup)?);
        let header = SegmentHeader {
            config: CachePadded(SegmentConfig {
                magic: AtomicU64::new(0),
                version: SEGMENT_VERSION,
                _reserved: 0,
                total_len: total as u64,
                request_offset: request_offset as u64,
                request_len: cfg.requests.region_len() as u64,
                response_offset: response_offset as u64,
                response_len: cfg.responses.region_len() as u64,
            }),
            server: CachePadded(Party {
                pid: AtomicU32::new(std::process::id()),
                state: AtomicU32::new(ALIVE),
                proof: [AtomicU64::new(0), AtomicU64::new(0)],
            }),
            client: CachePadded(Party {
                pid: AtomicU32::new(0),
                state: AtomicU32::new(FREE),
                proof: [AtomicU64::new(0), AtomicU64::new(0)],
            }),
        };
        // SAFETY: the mapping is fresh, `total >= SEGMENT_HEADER_LEN` bytes and page-aligned; no
        // client can validate it before the magic is stored below.
        unsafe { seg.as_ptr().cast::<SegmentHeader>().write(header) };
        // SAFETY: the ring ranges lie inside the fresh mapping (layout()) and nobody is attached.
        unsafe {
            ring::init(&*seg, request_offset, cfg.requests).map_err(|e| cleanup(e.into()))?;
            ring::init(&*seg, response_offset, cfg.responses).map_err(|e| cleanup(e.into()))?;
        }
        // Release: a client that reads the magic with Acquire sees the whole initialised segment.
        seg.header()
            .config
            .0
            .magic
            .store(SEGMENT_MAGIC, Ordering::Release);
        let rx = Consumer::attach(seg.clone(), request_offset).map_err(|e| cleanup(e.into()))?;
        let tx = Producer::attach(seg.clone(), response_offset).map_err(|e| cleanup(e.into()))?;
        Ok(Self {
            rx,
            tx,
            seg,
            path,
            unlink,
            reassembly: Reassembly::new(),
            outbox: Outbox::new(),
            reply_room_deadline: REPLY_ROOM_DEADLINE,
            secret,
            admitted: false,
        })
    }

    /// The secret the one client of this segment must present to [`ShmClient::attach`]: the
    /// segment serves nobody else, even a process that can open its file.
    pub fn secret(&self) -> Secret {
        self.secret
    }

    /// Whether requests may be served: `Ok(false)` until a client attached, `Ok(true)` once it
    /// presented the secret, an error if it presented another (the link is then dropped).
    pub fn admitted(&mut self) -> Result<bool> {
        if self.admitted {
            return Ok(true);
        }
        let client = &self.seg.header().client.0;
        // Acquire pairs with the client's Release store of ALIVE: its proof is visible.
        match client.state.load(Ordering::Acquire) {
            ALIVE => {
                let proof = [
                    client.proof[0].load(Ordering::Relaxed),
                    client.proof[1].load(Ordering::Relaxed),
                ];
                if !self.secret.matches(proof) {
                    return Err(segment_error(
                        &self.path,
                        "the attached client did not present the segment's secret",
                    ));
                }
                self.admitted = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// How long a reply waits for a free slot in the response ring, per slot, before
    /// [`ServerLink::serve`](crate::link::ServerLink::serve) gives the link up (the client stopped
    /// draining). A reply larger than the ring streams for as long as the client keeps freeing
    /// slots. Default [`REPLY_ROOM_DEADLINE`].
    pub fn set_reply_room_deadline(&mut self, deadline: Duration) {
        self.reply_room_deadline = deadline;
    }

    /// See [`set_reply_room_deadline`](Self::set_reply_room_deadline).
    pub fn reply_room_deadline(&self) -> Duration {
        self.reply_room_deadline
    }

    pub(crate) fn serve_parts(&mut self) -> ServeParts<'_> {
        ServeParts {
            rx: &mut self.rx,
            tx: &mut self.tx,
            reassembly: &mut self.reassembly,
            outbox: &mut self.outbox,
            reply_room_deadline: self.reply_room_deadline,
        }
    }

    /// What a client passes to [`ShmClient::attach`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The client's state; [`PeerState::Dead`] means the segment can be reclaimed (drop `self`).
    pub fn client(&self) -> PeerState {
        peer_state(&self.seg.header().client.0)
    }

    /// Removes the segment's file name (the mapping stays valid). Call once the client attached,
    /// so nothing is left behind if either process crashes. A name already gone (the client
    /// removes it when it attaches) is fine. No-op for memfd segments.
    pub fn unlink(&mut self) -> Result<()> {
        if let Some(path) = self.unlink.take() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    self.unlink = Some(path);
                    return Err(Error::Io {
                        op: "unlink shared segment",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    duplex_methods!();
}

impl Drop for ShmServer {
    fn drop(&mut self) {
        self.seg
            .header()
            .server
            .0
            .state
            .store(DETACHED, Ordering::Release);
        self.tx.notify();
        if let Some(path) = self.unlink.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The client end of a segment: sends requests, receives responses.
#[derive(Debug)]
pub struct ShmClient {
    rx: Consumer,
    tx: Producer,
    seg: Arc<Segment>,
}

impl ShmClient {
    /// Opens and maps the segment at `path` (from `AUTOLOC.CONNECT shm`), validates it, and claims
    /// its client side, presenting `secret` (from the same reply); fails if another client holds
    /// it. The server serves nothing to a client with another secret.
    pub fn attach(path: &Path, secret: &Secret) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                op: "open shared segment",
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                op: "stat shared segment",
                source,
            })?
            .len();
        let len = usize::try_from(len)
            .map_err(|_| segment_error(path, "segment larger than the address space"))?;
        if len < SEGMENT_HEADER_LEN {
            return Err(segment_error(
                path,
                format!("{len} bytes is too small for a segment"),
            ));
        }
        let seg = Arc::new(Segment::map(file, len)?);
        let config = &seg.header().config.0;
        // Acquire pairs with the server's Release store of the magic: the rest of the header and
        // both ring headers are initialised.
        if config.magic.load(Ordering::Acquire) != SEGMENT_MAGIC {
            return Err(segment_error(path, "not an AutoLoc segment (bad magic)"));
        }
        if config.version != SEGMENT_VERSION {
            return Err(segment_error(
                path,
                format!("unsupported segment version {}", config.version),
            ));
        }
        if config.total_len != len as u64 {
            return Err(segment_error(
                path,
                "segment length disagrees with its header",
            ));
        }
        let (rq_off, rq_len) = (config.request_offset, config.request_len);
        let (rs_off, rs_len) = (config.response_offset, config.response_len);
        let fits = |off: u64, l: u64| {
            off >= SEGMENT_HEADER_LEN as u64
                && off.checked_add(l).is_some_and(|end| end <= len as u64)
        };
        let disjoint =
            rq_off.saturating_add(rq_len) <= rs_off || rs_off.saturating_add(rs_len) <= rq_off;
        if !fits(rq_off, rq_len) || !fits(rs_off, rs_len) || !disjoint {
            return Err(segment_error(
                path,
                "ring offsets out of bounds or overlapping",
            ));
        }
        let client = &seg.header().client.0;
        // Acquire: pairs with a previous client's Release (none today: a segment has one client).
        if client
            .state
            .compare_exchange(FREE, ATTACHING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(segment_error(path, "segment already has a client"));
        }
        client.pid.store(std::process::id(), Ordering::Relaxed);
        let proof = secret.words();
        client.proof[0].store(proof[0], Ordering::Relaxed);
        client.proof[1].store(proof[1], Ordering::Relaxed);
        // Release: the server that sees ALIVE sees our pid and proof.
        client.state.store(ALIVE, Ordering::Release);
        let rings = Producer::attach(seg.clone(), rq_off as usize)
            .and_then(|tx| Ok((tx, Consumer::attach(seg.clone(), rs_off as usize)?)));
        let (tx, rx) = match rings {
            Ok(rings) => rings,
            Err(e) => {
                client.state.store(DETACHED, Ordering::Release);
                return Err(e.into());
            }
        };
        // Mapped and claimed: the name has served its purpose. Removed here, not only by the
        // server's reaper, so a server killed right after this (an embedded server stopped with
        // SIGKILL) leaves nothing in /dev/shm. Only a segment file named after the server in
        // its header; a failure is left to the server's unlink.
        let server_pid = seg.header().server.0.pid.load(Ordering::Relaxed);
        let named_after_server = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment_owner)
            == Some(server_pid);
        if named_after_server {
            let _ = std::fs::remove_file(path);
        }
        Ok(Self { rx, tx, seg })
    }

    /// The server's state.
    pub fn server(&self) -> PeerState {
        peer_state(&self.seg.header().server.0)
    }

    duplex_methods!();
}

impl Drop for ShmClient {
    fn drop(&mut self) {
        self.seg
            .header()
            .client
            .0
            .state
            .store(DETACHED, Ordering::Release);
        // Wake the server if it is parked so it notices promptly.
        self.tx.notify();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn small(backing: Backing) -> ShmConfig {
        let ring = RingConfig {
            slot_count: 8,
            slot_size: 256,
        };
        ShmConfig {
            requests: ring,
            responses: ring,
            backing,
        }
    }

    #[test]
    fn layout() {
        let (rq, rs, total) = small(Backing::Auto).layout().unwrap();
        assert_eq!(rq, 192);
        assert_eq!(rs, 192 + 256 + 8 * 256);
        assert_eq!(total, rs + 256 + 8 * 256);
    }

    #[test]
    fn segment_names_carry_their_creator() {
        assert_eq!(segment_owner("autoloc-123-0"), Some(123));
        assert_eq!(segment_owner("autoloc-123-45"), Some(123));
        for name in [
            "autoloc-123",
            "autoloc--0",
            "autoloc-+123-0",
            "autoloc-123-",
            "autoloc-123-x",
            "autoloc-shm",
            "other-123-0",
        ] {
            assert_eq!(segment_owner(name), None, "{name}");
        }
    }

    #[test]
    fn file_segment_is_private_and_removed() {
        let dir = std::env::temp_dir();
        let server = ShmServer::create(&small(Backing::File { dir: dir.clone() })).unwrap();
        let path = server.path().to_path_buf();
        assert!(path.starts_with(&dir));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(server.client(), PeerState::NotAttached);
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn memfd_segment_round_trip() {
        let mut server = ShmServer::create(&small(Backing::Memfd)).unwrap();
        assert!(server.path().starts_with("/proc"));
        let mut client = ShmClient::attach(server.path(), &server.secret()).unwrap();
        client.send(7, &Message::Get { key: b"k" }).unwrap();
        let slot = server.try_recv().unwrap().unwrap();
        let (frame, _) = wire::decode(&slot, &wire::Limits::default()).unwrap();
        assert_eq!(
            (frame.request_id, frame.message),
            (7, Message::Get { key: b"k" })
        );
        drop(slot);
        server.send(7, &Message::Value { value: None }).unwrap();
        let slot = client.try_recv().unwrap().unwrap();
        let (frame, _) = wire::decode(&slot, &wire::Limits::default()).unwrap();
        assert_eq!(frame.message, Message::Value { value: None });
    }

    #[test]
    fn oversized_frame_is_a_distinct_error() {
        let mut server = ShmServer::create(&small(Backing::Memfd)).unwrap();
        let mut client = ShmClient::attach(server.path(), &server.secret()).unwrap();
        let big = [0u8; 300];
        let err = client
            .send(
                1,
                &Message::Set {
                    key: b"k",
                    value: &big,
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, RingError::TooLarge { capacity: 248, .. }),
            "{err:?}"
        );
        assert!(server.try_recv().unwrap().is_none());
    }
}
