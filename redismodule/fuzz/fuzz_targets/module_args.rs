//! The module's arguments (`--loadmodule ... budget-ms N cores 0,1 ...`) on any words: never
//! panics; what parses stays within the documented bounds.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/config.rs"]
mod config;

use config::Config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|&b| b == b' ').collect();
    if let Ok(c) = Config::parse(&args) {
        assert!(c.cores.len() <= 64);
        let _ = c.to_string();
    }
});
