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
    // Not `to_string`: `fmt` cost more than the read itself in a WebAssembly guest's `khop`.
    itoa::Buffer::new().format(v).as_bytes().to_vec()
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

/// A vertex's neighbours as a store hands them over ([`crate::Store::read_neighbours`]): its
/// stored value, still to decode, or ids its store decoded already.
#[derive(Debug, Clone, Copy)]
pub enum Neighbours<'a> {
    /// The value stored at `key` (decoded by [`for_each_neighbour`]).
    Value {
        /// Where it is stored (named in errors).
        key: &'a [u8],
        /// What is stored there.
        value: &'a [u8],
    },
    /// Decoded ids, each a little-endian `u32` (a multiple of 4 bytes).
    Ids(&'a [u8]),
}

impl Neighbours<'_> {
    /// Calls `f` with each neighbour, in stored order.
    pub fn for_each(&self, f: impl FnMut(u32)) -> Result<()> {
        match *self {
            Neighbours::Value { key, value } => for_each_neighbour(key, value, f),
            Neighbours::Ids(ids) => {
                le_u32s(ids).for_each(f);
                Ok(())
            }
        }
    }

    /// The neighbours as little-endian `u32`s, when they are held that way (decoded ids, or a
    /// binary adjacency value), to be read in bulk ([`le_u32s`]); `None` for JSON, which only
    /// [`Neighbours::for_each`] reads. A value that is no vertex fails as there.
    pub fn le_ids(&self) -> Result<Option<&[u8]>> {
        match *self {
            Neighbours::Value { key, value } => binary_ids(key, value),
            Neighbours::Ids(ids) => Ok(Some(ids)),
        }
    }
}

/// Calls `f` with every neighbour of the vertex whose value is `value` (stored at `key`, named
/// in errors).
pub fn for_each_neighbour(key: &[u8], value: &[u8], f: impl FnMut(u32)) -> Result<()> {
    match binary_ids(key, value)? {
        Some(ids) => {
            le_u32s(ids).for_each(f);
            Ok(())
        }
        None => for_each_json_neighbour(key, value, f),
    }
}

/// A binary adjacency value's ids (checked against its count); `None` for a JSON object; an
/// error for anything else.
fn binary_ids<'a>(key: &[u8], value: &'a [u8]) -> Result<Option<&'a [u8]>> {
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
        return Ok(Some(ids));
    }
    if value.first() == Some(&b'{') {
        return Ok(None);
    }
    Err(Error::bad_value(
        key,
        "not a vertex (neither binary adjacency nor AutoLoc JSON)",
    ))
}

/// Each little-endian `u32` of `bytes` (a trailing partial one is ignored).
pub fn le_u32s(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    // One 4-byte load each: built from four indexed bytes, a WebAssembly guest did four loads,
    // each with its bounds check.
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("chunks of 4")))
}

fn for_each_json_neighbour(key: &[u8], value: &[u8], mut f: impl FnMut(u32)) -> Result<()> {
    if let Some(list) = plain::neigh_list(value) {
        plain::for_each_id(list, &mut f);
        return Ok(());
    }
    json_neighbours_general(key, value, f)
}

