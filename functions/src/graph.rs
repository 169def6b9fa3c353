//! How a vertex is stored: one string key per vertex, named by its decimal id (as AutoLoc did).
//!
//! Two value layouts are read, told apart by their first bytes:
//! - **binary adjacency** (what `autoloc load` writes): the magic `ALG1`, then a little-endian
//!   `u32` neighbour count, then that many little-endian `u32` neighbour ids, sorted and distinct.
//!   A vertex of degree d takes 8 + 4d bytes and decodes with no allocation beyond the ids.
//! - **AutoLoc's JSON**: `{"feature": [...], "neigh": ["<id>", ...]}` as in AutoLoc's
//!   `social.json`; ids may be strings or numbers.
//!
//! A neighbour id listed without a key of its own (a dangling edge) is still a vertex: it is
//! reached and counted, and simply has no neighbours.

use crate::{Error, Result};

/// The magic that starts a binary adjacency value.
pub const MAGIC: &[u8; 4] = b"ALG1";

/// The key of vertex `v`.
pub fn vertex_key(v: u32) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Encodes a neighbour list (sorted and deduplicated here) as a binary adjacency value.
pub fn encode_adjacency(neighbours: &[u32]) -> Vec<u8> {
    let mut sorted = neighbours.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::with_capacity(8 + 4 * sorted.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for v in sorted {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Calls `f` with every neighbour of the vertex whose value is `value` (stored at `key`, named
/// in errors).
pub fn for_each_neighbour(key: &[u8], value: &[u8], mut f: impl FnMut(u32)) -> Result<()> {
    if let Some(rest) = value.strip_prefix(MAGIC) {
        let (count, ids) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::bad_value(key, "binary adjacency shorter than its header"))?;
        let count = u32::from_le_bytes(*count) as usize;
        if ids.len() != count.saturating_mul(4) {
            return Err(Error::bad_value(
                key,
                format!(
                    "binary adjacency says {count} neighbours but holds {} bytes",
                    ids.len()
                ),
            ));
        }
        for chunk in ids.chunks_exact(4) {
            f(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        }
        return Ok(());
    }
    if value.first() == Some(&b'{') {
        return for_each_json_neighbour(key, value, f);
    }
    Err(Error::bad_value(
        key,
        "not a vertex (neither binary adjacency nor AutoLoc JSON)",
    ))
}

fn for_each_json_neighbour(key: &[u8], value: &[u8], mut f: impl FnMut(u32)) -> Result<()> {
    let parsed: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| Error::bad_value(key, format!("bad JSON: {e}")))?;
    let neigh = match parsed.get("neigh") {
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err(Error::bad_value(key, "\"neigh\" is not a list")),
        None => return Err(Error::bad_value(key, "JSON vertex has no \"neigh\" list")),
    };
    for item in neigh {
        let id = match item {
            serde_json::Value::String(s) => s.parse::<u32>().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        f(id.ok_or_else(|| Error::bad_value(key, format!("neighbour id {item} is not a u32")))?);
    }
    Ok(())
}

/// The neighbours of a vertex as a vector (in stored order).
pub fn neighbours(key: &[u8], value: &[u8]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for_each_neighbour(key, value, |v| out.push(v))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip_sorts_and_dedups() {
        let v = encode_adjacency(&[9, 3, 3, 7]);
        assert_eq!(v.len(), 8 + 12);
        assert_eq!(neighbours(b"1", &v).unwrap(), vec![3, 7, 9]);
    }

    #[test]
    fn json_layout_reads_string_and_number_ids() {
        let v = br#"{"feature": ["a"], "neigh": ["3", 4]}"#;
        assert_eq!(neighbours(b"1", v).unwrap(), vec![3, 4]);
    }

    #[test]
    fn truncated_and_junk_values_are_malformed() {
        let mut v = encode_adjacency(&[1, 2]);
        v.pop();
        assert!(matches!(neighbours(b"1", &v), Err(Error::BadValue { .. })));
        assert!(matches!(
            neighbours(b"1", b"ALG1"),
            Err(Error::BadValue { .. })
        ));
        assert!(matches!(
            neighbours(b"1", b"hello"),
            Err(Error::BadValue { .. })
        ));
        assert!(matches!(
            neighbours(b"1", br#"{"neigh": ["x"]}"#),
            Err(Error::BadValue { .. })
        ));
        assert!(matches!(
            neighbours(b"1", b"{"),
            Err(Error::BadValue { .. })
        ));
    }

    #[test]
    fn huge_count_does_not_overflow() {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(neighbours(b"1", &v).is_err());
    }
}
