//! The built-in functions against an in-memory store, checked against independent computations.

use std::collections::{BTreeSet, VecDeque};

use autoloc_functions::exec::block_on;
use autoloc_functions::graph::{encode_adjacency, vertex_key};
use autoloc_functions::{Error, MemStore, Output, Registry};

fn call(store: &MemStore, args: &[&str]) -> Result<Output, Error> {
    let registry = Registry::builtin();
    let (_, f) = registry.resolve(args[0].as_bytes())?;
    let args: Vec<Vec<u8>> = args[1..].iter().map(|a| a.as_bytes().to_vec()).collect();
    block_on(f.call(store, &args))
}

/// A small undirected graph: 0-1, 0-2, 1-3, 3-4, 4-5, and 2 lists a dangling neighbour 99.
fn graph() -> (MemStore, Vec<Vec<u32>>) {
    let adj = vec![
        vec![1, 2],
        vec![0, 3],
        vec![0, 99],
        vec![1, 4],
        vec![3, 5],
        vec![4],
    ];
    let store = MemStore::new();
    for (v, n) in adj.iter().enumerate() {
        store.insert(vertex_key(v as u32), encode_adjacency(n));
    }
    (store, adj)
}

fn bfs(adj: &[Vec<u32>], start: u32, k: u32) -> Vec<u32> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([(start, 0)]);
    while let Some((v, d)) = queue.pop_front() {
        if d == k {
            continue;
        }
        for &n in adj.get(v as usize).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(n) {
                queue.push_back((n, d + 1));
            }
        }
    }
    seen.remove(&start);
    seen.into_iter().collect()
}

#[test]
fn khop_matches_bfs_and_counts_dangling_vertices() {
    let (store, adj) = graph();
    for start in 0..6 {
        for k in 1..5 {
            let got = call(&store, &["khop", &start.to_string(), &k.to_string()]).unwrap();
            assert_eq!(got, Output::Ids(bfs(&adj, start, k)), "start {start} k {k}");
        }
    }
    assert_eq!(
        call(&store, &["khop", "0", "1"]).unwrap(),
        Output::Ids(vec![1, 2])
    );
    assert_eq!(
        call(&store, &["khop", "0", "2"]).unwrap(),
        Output::Ids(vec![1, 2, 3, 99])
    );
}

#[test]
fn khop_bad_input() {
    let (store, _) = graph();
    assert!(matches!(call(&store, &["khop", "7", "2"]), Err(Error::NoKey(k)) if k == "7"));
    assert!(matches!(
        call(&store, &["khop", "1"]),
        Err(Error::Arity { .. })
    ));
    assert!(matches!(
        call(&store, &["khop", "1", "2", "3"]),
        Err(Error::Arity { .. })
    ));
    assert!(matches!(
        call(&store, &["khop", "-1", "2"]),
        Err(Error::BadArgument { .. })
    ));
    assert!(matches!(
        call(&store, &["khop", "1", "0"]),
        Err(Error::BadArgument { .. })
    ));
    assert!(matches!(
        call(&store, &["khop", "1", "17"]),
        Err(Error::BadArgument { .. })
    ));
    assert!(matches!(
        call(&store, &["khop", "x", "2"]),
        Err(Error::BadArgument { .. })
    ));
    assert!(matches!(
        call(&store, &["nope", "1"]),
        Err(Error::UnknownFunction(_))
    ));
    store.insert("8", "junk");
    assert!(matches!(
        call(&store, &["khop", "8", "1"]),
        Err(Error::BadValue { .. })
    ));
}

#[test]
fn digest_iterates_md5() {
    let store = MemStore::new();
    store.insert("blob", "abc");
    // md5("abc") = 900150983cd24fb0d6963f7d28e17f72
    assert_eq!(
        call(&store, &["digest", "blob", "1"]).unwrap(),
        Output::Text("900150983cd24fb0d6963f7d28e17f72".into())
    );
    let two = call(&store, &["digest", "blob", "2"]).unwrap();
    assert_ne!(two, call(&store, &["digest", "blob", "1"]).unwrap());
    assert!(matches!(
        call(&store, &["digest", "none", "1"]),
        Err(Error::NoKey(_))
    ));
    assert!(matches!(
        call(&store, &["digest", "blob", "0"]),
        Err(Error::BadArgument { .. })
    ));
}

