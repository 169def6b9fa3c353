//! Why a function has its share: a kind and up to two numbers, packed into one `u64` so the
//! table stores it in one atomic and a reader never sees half of one reason and half of another.

use std::fmt;

/// What decided a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ReasonKind {
    /// Nothing measured yet: the share is the initial one.
    #[default]
    NoSamples = 0,
    /// A fixed policy (`storage`, `compute`): `a` = share.
    Fixed,
    /// The oracle's assignment: `a` = share.
    Oracle,
    /// Cost model prefers storage: `a` = round trips saved, `b` = us saved per invocation.
    CostStorage,
    /// Cost model prefers compute: `a` = ms of storage CPU, `b` = ms of data cost saved.
    CostCompute,
    /// Storage saturated, moved out: `a` = utilisation, `b` = ms CPU per round trip saved.
    MovedOut,
    /// Storage saturated, split: `a` = utilisation, `b` = ms CPU per round trip saved.
    Split,
    /// Load dropped, brought back in: `a` = utilisation.
    BroughtBack,
    /// Gradient step on the marginal function: `a` = step.
    Gradient,
    /// Gradient converged: `a` = share.
    Converged,
    /// Pushbacks signal overload: `a` = pushback rate.
    Pushback,
    /// AutoLoc 2021, not yet measured: storage-side.
    AutoLocStart,
    /// AutoLoc 2021 decided compute: `a` = ms CPU, `b` = ms modelled data cost.
    AutoLocCompute,
    /// AutoLoc 2021 decided storage: `a` = ms CPU, `b` = ms modelled data cost.
    AutoLocStorage,
    /// Kayak's global fraction: `a` = x, `b` = step.
    Kayak,
    /// Storage CPU left over lent while compute is busy: `a` = storage, `b` = compute
    /// utilisation.
    Lent,
    /// Storage at its budget while compute idles: part of a storage-preferring function runs
    /// compute-side; `a` = storage, `b` = compute utilisation.
    Offloaded,
}

impl ReasonKind {
    const ALL: [ReasonKind; 17] = [
        ReasonKind::NoSamples,
        ReasonKind::Fixed,
        ReasonKind::Oracle,
        ReasonKind::CostStorage,
        ReasonKind::CostCompute,
        ReasonKind::MovedOut,
        ReasonKind::Split,
        ReasonKind::BroughtBack,
        ReasonKind::Gradient,
        ReasonKind::Converged,
        ReasonKind::Pushback,
        ReasonKind::AutoLocStart,
        ReasonKind::AutoLocCompute,
        ReasonKind::AutoLocStorage,
        ReasonKind::Kayak,
        ReasonKind::Lent,
        ReasonKind::Offloaded,
    ];
}

/// A short reason for one function's share; [`fmt::Display`] renders it, e.g.
/// `cost model: 12 round trips saved (550.0 us less per call)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reason {
    /// What decided.
    pub kind: ReasonKind,
    /// First number (meaning by kind; stored as f32).
    pub a: f32,
    /// Second number (stored with 15 bits of mantissa, about 4 significant digits).
    pub b: f32,
}

impl Reason {
    /// A reason of `kind` with numbers `a` and `b`.
    pub fn new(kind: ReasonKind, a: f64, b: f64) -> Reason {
        Reason {
            kind,
            a: a as f32,
            b: b as f32,
        }
    }

    /// A gradient step of `delta`.
    pub fn gradient(delta: f64) -> Reason {
        Reason::new(ReasonKind::Gradient, delta, 0.0)
    }

    /// One word: kind in bits 56..64, `a`'s f32 bits in 24..56, `b`'s top 24 f32 bits in 0..24.
    pub fn pack(&self) -> u64 {
        (u64::from(self.kind as u8) << 56)
            | (u64::from(self.a.to_bits()) << 24)
            | u64::from(self.b.to_bits() >> 8)
    }

    /// The reason [`Reason::pack`] packed (an unknown kind reads as `NoSamples`).
    pub fn unpack(word: u64) -> Reason {
        let kind = ReasonKind::ALL
            .get((word >> 56) as usize)
            .copied()
            .unwrap_or_default();
        Reason {
            kind,
            a: f32::from_bits((word >> 24) as u32),
            b: f32::from_bits(((word & 0xff_ffff) as u32) << 8),
        }
    }
}

/// Milliseconds, or "no round trip saved" for an infinite ratio.
struct PerRoundTrip(f32);

impl fmt::Display for PerRoundTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() {
            write!(f, "{:.3} ms CPU per round trip saved", self.0)
        } else {
            f.write_str("no round trip saved")
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (self.a, self.b);
        match self.kind {
            ReasonKind::NoSamples => f.write_str("no samples yet"),
            ReasonKind::Fixed => write!(f, "fixed: share {a:.2}"),
            ReasonKind::Oracle => write!(f, "oracle: share {a:.2}"),
            ReasonKind::CostStorage => {
                write!(
                    f,
                    "cost model: {a:.0} round trips saved ({b:.1} us less per call)"
                )
            }
            ReasonKind::CostCompute => write!(
                f,
                "cost model: {a:.3} ms storage CPU outweighs {b:.3} ms data cost"
            ),
            ReasonKind::MovedOut => write!(
                f,
                "storage saturated ({a:.2}): moved out, {}",
                PerRoundTrip(b)
            ),
            ReasonKind::Split => {
                write!(f, "storage saturated ({a:.2}): split, {}", PerRoundTrip(b))
            }
            ReasonKind::BroughtBack => write!(f, "load dropped ({a:.2}): brought back"),
            ReasonKind::Gradient => write!(f, "gradient: {a:+.2}"),
            ReasonKind::Converged => write!(f, "gradient: converged at {a:.2}"),
            ReasonKind::Pushback => write!(f, "pushback {:.0}%: storage overloaded", a * 100.0),
            ReasonKind::AutoLocStart => f.write_str("autoloc2021: storage-side until measured"),
            ReasonKind::AutoLocCompute => write!(
                f,
                "autoloc2021: {a:.3} ms CPU > {b:.3} ms data cost: pushed back"
            ),
            ReasonKind::AutoLocStorage => {
                write!(f, "autoloc2021: {a:.3} ms CPU <= {b:.3} ms data cost")
            }
            ReasonKind::Kayak => write!(f, "kayak: global fraction {a:.2} (step {b:.3})"),
            ReasonKind::Lent => write!(
                f,
                "storage has room ({a:.2}), compute busy ({b:.2}): storage CPU lent"
            ),
            ReasonKind::Offloaded => write!(
                f,
                "storage at its budget ({a:.2}), compute idle ({b:.2}): part run outside"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_every_kind() {
        for (i, kind) in ReasonKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
            let r = Reason::new(*kind, 0.97, 8.125);
            let back = Reason::unpack(r.pack());
            assert_eq!(back.kind, *kind);
            assert_eq!(back.a, r.a);
            assert!((back.b - r.b).abs() < 1e-3, "{}", back.b);
        }
        let inf = Reason::unpack(Reason::new(ReasonKind::MovedOut, 0.97, f64::INFINITY).pack());
        assert!(inf.b.is_infinite());
        assert_eq!(
            inf.to_string(),
            "storage saturated (0.97): moved out, no round trip saved"
        );
        assert_eq!(
            Reason::new(ReasonKind::CostStorage, 12.0, 550.0).to_string(),
            "cost model: 12 round trips saved (550.0 us less per call)"
        );
    }
}
