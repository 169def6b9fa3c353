//! `friends_wasm <vertex> <n>`: friend recommendations, written from scratch with the SDK's
//! synchronous API.
//!
//! The candidates are the vertices at distance exactly 2 from `<vertex>`: reached through one of
//! its neighbours, and neither the vertex itself nor one of its neighbours. Each is scored by its
//! number of common neighbours with `<vertex>` (the neighbours `u` of `<vertex>` that list it;
//! in a directed graph, the paths `vertex -> u -> candidate`). The `n` best, by score then by
//! smaller id, are returned as `scores` sorted by id, the score as an `f64`.
//!
//! Two reads, one per BFS level: the vertex, then all its neighbours at once. Values are
//! AutoLoc's binary adjacency or JSON (decoded by `autoloc_functions::graph`); a neighbour
//! without a key of its own has no neighbours; a missing `<vertex>` is an error.
#![forbid(unsafe_code)]

use autoloc_guest::functions::builtins::IdMap;
use autoloc_guest::functions::graph::{for_each_neighbour, vertex_key};
use autoloc_guest::functions::{Args, Error, Output, OutputKind};
use autoloc_guest::read_each;

const NAME: &str = "friends_wasm";
const USAGE: &str = "friends_wasm <vertex> <n>";
/// The largest `n` accepted.
pub const MAX_N: u64 = 1_000_000;

autoloc_guest::export! {
    name: NAME,
    usage: USAGE,
    output: OutputKind::Scores,
    entry: friends,
}

fn friends(args: &[Vec<u8>]) -> Result<Output, Error> {
    let mut a = Args::new(NAME, USAGE, args);
    let vertex = a.next_vertex("vertex")?;
    let n = a.next_u64("n", 1, MAX_N)? as usize;
    a.finish()?;
    recommend(vertex, n).map(Output::Scores)
}

/// The `n` best candidates of `vertex` with their common-neighbour counts, sorted by id.
pub fn recommend(vertex: u32, n: usize) -> Result<Vec<(u32, f64)>, Error> {
    // Level 0: the vertex's own neighbours.
    let key = vertex_key(vertex);
    let mut direct = Vec::new();
    read_each(&[&key], |_, value| {
        let value = value.ok_or_else(|| Error::no_key(&key))?;
        for_each_neighbour(&key, value, |u| {
            if u != vertex {
                direct.push(u);
            }
        })
    })?;
    direct.sort_unstable();
    direct.dedup();

    // Level 1: all the neighbours in one read. A candidate's entry is (count, the last
    // neighbour that counted it), so a neighbour listing it twice counts once.
    let keys: Vec<Vec<u8>> = direct.iter().map(|&u| vertex_key(u)).collect();
    let mut common: IdMap<(u32, usize)> = IdMap::default();
    read_each(&keys, |i, value| {
        let Some(value) = value else { return Ok(()) };
        for_each_neighbour(&keys[i], value, |w| {
            if w == vertex || direct.binary_search(&w).is_ok() {
                return;
            }
            let entry = common.entry(w).or_insert((0, usize::MAX));
            if entry.1 != i {
                *entry = (entry.0 + 1, i);
            }
        })
    })?;

    let mut ranked: Vec<(u32, u32)> = common.into_iter().map(|(w, (c, _))| (w, c)).collect();
    let best = |a: &(u32, u32), b: &(u32, u32)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    if ranked.len() > n {
        ranked.select_nth_unstable_by(n, best);
        ranked.truncate(n);
    }
    ranked.sort_unstable_by_key(|&(w, _)| w);
    Ok(ranked.into_iter().map(|(w, c)| (w, f64::from(c))).collect())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use autoloc_guest::functions::graph::encode_adjacency;
    use autoloc_guest::mock;

    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// An undirected graph; 7 is a dangling neighbour (no key of its own).
    fn social() {
        mock::reset();
        let edges: &[(u32, &[u32])] = &[
            (1, &[2, 3, 4]),
            (2, &[1, 5, 6, 4]),
            (3, &[1, 5, 6, 7]),
            (4, &[1, 5, 2]),
            (5, &[2, 3, 4]),
            (6, &[2, 3, 8]),
            (8, &[6]),
        ];
        for &(v, n) in edges {
            mock::insert(v.to_string(), encode_adjacency(n));
        }
    }

    #[test]
    fn ranks_by_common_neighbours_then_id_and_sorts_by_id() {
        social();
        // Candidates of 1: 5 (via 2, 3, 4), 6 (via 2, 3), 7 (via 3); 8 is at distance 3.
        let all = AUTOLOC_GUEST.run(&args(&["1", "10"])).unwrap();
        assert_eq!(all, Output::Scores(vec![(5, 3.0), (6, 2.0), (7, 1.0)]));
        assert_eq!(mock::reads(), 2, "one read per BFS level");
        assert_eq!(recommend(1, 2).unwrap(), vec![(5, 3.0), (6, 2.0)]);
        assert_eq!(recommend(1, 1).unwrap(), vec![(5, 3.0)]);
        // From 5 (direct: 2, 3, 4): 1 via all three, 6 via 2 and 3, 7 via 3.
        assert_eq!(recommend(5, 5).unwrap(), vec![(1, 3.0), (6, 2.0), (7, 1.0)]);
        assert_eq!(recommend(5, 1).unwrap(), vec![(1, 3.0)]);
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        mock::reset();
        mock::insert("1", encode_adjacency(&[2]));
        mock::insert("2", encode_adjacency(&[1, 9, 4, 7]));
        assert_eq!(recommend(1, 2).unwrap(), vec![(4, 1.0), (7, 1.0)]);
    }

    #[test]
    fn reads_autoloc_json_and_counts_a_repeated_neighbour_once() {
        mock::reset();
        mock::insert("1", r#"{"feature": [], "neigh": ["2", 3, "1"]}"#);
        mock::insert("2", r#"{"neigh": ["4", "4", 1]}"#);
        mock::insert("3", r#"{"neigh": [4, 5]}"#);
        assert_eq!(recommend(1, 9).unwrap(), vec![(4, 2.0), (5, 1.0)]);
    }

    #[test]
    fn errors_have_their_status() {
        mock::reset();
        assert_eq!(AUTOLOC_GUEST.invoke(&args(&["1"]))[0], 1);
        assert_eq!(AUTOLOC_GUEST.invoke(&args(&["1", "0"]))[0], 1);
        assert_eq!(
            AUTOLOC_GUEST.invoke(&args(&["1", "2"])),
            b"\x03NOKEY no such key '1'"
        );
        mock::insert("1", "junk");
        assert_eq!(AUTOLOC_GUEST.invoke(&args(&["1", "2"]))[0], 3);
        mock::insert("1", encode_adjacency(&[]));
        assert_eq!(
            AUTOLOC_GUEST.run(&args(&["1", "2"])),
            Ok(Output::Scores(vec![]))
        );
        assert_eq!(mock::reads(), 3, "no neighbours, no second read");
    }
}
