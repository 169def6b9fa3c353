//! Placement reports from compute nodes: each node running a placement policy sends its table
//! (`AUTOLOC.REPORT <node> <json>`) every half second; `AUTOLOC.PLACEMENT` lists the live ones
//! (for `autoloc placement`), and `INFO autoloc` shows the latest share of each function.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A report older than this is dropped: its node stopped or died.
pub const REPORT_TTL: Duration = Duration::from_secs(10);
/// The largest report accepted.
pub const MAX_REPORT: usize = 256 * 1024;
/// The most nodes remembered.
pub const MAX_NODES: usize = 1024;

static REPORTS: Mutex<BTreeMap<String, (Instant, String)>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<String, (Instant, String)>> {
    let mut r = REPORTS.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|_, (at, _)| at.elapsed() < REPORT_TTL);
    r
}

/// Stores `json` as the latest report of `node`; the JSON must be an array of function
/// snapshots, each with at least a `name` and a `share`.
pub fn report(node: &str, json: &str) -> Result<(), String> {
    if json.len() > MAX_REPORT {
        return Err(format!(
            "report of {} bytes exceeds {MAX_REPORT}",
            json.len()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("report is not JSON: {e}"))?;
    let ok = v.as_array().is_some_and(|a| {
        a.iter()
            .all(|f| f["name"].is_string() && f["share"].is_number())
    });
    if !ok {
        return Err(
            "report must be a JSON array of {\"name\": ..., \"share\": ...} objects".into(),
        );
    }
    let mut r = live();
    if r.len() >= MAX_NODES && !r.contains_key(node) {
        return Err(format!("too many reporting nodes ({MAX_NODES})"));
    }
    r.insert(node.to_string(), (Instant::now(), json.to_string()));
    Ok(())
}

/// The live reports: `(node, age, json)`.
pub fn reports() -> Vec<(String, Duration, String)> {
    live()
        .iter()
        .map(|(n, (at, j))| (n.clone(), at.elapsed(), j.clone()))
        .collect()
}

/// The share of each function in the most recent live report that has it.
pub fn latest_shares() -> BTreeMap<String, f64> {
    let mut newest: BTreeMap<String, (Duration, f64)> = BTreeMap::new();
    for (_, age, json) in reports() {
        let Ok(serde_json::Value::Array(fns)) = serde_json::from_str::<serde_json::Value>(&json)
        else {
            continue;
        };
        for f in fns {
            if let (Some(name), Some(share)) = (f["name"].as_str(), f["share"].as_f64()) {
                // The name becomes part of an INFO field: keep it to what a field may hold.
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    continue;
                }
                if newest.get(name).is_none_or(|(a, _)| age < *a) {
                    newest.insert(name.to_string(), (age, share));
                }
            }
        }
    }
    newest.into_iter().map(|(k, (_, s))| (k, s)).collect()
}
