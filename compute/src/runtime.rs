//! The [`Runtime`]: invokes functions storage-side or compute-side and records every invocation.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc_dataplane::resp::DEFAULT_TIMEOUT;
use autoloc_dataplane::wire::{InvokeCost, List, Message};
use autoloc_dataplane::{Connection, Frame, RedisUrl};
use autoloc_functions::{Error as FnError, Function, Output, Registry};

use autoloc_functions::{Store, StoreFuture};

use crate::cluster::{should_refresh, ClusterStore, Topology};
use crate::hops::{HopMode, HopRun, HopSide, HopTable, Parts};
use crate::node::{LinkSettings, Node};
use crate::session::{self, run_all_timed, LinkStore, ReadSetStore, Session, StoreCost, Task};
use crate::side::Record;
pub use crate::side::Side;
use crate::table::Table;
use crate::transport::Transport;
use crate::{Error, Result};

/// How long an invocation on a cluster is retried on a new slot map (after `WRONGSHARD`, a
/// dead node, `TRYAGAIN`, `CLUSTERDOWN`) before its error reaches the caller: longer than a
/// failover takes with `cluster-node-timeout` 2 s.
pub const CLUSTER_RETRY_WINDOW: Duration = Duration::from_secs(15);

/// Fails with the cause if the server at `node` cannot run AutoLoc for us: no module loaded
/// ([`Error::NoModule`], naming it), or a refusal such as `NOAUTH` or `NOPERM`.
fn check_module(node: &mut Node, timeout: Duration) -> Result<()> {
    match node.command(&[b"COMMAND".as_slice(), b"INFO", b"AUTOLOC.CALL"], timeout)? {
        Frame::Array(Some(items)) if matches!(items.as_slice(), [Frame::Array(Some(_))]) => Ok(()),
        Frame::Error(e) => Err(Error::Function(FnError::from_resp(&e))),
        _ => Err(Error::NoModule {
            url: node.url().to_string(),
        }),
    }
}

/// How compute-side functions read keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// All keys of one read in one request: one round trip per step of the function.
    Batched,
    /// One request per key, one after another: what AutoLoc's `redisclient` did.
    PerKey,
}

/// What becomes of a storage-side invocation on a cluster that met a key of another shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtherShard {
    /// Pushed back with its read set, and finished here, reading the rest from every shard at
    /// once (ASFP's pushback).
    #[default]
    Finish,
    /// Forwarded, with its read set, to the shard serving the key it met (`InvokeWith`), and
    /// so on until a shard finishes it, at most once per shard; then finished here. Not over
    /// RESP, which carries no read set: there it is finished here.
    Forward,
}

impl std::str::FromStr for OtherShard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "finish" => Ok(OtherShard::Finish),
            "forward" => Ok(OtherShard::Forward),
            other => Err(format!("'{other}': finish or forward")),
        }
    }
}

/// Where to run an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Inside Redis (`AUTOLOC.CALL`); if the storage side pushes it back, here instead.
    Storage,
    /// On this node, reading keys over the data plane.
    Compute,
    /// Where the placement table's share for the function says (set by the controller).
    Auto,
}

impl FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "storage" => Ok(Placement::Storage),
            "compute" => Ok(Placement::Compute),
            "auto" => Ok(Placement::Auto),
            _ => Err(format!(
                "unknown placement '{s}' (storage, compute or auto)"
            )),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Storage => "storage",
            Placement::Compute => "compute",
            Placement::Auto => "auto",
        })
    }
}

/// One finished invocation: its result and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The function's result.
    pub output: Output,
    /// Where it finally ran.
    pub side: Side,
    /// Whether the storage side pushed it back before it ran here.
    pub pushed_back: bool,
    /// Shards a storage-side run on a cluster was forwarded to ([`OtherShard::Forward`]).
    pub forwarded: u32,
    /// Wall time seen by the caller.
    pub wall: Duration,
    /// Compute node CPU time: the time spent polling this invocation and its share of moving
    /// the batch's frames (waiting for replies excluded).
    pub cpu: Duration,
    /// Round trips to Redis.
    pub round_trips: u64,
    /// Bytes of the frames of its requests and replies (over RESP, of the wire frames the
    /// commands stand for).
    pub bytes: u64,
    /// A `khop` run hop by hop on a cluster ([`crate::hops`]): what each hop did; empty
    /// otherwise.
    pub hops: Vec<crate::hops::Hop>,
}

/// A function found in the registry: its index (its counter slot) and itself.
pub type Resolved = (usize, Arc<dyn Function>);

/// A function the module runs, as `AUTOLOC.FUNCTION LIST` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunctionInfo {
    /// What it is called by.
    pub name: String,
    /// One line of usage.
    pub usage: String,
    /// Its output kind (`ids`, `text`, `scores`, `sum`, `value`).
    pub output: String,
    /// `builtin`, or the SHA-256 of its WebAssembly module.
    pub version: String,
    /// Its module's size in bytes (0 for a built-in).
    pub size: u64,
}

/// A control connection to Redis, a data-plane session on some transport, the function
/// registry, and the process-wide counter table.
///
/// Every invocation takes one path whatever the transport: over RESP too, requests are wire
/// messages carried by a [`autoloc_dataplane::resp_link::RespLink`], so the outcome, its
/// counters and its errors are the same on every transport. A `Runtime` is used by one thread
/// at a time; [`Runtime::try_clone`] gives another thread its own connections over the same
/// table.
#[derive(Debug)]
pub struct Runtime {
    url: RedisUrl,
    /// The node of `url`: the one node, or the node commands without keys go to in a cluster.
    home: Node,
    /// In a Redis Cluster: the slot map and a node per shard.
    cluster: Option<ClusterState>,
    /// What hops of `khop` cost per shard and side ([`crate::hops`]), shared with clones.
    hops: Arc<HopTable>,
    timeout: Duration,
    table: Arc<Table>,
    registry: Arc<Registry>,
    read_mode: ReadMode,
    other_shard: OtherShard,
    transport: Transport,
    /// Added to every data-plane round trip by a [`DelayLink`] (zero: none).
    emulated_rtt: Duration,
}

