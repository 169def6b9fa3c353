//! Loaders: generated R-MAT graphs, SNAP edge lists and AutoLoc's `social.json`.
//!
//! A graph is written as one key per vertex (its decimal id) holding the binary adjacency of
//! `autoloc_functions::graph`, plus `n:<id>` holding its degree (for `aggregate`), plus the
//! `md5` blob (65,536 random `[a-z0-9]`, for `digest`) as AutoLoc had. Writes are pipelined:
//! one MSET of up to 512 keys per round trip. With `progress`, a load of over 20,000 vertices
//! draws a progress bar on stderr under the `cli` feature (without it, loads are silent).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use autoloc_dataplane::{Connection, Frame};
use autoloc_functions::graph::{encode_adjacency, vertex_key};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use autoloc_dataplane::slot::key_slot;

use crate::cluster::Topology;
use crate::Result;

/// Graph500's R-MAT quadrant probabilities (D = 1 - A - B - C = 0.05).
pub const RMAT_ABC: (f64, f64, f64) = (0.57, 0.19, 0.19);
/// Key of the blob `digest` hashes, as in AutoLoc.
pub const BLOB_KEY: &str = "md5";
/// Length of that blob, as in AutoLoc.
pub const BLOB_LEN: usize = 65_536;
/// The largest vertex id a loader accepts (ids index an in-memory table while loading).
pub const MAX_VERTEX: u32 = (1 << 28) - 1;

const MSET_KEYS: usize = 512;

/// Why loading data failed (inside [`crate::Error::Load`], whose message prefixes `load: `).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of an edge list could not be read.
    #[error("line {line}: {source}")]
    ReadLine {
        /// Its number, from 1.
        line: usize,
        /// Why.
        source: std::io::Error,
    },
    /// A line of an edge list has fewer than two vertex ids.
    #[error("line {line}: expected two vertex ids")]
    MissingVertex {
        /// Its number, from 1.
        line: usize,
    },
    /// A token of an edge list is not a vertex id in `0..=`[`MAX_VERTEX`].
    #[error("line {line}: '{token}' is not a vertex id in 0..={MAX_VERTEX}")]
    BadVertex {
        /// Its line's number, from 1.
        line: usize,
        /// The token.
        token: String,
    },
    /// A file that should be JSON is not.
    #[error("{path}: not JSON: {source}")]
    NotJson {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A `social.json` whose top level is not an object of vertices.
    #[error("{path}: expected an object of vertices")]
    NotVertices {
        /// The file.
        path: PathBuf,
    },
    /// A `social.json` key that is not a vertex id.
    #[error("vertex id '{id}' is not a u32")]
    BadVertexId {
        /// The key.
        id: String,
    },
    /// A `social.json` vertex entry that is not an adjacency `autoloc_functions` can read.
    #[error("{source}")]
    BadEntry {
        /// The vertex.
        vertex: u32,
        /// Why its entry does not read.
        source: autoloc_functions::Error,
    },
    /// A parameter outside its range, such as an R-MAT scale over 28.
    #[error("{what} {value} is outside {min}..={max}")]
    OutOfRange {
        /// Which parameter: `scale` or `edge factor`.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The least it may be.
        min: u64,
        /// The most it may be.
        max: u64,
    },
    /// A write could not be sent or its reply not read.
    #[error("MSET: {source}")]
    Write {
        /// Why.
        source: autoloc_dataplane::Error,
    },
    /// The server refused a write (out of memory, `NOPERM`, ...).
    #[error("MSET: {message}")]
    Refused {
        /// The server's error reply, as it sent it.
        message: String,
    },
}

/// Nothing if `value` lies in `range`, else [`LoadError::OutOfRange`] naming it `what`.
fn in_range(what: &'static str, value: u32, range: std::ops::RangeInclusive<u32>) -> Result<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(LoadError::OutOfRange {
            what,
            value: value.into(),
            min: (*range.start()).into(),
            max: (*range.end()).into(),
        }
        .into())
    }
}

/// An adjacency-list graph; vertex ids are indices.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Neighbours of each vertex, sorted and distinct.
    pub adjacency: Vec<Vec<u32>>,
    /// Which ids are vertices (a SNAP file may skip ids).
    pub present: Vec<bool>,
}

impl Graph {
    /// Builds a graph of vertices `0..n` (all present) from `edges`, adding the reverse of every
    /// edge if `undirected`; self loops and duplicates are dropped.
    pub fn from_edges(
        n: usize,
        edges: impl IntoIterator<Item = (u32, u32)>,
        undirected: bool,
    ) -> Graph {
        let mut g = Graph {
            adjacency: vec![Vec::new(); n],
            present: vec![true; n],
        };
        for (u, v) in edges {
            g.add_edge(u, v, undirected);
        }
        g.finish();
        g
    }

