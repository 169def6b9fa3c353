//! `bench-dataplane`: latency and throughput of every data plane, against its floors.
//!
//! For each transport (shm, tcp, rdma when built with `--features rdma` and a device exists,
//! resp) one client thread, pinned to `--client-core`, measures:
//! - GET of a 64 B and a 4 KiB value, one at a time and 16 in flight;
//! - a storage-side `khop` (k=2) on an R-MAT graph, one at a time and 16 in flight.
//!
//! The floors, measured in the same run with no Redis behind them:
//! - `ring`: a 64-byte ping-pong between two pinned threads through a pair of
//!   `dataplane::ring` rings, spinning;
//! - `shm-echo-link`: GETs over a bare shm `ClientLink` to an in-process `ShmServer` that answers
//!   every request with the value (wire encoding and the link, no `Session`, no Redis);
//! - `shm-echo`: the same through a `Session` (request ids, the reply map, owned replies);
//! - `tcp-echo-link`: GETs over a bare tcp (io_uring) `ClientLink` to an in-process `TcpServer`
//!   on loopback that answers the same way, one at a time and 16 in flight (measured last, so
//!   that the rows and plot colours of the others stay as they were).
//!
//! And one diagnostic op, `get-spin` (shm-echo and shm, 64 B, one at a time): the GET through
//! the `Session`, but waiting for the reply with a spin-loop hint between pumps instead of
//! `Session::idle`, whose every step asks the kernel whether the server process is alive.
//!
//! The redis-server is private (started with the module argument `cores <server-core>`, so its
//! data-plane thread is pinned there) unless `--redis URL` names one. Each request's latency is
//! timed from its send to its arrival, in a histogram of nanoseconds.

use std::collections::BTreeMap;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use autoloc::load::{write_graph, Graph};
use autoloc::server::RedisServer;
use autoloc::session::{Reply, Session};
use autoloc::{Placement, Runtime, Side, Transport};
use autoloc_bench::args::{
    CellArgs, ClientCoreArgs, GraphArgs, JsonArgs, PlotArgs, ServerCoreArgs,
};
use autoloc_bench::harness::{
    self, find, measure, pin, progress, record, Bound, Cell, Check, Machine, Measured, Plan,
    Report, Row,
};
use autoloc_dataplane::backoff::BackoffConfig;
use autoloc_dataplane::link::{ClientLink, ServerLink, ShmClientLink};
use autoloc_dataplane::resp::DEFAULT_TIMEOUT;
use autoloc_dataplane::ring::{self, RingConfig};
use autoloc_dataplane::shm::{ShmClient, ShmConfig, ShmServer};
use autoloc_dataplane::tcp::{TcpClientLink, TcpServer};
use autoloc_dataplane::wire::{List, Message};
use autoloc_dataplane::{Connection, Frame};
use clap::Parser;
use hdrhistogram::Histogram;

/// Requests in flight in the pipelined cells.
const IN_FLIGHT: usize = 16;
/// Value sizes of the GET cells.
const VALUE_SIZES: [usize; 2] = [64, 4096];
/// Bytes of a ping-pong message.
const PING_BYTES: usize = 64;
/// khop's k.
const K: &str = "2";
/// Seed of the R-MAT graph.
const SEED: u64 = 1;
/// Longest wait for any one reply before the run fails.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// Calls timed to cost a clock read or a liveness check.
const TIMED_CALLS: u32 = 100_000;

#[derive(Debug, Parser)]
#[command(
    about = "Latency and throughput of each data plane (shm, tcp, rdma, resp) against \
                   the raw shared-memory ping-pong, with PASS/FAIL against the targets"
)]
#[command(mut_arg("quick", |a| a.help(
    "A fast smoke run: at most 100 ms per cell and an R-MAT graph of scale at most 10"
)))]
#[command(mut_arg("server_core", |a| a.help(
    "Core of the module's data-plane thread, the ping-pong's echo thread and the in-process \
     shm and tcp echo servers"
)))]
#[command(mut_arg("json", |a| a.help(
    "Write the machine, parameters and rows as JSON to this file"
)))]
#[command(mut_arg("plot", |a| a.help(
    "Draw p50 and p99 latency per transport and operation as an SVG to this file"
)))]
struct Args {
    /// Redis with the AutoLoc module (redis://[[user]:password@]host[:port][/db]); default: a
    /// private redis-server started here with the module argument `cores <server-core>`.
    #[arg(long)]
    redis: Option<String>,
    #[command(flatten)]
    cell: CellArgs,
    #[command(flatten)]
    client: ClientCoreArgs,
    #[command(flatten)]
    server: ServerCoreArgs,
    #[command(flatten)]
    graph: GraphArgs,
    /// Do not load the graph (it is already in the server given by --redis, same scale).
    #[arg(long)]
    no_load: bool,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    plot: PlotArgs,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.cell.quick {
        args.cell.duration_ms = args.cell.duration_ms.min(100);
        args.graph.scale = args.graph.scale.min(10);
    }
    let plan = args.cell.plan()?;
    let machine = Machine::detect();

