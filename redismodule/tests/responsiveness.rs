//! Redis's own clients stay served while a function runs inside: a storage-side invocation gives
//! Redis's lock back every `lock-us` while it runs (on a data-plane thread), and an
//! `AUTOLOC.CALL` that runs past `lock-us` on Redis's main thread moves to a data-plane thread
//! and blocks only its own client.
//!
//! No timing bound: each test shows that a command on another connection was answered while a
//! long invocation was still running (the invocation's thread had not finished, and the answer
//! counts the lock being given back), which cannot happen if the invocation keeps the lock.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc::{Output, Placement, Transport};
use autoloc_dataplane::Frame;
use common::*;

/// A budget long enough for [`ROUNDS`] of MD5 over [`BLOB`] bytes on a busy machine.
const BUDGET: &str = "1000";
const BLOB: usize = 256 * 1024;
/// About 200 ms of hashing on a quiet machine.
const ROUNDS: &str = "400";

fn blob_server() -> autoloc::server::RedisServer {
    let s = server(&["budget-ms", BUDGET]);
    let blob: Vec<u8> = (0..BLOB).map(|i| (i * 31 % 251) as u8).collect();
    cmd(&mut raw(&s), &[b"SET", b"blob", &blob]);
    s
}

/// Polls `AUTOLOC.STATS` on a plain client until `field` is positive while `running` holds;
/// returns whether it saw that (the server answered during the run).
fn answered_during(s: &autoloc::server::RedisServer, field: &str, running: &AtomicBool) -> bool {
    let mut rt = runtime(s);
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.load(Ordering::Acquire) && Instant::now() < deadline {
        let stats = rt.storage_stats().unwrap();
        if stats.get(field).unwrap_or(0) > 0 && running.load(Ordering::Acquire) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn compute_digest(s: &autoloc::server::RedisServer) -> Output {
    runtime(s)
        .invoke("digest", &["blob", ROUNDS], Placement::Compute)
        .unwrap()
        .output
}

#[test]
fn a_long_data_plane_invocation_gives_the_lock_back() {
    for t in [Transport::Shm, Transport::Tcp] {
        // A fresh server each time: a data-plane thread that was busy a moment ago would run
        // the invocation at its overload budget, and push it back.
        let s = blob_server();
        let expected = compute_digest(&s);
        let running = Arc::new(AtomicBool::new(true));
        let url = s.url();
        let flag = running.clone();
        let worker = std::thread::spawn(move || {
            let mut rt = autoloc::Runtime::connect(&url)
                .unwrap()
                .with_transport(t)
                .unwrap();
            let inv = rt
                .invoke("digest", &["blob", ROUNDS], Placement::Storage)
                .unwrap();
            flag.store(false, Ordering::Release);
            inv
        });
        let seen = answered_during(&s, "dataplane_lock_yields", &running);
        let inv = worker.join().unwrap();
        assert!(
            seen,
            "{t}: no command was answered while the invocation ran"
        );
        assert!(
            !inv.pushed_back,
            "{t}: pushed back within a {BUDGET} ms budget"
        );
        assert_eq!(inv.output, expected, "{t}");
    }
}

#[test]
fn a_long_autoloc_call_moves_off_the_main_thread() {
    let s = blob_server();
    let Output::Text(expected) = compute_digest(&s) else {
        panic!("digest gives text")
    };
    let running = Arc::new(AtomicBool::new(true));
    let mut c = raw(&s);
    let flag = running.clone();
    let worker = std::thread::spawn(move || {
        let mut replies = Vec::new();
        for _ in 0..5 {
            replies.push(c.call(&["AUTOLOC.CALL", "digest", "blob", ROUNDS]).unwrap());
        }
        flag.store(false, Ordering::Release);
        replies
    });
    let seen = answered_during(&s, "dataplane_deferred", &running);
    let replies = worker.join().unwrap();
    assert!(seen, "no command was answered while AUTOLOC.CALL ran");
    for r in replies {
        assert_eq!(r, Frame::Bulk(Some(expected.clone().into_bytes())));
    }
    // Inside MULTI a client cannot block: the call runs on the main thread, to its budget.
    let mut c = raw(&s);
    assert_eq!(c.call(&["MULTI"]).unwrap(), Frame::Simple("OK".into()));
    c.call(&["AUTOLOC.CALL", "digest", "blob", ROUNDS]).unwrap();
    let Frame::Array(Some(results)) = c.call(&["EXEC"]).unwrap() else {
        panic!("EXEC gives an array")
    };
    assert_eq!(results, vec![Frame::Bulk(Some(expected.into_bytes()))]);
}
