//! The controller: a thread that, every epoch, turns the table's counters into a [`Window`],
//! steps the [`Policy`], and writes shares and reasons back into the table.
//!
//! The work of one epoch is [`ControllerCore::tick`], callable without the thread; the thread
//! only sleeps (on a condition variable, so stopping is immediate) and calls it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autoloc_dataplane::clock::process_cpu_ns;

use crate::table::{SideSnapshot, Table};
use crate::Side;

use super::forecast::{storage_cpu_allowance, Forecaster};
use super::window::{Decision, FnWindow, Window};
use super::Policy;

/// How the controller runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerConfig {
    /// Epoch length (at least 1 ms).
    pub epoch: Duration,
    /// Storage cores that run functions.
    pub storage_cores: f64,
    /// Cores of this compute node: the process's CPU time over them is its utilisation.
    pub compute_cores: f64,
    /// Storage utilisation to aim at; the saturation threshold before the forecast of other
    /// load is taken off.
    pub target_util: f64,
    /// Epoch records kept for [`ControllerHandle::history`].
    pub history: usize,
    /// Forecast other storage load ([`Table::set_storage_background`]) one epoch ahead with
    /// the [`Forecaster`]; otherwise use the last value.
    pub forecast: bool,
}

impl Default for ControllerConfig {
    fn default() -> ControllerConfig {
        ControllerConfig {
            epoch: Duration::from_millis(50),
            storage_cores: 1.0,
            compute_cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            target_util: 0.85,
            history: 1200,
            forecast: true,
        }
    }
}

/// What one epoch measured and decided (a point of the bench's plots).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u64,
    /// Milliseconds since the controller started, at the end of the epoch.
    pub t_ms: u64,
    /// Successful invocations per second in the epoch.
    pub throughput: f64,
    /// Storage CPU utilisation in the epoch.
    pub storage_util: f64,
    /// Compute node CPU utilisation in the epoch.
    pub compute_util: f64,
    /// Fraction of storage CPU functions were allowed for the next epoch.
    pub allowance: f64,
    /// The storage side's other load (cores busy with anything but functions) as last sampled.
    pub background: f64,
    /// Each function's share for the next epoch.
    pub shares: Vec<f64>,
}

/// One epoch of the controller's work, without a thread or a clock.
#[derive(Debug)]
pub struct ControllerCore {
    table: Arc<Table>,
    names: Vec<String>,
    policy: Policy,
    config: ControllerConfig,
    previous: Vec<(SideSnapshot, SideSnapshot)>,
    forecaster: Forecaster,
    epoch: u64,
    /// Process CPU ns at the start of the epoch.
    process_cpu: u64,
    /// Print each epoch's window and decisions to stderr (`AUTOLOC_TRACE_PLACEMENT=1`).
    trace: bool,
    /// The last storage background sample observed.
    last_background: Option<f64>,
}

impl ControllerCore {
    /// A core over the functions `names` (function `i` is slot `i`), starting its first window
    /// now.
    pub fn new(
        table: Arc<Table>,
        mut names: Vec<String>,
        policy: Policy,
        config: ControllerConfig,
    ) -> ControllerCore {
        names.truncate(table.len());
        let previous = Self::snapshots(&table, names.len());
        ControllerCore {
            table,
            names,
            policy,
            config,
            previous,
            forecaster: Forecaster::default(),
            epoch: 0,
            process_cpu: process_cpu_ns(),
            trace: std::env::var_os("AUTOLOC_TRACE_PLACEMENT").is_some_and(|v| v != "0"),
            last_background: None,
        }
    }

