//! `huge_wasm`: a test guest that returns a text result of 64 MiB (`x` repeated), to check the
//! host's limit on a result's size. The text is built with one spare byte of capacity, so the
//! SDK puts the status byte in front of it without a second 64 MiB buffer.
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

/// The result's size in bytes (without its status byte).
pub const SIZE: usize = 64 << 20;

autoloc_guest::export! {
    name: "huge_wasm",
    usage: "huge_wasm",
    output: OutputKind::Text,
    entry: huge,
}

fn huge(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let mut text = Vec::with_capacity(SIZE + 1);
    text.resize(SIZE, b'x');
    let text = String::from_utf8(text).map_err(|e| GuestError::failed(e.to_string()))?;
    Ok(Output::Text(text))
}
