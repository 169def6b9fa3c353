//! `degrees_wasm <vertex>...`: the total degree of the vertices, and how many of them exist.

use autoloc_guest::functions::graph::{for_each_neighbour, vertex_key};
use autoloc_guest::functions::{Args, Output, OutputKind};
use autoloc_guest::{read_each, GuestError};

const NAME: &str = "degrees_wasm";
const USAGE: &str = "degrees_wasm <vertex>...";

autoloc_guest::export! {
    name: NAME,               // 1-64 of a-z 0-9 _, checked at compile time
    usage: USAGE,             // one line
    output: OutputKind::Sum,  // ids | text | scores | sum | value
    entry: degrees,
}

fn degrees(args: &[Vec<u8>]) -> Result<Output, GuestError> {
    if args.is_empty() {
        return Err(GuestError::args(format!("usage: {USAGE}")));
    }
    // Argument errors (status 1) come from `Args`, before any store access.
    let mut a = Args::new(NAME, USAGE, args);
    let mut keys = Vec::with_capacity(args.len());
    for _ in 0..args.len() {
        keys.push(vertex_key(a.next_vertex("vertex")?));
    }
    // One store access for all the vertices.
    let (mut degree, mut found) = (0u64, 0u64);
    read_each(&keys, |i, value| {
        let Some(value) = value else { return Ok(()) }; // a missing vertex counts for nothing
        found += 1;
        for_each_neighbour(&keys[i], value, |_| degree += 1)
    })?;
    Ok(Output::Sum {
        sum: degree as f64,
        keys: found,
    })
}

#[cfg(test)]
mod tests {
    use autoloc_guest::functions::graph::encode_adjacency;
    use autoloc_guest::functions::Output;
    use autoloc_guest::mock;

    #[test]
    fn sums_degrees() {
        mock::reset();
        mock::insert("1", encode_adjacency(&[2, 3]));
        mock::insert("2", encode_adjacency(&[1]));
        let args = [b"1".to_vec(), b"2".to_vec(), b"9".to_vec()];
        let out = super::AUTOLOC_GUEST.run(&args).unwrap();
        assert_eq!(out, Output::Sum { sum: 3.0, keys: 2 });
        assert_eq!(mock::reads(), 1);
    }
}
