//! The shared-memory transport end to end: a server and a client endpoint over a real segment,
//! peer-death detection with a real child process, and frames larger than a slot through the
//! link layer (fragmented, streamed, reassembled).
#![cfg(not(loom))]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autoloc_dataplane::backoff::{Backoff, BackoffConfig};
use autoloc_dataplane::frag;
use autoloc_dataplane::link::{ClientLink, Replier, ServerLink, ShmClientLink};
use autoloc_dataplane::ring::{RingConfig, RingError};
use autoloc_dataplane::secret::Secret;
use autoloc_dataplane::shm::{
    self, Backing, PeerState, ShmClient, ShmConfig, ShmServer, REPLY_ROOM_DEADLINE,
};
use autoloc_dataplane::wire::{
    self, Frame, Kind, Limits, List, Message, DEFAULT_MAX_PAYLOAD, HEADER_LEN,
};
use autoloc_dataplane::Error;

const CHILD_ENV: &str = "AUTOLOC_SHM_TEST_CHILD";
const CHILD_SECRET_ENV: &str = "AUTOLOC_SHM_TEST_CHILD_SECRET";

fn child_secret() -> Secret {
    Secret::from_hex(&std::env::var(CHILD_SECRET_ENV).unwrap()).unwrap()
}

fn any_secret() -> Secret {
    Secret::random().unwrap()
}

fn config() -> ShmConfig {
    let ring = RingConfig {
        slot_count: 64,
        slot_size: 256,
    };
    ShmConfig {
        requests: ring,
        responses: ring,
        backing: Backing::File {
            dir: "/dev/shm".into(),
        },
    }
}

