//! The pure parts of `bench-placement`: workload patterns, fixed assignments, convergence after
//! a shift, and the report rows. Everything here is a function of its arguments (no Redis, no
//! clock), so it is unit-tested; the binary measures and calls these.

use std::collections::BTreeMap;

use serde::Serialize;

/// Relative tolerance of "steady": a bucket within 5% of the phase's steady level.
pub const STEADY_TOLERANCE: f64 = 0.05;
/// The steady level of a phase is the mean of this trailing fraction of its buckets.
pub const STEADY_TAIL: f64 = 0.4;

/// A deterministic interleaving of items by integer weight (smooth weighted round robin, as in
/// nginx's upstream balancer): each item `i` appears `weights[i]` times in a cycle of
/// `sum(weights)`, spread as evenly as possible. `[2, 1, 1, 1]` gives `0 1 2 0 3`-like cycles.
pub fn interleave(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total.max(0) as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        // The first of the largest, so the cycle is the same on every run.
        let best = (0..current.len())
            .max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
            .expect("weights is not empty when total > 0");
        current[best] -= total;
        out.push(best);
    }
    out
}

/// Every assignment of 0 or 1 to `n` functions, as shares, in binary counting order (the first
/// is all 0, the last all 1).
pub fn assignments(n: usize) -> Vec<Vec<f64>> {
    assert!(n < 16, "2^{n} assignments is too many to try");
    (0..1usize << n)
        .map(|bits| {
            (0..n)
                .map(|i| {
                    if bits >> (n - 1 - i) & 1 == 1 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

/// The `oracle(...)` policy string of a fixed assignment: `oracle(khop=1,digest=0)`.
pub fn oracle_string(functions: &[&str], shares: &[f64]) -> String {
    let items: Vec<String> = functions
        .iter()
        .zip(shares)
        .map(|(f, s)| format!("{f}={s}"))
        .collect();
    format!("oracle({})", items.join(","))
}

/// Storage shares as the tables print them: `khop=0.85 digest=0.00`.
pub fn shares_text<'a>(shares: impl IntoIterator<Item = (&'a str, f64)>) -> String {
    let items: Vec<String> = shares
        .into_iter()
        .map(|(f, s)| format!("{f}={s:.2}"))
        .collect();
    items.join(" ")
}

/// Buckets of the trailing mean [`convergence_ms`] reads (300 ms at 100 ms buckets: a 100 ms
/// bucket of a CPU-heavy mix holds a few dozen invocations, too few to sit within 5%).
pub const CONVERGENCE_WINDOW: usize = 3;

/// How long after a shift throughput reaches its new level: `phase` holds the throughput of each
/// bucket of `bucket_ms` from the shift to the end of the phase. The steady level is the mean of
/// the last [`STEADY_TAIL`] of the phase; the answer is the time from the shift to the end of
/// the first bucket at which the trailing mean of [`CONVERGENCE_WINDOW`] buckets (restarted at
/// the shift) is within [`STEADY_TOLERANCE`] of it. `None` if the phase is empty, its steady level
/// is not positive, or it never got there.
pub fn convergence_ms(phase: &[f64], bucket_ms: u64) -> Option<u64> {
    let steady = steady_level(phase)?;
    moving_average(phase, CONVERGENCE_WINDOW)
        .iter()
        .position(|&v| (v - steady).abs() <= STEADY_TOLERANCE * steady)
        .map(|i| (i as u64 + 1) * bucket_ms)
}

/// A stricter reading of [`convergence_ms`]: the time from the shift to the start of the first
/// bucket from which every single bucket to the end is within [`STEADY_TOLERANCE`] of the steady
/// level (`None` if even the last bucket is out of band).
pub fn stays_within_ms(phase: &[f64], bucket_ms: u64) -> Option<u64> {
    let steady = steady_level(phase)?;
    let within = |v: f64| (v - steady).abs() <= STEADY_TOLERANCE * steady;
    // The last bucket that is out of band; converged from the bucket after it.
    let first_settled = phase.iter().rposition(|&v| !within(v)).map_or(0, |i| i + 1);
    (first_settled < phase.len()).then_some(first_settled as u64 * bucket_ms)
}

/// The trailing moving average of `v` over `n` buckets (fewer at the start).
pub fn moving_average(v: &[f64], n: usize) -> Vec<f64> {
    let n = n.max(1);
    (0..v.len())
        .map(|i| {
            let w = &v[(i + 1).saturating_sub(n)..=i];
            w.iter().sum::<f64>() / w.len() as f64
        })
        .collect()
}

/// The mean of the last [`STEADY_TAIL`] of `phase` (at least one bucket); `None` if empty or not
/// positive.
pub fn steady_level(phase: &[f64]) -> Option<f64> {
    if phase.is_empty() {
        return None;
    }
    let tail = ((phase.len() as f64 * STEADY_TAIL).round() as usize).clamp(1, phase.len());
    let slice = &phase[phase.len() - tail..];
    let mean = slice.iter().sum::<f64>() / slice.len() as f64;
    (mean > 0.0).then_some(mean)
}

/// One (workload, policy) cell of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacementRow {
    /// The workload, e.g. `mix`.
    pub workload: String,
    /// The policy, e.g. `adaptive`; `oracle` for the best fixed assignment.
    pub policy: String,
    /// For `oracle` (and fixed candidates): the assignment, as an `oracle(...)` string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// Compute threads.
    pub threads: usize,
    /// Invocations each thread keeps in flight.
    pub in_flight: usize,
    /// Successful invocations per second over the measured time.
    pub throughput_per_s: f64,
    /// The throughput of every run of the cell, in the order run (the row is the median one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub throughput_runs: Vec<f64>,
    /// Median latency of an invocation, us.
    pub p50_us: f64,
    /// 99th percentile, us.
    pub p99_us: f64,
    /// Each function's storage share at the end of the cell.
    pub storage_share_final: BTreeMap<String, f64>,
    /// Mean storage CPU utilisation over the measured epochs (the controller's window), 0..1+.
    pub storage_util: f64,
    /// Mean CPU utilisation of the compute node (this process over its cores) over the
    /// measured epochs, as the controller saw it.
    pub compute_util: f64,
    /// Invocations that failed.
    pub errors: u64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Invocations the storage side pushed back (then finished compute-side).
    pub pushed_back: u64,
    /// Invocations that ran storage-side / compute-side.
    pub storage_side: u64,
    /// See `storage_side`.
    pub compute_side: u64,
    /// For `shift`: ms from each shift until throughput (a trailing 300 ms mean) is within 5%
    /// of its new steady level (`null`: never before the phase ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_ms: Option<Vec<Option<u64>>>,
    /// For `shift`: ms from each shift until every 100 ms bucket to the end of the phase stays
    /// within 5% (stricter; noise alone often keeps it from settling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_ms_strict: Option<Vec<Option<u64>>>,
    /// Open-loop cells: the offered load, invocations per second (Poisson arrivals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_per_s: Option<f64>,
    /// Open-loop cells: p50 and p99 of every run, us (the row's are their medians).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub p50_runs: Vec<f64>,
    /// See `p50_runs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub p99_runs: Vec<f64>,
    /// Each function's cost per invocation over the measured time, from the placement table.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub costs: BTreeMap<String, FnCost>,
}

/// What one function cost per invocation in a cell, as the placement table measured it: the
/// numbers the policy saw when it set the function's share.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FnCost {
    /// Invocations that ran storage-side.
    pub storage_runs: u64,
    /// Storage CPU of a storage-side run, us.
    pub storage_cpu_us: f64,
    /// Invocations that ran compute-side.
    pub compute_runs: u64,
    /// Compute CPU of a compute-side run, us.
    pub compute_cpu_us: f64,
    /// Round trips of a compute-side run.
    pub round_trips: f64,
    /// Bytes a compute-side run moved.
    pub bytes: f64,
    /// Keys a compute-side run read.
    pub keys: f64,
    /// Wall time of a storage-side / compute-side run, us.
    pub storage_wall_us: f64,
    /// See `storage_wall_us`.
    pub compute_wall_us: f64,
}

impl FnCost {
    /// Per-invocation means of the two sides' counters over a cell.
    pub fn from_sides(
        storage: &autoloc::table::SideSnapshot,
        compute: &autoloc::table::SideSnapshot,
    ) -> FnCost {
        let per = |total: u64, n: u64| {
            if n == 0 {
                0.0
            } else {
                total as f64 / n as f64
            }
        };
        let (ns, nc) = (storage.invocations, compute.invocations);
        FnCost {
            storage_runs: ns,
            storage_cpu_us: per(storage.storage_cpu_ns, ns) / 1e3,
            compute_runs: nc,
            compute_cpu_us: per(compute.cpu_ns, nc) / 1e3,
            round_trips: per(compute.round_trips, nc),
            bytes: per(compute.bytes, nc),
            keys: per(compute.keys_read, nc),
            storage_wall_us: per(storage.wall_ns, ns) / 1e3,
            compute_wall_us: per(compute.wall_ns, nc) / 1e3,
        }
    }
}

/// One point of a `shift` time series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Milliseconds since measuring started (end of the bucket).
    pub t_ms: u64,
    /// Throughput in the bucket, invocations per second.
    pub throughput_per_s: f64,
    /// Each function's storage share sampled at the end of the bucket, in the workload's
    /// function order.
    pub shares: Vec<f64>,
}