    // The server first, before this thread is pinned: a child inherits the affinity mask, and
    // Redis's main thread should be free to run on either core.
    let mut params = BTreeMap::new();
    let (server, url) = match &args.redis {
        Some(url) => {
            params.insert("server".into(), format!("{url} (given)"));
            (None, url.clone())
        }
        None => {
            let core = args.server.core.to_string();
            let server = RedisServer::start(&["cores", &core])
                .context("start a private redis-server with the AutoLoc module")?;
            let url = server.url();
            params.insert(
                "server".into(),
                format!("private redis-server, module argument `cores {core}`"),
            );
            (Some(server), url)
        }
    };
    let mut control = harness::connect(&url)?;
    params.insert("redis_version".into(), redis_version(&mut control));
    let vertices = setup_data(&mut control, &args, &mut params)?;

    args.client.pin(&mut params);
    params.insert("server_core".into(), args.server.core.to_string());
    params.insert(
        "duration_ms_per_cell".into(),
        args.cell.duration_ms.to_string(),
    );
    params.insert(
        "warmup_ms_per_cell".into(),
        plan.warmup.as_millis().to_string(),
    );
    params.insert("in_flight".into(), format!("1 and {IN_FLIGHT}"));
    params.insert(
        "value_bytes".into(),
        format!("{} and {}", VALUE_SIZES[0], VALUE_SIZES[1]),
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    progress("ring ping-pong");
    let m = pingpong(plan, args.server.core)?;
    rows.push(harness::row(cell("ring", "pingpong", PING_BYTES, 1), &m));

    echo_floors(plan, args.server.core, &mut rows, &mut notes)?;

    for transport in Transport::ALL {
        match transport {
            Transport::Resp => resp_cells(plan, &url, &vertices, &mut rows)?,
            t => {
                let rt = match Runtime::connect(&url).and_then(|rt| rt.with_transport(t)) {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("{t}: skipped: {e}");
                        continue;
                    }
                };
                link_cells(plan, rt, &vertices, &mut control, &mut rows, &mut notes)?;
            }
        }
    }
    if let Err(e) = tcp_echo_floor(plan, args.server.core, &mut rows) {
        eprintln!("tcp-echo-link: skipped: {e:#}");
    }

    notes.push(format!(
        "thread_cpu_ns() (clock_gettime CLOCK_THREAD_CPUTIME_ID): {:.0} ns per call; \
         Instant::now(): {:.0} ns per call",
        per_call(autoloc_dataplane::clock::thread_cpu_ns),
        per_call(|| Instant::now().elapsed().as_nanos() as u64) / 2.0
    ));

    harness::print_header(&machine, &params);
    print!("{}", harness::table(&rows));
    println!();
    println!("targets:");
    for c in checks(&rows) {
        println!("{}", c.line());
    }
    println!();
    println!("where the shm GET floor goes (64 B, one at a time, p50):");
    for line in floor_breakdown(&rows) {
        println!("  {line}");
    }
    for n in &notes {
        println!("  {n}");
    }

