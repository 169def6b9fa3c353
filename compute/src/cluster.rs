//! Redis Cluster on the compute side: the slot map ([`Topology`], from `CLUSTER SHARDS`), and
//! [`ClusterStore`], the `Store` through which a compute-side function reads and writes keys on
//! whichever shard serves them, one request per shard per store access, all in flight together.
//!
//! The map is read from any node, and read again when a request meets a key served elsewhere
//! (`WRONGSHARD`, Redis's own `MOVED`/`ASK`), a dead node, a busy cluster (`TRYAGAIN`,
//! `CLUSTERDOWN`), and every [`REFRESH_EVERY`]: see [`crate::Runtime`], which retries what failed
//! for those reasons on the new map.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use autoloc_dataplane::slot::{key_slot, SLOTS};
use autoloc_dataplane::{Connection, Frame, RedisUrl};
use autoloc_functions::{Error as FnError, ErrorCode, Store, StoreFuture, Visit};

use crate::session::{join_all, LinkStore, Session, StoreCost, Task};
use crate::{Error, Result};

/// How often the slot map is read again even when nothing failed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// One shard: a master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The master, `host:port`.
    pub master: String,
    /// Its replicas, `host:port`.
    pub replicas: Vec<String>,
    /// How many slots it serves.
    pub slots: usize,
}

/// The slot map of a cluster: its shards, and which serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The shards with a master that is up, in the order of their first slot.
    pub shards: Vec<Shard>,
    /// Per slot, its shard's index in `shards`; `u16::MAX` for a slot nobody serves.
    slot_shard: Box<[u16]>,
}

/// What a failure means for the slot map.
pub fn should_refresh(e: &FnError) -> bool {
    matches!(
        e.code(),
        ErrorCode::WrongShard | ErrorCode::Io | ErrorCode::Busy
    )
}

impl Topology {
    /// Reads the slot map over `conn` (`CLUSTER SHARDS`); `None` if the server is not a node of a
    /// cluster.
    pub fn read(conn: &mut Connection) -> Result<Option<Topology>> {
        let reply = conn
            .call(&["CLUSTER", "SHARDS"])
            .map_err(|source| Error::Connection {
                url: conn.url().to_string(),
                source,
            })?;
        match reply {
            // Not a cluster ("cluster support disabled"), a server before 7.0, or a user who
            // may not ask: a single node as far as this client can tell (a cluster node would
            // then refuse keys of other shards with WRONGSHARD, never serve them wrong).
            Frame::Error(_) => Ok(None),
            reply => Topology::from_shards(&reply).map(Some).map_err(|what| {
                Error::Function(FnError::Malformed(format!("CLUSTER SHARDS: {what}")))
            }),
        }
    }

    /// Parses a `CLUSTER SHARDS` reply (RESP2: each shard and node a flat list of name, value).
    pub fn from_shards(reply: &Frame) -> std::result::Result<Topology, String> {
        let Frame::Array(Some(shards)) = reply else {
            return Err(format!("not a list: {reply:?}"));
        };
        // (first slot, shard, its slot ranges)
        type Found = (usize, Shard, Vec<(usize, usize)>);
        let mut found: Vec<Found> = Vec::new();
        for shard in shards {
            let slots = field(shard, "slots").ok_or("a shard without slots")?;
            let Frame::Array(Some(bounds)) = slots else {
                return Err("slots is not a list".into());
            };
            let bounds: Vec<usize> = bounds
                .iter()
                .map(|b| match b {
                    Frame::Int(n) if (0..SLOTS as i64).contains(n) => Ok(*n as usize),
                    other => Err(format!("slot bound {other:?}")),
                })
                .collect::<std::result::Result<_, _>>()?;
            if !bounds.len().is_multiple_of(2) {
                return Err("odd number of slot bounds".into());
            }
            let ranges: Vec<(usize, usize)> = bounds.chunks(2).map(|c| (c[0], c[1])).collect();
            let Some(Frame::Array(Some(nodes))) = field(shard, "nodes") else {
                return Err("a shard without nodes".into());
            };
            let (mut master, mut replicas) = (None, Vec::new());
            for node in nodes {
                let text = |name: &str| match field(node, name) {
                    Some(Frame::Bulk(Some(b))) => Some(String::from_utf8_lossy(b).into_owned()),
                    Some(Frame::Simple(s)) => Some(s.clone()),
                    _ => None,
                };
                let port = match field(node, "port") {
                    Some(Frame::Int(p)) => *p,
                    _ => return Err("a node without a port".into()),
                };
                let ip = text("ip").or_else(|| text("endpoint")).unwrap_or_default();
                let addr = format!("{ip}:{port}");
                let up = text("health").is_none_or(|h| h == "online");
                match text("role").as_deref() {
                    Some("master") if up => master = Some(addr),
                    Some("master") => {}
                    _ => replicas.push(addr),
                }
            }
            // A shard whose master is failed or gone serves nothing until a replica takes over;
            // a master without slots (a node just added, one becoming a replica) serves nothing.
            let Some(master) = master else { continue };
            let slots = ranges.iter().map(|(a, b)| b + 1 - a).sum();
            if slots == 0 {
                continue;
            }
            let first = ranges.iter().map(|r| r.0).min().unwrap_or(SLOTS);
            found.push((
                first,
                Shard {
                    master,
                    replicas,
                    slots,
                },
                ranges,
            ));
        }
        found.sort_by_key(|(first, s, _)| (*first, s.master.clone()));
        let mut slot_shard = vec![u16::MAX; SLOTS].into_boxed_slice();
        for (i, (_, _, ranges)) in found.iter().enumerate() {
            for &(a, b) in ranges {
                if a > b {
                    return Err(format!("slot range {a}-{b}"));
                }
                slot_shard[a..=b].fill(i as u16);
            }
        }
        Ok(Topology {
            shards: found.into_iter().map(|(_, s, _)| s).collect(),
            slot_shard,
        })
    }

