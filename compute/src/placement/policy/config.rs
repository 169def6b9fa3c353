//! [`AdaptiveConfig`]: the tunables of the adaptive policy, which its gradient reads too.

/// Tunables of [`Adaptive`](super::Adaptive).
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
