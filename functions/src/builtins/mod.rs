//! The built-in functions. They span the placement spectrum:
//!
//! | function | data per invocation | CPU per byte | natural side |
//! |---|---|---|---|
//! | [`khop`] | many small values, one dependent round per hop | low | storage |
//! | [`pagerank`] | a vertex and its neighbours (two rounds; `induced`: those a store serves, their edges inside) | medium | either |
//! | [`aggregate`] | many independent values (one round per 1,024 keys) | low | storage |
//! | [`digest`] | one blob | high | compute |
//! | [`get`] | one value | none | either |
//! | [`neighbours`] | the adjacency of a set of vertices (one hop; `expand`: and the next, where it is served) | low | storage |

pub mod aggregate;
pub mod digest;
pub mod get;
pub mod khop;
pub mod neighbours;
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

/// A set of vertex ids: a bitmap over the ids below a bound, and a hash set for the ids beyond
/// it. Vertex ids are dense in practice (AutoLoc's and R-MAT's are `0..n`), so most inserts are
/// a bit test, with nothing hashed or probed: in `khop` the hash set alone took a sixth of the
/// time natively, more in a WebAssembly guest (whose `hashbrown` probes 4 bytes at a time, not
/// 16). The bitmap grows (doubling) only while it stays within [`IdSet::WORDS_PER_ID`] words per
/// id held, so a few far-apart ids cost no more memory than a hash set would.
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    bits: Vec<u64>,
    sparse: HashSet<u32, BuildHasherDefault<IdHasher>>,
    /// How many ids it holds (bounds the bitmap's growth).
    len: usize,
}

impl IdSet {
    /// The bitmap's bound on its size: this many 64-bit words per id held...
    const WORDS_PER_ID: usize = 4;
    /// ...or this many (the ids below 4,096), whichever is more.
    const MIN_WORDS: usize = 64;

    /// Adds `id`; `true` if it was not there.
    pub fn insert(&mut self, id: u32) -> bool {
        let word = (id / 64) as usize;
        let new = if word < self.bits.len() || self.grow_to(word) {
            let bit = 1u64 << (id % 64);
            let w = &mut self.bits[word];
            let new = *w & bit == 0;
            *w |= bit;
            new
        } else {
            self.sparse.insert(id)
        };
        self.len += usize::from(new);
        new
    }

    /// Adds each id of `ids` (little-endian `u32`s), appending those it did not hold to `new`.
    ///
    /// The same as [`IdSet::insert`] for each, in one loop whose bitmap and counts stay in
    /// registers: called once per id through a closure, the set's fields were loaded and stored
    /// for every id, and each access of a WebAssembly guest is bounds-checked.
    pub fn insert_le(&mut self, ids: &[u8], new: &mut Vec<u32>) {
        self.add_le::<true>(ids, new);
    }

    /// Adds each id of `ids` (little-endian `u32`s), as [`IdSet::insert_le`] does, without
    /// listing the new ones: `khop`'s last level, whose vertices are never visited. Nothing is
    /// written per id but the bitmap.
    pub fn extend_le(&mut self, ids: &[u8]) {
        self.add_le::<false>(ids, &mut Vec::new());
    }

    /// [`IdSet::insert_le`], and with `LIST` false [`IdSet::extend_le`] (`new` untouched).
    fn add_le<const LIST: bool>(&mut self, ids: &[u8], new: &mut Vec<u32>) {
        // Room for every id at once, written by index and cut to what was added: a `push` per
        // id loaded and stored the vector's length and capacity each time in a guest.
        let mut at = new.len();
        if LIST {
            new.resize(at + ids.len() / 4, 0);
        }
        let mut rest = ids;
        while !rest.is_empty() {
            // Ids the bitmap covers, up to the first it does not.
            let bits = self.bits.as_mut_slice();
            let out = &mut new[at..];
            let mut added = 0;
            let mut taken = 0;
            let mut add = |bits: &mut [u64], id: u32| {
                let w = &mut bits[(id / 64) as usize];
                let bit = 1u64 << (id % 64);
                if *w & bit == 0 {
                    *w |= bit;
                    if LIST {
                        out[added] = id;
                    }
                    added += 1;
                }
            };
            // Four at a time while all four are in the bitmap: in a guest, each turn of a loop
            // checks the epoch and reloads what Cranelift spilled around that check, once per
            // four ids here instead of per id.
            for quad in rest.chunks_exact(16) {
                let mut ids = crate::graph::le_u32s(quad);
                let q = [0; 4].map(|_| ids.next().unwrap_or(u32::MAX));
                if (q[0].max(q[1]).max(q[2]).max(q[3]) / 64) as usize >= bits.len() {
                    break;
                }
                q.into_iter().for_each(|id| add(bits, id));
                taken += 16;
            }
            // Then one at a time, up to the first the bitmap does not cover.
            for id in crate::graph::le_u32s(&rest[taken..]) {
                if (id / 64) as usize >= bits.len() {
                    break;
                }
                add(bits, id);
                taken += 4;
            }
            self.len += added;
            if LIST {
                at += added;
            }
            rest = &rest[taken..];
            // That one through `insert` (which may grow the bitmap or hash it), then on.
            if let Some(id) = crate::graph::le_u32s(rest).next() {
                if self.insert(id) && LIST {
                    new[at] = id;
                    at += 1;
                }
                rest = &rest[4..];
            } else {
                break;
            }
        }
        if LIST {
            new.truncate(at);
        }
    }

