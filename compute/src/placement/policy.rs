//! Placement policies: each turns a [`Window`] of counters into a share per function.
//!
//! [`Policy::step`] is a pure function of the policy's state, the window and the [`Costs`]: no
//! thread, no clock, no table, so every rule is unit-tested with synthetic windows.
//!
//! | name | rule |
//! |---|---|
//! | `adaptive` (default) | cost model, storage-load awareness, gradient on the marginal function, pushback, spare storage CPU lent while compute is busy |
//! | `storage`, `compute` | share 1 / 0 for every function |
//! | `autoloc2021` | start storage-side; share 0 once storage CPU per call exceeds the modelled data cost; static |
//! | `kayak` | one global fraction, gradient ascent on measured throughput (Kayak NSDI'21 X-loop) |
//! | `oracle(name=share,...)` | fixed shares from the bench (`*=share` for the rest) |

use std::fmt;
use std::str::FromStr;

use super::model::{Acc, Costs, Estimate};
use super::window::{Decision, FnWindow, Window};
use super::{Reason, ReasonKind};

/// A placement policy and its state.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Ours: see [`Adaptive`] (boxed: its state is several times the others').
    Adaptive(Box<Adaptive>),
    /// Everything storage-side.
    Storage,
    /// Everything compute-side.
    Compute,
    /// AutoLoc 2021's rule: see [`AutoLoc2021`].
    AutoLoc2021(AutoLoc2021),
    /// Kayak's X-loop: see [`Kayak`].
    Kayak(Kayak),
    /// Fixed shares: see [`Oracle`].
    Oracle(Oracle),
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::Adaptive(Box::default())
    }
}

impl Policy {
    /// The policy's name (`oracle` without its assignment).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Adaptive(_) => "adaptive",
            Policy::Storage => "storage",
            Policy::Compute => "compute",
            Policy::AutoLoc2021(_) => "autoloc2021",
            Policy::Kayak(_) => "kayak",
            Policy::Oracle(_) => "oracle",
        }
    }

    /// One epoch: reads `w` and writes each function's next share and reason into `out`
    /// (`out[i]` is function `i`; on entry it holds the current share and reason, which a policy
    /// leaves alone for a function it has nothing to say about).
    pub fn step(&mut self, w: &Window, costs: &Costs, out: &mut [Decision]) {
        match self {
            Policy::Adaptive(a) => a.step(w, costs, out),
            Policy::Storage => fixed(out, 1.0),
            Policy::Compute => fixed(out, 0.0),
            Policy::AutoLoc2021(a) => a.step(w, costs, out),
            Policy::Kayak(k) => k.step(w, out),
            Policy::Oracle(o) => o.step(w, out),
        }
    }
}

fn fixed(out: &mut [Decision], share: f64) {
    for d in out {
        *d = Decision {
            share,
            reason: Reason::new(ReasonKind::Fixed, share, 0.0),
        };
    }
}

/// An unknown policy name or a malformed oracle assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParsePolicyError(String);

impl FromStr for Policy {
    type Err = ParsePolicyError;

    /// `adaptive`, `storage`, `compute`, `autoloc2021`, `kayak`, or
    /// `oracle(khop=1,digest=0.25,*=0.5)`.
    fn from_str(s: &str) -> Result<Policy, ParsePolicyError> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "adaptive" => return Ok(Policy::default()),
            "storage" => return Ok(Policy::Storage),
            "compute" => return Ok(Policy::Compute),
            "autoloc2021" => return Ok(Policy::AutoLoc2021(AutoLoc2021::default())),
            "kayak" => return Ok(Policy::Kayak(Kayak::default())),
            _ => {}
        }
        let inner = t
            .strip_prefix("oracle(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| {
                ParsePolicyError(format!(
                    "unknown policy '{s}' (adaptive, storage, compute, autoloc2021, kayak, \
                     oracle(name=share,...))"
                ))
            })?;
        let mut o = Oracle::default();
        for item in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, share) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => ("*", item),
            };
            let share: f64 = share
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=1.0).contains(v))
                .ok_or_else(|| {
                    ParsePolicyError(format!("oracle: share '{share}' is not in [0, 1]"))
                })?;
            if name == "*" {
                o.default = Some(share);
            } else if o.shares.iter().any(|(n, _)| n == name) {
                return Err(ParsePolicyError(format!("oracle: '{name}' given twice")));
            } else {
                o.shares.push((name.to_string(), share));
            }
        }
        Ok(Policy::Oracle(o))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Oracle(o) => {
                f.write_str("oracle(")?;
                let mut sep = "";
                for (n, v) in &o.shares {
                    write!(f, "{sep}{n}={v}")?;
                    sep = ",";
                }
                if let Some(v) = o.default {
                    write!(f, "{sep}*={v}")?;
                }
                f.write_str(")")
            }
            p => f.write_str(p.name()),
        }
    }
}