/// A runtime's view of a cluster: the slot map, when it was read, and each shard's master.
#[derive(Debug)]
struct ClusterState {
    topology: Topology,
    read_at: Instant,
    /// Per shard of `topology`, in its order.
    shards: Vec<Node>,
    /// Failures that were retried on a new slot map, by code (`WRONGSHARD`, `IOERR`, `BUSY`).
    retried: std::collections::BTreeMap<&'static str, u64>,
}

impl Runtime {
    /// Connects to the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`).
    pub fn connect(url: &str) -> Result<Runtime> {
        let parsed: RedisUrl = url.parse().map_err(|source| Error::Connection {
            url: url.to_string(),
            source,
        })?;
        Runtime::connect_url(
            parsed,
            Arc::new(Table::new()),
            Arc::new(Registry::builtin()),
        )
    }

    fn connect_url(url: RedisUrl, table: Arc<Table>, registry: Arc<Registry>) -> Result<Runtime> {
        let mut rt = Runtime {
            home: Node::new(url.clone()),
            url,
            cluster: None,
            hops: Arc::new(HopTable::default()),
            timeout: DEFAULT_TIMEOUT,
            table,
            registry,
            read_mode: ReadMode::Batched,
            other_shard: OtherShard::default(),
            transport: Transport::Resp,
            emulated_rtt: Duration::ZERO,
        };
        rt.check_module()?;
        if let Some(topology) = Topology::read(rt.connection()?)? {
            rt.use_topology(topology)?;
        }
        Ok(rt)
    }

    /// Whether Redis is a cluster: then keys are read and invocations sent where their slots
    /// are served.
    pub fn topology(&self) -> Option<&Topology> {
        self.cluster.as_ref().map(|c| &c.topology)
    }

