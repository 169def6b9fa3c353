//! One epoch of counters, per function and in total: what a policy step sees.

use crate::table::SideSnapshot;

use super::Reason;

/// One function over one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FnWindow {
    /// Function name.
    pub name: String,
    /// Its share during the epoch.
    pub share: f64,
    /// Invocations that ended storage-side in the epoch (pushed-back ones included).
    pub storage: SideSnapshot,
    /// Invocations that ended compute-side in the epoch.
    pub compute: SideSnapshot,
}

impl FnWindow {
    /// Invocations that arrived (a pushed-back one counts once, though recorded on both sides).
    pub fn arrivals(&self) -> u64 {
        (self.storage.invocations - self.storage.pushbacks.min(self.storage.invocations))
            + self.compute.invocations
    }

    /// Invocations that succeeded.
    pub fn completed(&self) -> u64 {
        self.storage.invocations.saturating_sub(self.storage.errors)
            + self.compute.invocations.saturating_sub(self.compute.errors)
    }

    /// Storage CPU ns on both sides (running it inside, serving its reads outside).
    pub fn storage_cpu_ns(&self) -> u64 {
        self.storage.storage_cpu_ns + self.compute.storage_cpu_ns
    }
}

/// Every function over one epoch, plus what the controller knows of the storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Epoch number, from 1.
    pub epoch: u64,
    /// Length of the epoch, seconds (> 0).
    pub seconds: f64,
    /// Storage cores that run functions (a config value).
    pub storage_cores: f64,
    /// Fraction of the storage CPU function execution may take (the saturation threshold),
    /// from the forecast of other load or the configured target.
    pub allowance: f64,
    /// Cores of the compute node (a config value).
    pub compute_cores: f64,
    /// Compute node CPU utilisation in the epoch: the process's CPU time / (epoch length x
    /// compute cores); 0 where not measured.
    pub compute_util: f64,
    /// One entry per function, indexed like the registry.
    pub functions: Vec<FnWindow>,
}

impl Window {
    /// Extends this window by `later`, the epoch right after it: counters add up, the length
    /// too, compute utilisation and the allowance are time-weighted means, and the rest (shares,
    /// epoch, cores) is `later`'s.
    pub fn merge(&mut self, later: &Window) {
        let total = self.seconds + later.seconds;
        if total > 0.0 {
            let mean = |a: f64, b: f64| (a * self.seconds + b * later.seconds) / total;
            self.compute_util = mean(self.compute_util, later.compute_util);
            self.allowance = mean(self.allowance, later.allowance);
        }
        self.seconds = total;
        self.epoch = later.epoch;
        self.storage_cores = later.storage_cores;
        self.compute_cores = later.compute_cores;
        if self.functions.len() < later.functions.len() {
            self.functions
                .resize_with(later.functions.len(), FnWindow::default);
        }
        for (f, l) in self.functions.iter_mut().zip(&later.functions) {
            f.name.clone_from(&l.name);
            f.share = l.share;
            f.storage.merge(&l.storage);
            f.compute.merge(&l.compute);
        }
    }

    /// Successful invocations per second.
    pub fn throughput(&self) -> f64 {
        self.functions
            .iter()
            .map(|f| f.completed() as f64)
            .sum::<f64>()
            / self.seconds.max(1e-9)
    }

    /// Storage CPU ns reported in the epoch.
    pub fn storage_cpu_ns(&self) -> u64 {
        self.functions.iter().map(FnWindow::storage_cpu_ns).sum()
    }

    /// Storage CPU utilisation: storage CPU ns / (epoch length x storage cores).
    pub fn storage_util(&self) -> f64 {
        self.storage_cpu_ns() as f64 / (self.seconds.max(1e-9) * 1e9 * self.storage_cores.max(1e-9))
    }

    /// Pushbacks per storage-side invocation, all functions.
    pub fn pushback_rate(&self) -> f64 {
        let (p, n) = self.functions.iter().fold((0, 0), |(p, n), f| {
            (p + f.storage.pushbacks, n + f.storage.invocations)
        });
        if n == 0 {
            0.0
        } else {
            p as f64 / n as f64
        }
    }
}

/// What a policy decides for one function: its next share and why.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Decision {
    /// Fraction of invocations to send storage-side, in [0, 1].
    pub share: f64,
    /// Why.
    pub reason: Reason,
}
