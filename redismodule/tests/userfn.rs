//! User functions in WebAssembly, end to end against a real redis-server: the example guests
//! give their native twins' results on both sides and every transport; LOAD, LIST, DUMP,
//! DELETE and REPLACE behave like Redis's `FUNCTION`; loaded functions survive a restart and
//! reach replicas; hostile guests get clear errors while the server keeps serving.

mod common;

use autoloc::load::load_autoloc_json;
use autoloc::{guests, Placement, Runtime, Transport};
use autoloc_dataplane::Frame;
use common::*;

/// Loads the example guest `name` into `s` through the library.
fn load(s: &autoloc::server::RedisServer, name: &str) {
    let bytes = guests::bytes(name).unwrap();
    assert_eq!(runtime(s).load_function(&bytes, false).unwrap(), name);
}

/// Each built-in's twin, with arguments that cover it.
fn twins(start: u32) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let v = start.to_string();
    vec![
        ("khop", "khop_wasm", vec![v.clone(), "2".into()]),
        ("khop", "khop_wasm", vec![v.clone(), "3".into()]),
        ("digest", "digest_wasm", vec![v.clone(), "3".into()]),
        ("pagerank", "pagerank_wasm", vec![v.clone(), "5".into()]),
        ("aggregate", "aggregate_wasm", vec!["0".into(), "50".into()]),
        ("get", "get_wasm", vec![v]),
    ]
}

fn check_twins(rt: &mut Runtime, start: u32, what: &str) {
    for (native, guest, args) in twins(start) {
        for p in [Placement::Storage, Placement::Compute] {
            let n = rt.invoke(native, &args, p).unwrap();
            let g = rt
                .invoke(guest, &args, p)
                .unwrap_or_else(|e| panic!("{guest} {args:?} {p} on {what}: {e}"));
            assert_eq!(
                n.output.canonical_hash(),
                g.output.canonical_hash(),
                "{guest} {args:?} {p} on {what}"
            );
            assert_eq!(g.side.to_string(), p.to_string(), "{guest} ran where asked");
        }
    }
}

#[test]
fn guests_match_their_native_twins_on_both_sides_and_every_transport() {
    let s = server(&["budget-ms", "1000"]);
    load_rmat(&s, 9, 8, 7);
    for g in [
        "khop_wasm",
        "digest_wasm",
        "pagerank_wasm",
        "aggregate_wasm",
        "get_wasm",
    ] {
        load(&s, g);
    }
    for t in [Transport::Resp, Transport::Shm, Transport::Tcp] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        check_twins(&mut rt, 1, &format!("R-MAT over {t}"));
    }
    // Many in flight on one link, compute-side: a guest waiting for a read does not hold up
    // the others.
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    let calls: Vec<(&str, Vec<String>)> = (0..32)
        .map(|v| ("khop_wasm", vec![v.to_string(), "2".into()]))
        .collect();
    let native: Vec<(&str, Vec<String>)> = (0..32)
        .map(|v| ("khop", vec![v.to_string(), "2".into()]))
        .collect();
    let got = rt.invoke_many(&calls, Placement::Compute);
    let want = rt.invoke_many(&native, Placement::Compute);
    for (g, w) in got.into_iter().zip(want) {
        match (g, w) {
            (Ok(g), Ok(w)) => assert_eq!(g.output, w.output),
            (Err(g), Err(w)) => assert_eq!(g.code(), w.code()),
            (g, w) => panic!("{g:?} vs {w:?}"),
        }
    }
}

/// More guests in flight on one link than the host has pooled instances: those past the pool
/// wait for an instance instead of failing.
#[test]
fn more_guests_in_flight_than_pooled_instances_all_finish() {
    let s = server(&["budget-ms", "1000"]);
    load_rmat(&s, 8, 4, 3);
    load(&s, "khop_wasm");
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    let n = 3 * autoloc_functions::wasm::POOL_SLOTS as usize;
    let calls: Vec<(&str, Vec<String>)> = (0..n)
        .map(|i| ("khop_wasm", vec![(i % 256).to_string(), "2".into()]))
        .collect();
    let native: Vec<(&str, Vec<String>)> = (0..n)
        .map(|i| ("khop", vec![(i % 256).to_string(), "2".into()]))
        .collect();
    let got = rt.invoke_many(&calls, Placement::Compute);
    let want = rt.invoke_many(&native, Placement::Compute);
    let mut ok = 0;
    for (g, w) in got.into_iter().zip(want) {
        match (g, w) {
            (Ok(g), Ok(w)) => {
                assert_eq!(g.output, w.output);
                ok += 1;
            }
            (Err(g), Err(w)) => assert_eq!(g.code(), w.code()),
            (g, w) => panic!("{g:?} vs {w:?}"),
        }
    }
    assert!(ok > n / 2, "{ok} of {n} calls succeeded");
}

