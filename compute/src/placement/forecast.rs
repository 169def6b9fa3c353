//! Forecasting storage-side load, and the storage CPU function execution may take.
//!
//! Three one-step-ahead models: naive (the last value), EWMA (simple exponential smoothing) and
//! Holt's linear trend (double exponential smoothing). [`evaluate`] fits each model's parameters
//! by grid search on the first half of a trace and scores it on the second half, every forecast
//! made from the values before it only: strictly out of sample. A model is used only where it
//! beats naive there; AutoLoc's AR(1) lost to naive, and so may these.

use std::collections::VecDeque;
use std::fmt;

/// A forecasting model and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Model {
    /// The next value is the last one.
    Naive,
    /// Exponentially weighted moving average: `s = alpha x + (1 - alpha) s`.
    Ewma {
        /// Smoothing weight of the newest value, (0, 1].
        alpha: f64,
    },
    /// Holt's linear trend: a level and a slope, each exponentially smoothed.
    Holt {
        /// Level smoothing, (0, 1].
        alpha: f64,
        /// Trend smoothing, (0, 1].
        beta: f64,
    },
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Naive => f.write_str("naive"),
            Model::Ewma { alpha } => write!(f, "ewma(alpha={alpha:.2})"),
            Model::Holt { alpha, beta } => write!(f, "holt(alpha={alpha:.2}, beta={beta:.2})"),
        }
    }
}

/// A model's running state: forecast, then update with the value that came.
#[derive(Debug, Clone, Copy)]
struct State {
    model: Model,
    level: f64,
    trend: f64,
    seen: u64,
}

impl State {
    fn new(model: Model) -> State {
        State {
            model,
            level: 0.0,
            trend: 0.0,
            seen: 0,
        }
    }

    /// The forecast of the next value (0 before any).
    fn forecast(&self) -> f64 {
        match self.model {
            Model::Holt { .. } => self.level + self.trend,
            _ => self.level,
        }
    }

    fn update(&mut self, x: f64) {
        match (self.model, self.seen) {
            (_, 0) | (Model::Naive, _) => self.level = x,
            (Model::Ewma { alpha }, _) => self.level = alpha * x + (1.0 - alpha) * self.level,
            (Model::Holt { .. }, 1) => {
                self.trend = x - self.level;
                self.level = x;
            }
            (Model::Holt { alpha, beta }, _) => {
                let prev = self.level;
                self.level = alpha * x + (1.0 - alpha) * (prev + self.trend);
                self.trend = beta * (self.level - prev) + (1.0 - beta) * self.trend;
            }
        }
        self.seen += 1;
    }
}

/// Mean absolute one-step-ahead error of `model` over `trace[from..to]`, each forecast made from
/// the values before it.
pub fn mae(model: Model, trace: &[f64], from: usize, to: usize) -> f64 {
    let mut s = State::new(model);
    let (mut sum, mut n) = (0.0, 0usize);
    for (t, &x) in trace.iter().enumerate().take(to) {
        if t >= from {
            sum += (s.forecast() - x).abs();
            n += 1;
        }
        s.update(x);
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Fewest values [`evaluate`] works with.
pub const MIN_TRACE: usize = 8;
/// A model must beat naive by this fraction to be chosen: a smaller win on half a trace is
/// not evidence.
pub const MIN_GAIN: f64 = 0.02;
/// Forecasts before this index are not scored (Holt needs two values to have a trend).
const WARMUP: usize = 2;

fn grid() -> impl Iterator<Item = f64> {
    (1..=20).map(|i| f64::from(i) * 0.05)
}

const BETAS: [f64; 8] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8];

/// How each model forecast the second half of a trace, and the one to use.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Holt's mean absolute error on the second half.
    pub mae_holt: f64,
    /// EWMA's.
    pub mae_ewma: f64,
    /// Naive's.
    pub mae_naive: f64,
    /// Holt with its parameters fitted on the first half.
    pub holt: Model,
    /// EWMA with its parameter fitted on the first half.
    pub ewma: Model,
    /// The better of Holt and EWMA where it beats naive by [`MIN_GAIN`], else naive.
    pub chosen: Model,
}