    let report = Report {
        machine,
        parameters: params,
        rows,
    };
    if let Some(path) = &args.json.path {
        harness::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot.path {
        let footnote = format!(
            "{} cores, {}, kernel {}; client on core {}, server on core {}; {} ms per cell",
            report.machine.cores,
            report.machine.cpu,
            report.machine.kernel,
            args.client.core,
            args.server.core,
            args.cell.duration_ms
        );
        harness::plot_latency(
            path,
            "AutoLoc data plane: latency per request, p50 (bar) and p99 (whisker)",
            &footnote,
            &report.rows,
        )?;
        eprintln!("wrote {}", path.display());
    }
    drop(server);
    Ok(())
}

fn cell<'a>(transport: &'a str, op: &'a str, value_bytes: usize, in_flight: usize) -> Cell<'a> {
    Cell {
        transport,
        op,
        value_bytes: value_bytes as u64,
        in_flight: in_flight as u32,
    }
}

fn value_key(size: usize) -> String {
    format!("autoloc-bench:value:{size}")
}

fn redis_version(control: &mut Connection) -> String {
    autoloc::stats::info_field(control, "server", "redis_version")
        .unwrap_or_else(|| "unknown".into())
}

/// Writes the GET values and (unless `--no-load`) the graph; returns the khop start vertices.
fn setup_data(
    control: &mut Connection,
    args: &Args,
    params: &mut BTreeMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    for size in VALUE_SIZES {
        let value = vec![b'v'; size];
        let reply = control
            .call(&[b"SET".as_slice(), value_key(size).as_bytes(), &value])
            .context("SET a benchmark value")?;
        if let Frame::Error(e) = reply {
            bail!("SET {}: {e}", value_key(size));
        }
    }
    let graph = format!(
        "R-MAT scale {} edge factor {} seed {SEED}",
        args.graph.scale, args.graph.edge_factor
    );
    if args.no_load {
        params.insert("khop_graph".into(), format!("{graph} (not loaded here)"));
    } else {
        progress(&format!("(loading {graph})"));
        let g = Graph::rmat(args.graph.scale, args.graph.edge_factor, SEED)?;
        let report = write_graph(control, &g, SEED, false)?;
        params.insert(
            "khop_graph".into(),
            format!(
                "{graph}: {} vertices, {} arcs, k={K}",
                report.vertices, report.arcs
            ),
        );
    }
    Ok((0..1u32 << args.graph.scale)
        .map(|v| v.to_string())
        .collect())
}

/// The raw floor: a 64-byte message back and forth between this thread and an echo thread on
/// `echo_core`, through a pair of rings, both sides spinning.
fn pingpong(plan: Plan, echo_core: usize) -> anyhow::Result<Measured> {
    let cfg = RingConfig {
        slot_count: 64,
        slot_size: 128,
    };
    let (mut to_echo, mut echo_rx) = ring::channel(cfg)?;
    let (mut echo_tx, mut from_echo) = ring::channel(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo: JoinHandle<anyhow::Result<()>> = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(echo_core);
            let mut msg = [0u8; PING_BYTES];
            loop {
                match echo_rx.try_pop()? {
                    Some(slot) => {
                        msg.copy_from_slice(&slot[..PING_BYTES]);
                        drop(slot);
                        echo_tx.try_push(&msg)?;
                    }
                    None if stop.load(Ordering::Relaxed) => return Ok(()),
                    None => spin_loop(),
                }
            }
        })
    };
    let msg = [0x5a_u8; PING_BYTES];
    let measured = measure(plan, |h| {
        let t0 = Instant::now();
        to_echo.try_push(&msg)?;
        loop {
            if let Some(slot) = from_echo.try_pop()? {
                anyhow::ensure!(slot.len() == PING_BYTES, "echo of {} bytes", slot.len());
                break;
            }
            if t0.elapsed() > REPLY_DEADLINE {
                bail!("no echo within {REPLY_DEADLINE:?}");
            }
            spin_loop();
        }
        record(h, t0.elapsed());
        Ok(1)
    });
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .map_err(|_| anyhow!("the echo thread panicked"))??;
    measured
}

