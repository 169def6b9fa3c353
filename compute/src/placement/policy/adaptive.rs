//! The adaptive policy, ours: per epoch, the cost model picks each function's side, the load
//! rule (`load_rule.rs`) fits the storage-preferring functions into the storage CPU budget (and
//! lends what is left while the compute node is busy, or offloads part of one while it idles),
//! and the gradient (`gradient.rs`) tunes the one function the budget splits.

#[cfg(doc)]
use super::balanced_share;
use super::config::AdaptiveConfig;
use super::gradient::Marginal;
use super::load_rule::{load_decision, plan, Lend, Offload, Plan};
use crate::placement::model::{Acc, Costs, Estimate};
use crate::placement::window::{Decision, FnWindow, Window};
use crate::placement::{Reason, ReasonKind};

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
        // 0. Merge short epochs until the window holds enough calls to judge (shares stay).
        let Some(merged) = self.merge(epoch) else {
            return;
        };
        let w: &Window = &merged;
        let n = w.functions.len().min(out.len());
        // 1. Fold the window into the decayed counters, and plan each function by cost.
        let span = self.fold(w, n);
        let plans = self.plan_by_cost(n, span, costs);
        self.prefers = plans.iter().map(|p| p.map(|p| p.prefers_storage)).collect();
        // 2. The storage budget, shrunk by pushbacks; lending and offloading; the load rule.
        let budget = self.budget(w, n, &plans);
        let now = budget.fill(&plans, 1.0);
        // 3. The marginal function: keep tuning it, or re-plan from the load rule.
        let (targets, tuned) = self.tune(w, &plans, &budget, now);
        // 5. Decisions and reasons.
        self.decide(w, &plans, &targets, tuned, &budget, &mut out[..n]);
    }

    /// Step 0: `epoch` merged into the epochs pending judgement; the merged window once it holds
    /// enough calls (or time) to judge, else `None` (and it stays pending).
    fn merge(&mut self, epoch: &Window) -> Option<Box<Window>> {
        let cfg = self.config;
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
            return None;
        }
        merged.seconds = merged.seconds.max(1e-9);
        Some(merged)
    }

    /// Step 1, first half: the window's first `n` functions folded into the decayed counters;
    /// returns the seconds they span (the window's length times the decayed count of epochs).
    fn fold(&mut self, w: &Window, n: usize) -> f64 {
        let cfg = self.config;
        self.stats.resize(n, Default::default());
        let seconds = w.seconds.max(1e-9);
        self.epochs = self.epochs * cfg.decay + 1.0;
        let span = seconds * self.epochs;
        for (f, (s, c)) in w.functions.iter().take(n).zip(&mut self.stats) {
            s.decay(cfg.decay);
            c.decay(cfg.decay);
            s.add(&f.storage);
            c.add(&f.compute);
        }
        span
    }

    /// Step 1, second half: each function's plan by the cost model, from the decayed counters
    /// (`None` for a function with nothing measured yet); rates are per second of `span`.
    fn plan_by_cost(&self, n: usize, span: f64, costs: &Costs) -> Vec<Option<Plan>> {
        let cfg = self.config;
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
        plans
    }

    /// Step 2: the storage budget (the allowance, shrunk by pushbacks), the order the load rule
    /// fills it in, and whether it lends spare storage CPU to a busy compute node or offloads
    /// to an idle one.
    fn budget(&self, w: &Window, n: usize, plans: &[Option<Plan>]) -> Budget {
        let cfg = self.config;
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
        // While lending, the compute node is judged as it would be without the loan: the loan
        // takes its own load off the compute node, and judged on the lowered load, lending was
        // withdrawn and restarted every other epoch (`bench-sim`: 16 storage cores, 1 node).
        let (_, util_without_loan) = without_split(w, plans, util, lending_to, false);
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
        let (storage_without, compute_without) = without_split(w, plans, util, offloading, true);
        let hold = if offloading.is_some() { LEND_HOLD } else { 0.0 };
        let offload = (!busy
            && storage_without >= (OFFLOAD_FULL - hold) * allowance
            && compute_without < cfg.compute_busy - LEND_HOLD + hold)
            .then_some(Offload {
                capacity_ns: w.compute_cores.max(0.0) * 1e9,
            });
        Budget {
            util,
            allowance,
            pushback,
            overloaded,
            budget,
            order,
            lend,
            offload,
        }
    }

    /// Step 3: the marginal function. Throughput here is a closed loop: moving a function
    /// changes the rate of every function. So while tuning, the load rule is evaluated at the
    /// rate it planned at; a new mix, new costs, or a different marginal function re-plan, and
    /// so does a real change of load: utilisation under the allowance with room to bring the
    /// function back, or over the hard limit with no probe of ours to blame.
    ///
    /// `now` is the load rule's plan at the window's own rate. Returns the targets, and the
    /// marginal function with its gradient's share and reason if it was tuned rather than
    /// re-planned.
    fn tune(
        &mut self,
        w: &Window,
        plans: &[Option<Plan>],
        budget: &Budget,
        now: (Vec<f64>, Option<usize>, bool),
    ) -> (Vec<f64>, Option<Tuned>) {
        let cfg = self.config;
        let (targets_now, marginal_now, offloaded_now) = now;
        let (util, allowance) = (budget.util, budget.allowance);
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
            let (t_norm, m_norm, _) = budget.fill(plans, scale);
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
            let overload = (util > cfg.hard_limit || budget.overloaded)
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
        (targets, tuned)
    }

    /// Step 5: each function's decision and its reason, into `out` (one per planned function).
    fn decide(
        &self,
        w: &Window,
        plans: &[Option<Plan>],
        targets: &[f64],
        tuned: Option<Tuned>,
        budget: &Budget,
        out: &mut [Decision],
    ) {
        let util = budget.util;
        for (i, d) in out.iter_mut().enumerate() {
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
                _ => load_decision(
                    targets[i],
                    current,
                    util,
                    key_ms,
                    budget.overloaded,
                    budget.pushback,
                    p,
                ),
            };
        }
    }
}

