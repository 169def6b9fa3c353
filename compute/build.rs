//! Declares the `loom` cfg, so `RUSTFLAGS="--cfg loom" cargo test -p autoloc --lib loom` runs
//! the placement table's share/ticket logic under loom's model checker without an
//! `unexpected_cfgs` warning (the crate takes its lints from the workspace).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
