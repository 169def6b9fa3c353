//! AutoLoc's JSON vertex decoder on any bytes: never panics; a value it accepts is JSON with a
//! `neigh` list of exactly the ids it returned.
#![no_main]

use autoloc_functions::graph::neighbours;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut value = b"{".to_vec();
    value.extend_from_slice(data);
    if let Ok(ids) = neighbours(b"k", &value) {
        let parsed: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(parsed["neigh"].as_array().unwrap().len(), ids.len());
    }
});
