//! The binary adjacency decoder on any bytes after its magic: never panics; what decodes holds
//! exactly the count its header says, and re-encodes to the same bytes when sorted and distinct.
#![no_main]

use autoloc_functions::graph::{encode_adjacency, neighbours, MAGIC};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut value = MAGIC.to_vec();
    value.extend_from_slice(data);
    if let Ok(ids) = neighbours(b"k", &value) {
        let count = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        assert_eq!(ids.len(), count);
        if ids.windows(2).all(|w| w[0] < w[1]) {
            assert_eq!(encode_adjacency(&ids), value);
        }
    }
});
