//! `recurse_wasm`: a hostile test guest that recurses without bound until the engine's wasm
//! stack depth limit traps.
//!
//! Each frame holds only scalars, which live in wasm locals: none of it goes on Rust's shadow
//! stack in linear memory (64 KiB below the data, `.cargo/config.toml`), so the engine's own limit is what stops it,
//! not a store below address 0. (A guest with big frames, arrays kept across a call, runs out of
//! shadow stack first, and that shows up as an out-of-bounds access instead.)
#![forbid(unsafe_code)]

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "recurse_wasm",
    usage: "recurse_wasm",
    output: OutputKind::Value,
    entry: recurse_forever,
}

fn recurse_forever(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    // `black_box` hides that the limit is never reached.
    let x = recurse(0, black_box(u64::MAX));
    Ok(Output::Value(Some(x.to_le_bytes().to_vec())))
}

/// Not a tail call (the result is mixed with `depth` after the call returns) and not an
/// accumulation LLVM turns into a loop.
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    if depth == limit {
        return depth;
    }
    recurse(depth + 1, limit).rotate_left(1) ^ depth
}
