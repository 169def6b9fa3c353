//! Every built-in's argument parsing on any arguments, then the function itself on a small
//! store when they parse: never panics, and `check` agrees with what the call accepts.
#![no_main]

use autoloc_functions::exec::block_on;
use autoloc_functions::graph::encode_adjacency;
use autoloc_functions::{ErrorCode, MemStore, Registry};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let registry = Registry::builtin();
    let f = registry.get(pick as usize % registry.len()).unwrap();
    let args: Vec<Vec<u8>> = rest.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    let checked = f.check(&args);
    // Keep runs short: no digest of many rounds, no huge aggregate ranges.
    let heavy = args.iter().skip(1).any(|a| a.len() > 3);
    if checked.is_err() || heavy {
        if let Err(e) = checked {
            assert_eq!(e.code(), ErrorCode::Err, "{e}");
        }
        return;
    }
    let store = MemStore::new();
    store.insert("1", encode_adjacency(&[2, 3]));
    store.insert("2", encode_adjacency(&[1]));
    store.insert("3", br#"{"neigh": ["1", "x"]}"#.to_vec());
    store.insert("n:1", "7");
    store.insert("md5", vec![b'a'; 1024]);
    if let Err(e) = block_on(f.call(&store, &args)) {
        // Arguments that passed `check` are never refused as bad input by the call.
        assert_ne!(e.code(), ErrorCode::Err, "{e}");
    }
});