    fn add_edge(&mut self, u: u32, v: u32, undirected: bool) {
        let need = u.max(v) as usize + 1;
        if self.adjacency.len() < need {
            self.adjacency.resize(need, Vec::new());
            self.present.resize(need, false);
        }
        self.present[u as usize] = true;
        self.present[v as usize] = true;
        if u == v {
            return;
        }
        self.adjacency[u as usize].push(v);
        if undirected {
            self.adjacency[v as usize].push(u);
        }
    }

    fn finish(&mut self) {
        for a in &mut self.adjacency {
            a.sort_unstable();
            a.dedup();
        }
    }

    /// An undirected R-MAT graph with Graph500's parameters: 2^scale vertices, edge_factor *
    /// 2^scale generated edges, vertex labels randomly permuted (so low ids are not the hubs).
    pub fn rmat(scale: u32, edge_factor: u32, seed: u64) -> Result<Graph> {
        in_range("scale", scale, 1..=28)?;
        in_range("edge factor", edge_factor, 1..=1024)?;
        let n = 1usize << scale;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        perm.shuffle(&mut rng);
        let (a, b, c) = RMAT_ABC;
        let m = n * edge_factor as usize;
        let mut edges = Vec::with_capacity(m);
        for _ in 0..m {
            let (mut u, mut v) = (0u32, 0u32);
            for bit in (0..scale).rev() {
                let r: f64 = rng.gen();
                let (du, dv) = if r < a {
                    (0, 0)
                } else if r < a + b {
                    (0, 1)
                } else if r < a + b + c {
                    (1, 0)
                } else {
                    (1, 1)
                };
                u |= du << bit;
                v |= dv << bit;
            }
            edges.push((perm[u as usize], perm[v as usize]));
        }
        Ok(Graph::from_edges(n, edges, true))
    }

    /// Reads a SNAP edge list: one `from to` pair per line (whitespace separated), `#` comments.
    pub fn from_snap(reader: impl BufRead, undirected: bool) -> Result<Graph> {
        let mut g = Graph::default();
        for (no, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| LoadError::ReadLine {
                line: no + 1,
                source,
            })?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('%') {
                continue;
            }
            let mut it = line.split_whitespace();
            let mut id = || -> Result<u32> {
                let t = it.next().ok_or(LoadError::MissingVertex { line: no + 1 })?;
                Ok(t.parse::<u32>()
                    .ok()
                    .filter(|&v| v <= MAX_VERTEX)
                    .ok_or_else(|| LoadError::BadVertex {
                        line: no + 1,
                        token: t.to_string(),
                    })?)
            };
            let (u, v) = (id()?, id()?);
            g.add_edge(u, v, undirected);
        }
        g.finish();
        Ok(g)
    }

    /// Number of vertices.
    pub fn vertices(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }

    /// Number of stored (directed) adjacency entries.
    pub fn arcs(&self) -> usize {
        self.adjacency.iter().map(Vec::len).sum()
    }
}

/// What a load wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadReport {
    /// Vertices written.
    pub vertices: u64,
    /// Adjacency entries written.
    pub arcs: u64,
    /// Keys written.
    pub keys: u64,
    /// Value bytes written.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// A long load's progress bar on stderr: indicatif's under the `cli` feature.
#[cfg(feature = "cli")]
mod progress_bar {
    use indicatif::{ProgressBar, ProgressStyle};

    pub(super) struct Bar(ProgressBar);

    impl Bar {
        pub(super) fn new(total: u64) -> Bar {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} vertices ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message("loading");
            Bar(b)
        }

        pub(super) fn inc(&self) {
            self.0.inc(1);
        }

        pub(super) fn finish(&self) {
            self.0.finish_and_clear();
        }
    }
}

/// Without the `cli` feature, no bar: a library's caller reports progress its own way.
#[cfg(not(feature = "cli"))]
mod progress_bar {
    pub(super) struct Bar;

    impl Bar {
        pub(super) fn new(_total: u64) -> Bar {
            Bar
        }

        pub(super) fn inc(&self) {}

        pub(super) fn finish(&self) {}
    }
}

