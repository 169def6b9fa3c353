//! `khop` on a Redis Cluster, hop by hop: each hop's frontier is split by the shard serving each
//! vertex, and each part is either expanded storage-side on its shard (one `neighbours`
//! invocation there) or fetched compute-side (one multi-get there), every part of a hop in flight
//! at once: a hop costs one round trip per shard it touches, whichever side expands it. The
//! result is the single node's, exactly.
//!
//! Which side expands a part is [`HopMode`]'s: always storage-side, or chosen per part by the
//! [`HopTable`]. Per shard, the table keeps a part size from which parts are expanded there
//! (Wukong's rule: expand where the data lives when the part is large, pull it when it is small)
//! and moves it by trials, toward what made all that shard's parts cheaper per vertex: measured,
//! not assumed (see [`Climb`] for why not each side's own cost). A shard whose data-plane
//! threads are saturated (`AUTOLOC.STATS`'s busy share, read from every master every
//! [`LOAD_EVERY`] by [`crate::Runtime`]) is hot: its parts are expanded compute-side while it
//! stays so, and the other shards keep theirs; a shard slow to expand for any other reason
//! loses parts through what they cost.

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
    /// Each part where the [`HopTable`] says: by its size, from the shard's threshold.
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

/// Parts whose sizes fall in one power of two share a bucket: bucket b holds sizes
/// 2^(b-1)..2^b.
fn bucket(n: usize) -> u32 {
    usize::BITS - n.max(1).leading_zeros()
}

/// Buckets of part sizes, and the thresholds past them: a threshold of `BUCKETS` sends every
/// part compute-side.
const BUCKETS: usize = usize::BITS as usize + 1;
/// Choices per period of a round; a round is four periods, the incumbent threshold's, the
/// trial's twice, the incumbent's again (so that a drift of the load over the round weighs on
/// both alike).
const PERIOD: u64 = 32;
/// Which threshold each period of a round uses: 0 the incumbent, 1 the trial.
const ROUND: [usize; 4] = [0, 1, 1, 0];
/// How much cheaper per vertex the trial must be to replace the incumbent.
const MARGIN: f64 = 0.05;
/// The most rounds a settled threshold runs between trials (a power of two).
const MAX_REST: u32 = 8;
/// Every this many trials, the far end the trial's way is tried instead of the neighbour: where
/// parts come in many sizes, moving one bucket changes a round's cost less than [`MARGIN`]
/// though moving them all would change it more (R-MAT at loopback settled with parts of 4 or 8
/// vertices storage-side, 0.7x the throughput of all compute-side).
const FAR_EVERY: u64 = 3;

/// One shard's threshold, and the round that tries its neighbour: a part goes storage-side when
/// its size's bucket is at least the threshold (Wukong's rule: expand where the data lives when
/// the part is large, pull it when it is small), and the threshold climbs toward what made the
/// traversals this shard had parts in cheaper: their wall time per vertex expanded (a trimmed
/// mean over the traversals, each weighing alike: summed walls over summed vertices let a few
/// hubs' traversals decide, and on R-MAT the threshold wandered to compute-side where storage
/// was 1.5x faster).
///
/// Why whole traversals, and not what each part cost on its side: parts choosing by their own
/// cost settle where both sides cost a part the same (all parts in flight together share the
/// shard's lock and the client's threads), which is not where traversals cost least. A part
/// expanded storage-side holds Redis's lock for the whole expansion and slows every request
/// queued behind it, compute-side or not; it also goes on to the next hop, which shrinks the
/// parts after it; a part expanded here takes the client's threads from the others. Measured
/// on a 3-shard loopback cluster (`bench-cluster`, khop k=2 on social.json), parts choosing by
/// their own cost went 61% storage-side, at the throughput of all storage-side, where all
/// compute-side was 19% faster. In a closed loop (a fixed number of traversals in flight), the
/// wall time of a traversal is what its throughput is the inverse of.
#[derive(Debug, Clone)]
struct Climb {
    /// Parts whose bucket is at least this go storage-side.
    threshold: usize,
    /// Which way the next trial goes: toward compute (a higher threshold) or storage.
    up: bool,
    /// This round's number, its trial threshold and how many choices it made.
    round: u64,
    trial: Option<usize>,
    choices: u64,
    /// Per threshold of the round (incumbent, trial): the wall time per vertex expanded of each
    /// traversal with a part chosen under it, ns.
    cost: [Vec<f64>; 2],
    /// Parts chosen for lately, by bucket (halved every round), so that a trial moves the
    /// threshold past a bucket that has parts.
    sizes: [u64; BUCKETS],
    /// Trials rejected in a row, and rounds left to run without one: a threshold that neither
    /// neighbour beat rests for 1, 2, 4, then [`MAX_REST`] rounds between trials, since half of
    /// a trial round's parts run under the trial's threshold (on one shard at a 100 us round
    /// trip, trying compute-side every round cost a fifth of the throughput).
    rejected: u32,
    rest: u32,
    /// Trials begun, so that every [`FAR_EVERY`]th tries the far end.
    trials: u64,
}