/// An in-process server link (shm or tcp) served on `core`, spinning, that answers every
/// request with `value`: no Redis.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl EchoServer {
    fn start(mut server: impl ServerLink + 'static, value: Vec<u8>, core: usize) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                pin(core);
                while !stop.load(Ordering::Relaxed) {
                    if server.has_pending() {
                        server.serve(32, &mut |frame, out| {
                            let _ = out.reply(
                                frame.request_id,
                                &Message::Value {
                                    value: Some(&value),
                                },
                            );
                        })?;
                    } else {
                        spin_loop();
                    }
                }
                Ok(())
            })
        };
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }

    /// An shm server answering `value`, and a bare client link to it.
    fn shm(value: Vec<u8>, core: usize) -> anyhow::Result<(EchoServer, ShmClientLink)> {
        let server = ShmServer::create(&ShmConfig::default())?;
        let client = ShmClient::attach(server.path(), &server.secret())?;
        let echo = EchoServer::start(server, value, core);
        Ok((echo, ShmClientLink::new(client, BackoffConfig::default())))
    }

    /// A tcp server on loopback answering `value`, and a bare client link to it.
    fn tcp(value: Vec<u8>, core: usize) -> anyhow::Result<(EchoServer, TcpClientLink)> {
        let server = TcpServer::bind("127.0.0.1:0").context("bind a tcp data-plane server")?;
        let addr = server.local_addr();
        let echo = EchoServer::start(server, value, core);
        let link = TcpClientLink::connect(addr, DEFAULT_TIMEOUT)
            .with_context(|| format!("connect to the tcp echo server at {addr}"))?;
        Ok((echo, link))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the echo server panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The shm floors without Redis: GETs of 64 B over the bare link, then through a `Session`.
fn echo_floors(
    plan: Plan,
    core: usize,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let size = VALUE_SIZES[0];
    let key = value_key(size);
    let (server, mut link) = EchoServer::shm(vec![b'v'; size], core)?;
    notes.push(format!(
        "ShmClientLink::peer_gone() (each Session::idle step, via ClientLink::wait): {:.0} ns per call",
        per_call(|| u64::from(link.peer_gone()))
    ));
    bare_link_cells(plan, "shm-echo-link", &mut link, rows)?;
    drop(link);
    server.stop()?;

    let (server, link) = EchoServer::shm(vec![b'v'; size], core)?;
    let mut session = Session::new(Box::new(link), DEFAULT_TIMEOUT);
    for n in [1, IN_FLIGHT] {
        progress(&format!("shm-echo get {size} B x{n}"));
        let m = measure(plan, |h| {
            session_gets(&mut session, key.as_bytes(), size, n, h)
        })?;
        rows.push(harness::row(cell("shm-echo", "get", size, n), &m));
    }
    progress(&format!("shm-echo get-window {size} B x{IN_FLIGHT}"));
    let m = window_gets(plan, &mut session, key.as_bytes(), size)?;
    rows.push(harness::row(
        cell("shm-echo", "get-window", size, IN_FLIGHT),
        &m,
    ));
    progress(&format!("shm-echo get-spin {size} B x1"));
    let m = measure(plan, |h| spin_get(&mut session, key.as_bytes(), size, h))?;
    rows.push(harness::row(cell("shm-echo", "get-spin", size, 1), &m));
    drop(session);
    server.stop()
}

/// The tcp floor without Redis: GETs of 64 B over a bare tcp link to an in-process server on
/// loopback, one at a time and `IN_FLIGHT` at once.
fn tcp_echo_floor(plan: Plan, core: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (server, mut link) = EchoServer::tcp(vec![b'v'; VALUE_SIZES[0]], core)?;
    bare_link_cells(plan, "tcp-echo-link", &mut link, rows)?;
    drop(link);
    server.stop()
}

/// The rows of `transport` (an echo server's bare link): GETs of 64 B one at a time, then
/// `IN_FLIGHT` at once.
fn bare_link_cells(
    plan: Plan,
    transport: &str,
    link: &mut dyn ClientLink,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let size = VALUE_SIZES[0];
    let key = value_key(size);
    let mut next_id = 1;
    for n in [1, IN_FLIGHT] {
        progress(&format!("{transport} get {size} B x{n}"));
        let m = measure(plan, |h| {
            link_gets(link, key.as_bytes(), size, n, &mut next_id, h)
        })?;
        rows.push(harness::row(cell(transport, "get", size, n), &m));
    }
    Ok(())
}

/// `n` GETs of `key` over a bare client link: queue all, flush once, poll until every reply is
/// back; each is timed from its queueing to the poll that delivered it.
fn link_gets(
    link: &mut dyn ClientLink,
    key: &[u8],
    size: usize,
    n: usize,
    next_id: &mut u64,
    h: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let mut sent = [Instant::now(); IN_FLIGHT];
    let first = *next_id;
    for t in sent.iter_mut().take(n) {
        *t = Instant::now();
        link.queue(*next_id, &Message::Get { key })?;
        *next_id += 1;
    }
    link.flush()?;
    let (mut got, mut bad) = (0, 0);
    let deadline = Instant::now() + REPLY_DEADLINE;
    while got < n {
        let k = link.poll(&mut |frame| {
            let i = frame.request_id.wrapping_sub(first) as usize;
            match (frame.message, sent.get(i)) {
                (Message::Value { value: Some(v) }, Some(t)) if v.len() == size => {
                    record(h, t.elapsed());
                }
                _ => bad += 1,
            }
        })?;
        got += k;
        if k == 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no reply within {REPLY_DEADLINE:?}"
            );
            spin_loop();
        }
    }
    anyhow::ensure!(bad == 0, "{bad} unexpected replies to GET");
    Ok(n as u64)
}

