//! `readmany_wasm <n>`: a test guest that reads the keys `0` .. `n-1` in one read call (one
//! store access, however large), and returns the total length of the values found and how many
//! keys exist.
#![forbid(unsafe_code)]

use autoloc_guest::functions::{Args, Output, OutputKind};
use autoloc_guest::GuestError;

const NAME: &str = "readmany_wasm";
const USAGE: &str = "readmany_wasm <n>";

autoloc_guest::export! {
    name: NAME,
    usage: USAGE,
    output: OutputKind::Sum,
    entry: read_many,
}

fn read_many(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    let mut a = Args::new(NAME, USAGE, args);
    let n = a.next_u64("n", 0, u64::from(u32::MAX))?;
    a.finish()?;
    let keys: Vec<Vec<u8>> = (0..n).map(|i| i.to_string().into_bytes()).collect();
    let values = autoloc_guest::read(&keys);
    let found = values.iter().flatten();
    Ok(Output::Sum {
        sum: found.clone().map(|v| v.len() as f64).sum(),
        keys: found.count() as u64,
    })
}
