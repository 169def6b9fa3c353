//! Prints the `ci/demo` comparison table from `batch`/`redisclient` JSON reports.
//!
//! `demo-table "LABEL=FILE" ...`: the first report is compared with every other one; exits
//! non-zero if the reports' result checksums differ (the placements disagreed).

use anyhow::{bail, Context};
use autoloc_bench::table::Table;
use clap::Parser;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    about = "The ci/demo comparison table from batch/redisclient --json reports: the first \
             compared with every other; fails if their result checksums differ"
)]
struct Args {
    /// A report and the label of its row (the first is the one compared with the others).
    #[arg(value_name = "LABEL=FILE", required = true, num_args = 2.., value_parser = labelled)]
    reports: Vec<(String, String)>,
}

/// `LABEL=FILE` split at its first `=`.
fn labelled(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(label, path)| (label.to_string(), path.to_string()))
        .ok_or_else(|| "arguments are LABEL=FILE".to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for (label, path) in args.reports {
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{path} is not a batch --json report"))?;
        rows.push((label, v));
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let l = |v: &Value, k: &str| v["latency_us"][k].as_f64().unwrap_or(f64::NAN);
    let mut t = Table::markdown()
        .left("command", 38)
        .left("placement", 11)
        .left("transport", 9)
        .right("ops/s", 9)
        .right("p50 us", 9)
        .right("p99 us", 9)
        .right("p99.9 us", 9)
        .right("errors", 6)
        .right("round trips", 11);
    for (label, v) in &rows {
        t.row(&[
            label,
            &v["placement"].as_str().unwrap_or("?"),
            &v["transport"].as_str().unwrap_or("?"),
            &format!("{:.0}", f(v, "throughput_per_s")),
            &format!("{:.1}", l(v, "p50")),
            &format!("{:.1}", l(v, "p99")),
            &format!("{:.1}", l(v, "p999")),
            &v["errors"].as_u64().unwrap_or(0),
            &v["round_trips"].as_u64().unwrap_or(0),
        ]);
    }
    println!("{t}");
    let (first_label, first) = &rows[0];
    for (label, v) in &rows[1..] {
        println!(
            "{first_label} / {label}: throughput {:.2}x, p50 latency {:.2}x lower",
            f(first, "throughput_per_s") / f(v, "throughput_per_s"),
            l(v, "p50") / l(first, "p50")
        );
    }
    let checksums: Vec<&str> = rows
        .iter()
        .map(|(_, v)| v["results_checksum"].as_str().unwrap_or(""))
        .collect();
    if checksums.windows(2).any(|w| w[0] != w[1]) {
        bail!("result checksums differ between placements: {checksums:?}");
    }
    println!(
        "results identical on every placement (checksum {})",
        checksums[0]
    );
    Ok(())
}

#[cfg(test)]
mod args_tests {
    use super::*;
    use autoloc_bench::args::parse_line;

    #[test]
    fn reports_are_labelled_files() {
        let a: Args = parse_line("demo-table storage=out/storage.json compute=out/compute.json");
        let labelled = |l: &str, f: &str| (l.to_string(), f.to_string());
        assert_eq!(a.reports[0], labelled("storage", "out/storage.json"));
        // A label may hold spaces and dashes (ci/demo's do).
        let argv = [
            "demo-table",
            "batch khop 1 1000 --placement storage=s.json",
            "r=r.json",
        ];
        let a = Args::try_parse_from(argv).unwrap();
        assert_eq!(a.reports[0].0, "batch khop 1 1000 --placement storage");
        assert!(Args::try_parse_from(["demo-table", "a=b"]).is_err());
        assert!(Args::try_parse_from(["demo-table", "a=b", "nolabel"]).is_err());
    }
}
