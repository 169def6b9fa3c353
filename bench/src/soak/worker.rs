//! A worker process: reads, writes and invocations over one transport as one ACL user, paced,
//! until its stdin closes (the conductor's stop) or it is killed (a fault).
//!
//! It writes its own keys `soak:s<slot>:i<incarnation>:<k>` (a process never shares a key, so a
//! key's values only grow) with values that count up, and reports each acknowledged write before
//! its next operation. An operation that fails with `IOERR` drops the runtime; the next one
//! connects afresh, backing off while that fails, so a restarted server, a closed link or a
//! re-created user are picked up by themselves.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoloc::{Placement, Runtime, Transport};
use autoloc_functions::ErrorCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::protocol::{decode_value, encode_value, Line, Op};

/// How long one request may wait for the server before it fails with `IOERR`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often counts are reported.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// Reconnect back-off: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Messages reported per error code.
const MESSAGES_PER_CODE: u32 = 3;

/// How a worker runs (the conductor passes these on its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Redis URL, with this worker's ACL user and password.
    #[arg(long)]
    pub url: String,
    /// Data plane.
    #[arg(long)]
    pub transport: Transport,
    /// The worker's slot (its ACL user is soak<slot>).
    #[arg(long)]
    pub slot: usize,
    /// Which process of the slot this is (a replacement after a kill counts up).
    #[arg(long)]
    pub incarnation: u64,
    /// Seed of its choices.
    #[arg(long)]
    pub seed: u64,
    /// Operations per second at most (0: as fast as it can).
    #[arg(long)]
    pub rate: u64,
    /// Keys it writes, in turn.
    #[arg(long)]
    pub keys: usize,
    /// Vertices of the graph (ids 0..vertices).
    #[arg(long)]
    pub vertices: u32,
}

/// Operations and their weights.
const MIX: [(Op, u32); 8] = [
    (Op::Set, 30),
    (Op::Get, 15),
    (Op::Mget, 10),
    (Op::KhopStorage, 12),
    (Op::KhopCompute, 8),
    (Op::KhopAuto, 5),
    (Op::Digest, 8),
    (Op::Pagerank, 12),
];

fn vertex(rng: &mut SmallRng, vertices: u32) -> String {
    rng.gen_range(0..vertices).to_string()
}

fn pick(rng: &mut SmallRng) -> Op {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut r = rng.gen_range(0..total);
    for (op, w) in MIX {
        if r < w {
            return op;
        }
        r -= w;
    }
    Op::Set
}

/// The worker's report on stdout; a failed write means the conductor is gone: stop.
struct Report {
    out: std::io::Stdout,
    ok: BTreeMap<Op, u64>,
    errors: HashMap<(Op, ErrorCode), u64>,
    messages: HashMap<ErrorCode, u32>,
}

impl Report {
    fn line(&mut self, line: &Line) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        writeln!(out, "{}", line.encode())?;
        out.flush()?;
        Ok(())
    }

    fn error(&mut self, op: Op, e: &autoloc::Error) -> anyhow::Result<()> {
        let code = e.code();
        *self.errors.entry((op, code)).or_default() += 1;
        let shown = self.messages.entry(code).or_default();
        if *shown < MESSAGES_PER_CODE {
            *shown += 1;
            self.line(&Line::Msg {
                code: code.as_str().to_string(),
                text: format!("{op}: {}", autoloc::cli::report(e)),
            })?;
        }
        Ok(())
    }

    fn flush_counts(&mut self) -> anyhow::Result<()> {
        let ok = std::mem::take(&mut self.ok);
        let errors = std::mem::take(&mut self.errors);
        for (op, n) in ok {
            self.line(&Line::Ok { op, n })?;
        }
        for ((op, code), n) in errors {
            self.line(&Line::Err {
                op,
                code: code.as_str().to_string(),
                n,
            })?;
        }
        Ok(())
    }
}

fn connect(a: &WorkerArgs) -> autoloc::Result<Runtime> {
    Runtime::connect(&a.url)?
        .with_timeout(REQUEST_TIMEOUT)?
        .with_transport(a.transport)
}