/// Fixed per-function shares (the bench's best assignment, found offline).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Oracle {
    /// Share by function name.
    pub shares: Vec<(String, f64)>,
    /// Share of the functions not named (1, storage-side, if `None`).
    pub default: Option<f64>,
}

impl Oracle {
    fn step(&self, w: &Window, out: &mut [Decision]) {
        for (f, d) in w.functions.iter().zip(out) {
            let share = self
                .shares
                .iter()
                .find(|(n, _)| *n == f.name)
                .map(|(_, s)| *s)
                .or(self.default)
                .unwrap_or(1.0);
            *d = Decision {
                share,
                reason: Reason::new(ReasonKind::Oracle, share, 0.0),
            };
        }
    }
}

/// AutoLoc 2021: every function starts storage-side; once measured, a function whose mean
/// storage CPU per invocation exceeds its modelled data-transfer cost (bytes moved x per-byte
/// cost + round trips x RTT) goes compute-side for good, the rest stay. No load awareness.
#[derive(Debug, Clone)]
pub struct AutoLoc2021 {
    /// Storage-side invocations measured before deciding.
    pub min_samples: u64,
    stats: Vec<(Acc, Acc)>,
    decided: Vec<Option<Decision>>,
}

impl Default for AutoLoc2021 {
    fn default() -> AutoLoc2021 {
        AutoLoc2021 {
            min_samples: 10,
            stats: Vec::new(),
            decided: Vec::new(),
        }
    }
}

impl AutoLoc2021 {
    fn step(&mut self, w: &Window, costs: &Costs, out: &mut [Decision]) {
        let n = w.functions.len();
        self.stats.resize(n, Default::default());
        self.decided.resize(n, None);
        for (i, (f, d)) in w.functions.iter().zip(out).enumerate() {
            if let Some(decided) = self.decided[i] {
                *d = decided;
                continue;
            }
            self.stats[i].0.add(&f.storage);
            self.stats[i].1.add(&f.compute);
            let (s, c) = &self.stats[i];
            let est =
                Estimate::from_sides(s, c).filter(|_| s.invocations >= self.min_samples as f64);
            *d = match est {
                None => Decision {
                    share: 1.0,
                    reason: Reason::new(ReasonKind::AutoLocStart, 0.0, 0.0),
                },
                Some(e) => {
                    let (cpu, data) = (e.storage_cpu_ns, e.data_cost_ns(costs));
                    let (share, kind) = if cpu > data {
                        (0.0, ReasonKind::AutoLocCompute)
                    } else {
                        (1.0, ReasonKind::AutoLocStorage)
                    };
                    let decision = Decision {
                        share,
                        reason: Reason::new(kind, cpu / 1e6, data / 1e6),
                    };
                    self.decided[i] = Some(decision);
                    decision
                }
            };
        }
    }
}

/// Kayak's X-loop: ONE fraction x of invocations run storage-side (as RPCs), the same for every
/// function, moved by gradient ascent on measured total throughput. Each epoch x steps by `step`
/// in the direction that improved throughput; a drop reverses the direction and halves the step
/// (down to `min_step`); three gains in a row double it (up to `max_step`).
#[derive(Debug, Clone)]
pub struct Kayak {
    /// The fraction x.
    pub x: f64,
    /// The current step.
    pub step: f64,
    /// Smallest step.
    pub min_step: f64,
    /// Largest step.
    pub max_step: f64,
    dir: f64,
    last: Option<f64>,
    gains: u32,
}

impl Default for Kayak {
    fn default() -> Kayak {
        Kayak {
            x: 0.5,
            step: 0.1,
            min_step: 0.01,
            max_step: 0.2,
            dir: 1.0,
            last: None,
            gains: 0,
        }
    }
}

impl Kayak {
    /// The direction x moves next (+1 towards storage, -1 towards compute).
    pub fn direction(&self) -> f64 {
        self.dir
    }

    fn step(&mut self, w: &Window, out: &mut [Decision]) {
        let tp = w.throughput();
        if let Some(last) = self.last {
            if tp < last {
                self.dir = -self.dir;
                self.step = (self.step / 2.0).max(self.min_step);
                self.gains = 0;
            } else {
                self.gains += 1;
                if self.gains >= 3 {
                    self.step = (self.step * 2.0).min(self.max_step);
                    self.gains = 0;
                }
            }
        }
        self.last = Some(tp);
        self.x = (self.x + self.dir * self.step).clamp(0.0, 1.0);
        for d in out {
            *d = Decision {
                share: self.x,
                reason: Reason::new(ReasonKind::Kayak, self.x, self.step),
            };
        }
    }
}

