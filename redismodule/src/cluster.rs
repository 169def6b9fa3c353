//! Which slots this node serves, when it is a node of a Redis Cluster: every key the module reads
//! or writes is checked here ([`check`], from [`crate::store`]'s one read path and one write
//! path), so that a key of another shard, or one that has left a slot being migrated, is never
//! read as missing nor written where no client would find it: it fails with
//! [`Error::WrongShard`], naming its slot and the node that serves it.
//!
//! Redis 7.0 gives a module no slot API, so the module keeps its own copy of this node's view,
//! read from `CLUSTER NODES` (which also shows the slots this node is migrating and importing),
//! and reads it again:
//! - after any `CLUSTER` command this node runs (`SETSLOT`, `ADDSLOTS`, `FAILOVER`, ...: the
//!   command filter of [`crate::pause`] marks the copy stale before the command runs, and it is
//!   read again at the first check after, which cannot come before the command has run, as both
//!   hold Redis's lock);
//! - when it is older than [`MAX_AGE`] (what the cluster bus changes without a command here: a
//!   replica that promoted itself);
//! - before any verdict that a key is not served here, if it is older than [`RECHECK`].
//!
//! The rule, for a key in slot `s`:
//! - `s` is this node's and not migrating: served (a missing key is missing);
//! - `s` is this node's and migrating to `n`: a key that is here is served; a missing one may
//!   have moved: `WRONGSHARD s n`;
//! - `s` is being imported from `n`: a key already here is served (a key is moved whole, so the
//!   copy here is the only one); a missing one may not have come yet: `WRONGSHARD s n`;
//! - `s` is another node's `n`: `WRONGSHARD s n`.
//!
//! A node that is a replica serves no slot. Outside a cluster nothing is checked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use autoloc_dataplane::slot::{key_slot, SLOTS};
use autoloc_functions::Error;
use redis_module::{Context, ContextFlags, RedisValue};

/// The longest a copy is used without reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// A copy older than this is read again before it says a key is served elsewhere.
pub const RECHECK: Duration = Duration::from_millis(10);

/// No node serves the slot.
const NOBODY: u16 = u16::MAX;

/// Whether this server runs in cluster mode (set at load; it cannot change).
static ENABLED: OnceLock<bool> = OnceLock::new();
/// Set by the command filter when a `CLUSTER` command is about to run.
static STALE: AtomicBool = AtomicBool::new(true);
/// The copy last read.
static VIEW: Mutex<Option<Arc<View>>> = Mutex::new(None);
/// How many times the view was read (`AUTOLOC.STATS`'s `cluster_view_reads`).
static READS: AtomicU64 = AtomicU64::new(0);

/// How many times this node's view of the slots was read through `CLUSTER NODES`.
pub fn view_reads() -> u64 {
    READS.load(Ordering::Relaxed)
}

/// Notes whether the server is a cluster node (from the module's init).
pub fn init(ctx: &Context) {
    let _ = ENABLED.set(ctx.get_flags().contains(ContextFlags::CLUSTER));
}

/// Whether the server is a node of a Redis Cluster.
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// The `CLUSTER` subcommands that only read the cluster's state: they leave the view as it is.
pub const READ_ONLY: [&str; 15] = [
    "nodes",
    "shards",
    "slots",
    "info",
    "myid",
    "myshardid",
    "keyslot",
    "countkeysinslot",
    "getkeysinslot",
    "links",
    "replicas",
    "slaves",
    "count-failure-reports",
    "help",
    "saveconfig",
];

/// Marks the copy stale: a `CLUSTER` command that may change it is about to run (from the
/// command filter).
pub fn invalidate() {
    STALE.store(true, Ordering::Release);
}

/// This node's view of the slots, as `CLUSTER NODES` showed it.
#[derive(Debug)]
pub struct View {
    /// Per slot, the index in `nodes` of the master serving it, or [`NOBODY`].
    owner: Box<[u16]>,
    /// Nodes as `host:port`.
    nodes: Vec<String>,
    /// This node's index in `nodes`, if it is a master.
    me: Option<u16>,
    /// Slots this node is migrating, to the node at the index.
    migrating: Vec<(u16, u16)>,
    /// Slots this node is importing, from the node at the index.
    importing: Vec<(u16, u16)>,
    read_at: Instant,
}

