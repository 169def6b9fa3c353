//! The faults and when they strike: the schedule (seeded), and the probes that send junk and
//! unauthenticated frames, each with what must happen (the connection closed without a reply,
//! and counted).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use autoloc_dataplane::wire::{self, Message};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A fault the injector can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a worker process, start a replacement.
    KillWorker,
    /// SIGKILL redis-server, restart it on the same port and directory (AOF on), re-create the
    /// ACL users, check every acknowledged write.
    KillRedis,
    /// Take a worker's write permission away (its key pattern), give it back later.
    AclRestrict,
    /// Delete a worker's ACL user, re-create it later.
    AclDelete,
    /// Random bytes, and a header that announces a large frame, to the TCP data-plane port.
    JunkTcp,
    /// Well-formed frames without the one-time secret (a `Get`, a `Hello` with a wrong secret,
    /// nothing at all) to the TCP data-plane port.
    UnauthTcp,
    /// A shared-memory segment attached with a wrong secret.
    ForeignShm,
    /// Protocol garbage to Redis's own port.
    JunkResp,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillWorker,
        FaultKind::KillRedis,
        FaultKind::AclRestrict,
        FaultKind::AclDelete,
        FaultKind::JunkTcp,
        FaultKind::UnauthTcp,
        FaultKind::ForeignShm,
        FaultKind::JunkResp,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::KillRedis => "kill-redis",
            FaultKind::AclRestrict => "acl-restrict",
            FaultKind::AclDelete => "acl-delete",
            FaultKind::JunkTcp => "junk-tcp",
            FaultKind::UnauthTcp => "unauth-tcp",
            FaultKind::ForeignShm => "foreign-shm",
            FaultKind::JunkResp => "junk-resp",
        }
    }
}

/// How long an ACL fault lasts before it is undone.
pub const ACL_HOLD: Duration = Duration::from_millis(1500);
/// Shortest and longest gap between two faults (longer than [`ACL_HOLD`], so faults do not
/// overlap).
const GAP: (f64, f64) = (2.0, 4.0);

/// When each fault strikes in a run of `duration`: after a warm-up, in rounds that each cause
/// every kind once in a random order, with random gaps, and none in the last part of the run
/// (the workers then run undisturbed before the checks).
pub fn schedule(duration: Duration, seed: u64) -> Vec<(Duration, FaultKind)> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xfa17);
    let total = duration.as_secs_f64();
    let warm_up = (total / 10.0).min(3.0);
    let quiet = (total / 6.0).clamp(2.0, 10.0);
    let mut out = Vec::new();
    let mut t = warm_up;
    let mut round = Vec::new();
    while t < total - quiet {
        if round.is_empty() {
            round = FaultKind::ALL.to_vec();
            round.shuffle(&mut rng);
        }
        out.push((
            Duration::from_secs_f64(t),
            round.pop().expect("refilled when empty"),
        ));
        t += rng.gen_range(GAP.0..GAP.1);
    }
    out
}

/// What a peer that should be turned away saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Door {
    /// Closed (EOF or reset), nothing received.
    Closed,
    /// Closed after a reply of this many bytes.
    ClosedAfterReply(usize),
    /// Still open, without a reply, when we stopped waiting.
    Open,
    /// Still open after a reply of this many bytes.
    OpenAfterReply(usize),
}

/// Connects to `addr`, sends `bytes` (nothing if empty) and waits up to `wait` for the peer to
/// close.
pub fn knock(addr: (&str, u16), bytes: &[u8], wait: Duration) -> std::io::Result<Door> {
    let mut s = TcpStream::connect(addr)?;
    if !bytes.is_empty() {
        s.write_all(bytes)?;
    }
    let deadline = Instant::now() + wait;
    let mut got = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(if got == 0 {
                Door::Open
            } else {
                Door::OpenAfterReply(got)
            });
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Ok(if got == 0 {
                    Door::Closed
                } else {
                    Door::ClosedAfterReply(got)
                })
            }
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(if got == 0 {
                    Door::Closed
                } else {
                    Door::ClosedAfterReply(got)
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// Random bytes that are no frame (the first byte is not the wire's magic).
pub fn junk(rng: &mut SmallRng) -> Vec<u8> {
    let len = rng.gen_range(1..512);
    let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    if b[0] == wire::MAGIC {
        b[0] = !wire::MAGIC;
    }
    b
}

/// A valid header that announces a `Get` of `payload` bytes, without the payload.
pub fn announced_frame(payload: u32) -> Vec<u8> {
    wire::Header {
        magic: wire::MAGIC,
        version: wire::VERSION,
        kind: wire::Kind::Get as u8,
        flags: 0,
        payload_len: payload,
        request_id: 7,
    }
    .to_bytes()
    .to_vec()
}

/// A well-formed frame: `message` as request `id`.
pub fn frame(id: u64, message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(id, message, &mut out).expect("a small frame encodes");
    out
}

/// Garbage for Redis's RESP port, each of which Redis answers with a protocol error and a close.
pub fn resp_junk(rng: &mut SmallRng) -> Vec<u8> {
    let mut tail: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
    tail.retain(|b| b.is_ascii_alphabetic());
    tail.push(b'x');
    match rng.gen_range(0..3) {
        // A multibulk count that is no number.
        0 => [b"*".as_slice(), &tail, b"\r\n"].concat(),
        // A bulk length that is no number.
        1 => [b"*1\r\n$".as_slice(), &tail, b"\r\n"].concat(),
        // A bulk length far over the limit.
        _ => b"*1\r\n$99999999999\r\n".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_strikes_and_the_end_is_quiet() {
        let d = Duration::from_secs(60);
        let s = schedule(d, 1);
        for k in FaultKind::ALL {
            assert!(s.iter().any(|(_, f)| *f == k), "{k:?} never strikes");
        }
        assert!(s.windows(2).all(|w| w[1].0 - w[0].0 >= ACL_HOLD));
        assert!(s.last().unwrap().0 < d - Duration::from_secs(9));
        assert!(s[0].0 >= Duration::from_secs(3));
        assert_eq!(s, schedule(d, 1));
        assert_ne!(s, schedule(d, 2));
        assert!(schedule(Duration::from_secs(2), 1).is_empty());
    }

    #[test]
    fn junk_is_no_frame() {
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            assert_ne!(junk(&mut rng)[0], wire::MAGIC);
            let r = resp_junk(&mut rng);
            assert!(r.starts_with(b"*") && r.ends_with(b"\r\n"));
        }
        let h = announced_frame(1 << 20);
        assert_eq!(h.len(), wire::HEADER_LEN);
    }
}
