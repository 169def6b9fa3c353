//! `writer_wasm <key> <value>`: a test guest that sets one key and returns nil.
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Args, Output, OutputKind};
use autoloc_guest::GuestError;

const NAME: &str = "writer_wasm";
const USAGE: &str = "writer_wasm <key> <value>";

autoloc_guest::export! {
    name: NAME,
    usage: USAGE,
    output: OutputKind::Value,
    entry: write_one,
}

fn write_one(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let mut a = Args::new(NAME, USAGE, args);
    let key = a.next_bytes()?;
    let value = a.next_bytes()?;
    a.finish()?;
    autoloc_guest::write(key, value);
    Ok(Output::Value(None))
}
