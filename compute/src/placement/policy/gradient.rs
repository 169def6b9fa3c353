//! The adaptive policy's gradient: Kayak-style probes of the marginal function's share, each
//! kept only if measured throughput rose by more than the hysteresis.

use super::AdaptiveConfig;
use crate::placement::{Reason, ReasonKind};

/// Gradient state on the marginal function's share.
#[derive(Debug, Clone)]
pub(super) struct Marginal {
    pub(super) index: usize,
    /// The load rule's target when it planned (at the planning total rate).
    pub(super) anchor: f64,
    /// Total invocation rate when planned.
    pub(super) anchor_rate: f64,
    /// Mix of invocations when planned.
    pub(super) anchor_mix: Vec<f64>,
    /// Functions fully inside when planned.
    pub(super) anchor_inside: Vec<bool>,
    /// The accepted share.
    pub(super) base: f64,
    /// Throughput measured at `base`.
    pub(super) base_tp: f64,
    /// The share being probed, if any.
    pub(super) probe: Option<f64>,
    pub(super) dir: f64,
    pub(super) step: f64,
    /// Epochs to skip before judging.
    pub(super) wait: u32,
    /// Epochs since converging, if converged.
    pub(super) converged: Option<u32>,
}

impl Marginal {
    /// One gradient epoch at throughput `tp`, storage utilisation `util` and `allowance`: the next
    /// share.
    pub(super) fn tick(
        &mut self,
        tp: f64,
        util: f64,
        allowance: f64,
        cfg: &AdaptiveConfig,
    ) -> (f64, Reason) {
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
