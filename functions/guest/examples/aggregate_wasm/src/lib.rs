//! `aggregate_wasm <first> <count> [<prefix>]` or `aggregate_wasm keys <key>...`: the built-in
//! `aggregate` (the sum of the numeric values at many keys), compiled to WebAssembly unchanged
//! and run through the host's store, so its results are the native ones.
#![forbid(unsafe_code)]

autoloc_guest::export! {
    name: "aggregate_wasm",
    usage: "aggregate_wasm <first> <count> [<prefix>] | aggregate_wasm keys <key>...",
    function: autoloc_guest::functions::builtins::aggregate::Aggregate,
}
