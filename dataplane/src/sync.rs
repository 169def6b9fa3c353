//! The atomics the shared-memory protocols run on: std's, or loom's model checker's under
//! `RUSTFLAGS="--cfg loom"` (the ring's index logic and the doorbell's handshake are checked
//! under every interleaving loom explores; `tests/ring_loom.rs`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
