//! `pagerank <start> <iterations> [<dest-prefix>]`: PageRank (damping 0.85) over the subgraph
//! induced by `start` and its 1-hop neighbours; replies with every vertex of that subgraph and its
//! score, by id. With a `<dest-prefix>`, it also stores each score at `<dest-prefix><id>` (as its
//! shortest round-tripping decimal text): the invocation's writes, applied all together when it
//! succeeds, on either side.
//!
//! Two rounds of reads (the start vertex, then all its neighbours at once), then power iteration:
//! `r'(v) = (1-d)/n + d * (sum over edges u->v of r(u)/out(u) + dangling/n)`, where a vertex with
//! no edge inside the subgraph (dangling) spreads its rank over all n vertices. Scores sum to 1.

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

fn parse(args: &[Vec<u8>]) -> Result<(u32, u64, Option<&[u8]>)> {
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
            let index: IdMap<usize> = members.iter().enumerate().map(|(i, &v)| (v, i)).collect();

            // Out-edges inside the subgraph, by member index.
            let mut out: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            let keys: Vec<Vec<u8>> = members.iter().map(|&v| vertex_key(v)).collect();
            store
                .read(&keys, &mut |i, v| {
                    let Some(v) = v else { return Ok(()) }; // dangling: no out-edges
                    let edges = &mut out[i];
                    for_each_neighbour(&keys[i], v, |n| {
                        if let Some(&j) = index.get(&n) {
                            edges.push(j);
                        }
                    })?;
                    edges.sort_unstable();
                    edges.dedup();
                    Ok(())
                })
                .await?;

            let scores = power_iteration(&out, iterations);
            let scored: Vec<(u32, f64)> = members.into_iter().zip(scores).collect();
            if let Some(prefix) = dest {
                for &(v, score) in &scored {
                    let mut key = prefix.to_vec();
                    key.extend_from_slice(v.to_string().as_bytes());
                    store.write(&key, score.to_string().as_bytes()).await?;
                }
            }
            Ok(Output::Scores(scored))
        })
    }
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
