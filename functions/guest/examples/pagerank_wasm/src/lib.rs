//! `pagerank_wasm <start> <iterations> [<dest-prefix>]`: the built-in `pagerank` (PageRank over
//! `start`'s 1-hop subgraph, optionally writing each score), compiled to WebAssembly unchanged
//! and run through the host's store, so its results are the native ones.
#![forbid(unsafe_code)]

autoloc_guest::export! {
    name: "pagerank_wasm",
    usage: "pagerank_wasm <start> <iterations> [<dest-prefix>]",
    function: autoloc_guest::functions::builtins::pagerank::PageRank,
}
