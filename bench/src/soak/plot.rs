//! The soak's plot, an SVG drawn with plotters as the other benchmarks' plots are: redis-server's
//! resident memory, operations and errors per second, and PING latency (max and p99 per second,
//! log scale) over the run, one panel each on the same time axis, the idle start shaded, a dashed
//! line at every fault (a red x above one that did not end as it must) and a legend of the kinds.

use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::faults::FaultKind;
use super::report::Report;
use crate::harness::PALETTE;

const WIDTH: u32 = 960;
/// The title, three panels, and the legend of fault kinds under them (what is left).
const HEIGHT: u32 = 750;
/// Height of each panel, its caption and axis labels included.
const PANEL: u32 = 220;
/// The p99 line of the PING panel.
const GREY: RGBColor = RGBColor(153, 153, 153);

/// The colour of a fault kind's lines.
fn colour(kind: FaultKind) -> RGBColor {
    PALETTE[match kind {
        FaultKind::KillWorker => 1,
        FaultKind::KillRedis => 3,
        FaultKind::AclRestrict => 4,
        FaultKind::AclDelete => 5,
        FaultKind::JunkResp => 6,
        FaultKind::JunkTcp => 7,
        FaultKind::UnauthTcp => 8,
        FaultKind::ForeignShm => 9,
    }]
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

/// The top of a linear axis from 0 that holds `max`: a whole number of nice steps (about 4).
fn nice_top(max: f64) -> f64 {
    let s = step(max, 4.0);
    (max / s).ceil().max(1.0) * s
}

/// An axis label: `0`, `300`, `2.5`, `0.05`.
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

/// Writes the plot of `report` to `path`.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, report)?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let title = format!(
        "AutoLoc soak: {:.0} s, {} workers over {}, seed {}: {}",
        report.seconds,
        report.parameters.get("workers").map_or("?", String::as_str),
        report.transports.join("/"),
        report.parameters.get("seed").map_or("?", String::as_str),
        if report.passed { "PASS" } else { "FAIL" }
    );
    let body = root.titled(&title, ("sans-serif", 18))?;
    let (panels, legend) = body.split_vertically(3 * PANEL);
    let panels = panels.split_evenly((3, 1));
    let t_max = (report.load_started_s + report.seconds).max(1.0);

    // 1. Resident memory, MiB.
    let rss: Vec<(f64, f64)> = report
        .rss
        .iter()
        .map(|s| (s.t as f64, s.rss_kib as f64 / 1024.0))
        .collect();
    let top = nice_top(rss.iter().map(|p| p.1).fold(1.0, f64::max));
    let mut chart = panel(
        &panels[0],
        "redis-server resident memory, MiB",
        t_max,
        0.0..top,
        None,
    )?;
    annotate(&mut chart, report, 0.0..top, true)?;
    chart.draw_series(line(rss, PALETTE[0]))?;

    // 2. Operations and errors per second.
    let ops = &report.ops_per_s;
    let top = nice_top(
        ops.iter()
            .map(|s| s.ok.max(s.errors) as f64)
            .fold(1.0, f64::max),
    );
    let mut chart = panel(
        &panels[1],
        "operations per second (blue: done, red: failed)",
        t_max,
        0.0..top,
        None,
    )?;
    annotate(&mut chart, report, 0.0..top, false)?;
    let ok = ops.iter().map(|s| (s.t as f64, s.ok as f64));
    chart.draw_series(line(ok.collect(), PALETTE[0]))?;
    let failed = ops.iter().map(|s| (s.t as f64, s.errors as f64));
    chart.draw_series(line(failed.collect(), PALETTE[3]))?;

    // 3. PING latency, ms, log scale from 10 us to the decade above the slowest.
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
    let y = 0.01..10f64.powf(hi_ms.log10().ceil());
    let mut chart = panel(
        &panels[2],
        "PING latency from a plain RESP client, ms (log; black: max per second, grey: p99)",
        t_max,
        y.clone().log_scale(),
        Some("seconds into the run (shaded: idle, before the workers start)"),
    )?;
    annotate(&mut chart, report, y.clone(), false)?;
    let ms = |us: u64| us as f64 / 1000.0;
    let p99 = secs
        .iter()
        .map(|s| (s.t as f64, ms(s.p99_us.max(1)).max(y.start)));
    chart.draw_series(line(p99.collect(), GREY))?;
    let max = secs.iter().map(|s| (s.t as f64, ms(s.max_us).max(y.start)));
    chart.draw_series(line(max.collect(), BLACK))?;

    // The legend of fault kinds: a dashed line of each kind's colour and its name.
    let mut x = 70;
    for k in FaultKind::ALL {
        let c = colour(k);
        legend.draw(&PathElement::new(
            vec![(x, 20), (x + 16, 20)],
            c.stroke_width(3),
        ))?;
        legend.draw(&Text::new(
            k.as_str(),
            (x + 20, 20),
            ("sans-serif", 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += 108;
    }
    Ok(())
}

fn caption_font() -> TextStyle<'static> {
    ("sans-serif", 14).into_font().style(FontStyle::Bold).into()
}

/// A panel over `0..t_max` seconds and `y` with its caption and mesh.
fn panel<'a, DB, Y>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    t_max: f64,
    y: Y,
    x_desc: Option<&str>,
) -> anyhow::Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y::CoordDescType>>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, caption_font())
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| label(*v))
        .x_label_formatter(&|v| label(*v));
    if let Some(d) = x_desc {
        mesh.x_desc(d);
    }
    mesh.draw()?;
    Ok(chart)
}

