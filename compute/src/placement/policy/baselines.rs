//! The baselines AutoLoc is measured against: `storage` and `compute` (every share fixed at 1 or
//! 0), [`Oracle`] (fixed shares per function, the bench's best assignment), [`AutoLoc2021`] (the
//! 2021 paper's static rule) and [`Kayak`] (one global fraction moved by gradient ascent).

use crate::placement::model::{Acc, Costs, Estimate};
use crate::placement::window::{Decision, Window};
use crate::placement::{Reason, ReasonKind};

/// `storage` and `compute`: every function's share fixed at `share`.
pub(super) fn fixed(out: &mut [Decision], share: f64) {
    for d in out {
        *d = Decision {
            share,
            reason: Reason::new(ReasonKind::Fixed, share, 0.0),
        };
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
    pub(super) fn step(&self, w: &Window, out: &mut [Decision]) {
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
    pub(super) fn step(&mut self, w: &Window, costs: &Costs, out: &mut [Decision]) {
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

    pub(super) fn step(&mut self, w: &Window, out: &mut [Decision]) {
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
