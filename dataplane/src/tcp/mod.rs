//! TCP transport: [`wire`](crate::wire) frames over TCP streams, driven by io_uring.
//!
//! For hosts without RDMA. Frames are already length-prefixed (the 16-byte header carries
//! `payload_len`), so a stream is just frames back to back.
//!
//! # Layout
//!
//! As in eRPC, the control path and the data path live in separate files:
//! - `uring`: the one io_uring of an endpoint: setup (with a clear error where io_uring is not
//!   allowed), pushing entries, entering the kernel only when needed, waiting with a timeout, and
//!   the count of operations in flight that teardown must drain.
//! - `stream` (data path): one connection's buffers and in-flight state: a receive buffer with a
//!   RECV always posted into its spare capacity, a send buffer that gathers a burst of frames into
//!   one SEND, and the frame scanner (check, then parse).
//! - `server` (control and burst serving): [`TcpServer`]: the listener, io_uring ACCEPT, a slab of
//!   connections, and [`ServerLink`](crate::link::ServerLink) over all of them.
//! - `client`: [`TcpClientLink`]: connect, and [`ClientLink`](crate::link::ClientLink).
//!
//! # Driving a server
//!
//! One [`TcpServer`] owns its listener, its io_uring and every connection accepted on it, so the
//! module's data-plane thread registers it once as a single `ServerLink`:
//!
//! ```no_run
//! # use autoloc_dataplane::{link::ServerLink, tcp::TcpServer, wire::Message};
//! # use std::time::Duration;
//! let mut server = TcpServer::bind("127.0.0.1:0")?;
//! let port = server.local_addr().port(); // the answer to `AUTOLOC.CONNECT tcp`
//! # let stop = || true;
//! while !stop() {
//!     let served = server.serve(256, &mut |frame, replier| {
//!         let _ = replier.reply(frame.request_id, &Message::Ok);
//!     })?;
//!     if served == 0 {
//!         server.wait(Duration::from_millis(5))?; // parks in io_uring_enter, no spinning
//!     }
//! }
//! # Ok::<(), autoloc_dataplane::Error>(())
//! ```
//!
//! Each `serve` reaps completions (new connections, received bytes, finished sends) without
//! blocking, serves whole frames from every connection up to `max`, gathers each connection's
//! replies into one SEND, and submits all new RECVs and SENDs with one `io_uring_enter`. Dead
//! connections (peer closed or reset, or a frame that cannot be decoded) are closed and freed
//! inside `serve` once their operations are reaped; [`TcpServer::stats`] counts them.
//!
//! # Errors on the stream
//!
//! A byte stream cannot be resynchronised after a bad frame, so a malformed frame (bad magic,
//! unknown kind, lengths that disagree) gets an `Error { code: "MALFORMED" }` reply (echoing the
//! request id when a whole header was read), and a frame whose header announces more than
//! [`Limits::max_payload`](crate::wire::Limits) gets `Error { code: "TOOLARGE" }` from the header
//! alone, before any payload is buffered. Either way the server then stops reading, sends what
//! it has, half-closes, discards input for at most [`TcpConfig::linger`], and closes.
//!
//! # Authentication
//!
//! A server given an authenticator serves a connection only after its first frame, a `Hello`
//! whose secret the authenticator accepts. Until then the connection costs little and gets
//! nothing: a first header that is no `Hello`, or announces one larger than any secret, closes it
//! from the header alone (no buffer grows for the payload it announces); a connection that has
//! not presented a secret within [`TcpConfig::auth_deadline`] is closed. Either way without a
//! reply, counted in [`TcpStats::rejected_unauthenticated`].
//!
//! # Soundness
//!
//! The kernel reads and writes connection buffers while operations are in flight. The rules that
//! keep this sound, argued at each `unsafe` block:
//! - buffers are heap allocations owned by a connection and are never reallocated, shrunk,
//!   compacted or freed while an operation on them is in flight (the flags in `stream` say which);
//! - moving a connection (the slab growing) moves only the `Vec` headers, not the heap buffers;
//! - a connection is freed only once no operation of it is in flight, and dropping an endpoint
//!   cancels and reaps every operation first; if that does not finish within a deadline, the
//!   buffers are leaked rather than freed.

mod client;
mod server;
mod stream;
mod uring;

use std::time::Duration;

pub use client::TcpClientLink;
pub use server::{TcpServer, TcpStats};

use crate::wire::Limits;

