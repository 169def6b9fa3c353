//! `digest_wasm <key> <rounds>`: the built-in `digest` (an iterated MD5 over one blob),
//! compiled to WebAssembly unchanged and run through the host's store, so its results are the
//! native ones.
#![forbid(unsafe_code)]

autoloc_guest::export! {
    name: "digest_wasm",
    usage: "digest_wasm <key> <rounds>",
    function: autoloc_guest::functions::builtins::digest::DigestFn,
}
