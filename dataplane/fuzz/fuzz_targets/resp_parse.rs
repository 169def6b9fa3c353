//! The RESP parser on any bytes: never panics, and `check` and `parse` agree on what is there.
#![no_main]

use autoloc_dataplane::resp::{self, Parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let checked = resp::check(data);
    let parsed = resp::parse(data);
    match (checked, parsed) {
        (Ok(Parse::Complete(len)), Ok(Some((_, used)))) => assert_eq!(len, used),
        (Ok(Parse::Incomplete), Ok(None)) => {}
        (Err(_), Err(_)) => {}
        (c, p) => panic!("check {c:?} disagrees with parse {p:?}"),
    }
});
