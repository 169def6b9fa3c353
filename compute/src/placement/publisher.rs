//! The [`Publisher`]: feeds the storage side's measured load to a controller's table, and
//! publishes the table for `autoloc placement` and `INFO autoloc`.

/// Runs beside a placement policy: every 100 ms it reads how busy the storage side's
/// data-plane threads are (`AUTOLOC.STATS`: the share of time they held Redis's lock) and reports
/// what is not function CPU as the storage side's background load, so the controller sees
/// storage saturate from reads and queueing too, not only from function CPU; every half second
/// it sends this node's placement table to the module (`AUTOLOC.REPORT`) for
/// `autoloc placement` and `INFO autoloc`; one last report when dropped.
#[derive(Debug)]
pub struct Publisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Starts watching and publishing `rt`'s table over a connection of its own.
    pub fn start(rt: &crate::Runtime) -> Publisher {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let node = format!("{}-{}", hostname(), std::process::id());
        let names: Vec<String> = rt.registry().names();
        let table = rt.table().clone();
        let conn = crate::Runtime::connect(&rt.url().to_string());
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("autoloc-publish".into())
            .spawn(move || {
                let Ok(mut conn) = conn else { return };
                let storage_cpu = |t: &crate::table::Table| -> u64 {
                    (0..names.len())
                        .map(|i| t.slot(i).snapshot(crate::Side::Storage).storage_cpu_ns)
                        .sum()
                };
                let mut last = (std::time::Instant::now(), storage_cpu(&table));
                for tick in 0u64.. {
                    let stopping = stop2.load(Ordering::Relaxed);
                    if let Some(busy) = conn.storage_stats().ok().and_then(|s| s.busy()) {
                        let (at, cpu) = (std::time::Instant::now(), storage_cpu(&table));
                        let secs = at.duration_since(last.0).as_secs_f64().max(1e-3);
                        let function_cores = cpu.saturating_sub(last.1) as f64 / 1e9 / secs;
                        table.set_storage_background((busy - function_cores).max(0.0));
                        last = (at, cpu);
                    }
                    if stopping || tick % 5 == 0 {
                        if let Ok(json) = serde_json::to_string(&table.snapshot_all(&names)) {
                            let _ = conn.command(&["AUTOLOC.REPORT", node.as_str(), json.as_str()]);
                        }
                    }
                    if stopping {
                        return;
                    }
                    std::thread::park_timeout(std::time::Duration::from_millis(100));
                }
            })
            .ok();
        Publisher { stop, thread }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}