/// Fits on the first half of `trace`, scores out of sample on the second half.
pub fn evaluate(trace: &[f64]) -> Evaluation {
    let n = trace.len();
    if n < MIN_TRACE || trace.iter().any(|x| !x.is_finite()) {
        return Evaluation {
            mae_holt: f64::NAN,
            mae_ewma: f64::NAN,
            mae_naive: f64::NAN,
            holt: Model::Naive,
            ewma: Model::Naive,
            chosen: Model::Naive,
        };
    }
    let half = n / 2;
    let fit = |m: Model| mae(m, trace, WARMUP, half);
    let best = |models: &mut dyn Iterator<Item = Model>| {
        models
            .map(|m| (fit(m), m))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| m)
            .expect("the grid is not empty")
    };
    let ewma = best(&mut grid().map(|alpha| Model::Ewma { alpha }));
    let holt = best(
        &mut grid().flat_map(|alpha| BETAS.iter().map(move |&beta| Model::Holt { alpha, beta })),
    );
    let score = |m: Model| mae(m, trace, half.max(WARMUP), n);
    let (mae_holt, mae_ewma, mae_naive) = (score(holt), score(ewma), score(Model::Naive));
    let (best_mae, best) = if mae_holt < mae_ewma {
        (mae_holt, holt)
    } else {
        (mae_ewma, ewma)
    };
    let chosen = if best_mae < mae_naive * (1.0 - MIN_GAIN) {
        best
    } else {
        Model::Naive
    };
    Evaluation {
        mae_holt,
        mae_ewma,
        mae_naive,
        holt,
        ewma,
        chosen,
    }
}