/// The idle start shaded, a dashed line at every fault across `y`; with `crosses`, a red x near
/// the top above every fault that did not end as it must.
fn annotate<DB, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
    report: &Report,
    y: Range<f64>,
    crosses: bool,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    let idle = Rectangle::new(
        [(0.0, y.start), (report.load_started_s, y.end)],
        BLACK.mix(0.06).filled(),
    );
    chart.draw_series(std::iter::once(idle))?;
    for f in &report.faults {
        chart.draw_series(fault_line(f.t, y.clone(), colour(f.kind)))?;
    }
    if crosses {
        let at = y.start + 0.92 * (y.end - y.start);
        chart.draw_series(report.faults.iter().filter(|f| !f.ok).map(|f| {
            Text::new(
                "x",
                (f.t, at),
                ("sans-serif", 16)
                    .into_font()
                    .color(&PALETTE[3])
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )
        }))?;
    }
    Ok(())
}

/// A series' line, 2 px wide.
fn line(points: Vec<(f64, f64)>, c: RGBColor) -> std::iter::Once<PathElement<(f64, f64)>> {
    std::iter::once(PathElement::new(points, c.stroke_width(2)))
}

/// A dashed vertical line at `t` across `y`.
fn fault_line(
    t: f64,
    y: Range<f64>,
    c: RGBColor,
) -> std::iter::Once<DashedPathElement<std::vec::IntoIter<(f64, f64)>, u32>> {
    let points = vec![(t, y.start), (t, y.end)];
    std::iter::once(DashedPathElement::new(
        points,
        4,
        3,
        c.mix(0.8).stroke_width(1),
    ))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(step(100.0, 4.0), 50.0);
        assert_eq!(step(7.0, 4.0), 2.0);
        assert_eq!(nice_top(93.0), 100.0);
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(2.5), "2.5");
        assert_eq!(label(300.0), "300");
    }

    #[test]
    fn the_plot_has_every_panel_and_fault() {
        use crate::harness::Machine;
        use crate::soak::probe::{PingSecond, RssSample};
        use crate::soak::report::{FaultRecord, OpsSecond};

        let fault = |t: f64, kind, ok| FaultRecord {
            t,
            kind,
            ok,
            detail: String::new(),
        };
        let report = Report {
            passed: false,
            failures: vec!["a write lost".into()],
            machine: Machine::detect(),
            parameters: [("workers", "2"), ("seed", "7")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            transports: vec!["shm".into(), "tcp".into()],
            skipped_transports: Vec::new(),
            load_started_s: 2.0,
            seconds: 10.0,
            operations: Default::default(),
            writes: Default::default(),
            leaks: Default::default(),
            redis: Default::default(),
            workers: Default::default(),
            faults: vec![
                fault(3.5, FaultKind::KillRedis, true),
                fault(6.0, FaultKind::JunkTcp, false),
            ],
            ping: crate::soak::report::PingReport {
                seconds: (0..12)
                    .map(|t| PingSecond {
                        t,
                        answered: 900,
                        max_us: 500 + 100 * t,
                        p99_us: 200,
                        ..PingSecond::default()
                    })
                    .collect(),
                ..Default::default()
            },
            rss: (0..12)
                .map(|t| RssSample {
                    t,
                    pid: 1,
                    rss_kib: 20_000 + 100 * t,
                })
                .collect(),
            ops_per_s: (2..12)
                .map(|t| OpsSecond {
                    t,
                    ok: 1000,
                    errors: t % 3,
                })
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.svg");
        write(&path, &report).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in [
            "AutoLoc soak: 10 s, 2 workers over shm/tcp, seed 7: FAIL",
            "redis-server resident memory, MiB",
            "operations per second",
            "PING latency",
            "seconds into the run",
            "kill-redis",
            "foreign-shm",
        ] {
            assert!(svg.contains(text), "no {text:?}");
        }
        // The junk-tcp fault ended wrong: a red x.
        assert!(svg.contains("fill=\"#D62728\">\nx\n</text>"), "no x");
    }

    #[test]
    fn fault_colours_are_the_palette_and_distinct() {
        let mut seen: Vec<RGBColor> = FaultKind::ALL.iter().map(|&k| colour(k)).collect();
        assert_eq!(colour(FaultKind::KillRedis), RGBColor(214, 39, 40));
        seen.dedup();
        assert_eq!(seen.len(), FaultKind::ALL.len());
    }
}
