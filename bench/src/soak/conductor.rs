//! The conductor: starts redis-server (module loaded, AOF with `appendfsync always`), loads a
//! graph, creates one ACL user per worker slot, runs the worker processes, strikes the faults
//! of the schedule, samples RSS and PING, then stops everything and checks: acknowledged writes
//! (after every injected `kill -9` and after a last one at the end), and leaks (segments, links,
//! descriptors) once the clients are gone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use autoloc::load::{write_graph, Graph};
use autoloc::server::{find_module, RedisServer};
use autoloc::stats::StorageStats;
use autoloc::{Runtime, Transport};
use autoloc_dataplane::secret::Secret;
use autoloc_dataplane::shm::{PeerState, ShmClient, DEFAULT_DIR};
use autoloc_dataplane::wire::Message;
use autoloc_dataplane::{Connection, Frame, RedisUrl};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::faults::{self, Door, FaultKind, ACL_HOLD};
use super::ledger::{self, Check, Ledger};
use super::probe::{self, PingSecond, RssSample, Sampler};
use super::protocol::{Line, Op};
use super::report::{
    CheckAt, FaultRecord, Incarnation, Leaks, OpCounts, Operations, OpsSecond, PingReport,
    RedisReport, Report, Skipped, WorkersReport, Writes,
};
use crate::harness::Machine;

/// How long stopped workers may take to finish their last operation.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the server may take to reclaim what departed clients held (its reaper runs every
/// 100 ms; a segment nobody attached to goes after 10 s).
const RECLAIM_WAIT: Duration = Duration::from_secs(15);
/// How long a turned-away peer waits for the server to close its connection.
const DOOR_WAIT: Duration = Duration::from_secs(3);
/// The longest a worker may go without a successful operation: every fault is over within a
/// few seconds (an ACL change lasts 1.5 s, a restart well under a second, a reconnect backs off
/// to at most 1 s), so a worker that stalls longer did not recover.
const MAX_STALL: f64 = 10.0;
/// How long the server is watched idle (PING, RSS) before the workers start: the baseline the
/// run's PING latency is compared with.
const IDLE: Duration = Duration::from_secs(2);
/// The main loop's tick.
const TICK: Duration = Duration::from_millis(50);
/// How long a connection that sends nothing waits to be closed: the TCP server's deadline for a
/// secret, and slack.
const SILENT_WAIT: Duration = Duration::from_secs(13);
const _: () =
    assert!(SILENT_WAIT.as_secs() > autoloc_dataplane::tcp::DEFAULT_AUTH_DEADLINE.as_secs());

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the workers run under faults.
    pub duration: Duration,
    /// Worker processes.
    pub workers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Operations per second per worker at most (0: unpaced).
    pub rate: u64,
    /// Keys each worker process writes in turn.
    pub keys: usize,
    /// R-MAT scale of the graph the invocations read.
    pub scale: u32,
    /// Transports to try; workers take the usable ones in turn.
    pub transports: Vec<Transport>,
    /// Arguments of the module.
    pub module_args: Vec<String>,
    /// Where worker logs go (a temporary directory if `None`).
    pub dir: Option<PathBuf>,
}

/// A plain connection to the server as its default user, reconnected when it breaks.
struct Control {
    url: RedisUrl,
    conn: Option<Connection>,
}

impl Control {
    fn call(&mut self, args: &[&str]) -> anyhow::Result<Frame> {
        let mut last = None;
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(
                    Connection::connect(&self.url, Duration::from_secs(10))
                        .with_context(|| format!("connect to {}", self.url))?,
                );
            }
            let conn = self.conn.as_mut().expect("just connected");
            match conn.call(args) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    self.conn = None;
                    last = Some(e);
                }
            }
        }
        Err(anyhow::Error::from(last.expect("two failures")).context(args.join(" ")))
    }

    /// Runs a command that must not answer an error.
    fn ok(&mut self, args: &[&str]) -> anyhow::Result<Frame> {
        match self.call(args)? {
            Frame::Error(e) => bail!("{}: {e}", args.join(" ")),
            f => Ok(f),
        }
    }

    fn stats(&mut self) -> anyhow::Result<StorageStats> {
        Ok(StorageStats::from_reply(self.call(&["AUTOLOC.STATS"])?)?)
    }

    fn stat(&mut self, name: &str) -> anyhow::Result<u64> {
        self.stats()?
            .get(name)
            .with_context(|| format!("AUTOLOC.STATS has no {name}"))
    }

    fn conn(&mut self) -> anyhow::Result<&mut Connection> {
        self.call(&["PING"])?;
        Ok(self.conn.as_mut().expect("connected by the PING"))
    }
}