/// Pipelined key writer with an optional progress bar. On a Redis Cluster (found through the
/// connection it is given) it writes to every master: each flush groups the keys by slot (an
/// `MSET` must stay in one slot), and pipelines each master's `MSET`s in one write.
struct Writer<'c> {
    conn: &'c mut Connection,
    /// On a cluster: the slot map and a connection per master, in its order.
    cluster: Option<(Topology, Vec<Connection>)>,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    report: LoadReport,
    bar: Option<progress_bar::Bar>,
}

impl<'c> Writer<'c> {
    fn new(conn: &'c mut Connection, total: u64, progress: bool) -> Result<Writer<'c>> {
        let cluster = match Topology::read(conn)? {
            Some(t) => {
                let seed = conn.url().clone();
                let conns = (0..t.shards.len())
                    .map(|i| {
                        let url = t.url_of(i, &seed);
                        Connection::connect(&url, autoloc_dataplane::resp::DEFAULT_TIMEOUT).map_err(
                            |source| crate::Error::Connection {
                                url: url.to_string(),
                                source,
                            },
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some((t, conns))
            }
            None => None,
        };
        let bar = (progress && total > 20_000).then(|| progress_bar::Bar::new(total));
        Ok(Writer {
            conn,
            cluster,
            pending: Vec::with_capacity(MSET_KEYS),
            report: LoadReport::default(),
            bar,
        })
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.report.keys += 1;
        self.report.bytes += value.len() as u64;
        self.pending.push((key, value));
        if self.pending.len() >= MSET_KEYS {
            self.flush()?;
        }
        Ok(())
    }

    fn vertex_done(&mut self, arcs: usize) {
        self.report.vertices += 1;
        self.report.arcs += arcs as u64;
        if let Some(b) = &self.bar {
            b.inc();
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some((topology, conns)) = &mut self.cluster {
            let pending = std::mem::take(&mut self.pending);
            return flush_by_slot(topology, conns, pending);
        }
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(1 + 2 * self.pending.len());
        cmd.push(b"MSET");
        for (k, v) in &self.pending {
            cmd.push(k);
            cmd.push(v);
        }
        let reply = self
            .conn
            .call(&cmd)
            .map_err(|source| LoadError::Write { source })?;
        if let Frame::Error(message) = reply {
            return Err(LoadError::Refused { message }.into());
        }
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self, started: Instant) -> Result<LoadReport> {
        self.flush()?;
        if let Some(b) = &self.bar {
            b.finish();
        }
        self.report.seconds = started.elapsed().as_secs_f64();
        Ok(self.report)
    }
}

/// Writes `pending` to a cluster: an `MSET` per slot, each master's pipelined in one write, then
/// every reply read.
fn flush_by_slot(
    topology: &Topology,
    conns: &mut [Connection],
    pending: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
    let mut by_slot: std::collections::BTreeMap<u16, Pairs> = Default::default();
    for (k, v) in pending {
        by_slot.entry(key_slot(&k)).or_default().push((k, v));
    }
    let mut queued = vec![0usize; conns.len()];
    for (slot, pairs) in &by_slot {
        let Some(shard) = topology.shard_of_slot(*slot).filter(|&i| i < conns.len()) else {
            return Err(LoadError::Refused {
                message: format!("CLUSTERDOWN no master serves slot {slot}"),
            }
            .into());
        };
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(1 + 2 * pairs.len());
        cmd.push(b"MSET");
        for (k, v) in pairs {
            cmd.push(k);
            cmd.push(v);
        }
        conns[shard].queue(&cmd);
        queued[shard] += 1;
    }
    for (conn, n) in conns.iter_mut().zip(queued) {
        if n == 0 {
            continue;
        }
        conn.flush().map_err(|source| LoadError::Write { source })?;
        for _ in 0..n {
            let reply = conn
                .read_frame()
                .map_err(|source| LoadError::Write { source })?;
            if let Frame::Error(message) = reply {
                return Err(LoadError::Refused { message }.into());
            }
        }
    }
    Ok(())
}

/// Writes `graph` (binary adjacency per vertex, `n:<id>` degrees) and the `md5` blob.
pub fn write_graph(
    conn: &mut Connection,
    graph: &Graph,
    seed: u64,
    progress: bool,
) -> Result<LoadReport> {
    let started = Instant::now();
    let mut w = Writer::new(conn, graph.vertices() as u64, progress)?;
    for (v, adj) in graph.adjacency.iter().enumerate() {
        if !graph.present[v] {
            continue;
        }
        w.set(vertex_key(v as u32), encode_adjacency(adj))?;
        w.set(
            format!("n:{v}").into_bytes(),
            adj.len().to_string().into_bytes(),
        )?;
        w.vertex_done(adj.len());
    }
    w.set(BLOB_KEY.into(), blob(seed))?;
    w.finish(started)
}

/// AutoLoc's `md5` blob: 65,536 random characters from `[a-z0-9]`.
pub fn blob(seed: u64) -> Vec<u8> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x006d_6435);
    (0..BLOB_LEN)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())])
        .collect()
}