    /// The index of the shard serving `key`, if any serves its slot.
    pub fn shard_of(&self, key: &[u8]) -> Option<usize> {
        self.shard_of_slot(key_slot(key))
    }

    /// The index of the shard serving `slot`.
    pub fn shard_of_slot(&self, slot: u16) -> Option<usize> {
        match self.slot_shard[usize::from(slot)] {
            u16::MAX => None,
            i => Some(usize::from(i)),
        }
    }

    /// Whether every slot is served.
    pub fn covers_all(&self) -> bool {
        !self.slot_shard.contains(&u16::MAX)
    }

    /// The URL of shard `i`'s master: `seed`'s user, password and database, its host and port.
    pub fn url_of(&self, i: usize, seed: &RedisUrl) -> RedisUrl {
        node_url(&self.shards[i].master, seed)
    }
}

/// `addr` (`host:port`) with `seed`'s user, password and database.
pub fn node_url(addr: &str, seed: &RedisUrl) -> RedisUrl {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
    // A node that has met no other does not know its address yet: it is the seed's host.
    let host = if host.is_empty() { &seed.host } else { host };
    RedisUrl {
        host: host.to_string(),
        port: port.parse().unwrap_or(6379),
        ..seed.clone()
    }
}

/// The value after `name` in a flat list of name, value.
fn field<'f>(list: &'f Frame, name: &str) -> Option<&'f Frame> {
    let Frame::Array(Some(items)) = list else {
        return None;
    };
    items.chunks(2).find_map(|pair| match pair {
        [Frame::Bulk(Some(k)), v] if k.as_slice() == name.as_bytes() => Some(v),
        [Frame::Simple(k), v] if k == name => Some(v),
        _ => None,
    })
}

/// The compute-side `Store` over every shard's session: a store access is split by the shard
/// serving each key, one request per shard (a [`LinkStore`] each: `Get`, `MultiGet`, per key
/// if asked), all in flight together; the values are visited in the order of the keys once all
/// have come. Writes go to each key's shard when the function succeeds ([`ClusterStore::commit`]):
/// all or none on each shard, but a cluster has no transaction across shards.
#[derive(Debug)]
pub struct ClusterStore<'s> {
    topology: &'s Topology,
    shards: Vec<LinkStore<'s>>,
    /// Store accesses (reads and writes).
    accesses: Cell<u64>,
}

impl<'s> ClusterStore<'s> {
    /// A store over `sessions`, one per shard of `topology`, in its order.
    pub fn new(topology: &'s Topology, sessions: &[&'s RefCell<Session>], per_key: bool) -> Self {
        ClusterStore {
            topology,
            shards: sessions
                .iter()
                .map(|s| LinkStore::new(s).per_key(per_key))
                .collect(),
            accesses: Cell::new(0),
        }
    }

    /// The index of the shard serving `key` (a `WRONGSHARD` error if none does).
    pub fn shard(&self, key: &[u8]) -> Result<usize, FnError> {
        self.topology
            .shard_of(key)
            .filter(|&i| i < self.shards.len())
            .ok_or_else(|| {
                FnError::remote(
                    ErrorCode::WrongShard,
                    format!(
                        "{} - key '{}': no shard serves its slot",
                        key_slot(key),
                        String::from_utf8_lossy(key)
                    ),
                )
            })
    }

    /// Sends every shard's writes, each shard's in one atomic step.
    pub async fn commit(&self) -> Result<(), FnError> {
        let commits: Vec<Task<'_, Result<(), FnError>>> = self
            .shards
            .iter()
            .map(|s| Box::pin(s.commit()) as _)
            .collect();
        join_all(commits).await.into_iter().collect()
    }

    /// What it sent: its accesses, and each shard's requests (round trips: one per shard per
    /// access), keys and bytes.
    pub fn cost(&self) -> StoreCost {
        let shards = self.shards.iter().map(LinkStore::cost);
        StoreCost {
            accesses: self.accesses.get(),
            ..shards.fold(StoreCost::default(), |a, b| a + b)
        }
    }
}

