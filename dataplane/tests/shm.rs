//! The shared-memory transport end to end: a server and a client endpoint over a real segment,
//! and peer-death detection with a real child process.
#![cfg(not(loom))]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use autoloc_dataplane::backoff::{Backoff, BackoffConfig};
use autoloc_dataplane::ring::{RingConfig, RingError};
use autoloc_dataplane::shm::{Backing, PeerState, ShmClient, ShmConfig, ShmServer};
use autoloc_dataplane::wire::{self, Limits, Message};

const CHILD_ENV: &str = "AUTOLOC_SHM_TEST_CHILD";

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
    let mut client = ShmClient::attach(&path).unwrap();
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
fn one_client_per_segment_and_unlink_after_attach() {
    let mut server = ShmServer::create(&config()).unwrap();
    let path = server.path().to_path_buf();
    let client = ShmClient::attach(&path).unwrap();
    assert_eq!(
        client.server(),
        PeerState::Alive {
            pid: std::process::id()
        }
    );
    let err = ShmClient::attach(&path).unwrap_err();
    assert!(err.to_string().contains("already has a client"), "{err}");
    server.unlink().unwrap();
    assert!(!path.exists());
    drop(server);
    assert_eq!(client.server(), PeerState::Detached);
}

#[test]
fn attach_rejects_what_is_not_a_segment() {
    let path = std::env::temp_dir().join(format!("autoloc-test-garbage-{}", std::process::id()));
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = ShmClient::attach(&path).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
    std::fs::write(&path, b"short").unwrap();
    assert!(ShmClient::attach(&path).is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(ShmClient::attach(Path::new("/dev/shm/autoloc-does-not-exist")).is_err());
}

/// Not a test of its own: run by `dead_client_is_detected` in a child process, it attaches, sends
/// one request and exits without running destructors, as a crashed client would.
#[test]
fn child_attaches_and_dies() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut client = ShmClient::attach(Path::new(&path)).unwrap();
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