/// Serves `Get { key }` with `Value { Some(key) }` until `n` requests were answered.
fn serve(mut server: ShmServer, n: u64, deadline: Instant) -> ShmServer {
    let limits = Limits::default();
    let mut backoff = Backoff::new(BackoffConfig::default());
    let mut served = 0u64;
    while served < n {
        assert!(
            Instant::now() < deadline,
            "server timed out after {served} requests"
        );
        let (rx, tx) = server.split();
        let burst = rx.pop_burst(32).unwrap();
        if burst.is_empty() {
            drop(burst);
            server.wait(&mut backoff);
            continue;
        }
        backoff.reset();
        for frame in burst.iter() {
            let (frame, _) = wire::decode(frame, &limits).unwrap();
            let Message::Get { key } = frame.message else {
                panic!("unexpected {:?}", frame.message)
            };
            // Encode the reply straight from the request slot into the response slot: no copy in
            // between. The response ring has as many slots as the request ring, and the client
            // drains responses, so waiting for room terminates.
            loop {
                let mut slot = match tx.try_reserve() {
                    Ok(slot) => slot,
                    Err(RingError::Full) => {
                        tx.flush();
                        assert!(
                            Instant::now() < deadline,
                            "server blocked on a full response ring"
                        );
                        std::thread::yield_now();
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                };
                let len = wire::encode_into(
                    frame.request_id,
                    &Message::Value { value: Some(key) },
                    slot.buf(),
                )
                .unwrap();
                slot.stage(len).unwrap();
                break;
            }
            served += 1;
        }
        drop(burst);
        server.flush();
    }
    server
}

#[test]
fn hundred_thousand_requests_over_dev_shm() {
    const N: u64 = 100_000;
    const WINDOW: u64 = 48;
    let deadline = Instant::now() + Duration::from_secs(120);
    let server = ShmServer::create(&config()).unwrap();
    let path = server.path().to_path_buf();
    assert!(
        path.to_string_lossy().starts_with("/dev/shm/autoloc-"),
        "{}",
        path.display()
    );
    let mut client = ShmClient::attach(&path, &server.secret()).unwrap();
    assert!(matches!(server.client(), PeerState::Alive { pid } if pid == std::process::id()));
    let server = std::thread::spawn(move || serve(server, N, deadline));

    let limits = Limits::default();
    let mut backoff = Backoff::new(BackoffConfig::default());
    let (mut sent, mut received) = (0u64, 0u64);
    while received < N {
        assert!(
            Instant::now() < deadline,
            "client timed out: sent {sent}, received {received}"
        );
        // Keep up to WINDOW requests in flight, queued and published in one go.
        let mut queued = false;
        while sent < N && sent - received < WINDOW {
            let key = format!("key:{sent}");
            match client.queue(
                sent,
                &Message::Get {
                    key: key.as_bytes(),
                },
            ) {
                Ok(()) => {
                    sent += 1;
                    queued = true;
                }
                Err(RingError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if queued {
            client.flush();
        }
        let burst = client.recv_burst(32).unwrap();
        if burst.is_empty() {
            drop(burst);
            client.wait(&mut backoff);
            continue;
        }
        backoff.reset();
        for frame in burst.iter() {
            let (frame, _) = wire::decode(frame, &limits).unwrap();
            // Both rings are FIFO and the server answers in order.
            assert_eq!(frame.request_id, received);
            let expect = format!("key:{received}");
            assert_eq!(
                frame.message,
                Message::Value {
                    value: Some(expect.as_bytes())
                }
            );
            received += 1;
        }
    }
    assert_eq!(sent, N);
    let server = server.join().unwrap();
    assert!(client.try_recv().unwrap().is_none());
    drop(client);
    assert_eq!(server.client(), PeerState::Detached);
    drop(server);
    assert!(!path.exists(), "segment file left behind");
}

#[test]
fn one_client_per_segment() {
    // A memfd segment's path stays openable while the server lives: the second client is
    // refused by the segment itself.
    let server = ShmServer::create(&ShmConfig {
        backing: Backing::Memfd,
        ..config()
    })
    .unwrap();
    let path = server.path().to_path_buf();
    let client = ShmClient::attach(&path, &server.secret()).unwrap();
    assert_eq!(
        client.server(),
        PeerState::Alive {
            pid: std::process::id()
        }
    );
    let err = ShmClient::attach(&path, &server.secret()).unwrap_err();
    assert!(err.to_string().contains("already has a client"), "{err}");
    drop(server);
    assert_eq!(client.server(), PeerState::Detached);
}

/// The client removes the segment's name as soon as it has mapped it and presented its secret,
/// so a server killed before its reaper runs (an embedded server stopped with SIGKILL) leaves
/// nothing in /dev/shm; the server's own unlink then finds it gone and is content.
#[test]
fn the_client_removes_the_name_once_attached() {
    let mut server = ShmServer::create(&config()).unwrap();
    let path = server.path().to_path_buf();
    assert!(path.exists());
    let mut client = ShmClient::attach(&path, &server.secret()).unwrap();
    assert!(!path.exists(), "{} left after attach", path.display());
    assert!(ShmClient::attach(&path, &server.secret()).is_err());
    server.unlink().unwrap();
    assert!(server.admitted().unwrap());
    client.send(1, &Message::Get { key: b"k" }).unwrap();
    assert!(server.try_recv().unwrap().is_some());
}

/// What a killed server left behind is removed by the next one: segments named after a process
/// that is gone, and nothing else.
#[test]
fn stale_segments_of_dead_processes_are_removed() {
    let dir = std::env::temp_dir().join(format!("autoloc-stale-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    for name in [
        format!("autoloc-{dead}-0"),
        format!("autoloc-{dead}-17"),
        format!("autoloc-{me}-0"),
        "autoloc-notapid-0".to_string(),
        format!("other-{dead}-0"),
    ] {
        std::fs::write(dir.join(name), b"x").unwrap();
    }
    let removed = shm::remove_stale_segments(&dir);
    assert_eq!(removed, 2);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = vec![
        format!("autoloc-{me}-0"),
        "autoloc-notapid-0".to_string(),
        format!("other-{dead}-0"),
    ];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(shm::remove_stale_segments(&dir.join("missing")), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn attach_rejects_what_is_not_a_segment() {
    let path = std::env::temp_dir().join(format!("autoloc-test-garbage-{}", std::process::id()));
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = ShmClient::attach(&path, &any_secret()).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
    std::fs::write(&path, b"short").unwrap();
    assert!(ShmClient::attach(&path, &any_secret()).is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(
        ShmClient::attach(Path::new("/dev/shm/autoloc-does-not-exist"), &any_secret()).is_err()
    );
}

/// Not a test of its own: run by `dead_client_is_detected` in a child process, it attaches, sends
/// one request and exits without running destructors, as a crashed client would.
#[test]
fn child_attaches_and_dies() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut client = ShmClient::attach(Path::new(&path), &child_secret()).unwrap();
    client
        .send(42, &Message::Get { key: b"last words" })
        .unwrap();
    std::process::exit(0);
}

#[test]
fn dead_client_is_detected() {
    let mut server = ShmServer::create(&config()).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_attaches_and_dies",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, server.path())
        .env(CHILD_SECRET_ENV, server.secret().to_hex())
        .status()
        .unwrap();
    assert!(status.success());
    // The child was reaped by `status()`, so its pid no longer exists.
    match server.client() {
        PeerState::Dead { pid } => assert_ne!(pid, std::process::id()),
        other => panic!("expected a dead client, got {other:?}"),
    }
    // What it sent before dying is still readable.
    let slot = server.try_recv().unwrap().unwrap();
    let (frame, _) = wire::decode(&slot, &Limits::default()).unwrap();
    assert_eq!(
        (frame.request_id, frame.message),
        (42, Message::Get { key: b"last words" })
    );
}

// ---------------------------------------------------------------------------------------------
// Frames larger than a slot, through the link layer (ShmClientLink and ServerLink::serve).
// ---------------------------------------------------------------------------------------------

/// No link test may take longer than this.
const LINK_DEADLINE: Duration = Duration::from_secs(120);

fn link_config(slot_count: u32, request_slot: u32, response_slot: u32) -> ShmConfig {
    ShmConfig {
        requests: RingConfig {
            slot_count,
            slot_size: request_slot,
        },
        responses: RingConfig {
            slot_count,
            slot_size: response_slot,
        },
        backing: Backing::File {
            dir: "/dev/shm".into(),
        },
    }
}

/// The value the test server holds for `key`: `big:<n>` is `n` patterned bytes, any other key
/// its own bytes reversed.
fn value_of(key: &[u8]) -> Vec<u8> {
    if let Some(n) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix("big:"))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return (0..n)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect();
    }
    key.iter().rev().copied().collect()
}

/// Answers `Get` and `MultiGet` from [`value_of`] and echoes a `Set`'s value as a `Value`.
fn answer(frame: Frame<'_>, r: &mut dyn Replier) {
    let id = frame.request_id;
    let sent = match frame.message {
        Message::Get { key } => {
            let v = value_of(key);
            r.reply(id, &Message::Value { value: Some(&v) })
        }
        Message::MultiGet { keys } => {
            let owned: Vec<Vec<u8>> = keys.iter().map(value_of).collect();
            let values: Vec<Option<&[u8]>> = owned.iter().map(|v| Some(v.as_slice())).collect();
            r.reply(
                id,
                &Message::Values {
                    values: List::new(&values),
                },
            )
        }
        Message::Set { value, .. } => r.reply(id, &Message::Value { value: Some(value) }),
        other => panic!("unexpected {other:?}"),
    };
    sent.expect("reply");
}

/// Serves `server` through [`ServerLink::serve`] on a thread until `stop`.
fn spawn_server(mut server: ShmServer, stop: Arc<AtomicBool>) -> JoinHandle<ShmServer> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + LINK_DEADLINE;
        while !stop.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "server timed out");
            let n = server.serve(32, &mut answer).expect("serve");
            if n == 0 && !ServerLink::has_pending(&server) {
                server.park(Duration::from_millis(1));
            }
        }
        server
    })
}

