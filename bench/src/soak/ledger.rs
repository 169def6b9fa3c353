//! What the conductor knows from its workers: every acknowledged write, operations and errors
//! by code (in total and per second of the run), and reads that saw less than was acknowledged;
//! and the check of acknowledged writes against what a server holds.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use autoloc_dataplane::{Connection, Frame};
use serde::Serialize;

use super::protocol::{decode_value, Line, Op};

/// Error messages kept per code, as examples.
const MESSAGES_PER_CODE: usize = 4;
/// Keys of one `MGET` when checking.
const CHECK_BATCH: usize = 512;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
}

/// Everything the workers reported.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Per key, the highest value (sequence number) the server acknowledged.
    pub acked: HashMap<String, u64>,
    /// Acknowledged writes reported.
    pub acks: u64,
    /// Successful operations by operation.
    pub ok: BTreeMap<Op, u64>,
    /// Failed operations by error code.
    pub errors: BTreeMap<String, u64>,
    /// Failed operations by operation, then code.
    pub errors_by_op: BTreeMap<Op, BTreeMap<String, u64>>,
    /// The first few distinct messages of each code.
    pub messages: BTreeMap<String, Vec<String>>,
    /// Reads that returned less than the reader had been acknowledged.
    pub stale_reads: u64,
    /// The first few of them.
    pub stale_examples: Vec<String>,
    /// Per second of the run.
    pub seconds: Vec<Second>,
    /// Per worker slot: when an operation of it last succeeded, and the longest time it went
    /// without one (seconds into the run).
    pub last_ok: BTreeMap<usize, f64>,
    pub longest_stall: BTreeMap<usize, f64>,
}

impl Ledger {
    /// Notes that a process of worker slot `slot` started at `t` seconds into the run: its
    /// stall clock runs from then if the slot never succeeded yet.
    pub fn started(&mut self, slot: usize, t: f64) {
        self.last_ok.entry(slot).or_insert(t);
    }

    /// Notes that an operation of `slot` succeeded at `t`.
    fn succeeded(&mut self, slot: usize, t: f64) {
        let last = self.last_ok.insert(slot, t).unwrap_or(t);
        let stall = self.longest_stall.entry(slot).or_insert(0.0);
        *stall = stall.max(t - last);
    }

    /// Ends every slot's stall clock at `t` (the workers stopped).
    pub fn close(&mut self, t: f64) {
        let slots: Vec<usize> = self.last_ok.keys().copied().collect();
        for slot in slots {
            self.succeeded(slot, t);
        }
    }

    /// Takes one line from worker slot `slot` that arrived `t` seconds into the run.
    pub fn apply(&mut self, slot: usize, t: f64, line: Line) {
        let second = t as usize;
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, Second::default());
        }
        match line {
            Line::Ready { .. } => {}
            Line::Ack { key, seq } => {
                self.acks += 1;
                let max = self.acked.entry(key).or_insert(0);
                *max = (*max).max(seq);
            }
            Line::Stale { key, got, acked } => {
                self.stale_reads += 1;
                if self.stale_examples.len() < 10 {
                    self.stale_examples.push(format!(
                        "{key}: read {}, acknowledged {acked}",
                        got.map_or("nothing".to_string(), |g| g.to_string())
                    ));
                }
            }
            Line::Ok { op, n } => {
                if op != Op::Connect && n > 0 {
                    self.succeeded(slot, t);
                }
                *self.ok.entry(op).or_default() += n;
                self.seconds[second].ok += n;
            }
            Line::Err { op, code, n } => {
                *self.errors.entry(code.clone()).or_default() += n;
                *self
                    .errors_by_op
                    .entry(op)
                    .or_default()
                    .entry(code)
                    .or_default() += n;
                self.seconds[second].errors += n;
            }
            Line::Msg { code, text } => {
                let kept = self.messages.entry(code).or_default();
                if kept.len() < MESSAGES_PER_CODE && !kept.contains(&text) {
                    kept.push(text);
                }
            }
        }
    }

    /// Operations that succeeded, in all.
    pub fn ops_ok(&self) -> u64 {
        self.ok.values().sum()
    }

    /// Operations that failed, in all.
    pub fn ops_failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What a server holds against what was acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Keys checked (each with its highest acknowledged value).
    pub keys: u64,
    /// Keys that hold no value, or one older than acknowledged: lost acknowledged writes.
    pub lost: u64,
    /// Keys that hold something that is no value a worker writes.
    pub corrupt: u64,
    /// The first few of both.
    pub examples: Vec<String>,
}

