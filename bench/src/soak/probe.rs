//! What /proc says about a redis-server (resident memory, descriptors by kind, AutoLoc segments
//! named after it or mapped by it), and the samplers: the PING sampler, a plain RESP client of
//! its own that pings all along, to show whether Redis's own clients stay served, and the
//! resident-memory sampler.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoloc_dataplane::{Connection, Frame, RedisUrl};
use serde::Serialize;

/// Resident memory of `pid` in KiB (`VmRSS`), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The kind of an open descriptor, from its `/proc/<pid>/fd` link: `socket`, `pipe`,
/// `anon_inode:[io_uring]`, `shm` (a /dev/shm file), `file`.
pub fn fd_kind(target: &str) -> String {
    if target.starts_with("socket:") {
        "socket".into()
    } else if target.starts_with("pipe:") {
        "pipe".into()
    } else if let Some(kind) = target.strip_prefix("anon_inode:") {
        format!("anon_inode:{kind}")
    } else if target.starts_with("/dev/shm/") {
        "shm".into()
    } else {
        "file".into()
    }
}

/// Open descriptors of `pid` by kind ([`fd_kind`]); empty if it does not run.
pub fn fds(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            *out.entry(fd_kind(&target.to_string_lossy())).or_default() += 1;
        }
    }
    out
}

/// Names in `dir` (normally /dev/shm) of AutoLoc segments created by any of `pids`.
pub fn segments_named(dir: &Path, pids: &[u32]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| pids.iter().any(|p| n.starts_with(&format!("autoloc-{p}-"))))
        .collect();
    names.sort();
    names
}

/// Distinct AutoLoc segments `pid` has mapped (removed names included).
pub fn segments_mapped(pid: u32) -> u64 {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    let mut seen: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with("/dev/shm/autoloc-"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() as u64
}

/// PING latency in one second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PingSecond {
    /// Second of the run.
    pub t: u64,
    /// PINGs answered.
    pub answered: u64,
    /// PINGs that failed (no server, a broken connection).
    pub failed: u64,
    /// Slowest answer, microseconds.
    pub max_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

/// Pause between PINGs: about 1,000 a second while the server answers at once.
const PING_PAUSE: Duration = Duration::from_millis(1);

/// A thread that samples something all run long (each second's PING latency, the server's
/// resident memory), and what it sampled.
#[derive(Debug)]
pub struct Sampler<T> {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<T>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Sampler<T> {
    /// Runs `sample(stop, samples)` on a thread named `name`: it adds to `samples` until `stop`
    /// is set.
    fn spawn(
        name: &str,
        sample: impl FnOnce(&AtomicBool, &Mutex<Vec<T>>) + Send + 'static,
    ) -> Sampler<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || sample(&stop2, &samples2))
            .unwrap_or_else(|e| panic!("spawn the {name} sampler: {e}"));
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops it and returns every sample.
    pub fn finish(mut self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Sampler<PingSecond> {
    /// PINGs the server at `url` on a connection of its own and keeps each second's latency
    /// (seconds count from `start`); reconnects (backing off) when the server is gone.
    pub fn ping(url: RedisUrl, start: Instant) -> Sampler<PingSecond> {
        Sampler::spawn("soak-ping", move |stop, out| {
            ping_loop(&url, start, stop, out)
        })
    }
}

fn ping_loop(url: &RedisUrl, start: Instant, stop: &AtomicBool, out: &Mutex<Vec<PingSecond>>) {
    let mut conn: Option<Connection> = None;
    let mut hist = crate::harness::histogram();
    let mut second = start.elapsed().as_secs();
    let mut current = PingSecond {
        t: second,
        ..PingSecond::default()
    };
    let mut backoff = Duration::from_millis(10);
    let close = |current: &mut PingSecond, hist: &mut hdrhistogram::Histogram<u64>| {
        if current.answered > 0 {
            current.max_us = hist.max() / 1000;
            current.p99_us = hist.value_at_quantile(0.99) / 1000;
        }
        hist.reset();
        out.lock().unwrap_or_else(|p| p.into_inner()).push(*current);
    };
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_secs();
        if now != second {
            close(&mut current, &mut hist);
            second = now;
            current = PingSecond {
                t: second,
                ..PingSecond::default()
            };
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::connect(url, Duration::from_secs(2)) {
                Ok(c) => {
                    backoff = Duration::from_millis(10);
                    conn.insert(c)
                }
                Err(_) => {
                    current.failed += 1;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let began = Instant::now();
        match c.call(&["PING"]) {
            Ok(Frame::Simple(pong)) if pong == "PONG" => {
                current.answered += 1;
                crate::harness::record(&mut hist, began.elapsed());
            }
            Ok(_) => current.failed += 1,
            Err(_) => {
                current.failed += 1;
                conn = None;
            }
        }
        std::thread::sleep(PING_PAUSE);
    }
    close(&mut current, &mut hist);
}

/// Resident memory of redis-server at one second of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RssSample {
    /// Second of the run.
    pub t: u64,
    /// The server's pid then.
    pub pid: u32,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
}

impl Sampler<RssSample> {
    /// Follows the current redis-server's pid in `pid` (it changes at each restart) and samples
    /// its resident memory once a second (seconds count from `start`).
    pub fn rss(pid: Arc<AtomicU32>, start: Instant) -> Sampler<RssSample> {
        Sampler::spawn("soak-rss", move |stop, out| {
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs();
                if t >= next {
                    let p = pid.load(Ordering::Relaxed);
                    if let Some(rss_kib) = rss_kib(p) {
                        out.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(RssSample { t, pid: p, rss_kib });
                    }
                    next = t + 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_by_kind() {
        assert_eq!(fd_kind("socket:[123]"), "socket");
        assert_eq!(fd_kind("pipe:[9]"), "pipe");
        assert_eq!(fd_kind("anon_inode:[io_uring]"), "anon_inode:[io_uring]");
        assert_eq!(fd_kind("/dev/shm/autoloc-1-0 (deleted)"), "shm");
        assert_eq!(fd_kind("/tmp/x/appendonly.aof.1.incr.aof"), "file");
        let me = fds(std::process::id());
        assert!(me.values().sum::<u64>() >= 3, "{me:?}");
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
