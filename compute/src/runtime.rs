//! The [`Runtime`]: invokes functions storage-side or compute-side and records every invocation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc_dataplane::clock::thread_cpu_ns;
use autoloc_dataplane::resp::DEFAULT_TIMEOUT;
use autoloc_dataplane::{Connection, Frame, RedisUrl};
use autoloc_functions::exec::block_on;
use std::cell::{Cell, RefCell};

use autoloc_dataplane::wire::{InvokeCost, List, Message};
use autoloc_functions::{Error as FnError, Function, Output, Registry, Reply};

pub use crate::resp_store::ReadMode;
use crate::resp_store::RespStore;
use crate::session::{self, run_all_timed, LinkStore, ReadSetStore, Session, Task};
use crate::table::{Record, Table};
use crate::transport::{connect_link, Transport};
use crate::{Error, Result};

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

/// The side an invocation finally ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Inside Redis.
    Storage,
    /// On the compute node.
    Compute,
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

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Storage => "storage",
            Side::Compute => "compute",
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
    /// Wall time seen by the caller.
    pub wall: Duration,
    /// Compute node CPU time: over RESP the thread's CPU clock; over a data-plane link the time
    /// spent polling this invocation and its share of moving the batch's frames (waiting for
    /// replies excluded).
    pub cpu: Duration,
    /// Round trips to Redis.
    pub round_trips: u64,
    /// Bytes sent and received.
    pub bytes: u64,
}

/// One connection to Redis, the function registry, and the process-wide counter table.
///
/// A `Runtime` is used by one thread at a time; [`Runtime::try_clone`] gives another thread its
/// own connection over the same table.
#[derive(Debug)]
pub struct Runtime {
    url: RedisUrl,
    conn: Option<Connection>,
    timeout: Duration,
    table: Arc<Table>,
    registry: Arc<Registry>,
    read_mode: ReadMode,
    transport: Transport,
    session: Option<RefCell<Session>>,
}