/// The host decodes vertices for a guest (the `neighbours` import): a value that is no vertex
/// and a key of another type fail the guest as they fail its twin, and so does a missing start
/// that the guest's own code finds (ABI status 3): the same code, the key named, on both sides
/// and over shm and RESP.
#[test]
fn a_guest_reaching_what_is_no_vertex_fails_like_its_twin() {
    let s = server(&[]);
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"1", br#"{"neigh": ["2", "3"]}"#]);
    cmd(&mut c, &[b"SET", b"2", b"not a vertex"]);
    cmd(&mut c, &[b"SET", b"10", br#"{"neigh": ["11"]}"#]);
    cmd(&mut c, &[b"RPUSH", b"11", b"x"]);
    load(&s, "khop_wasm");
    for t in [Transport::Shm, Transport::Resp] {
        let mut rt = runtime(&s).with_transport(t).unwrap();
        for p in [Placement::Storage, Placement::Compute] {
            for (start, code, names) in [
                ("1", "BADVALUE", "'2'"),
                ("10", "WRONGTYPE", "'11'"),
                // Found by the guest's own code (the built-in's, compiled in): status 3.
                ("99", "NOKEY", "'99'"),
            ] {
                let args = [start.to_string(), "2".to_string()];
                let native = rt.invoke("khop", &args, p).unwrap_err();
                let guest = rt.invoke("khop_wasm", &args, p).unwrap_err();
                let what = format!("khop_wasm {start} 2 {p} over {t}: {guest}");
                assert_eq!(guest.code(), native.code(), "{what}");
                assert_eq!(guest.code().to_string(), code, "{what}");
                assert!(guest.to_string().contains(names), "{what}");
            }
        }
    }
}

#[test]
fn guests_match_their_twins_on_autolocs_social_json() {
    let dir = autoloc_data();
    let s = server(&["budget-ms", "1000"]);
    load_autoloc_json(&mut raw(&s), &dir.join("social.json"), false, false).unwrap();
    for g in [
        "khop_wasm",
        "digest_wasm",
        "pagerank_wasm",
        "aggregate_wasm",
        "get_wasm",
    ] {
        load(&s, g);
    }
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    for start in [1, 107] {
        check_twins(&mut rt, start, "social.json");
    }
}

#[test]
fn friend_recommendations_rank_two_hop_vertices_by_common_neighbours() {
    let s = server(&[]);
    let mut c = raw(&s);
    // 1 -> 2, 3; 2 -> 4, 5; 3 -> 4, 1. Vertex 4 is reached through 2 and 3, vertex 5 through 2.
    for (v, n) in [(1u32, vec![2u32, 3]), (2, vec![4, 5]), (3, vec![4, 1])] {
        cmd(
            &mut c,
            &[
                b"SET",
                v.to_string().as_bytes(),
                &autoloc_functions::graph::encode_adjacency(&n),
            ],
        );
    }
    load(&s, "friends_wasm");
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    for p in [Placement::Storage, Placement::Compute] {
        let top1 = rt.invoke("friends_wasm", &["1", "1"], p).unwrap();
        assert_eq!(scores(&top1.output), vec![(4, 2.0)], "{p}");
        let top2 = rt.invoke("friends_wasm", &["1", "5"], p).unwrap();
        assert_eq!(scores(&top2.output), vec![(4, 2.0), (5, 1.0)], "{p}");
    }
}

#[test]
fn load_list_dump_delete_and_replace_behave_like_function() {
    let s = server(&[]);
    let mut c = raw(&s);
    let khop = guests::bytes("khop_wasm").unwrap();
    // A bad module changes nothing.
    for bad in [
        b"not wasm at all".to_vec(),
        guests::bytes("badimport_wasm").unwrap(),
    ] {
        let e = err(cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"LOAD", &bad]));
        assert!(e.starts_with("GUEST"), "{e}");
    }
    let big = {
        // A valid module header and a 50 MB custom section.
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let body_len: u32 = 50 << 20;
        m.push(0);
        let mut n = body_len + 2;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            m.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        }
        m.extend_from_slice(&[1, b'x']);
        m.resize(m.len() + body_len as usize, 0);
        m
    };
    let e = err(cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"LOAD", &big]));
    assert!(e.starts_with("TOOLARGE"), "{e}");
    let listed =
        |c: &mut autoloc_dataplane::Connection| match cmd(c, &[b"AUTOLOC.FUNCTION", b"LIST"]) {
            Frame::Array(Some(rows)) => rows.len(),
            other => panic!("{other:?}"),
        };
    let builtins = autoloc_functions::Registry::builtin().len();
    assert_eq!(listed(&mut c), builtins, "only the built-ins");
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"LOAD", &khop]),
        Frame::Bulk(Some(b"khop_wasm".to_vec()))
    );
    assert_eq!(listed(&mut c), builtins + 1);
    // CHECK: whether a copy's version is the one loaded (how a compute node asks over RESP).
    let Frame::Array(Some(rows)) = cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"LIST"]) else {
        panic!("LIST")
    };
    let version = rows
        .iter()
        .find_map(|row| match row {
            Frame::Array(Some(f)) if f[0] == Frame::Bulk(Some(b"khop_wasm".to_vec())) => {
                match &f[3] {
                    Frame::Bulk(Some(v)) => Some(v[..16].to_vec()),
                    _ => None,
                }
            }
            _ => None,
        })
        .expect("khop_wasm listed with its version");
    let check = |c: &mut autoloc_dataplane::Connection, name: &[u8], v: &[u8]| {
        cmd(c, &[b"AUTOLOC.FUNCTION", b"CHECK", name, v])
    };
    assert_eq!(
        check(&mut c, b"khop_wasm", &version),
        Frame::Simple("OK".into())
    );
    assert!(err(check(&mut c, b"khop_wasm", b"00000000")).starts_with("STALE"));
    let unknown = err(check(&mut c, b"no_such", &version));
    assert!(unknown.contains("unknown function"), "{unknown}");
    let again = err(cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"LOAD", &khop]));
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DUMP", b"khop_wasm"]),
        Frame::Bulk(Some(khop.clone()))
    );
    let builtin = err(cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DELETE", b"khop"]));
    assert!(builtin.contains("built-in"), "{builtin}");
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DELETE", b"khop_wasm"]),
        Frame::Simple("OK".into())
    );
    assert_eq!(listed(&mut c), builtins);
    let gone = err(cmd(&mut c, &[b"AUTOLOC.CALL", b"khop_wasm", b"1", b"2"]));
    assert!(gone.contains("unknown function"), "{gone}");
}

