//! `aggregate <first> <count> [<prefix>]` or `aggregate keys <key>...`: the sum of the numeric
//! values at many keys, and how many of them exist.
//!
//! The first form reads the keys `<prefix><first>` .. `<prefix><first+count-1>` (prefix `n:` by
//! default, where `autoloc load` stores each vertex's degree). Values are decimal integers or
//! floats; a missing key is skipped; a non-numeric value is an error. Keys are read 1,024 per
//! store access: many independent keys, little CPU per byte.

use crate::function::{Args, Function, Invocation, OutputKind};
use crate::{Error, Output, Result, Store};

/// The largest `count` accepted.
pub const MAX_COUNT: u64 = 1_000_000;
/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "n:";
/// Keys read per store access.
const CHUNK: usize = 1024;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Aggregate;

const USAGE: &str = "aggregate <first> <count> [<prefix>] | aggregate keys <key>...";

fn parse(args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let mut a = Args::new("aggregate", USAGE, args);
    if args.first().map(Vec::as_slice) == Some(b"keys") {
        a.next_bytes()?;
        let keys: Vec<Vec<u8>> = a.rest().map(<[u8]>::to_vec).collect();
        if keys.is_empty() || keys.len() as u64 > MAX_COUNT {
            return Err(Error::Arity {
                function: "aggregate",
                usage: USAGE,
            });
        }
        return Ok(keys);
    }
    let first = a.next_u64("first", 0, u64::MAX / 2)?;
    let count = a.next_u64("count", 1, MAX_COUNT)?;
    let prefix = a.next_opt().unwrap_or(DEFAULT_PREFIX.as_bytes());
    a.finish()?;
    Ok((first..first + count)
        .map(|i| {
            let mut k = prefix.to_vec();
            k.extend_from_slice(i.to_string().as_bytes());
            k
        })
        .collect())
}

impl Function for Aggregate {
    fn name(&self) -> &'static str {
        "aggregate"
    }
    fn usage(&self) -> &'static str {
        USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Sum
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let keys = parse(args)?;
            let (mut sum, mut found) = (0.0f64, 0u64);
            for chunk in keys.chunks(CHUNK) {
                store
                    .read(chunk, &mut |i, v| {
                        let Some(v) = v else { return Ok(()) };
                        let x = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse::<f64>().ok())
                            .filter(|x| x.is_finite())
                            .ok_or_else(|| Error::bad_value(&chunk[i], "value is not a number"))?;
                        sum += x;
                        found += 1;
                        Ok(())
                    })
                    .await?;
            }
            Ok(Output::Sum { sum, keys: found })
        })
    }
}
