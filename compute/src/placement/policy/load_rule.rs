//! The adaptive policy's load rule: which storage-preferring functions the storage CPU budget
//! keeps inside (`knapsack`, cheapest storage CPU per round trip saved first), the storage CPU
//! left over lent to compute-preferring functions while the compute node is busy
//! ([`balanced_share`]), and the reason each storage-preferring function gets.

use crate::placement::model::Estimate;
use crate::placement::window::Decision;
use crate::placement::{Reason, ReasonKind};

/// One function as the adaptive policy plans it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) est: Estimate,
    /// Arrivals per second (decayed).
    pub(super) rate: f64,
    pub(super) prefers_storage: bool,
    /// Storage CPU per round trip saved, ns (the shedding order).
    pub(super) key: f64,
    /// Why the cost model prefers its side.
    pub(super) cost_reason: Reason,
}

/// The share the load rule gives a storage-preferring function, and why.
pub(super) fn load_decision(
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

/// Lending is on: the compute node is busy, with this capacity.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lend {
    /// Compute CPU ns per second (cores x 1e9).
    pub(super) capacity_ns: f64,
}

/// Offloading is on: the storage side is at its budget while the compute node, with this
/// capacity, idles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offload {
    /// Compute CPU ns per second (cores x 1e9).
    pub(super) capacity_ns: f64,
}

/// The load rule: [`knapsack`] over the storage-preferring functions in `order`, then, with
/// `lend` and storage CPU left over with no storage-preferring function split, the leftover lent
/// to the compute-preferring functions, those that free the most compute CPU per storage CPU
/// first: each gets the share that balances both sides' CPU, and the first that cannot go
/// wholly inside is the marginal function. Targets per function, the marginal function, and
/// whether it offloaded.
///
/// With `offload` instead (the mirror of lending: storage at its budget, the compute node idle),
/// the function the budget splits, or else the last storage-preferring one wholly inside, if its
/// reads cost the storage less than running it, gets the share that balances both sides' CPU
/// ([`balanced_share`]) where that is lower, and is the marginal function: the idle compute CPU
/// carries part of it.
pub(super) fn plan(
    plans: &[Option<Plan>],
    order: &[usize],
    budget: f64,
    rate_scale: f64,
    lend: Option<Lend>,
    offload: Option<Offload>,
) -> (Vec<f64>, Option<usize>, bool) {
    let (mut targets, marginal, left, split) = knapsack(plans, order, budget, rate_scale);
    // Compute CPU a function takes at share t: calls outside cost c, calls inside c_s.
    let compute_at = |p: &Plan, t: f64| {
        p.rate * rate_scale * (t * p.est.call_cpu_ns + (1.0 - t) * p.est.compute_cpu_ns)
    };
    // Storage CPU a function takes at share t: calls inside cost s, calls outside their reads.
    let storage_at = |p: &Plan, t: f64| {
        p.rate * rate_scale * (t * p.est.storage_cpu_ns + (1.0 - t) * p.est.read_cpu_ns)
    };
    // What the functions but m take at their targets, by `at`.
    let others = |targets: &[f64], m: usize, at: &dyn Fn(&Plan, f64) -> f64| -> f64 {
        plans
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != m)
            .filter_map(|(i, q)| q.map(|q| at(&q, targets[i])))
            .sum()
    };
    // Compute CPU free for function m: capacity less what the others spend at their targets.
    let free_for = |targets: &[f64], m: usize, capacity: f64| {
        (capacity - others(targets, m, &compute_at)).max(0.05 * capacity)
    };
    if let Some(offload) = offload {
        // The function split for want of budget, else the last one wholly inside; only one
        // whose reads cost the storage less than running it frees storage CPU by going out.
        let candidate = if split {
            marginal
        } else {
            order.iter().rev().copied().find(|&i| targets[i] >= 1.0)
        }
        .and_then(|i| {
            plans[i]
                .filter(|p| p.est.storage_cpu_ns > p.est.read_cpu_ns)
                .map(|p| (i, p))
        });
        if let Some((m, p)) = candidate {
            // Storage CPU for it: the budget less what the others take at their targets.
            let storage = (budget - others(&targets, m, &storage_at)).max(0.0);
            let free = free_for(&targets, m, offload.capacity_ns);
            let share = balanced_share(&p.est, storage, free);
            if share < targets[m] {
                targets[m] = share;
                return (targets, Some(m), true);
            }
        }
        return (targets, marginal, false);
    }
    let Some(lend) = lend.filter(|_| !split && left > 0.0) else {
        return (targets, marginal, false);
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
        let free = free_for(&targets, m, lend.capacity_ns);
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
    (targets, last.or(marginal), false)
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
