//! Helpers shared by the module's integration tests.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;

use autoloc::load::{write_graph, Graph};
use autoloc::server::RedisServer;
use autoloc::{Output, Runtime, Transport};
use autoloc_dataplane::{Connection, Frame};
use autoloc_functions::graph::encode_adjacency;

/// Whether the tests also run over rdma: the module has the `rdma` feature and
/// `AUTOLOC_RDMA_DEVICE` names a device (ci/rxe-vm sets it in its VM). The client side needs the
/// `autoloc/rdma` feature too (`cargo test -p autoloc-redismodule --features rdma,autoloc/rdma`):
/// without it, asking for rdma fails the test, as it should.
pub fn rdma_configured() -> bool {
    cfg!(feature = "rdma") && std::env::var_os("AUTOLOC_RDMA_DEVICE").is_some_and(|d| !d.is_empty())
}

/// The ring transports: shm and tcp, and rdma where [`rdma_configured`].
pub fn fast_transports() -> Vec<Transport> {
    let mut t = vec![Transport::Shm, Transport::Tcp];
    if rdma_configured() {
        t.push(Transport::Rdma);
    }
    t
}

/// Every transport: the ring ones ([`fast_transports`]) and RESP.
pub fn all_transports() -> Vec<Transport> {
    let mut t = fast_transports();
    t.push(Transport::Resp);
    t
}

/// A private server with the module (built by this test run) and `module_args`.
pub fn server(module_args: &[&str]) -> RedisServer {
    RedisServer::start(module_args).expect("start redis-server with the AutoLoc module")
}

/// A raw RESP connection to `s`.
pub fn raw(s: &RedisServer) -> Connection {
    Connection::connect(
        &s.url().parse().unwrap(),
        std::time::Duration::from_secs(30),
    )
    .unwrap()
}

/// A runtime connected to `s`.
pub fn runtime(s: &RedisServer) -> Runtime {
    Runtime::connect(&s.url()).unwrap()
}

/// Loads an R-MAT graph into `s` and returns it.
pub fn load_rmat(s: &RedisServer, scale: u32, edge_factor: u32, seed: u64) -> Graph {
    let g = Graph::rmat(scale, edge_factor, seed).unwrap();
    write_graph(&mut raw(s), &g, seed, false).unwrap();
    g
}

/// An independent breadth-first search: vertices at distance 1..=k from `start`, sorted.
pub fn bfs(adj: &HashMap<u32, Vec<u32>>, start: u32, k: u32) -> Vec<u32> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([(start, 0)]);
    while let Some((v, d)) = queue.pop_front() {
        if d == k {
            continue;
        }
        for &n in adj.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(n) {
                queue.push_back((n, d + 1));
            }
        }
    }
    seen.remove(&start);
    seen.into_iter().collect()
}

/// The adjacency of a generated graph as a map.
pub fn adjacency(g: &Graph) -> HashMap<u32, Vec<u32>> {
    g.adjacency
        .iter()
        .enumerate()
        .map(|(v, a)| (v as u32, a.clone()))
        .collect()
}

/// AutoLoc's original data set, carried by the repository (`data/autoloc`).
pub fn autoloc_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/autoloc")
}

/// Sends one command with raw byte arguments.
pub fn cmd(c: &mut Connection, args: &[&[u8]]) -> Frame {
    c.call(args).unwrap()
}

/// The error text of a reply, or panics.
pub fn err(f: Frame) -> String {
    match f {
        Frame::Error(e) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Vertex 10 -> 11, 12, 20; each of those -> 10.
pub fn small_graph(c: &mut Connection) {
    for (v, n) in [
        (10u32, vec![11u32, 12, 20]),
        (11, vec![10]),
        (12, vec![10]),
        (20, vec![10]),
    ] {
        c.call(&[
            b"SET".as_slice(),
            v.to_string().as_bytes(),
            &encode_adjacency(&n),
        ])
        .unwrap();
    }
}

pub fn scores(o: &Output) -> Vec<(u32, f64)> {
    match o {
        Output::Scores(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

/// A private cluster of 3 masters with 1 replica each, the module on every node.
pub fn cluster3() -> autoloc::server::cluster::RedisCluster {
    autoloc::server::cluster::RedisCluster::start(3, 1, &[]).expect("start a 3-shard cluster")
}

/// A raw RESP connection to the node on `port` of loopback.
pub fn raw_port(port: u16) -> Connection {
    autoloc::server::cluster::connect(port).unwrap()
}

/// Loads AutoLoc's social.json (binary adjacency) through a connection to `url`.
pub fn load_social(url: &str) {
    let mut c =
        Connection::connect(&url.parse().unwrap(), std::time::Duration::from_secs(30)).unwrap();
    autoloc::load::load_autoloc_json(&mut c, &autoloc_data().join("social.json"), true, false)
        .unwrap();
}

/// The port of the master serving `key`, and one that does not.
pub fn owner_and_other(rt: &autoloc::Runtime, key: &[u8]) -> (String, String) {
    let t = rt.topology().expect("a cluster");
    let owner = t.shard_of(key).unwrap();
    let other = (owner + 1) % t.shards.len();
    (
        t.shards[owner].master.clone(),
        t.shards[other].master.clone(),
    )
}
