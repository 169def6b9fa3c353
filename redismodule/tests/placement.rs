//! Functions give identical results storage-side and compute-side, and khop matches an
//! independent BFS, on generated graphs and on AutoLoc's social.json.

mod common;

use std::collections::HashMap;

use autoloc::batch::{run, BatchConfig};
use autoloc::load::load_autoloc_json;
use autoloc::{Output, Placement, ReadMode, Side};
use common::*;

#[test]
fn khop_matches_bfs_on_both_sides_on_rmat() {
    // A generous budget: this test asserts where invocations ran, in debug builds too.
    let s = server(&["budget-ms", "500"]);
    let g = load_rmat(&s, 10, 8, 42);
    let adj = adjacency(&g);
    let mut rt = runtime(&s);
    let mut per_key = runtime(&s).with_read_mode(ReadMode::PerKey);
    for start in (0..1024u32).step_by(37) {
        for k in 1..=3u32 {
            let args = [start.to_string(), k.to_string()];
            let expect = Output::Ids(bfs(&adj, start, k));
            let st = rt.invoke("khop", &args, Placement::Storage).unwrap();
            assert_eq!(st.side, Side::Storage);
            assert_eq!(st.output, expect, "storage khop {start} {k}");
            let cp = rt.invoke("khop", &args, Placement::Compute).unwrap();
            assert_eq!(cp.output, expect, "compute khop {start} {k}");
            assert!(
                cp.round_trips <= u64::from(k),
                "one round trip per level at most"
            );
            assert_eq!(
                per_key
                    .invoke("khop", &args, Placement::Compute)
                    .unwrap()
                    .output,
                expect
            );
        }
    }
}

#[test]
fn every_function_agrees_across_placements() {
    let s = server(&[]);
    load_rmat(&s, 9, 8, 3);
    let mut rt = runtime(&s);
    let calls: &[&[&str]] = &[
        &["pagerank", "3", "20"],
        &["pagerank", "100", "50"],
        &["digest", "md5", "3"],
        &["digest", "7", "100"],
        &["aggregate", "0", "512"],
        &["aggregate", "keys", "n:1", "n:2", "nokey"],
        &["get", "n:5"],
        &["get", "missing"],
    ];
    for call in calls {
        let st = rt.invoke(call[0], &call[1..], Placement::Storage).unwrap();
        let cp = rt.invoke(call[0], &call[1..], Placement::Compute).unwrap();
        assert_eq!(st.output, cp.output, "{call:?}");
        assert_eq!(st.output.canonical_hash(), cp.output.canonical_hash());
    }
    // aggregate over all vertices sums the degrees: the number of arcs.
    let Output::Sum { sum, keys } = rt
        .invoke("aggregate", &["0", "512"], Placement::Storage)
        .unwrap()
        .output
    else {
        panic!()
    };
    assert_eq!(keys, 512);
    let g = autoloc::load::Graph::rmat(9, 8, 3).unwrap();
    assert_eq!(sum as usize, g.arcs());
}

#[test]
fn batch_checksums_agree_and_count_errors() {
    let s = server(&["budget-ms", "500"]);
    load_rmat(&s, 9, 8, 5);
    let rt = runtime(&s);
    let mut cfg = BatchConfig {
        function: "khop".into(),
        rounds: 2,
        count: 600, // vertices 512..=600 do not exist: 89 errors per round
        placement: Placement::Storage,
        read_mode: ReadMode::Batched,
        threads: 2,
        in_flight: 1,
        cores: Vec::new(),
        first: None,
        first_modulo: None,
        args: vec!["2".into()],
    };
    let storage = run(&rt, &cfg).unwrap();
    cfg.placement = Placement::Compute;
    let compute = run(&rt, &cfg).unwrap();
    cfg.read_mode = ReadMode::PerKey;
    let baseline = run(&rt, &cfg).unwrap();
    for r in [&storage, &compute, &baseline] {
        assert_eq!(r.invocations, 1200);
        assert_eq!(r.errors, 2 * 89, "{r:?}");
        assert!(
            r.first_error.as_deref().unwrap().contains("NOKEY")
                || r.first_error.as_deref().unwrap().contains("no such key")
        );
        assert!(
            r.latency_us.p50 > 0.0
                && r.latency_us.p50 <= r.latency_us.p99
                && r.latency_us.p99 <= r.latency_us.p999
        );
    }
    assert_eq!(storage.results_checksum, compute.results_checksum);
    assert_eq!(storage.results_checksum, baseline.results_checksum);
    assert_eq!(storage.storage_side, 1200 - 178);
    assert!(
        baseline.round_trips > compute.round_trips,
        "redisclient reads key by key"
    );
}

fn social_adjacency(path: &std::path::Path) -> HashMap<u32, Vec<u32>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(id, e)| {
            let n = e["neigh"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().parse().unwrap())
                .collect();
            (id.parse().unwrap(), n)
        })
        .collect()
}

#[test]
fn khop_on_autoloc_social_json_in_both_layouts() {
    // AutoLoc's original data set, data/autoloc/social.json.
    let dir = autoloc_data();
    let path = dir.join("social.json");
    let adj = social_adjacency(&path);
    for binary in [false, true] {
        let s = server(&["budget-ms", "500"]);
        let report = load_autoloc_json(&mut raw(&s), &path, binary, false).unwrap();
        assert_eq!(report.vertices, 4035);
        let mut rt = runtime(&s);
        for start in [0u32, 1, 107, 348, 414, 1684, 4030] {
            assert!(adj.contains_key(&start));
            for k in 1..=2 {
                let args = [start.to_string(), k.to_string()];
                let expect = Output::Ids(common::bfs(&adj, start, k));
                assert_eq!(
                    rt.invoke("khop", &args, Placement::Storage).unwrap().output,
                    expect
                );
                assert_eq!(
                    rt.invoke("khop", &args, Placement::Compute).unwrap().output,
                    expect
                );
            }
        }
        // AutoLoc's `batch khop 1 1000`: vertex 686 has no entry, so exactly one invocation fails.
        let cfg = BatchConfig {
            function: "khop".into(),
            rounds: 1,
            count: 1000,
            placement: Placement::Storage,
            read_mode: ReadMode::Batched,
            threads: 1,
            in_flight: 1,
            cores: Vec::new(),
            first: None,
            first_modulo: None,
            args: vec!["2".into()],
        };
        let r = run(&rt, &cfg).unwrap();
        assert_eq!(r.errors, 1, "{r:?}");
        assert!(r.first_error.unwrap().contains("686"));
        // The dangling neighbours are reached and counted, with no neighbours of their own.
        let mut dangling: Vec<u32> = adj
            .values()
            .flatten()
            .copied()
            .filter(|v| !adj.contains_key(v))
            .collect();
        assert_eq!(dangling.len(), 6, "six dangling edges");
        dangling.sort_unstable();
        dangling.dedup();
        assert_eq!(dangling, vec![1912, 3437, 3980]);
        for v in dangling {
            let holder = adj
                .iter()
                .find(|(_, n)| n.contains(&v))
                .map(|(h, _)| *h)
                .unwrap();
            let Output::Ids(ids) = rt
                .invoke(
                    "khop",
                    &[holder.to_string(), "1".into()],
                    Placement::Storage,
                )
                .unwrap()
                .output
            else {
                panic!()
            };
            assert!(ids.contains(&v));
        }
    }
}