/// One worker process.
struct Worker {
    slot: usize,
    incarnation: u64,
    transport: Transport,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
}

impl Drop for Worker {
    /// A worker never outlives the soak, whatever ends it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user(slot: usize) -> String {
    format!("soak{slot}")
}

/// The ACL rules of a worker slot's user: may read every key and write only its own.
fn user_rules(slot: usize) -> Vec<String> {
    vec![
        "reset".into(),
        "on".into(),
        format!(">pw-{}", user(slot)),
        format!("~soak:s{slot}:*"),
        "%R~*".into(),
        "+@all".into(),
    ]
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// The soak in progress.
struct Soak<'c> {
    cfg: &'c Config,
    exe: PathBuf,
    dir: PathBuf,
    start: Instant,
    rng: SmallRng,
    server: RedisServer,
    pid: Arc<AtomicU32>,
    pids: Vec<u32>,
    ctl: Control,
    vertices: u32,
    transports: Vec<Transport>,
    ledger: Arc<Mutex<Ledger>>,
    workers: Vec<Option<Worker>>,
    next_incarnation: Vec<u64>,
    /// ACL faults to undo: when, and whose user.
    restores: Vec<(Instant, usize)>,
    faults: Vec<FaultRecord>,
    /// Silent connections waiting to be closed, by the index of their fault.
    silent: Vec<(usize, std::thread::JoinHandle<anyhow::Result<Door>>)>,
    checks: Vec<CheckAt>,
    redis: RedisReport,
    report_workers: WorkersReport,
}

