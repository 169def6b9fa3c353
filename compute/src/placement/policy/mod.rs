//! Placement policies: each turns a [`Window`] of counters into a share per function.
//!
//! [`Policy::step`] is a pure function of the policy's state, the window and the [`Costs`]: no
//! thread, no clock, no table, so every rule is unit-tested with synthetic windows.
//!
//! | name | rule |
//! |---|---|
//! | `adaptive` (default) | cost model, storage-load awareness, gradient on the marginal function, pushback, spare storage CPU lent while compute is busy |
//! | `storage`, `compute` | share 1 / 0 for every function |
//! | `autoloc2021` | start storage-side; share 0 once storage CPU per call exceeds the modelled data cost; static |
//! | `kayak` | one global fraction, gradient ascent on measured throughput (Kayak NSDI'21 X-loop) |
//! | `oracle(name=share,...)` | fixed shares from the bench (`*=share` for the rest) |
//!
//! # Layout
//! - `baselines.rs`: the policies AutoLoc is measured against: `storage` and `compute` (fixed),
//!   [`Oracle`], [`AutoLoc2021`], [`Kayak`].
//! - `config.rs`: [`AdaptiveConfig`], the adaptive policy's tunables.
//! - `adaptive.rs`: ours, [`Adaptive`]: each epoch's cost model,
//!   storage budget and re-planning.
//! - `load_rule.rs`: the adaptive policy's load rule: which storage-preferring functions the
//!   storage CPU budget keeps inside, and what is lent to the others ([`balanced_share`]).
//! - `gradient.rs`: the adaptive policy's gradient on the marginal function's share.
//!
//! Every public item is re-exported here (`placement::policy::Adaptive`, ...).

use std::fmt;
use std::str::FromStr;

use super::window::{Decision, Window};
use super::Costs;

mod adaptive;
mod baselines;
mod config;
mod gradient;
mod load_rule;

pub use adaptive::Adaptive;
pub use baselines::{AutoLoc2021, Kayak, Oracle};
pub use config::AdaptiveConfig;
pub use load_rule::balanced_share;

use baselines::fixed;

/// A placement policy and its state.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Ours: see [`Adaptive`] (boxed: its state is several times the others').
    Adaptive(Box<Adaptive>),
    /// Everything storage-side.
    Storage,
    /// Everything compute-side.
    Compute,
    /// AutoLoc 2021's rule: see [`AutoLoc2021`].
    AutoLoc2021(AutoLoc2021),
    /// Kayak's X-loop: see [`Kayak`].
    Kayak(Kayak),
    /// Fixed shares: see [`Oracle`].
    Oracle(Oracle),
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::Adaptive(Box::default())
    }
}

impl Policy {
    /// The policy's name (`oracle` without its assignment).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Adaptive(_) => "adaptive",
            Policy::Storage => "storage",
            Policy::Compute => "compute",
            Policy::AutoLoc2021(_) => "autoloc2021",
            Policy::Kayak(_) => "kayak",
            Policy::Oracle(_) => "oracle",
        }
    }

    /// One epoch: reads `w` and writes each function's next share and reason into `out`
    /// (`out[i]` is function `i`; on entry it holds the current share and reason, which a policy
    /// leaves alone for a function it has nothing to say about).
    pub fn step(&mut self, w: &Window, costs: &Costs, out: &mut [Decision]) {
        match self {
            Policy::Adaptive(a) => a.step(w, costs, out),
            Policy::Storage => fixed(out, 1.0),
            Policy::Compute => fixed(out, 0.0),
            Policy::AutoLoc2021(a) => a.step(w, costs, out),
            Policy::Kayak(k) => k.step(w, out),
            Policy::Oracle(o) => o.step(w, out),
        }
    }
}

/// An unknown policy name or a malformed oracle assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParsePolicyError(String);

impl FromStr for Policy {
    type Err = ParsePolicyError;

    /// `adaptive`, `storage`, `compute`, `autoloc2021`, `kayak`, or
    /// `oracle(khop=1,digest=0.25,*=0.5)`.
    fn from_str(s: &str) -> Result<Policy, ParsePolicyError> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "adaptive" => return Ok(Policy::default()),
            "storage" => return Ok(Policy::Storage),
            "compute" => return Ok(Policy::Compute),
            "autoloc2021" => return Ok(Policy::AutoLoc2021(AutoLoc2021::default())),
            "kayak" => return Ok(Policy::Kayak(Kayak::default())),
            _ => {}
        }
        let inner = t
            .strip_prefix("oracle(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| {
                ParsePolicyError(format!(
                    "unknown policy '{s}' (adaptive, storage, compute, autoloc2021, kayak, \
                     oracle(name=share,...))"
                ))
            })?;
        let mut o = Oracle::default();
        for item in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, share) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => ("*", item),
            };
            let share: f64 = share
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=1.0).contains(v))
                .ok_or_else(|| {
                    ParsePolicyError(format!("oracle: share '{share}' is not in [0, 1]"))
                })?;
            if name == "*" {
                o.default = Some(share);
            } else if o.shares.iter().any(|(n, _)| n == name) {
                return Err(ParsePolicyError(format!("oracle: '{name}' given twice")));
            } else {
                o.shares.push((name.to_string(), share));
            }
        }
        Ok(Policy::Oracle(o))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Oracle(o) => {
                f.write_str("oracle(")?;
                let mut sep = "";
                for (n, v) in &o.shares {
                    write!(f, "{sep}{n}={v}")?;
                    sep = ",";
                }
                if let Some(v) = o.default {
                    write!(f, "{sep}*={v}")?;
                }
                f.write_str(")")
            }
            p => f.write_str(p.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["adaptive", "storage", "compute", "autoloc2021", "kayak"] {
            let p: Policy = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        let p: Policy = "oracle(khop=1, digest=0.25,*=0.5)".parse().unwrap();
        assert_eq!(p.to_string(), "oracle(khop=1,digest=0.25,*=0.5)");
        let again: Policy = p.to_string().parse().unwrap();
        assert_eq!(again.to_string(), p.to_string());
        assert!("oracle(khop=2)".parse::<Policy>().is_err());
        assert!("oracle(khop=1,khop=0)".parse::<Policy>().is_err());
        assert!("fastest".parse::<Policy>().is_err());
        assert_eq!(Policy::default().name(), "adaptive");
    }
}