/// Default size of a connection's receive buffer; it grows for a larger frame and shrinks back.
pub const DEFAULT_RECV_BUF: usize = 64 << 10;
/// Default io_uring submission queue size of an endpoint.
pub const DEFAULT_RING_ENTRIES: u32 = 256;
/// Default most connections one server holds; further ones wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default bytes of replies a connection may have unsent before the server stops serving it.
pub const DEFAULT_SEND_HIGH_WATER: usize = 8 << 20;
/// Default time a peer may leave data unacknowledged (TCP_USER_TIMEOUT) or stay silent with
/// keepalive probes unanswered before the connection counts as dead.
pub const DEFAULT_DEAD_PEER: Duration = Duration::from_secs(10);
/// Default time a closing server connection keeps discarding input before it closes.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);
/// Default time a connection to an authenticating server may take to present its secret (the
/// module's secrets are good for as long).
pub const DEFAULT_AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// Smallest free space worth posting a RECV into.
const MIN_RECV_SPACE: usize = 4 << 10;

const _: () = {
    assert!(DEFAULT_RECV_BUF >= 2 * MIN_RECV_SPACE);
    assert!(DEFAULT_RECV_BUF <= u32::MAX as usize);
    assert!(DEFAULT_RING_ENTRIES.is_power_of_two());
    assert!(DEFAULT_SEND_HIGH_WATER >= DEFAULT_RECV_BUF);
};

/// Tunables of a TCP endpoint (server or client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Limits on frames received; a larger frame is rejected from its header.
    pub limits: Limits,
    /// Initial (and resting) size of each receive buffer, in bytes.
    pub recv_buf: usize,
    /// Submission queue entries of the endpoint's io_uring (the completion queue is twice that;
    /// the kernel buffers overflowing completions).
    pub ring_entries: u32,
    /// Most connections a server holds at once.
    pub max_connections: usize,
    /// Replies a server connection may have queued before it is not served until they drain.
    pub send_high_water: usize,
    /// Bound on detecting a silent dead peer: TCP_USER_TIMEOUT, and keepalive probes from half of
    /// it. A peer that closes or resets is detected as soon as that arrives.
    pub dead_peer: Duration,
    /// How long a server connection that is closing after a bad frame discards input before it
    /// closes (closing with unread input would reset the stream and could lose the error reply).
    pub linger: Duration,
    /// How long a connection to an authenticating server
    /// ([`TcpServer::with_authenticator`](server::TcpServer::with_authenticator)) may take to
    /// present its secret; one that has not by then is closed without a reply.
    pub auth_deadline: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            recv_buf: DEFAULT_RECV_BUF,
            ring_entries: DEFAULT_RING_ENTRIES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            send_high_water: DEFAULT_SEND_HIGH_WATER,
            dead_peer: DEFAULT_DEAD_PEER,
            linger: DEFAULT_LINGER,
            auth_deadline: DEFAULT_AUTH_DEADLINE,
        }
    }
}

impl TcpConfig {
    /// The largest frame (header and payload) these limits accept.
    pub fn max_frame(&self) -> usize {
        crate::wire::HEADER_LEN.saturating_add(self.limits.max_payload)
    }
}

/// What an io_uring operation was, in the low byte of its `user_data`; the connection's slot is
/// in the bits above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Recv = 1,
    Send = 2,
    Cancel = 3,
    Accept = 4,
}

impl Op {
    fn user_data(self, slot: u32) -> u64 {
        (u64::from(slot) << 8) | self as u64
    }

    fn decode(user_data: u64) -> Option<(Op, u32)> {
        let op = match user_data & 0xff {
            1 => Op::Recv,
            2 => Op::Send,
            3 => Op::Cancel,
            4 => Op::Accept,
            _ => return None,
        };
        Some((op, (user_data >> 8) as u32))
    }
}

/// Sets keepalive and TCP_USER_TIMEOUT so that a silent dead peer is noticed within `dead_peer`.
fn set_dead_peer_timeout(socket: &std::net::TcpStream, dead_peer: Duration) -> crate::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let ms = dead_peer.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    let idle = (dead_peer.as_secs() / 2).clamp(1, i32::MAX as u64) as libc::c_int;
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms),
    ] {
        // SAFETY: `fd` is an open socket borrowed from `socket` for the call; `value` is a live
        // c_int and the length passed is its size, so the kernel reads exactly that int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(crate::Error::Io {
                op: "setsockopt",
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [Op::Recv, Op::Send, Op::Cancel, Op::Accept] {
            for slot in [0, 1, 255, 256, u32::MAX] {
                assert_eq!(Op::decode(op.user_data(slot)), Some((op, slot)));
            }
        }
        assert_eq!(Op::decode(0), None);
    }
}