impl Default for Climb {
    fn default() -> Climb {
        Climb {
            // Storage-side first: a shard expands every part until the trials say otherwise.
            threshold: 1,
            up: true,
            round: 0,
            trial: None,
            choices: 0,
            cost: [Vec::new(), Vec::new()],
            sizes: [0; BUCKETS],
            rejected: 0,
            rest: 0,
            trials: 0,
        }
    }
}

impl Climb {
    /// The neighbouring threshold the way `up` says that sends some part seen lately to the
    /// other side, if any.
    fn neighbour(&self, up: bool) -> Option<usize> {
        let t = self.threshold;
        if up {
            // Raising it past the smallest bucket at or above it that has parts.
            (t..BUCKETS).find(|&b| self.sizes[b] > 0).map(|b| b + 1)
        } else {
            // Lowering it to the largest bucket below it that has parts.
            (0..t.min(BUCKETS)).rev().find(|&b| self.sizes[b] > 0)
        }
    }

    /// The next trial the way `up` says: every [`FAR_EVERY`]th trial the far end (every part
    /// compute-side, or every part storage-side), the others the neighbour; `None` if no part
    /// seen lately would change sides.
    fn next_trial(&mut self, up: bool) -> Option<usize> {
        let near = self.neighbour(up)?;
        self.trials += 1;
        Some(match (self.trials.is_multiple_of(FAR_EVERY), up) {
            (true, true) => BUCKETS,
            (true, false) => 1,
            (false, _) => near,
        })
    }

    /// Ends a round: the trial replaces the incumbent if it was cheaper per vertex by
    /// [`MARGIN`], and the next trial goes on that way; else the next goes the other way.
    fn end_round(&mut self) {
        if let (Some(trial), Some(was), Some(now)) = (
            self.trial,
            trimmed_mean(&mut self.cost[0]),
            trimmed_mean(&mut self.cost[1]),
        ) {
            if now < was * (1.0 - MARGIN) {
                self.threshold = trial;
                self.rejected = 0;
            } else {
                self.up = !self.up;
                self.rejected += 1;
                if self.rejected >= 2 {
                    self.rest = 1 << (self.rejected - 2).min(MAX_REST.trailing_zeros());
                }
            }
        } else if self.trial.is_none() {
            self.rest = self.rest.saturating_sub(1);
        }
        self.round += 1;
        self.trial = None;
        self.choices = 0;
        self.cost.iter_mut().for_each(Vec::clear);
        for n in &mut self.sizes {
            *n /= 2;
        }
    }
}

/// The mean of `samples` (sorted here) without their lowest and highest tenth, if any: each
/// traversal weighs alike, and a few very long ones (a hub's) do not decide a round.
fn trimmed_mean(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable_by(f64::total_cmp);
    let cut = samples.len() / 10;
    let kept = &samples[cut..samples.len() - cut];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// The side chosen for a part, and the round and threshold it was chosen under, so that what it
/// cost counts for that threshold ([`HopTable::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Where the part is expanded.
    pub side: HopSide,
    /// `(round, 0 incumbent / 1 trial)`; `None` for a part not chosen by the climb (a hot
    /// shard's).
    arm: Option<(u64, usize)>,
}

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

