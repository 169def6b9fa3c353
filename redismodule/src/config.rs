//! Module arguments: `--loadmodule libautoloc_redismodule.so [name value]...`
//!
//! | argument | meaning | default |
//! |---|---|---|
//! | `budget-us N` / `budget-ms N` | how long one storage-side invocation may hold Redis's lock | 5 ms |
//! | `cores LIST` | cores the data-plane threads are pinned to, e.g. `1` or `2,3`; one thread per core | one unpinned thread |
//! | `lock-us N` | the longest a data-plane thread holds Redis's lock for one burst | 500 us |
//! | `tcp-bind ADDR` | address the io_uring TCP data path listens on | `127.0.0.1` |
//! | `tcp-port N` | its port (0: any free port) | 0 |
//! | `wasm-traps signals\|checks` | how user functions' memory accesses are checked: by guard pages and wasmtime's signal handler, or by a check compiled before each | `signals` |
//! | `overload-budget-us N` | the budget of data-plane invocations while a data-plane thread is saturated (ASFP pushback) | 300 us |

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// The default storage-side budget: how long one invocation may hold Redis's lock.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(5);
/// The largest budget accepted (a longer one would let a call freeze Redis for seconds).
pub const MAX_BUDGET: Duration = Duration::from_secs(1);
/// The default bound on one data-plane burst under Redis's lock.
pub const DEFAULT_LOCK_BOUND: Duration = Duration::from_micros(500);

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The module's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long one storage-side invocation may run before it is pushed back.
    pub budget: Duration,
    /// Cores to pin data-plane threads to (empty: one unpinned thread).
    pub cores: Vec<usize>,
    /// Longest hold of Redis's lock for one burst of data-plane requests.
    pub lock_bound: Duration,
    /// Where the TCP data path listens.
    pub tcp_bind: String,
    /// Its port (0: any).
    pub tcp_port: u16,
    /// The budget of data-plane invocations while the storage side is overloaded: costlier
    /// ones are pushed back to their callers with what they have read (ASFP).
    pub overload_budget: Duration,
    /// Linear memory of one user-function instance, in MiB (`wasm-memory-mb`).
    pub wasm_memory_mb: u64,
    /// The largest user-function module `AUTOLOC.FUNCTION LOAD` takes, in MiB (`wasm-module-mb`).
    pub wasm_module_mb: u64,
    /// Whether user functions trap through signals (`wasm-traps signals`) or explicit bounds
    /// checks (`wasm-traps checks`).
    pub wasm_signal_traps: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget: DEFAULT_BUDGET,
            cores: Vec::new(),
            lock_bound: DEFAULT_LOCK_BOUND,
            tcp_bind: "127.0.0.1".into(),
            tcp_port: 0,
            overload_budget: Duration::from_micros(300),
            wasm_memory_mb: 64,
            wasm_module_mb: 8,
            wasm_signal_traps: true,
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget-us {} cores {:?} lock-us {} tcp {}:{} wasm-memory-mb {} wasm-module-mb {} wasm-traps {}",
            self.budget.as_micros(),
            self.cores,
            self.lock_bound.as_micros(),
            self.tcp_bind,
            self.tcp_port,
            self.wasm_memory_mb,
            self.wasm_module_mb,
            if self.wasm_signal_traps { "signals" } else { "checks" }
        )
    }
}

fn number(name: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("'{name}' needs a non-negative integer, got '{value}'"))
}

