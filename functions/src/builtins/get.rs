//! `get <key>`: one value, or nil.

use crate::function::{Args, Function, Invocation, OutputKind};
use crate::store::StoreExt;
use crate::{Output, Result, Store};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Get;

const USAGE: &str = "get <key>";

fn parse(args: &[Vec<u8>]) -> Result<&[u8]> {
    let mut a = Args::new("get", USAGE, args);
    let key = a.next_bytes()?;
    a.finish()?;
    Ok(key)
}

impl Function for Get {
    fn name(&self) -> &'static str {
        "get"
    }
    fn usage(&self) -> &'static str {
        USAGE
    }
    fn output_kind(&self) -> OutputKind {
        OutputKind::Value
    }
    fn check(&self, args: &[Vec<u8>]) -> Result<()> {
        parse(args).map(drop)
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(async move {
            let key = parse(args)?;
            Ok(Output::Value(store.get(key).await?))
        })
    }
}