#[test]
fn pagerank_over_one_hop_subgraph() {
    let (store, _) = graph();
    // Subgraph of 0: {0, 1, 2}; edges 0->1, 0->2, 1->0, 2->0 (99 is outside).
    let Output::Scores(s) = call(&store, &["pagerank", "0", "100"]).unwrap() else {
        panic!()
    };
    let ids: Vec<u32> = s.iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    let total: f64 = s.iter().map(|p| p.1).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!(s[0].1 > s[1].1);
    assert!((s[1].1 - s[2].1).abs() < 1e-12);
    assert!(matches!(
        call(&store, &["pagerank", "50", "3"]),
        Err(Error::NoKey(_))
    ));
}

#[test]
fn aggregate_sums_existing_numbers() {
    let store = MemStore::new();
    store.insert("n:1", "2");
    store.insert("n:2", "3.5");
    store.insert("x:1", "10");
    assert_eq!(
        call(&store, &["aggregate", "1", "3"]).unwrap(),
        Output::Sum { sum: 5.5, keys: 2 }
    );
    assert_eq!(
        call(&store, &["aggregate", "1", "1", "x:"]).unwrap(),
        Output::Sum { sum: 10.0, keys: 1 }
    );
    assert_eq!(
        call(&store, &["aggregate", "keys", "n:1", "x:1", "zz"]).unwrap(),
        Output::Sum { sum: 12.0, keys: 2 }
    );
    store.insert("n:4", "four");
    assert!(matches!(
        call(&store, &["aggregate", "1", "4"]),
        Err(Error::BadValue { .. })
    ));
    assert!(matches!(
        call(&store, &["aggregate", "keys"]),
        Err(Error::Arity { .. })
    ));
}

#[test]
fn get_returns_value_or_nil() {
    let store = MemStore::new();
    store.insert("k", "v");
    assert_eq!(
        call(&store, &["get", "k"]).unwrap(),
        Output::Value(Some(b"v".to_vec()))
    );
    assert_eq!(call(&store, &["get", "z"]).unwrap(), Output::Value(None));
}

/// A store that serves only the even vertices, as a shard serves only its slots.
struct EvenShard<'a>(&'a MemStore);

impl autoloc_functions::Store for EvenShard<'_> {
    fn read<'a>(
        &'a self,
        keys: &'a [Vec<u8>],
        visit: autoloc_functions::store::Visit<'a>,
    ) -> autoloc_functions::store::StoreFuture<'a, ()> {
        self.0.read(keys, visit)
    }
    fn write<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
    ) -> autoloc_functions::store::StoreFuture<'a, ()> {
        self.0.write(key, value)
    }
    fn checkpoint(&self) -> autoloc_functions::store::StoreFuture<'_, ()> {
        self.0.checkpoint()
    }
    fn serves(&self, key: &[u8]) -> bool {
        std::str::from_utf8(key).is_ok_and(|k| k.parse::<u32>().is_ok_and(|v| v % 2 == 0))
    }
}

