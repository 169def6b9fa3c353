//! The adaptive policy, ours: per epoch, the cost model picks each function's side, the load
//! rule (`load_rule.rs`) fits the storage-preferring functions into the storage CPU budget (and
//! lends what is left while the compute node is busy, or offloads part of one while it idles),
//! and the gradient (`gradient.rs`) tunes the one function the budget splits.

#[cfg(doc)]
use super::balanced_share;
use super::gradient::Marginal;
use super::load_rule::{load_decision, plan, Lend, Offload, Plan};
use crate::placement::model::{Acc, Costs, Estimate};
use crate::placement::window::{Decision, FnWindow, Window};
use crate::placement::{Reason, ReasonKind};

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
/// 1. **cost model**: per function, compute-side cost = round trips x (RTT + storage wait) +
///    bytes / bandwidth + compute CPU + the storage CPU serving its reads x price; storage-side
///    cost = one RTT + one storage wait + storage CPU x price (+ the pushed-back fraction's
///    compute-side cost). The storage wait is one per visit of the storage queue, measured over
///    every function's storage-side calls. The cheaper side is the function's preference;
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
///    from it move, and only while the compute side is what limits throughput;
/// 5. **offloading**, the mirror: while the storage side is at its budget (`OFFLOAD_FULL` of
///    the allowance) and the compute node idles (below `compute_busy` less `LEND_HOLD`), the
///    function the budget splits, or else the last storage-preferring one wholly inside, goes
///    out to its [`balanced_share`] where that is lower, if its reads cost the storage less than
///    running it; it is the marginal function. While offloading, both sides are judged as they
///    would be without it.
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
    /// The storage-preferring function the load rule offloaded part of, while it does.
    offloading: Option<usize>,
}

/// Below this fraction of its allowance, storage counts as quiet: no gradient steps are taken on
/// a marginal function the load rule keeps wholly inside.
const QUIET: f64 = 0.5;

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

    pub(super) fn step(&mut self, epoch: &Window, costs: &Costs, out: &mut [Decision]) {
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
        for (f, (s, c)) in w.functions.iter().take(n).zip(&mut self.stats) {
            s.decay(cfg.decay);
            c.decay(cfg.decay);
            s.add(&f.storage);
            c.add(&f.compute);
        }
        // The storage side serves calls and compute-side reads from one queue, so its wait is
        // one per visit, whoever visits: a call waits once, a compute-side run once per round
        // trip. Charged to storage-side calls alone (as measured), it sent khop, pagerank and
        // aggregate out at saturation, to a side 1.9x slower, because their reads queue just
        // the same outside (`bench-placement --topology netns`).
        let (queued, visits) = self.stats.iter().fold((0.0, 0.0), |(q, v), (s, _)| {
            (q + s.queue_ns, v + s.invocations)
        });
        let visit_wait = if visits > 0.0 { queued / visits } else { 0.0 };
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(n);
        for (s, c) in self.stats.iter().take(n) {
            // Decayed sums over decayed epochs: a rate per second.
            let rate = (s.invocations - s.pushbacks + c.invocations).max(0.0) / span;
            let i = plans.len();
            plans.push(Estimate::from_sides(s, c).map(|mut est| {
                est.queue_ns = visit_wait;
                est.read_queue_ns = est.round_trips * visit_wait;
                // Storage CPU has its price on either side: inside it runs the function,
                // outside it serves the function's reads (for aggregate's 64 keys, about as
                // much).
                let (cs, cc) = (
                    est.storage_cost_ns(costs, cfg.storage_cpu_price),
                    est.compute_cost_ns(costs) + cfg.storage_cpu_price * est.read_cpu_ns,
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
        // An allowance of 0 is a real answer (the storage side's other load takes all of it),
        // not an unset one: read as 0.85, it kept every function inside a storage side already
        // at 100% (`bench-sim --per-node`).
        let allowance = if w.allowance.is_finite() {
            w.allowance.clamp(0.0, 1.0)
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
        // Both sides' utilisation as it would be with function m's calls on one side only
        // (`inside`: all storage-side): each call moved inside takes its storage CPU less its
        // reads' from the storage, and frees its compute CPU less a call's on the compute node.
        let without_split = |m: Option<usize>, inside: bool| {
            let now = (util, w.compute_util);
            let Some((p, f)) = m.and_then(|m| Some((plans[m]?, w.functions.get(m)?))) else {
                return now;
            };
            let moved_in = if inside { 1.0 - f.share } else { -f.share } * p.rate;
            (
                now.0
                    + moved_in * (p.est.storage_cpu_ns - p.est.read_cpu_ns).max(0.0)
                        / (w.storage_cores.max(1e-9) * 1e9),
                now.1
                    - moved_in * (p.est.compute_cpu_ns - p.est.call_cpu_ns).max(0.0)
                        / (w.compute_cores.max(1e-9) * 1e9),
            )
        };
        // While lending, the compute node is judged as it would be without the loan: the loan
        // takes its own load off the compute node, and judged on the lowered load, lending was
        // withdrawn and restarted every other epoch (`bench-sim`: 16 storage cores, 1 node).
        let (_, util_without_loan) = without_split(lending_to, false);
        let busy = util_without_loan
            >= cfg.compute_busy - if lending_to.is_some() { LEND_HOLD } else { 0.0 };
        let lend = busy.then_some(Lend {
            capacity_ns: w.compute_cores.max(0.0) * 1e9,
        });
        // Offloading, the mirror of lending: the storage side at its budget while the compute
        // node idles (`bench-placement --topology netns`: aggregate inside held the storage at
        // its allowance, 0.83, with the compute node at 0.51, and Kayak's even split beat it).
        // While offloading, both sides are judged as they would be without it, as for a loan.
        let offloading = self.offloading.filter(|&m| {
            plans
                .get(m)
                .copied()
                .flatten()
                .is_some_and(|p| p.prefers_storage)
        });
        let (storage_without, compute_without) = without_split(offloading, true);
        let hold = if offloading.is_some() { LEND_HOLD } else { 0.0 };
        let offload = (!busy
            && storage_without >= (OFFLOAD_FULL - hold) * allowance
            && compute_without < cfg.compute_busy - LEND_HOLD + hold)
            .then_some(Offload {
                capacity_ns: w.compute_cores.max(0.0) * 1e9,
            });
        let fill = |scale: f64| plan(&plans, &order, budget, scale, lend, offload);
        let (targets_now, marginal_now, offloaded_now) = fill(1.0);

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
            let (t_norm, m_norm, _) = fill(scale);
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
            self.offloading = marginal_now.filter(|_| offloaded_now);
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
                _ if self.offloading == Some(i) && targets[i] < 1.0 => Decision {
                    share: targets[i],
                    reason: Reason::new(ReasonKind::Offloaded, util, w.compute_util),
                },
                _ => load_decision(targets[i], current, util, key_ms, overloaded, pushback, p),
            };
        }
    }
}

/// How much cheaper the other side must be for the cost model to change a function's side.
const PREFERENCE_MARGIN: f64 = 0.1;

/// How much less busy than `compute_busy` the compute node may be and keep lending (and, while
/// offloading, how much busier than idle, and the storage side how much further below full).
const LEND_HOLD: f64 = 0.15;

/// The fraction of its allowance at which the storage side counts as at its budget, for
/// offloading.
const OFFLOAD_FULL: f64 = 0.9;
