//! `khop` on a Redis Cluster, hop by hop: each hop's frontier is split by the shard serving each
//! vertex, and each part is either expanded storage-side on its shard (one `neighbours`
//! invocation there) or fetched compute-side (one multi-get there), every part of a hop in flight
//! at once: a hop costs one round trip per shard it touches, whichever side expands it. The
//! result is the single node's, exactly.
//!
//! Which side expands a part is [`HopMode`]'s: always storage-side, or chosen per part by the
//! [`HopTable`] from what parts of that size cost on that shard lately (Wukong's rule: expand
//! where the data lives when the part is large, pull it when it is small; measured here, not
//! assumed). A shard whose data-plane threads are saturated (`AUTOLOC.STATS`'s busy share, read
//! from every master every [`LOAD_EVERY`] by [`crate::Runtime`]) is hot: its parts are expanded
//! compute-side while it stays so, and the other shards keep theirs; a shard slow to expand for
//! any other reason loses parts through what they cost.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autoloc_dataplane::wire::{InvokeCost, List, Message};
use autoloc_functions::builtins::neighbours::{neighbours, Expansion};
use autoloc_functions::builtins::IdSet;
use autoloc_functions::graph::vertex_key;
use autoloc_functions::{Error as FnError, Output, OutputKind};

use crate::cluster::{ClusterStore, Topology};
use crate::session::{self, join_all, ReadSetStore, Session, Task};

/// Which side expands each part of a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopMode {
    /// Every part storage-side, on its shard.
    Storage,
    /// Each part where the [`HopTable`] says.
    Choose,
}

/// A side of one part of a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HopSide {
    /// Expanded on its shard (`neighbours`).
    Storage,
    /// Fetched (multi-get) and expanded here.
    Compute,
}

/// What one hop did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Hop {
    /// Vertices in its frontier.
    pub frontier: usize,
    /// Each part's shard (`host:port`) and side, in shard order: a part per shard the frontier
    /// touched, a round trip each.
    pub parts: Vec<(String, HopSide)>,
    /// Vertices of the next hop expanded in this one, by the shards serving them (`expand`).
    pub ahead: usize,
    /// Bytes of its requests and replies.
    pub bytes: u64,
}

impl Hop {
    /// Shards the frontier touched (its round trips).
    pub fn shards(&self) -> usize {
        self.parts.len()
    }

    /// Parts expanded on `side`.
    pub fn parts_on(&self, side: HopSide) -> usize {
        self.parts.iter().filter(|(_, s)| *s == side).count()
    }
}

/// Parts whose sizes fall in one power of two share a cell.
fn bucket(n: usize) -> u32 {
    usize::BITS - n.max(1).leading_zeros()
}

/// One cell: ns per vertex of a part, per side (an exponential moving average), and how many
/// parts it chose for.
#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    ns_per_vertex: [Option<f64>; 2],
    chosen: u64,
}

/// How much of the new sample a cell's average takes.
const ALPHA: f64 = 0.2;
/// Every this many choices in a cell, the other side is tried once, so that a change in cost
/// (a shard getting hot, then cool again) is seen.
const EXPLORE_EVERY: u64 = 16;

/// Share of the last window a shard's data-plane threads were busy (`dataplane_busy_permille`)
/// above which the shard becomes hot. The share counts the time from a request seen to Redis's
/// lock given back, not the thread's work outside the lock (taking requests, sending replies), so
/// a saturated shard reads 0.8 to 0.95 (on 2 cores, three clients with 8 requests in flight
/// each on one of 3 shards), an idle one 0.03, one serving a lone client's traversals 0.1 to 0.3.
pub const HOT: f64 = 0.75;
/// Busy share under which a hot shard is cool again: readings of a saturated shard swing by a
/// tenth from one window to the next, and without this gap a hot shard took back a part in four.
pub const COOL: f64 = 0.4;
/// How often the shards' load is read.
pub const LOAD_EVERY: Duration = Duration::from_millis(100);