/// The general JSON vertex decoder: whatever [`for_each_neighbour`] reads as JSON, it reads this
/// way when the value is not in the plain shape of [`plain`] (and then names the first fault).
/// Public for the `graph_json` fuzz target, which checks that both decoders agree.
#[doc(hidden)]
pub fn json_neighbours_general(key: &[u8], value: &[u8], f: impl FnMut(u32)) -> Result<()> {
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

/// The fast path of the JSON decoder, for the shape AutoLoc's data has: one flat object whose
/// strings hold no escapes and no byte outside printable ASCII, whose other fields are scalars
/// or lists of scalars, with integers only, and whose `"neigh"` list holds plain ids (decimal
/// digits, bare or quoted, at most `u32::MAX`).
///
/// It only ever says yes or "not mine": any value outside that shape, valid or not, goes to the
/// general decoder ([`json_neighbours_general`]), which decides and names the fault. So what it
/// accepts is a subset of what the general decoder accepts, with the same ids (the `graph_json`
/// fuzz target checks both on every input). It validates the whole value before the first id
/// is passed on, so a value it gives up on has passed nothing.
///
/// Why: the general decoder is serde's, built for any shape; on AutoLoc's values it spent most
/// of `khop`'s time (natively and, twice as slow, in a WebAssembly guest), on `"feature"`
/// strings it only skips and on ids it reads as strings before parsing them.
mod plain {
    /// The bytes between the brackets of the `"neigh"` list, if `value` is in the plain shape.
    pub(super) fn neigh_list(value: &[u8]) -> Option<&[u8]> {
        let mut p = Cursor { v: value, i: 0 };
        p.ws();
        p.eat(b'{')?;
        p.ws();
        let mut neigh = None;
        loop {
            let key = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            if key == b"neigh" {
                if neigh.is_some() {
                    return None;
                }
                neigh = Some(p.ids()?);
            } else {
                p.value()?;
            }
            p.ws();
            match p.next()? {
                b',' => p.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        p.ws();
        (p.i == value.len()).then_some(())?;
        neigh
    }

    /// Calls `f` with each id of a list [`neigh_list`] returned (validated there).
    pub(super) fn for_each_id(list: &[u8], f: &mut impl FnMut(u32)) {
        let mut id = 0u32;
        let mut digits = false;
        for &b in list {
            if b.is_ascii_digit() {
                // At most u32::MAX: checked by `Cursor::ids`.
                id = id.wrapping_mul(10).wrapping_add(u32::from(b - b'0'));
                digits = true;
            } else if digits {
                f(id);
                id = 0;
                digits = false;
            }
        }
        if digits {
            f(id);
        }
    }

    struct Cursor<'a> {
        v: &'a [u8],
        i: usize,
    }

    impl<'a> Cursor<'a> {
        fn peek(&self) -> Option<u8> {
            self.v.get(self.i).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.i += 1;
            Some(b)
        }

        fn eat(&mut self, want: u8) -> Option<()> {
            (self.next()? == want).then_some(())
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        /// A string of printable ASCII without escapes; its contents.
        fn string(&mut self) -> Option<&'a [u8]> {
            self.eat(b'"')?;
            let start = self.i;
            loop {
                match self.next()? {
                    b'"' => return Some(&self.v[start..self.i - 1]),
                    b'\\' => return None,
                    0x20..=0x7e => {}
                    _ => return None,
                }
            }
        }

        /// Decimal digits, `1..=max` of them with no leading zero unless `leading_zero`; their
        /// value.
        fn digits(&mut self, max: usize, leading_zero: bool) -> Option<u64> {
            let start = self.i;
            let mut n = 0u64;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                n = n * 10 + u64::from(b - b'0');
                self.i += 1;
                if self.i - start > max {
                    return None;
                }
            }
            let len = self.i - start;
            let zero_led = len > 1 && self.v[start] == b'0';
            (len > 0 && (leading_zero || !zero_led)).then_some(n)
        }

        /// A scalar: a plain string, an integer of at most 15 digits, `true`, `false`, `null`.
        fn scalar(&mut self) -> Option<()> {
            match self.peek()? {
                b'"' => self.string().map(drop),
                b'-' => {
                    self.i += 1;
                    self.digits(15, false).map(drop)
                }
                b'0'..=b'9' => self.digits(15, false).map(drop),
                b't' => self.word(b"true"),
                b'f' => self.word(b"false"),
                b'n' => self.word(b"null"),
                _ => None,
            }
        }

        fn word(&mut self, w: &[u8]) -> Option<()> {
            let end = self.i + w.len();
            (self.v.get(self.i..end)? == w).then_some(())?;
            self.i = end;
            Some(())
        }

        /// A scalar or a list of scalars.
        fn value(&mut self) -> Option<()> {
            if self.peek()? != b'[' {
                return self.scalar();
            }
            self.list(Self::scalar).map(drop)
        }

        /// A list of plain ids; the bytes between its brackets.
        fn ids(&mut self) -> Option<&'a [u8]> {
            self.list(|p| {
                let quoted = p.peek()? == b'"';
                if quoted {
                    p.i += 1;
                }
                // Quoted, as `str::parse::<u32>` reads it (leading zeros allowed); bare, as
                // JSON writes a number.
                let n = p.digits(10, quoted)?;
                if quoted {
                    p.eat(b'"')?;
                }
                (n <= u64::from(u32::MAX)).then_some(())
            })
        }

        /// `[item, ...]` (possibly empty); the bytes between its brackets.
        fn list(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<&'a [u8]> {
            self.eat(b'[')?;
            let start = self.i;
            self.ws();
            if self.peek()? == b']' {
                self.i += 1;
                return Some(&self.v[start..self.i - 1]);
            }
            loop {
                item(self)?;
                self.ws();
                match self.next()? {
                    b',' => self.ws(),
                    b']' => return Some(&self.v[start..self.i - 1]),
                    _ => return None,
                }
            }
        }
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
    fn vertex_keys_are_decimal_ids() {
        for v in [0, 7, 10, 4035, 1_000_000, u32::MAX] {
            assert_eq!(vertex_key(v), v.to_string().into_bytes());
        }
    }

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

    /// Found by the graph_json fuzz target: JSON sets numbers no range, so a skipped one beyond
    /// `f64`'s is valid and the vertex is read (its check, through `serde_json::Value`, refused
    /// it).
    #[test]
    fn a_skipped_number_beyond_f64_is_still_json() {
        let v = b"{ \"x\" : [true, null,50349e312], \"neigh\"\r:[ 7 ]  }";
        assert_eq!(neighbours(b"1", v).unwrap(), vec![7]);
    }

    /// What the general decoder reads from `v`, with its error as text.
    fn general(v: &[u8]) -> std::result::Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        json_neighbours_general(b"k", v, |n| ids.push(n))
            .map(|()| ids)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_plain_path_reads_autoloc_values_and_agrees_with_the_general_decoder() {
        let social = br#"{"feature": ["gender", "location", "id", "128", "78"], "neigh": ["315", "236", "53"]}"#;
        let list = plain::neigh_list(social).expect("AutoLoc's own shape is plain");
        let mut ids = Vec::new();
        plain::for_each_id(list, &mut |n| ids.push(n));
        assert_eq!(ids, vec![315, 236, 53]);
        assert_eq!(Ok(ids), general(social));
        for v in [
            &br#"{"neigh": []}"#[..],
            br#" { "neigh" : [ 1 , "2",3 ] , "x" : -0 , "y": [true, false, null, "s", 12] } "#,
            br#"{"neigh": ["0042949672", 4294967295, 0]}"#,
            br#"{"neigh": [1], "feature": []}"#,
        ] {
            let list =
                plain::neigh_list(v).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(v)));
            let mut ids = Vec::new();
            plain::for_each_id(list, &mut |n| ids.push(n));
            assert_eq!(Ok(ids), general(v), "{}", std::str::from_utf8(v).unwrap());
        }
    }

    #[test]
    fn the_plain_path_leaves_every_other_shape_to_the_general_decoder() {
        for v in [
            &br#"{}"#[..],
            br#"{"feature": []}"#,
            br#"{"neigh": ["1"], "neigh": ["2"]}"#,
            br#"{"neigh": ["\u0035"]}"#,
            br#"{"neigh": [4294967296]}"#,
            br#"{"neigh": ["4294967296"]}"#,
            br#"{"neigh": ["+5"]}"#,
            br#"{"neigh": ["0004294967295"]}"#,
            br#"{"neigh": [05]}"#,
            br#"{"neigh": [5.0]}"#,
            br#"{"neigh": [5e0]}"#,
            br#"{"neigh": [-1]}"#,
            br#"{"neigh": [[1]]}"#,
            br#"{"neigh": "1"}"#,
            br#"{"neigh": [1],}"#,
            br#"{"neigh": [1,]}"#,
            br#"{"neigh": [1]} x"#,
            br#"{"neigh": [1]"#,
            br#"{"x": {"a": 1}, "neigh": [1]}"#,
            br#"{"x": [[1]], "neigh": [1]}"#,
            br#"{"x": 1.5, "neigh": [1]}"#,
            br#"{"x": 1234567890123456, "neigh": [1]}"#,
            br#"{"x": tru, "neigh": [1]}"#,
            b"{\"x\": \"caf\xc3\xa9\", \"neigh\": [1]}",
            b"{\"x\": \"a\tb\", \"neigh\": [1]}",
            b"{\"neigh\": [1]}\x0b",
        ] {
            assert_eq!(plain::neigh_list(v), None, "{}", String::from_utf8_lossy(v));
            // And the whole decoder still reads it as it did: ids or a named fault.
            let mut ids = Vec::new();
            let whole = for_each_neighbour(b"k", v, |n| ids.push(n))
                .map(|()| ids)
                .map_err(|e| e.to_string());
            assert_eq!(whole, general(v));
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
    fn bulk_ids_are_the_binary_ones_and_fail_as_the_decoder_does() {
        let binary = encode_adjacency(&[7, 3, 1 << 20]);
        let value = |value: &'static [u8]| Neighbours::Value { key: b"1", value };
        let held = Neighbours::Value {
            key: b"1",
            value: &binary,
        };
        let ids = held.le_ids().unwrap().unwrap();
        assert_eq!(le_u32s(ids).collect::<Vec<_>>(), [3, 7, 1 << 20]);
        assert_eq!(Neighbours::Ids(ids).le_ids().unwrap(), Some(ids));
        assert_eq!(value(br#"{"neigh": [1]}"#).le_ids().unwrap(), None);
        let mut short = binary.clone();
        short.pop();
        let short: &'static [u8] = short.leak();
        for junk in [short, b"ALG1", b"hello", b""] {
            let bulk = value(junk).le_ids().unwrap_err().to_string();
            let each = value(junk).for_each(|_| ()).unwrap_err().to_string();
            assert_eq!(bulk, each);
        }
        // A trailing partial id is not one.
        assert_eq!(le_u32s(&[5, 0, 0, 0, 7, 0, 0]).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn huge_count_does_not_overflow() {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(neighbours(b"1", &v).is_err());
    }
}
