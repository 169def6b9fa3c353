//! What every benchmark binary shares: the measuring loop, latency histograms in nanoseconds,
//! result rows, the machine, checks against targets, the table, the JSON report, the plots'
//! colours and the SVG latency plot; pinning, progress lines, the load average, a RESP connection.
//!
//! A benchmark is a list of cells (one transport, one operation, one value size, one number of
//! requests in flight). [`measure`] runs a cell's step for a warm-up, then for a fixed duration,
//! recording each request's latency; [`measure_interleaved`] runs cells to be compared in turns;
//! [`row`] turns the histogram into a [`Row`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use autoloc_dataplane::resp::DEFAULT_TIMEOUT;
use autoloc_dataplane::{Connection, RedisUrl};
use hdrhistogram::Histogram;
use plotters::style::RGBColor;
use serde::{Deserialize, Serialize};

use crate::table::Table;

/// Highest latency a histogram records (longer ones are clamped to it): 100 s.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits, 1 ns to [`MAX_LATENCY_NS`].
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Records `d` in `h` (clamped to the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).clamp(1, MAX_LATENCY_NS));
}

/// How long a cell warms up and then measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Steps run first and not recorded.
    pub warmup: Duration,
    /// Steps recorded for this long (the last step may end a little later).
    pub duration: Duration,
}

/// What one cell measured: every request's latency, how many requests, and the wall time.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Latency of each request, ns.
    pub latency: Histogram<u64>,
    /// Requests completed while measuring.
    pub ops: u64,
    /// Wall time of the measured steps.
    pub elapsed: Duration,
}

/// Runs `step` for `plan.warmup`, then for `plan.duration`, and returns what the second phase
/// recorded. Each `step` records the latency of every request it makes and returns how many it
/// completed.
pub fn measure<F>(plan: Plan, mut step: F) -> anyhow::Result<Measured>
where
    F: FnMut(&mut Histogram<u64>) -> anyhow::Result<u64>,
{
    let mut scratch = histogram();
    let warm_until = Instant::now() + plan.warmup;
    while Instant::now() < warm_until {
        step(&mut scratch)?;
    }
    let mut latency = histogram();
    let mut ops = 0;
    let started = Instant::now();
    let until = started + plan.duration;
    loop {
        ops += step(&mut latency)?;
        if Instant::now() >= until {
            break;
        }
    }
    Ok(Measured {
        latency,
        ops,
        elapsed: started.elapsed(),
    })
}

/// A step of [`measure_interleaved`]: like [`measure`]'s.
pub type Step<'a> = &'a mut dyn FnMut(&mut Histogram<u64>) -> anyhow::Result<u64>;

/// Runs `steps` (the cells to compare) in turns of `slice` each, round robin: warm-up turns
/// for `plan.warmup`, then measured turns until each has run `plan.duration`; returns what each
/// recorded, in order, its `elapsed` the sum of its measured turns. On a machine whose speed
/// drifts (other tenants, frequency), a phase then slows every cell alike instead of the one
/// it fell on: one after the other, two twins' ratio moved between 1.3x and 1.9x from run to
/// run.
pub fn measure_interleaved(
    plan: Plan,
    slice: Duration,
    steps: &mut [Step<'_>],
) -> anyhow::Result<Vec<Measured>> {
    let mut scratch = histogram();
    let warm_until = Instant::now() + plan.warmup;
    while Instant::now() < warm_until {
        for step in steps.iter_mut() {
            let until = Instant::now() + slice;
            while Instant::now() < until {
                step(&mut scratch)?;
            }
        }
    }
    let mut out: Vec<Measured> = steps
        .iter()
        .map(|_| Measured {
            latency: histogram(),
            ops: 0,
            elapsed: Duration::ZERO,
        })
        .collect();
    while out.iter().any(|m| m.elapsed < plan.duration) {
        for (step, m) in steps.iter_mut().zip(&mut out) {
            if m.elapsed >= plan.duration {
                continue;
            }
            let started = Instant::now();
            let until = started + slice.min(plan.duration - m.elapsed);
            loop {
                m.ops += step(&mut m.latency)?;
                if Instant::now() >= until {
                    break;
                }
            }
            m.elapsed += started.elapsed();
        }
    }
    Ok(out)
}

/// One measured cell: the row of the table and of the JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The data plane, or the floor measured (e.g. `ring`).
    pub transport: String,
    /// The operation, e.g. `get`.
    pub op: String,
    /// Bytes of the value read (0 where the operation has none).
    pub value_bytes: u64,
    /// Requests in flight from the one client thread.
    pub in_flight: u32,
    /// Median latency per request, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Requests completed per second of wall time.
    pub ops_per_s: f64,
}