/// The shards' load as last read: busy share and whether hot, by shard (`host:port`), and when
/// it was read.
#[derive(Debug, Default)]
struct Loads {
    busy: HashMap<String, (f64, bool)>,
    read_at: Option<Instant>,
}

/// Per shard and part size, what expanding a part cost on each side lately, and each shard's
/// load: the placement table of hops. Shared by the runtimes of one process
/// ([`crate::Runtime::try_clone`]).
#[derive(Debug, Default)]
pub struct HopTable {
    cells: Mutex<HashMap<(String, u32), Cell>>,
    loads: Mutex<Loads>,
}

impl HopTable {
    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Cell>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn loads(&self) -> std::sync::MutexGuard<'_, Loads> {
        self.loads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the shards' load is due to be read again; `true` claims the reading, so that of
    /// the runtimes sharing this table one reads it per [`LOAD_EVERY`].
    pub fn load_due(&self) -> bool {
        let mut loads = self.loads();
        let due = loads.read_at.is_none_or(|t| t.elapsed() >= LOAD_EVERY);
        if due {
            loads.read_at = Some(Instant::now());
        }
        due
    }

    /// Sets the busy share of `shard`'s data-plane threads, as just read: the shard becomes hot
    /// above [`HOT`] and cool again under [`COOL`].
    pub fn set_load(&self, shard: &str, busy: f64) {
        let mut loads = self.loads();
        let entry = loads.busy.entry(shard.to_string()).or_default();
        *entry = (busy, busy > HOT || (entry.1 && busy >= COOL));
    }

    /// The busy share of `shard` as last read.
    pub fn load(&self, shard: &str) -> Option<f64> {
        self.loads().busy.get(shard).map(|l| l.0)
    }

    /// Whether `shard` is hot: its parts are expanded compute-side.
    pub fn hot(&self, shard: &str) -> bool {
        self.loads().busy.get(shard).is_some_and(|l| l.1)
    }

    /// The side to expand a part of `n` vertices on `shard` (`host:port`): compute-side while
    /// the shard is hot, else the side that cost less lately (each side tried first, and the
    /// other now and then).
    pub fn choose(&self, shard: &str, n: usize) -> HopSide {
        if self.hot(shard) {
            return HopSide::Compute;
        }
        let mut cells = self.cells();
        let cell = cells.entry((shard.to_string(), bucket(n))).or_default();
        cell.chosen += 1;
        let [storage, compute] = cell.ns_per_vertex;
        let best = match (storage, compute) {
            (None, _) => return HopSide::Storage,
            (_, None) => return HopSide::Compute,
            (Some(s), Some(c)) if s <= c => HopSide::Storage,
            _ => HopSide::Compute,
        };
        if cell.chosen.is_multiple_of(EXPLORE_EVERY) {
            match best {
                HopSide::Storage => HopSide::Compute,
                HopSide::Compute => HopSide::Storage,
            }
        } else {
            best
        }
    }

    /// Records that a part of `n` vertices on `shard` took `wall_ns` on `side`, expanding
    /// `expanded` vertices (`n`, and those of the next hop its shard went on to).
    pub fn record(&self, shard: &str, n: usize, expanded: usize, side: HopSide, wall_ns: u64) {
        let sample = wall_ns as f64 / expanded.max(1) as f64;
        let mut cells = self.cells();
        let cell = cells.entry((shard.to_string(), bucket(n))).or_default();
        let slot = &mut cell.ns_per_vertex[side as usize];
        *slot = Some(slot.map_or(sample, |old| old + ALPHA * (sample - old)));
    }