/// Tunables of [`Adaptive`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// What one ns of storage CPU costs in the cost model, in ns of compute-side latency. Above
    /// 1 because storage cores are few and shared by every compute node, and a function inside
    /// holds the Redis lock: a function moves in only if the data movement it saves is worth
    /// more than a quarter of its CPU on top (so a digest that saves one 64 KB transfer for 5 ms
    /// of CPU stays out, while a PageRank saving three round trips for its CPU goes in).
    pub storage_cpu_price: f64,
    /// Weight the counters of past epochs keep per epoch (means follow a shift within a few).
    pub decay: f64,
    /// Relative throughput gain a gradient step must bring to be kept (hysteresis).
    pub hysteresis: f64,
    /// First gradient step on the marginal share.
    pub step: f64,
    /// Smallest gradient step; below it the gradient has converged.
    pub min_step: f64,
    /// Largest gradient step (a kept step grows by half, up to this).
    pub max_step: f64,
    /// Epochs a share holds before its throughput is judged (the first may be mixed).
    pub settle_epochs: u32,
    /// Epochs converged before probing again with `min_step`.
    pub reprobe_epochs: u32,
    /// Re-plan from the load rule when its target for the marginal function moves this much.
    pub reanchor: f64,
    /// Re-plan when the mix of invocations moves this far (L1 distance of fractions).
    pub reanchor_mix: f64,
    /// Storage utilisation the gradient never pushes past.
    pub hard_limit: f64,
    /// Pushbacks per storage-side call above which storage counts as overloaded.
    pub pushback_overload: f64,
    /// Compute node utilisation above which storage CPU the storage-preferring functions leave
    /// unused is lent to a function the cost model keeps compute-side.
    pub compute_busy: f64,
    /// A window the policy judges holds at least this many completed invocations (short
    /// epochs are merged until it does, or until `max_window_s`): with heavy functions a 50 ms
    /// epoch holds a few dozen calls that complete in batches, and its throughput is noise.
    pub min_window_calls: u64,
    /// Longest merged window, seconds.
    pub max_window_s: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> AdaptiveConfig {
        AdaptiveConfig {
            storage_cpu_price: 1.25,
            decay: 0.5,
            hysteresis: 0.02,
            step: 0.1,
            min_step: 0.02,
            max_step: 0.25,
            settle_epochs: 1,
            reprobe_epochs: 40,
            reanchor: 0.15,
            reanchor_mix: 0.2,
            hard_limit: 0.98,
            pushback_overload: 0.05,
            compute_busy: 0.75,
            min_window_calls: 200,
            max_window_s: 0.2,
        }
    }
}

/// Ours. Each epoch:
///
/// 1. **cost model**: per function, compute-side cost = round trips x RTT + bytes / bandwidth +
///    compute CPU; storage-side cost = one RTT + storage CPU x price + queueing (+ the
///    pushed-back fraction's compute-side cost). The cheaper side is the function's preference;
///    a side without samples is estimated from the other ([`Estimate::from_sides`]);
/// 2. **storage load**: the storage-preferring functions share a budget of storage CPU (the
///    window's allowance x cores, less what compute-side reads take), filled in increasing order
///    of storage CPU per round trip saved: high-fanout functions stay inside, CPU-heavy ones are
///    moved out first when storage saturates and brought back when load drops. The one function
///    the budget splits is the *marginal* one. Many pushbacks (a decayed rate over 5%) shrink
///    the budget by the pushed-back fraction;
/// 3. **gradient**: the marginal function's share is then tuned Kayak-style on measured
///    throughput: a probe of `step` is kept only if throughput rose by more than the hysteresis,
///    otherwise it is undone and the direction flips with half the step, until the step is below
///    `min_step` (converged); a converged share is probed again every `reprobe_epochs`. A change
///    of marginal function, of the functions kept inside, of the mix, or of the load rule's
///    target re-plans from step 2;
/// 4. **lending**: while the compute node is busy (its CPU above `compute_busy`) and storage
///    CPU is left over once every storage-preferring function is wholly inside, the leftover is
///    lent to the compute-preferring functions, those that free the most compute CPU per storage
///    CPU they take first. Each gets the share that balances both sides ([`balanced_share`]:
///    throughput is capped by storage CPU / storage cost per call and by compute CPU / compute
///    cost per call, and the share where the two caps meet is the best); the first that cannot
///    go wholly inside is the marginal function, which the gradient of step 3 tunes from there.
///    An idle storage core is capacity (Kayak's point), but only the functions that gain most
///    from it move, and only while the compute side is what limits throughput.
#[derive(Debug, Clone, Default)]
pub struct Adaptive {
    /// Tunables.
    pub config: AdaptiveConfig,
    stats: Vec<(Acc, Acc)>,
    /// Sum of the decay weights of past epochs (the decayed count of epochs).
    epochs: f64,
    marginal: Option<Marginal>,
    /// Epochs merged so far into the next judged window (boxed: it is large and usually absent).
    pending: Option<Box<Window>>,
    /// Each function's side by the cost model at the last judged window.
    prefers: Vec<Option<bool>>,
}

