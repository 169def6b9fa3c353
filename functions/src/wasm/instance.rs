//! One instance's side of an invocation: [`Run`], the state its imports see; the [`Exchange`]
//! between a suspended guest and its invocation's future ([`Request`] and answer); and
//! [`Ready`], an instance with what one invocation uses of it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{Memory, Store as WasmStore, StoreLimits};

use crate::Error;

/// A store error that ends the invocation (it reaches the caller unchanged).
#[derive(Debug)]
pub(super) struct Failed(pub(super) Error);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failed {}

/// What a suspended guest asks of the store.
#[derive(Debug)]
pub(super) enum Request {
    /// Read these keys.
    Read(Vec<Vec<u8>>),
    /// Read the vertices at these keys and decode their neighbours.
    Neighbours(Vec<Vec<u8>>),
    /// Write a key.
    Write(Vec<u8>, Vec<u8>),
    /// Its deadline passed: checkpoint (storage-side, the budget check).
    Checkpoint,
}

/// Between a guest's imports (on its fiber) and its invocation's future: the request the guest
/// is suspended on, the answer, and the deadline the epoch callback enforces.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) request: Option<Request>,
    /// For a read, the values encoded as the ABI says; empty for the others.
    pub(super) answer: Option<Result<Vec<u8>, Error>>,
    pub(super) deadline: Instant,
    /// The buffer the next read's answer is encoded into, back from the last one once copied
    /// into the guest: encoded into a new vector, a level of `khop_wasm` on R-MAT grew it by
    /// doubling, copying its ids three times over where one copy is needed.
    pub(super) spare: Vec<u8>,
}

/// The largest answer buffer an instance keeps for its next read.
const SPARE_MAX: usize = 1 << 20;

impl Exchange {
    pub(super) fn new(deadline: Instant, spare: Vec<u8>) -> Exchange {
        Exchange {
            request: None,
            answer: None,
            deadline,
            spare,
        }
    }

    /// An empty buffer to encode an answer into.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        b
    }

    /// Takes back an answer's buffer once it has been copied.
    pub(super) fn give_back(&mut self, b: Vec<u8>) {
        if b.capacity() <= SPARE_MAX && b.capacity() > self.spare.capacity() {
            self.spare = b;
        }
    }
}

pub(super) type Shared = Arc<Mutex<Exchange>>;

pub(super) fn lock(x: &Shared) -> std::sync::MutexGuard<'_, Exchange> {
    x.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of one instance: what the imports see.
pub(super) struct Run {
    pub(super) exchange: Shared,
    /// The instance's memory, once instantiated: what an import reads and writes (looking its
    /// export up by name at each import was a hash of the name and a compare).
    pub(super) memory: Option<Memory>,
    /// The last read's result, when it did not fit the guest's buffer (`take` copies it).
    pub(super) taken: Vec<u8>,
    /// The invocation's arguments, encoded, for a guest that fetches them itself (`args`).
    pub(super) args: Vec<u8>,
    pub(super) limits: StoreLimits,
}

/// An instance and what one invocation uses of it, resolved when it was made.
pub(super) struct Ready {
    pub(super) store: WasmStore<Run>,
    pub(super) exchange: Shared,
    pub(super) instance: wasmtime::Instance,
    pub(super) memory: Memory,
    pub(super) entry: Entry,
}

/// How the host hands an instance its arguments and runs it.
pub(super) enum Entry {
    /// `autoloc_run`, which fetches them with `args`: one call into the guest per invocation.
    Run(wasmtime::TypedFunc<i32, i64>),
    /// `autoloc_alloc`, the arguments written there, then `autoloc_call`.
    AllocCall(
        wasmtime::TypedFunc<i32, i32>,
        wasmtime::TypedFunc<(i32, i32), i64>,
    ),
}

impl Ready {
    /// Prepares a kept instance for its next invocation: nothing pending, a new deadline.
    pub(super) fn rearm(&mut self, deadline: Instant) {
        let mut x = lock(&self.exchange);
        let spare = std::mem::take(&mut x.spare);
        *x = Exchange::new(deadline, spare);
        drop(x);
        self.store.data_mut().taken = Vec::new();
        self.store.set_epoch_deadline(1);
    }
}
