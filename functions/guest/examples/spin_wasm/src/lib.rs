//! `spin_wasm`: a hostile test guest that loops forever and never calls the host. Only the
//! host's CPU limit (epoch interruption storage-side, the time limit compute-side) ends it.
#![forbid(unsafe_code)]

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "spin_wasm",
    usage: "spin_wasm",
    output: OutputKind::Value,
    entry: spin,
}

fn spin(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}
