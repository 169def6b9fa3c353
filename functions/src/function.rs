//! The [`Function`] trait, its arguments and its results.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::{Error, Result, Store};

/// The future of one invocation.
pub type Invocation<'a> = Pin<Box<dyn Future<Output = Result<Output>> + 'a>>;

/// A function that can run on either side.
pub trait Function: Send + Sync + 'static {
    /// The name it is called by.
    fn name(&self) -> &str;
    /// One line of usage, e.g. `khop <start> <k>`.
    fn usage(&self) -> &str;
    /// What kind of result it returns, so a reply can be decoded without guessing.
    fn output_kind(&self) -> OutputKind;
    /// The version of a function loaded at run time (its module's SHA-256), so that a caller
    /// holding an old copy is told; `None` for a built-in.
    fn version(&self) -> Option<[u8; 32]> {
        None
    }
    /// Checks the arguments without touching data; `call` checks them too.
    fn check(&self, args: &[Vec<u8>]) -> Result<()>;
    /// Runs the function against `store`. Arguments are checked before any store access.
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a>;
}

impl fmt::Debug for dyn Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name())
            .finish()
    }
}

/// Reads a function's arguments in order; [`Args::finish`] rejects any left over.
#[derive(Debug)]
pub struct Args<'a> {
    function: &'static str,
    usage: &'static str,
    rest: std::slice::Iter<'a, Vec<u8>>,
}

impl<'a> Args<'a> {
    /// Starts reading `args` for `function`.
    pub fn new(function: &'static str, usage: &'static str, args: &'a [Vec<u8>]) -> Self {
        Args {
            function,
            usage,
            rest: args.iter(),
        }
    }

    fn arity(&self) -> Error {
        Error::Arity {
            function: self.function,
            usage: self.usage,
        }
    }

    fn bad(&self, name: &'static str, reason: impl Into<String>) -> Error {
        Error::BadArgument {
            function: self.function,
            name,
            reason: reason.into(),
        }
    }

    /// The next argument as raw bytes.
    pub fn next_bytes(&mut self) -> Result<&'a [u8]> {
        self.rest
            .next()
            .map(Vec::as_slice)
            .ok_or_else(|| self.arity())
    }

    /// The next argument, if any is left.
    pub fn next_opt(&mut self) -> Option<&'a [u8]> {
        self.rest.next().map(Vec::as_slice)
    }

    /// The next argument as an unsigned integer in `min..=max`.
    pub fn next_u64(&mut self, name: &'static str, min: u64, max: u64) -> Result<u64> {
        let raw = self.next_bytes()?;
        let text = std::str::from_utf8(raw).map_err(|_| self.bad(name, "not a number"))?;
        if text.starts_with('-') {
            return Err(self.bad(name, format!("must not be negative, got {text}")));
        }
        let n: u64 = text.parse().map_err(|_| {
            self.bad(
                name,
                format!("not a non-negative integer: '{}'", text.escape_debug()),
            )
        })?;
        if n < min || n > max {
            return Err(self.bad(name, format!("{n} is outside {min}..={max}")));
        }
        Ok(n)
    }

    /// The next argument as a vertex id.
    pub fn next_vertex(&mut self, name: &'static str) -> Result<u32> {
        self.next_u64(name, 0, u64::from(u32::MAX))
            .map(|n| n as u32)
    }

    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The remaining arguments.
    pub fn rest(&mut self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.rest.by_ref().map(Vec::as_slice)
    }

    /// Fails if any argument is left.
    pub fn finish(self) -> Result<()> {
        if self.rest.len() == 0 {
            Ok(())
        } else {
            Err(self.arity())
        }
    }
}

/// The kind of result a function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Sorted vertex ids.
    Ids,
    /// A line of text (a hex digest).
    Text,
    /// Vertex ids with scores, sorted by id.
    Scores,
    /// A sum and the number of keys it covered.
    Sum,
    /// A value, or nothing.
    Value,
    /// Several lists of vertex ids.
    Lists,
}

impl OutputKind {
    /// Every kind.
    pub const ALL: [OutputKind; 6] = [
        OutputKind::Ids,
        OutputKind::Text,
        OutputKind::Scores,
        OutputKind::Sum,
        OutputKind::Value,
        OutputKind::Lists,
    ];