impl Config {
    /// Parses `name value` pairs.
    pub fn parse(args: &[&[u8]]) -> Result<Config, String> {
        let mut c = Config::default();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value = it.next().ok_or_else(|| format!("'{name}' needs a value"))?;
            let value =
                std::str::from_utf8(value).map_err(|_| format!("'{name}' needs a UTF-8 value"))?;
            match name.as_str() {
                "budget-us" => c.budget = Duration::from_micros(number(&name, value)?),
                "budget-ms" => c.budget = Duration::from_millis(number(&name, value)?),
                "lock-us" => c.lock_bound = Duration::from_micros(number(&name, value)?),
                "overload-budget-us" => c.overload_budget = Duration::from_micros(number(&name, value)?),
                "cores" => {
                    c.cores = value
                        .split(',')
                        .map(|v| number(&name, v.trim()).map(|n| n as usize))
                        .collect::<Result<_, _>>()?;
                    if c.cores.is_empty() || c.cores.len() > 64 {
                        return Err("'cores' needs 1 to 64 core numbers".into());
                    }
                }
                "tcp-bind" => {
                    value
                        .parse::<std::net::IpAddr>()
                        .map_err(|_| format!("'tcp-bind' needs an IP address, got '{value}'"))?;
                    c.tcp_bind = value.to_string();
                }
                "wasm-memory-mb" => {
                    c.wasm_memory_mb = number(&name, value)?;
                    if !(2..=4096).contains(&c.wasm_memory_mb) {
                        return Err("'wasm-memory-mb' must be in 2..=4096".into());
                    }
                }
                "wasm-module-mb" => {
                    c.wasm_module_mb = number(&name, value)?;
                    if !(1..=256).contains(&c.wasm_module_mb) {
                        return Err("'wasm-module-mb' must be in 1..=256".into());
                    }
                }
                "wasm-traps" => {
                    c.wasm_signal_traps = match value.to_ascii_lowercase().as_str() {
                        "signals" => true,
                        "checks" => false,
                        _ => {
                            return Err(format!(
                                "'wasm-traps' needs 'signals' or 'checks', got '{value}'"
                            ))
                        }
                    }
                }
                "tcp-port" => {
                    c.tcp_port = u16::try_from(number(&name, value)?)
                        .map_err(|_| "'tcp-port' must be at most 65535".to_string())?
                }
                _ => {
                    return Err(format!(
                        "unknown argument '{name}' (known: budget-us, budget-ms, cores, lock-us, overload-budget-us, tcp-bind, tcp-port, wasm-memory-mb, wasm-module-mb, wasm-traps)"
                    ))
                }
            }
        }
        if c.budget.is_zero() || c.budget > MAX_BUDGET {
            return Err(format!(
                "budget must be in 1 us..={} ms",
                MAX_BUDGET.as_millis()
            ));
        }
        if c.lock_bound.is_zero() || c.lock_bound > MAX_BUDGET {
            return Err(format!("lock-us must be in 1..={}", MAX_BUDGET.as_micros()));
        }
        Ok(c)
    }
}

/// Makes `c` the configuration in force (once, at load).
pub fn set(c: Config) {
    let _ = CONFIG.set(c);
}

/// The configuration in force.
pub fn get() -> &'static Config {
    static DEFAULT: OnceLock<Config> = OnceLock::new();
    CONFIG
        .get()
        .unwrap_or_else(|| DEFAULT.get_or_init(Config::default))
}

/// The budget in force.
pub fn budget() -> Duration {
    get().budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        assert_eq!(
            Config::parse(&[b"budget-ms", b"7"]).unwrap().budget,
            Duration::from_millis(7)
        );
        assert_eq!(
            Config::parse(&[b"BUDGET-US", b"250"]).unwrap().budget,
            Duration::from_micros(250)
        );
        let c =
            Config::parse(&[b"cores", b"1, 3", b"lock-us", b"200", b"tcp-port", b"7000"]).unwrap();
        assert_eq!(
            (c.cores, c.lock_bound, c.tcp_port),
            (vec![1, 3], Duration::from_micros(200), 7000)
        );
        assert!(Config::default().wasm_signal_traps);
        assert!(
            Config::parse(&[b"wasm-traps", b"signals"])
                .unwrap()
                .wasm_signal_traps
        );
        assert!(
            !Config::parse(&[b"wasm-traps", b"Checks"])
                .unwrap()
                .wasm_signal_traps
        );
        for bad in [
            &[&b"budget-us"[..]][..],
            &[b"budget-us", b"x"],
            &[b"budget-us", b"0"],
            &[b"budget-ms", b"99999"],
            &[b"colour", b"1"],
            &[b"cores", b"a,b"],
            &[b"tcp-port", b"70000"],
            &[b"tcp-bind", b"nowhere"],
            &[b"lock-us", b"0"],
            &[b"wasm-traps", b"sometimes"],
        ] {
            assert!(Config::parse(bad).is_err(), "{bad:?}");
        }
    }
}
