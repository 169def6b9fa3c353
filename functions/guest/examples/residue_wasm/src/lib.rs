//! `residue_wasm [bytes]`: a test guest that reports what an earlier instance left behind. Its
//! static data starts as a known pattern, and a zeroed allocation of `bytes` (default 512 KiB)
//! must come back all zeros; it checks both, then overwrites them, so that a slot that is not
//! reset between instances shows in the next call. Returns `clean`, or what it found.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "residue_wasm",
    usage: "residue_wasm [bytes]",
    output: OutputKind::Value,
    entry: residue,
}

/// What the static words hold in a fresh instance (in the module's data segment, not zeroed
/// memory).
const MARK: u32 = 0xa5a5_a5a5;

static WORDS: [AtomicU32; 16] = [const { AtomicU32::new(MARK) }; 16];

fn residue(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let bytes: usize = match args {
        [] => 512 << 10,
        [n] => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| GuestError::Args("bytes must be a number".into()))?,
        _ => return Err(GuestError::Args("residue_wasm [bytes]".into())),
    };
    let mut found = Vec::new();
    for (i, w) in WORDS.iter().enumerate() {
        let v = w.swap(!MARK, Ordering::Relaxed);
        if v != MARK {
            found.push(format!("static word {i} is {v:#x}"));
        }
    }
    // Fresh pages of a grown memory are known to be zero, so the allocator hands them out as
    // zeroed without writing them: stale bytes there would show here.
    let mut heap = black_box(vec![0u8; bytes]);
    if let Some(at) = heap.iter().position(|&b| b != 0) {
        found.push(format!("heap byte {at} of {bytes} is {:#x}", heap[at]));
    }
    heap.fill(0xee);
    black_box(&heap);
    let report = if found.is_empty() {
        "clean".to_string()
    } else {
        found.join("; ")
    };
    Ok(Output::Value(Some(report.into_bytes())))
}
