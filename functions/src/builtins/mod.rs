//! The built-in functions. They span the placement spectrum:
//!
//! | function | data per invocation | CPU per byte | natural side |
//! |---|---|---|---|
//! | [`khop`] | many small values, one dependent round per hop | low | storage |
//! | [`pagerank`] | a vertex and its neighbours (two rounds) | medium | either |
//! | [`aggregate`] | many independent values (one round per 1,024 keys) | low | storage |
//! | [`digest`] | one blob | high | compute |
//! | [`get`] | one value | none | either |

pub mod aggregate;
pub mod digest;
pub mod get;
pub mod khop;
pub mod pagerank;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast hasher for `u32` vertex ids (multiply-shift); ids are not attacker-chosen keys of a
/// long-lived table, only the working set of one invocation.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// A set of vertex ids.
pub type IdSet = HashSet<u32, BuildHasherDefault<IdHasher>>;
/// A map keyed by vertex id.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;
