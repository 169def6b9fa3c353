//! `empty_wasm`: reads nothing and returns nil, whatever its arguments: what an invocation costs
//! when the function itself costs nothing.
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "empty_wasm",
    usage: "empty_wasm",
    output: OutputKind::Value,
    entry: empty,
}

fn empty(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    Ok(Output::Value(None))
}