/// The marginal function the gradient tuned this epoch, with its share and reason.
type Tuned = (usize, (f64, Reason));

/// What step 2 decided for one judged window: the storage side's load against its allowance,
/// the budget the load rule fills and in what order, and lending or offloading.
#[derive(Debug)]
struct Budget {
    util: f64,
    allowance: f64,
    /// Pushbacks per storage-side call over the decayed epochs, and whether that is overload.
    pushback: f64,
    overloaded: bool,
    /// Storage CPU ns per second the storage-preferring functions may take.
    budget: f64,
    /// The storage-preferring functions, cheapest per round trip saved first.
    order: Vec<usize>,
    lend: Option<Lend>,
    offload: Option<Offload>,
}

impl Budget {
    /// The load rule's targets, marginal function and whether it offloaded, with every rate
    /// scaled by `scale`.
    fn fill(&self, plans: &[Option<Plan>], scale: f64) -> (Vec<f64>, Option<usize>, bool) {
        plan(
            plans,
            &self.order,
            self.budget,
            scale,
            self.lend,
            self.offload,
        )
    }
}

/// Both sides' utilisation as it would be with function m's calls on one side only (`inside`:
/// all storage-side): each call moved inside takes its storage CPU less its reads' from the
/// storage, and frees its compute CPU less a call's on the compute node.
fn without_split(
    w: &Window,
    plans: &[Option<Plan>],
    util: f64,
    m: Option<usize>,
    inside: bool,
) -> (f64, f64) {
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
}

/// How much cheaper the other side must be for the cost model to change a function's side.
const PREFERENCE_MARGIN: f64 = 0.1;

/// How much less busy than `compute_busy` the compute node may be and keep lending (and, while
/// offloading, how much busier than idle, and the storage side how much further below full).
const LEND_HOLD: f64 = 0.15;

/// The fraction of its allowance at which the storage side counts as at its budget, for
/// offloading.
const OFFLOAD_FULL: f64 = 0.9;
