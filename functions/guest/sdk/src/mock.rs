//! Native builds only: an in-memory host that serves the imports, so a guest's logic can be
//! unit-tested with a plain `cargo test` (no WebAssembly runtime).
//!
//! Each test thread has its own store; [`reset`] empties it and its counters. The mock follows
//! the ABI: `read` writes its reply only if it fits and `take` hands over the last reply.
//!
//! ```
//! use autoloc_guest::{get, mock};
//! mock::reset();
//! mock::insert("k", "v");
//! assert_eq!(get("k"), Some(b"v".to_vec()));
//! assert_eq!(mock::reads(), 1);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
struct Host {
    map: HashMap<Vec<u8>, Vec<u8>>,
    last_reply: Vec<u8>,
    /// What `args` hands over ([`set_args`]).
    args: Vec<u8>,
    reads: usize,
    takes: usize,
    writes: usize,
    checkpoints: usize,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

fn with<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Empties this thread's store and zeroes its counters.
pub fn reset() {
    with(|h| *h = Host::default());
}

/// Sets `key` to `value` (outside of any guest call).
pub fn insert(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    with(|h| h.map.insert(key.as_ref().to_vec(), value.as_ref().to_vec()));
}

/// The value at `key`, e.g. to check a guest's writes.
pub fn value(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    with(|h| h.map.get(key.as_ref()).cloned())
}

/// How many `read` and `neighbours` calls the guest made since the last [`reset`].
pub fn reads() -> usize {
    with(|h| h.reads)
}

/// How many `take` calls (replies that did not fit) since the last [`reset`].
pub fn takes() -> usize {
    with(|h| h.takes)
}

/// How many `write` calls since the last [`reset`].
pub fn writes() -> usize {
    with(|h| h.writes)
}

/// How many `checkpoint` calls since the last [`reset`].
pub fn checkpoints() -> usize {
    with(|h| h.checkpoints)
}

pub(crate) fn read(keys: &[u8], out: &mut [u8]) -> usize {
    serve(keys, out, |reply, _, v| {
        reply.extend_from_slice(&(v.len() as u32).to_le_bytes());
        reply.extend_from_slice(v);
    })
}

/// `neighbours`, decoded as the host does; a value that is no vertex panics (the host would end
/// the invocation with that error).
pub(crate) fn neighbours(keys: &[u8], out: &mut [u8]) -> usize {
    serve(keys, out, |reply, key, v| {
        let mut ids = Vec::new();
        autoloc_functions::graph::for_each_neighbour(key, v, |n| ids.push(n))
            .unwrap_or_else(|e| panic!("the host ends the invocation: {e}"));
        reply.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        ids.iter()
            .for_each(|n| reply.extend_from_slice(&n.to_le_bytes()));
    })
}

/// One store access (`read` or `neighbours`): for each key, `MISSING` or what `entry` appends
/// for its value; written to `out` if it fits, kept for `take` either way; its length.
fn serve(keys: &[u8], out: &mut [u8], entry: impl Fn(&mut Vec<u8>, &[u8], &[u8])) -> usize {
    with(|h| {
        h.reads += 1;
        let mut reply = Vec::new();
        for key in crate::abi::decode_list(keys).expect("the guest sent a malformed key list") {
            match h.map.get(&key) {
                Some(v) => entry(&mut reply, &key, v),
                None => reply.extend_from_slice(&crate::abi::MISSING.to_le_bytes()),
            }
        }
        if let Some(dst) = out.get_mut(..reply.len()) {
            dst.copy_from_slice(&reply);
        }
        let n = reply.len();
        h.last_reply = reply;
        n
    })
}

pub(crate) fn take(out: &mut [u8]) -> usize {
    with(|h| {
        h.takes += 1;
        let n = h.last_reply.len();
        assert!(out.len() >= n, "take: out_cap {} < {n}", out.len());
        out[..n].copy_from_slice(&h.last_reply);
        n
    })
}

pub(crate) fn write(key: &[u8], value: &[u8]) {
    with(|h| {
        h.writes += 1;
        h.map.insert(key.to_vec(), value.to_vec());
    });
}

/// Sets the arguments `args` hands the guest (encoded as the ABI's list).
pub fn set_args(encoded: &[u8]) {
    with(|h| h.args = encoded.to_vec());
}

pub(crate) fn args(out: &mut [u8]) -> usize {
    with(|h| {
        let n = h.args.len();
        assert!(out.len() >= n, "args: out_cap {} < {n}", out.len());
        out[..n].copy_from_slice(&h.args);
        n
    })
}

pub(crate) fn checkpoint() {
    with(|h| h.checkpoints += 1);
}
