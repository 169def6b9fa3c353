//! The example guests of `functions/guest` (user functions in WebAssembly), as `ci/guests` builds
//! them, for the tests, benchmarks and demos that load them. Building them is `ci/guests`'s job
//! (ci/test runs it before the tests), not this library's.

use std::path::PathBuf;

use crate::{Error, Result};

/// The guest workspace in this source tree.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions/guest")
}

/// Where the built guests are: `$AUTOLOC_GUESTS` if set (a machine that runs tests built
/// elsewhere, as ci/rxe-vm's VM does), else the guest workspace's release output.
pub fn dir() -> PathBuf {
    match std::env::var_os("AUTOLOC_GUESTS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace().join("target/wasm32-unknown-unknown/release"),
    }
}

/// The `.wasm` file of the example guest `name` (e.g. `khop_wasm`), which `ci/guests` built.
pub fn path(name: &str) -> Result<PathBuf> {
    let p = dir().join(format!("{name}.wasm"));
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::GuestMissing {
            name: name.to_string(),
            path: p,
        })
    }
}

/// The bytes of the example guest `name`.
pub fn bytes(name: &str) -> Result<Vec<u8>> {
    let p = path(name)?;
    std::fs::read(&p).map_err(|source| Error::GuestRead { path: p, source })
}
