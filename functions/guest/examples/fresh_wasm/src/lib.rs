//! `fresh_wasm`: `empty_wasm` declared `reuse: false`, so every call instantiates it anew: what
//! an invocation costs when the host keeps no instance (a guest that needs fresh globals, or
//! the first call of a caller on a thread).
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "fresh_wasm",
    usage: "fresh_wasm",
    output: OutputKind::Value,
    entry: empty,
    reuse: false,
}

fn empty(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    Ok(Output::Value(None))
}