#[test]
fn a_replaced_function_is_fetched_again_never_run_stale() {
    let s = server(&[]);
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"k", b"v"]);
    // Two different modules under one name: get_wasm, then a build of writer_wasm renamed? No:
    // the same name needs two versions, so REPLACE get_wasm with itself plus a custom section
    // (another content hash, the same code), and check the caller's copy is refreshed.
    let v1 = guests::bytes("get_wasm").unwrap();
    let mut v2 = v1.clone();
    v2.extend_from_slice(&[0, 4, 3, b'v', b'e', b'r']);
    load(&s, "get_wasm");
    let mut rt = runtime(&s).with_transport(Transport::Shm).unwrap();
    for p in [Placement::Storage, Placement::Compute] {
        rt.invoke("get_wasm", &["k"], p).unwrap();
    }
    let v1_hash = rt
        .registry()
        .lookup("get_wasm")
        .unwrap()
        .1
        .version()
        .unwrap();
    runtime(&s).load_function(&v2, true).unwrap();
    for p in [Placement::Compute, Placement::Storage] {
        let inv = rt.invoke("get_wasm", &["k"], p).unwrap();
        assert_eq!(inv.output, autoloc::Output::Value(Some(b"v".to_vec())));
        let now = rt
            .registry()
            .lookup("get_wasm")
            .unwrap()
            .1
            .version()
            .unwrap();
        assert_ne!(now, v1_hash, "{p}: the copy was fetched again");
    }
    // Deleted: a call of the old copy fails instead of running it.
    runtime(&s).delete_function("get_wasm").unwrap_or(());
    cmd(&mut c, &[b"AUTOLOC.FUNCTION", b"DELETE", b"get_wasm"]);
    let mut rt2 = runtime(&s).with_transport(Transport::Shm).unwrap();
    let e = rt2
        .invoke("get_wasm", &["k"], Placement::Compute)
        .unwrap_err();
    assert!(e.to_string().contains("unknown function"), "{e}");
    let e = rt
        .invoke("get_wasm", &["k"], Placement::Compute)
        .unwrap_err();
    assert!(e.to_string().contains("unknown function"), "{e}");
}

