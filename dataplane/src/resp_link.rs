//! The RESP transport as a [`ClientLink`]: wire requests become Redis commands on a plain
//! connection, and their replies become wire replies, so the runtime drives every transport
//! through one path (one session, one outcome, one way to record it).
//!
//! | request | command | reply |
//! |---|---|---|
//! | `Get` | `GET key` | `Value` |
//! | `MultiGet` | `AUTOLOC.MGET key...` (`MGET` under the module's read rule) | `Values` |
//! | `Set` | `SET key value` | `Ok` |
//! | `MultiSet` | `MSET key value...` (atomic) | `Ok` |
//! | `Invoke` | `AUTOLOC.INVOKE function args...` (its bulk reply is the wire frame) | `InvokeReply` or `Pushback` |
//!
//! On a node of a Redis Cluster ([`RespLink::per_slot`]), a `MultiGet` or `MultiSet` whose keys
//! are of several slots is sent as one `AUTOLOC.MGET` or `MSET` per slot, pipelined (Redis
//! refuses keys of several slots in one command with `CROSSSLOT`, as a cluster client splits
//! them), and the replies gathered into one; a `MultiSet` is then atomic per slot only.
//!
//! An error reply `-CODE message` becomes an `Error` frame with that code (Redis's own
//! `NOAUTH`/`NOPERM` as `NOPERM`, its other words as `ERR`). Commands are pipelined: everything
//! queued leaves in one write at `flush`, and replies come back in order.

use std::collections::VecDeque;
use std::time::Duration;

use autoloc_functions::Error as FnError;

use crate::link::ClientLink;
use crate::resp::{Connection, Frame as Resp};
use crate::wire::{self, ErrorCode, Frame, Limits, List, Message};
use crate::{Error, Result};

/// What the reply to a queued command is translated into.
#[derive(Debug)]
enum Expect {
    Value {
        key: Vec<u8>,
    },
    Values {
        count: usize,
    },
    Ok,
    Invoked,
    /// A `MultiGet` sent as one `AUTOLOC.MGET` per slot: each command's keys' places.
    Slotted {
        places: Vec<Vec<usize>>,
        count: usize,
    },
    /// A `MultiSet` sent as this many `MSET`s, one per slot.
    SlottedOk {
        commands: usize,
    },
}

/// A [`ClientLink`] over a RESP connection.
#[derive(Debug)]
pub struct RespLink {
    conn: Connection,
    /// Commands sent or queued, oldest first, with the request id each answers.
    pending: VecDeque<(u64, Expect)>,
    /// Whether multi-key requests are split by slot (a node of a cluster).
    per_slot: bool,
}

impl RespLink {
    /// A link over `conn` (authenticated and on its database already).
    pub fn new(conn: Connection) -> RespLink {
        RespLink {
            conn,
            pending: VecDeque::new(),
            per_slot: false,
        }
    }

    /// Splits multi-key requests by slot, for a node of a Redis Cluster.
    pub fn per_slot(mut self, per_slot: bool) -> RespLink {
        self.per_slot = per_slot;
        self
    }
}

/// The places of `keys` grouped by slot; `None` if they are all of one slot.
fn by_slot<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Option<Vec<Vec<usize>>> {
    let groups = crate::slot::group(keys.map(crate::slot::key_slot));
    (groups.len() > 1).then(|| groups.into_iter().map(|(_, p)| p).collect())
}

impl ClientLink for RespLink {
    fn queue(&mut self, request_id: u64, message: &Message<'_>) -> Result<()> {
        let expect = match *message {
            Message::Get { key } => {
                self.conn.queue(&[b"GET".as_slice(), key]);
                Expect::Value { key: key.to_vec() }
            }
            Message::MultiGet { keys } if !keys.is_empty() => self.queue_many(message),
            Message::Set { key, value } => {
                self.conn.queue(&[b"SET".as_slice(), key, value]);
                Expect::Ok
            }
            Message::MultiSet { pairs } if !pairs.is_empty() => self.queue_many(message),
            Message::CheckVersion { function, version } => {
                self.conn.queue(&[
                    b"AUTOLOC.FUNCTION".as_slice(),
                    b"CHECK",
                    function.as_bytes(),
                    version,
                ]);
                Expect::Ok
            }
            Message::Invoke { function, args } => {
                let mut cmd: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
                cmd.extend([b"AUTOLOC.INVOKE".as_slice(), function.as_bytes()]);
                cmd.extend(args.iter());
                self.conn.queue(&cmd);
                Expect::Invoked
            }
            ref other => {
                return Err(Error::Protocol(format!(
                    "{:?} is not a request the RESP link carries",
                    other.kind()
                )))
            }
        };
        self.pending.push_back((request_id, expect));
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.conn.flush()
    }