    /// Failures retried on a new slot map so far, by code: what a resharding or a failover cost
    /// this runtime without reaching its caller.
    pub fn retried(&self) -> Vec<(&'static str, u64)> {
        self.cluster
            .as_ref()
            .map(|c| c.retried.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// Takes `topology` as the slot map: keeps the nodes of masters it had, and checks that each
    /// new master has the module. On an error the map it had stays.
    fn use_topology(&mut self, topology: Topology) -> Result<()> {
        let urls: Vec<RedisUrl> = (0..topology.shards.len())
            .map(|i| topology.url_of(i, &self.url))
            .collect();
        let known = |url: &RedisUrl, c: &Option<ClusterState>| {
            c.as_ref()
                .is_some_and(|c| c.shards.iter().any(|n| n.url() == url))
        };
        let mut fresh = Vec::new();
        for url in urls.iter().filter(|u| !known(u, &self.cluster)) {
            let mut node = Node::new(url.clone());
            check_module(&mut node, self.timeout)?;
            fresh.push(node);
        }
        let (mut old, retried) = match self.cluster.take() {
            Some(c) => (c.shards, c.retried),
            None => (Vec::new(), Default::default()),
        };
        old.append(&mut fresh);
        let shards = urls
            .iter()
            .map(|url| {
                let at = old
                    .iter()
                    .position(|n| n.url() == url)
                    .expect("kept or made above");
                old.swap_remove(at)
            })
            .collect();
        self.cluster = Some(ClusterState {
            topology,
            read_at: Instant::now(),
            shards,
            retried,
        });
        Ok(())
    }

    /// Reads the slot map again if it is older than [`crate::cluster::REFRESH_EVERY`] (a
    /// failure leaves the old one, and the requests it misroutes are retried).
    fn refresh_if_old(&mut self) {
        if self
            .cluster
            .as_ref()
            .is_some_and(|c| c.read_at.elapsed() > crate::cluster::REFRESH_EVERY)
        {
            let _ = self.refresh_topology();
        }
    }

    /// Reads the slot map again, from the first node that answers: this runtime's own, then
    /// every master and replica it knew.
    pub fn refresh_topology(&mut self) -> Result<()> {
        let Some(state) = &self.cluster else {
            return Ok(());
        };
        let mut candidates = vec![self.url.clone()];
        for shard in &state.topology.shards {
            candidates.push(crate::cluster::node_url(&shard.master, &self.url));
            for r in &shard.replicas {
                candidates.push(crate::cluster::node_url(r, &self.url));
            }
        }
        let mut last = None;
        for url in candidates {
            let read = Connection::connect(&url, self.timeout.min(Duration::from_secs(2)))
                .map_err(|source| Error::Connection {
                    url: url.to_string(),
                    source,
                })
                .and_then(|mut c| Topology::read(&mut c));
            match read {
                Ok(Some(t)) => return self.use_topology(t),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoModule {
            url: self.url.to_string(),
        }))
    }

    /// Fails with the cause if the server cannot run AutoLoc for us: no module loaded
    /// ([`Error::NoModule`]), or a refusal such as `NOAUTH` or `NOPERM`.
    fn check_module(&mut self) -> Result<()> {
        check_module(&mut self.home, self.timeout)
    }

    /// The storage side's counters now (`AUTOLOC.STATS`).
    pub fn storage_stats(&mut self) -> Result<crate::stats::StorageStats> {
        let r = crate::stats::StorageStats::read(self.connection()?);
        if r.as_ref()
            .is_err_and(|e| matches!(e, Error::Connection { .. }))
        {
            self.home.drop_connection();
        }
        r
    }

    /// Each master's counters (`AUTOLOC.STATS` on every shard of a cluster; this runtime's node
    /// otherwise): `(host:port, counters)`, so that a hot shard shows as one.
    pub fn shard_stats(&mut self) -> Result<Vec<(String, crate::stats::StorageStats)>> {
        self.each_shard_stats()
            .into_iter()
            .map(|(addr, stats)| stats.map(|s| (addr, s)))
            .collect()
    }

    /// Each master's counters or why they could not be read, by `host:port`.
    fn each_shard_stats(&mut self) -> Vec<(String, Result<crate::stats::StorageStats>)> {
        let timeout = self.timeout;
        self.masters()
            .into_iter()
            .map(|node| {
                let addr = format!("{}:{}", node.url().host, node.url().port);
                let stats = node
                    .connection(timeout)
                    .and_then(crate::stats::StorageStats::read);
                if stats.is_err() {
                    node.drop_connection();
                }
                (addr, stats)
            })
            .collect()
    }

    /// Reads how busy each master's data-plane threads were (`AUTOLOC.STATS`) into the hop
    /// table, where a hot shard's parts of a hop move compute-side ([`crate::hops`]). A master
    /// that does not answer keeps its last reading; the run itself finds out why.
    fn read_shard_loads(&mut self) {
        for (addr, stats) in self.each_shard_stats() {
            if let Some(busy) = stats.ok().and_then(|s| s.busy()) {
                self.hops.set_load(&addr, busy);
            }
        }
    }

    /// What hops of `khop` cost per shard and side lately, and each shard's load as last read.
    pub fn hop_table(&self) -> &HopTable {
        &self.hops
    }

    /// Another runtime with its own connection, sharing this one's table and registry.
    pub fn try_clone(&self) -> Result<Runtime> {
        let mut rt =
            Runtime::connect_url(self.url.clone(), self.table.clone(), self.registry.clone())?;
        rt.read_mode = self.read_mode;
        rt.other_shard = self.other_shard;
        rt.timeout = self.timeout;
        rt.hops = self.hops.clone();
        rt.emulated_rtt = self.emulated_rtt;
        rt.with_transport(self.transport)
    }

    /// Adds `rtt` to every round trip of the data plane from now on, by holding each request
    /// and each reply for half of it ([`DelayLink`]): a longer network than this host's, for
    /// benchmarks (this kernel has no `netem`). What it measures is emulated; say so.
    pub fn with_emulated_rtt(mut self, rtt: Duration) -> Result<Runtime> {
        self.emulated_rtt = rtt;
        self.relink()
    }

    /// The emulated round trip added to the data plane (zero: none).
    pub fn emulated_rtt(&self) -> Duration {
        self.emulated_rtt
    }

    /// Sends requests over `transport` from now on (default [`Transport::Resp`]); sets the link
    /// up now (through `AUTOLOC.CONNECT` for the fast transports).
    pub fn with_transport(mut self, transport: Transport) -> Result<Runtime> {
        self.transport = transport;
        self.relink()
    }

    /// Drops the data-plane link and sets up a new one as configured now, so that a setup
    /// error shows here rather than at the first invocation.
    fn relink(mut self) -> Result<Runtime> {
        self.home.drop_session();
        self.session()?;
        let settings = self.settings();
        if let Some(state) = &mut self.cluster {
            for shard in &mut state.shards {
                shard.drop_session();
                shard.session(settings)?;
            }
        }
        Ok(self)
    }

    /// How links are set up now.
    fn settings(&self) -> LinkSettings {
        LinkSettings {
            transport: self.transport,
            timeout: self.timeout,
            emulated_rtt: self.emulated_rtt,
            cluster: self.cluster.is_some(),
        }
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The data-plane session to this runtime's node, (re)connected if there is none or the
    /// last one failed.
    pub fn session(&mut self) -> Result<&RefCell<Session>> {
        let settings = self.settings();
        self.home.session(settings)
    }

    /// On a cluster, does `with` a storage-side invocation that met a key of another shard
    /// (default [`OtherShard::Finish`]).
    pub fn with_other_shard(mut self, with: OtherShard) -> Runtime {
        self.other_shard = with;
        self
    }

    /// Reads keys compute-side in `mode` (default [`ReadMode::Batched`]).
    pub fn with_read_mode(mut self, mode: ReadMode) -> Runtime {
        self.read_mode = mode;
        self
    }

    /// How long to wait for Redis before an invocation fails (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Runtime> {
        self.timeout = timeout;
        self.home.drop_connection();
        self.connection()?;
        Ok(self)
    }

    /// The counter table.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The functions this runtime knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The address of Redis.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The connection, (re)connecting if the last one failed.
    pub fn connection(&mut self) -> Result<&mut Connection> {
        self.home.connection(self.timeout)
    }

    fn conn_error(&mut self, source: autoloc_dataplane::Error) -> Error {
        // The connection may be mid-reply: drop it, and reconnect on the next call.
        self.home.drop_connection();
        Error::Connection {
            url: self.url.to_string(),
            source,
        }
    }

    /// One request on the session of the node serving `key` (this runtime's node outside a
    /// cluster), its reply or the error it stands for. In a cluster, a request that met a moved
    /// slot, a dead node or a busy cluster is sent again on a new slot map, for as long as
    /// [`CLUSTER_RETRY_WINDOW`].
    fn request(&mut self, key: &[u8], message: &Message<'_>) -> Result<session::Reply> {
        if self.cluster.is_none() {
            let reply = self.session()?.borrow_mut().call(message)?.reply;
            return match reply {
                session::Reply::Error(e) => Err(Error::Function(e)),
                other => Ok(other),
            };
        }
        self.refresh_if_old();
        let mut retry = Retry::new();
        loop {
            let settings = self.settings();
            let state = self.cluster.as_mut().expect("a cluster");
            let r = match state.topology.shard_of(key) {
                Some(i) if i < state.shards.len() => state.shards[i]
                    .session(settings)
                    .and_then(|s| Ok(s.borrow_mut().call(message)?.reply))
                    .and_then(|reply| match reply {
                        session::Reply::Error(e) => Err(Error::Function(e)),
                        other => Ok(other),
                    }),
                _ => Err(Error::Function(FnError::remote(
                    autoloc_functions::ErrorCode::Busy,
                    "CLUSTERDOWN no shard serves the key's slot",
                ))),
            };
            if !retry.again(&r, &mut state.retried) {
                return r;
            }
            retry.pause();
            let _ = self.refresh_topology();
        }
    }

    /// The value of `key` (read under the read rule and the ACL, over this runtime's transport).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.request(key, &Message::Get { key })? {
            session::Reply::Value(v) => Ok(v),
            other => Err(Error::Function(other.into_error("Get"))),
        }
    }