/// A reply, owned.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
}

/// A client over [`ShmClientLink`] that pumps the way `compute`'s session does: a full link is
/// answered by flushing, draining replies and trying again.
struct Client {
    link: ShmClientLink,
    replies: HashMap<u64, Reply>,
    /// Request ids in the order their replies arrived.
    arrivals: Vec<u64>,
    deadline: Instant,
}

impl Client {
    fn attach(path: &Path, secret: &Secret) -> Self {
        let client = ShmClient::attach(path, secret).unwrap();
        Self {
            link: ShmClientLink::new(client, BackoffConfig::default()),
            replies: HashMap::new(),
            arrivals: Vec::new(),
            deadline: Instant::now() + LINK_DEADLINE,
        }
    }

    fn send(&mut self, id: u64, m: &Message<'_>) {
        loop {
            match self.link.queue(id, m) {
                Ok(()) => return,
                Err(Error::Ring(RingError::Full)) => {
                    self.pump();
                    self.idle();
                }
                Err(e) => panic!("queue {id}: {e}"),
            }
        }
    }

    fn pump(&mut self) -> usize {
        self.link.flush().unwrap();
        let (replies, arrivals) = (&mut self.replies, &mut self.arrivals);
        self.link
            .poll(&mut |f| {
                let reply = match f.message {
                    Message::Value { value } => Reply::Value(value.map(<[u8]>::to_vec)),
                    Message::Values { values } => {
                        Reply::Values(values.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
                    }
                    other => panic!("unexpected reply {other:?}"),
                };
                arrivals.push(f.request_id);
                assert!(replies.insert(f.request_id, reply).is_none(), "two replies");
            })
            .unwrap()
    }

    fn idle(&mut self) {
        assert!(Instant::now() < self.deadline, "client timed out");
        self.link.wait(Duration::from_millis(1)).unwrap();
    }

    fn take(&mut self, id: u64) -> Reply {
        loop {
            self.pump();
            if let Some(r) = self.replies.remove(&id) {
                return r;
            }
            self.idle();
        }
    }
}

fn keys(n: usize, len: usize, seed: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut k = format!("key:{seed}:{i}:").into_bytes();
            k.resize(len, b'a' + (i % 26) as u8);
            k
        })
        .collect()
}