/// What a row is of: transport, operation, value size, requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell<'a> {
    /// See [`Row::transport`].
    pub transport: &'a str,
    /// See [`Row::op`].
    pub op: &'a str,
    /// See [`Row::value_bytes`].
    pub value_bytes: u64,
    /// See [`Row::in_flight`].
    pub in_flight: u32,
}

/// The row of `cell` from what was measured: percentiles of the histogram, and throughput.
pub fn row(cell: Cell<'_>, m: &Measured) -> Row {
    let secs = m.elapsed.as_secs_f64();
    Row {
        transport: cell.transport.to_string(),
        op: cell.op.to_string(),
        value_bytes: cell.value_bytes,
        in_flight: cell.in_flight,
        p50_ns: m.latency.value_at_quantile(0.50),
        p99_ns: m.latency.value_at_quantile(0.99),
        p999_ns: m.latency.value_at_quantile(0.999),
        ops_per_s: if secs > 0.0 { m.ops as f64 / secs } else { 0.0 },
    }
}

/// Finds the row of `cell` in `rows`.
pub fn find<'r>(rows: &'r [Row], cell: Cell<'_>) -> Option<&'r Row> {
    rows.iter().find(|r| {
        r.transport == cell.transport
            && r.op == cell.op
            && r.value_bytes == cell.value_bytes
            && r.in_flight == cell.in_flight
    })
}

/// The machine a run measured, stated with every number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Cores this process may run on.
    pub cores: usize,
    /// The CPU's model name, from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release (`uname -r`), from /proc/sys/kernel/osrelease.
    pub kernel: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

/// The `--json` report: the machine, the parameters, the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran (name to value, as printed).
    pub parameters: BTreeMap<String, String>,
    /// What it measured.
    pub rows: Vec<Row>,
}

/// Writes `report` as pretty JSON (and a final newline) to `path`.
pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// A plain RESP connection to the Redis at `url`.
pub fn connect(url: &str) -> anyhow::Result<Connection> {
    let parsed: RedisUrl = url.parse().with_context(|| format!("redis URL {url}"))?;
    Connection::connect(&parsed, DEFAULT_TIMEOUT).with_context(|| format!("connect to {url}"))
}

/// Says on stderr what is measured next.
pub fn progress(what: &str) {
    eprintln!("measuring {what}...");
}

/// Pins the calling thread to `core`; false (with a warning) if that failed, e.g. no such core.
///
/// The core is named directly rather than looked up in `core_affinity::get_core_ids`, which
/// lists only the cores of the caller's current mask: a thread spawned by a pinned thread would
/// find just its parent's core there.
pub fn pin(core: usize) -> bool {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !ok {
        eprintln!("warning: could not pin a thread to core {core}; it runs unpinned");
    }
    ok
}

/// The 1, 5 and 15 minute load averages, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Prints the machine and the parameters a benchmark ran with (every number comes with them).
pub fn print_header<K: std::fmt::Display, V: std::fmt::Display>(
    machine: &Machine,
    params: impl IntoIterator<Item = (K, V)>,
) {
    println!(
        "machine: {} cores, {}, kernel {}",
        machine.cores, machine.cpu, machine.kernel
    );
    println!("parameters:");
    for (k, v) in params {
        println!("  {k}: {v}");
    }
    println!();
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut t = Table::new()
        .left("transport", 13)
        .left("op", 9)
        .right("value_bytes", 11)
        .right("in_flight", 9)
        .right("p50_ns", 11)
        .right("p99_ns", 11)
        .right("p999_ns", 11)
        .right("ops_per_s", 13);
    for r in rows {
        t.row(&[
            &r.transport,
            &r.op,
            &r.value_bytes,
            &r.in_flight,
            &r.p50_ns,
            &r.p99_ns,
            &r.p999_ns,
            &format!("{:.0}", r.ops_per_s),
        ]);
    }
    t.to_string()
}

/// Which side of a target a measured value must be on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

/// A target and what was measured against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is compared, e.g. `shm GET 64 B p50 / ring ping-pong p50`.
    pub name: String,
    /// The measured value; `None` if a cell it needs was not measured.
    pub value: Option<f64>,
    /// The target.
    pub bound: Bound,
    /// Unit of the value and the target, e.g. `ns` or `x`.
    pub unit: &'static str,
}