/// Below this fraction of its allowance, storage counts as quiet: no gradient steps are taken on
/// a marginal function the load rule keeps wholly inside.
const QUIET: f64 = 0.5;

/// Gradient state on the marginal function's share.
#[derive(Debug, Clone)]
struct Marginal {
    index: usize,
    /// The load rule's target when it planned (at the planning total rate).
    anchor: f64,
    /// Total invocation rate when planned.
    anchor_rate: f64,
    /// Mix of invocations when planned.
    anchor_mix: Vec<f64>,
    /// Functions fully inside when planned.
    anchor_inside: Vec<bool>,
    /// The accepted share.
    base: f64,
    /// Throughput measured at `base`.
    base_tp: f64,
    /// The share being probed, if any.
    probe: Option<f64>,
    dir: f64,
    step: f64,
    /// Epochs to skip before judging.
    wait: u32,
    /// Epochs since converging, if converged.
    converged: Option<u32>,
}

impl Marginal {
    /// One gradient epoch at throughput `tp`, storage utilisation `util` and `allowance`: the next
    /// share.
    fn tick(&mut self, tp: f64, util: f64, allowance: f64, cfg: &AdaptiveConfig) -> (f64, Reason) {
        let current = self.probe.unwrap_or(self.base);
        if self.wait > 0 {
            self.wait -= 1;
            return (current, Reason::gradient(0.0));
        }
        if let Some(p) = self.probe.take() {
            let gain = if self.base_tp > 0.0 {
                (tp - self.base_tp) / self.base_tp
            } else {
                0.0
            };
            let too_hot = util > cfg.hard_limit && p > self.base;
            if gain > cfg.hysteresis && !too_hot {
                self.base = p;
                self.base_tp = tp;
                // Going the right way: stride out, within bounds.
                self.step = (self.step * 1.5).min(cfg.max_step);
                if let Some(next) = self.next_probe() {
                    self.probe = Some(next);
                    self.wait = cfg.settle_epochs.saturating_sub(1);
                    return (next, Reason::gradient(next - p));
                }
                self.converged = Some(0);
                return (p, Reason::new(ReasonKind::Converged, p, 0.0));
            }
            // Not worth it: undo, and try the other way with half the step (at a bound there is
            // no other way: done).
            self.dir = -self.dir;
            self.step /= 2.0;
            let blocked = (self.base + self.dir * self.step).clamp(0.0, 1.0) == self.base;
            if self.step < cfg.min_step || blocked {
                self.converged = Some(0);
                return (
                    self.base,
                    Reason::new(ReasonKind::Converged, self.base, 0.0),
                );
            }
            self.wait = cfg.settle_epochs.saturating_sub(1);
            return (self.base, Reason::gradient(self.base - p));
        }
        // Towards storage only below the hard limit; a reprobe only below the allowance.
        let mut up_to = cfg.hard_limit;
        if let Some(idle) = self.converged.as_mut() {
            *idle += 1;
            if *idle < cfg.reprobe_epochs {
                return (
                    self.base,
                    Reason::new(ReasonKind::Converged, self.base, 0.0),
                );
            }
            *idle = 0;
            self.step = cfg.min_step;
            up_to = allowance;
        }
        // The window measured the accepted share: remember it and probe.
        self.base_tp = tp;
        if util > up_to {
            self.dir = -1.0;
        }
        match self
            .next_probe()
            .filter(|&next| next < self.base || util <= up_to)
        {
            Some(next) => {
                self.converged = None;
                self.probe = Some(next);
                self.wait = cfg.settle_epochs.saturating_sub(1);
                (next, Reason::gradient(next - self.base))
            }
            None => {
                self.converged.get_or_insert(0);
                (
                    self.base,
                    Reason::new(ReasonKind::Converged, self.base, 0.0),
                )
            }
        }
    }