/// Where a key stands on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served here.
    Here,
    /// Served by the node `host:port` (empty if no node serves the slot).
    Elsewhere(String),
}

impl View {
    /// Parses `CLUSTER NODES`.
    pub fn parse(text: &str) -> Result<View, String> {
        let mut ids: Vec<(String, String)> = Vec::new();
        let mut lines = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8 {
                return Err(format!("CLUSTER NODES line '{line}'"));
            }
            // `ip:port@cport[,hostname]`
            let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
            ids.push((fields[0].to_string(), addr.to_string()));
            lines.push(fields);
        }
        let index = |id: &str| ids.iter().position(|(i, _)| i == id).map(|i| i as u16);
        let mut owner = vec![NOBODY; SLOTS].into_boxed_slice();
        let (mut me, mut migrating, mut importing) = (None, Vec::new(), Vec::new());
        for (i, fields) in lines.iter().enumerate() {
            let flags = fields[2];
            let is_master = flags.split(',').any(|f| f == "master");
            let myself = flags.split(',').any(|f| f == "myself");
            if myself && is_master {
                me = Some(i as u16);
            }
            if !is_master {
                continue;
            }
            for range in &fields[8..] {
                if let Some(inner) = range.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                    // `[slot->-id]` migrating, `[slot-<-id]` importing (only on this node's line).
                    let (slot, other, out) =
                        match (inner.split_once("->-"), inner.split_once("-<-")) {
                            (Some((s, id)), _) => (s, id, true),
                            (_, Some((s, id))) => (s, id, false),
                            _ => return Err(format!("CLUSTER NODES slot '{range}'")),
                        };
                    let slot: u16 = slot.parse().map_err(|_| format!("slot '{range}'"))?;
                    let Some(other) = index(other) else { continue };
                    if out {
                        migrating.push((slot, other));
                    } else {
                        importing.push((slot, other));
                    }
                    continue;
                }
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) else {
                    return Err(format!("CLUSTER NODES slot range '{range}'"));
                };
                if lo > hi || hi >= SLOTS {
                    return Err(format!("CLUSTER NODES slot range '{range}'"));
                }
                owner[lo..=hi].fill(i as u16);
            }
        }
        Ok(View {
            owner,
            nodes: ids.into_iter().map(|(_, addr)| addr).collect(),
            me,
            migrating,
            importing,
            read_at: Instant::now(),
        })
    }

    fn node(&self, index: u16) -> String {
        self.nodes
            .get(usize::from(index))
            .cloned()
            .unwrap_or_default()
    }

    /// Where a key of `slot` stands, `present` or not on this node.
    pub fn verdict(&self, slot: u16, present: bool) -> Verdict {
        let owner = self.owner[usize::from(slot)];
        let find = |list: &[(u16, u16)]| list.iter().find(|(s, _)| *s == slot).map(|&(_, n)| n);
        if let Some(from) = find(&self.importing) {
            return if present {
                Verdict::Here
            } else {
                Verdict::Elsewhere(self.node(from))
            };
        }
        if self.me == Some(owner) {
            return match find(&self.migrating) {
                Some(to) if !present => Verdict::Elsewhere(self.node(to)),
                _ => Verdict::Here,
            };
        }
        Verdict::Elsewhere(if owner == NOBODY {
            String::new()
        } else {
            self.node(owner)
        })
    }
}

/// Reads the view anew through `CLUSTER NODES`.
fn read(ctx: &Context) -> Result<Arc<View>, Error> {
    let text = match ctx.call("CLUSTER", &["NODES"]) {
        Ok(RedisValue::SimpleString(s) | RedisValue::BulkString(s)) => s,
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(RedisValue::VerbatimString((_, b))) => String::from_utf8_lossy(&b).into_owned(),
        Ok(other) => return Err(Error::Io(format!("CLUSTER NODES replied {other:?}"))),
        Err(e) => return Err(Error::Io(format!("CLUSTER NODES: {e}"))),
    };
    READS.fetch_add(1, Ordering::Relaxed);
    let view = Arc::new(View::parse(&text).map_err(Error::Io)?);
    *VIEW.lock().unwrap_or_else(|p| p.into_inner()) = Some(view.clone());
    Ok(view)
}

