//! Writes made through the module are Redis writes: they reach the replicas and the AOF like
//! Redis's own, so they survive `kill -9` and a restart, and a replica holds them.
//!
//! An acknowledgement means the write is in the AOF, as for Redis's own clients: a data-plane
//! write (and an invocation that wrote) is answered only after Redis's main thread has flushed
//! (under `appendfsync always`, fsynced) the AOF holding it. The kill test sends nothing on the
//! control path between the last acknowledgement and `kill -9`: before acknowledgements waited,
//! it lost a TCP write.

mod common;

use std::time::{Duration, Instant};

use autoloc::server::{find_module, RedisServer};
use autoloc::stats::info_field;
use autoloc::{Placement, Transport};
use common::*;

fn get(s: &RedisServer, key: &str) -> Option<Vec<u8>> {
    match raw(s).call(&["GET", key]).unwrap() {
        autoloc_dataplane::Frame::Bulk(v) => v,
        other => panic!("GET {key}: {other:?}"),
    }
}

#[test]
fn module_writes_reach_a_replica() {
    let primary = server(&[]);
    let replica = server(&[]);
    let mut c = raw(&replica);
    c.call(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut c, "replication", "master_link_status").as_deref() != Some("up") {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in [Transport::Shm, Transport::Tcp] {
        let mut rt = runtime(&primary).with_transport(t).unwrap();
        for i in 0..20 {
            rt.set(format!("{t}:{i}").as_bytes(), format!("v{i}").as_bytes())
                .unwrap();
        }
    }
    // A read-only replica refuses the data plane's writes, as it refuses a client's.
    for t in [Transport::Shm, Transport::Tcp] {
        let mut on_replica = runtime(&replica).with_transport(t).unwrap();
        let e = on_replica.set(b"on-replica", b"x").unwrap_err();
        assert!(e.to_string().contains("READONLY"), "{t}: {e}");
    }
    assert_eq!(get(&replica, "on-replica"), None);
    for t in [Transport::Shm, Transport::Tcp] {
        for i in 0..20 {
            let key = format!("{t}:{i}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while get(&replica, &key).is_none() {
                assert!(Instant::now() < deadline, "{key} never reached the replica");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(get(&replica, &key), Some(format!("v{i}").into_bytes()));
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut s = RedisServer::start_with(
        &find_module().unwrap(),
        &[],
        &[("appendonly", "yes"), ("appendfsync", "always")],
    )
    .unwrap();
    small_graph(&mut raw(&s));
    let mut scored = Vec::new();
    for t in [Transport::Shm, Transport::Tcp] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        for i in 0..50 {
            rt.set(format!("{t}:{i}").as_bytes(), format!("v{i}").as_bytes())
                .unwrap();
        }
        // A storage-side invocation's writes, acknowledged by its reply.
        let prefix = format!("pr:{t}:");
        let out = rt
            .invoke("pagerank", &["10", "20", &prefix], Placement::Storage)
            .unwrap();
        scored.push((prefix, scores(&out.output)));
    }
    s.restart().unwrap();
    for t in [Transport::Shm, Transport::Tcp] {
        for i in 0..50 {
            let key = format!("{t}:{i}");
            assert_eq!(get(&s, &key), Some(format!("v{i}").into_bytes()), "{key}");
        }
    }
    for (prefix, scores) in scored {
        assert!(!scores.is_empty());
        for (v, score) in scores {
            let key = format!("{prefix}{v}");
            assert_eq!(get(&s, &key), Some(score.to_string().into_bytes()), "{key}");
        }
    }
}

#[test]
fn acknowledgements_wait_for_the_aof_when_it_is_on() {
    for (aof, expected) in [("yes", 12u64), ("no", 0)] {
        let s =
            RedisServer::start_with(&find_module().unwrap(), &[], &[("appendonly", aof)]).unwrap();
        small_graph(&mut raw(&s));
        let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
        for i in 0..10 {
            rt.set(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        rt.set(b"k0", b"w").unwrap();
        rt.invoke("pagerank", &["10", "2", "pr:"], Placement::Storage)
            .unwrap();
        // Reads and an invocation that writes nothing do not wait.
        rt.get(b"k0").unwrap();
        rt.invoke("khop", &["10", "1"], Placement::Storage).unwrap();
        let settled = rt.storage_stats().unwrap().get("dataplane_settled_writes");
        assert_eq!(settled, Some(expected), "appendonly {aof}");
    }
}
