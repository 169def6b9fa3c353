//! `unreachable_wasm`: a hostile test guest that executes the `unreachable` instruction, which
//! traps.
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "unreachable_wasm",
    usage: "unreachable_wasm",
    output: OutputKind::Value,
    entry: trap,
}

fn trap(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}
