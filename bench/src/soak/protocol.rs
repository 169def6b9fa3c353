//! What a worker process tells the conductor, one line at a time on its stdout.
//!
//! An acknowledged write is reported at once (and flushed) before the worker starts its next
//! operation, so a worker killed at any moment has told the conductor of every write the server
//! acknowledged to it, except possibly the one it was acknowledged last. Counts are reported as
//! deltas every 100 ms and when the worker stops; a killed worker loses at most the last 100 ms.
//! A line cut short by a kill does not parse and is dropped.

use std::fmt;

/// The operations a worker runs, as they are named in lines and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Setting up a runtime and its data-plane link (after a start or an I/O error).
    Connect,
    /// `Runtime::set` of one of the worker's own keys to its next value.
    Set,
    /// `Runtime::get` of one of its own keys, checked against the last acknowledged value.
    Get,
    /// `Runtime::mget` of graph vertices and one of its own keys.
    Mget,
    /// `khop <v> 2` storage-side (pushed back and finished here if the storage side says so).
    KhopStorage,
    /// `khop <v> 2` compute-side.
    KhopCompute,
    /// `khop <v> 2` where the placement table says.
    KhopAuto,
    /// `digest md5 3` storage-side.
    Digest,
    /// `pagerank <v> 5` on either side.
    Pagerank,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 9] = [
        Op::Connect,
        Op::Set,
        Op::Get,
        Op::Mget,
        Op::KhopStorage,
        Op::KhopCompute,
        Op::KhopAuto,
        Op::Digest,
        Op::Pagerank,
    ];

    /// Its name in lines and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Set => "set",
            Op::Get => "get",
            Op::Mget => "mget",
            Op::KhopStorage => "khop-storage",
            Op::KhopCompute => "khop-compute",
            Op::KhopAuto => "khop-auto",
            Op::Digest => "digest",
            Op::Pagerank => "pagerank",
        }
    }

    /// The operation of a name.
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value a worker writes as its `seq`-th write: fixed width, so values sort as numbers.
pub fn encode_value(seq: u64) -> String {
    format!("{seq:020}")
}

/// The sequence number a value stands for, if it is one of [`encode_value`]'s.
pub fn decode_value(v: &[u8]) -> Option<u64> {
    if v.len() != 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// One line of a worker's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The worker runs (its process id).
    Ready { pid: u32 },
    /// The server acknowledged `key` = value `seq`.
    Ack { key: String, seq: u64 },
    /// A read of `key` returned less than the value acknowledged last (`got`: none or older).
    Stale {
        key: String,
        got: Option<u64>,
        acked: u64,
    },
    /// `n` more operations `op` succeeded.
    Ok { op: Op, n: u64 },
    /// `n` more operations `op` failed with `code` (an `ErrorCode` word such as `IOERR`).
    Err { op: Op, code: String, n: u64 },
    /// An example of an error with `code`: its message (the first few of each code).
    Msg { code: String, text: String },
}

impl Line {
    /// The line, without its newline; a message is made one line.
    pub fn encode(&self) -> String {
        match self {
            Line::Ready { pid } => format!("ready {pid}"),
            Line::Ack { key, seq } => format!("ack {key} {seq}"),
            Line::Stale { key, got, acked } => format!(
                "stale {key} {} {acked}",
                got.map_or("none".to_string(), |g| g.to_string())
            ),
            Line::Ok { op, n } => format!("ok {op} {n}"),
            Line::Err { op, code, n } => format!("err {op} {code} {n}"),
            Line::Msg { code, text } => {
                let text: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("msg {code} {text}")
            }
        }
    }

    /// Parses a line; `None` for one that is not whole (cut by a kill) or not a line at all.
    pub fn parse(line: &str) -> Option<Line> {
        let mut w = line.splitn(2, ' ');
        let (kind, rest) = (w.next()?, w.next().unwrap_or(""));
        let words: Vec<&str> = rest.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().ok();
        Some(match (kind, words.as_slice()) {
            ("ready", [pid]) => Line::Ready {
                pid: pid.parse().ok()?,
            },
            ("ack", [key, seq]) => Line::Ack {
                key: key.to_string(),
                seq: num(seq)?,
            },
            ("stale", [key, got, acked]) => Line::Stale {
                key: key.to_string(),
                got: if *got == "none" {
                    None
                } else {
                    Some(num(got)?)
                },
                acked: num(acked)?,
            },
            ("ok", [op, n]) => Line::Ok {
                op: Op::parse(op)?,
                n: num(n)?,
            },
            ("err", [op, code, n]) => Line::Err {
                op: Op::parse(op)?,
                code: code.to_string(),
                n: num(n)?,
            },
            ("msg", _) => {
                let (code, text) = rest.split_once(' ')?;
                Line::Msg {
                    code: code.to_string(),
                    text: text.to_string(),
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for line in [
            Line::Ready { pid: 42 },
            Line::Ack {
                key: "soak:s1:i2:3".into(),
                seq: 17,
            },
            Line::Stale {
                key: "k".into(),
                got: None,
                acked: 5,
            },
            Line::Stale {
                key: "k".into(),
                got: Some(4),
                acked: 5,
            },
            Line::Ok {
                op: Op::KhopStorage,
                n: 9,
            },
            Line::Err {
                op: Op::Set,
                code: "NOPERM".into(),
                n: 2,
            },
            Line::Msg {
                code: "IOERR".into(),
                text: "redis at x: connect: refused".into(),
            },
        ] {
            assert_eq!(Line::parse(&line.encode()), Some(line.clone()), "{line:?}");
        }
        let multi = Line::Msg {
            code: "ERR".into(),
            text: "two\nlines".into(),
        };
        assert_eq!(multi.encode(), "msg ERR two lines");
    }

    #[test]
    fn a_line_cut_short_is_dropped() {
        for cut in [
            "",
            "ack",
            "ack soak:s1:i2:3",
            "ok set",
            "err set IOERR",
            "ok nope 1",
        ] {
            assert_eq!(Line::parse(cut), None, "{cut:?}");
        }
    }

    #[test]
    fn values_sort_as_numbers() {
        assert_eq!(decode_value(encode_value(12).as_bytes()), Some(12));
        assert!(encode_value(9) < encode_value(10));
        assert_eq!(decode_value(b"12"), None);
        assert_eq!(decode_value(b"0000000000000000001x"), None);
    }
}
