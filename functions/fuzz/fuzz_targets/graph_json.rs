//! AutoLoc's JSON vertex decoder on any bytes: never panics; a value it accepts is JSON with a
//! `neigh` list of exactly the ids it returned; and its fast path for plain values agrees with
//! the general decoder on every input (the same ids, or the same error).
#![no_main]

use autoloc_functions::graph::{json_neighbours_general, neighbours};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut value = b"{".to_vec();
    value.extend_from_slice(data);
    let got = neighbours(b"k", &value).map_err(|e| e.to_string());
    let mut ids = Vec::new();
    let general = json_neighbours_general(b"k", &value, |n| ids.push(n))
        .map(|()| ids)
        .map_err(|e| e.to_string());
    assert_eq!(got, general);
    if let Ok(ids) = got {
        let parsed: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(parsed["neigh"].as_array().unwrap().len(), ids.len());
    }
});