    /// Every cell: `(shard, smallest part size of its bucket, storage ns/vertex, compute
    /// ns/vertex)`, sorted.
    pub fn snapshot(&self) -> Vec<(String, usize, Option<f64>, Option<f64>)> {
        let mut rows: Vec<_> = self
            .cells()
            .iter()
            .map(|((shard, b), c)| {
                let from = if *b == 0 { 0 } else { 1usize << (b - 1) };
                (shard.clone(), from, c.ns_per_vertex[0], c.ns_per_vertex[1])
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }
}

/// What a per-hop run cost besides its result.
#[derive(Debug, Default)]
pub struct HopRun {
    /// Its hops.
    pub hops: Vec<Hop>,
    /// Storage-side invocations it sent.
    pub invokes: u64,
    /// What the storage side reported for them, summed.
    pub storage: InvokeCost,
    /// Bytes of those invocations and their replies.
    pub storage_bytes: u64,
}

/// What expanding a part of a hop without going on gave: its neighbours.
fn next_only(next: Vec<u32>) -> Expansion {
    Expansion {
        next,
        ..Expansion::default()
    }
}

/// The k-hop neighbourhood of `start` (sorted, `start` excluded: `khop`'s result), hop by hop
/// over the shards of `topology` (`sessions` in its order; `store` reads through them).
///
/// A part expanded storage-side while another hop is to come goes on where it can (`expand`):
/// its shard also expands the vertices of the next hop that it serves. Those are not sent again,
/// and their neighbours join the hop after. Why that stays exact: a vertex of the next hop is at
/// distance d+1 or less, so the neighbours of one that is new are at d+2 or less, and they are
/// counted at d+2 only if no shorter path put them in `seen` first; a vertex expanded ahead that
/// was already seen adds only vertices already seen. On one shard, k=2 is one round trip.
#[allow(clippy::too_many_arguments)]
pub async fn khop(
    topology: &Topology,
    sessions: &[&RefCell<Session>],
    store: &ClusterStore<'_>,
    table: &HopTable,
    mode: HopMode,
    start: u32,
    k: u32,
    run: &RefCell<HopRun>,
) -> Result<Vec<u32>, FnError> {
    let mut seen = IdSet::default();
    seen.insert(start);
    let mut frontier = vec![start];
    // Vertices of the coming hop found ahead, by the shards that expanded their parents.
    let mut found_ahead: Vec<u32> = Vec::new();
    for depth in 0..k {
        if frontier.is_empty() && found_ahead.is_empty() {
            break;
        }
        let last = depth + 1 == k;
        // Worth going on where the data is while the hop after this one is still wanted.
        let go_on = depth + 2 <= k;
        // The frontier by shard, in shard order.
        let keys: Vec<Vec<u8>> = frontier.iter().map(|&v| vertex_key(v)).collect();
        let shards: Vec<usize> = keys
            .iter()
            .map(|k| store.shard(k))
            .collect::<Result<_, _>>()?;
        let mut parts: Vec<(usize, Vec<u32>)> = autoloc_dataplane::slot::group(shards)
            .into_iter()
            .map(|(shard, places)| (shard, places.iter().map(|&i| frontier[i]).collect()))
            .collect();
        parts.sort_by_key(|(s, _)| *s);
        let mut hop = Hop {
            frontier: frontier.len(),
            ..Hop::default()
        };
        let bytes_before = store.cost().bytes + run.borrow().storage_bytes;
        let expansions: Vec<Task<'_, Result<Expansion, FnError>>> = parts
            .iter()
            .map(|(shard, vertices)| {
                let addr = &topology.shards[*shard].master;
                let side = match mode {
                    HopMode::Storage => HopSide::Storage,
                    HopMode::Choose => table.choose(addr, vertices.len()),
                };
                hop.parts.push((addr.clone(), side));
                let session = sessions[*shard];
                Box::pin(async move {
                    let began = Instant::now();
                    let got = match (side, depth) {
                        // The first hop is the start vertex alone, which must exist (khop's
                        // NOKEY): `khop <start> 1` on its shard says so, or `expand <start>`,
                        // which names the vertices it found no key for.
                        (HopSide::Storage, _) => {
                            let function = match (depth, go_on) {
                                (0, false) => "khop",
                                (_, true) => "expand",
                                (_, false) => "neighbours",
                            };
                            let args: Vec<Vec<u8>> = match function {
                                "khop" => vec![vertex_key(start), b"1".to_vec()],
                                _ => vertices.iter().map(|&v| vertex_key(v)).collect(),
                            };
                            expand_there(session, store, function, &args, vertices, run)
                                .await
                                .and_then(|e| {
                                    if depth == 0 && e.missing.contains(&start) {
                                        Err(FnError::no_key(&vertex_key(start)))
                                    } else {
                                        Ok(e)
                                    }
                                })
                        }
                        (HopSide::Compute, 0) => start_here(store, start).await.map(next_only),
                        (HopSide::Compute, _) => neighbours(store, vertices).await.map(next_only),
                    };
                    if let Ok(e) = &got {
                        let wall = began.elapsed().as_nanos() as u64;
                        table.record(
                            addr,
                            vertices.len(),
                            vertices.len() + e.ahead.len(),
                            side,
                            wall,
                        );
                    }
                    got
                }) as Task<'_, _>
            })
            .collect();
        let found = join_all(expansions).await;
        // As in one read of one node: a key of another type fails the read before any value is
        // looked at, so its WRONGTYPE wins over another part's BADVALUE.
        let mut failed: Option<&FnError> = None;
        for e in found.iter().filter_map(|r| r.as_ref().err()) {
            let wrong_type = |e: &FnError| e.code() == autoloc_functions::ErrorCode::WrongType;
            if failed.is_none_or(|f| wrong_type(e) && !wrong_type(f)) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(e.clone());
        }
        // The vertices at distance depth+1: what this hop's parts found, and what the last hop's
        // found ahead.
        let mut next = Vec::new();
        let found: Vec<Expansion> = found.into_iter().collect::<Result<_, _>>()?;
        for v in found
            .iter()
            .flat_map(|e| e.next.iter())
            .chain(found_ahead.iter())
        {
            if seen.insert(*v) && !last {
                next.push(*v);
            }
        }
        // Those expanded ahead are done; their neighbours are the next hop's too.
        let done: std::collections::HashSet<u32> =
            found.iter().flat_map(|e| e.ahead.iter().copied()).collect();
        let before = next.len();
        next.retain(|v| !done.contains(v));
        hop.ahead = before - next.len();
        found_ahead = found.into_iter().flat_map(|e| e.beyond).collect();
        hop.bytes = store.cost().bytes + run.borrow().storage_bytes - bytes_before;
        run.borrow_mut().hops.push(hop);
        frontier = next;
    }
    Ok(autoloc_functions::builtins::khop::neighbourhood(
        seen, start,
    ))
}

/// The neighbours of `start`, read here; `NOKEY` if it has no key (as `khop` fails).
async fn start_here(store: &dyn autoloc_functions::Store, start: u32) -> Result<Vec<u32>, FnError> {
    let key = vertex_key(start);
    let mut found = None;
    store
        .read(std::slice::from_ref(&key), &mut |_, v| {
            found = v.map(|v| autoloc_functions::graph::neighbours(&key, v));
            Ok(())
        })
        .await?;
    found.ok_or_else(|| FnError::no_key(&key))?
}

/// The neighbours of `vertices`, expanded on their shard by `function` with `args` (`neighbours`
/// or `expand` of them, or `khop <start> 1` for the first hop); a part the shard pushes back
/// (past its budget, or a vertex to go on to that moved away) is finished here from the read set
/// it hands back, without going on.
async fn expand_there(
    session: &RefCell<Session>,
    store: &ClusterStore<'_>,
    function: &str,
    args: &[Vec<u8>],
    vertices: &[u32],
    run: &RefCell<HopRun>,
) -> Result<Expansion, FnError> {
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let invoke = Message::Invoke {
        function,
        args: List::new(&argv),
    };
    let r = session::request(session, &invoke).await?;
    {
        let mut run = run.borrow_mut();
        run.invokes += 1;
        run.storage_bytes += r.bytes;
    }
    let add = |cost: &InvokeCost| {
        let mut run = run.borrow_mut();
        run.storage.storage_cpu_ns += cost.storage_cpu_ns;
        run.storage.queue_ns += cost.queue_ns;
        run.storage.keys_read += cost.keys_read;
        run.storage.bytes_read += cost.bytes_read;
        run.storage.reads += cost.reads;
    };
    match r.reply {
        session::Reply::Invoked { result, cost } => {
            add(&cost);
            let kind = match function {
                "expand" => OutputKind::Lists,
                _ => OutputKind::Ids,
            };
            match Output::decode(kind, &result)? {
                Output::Ids(ids) => Ok(next_only(ids)),
                Output::Lists(lists) => match <[Vec<u32>; 4]>::try_from(lists) {
                    Ok([next, ahead, beyond, missing]) => Ok(Expansion {
                        next,
                        ahead,
                        beyond,
                        missing,
                    }),
                    Err(lists) => Err(FnError::Malformed(format!(
                        "expand gave {} lists, not 4",
                        lists.len()
                    ))),
                },
                other => Err(FnError::Malformed(format!("{function} gave {other:?}"))),
            }
        }
        session::Reply::Pushback { read_set, cost } => {
            add(&cost);
            let here = ReadSetStore::new(read_set, store);
            match function {
                "khop" => start_here(&here, vertices[0]).await.map(next_only),
                // Going on here too: the compute side reads every shard (rare: a pushback).
                "expand" => autoloc_functions::builtins::neighbours::expand(&here, vertices).await,
                _ => neighbours(&here, vertices).await.map(next_only),
            }
        }
        other => Err(other.into_error("Invoke")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_go_where_they_were_cheaper_and_the_other_side_is_tried_now_and_then() {
        let t = HopTable::default();
        // Nothing measured: each side is tried first.
        assert_eq!(t.choose("a:1", 10), HopSide::Storage);
        t.record("a:1", 10, 10, HopSide::Storage, 10_000);
        assert_eq!(t.choose("a:1", 10), HopSide::Compute);
        t.record("a:1", 10, 10, HopSide::Compute, 50_000);
        let picks: Vec<HopSide> = (0..32).map(|_| t.choose("a:1", 12)).collect();
        let compute = picks.iter().filter(|&&s| s == HopSide::Compute).count();
        assert!((1..=3).contains(&compute), "{picks:?}");
        // Another shard, and another size, have cells of their own.
        assert_eq!(t.choose("b:1", 10), HopSide::Storage);
        assert_eq!(t.choose("a:1", 1000), HopSide::Storage);
        // The shard gets hot: its storage side slows down, and parts move out.
        for _ in 0..30 {
            t.record("a:1", 10, 10, HopSide::Storage, 500_000);
        }
        assert_eq!(t.choose("a:1", 10), HopSide::Compute);
        assert_eq!(t.snapshot().len(), 3);
    }

    #[test]
    fn a_hot_shard_expands_nothing_while_the_others_keep_their_parts() {
        let t = HopTable::default();
        for shard in ["a:1", "b:1"] {
            t.record(shard, 10, 10, HopSide::Storage, 10_000);
            t.record(shard, 10, 10, HopSide::Compute, 50_000);
        }
        t.set_load("a:1", 0.97);
        t.set_load("b:1", 0.30);
        let picks = |shard| {
            (0..32)
                .filter(|_| t.choose(shard, 10) == HopSide::Storage)
                .count()
        };
        // Hot: not even the exploring choices go storage-side (the load is read, not guessed).
        assert_eq!(picks("a:1"), 0);
        assert!(picks("b:1") >= 29);
        // A reading a little under the mark leaves it hot; well under, its parts come back.
        t.set_load("a:1", 0.6);
        assert!(t.hot("a:1"));
        assert_eq!(picks("a:1"), 0);
        t.set_load("a:1", 0.10);
        assert!(!t.hot("a:1"));
        assert!(picks("a:1") >= 29);
        assert_eq!(t.load("b:1"), Some(0.30));
        // One reader per period.
        assert!(t.load_due());
        assert!(!t.load_due());
    }
}