fn to_reply(frame: Frame) -> Reply {
    match frame {
        Frame::Int(n) => Reply::Int(n),
        Frame::Bulk(Some(b)) => Reply::Bulk(b),
        Frame::Bulk(None) | Frame::Array(None) => Reply::Nil,
        Frame::Simple(s) | Frame::Error(s) => Reply::Bulk(s.into_bytes()),
        Frame::Array(Some(items)) => Reply::Array(items.into_iter().map(to_reply).collect()),
    }
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
            url,
            conn: None,
            timeout: DEFAULT_TIMEOUT,
            table,
            registry,
            read_mode: ReadMode::Batched,
            transport: Transport::Resp,
            session: None,
        };
        rt.connection()?;
        Ok(rt)
    }

    /// Another runtime with its own connection, sharing this one's table and registry.
    pub fn try_clone(&self) -> Result<Runtime> {
        let mut rt =
            Runtime::connect_url(self.url.clone(), self.table.clone(), self.registry.clone())?;
        rt.read_mode = self.read_mode;
        rt.timeout = self.timeout;
        rt.with_transport(self.transport)
    }

    /// Sends requests over `transport` from now on (default [`Transport::Resp`]); sets the link
    /// up now through `AUTOLOC.CONNECT`.
    pub fn with_transport(mut self, transport: Transport) -> Result<Runtime> {
        self.transport = transport;
        self.session = None;
        if transport != Transport::Resp {
            self.session()?;
        }
        Ok(self)
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The data-plane session, (re)connected if there is none or the last one failed.
    pub fn session(&mut self) -> Result<&RefCell<Session>> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.borrow().failed().is_some())
        {
            self.session = None;
        }
        if self.session.is_none() {
            let (url, transport, timeout) = (self.url.clone(), self.transport, self.timeout);
            let link = match connect_link(self.connection()?, &url, transport, timeout) {
                Ok(link) => link,
                Err(Error::Connection { .. }) => {
                    // The control connection is dead (the server restarted?): reconnect once.
                    self.conn = None;
                    connect_link(self.connection()?, &url, transport, timeout)?
                }
                Err(e) => return Err(e),
            };
            self.session = Some(RefCell::new(Session::new(link, timeout)));
        }
        Ok(self.session.as_ref().expect("just connected"))
    }

    /// Reads keys compute-side in `mode` (default [`ReadMode::Batched`]).
    pub fn with_read_mode(mut self, mode: ReadMode) -> Runtime {
        self.read_mode = mode;
        self
    }

    /// How long to wait for Redis before an invocation fails (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Runtime> {
        self.timeout = timeout;
        self.conn = None;
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
        if self.conn.is_none() {
            let c = Connection::connect(&self.url, self.timeout).map_err(|source| {
                Error::Connection {
                    url: self.url.to_string(),
                    source,
                }
            })?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    fn conn_error(&mut self, source: autoloc_dataplane::Error) -> Error {
        // The connection may be mid-reply: drop it, and reconnect on the next call.
        self.conn = None;
        Error::Connection {
            url: self.url.to_string(),
            source,
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

    /// Runs many invocations at once: over a data-plane link they are all in flight together
    /// (every step's requests leave in one burst); over RESP they run one after another.
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
        &self,
        name: &str,
        args: Vec<Vec<u8>>,
        placement: Placement,
    ) -> Result<ResolvedCall> {
        let (index, f) = self.registry.resolve(name.as_bytes())?;
        f.check(&args)?;
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
        })
    }

    fn run_calls(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        if calls.is_empty() {
            Vec::new()
        } else if self.transport == Transport::Resp {
            calls.iter().map(|c| self.run_resp(c)).collect()
        } else {
            self.run_on_link(calls)
        }
    }

    /// One invocation over RESP: `AUTOLOC.CALL`, or compute-side with RESP reads; a pushback
    /// is finished compute-side.
    fn run_resp(&mut self, c: &ResolvedCall) -> Result<Invocation> {
        match c.placement {
            Placement::Compute => self.run_compute(c.index, &*c.f, &c.args, false),
            _ => match self.run_storage(c.index, &*c.f, &c.args) {
                Err(Error::Function(e)) if e.is_pushback() => {
                    self.run_compute(c.index, &*c.f, &c.args, true)
                }
                other => other,
            },
        }
    }

    fn run_on_link(&mut self, calls: &[ResolvedCall]) -> Vec<Result<Invocation>> {
        let transport = self.transport;
        let per_key = self.read_mode == ReadMode::PerKey;
        let session = match self.session() {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                return calls
                    .iter()
                    .map(|_| {
                        Err(Error::Transport {
                            transport: transport.to_string(),
                            message: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        let tasks: Vec<Task<'_, LinkRun>> = calls
            .iter()
            .map(|c| {
                Box::pin(invoke_on_link(
                    session,
                    &*c.f,
                    &c.args,
                    c.placement,
                    per_key,
                )) as Task<'_, LinkRun>
            })
            .collect();
        let (runs, busy) = run_all_timed(session, tasks);
        calls
            .iter()
            .zip(runs)
            .zip(busy)
            .map(|((c, run), cpu_each)| {
                if run.result.as_ref().is_err_and(session::is_too_large) {
                    // A value or result does not fit the link's frames: run it over RESP instead.
                    return self.run_resp(c);
                }
                if run.side == Side::Storage && run.result.is_ok() {
                    // One RTT sample for the cost model: what the caller waited minus what the
                    // storage side spent (CPU and queueing).
                    let rtt = run.wall.as_nanos() as f64
                        - (run.cost.storage_cpu_ns + run.cost.queue_ns) as f64;
                    let mut costs = self.table.costs();
                    costs.observe_rtt(rtt, 0.02);
                    self.table.set_costs(&costs);
                }
                if run.pushed_back {
                    // The storage side's share of the work, before it handed the invocation back.
                    let pushed = Record {
                        error: true,
                        pushback: true,
                        round_trips: 1,
                        storage_cpu_ns: run.cost.storage_cpu_ns,
                        queue_ns: run.cost.queue_ns,
                        ..Record::default()
                    };
                    self.table.record(c.index, Side::Storage, &pushed);
                }
                let record = Record {
                    error: run.result.is_err(),
                    pushback: false,
                    wall_ns: run.wall.as_nanos() as u64,
                    cpu_ns: cpu_each,
                    round_trips: run.requests,
                    bytes: 0,
                    storage_cpu_ns: if run.pushed_back {
                        0
                    } else {
                        run.cost.storage_cpu_ns
                    },
                    queue_ns: if run.pushed_back {
                        0
                    } else {
                        run.cost.queue_ns
                    },
                    keys_read: run.cost.keys_read,
                    bytes_read: run.cost.bytes_read,
                    reads: run.cost.reads,
                };
                self.table.record(c.index, run.side, &record);
                Ok(Invocation {
                    output: run.result?,
                    side: run.side,
                    pushed_back: run.pushed_back,
                    wall: run.wall,
                    cpu: Duration::from_nanos(cpu_each),
                    round_trips: run.requests,
                    bytes: 0,
                })
            })
            .collect()
    }

    fn run_storage(
        &mut self,
        index: usize,
        f: &dyn Function,
        args: &[Vec<u8>],
    ) -> Result<Invocation> {
        let started = Instant::now();
        let cpu = thread_cpu_ns();
        let conn = self.connection()?;
        let (in0, out0) = conn.bytes();
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
        cmd.extend([b"AUTOLOC.CALL".as_slice(), f.name().as_bytes()]);
        cmd.extend(args.iter().map(Vec::as_slice));
        let reply = conn.call(&cmd);
        let (in1, out1) = conn.bytes();
        let reply = reply.map_err(|e| self.conn_error(e))?;
        let mut record = Record {
            wall_ns: started.elapsed().as_nanos() as u64,
            cpu_ns: thread_cpu_ns().saturating_sub(cpu),
            round_trips: 1,
            bytes: (in1 - in0) + (out1 - out0),
            ..Record::default()
        };
        let result = match reply {
            Frame::Error(e) => Err(FnError::from_wire(&e)),
            frame => Output::from_reply(f.output_kind(), to_reply(frame)),
        };
        record.error = result.is_err();
        record.pushback = result.as_ref().is_err_and(FnError::is_pushback);
        self.table.record(index, Side::Storage, &record);
        let output = result?;
        Ok(Invocation {
            output,
            side: Side::Storage,
            pushed_back: false,
            wall: Duration::from_nanos(record.wall_ns),
            cpu: Duration::from_nanos(record.cpu_ns),
            round_trips: 1,
            bytes: record.bytes,
        })
    }

    fn run_compute(
        &mut self,
        index: usize,
        f: &dyn Function,
        args: &[Vec<u8>],
        pushed_back: bool,
    ) -> Result<Invocation> {
        let started = Instant::now();
        let cpu = thread_cpu_ns();
        let mode = self.read_mode;
        let conn = self.connection()?;
        let (in0, out0) = conn.bytes();
        let store = RespStore::new(conn, mode);
        let mut result = block_on(f.call(&store, args));
        let (round_trips, _) = store.counts();
        if let Err(FnError::Store(_)) = &result {
            // A failed read may leave replies unread on the connection: start afresh next time.
            self.conn = None;
        }
        if let Err(FnError::NoKey(key)) = &result {
            // MGET reads a key of another type as nil; tell the two apart, as the storage side does.
            if let Ok(Frame::Simple(t)) = self.command(&[b"TYPE".as_slice(), key.as_bytes()]) {
                if t != "none" {
                    result = Err(FnError::WrongType(key.clone()));
                }
            }
        }
        let (in1, out1) = self.conn.as_ref().map_or((in0, out0), Connection::bytes);
        let record = Record {
            error: result.is_err(),
            pushback: false,
            wall_ns: started.elapsed().as_nanos() as u64,
            cpu_ns: thread_cpu_ns().saturating_sub(cpu),
            round_trips,
            bytes: in1.saturating_sub(in0) + out1.saturating_sub(out0),
            ..Record::default()
        };
        self.table.record(index, Side::Compute, &record);
        Ok(Invocation {
            output: result?,
            side: Side::Compute,
            pushed_back,
            wall: Duration::from_nanos(record.wall_ns),
            cpu: Duration::from_nanos(record.cpu_ns),
            round_trips,
            bytes: record.bytes,
        })
    }
}

/// An invocation whose function is resolved, whose arguments are checked, and whose side is
/// decided (`placement` is `Storage` or `Compute`, never `Auto`).
struct ResolvedCall {
    index: usize,
    f: Arc<dyn Function>,
    args: Vec<Vec<u8>>,
    placement: Placement,
}

/// What one invocation over a data-plane link did.
struct LinkRun {
    result: Result<Output, FnError>,
    side: Side,
    pushed_back: bool,
    /// What the storage side reported (storage-side), or the reads made (compute-side).
    cost: InvokeCost,
    wall: Duration,
    requests: u64,
}

/// Runs one invocation over `session`: storage-side as one `Invoke` request (falling back to
/// compute-side on a pushback), or compute-side through a [`LinkStore`].
async fn invoke_on_link(
    session: &RefCell<Session>,
    f: &dyn Function,
    args: &[Vec<u8>],
    placement: Placement,
    per_key: bool,
) -> LinkRun {
    let started = Instant::now();
    let mut run = LinkRun {
        result: Err(FnError::Store("not run".into())),
        side: Side::Storage,
        pushed_back: false,
        cost: InvokeCost::default(),
        wall: Duration::ZERO,
        requests: 0,
    };
    let mut read_set = Vec::new();
    if placement == Placement::Storage {
        let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        run.requests += 1;
        let reply = session::request(
            session,
            &Message::Invoke {
                function: f.name(),
                args: List::new(&argv),
            },
        )
        .await;
        run.result = match reply {
            Ok(session::Reply::Invoked { result, cost }) => {
                run.cost = cost;
                decode_result(f, &result)
            }
            Ok(session::Reply::Pushback {
                read_set: rs,
                storage_cpu_ns,
                queue_ns,
            }) => {
                (run.cost.storage_cpu_ns, run.cost.queue_ns) = (storage_cpu_ns, queue_ns);
                run.pushed_back = true;
                read_set = rs;
                Err(FnError::Pushback {
                    budget_us: 0,
                    spent_us: storage_cpu_ns / 1000,
                })
            }
            Ok(session::Reply::Error(e)) if e.starts_with(session::TOO_LARGE) => {
                Err(FnError::Store(e))
            }
            Ok(other) => Err(session::reply_error(other)),
            Err(e) => Err(e),
        };
        if !run.pushed_back {
            run.wall = started.elapsed();
            return run;
        }
    }
    // Compute-side, from the start or after a pushback (then the values the storage side had
    // already read come from its read set, and only the rest is fetched: ASFP).
    let store = ReadSetStore::new(
        read_set,
        CountingStore {
            inner: LinkStore::new(session).per_key(per_key),
            requests: Cell::new(0),
            keys: Cell::new(0),
        },
    );
    run.result = f.call(&store, args).await;
    run.side = Side::Compute;
    run.cost.reads = store.inner().requests.get();
    // Keys fetched here (a pushed-back run's read set came with the pushback, not counted).
    run.cost.keys_read = store.inner().keys.get();
    run.requests += run.cost.reads;
    run.wall = started.elapsed();
    run
}

/// Decodes the result of an `InvokeReply` (the compact binary encoding of [`Output::encode`]).
fn decode_result(f: &dyn Function, bytes: &[u8]) -> Result<Output, FnError> {
    Output::decode(f.output_kind(), bytes)
}

/// Counts the requests one invocation sends through a shared session, and the keys it reads.
struct CountingStore<'s> {
    inner: LinkStore<'s>,
    requests: Cell<u64>,
    keys: Cell<u64>,
}

impl autoloc_functions::Store for CountingStore<'_> {
    fn read<'a>(
        &'a self,
        keys: &'a [Vec<u8>],
        visit: autoloc_functions::Visit<'a>,
    ) -> autoloc_functions::StoreFuture<'a, ()> {
        self.requests
            .set(self.requests.get() + u64::from(!keys.is_empty()));
        self.keys.set(self.keys.get() + keys.len() as u64);
        self.inner.read(keys, visit)
    }
    fn write<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
    ) -> autoloc_functions::StoreFuture<'a, ()> {
        self.requests.set(self.requests.get() + 1);
        self.inner.write(key, value)
    }
    fn checkpoint(&self) -> autoloc_functions::StoreFuture<'_, ()> {
        self.inner.checkpoint()
    }
}