fn expect_value(reply: Reply, size: usize) -> anyhow::Result<()> {
    match reply {
        Reply::Value(Some(v)) if v.len() == size => Ok(()),
        Reply::Value(Some(v)) => bail!("GET: {} bytes, expected {size}", v.len()),
        Reply::Value(None) => bail!("GET: no such key"),
        Reply::Error(e) => bail!("GET: {e}"),
        _ => bail!("GET: unexpected reply"),
    }
}

/// `n` GETs through a `Session`: one at a time is `call`; more is send all, then pump and take
/// until every reply is back, each timed from its send to the pump that delivered it.
fn session_gets(
    session: &mut Session,
    key: &[u8],
    size: usize,
    n: usize,
    h: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    if n == 1 {
        let t0 = Instant::now();
        let reply = session.call(&Message::Get { key })?.reply;
        record(h, t0.elapsed());
        expect_value(reply, size)?;
        return Ok(1);
    }
    let mut pending = [(0u64, Instant::now()); IN_FLIGHT];
    for p in pending.iter_mut().take(n) {
        let t = Instant::now();
        *p = (session.send(&Message::Get { key })?, t);
    }
    let deadline = Instant::now() + session.timeout();
    let mut left = n;
    while left > 0 {
        if session.pump()? == 0 {
            session.idle(deadline)?;
            continue;
        }
        let now = Instant::now();
        for p in pending.iter_mut().take(n).filter(|p| p.0 != 0) {
            if let Some(reply) = session.take(p.0) {
                record(h, now - p.1);
                expect_value(reply.reply, size)?;
                p.0 = 0;
                left -= 1;
            }
        }
    }
    Ok(n as u64)
}

/// GETs through a `Session` with `IN_FLIGHT` always outstanding: each reply that arrives is
/// replaced by a new request at once, so the client's work and the server's overlap (where
/// [`session_gets`] sends a batch and waits for all of it). Each is timed from its send to the
/// pump that delivered it.
struct Window {
    pending: Vec<(u64, Instant)>,
}

impl Window {
    fn new() -> Window {
        Window {
            pending: Vec::with_capacity(IN_FLIGHT),
        }
    }

    /// One step of [`measure`]: fills the window, then waits for at least one reply.
    fn step(
        &mut self,
        session: &mut Session,
        key: &[u8],
        size: usize,
        h: &mut Histogram<u64>,
    ) -> anyhow::Result<u64> {
        while self.pending.len() < IN_FLIGHT {
            let t = Instant::now();
            self.pending.push((session.send(&Message::Get { key })?, t));
        }
        let deadline = Instant::now() + session.timeout();
        let mut done = 0;
        while done == 0 {
            if session.pump()? == 0 {
                session.idle(deadline)?;
                continue;
            }
            let now = Instant::now();
            let mut i = 0;
            while i < self.pending.len() {
                let (id, sent) = self.pending[i];
                match session.take(id) {
                    Some(reply) => {
                        record(h, now - sent);
                        expect_value(reply.reply, size)?;
                        self.pending.swap_remove(i);
                        done += 1;
                    }
                    None => i += 1,
                }
            }
        }
        Ok(done)
    }

    /// Waits for the requests still outstanding, so the session is clean for the next cell.
    fn drain(&mut self, session: &mut Session, size: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + session.timeout();
        while !self.pending.is_empty() {
            if session.pump()? == 0 {
                session.idle(deadline)?;
            }
            let mut i = 0;
            while i < self.pending.len() {
                match session.take(self.pending[i].0) {
                    Some(reply) => {
                        expect_value(reply.reply, size)?;
                        self.pending.swap_remove(i);
                    }
                    None => i += 1,
                }
            }
        }
        Ok(())
    }
}

/// A `get-window` cell: GETs of `key` with `IN_FLIGHT` always outstanding ([`Window`]).
fn window_gets(
    plan: Plan,
    session: &mut Session,
    key: &[u8],
    size: usize,
) -> anyhow::Result<Measured> {
    let mut w = Window::new();
    let m = measure(plan, |h| w.step(session, key, size, h))?;
    w.drain(session, size)?;
    Ok(m)
}

/// One GET through a `Session`, waiting with a spin-loop hint between pumps (no `idle`).
fn spin_get(
    session: &mut Session,
    key: &[u8],
    size: usize,
    h: &mut Histogram<u64>,
) -> anyhow::Result<u64> {
    let t0 = Instant::now();
    let id = session.send(&Message::Get { key })?;
    let mut spins = 0u32;
    let reply = loop {
        session.pump()?;
        if let Some(r) = session.take(id) {
            break r.reply;
        }
        spins = spins.wrapping_add(1);
        if spins & 4095 == 0 && t0.elapsed() > REPLY_DEADLINE {
            bail!("no reply within {REPLY_DEADLINE:?}");
        }
        spin_loop();
    };
    record(h, t0.elapsed());
    expect_value(reply, size)?;
    Ok(1)
}

