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

use std::time::Duration;

use autoloc::{Placement, ReadMode, Runtime, Transport};
use autoloc_dataplane::Connection;
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

/// Sends one command: to one server, or to the node of a cluster serving its key.
type Send<'a> = dyn FnMut(&[&[u8]]) -> autoloc_dataplane::Frame + 'a;

/// Salts the keyspace through `c`: returns the keys it spoiled, by kind, for the report.
fn salt(c: &mut Send<'_>, vertices: u32, rng: &mut SmallRng) -> usize {
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
            0 => vec![c(&[b"DEL", k]), c(&[b"HSET", k, b"field", b"value"])],
            1 => vec![c(&[b"DEL", k]), c(&[b"RPUSH", k, b"item"])],
            2 => vec![c(&[b"SET", k, b"hello, not a vertex"])],
            3 => vec![c(&[b"SET", k, br#"{"feature": [], "neigh": ["7", "x"]}"#])],
            4 => vec![c(&[b"SET", k, b""])],
            // A JSON vertex with a dangling neighbour (no key of its own): valid.
            5 => vec![c(&[b"SET", k, br#"{"neigh": ["3", 4000000]}"#])],
            _ => vec![c(&[b"SET", k, b"ALG1\x02\x00\x00\x00\x01\x00"])],
        };
        for r in replies {
            assert!(!matches!(r, autoloc_dataplane::Frame::Error(_)), "{r:?}");
        }
        // aggregate's values: non-numeric, missing, or of another type.
        match rng.gen_range(0..4) {
            0 => drop(c(&[b"SET", n.as_bytes(), b"twelve"])),
            1 => drop(c(&[b"DEL", n.as_bytes()])),
            2 => {
                c(&[b"DEL", n.as_bytes()]);
                c(&[b"SADD", n.as_bytes(), b"1"]);
            }
            _ => {}
        }
    }
    spoiled
}

/// The hub: `HUB_DEGREE` neighbours, each pointing back at the hub and at one of a few
/// salted vertices.
fn add_hub(c: &mut Send<'_>) {
    let ids: Vec<u32> = (HUB_FIRST..HUB_FIRST + HUB_DEGREE).collect();
    let hub = autoloc_functions::graph::encode_adjacency(&ids);
    c(&[b"SET", HUB.to_string().as_bytes(), &hub]);
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
        c(&args);
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
        let mut send = |args: &[&[u8]]| cmd(&mut c, args);
        let spoiled = salt(&mut send, vertices, &mut rng);
        assert!(spoiled > 5, "the salt must spoil some keys");
        add_hub(&mut send);
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

/// A sender that routes each command by its first key to the master serving it, as
/// `redis-cli -c` would; an `MSET` is sent as one `SET` per key.
fn cluster_sender(url: &str) -> impl FnMut(&[&[u8]]) -> autoloc_dataplane::Frame {
    let rt = Runtime::connect(url).unwrap();
    let topology = rt.topology().expect("a cluster").clone();
    let mut conns: Vec<Connection> = topology
        .shards
        .iter()
        .map(|s| raw_port(s.master.rsplit_once(':').unwrap().1.parse().unwrap()))
        .collect();
    move |args: &[&[u8]]| {
        if args[0] == b"MSET" {
            let mut last = autoloc_dataplane::Frame::Simple("OK".into());
            for pair in args[1..].chunks(2) {
                let shard = topology.shard_of(pair[0]).unwrap();
                last = cmd(&mut conns[shard], &[b"SET", pair[0], pair[1]]);
            }
            return last;
        }
        let shard = topology.shard_of(args[1]).unwrap();
        cmd(&mut conns[shard], args)
    }
}

/// The same graph, salt and hub on one server and on a cluster of 3 shards: every built-in (and
/// its example guest, on every eighth call) on both sides and every transport of the cluster
/// gives the single node's outcome, bad values included.
#[test]
fn a_cluster_gives_the_single_nodes_outcome() {
    let seed = 3u64;
    let single = server(&[]);
    let cluster = cluster3();
    let g = load_rmat(&single, 9, 8, seed);
    let vertices = g.adjacency.len() as u32;
    {
        let url = cluster.url().parse().unwrap();
        let mut c = Connection::connect(&url, Duration::from_secs(30)).unwrap();
        autoloc::load::write_graph(&mut c, &g, seed, false).unwrap();
    }
    let mut one = raw(&single);
    let mut to_one = |args: &[&[u8]]| cmd(&mut one, args);
    let mut to_cluster = cluster_sender(&cluster.url());
    for send in [
        &mut to_one as &mut Send<'_>,
        &mut to_cluster as &mut Send<'_>,
    ] {
        let mut rng = SmallRng::seed_from_u64(seed);
        assert!(salt(send, vertices, &mut rng) > 5);
        add_hub(send);
    }
    let mut reference = runtime(&single);
    let mut runs = runners(&cluster.url());
    // And storage-side runs forwarded from shard to shard, rather than finished here.
    let forward = Runtime::connect(&cluster.url())
        .unwrap()
        .with_transport(Transport::Shm)
        .unwrap()
        .with_other_shard(autoloc::OtherShard::Forward);
    runs.push(("storage/shm forwarded".into(), forward, Placement::Storage));
    for name in ["khop", "digest", "pagerank", "aggregate", "get"] {
        let wasm = autoloc::guests::bytes(&format!("{name}_wasm")).unwrap();
        reference.load_function(&wasm, false).unwrap();
        runs[0].1.load_function(&wasm, false).unwrap();
    }
    let outcome = |r: autoloc::Result<autoloc::Invocation>, what: &str| -> Outcome {
        match r {
            Ok(inv) => Ok(inv.output),
            Err(autoloc::Error::Function(e)) => Err(e.code()),
            Err(e) => panic!("{what}: not a function error: {e}"),
        }
    };
    let mut rng = SmallRng::seed_from_u64(seed + 100);
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut calls = invocations(vertices, &mut rng);
    // Keys that exist on no shard.
    let missing = (vertices + 1_000).to_string();
    for function in ["khop", "pagerank", "digest"] {
        let n = if function == "khop" { "2" } else { "3" };
        calls.push((function, vec![missing.clone(), n.into()]));
    }
    for (i, (function, args)) in calls.into_iter().enumerate() {
        let want = outcome(
            reference.invoke(function, &args, Placement::Storage),
            "one node",
        );
        let mut names = vec![function.to_string()];
        if i % 8 == 0 {
            names.push(format!("{function}_wasm"));
        }
        for f in &names {
            for (name, rt, placement) in runs.iter_mut() {
                let got = outcome(rt.invoke(f, &args, *placement), name);
                assert_eq!(
                    got, want,
                    "{f} {args:?}: cluster {name} differs from one node"
                );
            }
        }
        let label = match &want {
            Ok(_) => "ok".to_string(),
            Err(code) => code.to_string(),
        };
        *codes.entry(label).or_default() += 1;
    }
    for want in ["ok", "NOKEY", "WRONGTYPE", "BADVALUE"] {
        let n = codes.get(want).copied().unwrap_or(0);
        assert!(n > 0, "no {want} outcome: {codes:?}");
    }
    eprintln!("a cluster of 3 against one node, outcomes compared: {codes:?}");
}
