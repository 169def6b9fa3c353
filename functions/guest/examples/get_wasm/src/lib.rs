//! `get_wasm <key>`: the built-in `get` (one value, or nil), compiled to WebAssembly unchanged
//! and run through the host's store, so its results are the native ones.
#![forbid(unsafe_code)]

autoloc_guest::export! {
    name: "get_wasm",
    usage: "get_wasm <key>",
    function: autoloc_guest::functions::builtins::get::Get,
}