impl Soak<'_> {
    /// Adds what became of silent connections to their faults: those that ended, or all of them
    /// (waiting) if `all`.
    fn collect_silent(&mut self, all: bool) {
        let mut waiting = Vec::new();
        for (i, knock) in std::mem::take(&mut self.silent) {
            if !all && !knock.is_finished() {
                waiting.push((i, knock));
                continue;
            }
            let door = knock
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the knocking thread panicked")));
            let f = &mut self.faults[i];
            match door {
                Ok(door) => {
                    f.ok &= door == Door::Closed;
                    f.detail.push_str(&format!(", nothing: {door:?}"));
                }
                Err(e) => {
                    f.ok = false;
                    f.detail.push_str(&format!(", nothing: failed: {e:#}"));
                }
            }
        }
        self.silent = waiting;
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user_url(&self, slot: usize) -> String {
        format!(
            "redis://{}:pw-{}@127.0.0.1:{}",
            user(slot),
            user(slot),
            self.server.port()
        )
    }

    fn create_user(&mut self, slot: usize) -> anyhow::Result<()> {
        let mut args = vec!["ACL".to_string(), "SETUSER".into(), user(slot)];
        args.extend(user_rules(slot));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl.ok(&args).map(drop)
    }

    fn create_users(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.cfg.workers {
            self.create_user(slot)?;
        }
        Ok(())
    }

    fn spawn_worker(&mut self, slot: usize) -> anyhow::Result<()> {
        let incarnation = self.next_incarnation[slot];
        self.next_incarnation[slot] += 1;
        let transport = self.transports[slot % self.transports.len()];
        let stderr = self.dir.join(format!("worker-{slot}-{incarnation}.stderr"));
        let mut child = Command::new(&self.exe)
            .arg("worker")
            .args(["--url", &self.user_url(slot)])
            .args(["--transport", &transport.to_string()])
            .args(["--slot", &slot.to_string()])
            .args(["--incarnation", &incarnation.to_string()])
            .args(["--seed", &self.cfg.seed.to_string()])
            .args(["--rate", &self.cfg.rate.to_string()])
            .args(["--keys", &self.cfg.keys.to_string()])
            .args(["--vertices", &self.vertices.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).context("create a worker's stderr file")?)
            .spawn()
            .context("start a worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (ledger, start) = (self.ledger.clone(), self.start);
        let reader = std::thread::Builder::new()
            .name(format!("soak-read-{slot}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(line) = Line::parse(&line) {
                        let t = start.elapsed().as_secs_f64();
                        ledger
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .apply(slot, t, line);
                    }
                }
            })
            .context("start a reader thread")?;
        self.report_workers.started += 1;
        let t = self.t();
        self.ledger().started(slot, t);
        self.workers[slot] = Some(Worker {
            slot,
            incarnation,
            transport,
            stdin: child.stdin.take(),
            child,
            reader: Some(reader),
            stderr,
        });
        Ok(())
    }

    /// Replaces workers that exited by themselves (a crash: recorded).
    fn reap_workers(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.workers.len() {
            let exited = match self.workers[slot].as_mut() {
                Some(w) => w.child.try_wait().context("wait for a worker")?,
                None => None,
            };
            if let Some(status) = exited {
                let mut w = self.workers[slot].take().expect("just seen");
                if let Some(r) = w.reader.take() {
                    let _ = r.join();
                }
                let err = std::fs::read_to_string(&w.stderr).unwrap_or_default();
                self.report_workers.unexpected_exits.push(format!(
                    "{:.1} s: worker {} ({}, incarnation {}) exited by itself ({status}): {}",
                    self.t(),
                    w.slot,
                    w.transport,
                    w.incarnation,
                    tail(&err, 6)
                ));
                self.spawn_worker(slot)?;
            }
        }
        Ok(())
    }

    /// kill -9 and restart on the same port and directory; the users are created again.
    fn restart_redis(&mut self, reason: &str) -> anyhow::Result<()> {
        self.server.restart().context("restart redis-server")?;
        let pid = self.server.pid();
        self.pid.store(pid, Ordering::Relaxed);
        self.pids.push(pid);
        self.redis.incarnations.push(Incarnation {
            pid,
            t: self.t(),
            reason: reason.to_string(),
        });
        self.ctl.conn = None;
        self.create_users()
    }

    /// Checks every acknowledged write so far against the server.
    fn check_writes(&mut self, after: &str) -> anyhow::Result<Check> {
        let acked = self.ledger().acked.clone();
        let check = ledger::check(self.ctl.conn()?, &acked)?;
        self.checks.push(CheckAt {
            t: self.t(),
            after: after.to_string(),
            check: check.clone(),
        });
        Ok(check)
    }

    fn tcp_port(&mut self) -> anyhow::Result<u16> {
        match self.ctl.ok(&["AUTOLOC.CONNECT", "tcp"])? {
            Frame::Array(Some(items)) => match items.first() {
                Some(Frame::Int(p)) => Ok(u16::try_from(*p)?),
                _ => bail!("AUTOLOC.CONNECT tcp gave {items:?}"),
            },
            other => bail!("AUTOLOC.CONNECT tcp gave {other:?}"),
        }
    }

    /// Knocks with each probe, expects each closed without a reply, and the TCP server's
    /// rejection counter to count them.
    fn turned_away(&mut self, probes: &[(&str, Vec<u8>)]) -> anyhow::Result<(bool, String)> {
        let port = self.tcp_port()?;
        let before = self.ctl.stat("dataplane_tcp_rejected")?;
        let mut ok = true;
        let mut seen = Vec::new();
        for (what, bytes) in probes {
            let door = faults::knock(("127.0.0.1", port), bytes, DOOR_WAIT)
                .with_context(|| format!("knock with {what}"))?;
            ok &= door == Door::Closed;
            seen.push(format!("{what}: {door:?}"));
        }
        // The counter is refreshed by the module's reaper, every 100 ms.
        let want = before + probes.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut counted = self.ctl.stat("dataplane_tcp_rejected")?;
        while counted < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            counted = self.ctl.stat("dataplane_tcp_rejected")?;
        }
        ok &= counted >= want;
        seen.push(format!("rejected {before} -> {counted}"));
        Ok((ok, seen.join(", ")))
    }

    fn strike(&mut self, kind: FaultKind) -> anyhow::Result<(bool, String)> {
        let slot = self.rng.gen_range(0..self.cfg.workers);
        match kind {
            FaultKind::KillWorker => {
                let Some(mut w) = self.workers[slot].take() else {
                    return Ok((true, format!("slot {slot} had no worker")));
                };
                let pid = w.child.id();
                w.child.kill().context("kill a worker")?;
                w.child.wait().context("reap a killed worker")?;
                if let Some(r) = w.reader.take() {
                    let _ = r.join();
                }
                self.report_workers.killed += 1;
                self.spawn_worker(slot)?;
                Ok((
                    true,
                    format!(
                        "worker {slot} ({}, incarnation {}, pid {pid})",
                        w.transport, w.incarnation
                    ),
                ))
            }
            FaultKind::KillRedis => {
                let old = self.server.pid();
                self.redis.injected_kills += 1;
                let n = self.redis.injected_kills;
                self.restart_redis(&format!("kill -9 #{n}"))?;
                let check = self.check_writes(&format!("kill -9 #{n}"))?;
                Ok((
                    check.lost == 0 && check.corrupt == 0,
                    format!(
                        "pid {old} -> {}; {} acknowledged keys checked, {} lost, {} corrupt",
                        self.server.pid(),
                        check.keys,
                        check.lost,
                        check.corrupt
                    ),
                ))
            }
            FaultKind::AclRestrict => {
                self.ctl
                    .ok(&["ACL", "SETUSER", &user(slot), "resetkeys", "%R~*"])?;
                self.restores.push((Instant::now() + ACL_HOLD, slot));
                Ok((true, format!("{}: writes taken away", user(slot))))
            }
            FaultKind::AclDelete => {
                self.ctl.ok(&["ACL", "DELUSER", &user(slot)])?;
                self.restores.push((Instant::now() + ACL_HOLD, slot));
                Ok((true, format!("{} deleted", user(slot))))
            }
            FaultKind::JunkTcp => {
                let junk = faults::junk(&mut self.rng);
                self.turned_away(&[
                    ("random bytes", junk),
                    (
                        "a header announcing 32 MiB",
                        faults::announced_frame(32 << 20),
                    ),
                ])
            }
            FaultKind::UnauthTcp => {
                let token = Secret::random()?.to_hex().into_bytes();
                self.turned_away(&[
                    (
                        "a Get without a secret",
                        faults::frame(1, &Message::Get { key: b"0" }),
                    ),
                    (
                        "a Hello with a wrong secret",
                        faults::frame(0, &Message::Hello { token: &token }),
                    ),
                ])
                .map(|(ok, detail)| {
                    // And one that says nothing: closed at the server's deadline for a secret,
                    // which the main loop waits for while the run goes on.
                    let port = self.tcp_port();
                    let wait = SILENT_WAIT;
                    let knock = std::thread::spawn(move || {
                        faults::knock(("127.0.0.1", port?), &[], wait).map_err(Into::into)
                    });
                    self.silent.push((self.faults.len(), knock));
                    (ok, detail)
                })
            }
            FaultKind::ForeignShm => self.foreign_shm(),
            FaultKind::JunkResp => {
                let junk = faults::resp_junk(&mut self.rng);
                let door = faults::knock(("127.0.0.1", self.server.port()), &junk, DOOR_WAIT)?;
                let pong = self.ctl.call(&["PING"])?;
                let ok = matches!(door, Door::ClosedAfterReply(_) | Door::Closed)
                    && pong == Frame::Simple("PONG".into());
                Ok((
                    ok,
                    format!(
                        "{:?}: {door:?}; PING after: {pong:?}",
                        String::from_utf8_lossy(&junk)
                    ),
                ))
            }
        }
    }

    /// Attaches to a fresh segment with a wrong secret: nothing may be answered, and the server
    /// must drop the link.
    fn foreign_shm(&mut self) -> anyhow::Result<(bool, String)> {
        let Frame::Array(Some(items)) = self.ctl.ok(&["AUTOLOC.CONNECT", "shm"])? else {
            bail!("AUTOLOC.CONNECT shm gave no array");
        };
        let Some(Frame::Bulk(Some(path))) = items.first() else {
            bail!("AUTOLOC.CONNECT shm gave {items:?}");
        };
        let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
        let mut client = ShmClient::attach(&path, &Secret::random()?)
            .with_context(|| format!("attach {}", path.display()))?;
        client.send(1, &Message::Get { key: b"0" })?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut answered = false;
        let mut dropped = false;
        while Instant::now() < deadline && !dropped {
            answered |= client.try_recv()?.is_some();
            dropped = matches!(
                client.server(),
                PeerState::Detached | PeerState::Dead { .. }
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((
            !answered && dropped,
            format!(
                "{}: answered {answered}, link dropped by the server {dropped}",
                path.display()
            ),
        ))
    }

    /// Stops the workers: closes their stdin, waits, kills those that do not stop.
    fn stop_workers(&mut self) -> anyhow::Result<()> {
        let mut running: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        for w in &mut running {
            w.stdin = None;
        }
        let deadline = Instant::now() + STOP_GRACE;
        for w in &mut running {
            self.report_workers.stopped += 1;
            loop {
                if let Some(status) = w.child.try_wait()? {
                    if !status.success() {
                        let err = std::fs::read_to_string(&w.stderr).unwrap_or_default();
                        self.report_workers.unexpected_exits.push(format!(
                            "worker {} ({}, incarnation {}) stopped with {status}: {}",
                            w.slot,
                            w.transport,
                            w.incarnation,
                            tail(&err, 6)
                        ));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    w.child.kill()?;
                    w.child.wait()?;
                    self.report_workers.killed_at_stop += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(r) = w.reader.take() {
                let _ = r.join();
            }
        }
        Ok(())
    }

    /// Waits until the server let go of everything the clients held (and, given a baseline, has
    /// no more descriptors open than then), or `RECLAIM_WAIT` passed.
    fn settle(&mut self, baseline: Option<&BTreeMap<String, u64>>) -> anyhow::Result<Leaks> {
        let began = Instant::now();
        // The TCP server is a link while it runs: make sure it runs, so the count is exact.
        self.tcp_port()?;
        loop {
            let pid = self.server.pid();
            let stats = self.ctl.stats()?;
            let opened = stats.get("dataplane_links_opened").unwrap_or(0) as i64;
            let closed = stats.get("dataplane_links_closed").unwrap_or(0) as i64;
            let named = probe::segments_named(Path::new(DEFAULT_DIR), &[pid]);
            let mapped = probe::segments_mapped(pid);
            let fds = probe::fds(pid);
            let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
            let baseline = baseline.cloned().unwrap_or_else(|| fds.clone());
            let leaks = Leaks {
                shm_segments: named.len() as u64 + mapped,
                shm_segments_named: named,
                shm_segments_mapped: mapped,
                links_open: opened - closed,
                links_expected: 1,
                links: (opened - closed - 1).max(0) as u64,
                fds: total(&fds).saturating_sub(total(&baseline)),
                fds_baseline: baseline,
                fds_end: fds,
                settled_s: began.elapsed().as_secs_f64(),
                shm_segments_after_restart: Vec::new(),
            };
            let clean = leaks.shm_segments == 0 && leaks.links == 0 && leaks.fds == 0;
            if clean || began.elapsed() > RECLAIM_WAIT {
                return Ok(leaks);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Lines of the server's log and stderr that tell of a crash: a bug report, a signal, a failed
/// assertion, a panic.
fn crash_lines(log: &str, stderr: &str) -> Vec<String> {
    const SIGNS: [&str; 5] = [
        "panicked",
        "BUG REPORT START",
        "crashed by signal",
        "ASSERTION",
        "Guru Meditation",
    ];
    log.lines()
        .chain(stderr.lines())
        .filter(|l| SIGNS.iter().any(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// Each of Redis's bug reports in `log` (from its START line), at most 150 lines of each: the
/// signal, the stack trace, the module and client involved.
fn crash_reports(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = log.lines();
    while lines
        .by_ref()
        .any(|l| l.contains("=== REDIS BUG REPORT START"))
    {
        let report: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.contains("=== REDIS BUG REPORT END"))
            .take(150)
            .collect();
        out.push(report.join("\n"));
    }
    out
}

/// Opens a link of every transport as `url`'s user, reads a key, and lets go: what the server
/// holds after that (and after its reaper ran) is the descriptor baseline.
fn warm_up(url: &str, transports: &[Transport]) -> anyhow::Result<()> {
    for &t in transports {
        let mut rt = Runtime::connect(url)?.with_transport(t)?;
        rt.get(b"0")
            .with_context(|| format!("warm-up read over {t}"))?;
    }
    Ok(())
}

/// Runs the soak and returns its report (`passed` says whether every check held).
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.workers > 0, "at least one worker");
    anyhow::ensure!(cfg.keys > 0, "at least one key per worker");
    let exe = std::env::current_exe().context("find the soak's executable")?;
    let tmp;
    let dir = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("autoloc-soak-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let module_args: Vec<&str> = cfg.module_args.iter().map(String::as_str).collect();
    let server = RedisServer::start_with(
        &find_module()?,
        &module_args,
        &[("appendonly", "yes"), ("appendfsync", "always")],
    )?;
    let url: RedisUrl = server.url().parse()?;
    let mut ctl = Control {
        url: url.clone(),
        conn: None,
    };
    let graph = Graph::rmat(cfg.scale, 8, cfg.seed)?;
    write_graph(ctl.conn()?, &graph, cfg.seed, false)?;

    // Transports: those that connect; rdma only where a device exists.
    let mut transports = Vec::new();
    let mut skipped = Vec::new();
    for &t in &cfg.transports {
        match Runtime::connect(&server.url()).and_then(|rt| rt.with_transport(t)) {
            Ok(_) => transports.push(t),
            Err(e) => skipped.push(Skipped {
                transport: t.to_string(),
                reason: autoloc::cli::report(&e),
            }),
        }
    }
    anyhow::ensure!(!transports.is_empty(), "no transport works: {skipped:?}");

    let start = Instant::now();
    let pid = Arc::new(AtomicU32::new(server.pid()));
    let mut soak = Soak {
        cfg,
        exe,
        dir,
        start,
        rng: SmallRng::seed_from_u64(cfg.seed),
        pids: vec![server.pid()],
        server,
        pid: pid.clone(),
        ctl,
        vertices: graph.vertices() as u32,
        transports,
        ledger: Arc::new(Mutex::new(Ledger::default())),
        workers: (0..cfg.workers).map(|_| None).collect(),
        next_incarnation: vec![0; cfg.workers],
        restores: Vec::new(),
        faults: Vec::new(),
        silent: Vec::new(),
        checks: Vec::new(),
        redis: RedisReport::default(),
        report_workers: WorkersReport::default(),
    };
    soak.redis.incarnations.push(Incarnation {
        pid: soak.server.pid(),
        t: 0.0,
        reason: "start".into(),
    });
    soak.create_users()?;
    let ping = Sampler::ping(url.clone(), start);
    let rss = Sampler::rss(pid, start);

    // The descriptor baseline: every transport used once and let go, the samplers connected.
    warm_up(&soak.user_url(0), &soak.transports)?;
    let baseline = soak.settle(None)?.fds_end;

    std::thread::sleep(IDLE);

    // The load, and the faults from the schedule (its times count from the load's start).
    let load = Instant::now();
    let load_from = soak.t();
    for slot in 0..cfg.workers {
        soak.spawn_worker(slot)?;
    }
    let schedule = faults::schedule(cfg.duration, cfg.seed);
    let mut next = 0;
    while load.elapsed() < cfg.duration || !soak.restores.is_empty() {
        let now = Instant::now();
        let due: Vec<usize> = soak
            .restores
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, slot)| *slot)
            .collect();
        soak.restores.retain(|(at, _)| *at > now);
        for slot in due {
            soak.create_user(slot)?;
        }
        if next < schedule.len() && load.elapsed() >= schedule[next].0 {
            let kind = schedule[next].1;
            next += 1;
            let t = soak.t();
            let (ok, detail) = match soak.strike(kind) {
                Ok(r) => r,
                Err(e) => (false, format!("failed: {e:#}")),
            };
            soak.faults.push(FaultRecord {
                t,
                kind,
                ok,
                detail,
            });
        }
        soak.reap_workers()?;
        soak.collect_silent(false);
        if !soak.server.is_running() {
            let log = soak.server.log();
            soak.redis.unexpected_exits.push(format!(
                "{:.1} s: redis-server {} exited by itself: {}",
                soak.t(),
                soak.server.pid(),
                tail(&log, 8)
            ));
            soak.restart_redis("after an exit nobody caused")?;
        }
        std::thread::sleep(TICK);
    }
    let seconds = load.elapsed().as_secs_f64();

    // The end: clients gone, the server settles, then the checks.
    let t = soak.t();
    soak.ledger().close(t);
    soak.stop_workers()?;
    soak.collect_silent(true);
    let mut leaks = soak.settle(Some(&baseline))?;
    soak.redis.stats_at_end = soak
        .ctl
        .stats()
        .map(|s| {
            s.function("dataplane")
                .into_iter()
                .map(|(k, v)| (format!("dataplane_{k}"), v))
                .collect()
        })
        .unwrap_or_default();
    let ping = ping.finish();
    let rss = rss.finish();
    soak.restart_redis("kill -9 at the end, before the last check")?;
    soak.check_writes("kill -9 at the end")?;
    // The module removes, when it loads, the segment names of redis-servers that are gone.
    leaks.shm_segments_after_restart = probe::segments_named(Path::new(DEFAULT_DIR), &soak.pids);
    leaks.shm_segments += leaks.shm_segments_after_restart.len() as u64;
    let log = soak.server.log();
    let stderr = soak.server.stderr();
    soak.redis.log_problems = crash_lines(&log, &stderr);
    soak.redis.crash_reports = crash_reports(&log);
    soak.redis.stderr_tail = tail(&stderr, 40);
    // Kept beside the workers' logs (the server's own directory goes with it).
    std::fs::write(soak.dir.join("redis.log"), &log).context("keep redis.log")?;
    std::fs::write(soak.dir.join("redis.stderr"), &stderr).context("keep redis.stderr")?;
    soak.server.kill();

    Ok(build_report(
        cfg, soak, load_from, seconds, leaks, ping, rss, skipped,
    ))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &Config,
    soak: Soak<'_>,
    load_from: f64,
    seconds: f64,
    leaks: Leaks,
    ping: Vec<PingSecond>,
    rss: Vec<RssSample>,
    skipped: Vec<Skipped>,
) -> Report {
    let ledger = std::mem::take(&mut *soak.ledger());
    let mut by_op: BTreeMap<String, OpCounts> = BTreeMap::new();
    for (op, n) in &ledger.ok {
        by_op.entry(op.to_string()).or_default().ok = *n;
    }
    for (op, errors) in &ledger.errors_by_op {
        by_op.entry(op.to_string()).or_default().errors = errors.clone();
    }
    let operations = Operations {
        ok: ledger.ops_ok() - ledger.ok.get(&Op::Connect).copied().unwrap_or(0),
        failed: ledger.ops_failed(),
        errors_by_code: ledger.errors.clone(),
        by_op,
        error_examples: ledger.messages.clone(),
    };
    let writes = Writes {
        acknowledged: ledger.acks,
        keys: ledger.acked.len() as u64,
        lost: soak.checks.iter().map(|c| c.check.lost).sum(),
        corrupt: soak.checks.iter().map(|c| c.check.corrupt).sum(),
        stale_reads: ledger.stale_reads,
        stale_examples: ledger.stale_examples.clone(),
        checks: soak.checks.clone(),
    };
    let mut redis = soak.redis.clone();
    redis.rss_first_kib = rss.first().map_or(0, |s| s.rss_kib);
    redis.rss_last_kib = rss.last().map_or(0, |s| s.rss_kib);
    redis.rss_max_kib = rss.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // Seconds wholly before the load are the idle baseline; the rest are the run.
    let idle = |s: &&PingSecond| ((s.t + 1) as f64) <= load_from;
    let idle_secs: Vec<&PingSecond> = ping.iter().filter(idle).collect();
    let run_secs: Vec<&PingSecond> = ping.iter().filter(|s| !idle(s)).collect();
    let ping = PingReport {
        answered: run_secs.iter().map(|s| s.answered).sum(),
        failed: run_secs.iter().map(|s| s.failed).sum(),
        max_us: run_secs.iter().map(|s| s.max_us).max().unwrap_or(0),
        worst_p99_us: run_secs.iter().map(|s| s.p99_us).max().unwrap_or(0),
        idle_max_us: idle_secs.iter().map(|s| s.max_us).max().unwrap_or(0),
        idle_p99_us: idle_secs.iter().map(|s| s.p99_us).max().unwrap_or(0),
        seconds: ping,
    };
    let mut failures = Vec::new();
    if writes.lost > 0 {
        failures.push(format!("{} acknowledged writes lost", writes.lost));
    }
    if writes.corrupt > 0 {
        failures.push(format!("{} keys hold what nobody wrote", writes.corrupt));
    }
    if writes.stale_reads > 0 {
        failures.push(format!(
            "{} reads returned less than was acknowledged",
            writes.stale_reads
        ));
    }
    if leaks.shm_segments > 0 {
        failures.push(format!("{} shm segments leaked", leaks.shm_segments));
    }
    if leaks.links > 0 {
        failures.push(format!("{} data-plane links leaked", leaks.links));
    }
    if leaks.fds > 0 {
        failures.push(format!("{} file descriptors leaked", leaks.fds));
    }
    if !redis.unexpected_exits.is_empty() || !redis.log_problems.is_empty() {
        failures.push(format!(
            "redis-server crashed: {} exits nobody caused, {} crash lines in its log",
            redis.unexpected_exits.len(),
            redis.log_problems.len()
        ));
    }
    let mut report_workers = soak.report_workers.clone();
    report_workers.longest_stall_s = ledger.longest_stall.clone();
    for (slot, stall) in &ledger.longest_stall {
        if *stall > MAX_STALL {
            failures.push(format!(
                "worker {slot} went {stall:.1} s without a successful operation (at most {MAX_STALL} s)"
            ));
        }
    }
    if !soak.report_workers.unexpected_exits.is_empty() {
        failures.push(format!(
            "{} worker processes died by themselves",
            soak.report_workers.unexpected_exits.len()
        ));
    }
    let bad_faults: Vec<String> = soak
        .faults
        .iter()
        .filter(|f| !f.ok)
        .map(|f| format!("{} at {:.1} s: {}", f.kind.as_str(), f.t, f.detail))
        .collect();
    if !bad_faults.is_empty() {
        failures.push(format!(
            "{} faults did not end as they must: {}",
            bad_faults.len(),
            bad_faults.join("; ")
        ));
    }
    let ops_per_s = ledger
        .seconds
        .iter()
        .enumerate()
        .map(|(t, s)| OpsSecond {
            t: t as u64,
            ok: s.ok,
            errors: s.errors,
        })
        .collect();
    let parameters: BTreeMap<String, String> = [
        ("duration_s", cfg.duration.as_secs().to_string()),
        ("workers", cfg.workers.to_string()),
        ("seed", cfg.seed.to_string()),
        ("rate_per_worker", cfg.rate.to_string()),
        ("keys_per_worker", cfg.keys.to_string()),
        ("graph", format!("R-MAT scale {} edge factor 8", cfg.scale)),
        ("module_args", cfg.module_args.join(" ")),
        ("persistence", "appendonly yes, appendfsync always".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Report {
        passed: failures.is_empty(),
        failures,
        machine: Machine::detect(),
        parameters,
        transports: soak.transports.iter().map(|t| t.to_string()).collect(),
        skipped_transports: skipped,
        load_started_s: load_from,
        seconds,
        operations,
        writes,
        leaks,
        redis,
        workers: report_workers,
        faults: soak.faults.clone(),
        ping,
        rss,
        ops_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_are_found_in_the_log() {
        let log = "1:M ok\n=== REDIS BUG REPORT START: Cut & paste\n1:M crashed by signal: 11\nstack\n=== REDIS BUG REPORT END.\nlater";
        let reports = crash_reports(log);
        assert_eq!(
            reports,
            vec!["1:M crashed by signal: 11\nstack".to_string()]
        );
        let lines = crash_lines(log, "thread 'x' panicked at src/a.rs:1");
        assert_eq!(lines.len(), 3, "{lines:?}");
    }

    #[test]
    fn users_write_only_their_own_keys() {
        let r = user_rules(3);
        assert!(r.contains(&"~soak:s3:*".to_string()));
        assert!(r.contains(&"%R~*".to_string()));
        assert_eq!(r[0], "reset");
        assert_eq!(tail("a\nb\nc", 2), "b | c");
    }
}