/// Whether `present` (what the server holds) keeps the acknowledged value `acked` or a later
/// one: `None` if so, else what is wrong.
pub fn judge(acked: u64, present: Option<&[u8]>) -> Option<Verdict> {
    match present {
        None => Some(Verdict::Lost { got: None }),
        Some(v) => match decode_value(v) {
            None => Some(Verdict::Corrupt),
            Some(got) if got < acked => Some(Verdict::Lost { got: Some(got) }),
            Some(_) => None,
        },
    }
}

/// What is wrong with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An acknowledged value is gone: the key holds an older one, or nothing.
    Lost { got: Option<u64> },
    /// The key holds something no worker wrote.
    Corrupt,
}

/// Checks every key of `acked` over `conn` (a plain connection to the server), `MGET` by
/// `MGET`.
pub fn check(conn: &mut Connection, acked: &HashMap<String, u64>) -> anyhow::Result<Check> {
    let mut keys: Vec<(&String, &u64)> = acked.iter().collect();
    keys.sort();
    let mut out = Check::default();
    for chunk in keys.chunks(CHECK_BATCH) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(chunk.iter().map(|(k, _)| k.as_bytes()));
        let values = match conn.call(&args).context("MGET the acknowledged keys")? {
            Frame::Array(Some(values)) if values.len() == chunk.len() => values,
            other => bail!("MGET of {} keys answered {other:?}", chunk.len()),
        };
        for ((key, &want), value) in chunk.iter().zip(values) {
            out.keys += 1;
            let present = match &value {
                Frame::Bulk(v) => v.as_deref(),
                other => bail!("MGET answered {other:?} for {key}"),
            };
            let Some(verdict) = judge(want, present) else {
                continue;
            };
            match verdict {
                Verdict::Lost { .. } => out.lost += 1,
                Verdict::Corrupt => out.corrupt += 1,
            }
            if out.examples.len() < 10 {
                out.examples.push(format!(
                    "{key}: acknowledged {want}, holds {}",
                    present.map_or("nothing".to_string(), |v| String::from_utf8_lossy(v)
                        .into_owned())
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::protocol::encode_value;
    use super::*;

    #[test]
    fn acknowledged_values_or_later_ones_pass() {
        let v = |s: u64| encode_value(s).into_bytes();
        assert_eq!(judge(5, Some(&v(5))), None);
        assert_eq!(judge(5, Some(&v(9))), None);
        assert_eq!(judge(5, Some(&v(4))), Some(Verdict::Lost { got: Some(4) }));
        assert_eq!(judge(5, None), Some(Verdict::Lost { got: None }));
        assert_eq!(judge(5, Some(b"junk")), Some(Verdict::Corrupt));
    }

    #[test]
    fn the_ledger_keeps_the_highest_ack_and_counts_by_second() {
        let mut l = Ledger::default();
        l.started(0, 0.0);
        for (line, t) in [
            ("ack k 3", 0.1),
            ("ack k 2", 0.2),
            ("ok set 4", 1.5),
            ("err get IOERR 2", 2.0),
            ("msg IOERR connection refused", 2.1),
            ("msg IOERR connection refused", 2.2),
            ("stale k none 3", 2.3),
            ("ok connect 1", 5.0),
            ("ok get 1", 6.0),
        ] {
            l.apply(0, t, Line::parse(line).unwrap());
        }
        l.close(6.5);
        assert_eq!(l.longest_stall[&0], 4.5, "a connect is no progress");
        assert_eq!(l.acked["k"], 3);
        assert_eq!(l.acks, 2);
        assert_eq!((l.ops_ok(), l.ops_failed()), (6, 2));
        assert_eq!(l.seconds[1], Second { ok: 4, errors: 0 });
        assert_eq!(l.seconds[2], Second { ok: 0, errors: 2 });
        assert_eq!(l.messages["IOERR"].len(), 1);
        assert_eq!(l.stale_reads, 1);
        assert_eq!(l.errors_by_op[&Op::Get]["IOERR"], 2);
    }
}