    /// The next share to probe from `base`, turning at a bound; `None` if there is nowhere to go.
    fn next_probe(&mut self) -> Option<f64> {
        for _ in 0..2 {
            let next = (self.base + self.dir * self.step).clamp(0.0, 1.0);
            if (next - self.base).abs() > 1e-9 {
                return Some(next);
            }
            self.dir = -self.dir;
        }
        None
    }
}

/// One function as the adaptive policy plans it.
#[derive(Debug, Clone, Copy)]
struct Plan {
    est: Estimate,
    /// Arrivals per second (decayed).
    rate: f64,
    prefers_storage: bool,
    /// Storage CPU per round trip saved, ns (the shedding order).
    key: f64,
    /// Why the cost model prefers its side.
    cost_reason: Reason,
}

impl Adaptive {
    /// The adaptive policy with `config`.
    pub fn new(config: AdaptiveConfig) -> Adaptive {
        Adaptive {
            config,
            ..Adaptive::default()
        }
    }

    /// The function whose share the gradient tunes, if storage is being split.
    pub fn marginal(&self) -> Option<usize> {
        self.marginal.as_ref().map(|m| m.index)
    }

    fn step(&mut self, epoch: &Window, costs: &Costs, out: &mut [Decision]) {
        let cfg = self.config;
        // 0. Merge short epochs until the window holds enough calls to judge (shares stay).
        let mut merged = match self.pending.take() {
            Some(mut p) => {
                p.merge(epoch);
                p
            }
            None => Box::new(epoch.clone()),
        };
        let calls: u64 = merged.functions.iter().map(FnWindow::completed).sum();
        if calls < cfg.min_window_calls && merged.seconds < cfg.max_window_s {
            self.pending = Some(merged);
            return;
        }
        merged.seconds = merged.seconds.max(1e-9);
        let w = &merged;
        let n = w.functions.len().min(out.len());
        self.stats.resize(n, Default::default());
        // 1. Fold the window into the decayed counters, and plan each function by cost.
        let seconds = w.seconds.max(1e-9);
        self.epochs = self.epochs * cfg.decay + 1.0;
        let span = seconds * self.epochs;
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(n);
        for (i, f) in w.functions.iter().take(n).enumerate() {
            let (s, c) = &mut self.stats[i];
            s.decay(cfg.decay);
            c.decay(cfg.decay);
            s.add(&f.storage);
            c.add(&f.compute);
            // Decayed sums over decayed epochs: a rate per second.
            let rate = (s.invocations - s.pushbacks + c.invocations).max(0.0) / span;
            plans.push(Estimate::from_sides(s, c).map(|est| {
                let (cs, cc) = (
                    est.storage_cost_ns(costs, cfg.storage_cpu_price),
                    est.compute_cost_ns(costs),
                );
                // A side keeps its function until the other is cheaper by a margin: a function
                // whose two costs are close (one round trip either way) would flip on noise.
                let prefers_storage = match self.prefers.get(i).copied().flatten() {
                    Some(true) => cs < cc * (1.0 + PREFERENCE_MARGIN),
                    Some(false) => cs * (1.0 + PREFERENCE_MARGIN) < cc,
                    None => cs < cc,
                };
                let cost_reason = if prefers_storage {
                    Reason::new(
                        ReasonKind::CostStorage,
                        est.round_trips_saved(),
                        (cc - cs) / 1e3,
                    )
                } else {
                    Reason::new(
                        ReasonKind::CostCompute,
                        est.storage_cpu_ns / 1e6,
                        est.data_cost_ns(costs) / 1e6,
                    )
                };
                Plan {
                    est,
                    rate,
                    prefers_storage,
                    key: est.cpu_per_round_trip_saved(),
                    cost_reason,
                }
            }));
        }

        self.prefers = plans.iter().map(|p| p.map(|p| p.prefers_storage)).collect();

        // 2. The storage budget, shrunk by pushbacks.
        let util = w.storage_util();
        let allowance = if w.allowance.is_finite() && w.allowance > 0.0 {
            w.allowance.min(1.0)
        } else {
            0.85
        };
        // Pushbacks per storage-side call over the decayed epochs: one epoch holds few calls of
        // a heavy function, and a rate read from it alone swings the budget from epoch to epoch.
        let (pushed, inside) = self.stats.iter().fold((0.0, 0.0), |(p, n), (s, _)| {
            (p + s.pushbacks, n + s.invocations)
        });
        let pushback = if inside > 0.0 { pushed / inside } else { 0.0 };
        let overloaded = pushback > cfg.pushback_overload;
        // Many pushbacks: storage is past its capacity even within the allowance, so the budget
        // shrinks by the pushed-back fraction. Not below the measured load: that falls as
        // functions move out (their reads, which no reply reports, land in the background
        // load instead), and a budget tied to it would ratchet every function out.
        let fraction = if overloaded {
            allowance * (1.0 - pushback)
        } else {
            allowance
        };
        let budget = fraction * w.storage_cores.max(1e-9) * 1e9;
        let mut order: Vec<usize> = (0..n)
            .filter(|&i| plans[i].is_some_and(|p| p.prefers_storage))
            .collect();
        order.sort_by(|&a, &b| {
            let (pa, pb) = (plans[a].unwrap(), plans[b].unwrap());
            pa.key
                .total_cmp(&pb.key)
                .then(pa.est.storage_cpu_ns.total_cmp(&pb.est.storage_cpu_ns))
                .then(a.cmp(&b))
        });
        // Lending needs a busy compute node (a little less busy to keep lending to the function
        // already borrowing, so that noise around the threshold does not flip the plan).
        let lending_to = self.marginal.as_ref().map(|g| g.index).filter(|&m| {
            plans
                .get(m)
                .copied()
                .flatten()
                .is_some_and(|p| !p.prefers_storage)
        });
        let busy =
            w.compute_util >= cfg.compute_busy - if lending_to.is_some() { LEND_HOLD } else { 0.0 };
        let lend = busy.then_some(Lend {
            capacity_ns: w.compute_cores.max(0.0) * 1e9,
        });
        let fill = |scale: f64| plan(&plans, &order, budget, scale, lend);
        let (targets_now, marginal_now) = fill(1.0);

        // 3. The marginal function: keep tuning it, or re-plan from the load rule.
        //
        // Throughput here is a closed loop: moving a function changes the rate of every
        // function. So while tuning, the load rule is evaluated at the rate it planned at; a new
        // mix, new costs, or a different marginal function re-plan, and so does a real change
        // of load: utilisation under the allowance with room to bring the function back, or
        // over the hard limit with no probe of ours to blame.
        let total_rate: f64 = plans.iter().flatten().map(|p| p.rate).sum();
        let mix: Vec<f64> = plans
            .iter()
            .map(|p| p.map_or(0.0, |p| p.rate / total_rate.max(1e-9)))
            .collect();
        let inside_of = |t: &[f64]| t.iter().map(|&t| t >= 1.0).collect::<Vec<bool>>();
        let mut targets = targets_now.clone();
        let mut tuned = None;
        if let Some(g) = self.marginal.as_mut() {
            let m = g.index;
            let scale = g.anchor_rate / total_rate.max(1e-9);
            let (t_norm, m_norm) = fill(scale);
            let mix_moved: f64 = mix
                .iter()
                .zip(&g.anchor_mix)
                .map(|(a, b)| (a - b).abs())
                .sum();
            let others_moved = inside_of(&t_norm)
                .iter()
                .zip(&g.anchor_inside)
                .enumerate()
                .any(|(i, (a, b))| i != m && a != b);
            let current = g.probe.unwrap_or(g.base);
            let load_dropped = util < allowance && targets_now[m] > g.anchor + cfg.reanchor;
            let our_probe = g.probe.is_some_and(|p| p > g.base);
            let overload = (util > cfg.hard_limit || overloaded)
                && !our_probe
                && targets_now[m] + cfg.reanchor < current;
            let replan = m_norm != Some(m)
                || others_moved
                || mix_moved > cfg.reanchor_mix
                || (t_norm[m] - g.anchor).abs() > cfg.reanchor
                || load_dropped
                || overload;
            // Nothing to split: storage far below its allowance with the marginal function
            // wholly inside. Gradient probes would only add noise (measured: at light load they
            // walked khop's share down to 0.75 with nothing to gain), so keep the load rule's word.
            let idle = util < QUIET * allowance
                && targets_now[m] >= 1.0
                && g.probe.is_none()
                && g.base >= 1.0;
            if !replan && !idle {
                targets = t_norm;
                tuned = Some((m, g.tick(w.throughput(), util, allowance, &cfg)));
            }
        }
        if tuned.is_none() {
            self.marginal = marginal_now.map(|m| Marginal {
                index: m,
                anchor: targets_now[m],
                anchor_rate: total_rate,
                anchor_mix: mix.clone(),
                anchor_inside: inside_of(&targets_now),
                base: targets_now[m],
                base_tp: 0.0,
                probe: None,
                dir: if util > cfg.hard_limit { -1.0 } else { 1.0 },
                step: cfg.step,
                wait: cfg.settle_epochs,
                converged: None,
            });
        }

        // 5. Decisions and reasons.
        for (i, d) in out.iter_mut().enumerate().take(n) {
            let Some(p) = plans[i] else { continue };
            let current = w.functions[i].share;
            let key_ms = p.key / 1e6;
            *d = match tuned {
                Some((m, (share, reason))) if m == i => {
                    // Fully inside and not probing: the cost model's word says more.
                    let idle = matches!(reason.kind, ReasonKind::Converged)
                        || (reason.kind == ReasonKind::Gradient && reason.a == 0.0);
                    let reason = if idle && share >= 1.0 && p.prefers_storage {
                        p.cost_reason
                    } else {
                        reason
                    };
                    Decision { share, reason }
                }
                _ if !p.prefers_storage && targets[i] > 0.0 => Decision {
                    share: targets[i],
                    reason: Reason::new(ReasonKind::Lent, util, w.compute_util),
                },
                _ if !p.prefers_storage => Decision {
                    share: 0.0,
                    reason: p.cost_reason,
                },
                _ => load_decision(targets[i], current, util, key_ms, overloaded, pushback, p),
            };
        }
    }
}

