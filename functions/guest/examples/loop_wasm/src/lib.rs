//! `loop_wasm [<key>]`: a hostile test guest that loops forever, reading `<key>` (default
//! `loop`) each turn: a guest that keeps calling the host and never finishes.
#![forbid(unsafe_code)]

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

const USAGE: &str = "loop_wasm [<key>]";

autoloc_guest::export! {
    name: "loop_wasm",
    usage: USAGE,
    output: OutputKind::Value,
    entry: spin_reading,
}

fn spin_reading(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let key: &[u8] = match args {
        [] => b"loop",
        [key] => key,
        _ => return Err(GuestError::args(format!("usage: {USAGE}"))),
    };
    loop {
        black_box(autoloc_guest::get(key));
    }
}