/// Per shard, the part size from which its parts are expanded storage-side, and the round that
/// tries the next; and each shard's load: the placement table of hops. Shared by the runtimes of
/// one process ([`crate::Runtime::try_clone`]).
#[derive(Debug, Default)]
pub struct HopTable {
    climbs: Mutex<HashMap<(&'static str, String), Climb>>,
    loads: Mutex<Loads>,
}

impl HopTable {
    fn climbs(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String), Climb>> {
        self.climbs.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The side to expand a part of `n` vertices of `function` (`khop`, `pagerank`) on `shard`
    /// (`host:port`): compute-side while the shard is hot, else storage-side if the part is as
    /// large as the threshold of `function` on the shard (the incumbent's, or in a trial period
    /// the trial's).
    pub fn choose(&self, function: &'static str, shard: &str, n: usize) -> Choice {
        if self.hot(shard) {
            return Choice {
                side: HopSide::Compute,
                arm: None,
            };
        }
        let mut climbs = self.climbs();
        let c = climbs.entry((function, shard.to_string())).or_default();
        let b = bucket(n) as usize;
        c.sizes[b] += 1;
        if c.trial.is_none() && c.rest == 0 {
            c.trial = c.next_trial(c.up).or_else(|| {
                c.up = !c.up;
                c.next_trial(c.up)
            });
        }
        let arm = match c.trial {
            Some(_) => ROUND[(c.choices / PERIOD) as usize % ROUND.len()],
            None => 0,
        };
        let threshold = match arm {
            1 => c.trial.unwrap_or(c.threshold),
            _ => c.threshold,
        };
        let choice = Choice {
            side: if b >= threshold {
                HopSide::Storage
            } else {
                HopSide::Compute
            },
            arm: Some((c.round, arm)),
        };
        c.choices += 1;
        if c.choices == PERIOD * ROUND.len() as u64 {
            c.end_round();
        }
        choice
    }

    /// Records that a traversal with a part on `shard` chosen by `choice` took `wall_ns`,
    /// expanding `expanded` vertices over its hops. One of a round already ended (one long in
    /// flight) counts for nothing.
    pub fn record(
        &self,
        function: &'static str,
        shard: &str,
        choice: Choice,
        expanded: usize,
        wall_ns: u64,
    ) {
        let Some((round, arm)) = choice.arm else {
            return;
        };
        let mut climbs = self.climbs();
        let key = (function, shard.to_string());
        if let Some(c) = climbs.get_mut(&key).filter(|c| c.round == round) {
            c.cost[arm].push(wall_ns as f64 / expanded.max(1) as f64);
        }
    }

    /// Every function's threshold on every shard, as the smallest part size expanded
    /// storage-side (`None`: every part compute-side), sorted.
    pub fn thresholds(&self) -> Vec<(&'static str, String, Option<usize>)> {
        let mut rows: Vec<_> = self
            .climbs()
            .iter()
            .map(|((function, shard), c)| {
                let from = match c.threshold {
                    t if t >= BUCKETS => None,
                    t => Some(1usize << t.saturating_sub(1)),
                };
                (*function, shard.clone(), from)
            })
            .collect();
        rows.sort();
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

/// The parts of one traversal's rounds: how its vertices split by shard, which side expands
/// each part (and under which threshold of the [`HopTable`]), and, once it is done, what it
/// cost, told to the thresholds its parts were chosen under.
pub(crate) struct Parts<'t, 's> {
    topology: &'t Topology,
    sessions: &'t [&'s RefCell<Session>],
    store: &'t ClusterStore<'s>,
    table: &'t HopTable,
    mode: HopMode,
    function: &'static str,
    /// The thresholds its parts were chosen under, by shard.
    chosen: RefCell<Vec<(&'t str, Choice)>>,
    began: Instant,
}

impl<'t, 's> Parts<'t, 's> {
    /// The parts of a traversal of `function` over the shards of `topology` (`sessions` in its
    /// order; `store` reads through them), each part's side as `mode` says, starting now.
    pub(crate) fn new(
        topology: &'t Topology,
        sessions: &'t [&'s RefCell<Session>],
        store: &'t ClusterStore<'s>,
        table: &'t HopTable,
        mode: HopMode,
        function: &'static str,
    ) -> Parts<'t, 's> {
        Parts {
            topology,
            sessions,
            store,
            table,
            mode,
            function,
            chosen: RefCell::new(Vec::new()),
            began: Instant::now(),
        }
    }

    /// `vertices` by the shard serving each, in shard order.
    fn split(&self, vertices: &[u32]) -> Result<Vec<(usize, Vec<u32>)>, FnError> {
        let shards: Vec<usize> = vertices
            .iter()
            .map(|&v| self.store.shard(&vertex_key(v)))
            .collect::<Result<_, _>>()?;
        let mut parts: Vec<(usize, Vec<u32>)> = autoloc_dataplane::slot::group(shards)
            .into_iter()
            .map(|(shard, places)| (shard, places.iter().map(|&i| vertices[i]).collect()))
            .collect();
        parts.sort_by_key(|(s, _)| *s);
        Ok(parts)
    }

    /// The side of a part of `n` vertices on `shard`, noted in `hop`; its session.
    fn side(&self, shard: usize, n: usize, hop: &mut Hop) -> (HopSide, &'s RefCell<Session>) {
        let addr = self.topology.shards[shard].master.as_str();
        let side = match self.mode {
            HopMode::Storage => HopSide::Storage,
            HopMode::Choose => {
                let choice = self.table.choose(self.function, addr, n);
                let mut chosen = self.chosen.borrow_mut();
                if !chosen.contains(&(addr, choice)) {
                    chosen.push((addr, choice));
                }
                choice.side
            }
        };
        hop.parts.push((addr.to_string(), side));
        (side, self.sessions[shard])
    }

    /// Bytes of its requests and replies so far, both sides: a hop's are the difference.
    fn bytes(&self, run: &RefCell<HopRun>) -> u64 {
        self.store.cost().bytes + run.borrow().storage_bytes
    }

    /// Tells the thresholds its parts were chosen under what the traversal cost: its wall time
    /// for the vertices its hops expanded.
    fn done(self, run: &RefCell<HopRun>) {
        let expanded: usize = run.borrow().hops.iter().map(|h| h.frontier + h.ahead).sum();
        let wall = self.began.elapsed().as_nanos() as u64;
        for (shard, choice) in self.chosen.into_inner() {
            self.table
                .record(self.function, shard, choice, expanded, wall);
        }
    }
}

/// Of the outcomes of a round's parts, the error one node's read of them all would give: a key
/// of another type fails the read before any value is looked at, so its `WRONGTYPE` wins over
/// another part's `BADVALUE`.
fn first_error<T>(found: &[Result<T, FnError>]) -> Option<FnError> {
    let wrong_type = |e: &FnError| e.code() == autoloc_functions::ErrorCode::WrongType;
    let mut failed: Option<&FnError> = None;
    for e in found.iter().filter_map(|r| r.as_ref().err()) {
        if failed.is_none_or(|f| wrong_type(e) && !wrong_type(f)) {
            failed = Some(e);
        }
    }
    failed.cloned()
}

/// The k-hop neighbourhood of `start` (sorted, `start` excluded: `khop`'s result), hop by hop
/// over the shards of `parts_of`.
///
/// A part expanded storage-side while another hop is to come goes on where it can (`expand`):
/// its shard also expands the vertices of the next hop that it serves. Those are not sent again,
/// and their neighbours join the hop after. Why that stays exact: a vertex of the next hop is at
/// distance d+1 or less, so the neighbours of one that is new are at d+2 or less, and they are
/// counted at d+2 only if no shorter path put them in `seen` first; a vertex expanded ahead that
/// was already seen adds only vertices already seen. On one shard, k=2 is one round trip.
pub(crate) async fn khop(
    parts_of: Parts<'_, '_>,
    start: u32,
    k: u32,
    run: &RefCell<HopRun>,
) -> Result<Vec<u32>, FnError> {
    let store = parts_of.store;
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
        let parts = parts_of.split(&frontier)?;
        let mut hop = Hop {
            frontier: frontier.len(),
            ..Hop::default()
        };
        let bytes_before = parts_of.bytes(run);
        let expansions: Vec<Task<'_, Result<Expansion, FnError>>> = parts
            .iter()
            .map(|(shard, vertices)| {
                let (side, session) = parts_of.side(*shard, vertices.len(), &mut hop);
                Box::pin(async move {
                    match (side, depth) {
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
                    }
                }) as Task<'_, _>
            })
            .collect();
        let found = join_all(expansions).await;
        if let Some(e) = first_error(&found) {
            return Err(e);
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
        hop.bytes = parts_of.bytes(run) - bytes_before;
        run.borrow_mut().hops.push(hop);
        frontier = next;
    }
    parts_of.done(run);
    Ok(autoloc_functions::builtins::khop::neighbourhood(
        seen, start,
    ))
}

/// `pagerank <start> <iterations> [<dest-prefix>]` over the shards of `parts_of`, its
/// neighbourhood read in two rounds of parts: the start on its shard (storage-side `induced
/// <start>`: the start's subgraph, and the edges inside it of the vertices that shard serves;
/// or compute-side, the start's adjacency), then the rest of the subgraph by shard, every part
/// at once (storage-side `induced <start> <vertex>...`, the edges inside the subgraph of the
/// vertices the shard serves; or compute-side, a multi-get of their adjacency). The ranking,
/// and the writes of a `<dest-prefix>`, are done here; the scores are the single node's,
/// exactly (the same subgraph, ranked in the same order).
pub(crate) async fn pagerank(
    parts_of: Parts<'_, '_>,
    args: &[Vec<u8>],
    run: &RefCell<HopRun>,
) -> Result<Vec<(u32, f64)>, FnError> {
    use autoloc_functions::builtins::pagerank as pr;
    let (start, iterations, dest) = pr::parse(args)?;
    let store = parts_of.store;
    // Each member's edges inside the subgraph, as the shards serving them found them.
    let mut edges: HashMap<u32, Vec<u32>> = HashMap::new();
    let add = |found: Induced, edges: &mut HashMap<u32, Vec<u32>>| {
        for (v, e) in found.served.into_iter().zip(found.edges) {
            edges.entry(v).or_insert(e);
        }
    };

    // The first round: the start, on its shard.
    let mut hop = Hop {
        frontier: 1,
        ..Hop::default()
    };
    let bytes_before = parts_of.bytes(run);
    let shard = store.shard(&vertex_key(start))?;
    let (side, session) = parts_of.side(shard, 1, &mut hop);
    let members = match side {
        HopSide::Storage => {
            let args = [vertex_key(start)];
            let mut found = induced_there(session, store, &args, start, None, run).await?;
            let members = std::mem::take(&mut found.members);
            add(found, &mut edges);
            members
        }
        HopSide::Compute => pr::members(store, start).await?,
    };
    hop.bytes = parts_of.bytes(run) - bytes_before;
    run.borrow_mut().hops.push(hop);

    // The second: the members whose edges are still to read, by shard.
    let unread = |edges: &HashMap<u32, Vec<u32>>| -> Vec<u32> {
        members
            .iter()
            .copied()
            .filter(|v| !edges.contains_key(v))
            .collect()
    };
    let rest = unread(&edges);
    if !rest.is_empty() {
        let mut hop = Hop {
            frontier: rest.len(),
            ..Hop::default()
        };
        let bytes_before = parts_of.bytes(run);
        let parts = parts_of.split(&rest)?;
        let members = &members;
        let reads: Vec<Task<'_, Result<Induced, FnError>>> = parts
            .iter()
            .map(|(shard, vertices)| {
                let (side, session) = parts_of.side(*shard, vertices.len(), &mut hop);
                Box::pin(async move {
                    match side {
                        HopSide::Storage => {
                            let args: Vec<Vec<u8>> = std::iter::once(start)
                                .chain(members.iter().copied().filter(|&v| v != start))
                                .map(vertex_key)
                                .collect();
                            induced_there(
                                session,
                                store,
                                &args,
                                start,
                                Some((members, vertices)),
                                run,
                            )
                            .await
                        }
                        HopSide::Compute => Ok(Induced {
                            members: Vec::new(),
                            served: vertices.clone(),
                            edges: pr::edges_within(store, members, vertices).await?,
                        }),
                    }
                }) as Task<'_, _>
            })
            .collect();
        let found = join_all(reads).await;
        if let Some(e) = first_error(&found) {
            return Err(e);
        }
        for f in found.into_iter().flatten() {
            add(f, &mut edges);
        }
        hop.bytes = parts_of.bytes(run) - bytes_before;
        run.borrow_mut().hops.push(hop);
    }
    // A member no shard served (its slot moved since the map was read): read here, through
    // the redirections.
    let unserved = unread(&edges);
    if !unserved.is_empty() {
        let found = pr::edges_within(store, &members, &unserved).await?;
        for (v, e) in unserved.into_iter().zip(found) {
            edges.insert(v, e);
        }
    }
    parts_of.done(run);
    let by_member: Vec<Vec<u32>> = members
        .iter()
        .map(|v| edges.remove(v).unwrap_or_default())
        .collect();
    let scored = pr::rank(members, &by_member, iterations);
    pr::write_scores(store, dest, &scored).await?;
    Ok(scored)
}

/// What `induced` gave: the start's subgraph (when it found it), the vertices it served, and
/// their edges inside the subgraph.
#[derive(Debug, Default)]
struct Induced {
    members: Vec<u32>,
    served: Vec<u32>,
    edges: Vec<Vec<u32>>,
}

/// `induced` of `args` on its shard (the start alone, or the start and the rest of its
/// subgraph); a part the shard pushes back is finished here from the read set it hands back:
/// the start's subgraph and its edges, or with `given` (the subgraph, and the part's vertices),
/// the part's edges.
async fn induced_there(
    session: &RefCell<Session>,
    store: &ClusterStore<'_>,
    args: &[Vec<u8>],
    start: u32,
    given: Option<(&[u32], &[u32])>,
    run: &RefCell<HopRun>,
) -> Result<Induced, FnError> {
    use autoloc_functions::builtins::pagerank as pr;
    match invoke_there(session, "induced", args, run).await? {
        There::Done(result) => match Output::decode(OutputKind::Lists, &result)? {
            Output::Lists(lists) if lists.len() >= 2 && lists.len() == 2 + lists[1].len() => {
                let mut lists = lists.into_iter();
                let members = lists.next().unwrap_or_default();
                let served = lists.next().unwrap_or_default();
                Ok(Induced {
                    members,
                    served,
                    edges: lists.collect(),
                })
            }
            other => Err(FnError::Malformed(format!("induced gave {other:?}"))),
        },
        There::PushedBack(read_set) => {
            let here = ReadSetStore::new(read_set, store);
            let (members, vertices) = match given {
                Some((members, vertices)) => (members.to_vec(), vertices.to_vec()),
                None => {
                    let members = pr::members(&here, start).await?;
                    (members.clone(), members)
                }
            };
            let edges = pr::edges_within(&here, &members, &vertices).await?;
            Ok(Induced {
                members: if given.is_some() { Vec::new() } else { members },
                served: vertices,
                edges,
            })
        }
    }
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

/// What a storage-side invocation of a part gave: its result, or the read set of a pushback.
enum There {
    Done(Vec<u8>),
    PushedBack(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

/// Invokes `function` with `args` on `session`'s shard, counting it and what it cost in `run`.
async fn invoke_there(
    session: &RefCell<Session>,
    function: &str,
    args: &[Vec<u8>],
    run: &RefCell<HopRun>,
) -> Result<There, FnError> {
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let invoke = Message::Invoke {
        function,
        args: List::new(&argv),
    };
    let r = session::request(session, &invoke).await?;
    let mut run = run.borrow_mut();
    run.invokes += 1;
    run.storage_bytes += r.bytes;
    match r.reply {
        session::Reply::Invoked { result, cost } => {
            run.storage += cost;
            Ok(There::Done(result))
        }
        session::Reply::Pushback { read_set, cost, .. } => {
            run.storage += cost;
            Ok(There::PushedBack(read_set))
        }
        other => Err(other.into_error("Invoke")),
    }
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
    match invoke_there(session, function, args, run).await? {
        There::Done(result) => {
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
        There::PushedBack(read_set) => {
            let here = ReadSetStore::new(read_set, store);
            match function {
                "khop" => start_here(&here, vertices[0]).await.map(next_only),
                // Going on here too: the compute side reads every shard (rare: a pushback).
                "expand" => autoloc_functions::builtins::neighbours::expand(&here, vertices).await,
                _ => neighbours(&here, vertices).await.map(next_only),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `rounds` rounds of parts of `sizes` (in turn) on `shard`, each costing what `cost`
    /// says for its side and size; the parts that went storage-side in the last round.
    fn climb(
        t: &HopTable,
        shard: &str,
        sizes: &[usize],
        rounds: usize,
        cost: impl Fn(HopSide, usize) -> u64,
    ) -> usize {
        let per_round = (PERIOD as usize) * ROUND.len();
        let mut storage = 0;
        for i in 0..rounds * per_round {
            let n = sizes[i % sizes.len()];
            let choice = t.choose("khop", shard, n);
            if i >= (rounds - 1) * per_round && choice.side == HopSide::Storage {
                storage += 1;
            }
            t.record("khop", shard, choice, n, cost(choice.side, n));
        }
        storage
    }

    #[test]
    fn a_shard_moves_its_parts_to_the_side_where_all_its_parts_cost_less() {
        let t = HopTable::default();
        // Storage-side first.
        assert_eq!(t.choose("khop", "a:1", 10).side, HopSide::Storage);
        // Compute-side is cheaper for every size: the threshold climbs past every size seen,
        // and only a trial period, now and then, sends the largest parts back.
        let sizes = [1, 3, 10, 40];
        let compute_cheaper = |side, n: usize| match side {
            HopSide::Storage => 2_000 * n as u64,
            HopSide::Compute => 1_000 * n as u64,
        };
        let storage = climb(&t, "a:1", &sizes, 40, compute_cheaper);
        assert_eq!(t.thresholds(), vec![("khop", "a:1".to_string(), Some(64))]);
        assert!(storage <= 16, "{storage}");
        // Settled, it tries the other side seldom: of 18 rounds, at most 3 hold a trial (the
        // rest grows to 8 rounds between trials), each sending 16 parts storage-side.
        let mut storage = 0;
        for _ in 0..18 {
            storage += climb(&t, "a:1", &sizes, 1, compute_cheaper);
        }
        assert!(storage <= 3 * 16, "{storage}");
        // Another shard, and another function, have thresholds of their own.
        assert_eq!(t.choose("khop", "b:1", 10).side, HopSide::Storage);
        assert_eq!(t.choose("pagerank", "a:1", 10).side, HopSide::Storage);
        // The costs turn: the threshold comes back down, every part but the smallest
        // storage-side (those cost the shard's parts too little to tell, under the margin).
        let storage_cheaper = |side, n: usize| match side {
            HopSide::Storage => 1_000 * n as u64,
            HopSide::Compute => 2_000 * n as u64,
        };
        let storage = climb(&t, "a:1", &sizes, 40, storage_cheaper);
        assert_eq!(t.thresholds().len(), 3);
        let from = t.thresholds()[0].2;
        assert!(from.is_some_and(|n| n <= 2), "{from:?}");
        assert!(storage >= 64, "{storage}");
    }

    #[test]
    fn a_side_better_for_all_sizes_together_is_found_though_each_size_alone_moves_too_little() {
        // Ten sizes, compute-side 30% cheaper for each: moving one size changes a round's cost
        // by 3%, under the margin; moving them all, by 30%.
        let t = HopTable::default();
        let sizes: Vec<usize> = (0..10).map(|b| 1 << b).collect();
        let compute_cheaper = |side, n: usize| match side {
            HopSide::Storage => 1_400 * n as u64,
            HopSide::Compute => 1_000 * n as u64,
        };
        climb(&t, "a:1", &sizes, 60, compute_cheaper);
        assert_eq!(t.thresholds()[0].2, None, "{:?}", t.thresholds());
    }

    #[test]
    fn large_parts_go_storage_side_and_small_ones_compute_side_where_that_costs_least() {
        // A storage-side part pays a fixed cost (a request's share of the shard's lock) and
        // little per vertex; a compute-side one, more per vertex: the sizes cross at 56.
        let t = HopTable::default();
        let cost = |side, n: usize| match side {
            HopSide::Storage => 50_000 + 100 * n as u64,
            HopSide::Compute => 1_000 * n as u64,
        };
        climb(&t, "a:1", &[1, 16, 64, 256], 60, cost);
        let from = t.thresholds()[0].2.expect("large parts storage-side");
        assert!(16 < from && from <= 64, "{from}");
    }

    #[test]
    fn a_hot_shard_expands_nothing_while_the_others_keep_their_parts() {
        let t = HopTable::default();
        t.set_load("a:1", 0.97);
        t.set_load("b:1", 0.30);
        let picks = |shard| {
            (0..32)
                .filter(|_| t.choose("khop", shard, 10).side == HopSide::Storage)
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