/// The share the load rule gives a storage-preferring function, and why.
fn load_decision(
    target: f64,
    current: f64,
    util: f64,
    key_ms: f64,
    overloaded: bool,
    pushback: f64,
    p: Plan,
) -> Decision {
    let reason = if target >= 1.0 {
        if current < 1.0 - 1e-6 {
            Reason::new(ReasonKind::BroughtBack, util, 0.0)
        } else {
            p.cost_reason
        }
    } else if overloaded {
        Reason::new(ReasonKind::Pushback, pushback, 0.0)
    } else if target <= 0.0 {
        Reason::new(ReasonKind::MovedOut, util, key_ms)
    } else {
        Reason::new(ReasonKind::Split, util, key_ms)
    };
    Decision {
        share: target,
        reason,
    }
}

/// How much cheaper the other side must be for the cost model to change a function's side.
const PREFERENCE_MARGIN: f64 = 0.1;

/// How much less busy than `compute_busy` the compute node may be and keep lending.
const LEND_HOLD: f64 = 0.15;

/// Lending is on: the compute node is busy, with this capacity.
#[derive(Debug, Clone, Copy)]
struct Lend {
    /// Compute CPU ns per second (cores x 1e9).
    capacity_ns: f64,
}

/// The load rule: [`knapsack`] over the storage-preferring functions in `order`, then, with
/// `lend` and storage CPU left over with no storage-preferring function split, the leftover lent
/// to the compute-preferring functions, those that free the most compute CPU per storage CPU
/// first: each gets the share that balances both sides' CPU, and the first that cannot go
/// wholly inside is the marginal function. Targets per function and the marginal function.
fn plan(
    plans: &[Option<Plan>],
    order: &[usize],
    budget: f64,
    rate_scale: f64,
    lend: Option<Lend>,
) -> (Vec<f64>, Option<usize>) {
    let (mut targets, marginal, left, split) = knapsack(plans, order, budget, rate_scale);
    let Some(lend) = lend.filter(|_| !split && left > 0.0) else {
        return (targets, marginal);
    };
    // Compute CPU a function takes at share t: calls outside cost c, calls inside c_s.
    let compute_at = |p: &Plan, t: f64| {
        p.rate * rate_scale * (t * p.est.call_cpu_ns + (1.0 - t) * p.est.compute_cpu_ns)
    };
    // Borrowers: the compute-preferring functions, those that free the most compute CPU per
    // storage CPU they take first.
    let gain = |p: &Plan| {
        (p.est.compute_cpu_ns - p.est.call_cpu_ns).max(0.0)
            / (p.est.storage_cpu_ns - p.est.read_cpu_ns).max(1.0)
    };
    let mut borrowers: Vec<(usize, Plan)> = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.filter(|p| !p.prefers_storage && p.rate > 0.0)
                .map(|p| (i, p))
        })
        .filter(|(_, p)| gain(p) > 0.0)
        .collect();
    borrowers.sort_by(|(a, pa), (b, pb)| gain(pb).total_cmp(&gain(pa)).then(a.cmp(b)));
    let mut left = left;
    let mut last = None;
    for (m, p) in borrowers {
        // Compute CPU free for it: capacity less what the others spend at their targets.
        let others: f64 = plans
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != m)
            .filter_map(|(i, q)| q.map(|q| compute_at(&q, targets[i])))
            .sum();
        let free = (lend.capacity_ns - others).max(0.05 * lend.capacity_ns);
        // Storage CPU for it: what is left, plus what its reads take already.
        let storage = left + p.rate * rate_scale * p.est.read_cpu_ns;
        let share = balanced_share(&p.est, storage, free);
        targets[m] = share;
        last = Some(m);
        if share < 1.0 {
            // Split: the marginal function; the rest stay outside.
            break;
        }
        left -= p.rate * rate_scale * (p.est.storage_cpu_ns - p.est.read_cpu_ns).max(0.0);
        if left <= 0.0 {
            break;
        }
    }
    (targets, last.or(marginal))
}

