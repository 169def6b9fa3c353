//! `oob_wasm`: a hostile test guest that reads 8 bytes at address `0xFFFF_FFF0`, far beyond any
//! memory the host allows: an out-of-bounds access, which traps.

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "oob_wasm",
    usage: "oob_wasm",
    output: OutputKind::Value,
    entry: out_of_bounds,
}

fn out_of_bounds(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let address = black_box(0xFFFF_FFF0usize);
    let p = std::ptr::with_exposed_provenance::<u64>(address);
    // SAFETY: none, deliberately. `p` points at no allocation: this read is undefined behaviour
    // in Rust and, on wasm32, an out-of-bounds load the host must turn into a trap. This guest
    // exists to check exactly that; never copy it.
    let x = unsafe { p.read_volatile() };
    Ok(Output::Value(Some(x.to_le_bytes().to_vec())))
}
