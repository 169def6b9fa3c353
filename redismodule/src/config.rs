//! Module arguments: `--loadmodule libautoloc_redismodule.so [budget-us N] [budget-ms N]`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The default storage-side budget: how long one invocation may hold Redis's lock.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(5);

/// The largest budget accepted (a longer one would let a call freeze Redis for seconds).
pub const MAX_BUDGET: Duration = Duration::from_secs(1);

static BUDGET_US: AtomicU64 = AtomicU64::new(5_000);

/// The module's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long one storage-side invocation may run before it is pushed back.
    pub budget: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget: DEFAULT_BUDGET,
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "budget-us {}", self.budget.as_micros())
    }
}

impl Config {
    /// Parses `name value` pairs.
    pub fn parse(args: &[&[u8]]) -> Result<Config, String> {
        let mut c = Config::default();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value = it.next().ok_or_else(|| format!("'{name}' needs a value"))?;
            let number = || -> Result<u64, String> {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("'{name}' needs a non-negative integer"))
            };
            c.budget = match name.as_str() {
                "budget-us" => Duration::from_micros(number()?),
                "budget-ms" => Duration::from_millis(number()?),
                _ => {
                    return Err(format!(
                        "unknown argument '{name}' (known: budget-us, budget-ms)"
                    ))
                }
            };
            if c.budget.is_zero() || c.budget > MAX_BUDGET {
                return Err(format!(
                    "budget must be in 1 us..={} ms",
                    MAX_BUDGET.as_millis()
                ));
            }
        }
        Ok(c)
    }
}

/// Makes `c` the configuration in force.
pub fn set(c: Config) {
    BUDGET_US.store(c.budget.as_micros() as u64, Ordering::Relaxed);
}

/// The budget in force.
pub fn budget() -> Duration {
    Duration::from_micros(BUDGET_US.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_budget_arguments() {
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        assert_eq!(
            Config::parse(&[b"budget-ms", b"7"]).unwrap().budget,
            Duration::from_millis(7)
        );
        assert_eq!(
            Config::parse(&[b"BUDGET-US", b"250"]).unwrap().budget,
            Duration::from_micros(250)
        );
        assert!(Config::parse(&[b"budget-us"]).is_err());
        assert!(Config::parse(&[b"budget-us", b"x"]).is_err());
        assert!(Config::parse(&[b"budget-us", b"0"]).is_err());
        assert!(Config::parse(&[b"budget-ms", b"99999"]).is_err());
        assert!(Config::parse(&[b"colour", b"1"]).is_err());
    }
}