#[test]
fn expand_goes_on_where_the_store_serves() {
    use autoloc_functions::Store as _;
    let (store, adj) = graph();
    // One node serves everything: the hop, all of it expanded, and the hop after.
    assert_eq!(
        call(&store, &["expand", "0"]).unwrap(),
        Output::Lists(vec![vec![1, 2], vec![1, 2], vec![0, 3, 99], vec![]])
    );
    // The neighbours of 1 and 3: 0, 1, 3, 4; a shard of the even vertices expands 0 and 4 only.
    let shard = EvenShard(&store);
    assert!(shard.serves(b"4") && !shard.serves(b"1"));
    let registry = Registry::builtin();
    let (_, f) = registry.resolve(b"expand").unwrap();
    let got = block_on(f.call(&shard, &[b"1".to_vec(), b"3".to_vec()])).unwrap();
    assert_eq!(
        got,
        Output::Lists(vec![vec![0, 1, 3, 4], vec![0, 4], vec![1, 2, 3, 5], vec![]])
    );
    // What it cannot read going on (a value that is no vertex) it leaves to the next hop.
    store.insert(vertex_key(3), b"not a vertex".to_vec());
    assert_eq!(
        call(&store, &["expand", "4"]).unwrap(),
        Output::Lists(vec![vec![3, 5], vec![], vec![], vec![]])
    );
    store.insert(vertex_key(3), encode_adjacency(&adj[3]));
    // A missing vertex has no neighbours, and is named; the arguments are checked as
    // neighbours' are.
    assert_eq!(
        call(&store, &["expand", "77", "5"]).unwrap(),
        Output::Lists(vec![vec![4], vec![4], vec![3, 5], vec![77]])
    );
    let e = call(&store, &["expand"]).unwrap_err();
    assert!(e.to_string().contains("expand <vertex>"), "{e:?}");
    let e = call(&store, &["expand", "x"]).unwrap_err();
    assert!(e.to_string().contains("expand"), "{e:?}");
}

#[test]
fn induced_gives_pagerank_s_subgraph_as_far_as_the_store_serves_it() {
    let (store, _) = graph();
    // One node: the start's subgraph (0, 1, 2), all served, each vertex's edges inside it (1's
    // 3 and 2's 99 are outside).
    let whole = vec![vec![0, 1, 2], vec![0, 1, 2], vec![1, 2], vec![0], vec![0]];
    assert_eq!(
        call(&store, &["induced", "0"]).unwrap(),
        Output::Lists(whole.clone())
    );
    // That is all pagerank reads: its scores are the rank of that subgraph.
    let Output::Scores(scores) = call(&store, &["pagerank", "0", "5"]).unwrap() else {
        panic!("pagerank gives scores");
    };
    assert_eq!(
        scores,
        autoloc_functions::builtins::pagerank::rank(vec![0, 1, 2], &whole[2..], 5)
    );
    // A shard of the even vertices: of 1's subgraph (0, 1, 3) it serves 0, whose edge to 1 is
    // inside; given the subgraph, it does not name it again.
    let shard = EvenShard(&store);
    let registry = Registry::builtin();
    let (_, f) = registry.resolve(b"induced").unwrap();
    let args = |a: &[&str]| a.iter().map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(
        block_on(f.call(&shard, &args(&["1"]))).unwrap(),
        Output::Lists(vec![vec![0, 1, 3], vec![0], vec![1]])
    );
    assert_eq!(
        block_on(f.call(&shard, &args(&["1", "0", "3"]))).unwrap(),
        Output::Lists(vec![vec![], vec![0], vec![1]])
    );
    // A vertex without a key is dangling (no edges); a start without one is NOKEY, as
    // pagerank's; the arguments are checked.
    assert_eq!(
        call(&store, &["induced", "77", "5"]).unwrap(),
        Output::Lists(vec![vec![], vec![5, 77], vec![], vec![]])
    );
    assert!(matches!(
        call(&store, &["induced", "77"]),
        Err(Error::NoKey { .. })
    ));
    // Having found the subgraph, a value it cannot read leaves every vertex unserved (to be read
    // again, with its error, in the caller's next round); given the subgraph, it fails.
    store.insert(vertex_key(2), b"not a vertex".to_vec());
    assert_eq!(
        call(&store, &["induced", "0"]).unwrap(),
        Output::Lists(vec![vec![0, 1, 2], vec![]])
    );
    assert!(matches!(
        call(&store, &["induced", "0", "1", "2"]),
        Err(Error::BadValue { .. })
    ));
    let e = call(&store, &["induced"]).unwrap_err();
    assert!(e.to_string().contains("induced <start>"), "{e:?}");
    let e = call(&store, &["induced", "1", "x"]).unwrap_err();
    assert!(e.to_string().contains("induced"), "{e:?}");
}