    /// Its ids in increasing order: the bitmap's, then the hashed ones (all beyond it) sorted.
    pub fn into_sorted(self) -> Vec<u32> {
        let mut out = vec![0; self.len];
        let dense = self.len - self.sparse.len();
        let mut at = 0;
        for (i, &word) in self.bits.iter().enumerate() {
            let base = i as u32 * 64;
            let mut w = word;
            let n = w.count_ones() as usize;
            let mut slots = out[at..at + n].chunks_exact_mut(2);
            for pair in &mut slots {
                pair[0] = base + w.trailing_zeros();
                w &= w - 1;
                pair[1] = base + w.trailing_zeros();
                w &= w - 1;
            }
            if let [last] = slots.into_remainder() {
                *last = base + w.trailing_zeros();
            }
            at += n;
        }
        debug_assert_eq!(at, dense);
        for (o, id) in out[dense..].iter_mut().zip(self.sparse) {
            *o = id;
        }
        out[dense..].sort_unstable();
        out
    }

    /// Grows the bitmap to cover word `word` if its bound allows, moving the hashed ids it then
    /// covers into it; `false` (unchanged) if not.
    #[cold]
    fn grow_to(&mut self, word: usize) -> bool {
        let bound = (self.len + 1)
            .saturating_mul(Self::WORDS_PER_ID)
            .max(Self::MIN_WORDS);
        if word >= bound {
            return false;
        }
        let words = (word + 1).next_power_of_two().min(bound);
        self.bits.resize(words, 0);
        let bits = &mut self.bits;
        self.sparse
            .retain(|&id| match bits.get_mut((id / 64) as usize) {
                Some(w) => {
                    *w |= 1u64 << (id % 64);
                    false
                }
                None => true,
            });
        true
    }
}
/// A map keyed by vertex id.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::IdSet;
    use std::collections::HashSet;

    /// Inserts the same ids into an `IdSet` and a `HashSet`, one by one and in bulk (runs of
    /// 1 to 9 through `insert_le`): the same answers, the same members.
    fn agrees(ids: impl IntoIterator<Item = u32>) {
        let ids: Vec<u32> = ids.into_iter().collect();
        let mut set = IdSet::default();
        let mut bulk = IdSet::default();
        let mut model = HashSet::new();
        let mut new = Vec::new();
        let mut rest = &ids[..];
        for n in 0.. {
            if rest.is_empty() {
                break;
            }
            let (run, after) = rest.split_at(rest.len().min(n % 9 + 1));
            rest = after;
            let mut want = Vec::new();
            for &id in run {
                let fresh = model.insert(id);
                assert_eq!(set.insert(id), fresh, "insert {id}");
                if fresh {
                    want.push(id);
                }
            }
            let le: Vec<u8> = run.iter().flat_map(|id| id.to_le_bytes()).collect();
            new.clear();
            bulk.insert_le(&le, &mut new);
            assert_eq!(new, want, "insert_le {run:?}");
        }
        // All at once: one run across the bitmap's growth.
        let mut once = IdSet::default();
        let le: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        new.clear();
        once.insert_le(&le, &mut new);
        let mut seen = HashSet::new();
        let firsts: Vec<u32> = ids.iter().copied().filter(|&id| seen.insert(id)).collect();
        assert_eq!(new, firsts);
        // The same, listing nothing.
        let mut counted = IdSet::default();
        counted.extend_le(&le);
        assert_eq!(set.len, model.len());
        assert_eq!(bulk.len, model.len());
        assert_eq!(once.len, model.len());
        assert_eq!(counted.len, model.len());
        let mut sorted: Vec<u32> = model.into_iter().collect();
        sorted.sort_unstable();
        assert_eq!(bulk.into_sorted(), sorted);
        assert_eq!(counted.into_sorted(), sorted);
        assert_eq!(set.into_sorted(), sorted);
    }

    #[test]
    fn id_set_is_a_set_for_dense_sparse_and_mixed_ids() {
        // A small linear congruential sequence: reproducible, no dependency.
        let mut x = 12345u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        agrees((0..10_000).map(|_| next() % 5_000));
        agrees((0..2_000).map(|_| next()));
        agrees([u32::MAX, 0, u32::MAX, 1 << 31, 5, 5]);
        // Far ids first (hashed), then enough near ones that the bitmap grows over them.
        agrees(
            (0..64)
                .map(|i| 100_000 + i * 7)
                .chain(0..200_000)
                .chain([100_007, 100_008]),
        );
    }
}
