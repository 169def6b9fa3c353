//! `neighbours <vertex>...`: the sorted distinct neighbours of the given vertices, a vertex
//! without a key having none: one hop of a traversal, expanded where its vertices are. On a
//! Redis Cluster, a compute node asks each shard for the neighbours of its part of a `khop`
//! frontier, all shards at once, instead of fetching their adjacency lists.
//!
//! `expand <vertex>...`: that hop and, as far as the store serves them, the next one: four
//! sorted lists ([`Output::Lists`]), the neighbours of the given vertices, those of them the
//! store serves (a shard its own slots), their neighbours, and the given vertices without a key. A shard thus expands the part of
//! the next hop that lives on it in the same round trip (Wukong's rule of going on where the data
//! is), and says which vertices it expanded, so that its caller, whose slot map may be older
//! than the shard's, sends none of them again and misses none.

use super::IdSet;
use crate::function::{Args, Function, Invocation, OutputKind};
use crate::graph::vertex_key;
use crate::{Output, Result, Store};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Neighbours;

const USAGE: &str = "neighbours <vertex> [<vertex> ...]";

fn parse(name: &'static str, usage: &'static str, args: &[Vec<u8>]) -> Result<Vec<u32>> {
    let mut a = Args::new(name, usage, args);
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
        parse("neighbours", USAGE, args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let vertices = parse("neighbours", USAGE, args)?;
            neighbours(store, &vertices).await.map(Output::Ids)
        })
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Expand;

const EXPAND_USAGE: &str = "expand <vertex> [<vertex> ...]";

impl Function for Expand {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn usage(&self) -> &'static str {
        EXPAND_USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Lists
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse("expand", EXPAND_USAGE, args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let vertices = parse("expand", EXPAND_USAGE, args)?;
            let e = expand(store, &vertices).await?;
            Ok(Output::Lists(vec![e.next, e.ahead, e.beyond, e.missing]))
        })
    }
}

/// What [`expand`] found: the four lists of its output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The neighbours of the given vertices.
    pub next: Vec<u32>,
    /// Those of them the store serves, expanded too.
    pub ahead: Vec<u32>,
    /// Their neighbours.
    pub beyond: Vec<u32>,
    /// The given vertices without a key (so a caller can fail as `khop` does on a missing
    /// start, with no second round trip).
    pub missing: Vec<u32>,
}

/// The neighbours of `vertices`, those of them `store` serves, and their neighbours (two store
/// accesses, the second only if it serves any), with [`neighbours`]' errors for the first.
pub async fn expand(store: &dyn Store, vertices: &[u32]) -> Result<Expansion> {
    let mut missing = Vec::new();
    let next = neighbours_noting_missing(store, vertices, &mut missing).await?;
    let mut here: Vec<u32> = next
        .iter()
        .copied()
        .filter(|&v| store.serves(&vertex_key(v)))
        .collect();
    // Going on is an optimisation: where it fails (a value of another type, no permission, a
    // slot that moved, the budget spent), it goes on nowhere, and the next hop reads those
    // vertices in its turn, with the rest of their hop, failing as one node's read would.
    let mut beyond = Vec::new();
    if !here.is_empty() {
        match neighbours(store, &here).await {
            Ok(found) => beyond = found,
            Err(_) => here.clear(),
        }
    }
    Ok(Expansion {
        next,
        ahead: here,
        beyond,
        missing,
    })
}

/// The sorted distinct neighbours of `vertices` (one store access), with the errors `khop`
/// gives for the same values (`WRONGTYPE`, `BADVALUE`); a missing vertex has none.
pub async fn neighbours(store: &dyn Store, vertices: &[u32]) -> Result<Vec<u32>> {
    neighbours_noting_missing(store, vertices, &mut Vec::new()).await
}

/// [`neighbours`], adding the vertices without a key to `missing`.
async fn neighbours_noting_missing(
    store: &dyn Store,
    vertices: &[u32],
    missing: &mut Vec<u32>,
) -> Result<Vec<u32>> {
    let keys: Vec<Vec<u8>> = vertices.iter().map(|&v| vertex_key(v)).collect();
    let mut found = IdSet::default();
    store
        .read_neighbours(&keys, &mut |i, neighbours| match neighbours {
            Some(neighbours) => match neighbours.le_ids()? {
                Some(ids) => {
                    found.extend_le(ids);
                    Ok(())
                }
                None => neighbours.for_each(|n| {
                    found.insert(n);
                }),
            },
            None => {
                missing.push(vertices[i]);
                Ok(())
            }
        })
        .await?;
    Ok(found.into_sorted())
}