    /// Reads the replies to everything sent. A RESP connection cannot be looked at without
    /// reading it, so this waits for them (each read bounded by the connection's timeout).
    fn poll(&mut self, f: &mut dyn FnMut(Frame<'_>)) -> Result<usize> {
        self.conn.flush()?;
        let mut n = 0;
        while let Some((id, expect)) = self.pending.pop_front() {
            let reply = match expect {
                Expect::Slotted { ref places, count } => {
                    let reply = self.gather(places, count)?;
                    translate(id, &Expect::Values { count }, reply, f)?;
                    n += 1;
                    continue;
                }
                Expect::SlottedOk { commands } => {
                    let mut reply = Resp::Simple("OK".into());
                    for _ in 0..commands {
                        let r = self.conn.read_frame()?;
                        if matches!(r, Resp::Error(_)) && !matches!(reply, Resp::Error(_)) {
                            reply = r;
                        }
                    }
                    reply
                }
                _ => self.conn.read_frame()?,
            };
            translate(id, &expect, reply, f)?;
            n += 1;
        }
        Ok(n)
    }

    fn wait(&mut self, _timeout: Duration) -> Result<()> {
        // Nothing to wait for: `poll` has read every reply due.
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        // A dead server shows as an error of the next read.
        false
    }

    fn max_frame(&self) -> usize {
        wire::DEFAULT_MAX_PAYLOAD
    }
}

impl RespLink {
    /// Queues a `MultiGet` as `AUTOLOC.MGET`, a `MultiSet` as `MSET`: one command, or on a
    /// cluster one per slot of its keys.
    fn queue_many(&mut self, message: &Message<'_>) -> Expect {
        let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = match *message {
            Message::MultiGet { keys } => (keys.iter().collect(), Vec::new()),
            Message::MultiSet { pairs } => pairs.iter().unzip(),
            _ => (Vec::new(), Vec::new()),
        };
        let groups = match self.per_slot {
            true => by_slot(keys.iter().copied()),
            false => None,
        };
        let command: &[u8] = if values.is_empty() {
            b"AUTOLOC.MGET"
        } else {
            b"MSET"
        };
        let mut queue = |places: &mut dyn Iterator<Item = usize>| {
            let mut args: Vec<&[u8]> = vec![command];
            for i in places {
                args.push(keys[i]);
                if let Some(v) = values.get(i) {
                    args.push(v);
                }
            }
            self.conn.queue(&args);
        };
        match &groups {
            Some(groups) => groups.iter().for_each(|g| queue(&mut g.iter().copied())),
            None => queue(&mut (0..keys.len())),
        }
        match (groups, values.is_empty()) {
            (None, true) => Expect::Values { count: keys.len() },
            (None, false) => Expect::Ok,
            (Some(places), true) => Expect::Slotted {
                places,
                count: keys.len(),
            },
            (Some(places), false) => Expect::SlottedOk {
                commands: places.len(),
            },
        }
    }

    /// Reads the replies of a `MultiGet` sent per slot and puts the values back in the order of
    /// its keys: one reply, or the first error.
    fn gather(&mut self, places: &[Vec<usize>], count: usize) -> Result<Resp> {
        let mut values: Vec<Resp> = (0..count).map(|_| Resp::Bulk(None)).collect();
        let mut failed = None;
        for group in places {
            match self.conn.read_frame()? {
                Resp::Array(Some(items)) if items.len() == group.len() => {
                    for (&place, item) in group.iter().zip(items) {
                        values[place] = item;
                    }
                }
                other => {
                    failed.get_or_insert(other);
                }
            }
        }
        Ok(failed.unwrap_or(Resp::Array(Some(values))))
    }
}

/// Hands `f` the wire reply to request `id` that the RESP `reply` stands for.
fn translate(id: u64, expect: &Expect, reply: Resp, f: &mut dyn FnMut(Frame<'_>)) -> Result<()> {
    let mut give = |message: Message<'_>| {
        f(Frame {
            request_id: id,
            message,
        })
    };
    let error = |e: FnError| (e.code(), e.to_string());
    let failed = match (expect, reply) {
        (Expect::Value { key }, Resp::Error(e)) => {
            let e = FnError::from_resp(&e);
            // Name the key, as the storage side does.
            Some(match e.code() {
                ErrorCode::WrongType => error(FnError::wrong_type(key)),
                _ => error(e),
            })
        }
        (_, Resp::Error(e)) => Some(error(FnError::from_resp(&e))),
        (Expect::Value { .. }, Resp::Bulk(value)) => {
            give(Message::Value {
                value: value.as_deref(),
            });
            None
        }
        (Expect::Values { count }, Resp::Array(Some(items))) if items.len() == *count => {
            let values: Option<Vec<Option<&[u8]>>> = items
                .iter()
                .map(|item| match item {
                    Resp::Bulk(v) => Some(v.as_deref()),
                    _ => None,
                })
                .collect();
            match values {
                Some(values) => {
                    give(Message::Values {
                        values: List::new(&values),
                    });
                    None
                }
                None => Some(error(FnError::Malformed(
                    "AUTOLOC.MGET replied a non-string item".into(),
                ))),
            }
        }
        (Expect::Ok, Resp::Simple(_)) => {
            give(Message::Ok);
            None
        }
        (Expect::Invoked, Resp::Bulk(Some(frame))) => {
            match wire::decode(&frame, &Limits::default()) {
                Ok((frame, _))
                    if matches!(
                        frame.message,
                        Message::InvokeReply { .. }
                            | Message::Pushback { .. }
                            | Message::Error { .. }
                    ) =>
                {
                    give(frame.message);
                    None
                }
                Ok((frame, _)) => Some(error(FnError::Malformed(format!(
                    "AUTOLOC.INVOKE replied a {:?} frame",
                    frame.message.kind()
                )))),
                Err(e) => Some(error(FnError::Malformed(format!(
                    "AUTOLOC.INVOKE reply: {e}"
                )))),
            }
        }
        (expect, other) => Some(error(FnError::Malformed(format!(
            "unexpected reply {other:?} for {expect:?}"
        )))),
    };
    if let Some((code, message)) = failed {
        give(Message::Error {
            code,
            message: &message,
        });
    }
    Ok(())
}