/// The time series of one policy across the shift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShiftSeries {
    /// The policy (`oracle` with its assignment in `assignment`).
    pub policy: String,
    /// For the oracle: its assignment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// Names of the functions `shares` refers to.
    pub functions: Vec<String>,
    /// Times of the shifts, ms since measuring started.
    pub shifts_ms: Vec<u64>,
    /// Bucket length, ms.
    pub bucket_ms: u64,
    /// The points.
    pub points: Vec<SeriesPoint>,
}

/// The median of `v` (the mean of the two middle values for an even count); `None` if empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    })
}

/// A ratio of two medians with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatioCi {
    /// median(a) / median(b).
    pub ratio: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end of the 95% interval (infinite, `null` in JSON, with too few runs).
    pub hi: f64,
}

/// Win, tie or loss of a ratio against 1.0, called only by its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CiVerdict {
    /// The whole interval is above 1.
    Win,
    /// The interval includes 1.
    Tie,
    /// The whole interval is below 1.
    Loss,
}

impl RatioCi {
    /// The verdict against 1.0.
    pub fn verdict(&self) -> CiVerdict {
        if self.lo > 1.0 {
            CiVerdict::Win
        } else if self.hi < 1.0 {
            CiVerdict::Loss
        } else {
            CiVerdict::Tie
        }
    }
}

