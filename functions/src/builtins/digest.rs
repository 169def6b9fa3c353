//! `digest <key> <rounds>`: an iterated MD5 over one blob, AutoLoc's CPU-heavy function.
//!
//! `h1 = md5(blob)`, `h(r+1) = md5(h(r) ++ blob)`; the reply is the last digest in hex. Each round
//! hashes the whole blob again, so the CPU spent grows with `rounds` while the data read stays one
//! value: the function that gains least from running next to its data.

use md5::{Digest, Md5};

use crate::function::{Args, Function, Invocation, OutputKind};
use crate::store::StoreExt;
use crate::{Error, Output, Result, Store};

/// The largest `rounds` accepted.
pub const MAX_ROUNDS: u64 = 1_000_000;

/// Bytes hashed between two checkpoints (where the storage side checks its budget).
const CHECKPOINT_BYTES: usize = 256 * 1024;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct DigestFn;

const USAGE: &str = "digest <key> <rounds>";

fn parse(args: &[Vec<u8>]) -> Result<(&[u8], u64)> {
    let mut a = Args::new("digest", USAGE, args);
    let key = a.next_bytes()?;
    let rounds = a.next_u64("rounds", 1, MAX_ROUNDS)?;
    a.finish()?;
    Ok((key, rounds))
}

impl Function for DigestFn {
    fn name(&self) -> &'static str {
        "digest"
    }
    fn usage(&self) -> &'static str {
        USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Text
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let (key, rounds) = parse(args)?;
            let blob = store.get(key).await?.ok_or_else(|| Error::no_key(key))?;
            let mut h = Md5::digest(&blob);
            let mut since_checkpoint = blob.len();
            for _ in 1..rounds {
                if since_checkpoint >= CHECKPOINT_BYTES {
                    store.checkpoint().await?;
                    since_checkpoint = 0;
                }
                let mut m = Md5::new();
                m.update(h);
                m.update(&blob);
                h = m.finalize();
                since_checkpoint += blob.len() + 16;
            }
            Ok(Output::Text(crate::hex::encode(&h)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_empty_matches_rfc1321() {
        assert_eq!(
            crate::hex::encode(&Md5::digest(b"")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}