    fn snapshots(table: &Table, n: usize) -> Vec<(SideSnapshot, SideSnapshot)> {
        (0..n)
            .map(|i| {
                let slot = table.slot(i);
                (slot.snapshot(Side::Storage), slot.snapshot(Side::Compute))
            })
            .collect()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The forecaster of other storage load.
    pub fn forecaster(&self) -> &Forecaster {
        &self.forecaster
    }

    /// Ends an epoch of `seconds` at `t_ms`: window, policy step, shares and reasons written.
    pub fn tick(&mut self, seconds: f64, t_ms: u64) -> EpochRecord {
        self.epoch += 1;
        let now = Self::snapshots(&self.table, self.names.len());
        let functions: Vec<FnWindow> = now
            .iter()
            .zip(&self.previous)
            .zip(&self.names)
            .enumerate()
            .map(|(i, (((s, c), (ps, pc)), name))| FnWindow {
                name: name.clone(),
                share: self.table.share(i),
                storage: s.since(ps),
                compute: c.since(pc),
            })
            .collect();
        self.previous = now;
        let cores = self.config.storage_cores;
        let background = self.table.storage_background();
        // The publisher samples the storage side's load less often than epochs end: feed the
        // forecaster each sample once, or repeats would flatter the last-value forecast.
        if self.last_background != Some(background) {
            self.forecaster.observe(background);
            self.last_background = Some(background);
        }
        let allowance = if self.config.forecast {
            self.forecaster.allowance(cores, self.config.target_util)
        } else {
            storage_cpu_allowance(background, cores, self.config.target_util)
        };
        let cpu = process_cpu_ns();
        let seconds = seconds.max(1e-6);
        let compute_cores = self.config.compute_cores.max(1e-3);
        let compute_util =
            cpu.saturating_sub(self.process_cpu) as f64 / (seconds * 1e9 * compute_cores);
        self.process_cpu = cpu;
        let window = Window {
            epoch: self.epoch,
            seconds,
            storage_cores: cores,
            allowance,
            compute_cores,
            compute_util,
            functions,
        };
        let mut decisions: Vec<Decision> = (0..self.names.len())
            .map(|i| Decision {
                share: self.table.share(i),
                reason: self.table.reason(i),
            })
            .collect();
        self.policy
            .step(&window, &self.table.costs(), &mut decisions);
        for (i, d) in decisions.iter().enumerate() {
            self.table.set_share(i, d.share);
            self.table.set_reason(i, d.reason);
        }
        if self.trace {
            let mut line = format!(
                "placement epoch {} t={t_ms}ms tp={:.0}/s storage={:.2} allowance={:.2} \
                 compute={:.2}",
                self.epoch,
                window.throughput(),
                window.storage_util(),
                allowance,
                compute_util
            );
            for (f, d) in window.functions.iter().zip(&decisions) {
                if f.arrivals() > 0 || (d.share - f.share).abs() > 1e-9 {
                    line.push_str(&format!(
                        " | {} {:.2}->{:.2} n={}/{} pb={} ({})",
                        f.name,
                        f.share,
                        d.share,
                        f.storage.invocations,
                        f.compute.invocations,
                        f.storage.pushbacks,
                        d.reason
                    ));
                }
            }
            eprintln!("{line}");
        }
        EpochRecord {
            epoch: self.epoch,
            t_ms,
            throughput: window.throughput(),
            storage_util: window.storage_util(),
            compute_util,
            allowance,
            background,
            shares: (0..self.names.len()).map(|i| self.table.share(i)).collect(),
        }
    }
}

/// Starts the controller thread.
#[derive(Debug)]
pub struct Controller;

/// State shared by the thread and its handle.
#[derive(Debug)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    history: Mutex<VecDeque<EpochRecord>>,
}

/// The running controller. Dropping it stops the thread and joins it.
#[derive(Debug)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    policy: String,
}

impl Controller {
    /// Spawns the controller over `table` for the functions `names` (function `i` is slot `i`).
    pub fn spawn(
        table: Arc<Table>,
        names: Vec<String>,
        policy: Policy,
        config: ControllerConfig,
    ) -> ControllerHandle {
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            history: Mutex::new(VecDeque::with_capacity(config.history.min(4096))),
        });
        let name = policy.to_string();
        let mut core = ControllerCore::new(table, names, policy, config);
        let epoch = config.epoch.max(Duration::from_millis(1));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("autoloc-placement".into())
            .spawn(move || {
                let started = Instant::now();
                let mut last = started;
                let mut stop = s.stop.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    // Sleep until the epoch ends (or a stop), whatever spurious wake-ups say.
                    let deadline = last + epoch;
                    while !*stop {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        stop = s
                            .wake
                            .wait_timeout(stop, deadline - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    if *stop {
                        return;
                    }
                    drop(stop);
                    let now = Instant::now();
                    let record = core.tick(
                        (now - last).as_secs_f64(),
                        (now - started).as_millis() as u64,
                    );
                    last = now;
                    {
                        let mut h = s.history.lock().unwrap_or_else(PoisonError::into_inner);
                        if h.len() >= config.history.max(1) {
                            h.pop_front();
                        }
                        h.push_back(record);
                    }
                    stop = s.stop.lock().unwrap_or_else(PoisonError::into_inner);
                }
            })
            .expect("spawning the placement controller thread");
        ControllerHandle {
            shared,
            thread: Some(thread),
            policy: name,
        }
    }
}

impl ControllerHandle {
    /// The records of the last epochs, oldest first.
    pub fn history(&self) -> Vec<EpochRecord> {
        self.shared
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// The policy's name (`Display` form).
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // A panic in the controller is not re-raised in a destructor.
            let _ = t.join();
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