/// Loads AutoLoc's `social.json` as AutoLoc did: each vertex's entry, as JSON, under its id.
/// With `binary`, each entry is converted to the binary adjacency instead. Also writes `n:<id>`
/// degrees, the `md5` blob, and, if a `pagerank.json` lies beside the file, its edge list under
/// the key `pagerank` (AutoLoc's third key).
pub fn load_autoloc_json(
    conn: &mut Connection,
    path: &Path,
    binary: bool,
    progress: bool,
) -> Result<LoadReport> {
    let started = Instant::now();
    let text = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| LoadError::NotJson {
            path: path.to_path_buf(),
            source,
        })?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(LoadError::NotVertices {
            path: path.to_path_buf(),
        }
        .into());
    };
    let mut w = Writer::new(conn, map.len() as u64, progress)?;
    for (id, entry) in &map {
        let v: u32 = id
            .parse()
            .map_err(|_| LoadError::BadVertexId { id: id.clone() })?;
        let key = vertex_key(v);
        // A `Value` prints as compact JSON, what `serde_json::to_vec` gives, and cannot fail to.
        let raw = entry.to_string().into_bytes();
        let neighbours = autoloc_functions::graph::neighbours(&key, &raw)
            .map_err(|source| LoadError::BadEntry { vertex: v, source })?;
        let value = if binary {
            encode_adjacency(&neighbours)
        } else {
            raw
        };
        w.set(key, value)?;
        w.set(
            format!("n:{v}").into_bytes(),
            neighbours.len().to_string().into_bytes(),
        )?;
        w.vertex_done(neighbours.len());
    }
    w.set(BLOB_KEY.into(), blob(0))?;
    if let Some(pr) = path
        .parent()
        .map(|d| d.join("pagerank.json"))
        .filter(|p| p.is_file())
    {
        let edges = std::fs::read(&pr).map_err(|source| LoadError::Read {
            path: pr.clone(),
            source,
        })?;
        w.set(b"pagerank".to_vec(), edges)?;
    }
    w.finish(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmat_is_undirected_without_self_loops() {
        let g = Graph::rmat(8, 8, 7).unwrap();
        assert_eq!(g.adjacency.len(), 256);
        for (u, adj) in g.adjacency.iter().enumerate() {
            assert!(adj.windows(2).all(|w| w[0] < w[1]));
            for &v in adj {
                assert_ne!(u as u32, v);
                assert!(g.adjacency[v as usize].binary_search(&(u as u32)).is_ok());
            }
        }
        assert!(
            g.arcs() > 256 * 4,
            "R-MAT at edge factor 8 keeps most edges"
        );
        // Same seed, same graph; other seed, other graph.
        assert_eq!(Graph::rmat(8, 8, 7).unwrap().adjacency, g.adjacency);
        assert_ne!(Graph::rmat(8, 8, 8).unwrap().adjacency, g.adjacency);
    }

    #[test]
    fn rmat_is_skewed() {
        let g = Graph::rmat(12, 16, 1).unwrap();
        let max = g.adjacency.iter().map(Vec::len).max().unwrap();
        let mean = g.arcs() as f64 / 4096.0;
        assert!(max as f64 > 10.0 * mean, "max degree {max}, mean {mean}");
    }

    #[test]
    fn snap_parses_and_rejects_junk() {
        let g = Graph::from_snap("# comment\n0 1\n1\t2\n\n5 5\n".as_bytes(), false).unwrap();
        assert_eq!(g.adjacency[0], vec![1]);
        assert_eq!(g.adjacency[1], vec![2]);
        assert!(g.adjacency[2].is_empty());
        assert_eq!(g.vertices(), 4); // 0, 1, 2, 5
        assert!(!g.present[3]);
        assert!(Graph::from_snap("0 x\n".as_bytes(), false).is_err());
        assert!(Graph::from_snap("0\n".as_bytes(), false).is_err());
        assert!(Graph::from_snap("0 -1\n".as_bytes(), false).is_err());
    }

    #[test]
    fn blob_is_autoloc_shaped() {
        let b = blob(3);
        assert_eq!(b.len(), BLOB_LEN);
        assert!(b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
