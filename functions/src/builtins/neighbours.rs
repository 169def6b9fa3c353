//! `neighbours <vertex>...`: the sorted distinct neighbours of the given vertices, a vertex
//! without a key having none: one hop of a traversal, expanded where its vertices are. On a
//! Redis Cluster, a compute node asks each shard for the neighbours of its part of a `khop`
//! frontier, all shards at once, instead of fetching their adjacency lists.

use super::IdSet;
use crate::function::{Args, Function, Invocation, OutputKind};
use crate::graph::vertex_key;
use crate::{Output, Result, Store};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Neighbours;

const USAGE: &str = "neighbours <vertex> [<vertex> ...]";

fn parse(args: &[Vec<u8>]) -> Result<Vec<u32>> {
    let mut a = Args::new("neighbours", USAGE, args);
    let mut vertices = vec![a.next_vertex("vertex")?];
    while a.remaining() > 0 {
        vertices.push(a.next_vertex("vertex")?);
    }
    a.finish()?;
    Ok(vertices)
}

impl Function for Neighbours {
    fn name(&self) -> &'static str {
        "neighbours"
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
            let vertices = parse(args)?;
            neighbours(store, &vertices).await.map(Output::Ids)
        })
    }
}

/// The sorted distinct neighbours of `vertices` (one store access), with the errors `khop`
/// gives for the same values (`WRONGTYPE`, `BADVALUE`); a missing vertex has none.
pub async fn neighbours(store: &dyn Store, vertices: &[u32]) -> Result<Vec<u32>> {
    let keys: Vec<Vec<u8>> = vertices.iter().map(|&v| vertex_key(v)).collect();
    let mut found = IdSet::default();
    store
        .read_neighbours(&keys, &mut |_, neighbours| match neighbours {
            Some(neighbours) => match neighbours.le_ids()? {
                Some(ids) => {
                    found.extend_le(ids);
                    Ok(())
                }
                None => neighbours.for_each(|n| {
                    found.insert(n);
                }),
            },
            None => Ok(()),
        })
        .await?;
    Ok(found.into_sorted())
}
