//! The soak's plot, an SVG written by hand: redis-server's resident memory, operations and
//! errors per second, and PING latency (max and p99 per second, log scale) over the run, one
//! panel each on a shared time axis, with a line at every fault.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::faults::FaultKind;
use super::report::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 170.0;
const GAP: f64 = 46.0;
const TOP: f64 = 50.0;

fn color(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::KillWorker => "#ff7f0e",
        FaultKind::KillRedis => "#d62728",
        FaultKind::AclRestrict => "#9467bd",
        FaultKind::AclDelete => "#8c564b",
        FaultKind::JunkTcp => "#7f7f7f",
        FaultKind::UnauthTcp => "#bcbd22",
        FaultKind::ForeignShm => "#17becf",
        FaultKind::JunkResp => "#e377c2",
    }
}

/// A "nice" step for about `n` ticks over `0..max`.
fn step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// One panel: a y range (linear or log10), its box, and the series drawn in it.
struct Panel {
    top: f64,
    y_min: f64,
    y_max: f64,
    log: bool,
}

impl Panel {
    fn y(&self, v: f64) -> f64 {
        let f = if self.log {
            let (lo, hi) = (self.y_min.log10(), self.y_max.log10());
            (v.max(self.y_min).log10() - lo) / (hi - lo)
        } else {
            (v - self.y_min) / (self.y_max - self.y_min)
        };
        self.top + PANEL * (1.0 - f.clamp(0.0, 1.0))
    }
}

fn polyline(svg: &mut String, points: &[(f64, f64)], stroke: &str, width: f64) {
    if points.is_empty() {
        return;
    }
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{stroke}" stroke-width="{width}" points="{}"/>"#,
        pts.join(" ")
    );
}

/// Draws the panel's frame, title and y ticks.
fn frame(svg: &mut String, p: &Panel, title: &str, ticks: &[f64]) {
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL}" fill="none" stroke="#444"/>"##,
        p.top,
        WIDTH - LEFT - RIGHT
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{title}</text>"#,
        p.top - 8.0
    );
    for &v in ticks {
        let y = p.y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(v)
        );
    }
}

fn linear_ticks(max: f64) -> (f64, Vec<f64>) {
    let s = step(max, 4.0);
    let top = (max / s).ceil().max(1.0) * s;
    let ticks = (0..=((top / s).round() as usize))
        .map(|i| i as f64 * s)
        .collect();
    (top, ticks)
}

/// Writes the plot of `report` to `path`.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(path, svg(report)).with_context(|| format!("write {}", path.display()))
}