impl Store for ClusterStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            self.accesses.set(self.accesses.get() + 1);
            // Keys by shard, with their places in `keys`.
            let shards: Vec<usize> = keys
                .iter()
                .map(|k| self.shard(k))
                .collect::<Result<_, _>>()?;
            let groups = autoloc_dataplane::slot::group(shards);
            if let [(shard, _)] = groups.as_slice() {
                // One shard: read through it as a single node would, visiting as values come.
                return self.shards[*shard].read(keys, visit).await;
            }
            type Values = Vec<Option<Vec<u8>>>;
            let reads: Vec<Task<'_, Result<Values, FnError>>> = groups
                .iter()
                .map(|(shard, places)| {
                    let link = &self.shards[*shard];
                    let ks: Vec<Vec<u8>> = places.iter().map(|&i| keys[i].clone()).collect();
                    Box::pin(async move {
                        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(ks.len());
                        link.read(&ks, &mut |_, v| {
                            values.push(v.map(<[u8]>::to_vec));
                            Ok(())
                        })
                        .await
                        .map(|()| values)
                    }) as _
                })
                .collect();
            let mut values: Values = vec![None; keys.len()];
            for ((_, places), got) in groups.iter().zip(join_all(reads).await) {
                for (&place, v) in places.iter().zip(got?) {
                    values[place] = v;
                }
            }
            for (i, v) in values.iter().enumerate() {
                visit(i, v.as_deref())?;
            }
            Ok(())
        })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.accesses.set(self.accesses.get() + 1);
            let shard = self.shard(key)?;
            self.shards[shard].write(key, value).await
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn node(port: i64, role: &str, health: &str) -> Frame {
        Frame::Array(Some(vec![
            bulk("id"),
            bulk("x"),
            bulk("port"),
            Frame::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk(health),
        ]))
    }

    fn shard(bounds: &[i64], nodes: Vec<Frame>) -> Frame {
        Frame::Array(Some(vec![
            bulk("slots"),
            Frame::Array(Some(bounds.iter().map(|&b| Frame::Int(b)).collect())),
            bulk("nodes"),
            Frame::Array(Some(nodes)),
        ]))
    }

    #[test]
    fn a_shards_reply_maps_every_slot() {
        let reply = Frame::Array(Some(vec![
            shard(
                &[8192, 16383],
                vec![
                    node(7001, "master", "online"),
                    node(7003, "replica", "online"),
                ],
            ),
            shard(&[0, 100, 101, 8191], vec![node(7000, "master", "online")]),
        ]));
        let t = Topology::from_shards(&reply).unwrap();
        assert_eq!(t.shards.len(), 2);
        assert_eq!(
            t.shards[0].master, "127.0.0.1:7000",
            "ordered by first slot"
        );
        assert_eq!(t.shards[0].slots, 8192);
        assert_eq!(t.shards[1].replicas, vec!["127.0.0.1:7003".to_string()]);
        assert!(t.covers_all());
        assert_eq!(t.shard_of_slot(0), Some(0));
        assert_eq!(t.shard_of_slot(16383), Some(1));
        assert_eq!(t.shard_of(b"foo"), Some(1), "slot 12182");
        let seed: RedisUrl = "redis://u:p@10.0.0.1:6379/0".parse().unwrap();
        let url = t.url_of(1, &seed);
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 7001));
        assert_eq!(url.password.as_deref(), Some("p"));
    }

    #[test]
    fn a_failed_master_serves_nothing() {
        let reply = Frame::Array(Some(vec![
            shard(&[0, 8191], vec![node(7000, "master", "failed")]),
            shard(&[8192, 16383], vec![node(7001, "master", "online")]),
        ]));
        let t = Topology::from_shards(&reply).unwrap();
        assert_eq!(t.shards.len(), 1);
        assert!(!t.covers_all());
        assert_eq!(t.shard_of_slot(0), None);
    }

    #[test]
    fn malformed_replies_are_refused() {
        assert!(Topology::from_shards(&Frame::Int(1)).is_err());
        let odd = Frame::Array(Some(vec![shard(&[0], vec![node(1, "master", "online")])]));
        assert!(Topology::from_shards(&odd).is_err());
        let out = Frame::Array(Some(vec![shard(&[0, 16384], vec![])]));
        assert!(Topology::from_shards(&out).is_err());
    }
}
