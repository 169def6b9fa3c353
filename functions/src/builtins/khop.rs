//! `khop <start> <k>`: the sorted ids of all distinct vertices at distance 1..=k from `start`.
//!
//! A breadth-first search that reads one whole level per store access: k dependent round trips
//! compute-side however many vertices a level holds. High fanout and little CPU per byte, the
//! function that gains most from running next to its data.

use super::IdSet;
use crate::function::{Args, Function, Invocation, OutputKind};
use crate::graph::vertex_key;
use crate::{Error, Output, Result, Store};

/// The largest `k` accepted.
pub const MAX_K: u64 = 16;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Khop;

const USAGE: &str = "khop <start> <k>";

/// Parses `khop`'s arguments: `(start, k)`.
pub fn parse(args: &[Vec<u8>]) -> Result<(u32, u32)> {
    let mut a = Args::new("khop", USAGE, args);
    let start = a.next_vertex("start")?;
    let k = a.next_u64("k", 1, MAX_K)? as u32;
    a.finish()?;
    Ok((start, k))
}

impl Function for Khop {
    fn name(&self) -> &'static str {
        "khop"
    }
    fn usage(&self) -> &'static str {
        USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Ids
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let (start, k) = parse(args)?;
            khop(store, start, k).await.map(Output::Ids)
        })
    }
}

/// The k-hop neighbourhood of `start`, sorted, `start` excluded.
pub async fn khop(store: &dyn Store, start: u32, k: u32) -> Result<Vec<u32>> {
    let mut seen = IdSet::default();
    seen.insert(start);
    let mut frontier = vec![start];
    for depth in 0..k {
        if frontier.is_empty() {
            break;
        }
        let keys: Vec<Vec<u8>> = frontier.iter().map(|&v| vertex_key(v)).collect();
        let mut next = Vec::new();
        // The last level's vertices are only counted: nothing reads their neighbours.
        let last = depth + 1 == k;
        store
            .read_neighbours(&keys, &mut |i, neighbours| match neighbours {
                Some(neighbours) => match neighbours.le_ids()? {
                    Some(ids) if last => {
                        seen.extend_le(ids);
                        Ok(())
                    }
                    Some(ids) => {
                        seen.insert_le(ids, &mut next);
                        Ok(())
                    }
                    None => neighbours.for_each(|n| {
                        if seen.insert(n) && !last {
                            next.push(n);
                        }
                    }),
                },
                None if depth == 0 => Err(Error::no_key(&keys[i])),
                // A dangling neighbour: reached, counted, no neighbours of its own.
                None => Ok(()),
            })
            .await?;
        frontier = next;
    }
    Ok(neighbourhood(seen, start))
}

/// `khop`'s result from the vertices a search from `start` has seen: all of them but `start`,
/// sorted.
pub fn neighbourhood(seen: IdSet, start: u32) -> Vec<u32> {
    let mut found = seen.into_sorted();
    if let Ok(at) = found.binary_search(&start) {
        found.remove(at);
    }
    found
}