/// The plot of `report` as SVG text.
pub fn svg(report: &Report) -> String {
    let t_max = (report.load_started_s + report.seconds).max(1.0);
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * (t / t_max).clamp(0.0, 1.0);
    let height = TOP + 3.0 * (PANEL + GAP) + 60.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="16">AutoLoc soak: {:.0} s, {} workers over {}, seed {}: {}</text>"#,
        report.seconds,
        report.parameters.get("workers").map_or("?", String::as_str),
        report.transports.join("/"),
        report.parameters.get("seed").map_or("?", String::as_str),
        if report.passed { "PASS" } else { "FAIL" }
    );

    // 1. Resident memory.
    let rss: Vec<(f64, f64)> = report
        .rss
        .iter()
        .map(|s| (s.t as f64, s.rss_kib as f64 / 1024.0))
        .collect();
    let (top, ticks) = linear_ticks(rss.iter().map(|p| p.1).fold(1.0, f64::max));
    let p1 = Panel {
        top: TOP,
        y_min: 0.0,
        y_max: top,
        log: false,
    };
    frame(&mut svg, &p1, "redis-server resident memory, MiB", &ticks);
    let pts: Vec<(f64, f64)> = rss.iter().map(|(t, v)| (x(*t), p1.y(*v))).collect();
    polyline(&mut svg, &pts, "#1f77b4", 2.0);

    // 2. Operations and errors per second.
    let ops = &report.ops_per_s;
    let max = ops
        .iter()
        .map(|s| s.ok.max(s.errors) as f64)
        .fold(1.0, f64::max);
    let (top, ticks) = linear_ticks(max);
    let p2 = Panel {
        top: TOP + PANEL + GAP,
        y_min: 0.0,
        y_max: top,
        log: false,
    };
    frame(
        &mut svg,
        &p2,
        "operations per second (blue: done, red: failed)",
        &ticks,
    );
    let ok: Vec<(f64, f64)> = ops
        .iter()
        .map(|s| (x(s.t as f64), p2.y(s.ok as f64)))
        .collect();
    let err: Vec<(f64, f64)> = ops
        .iter()
        .map(|s| (x(s.t as f64), p2.y(s.errors as f64)))
        .collect();
    polyline(&mut svg, &ok, "#1f77b4", 2.0);
    polyline(&mut svg, &err, "#d62728", 1.5);

    // 3. PING latency, log scale.
    let secs: Vec<_> = report
        .ping
        .seconds
        .iter()
        .filter(|s| s.answered > 0)
        .collect();
    let hi_ms = secs
        .iter()
        .map(|s| s.max_us as f64 / 1000.0)
        .fold(1.0, f64::max);
    let y_max = 10f64.powf(hi_ms.log10().ceil());
    let p3 = Panel {
        top: TOP + 2.0 * (PANEL + GAP),
        y_min: 0.01,
        y_max,
        log: true,
    };
    let ticks: Vec<f64> = (-2..=(y_max.log10().round() as i32))
        .map(|e| 10f64.powi(e))
        .collect();
    frame(
        &mut svg,
        &p3,
        "PING latency from a plain RESP client, ms (log; black: max per second, grey: p99)",
        &ticks,
    );
    let max: Vec<(f64, f64)> = secs
        .iter()
        .map(|s| (x(s.t as f64), p3.y(s.max_us as f64 / 1000.0)))
        .collect();
    let p99: Vec<(f64, f64)> = secs
        .iter()
        .map(|s| (x(s.t as f64), p3.y(s.p99_us.max(1) as f64 / 1000.0)))
        .collect();
    polyline(&mut svg, &p99, "#999", 1.5);
    polyline(&mut svg, &max, "#000", 1.5);

    // The time axis, under the last panel.
    let bottom = p3.top + PANEL;
    let s = step(t_max, 10.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            x(t),
            bottom + 16.0,
            label(t)
        );
        t += s;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">seconds into the run (shaded: idle, before the workers start)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 32.0
    );

    // The idle baseline before the load, shaded.
    let idle_w = x(report.load_started_s) - LEFT;
    for p in [&p1, &p2, &p3] {
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{}" width="{idle_w:.1}" height="{PANEL}" fill="#000" opacity="0.06"><title>idle, before the workers start</title></rect>"##,
            p.top
        );
    }

    // Faults: a line through every panel; a cross on top of one that did not end as it must.
    for f in &report.faults {
        let fx = x(f.t);
        for p in [&p1, &p2, &p3] {
            let _ = writeln!(
                svg,
                r#"<line x1="{fx:.1}" x2="{fx:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-dasharray="4,3" opacity="0.8"><title>{} at {:.1} s</title></line>"#,
                p.top,
                p.top + PANEL,
                color(f.kind),
                f.kind.as_str(),
                f.t
            );
        }
        if !f.ok {
            let _ = writeln!(
                svg,
                r##"<text x="{fx:.1}" y="{:.1}" font-size="14" fill="#d62728" text-anchor="middle">x</text>"##,
                p1.top + 12.0
            );
        }
    }
    let mut lx = LEFT;
    let ly = bottom + 52.0;
    for k in FaultKind::ALL {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            lx + 16.0,
            color(k),
            lx + 20.0,
            ly + 4.0,
            k.as_str()
        );
        lx += 108.0;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(step(100.0, 4.0), 50.0);
        assert_eq!(step(7.0, 4.0), 2.0);
        let (top, ticks) = linear_ticks(93.0);
        assert_eq!(top, 100.0);
        assert_eq!(ticks, vec![0.0, 50.0, 100.0]);
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(2.5), "2.5");
        assert_eq!(label(300.0), "300");
    }

    #[test]
    fn a_log_panel_maps_decades_evenly() {
        let p = Panel {
            top: 0.0,
            y_min: 0.01,
            y_max: 100.0,
            log: true,
        };
        assert_eq!(p.y(100.0), 0.0);
        assert_eq!(p.y(0.01), PANEL);
        assert!((p.y(1.0) - PANEL / 2.0).abs() < 1e-9);
    }
}
