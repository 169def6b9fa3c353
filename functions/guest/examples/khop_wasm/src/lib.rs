//! `khop_wasm <start> <k>`: the built-in `khop` (the sorted ids of all vertices at distance
//! 1..=k from `start`), compiled to WebAssembly unchanged and run through the host's store, so
//! its results are the native ones.
#![forbid(unsafe_code)]

autoloc_guest::export! {
    name: "khop_wasm",
    usage: "khop_wasm <start> <k>",
    function: autoloc_guest::functions::builtins::khop::Khop,
}