#[test]
fn loaded_functions_survive_a_restart_and_reach_replicas() {
    // In the RDB.
    let mut s = server(&[]);
    let mut c = raw(&s);
    cmd(&mut c, &[b"SET", b"k", b"v"]);
    load(&s, "get_wasm");
    assert_eq!(cmd(&mut c, &[b"SAVE"]), Frame::Simple("OK".into()));
    s.restart().unwrap();
    let mut c = raw(&s);
    assert_eq!(
        cmd(&mut c, &[b"AUTOLOC.CALL", b"get_wasm", b"k"]),
        Frame::Bulk(Some(b"v".to_vec()))
    );
    // In the AOF, as the LOAD command itself, and in its RDB preamble after a rewrite.
    let module = autoloc::server::find_module().unwrap();
    let mut a =
        autoloc::server::RedisServer::start_with(&module, &[], &[("appendonly", "yes")]).unwrap();
    let mut ac = raw(&a);
    small_graph(&mut ac);
    load(&a, "khop_wasm");
    a.restart().unwrap();
    let mut ac = raw(&a);
    match cmd(&mut ac, &[b"AUTOLOC.CALL", b"khop_wasm", b"10", b"1"]) {
        Frame::Array(Some(ids)) => assert_eq!(ids.len(), 3),
        other => panic!("{other:?}"),
    }
    cmd(&mut ac, &[b"BGREWRITEAOF"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !matches!(cmd(&mut ac, &[b"INFO", b"persistence"]), Frame::Bulk(Some(i)) if String::from_utf8_lossy(&i).contains("aof_rewrite_in_progress:0") && String::from_utf8_lossy(&i).contains("aof_rewrite_scheduled:0"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rewrite never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    a.restart().unwrap();
    let mut ac = raw(&a);
    match cmd(&mut ac, &[b"AUTOLOC.CALL", b"khop_wasm", b"10", b"1"]) {
        Frame::Array(Some(ids)) => assert_eq!(ids.len(), 3),
        other => panic!("after a rewrite: {other:?}"),
    }
    // A replica gets them with its full sync, and later loads through the replication stream.
    let r = server(&[]);
    let mut rc = raw(&r);
    let port = s.port().to_string();
    cmd(
        &mut c,
        &[b"CONFIG", b"SET", b"repl-diskless-sync-delay", b"0"],
    );
    cmd(&mut rc, &[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let has = |rc: &mut autoloc_dataplane::Connection, name: &[u8]| {
        matches!(
            cmd(rc, &[b"AUTOLOC.FUNCTION", b"DUMP", name]),
            Frame::Bulk(Some(_))
        )
    };
    while !has(&mut rc, b"get_wasm") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never got get_wasm: {}",
            r.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = err(cmd(
        &mut rc,
        &[
            b"AUTOLOC.FUNCTION",
            b"LOAD",
            &guests::bytes("empty_wasm").unwrap(),
        ],
    ));
    assert!(e.starts_with("READONLY"), "{e}");
    load(&s, "digest_wasm");
    while !has(&mut rc, b"digest_wasm") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never got digest_wasm"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