/// The fraction of storage CPU function execution may take, given `predicted_load` cores of
/// other storage work: what keeps the total at `target_util` of `storage_cores`, in
/// [0, `target_util`].
pub fn storage_cpu_allowance(predicted_load: f64, storage_cores: f64, target_util: f64) -> f64 {
    let cores = storage_cores.max(1e-9);
    let target = if target_util.is_finite() {
        target_util.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let load = if predicted_load.is_finite() {
        predicted_load.max(0.0)
    } else {
        0.0
    };
    ((target * cores - load) / cores).clamp(0.0, target)
}

/// Forecasts a load online: observes one value per epoch, re-evaluates the models every
/// `refit_every` values over a bounded history, and forecasts with the chosen one.
#[derive(Debug, Clone)]
pub struct Forecaster {
    history: VecDeque<f64>,
    capacity: usize,
    refit_every: usize,
    since_fit: usize,
    state: State,
    evaluation: Option<Evaluation>,
}

impl Default for Forecaster {
    fn default() -> Forecaster {
        Forecaster::new(512, 32)
    }
}

impl Forecaster {
    /// Keeps the last `capacity` values and re-evaluates every `refit_every`.
    pub fn new(capacity: usize, refit_every: usize) -> Forecaster {
        Forecaster {
            history: VecDeque::with_capacity(capacity.max(MIN_TRACE)),
            capacity: capacity.max(MIN_TRACE),
            refit_every: refit_every.max(1),
            since_fit: 0,
            state: State::new(Model::Naive),
            evaluation: None,
        }
    }

    /// Adds the value of the epoch that just ended (non-finite values count as 0).
    pub fn observe(&mut self, x: f64) {
        let x = if x.is_finite() { x } else { 0.0 };
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(x);
        self.state.update(x);
        self.since_fit += 1;
        if self.since_fit >= self.refit_every && self.history.len() >= 2 * MIN_TRACE {
            self.since_fit = 0;
            let trace: Vec<f64> = self.history.iter().copied().collect();
            let e = evaluate(&trace);
            if e.chosen != self.state.model {
                self.state = State::new(e.chosen);
                trace.iter().for_each(|&x| self.state.update(x));
            }
            self.evaluation = Some(e);
        }
    }

    /// The forecast of the next value (never negative; 0 before any value).
    pub fn predict(&self) -> f64 {
        self.state.forecast().max(0.0)
    }

    /// The model in use.
    pub fn model(&self) -> Model {
        self.state.model
    }

    /// The last evaluation, once there was enough history.
    pub fn evaluation(&self) -> Option<&Evaluation> {
        self.evaluation.as_ref()
    }

    /// [`storage_cpu_allowance`] of the predicted load.
    pub fn allowance(&self, storage_cores: f64, target_util: f64) -> f64 {
        storage_cpu_allowance(self.predict(), storage_cores, target_util)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A standard normal draw (Box-Muller).
    fn normal(rng: &mut impl Rng) -> f64 {
        let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn trace(seed: u64, n: usize, f: impl Fn(usize, f64, f64) -> f64) -> Vec<f64> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut prev = 0.0;
        (0..n)
            .map(|t| {
                prev = f(t, normal(&mut rng), prev);
                prev
            })
            .collect()
    }

    #[test]
    fn holt_beats_naive_on_a_noisy_ramp() {
        for seed in 0..5 {
            let t = trace(seed, 400, |t, e, _| 10.0 + 0.5 * t as f64 + e);
            let e = evaluate(&t);
            assert!(e.mae_holt < e.mae_naive * 0.9, "{e:?}");
            assert!(matches!(e.chosen, Model::Holt { .. }), "{e:?}");
        }
    }

    #[test]
    fn ewma_beats_naive_on_white_noise() {
        for seed in 0..5 {
            let t = trace(seed, 400, |_, e, _| 50.0 + e);
            let e = evaluate(&t);
            assert!(e.mae_ewma < e.mae_naive * 0.9, "{e:?}");
            assert_ne!(e.chosen, Model::Naive, "{e:?}");
        }
    }

    #[test]
    fn naive_wins_or_ties_on_a_random_walk() {
        for seed in 0..5 {
            let t = trace(seed, 400, |_, e, prev| prev + e);
            let e = evaluate(&t);
            let best = e.mae_holt.min(e.mae_ewma);
            assert!(e.mae_naive <= best * (1.0 + MIN_GAIN), "{e:?}");
            assert_eq!(e.chosen, Model::Naive, "{e:?}");
        }
    }

    #[test]
    fn out_of_sample_means_the_future_is_unseen() {
        // Changing the last value changes no forecast but the last one's error.
        let mut t = trace(9, 100, |t, e, _| t as f64 + e);
        let m = Model::Holt {
            alpha: 0.5,
            beta: 0.1,
        };
        let before = mae(m, &t, 50, 99);
        t[99] = 1e9;
        assert_eq!(mae(m, &t, 50, 99), before);
        assert_eq!(evaluate(&t[..5]).chosen, Model::Naive);
    }

    #[test]
    fn allowance_leaves_room_for_the_forecast() {
        assert_eq!(storage_cpu_allowance(0.0, 4.0, 0.85), 0.85);
        assert!((storage_cpu_allowance(1.2, 4.0, 0.85) - 0.55).abs() < 1e-12);
        assert_eq!(storage_cpu_allowance(9.0, 4.0, 0.85), 0.0);
        assert_eq!(storage_cpu_allowance(f64::NAN, 2.0, 0.5), 0.5);
    }

    #[test]
    fn forecaster_follows_a_ramp_and_refits() {
        let mut f = Forecaster::new(256, 16);
        assert_eq!(f.predict(), 0.0);
        let t = trace(3, 200, |t, e, _| 0.01 * t as f64 + 0.05 * e);
        for &x in &t {
            f.observe(x);
        }
        assert!(
            matches!(f.model(), Model::Holt { .. }),
            "{:?}",
            f.evaluation()
        );
        assert!((f.predict() - 2.0).abs() < 0.2, "{}", f.predict());
        assert!(f.allowance(4.0, 0.85) < 0.85);
    }
}
