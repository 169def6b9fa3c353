//! AutoLoc's data plane: how a compute node reaches Redis.
//!
//! # Layout
//! - [`resp`]: the RESP protocol: frames (check, then parse), command encoding, and a blocking,
//!   pipelining [`resp::Connection`] with `redis://` URLs and AUTH. The universal baseline, and
//!   the control path every other transport is set up through (`AUTOLOC.CONNECT`).
//! - [`resp_link`]: RESP as a [`link::ClientLink`]: wire requests as Redis commands
//!   (`GET`, `AUTOLOC.MGET`, `SET`, `AUTOLOC.INVOKE`), replies back as wire replies.
//! - [`clock`]: per-thread and per-process CPU time, for the counters on both sides.
//! - [`wire`]: the binary frame format of the fast transports: a `repr(C)` header, one message
//!   enum, check-then-parse decoding that borrows from the buffer.
//! - [`ring`]: a single-producer single-consumer ring of fixed-size slots over raw (shared)
//!   memory, with burst push/pop and Acquire/Release publication.
//! - `sync`: the atomics the ring and the doorbell run on: std's, or loom's under `--cfg loom`.
//! - [`slot`]: Redis Cluster's key slots (CRC16 and hash tags), the rule both sides route by.
//! - [`secret`]: one-time secrets that bind a link to the client that asked for it.
//! - [`shm`]: the shared-memory transport: a /dev/shm (or memfd) segment with a request and a
//!   response ring, server and client endpoints, peer liveness.
//! - [`link`]: the transport-neutral endpoint traits, [`link::ServerLink`] and
//!   [`link::ClientLink`] (bursts in, bursts out); their shm implementations in `link/shm.rs`
//!   ([`link::ShmClientLink`]).
//! - [`frag`]: how the ring links (shm, rdma) carry a frame larger than a slot: as fragments,
//!   streamed as room appears and reassembled by the receiving end.
//! - [`tcp`]: length-prefixed wire frames over TCP, driven by io_uring (hosts without RDMA).
//! - `rdma` (feature `rdma`): the same frames over RC queue pairs with `rdma-sys`.
//! - [`delay`]: a [`link::ClientLink`] that holds each frame half an emulated round trip each way
//!   (where the kernel has no netem); figures taken through it are emulated and must say so.
//! - [`backoff`]: idle backoff for polling threads (spin, yield, park on a futex doorbell).
//!
//! This crate and `redismodule` are the only ones with `unsafe`; each block says why it is sound.

pub mod backoff;
pub mod clock;
pub mod delay;
pub mod frag;
pub mod link;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod resp;
pub mod resp_link;
pub mod ring;
pub mod secret;
pub mod shm;
pub mod slot;
mod sync;
pub mod tcp;
pub mod wire;

pub use resp::{Connection, Frame, RedisUrl};

/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        // Shown in the message, so not also a `source()`: a report names each cause once.
        source: std::io::Error,
    },
    /// The peer sent bytes that are not a valid frame.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A URL or option that does not parse.
    #[error("bad address '{url}': {reason}")]
    BadUrl { url: String, reason: &'static str },
    /// The server answered a setup command (AUTH, SELECT, ...) with an error.
    #[error("{command} failed: {message}")]
    Setup {
        command: &'static str,
        message: String,
    },
    /// A frame of the binary wire format that cannot be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// A ring operation failed (full, message too large, corrupt, bad layout).
    #[error(transparent)]
    Ring(#[from] ring::RingError),
    /// A shared-memory segment that cannot be used.
    #[error("shared segment {}: {reason}", path.display())]
    Segment {
        path: std::path::PathBuf,
        reason: String,
    },
    /// An RDMA verb failed (feature `rdma`); `errno` is the verb's error code.
    #[error("{op}: {message} (errno {errno})")]
    Rdma {
        op: &'static str,
        errno: i32,
        message: String,
    },
    /// This host has no usable RDMA device (feature `rdma`). `message` is one line saying why and
    /// what to do; `errno` is what `ibv_get_device_list` failed with, `None` for an empty list.
    #[error("{message}")]
    NoRdmaDevice { errno: Option<i32>, message: String },
}

/// Result of a data-plane operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
