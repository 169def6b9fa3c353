//! Declares the `loom` cfg, so `RUSTFLAGS="--cfg loom"` swaps the ring's atomics for loom's model
//! checker without an `unexpected_cfgs` warning (the crate takes its lints from the workspace, so it
//! cannot carry its own `[lints.rust]` check-cfg table).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