    /// Its word: `ids`, `text`, `scores`, `sum`, `value`, `lists` (a guest's description,
    /// `AUTOLOC.FUNCTION LIST`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Ids => "ids",
            OutputKind::Text => "text",
            OutputKind::Scores => "scores",
            OutputKind::Sum => "sum",
            OutputKind::Value => "value",
            OutputKind::Lists => "lists",
        }
    }

    /// The kind of a word [`OutputKind::as_str`] gives.
    pub fn parse(word: &str) -> Option<OutputKind> {
        OutputKind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

/// The result of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Sorted vertex ids (`khop`).
    Ids(Vec<u32>),
    /// Text (`digest`).
    Text(String),
    /// `(vertex, score)` sorted by vertex (`pagerank`).
    Scores(Vec<(u32, f64)>),
    /// A sum over `keys` keys (`aggregate`).
    Sum { sum: f64, keys: u64 },
    /// A value or nothing (`get`).
    Value(Option<Vec<u8>>),
    /// Lists of vertex ids (`expand`: a hop, what was expanded ahead, and the hop after).
    Lists(Vec<Vec<u32>>),
}

/// A reply in the shape of the RESP protocol, independent of any Redis client or module crate.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Nil.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array.
    Array(Vec<Reply>),
}

impl Output {
    /// The kind of this output.
    pub fn kind(&self) -> OutputKind {
        match self {
            Output::Ids(_) => OutputKind::Ids,
            Output::Text(_) => OutputKind::Text,
            Output::Scores(_) => OutputKind::Scores,
            Output::Sum { .. } => OutputKind::Sum,
            Output::Value(_) => OutputKind::Value,
            Output::Lists(_) => OutputKind::Lists,
        }
    }

    /// The RESP reply `AUTOLOC.CALL` sends: ids as an array of integers, a digest as a bulk
    /// string, scores as `[id, score]` pairs, a sum as `[sum, keys]`, a value as bulk or nil,
    /// lists as an array of arrays of integers.
    /// Floats travel as their shortest round-tripping decimal text, so both sides agree exactly.
    pub fn to_reply(&self) -> Reply {
        match self {
            Output::Ids(ids) => Reply::Array(ids.iter().map(|&v| Reply::Int(v.into())).collect()),
            Output::Text(s) => Reply::Bulk(s.clone().into_bytes()),
            Output::Scores(scores) => Reply::Array(
                scores
                    .iter()
                    .map(|&(v, s)| {
                        Reply::Array(vec![
                            Reply::Int(v.into()),
                            Reply::Bulk(s.to_string().into_bytes()),
                        ])
                    })
                    .collect(),
            ),
            Output::Sum { sum, keys } => Reply::Array(vec![
                Reply::Bulk(sum.to_string().into_bytes()),
                Reply::Int(*keys as i64),
            ]),
            Output::Value(Some(v)) => Reply::Bulk(v.clone()),
            Output::Value(None) => Reply::Nil,
            Output::Lists(lists) => Reply::Array(
                lists
                    .iter()
                    .map(|ids| Reply::Array(ids.iter().map(|&v| Reply::Int(v.into())).collect()))
                    .collect(),
            ),
        }
    }

