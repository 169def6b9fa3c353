//! Prints the `ci/demo` comparison table from `batch`/`redisclient` JSON reports.
//!
//! `demo-table "LABEL=FILE" ...`: the first report is compared with every other one; exits
//! non-zero if the reports' result checksums differ (the placements disagreed).

use anyhow::{bail, Context};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for arg in std::env::args().skip(1) {
        let (label, path) = arg.split_once('=').context("arguments are LABEL=FILE")?;
        let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{path} is not a batch --json report"))?;
        rows.push((label.to_string(), v));
    }
    if rows.len() < 2 {
        bail!("usage: demo-table LABEL=FILE LABEL=FILE [...]");
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let l = |v: &Value, k: &str| v["latency_us"][k].as_f64().unwrap_or(f64::NAN);
    println!(
        "| {:<38} | {:<11} | {:<9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>11} |",
        "command",
        "placement",
        "transport",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "errors",
        "round trips"
    );
    println!(
        "|{:-<40}|{:-<13}|{:-<11}|{:->11}|{:->11}|{:->11}|{:->11}|{:->8}|{:->13}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (label, v) in &rows {
        println!(
            "| {:<38} | {:<11} | {:<9} | {:>9.0} | {:>9.1} | {:>9.1} | {:>9.1} | {:>6} | {:>11} |",
            label,
            v["placement"].as_str().unwrap_or("?"),
            v["transport"].as_str().unwrap_or("?"),
            f(v, "throughput_per_s"),
            l(v, "p50"),
            l(v, "p99"),
            l(v, "p999"),
            v["errors"].as_u64().unwrap_or(0),
            v["round_trips"].as_u64().unwrap_or(0),
        );
    }
    println!();
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