/// The view to check against: the copy, or a new one if it is stale or older than `max_age`.
fn view(ctx: &Context, max_age: Duration) -> Result<Arc<View>, Error> {
    let copy = VIEW.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match copy {
        Some(v) if v.read_at.elapsed() <= max_age && !STALE.load(Ordering::Acquire) => Ok(v),
        _ => {
            STALE.store(false, Ordering::Release);
            read(ctx)
        }
    }
}

/// Whether a key named `name` would be served here if present (its slot is this node's, or
/// being imported); outside a cluster, every key. A read of it may still meet a slot migrating
/// away and fail with [`Error::WrongShard`]: this answers whether to try. The caller holds
/// Redis's lock.
pub fn serves(ctx: &Context, name: &[u8]) -> bool {
    !enabled() || view(ctx, MAX_AGE).is_ok_and(|v| v.verdict(key_slot(name), true) == Verdict::Here)
}

/// Checks that every key of `names` is served here, `present(i)` telling whether the `i`th is
/// on this node: [`Error::WrongShard`] for the first that is not. Nothing to check outside a
/// cluster. The caller holds Redis's lock.
pub fn check<N: AsRef<[u8]>>(
    ctx: &Context,
    names: &[N],
    present: impl Fn(usize) -> bool,
) -> Result<(), Error> {
    if !enabled() {
        return Ok(());
    }
    let mut view = view(ctx, MAX_AGE)?;
    let mut fresh = false;
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        let slot = key_slot(name);
        loop {
            match view.verdict(slot, present(i)) {
                Verdict::Here => break,
                Verdict::Elsewhere(_) if !fresh && view.read_at.elapsed() > RECHECK => {
                    view = read(ctx)?;
                    fresh = true;
                }
                Verdict::Elsewhere(node) => {
                    return Err(Error::WrongShard {
                        key: String::from_utf8_lossy(name).into_owned(),
                        slot,
                        node,
                    })
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461-<-bbb] [10->-ccc]
bbb 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922
ccc 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
ddd 127.0.0.1:7003@17003 slave aaa 0 0 1 connected
";

    #[test]
    fn a_nodes_listing_tells_each_slot() {
        let v = View::parse(NODES).unwrap();
        assert_eq!(v.verdict(0, false), Verdict::Here);
        assert_eq!(v.verdict(5460, true), Verdict::Here);
        // Migrating slot 10 to ccc: a key that is here is served, a missing one may have left.
        assert_eq!(v.verdict(10, true), Verdict::Here);
        assert_eq!(
            v.verdict(10, false),
            Verdict::Elsewhere("127.0.0.1:7002".into())
        );
        // Importing slot 5461 from bbb.
        assert_eq!(v.verdict(5461, true), Verdict::Here);
        assert_eq!(
            v.verdict(5461, false),
            Verdict::Elsewhere("127.0.0.1:7001".into())
        );
        assert_eq!(
            v.verdict(6000, true),
            Verdict::Elsewhere("127.0.0.1:7001".into())
        );
        assert_eq!(
            v.verdict(16383, false),
            Verdict::Elsewhere("127.0.0.1:7002".into())
        );
    }

    #[test]
    fn a_replica_serves_nothing() {
        let nodes = NODES.replace("myself,master", "master").replace(
            "ddd 127.0.0.1:7003@17003 slave",
            "ddd 127.0.0.1:7003@17003 myself,slave",
        );
        let v = View::parse(&nodes).unwrap();
        assert_eq!(
            v.verdict(0, true),
            Verdict::Elsewhere("127.0.0.1:7000".into())
        );
    }

    #[test]
    fn bad_listings_are_refused() {
        assert!(View::parse("aaa 127.0.0.1:7000@17000 myself,master").is_err());
        assert!(View::parse("a b myself,master - 0 0 1 connected 5-x").is_err());
        assert!(View::parse("a b myself,master - 0 0 1 connected 9-3").is_err());
    }
}