    /// Appends the compact binary encoding the data plane carries a result in (little-endian):
    /// ids as `u32`s; text and values as their bytes (a value behind a present/absent byte);
    /// scores as `(u32 id, f64 bits)` pairs; a sum as `f64 bits, u64 keys`; lists each as a
    /// `u32` length and its ids. Much cheaper to
    /// make and read than RESP for large results.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Output::Ids(ids) => put_ids(out, ids),
            Output::Text(t) => out.extend_from_slice(t.as_bytes()),
            Output::Scores(s) => {
                let at = out.len();
                out.resize(at + s.len() * 12, 0);
                for (c, (v, x)) in out[at..].chunks_exact_mut(12).zip(s) {
                    c[..4].copy_from_slice(&v.to_le_bytes());
                    c[4..].copy_from_slice(&x.to_bits().to_le_bytes());
                }
            }
            Output::Sum { sum, keys } => {
                out.extend_from_slice(&sum.to_bits().to_le_bytes());
                out.extend_from_slice(&keys.to_le_bytes());
            }
            Output::Value(None) => out.push(0),
            Output::Value(Some(v)) => {
                out.push(1);
                out.extend_from_slice(v);
            }
            Output::Lists(lists) => {
                for ids in lists {
                    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                    put_ids(out, ids);
                }
            }
        }
    }

    /// Decodes what [`Output::encode`] made for a function of `kind`.
    pub fn decode(kind: OutputKind, b: &[u8]) -> Result<Output> {
        let bad = |what: &str| Error::Malformed(format!("{kind:?} result: {what}"));
        // Fixed-size loads (`try_into`), not arrays built from indexed bytes: decoding ids that
        // way took 4x as long (not vectorized), about 1 ns per id of a guest's `khop_wasm`
        // result inside redis-server.
        let u32_at = |c: &[u8]| u32::from_le_bytes(c[..4].try_into().expect("4 bytes"));
        let u64_at = |c: &[u8]| u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
        Ok(match kind {
            OutputKind::Ids if b.len().is_multiple_of(4) => {
                Output::Ids(crate::graph::le_u32s(b).collect())
            }
            OutputKind::Text => {
                Output::Text(String::from_utf8(b.to_vec()).map_err(|_| bad("not UTF-8"))?)
            }
            OutputKind::Scores if b.len().is_multiple_of(12) => Output::Scores(
                b.chunks_exact(12)
                    .map(|c| (u32_at(c), f64::from_bits(u64_at(&c[4..]))))
                    .collect(),
            ),
            OutputKind::Sum if b.len() == 16 => Output::Sum {
                sum: f64::from_bits(u64_at(b)),
                keys: u64_at(&b[8..]),
            },
            OutputKind::Value => match b.split_first() {
                Some((0, [])) => Output::Value(None),
                Some((1, v)) => Output::Value(Some(v.to_vec())),
                _ => return Err(bad("bad presence byte")),
            },
            OutputKind::Lists => {
                let mut lists = Vec::new();
                let mut rest = b;
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let bytes = (u32::from_le_bytes(*len) as usize)
                        .checked_mul(4)
                        .filter(|&n| n <= tail.len())
                        .ok_or_else(|| bad("a list longer than the result"))?;
                    lists.push(crate::graph::le_u32s(&tail[..bytes]).collect());
                    rest = &tail[bytes..];
                }
                if !rest.is_empty() {
                    return Err(bad("a partial list length"));
                }
                Output::Lists(lists)
            }
            _ => return Err(bad(&format!("{} bytes", b.len()))),
        })
    }

    /// The output as JSON: ids as an array, scores as `[[id, score], ...]`, a sum as
    /// `{"sum":..,"keys":..}`, a value as a string (lossy UTF-8) or null, lists as arrays.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Output::Ids(ids) => json!(ids),
            Output::Text(s) => json!(s),
            Output::Scores(s) => json!(s.iter().map(|&(v, x)| json!([v, x])).collect::<Vec<_>>()),
            Output::Sum { sum, keys } => json!({ "sum": sum, "keys": keys }),
            Output::Value(v) => match v {
                Some(b) => json!(String::from_utf8_lossy(b)),
                None => serde_json::Value::Null,
            },
            Output::Lists(lists) => json!(lists),
        }
    }

    /// A 64-bit FNV-1a hash of a canonical encoding: equal outputs hash equal on either side.
    pub fn canonical_hash(&self) -> u64 {
        let mut h = Fnv::new();
        match self {
            Output::Ids(ids) => {
                h.write(&[1]);
                ids.iter().for_each(|v| h.write(&v.to_le_bytes()));
            }
            Output::Text(s) => {
                h.write(&[2]);
                h.write(s.as_bytes());
            }
            Output::Scores(s) => {
                h.write(&[3]);
                for (v, x) in s {
                    h.write(&v.to_le_bytes());
                    h.write(&x.to_bits().to_le_bytes());
                }
            }
            Output::Sum { sum, keys } => {
                h.write(&[4]);
                h.write(&sum.to_bits().to_le_bytes());
                h.write(&keys.to_le_bytes());
            }
            Output::Value(v) => {
                h.write(&[5]);
                if let Some(b) = v {
                    h.write(&[1]);
                    h.write(b);
                }
            }
            Output::Lists(lists) => {
                h.write(&[6]);
                for ids in lists {
                    h.write(&(ids.len() as u32).to_le_bytes());
                    ids.iter().for_each(|v| h.write(&v.to_le_bytes()));
                }
            }
        }
        h.finish()
    }
}