fn multiget(keys: &[Vec<u8>]) -> (Vec<&[u8]>, Reply) {
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let want = Reply::Values(keys.iter().map(|k| Some(value_of(k))).collect());
    (refs, want)
}

#[test]
fn requests_larger_than_a_slot_are_fragmented() {
    // Slots of 64 KiB as in the default config, 8 of them: 512 KiB per ring.
    let server = ShmServer::create(&link_config(8, 64 << 10, 64 << 10)).unwrap();
    let mut client = Client::attach(server.path(), &server.secret());
    assert_eq!(client.link.max_frame(), HEADER_LEN + DEFAULT_MAX_PAYLOAD);
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(server, stop.clone());

    let slot = (64 << 10) - 8;
    // ~80 KB (the request that used to fail), ~3 slots, and more than the whole ring.
    let sets = [keys(780, 100, 1), keys(1_900, 100, 2), keys(6_000, 100, 3)];
    let frames: Vec<usize> = sets
        .iter()
        .map(|k| {
            let (refs, _) = multiget(k);
            Message::MultiGet {
                keys: List::new(&refs),
            }
            .frame_len()
            .unwrap()
        })
        .collect();
    assert!(frames[0] > 79_000 && frames[0] > slot, "{frames:?}");
    assert!(
        frames[1] > 3 * slot - 4096 && frames[1] < 4 * slot,
        "{frames:?}"
    );
    assert!(frames[2] > 8 * (64 << 10), "{frames:?}");

    // One at a time, then all back to back with small requests between them.
    for (i, k) in sets.iter().enumerate() {
        let (refs, want) = multiget(k);
        let id = 10 + i as u64;
        client.send(
            id,
            &Message::MultiGet {
                keys: List::new(&refs),
            },
        );
        assert!(client.take(id) == want, "request {id}");
    }
    let mut ids = Vec::new();
    for (i, k) in sets.iter().enumerate() {
        let (refs, _) = multiget(k);
        let id = 100 + 2 * i as u64;
        client.send(
            id,
            &Message::MultiGet {
                keys: List::new(&refs),
            },
        );
        client.send(id + 1, &Message::Get { key: b"small" });
        ids.extend([id, id + 1]);
    }
    for (i, k) in sets.iter().enumerate() {
        let (_, want) = multiget(k);
        let id = 100 + 2 * i as u64;
        assert!(client.take(id) == want, "request {id}");
        assert_eq!(client.take(id + 1), Reply::Value(Some(b"llams".to_vec())));
    }
    // Replies come back in the order the requests went.
    let tail: Vec<u64> = client.arrivals[client.arrivals.len() - ids.len()..].to_vec();
    assert_eq!(tail, ids);

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn reply_larger_than_the_ring_streams_while_small_requests_stay_in_flight() {
    // 8 slots of 64 KiB: 512 KiB of response ring for a 6 MiB reply.
    let mut server = ShmServer::create(&link_config(8, 4 << 10, 64 << 10)).unwrap();
    // The client drains continuously, but this machine may be busy: allow long stalls.
    server.set_reply_room_deadline(Duration::from_secs(30));
    let mut client = Client::attach(server.path(), &server.secret());
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(server, stop.clone());

    let big: Vec<Vec<u8>> = (0..6).map(|_| b"big:1048576".to_vec()).collect();
    let (refs, want) = multiget(&big);
    let reply_len = HEADER_LEN + 4 + 6 * (4 + (1 << 20));
    assert!(reply_len > 8 * (64 << 10) * 10, "{reply_len}");
    client.send(
        0,
        &Message::MultiGet {
            keys: List::new(&refs),
        },
    );

    // Keep up to 16 small requests in flight (behind the big one) until every reply is back.
    const SMALL: u64 = 500;
    let mut sent = 0u64;
    let mut sent_before_big = None;
    while (client.arrivals.len() as u64) < SMALL + 1 {
        while sent < SMALL && sent + 1 - (client.arrivals.len() as u64) < 17 {
            let key = format!("k{sent}");
            match client.link.queue(
                sent + 1,
                &Message::Get {
                    key: key.as_bytes(),
                },
            ) {
                Ok(()) => sent += 1,
                Err(Error::Ring(RingError::Full)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if client.pump() == 0 {
            client.idle();
        }
        if sent_before_big.is_none() && client.replies.contains_key(&0) {
            sent_before_big = Some(sent);
        }
    }
    assert_eq!(client.arrivals, (0..=SMALL).collect::<Vec<_>>());
    assert!(
        client.replies.remove(&0).unwrap() == want,
        "big reply differs"
    );
    for i in 1..=SMALL {
        let key = format!("k{}", i - 1);
        assert_eq!(
            client.replies[&i],
            Reply::Value(Some(value_of(key.as_bytes())))
        );
    }
    // Small requests were queued while the big reply was still streaming.
    assert!(sent_before_big.unwrap() > 0, "no request was in flight");

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn interleaved_small_and_large_frames_keep_their_order() {
    // Small slots (4 KiB, 16 per ring), so most frames here are fragmented both ways.
    let mut server = ShmServer::create(&link_config(16, 4 << 10, 4 << 10)).unwrap();
    server.set_reply_room_deadline(Duration::from_secs(30));
    let mut client = Client::attach(server.path(), &server.secret());
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(server, stop.clone());

    let cap = (4 << 10) - 8;
    // Frame sizes around one slot, two, and many rings; a Set of `n` bytes is 25 + n.
    let sizes = [
        1,
        cap - 25 - 1,
        cap - 25,
        cap - 25 + 1,
        2 * cap,
        16 * cap,
        40 * cap + 3,
        300 << 10,
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const N: u64 = 300;
    let mut want = HashMap::new();
    let mut sent = 0u64;
    while (client.arrivals.len() as u64) < N {
        // Up to 8 requests in flight, queued in bursts.
        while sent < N && sent - client.arrivals.len() as u64 <= 8 {
            let r = next();
            let n = sizes[(r % sizes.len() as u64) as usize];
            let value: Vec<u8> = (0..n).map(|i| (i as u64 ^ r) as u8).collect();
            let m = Message::Set {
                key: b"k",
                value: &value,
            };
            let result = if r % 3 == 0 {
                // A small Get between the large ones.
                let key = format!("g{sent}");
                want.insert(sent, Reply::Value(Some(value_of(key.as_bytes()))));
                client.link.queue(
                    sent,
                    &Message::Get {
                        key: key.as_bytes(),
                    },
                )
            } else {
                want.insert(sent, Reply::Value(Some(value.clone())));
                client.link.queue(sent, &m)
            };
            match result {
                Ok(()) => sent += 1,
                Err(Error::Ring(RingError::Full)) => {
                    want.remove(&sent);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        if client.pump() == 0 {
            client.idle();
        }
    }
    assert_eq!(client.arrivals, (0..N).collect::<Vec<_>>());
    for id in 0..N {
        assert!(client.replies[&id] == want[&id], "reply {id} differs");
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// Decodes the next reply on a raw client, reassembling fragments: (id, code) of an error, or
/// (id, "VALUE").
fn next_reply(
    client: &mut ShmClient,
    re: &mut frag::Reassembly,
    deadline: Instant,
) -> (u64, String) {
    let limits = Limits::default();
    loop {
        assert!(Instant::now() < deadline, "no reply");
        let Some(slot) = client.try_recv().unwrap() else {
            std::thread::yield_now();
            continue;
        };
        let bytes = if frag::is_fragment(&slot) {
            match re.push(&slot, &limits).unwrap() {
                Some(frame) => frame.to_vec(),
                None => continue,
            }
        } else {
            slot.to_vec()
        };
        let (f, _) = wire::decode(&bytes, &limits).unwrap();
        let what = match f.message {
            Message::Error { code, .. } => code.to_string(),
            Message::Value { .. } | Message::Values { .. } => "VALUE".to_string(),
            other => panic!("unexpected {other:?}"),
        };
        return (f.request_id, what);
    }
}

#[test]
fn corrupt_fragments_are_rejected_and_the_link_goes_on() {
    let deadline = Instant::now() + LINK_DEADLINE;
    // Slots of 256 bytes (248 of message); fragments here carry chunks of at most 200.
    let mut server = ShmServer::create(&link_config(16, 256, 256)).unwrap();
    let mut client = ShmClient::attach(server.path(), &server.secret()).unwrap();
    let ks = keys(20, 20, 0);
    let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
    let m = Message::MultiGet {
        keys: List::new(&refs),
    };
    let encoded = |id: u64| {
        let mut out = Vec::new();
        wire::encode(id, &m, &mut out).unwrap();
        out
    };
    let piece = |id: u64, total: u64, offset: u64, chunk: &[u8]| {
        let mut out = vec![0u8; frag::FRAGMENT_PREFIX + chunk.len()];
        let n = frag::encode_fragment(id, Kind::MultiGet as u8, total, offset, chunk, &mut out)
            .unwrap();
        out.truncate(n);
        out
    };
    let serve_all = |server: &mut ShmServer| {
        while ServerLink::has_pending(server) {
            server.serve(64, &mut answer).unwrap();
        }
    };
    let whole = encoded(1);
    let total = whole.len() as u64;
    assert_eq!(total, 500);
    // Replies to whole requests are fragmented too (Values of 500 bytes).
    let mut re = frag::Reassembly::new();

    // A fragment that does not start its frame: MALFORMED.
    client
        .try_send(&piece(1, total, 200, &whole[200..400]))
        .unwrap();
    serve_all(&mut server);
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (1, "MALFORMED".into())
    );
    // A frame announced over the wire limit: TOOLARGE from its first fragment, before anything
    // is buffered, and its other fragments are dropped quietly.
    client
        .try_send(&piece(2, 1 << 40, 0, &whole[..200]))
        .unwrap();
    client
        .try_send(&piece(2, 1 << 40, 200, &whole[200..400]))
        .unwrap();
    serve_all(&mut server);
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (2, "TOOLARGE".into())
    );
    // Fragments cut short by a plain frame: MALFORMED for them, and the frame is served.
    let whole = encoded(3);
    client.try_send(&piece(3, total, 0, &whole[..200])).unwrap();
    client.send(4, &Message::Get { key: b"k" }).unwrap();
    serve_all(&mut server);
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (3, "MALFORMED".into())
    );
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (4, "VALUE".into())
    );
    // Request 5 is well formed; request 6 has a fragment that runs past the end of its frame:
    // one MALFORMED, and its remaining fragment is dropped quietly.
    for (i, c) in encoded(5).chunks(200).enumerate() {
        client
            .try_send(&piece(5, total, (i * 200) as u64, c))
            .unwrap();
    }
    let whole = encoded(6);
    client.try_send(&piece(6, total, 0, &whole[..200])).unwrap();
    client
        .try_send(&piece(6, total, 400, &whole[..150]))
        .unwrap();
    client
        .try_send(&piece(6, total, 400, &whole[400..]))
        .unwrap();
    serve_all(&mut server);
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (5, "VALUE".into())
    );
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (6, "MALFORMED".into())
    );
    // And a well-formed fragmented request after all that is served.
    for (i, c) in encoded(7).chunks(200).enumerate() {
        client
            .try_send(&piece(7, total, (i * 200) as u64, c))
            .unwrap();
    }
    serve_all(&mut server);
    assert_eq!(
        next_reply(&mut client, &mut re, deadline),
        (7, "VALUE".into())
    );
    assert!(client.try_recv().unwrap().is_none());

    // The client end takes a broken reply sequence for a broken link, without panicking.
    let mut link = ShmClientLink::new(client, BackoffConfig::default());
    let mut whole = Vec::new();
    let value = [1u8; 600];
    wire::encode(
        8,
        &Message::Value {
            value: Some(&value),
        },
        &mut whole,
    )
    .unwrap();
    let total = whole.len() as u64;
    server.try_send(&piece(8, total, 0, &whole[..200])).unwrap();
    server
        .try_send(&piece(8, total, 400, &whole[400..600]))
        .unwrap();
    let err = link.poll(&mut |f| panic!("delivered {f:?}")).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[test]
fn a_client_that_stops_draining_fails_its_link_within_the_deadline() {
    // Default deadline (20 ms a slot); a 2 MiB reply through 8 slots of 16 KiB.
    let mut server = ShmServer::create(&link_config(8, 4 << 10, 16 << 10)).unwrap();
    assert_eq!(server.reply_room_deadline(), REPLY_ROOM_DEADLINE);
    let mut link = ShmClientLink::new(
        ShmClient::attach(server.path(), &server.secret()).unwrap(),
        BackoffConfig::default(),
    );
    link.queue(
        1,
        &Message::Get {
            key: b"big:2097152",
        },
    )
    .unwrap();
    link.flush().unwrap();
    // Nobody drains the replies: serve gives the link up instead of waiting for ever. (The
    // handler ignores the failed reply, as the module's does.)
    let mut failed = 0;
    let mut handle = |f: Frame<'_>, r: &mut dyn Replier| {
        let Message::Get { key } = f.message else {
            panic!("unexpected {f:?}")
        };
        let v = value_of(key);
        if r.reply(f.request_id, &Message::Value { value: Some(&v) })
            .is_err()
        {
            failed += 1;
        }
    };
    let started = Instant::now();
    let err = server.serve(32, &mut handle).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    eprintln!("serve failed after {:?}: {err}", started.elapsed());
    // Part of a frame went out, so the link stays failed.
    assert!(server.serve(32, &mut handle).is_err());
    assert_eq!(failed, 1);
}

#[test]
fn the_reply_deadline_bounds_a_stall_not_a_whole_reply() {
    const NAP: Duration = Duration::from_millis(250);
    // 8 slots of 4 KiB: a 192 KiB reply is six ring-fulls, drained one nap apart.
    let mut server = ShmServer::create(&link_config(8, 4 << 10, 4 << 10)).unwrap();
    server.set_reply_room_deadline(Duration::from_secs(1));
    let mut client = Client::attach(server.path(), &server.secret());
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(server, stop.clone());
    let started = Instant::now();
    client.send(1, &Message::Get { key: b"big:196608" });
    client.link.flush().unwrap();
    let reply = loop {
        std::thread::sleep(NAP);
        client.pump();
        if let Some(r) = client.replies.remove(&1) {
            break r;
        }
        assert!(!client.link.peer_gone(), "the server gave up");
        assert!(Instant::now() < client.deadline, "client timed out");
    };
    assert!(reply == Reply::Value(Some(value_of(b"big:196608"))));
    // The whole reply took longer than the deadline, which bounds each slot's wait only.
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn a_segment_serves_only_the_client_with_its_secret() {
    // A process that can open the file but was not handed the secret gets nothing served, and
    // the server gives the link up.
    let mut server = ShmServer::create(&config()).unwrap();
    let mut intruder = ShmClient::attach(server.path(), &any_secret()).unwrap();
    intruder
        .send(1, &Message::Get { key: b"secret:1" })
        .unwrap();
    let mut served = 0;
    let err = server
        .serve(8, &mut |_, _| served += 1)
        .expect_err("a client with the wrong secret is refused");
    assert!(err.to_string().contains("secret"), "{err}");
    assert_eq!(served, 0);
    assert!(intruder.try_recv().unwrap().is_none(), "no reply");
    // With the secret, the same request is served.
    let mut server = ShmServer::create(&config()).unwrap();
    assert_eq!(
        server.serve(8, &mut |_, _| served += 1).unwrap(),
        0,
        "no client yet"
    );
    let mut client = ShmClient::attach(server.path(), &server.secret()).unwrap();
    client.send(1, &Message::Get { key: b"k" }).unwrap();
    let n = server
        .serve(8, &mut |f, out| {
            out.reply(f.request_id, &Message::Value { value: None })
                .unwrap()
        })
        .unwrap();
    assert_eq!(n, 1);
    assert!(client.try_recv().unwrap().is_some());
}