/// The outcome of a [`Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target is met.
    Pass,
    /// The target is missed.
    Fail,
    /// A cell the check needs was not measured.
    Skipped,
}

impl Check {
    /// Whether the measured value meets the target.
    pub fn verdict(&self) -> Verdict {
        match (self.value, self.bound) {
            (None, _) => Verdict::Skipped,
            (Some(v), Bound::AtMost(t)) if v <= t => Verdict::Pass,
            (Some(v), Bound::AtLeast(t)) if v >= t => Verdict::Pass,
            (Some(_), _) => Verdict::Fail,
        }
    }

    /// One line: verdict, name, value, target.
    pub fn line(&self) -> String {
        let verdict = match self.verdict() {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "SKIP",
        };
        let (op, target) = match self.bound {
            Bound::AtMost(t) => ("<=", t),
            Bound::AtLeast(t) => (">=", t),
        };
        let value = self
            .value
            .map_or_else(|| "not measured".to_string(), |v| fmt_value(v, self.unit));
        format!(
            "{verdict}  {:<58} {:>16}   target {op} {}",
            self.name,
            value,
            fmt_value(target, self.unit)
        )
    }
}

/// A [`Check`] in a `--json` report: its target as text (`<= 1.5`), its verdict in capitals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonCheck {
    /// See [`Check::name`].
    pub name: String,
    /// See [`Check::value`].
    pub value: Option<f64>,
    /// `<= t` or `>= t`.
    pub target: String,
    /// `PASS`, `FAIL` or `SKIPPED`.
    pub verdict: String,
}

impl From<&Check> for JsonCheck {
    fn from(c: &Check) -> JsonCheck {
        JsonCheck {
            name: c.name.clone(),
            value: c.value,
            target: match c.bound {
                Bound::AtLeast(t) => format!(">= {t}"),
                Bound::AtMost(t) => format!("<= {t}"),
            },
            verdict: format!("{:?}", c.verdict()).to_uppercase(),
        }
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{v:.2}x"),
        "" => format!("{v:.0}"),
        u => format!("{v:.0} {u}"),
    }
}