    /// The values of `keys`, in one request.
    /// In a cluster, one request per shard serving some of them.
    pub fn mget<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        // Keys by shard (all of them at once outside a cluster), with their places.
        let groups = autoloc_dataplane::slot::group(
            keys.iter()
                .map(|key| self.topology().and_then(|t| t.shard_of(key))),
        );
        let mut values = vec![None; keys.len()];
        for (_, places) in groups {
            let group: Vec<&[u8]> = places.iter().map(|&i| keys[i]).collect();
            match self.request(
                group[0],
                &Message::MultiGet {
                    keys: List::new(&group),
                },
            )? {
                session::Reply::Values(v) if v.len() == group.len() => {
                    for (place, v) in places.into_iter().zip(v) {
                        values[place] = v;
                    }
                }
                other => return Err(Error::Function(other.into_error("MultiGet"))),
            }
        }
        Ok(values)
    }

    /// Sets `key` to `value` (replicated and in the AOF like a client's `SET`).
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self.request(key, &Message::Set { key, value })? {
            session::Reply::Ok => Ok(()),
            other => Err(Error::Function(other.into_error("Set"))),
        }
    }

    /// Sends one raw command and returns its reply.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame> {
        let r = self.connection()?.call(args);
        r.map_err(|e| self.conn_error(e))
    }

    /// Runs `function` with `args` where `placement` says, and records it in the table.
    pub fn invoke<A: AsRef<[u8]>>(
        &mut self,
        function: &str,
        args: &[A],
        placement: Placement,
    ) -> Result<Invocation> {
        let call = self.resolve_call(
            function,
            args.iter().map(|a| a.as_ref().to_vec()).collect(),
            placement,
        )?;
        self.run_calls(std::slice::from_ref(&call))
            .pop()
            .expect("one result")
    }

    /// Runs many invocations at once, all in flight together on the session: every step's
    /// requests leave in one burst (over RESP, one pipelined write).
    pub fn invoke_many<A: AsRef<[u8]>>(
        &mut self,
        calls: &[(&str, Vec<A>)],
        placement: Placement,
    ) -> Vec<Result<Invocation>> {
        let mut resolved = Vec::with_capacity(calls.len());
        let mut results: Vec<Option<Result<Invocation>>> = Vec::with_capacity(calls.len());
        for (name, args) in calls {
            match self.resolve_call(
                name,
                args.iter().map(|a| a.as_ref().to_vec()).collect(),
                placement,
            ) {
                Ok(c) => {
                    resolved.push(c);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut done = self.run_calls(&resolved).into_iter();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| done.next().expect("one result per call")))
            .collect()
    }

    /// Resolves the function, checks the arguments, and decides the side: for
    /// [`Placement::Auto`], the placement table's share for the function picks it.
    fn resolve_call(
        &mut self,
        name: &str,
        args: Vec<Vec<u8>>,
        placement: Placement,
    ) -> Result<ResolvedCall> {
        let (index, f) = self.resolve(name)?;
        f.check(&args)?;
        // On a cluster, the built-ins khop and pagerank storage-side or placed automatically run
        // by parts, round by round.
        let by_parts = self.cluster.is_some()
            && f.version().is_none()
            && matches!(f.name(), "khop" | "pagerank");
        let by_hops = match placement {
            _ if !by_parts => None,
            Placement::Storage => Some(HopMode::Storage),
            Placement::Auto => Some(HopMode::Choose),
            Placement::Compute => None,
        };
        let placement = match placement {
            Placement::Auto => match self.table.choose(index) {
                Side::Storage => Placement::Storage,
                Side::Compute => Placement::Compute,
            },
            p => p,
        };
        Ok(ResolvedCall {
            index,
            f: f.clone(),
            args,
            placement,
            by_hops,
        })
    }

    /// The function called `name`: a built-in, a user function fetched before, or one fetched
    /// from the module now.
    pub fn resolve(&mut self, name: &str) -> Result<Resolved> {
        match self.registry.resolve(name.as_bytes()) {
            Err(FnError::UnknownFunction(_)) => self.fetch(name),
            found => Ok(found?),
        }
    }

    /// Fetches the user function `name` from the module (`AUTOLOC.FUNCTION DUMP`), compiles it
    /// (once per content hash in this process) and registers it, in place of an older copy.
    pub fn fetch(&mut self, name: &str) -> Result<Resolved> {
        let bytes =
            match self.command(&[b"AUTOLOC.FUNCTION".as_slice(), b"DUMP", name.as_bytes()])? {
                Frame::Bulk(Some(b)) => b,
                Frame::Error(e) => return Err(Error::Function(FnError::from_resp(&e))),
                other => {
                    return Err(Error::Function(FnError::Malformed(format!(
                        "AUTOLOC.FUNCTION DUMP replied {other:?}"
                    ))))
                }
            };
        let f = compile(&bytes)?;
        let index = self.registry.put(f.clone(), true)?;
        Ok((index, f))
    }

    /// Loads a user function (a WebAssembly module) into the module, in place of one of the
    /// same name if `replace`; returns its name. Callers fetch it on first use. In a cluster it
    /// is loaded on every master (replicas follow by replication); the first refusal stops it,
    /// naming the node.
    pub fn load_function(&mut self, wasm: &[u8], replace: bool) -> Result<String> {
        let mut args: Vec<&[u8]> = vec![b"AUTOLOC.FUNCTION", b"LOAD"];
        if replace {
            args.push(b"REPLACE");
        }
        args.push(wasm);
        let mut name = String::new();
        let timeout = self.timeout;
        for node in self.masters() {
            name = match node.command(&args, timeout)? {
                Frame::Bulk(Some(name)) => String::from_utf8_lossy(&name).into_owned(),
                Frame::Error(e) => return Err(at_node(node, FnError::from_resp(&e))),
                other => {
                    return Err(Error::Function(FnError::Malformed(format!(
                        "AUTOLOC.FUNCTION LOAD replied {other:?}"
                    ))))
                }
            };
        }
        Ok(name)
    }

    /// Deletes the user function `name` from the module (every master of a cluster), and
    /// forgets this runtime's copy.
    pub fn delete_function(&mut self, name: &str) -> Result<()> {
        let args = [b"AUTOLOC.FUNCTION".as_slice(), b"DELETE", name.as_bytes()];
        let timeout = self.timeout;
        for node in self.masters() {
            if let Frame::Error(e) = node.command(&args, timeout)? {
                return Err(at_node(node, FnError::from_resp(&e)));
            }
        }
        let _ = self.registry.remove(name);
        Ok(())
    }

    /// This runtime's node, or every master of a cluster.
    fn masters(&mut self) -> Vec<&mut Node> {
        match &mut self.cluster {
            Some(state) => state.shards.iter_mut().collect(),
            None => vec![&mut self.home],
        }
    }

    /// The functions the module runs (`AUTOLOC.FUNCTION LIST`): built-ins and loaded ones.
    pub fn functions(&mut self) -> Result<Vec<FunctionInfo>> {
        list_functions(&mut self.home, self.timeout)
    }

    /// Each master's functions (one node outside a cluster): `(host:port, list)`, to show the
    /// shards that disagree.
    pub fn functions_per_shard(&mut self) -> Result<Vec<(String, Vec<FunctionInfo>)>> {
        let timeout = self.timeout;
        self.masters()
            .into_iter()
            .map(|node| {
                let addr = format!("{}:{}", node.url().host, node.url().port);
                list_functions(node, timeout).map(|list| (addr, list))
            })
            .collect()
    }

    /// Brings every master of a cluster up to date with this runtime's node: a user function
    /// missing on a master, or there in another version, is loaded there (`LOAD REPLACE`) from
    /// this node's copy. Returns how many loads it made. Nothing to do outside a cluster.
    pub fn sync_functions(&mut self) -> Result<usize> {
        if self.cluster.is_none() {
            return Ok(0);
        }
        let timeout = self.timeout;
        let wanted: Vec<FunctionInfo> = self
            .functions()?
            .into_iter()
            .filter(|f| f.version != "builtin")
            .collect();
        let mut loads = 0;
        let mut bytes: std::collections::HashMap<String, Vec<u8>> = Default::default();
        for (addr, list) in self.functions_per_shard()? {
            for f in &wanted {
                if list
                    .iter()
                    .any(|g| g.name == f.name && g.version == f.version)
                {
                    continue;
                }
                if !bytes.contains_key(&f.name) {
                    let dump = [b"AUTOLOC.FUNCTION".as_slice(), b"DUMP", f.name.as_bytes()];
                    match self.home.command(&dump, timeout)? {
                        Frame::Bulk(Some(b)) => bytes.insert(f.name.clone(), b),
                        Frame::Error(e) => return Err(Error::Function(FnError::from_resp(&e))),
                        other => {
                            return Err(Error::Function(FnError::Malformed(format!(
                                "AUTOLOC.FUNCTION DUMP replied {other:?}"
                            ))))
                        }
                    };
                }
                let wasm = &bytes[&f.name];
                let node = self
                    .masters()
                    .into_iter()
                    .find(|n| format!("{}:{}", n.url().host, n.url().port) == addr)
                    .expect("listed just now");
                let load = [b"AUTOLOC.FUNCTION".as_slice(), b"LOAD", b"REPLACE", wasm];
                if let Frame::Error(e) = node.command(&load, timeout)? {
                    return Err(at_node(node, FnError::from_resp(&e)));
                }
                loads += 1;
            }
        }
        Ok(loads)
    }

    /// Runs resolved calls, all in flight together, and records each. A call of a user
    /// function whose copy here turned out stale (replaced or deleted since it was fetched) is
    /// fetched again and run again once: never run silently in its old version.
    fn run_calls(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        let mut results = self.run_calls_once(calls);
        let stale: Vec<usize> = (0..calls.len())
            .filter(|&i| {
                matches!(&results[i], Err(Error::Function(e)) if e.code() == autoloc_functions::ErrorCode::Stale)
            })
            .collect();
        if stale.is_empty() {
            return results;
        }
        // A shard of a cluster without the version this node has: bring it up to date first.
        let _ = self.sync_functions();
        let mut again = Vec::new();
        let mut refreshed: Vec<(String, Result<Resolved>)> = Vec::new();
        for &i in &stale {
            let name = calls[i].f.name().to_string();
            if !refreshed.iter().any(|(n, _)| *n == name) {
                let fetched = self.fetch(&name);
                if fetched.is_err() {
                    // Deleted: forget the copy.
                    let _ = self.registry.remove(&name);
                }
                refreshed.push((name.clone(), fetched));
            }
            match &refreshed
                .iter()
                .find(|(n, _)| *n == name)
                .expect("just fetched")
                .1
            {
                Ok((index, f)) => again.push((
                    i,
                    ResolvedCall {
                        index: *index,
                        f: f.clone(),
                        args: calls[i].args.clone(),
                        placement: calls[i].placement,
                        by_hops: calls[i].by_hops,
                    },
                )),
                Err(_) => results[i] = Err(Error::Function(FnError::UnknownFunction(name))),
            }
        }
        let rerun: Vec<ResolvedCall> = again.iter().map(|(_, c)| c.clone()).collect();
        for ((i, _), r) in again.iter().zip(self.run_calls_once(&rerun)) {
            results[*i] = r;
        }
        results
    }

    /// Runs resolved calls on the session, all in flight together, and records each.
    fn run_calls_once(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        if calls.is_empty() {
            return Vec::new();
        }
        if self.cluster.is_some() {
            return self.run_calls_cluster(calls);
        }
        let per_key = self.read_mode == ReadMode::PerKey;
        let transport = self.transport;
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                return calls
                    .iter()
                    .map(|_| {
                        Err(Error::Transport {
                            transport,
                            message: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        let tasks: Vec<Task<'_, Outcome>> = calls
            .iter()
            .map(|c| {
                Box::pin(invoke_on_link(
                    session,
                    LinkStore::new(session).per_key(per_key),
                    &*c.f,
                    &c.args,
                    c.placement,
                    None,
                )) as Task<'_, Outcome>
            })
            .collect();
        let (outcomes, busy) = run_all_timed(&[session], tasks);
        finish(&self.table, calls, outcomes, busy)
    }

    /// Runs resolved calls on a cluster, all in flight together over every shard's session;
    /// what failed for a moved slot, a dead node or a busy cluster runs again on a new slot map,
    /// for as long as [`CLUSTER_RETRY_WINDOW`]. Each run is recorded.
    fn run_calls_cluster(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        let mut retry = Retry::new();
        let mut results: Vec<Option<Result<Invocation>>> = (0..calls.len()).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..calls.len()).collect();
        self.refresh_if_old();
        loop {
            let batch: Vec<ResolvedCall> = todo.iter().map(|&i| calls[i].clone()).collect();
            let mut again = Vec::new();
            for (i, r) in todo.into_iter().zip(self.run_on_shards(&batch)) {
                let state = self.cluster.as_mut().expect("a cluster");
                match retry.again(&r, &mut state.retried) {
                    true => again.push(i),
                    false => results[i] = Some(r),
                }
            }
            if again.is_empty() {
                break;
            }
            retry.pause();
            let _ = self.refresh_topology();
            todo = again;
        }
        results
            .into_iter()
            .map(|r| r.expect("every call finished"))
            .collect()
    }

    /// Runs resolved calls once over every shard's session: storage-side on the shard serving
    /// the first argument (the key an invocation starts from, for every built-in but
    /// `aggregate`; elsewhere it is pushed back, and finished here), compute-side through a
    /// [`ClusterStore`].
    fn run_on_shards(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        if calls.iter().any(|c| c.by_hops == Some(HopMode::Choose)) && self.hops.load_due() {
            self.read_shard_loads();
        }
        let per_key = self.read_mode == ReadMode::PerKey;
        let settings = self.settings();
        let state = self.cluster.as_mut().expect("a cluster");
        let fail = |e: Error| -> Vec<Result<Invocation>> {
            let message = e.to_string();
            calls
                .iter()
                .map(|_| {
                    Err(Error::Transport {
                        transport: settings.transport,
                        message: message.clone(),
                    })
                })
                .collect()
        };
        if state.shards.is_empty() {
            return calls
                .iter()
                .map(|_| {
                    Err(Error::Function(FnError::remote(
                        autoloc_functions::ErrorCode::Busy,
                        "CLUSTERDOWN no master is up",
                    )))
                })
                .collect();
        }
        for shard in &mut state.shards {
            if let Err(e) = shard.session(settings) {
                return fail(e);
            }
        }
        let sessions: Vec<&RefCell<Session>> = state
            .shards
            .iter()
            .map(|n| n.open_session().expect("just set up"))
            .collect();
        let topology = &state.topology;
        let hop_table = &*self.hops;
        // Forwarding needs a read set on the wire: not over RESP.
        let forward = (self.other_shard == OtherShard::Forward
            && settings.transport != Transport::Resp)
            .then_some(Forward {
                topology,
                sessions: &sessions,
            });
        let tasks: Vec<Task<'_, Outcome>> = calls
            .iter()
            .map(|c| {
                let home = c
                    .args
                    .first()
                    .and_then(|a| topology.shard_of(a))
                    .filter(|&i| i < sessions.len())
                    .unwrap_or(0);
                let store = ClusterStore::new(topology, &sessions, per_key);
                match c.by_hops {
                    Some(mode) => Box::pin(by_parts(
                        topology,
                        &sessions,
                        store,
                        hop_table,
                        mode,
                        c.f.name(),
                        &c.args,
                    )) as Task<'_, Outcome>,
                    None => Box::pin(invoke_on_link(
                        sessions[home],
                        store,
                        &*c.f,
                        &c.args,
                        c.placement,
                        forward,
                    )) as Task<'_, Outcome>,
                }
            })
            .collect();
        let (outcomes, busy) = run_all_timed(&sessions, tasks);
        finish(&self.table, calls, outcomes, busy)
    }
}

/// `e`, naming the node that answered it.
fn at_node(node: &Node, e: FnError) -> Error {
    Error::Function(FnError::remote(
        e.code(),
        format!("{}:{}: {e}", node.url().host, node.url().port),
    ))
}

/// `AUTOLOC.FUNCTION LIST` on `node`.
fn list_functions(node: &mut Node, timeout: Duration) -> Result<Vec<FunctionInfo>> {
    let bad = |what: String| Error::Function(FnError::Malformed(what));
    match node.command(&[b"AUTOLOC.FUNCTION".as_slice(), b"LIST"], timeout)? {
        Frame::Array(Some(rows)) => rows
            .into_iter()
            .map(|row| match row {
                Frame::Array(Some(f)) => match f.as_slice() {
                    [Frame::Bulk(Some(n)), Frame::Bulk(Some(u)), Frame::Bulk(Some(k)), Frame::Bulk(Some(v)), Frame::Int(size)] => {
                        Ok(FunctionInfo {
                            name: String::from_utf8_lossy(n).into_owned(),
                            usage: String::from_utf8_lossy(u).into_owned(),
                            output: String::from_utf8_lossy(k).into_owned(),
                            version: String::from_utf8_lossy(v).into_owned(),
                            size: *size as u64,
                        })
                    }
                    _ => Err(bad(format!("AUTOLOC.FUNCTION LIST row {f:?}"))),
                },
                other => Err(bad(format!("AUTOLOC.FUNCTION LIST row {other:?}"))),
            })
            .collect(),
        Frame::Error(e) => Err(Error::Function(FnError::from_resp(&e))),
        other => Err(bad(format!("AUTOLOC.FUNCTION LIST replied {other:?}"))),
    }
}

/// Retrying on a new slot map, for as long as [`CLUSTER_RETRY_WINDOW`], with a pause that
/// doubles from 10 ms up to 500 ms.
struct Retry {
    deadline: Instant,
    pause: Duration,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            deadline: Instant::now() + CLUSTER_RETRY_WINDOW,
            pause: Duration::from_millis(10),
        }
    }

    /// Whether `r` is to be tried again (a failure of [`retry_code`]'s, within the window),
    /// counted in `retried` by its code.
    fn again<T>(
        &self,
        r: &Result<T>,
        retried: &mut std::collections::BTreeMap<&'static str, u64>,
    ) -> bool {
        match retry_code(r) {
            Some(code) if Instant::now() < self.deadline => {
                *retried.entry(code).or_default() += 1;
                true
            }
            _ => false,
        }
    }

    /// Waits before the next try.
    fn pause(&mut self) {
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(Duration::from_millis(500));
    }
}

/// The code under which a failure is retried on a new slot map, if it is one: a moved slot, a
/// dead node, a busy cluster.
fn retry_code<T>(r: &Result<T>) -> Option<&'static str> {
    match r {
        Err(Error::Function(e)) if should_refresh(e) => Some(e.code().as_str()),
        Err(Error::Transport { .. } | Error::Connection { .. }) => Some("IOERR"),
        _ => None,
    }
}

