//! The example guests of `functions/guest` (user functions in WebAssembly), built on demand for
//! the tests, benchmarks and demos that load them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{Error, Result};

/// The guest workspace in this source tree.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions/guest")
}

/// Builds every example guest (once per process; cargo does nothing if they are up to date).
pub fn build() -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let ws = workspace();
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "--release", "--target", "wasm32-unknown-unknown"])
                .arg("--manifest-path")
                .arg(ws.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(ws.join("target"))
                // Inside the tree, whatever this process's directory: cargo then reads the
                // tree's `.cargo/config.toml`, the flags every guest is built with.
                .current_dir(&ws)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .map_err(|e| format!("cannot run cargo to build the guests: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "building the guests failed (is the wasm32-unknown-unknown target installed? ci/setup adds it):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
        .map_err(Error::Usage)
}

/// The `.wasm` file of the example guest `name` (e.g. `khop_wasm`), built if needed.
pub fn path(name: &str) -> Result<PathBuf> {
    build()?;
    let p = workspace()
        .join("target/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"));
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::Usage(format!(
            "no example guest '{name}' at {}",
            p.display()
        )))
    }
}

/// The bytes of the example guest `name`.
pub fn bytes(name: &str) -> Result<Vec<u8>> {
    let p = path(name)?;
    std::fs::read(&p).map_err(|e| Error::Usage(format!("{}: {e}", p.display())))
}
