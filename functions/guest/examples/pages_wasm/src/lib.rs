//! `pages_wasm [bytes]`: a test guest that reports whether an allocation grew its memory.
//!
//! In a fresh instance per call (`reuse: false`), it allocates `bytes` (default 0) and returns
//! `<pages before> <pages after>`: its memory's size in 64 KiB pages when the call began and
//! once the allocation is made. The SDK's allocator serves its first 256 KiB from the initial
//! memory, so a small allocation leaves the two equal.
#![forbid(unsafe_code)]

use std::hint::black_box;

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "pages_wasm",
    usage: "pages_wasm [bytes]",
    output: OutputKind::Value,
    entry: pages,
    reuse: false,
}

fn pages(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let bytes = match args {
        [] => 0,
        [n] => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| GuestError::args("usage: pages_wasm [bytes]"))?,
        _ => return Err(GuestError::args("usage: pages_wasm [bytes]")),
    };
    let before = memory_pages();
    let block = black_box(vec![1u8; bytes]);
    let after = memory_pages();
    drop(block);
    Ok(Output::Value(Some(
        format!("{before} {after}").into_bytes(),
    )))
}

/// The memory's size in pages (0 off `wasm32`, where there is none).
fn memory_pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    return 0;
}