/// What a compute-side run reads and writes through: one node's session ([`LinkStore`]) or
/// every shard's ([`ClusterStore`]).
trait ComputeStore: Store {
    /// Sends the run's writes.
    fn commit(&self) -> StoreFuture<'_, ()>;
    /// What the run sent so far.
    fn cost(&self) -> StoreCost;
}

impl ComputeStore for LinkStore<'_> {
    fn commit(&self) -> StoreFuture<'_, ()> {
        Box::pin(LinkStore::commit(self))
    }
    fn cost(&self) -> StoreCost {
        LinkStore::cost(self)
    }
}

impl ComputeStore for ClusterStore<'_> {
    fn commit(&self) -> StoreFuture<'_, ()> {
        Box::pin(ClusterStore::commit(self))
    }
    fn cost(&self) -> StoreCost {
        ClusterStore::cost(self)
    }
}

/// The calls' outcomes, with the compute-node time each took (`busy`, ns), recorded in `table`.
fn finish(
    table: &Table,
    calls: &[ResolvedCall],
    outcomes: Vec<Outcome>,
    busy: Vec<u64>,
) -> Vec<Result<Invocation>> {
    calls
        .iter()
        .zip(outcomes)
        .zip(busy)
        .map(|((c, mut outcome), cpu_ns)| {
            outcome.cpu = Duration::from_nanos(cpu_ns);
            record(table, c.index, &outcome);
            outcome.into_invocation()
        })
        .collect()
}