/// `(requests served, Redis lock acquisitions)` of the module's data-plane threads so far.
fn lock_stats(control: &mut Connection) -> Option<(u64, u64)> {
    let stats = autoloc::stats::StorageStats::read(control).ok()?;
    Some((
        stats.get("dataplane_requests")?,
        stats.get("dataplane_lock_acquisitions")?,
    ))
}

/// The cells of a data-plane transport: GETs through the runtime's session, then khop.
fn link_cells(
    plan: Plan,
    mut rt: Runtime,
    vertices: &[String],
    control: &mut Connection,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let rt_transport = rt.transport();
    let name = rt_transport.to_string();
    {
        let mut session = rt.session()?.borrow_mut();
        for size in VALUE_SIZES {
            let key = value_key(size);
            for n in [1, IN_FLIGHT] {
                progress(&format!("{name} get {size} B x{n}"));
                let before = lock_stats(control);
                let m = measure(plan, |h| {
                    session_gets(&mut session, key.as_bytes(), size, n, h)
                })?;
                if let (Some((r0, l0)), Some((r1, l1))) = (before, lock_stats(control)) {
                    if size == VALUE_SIZES[0] && l1 > l0 {
                        notes.push(format!(
                            "{name} get {size} B x{n}: {:.2} requests per Redis lock acquisition \
                             (module counters)",
                            (r1 - r0) as f64 / (l1 - l0) as f64
                        ));
                    }
                }
                rows.push(harness::row(cell(&name, "get", size, n), &m));
            }
        }
        {
            let size = VALUE_SIZES[0];
            progress(&format!("{name} get-window {size} B x{IN_FLIGHT}"));
            let m = window_gets(plan, &mut session, value_key(size).as_bytes(), size)?;
            rows.push(harness::row(cell(&name, "get-window", size, IN_FLIGHT), &m));
        }
        if rt_transport == Transport::Shm {
            let size = VALUE_SIZES[0];
            progress(&format!("{name} get-spin {size} B x1"));
            let key = value_key(size);
            let m = measure(plan, |h| spin_get(&mut session, key.as_bytes(), size, h))?;
            rows.push(harness::row(cell(&name, "get-spin", size, 1), &m));
            // One request that looks up IN_FLIGHT keys under one lock: the slope is the module's
            // cost per key lookup, the rest is its fixed cost per request.
            progress(&format!("{name} multiget of {IN_FLIGHT} keys x1"));
            let keys = [key.as_bytes(); IN_FLIGHT];
            let m = measure(plan, |h| {
                let t0 = Instant::now();
                let reply = session.call(&Message::MultiGet {
                    keys: List::new(&keys),
                })?;
                record(h, t0.elapsed());
                match reply.reply {
                    Reply::Values(v) if v.len() == IN_FLIGHT => Ok(1),
                    _ => bail!("MultiGet: unexpected reply"),
                }
            })?;
            let get = find(rows, cell(&name, "get", size, 1)).map_or(0, |r| r.p50_ns);
            let multi = m.latency.value_at_quantile(0.5);
            notes.push(format!(
                "{name} MultiGet of {IN_FLIGHT} x {size} B keys: p50 {multi} ns vs GET {get} ns: \
                 {:.0} ns per extra key lookup in the module",
                (multi as f64 - get as f64) / (IN_FLIGHT - 1) as f64
            ));
        }
    }
    let mut next = vertices.iter().cycle();
    let mut pushed_back = 0u64;
    progress(&format!("{name} khop x1"));
    let m = measure(plan, |h| {
        let v = next.next().expect("vertices");
        let t0 = Instant::now();
        let inv = rt.invoke("khop", &[v.as_str(), K], Placement::Storage)?;
        record(h, t0.elapsed());
        pushed_back += u64::from(inv.side != Side::Storage);
        Ok(1)
    })?;
    rows.push(harness::row(cell(&name, "khop", 0, 1), &m));
    progress(&format!("{name} khop x{IN_FLIGHT}"));
    let m = measure(plan, |h| {
        let calls: Vec<(&str, Vec<&str>)> = (0..IN_FLIGHT)
            .map(|_| ("khop", vec![next.next().expect("vertices").as_str(), K]))
            .collect();
        for inv in rt.invoke_many(&calls, Placement::Storage) {
            let inv = inv?;
            record(h, inv.wall);
            pushed_back += u64::from(inv.side != Side::Storage);
        }
        Ok(IN_FLIGHT as u64)
    })?;
    rows.push(harness::row(cell(&name, "khop", 0, IN_FLIGHT), &m));
    notes.push(format!(
        "{name} khop: {pushed_back} invocations pushed back by the module's budget (ran \
         compute-side, counted in the khop rows)"
    ));
    Ok(())
}