/// Sleeps `d`, in short naps, unless `stop` is set meanwhile.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Runs a worker until its stdin closes.
pub fn run(a: &WorkerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.keys > 0 && a.vertices > 0,
        "keys and vertices must be > 0"
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Nothing is sent on stdin: it only closes, when the conductor says stop.
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut report = Report {
        out: std::io::stdout(),
        ok: BTreeMap::new(),
        errors: HashMap::new(),
        messages: HashMap::new(),
    };
    report.line(&Line::Ready {
        pid: std::process::id(),
    })?;
    let mut rng = SmallRng::seed_from_u64(
        a.seed ^ ((a.slot as u64) << 40) ^ a.incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let prefix = format!("soak:s{}:i{}:", a.slot, a.incarnation);
    let key = |k: usize| format!("{prefix}{k}");
    // Per key, the highest value acknowledged; values count up across all keys.
    let mut acked = vec![0u64; a.keys];
    let mut next_seq = 1u64;
    let mut cursor = 0usize;
    let mut rt: Option<Runtime> = None;
    let mut backoff = BACKOFF_MIN;
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
    let mut next_at = Instant::now();
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_report.elapsed() >= REPORT_EVERY {
            report.flush_counts()?;
            last_report = Instant::now();
        }
        if let Some(interval) = interval {
            let now = Instant::now();
            if next_at > now {
                nap(next_at - now, &stop);
            } else if now - next_at > Duration::from_secs(1) {
                // Far behind (a stall): go on from now rather than in a burst.
                next_at = now;
            }
            next_at += interval;
        }
        let Some(r) = rt.as_mut() else {
            match connect(a) {
                Ok(r) => {
                    rt = Some(r);
                    backoff = BACKOFF_MIN;
                    *report.ok.entry(Op::Connect).or_default() += 1;
                }
                Err(e) => {
                    report.error(Op::Connect, &e)?;
                    nap(backoff, &stop);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let op = pick(&mut rng);
        let result: autoloc::Result<()> = match op {
            Op::Set => {
                let k = cursor % a.keys;
                let seq = next_seq;
                cursor += 1;
                next_seq += 1;
                let r = r.set(key(k).as_bytes(), encode_value(seq).as_bytes());
                if r.is_ok() {
                    acked[k] = seq;
                    report.line(&Line::Ack { key: key(k), seq })?;
                }
                r
            }
            Op::Get => {
                let k = rng.gen_range(0..a.keys);
                let r = r.get(key(k).as_bytes());
                if let Ok(v) = &r {
                    let got = v.as_deref().and_then(decode_value);
                    if acked[k] > 0 && got.is_none_or(|g| g < acked[k]) {
                        report.line(&Line::Stale {
                            key: key(k),
                            got,
                            acked: acked[k],
                        })?;
                    }
                }
                r.map(drop)
            }
            Op::Mget => {
                let mut keys: Vec<String> = (0..8).map(|_| vertex(&mut rng, a.vertices)).collect();
                keys.push(key(rng.gen_range(0..a.keys)));
                r.mget(&keys).map(drop)
            }
            Op::KhopStorage | Op::KhopCompute | Op::KhopAuto => {
                let placement = match op {
                    Op::KhopStorage => Placement::Storage,
                    Op::KhopCompute => Placement::Compute,
                    _ => Placement::Auto,
                };
                r.invoke(
                    "khop",
                    &[vertex(&mut rng, a.vertices), "2".into()],
                    placement,
                )
                .map(drop)
            }
            Op::Digest => r
                .invoke("digest", &["md5", "3"], Placement::Storage)
                .map(drop),
            // Connecting is done above, never picked.
            Op::Connect => continue,
            Op::Pagerank => {
                let placement = if rng.gen_bool(0.5) {
                    Placement::Storage
                } else {
                    Placement::Compute
                };
                r.invoke(
                    "pagerank",
                    &[vertex(&mut rng, a.vertices), "5".into()],
                    placement,
                )
                .map(drop)
            }
        };
        match result {
            Ok(()) => *report.ok.entry(op).or_default() += 1,
            Err(e) => {
                report.error(op, &e)?;
                if e.code() == ErrorCode::Io {
                    // The link or the connection broke (a restart, a closed link): start over.
                    rt = None;
                }
            }
        }
    }
    report.flush_counts()?;
    drop(rt);
    Ok(())
}
