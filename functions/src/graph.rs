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

fn for_each_json_neighbour(key: &[u8], value: &[u8], f: impl FnMut(u32)) -> Result<()> {
    // A typed, borrowing parse: other fields ("feature") are skipped without being built, and
    // each id goes to `f` as it is read, with no `Value` tree and no string allocated.
    // Skipped fields are not checked for UTF-8 by the parser: check the whole value, so that
    // what is accepted is JSON (found by the graph_json fuzz target).
    let text = std::str::from_utf8(value)
        .map_err(|e| Error::bad_value(key, format!("bad JSON: not UTF-8 ({e})")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let visitor = VertexVisitor { f, bad_id: None };
    let result = serde::Deserializer::deserialize_map(&mut de, visitor).and_then(|r| {
        de.end()?;
        Ok(r)
    });
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(Error::bad_value(key, reason)),
        Err(e) => Err(Error::bad_value(key, format!("bad JSON: {e}"))),
    }
}

/// Visits a JSON vertex object, calling `f` with each id of its `"neigh"` list.
struct VertexVisitor<F> {
    f: F,
    bad_id: Option<String>,
}

impl<'de, F: FnMut(u32)> serde::de::Visitor<'de> for VertexVisitor<F> {
    /// `Err(reason)` for a well-formed JSON object that is no vertex.
    type Value = std::result::Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON vertex object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut seen = None;
        let mut twice = false;
        while let Some(field) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if field != "neigh" || seen.is_some() {
                // A second "neigh" (its ids were already passed on) makes no vertex.
                twice |= field == "neigh";
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            seen = Some(map.next_value_seed(NeighSeed {
                f: &mut self.f,
                bad_id: &mut self.bad_id,
            })?);
        }
        if twice {
            return Ok(Err("\"neigh\" appears twice".into()));
        }
        Ok(match (seen, self.bad_id) {
            (_, Some(id)) => Err(format!("neighbour id {id} is not a u32")),
            (Some(true), None) => Ok(()),
            (Some(false), None) => Err("\"neigh\" is not a list".into()),
            (None, None) => Err("JSON vertex has no \"neigh\" list".into()),
        })
    }
}

/// The `"neigh"` value: `true` if it was a list (its ids passed to `f`), `false` otherwise.
struct NeighSeed<'a, F> {
    f: &'a mut F,
    bad_id: &'a mut Option<String>,
}

impl<'de, F: FnMut(u32)> serde::de::DeserializeSeed<'de> for NeighSeed<'_, F> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(u32)> serde::de::Visitor<'de> for NeighSeed<'_, F> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of vertex ids")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<bool, A::Error> {
        while let Some(id) = seq.next_element::<Id>()? {
            match id.0 {
                Ok(v) => (self.f)(v),
                Err(shown) => {
                    self.bad_id.get_or_insert(shown);
                }
            }
        }
        Ok(true)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<bool, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(false)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<bool, E> {
        Ok(false)
    }
}

/// One id of a `"neigh"` list: a string or a number; `Err` holds how it is shown in an error.
struct Id(std::result::Result<u32, String>);

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a vertex id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Id, E> {
                Ok(Id(s.parse::<u32>().map_err(|_| format!("{s:?}"))))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<Id, E> {
                Ok(Id(u32::try_from(n).map_err(|_| n.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Id, E> {
                Ok(Id(u32::try_from(n).map_err(|_| n.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> std::result::Result<Id, E> {
                Ok(Id(Err(n.to_string())))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Id, E> {
                Ok(Id(Err(b.to_string())))
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Id, E> {
                Ok(Id(Err("null".into())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Id, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Id(Err("a list".into())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Id, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Id(Err("an object".into())))
            }
        }
        d.deserialize_any(V)
    }
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
        let v = br#"{"feature": ["a", {"x": [1]}], "neigh": ["3", 4, "\u0035"]}"#;
        assert_eq!(neighbours(b"1", v).unwrap(), vec![3, 4, 5]);
    }

    #[test]
    fn json_that_is_no_vertex_says_why() {
        for (v, says) in [
            (&br#"{"feature": []}"#[..], "no \"neigh\""),
            (br#"{"neigh": "1"}"#, "not a list"),
            (br#"{"neigh": [1, -2]}"#, "-2 is not a u32"),
            (br#"{"neigh": [1, 4294967296]}"#, "4294967296 is not a u32"),
            (br#"{"neigh": [[1]]}"#, "a list is not a u32"),
            (br#"{"neigh": [1]} trailing"#, "bad JSON"),
            (br#"{"neigh": [1],}"#, "bad JSON"),
            // Found by the graph_json fuzz target: two lists, where a JSON object keeps the last.
            (br#"{"neigh": ["1", "2"], "neigh": ["1"]}"#, "appears twice"),
            // Found by the graph_json fuzz target: invalid UTF-8 in a skipped field.
            (
                b"{\"feature\": [\"a\xdd\xdd\"], \"neigh\": [\"1\"]}",
                "not UTF-8",
            ),
        ] {
            let e = neighbours(b"1", v).unwrap_err().to_string();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(v));
        }
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