/// The resp cells: GETs on a plain connection (one at a time, and 16 pipelined: queue, flush,
/// read), khop through `AUTOLOC.CALL` (one at a time through the runtime, 16 pipelined).
fn resp_cells(
    plan: Plan,
    url: &str,
    vertices: &[String],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut conn = harness::connect(url)?;
    for size in VALUE_SIZES {
        let key = value_key(size);
        for n in [1, IN_FLIGHT] {
            progress(&format!("resp get {size} B x{n}"));
            let m = measure(plan, |h| {
                let t0 = Instant::now();
                for _ in 0..n {
                    conn.queue(&[b"GET".as_slice(), key.as_bytes()]);
                }
                conn.flush()?;
                for _ in 0..n {
                    match conn.read_frame()? {
                        Frame::Bulk(Some(v)) if v.len() == size => record(h, t0.elapsed()),
                        other => bail!("GET {key}: unexpected reply {:.80}", format!("{other:?}")),
                    }
                }
                Ok(n as u64)
            })?;
            rows.push(harness::row(cell("resp", "get", size, n), &m));
        }
    }
    let mut rt = Runtime::connect(url)?;
    let mut next = vertices.iter().cycle();
    progress("resp khop x1");
    let m = measure(plan, |h| {
        let v = next.next().expect("vertices");
        let t0 = Instant::now();
        rt.invoke("khop", &[v.as_str(), K], Placement::Storage)?;
        record(h, t0.elapsed());
        Ok(1)
    })?;
    rows.push(harness::row(cell("resp", "khop", 0, 1), &m));
    progress(&format!("resp khop x{IN_FLIGHT}"));
    let m = measure(plan, |h| {
        let t0 = Instant::now();
        for _ in 0..IN_FLIGHT {
            let v = next.next().expect("vertices");
            conn.queue(&[
                b"AUTOLOC.CALL".as_slice(),
                b"khop",
                v.as_bytes(),
                K.as_bytes(),
            ]);
        }
        conn.flush()?;
        for _ in 0..IN_FLIGHT {
            match conn.read_frame()? {
                // A pushback is an answer too (the storage side's budget at work on a busy host).
                Frame::Error(e)
                    if autoloc_functions::Error::from_resp(&e).code()
                        != autoloc_functions::ErrorCode::Pushback =>
                {
                    bail!("AUTOLOC.CALL khop: {e}")
                }
                _ => record(h, t0.elapsed()),
            }
        }
        Ok(IN_FLIGHT as u64)
    })?;
    rows.push(harness::row(cell("resp", "khop", 0, IN_FLIGHT), &m));
    Ok(())
}

/// Mean cost of one call of `f`, in ns.
fn per_call(mut f: impl FnMut() -> u64) -> f64 {
    let mut sink = 0u64;
    let t0 = Instant::now();
    for _ in 0..TIMED_CALLS {
        sink = sink.wrapping_add(f());
    }
    std::hint::black_box(sink);
    t0.elapsed().as_nanos() as f64 / f64::from(TIMED_CALLS)
}

/// The targets, each checked against the rows.
fn checks(rows: &[Row]) -> Vec<Check> {
    let get = |t: &str, n: usize| find(rows, cell(t, "get", VALUE_SIZES[0], n));
    let ring = find(rows, cell("ring", "pingpong", PING_BYTES, 1));
    let shm1 = get("shm", 1);
    let shm16 = find(rows, cell("shm", "get-window", VALUE_SIZES[0], IN_FLIGHT));
    let (tcp16, resp1) = (get("tcp", IN_FLIGHT), get("resp", 1));
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let p50 = |r: Option<&Row>| r.map(|r| r.p50_ns.max(1) as f64);
    let ops = |r: Option<&Row>| r.map(|r| r.ops_per_s);
    vec![
        Check {
            name: "shm GET 64 B one at a time: p50".into(),
            value: p50(shm1),
            bound: Bound::AtMost(1000.0),
            unit: "ns",
        },
        Check {
            name: "shm GET 64 B one at a time: p50 / ring ping-pong p50".into(),
            value: ratio(p50(shm1), p50(ring)),
            bound: Bound::AtMost(5.0),
            unit: "x",
        },
        Check {
            name: "RESP GET 64 B p50 / shm GET 64 B p50 (one at a time)".into(),
            value: ratio(p50(resp1), p50(shm1)),
            bound: Bound::AtLeast(40.0),
            unit: "x",
        },
        Check {
            name: format!("shm GET 64 B, {IN_FLIGHT} in flight (a window kept full): ops/s"),
            value: ops(shm16),
            bound: Bound::AtLeast(2e6),
            unit: "ops/s",
        },
        Check {
            name: format!("tcp GET 64 B x{IN_FLIGHT} ops/s / RESP GET 64 B x1 ops/s"),
            value: ratio(ops(tcp16), ops(resp1)),
            bound: Bound::AtLeast(3.0),
            unit: "x",
        },
    ]
}

