//! AutoLoc on a Redis Cluster (3 masters, 1 replica each, on loopback): no key of another shard
//! is ever read as missing, Redis routes the keys form of `AUTOLOC.CALL`, and traversals that
//! span shards give exactly the single-node result, on every transport and placement; an
//! invocation forwarded from shard to shard reads each shard's keys there. (A shard saturated by
//! other clients: `cluster_hot.rs`, alone in its binary.)

mod common;

use std::time::Duration;

use autoloc::session::{Reply, Session};
use autoloc::transport::connect_link;
use autoloc::{Output, Placement, Runtime};
use autoloc_dataplane::slot::key_slot;
use autoloc_dataplane::wire::{List, Message};
use autoloc_dataplane::{Connection, Frame};
use autoloc_functions::ErrorCode;
use common::*;

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn a_key_of_another_shard_is_never_read_as_missing() {
    let c = cluster3();
    load_social(&c.url());
    let rt = Runtime::connect(&c.url()).unwrap();
    let (owner, other) = owner_and_other(&rt, b"1");
    let slot = key_slot(b"1");

    // Over every transport, straight to a master that does not serve the key: a typed error
    // with the slot and the node that serves it, for a read and a write alike.
    for t in all_transports() {
        let url = format!("redis://{other}").parse().unwrap();
        let mut control = Connection::connect(&url, Duration::from_secs(10)).unwrap();
        let link = connect_link(&mut control, &url, t, Duration::from_secs(10), true).unwrap();
        let mut s = Session::new(link, Duration::from_secs(10));
        for message in [
            Message::Get { key: b"1" },
            Message::MultiGet {
                keys: List::new(&[b"1".as_slice()]),
            },
            Message::Set {
                key: b"1",
                value: b"x",
            },
        ] {
            match s.call(&message).unwrap().reply {
                Reply::Error(e) => {
                    assert_eq!(e.code(), ErrorCode::WrongShard, "{t}: {e}");
                    assert_eq!(e.shard_hint(), Some((slot, owner.clone())), "{t}: {e}");
                }
                other => panic!("{t}: {message:?} on the wrong shard gave {other:?}"),
            }
        }
    }
    let value = Runtime::connect(&c.url()).unwrap().get(b"1").unwrap();
    assert!(
        value.is_some_and(|v| v != b"x"),
        "the refused write wrote nothing"
    );

    // Over RESP, Redis itself routes the keys form: MOVED from a node that does not serve it...
    let mut wrong = raw_port(port_of(&other));
    let moved = err(cmd(
        &mut wrong,
        &[b"AUTOLOC.CALL", b"khop", b"NUMKEYS", b"1", b"1", b"2"],
    ));
    assert!(
        moved.starts_with(&format!("MOVED {slot} {owner}")),
        "{moved}"
    );
    // ...and the single-node form, which names no key, fails there instead of reading the key
    // as missing (the 75 ids where a BFS gives 95).
    let refused = err(cmd(&mut wrong, &[b"AUTOLOC.CALL", b"khop", b"1", b"2"]));
    assert!(refused.starts_with("PUSHBACK"), "{refused}");
    assert!(refused.contains("another shard"), "{refused}");
    // On the owner, a 2-hop neighbourhood still spans shards: pushed back, never short.
    let mut right = raw_port(port_of(&owner));
    let spans = err(cmd(
        &mut right,
        &[b"AUTOLOC.CALL", b"khop", b"NUMKEYS", b"1", b"1", b"2"],
    ));
    assert!(spans.starts_with("PUSHBACK"), "{spans}");
    // A read of one key on its owner is served; AUTOLOC.MGET of keys of two shards is CROSSSLOT.
    assert!(matches!(
        cmd(
            &mut right,
            &[b"AUTOLOC.CALL", b"get", b"NUMKEYS", b"1", b"1"]
        ),
        Frame::Bulk(Some(_))
    ));
    let cross = err(cmd(&mut right, &[b"AUTOLOC.MGET", b"1", b"2", b"3", b"4"]));
    assert!(cross.starts_with("CROSSSLOT"), "{cross}");
    let bad = err(cmd(
        &mut right,
        &[b"AUTOLOC.CALL", b"get", b"NUMKEYS", b"2", b"1"],
    ));
    assert!(bad.contains("NUMKEYS"), "{bad}");

    // redis-cli -c follows the redirection from any node.
    for port in c.master_ports() {
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(["AUTOLOC.CALL", "get", "NUMKEYS", "1", "n:1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim().parse::<u64>().is_ok(), "port {port}: {text}");
    }
}

#[test]
fn traversals_across_shards_equal_the_single_node() {
    let single = server(&[]);
    load_social(&single.url());
    let c = cluster3();
    load_social(&c.url());
    let mut one = runtime(&single);
    let starts = ["1", "2", "7", "42", "100", "555", "1000"];
    // Vertices of a next hop that their shard expanded in the same round trip.
    let mut went_on = 0;
    for t in all_transports() {
        let mut rt = Runtime::connect(&c.url())
            .unwrap()
            .with_transport(t)
            .unwrap();
        for start in starts {
            for k in ["1", "2", "3"] {
                let want = one
                    .invoke("khop", &[start, k], Placement::Storage)
                    .unwrap()
                    .output;
                for p in [Placement::Storage, Placement::Compute, Placement::Auto] {
                    let got = rt.invoke("khop", &[start, k], p).unwrap();
                    assert_eq!(got.output, want, "{t} {p} khop {start} {k}");
                    if p == Placement::Storage {
                        // Hop by hop: one round trip per shard each hop touches, no more.
                        let touched: usize = got.hops.iter().map(|h| h.shards()).sum();
                        assert_eq!(got.round_trips, touched as u64, "{t} khop {start} {k}");
                        assert!(got
                            .hops
                            .iter()
                            .all(|h| h.parts_on(autoloc::hops::HopSide::Compute) == 0));
                        went_on += got.hops.iter().map(|h| h.ahead).sum::<usize>();
                    }
                }
            }
        }
        // pagerank by parts: the start on its shard, then the rest of its subgraph by shard.
        for start in ["1", "42", "555"] {
            let want = one
                .invoke("pagerank", &[start, "5"], Placement::Storage)
                .unwrap()
                .output;
            for p in [Placement::Storage, Placement::Compute, Placement::Auto] {
                let got = rt.invoke("pagerank", &[start, "5"], p).unwrap();
                assert_eq!(got.output, want, "{t} {p} pagerank {start}");
                if p == Placement::Storage {
                    let touched: usize = got.hops.iter().map(|h| h.shards()).sum();
                    assert!(
                        (1..=4).contains(&touched),
                        "{t} pagerank {start}: {touched}"
                    );
                    assert_eq!(got.round_trips, touched as u64, "{t} pagerank {start}");
                    assert!(!got.pushed_back, "{t} pagerank {start}");
                }
            }
        }
        // A missing start vertex is the same error, on every side.
        let e = rt
            .invoke("khop", &["99999999", "2"], Placement::Storage)
            .unwrap_err();
        assert!(e.to_string().contains("no such key"), "{t}: {e}");
    }
    assert!(went_on > 0);
    // And as many as the BFS found from vertex 1.
    let Output::Ids(ids) = one
        .invoke("khop", &["1", "2"], Placement::Compute)
        .unwrap()
        .output
    else {
        panic!()
    };
    assert_eq!(ids.len(), 95);
}

#[test]
fn a_shard_reads_its_view_of_the_slots_once_not_per_read() {
    let c = cluster3();
    load_social(&c.url());
    let rt = Runtime::connect(&c.url()).unwrap();
    let (owner, _) = owner_and_other(&rt, b"1");
    let url = format!("redis://{owner}").parse().unwrap();
    let mut control = Connection::connect(&url, Duration::from_secs(10)).unwrap();
    let reads = |c: &mut Connection| {
        autoloc::stats::StorageStats::read(c)
            .unwrap()
            .get("cluster_view_reads")
            .unwrap()
    };
    for t in all_transports() {
        let link = connect_link(&mut control, &url, t, Duration::from_secs(10), true).unwrap();
        let mut s = Session::new(link, Duration::from_secs(10));
        let before = reads(&mut control);
        for _ in 0..200 {
            match s.call(&Message::Get { key: b"1" }).unwrap().reply {
                Reply::Value(Some(_)) => {}
                other => panic!("{t}: {other:?}"),
            }
        }
        // The view is read again when a CLUSTER command may have changed it, and at least once
        // a second: not for every read (the module's own CLUSTER NODES once marked it stale).
        let after = reads(&mut control);
        assert!(
            after - before <= 5,
            "{t}: {} reads of the view",
            after - before
        );
    }
}

/// Sends `message` over a new data-plane session to `addr` as `user` (`None`: the default user).
fn call_on(addr: &str, user: Option<&str>, t: autoloc::Transport, message: &Message<'_>) -> Reply {
    let url = match user {
        Some(u) => format!("redis://{u}:pw@{addr}"),
        None => format!("redis://{addr}"),
    };
    let url = url.parse().unwrap();
    let mut control = Connection::connect(&url, Duration::from_secs(10)).unwrap();
    let link = connect_link(&mut control, &url, t, Duration::from_secs(10), true).unwrap();
    let mut s = Session::new(link, Duration::from_secs(10));
    s.call(message).unwrap().reply
}

#[test]
fn a_forwarded_invocation_reads_its_own_keys_here_and_answers_to_the_acl_for_the_rest() {
    let c = cluster3();
    load_social(&c.url());
    let rt = Runtime::connect(&c.url()).unwrap();
    let (owner, _) = owner_and_other(&rt, b"1");
    let t = rt.topology().unwrap();
    // A vertex of another shard.
    let theirs: Vec<u8> = (2..100u32)
        .map(|v| v.to_string().into_bytes())
        .find(|k| t.shards[t.shard_of(k).unwrap()].master != owner)
        .unwrap();
    let real = rt.try_clone().unwrap().get(b"1").unwrap().unwrap();
    let value = |r: Reply| match r {
        Reply::Invoked { result, .. } => {
            Output::decode(autoloc_functions::OutputKind::Value, &result).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let mut limited = raw_port(port_of(&owner));
    cmd(
        &mut limited,
        &[
            b"ACL", b"SETUSER", b"limited", b"on", b">pw", b"~1", b"+@all",
        ],
    );
    for tr in fast_transports() {
        // A value sent for a key this node serves is not believed: it is read here.
        let fake: [(&[u8], Option<&[u8]>); 1] = [(b"1", Some(b"fake"))];
        let got = call_on(
            &owner,
            None,
            tr,
            &Message::InvokeWith {
                function: "get",
                args: List::new(&[b"1".as_slice()]),
                read_set: List::new(&fake),
            },
        );
        assert_eq!(value(got), Output::Value(Some(real.clone())), "{tr}");
        // For a key of another shard, what that shard read stands.
        let seeded: [(&[u8], Option<&[u8]>); 1] = [(&theirs, Some(b"seeded"))];
        let key = [theirs.as_slice()];
        let forwarded = Message::InvokeWith {
            function: "get",
            args: List::new(&key),
            read_set: List::new(&seeded),
        };
        let got = call_on(&owner, None, tr, &forwarded);
        assert_eq!(value(got), Output::Value(Some(b"seeded".to_vec())), "{tr}");
        // ...for a caller allowed to read it: a user of key `1` only is refused it.
        match call_on(&owner, Some("limited"), tr, &forwarded) {
            Reply::Error(e) => assert_eq!(e.code(), ErrorCode::NoPerm, "{tr}: {e}"),
            other => panic!("{tr}: {other:?}"),
        }
        // Sent first, a read of keys of two shards is pushed back with the keys of this node
        // read (so that a shard it is forwarded to finds them) and the others named.
        let both = [b"keys".as_slice(), b"1", &theirs];
        match call_on(
            &owner,
            None,
            tr,
            &Message::Invoke {
                function: "aggregate",
                args: List::new(&both),
            },
        ) {
            Reply::Pushback {
                read_set,
                elsewhere,
                ..
            } => {
                assert_eq!(read_set, vec![(b"1".to_vec(), Some(real.clone()))], "{tr}");
                assert_eq!(elsewhere, vec![theirs.clone()], "{tr}");
            }
            other => panic!("{tr}: {other:?}"),
        }
    }
    // Forwarded from shard to shard by the runtime: the result of one that finishes here, and
    // a run that reads every shard finishes storage-side.
    for f in ["aggregate", "pagerank_wasm"] {
        if f.ends_with("_wasm") {
            let wasm = autoloc::guests::bytes(f).unwrap();
            rt.try_clone().unwrap().load_function(&wasm, false).unwrap();
        }
        let args = match f {
            "aggregate" => vec!["1", "300"],
            _ => vec!["1", "5"],
        };
        let finish = rt
            .try_clone()
            .unwrap()
            .invoke(f, &args, Placement::Storage)
            .unwrap();
        assert!(finish.pushed_back, "{f}");
        for tr in fast_transports() {
            let mut fw = rt
                .try_clone()
                .unwrap()
                .with_transport(tr)
                .unwrap()
                .with_other_shard(autoloc::OtherShard::Forward);
            let got = fw.invoke(f, &args, Placement::Storage).unwrap();
            assert_eq!(got.output, finish.output, "{tr} {f}");
            assert!(got.forwarded >= 1 && !got.pushed_back, "{tr} {f}: {got:?}");
        }
    }
}
