//! A function's writes apply all together or not at all, on either side: storage-side they are
//! applied when it succeeds (a failed or pushed-back invocation leaves nothing), compute-side they
//! go in one atomic `MultiSet` when it succeeds, and a pushed-back invocation's replay writes
//! each key once.

mod common;

use autoloc::{Placement, Runtime, Transport};
use autoloc_dataplane::Frame;
use autoloc_functions::ErrorCode;
use common::*;

const ALL: [Transport; 3] = [Transport::Shm, Transport::Tcp, Transport::Resp];

fn get(c: &mut autoloc_dataplane::Connection, key: &str) -> Option<Vec<u8>> {
    match c.call(&["GET", key]).unwrap() {
        Frame::Bulk(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn pagerank_stores_its_scores_on_either_side() {
    let s = server(&[]);
    let mut c = raw(&s);
    small_graph(&mut c);
    for t in ALL {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            let prefix = format!("pr:{t}:{p}:");
            let out = rt.invoke("pagerank", &["10", "20", &prefix], p).unwrap();
            for (v, score) in scores(&out.output) {
                let stored = get(&mut c, &format!("{prefix}{v}")).expect("score stored");
                assert_eq!(stored, score.to_string().into_bytes(), "{t} {p} {v}");
            }
        }
    }
}

#[test]
fn a_failed_invocation_writes_nothing() {
    let s = server(&[]);
    let mut c = raw(&s);
    small_graph(&mut c);
    // May write pr:1* (pr:10, pr:11, pr:12) but not pr:20: pagerank fails at its last write.
    c.call(&[
        "ACL", "SETUSER", "w", "on", ">pw", "%R~*", "%W~pr:1*", "+@all",
    ])
    .unwrap();
    let url = format!("redis://w:pw@127.0.0.1:{}", s.port());
    for t in ALL {
        let mut rt = Runtime::connect(&url).unwrap().with_transport(t).unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            let e = rt.invoke("pagerank", &["10", "5", "pr:"], p).unwrap_err();
            let autoloc::Error::Function(e) = e else {
                panic!("{e}")
            };
            assert_eq!(e.code(), ErrorCode::NoPerm, "{t} {p}: {e}");
            for v in [10, 11, 12, 20] {
                assert_eq!(
                    get(&mut c, &format!("pr:{v}")),
                    None,
                    "{t} {p}: pr:{v} written"
                );
            }
        }
    }
}

#[test]
fn a_pushed_back_invocation_writes_each_key_once() {
    // A budget so small that the storage side pushes pagerank back at its first write.
    let s = server(&["budget-us", "1"]);
    let mut c = raw(&s);
    small_graph(&mut c);
    let sets = |c: &mut autoloc_dataplane::Connection| -> u64 {
        autoloc::stats::info_field(c, "commandstats", "cmdstat_set").map_or(0, |v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .unwrap()
                .parse()
                .unwrap()
        })
    };
    for t in ALL {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        let before = sets(&mut c);
        let prefix = format!("pb:{t}:");
        let inv = rt
            .invoke("pagerank", &["10", "2000", &prefix], Placement::Storage)
            .unwrap();
        assert!(inv.pushed_back, "{t}");
        let n = scores(&inv.output).len() as u64;
        if t != Transport::Resp {
            // One MultiSet: a SET per key, each once. (Over RESP it is one MSET.)
            assert_eq!(sets(&mut c) - before, n, "{t}");
        }
        for (v, score) in scores(&inv.output) {
            let stored = get(&mut c, &format!("{prefix}{v}"));
            assert_eq!(stored, Some(score.to_string().into_bytes()), "{t} {v}");
        }
    }
}
