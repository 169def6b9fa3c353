//! RDMA transport: wire frames through rings mirrored by RDMA WRITE over RC queue pairs
//! (HERD/FaRM style), built on `rdma-sys` behind the `rdma` feature.
//!
//! # Layout
//! - [`device`]: safe handles over libibverbs (device list, context, PD, CQ, MR, QP with a
//!   typestate handshake, batched posting). All of the transport's FFI lives here.
//! - [`control`]: [`QpInfo`], what the ends exchange over the control path, and its strict text
//!   encoding.
//! - [`gid`]: which GID a queue pair is addressed by when none is configured (a RoCE v2 GID
//!   whose netdev is up, IPv4-mapped first), read from sysfs.
//! - [`layout`]: the registered region of one end (control line, request ring, response ring)
//!   and [`layout::Mirror`], the device-free logic that says what to copy to the peer.
//! - [`datapath`]: connection set-up and the [`ServerLink`](crate::link::ServerLink) /
//!   [`ClientLink`](crate::link::ClientLink) implementations, posting in chains with selective
//!   signaling and polling under deadlines.
//!
//! # Control path
//!
//! ```text
//! client                                              server (module)
//! RdmaDevice::open, RdmaClientLink::prepare
//!   AUTOLOC.CONNECT rdma <client QpInfo text>  ───►   QpInfo::from_text
//!                                                     RdmaServerConn::accept -> (conn, info)
//!                                                     hand conn to the data-plane thread
//!   bulk reply <server QpInfo text>            ◄───   reply info.to_text()
//! QpInfo::from_text, PendingClient::connect
//! ```
//!
//! The client chooses the ring geometry; the server registers a region of the same layout (within
//! [`ServerLimits`]) and answers with its own queue pair, address and rkey.
//!
//! # Why RDMA WRITE, and why the index is a second WRITE
//!
//! Requests and replies travel by one-sided RDMA WRITE into the peer's copy of the ring, and the
//! peer finds them by polling its own memory, as an shm consumer does: no receive work requests
//! to keep posted, no receive completions to poll, and the same [`crate::ring`] code on both
//! sides. A burst is one chain: a WRITE per message (only the bytes used), then a WRITE of the
//! producer index. RC executes the WRITEs of one queue pair in order, so the index, a separate
//! later message, is placed after the slot bytes it publishes; the consumer's Acquire load of the
//! index then orders its reads of the slots. Index words are 8 aligned bytes sent inline, so each
//! lands whole. (WRITE_WITH_IMM would make arrival a completion instead, at the cost of
//! pre-posted receives per message; if a NIC is found that places a later WRITE before an earlier
//! one, that is the fallback.) The consumer returns credit the same way: a WRITE of its consumer
//! index into the producer's copy. See [`layout`] for the full argument.
//!
//! # Trust
//!
//! The peer can write anywhere in our region (the MR grants remote write to all of it), so
//! everything in it is input: the ring code validates indices and lengths, the wire decoder
//! validates frames, and a bad peer can only break its own connection.
//!
//! # Without a device
//!
//! On a host without RDMA, [`devices`] and [`RdmaDevice::open`] fail with
//! [`Error::NoRdmaDevice`](crate::Error::NoRdmaDevice), one line that says why (errno 38 from
//! `ibv_get_device_list` means the kernel has no RDMA support) and points at `ci/rxe-testbed`.

#![cfg(not(loom))]

pub mod control;
pub mod datapath;
pub mod device;
pub mod gid;
pub mod layout;

pub use control::{QpEndpoint, QpInfo, QpInfoError};
pub use datapath::{
    DeviceConfig, LinkConfig, PendingClient, RdmaClientLink, RdmaDevice, RdmaServerConn,
    ServerLimits, DEVICE_ENV, GID_INDEX_ENV, PORT_ENV,
};
pub use device::{
    devices, CompletionQueue, Context, DeviceInfo, MemoryRegion, PortInfo, PreparedQueuePair,
    ProtectionDomain, QueuePair, WorkCompletion, WriteBatch,
};
