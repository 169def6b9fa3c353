//! The compute-side `Store` over RESP.

use std::cell::{Cell, RefCell};

use autoloc_dataplane::{Connection, Frame};
use autoloc_functions::{Error, Store, StoreFuture, Visit};

/// How a compute-side store reads keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// All keys of one read in one MGET: one round trip per step of the function.
    Batched,
    /// One GET per key, one after another: what AutoLoc's `redisclient` did.
    PerKey,
}

/// Keys per MGET; a larger read is pipelined as several MGETs in one round trip.
const MGET_CHUNK: usize = 4096;

/// A `Store` that sends every access over a RESP connection, counting round trips.
#[derive(Debug)]
pub struct RespStore<'c> {
    conn: RefCell<&'c mut Connection>,
    mode: ReadMode,
    round_trips: Cell<u64>,
    keys_read: Cell<u64>,
}

fn store_err(e: autoloc_dataplane::Error) -> Error {
    Error::Store(e.to_string())
}

impl<'c> RespStore<'c> {
    /// A store over `conn`.
    pub fn new(conn: &'c mut Connection, mode: ReadMode) -> Self {
        RespStore {
            conn: RefCell::new(conn),
            mode,
            round_trips: Cell::new(0),
            keys_read: Cell::new(0),
        }
    }

    /// Round trips and keys read so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.round_trips.get(), self.keys_read.get())
    }

    fn read_now(&self, keys: &[Vec<u8>], visit: Visit<'_>) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.borrow_mut();
        self.keys_read.set(self.keys_read.get() + keys.len() as u64);
        match self.mode {
            ReadMode::PerKey => {
                for (i, k) in keys.iter().enumerate() {
                    let reply = conn.call(&[b"GET".as_slice(), k]).map_err(store_err)?;
                    self.round_trips.set(self.round_trips.get() + 1);
                    match reply {
                        Frame::Bulk(v) => visit(i, v.as_deref())?,
                        Frame::Error(e) if e.starts_with("WRONGTYPE") => {
                            return Err(Error::WrongType(String::from_utf8_lossy(k).into_owned()))
                        }
                        other => return Err(Error::Store(format!("GET replied {other:?}"))),
                    }
                }
            }
            ReadMode::Batched => {
                let mut cmd: Vec<&[u8]> = Vec::with_capacity(MGET_CHUNK.min(keys.len()) + 1);
                for chunk in keys.chunks(MGET_CHUNK) {
                    cmd.clear();
                    cmd.push(b"MGET");
                    cmd.extend(chunk.iter().map(Vec::as_slice));
                    conn.queue(&cmd);
                }
                conn.flush().map_err(store_err)?;
                self.round_trips.set(self.round_trips.get() + 1);
                let mut base = 0;
                for chunk in keys.chunks(MGET_CHUNK) {
                    match conn.read_frame().map_err(store_err)? {
                        Frame::Array(Some(values)) if values.len() == chunk.len() => {
                            for (j, v) in values.into_iter().enumerate() {
                                match v {
                                    Frame::Bulk(v) => visit(base + j, v.as_deref())?,
                                    other => {
                                        return Err(Error::Store(format!("MGET item {other:?}")))
                                    }
                                }
                            }
                        }
                        other => return Err(Error::Store(format!("MGET replied {other:?}"))),
                    }
                    base += chunk.len();
                }
            }
        }
        Ok(())
    }
}

impl Store for RespStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.read_now(keys, visit) })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let reply = self
                .conn
                .borrow_mut()
                .call(&[b"SET".as_slice(), key, value])
                .map_err(store_err)?;
            self.round_trips.set(self.round_trips.get() + 1);
            match reply {
                Frame::Simple(_) => Ok(()),
                other => Err(Error::Store(format!("SET replied {other:?}"))),
            }
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
