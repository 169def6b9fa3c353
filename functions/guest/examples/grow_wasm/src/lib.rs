//! `grow_wasm`: a hostile test guest that allocates 1 MiB blocks, touching every byte and
//! keeping them all, until `memory.grow` fails at the host's cap and the failed allocation traps.
#![forbid(unsafe_code)]

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "grow_wasm",
    usage: "grow_wasm",
    output: OutputKind::Value,
    entry: grow,
}

fn grow(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(black_box(vec![0x5a; 1 << 20]));
        black_box(&mut kept);
    }
}
