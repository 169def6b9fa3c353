//! The `Store` over Redis's own keyspace, used while the module holds Redis's lock.

use std::cell::Cell;
use std::time::{Duration, Instant};

use autoloc_functions::{Error, Store, StoreFuture, Visit};
use redis_module::{Context, KeyType};

/// Keys read between two budget checks inside one large read.
const CHECK_EVERY: usize = 64;

/// Reads values in place: each key is opened read-only and its string borrowed through DMA, so
/// a function decodes Redis's own bytes with no copy. Every access checks the budget; an
/// invocation past it fails with [`Error::Pushback`] so the caller runs it compute-side.
pub struct KeyspaceStore<'c> {
    ctx: &'c Context,
    started: Instant,
    budget: Duration,
    keys_read: Cell<u64>,
    bytes_read: Cell<u64>,
    /// Calls of `read` (store accesses).
    accesses: Cell<u64>,
    /// The keys read, kept only when asked for (to hand the read set back on a pushback).
    read_keys: Option<std::cell::RefCell<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for KeyspaceStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyspaceStore")
            .field("budget", &self.budget)
            .field("keys_read", &self.keys_read.get())
            .finish()
    }
}

impl<'c> KeyspaceStore<'c> {
    /// A store for one invocation that may run for `budget` from now.
    pub fn new(ctx: &'c Context, budget: Duration) -> Self {
        KeyspaceStore {
            ctx,
            started: Instant::now(),
            budget,
            keys_read: Cell::new(0),
            bytes_read: Cell::new(0),
            accesses: Cell::new(0),
            read_keys: None,
        }
    }

    /// Also remembers the names of the keys read ([`KeyspaceStore::read_keys`]).
    pub fn remembering_reads(mut self) -> Self {
        self.read_keys = Some(std::cell::RefCell::new(Vec::new()));
        self
    }

    /// The keys read so far, if remembered.
    pub fn read_keys(&self) -> Vec<Vec<u8>> {
        self.read_keys
            .as_ref()
            .map(|r| r.borrow().clone())
            .unwrap_or_default()
    }

    /// Keys and value bytes read so far.
    pub fn reads(&self) -> (u64, u64) {
        (self.keys_read.get(), self.bytes_read.get())
    }

    /// Store accesses (`read` calls) so far: the round trips the run would have taken
    /// compute-side.
    pub fn accesses(&self) -> u64 {
        self.accesses.get()
    }

    fn check_budget(&self) -> Result<(), Error> {
        let spent = self.started.elapsed();
        if spent > self.budget {
            return Err(Error::Pushback {
                budget_us: self.budget.as_micros() as u64,
                spent_us: spent.as_micros() as u64,
            });
        }
        Ok(())
    }

    fn read_now(&self, keys: &[Vec<u8>], visit: Visit<'_>) -> Result<(), Error> {
        self.check_budget()?;
        self.accesses.set(self.accesses.get() + 1);
        for (i, k) in keys.iter().enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                self.check_budget()?;
            }
            let name = self.ctx.create_string(k.as_slice());
            let key = self.ctx.open_key(&name);
            self.keys_read.set(self.keys_read.get() + 1);
            if let Some(r) = &self.read_keys {
                r.borrow_mut().push(k.clone());
            }
            match key.key_type() {
                KeyType::Empty => visit(i, None)?,
                KeyType::String => {
                    let value = key.read().map_err(|e| {
                        Error::Store(format!("read {}: {e}", String::from_utf8_lossy(k)))
                    })?;
                    let value = value.unwrap_or(&[]);
                    self.bytes_read
                        .set(self.bytes_read.get() + value.len() as u64);
                    visit(i, Some(value))?;
                }
                _ => return Err(Error::WrongType(String::from_utf8_lossy(k).into_owned())),
            }
        }
        Ok(())
    }
}

impl Store for KeyspaceStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.read_now(keys, visit) })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check_budget()?;
            // Through SET, so the write is replicated and notifies keyspace listeners.
            self.ctx
                .call("SET", &[key, value][..])
                .map(drop)
                .map_err(|e| Error::Store(format!("SET {}: {e}", String::from_utf8_lossy(key))))
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.check_budget() })
    }
}