/// Appends `ids` as little-endian `u32`s, sized once and written in place (an append per id
/// checked the capacity each time).
fn put_ids(out: &mut Vec<u8>, ids: &[u32]) {
    let at = out.len();
    out.resize(at + ids.len() * 4, 0);
    for (c, v) in out[at..].chunks_exact_mut(4).zip(ids) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    /// A fresh hasher.
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    /// Hashes `bytes` into the state.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_kinds_round_trip_as_words() {
        for k in OutputKind::ALL {
            assert_eq!(OutputKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(OutputKind::parse("Ids"), None);
    }

    impl Output {
        /// Decodes what [`Output::to_reply`] made (the tests' check that it loses nothing).
        fn from_reply(kind: OutputKind, reply: Reply) -> Result<Output> {
            let bad = |what: &str| Error::Malformed(format!("reply for {kind:?}: {what}"));
            let id = |r: &Reply| match r {
                Reply::Int(n) => u32::try_from(*n).map_err(|_| bad("id out of range")),
                _ => Err(bad("expected an integer id")),
            };
            let float = |r: &Reply| match r {
                Reply::Bulk(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| bad("expected a number")),
                _ => Err(bad("expected a number")),
            };
            Ok(match (kind, reply) {
                (OutputKind::Ids, Reply::Array(items)) => {
                    Output::Ids(items.iter().map(id).collect::<Result<_>>()?)
                }
                (OutputKind::Text, Reply::Bulk(b)) => {
                    Output::Text(String::from_utf8(b).map_err(|_| bad("text is not UTF-8"))?)
                }
                (OutputKind::Scores, Reply::Array(items)) => Output::Scores(
                    items
                        .iter()
                        .map(|pair| match pair {
                            Reply::Array(p) if p.len() == 2 => Ok((id(&p[0])?, float(&p[1])?)),
                            _ => Err(bad("expected [id, score]")),
                        })
                        .collect::<Result<_>>()?,
                ),
                (OutputKind::Sum, Reply::Array(p)) if p.len() == 2 => match p[1] {
                    Reply::Int(keys) if keys >= 0 => Output::Sum {
                        sum: float(&p[0])?,
                        keys: keys as u64,
                    },
                    _ => return Err(bad("expected a key count")),
                },
                (OutputKind::Value, Reply::Bulk(b)) => Output::Value(Some(b)),
                (OutputKind::Value, Reply::Nil) => Output::Value(None),
                (OutputKind::Lists, Reply::Array(lists)) => Output::Lists(
                    lists
                        .iter()
                        .map(|l| match l {
                            Reply::Array(items) => items.iter().map(id).collect::<Result<_>>(),
                            _ => Err(bad("expected a list")),
                        })
                        .collect::<Result<_>>()?,
                ),
                (_, other) => return Err(bad(&format!("{other:?}"))),
            })
        }
    }

    fn samples() -> Vec<Output> {
        vec![
            Output::Ids(vec![1, 5, 9]),
            Output::Text("abc".into()),
            Output::Scores(vec![(1, 0.1 + 0.2), (3, 1e-17)]),
            Output::Sum { sum: -2.5, keys: 3 },
            Output::Value(Some(b"\x00\xff".to_vec())),
            Output::Value(None),
            Output::Lists(vec![vec![2, 4], vec![], vec![7]]),
            Output::Lists(vec![]),
        ]
    }

    #[test]
    fn reply_round_trips_exactly() {
        for out in samples() {
            let back = Output::from_reply(out.kind(), out.to_reply()).unwrap();
            assert_eq!(back, out);
            assert_eq!(back.canonical_hash(), out.canonical_hash());
        }
    }

    #[test]
    fn binary_encoding_round_trips_exactly() {
        for out in samples() {
            let mut b = Vec::new();
            out.encode(&mut b);
            assert_eq!(Output::decode(out.kind(), &b).unwrap(), out);
        }
        // Ids as little-endian words after what the buffer held, whatever their count.
        for n in 0..10u32 {
            let ids: Vec<u32> = (0..n)
                .map(|i| i.wrapping_mul(0x0101_0103) ^ 0xdead)
                .collect();
            let mut b = vec![9];
            Output::Ids(ids.clone()).encode(&mut b);
            let want: Vec<u8> = std::iter::once(9)
                .chain(ids.iter().flat_map(|i| i.to_le_bytes()))
                .collect();
            assert_eq!(b, want, "{n} ids");
        }
        assert!(Output::decode(OutputKind::Ids, &[1, 2, 3]).is_err());
        assert!(Output::decode(OutputKind::Value, &[2]).is_err());
        assert!(Output::decode(OutputKind::Sum, &[0; 15]).is_err());
        // A list longer than what follows, or a length cut short.
        assert!(Output::decode(OutputKind::Lists, &[2, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(Output::decode(OutputKind::Lists, &[0, 0, 0, 0, 1]).is_err());
        assert!(Output::decode(OutputKind::Lists, &[255; 4]).is_err());
    }

    #[test]
    fn wrong_shape_is_an_error() {
        assert!(Output::from_reply(OutputKind::Ids, Reply::Int(3)).is_err());
        assert!(Output::from_reply(OutputKind::Ids, Reply::Array(vec![Reply::Int(-1)])).is_err());
    }

    #[test]
    fn args_reject_junk() {
        let raw = vec![
            b"-1".to_vec(),
            b"x\xff".to_vec(),
            b"99".to_vec(),
            b"1".to_vec(),
        ];
        let mut a = Args::new("f", "f <a>", &raw);
        assert!(matches!(
            a.next_u64("a", 0, 10),
            Err(Error::BadArgument { .. })
        ));
        assert!(matches!(
            a.next_u64("a", 0, 10),
            Err(Error::BadArgument { .. })
        ));
        assert!(matches!(
            a.next_u64("a", 0, 10),
            Err(Error::BadArgument { .. })
        ));
        assert!(matches!(
            Args::new("f", "", &raw[3..]).finish(),
            Err(Error::Arity { .. })
        ));
    }
}