/// Fewer runs than this on either side give no interval (`[0, inf]`: a tie).
pub const MIN_RUNS: usize = 3;

/// Resamples of [`ratio_ci`].
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// median(`a`) / median(`b`) and its 95% percentile-bootstrap interval: `a` and `b` (the
/// throughputs of every repetition of two cells) are each resampled with replacement, the ratio
/// of the resamples' medians taken `resamples` times, and the 2.5th and 97.5th percentiles of
/// those ratios are the interval. Deterministic for a `seed`. Under [`MIN_RUNS`] runs on a side
/// the interval is `[0, inf]`. `None` if either side is empty or
/// has a non-positive median.
pub fn ratio_ci(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<RatioCi> {
    use rand::{Rng, SeedableRng};
    let (ma, mb) = (median(a)?, median(b)?);
    if mb <= 0.0 {
        return None;
    }
    if a.len() < MIN_RUNS || b.len() < MIN_RUNS {
        // Too few runs to resample: no interval, so no verdict but a tie.
        return Some(RatioCi {
            ratio: ma / mb,
            lo: 0.0,
            hi: f64::INFINITY,
        });
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut draw = |v: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..v.len()).map(|_| v[rng.gen_range(0..v.len())]));
        median(buf).unwrap_or(0.0)
    };
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = (0..resamples.max(1))
        .filter_map(|_| {
            let (x, y) = (draw(a, &mut ba), draw(b, &mut bb));
            (y > 0.0).then(|| x / y)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    Some(RatioCi {
        ratio: ma / mb,
        lo: at(0.025),
        hi: at(0.975),
    })
}

/// Wins, ties and losses of one policy against one baseline over the workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// The baseline.
    pub baseline: String,
    /// Workloads where the interval of policy / baseline is above 1.
    pub wins: usize,
    /// Where it includes 1.
    pub ties: usize,
    /// Where it is below 1.
    pub losses: usize,
    /// The workloads lost.
    pub lost: Vec<String>,
}