/// Records one invocation in `table`: the one way every transport and placement does it. A
/// pushed-back invocation is two records: the storage side's part (one round trip, what it
/// spent, a pushback) and the compute side's (the round trips it made after), so its round trips
/// are counted once. A storage-side run that succeeded also gives the cost model an RTT sample:
/// what the caller waited minus what the storage side spent.
fn record(table: &Table, index: usize, o: &Outcome) {
    let wall_ns = o.wall.as_nanos() as u64;
    if o.pushed_back {
        let pushed = Record {
            error: true,
            pushback: true,
            round_trips: 1,
            bytes: o.storage_bytes,
            storage_cpu_ns: o.storage.storage_cpu_ns,
            queue_ns: o.storage.queue_ns,
            ..Record::default()
        };
        table.record(index, Side::Storage, &pushed);
    } else if o.side == Side::Storage && o.result.is_ok() && o.storage_requests == 1 {
        let rtt = wall_ns as f64 - (o.storage.storage_cpu_ns + o.storage.queue_ns) as f64;
        let mut costs = table.costs();
        costs.observe_rtt(rtt, 0.02);
        table.set_costs(&costs);
    }
    let here = match o.side {
        Side::Storage => Record {
            storage_cpu_ns: o.storage.storage_cpu_ns,
            queue_ns: o.storage.queue_ns,
            keys_read: o.storage.keys_read,
            bytes_read: o.storage.bytes_read,
            reads: o.storage.reads,
            round_trips: o.storage_requests.max(1),
            bytes: o.storage_bytes,
            ..Record::default()
        },
        Side::Compute => Record {
            keys_read: o.compute.keys,
            reads: o.compute.accesses,
            round_trips: o.compute.requests,
            bytes: o.compute.bytes,
            ..Record::default()
        },
    };
    table.record(
        index,
        o.side,
        &Record {
            error: o.result.is_err(),
            pushback: false,
            wall_ns,
            cpu_ns: o.cpu.as_nanos() as u64,
            ..here
        },
    );
}

