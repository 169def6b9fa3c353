//! `pagerank <start> <iterations> [<dest-prefix>]`: PageRank (damping 0.85) over the subgraph
//! induced by `start` and its 1-hop neighbours; replies with every vertex of that subgraph and its
//! score, by id. With a `<dest-prefix>`, it also stores each score at `<dest-prefix><id>` (as its
//! shortest round-tripping decimal text): the invocation's writes, applied all together when it
//! succeeds, on either side.
//!
//! Two rounds of reads (the start vertex, then all its neighbours at once), then power iteration:
//! `r'(v) = (1-d)/n + d * (sum over edges u->v of r(u)/out(u) + dangling/n)`, where a vertex with
//! no edge inside the subgraph (dangling) spreads its rank over all n vertices. Scores sum to 1.
//!
//! `induced <start> [<vertex>...]`: that subgraph, as far as the store serves it: on a Redis
//! Cluster, a compute node asks each shard for the edges of its part of pagerank's
//! neighbourhood, all shards at once, instead of fetching their adjacency lists. The subgraph of
//! the start and the given vertices, or with none given, of the start and its neighbours; its
//! output ([`Output::Lists`]) is the subgraph's vertices when the store found them (none given;
//! else empty), those of them the store serves (sorted), then for each of those its neighbours
//! inside the subgraph (sorted; none for a vertex without a key). On one node, `induced <start>`
//! is all `pagerank` reads, in its two rounds. Having found the subgraph, what it cannot read of
//! it (a value of another type, say) it serves none of, leaving that read, and its error, to its
//! caller's next round, where the rest of the subgraph is read: so the error is the one a read
//! of the whole subgraph on one node gives.

use super::IdMap;
use crate::function::{Args, Function, Invocation, OutputKind};
use crate::graph::{for_each_neighbour, vertex_key};
use crate::{Error, Output, Result, Store};

/// The damping factor.
pub const DAMPING: f64 = 0.85;
/// The largest `iterations` accepted.
pub const MAX_ITERATIONS: u64 = 10_000;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct PageRank;

const USAGE: &str = "pagerank <start> <iterations> [<dest-prefix>]";

/// `(start, iterations, dest-prefix)`.
pub type PageRankArgs<'a> = (u32, u64, Option<&'a [u8]>);

/// Parses `pagerank`'s arguments.
pub fn parse(args: &[Vec<u8>]) -> Result<PageRankArgs<'_>> {
    let mut a = Args::new("pagerank", USAGE, args);
    let start = a.next_vertex("start")?;
    let iterations = a.next_u64("iterations", 1, MAX_ITERATIONS)?;
    let dest = a.next_opt();
    a.finish()?;
    Ok((start, iterations, dest))
}

impl Function for PageRank {
    fn name(&self) -> &'static str {
        "pagerank"
    }
    fn usage(&self) -> &'static str {
        USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Scores
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let (start, iterations, dest) = parse(args)?;
            let members = members(store, start).await?;
            let edges = edges_within(store, &members, &members).await?;
            let scored = rank(members, &edges, iterations);
            write_scores(store, dest, &scored).await?;
            Ok(Output::Scores(scored))
        })
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Induced;

const INDUCED_USAGE: &str = "induced <start> [<vertex> ...]";

fn parse_induced(args: &[Vec<u8>]) -> Result<(u32, Vec<u32>)> {
    let mut a = Args::new("induced", INDUCED_USAGE, args);
    let start = a.next_vertex("start")?;
    let mut given = Vec::new();
    while a.remaining() > 0 {
        given.push(a.next_vertex("vertex")?);
    }
    a.finish()?;
    Ok((start, given))
}

impl Function for Induced {
    fn name(&self) -> &'static str {
        "induced"
    }
    fn usage(&self) -> &'static str {
        INDUCED_USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Lists
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse_induced(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let (start, mut given) = parse_induced(args)?;
            let (found, members) = if given.is_empty() {
                let members = members(store, start).await?;
                (members.clone(), members)
            } else {
                given.push(start);
                given.sort_unstable();
                given.dedup();
                (Vec::new(), given)
            };
            let mut served: Vec<u32> = members
                .iter()
                .copied()
                .filter(|&v| store.serves(&vertex_key(v)))
                .collect();
            let edges = match edges_within(store, &members, &served).await {
                Ok(edges) => edges,
                // Found the subgraph: what it cannot read of it (a value of another type, no
                // permission, a slot that moved, the budget spent), it serves none of, and its
                // caller reads it with the rest, failing as one node's read would.
                Err(_) if !found.is_empty() => {
                    served.clear();
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let mut lists = Vec::with_capacity(2 + edges.len());
            lists.push(found);
            lists.push(served);
            lists.extend(edges);
            Ok(Output::Lists(lists))
        })
    }
}