/// A short label of a value size: `64 B`, `4 KiB`, `1 MiB`; empty for 0.
pub fn size_label(bytes: u64) -> String {
    match bytes {
        0 => String::new(),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The colours of every plot, in order (matplotlib's `tab10`): series `i` takes
/// `PALETTE[i % PALETTE.len()]`.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One group of bars in a plot: the rows of one operation, size and depth, one per transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Group<'r> {
    /// e.g. `get 64 B x16`.
    pub label: String,
    /// The group's rows, in the order they were measured.
    pub rows: Vec<&'r Row>,
}

/// Groups `rows` by (op, value size, in flight), in order of first appearance.
pub fn groups(rows: &[Row]) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = Vec::new();
    let mut keys: Vec<(&str, u64, u32)> = Vec::new();
    for r in rows {
        let key = (r.op.as_str(), r.value_bytes, r.in_flight);
        match keys.iter().position(|k| *k == key) {
            Some(i) => out[i].rows.push(r),
            None => {
                keys.push(key);
                let size = size_label(r.value_bytes);
                let label = if size.is_empty() {
                    format!("{} x{}", r.op, r.in_flight)
                } else {
                    format!("{} {size} x{}", r.op, r.in_flight)
                };
                out.push(Group {
                    label,
                    rows: vec![r],
                });
            }
        }
    }
    out
}

/// Draws a grouped bar chart of latency as an SVG at `path`: one group per (operation, value
/// size, requests in flight), one bar per transport; the bar is the p50, a whisker reaches the
/// p99; log-scale latency axis. `footnote` (machine, parameters) goes under the chart.
pub fn plot_latency(path: &Path, title: &str, footnote: &str, rows: &[Row]) -> anyhow::Result<()> {
    use plotters::prelude::*;

    anyhow::ensure!(!rows.is_empty(), "nothing to plot");
    let groups = groups(rows);
    let mut transports: Vec<&str> = Vec::new();
    for r in rows {
        if !transports.contains(&r.transport.as_str()) {
            transports.push(&r.transport);
        }
    }
    let color = |t: &str| {
        let i = transports.iter().position(|x| *x == t).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    // Slots along x: one per bar, plus one empty slot between groups.
    let mut bars: Vec<(u32, &Row)> = Vec::new();
    let mut centres: Vec<(u32, &str)> = Vec::new();
    let mut slot = 0u32;
    for g in &groups {
        let first = slot;
        for r in &g.rows {
            bars.push((slot, r));
            slot += 1;
        }
        centres.push(((first + slot - 1) / 2, &g.label));
        slot += 1;
    }
    let slots = slot.max(1);
    let lo = rows.iter().map(|r| r.p50_ns.max(1)).min().unwrap_or(1) as f64;
    let hi = rows
        .iter()
        .map(|r| r.p99_ns.max(r.p50_ns))
        .max()
        .unwrap_or(1) as f64;
    let y_lo = (10f64.powf(lo.log10().floor()) / 2.0).max(1.0);
    let y_hi = 10f64.powf(hi.log10().ceil()).max(y_lo * 10.0) * 1.5;

    let width = (140 + 34 * slots).clamp(900, 2400);
    let root = SVGBackend::new(path, (width, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (chart_area, foot) = root.split_vertically(600);
    foot.draw(&Text::new(
        footnote.to_string(),
        (10, 12),
        ("sans-serif", 13).into_font().color(&BLACK.mix(0.8)),
    ))?;
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(80)
        .build_cartesian_2d((0..slots).into_segmented(), (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(s) => centres
                .iter()
                .find(|(c, _)| c == s)
                .map_or_else(String::new, |(_, l)| l.to_string()),
            _ => String::new(),
        })
        .x_desc("operation, value size, x requests in flight from one client thread")
        .y_desc("latency per request, ns (log scale)")
        .y_label_formatter(&|v| format_ns(*v))
        .draw()?;
    for t in &transports {
        let c = color(t);
        chart
            .draw_series(
                bars.iter()
                    .filter(|(_, r)| r.transport == *t)
                    .map(|(s, r)| {
                        Rectangle::new(
                            [
                                (SegmentValue::Exact(*s), y_lo),
                                (SegmentValue::Exact(*s + 1), r.p50_ns.max(1) as f64),
                            ],
                            c.filled(),
                        )
                    }),
            )?
            .label(format!("{t} p50"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
    }
    chart
        .draw_series(bars.iter().map(|(s, r)| {
            PathElement::new(
                vec![
                    (SegmentValue::CenterOf(*s), r.p50_ns.max(1) as f64),
                    (SegmentValue::CenterOf(*s), r.p99_ns.max(1) as f64),
                ],
                BLACK.stroke_width(2),
            )
        }))?
        .label("p99 (whisker top)")
        .legend(|(x, y)| PathElement::new(vec![(x + 7, y - 7), (x + 7, y + 7)], BLACK));
    chart.draw_series(bars.iter().map(|(s, r)| {
        PathElement::new(
            vec![
                (SegmentValue::Exact(*s), r.p99_ns.max(1) as f64),
                (SegmentValue::Exact(*s + 1), r.p99_ns.max(1) as f64),
            ],
            BLACK.stroke_width(2),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// `850 ns`, `12 us`, `3 ms`: an axis label for a latency.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", trim(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} us", trim(ns / 1e3))
    } else {
        format!("{} ns", trim(ns))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_row(transport: &str, op: &str, bytes: u64, in_flight: u32) -> Row {
        Row {
            transport: transport.into(),
            op: op.into(),
            value_bytes: bytes,
            in_flight,
            p50_ns: 500,
            p99_ns: 900,
            p999_ns: 990,
            ops_per_s: 1e6,
        }
    }

    #[test]
    fn interleaved_cells_take_turns_and_each_measures_its_duration() {
        let plan = Plan {
            warmup: Duration::from_millis(2),
            duration: Duration::from_millis(50),
        };
        // The last cell that ran, and how many times the cell changed.
        let turns = std::cell::Cell::new((0usize, 0usize));
        let step = |i: usize| {
            let turns = &turns;
            move |h: &mut Histogram<u64>| {
                record(h, Duration::from_micros(i as u64 + 1));
                let (last, switches) = turns.get();
                turns.set((i, switches + usize::from(last != i)));
                Ok(1)
            }
        };
        let (mut a, mut b) = (step(0), step(1));
        let m = measure_interleaved(plan, Duration::from_millis(1), &mut [&mut a, &mut b]).unwrap();
        for (i, m) in m.iter().enumerate() {
            assert!(m.elapsed >= plan.duration, "{:?}", m.elapsed);
            assert_eq!(m.latency.len(), m.ops);
            // Each cell's histogram holds its own step's latencies only.
            let want = 1000 * (i as u64 + 1);
            assert!(m.latency.min().abs_diff(want) < 10, "{}", m.latency.min());
            assert!(m.latency.max().abs_diff(want) < 10, "{}", m.latency.max());
        }
        // Turns, not one cell then the other: about 50 turns of 1 ms each while measuring (fewer
        // only if preemptions stretch them); the warm-up alone makes two or three switches.
        let switches = turns.get().1;
        assert!(switches >= 10, "{switches} switches");
    }

    #[test]
    fn row_has_percentiles_and_throughput() {
        let mut latency = histogram();
        for ns in 1..=1000u64 {
            latency.record(ns * 1000).unwrap();
        }
        let m = Measured {
            latency,
            ops: 1000,
            elapsed: Duration::from_millis(500),
        };
        let cell = Cell {
            transport: "shm",
            op: "get",
            value_bytes: 64,
            in_flight: 16,
        };
        let r = row(cell, &m);
        // 3 significant digits: within 0.1% of the exact percentile.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(r.p50_ns, 500_000), "{r:?}");
        assert!(near(r.p99_ns, 990_000), "{r:?}");
        assert!(near(r.p999_ns, 999_000), "{r:?}");
        assert_eq!(r.ops_per_s, 2000.0);
        assert_eq!((r.transport.as_str(), r.op.as_str()), ("shm", "get"));
        assert_eq!((r.value_bytes, r.in_flight), (64, 16));
        assert_eq!(find(std::slice::from_ref(&r), cell), Some(&r));
    }

    #[test]
    fn record_clamps_out_of_range() {
        let mut h = histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(1000));
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_NS);
    }

    #[test]
    fn measure_warms_up_then_counts() {
        let plan = Plan {
            warmup: Duration::from_millis(5),
            duration: Duration::from_millis(20),
        };
        let m = measure(plan, |h| {
            record(h, Duration::from_nanos(100));
            Ok(2)
        })
        .unwrap();
        assert_eq!(m.ops, 2 * m.latency.len());
        assert!(m.elapsed >= plan.duration);
    }

    #[test]
    fn report_json_shape() {
        let report = Report {
            machine: Machine {
                cores: 2,
                cpu: "test cpu".into(),
                kernel: "6.1.0".into(),
            },
            parameters: BTreeMap::from([("duration_ms".to_string(), "700".to_string())]),
            rows: vec![sample_row("shm", "get", 64, 1)],
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["machine"]["kernel"], "6.1.0");
        let row = v["rows"][0].as_object().unwrap();
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "in_flight",
                "op",
                "ops_per_s",
                "p50_ns",
                "p999_ns",
                "p99_ns",
                "transport",
                "value_bytes"
            ]
        );
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn checks_judge_both_bounds() {
        let check = |value, bound| Check {
            name: "c".into(),
            value,
            bound,
            unit: "ns",
        };
        assert_eq!(
            check(Some(900.0), Bound::AtMost(1000.0)).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            check(Some(1100.0), Bound::AtMost(1000.0)).verdict(),
            Verdict::Fail
        );
        assert_eq!(
            check(Some(40.0), Bound::AtLeast(40.0)).verdict(),
            Verdict::Pass
        );
        assert_eq!(check(None, Bound::AtLeast(1.0)).verdict(), Verdict::Skipped);
        assert!(check(Some(1100.0), Bound::AtMost(1000.0))
            .line()
            .starts_with("FAIL"));
    }

    #[test]
    fn groups_keep_first_appearance_order() {
        let rows = [
            sample_row("ring", "pingpong", 64, 1),
            sample_row("shm", "get", 64, 1),
            sample_row("shm", "get", 4096, 1),
            sample_row("tcp", "get", 64, 1),
            sample_row("shm", "khop", 0, 16),
        ];
        let g = groups(&rows);
        let labels: Vec<&str> = g.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "pingpong 64 B x1",
                "get 64 B x1",
                "get 4 KiB x1",
                "khop x16"
            ]
        );
        assert_eq!(g[1].rows.len(), 2);
        assert_eq!(g[1].rows[1].transport, "tcp");
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(0), "");
        assert_eq!(format_ns(850.0), "850 ns");
        assert_eq!(format_ns(12_000.0), "12 us");
        assert_eq!(format_ns(2_500_000.0), "2.5 ms");
    }

    #[test]
    fn plot_writes_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let rows = [
            sample_row("shm", "get", 64, 1),
            sample_row("resp", "get", 64, 1),
        ];
        plot_latency(&path, "t", "machine", &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("get 64 B x1"));
    }
}
