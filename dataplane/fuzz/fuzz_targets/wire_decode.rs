//! The wire decoder on any bytes: never panics; `check` and `parse` agree; a frame that decodes
//! encodes back to exactly the bytes it came from (the format is canonical).
#![no_main]

use autoloc_dataplane::wire::{self, Limits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_payload: 1 << 20,
    };
    let checked = wire::check(data, &limits);
    match wire::parse(data, &limits) {
        Ok((frame, len)) => {
            assert_eq!(checked, Ok(len));
            let mut out = Vec::new();
            let n = wire::encode(frame.request_id, &frame.message, &mut out).unwrap();
            assert_eq!(n, len);
            assert_eq!(&out[..], &data[..len]);
        }
        Err(e) => assert_eq!(checked, Err(e)),
    }
});