/// An invocation whose function is resolved, whose arguments are checked, and whose side is
/// decided (`placement` is `Storage` or `Compute`, never `Auto`).
#[derive(Clone)]
struct ResolvedCall {
    index: usize,
    f: Arc<dyn Function>,
    args: Vec<Vec<u8>>,
    placement: Placement,
    /// Run hop by hop on a cluster ([`crate::hops`]), in this mode.
    by_hops: Option<HopMode>,
}

/// What one invocation did, on whichever side and transport: the one outcome every path
/// produces and [`record`] records.
#[derive(Debug)]
struct Outcome {
    result: Result<Output, FnError>,
    /// Where it finally ran.
    side: Side,
    /// Whether the storage side pushed it back before it ran here.
    pushed_back: bool,
    /// Shards a storage-side run was forwarded to.
    forwarded: u32,
    /// What the storage side reported (a storage-side run, or the part before a pushback).
    storage: InvokeCost,
    /// Bytes of the `Invoke` request and its reply.
    storage_bytes: u64,
    /// What the compute side sent (a compute-side run, or the part after a pushback; keys
    /// that came with a pushback's read set are not counted).
    compute: StoreCost,
    /// Storage-side requests (`Invoke`s) it made: one for a run sent storage-side, one per
    /// storage-side part of a hop for a run hop by hop.
    storage_requests: u64,
    /// What each hop did, for a run hop by hop.
    hops: Vec<crate::hops::Hop>,
    wall: Duration,
    /// Compute-node time: set from the executor's polls once the batch is done.
    cpu: Duration,
}

impl Outcome {
    fn into_invocation(self) -> Result<Invocation> {
        Ok(Invocation {
            side: self.side,
            pushed_back: self.pushed_back,
            forwarded: self.forwarded,
            wall: self.wall,
            cpu: self.cpu,
            round_trips: self.storage_requests + self.compute.requests,
            bytes: self.storage_bytes + self.compute.bytes,
            hops: self.hops,
            output: self.result?,
        })
    }
}

/// The name an invocation of `f` travels under: a user function's carries the version this node
/// has (`name@<16 hex digits of its SHA-256>`), so that the storage side refuses a stale copy
/// with [`FnError::Stale`].
fn wire_name(f: &dyn Function) -> String {
    match f.version() {
        Some(_) => format!("{}@{}", f.name(), version_prefix(f)),
        None => f.name().to_string(),
    }
}

/// The version of a user function as this node names it: 16 hex digits of its module's SHA-256
/// (empty for a built-in).
fn version_prefix(f: &dyn Function) -> String {
    let mut hex = String::new();
    if let Some(v) = f.version() {
        autoloc_functions::hex::push(&mut hex, &v[..8]);
    }
    hex
}

/// Polls two futures together to completion.
async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            ra = match a.as_mut().poll(cx) {
                std::task::Poll::Ready(x) => Some(x),
                std::task::Poll::Pending => None,
            };
        }
        if rb.is_none() {
            rb = match b.as_mut().poll(cx) {
                std::task::Poll::Ready(x) => Some(x),
                std::task::Poll::Pending => None,
            };
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.expect("ready"), rb.expect("ready"))
}