/// The shm GET p50 (64 B, one at a time) split into the layers the floors isolate.
fn floor_breakdown(rows: &[Row]) -> Vec<String> {
    let p50 = |t: &str, op: &str| {
        find(rows, cell(t, op, PING_BYTES, 1))
            .or_else(|| find(rows, cell(t, op, VALUE_SIZES[0], 1)))
            .map(|r| r.p50_ns)
    };
    let steps = [
        (
            "ring",
            "pingpong",
            "raw ring round trip, two pinned threads spinning",
        ),
        (
            "shm-echo-link",
            "get",
            "+ wire encode/decode and the shm link (no Session, no Redis)",
        ),
        (
            "shm-echo",
            "get-spin",
            "+ Session bookkeeping: ids, reply HashMap, owned Reply",
        ),
        (
            "shm",
            "get-spin",
            "+ the module: Redis lock, key lookup, its poll loop",
        ),
        (
            "shm",
            "get",
            "+ Session::idle between pumps (a liveness syscall each step)",
        ),
    ];
    let mut out = Vec::new();
    let mut last: Option<u64> = None;
    for (t, op, what) in steps {
        if let Some(v) = p50(t, op) {
            let delta =
                last.map_or_else(String::new, |l| format!(" ({:+} ns)", v as i64 - l as i64));
            out.push(format!("{t:<14} {v:>7} ns{delta:<12} {what}"));
            last = Some(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoloc_bench::harness::Verdict;

    fn r(transport: &str, op: &str, bytes: usize, n: usize, p50: u64, ops: f64) -> Row {
        Row {
            transport: transport.into(),
            op: op.into(),
            value_bytes: bytes as u64,
            in_flight: n as u32,
            p50_ns: p50,
            p99_ns: p50 * 2,
            p999_ns: p50 * 3,
            ops_per_s: ops,
        }
    }

    #[test]
    fn the_documented_invocations_parse() {
        let a: Args = autoloc_bench::args::parse_line("bench-dataplane --json d.json --plot d.svg");
        assert_eq!(
            (a.cell.duration_ms, a.client.core, a.server.core),
            (700, 0, 1)
        );
        assert!(a.json.path.is_some() && a.plot.path.is_some());
        let a: Args = autoloc_bench::args::parse_line("bench-dataplane --quick --duration-ms 50");
        assert!(a.cell.quick && a.cell.duration_ms == 50);
    }

    #[test]
    fn checks_read_the_right_rows() {
        let rows = [
            r("ring", "pingpong", 64, 1, 200, 5e6),
            r("shm", "get", 64, 1, 800, 1.2e6),
            r("shm", "get", 64, 16, 4000, 1.5e6),
            r("shm", "get-window", 64, 16, 4000, 3e6),
            r("shm", "get", 4096, 1, 100_000, 1.0),
            r("tcp", "get", 64, 16, 90_000, 2e5),
            r("resp", "get", 64, 1, 40_000, 25_000.0),
        ];
        let c = checks(&rows);
        let verdicts: Vec<Verdict> = c.iter().map(Check::verdict).collect();
        assert_eq!(verdicts, [Verdict::Pass; 5]);
        assert_eq!(c[1].value, Some(4.0));
        assert_eq!(c[2].value, Some(50.0));
        assert_eq!(c[3].value, Some(3e6), "the window row, not the batch row");
        assert_eq!(c[4].value, Some(8.0));
        let c = checks(&rows[1..]);
        assert_eq!(c[1].verdict(), Verdict::Skipped);
        let breakdown = floor_breakdown(&rows);
        assert_eq!(breakdown.len(), 2);
        assert!(breakdown[1].contains("(+600 ns)"), "{breakdown:?}");
    }
}