impl Tally {
    /// Counts `verdict` on `workload`.
    pub fn count(&mut self, workload: &str, verdict: CiVerdict) {
        match verdict {
            CiVerdict::Win => self.wins += 1,
            CiVerdict::Tie => self.ties += 1,
            CiVerdict::Loss => {
                self.losses += 1;
                self.lost.push(workload.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_text_has_two_decimals() {
        assert_eq!(
            shares_text([("khop", 0.846), ("digest", 0.0)]),
            "khop=0.85 digest=0.00"
        );
        assert_eq!(shares_text([]), "");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn bootstrap_separates_clear_differences_and_ties_noise() {
        let fast = [110.0, 112.0, 108.0, 111.0, 109.0];
        let slow = [100.0, 101.0, 99.0, 100.5, 99.5];
        let ci = ratio_ci(&fast, &slow, BOOTSTRAP_RESAMPLES, 7).unwrap();
        assert!((ci.ratio - 1.1).abs() < 0.01, "{ci:?}");
        assert!(
            ci.lo > 1.0 && ci.lo <= ci.ratio && ci.ratio <= ci.hi,
            "{ci:?}"
        );
        assert_eq!(ci.verdict(), CiVerdict::Win);
        assert_eq!(
            ratio_ci(&slow, &fast, BOOTSTRAP_RESAMPLES, 7)
                .unwrap()
                .verdict(),
            CiVerdict::Loss
        );
        // Overlapping runs: a 2% difference in medians inside 10% noise is a tie.
        let a = [100.0, 112.0, 95.0, 104.0, 108.0];
        let b = [98.0, 110.0, 93.0, 103.0, 106.0];
        let ci = ratio_ci(&a, &b, BOOTSTRAP_RESAMPLES, 7).unwrap();
        assert_eq!(ci.verdict(), CiVerdict::Tie, "{ci:?}");
        // Same seed, same interval; nothing to compare against, no interval.
        assert_eq!(ratio_ci(&a, &b, 1000, 3), ratio_ci(&a, &b, 1000, 3));
        assert_eq!(ratio_ci(&a, &[], 1000, 3), None);
        assert_eq!(ratio_ci(&a, &[0.0, 0.0], 1000, 3), None);
        // One run each: a ratio, but no interval and no verdict.
        let one = ratio_ci(&[2.0], &[1.0], 1000, 3).unwrap();
        assert_eq!(
            (one.ratio, one.lo, one.verdict()),
            (2.0, 0.0, CiVerdict::Tie)
        );
    }

    #[test]
    fn tally_counts_and_names_losses() {
        let mut t = Tally {
            baseline: "kayak".into(),
            ..Tally::default()
        };
        t.count("mix", CiVerdict::Win);
        t.count("khop2", CiVerdict::Tie);
        t.count("digest", CiVerdict::Loss);
        assert_eq!((t.wins, t.ties, t.losses), (1, 1, 1));
        assert_eq!(t.lost, vec!["digest".to_string()]);
    }

    #[test]
    fn interleave_respects_weights_and_spreads() {
        let p = interleave(&[2, 1, 1, 1]);
        assert_eq!(p.len(), 5);
        let count = |i| p.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (2, 1, 1, 1));
        // The two zeros are not adjacent within the cycle.
        let zeros: Vec<usize> = (0..5).filter(|&i| p[i] == 0).collect();
        assert!(zeros[1] - zeros[0] >= 2, "{p:?}");
        assert_eq!(interleave(&[1]), vec![0]);
        assert!(interleave(&[]).is_empty());
        assert_eq!(interleave(&[0, 3]), vec![1, 1, 1]);
    }

    #[test]
    fn assignments_count_in_binary() {
        let a = assignments(2);
        assert_eq!(
            a,
            vec![
                vec![0.0, 0.0],
                vec![0.0, 1.0],
                vec![1.0, 0.0],
                vec![1.0, 1.0]
            ]
        );
        assert_eq!(assignments(4).len(), 16);
        assert_eq!(
            oracle_string(&["khop", "digest"], &a[2]),
            "oracle(khop=1,digest=0)"
        );
        // The string is one the policy parser accepts.
        let p: autoloc::placement::Policy =
            oracle_string(&["khop", "digest"], &a[1]).parse().unwrap();
        assert_eq!(p.name(), "oracle");
    }

    #[test]
    fn convergence_after_a_step() {
        // The trailing mean of 3 reaches 95..105 at the fifth bucket (90, 99, 101: 96.7).
        let phase = [
            40.0, 70.0, 90.0, 99.0, 101.0, 100.0, 98.0, 102.0, 100.0, 100.0,
        ];
        assert_eq!(convergence_ms(&phase, 100), Some(500));
        // Every bucket in band from the fourth on.
        assert_eq!(stays_within_ms(&phase, 100), Some(300));
        // Already steady: the first bucket.
        assert_eq!(convergence_ms(&[50.0; 10], 100), Some(100));
        assert_eq!(stays_within_ms(&[50.0; 10], 100), Some(0));
        // A later dip counts for the strict reading only.
        let mut late = [100.0; 10];
        late[4] = 80.0;
        assert_eq!(convergence_ms(&late, 100), Some(100));
        assert_eq!(stays_within_ms(&late, 100), Some(500));
        assert_eq!(convergence_ms(&[], 100), None);
        assert_eq!(convergence_ms(&[0.0, 0.0], 100), None);
        assert_eq!(stays_within_ms(&[0.0, 0.0], 100), None);
        // The last bucket out of band: never settled.
        assert_eq!(
            stays_within_ms(&[100.0, 100.0, 100.0, 100.0, 60.0], 100),
            None
        );
        // Never near its steady level: a ramp whose tail mean the trailing mean never meets.
        assert_eq!(convergence_ms(&[10.0, 10.0, 10.0, 10.0, 200.0], 100), None);
    }

    #[test]
    fn moving_average_trails() {
        assert_eq!(
            moving_average(&[3.0, 6.0, 9.0, 0.0], 3),
            vec![3.0, 4.5, 6.0, 5.0]
        );
        assert_eq!(moving_average(&[1.0, 2.0], 1), vec![1.0, 2.0]);
    }

    #[test]
    fn steady_is_the_trailing_mean() {
        let phase = [0.0, 0.0, 0.0, 10.0, 20.0];
        // 40% of 5 buckets: the last 2.
        assert_eq!(steady_level(&phase), Some(15.0));
        assert_eq!(steady_level(&[7.0]), Some(7.0));
    }
}
