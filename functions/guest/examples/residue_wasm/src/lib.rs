//! `residue_wasm [bytes [tag]]`: a test guest that reports what an earlier call left behind.
//!
//! Its static data starts as a known pattern; a call checks it, then overwrites it with its
//! `tag` (default empty). It also asks for a zeroed allocation of `bytes` (default 512 KiB),
//! checks that it is all zeros and fills it. Returns `clean` in a fresh instance, `kept from
//! <tag>` in an instance the host kept from an earlier call (that call's tag), and names any
//! nonzero byte of the zeroed allocation. A tag of `trap` traps (a panic: `unreachable`) after
//! overwriting the statics.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "residue_wasm",
    usage: "residue_wasm [bytes [tag]]",
    output: OutputKind::Value,
    entry: residue,
}

/// What the static words hold in a fresh instance (in the module's data segment, not zeroed
/// memory).
const MARK: u32 = 0xa5a5_a5a5;

static WORDS: [AtomicU32; 16] = [const { AtomicU32::new(MARK) }; 16];

/// The last call's tag: its length, then its bytes.
static TAG: [AtomicU8; 33] = [const { AtomicU8::new(0) }; 33];

fn residue(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let usage = || GuestError::Args("residue_wasm [bytes [tag]]".into());
    let (bytes, tag): (usize, &[u8]) = match args {
        [] => (512 << 10, b""),
        [n] => (number(n).ok_or_else(usage)?, b""),
        [n, tag] if tag.len() < TAG.len() => (number(n).ok_or_else(usage)?, tag),
        _ => return Err(usage()),
    };
    let mut found = Vec::new();
    let fresh = WORDS.iter().all(|w| w.load(Ordering::Relaxed) == MARK);
    let kept = WORDS.iter().all(|w| w.load(Ordering::Relaxed) == !MARK);
    if kept {
        let len = usize::from(TAG[0].load(Ordering::Relaxed));
        let left: Vec<u8> = TAG[1..=len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        found.push(format!("kept from {}", String::from_utf8_lossy(&left)));
    } else if !fresh {
        found.push("static words torn".to_string());
    }
    WORDS.iter().for_each(|w| w.store(!MARK, Ordering::Relaxed));
    TAG[0].store(tag.len() as u8, Ordering::Relaxed);
    for (t, &b) in TAG[1..].iter().zip(tag) {
        t.store(b, Ordering::Relaxed);
    }
    if tag == b"trap" {
        panic!("residue_wasm: trapping as asked");
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

fn number(n: &[u8]) -> Option<usize> {
    std::str::from_utf8(n).ok()?.parse().ok()
}