/// Runs `khop <start> <k>` hop by hop, or `pagerank` in its two rounds, over a cluster's shards
/// by parts ([`crate::hops`]); `pagerank`'s writes, if any, are committed when it succeeds.
async fn by_parts(
    topology: &Topology,
    sessions: &[&RefCell<Session>],
    store: ClusterStore<'_>,
    table: &HopTable,
    mode: HopMode,
    function: &str,
    args: &[Vec<u8>],
) -> Outcome {
    let started = Instant::now();
    let run = RefCell::new(HopRun::default());
    let result = match function {
        "pagerank" => {
            let parts = Parts::new(topology, sessions, &store, table, mode, "pagerank");
            match crate::hops::pagerank(parts, args, &run).await {
                Ok(scores) => store.commit().await.map(|()| Output::Scores(scores)),
                Err(e) => Err(e),
            }
        }
        _ => match autoloc_functions::builtins::khop::parse(args) {
            Ok((start, k)) => {
                let parts = Parts::new(topology, sessions, &store, table, mode, "khop");
                crate::hops::khop(parts, start, k, &run)
                    .await
                    .map(Output::Ids)
            }
            Err(e) => Err(e),
        },
    };
    let run = run.into_inner();
    let storage_parts: usize = run.hops.iter().map(|h| h.parts_on(HopSide::Storage)).sum();
    let compute_parts: usize = run.hops.iter().map(|h| h.parts_on(HopSide::Compute)).sum();
    Outcome {
        result,
        side: if storage_parts >= compute_parts {
            Side::Storage
        } else {
            Side::Compute
        },
        pushed_back: false,
        forwarded: 0,
        storage: run.storage,
        storage_bytes: run.storage_bytes,
        compute: store.cost(),
        storage_requests: run.invokes,
        hops: run.hops,
        wall: started.elapsed(),
        cpu: Duration::ZERO,
    }
}

/// Where a storage-side invocation that met a key of another shard may be forwarded: the
/// cluster's shards, by the slot map.
#[derive(Clone, Copy)]
struct Forward<'a, 's> {
    topology: &'a Topology,
    sessions: &'a [&'s RefCell<Session>],
}

/// Runs one invocation over `session`: storage-side as one `Invoke` request (finished
/// compute-side on a pushback, from the read set it hands back: ASFP; or, with `forward`,
/// first forwarded with it to the shard serving a key it met, at most once per shard), or
/// compute-side through a [`LinkStore`] or a [`ClusterStore`].
async fn invoke_on_link<S: ComputeStore>(
    session: &RefCell<Session>,
    inner: S,
    f: &dyn Function,
    args: &[Vec<u8>],
    placement: Placement,
    forward: Option<Forward<'_, '_>>,
) -> Outcome {
    let started = Instant::now();
    let mut o = Outcome {
        result: Err(FnError::Io("not run".into())),
        side: Side::Storage,
        pushed_back: false,
        forwarded: 0,
        storage: InvokeCost::default(),
        storage_bytes: 0,
        compute: StoreCost::default(),
        storage_requests: 0,
        hops: Vec::new(),
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    let mut read_set: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let wire_name = wire_name(f);
    if placement == Placement::Storage {
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut session = session;
        let done = loop {
            let pairs: Vec<(&[u8], Option<&[u8]>)> = read_set
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            let invoke = match o.forwarded {
                0 => Message::Invoke {
                    function: &wire_name,
                    args: List::new(&argv),
                },
                _ => Message::InvokeWith {
                    function: &wire_name,
                    args: List::new(&argv),
                    read_set: List::new(&pairs),
                },
            };
            o.storage_requests += 1;
            let r = match session::request(session, &invoke).await {
                Ok(r) => r,
                Err(e) => break Some(Err(e)),
            };
            o.storage_bytes += r.bytes;
            match r.reply {
                session::Reply::Invoked { result, cost } => {
                    o.storage += cost;
                    break Some(Output::decode(f.output_kind(), &result));
                }
                session::Reply::Pushback {
                    read_set: rs,
                    elsewhere,
                    cost,
                } => {
                    o.storage += cost;
                    read_set = rs;
                    // Forwarded to the shard of the first key it met there, while some shard
                    // has not had it yet.
                    let next = forward.and_then(|fw| {
                        let shard = fw.topology.shard_of(elsewhere.first()?)?;
                        (o.forwarded < fw.sessions.len() as u32).then(|| fw.sessions.get(shard))?
                    });
                    match next {
                        Some(next) => {
                            o.forwarded += 1;
                            session = next;
                        }
                        None => {
                            o.pushed_back = true;
                            break None;
                        }
                    }
                }
                other => break Some(Err(other.into_error("Invoke"))),
            }
        };
        if let Some(result) = done {
            o.result = result;
            o.wall = started.elapsed();
            return o;
        }
    }
    let store = ReadSetStore::new(read_set, inner);
    o.result = if f.version().is_some() && !o.pushed_back {
        // A user function run here from a copy: ask, together with the run, whether the copy
        // is still the one loaded (a pushed-back run was checked by the storage side already).
        // Its writes are committed only if it is.
        let version = version_prefix(f);
        let probe = Message::CheckVersion {
            function: f.name(),
            version: version.as_bytes(),
        };
        let (probe, result) = join(session::request(session, &probe), f.call(&store, args)).await;
        match probe.map(|r| r.reply) {
            Ok(session::Reply::Ok) => result,
            Ok(session::Reply::Error(e)) | Err(e) => Err(e),
            Ok(other) => Err(other.into_error("Invoke")),
        }
    } else {
        f.call(&store, args).await
    };
    if o.result.is_ok() {
        // Its writes, in one atomic step, only now that it succeeded.
        if let Err(e) = store.inner().commit().await {
            o.result = Err(e);
        }
    }
    o.side = Side::Compute;
    o.compute = store.inner().cost();
    o.wall = started.elapsed();
    o
}

/// A user function's module, compiled to run here (compute-side).
#[cfg(feature = "wasm")]
fn compile(bytes: &[u8]) -> Result<Arc<dyn autoloc_functions::Function>> {
    let f: Arc<dyn autoloc_functions::Function> = autoloc_functions::wasm::host().compile(bytes)?;
    Ok(f)
}

/// Without the WebAssembly host (the `wasm` feature), user functions run storage-side only.
#[cfg(not(feature = "wasm"))]
fn compile(_bytes: &[u8]) -> Result<Arc<dyn autoloc_functions::Function>> {
    Err(Error::Function(FnError::Usage(
        "this build of the autoloc library has no WebAssembly host (feature `wasm`): user \
         functions run storage-side only"
            .into(),
    )))
}