/// The storage share of a function that maximises its throughput with `storage` ns/s of storage
/// CPU and `compute` ns/s of compute CPU for it: at share x a call costs storage
/// x s + (1 - x) r and compute x c_s + (1 - x) c (s: storage CPU inside, r: serving its reads,
/// c: compute CPU outside, c_s: a storage-side call's compute CPU), so throughput is
/// min(storage / storage cost, compute / compute cost), highest where the two meet.
pub fn balanced_share(est: &Estimate, storage: f64, compute: f64) -> f64 {
    let (s, r) = (est.storage_cpu_ns.max(1.0), est.read_cpu_ns.max(0.0));
    let (c, c_s) = (est.compute_cpu_ns.max(1.0), est.call_cpu_ns.max(0.0));
    let (storage, compute) = (storage.max(0.0), compute.max(0.0));
    // storage x (c_s - c) + storage c = compute x (s - r) + compute r, for x.
    let denominator = storage * (c - c_s) + compute * (s - r);
    if denominator <= 0.0 {
        // Inside is no dearer for storage, or outside no dearer for compute: one side wins.
        return if storage * c >= compute * r { 1.0 } else { 0.0 };
    }
    ((storage * c - compute * r) / denominator).clamp(0.0, 1.0)
}

/// Fills `budget` ns/s of storage CPU with the functions in `order` (rates scaled by
/// `rate_scale`). Every function first pays its smallest storage footprint (compute-side reads,
/// or running inside where that is cheaper); a function that costs storage nothing extra inside
/// gets share 1; the others get share 1 while they fit, the first that does not fit gets the
/// fraction that does (the marginal function), the rest 0. With room for all, the marginal
/// function is the last one that costs extra (the next to go out). Functions not in `order`
/// get 0. Returns the targets, the marginal function, the budget left and whether a function
/// was split (or moved out) for want of budget.
fn knapsack(
    plans: &[Option<Plan>],
    order: &[usize],
    budget: f64,
    rate_scale: f64,
) -> (Vec<f64>, Option<usize>, f64, bool) {
    let mut targets = vec![0.0; plans.len()];
    let base: f64 = plans
        .iter()
        .flatten()
        .map(|p| {
            let footprint = if p.prefers_storage {
                p.est.read_cpu_ns.min(p.est.storage_cpu_ns)
            } else {
                p.est.read_cpu_ns
            };
            p.rate * rate_scale * footprint
        })
        .sum();
    let mut left = budget - base;
    let (mut marginal, mut last_inside) = (None, None);
    for &i in order {
        let p = plans[i].expect("ordered functions have plans");
        let extra = p.rate * rate_scale * (p.est.storage_cpu_ns - p.est.read_cpu_ns).max(0.0);
        if extra <= 0.0 {
            targets[i] = 1.0;
        } else if marginal.is_some() {
            targets[i] = 0.0;
        } else if extra <= left {
            targets[i] = 1.0;
            left -= extra;
            last_inside = Some(i);
        } else {
            targets[i] = (left / extra).clamp(0.0, 1.0);
            left = 0.0;
            marginal = Some(i);
        }
    }
    (targets, marginal.or(last_inside), left, marginal.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["adaptive", "storage", "compute", "autoloc2021", "kayak"] {
            let p: Policy = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        let p: Policy = "oracle(khop=1, digest=0.25,*=0.5)".parse().unwrap();
        assert_eq!(p.to_string(), "oracle(khop=1,digest=0.25,*=0.5)");
        let again: Policy = p.to_string().parse().unwrap();
        assert_eq!(again.to_string(), p.to_string());
        assert!("oracle(khop=2)".parse::<Policy>().is_err());
        assert!("oracle(khop=1,khop=0)".parse::<Policy>().is_err());
        assert!("fastest".parse::<Policy>().is_err());
        assert_eq!(Policy::default().name(), "adaptive");
    }
}