/// The vertices of `start`'s subgraph: it and its neighbours, sorted; `NOKEY` if it has no key.
pub async fn members(store: &dyn Store, start: u32) -> Result<Vec<u32>> {
    let start_key = [vertex_key(start)];
    let mut members = vec![start];
    store
        .read(&start_key, &mut |_, v| {
            let v = v.ok_or_else(|| Error::no_key(&start_key[0]))?;
            for_each_neighbour(&start_key[0], v, |n| members.push(n))
        })
        .await?;
    members.sort_unstable();
    members.dedup();
    Ok(members)
}

/// For each of `vertices` (one store access), its neighbours among `members` (sorted, distinct;
/// none for a vertex without a key: dangling).
pub async fn edges_within(
    store: &dyn Store,
    members: &[u32],
    vertices: &[u32],
) -> Result<Vec<Vec<u32>>> {
    let member: IdMap<()> = members.iter().map(|&v| (v, ())).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); vertices.len()];
    let keys: Vec<Vec<u8>> = vertices.iter().map(|&v| vertex_key(v)).collect();
    store
        .read(&keys, &mut |i, v| {
            let Some(v) = v else { return Ok(()) }; // dangling: no out-edges
            let edges = &mut out[i];
            for_each_neighbour(&keys[i], v, |n| {
                if member.contains_key(&n) {
                    edges.push(n);
                }
            })?;
            edges.sort_unstable();
            edges.dedup();
            Ok(())
        })
        .await?;
    Ok(out)
}

/// PageRank over `members` (sorted) and each one's `edges` inside them: every member with its
/// score, in order.
pub fn rank(members: Vec<u32>, edges: &[Vec<u32>], iterations: u64) -> Vec<(u32, f64)> {
    let index: IdMap<usize> = members.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let out: Vec<Vec<usize>> = edges
        .iter()
        .map(|e| e.iter().filter_map(|n| index.get(n).copied()).collect())
        .collect();
    let scores = power_iteration(&out, iterations);
    members.into_iter().zip(scores).collect()
}

/// Stores each score at `<dest><id>` (as its shortest round-tripping decimal text), if a
/// `dest` prefix is given.
pub async fn write_scores(
    store: &dyn Store,
    dest: Option<&[u8]>,
    scored: &[(u32, f64)],
) -> Result<()> {
    if let Some(prefix) = dest {
        for &(v, score) in scored {
            let mut key = prefix.to_vec();
            key.extend_from_slice(v.to_string().as_bytes());
            store.write(&key, score.to_string().as_bytes()).await?;
        }
    }
    Ok(())
}

/// PageRank by power iteration over `out` (out-edges by vertex index).
pub fn power_iteration(out: &[Vec<usize>], iterations: u64) -> Vec<f64> {
    let n = out.len();
    let nf = n as f64;
    let mut rank = vec![1.0 / nf; n];
    let mut next = vec![0.0; n];
    for _ in 0..iterations {
        let dangling: f64 = (0..n).filter(|&u| out[u].is_empty()).map(|u| rank[u]).sum();
        let base = (1.0 - DAMPING) / nf + DAMPING * dangling / nf;
        next.iter_mut().for_each(|x| *x = base);
        for (u, edges) in out.iter().enumerate() {
            if edges.is_empty() {
                continue;
            }
            let share = DAMPING * rank[u] / edges.len() as f64;
            for &v in edges {
                next[v] += share;
            }
        }
        std::mem::swap(&mut rank, &mut next);
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_cycle_is_uniform() {
        let out = vec![vec![1], vec![2], vec![0]];
        for r in power_iteration(&out, 50) {
            assert!((r - 1.0 / 3.0).abs() < 1e-12);
        }
    }

    #[test]
    fn star_center_ranks_highest_and_sums_to_one() {
        // 0 <-> 1, 0 <-> 2, 0 <-> 3
        let out = vec![vec![1, 2, 3], vec![0], vec![0], vec![0]];
        let r = power_iteration(&out, 400);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(r[0] > r[1] && (r[1] - r[2]).abs() < 1e-12);
        // Closed form for a star of 3 leaves: center = (1 + 3d) / (4 (1 + d)) ... check fixpoint.
        let d = DAMPING;
        let center = (1.0 - d) / 4.0 + d * 3.0 * r[1];
        assert!((center - r[0]).abs() < 1e-9);
    }

    #[test]
    fn dangling_vertices_keep_total_rank() {
        let out = vec![vec![1], vec![]];
        let r = power_iteration(&out, 200);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
