//! The differential test: one function, written once, gives the same outcome wherever it runs.
//!
//! Random R-MAT graphs are salted with bad values (keys of another type, bytes that are no
//! vertex, a JSON vertex with a non-numeric neighbour, empty values, dangling ids, non-numeric
//! and missing `n:` values for `aggregate`) and a hub whose BFS frontier is larger than a ring
//! slot. Every built-in then runs storage-side and compute-side over shm, tcp and resp (and
//! compute-side one key per request, as `redisclient` reads): every run must give the same result,
//! or fail with the same error code.

mod common;

use std::collections::BTreeMap;

use autoloc::{Placement, ReadMode, Runtime, Transport};
use autoloc_functions::{ErrorCode, Output};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The hub vertex and its many neighbours (a frontier of `HUB_DEGREE` keys: a `MultiGet` of
/// ~150 KB and a reply of ~300 KB, both over a 64 KiB ring slot).
const HUB: u32 = 900_000;
const HUB_FIRST: u32 = 1_000_000;
const HUB_DEGREE: u32 = 20_000;

type Outcome = Result<Output, ErrorCode>;

/// Every way of running an invocation, by name.
fn runners(url: &str) -> Vec<(String, Runtime, Placement)> {
    let mut out = Vec::new();
    for transport in [Transport::Shm, Transport::Tcp, Transport::Resp] {
        for placement in [Placement::Storage, Placement::Compute] {
            let rt = Runtime::connect(url)
                .unwrap()
                .with_transport(transport)
                .unwrap();
            out.push((format!("{placement}/{transport}"), rt, placement));
        }
    }
    let per_key = Runtime::connect(url)
        .unwrap()
        .with_read_mode(ReadMode::PerKey)
        .with_transport(Transport::Resp)
        .unwrap();
    out.push(("compute/resp per key".into(), per_key, Placement::Compute));
    out
}

/// Salts the keyspace: returns the keys it spoiled, by kind, for the report.
fn salt(c: &mut autoloc_dataplane::Connection, vertices: u32, rng: &mut SmallRng) -> usize {
    let mut spoiled = 0;
    for v in 0..vertices {
        if !rng.gen_bool(0.04) {
            continue;
        }
        let key = v.to_string();
        let n = format!("n:{v}");
        let k = key.as_bytes();
        spoiled += 1;
        let replies = match rng.gen_range(0..7) {
            0 => vec![
                cmd(c, &[b"DEL", k]),
                cmd(c, &[b"HSET", k, b"field", b"value"]),
            ],
            1 => vec![cmd(c, &[b"DEL", k]), cmd(c, &[b"RPUSH", k, b"item"])],
            2 => vec![cmd(c, &[b"SET", k, b"hello, not a vertex"])],
            3 => vec![cmd(
                c,
                &[b"SET", k, br#"{"feature": [], "neigh": ["7", "x"]}"#],
            )],
            4 => vec![cmd(c, &[b"SET", k, b""])],
            // A JSON vertex with a dangling neighbour (no key of its own): valid.
            5 => vec![cmd(c, &[b"SET", k, br#"{"neigh": ["3", 4000000]}"#])],
            _ => vec![cmd(c, &[b"SET", k, b"ALG1\x02\x00\x00\x00\x01\x00"])],
        };
        for r in replies {
            assert!(!matches!(r, autoloc_dataplane::Frame::Error(_)), "{r:?}");
        }
        // aggregate's values: non-numeric, missing, or of another type.
        match rng.gen_range(0..4) {
            0 => drop(cmd(c, &[b"SET", n.as_bytes(), b"twelve"])),
            1 => drop(cmd(c, &[b"DEL", n.as_bytes()])),
            2 => {
                cmd(c, &[b"DEL", n.as_bytes()]);
                cmd(c, &[b"SADD", n.as_bytes(), b"1"]);
            }
            _ => {}
        }
    }
    spoiled
}

/// The hub: `HUB_DEGREE` neighbours, each pointing back at the hub and at one of a few
/// salted vertices.
fn add_hub(c: &mut autoloc_dataplane::Connection) {
    let ids: Vec<u32> = (HUB_FIRST..HUB_FIRST + HUB_DEGREE).collect();
    let hub = autoloc_functions::graph::encode_adjacency(&ids);
    cmd(c, &[b"SET", HUB.to_string().as_bytes(), &hub]);
    for chunk in ids.chunks(512) {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|&v| {
                let back = autoloc_functions::graph::encode_adjacency(&[HUB, v % 512]);
                (v.to_string().into_bytes(), back)
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in &pairs {
            args.extend([k.as_slice(), v.as_slice()]);
        }
        cmd(c, &args);
    }
}

/// The invocations to compare: every built-in, on good and bad keys.
fn invocations(vertices: u32, rng: &mut SmallRng) -> Vec<(&'static str, Vec<String>)> {
    let mut calls = Vec::new();
    for _ in 0..60 {
        let v = rng.gen_range(0..vertices + 5).to_string();
        calls.push(("khop", vec![v.clone(), "2".into()]));
        calls.push(("pagerank", vec![v.clone(), "5".into()]));
        calls.push(("get", vec![v.clone()]));
        calls.push(("digest", vec![v, "2".into()]));
    }
    for _ in 0..10 {
        let v = rng.gen_range(0..vertices).to_string();
        calls.push(("khop", vec![v, "3".into()]));
        let first = rng.gen_range(0..vertices);
        calls.push((
            "aggregate",
            vec![first.to_string(), rng.gen_range(1..200u32).to_string()],
        ));
        let keys: Vec<String> = (0..8)
            .map(|_| format!("n:{}", rng.gen_range(0..vertices + 5)))
            .collect();
        calls.push(("aggregate", [vec!["keys".to_string()], keys].concat()));
    }
    calls.push(("khop", vec![HUB.to_string(), "2".into()]));
    calls.push(("khop", vec![HUB.to_string(), "3".into()]));
    calls.push(("pagerank", vec![HUB.to_string(), "3".into()]));
    calls.push(("digest", vec!["md5".into(), "3".into()]));
    calls.push(("aggregate", vec!["0".into(), "3000".into()]));
    calls
}

#[test]
fn every_side_and_transport_gives_the_same_outcome() {
    let s = server(&[]);
    let mut c = raw(&s);
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for seed in [1u64, 2] {
        cmd(&mut c, &[b"FLUSHALL"]);
        let g = load_rmat(&s, 9, 8, seed);
        let vertices = g.adjacency.len() as u32;
        let mut rng = SmallRng::seed_from_u64(seed);
        let spoiled = salt(&mut c, vertices, &mut rng);
        assert!(spoiled > 5, "the salt must spoil some keys");
        add_hub(&mut c);
        let mut runs = runners(&s.url());
        for (function, args) in invocations(vertices, &mut rng) {
            let mut outcomes: Vec<(String, Outcome)> = Vec::new();
            for (name, rt, placement) in runs.iter_mut() {
                let outcome = match rt.invoke(function, &args, *placement) {
                    Ok(inv) => Ok(inv.output),
                    Err(autoloc::Error::Function(e)) => Err(e.code()),
                    Err(e) => panic!("{name} {function} {args:?}: not a function error: {e}"),
                };
                outcomes.push((name.clone(), outcome));
            }
            let (first_name, first) = &outcomes[0];
            for (name, o) in &outcomes[1..] {
                assert_eq!(
                    o, first,
                    "seed {seed}: {function} {args:?}: {name} differs from {first_name}"
                );
            }
            let label = match first {
                Ok(_) => "ok".to_string(),
                Err(code) => code.to_string(),
            };
            *codes.entry(label).or_default() += 1;
        }
    }
    // The salt must have produced each kind of outcome, or the test compares too little.
    for want in ["ok", "NOKEY", "WRONGTYPE", "BADVALUE"] {
        assert!(
            codes.get(want).copied().unwrap_or(0) > 0,
            "no {want} outcome: {codes:?}"
        );
    }
    eprintln!("outcomes compared: {codes:?}");
}
